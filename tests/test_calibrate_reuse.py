"""Calibration reuse across nights (issue 23): the previous published version's choice is
re-validated on today's validation split and kept, or calibration runs fully, and
calibration.json / the manifest say which and why."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest

from recembed.calibrate import PreviousChoice, calibrate_run
from recembed.config import load_config
from recembed.pipeline import run_pipeline
from recembed.settings import calibration_plan
from recembed.stages import STAGES
from recembed.synth import synth_profile, write_synth

DAY = 86_400


def _overrides(path, tmp_path) -> list[str]:
    return [f"input.paths=['{path}']", "input.categories_path=''",
            f"run.runs_dir='{tmp_path}'", "run.progress=false",
            "calibrate.target_tokens=[20000, 60000]", "train.vector_size=8",
            "calibrate.max_queries=400", "train.workers=1",
            # skip-gram corpora only: the kept choice must carry the skip-gram search's settings
            "calibrate.corpora=['both', 'sessions', 'walks']"]


def _sessionized(tmp_path, log, name: str):
    path = tmp_path / f"{name}.csv"
    write_synth(log, path)
    cfg = load_config(None, _overrides(path, tmp_path))
    rep = run_pipeline(cfg, run_dir=tmp_path / name, stages=["sessionize"], plan=STAGES,
                       echo=lambda s: None)
    train = pd.read_parquet(rep.run_dir / "sessions_train.parquet",
                            columns=["session", "item", "ts"])
    table = pd.read_parquet(rep.run_dir / "session_table.parquet",
                            columns=["session", "end", "split"])
    vocab = pd.read_parquet(rep.run_dir / "vocabulary.parquet", columns=["code", "id"])
    ids = vocab.sort_values("code")["id"].astype(str).to_numpy()
    return cfg, train, table, ids


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """One log sessionized, and its full calibration (the "previous version")."""
    tmp = tmp_path_factory.mktemp("night")
    log = synth_profile("clicks", 6000, seed=21)
    cfg, train, table, ids = _sessionized(tmp, log, "first")
    plan = calibration_plan(cfg)
    first = calibrate_run(train, table, len(ids), tmp / "w0", plan, seed=0, item_ids=ids)
    return {"tmp": tmp, "log": log, "plan": plan, "train": train, "table": table, "ids": ids,
            "first": first, "prev": PreviousChoice("v1", first, set(ids))}


def test_no_previous_version_calibrates_fully(night):
    first = night["first"]
    assert first["reuse"]["decision"] == "full"
    assert "no previous published version" in first["reuse"]["reason"]
    assert len(first["candidates"]) >= len(night["plan"].corpora)
    assert first["calibrated_data_end"] == first["data_end"]


def test_nothing_changed_keeps_the_previous_choice(night):
    n = night
    rec = calibrate_run(n["train"], n["table"], len(n["ids"]), n["tmp"] / "w1", n["plan"],
                        seed=0, previous=n["prev"], item_ids=n["ids"])
    assert rec["reuse"]["decision"] == "kept" and rec["reuse"]["previous_version"] == "v1"
    assert len(rec["candidates"]) == 1  # scored, not searched
    assert (rec["corpus"], rec["target_tokens"]) == (n["first"]["corpus"],
                                                     n["first"]["target_tokens"])
    assert rec["blend"]["settings"] == n["first"]["blend"]["settings"]
    assert rec["calibrated_data_end"] == n["first"]["calibrated_data_end"]
    assert rec["reuse"]["turnover"] == 0.0
    # the skip-gram settings the first night searched (calibrate.sgns) are kept and trained
    chosen = n["first"]["sgns"]["chosen"]
    assert n["first"]["sgns"]["decision"] == "searched"
    assert rec["sgns"]["decision"] == "kept" and rec["sgns"]["chosen"] == chosen
    assert rec["candidates"][0]["sgns"] == chosen
    # the kept choice cost one candidate: fewer tokens than the full calibration
    assert rec["cost"]["tokens_trained"] < n["first"]["cost"]["tokens_trained"]


def test_new_items_recalibrate(night):
    n = night
    ev = n["log"].events.copy()
    # the same clicks, but every item renamed: today's validation items are all new
    ev["item_id"] = "new-" + ev["item_id"].astype(str)
    log = replace(n["log"], events=ev)
    _, train, table, ids = _sessionized(n["tmp"], log, "shifted")
    rec = calibrate_run(train, table, len(ids), n["tmp"] / "w2", n["plan"], seed=0,
                        previous=n["prev"], item_ids=ids)
    assert rec["reuse"]["decision"] == "full"
    assert rec["reuse"]["turnover"] == 1.0 and "max_turnover" in rec["reuse"]["reason"]
    assert len(rec["candidates"]) >= len(n["plan"].corpora)
    assert rec["calibrated_data_end"] == rec["data_end"]


def test_an_old_calibration_recalibrates(night):
    n = night
    later = n["train"].assign(ts=n["train"]["ts"] + 8 * DAY)  # the same log 8 days later
    table = n["table"].assign(end=n["table"]["end"] + 8 * DAY)
    rec = calibrate_run(later, table, len(n["ids"]), n["tmp"] / "w3", n["plan"], seed=0,
                        previous=n["prev"], item_ids=n["ids"])
    assert rec["reuse"]["decision"] == "full" and "max_age_days" in rec["reuse"]["reason"]
    assert rec["reuse"]["age_days"] == pytest.approx(8.0)


def test_a_fallen_objective_recalibrates(night):
    n = night
    prev = json.loads(json.dumps(n["first"]))
    prev["validation"]["objective"] = prev["validation"]["objective"] + 0.5  # it scored higher
    prev["validation"]["objective_se"] = 0.01
    rec = calibrate_run(n["train"], n["table"], len(n["ids"]), n["tmp"] / "w4", n["plan"],
                        seed=0, previous=PreviousChoice("v1", prev, set(n["ids"])),
                        item_ids=n["ids"])
    assert rec["reuse"]["decision"] == "full" and "fell" in rec["reuse"]["reason"]
    # the re-validation candidate counts in the cost, then the full search runs
    assert len(rec["candidates"]) >= 1 + len(n["plan"].corpora)


def test_reuse_never_calibrates_fully(night):
    n = night
    rec = calibrate_run(n["train"], n["table"], len(n["ids"]), n["tmp"] / "w5",
                        replace(n["plan"], reuse="never"), seed=0, previous=n["prev"],
                        item_ids=n["ids"])
    assert rec["reuse"]["decision"] == "full" and "never" in rec["reuse"]["reason"]


def test_reuse_keys_are_validated():
    assert load_config(None, []).calibrate.reuse == "auto"
    with pytest.raises(Exception, match="reuse"):
        load_config(None, ["calibrate.reuse='sometimes'"])
    with pytest.raises(Exception, match="max_turnover"):
        load_config(None, ["calibrate.max_turnover=1.5"])


@pytest.mark.slow
def test_a_second_night_keeps_the_choice_and_the_manifest_says_so(tmp_path):
    """Two runs publishing into one root: the second night's calibrate reads the first
    version (a declared input), keeps its choice, and its manifest records why."""
    log = synth_profile("clicks", 6000, seed=22)
    path = tmp_path / "clicks.csv"
    write_synth(log, path)
    ov = [*_overrides(path, tmp_path), "publish.enabled=true",
          f"publish.dir='{tmp_path / 'published'}'",
          "evaluate.baselines=['pop']"]
    first = run_pipeline(load_config(None, ov), run_dir=tmp_path / "n1", plan=STAGES,
                         echo=lambda s: None)
    second = run_pipeline(load_config(None, ov), run_dir=tmp_path / "n2", plan=STAGES,
                          echo=lambda s: None)
    c1 = json.loads((first.run_dir / "calibration.json").read_text())
    c2 = json.loads((second.run_dir / "calibration.json").read_text())
    assert c1["reuse"]["decision"] == "full" and c2["reuse"]["decision"] == "kept"
    assert c2["corpus"] == c1["corpus"] and c2["target_tokens"] == c1["target_tokens"]
    published = tmp_path / "published"
    latest = (published / "LATEST").read_text().strip()
    man = json.loads((published / latest / "manifest.json").read_text())
    assert man["calibration"]["reuse"]["decision"] == "kept"
    assert man["calibration"]["cost"]["tokens_trained"] == c2["cost"]["tokens_trained"]


def test_the_fall_is_judged_against_the_standard_error_of_the_difference():
    # the 10M nightly's night 2: recorded 0.9690 +- 0.0107, today 0.9562 +- 0.0107. The fall
    # (0.0128) is more than one recorded SE but less than the difference's sqrt(2) x 0.0107 =
    # 0.0151: the choice still holds
    from recembed.calibrate import _revalidated

    prev = {"validation": {"objective": 0.9690, "objective_se": 0.0107}}
    kept = _revalidated(prev, {"objective": 0.9562, "objective_se": 0.0107})
    assert kept["decision"] == "kept"
    assert kept["difference_se"] == pytest.approx(0.0107 * 2 ** 0.5)
    fell = _revalidated(prev, {"objective": 0.9530, "objective_se": 0.0107})
    assert fell["decision"] == "full" and "standard error of the difference" in fell["reason"]
    # a version that recorded no standard error: today's alone
    assert _revalidated({"validation": {"objective": 0.9}},
                        {"objective": 0.85, "objective_se": 0.03})["decision"] == "full"
