"""notebooks/quickstart.ipynb: committed with the outputs of the demo's run (checked here, fast),
and still executing against the current code (slow: a kernel and a run)."""

import nbformat
import pytest

from tests.conftest import ROOT

NB = ROOT / "notebooks" / "quickstart.ipynb"


def _text(nb) -> str:
    return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "")
                   for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def _check(nb) -> None:
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("outputs") for c in code), "a code cell has no output: re-execute it"
    out = _text(nb)
    assert "run: " in out
    assert "served (" in out and "best baseline (" in out  # the run's headline
    assert "clicked next:" in out and "recommend ranked it:" in out  # a real holdout session
    assert "best method at K=20:" in out
    # the plot is shown inline (no Agg backend swallowing it)
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in code for o in c.outputs)
    src = "".join(c.source for c in code)
    assert 'matplotlib.use("Agg")' not in src and "rec.ids[:3]" not in src


def test_the_committed_notebook_has_the_demo_runs_outputs():
    nb = nbformat.read(NB, as_version=4)
    _check(nb)
    first = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert "run: runs/nightly-" in first  # the run `make demo` made, path relative to the repo
    assert "/work/" not in NB.read_text() and "/tmp/" not in NB.read_text()


@pytest.mark.slow  # a kernel start and a whole (quick) run: ~75 s
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("RECEMBED_RUNS", str(tmp_path))
    monkeypatch.setenv("RECEMBED_SET", "train.epochs=1;calibrate.enabled=false;"
                                       "run.progress=false")
    nb = nbformat.read(NB, as_version=4)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs = []
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    _check(nb)
    assert any(tmp_path.iterdir())  # the run went where the test said
