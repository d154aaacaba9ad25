"""LINE (recembed.line): the edge sampler, determinism, what the vectors learn, the pipeline
option and the config's refusals."""

import json

import numba
import numpy as np
import pytest
import scipy.sparse as sp

from recembed.config import ConfigError, load_config
from recembed.line import EdgeSampler, alias_table, concat_vectors, train_line


def _two_cliques(k=10, seed=0):
    """Two disconnected cliques of k nodes, random weights in [1, 2), both directions."""
    rng = np.random.default_rng(seed)
    a = np.zeros((2 * k, 2 * k), np.float32)
    for c in (range(k), range(k, 2 * k)):
        for i in c:
            for j in c:
                if i != j:
                    a[i, j] = 1 + rng.random()
    return sp.csr_matrix(a)


def test_edges_are_drawn_in_proportion_to_weight():
    # a directed graph with weights 1..6 (hand-written, so the expected shares are known)
    rows = [0, 0, 1, 2, 2, 3]
    cols = [1, 2, 2, 0, 3, 1]
    w = np.array([1, 2, 3, 4, 5, 6], np.float32)
    g = sp.csr_matrix((w, (rows, cols)), shape=(4, 4))
    es = EdgeSampler.build(g)
    n = 210_000
    counts = np.bincount(es.draw_edges(n, seed=7), minlength=6)
    expected = n * np.array([1, 2, 3, 4, 5, 6]) / 21
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 20.5  # chi-square, 5 degrees of freedom: p = 0.001
    # the sampled (src, dst) pairs are the graph's edges as stored
    assert list(zip(es.src.tolist(), es.dst.tolist(), strict=True)) == list(zip(
        rows, cols, strict=True))


def test_a_directed_graph_never_yields_a_reversed_edge():
    rng = np.random.default_rng(1)
    n = 50
    src = rng.integers(0, n, 400)
    dst = rng.integers(0, n, 400)
    keep = src < dst  # a DAG: b -> a is never an edge when a -> b is
    g = sp.csr_matrix((rng.random(keep.sum()) + 0.1, (src[keep], dst[keep])), shape=(n, n))
    es = EdgeSampler.build(g)
    e = es.draw_edges(50_000, seed=3)
    assert (es.src[e] < es.dst[e]).all()
    dense = g.toarray()
    assert (dense[es.src[e], es.dst[e]] > 0).all()


def test_negatives_follow_degree_to_the_power():
    w = np.array([1.0, 4.0, 0.0, 9.0])
    prob, alias = alias_table(w ** 0.5)
    assert prob.shape == (4,) and alias.dtype == np.int64
    g = sp.csr_matrix(np.array([[0, 1, 0], [0, 0, 0], [3, 0, 0]], np.float32))
    es = EdgeSampler.build(g, ns_exponent=0.5)
    counts = np.bincount(es.draw_nodes(100_000, seed=2), minlength=3)
    # weighted degree in + out: node 0 = 1 + 3, node 1 = 1, node 2 = 3
    share = np.sqrt([4.0, 1.0, 3.0]) / np.sqrt([4.0, 1.0, 3.0]).sum()
    assert np.abs(counts / 100_000 - share).max() < 0.01


@pytest.mark.parametrize("order", [1, 2, "both"])
def test_same_clique_items_are_nearer_than_cross_clique(order):
    g = _two_cliques()
    r = train_line(g, order=order, dimension=16, samples=100_000, negative=1, seed=5)
    v = r.vectors / np.linalg.norm(r.vectors, axis=1, keepdims=True)
    cos = v @ v.T
    clique = r.codes < 10
    same = clique[:, None] == clique[None, :]
    np.fill_diagonal(same, False)
    cross = clique[:, None] != clique[None, :]
    assert cos[same].mean() > cos[cross].mean() + 0.5
    # every node's nearest other node is in its own clique
    np.fill_diagonal(cos, -np.inf)
    assert (clique[cos.argmax(axis=1)] == clique).all()


