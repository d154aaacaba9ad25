from typer.testing import CliRunner

from recembed.cli import app
from tests.conftest import ROOT

runner = CliRunner()


def test_synth_then_run_prints_a_summary(tmp_path):
    out = tmp_path / "c.parquet"
    r = runner.invoke(app, ["synth", str(out), "--events", "5000", "--seed", "1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["run", "--set", f"input.paths=['{out}']",
                            "--set", "input.categories_path=''",
                            "--set", "evaluate.enabled=false",
                            "--set", f"run.runs_dir='{tmp_path}'", "--stage", "sessionize"])
    assert r.exit_code == 0, r.output
    assert "sessionize" in r.output and "train_sessions=" in r.output


def test_unknown_key_exits_2_with_a_hint():
    r = runner.invoke(app, ["run", str(ROOT / "pipelines" / "nightly.toml"),
                            "--set", "sesion.gap_minutes=3"])
    assert r.exit_code == 2
    assert "did you mean 'session'" in r.output
