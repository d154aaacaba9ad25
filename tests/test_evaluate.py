import numpy as np
import pandas as pd
import pytest

from recembed.evaluate import (
    Queries,
    evaluate,
    evaluate_all,
    item_knn_scorer,
    make_queries,
    popularity_buckets,
    ranking_metrics,
    sequential_rules_scorer,
    session_popularity_scorer,
    top_k,
)


def test_ranking_metrics_by_hand():
    recs = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [9, -1, -1]])
    targets = np.array([2, 7, 9, 9])
    m = ranking_metrics(recs, targets, [1, 2, 3], n_items=10)
    # ranks: 2, none, 3, 1
    assert m["recall@1"] == 0.25 and m["recall@2"] == 0.5 and m["recall@3"] == 0.75
    assert m["mrr@3"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 4)
    assert m["mrr@1"] == pytest.approx(1 / 4)
    assert m["ndcg@3"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(4) + 1) / 4)
    assert m["coverage@1"] == pytest.approx(4 / 10)  # top-1 items: {1, 4, 7, 9}
    assert m["coverage@3"] == pytest.approx(9 / 10)


def test_top_k_ties_break_by_lower_index_and_k_beyond_the_catalogue():
    s = np.array([[1.0, 3.0, 3.0, 2.0, -np.inf]], np.float32)
    assert top_k(s, 2).tolist() == [[1, 2]]
    assert top_k(s, 7).tolist() == [[1, 2, 3, 0, -1, -1, -1]]
    flat = np.zeros((1, 6), np.float32)
    assert top_k(flat, 3).tolist() == [[0, 1, 2]]


def test_queries_cover_every_position_and_count_unknown_targets():
    test = pd.DataFrame({"session": [0, 0, 0, 1, 1, 2], "item": [1, 2, 3, 4, 9, 5]})
    known = np.ones(10, bool)
    known[9] = False
    q, st = make_queries(test, known)
    # s0 gives (1 -> 2), (1 2 -> 3); s1 gives (4 -> 9) with 9 unknown; s2 is a single item
    assert st == {"targets": 3, "oov_targets": 1, "oov_share": 1 / 3, "queries": 2}
    prefixes = [q.items[s:s + n].tolist() for s, n in zip(q.start, q.length, strict=True)]
    assert prefixes == [[1], [1, 2]] and q.target.tolist() == [2, 3]


def test_empty_holdout_gives_zero_queries_not_a_crash():
    q, st = make_queries(pd.DataFrame({"session": [], "item": []}), np.ones(3, bool))
    assert st["queries"] == 0 and len(q) == 0
    m = evaluate(lambda q, i: np.zeros((len(i), 3)), q, 3, ks=[1, 5])
    assert m["recall@5"] == 0.0 and m["queries"] == 0


def test_exclude_prefix_removes_repeat_recommendations():
    # session [0, 1, 0]: the target 0 repeats an earlier prefix item
    q = Queries(np.array([0, 1, 0], np.int32), np.array([0]), np.array([2], np.int32),
                np.array([0], np.int32))
    pop = np.array([1.0, 5.0, 3.0, 2.0])
    sp_ = session_popularity_scorer(pop)
    assert evaluate(sp_, q, 4, ks=[1])["recall@1"] == 1.0
    assert evaluate(sp_, q, 4, ks=[3], exclude_prefix=True)["recall@3"] == 0.0
    # the last prefix item (1) is never recommended
    assert evaluate(sp_, q, 4, ks=[1])["coverage@1"] == 0.25


def test_sequential_rules_and_item_knn_on_a_tiny_log():
    train = pd.DataFrame({"session": [0, 0, 0, 1, 1, 2, 2],
                          "item": [0, 1, 2, 0, 1, 3, 2]})
    pop = np.bincount(train["item"], minlength=4).astype(float)
    q = Queries(np.array([0], np.int32), np.array([0]), np.array([1], np.int32),
                np.array([1], np.int32))
    sr = sequential_rules_scorer(train, 4, pop)(q, np.array([0]))[0]
    # 0 -> 1 twice at distance 1 (weight 2), 0 -> 2 once at distance 2 (0.5), nothing to 3
    assert sr[1] == pytest.approx(2, abs=1e-3) and sr[2] == pytest.approx(0.5, abs=1e-3)
    assert sr[3] < 1e-3
    knn = item_knn_scorer(train, 4, pop)(q, np.array([0]))[0]
    # cosine over sessions: 0 in {s0,s1}, 1 in {s0,s1}, 2 in {s0,s2}
    assert knn[1] == pytest.approx(1.0, abs=1e-4) and knn[2] == pytest.approx(0.5, abs=1e-4)