def test_second_order_context_vectors_give_the_edge_direction():
    # a chain 0 -> 1 -> 2 -> ... -> 9, directed: u_a . c_b is high for a -> b, low for b -> a
    n = 10
    g = sp.csr_matrix((np.ones(n - 1, np.float32), (np.arange(n - 1), np.arange(1, n))),
                      shape=(n, n))
    r = train_line(g, order=2, dimension=8, samples=100_000, negative=3, seed=1)
    s = r.vectors @ r.context.T
    fwd = np.array([s[a, a + 1] for a in range(n - 1)])
    back = np.array([s[a + 1, a] for a in range(n - 1)])
    assert (fwd > back).all()


def test_the_result_does_not_depend_on_the_thread_count():
    g = _two_cliques(k=30, seed=2)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = train_line(g, order="both", dimension=8, samples=200_000, seed=9)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = train_line(g, order="both", dimension=8, samples=200_000, seed=9)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(one.vectors, two.vectors) and np.array_equal(one.context, two.context)
    other = train_line(g, order="both", dimension=8, samples=200_000, seed=10)
    assert not np.array_equal(one.vectors, other.vectors)


def test_concat_appends_normalised_blocks_and_zeros_for_items_without_edges():
    g = _two_cliques(k=4)
    line = train_line(g, order=2, dimension=6, samples=5000, seed=0)
    codes = np.array([0, 3, 5, 42], np.int32)  # 42: no edge, no LINE row
    rng = np.random.default_rng(0)
    vec, ctx = rng.normal(size=(4, 5)).astype(np.float32), rng.normal(size=(4, 5)).astype(
        np.float32)
    v, c = concat_vectors(codes, vec, ctx, line)
    assert v.shape == (4, 11) and c.shape == (4, 11)
    assert np.allclose(np.linalg.norm(v[:, :5], axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(v[:3, 5:], axis=1), 1, atol=1e-5)
    assert not v[3, 5:].any() and not c[3, 5:].any()
    # LINE's rows are those of the right codes: direction kept, only rescaled
    row = {int(k): i for i, k in enumerate(line.codes)}
    for i, k in enumerate(codes[:3]):
        a, b = v[i, 5:], line.vectors[row[int(k)]]
        assert np.allclose(a, b / np.linalg.norm(b), atol=1e-5)


def _cfg(synth_csv, tmp_path, *extra):
    return load_config(None, [
        f"input.paths=['{synth_csv}']", "input.columns.user='user_id'",
        f"input.categories_path='{synth_csv.with_name(synth_csv.stem + '_items.csv')}'",
        f"run.runs_dir='{tmp_path}'", "evaluate.enabled=false", "calibrate.enabled=false",
        "train.target_tokens=50000", *extra])


@pytest.mark.slow
@pytest.mark.parametrize("mode,dim", [("alone", 12), ("concat", 16 + 12)])
def test_a_run_with_line_writes_vectors_of_the_expected_dimension(synth_csv, tmp_path, mode,
                                                                   dim):
    from recembed.pipeline import run_pipeline
    from recembed.serving import Recommender
    from recembed.stages import STAGES

    run = tmp_path / "r"
    cfg = _cfg(synth_csv, tmp_path, f"line.mode={mode}", "line.dimension=12",
               "train.vector_size=16", "line.order=both")
    rep = run_pipeline(cfg, run, plan=STAGES, stages=["index"], echo=lambda s: None)
    vec, ctx = np.load(run / "vectors.npy"), np.load(run / "context_vectors.npy")
    assert vec.shape[1] == dim and ctx.shape == vec.shape
    assert ("sequences" in rep.stages) == (mode == "concat")
    stats = json.loads((run / "train.json").read_text())
    assert stats["line"]["samples"] == 50_000 and stats["line"]["order"] == "both"
    assert stats["model"] == ("line" if mode == "alone" else "item2vec+deepwalk+line")
    rec = Recommender.load_run(run)
    assert rec.model.vectors.shape[1] == dim
    got = rec.recommend([[str(rec.ids[0])]], 5)
    assert len(got.ids[0]) == 5


@pytest.mark.parametrize("extra,message", [
    (["line.mode=alone", "walks.enabled=true"], "trains no skip-gram"),
    (["line.mode=concat", "train.negative=0", "train.hs=true"], "train.negative > 0"),
    (["line.mode=concat", "train.warm_start=true"], "warm start"),
    (["line.mode=off", "calibrate.corpora=['both', 'line']"], "lists a LINE option"),
    (["line.order=both", "line.dimension=15"], "must be even"),
    (["line.mode=alone", "line.dimension=30", "index.type='PQ16'"], "line.dimension=30"),
    (["line.mode=concat", "line.dimension=30", "index.type='PQ16'"],
     r"train.vector_size \+ line.dimension=94"),
    (["sequences.enabled=false", "walks.enabled=false"], "no training corpus"),
])
def test_the_config_refuses_impossible_line_combinations(extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, extra)


def test_line_options_resolve_to_a_consistent_config():
    from recembed import settings as S

    cfg = load_config(None, ["calibrate.corpora=['both', 'line', 'walks+line']"])
    plan = S.calibration_plan(cfg)
    assert plan.corpora == ["both", "line", "walks+line"] and plan.line_params.order == 1
    alone = S.resolve_config(cfg, {"enabled": True, "corpus": "line"})
    assert (alone.line.mode, alone.walks.enabled, alone.sequences.enabled) == (
        "alone", False, False)
    assert S.corpus_names(alone) == [] and S.uses_graph(alone)
    concat = S.resolve_config(cfg, {"enabled": True, "corpus": "walks+line"})
    assert (concat.line.mode, concat.walks.enabled, concat.sequences.enabled) == (
        "concat", True, False)
    assert S.resolve_config(cfg, None).line.mode == "off"
    # line.mode = "concat" fixed: calibration compares skip-gram corpora, each with LINE
    fixed = load_config(None, ["line.mode=concat"])
    assert S.calibration_plan(fixed).corpora == ["both+line", "sessions+line", "walks+line"]
    # LINE alone with nothing else left to choose: sessions-only defaults do not sneak in
    assert load_config(None, ["line.mode=alone", "walks.enabled=false",
                              "sequences.enabled=false"]).line.mode == "alone"
    # LINE alone is not refused by the "no corpus" rule
    assert S.corpus_set(load_config(None, ["line.mode=alone"])) == "line"


@pytest.mark.parametrize("corpus,dim", [("line", 8), ("sessions+line", 16 + 8)])
def test_a_calibration_candidate_trains_the_line_options(tmp_path, corpus, dim):
    import pandas as pd

    from recembed.candidates import train_model
    from recembed.graph import GraphParams
    from recembed.line import LineParams
    from recembed.train import TrainParams
    from recembed.walks import WalkParams

    rng = np.random.default_rng(0)
    rows = []
    for s in range(300):  # sessions walk along a ring of 40 items
        start = rng.integers(0, 40)
        rows += [(s, (start + k) % 40, k) for k in range(int(rng.integers(2, 6)))]
    ct = pd.DataFrame(rows, columns=["session", "item", "ts"])
    weights = pd.Series(np.ones(300), index=np.arange(300))
    cm = train_model(ct, weights, 40, tmp_path, corpus=corpus, tokens=20_000,
                     graph_params=GraphParams(), walk_params=WalkParams(),
                     train_params=TrainParams(vector_size=16, workers=1), rule_steps=2, seed=1,
                     threads=1, line_params=LineParams(dimension=8, seed=99))
    assert cm.model.vectors.shape == (40, dim) and cm.model.context.shape == (40, dim)


def test_hogwild_workers_still_learn_the_cliques():
    g = _two_cliques()
    r = train_line(g, order=1, dimension=16, samples=100_000, negative=1, seed=5, workers=2)
    v = r.vectors / np.linalg.norm(r.vectors, axis=1, keepdims=True)
    clique = r.codes < 10
    cos = v @ v.T
    np.fill_diagonal(cos, -np.inf)
    assert (clique[cos.argmax(axis=1)] == clique).all()
