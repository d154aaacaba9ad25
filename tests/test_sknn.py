import math

import numpy as np
import pandas as pd
import pytest

from recembed.evaluate import Queries, evaluate_all
from recembed.sknn import (
    METHODS,
    SessionIndex,
    SknnParams,
    method_params,
    score_queries,
    score_session,
    session_end_times,
)

E = math.e


def index_of(sessions: list[list[int]], ends: list[float], n_items: int = 10,
             ids: list[int] | None = None) -> SessionIndex:
    ids = ids if ids is not None else list(range(len(sessions)))
    sess = np.repeat(ids, [len(s) for s in sessions])
    items = np.concatenate([np.asarray(s) for s in sessions])
    return SessionIndex.build(sess, items, np.asarray(ends, float), n_items)


def as_dict(index: SessionIndex, prefix: list[int], params: SknnParams) -> dict[int, float]:
    items, scores = score_session(index, np.asarray(prefix), params)
    assert np.all(np.diff(items) > 0) and np.all(scores > 0)
    return dict(zip(items.tolist(), scores.tolist(), strict=True))


def assert_scores(got: dict[int, float], want: dict[int, float]) -> None:
    assert sorted(got) == sorted(want)
    for i, v in want.items():
        assert got[i] == pytest.approx(v, rel=1e-12), i


VSKNN = SknnParams(k=100, sample_size=0, similarity="dot", prefix_weighting="linear",
                   match_weighting="div")
# A [1 2 5] t=100, B [3 6] t=200, C [2 3 7] t=300; query [1 2 3]: linear weights 1/3, 2/3, 1
ABC = ([[1, 2, 5], [3, 6], [2, 3, 7]], [100, 200, 300])


def test_vsknn_linear_position_weights_and_div_match_weight():
    # sim = shared weights / 3 distinct prefix items: A (1, 2) = 1/3, B (3) = 1/3,
    # C (2, 3) = 5/9; match weight 1/step of the most recent shared item: A's is 2 (step 2)
    got = as_dict(index_of(*ABC), [1, 2, 3], VSKNN)
    a, b, c = 1 / 3 * 1 / 2, 1 / 3, 5 / 9
    assert_scores(got, {1: a, 2: a + c, 5: a, 3: b + c, 6: b, 7: c})


def test_k_keeps_the_most_similar_and_breaks_ties_by_recency():
    # k=2: C (5/9), then A and B tie at 1/3 and the more recent B (t=200) wins
    got = as_dict(index_of(*ABC), [1, 2, 3], SknnParams(**{**VSKNN.__dict__, "k": 2}))
    assert_scores(got, {2: 5 / 9, 3: 1 / 3 + 5 / 9, 6: 1 / 3, 7: 5 / 9})
    got = as_dict(index_of(*ABC), [1, 2, 3], SknnParams(**{**VSKNN.__dict__, "k": 1}))
    assert_scores(got, {2: 5 / 9, 3: 5 / 9, 7: 5 / 9})


def test_sample_size_picks_the_most_recent_candidates_not_the_most_similar():
    # A [1 2 3 5] t=100 is the most similar (2/3) but the oldest; sample_size=2 keeps B, C
    idx = index_of([[1, 2, 3, 5], [3, 6], [2, 7]], [100, 200, 300], ids=[7, 3, 5])
    got = as_dict(idx, [1, 2, 3], SknnParams(**{**VSKNN.__dict__, "sample_size": 2}))
    b, c = 1 / 3, (2 / 3) / 3 * (1 / 2)  # C shares only 2 (step 2)
    assert_scores(got, {3: b, 6: b, 2: c, 7: c})
    # every candidate, one neighbour: A alone, whose most recent shared item is 3 (step 1)
    got = as_dict(idx, [1, 2, 3], SknnParams(**{**VSKNN.__dict__, "sample_size": 0, "k": 1}))
    assert_scores(got, {1: 2 / 3, 2: 2 / 3, 3: 2 / 3, 5: 2 / 3})


