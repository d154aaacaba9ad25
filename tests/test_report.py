"""The run report (issue 15): the data funnel, the calibration choices, the tuning study and the
history of the published versions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from recembed import artifacts as A
from recembed.config import load_config
from recembed.pipeline import run_pipeline, stage_records
from recembed.report import funnel, version_history, write_report
from recembed.stages import STAGES

FAST = ["train.epochs=2", "train.workers=1", "train.vector_size=16", "evaluate.baselines=[]",
        "evaluate.strategies=['last']", "walks.walks_per_node=2", "run.progress=false",
        "calibrate.enabled=false"]
N_BAD, N_DUP = 20, 15


@pytest.fixture(scope="module")
def messy_csv(tmp_path_factory) -> Path:
    """A synthetic log with unparseable timestamps, exact duplicates of recent rows, and
    events older than the 7-day window."""
    from recembed.synth import synth_clicks, write_synth

    d = tmp_path_factory.mktemp("messy")
    write_synth(synth_clicks(5_000, seed=8), d / "clean.csv")
    df = pd.read_csv(d / "clean.csv", dtype=str)
    ts = pd.to_datetime(df["timestamp"])
    assert (ts < ts.max() - pd.Timedelta(days=7)).any()  # the window has something to drop
    recent = df[ts > ts.max() - pd.Timedelta(days=2)].head(N_DUP)
    df.loc[df.index[1:1 + N_BAD * 50:50], "timestamp"] = "yesterday-ish"
    df = pd.concat([df, recent], ignore_index=True)
    df.to_csv(d / "messy.csv", index=False)
    return d / "messy.csv"


def cfg_for(log: Path, tmp: Path, *extra: str):
    return load_config(None, [f"input.paths=['{log}']", "input.categories_path=''",
                              f"run.runs_dir='{tmp / 'runs'}'", f"publish.dir='{tmp / 'pub'}'",
                              *FAST, *extra])


def quiet(cfg, run_dir=None):
    return run_pipeline(cfg, run_dir, plan=STAGES, echo=lambda s: None)


def table_rows(page: str, heading: str) -> dict[str, str]:
    """{first cell: second cell} of the first table after `heading`."""
    section = page.split(f"<h2>{heading}</h2>", 1)[1].split("</table>", 1)[0]
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in section.split("<tr>")[2:]]
    return {c[0]: c[1] for c in cells}


def test_funnel_rows_in_order_from_each_stage():
    records = {
        "ingest": {"stats": {"rows_read": 1000, "quarantined": 9,
                             "quarantine_reasons": {"empty item id": 2,
                                                    "unparseable timestamp": 7},
                             "outside_window": 40, "duplicates": 11, "events": 940}},
        "sessionize": {"stats": {"bot_events": 30, "repeats_collapsed": 20,
                                 "events_in_short_sessions": 90, "events_kept": 800,
                                 "train_sessions": 150, "validation_sessions": 30,
                                 "holdout_sessions": 25}},
        "sequences": {"stats": {"sessions_in": 150, "sessions_absent": 4}},
    }
    assert [(r["step"], r["count"], r["kind"]) for r in funnel(records)] == [
        ("rows read", 1000, "input"),
        ("quarantined: unparseable timestamp", 7, "removed"),
        ("quarantined: empty item id", 2, "removed"),
        ("outside the window", 40, "removed"),
        ("duplicates", 11, "removed"),
        ("events after ingest", 940, "kept"),
        ("bot events removed", 30, "removed"),
        ("repeats collapsed", 20, "removed"),
        ("events in too-short sessions", 90, "removed"),
        ("events in sessions", 800, "kept"),
        ("sessions: train", 120, "sessions"),
        ("sessions: validation", 30, "sessions"),
        ("sessions: holdout", 25, "sessions"),
        ("sessions in the item2vec corpus", 146, "sessions"),
    ]
    assert funnel({}) == []


def test_the_funnel_of_a_messy_run_adds_up_and_is_in_the_report(messy_csv, tmp_path):
    rep = quiet(cfg_for(messy_csv, tmp_path, "ingest.window_days=7"))
    page = A.REPORT.path(rep.run_dir).read_text()
    rows = {k: int(v.replace("&minus;", "").replace(",", ""))
            for k, v in table_rows(page, "Data funnel").items()}
    assert rows["rows read"] == 5_000 + N_DUP
    assert rows["quarantined: unparseable timestamp"] == N_BAD
    assert rows["duplicates"] == N_DUP
    assert rows["outside the window"] > 0
    removed_at_ingest = (N_BAD + rows["outside the window"] + rows["duplicates"])
    assert rows["events after ingest"] == rows["rows read"] - removed_at_ingest
    assert rows["events in sessions"] == (rows["events after ingest"] - rows["bot events removed"]
                                          - rows["repeats collapsed"]
                                          - rows["events in too-short sessions"])
    ses = stage_records(rep.run_dir)["sessionize"]["stats"]
    assert rows["sessions: holdout"] == ses["holdout_sessions"] > 0
    assert rows["sessions: train"] + rows["sessions: validation"] == ses["train_sessions"]
    assert page.count('src="data:image/png;base64,') >= 2  # the funnel's bars among them
    assert "<h2>Data funnel</h2>" in page and "Publishing is off" in page


def _metrics(calibration: dict) -> A.Metrics:
    raw = {"ks": [20], "queries": {"queries": 10, "oov_share": 0.0}, "methods": {}}
    return A.Metrics.from_evaluation(raw, "item2vec", {}, calibration)


def test_calibration_section_shows_choices_validation_and_candidates(tmp_path):
    cal = {"enabled": True, "corpus": "walks", "target_tokens": 1_000_000,
           "blend": {"weights": {"directional": 0.3, "repeat": 3.0}, "history": 10},
           "validation": {"recall@20": 0.6861, "mrr@20": 0.3133},
           "signals_alone": {"directional": {"recall@20": 0.6583, "mrr@20": 0.2369}},
           "baselines": {"stan": {"recall@20": 0.6483, "mrr@20": 0.2834}},
           "validation_queries": {"queries": 1507},
           "notes": ["baseline stan beats the blend on validation"],
           "candidates": [{"corpus": "both", "target_tokens": 3_000_000, "epochs": 43,
                           "recall@20": 0.6808, "mrr@20": 0.3102, "seconds": 9.719}],
           "seconds": 60.62}
    write_report(tmp_path / "r.html", _metrics(cal))
    page = (tmp_path / "r.html").read_text()
    chosen = table_rows(page, "Calibration")
    assert chosen["corpus"] == "walks"
    assert chosen["training amount (target tokens)"] == "1,000,000"
    assert chosen["blend: weights"] == "directional=0.3, repeat=3"
    val = page.split("<h3>Validation</h3>", 1)[1].split("</table>", 1)[0]
    for name, r, m in (("blend (chosen)", "0.6861", "0.3133"),
                       ("signal alone: directional", "0.6583", "0.2369"),
                       ("baseline: stan", "0.6483", "0.2834")):
        assert re.search(rf">{re.escape(name)}</td><td>{r}</td><td>{m}</td>", val), name
    assert "<td>both</td><td>3,000,000</td><td>43</td><td>0.6808</td>" in page
    assert "1,507 queries" in page and "60.62 s" in page
    assert "<li>baseline stan beats the blend on validation</li>" in page
    write_report(tmp_path / "off.html", _metrics({"enabled": False,
                                                   "reason": "calibrate.enabled = false"}))
    assert "Calibration off: calibrate.enabled = false." in (tmp_path / "off.html").read_text()


def _version(root: Path, name: str, recall: float, items: int, overlap=None) -> None:
    (root / name).mkdir(parents=True)
    A.write_json(root / name / A.MANIFEST, {
        "created": f"2026-11-{name[-2:]}T02:00:00", "counts": {"vectors": items, "events": 9},
        "metrics": {"serving": {"recall@20": recall, "coverage@20": 0.5}},
        "drift": {} if overlap is None else {"overlap@10": overlap, "new_share": 0.1,
                                             "dropped_share": 0.2}})


def test_version_history_reads_the_manifests_up_to_the_current_version(tmp_path):
    root = tmp_path / "pub"
    assert version_history(root) == []
    _version(root, "v20261121", 0.50, 100)
    _version(root, "v20261122", 0.55, 120, overlap=0.8)
    _version(root, "v20261123", 0.90, 130, overlap=0.7)  # renamed, but LATEST never switched
    (root / "v20261124").mkdir()  # no manifest: not a version
    (root / A.LATEST).write_text("v20261122\n")
    hist = version_history(root)
    assert [h["version"] for h in hist] == ["v20261121", "v20261122"]
    assert [h["recall@20"] for h in hist] == [0.50, 0.55]
    assert [h["items"] for h in hist] == [100, 120]
    assert [h["overlap@k"] for h in hist] == [None, 0.8]
    assert [h["current"] for h in hist] == [False, True]
    write_report(tmp_path / "r.html", _metrics({}), history=hist)
    page = (tmp_path / "r.html").read_text()
    section = page.split("<h2>Published versions</h2>", 1)[1]
    assert "v20261122 (current)" in section and "v20261123" not in section
    assert section.count('src="data:image/png;base64,') == 1


def test_the_report_shows_the_published_root_as_evaluate_saw_it_and_a_rerun_does_not_republish(
        tmp_path, messy_csv):
    pub = ["publish.enabled=true", "publish.max_recall_drop=1.0"]
    first = quiet(cfg_for(messy_csv, tmp_path, *pub))
    page = A.REPORT.path(first.run_dir).read_text()
    assert "Nothing is published yet." in page.split("<h2>Published versions</h2>", 1)[1]
    v1 = A.current_version_dir(tmp_path / "pub").name
    # a crash after LATEST, before publish.done.json: the rerun runs publish alone (the
    # published root is no input of evaluate, so a new version never reruns it) ...
    (first.run_dir / A.done_file("publish")).unlink()
    again = quiet(cfg_for(messy_csv, tmp_path, *pub))
    assert again.stages["evaluate"]["status"] == "skipped"
    assert again.stages["publish"]["status"] == "ran"
    # ... and publishing knows the served model is already current: no duplicate version
    assert again.stages["publish"]["stats"]["version"] == v1
    assert [p.name for p in (tmp_path / "pub").iterdir() if p.name.startswith("v")] == [v1]
    # a second run publishes a second version: its report shows the first in the history
    second = quiet(cfg_for(messy_csv, tmp_path, *pub, "run.seed=5"))
    hist = table_rows(A.REPORT.path(second.run_dir).read_text(), "Published versions")
    assert list(hist) == [f"{v1} (current)"]
    man = json.loads((tmp_path / "pub" / v1 / A.MANIFEST).read_text())
    assert hist[f"{v1} (current)"] == man["created"]


def test_a_tuned_run_dir_gets_the_tuning_section(messy_csv, tmp_path):
    import optuna

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    study = optuna.create_study(study_name="t", direction="maximize",
                                storage=f"sqlite:///{A.TUNE_DB.path(run_dir)}")
    for x in (1, 2, 3):
        study.add_trial(optuna.trial.create_trial(
            params={"train.window": x},
            distributions={"train.window": optuna.distributions.IntDistribution(1, 10)},
            value=0.1 * x))
    quiet(cfg_for(messy_csv, tmp_path), run_dir)
    page = A.REPORT.path(run_dir).read_text()
    assert "<h2>Tuning</h2>" in page and "Study t" in page and "3 trials" in page


def test_report_header_served_row_and_intervals(messy_csv, tmp_path):
    """The report a reader opens: a header naming the run, code version, inputs, the event time
    range and the config's differences from the defaults; a headed metrics table whose served
    row is marked and carries bootstrap intervals; loss per trained token."""
    from html.parser import HTMLParser

    from recembed import __version__

    first = quiet(cfg_for(messy_csv, tmp_path, "evaluate.baselines=['pop', 'sr']",
                          "train.epochs=1"))
    rep = quiet(cfg_for(messy_csv, tmp_path, "evaluate.baselines=['pop', 'sr']"))
    assert first.run_dir != rep.run_dir
    page = A.REPORT.path(rep.run_dir).read_text()

    class Parse(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack, self.header, self.rows, self.h2 = [], {}, [], []
            self._dt = self._row = None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            self.stack.append((tag, a))
            if tag == "tr" and any(t == "table" and x.get("id") == "metrics"
                                   for t, x in self.stack):
                self._row = {"cls": a.get("class"), "cells": []}
                self.rows.append(self._row)

        def handle_endtag(self, tag):
            while self.stack and self.stack.pop()[0] != tag:
                pass

        def handle_data(self, data):
            if not self.stack:
                return
            tag, _ = self.stack[-1]
            if tag == "dt":
                self._dt = data
            elif tag == "dd" and self._dt:
                self.header[self._dt] = data
            elif tag == "h2":
                self.h2.append(data)
            elif tag == "td" and self._row is not None:
                self._row["cells"].append(data)

    p = Parse()
    p.feed(page)
    assert p.header["run"] == rep.run_dir.name
    assert p.header["code version"] == __version__
    assert str(messy_csv) in p.header["inputs"]
    assert "days)" in p.header["event time range"]
    assert "calibrate.enabled = false" in p.header["config differences from the defaults"]
    assert "train.epochs = 2" in p.header["config differences from the defaults"]
    assert p.h2[0] == "Metrics on the holdout"
    p.rows = [r for r in p.rows if r["cells"]]  # the heading row has <th> only
    served = [r for r in p.rows if r["cls"] == "served"]
    assert len(served) == 2 and all(r["cells"][0].endswith(":serving (served)") for r in served)
    assert all(r["cls"] is None for r in p.rows if not r["cells"][0].endswith("(served)"))
    m = A.Metrics.load(A.METRICS.path(rep.run_dir))
    lo, hi = m.serving.allow_repeats.interval("recall", 20)
    assert served[0]["cells"][6] == f"[{lo:.4f}, {hi:.4f}]"
    assert "Training loss" in p.h2 and "Loss per trained token" in page
    # example neighbour lists: head, torso and tail items, each with 5 neighbours and categories
    nb = page.split("<table id='neighbours'>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td[^>]*>(head|torso|tail)</td>(.*?)</tr>", nb)
    assert [b for b, _ in rows] == ["head"] * 3 + ["torso"] * 3 + ["tail"] * 3
    assert all(len(re.findall(r"\(-?\d+\)", r)) == 5 for _, r in rows)
    assert "Distributions" in p.h2 and "session length" not in p.h2
    # the comparison with the previous run of the same config name
    prev = page.split("<table id='previous'>", 1)[1].split("</table>", 1)[0]
    assert first.run_dir.name in page.split("<h2>Previous run</h2>", 1)[1][:300]
    first_m = A.Metrics.load(A.METRICS.path(first.run_dir))
    assert f"<td>{first_m.serving.allow_repeats.recall(20):.4f}</td>" in prev
