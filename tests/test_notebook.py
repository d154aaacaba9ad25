import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT


@pytest.mark.slow  # a kernel start and a whole run: ~75 s
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("RECEMBED_RUNS", str(tmp_path))
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                  for o in c.get("outputs", []))
    assert "best method at K=20:" in out
    assert any(tmp_path.iterdir())  # the run went where the test said