def test_stan_three_decays_by_hand():
    # query [1 2]: w1(1) = exp((1 - 2) / 1) = 1/e, w1(2) = 1; cosine with |s|w = sqrt(e^-2 + 1)
    # A [4 2 5 1 6] t=1000: i* = 2 (the most recent query item in A) at position 2
    # B [7 2 8 7] t=900: 3 distinct items, i* = 2 at position 2; 7 last at position 4
    idx = index_of([[4, 2, 5, 1, 6], [7, 2, 8, 7]], [1000, 900])
    p = SknnParams(k=10, sample_size=0, similarity="cosine", prefix_weighting="exp", lambda1=1.0,
                   match_weighting="same", lambda2=100.0, lambda3=1.0)
    norm = math.sqrt(E ** -2 + 1)
    sa = (1 / E + 1) / (norm * math.sqrt(5))  # most recent candidate: recency factor 1
    sb = 1 / (norm * math.sqrt(3)) * math.exp(-(1000 - 900) / 100)
    want = {4: sa / E, 2: sa + sb, 5: sa / E, 1: sa / E ** 2, 6: sa / E ** 3,
            7: sb / E ** 2, 8: sb / E}
    assert_scores(as_dict(idx, [1, 2], p), want)


def test_recency_decay_is_relative_so_shifting_all_times_changes_nothing():
    sessions = [[4, 2, 5, 1, 6], [7, 2, 8, 7]]
    p = METHODS["stan"]
    a = as_dict(index_of(sessions, [1000.0, 900.0]), [1, 2], p)
    b = as_dict(index_of(sessions, [1e9 + 1000.0, 1e9 + 900.0]), [1, 2], p)
    assert_scores(b, a)


def test_idf_weighting_by_hand():
    # S = 4 sessions; query [1]: neighbours A [1 2], B [1 3] with sim 1 each
    idx = index_of([[1, 2], [1, 3], [4, 5], [4, 3]], [1, 2, 3, 4])
    p = SknnParams(k=10, sample_size=0, similarity="dot", prefix_weighting="same",
                   match_weighting="same", idf_weight=2.0)
    idf1, idf2, idf3 = math.log(4 / 2), math.log(4 / 1), math.log(4 / 2)
    assert_scores(as_dict(idx, [1], p), {1: 2 * (1 + 2 * idf1), 2: 1 + 2 * idf2,
                                         3: 1 + 2 * idf3})


def test_vstan_exponential_match_weight():
    # query [1 2 3], prefix weights 1: A [1 9] shares 1 (step 3), B [3 8] shares 3 (step 1)
    idx = index_of([[1, 9], [3, 8]], [10, 20])
    p = SknnParams(k=10, sample_size=0, similarity="dot", prefix_weighting="same",
                   match_weighting="exp", lambda_match=2.0)
    a, b = 1 / 3 * math.exp(-(3 - 1) / 2), 1 / 3
    assert_scores(as_dict(idx, [1, 2, 3], p), {1: a, 9: a, 3: b, 8: b})


def test_unknown_prefix_items_find_nothing_but_keep_positions():
    idx = index_of(*ABC)
    assert len(score_session(idx, np.array([42]), VSKNN)[0]) == 0
    # 42 (unknown) is the last item: 3 sits at position 2 of 2 -> weight 1/2, step 2
    got = as_dict(idx, [3, 42], SknnParams(**{**VSKNN.__dict__, "similarity": "dot"}))
    b, c = (1 / 2) / 2 * (1 / 2), (1 / 2) / 2 * (1 / 2)
    assert_scores(got, {3: b + c, 6: b, 2: c, 7: c})


def test_to_arrays_round_trip_through_npz_without_pickle(tmp_path):
    rng = np.random.default_rng(0)
    sessions = [rng.integers(0, 30, rng.integers(2, 8)).tolist() for _ in range(60)]
    idx = index_of(sessions, rng.uniform(0, 1e6, 60).tolist(), n_items=30)
    np.savez(tmp_path / "ix.npz", **idx.to_arrays())
    with np.load(tmp_path / "ix.npz", allow_pickle=False) as z:
        back = SessionIndex.from_arrays(dict(z))
    for name, arr in idx.to_arrays().items():
        assert arr.dtype != object
        np.testing.assert_array_equal(getattr(back, name), arr)
    for m, p in METHODS.items():
        a, b = score_session(idx, np.array([3, 5, 7]), p), score_session(back, np.array([3, 5, 7]), p)
        np.testing.assert_array_equal(a[0], b[0], err_msg=m)
        np.testing.assert_array_equal(a[1], b[1], err_msg=m)
    with pytest.raises(ValueError, match="missing"):
        SessionIndex.from_arrays({"session_end": idx.session_end})


