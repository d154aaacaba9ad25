"""Logs a scheduler can read (issue 15): progress bars only on a terminal, one line per stage
otherwise, `--log-format json`, and run.json in the run directory, also for a failed run."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recembed import artifacts as A
from recembed.cli import app
from recembed.pipeline import RunReport
from recembed.progress import progress_bar

runner = CliRunner()

STAGES_RUN = ["ingest", "sessionize", "calibrate", "graph", "walks", "sequences", "train",
              "index", "evaluate"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def log_csv(tmp_path_factory) -> Path:
    from recembed.synth import synth_clicks, write_synth

    p = tmp_path_factory.mktemp("logs") / "clicks.csv"
    write_synth(synth_clicks(5_000, seed=4), p)
    return p


def sets(log_csv: Path, tmp: Path, *extra: str) -> list[str]:
    args = [f"input.paths=['{log_csv}']", "input.categories_path=''",
            f"run.runs_dir='{tmp / 'runs'}'", f"publish.dir='{tmp / 'published'}'",
            "train.epochs=2", "train.workers=1", "train.vector_size=16",
            "evaluate.baselines=['pop']", "evaluate.strategies=['last']",
            "walks.walks_per_node=2", "calibrate.enabled=false", "run.progress=true", *extra]
    return [x for a in args for x in ("--set", a)]


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]  # fails on any non-JSON line


def only_run(tmp: Path) -> Path:
    (run,) = list((tmp / "runs").iterdir())
    return run


def test_progress_bars_only_when_stderr_is_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert progress_bar(10, True, unit="walk", desc="walks") is None  # a log file: no bar
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    bar = progress_bar(10, True, unit="walk", desc="walks")
    assert bar is not None
    bar.update(10)
    bar.close()
    assert "10/10" in term.getvalue()  # drawn on stderr
    assert progress_bar(10, False, unit="walk", desc="walks") is None  # the master switch


def test_a_log_file_gets_one_line_per_stage_with_counts_and_seconds(log_csv, tmp_path):
    r = runner.invoke(app, ["run", *sets(log_csv, tmp_path)])
    assert r.exit_code == 0, r.output
    # run.progress is on, but CliRunner's streams are no terminal: no tqdm output at all
    assert "\r" not in r.output and "it/s" not in r.output and "epoch/s" not in r.output
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("[")]
    assert [ln.split("]")[0][1:] for ln in lines] == STAGES_RUN  # one each, no "running"
    ingest = next(ln for ln in lines if ln.startswith("[ingest]"))
    assert " ran in " in ingest and " s, CPU " in ingest and " s, peak " in ingest
    assert "rows_read=5000" in ingest
    r = runner.invoke(app, ["run", *sets(log_csv, tmp_path)])
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("[")]
    assert len(lines) == len(STAGES_RUN) and all("up to date, skipped" in ln for ln in lines)


def test_log_format_json_is_one_object_per_stage_and_one_per_run(log_csv, tmp_path):
    r = runner.invoke(app, ["run", "--log-format", "json", *sets(log_csv, tmp_path)])
    assert r.exit_code == 0, r.output
    events = json_lines(r.stdout)
    stages, run = events[:-1], events[-1]
    assert [e["name"] for e in stages] == STAGES_RUN
    run_dir = only_run(tmp_path)
    for e in stages:
        assert e["event"] == "stage" and e["status"] == "ran" and e["seconds"] >= 0
        assert e["peak_rss_mb"] > 10
        assert e["cpu_seconds"] > 0  # the process's CPU seconds while the stage ran
        done = json.loads((run_dir / A.done_file(e["name"])).read_text())
        assert e["stats"] == done["stats"]
    assert run["event"] == "run" and run["exit_code"] == 0 and run["error"] is None
    assert run["run_dir"] == str(run_dir) and run["seconds"] > 0
    again = json_lines(runner.invoke(app, ["run", "--log-format", "json",
                                           *sets(log_csv, tmp_path)]).stdout)
    assert [e["status"] for e in again[:-1]] == ["skipped"] * len(STAGES_RUN)


def test_run_json_records_a_finished_run(log_csv, tmp_path):
    r = runner.invoke(app, ["run", *sets(log_csv, tmp_path)])
    assert r.exit_code == 0, r.output
    rec = json.loads(A.RUN_RECORD.path(only_run(tmp_path)).read_text())
    assert rec["exit_code"] == 0 and rec["status"] == "ok" and rec["error"] is None
    assert list(rec["stages"]) == STAGES_RUN
    assert rec["stages"]["ingest"]["stats"]["rows_read"] == 5000
    assert rec["started"] <= rec["finished"] and rec["seconds"] > 0


@pytest.mark.parametrize("case", ["bad_input", "crash", "locked"])
def test_run_json_is_written_when_the_run_fails(log_csv, tmp_path, case, monkeypatch):
    extra: list[str] = []
    if case == "bad_input":
        extra = ["input.columns.item='no_such_column'"]
    elif case == "crash":
        import dataclasses

        from recembed import stages

        def boom(ctx):
            raise RuntimeError("injected crash in graph")

        plan = [dataclasses.replace(s, run=boom) if s.name == "graph" else s
                for s in stages.STAGES]
        monkeypatch.setattr(stages, "STAGES", plan)
    else:
        extra = ["publish.enabled=true"]
    args = ["run", "--log-format", "json", *sets(log_csv, tmp_path, *extra)]
    if case == "locked":
        from recembed.publish import publish_lock

        with publish_lock(tmp_path / "published"):
            r = runner.invoke(app, args)
    else:
        r = runner.invoke(app, args)
    code, stage = {"bad_input": (3, "ingest"), "crash": (1, "graph"),
                   "locked": (5, "publish")}[case]
    assert r.exit_code == code, r.output
    rec = json.loads(A.RUN_RECORD.path(only_run(tmp_path)).read_text())
    assert rec["exit_code"] == code and rec["status"] == "failed"
    assert rec["failed_stage"] == stage
    assert {"bad_input": "no_such_column", "crash": "RuntimeError: injected crash in graph",
            "locked": "another run"}[case] in rec["error"]
    # the stages before the failure are in the record, the failed one is not
    assert stage not in rec["stages"] and set(rec["stages"]) < {*STAGES_RUN, "publish"}
    events = json_lines(r.stdout)  # stdout stays pure JSON on failure
    assert events[-1]["event"] == "run" and events[-1]["exit_code"] == code


def test_bad_config_in_json_mode_is_a_run_object_with_exit_2(tmp_path):
    r = runner.invoke(app, ["run", "--log-format", "json", "--set", "sesion.gap_minutes=3"])
    assert r.exit_code == 2
    (run,) = json_lines(r.stdout)
    assert run["exit_code"] == 2 and "did you mean 'session'" in run["error"]


def test_summary_lists_the_warnings_of_sessionize_and_calibration(tmp_path):
    A.write_json(A.CALIBRATION.path(tmp_path), {"enabled": True,
                                                 "notes": ["baseline sr beats the blend"]})
    rep = RunReport(tmp_path, {
        "sessionize": {"status": "ran", "seconds": 1.0, "peak_rss_mb": 100.0,
                       "stats": {"warnings": ["session.gap_minutes widened to 60"],
                                 "sessions": 12}},
        "calibrate": {"status": "skipped", "stats": {"enabled": True}}})
    text = rep.summary()
    assert "sessionize: sessions=12" in text
    _, tail = text.split("\nwarnings:\n")
    assert tail.splitlines() == ["  - sessionize: session.gap_minutes widened to 60",
                                 "  - calibrate: baseline sr beats the blend"]
    assert rep.record(0, started="t", seconds=1.0)["warnings"] == [
        "sessionize: session.gap_minutes widened to 60", "calibrate: baseline sr beats the blend"]
    assert "warnings:" not in RunReport(tmp_path, {}).summary()


def test_a_real_sessionize_warning_reaches_run_json_and_the_json_log(log_csv, tmp_path):
    # nearly every session is shorter than 20 events: sessionize warns
    r = runner.invoke(app, ["run", "--log-format", "json", "--stage", "sessionize",
                            *sets(log_csv, tmp_path, "session.min_length=20",
                                  "session.auto_gap=false", "session.max_short_share=0.05")])
    assert r.exit_code == 0, r.output
    run = json_lines(r.stdout)[-1]
    assert any(w.startswith("sessionize: session.min_length=20") for w in run["warnings"])
    rec = json.loads(A.RUN_RECORD.path(only_run(tmp_path)).read_text())
    assert rec["warnings"] == run["warnings"]


def test_summary_counts_every_quarantine_reason():
    """issue 17: the run summary says, for every quarantine reason, how many rows it removed."""
    from recembed.pipeline import RunReport

    rep = RunReport(Path("/tmp/x"), {"ingest": {"status": "ran", "stats": {
        "rows_read": 100, "quarantined": 7,
        "quarantine_reasons": {"unparseable timestamp": 5, "empty item id": 2}}}})
    text = rep.summary()
    assert "quarantine_reasons[unparseable timestamp]=5" in text
    assert "quarantine_reasons[empty item id]=2" in text
