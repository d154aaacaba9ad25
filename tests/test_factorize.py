"""item-kNN's similarity factorized (recembed.factorize) and the corpus option "svd"."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recembed import factorize as F
from recembed.config import ConfigError, load_config
from recembed.factorize import factorize_sessions


def _dots(res, n: int) -> np.ndarray:
    emb = np.zeros((n, res.vectors.shape[1]))
    emb[res.codes] = res.vectors
    ctx = np.zeros_like(emb)
    ctx[res.codes] = res.context
    return emb @ ctx.T


def test_at_full_rank_the_dot_products_are_item_knns_cosine():
    # sessions {0, 1}, {0, 1, 1}, {0, 2}: item 0 is in 3 sessions, 1 in 2 (a repeat counts
    # once), 2 in 1. cos(0, 1) = 2 / sqrt(3 * 2), cos(0, 2) = 1 / sqrt(3), cos(1, 2) = 0
    sessions = np.array([0, 0, 1, 1, 1, 2, 2])
    items = np.array([0, 1, 0, 1, 1, 0, 2])
    res = factorize_sessions(sessions, items, 4, dimension=8)
    dots = _dots(res, 4)
    assert res.vectors.shape == (3, 8) and list(res.codes) == [0, 1, 2]
    assert dots[0, 1] == pytest.approx(2 / np.sqrt(6), abs=1e-6)
    assert dots[0, 2] == pytest.approx(1 / np.sqrt(3), abs=1e-6)
    assert dots[1, 2] == pytest.approx(0.0, abs=1e-6)
    assert np.diag(dots)[:3] == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)
    assert list(res.counts) == [3, 2, 1]
    assert res.stats["svd"]["solver"] == "eigh" and res.stats["svd"]["norm_kept"] == 1.0


def _random_log(n_items: int, n_sessions: int, seed: int):
    rng = np.random.default_rng(seed)
    lens = rng.integers(2, 6, n_sessions)
    sessions = np.repeat(np.arange(n_sessions), lens)
    # a few groups of items that co-occur, so the similarity has a low-rank part
    group = rng.integers(0, 20, n_sessions)
    items = (np.repeat(group, lens) * (n_items // 20) + rng.integers(0, n_items // 20,
                                                                      len(sessions)))
    return sessions, items % n_items


def test_the_sparse_solver_keeps_the_best_rank_d_approximation():
    n = F.DENSE_BELOW + 476  # past the dense path: ARPACK
    sessions, items = _random_log(n, 6000, 1)
    res = factorize_sessions(sessions, items, n, dimension=12, seed=3)
    assert res.stats["svd"]["solver"] == "arpack" and res.stats["svd"]["rank"] == 12
    # the reference: the Gram matrix of the column-normalized incidence matrix, written here
    x = np.zeros((6000, n))
    x[sessions, items] = 1.0
    x = x[:, res.codes]
    x /= np.linalg.norm(x, axis=0)
    lam = np.sort(np.linalg.eigvalsh(x.T @ x))[::-1][:12]
    got = np.sort(np.linalg.norm(res.vectors.astype(np.float64), axis=0) ** 2)[::-1]
    assert got == pytest.approx(lam, rel=1e-4)  # the squared singular values, top 12


def test_the_factorization_is_the_same_for_the_same_seed():
    n = F.DENSE_BELOW + 200
    sessions, items = _random_log(n, 3000, 2)
    a = factorize_sessions(sessions, items, n, dimension=8, seed=5)
    b = factorize_sessions(sessions, items, n, dimension=8, seed=5)
    assert a.vectors.tobytes() == b.vectors.tobytes()


def test_min_count_drops_items_in_fewer_sessions_and_a_tiny_catalogue_pads_zeros():
    sessions = np.array([0, 0, 1, 1, 2, 2])
    items = np.array([0, 1, 0, 1, 0, 2])
    res = factorize_sessions(sessions, items, 3, dimension=5, min_count=2)
    assert list(res.codes) == [0, 1]  # item 2 is in one session
    assert res.vectors.shape == (2, 5) and not res.vectors[:, 2:].any()


@pytest.mark.parametrize("kwargs,message", [
    ({"sessions": np.array([0, 1]), "items": np.array([0])}, "differ in length"),
    ({"sessions": np.array([0, 0]), "items": np.array([0, 7])}, r"in \[0, 3\)"),
    ({"sessions": np.array([0, 0]), "items": np.array([0, 1]), "dimension": 0}, "dimension"),
])
def test_bad_input_is_refused_with_the_reason(kwargs, message):
    args = {"n_items": 3, "dimension": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        factorize_sessions(**args)


@pytest.mark.parametrize("extra,message", [
    (["svd.mode=alone", "sequences.enabled=true"], "trains no skip-gram"),
    (["svd.mode=alone", "line.mode=alone"], "either the factorization or LINE"),
    (["svd.mode=alone", "train.warm_start=true"], "continue skip-gram vectors"),
    (["svd.mode=alone", "train.mode='incremental'"], "continue skip-gram vectors"),
])
def test_the_config_refuses_impossible_svd_combinations(extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, extra)


def test_the_svd_option_resolves_to_a_consistent_config():
    from recembed import settings as S

    cfg = load_config(None)
    assert "svd" in S.calibration_plan(cfg).corpora and S.uses_svd(cfg)
    chosen = S.resolve_config(cfg, {"enabled": True, "corpus": "svd"})
    assert (chosen.svd.mode, chosen.line.mode, chosen.walks.enabled,
            chosen.sequences.enabled) == ("alone", "off", False, False)
    assert S.corpus_names(chosen) == [] and S.model_name(chosen) == "svd"
    assert not S.uses_graph(chosen)
    other = S.resolve_config(cfg, {"enabled": True, "corpus": "sessions"})
    assert other.svd.mode == "off" and not S.uses_svd(other)
    # dropped where it cannot run, and when switched off
    for extra in (["svd.mode=off"], ["train.warm_start=true"], ["line.mode=concat"]):
        assert "svd" not in S.calibration_plan(load_config(None, extra)).corpora, extra
    assert S.corpus_set(load_config(None, ["svd.mode=alone"])) == "svd"
    # the candidates' size does not count it: it trains nothing at an amount
    plan = S.calibration_plan(cfg)
    without = S.calibration_plan(load_config(None, [
        "calibrate.corpora=['both', 'sessions', 'walks']"]))
    assert plan.scale() == without.scale() == 1.0


def test_an_svd_candidate_is_never_retrained_at_a_larger_amount():
    from recembed.calibrate import same_training

    cand = {"corpus": "svd", "option_tokens": 1_000_000, "corpus_tokens": 5000, "epochs": 1}
    assert same_training(cand, 3_000_000) and same_training(cand, 10_000_000)


def test_a_calibration_candidate_factorizes(tmp_path):
    import pandas as pd

    from recembed.candidates import train_model
    from recembed.graph import GraphParams
    from recembed.train import TrainParams
    from recembed.walks import WalkParams

    sessions, items = _random_log(200, 600, 4)
    ct = pd.DataFrame({"session": sessions, "item": items,
                       "ts": np.arange(len(items), dtype=np.int64)})
    weights = pd.Series(1.0, index=np.arange(600))
    cm = train_model(ct, weights, 200, tmp_path, corpus="svd", tokens=1_000_000,
                     graph_params=GraphParams(), walk_params=WalkParams(),
                     train_params=TrainParams(vector_size=16), rule_steps=3, seed=0, threads=1)
    ref = factorize_sessions(sessions, items, 200, dimension=16)
    assert cm.model.vectors.shape == (len(ref.codes), 16)
    assert np.array_equal(cm.model.vectors, ref.vectors)
    assert cm.corpus_tokens == ref.stats["corpus_tokens"] and cm.epochs == 1


@pytest.mark.slow
def test_a_run_with_svd_alone_trains_no_skip_gram_and_serves_its_vectors(synth_csv, tmp_path):
    from recembed.pipeline import run_pipeline
    from recembed.serving import Recommender
    from recembed.stages import STAGES

    run = tmp_path / "r"
    cfg = load_config(None, [
        f"input.paths=['{synth_csv}']", "input.columns.user='user_id'",
        f"run.runs_dir='{tmp_path}'", "evaluate.enabled=false", "calibrate.enabled=false",
        "svd.mode=alone", "train.vector_size=16", "run.progress=false"])
    rep = run_pipeline(cfg, run, plan=STAGES, stages=["index"], echo=lambda s: None)
    assert "sequences" not in rep.stages and "walks" not in rep.stages
    stats = json.loads((run / "train.json").read_text())
    assert stats["model"] == "svd" and stats["svd"]["rank"] == 16
    vec, ctx = np.load(run / "vectors.npy"), np.load(run / "context_vectors.npy")
    assert vec.shape[1] == 16 and np.array_equal(vec, ctx)
    rec = Recommender.load_run(run)
    got = rec.recommend([[str(rec.ids[0])]], 5)
    assert len(got.ids[0]) == 5


def test_the_amount_ladder_of_the_trained_corpora_is_the_same_with_svd_beside_them():
    from dataclasses import replace

    from recembed.calibrate import _successive_halving
    from recembed.settings import calibration_plan

    base = np.zeros(1000)
    base[:500] = 1.0

    def ladder(corpora: list[str], hits: dict) -> list:
        plan = replace(calibration_plan(load_config(None, ["calibrate.cost_ratio=100"])),
                       corpora=corpora, target_tokens=[1_000_000, 3_000_000])
        record, calls = {"candidates": []}, []

        def run_one(corpus, amount, **kw):
            calls.append((corpus, amount))
            pq = base.copy()
            pq[500:500 + hits[corpus] + (amount > 1_000_000) * 5] = 1.0
            c = {"corpus": corpus, "tokens_trained": amount if corpus != "svd" else 5000,
                 "per_query": pq, "objective": float(pq.mean()), "corpus_tokens": 100_000,
                 "epochs": amount // 100_000, "target_tokens": amount, "option_tokens": amount}
            record["candidates"].append(c)
            return c

        _successive_halving(plan, run_one, record, log_share=1.0)
        return calls

    for hits in ({"svd": 1, "sessions": 1, "both": 0},   # svd tied with the leader
                 {"svd": 9, "sessions": 1, "both": 0}):  # svd far ahead of both
        alone = ladder(["sessions", "both"], hits)
        beside = ladder(["svd", "sessions", "both"], hits)
        # sessions leads the trained corpora and climbs, with or without svd; svd runs once
        assert ("sessions", 3_000_000) in alone, hits
        assert beside == [("svd", 1_000_000), *alone], hits