def test_index_layout_recency_order_and_last_positions():
    idx = index_of([[1, 2, 1], [2, 3]], [50, 70], ids=[8, 9])
    # session 9 ended last: index 0
    assert idx.session_ids.tolist() == [9, 8] and idx.session_end.tolist() == [70, 50]
    s0 = slice(idx.session_indptr[1], idx.session_indptr[2])  # session 8: 2 at 2, 1 last at 3
    assert idx.session_items[s0].tolist() == [2, 1] and idx.session_lastpos[s0].tolist() == [2, 3]
    two = idx.item_sessions[idx.item_indptr[2]:idx.item_indptr[3]]
    assert two.tolist() == [0, 1]  # most recent first
    assert session_end_times(np.array([8, 8, 9]), np.array([5, 9, 2])).tolist() == [9, 2]


def random_queries(rng, n_items: int, n: int) -> Queries:
    lens = rng.integers(1, 7, n)
    items = rng.integers(0, n_items, lens.sum()).astype(np.int32)
    start = np.r_[0, np.cumsum(lens)[:-1]].astype(np.int64)
    return Queries(items, start, lens.astype(np.int32), np.zeros(n, np.int32))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_batch_scores_equal_per_query_scores(method):
    rng = np.random.default_rng(1)
    n_items = 40
    sessions = [rng.integers(0, 35, rng.integers(2, 9)).tolist() for _ in range(300)]
    idx = index_of(sessions, rng.uniform(0, 30 * 86400, 300).tolist(), n_items=n_items)
    p = method_params(method, k=15, sample_size=40)
    q = random_queries(rng, n_items, 50)
    sel = np.arange(3, 50, 2)
    dense = score_queries(idx, p, q, sel, n_items)
    assert dense.shape == (len(sel), n_items) and dense.dtype == np.float32
    pop = np.diff(idx.item_indptr).astype(float)
    for row, i in enumerate(sel):
        items, sc = score_session(idx, q.items[q.start[i]:q.start[i] + q.length[i]], p)
        if len(items) == 0:  # only items 35..39, which no session holds: popularity order
            assert np.all(np.diff(dense[row][np.argsort(-pop, kind="stable")]) <= 0)
            continue
        np.testing.assert_allclose(dense[row, items], sc / sc.max(), rtol=1e-6)
        rest = np.setdiff1d(np.arange(n_items), items)
        assert dense[row, rest].max() < dense[row, items].min()


def reference_scores(sessions, ends, prefix, p: SknnParams) -> dict[int, float]:
    """A plain-Python reading of the formulas, independent of the vectorized code."""
    n_s = len(sessions)
    df: dict[int, int] = {}
    for s in sessions:
        for i in set(s):
            df[i] = df.get(i, 0) + 1
    L = len(prefix)
    w1 = {}
    for pos, it in enumerate(prefix, 1):
        w1[it] = {"same": 1.0, "linear": pos / L, "quadratic": (pos / L) ** 2,
                  "log": 1 / math.log10(L - pos + 1.7),
                  "exp": math.exp((pos - L) / p.lambda1)}[p.prefix_weighting]
    cands = [j for j, s in enumerate(sessions) if set(s) & set(prefix)]
    cands.sort(key=lambda j: (-ends[j], j))
    if p.sample_size:
        cands = cands[:p.sample_size]
    if not cands:
        return {}
    t_ref = max(ends[j] for j in cands)
    sims = []
    for j in cands:
        shared = set(sessions[j]) & set(w1)
        num = sum(w1[i] for i in shared)
        if p.similarity == "dot":
            sim = num / len(w1)
        else:
            sim = num / (math.sqrt(sum(v * v for v in w1.values()))
                         * math.sqrt(len(set(sessions[j]))))
        if p.lambda2:
            sim *= math.exp(-(t_ref - ends[j]) / p.lambda2)
        sims.append((sim, j))
    order = sorted(range(len(sims)), key=lambda x: (-sims[x][0], x))[:p.k]
    out: dict[int, float] = {}
    for x in order:
        sim, j = sims[x]
        s = sessions[j]
        step = next(st for st, it in enumerate(reversed(prefix), 1) if it in s)
        star = list(reversed(prefix))[step - 1]
        mw = {"same": 1.0, "div": 1 / step, "quadratic": 1 / step ** 2,
              "log": 1 / math.log10(step + 1.7),
              "exp": math.exp(-(step - 1) / p.lambda_match)}[p.match_weighting]
        last = {it: pos for pos, it in enumerate(s, 1)}
        for it in set(s):
            w = sim * mw
            if p.lambda3:
                w *= math.exp(-abs(last[it] - last[star]) / p.lambda3)
            if p.idf_weight:
                w *= 1 + p.idf_weight * math.log(n_s / df[it])
            out[it] = out.get(it, 0.0) + w
    return out


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_a_plain_python_reading_of_the_formulas(method, seed):
    rng = np.random.default_rng(seed)
    sessions = [rng.integers(0, 25, rng.integers(1, 9)).tolist() for _ in range(120)]
    # integer days: distinct end times, so "most recent" is unambiguous for the reference
    ends = (rng.permutation(120) * 86400.0 / 7).tolist()
    idx = index_of(sessions, ends, n_items=25)
    p = method_params(method, k=7, sample_size=30)
    for _ in range(10):
        prefix = rng.integers(0, 25, rng.integers(1, 6)).tolist()
        assert_scores(as_dict(idx, prefix, p), reference_scores(sessions, ends, prefix, p))


