"""The skip-gram search for the exported vectors (issue 24, `calibrate.sgns`): the choice rule on
hand-made candidates, the coordinate search, the config boundary, and one small run that
carries the choice into the final training and the records."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from recembed.calibrate import CalibrationPlan, choose_sgns, sgns_search
from recembed.config import ConfigError, dump_config, load_config
from recembed.settings import calibration_plan, resolve_config
from tests.conftest import synth_config

N = 400  # validation queries of the hand-made candidates


def _blend(hits: int, shift: int = 0) -> np.ndarray:
    """Per-query blend objectives: `hits` queries at 1 starting at query `shift`."""
    a = np.zeros(N)
    a[shift:shift + hits] = 1.0
    return a


def _cand(name: str, blend: np.ndarray, vectors: float, vectors_se: float = 0.02,
          cost: float = 0.0) -> dict:
    return {"name": name, "per_query": blend, "objective": float(blend.mean()),
            "objective_se": float(blend.std(ddof=1) / np.sqrt(N)), "vectors_objective": vectors,
            "vectors_se": vectors_se, "sgns_cost": cost, "tokens_trained": 1000}


def test_the_vectors_decide_only_among_settings_within_one_blend_se():
    base = _cand("default", _blend(200), 0.40)
    # far better vectors, but the blend loses 40 of 400 queries (paired SE about 0.016)
    lossy = _cand("lossy", _blend(160), 0.60)
    # better vectors by more than their SE, the blend 2 queries lower (paired SE about 0.025:
    # 100 queries differ)
    good = _cand("good", _blend(198, 50), 0.48)
    assert choose_sgns([base, lossy, good], base)["name"] == "good"
    # without the eligible one, the default stays: the vectors never buy a blend loss
    assert choose_sgns([base, lossy], base)["name"] == "default"


def test_a_blend_gain_inside_its_se_never_excludes_better_vectors():
    # nested hits: the two blends differ on 2 of 400 queries, a paired SE of 0.0035 below the
    # 0.005 gain, but far inside the blend's own SE (0.025)
    base = _cand("default", _blend(200), 0.93, vectors_se=0.01)
    window1 = _cand("window 1", _blend(202), 0.89, vectors_se=0.01)
    assert choose_sgns([base, window1], base)["name"] == "default"


def test_a_tie_on_the_vectors_goes_to_the_default():
    base = _cand("default", _blend(200), 0.40)
    close = _cand("close", _blend(201, 30), 0.41)  # better, but within vectors_se (0.02)
    assert choose_sgns([close, base], base)["name"] == "default"
    clear = _cand("clear", _blend(201, 60), 0.45)
    assert choose_sgns([close, base, clear], base)["name"] == "clear"


def test_without_the_default_in_the_tie_the_cheaper_setting_wins():
    # the default's blend fell out of the SE of the best blend seen so far (the reference)
    ref = _cand("earlier", _blend(260), 0.30)
    base = _cand("default", _blend(200), 0.40)
    big = _cand("window 10", _blend(258, 100), 0.50, cost=7.0)
    small = _cand("window 1", _blend(259, 120), 0.49, cost=-2.0)
    assert choose_sgns([base, big, small], base, reference=[ref, base, big, small])["name"] \
        == "window 1"


def _plan(**kw) -> CalibrationPlan:
    return replace(calibration_plan(load_config(None, ["train.vector_size=16"])), **kw)


def test_the_search_moves_one_setting_at_a_time_and_stops_at_the_token_budget():
    plan = _plan(sgns=["ns_exponent", "window"],
                 sgns_values={"ns_exponent": (0.5, -0.5, 1.0), "window": (1, 3, 10)})
    # vectors: ns -0.5 clearly best; then a window of 10 would be better still
    vec = {(0.5, 3): 0.40, (-0.5, 3): 0.50, (1.0, 3): 0.42, (-0.5, 1): 0.45,
           (-0.5, 10): 0.60}
    base = {**_cand("base", _blend(200), vec[(0.5, 3)]), "corpus": "sessions",
            "option_tokens": 1000}
    record: dict = {"candidates": [{"tokens_trained": 1000}]}
    trained = []

    def run_sgns(st: dict) -> dict:
        trained.append(dict(st))
        record["candidates"].append({"tokens_trained": 1000})
        return {**_cand(str(st), _blend(200), vec[(st["ns_exponent"], st["window"])]),
                "postprocess": "none", "vectors_ann": {}, "vectors_last": {}}

    base.update(postprocess="none", vectors_ann={}, vectors_last={})
    # budget for the base + 3 more candidates: window 10 (the last) is not tried
    rec, chosen = sgns_search(plan, base, run_sgns, record, budget=4000)
    assert trained == [{"ns_exponent": -0.5, "window": 3}, {"ns_exponent": 1.0, "window": 3},
                       {"ns_exponent": -0.5, "window": 1}]
    assert rec["default"] == {"ns_exponent": 0.5, "window": 3}
    assert rec["chosen"] == {"ns_exponent": -0.5, "window": 3} and rec["changed"]
    assert chosen["vectors_objective"] == 0.50
    assert [s["to"] for s in rec["steps"]] == [-0.5, 3]
    assert len(rec["not_tried"]) == 1 and "window = 10" in rec["not_tried"][0]
    assert len(rec["tried"]) == 4 and sum(r["chosen"] for r in rec["tried"]) == 1
    for r in rec["tried"]:
        assert {"objective", "objective_se", "vectors_objective", "vectors_se",
                "tokens_trained"} <= set(r)
    # with a prefetch (calibration's worker thread): the next value of a setting starts
    # training before the current one is run, only when both fit the budget; the same record
    events: list = []
    record["candidates"] = [{"tokens_trained": 1000}]
    trained.clear()
    again, _ = sgns_search(plan, base, lambda st: (events.append(("run", st)), run_sgns(st))[1],
                           record, budget=4000,
                           prefetch=lambda st: events.append(("prefetch", st)))
    assert again == rec
    assert events == [("prefetch", {"ns_exponent": 1.0, "window": 3}),
                      ("run", {"ns_exponent": -0.5, "window": 3}),
                      ("run", {"ns_exponent": 1.0, "window": 3}),
                      ("run", {"ns_exponent": -0.5, "window": 1})]  # window 10: no budget


def test_explicit_train_keys_are_never_searched_and_win_over_the_record(tmp_path):
    cfg = load_config(None, ["train.window=7", "calibrate.sgns=['ns_exponent', 'window']"])
    assert calibration_plan(cfg).sgns == ["ns_exponent"]
    record = {"enabled": True, "corpus": "sessions", "target_tokens": 1_000_000,
              "sgns": {"chosen": {"ns_exponent": -0.5, "window": 10}}}
    out = resolve_config(cfg, record)
    assert out.train.window == 7 and out.train.ns_exponent == -0.5
    auto = resolve_config(load_config(None), record)
    assert auto.train.window == 10 and auto.train.ns_exponent == -0.5
    # a config read back from a run's config.toml writes every key out, defaults included:
    # those still count as unset, so it searches and resolves as the original config did
    dumped = tmp_path / "config.toml"
    dumped.write_text(dump_config(load_config(None)))
    again = load_config(dumped)
    assert calibration_plan(again).sgns == ["window"]
    assert resolve_config(again, record).train.window == 10
    # an empty list turns the search off
    assert calibration_plan(load_config(None, ["calibrate.sgns=[]"])).sgns == []


def test_impossible_search_lists_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"calibrate\.sgns.*twice"):
        load_config(None, ["calibrate.sgns=['window', 'window']"])
    with pytest.raises(ConfigError, match=r"calibrate\.sgns lists vector_size.*index\.type"):
        load_config(None, ["calibrate.sgns=['vector_size']", "index.type='Flat'"])
    with pytest.raises(ConfigError, match=r"calibrate\.sgns lists vector_size.*warm_start"):
        load_config(None, ["calibrate.sgns=['vector_size']", "train.warm_start=true",
                           "train.postprocess='none'"])
    # an explicit dimension is not searched: then index.type is fine
    load_config(None, ["calibrate.sgns=['vector_size']", "index.type='Flat'",
                       "train.vector_size=32"])


def test_the_learning_rate_is_searched_on_request_and_resolved_into_train():
    cfg = load_config(None, ["calibrate.sgns=['window', 'alpha']"])
    plan = calibration_plan(cfg)
    assert plan.sgns == ["window", "alpha"]
    assert plan.sgns_values["alpha"] == (0.025, 0.05, 0.1)
    assert plan.train_params.alpha == 0.05  # the default the search starts from
    record = {"enabled": True, "corpus": "sessions", "target_tokens": 1_000_000,
              "sgns": {"chosen": {"window": 3, "alpha": 0.1}}}
    assert resolve_config(cfg, record).train.alpha == 0.1
    # an explicit learning rate is the user's: never searched, never replaced
    mine = load_config(None, ["calibrate.sgns=['window', 'alpha']", "train.alpha=0.02"])
    assert calibration_plan(mine).sgns == ["window"]
    assert resolve_config(mine, record).train.alpha == 0.02
    with pytest.raises(ConfigError, match=r"calibrate\.sgns"):
        load_config(None, ["calibrate.sgns=['learning_rate']"])


def test_a_kept_previous_choice_trains_with_its_skip_gram_settings():
    from recembed.calibrate import PreviousChoice, _previous_sgns

    plan = _plan(sgns=["ns_exponent"])
    prev = PreviousChoice("v1", {"sgns": {"chosen": {"ns_exponent": -0.5, "window": 10}}},
                          set())
    assert _previous_sgns(plan, prev) == {"ns_exponent": -0.5}
    assert _previous_sgns(plan, None) == {}


@pytest.mark.slow  # one small calibrated run (about a minute)
def test_the_chosen_settings_reach_the_final_training_and_every_record(tmp_path, monkeypatch):
    import recembed.calibrate as C
    from recembed.pipeline import run_pipeline
    from recembed.stages import STAGES

    # the rule is tested above; here a fixed pick (the last setting tried) makes the
    # plumbing visible whatever the small log's vectors prefer
    monkeypatch.setattr(C, "choose_sgns", lambda cands, default, reference=None: cands[-1])
    cfg = synth_config(tmp_path, "clicks", 6000, 5, "calibrate.target_tokens=[20000]",
                       "calibrate.corpora=['sessions']", "train.vector_size=8",
                       "calibrate.sgns=['window']", "evaluate.baselines=['pop', 'item_knn']",
                       "train.workers=1")
    rep = run_pipeline(cfg, plan=STAGES, echo=lambda s: None)
    run = rep.run_dir
    cal = json.loads((run / "calibration.json").read_text())
    sg = cal["sgns"]
    assert sg["decision"] == "searched" and sg["default"] == {"window": 3}
    assert sg["chosen"] == {"window": 10} and sg["changed"]  # the last of 1, 5, 10
    assert [r["settings"]["window"] for r in sg["tried"]] == [3, 1, 5, 10]
    # every tried setting is a recorded candidate, its tokens counted in the cost
    tried = [c for c in cal["candidates"] if c.get("sgns")]
    assert [c["sgns"]["window"] for c in tried] == [1, 5, 10]
    assert cal["cost"]["tokens_trained"] == sum(c["tokens_trained"] for c in cal["candidates"])
    assert cal["cost"]["candidates"] == 4
    train = json.loads((run / "train.json").read_text())
    assert train["sgns"]["window"] == 10 and train["sgns"]["ns_exponent"] == 0.5
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["calibration"]["sgns"]["chosen"] == {"window": 10}
    assert "Skip-gram settings for the exported vectors" in (run / "report.html").read_text()