def test_popularity_buckets_split_click_mass_in_thirds():
    pop = np.array([60.0, 20, 10, 5, 5])  # head = item 0 alone carries 60%
    assert popularity_buckets(pop).tolist() == [0, 1, 2, 2, 2]


def test_evaluate_all_runs_every_baseline_on_the_same_queries():
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"session": np.repeat(np.arange(300), 4),
                          "item": rng.integers(0, 30, 1200)})
    test = pd.DataFrame({"session": np.repeat(np.arange(50), 3), "item": rng.integers(0, 30, 150)})
    m = evaluate_all(train, test, 30, ks=[5, 20], baselines=["pop", "session_pop", "item_knn", "sr"])
    assert set(m["methods"]) == {"pop", "session_pop", "item_knn", "sr"}
    assert {v["allow_repeats"]["queries"] for v in m["methods"].values()} == {100}


def _bootstrap_reference(x, resamples=1000, seed=0, level=0.95):
    """`bootstrap_interval` as it was before its draws were kept (commit 8be130e)."""
    x = np.asarray(x, np.float64)
    n = len(x)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    step = max(1, 2_000_000 // max(n, 1))
    for lo in range(0, resamples, step):
        hi = min(resamples, lo + step)
        means[lo:hi] = x[rng.integers(0, n, size=(hi - lo, n))].mean(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def test_bootstrap_intervals_equal_the_fresh_draws_whatever_was_asked_before():
    from recembed.evaluate import bootstrap_interval

    rng = np.random.default_rng(3)
    hits = (rng.random(2500) < 0.4).astype(np.float64)
    rr = np.where(hits > 0, 1.0 / rng.integers(1, 21, 2500), 0.0)
    other = rng.random(300)
    # the kept draws of one n serve every array of that n; another n draws its own
    for x in (hits, rr, other, hits, rr[:300], rr):
        assert bootstrap_interval(x) == _bootstrap_reference(x)
    assert bootstrap_interval(rr, seed=4) == _bootstrap_reference(rr, seed=4)
    assert bootstrap_interval(hits, resamples=50) == _bootstrap_reference(hits, resamples=50)
    big = rng.random(30_000)  # too many draws to keep: drawn afresh
    assert bootstrap_interval(big, resamples=800) == _bootstrap_reference(big, resamples=800)


def test_ranking_metrics_without_intervals_has_the_same_means_and_no_interval():
    recs = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    targets = np.array([2, 6, 0])  # ranks 2, 3, none
    full = ranking_metrics(recs, targets, [1, 3], n_items=10)
    bare = ranking_metrics(recs, targets, [1, 3], n_items=10, intervals=False)
    assert {k for k in full if k.startswith("ci95")} == {
        "ci95_lo:recall@3", "ci95_hi:recall@3", "ci95_lo:mrr@3", "ci95_hi:mrr@3"}
    assert bare == {k: v for k, v in full.items() if not k.startswith("ci95")}
    assert bare["recall@3"] == 2 / 3 and bare["mrr@3"] == (1 / 2 + 1 / 3) / 3


def test_the_session_knn_baselines_share_one_session_index_with_the_same_scores():
    from recembed.evaluate import Queries, _sknn_maker

    rng = np.random.default_rng(2)
    sess = np.repeat(np.arange(300), 4)
    train = pd.DataFrame({"session": sess, "item": rng.integers(0, 40, len(sess)),
                          "ts": np.arange(len(sess), dtype=np.int64) * 60})
    q = Queries(items=rng.integers(0, 40, 30).astype(np.int32), start=np.arange(0, 30, 3),
                length=np.full(10, 3, np.int32), target=np.zeros(10, np.int32))
    idx = np.arange(10)
    shared: dict = {}
    for method in ("vsknn", "stan", "vstan"):
        got = _sknn_maker(method, train, 40, None, shared)(q, idx)
        alone = _sknn_maker(method, train, 40, None)(q, idx)
        assert np.array_equal(got, alone)
    assert "index" in shared


def test_dense_scorers_reusing_their_buffer_equal_fresh_scores_block_after_block():
    """Every scorer writes each block into one reused buffer (recembed.topk.ScoreBuffer): a
    block scored after a larger one, whose rows the caller set to -inf in place as
    top_k_lists does, equals the same block scored by a new scorer, and the numpy expressions
    the scorers replaced."""
    from recembed.evaluate import _sknn_maker, embedding_scorer, popularity_scorer

    rng = np.random.default_rng(4)
    n = 40
    sess = np.repeat(np.arange(300), 4)
    train = pd.DataFrame({"session": sess, "item": rng.integers(0, n, len(sess)),
                          "ts": np.arange(len(sess), dtype=np.int64) * 60})
    pop = np.bincount(train["item"], minlength=n).astype(np.float64)
    q = Queries(items=rng.integers(0, n, 60).astype(np.int32), start=np.arange(0, 60, 3),
                length=np.full(20, 3, np.int32), target=np.zeros(20, np.int32))
    vectors = rng.standard_normal((n, 8)).astype(np.float32)
    context = rng.standard_normal((n, 8)).astype(np.float32)
    rows = np.arange(n)
    makers = {
        "pop": lambda: popularity_scorer(pop),
        "session_pop": lambda: session_popularity_scorer(pop),
        "item_knn": lambda: item_knn_scorer(train, n, pop),
        "sr": lambda: sequential_rules_scorer(train, n, pop),
        "vsknn": lambda: _sknn_maker("vsknn", train, n, None),
        **{f"emb_{s}": (lambda s=s: embedding_scorer(vectors, rows, n, pop, strategy=s,
                                                      context=context))
           for s in ("last", "decayed", "directional", "ann")},
    }
    first, second = np.arange(0, 12), np.arange(12, 17)
    for name, make in makers.items():
        scorer = make()
        a = scorer(q, first)
        a[:] = -np.inf  # the caller's masks, in place
        b = np.array(scorer(q, second))
        assert np.array_equal(b, make()(q, second)), name
    # against the expressions the buffers replaced
    norm = pop / pop.max()
    p32 = norm.astype(np.float32)
    assert np.array_equal(makers["pop"]()(q, second),
                          np.broadcast_to(p32, (len(second), n)))
    ann = makers["emb_last"]()
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    ann(q, first)
    expect = unit[q.last(second)] @ unit.T + p32 * np.float32(1e-6)
    assert np.array_equal(ann(q, second), expect)
    sp_ = makers["session_pop"]()
    sp_(q, first)
    expect = q.prefix_matrix(second, n).toarray() + 1e-6 * p32
    assert np.array_equal(sp_(q, second), expect)


@pytest.mark.parametrize("longest", [6, 260])
def test_both_variants_from_one_top_k_pass_equal_a_pass_each(longest):
    """`top_k_lists` ranks both variants from one pass of k + the longest prefix columns (a
    prefix up to `MAX_SHARED_EXTRA` items; past it, a second pass): the lists equal a full
    stable sort of each query's scores with its last item, the items outside the candidates
    and (exclude-prefix) every prefix item removed. Ties, -inf rows and repeated prefix items
    included."""
    from recembed.evaluate import MAX_SHARED_EXTRA, top_k_lists

    rng = np.random.default_rng(longest)
    n_items, n_q, k = 1000, 300, 20
    lengths = rng.integers(1, longest + 1, n_q)
    items = rng.integers(0, n_items, int(lengths.sum())).astype(np.int32)
    start = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)
    q = Queries(items, start, lengths.astype(np.int32), rng.integers(0, n_items, n_q)
                .astype(np.int32))
    scores = np.round(rng.normal(size=(n_q, n_items)), 1).astype(np.float32)  # many ties
    scores[5, :] = -np.inf
    allowed = rng.random(n_items) > 0.1
    recs = top_k_lists(lambda q_, idx: scores[idx].copy(), q, n_items, k=k,
                       candidates=allowed, variants=("allow_repeats", "exclude_prefix"),
                       batch=64)
    for i in range(n_q):
        prefix = set(items[start[i]:start[i] + lengths[i]].tolist())
        for variant, drop in (("allow_repeats", {int(items[start[i] + lengths[i] - 1])}),
                              ("exclude_prefix", prefix)):
            ok = [j for j in range(n_items)
                  if allowed[j] and j not in drop and np.isfinite(scores[i, j])]
            want = sorted(ok, key=lambda j: (-scores[i, j], j))[:k]
            want += [-1] * (k - len(want))
            assert recs[variant][i].tolist() == want, (variant, i)
    # the long case takes the second pass for some blocks, the short one never
    distinct = max(len(set(items[s:s + n].tolist())) for s, n in zip(start, lengths, strict=True))
    assert (distinct > MAX_SHARED_EXTRA) == (longest > MAX_SHARED_EXTRA)
