"""`recembed publish RUN_DIR` publishes exactly the evaluated run, and the settings that do not
change the model stay out of the run directory's identity."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
from typer.testing import CliRunner

from recembed import artifacts as A
from recembed import stages
from recembed.cli import app
from recembed.config import load_config
from recembed.pipeline import default_run_dir

runner = CliRunner()
PLAN = list(stages.STAGES)
FAST = ["train.epochs=2", "train.workers=1", "train.vector_size=16", "evaluate.baselines=['pop']",
        "evaluate.strategies=['last']", "run.progress=false", "calibrate.enabled=false",
        "input.categories_path=''"]


def sets(args):
    return [x for a in args for x in ("--set", a)]


def digests(run_dir):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.iterdir()) if p.is_file() and p.name != A.RUN_LOCK}


def test_identity_ignores_publish_report_and_progress(tmp_path):
    base = [f"run.runs_dir='{tmp_path}'"]
    d0 = default_run_dir(load_config(None, base))
    for extra in (["publish.enabled=true"], [f"publish.dir='{tmp_path / 'p'}'"],
                  ["evaluate.report=false"], ["run.progress=false"], ["run.threads=1"],
                  ["publish.keep_versions=2", "publish.max_recall_drop=0.5"]):
        assert default_run_dir(load_config(None, base + extra)) == d0, extra
    for extra in (["train.epochs=7"], ["evaluate.ks=[5,20]"], ["run.seed=1"],
                  ["session.gap_minutes=5"]):
        assert default_run_dir(load_config(None, base + extra)) != d0, extra


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A run without publishing, made by `recembed run` as a user would."""
    tmp = tmp_path_factory.mktemp("pubrun")
    log = tmp / "c.csv"
    assert runner.invoke(app, ["synth", str(log), "--events", "5000", "--seed", "4"]).exit_code == 0
    args = [f"input.paths=['{log}']", f"run.runs_dir='{tmp / 'runs'}'",
            f"publish.dir='{tmp / 'published'}'", *FAST]
    r = runner.invoke(app, ["run", *sets(args)])
    assert r.exit_code == 0, r.output
    (run_dir,) = (tmp / "runs").iterdir()
    return tmp, run_dir, args


def _only(monkeypatch, allowed):
    """Make every stage outside `allowed` fail if it runs (a skipped stage never calls run)."""
    def boom(ctx):
        raise AssertionError(f"stage {ctx.stage} ran")
    patched = [st if st.name in allowed else dataclasses.replace(st, run=boom)
               for st in PLAN]
    monkeypatch.setattr(stages, "STAGES", patched)


def test_publish_a_finished_run_trains_nothing_and_ships_its_vectors(finished_run, monkeypatch):
    tmp, run_dir, args = finished_run
    before = digests(run_dir)
    _only(monkeypatch, {"publish"})
    r = runner.invoke(app, ["publish", str(run_dir)])
    assert r.exit_code == 0, r.output
    assert "published" in r.output
    after = digests(run_dir)
    # nothing the run recorded changed: no done-file, vector, index, metric or config (the
    # runner's summary.json lists the stages of its latest invocation)
    new = ("publish.json", "publish.done.json", "summary.json")
    assert {k: v for k, v in after.items() if k not in new} == \
        {k: v for k, v in before.items() if k not in new}
    version = A.current_version_dir(tmp / "published")
    assert version is not None
    for name in ("vectors.npy", "items.parquet", "index.faiss", "metrics.json", "serving.json"):
        assert (version / name).read_bytes() == (run_dir / name).read_bytes(), name
    # again: already current, nothing new
    r = runner.invoke(app, ["publish", str(run_dir)])
    assert r.exit_code == 0, r.output
    assert A.current_version_dir(tmp / "published") == version

    # `run --set publish.enabled=true` on the finished run: same run directory, only the
    # publish step runs (evaluate does not read the published root)
    _only(monkeypatch, {"publish"})
    r = runner.invoke(app, ["run", *sets([*args, "publish.enabled=true"])])
    assert r.exit_code == 0, r.output
    rec = json.loads(A.RUN_RECORD.path(run_dir).read_text())
    assert rec["run_dir"] == str(run_dir)
    for name in ("ingest", "sessionize", "train", "index", "evaluate"):
        assert rec["stages"][name]["status"] == "skipped", name
    assert digests(run_dir)["vectors.npy"] == before["vectors.npy"]


def test_publish_refuses_model_keys_and_unfinished_runs(finished_run, tmp_path):
    _, run_dir, _ = finished_run
    r = runner.invoke(app, ["publish", str(run_dir), "--set", "train.epochs=3"])
    assert r.exit_code == 2
    assert "train.epochs=3" in r.output and "recembed run" in r.output
    r = runner.invoke(app, ["publish", str(tmp_path)])
    assert r.exit_code == 3 and "not a run directory" in r.output
    half = tmp_path / "half"
    half.mkdir()
    (half / A.CONFIG.name).write_bytes(A.CONFIG.path(run_dir).read_bytes())
    for f in run_dir.glob("ingest*"):
        (half / f.name).write_bytes(f.read_bytes())
    for f in ("events.parquet", "vocabulary.parquet", "categories.parquet"):
        (half / f).write_bytes((run_dir / f).read_bytes())
    r = runner.invoke(app, ["publish", str(half)])
    assert r.exit_code == 3, r.output
    assert "sessionize" in r.output and "--resume" in r.output