def test_parameters_are_checked_and_defaults_are_the_documented_ones():
    assert METHODS["stan"].lambda2 == 5 * 86400 and METHODS["stan"].lambda3 == 2.05
    assert METHODS["vstan"].idf_weight == 5 and METHODS["vsknn"].prefix_weighting == "linear"
    with pytest.raises(ValueError, match="k must"):
        SknnParams(k=0)
    with pytest.raises(ValueError, match="similarity"):
        SknnParams(similarity="jaccard")
    with pytest.raises(ValueError, match="lambda2"):
        SknnParams(lambda2=-1)
    with pytest.raises(ValueError, match="unknown sknn parameter"):
        method_params("stan", lamda2=3)
    with pytest.raises(ValueError, match="unknown session-kNN method"):
        method_params("sknn")
    with pytest.raises(ValueError, match="not grouped by session"):
        SessionIndex.build(np.array([1, 2, 1]), np.array([0, 1, 2]), np.zeros(3), 5)


def test_evaluate_all_runs_the_session_knn_baselines_from_the_ts_column():
    # training: 1 -> 2 always (30 sessions), 3 -> 4 (30 sessions); holdout repeats them
    train = pd.DataFrame({"session": np.repeat(np.arange(60), 2),
                          "item": np.r_[np.tile([1, 2], 30), np.tile([3, 4], 30)],
                          "ts": np.arange(120) * 10})
    test = pd.DataFrame({"session": [100, 100, 101, 101], "item": [1, 2, 3, 4]})
    m = evaluate_all(train, test, 6, ks=[1], baselines=["vsknn", "stan", "vstan"])
    for name in ("vsknn", "stan", "vstan"):
        assert m["methods"][name]["allow_repeats"]["recall@1"] == 1.0, name
    with pytest.raises(ValueError, match="train_ts"):
        evaluate_all(train.drop(columns="ts"), test, 6, ks=[1], baselines=["stan"])


def test_the_module_imports_numpy_only():
    # the serving process imports recembed.sknn and must not pull in the training stack
    import subprocess
    import sys

    code = ("import sys, recembed.sknn; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'pandas', 'scipy', 'numba', 'gensim', 'pyarrow', 'faiss'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("method", "kw"), [("stan", {}), ("vsknn", {}), ("vstan", {}),
                                            ("stan", {"k": 3}), ("vsknn", {"sample_size": 20})])
def test_the_kernel_scorer_gives_the_rows_of_score_queries(method, kw):
    from recembed.sknn_kernels import dense_scorer

    rng = np.random.default_rng(2)
    n_items = 60
    sessions = [rng.integers(0, 50, rng.integers(2, 12)).tolist() for _ in range(400)]
    idx = index_of(sessions, rng.uniform(0, 30 * 86400, 400).tolist(), n_items=n_items)
    p = method_params(method, **kw)
    q = random_queries(rng, n_items, 300)
    sel = np.arange(1, 300, 3)
    want = score_queries(idx, p, q, sel, n_items - 5)  # fewer columns: items past them dropped
    got = dense_scorer(idx, p, n_items - 5)(q, sel)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    # the same ranking, ties included (what the evaluation reads)
    for a, b in zip(got, want, strict=True):
        assert (np.argsort(-a, kind="stable") == np.argsort(-b, kind="stable")).all()
    assert (got == want).mean() > 0.99  # float32 rows: equal but for a last bit here and there
