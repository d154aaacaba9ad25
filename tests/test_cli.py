from typer.testing import CliRunner

from recembed import artifacts as A
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


def test_evaluate_a_run_and_a_published_version(tmp_path):
    out = tmp_path / "c.csv"
    assert runner.invoke(app, ["synth", str(out), "--events", "5000", "--seed", "2"]).exit_code == 0
    sets = [f"input.paths=['{out}']", f"input.categories_path='{tmp_path / 'c_items.csv'}'",
            f"run.runs_dir='{tmp_path / 'runs'}'", f"publish.dir='{tmp_path / 'pub'}'",
            "publish.enabled=true", "train.epochs=1", "train.workers=1", "run.progress=false",
            "evaluate.baselines=['pop']", "evaluate.ks=[10,20]"]
    r = runner.invoke(app, ["run", *[x for s in sets for x in ("--set", s)]])
    assert r.exit_code == 0, r.output
    run_dir = next((tmp_path / "runs").iterdir())
    # the end-of-run summary: served vs best baseline with intervals, calibration, report
    tail = r.output.split(f"run: {run_dir}\n", 1)[1]
    m = A.Metrics.load(run_dir / "metrics.json")
    served = m.serving.allow_repeats
    lo, hi = served.interval("recall", 20)
    assert lo <= served.recall(20) <= hi and lo < hi
    assert f"served ({m.serving.name})" in tail and "best baseline (pop)" in tail
    assert f"{served.recall(20):.3f} [{lo:.3f}, {hi:.3f}]" in tail
    assert "calibration: " in tail and f"report: {run_dir / 'report.html'}" in tail
    assert "published: v" in tail and "run.json" in tail
    assert r.output.count("rows_read=") == 1  # each stage's counts once (its line), not twice
    r = runner.invoke(app, ["evaluate", str(run_dir)])
    assert r.exit_code == 0, r.output
    assert "[ingest]" not in r.output  # the table, not the stages' lines again
    rows = {line.split()[0]: line.split()[1:] for line in r.output.splitlines()
            if line.startswith(("pop", "item2vec", "deepwalk", "svd"))}
    # the model's name is the corpus that calibration chose (item2vec, deepwalk, both or svd)
    model = next(n for n in rows if n != "pop").split(":")[0]
    assert set(rows) == {"pop", *(f"{model}:{s}" for s in ("last", "decayed", "directional",
                                                             "ann", "serving"))}
    r = runner.invoke(app, ["evaluate", str(tmp_path / "pub"), "--run", str(run_dir)])
    assert r.exit_code == 0, r.output
    # the published version is this run's: it scores what the run's serving row says
    assert r.output.split()[1] == rows[f"{model}:serving"][0]
