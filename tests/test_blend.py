"""The numba fast path of `BlendModel.signals` / `recommend` against the per-query numpy code
it replaced (kept here, verbatim but for one line, as the reference)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recembed.blend import (
    CATEGORY_KEYS,
    SIGNALS,
    BlendModel,
    BlendSettings,
    Signals,
    blend_top_k,
    blended_scores,
    candidate_tables,
    category_arrays,
    score_sessions,
    sequential_rules,
    table_rows,
)
from recembed.sknn import SessionIndex, method_params, score_session


def reference_signals(m: BlendModel, sessions: list[np.ndarray], st: BlendSettings) -> Signals:
    """`BlendModel.signals` as it was before the numba kernels (commit ba17d9b). One change:
    the neighbours' top `want` were chosen by np.argpartition, which picks arbitrarily among
    items tied at the cut; here ties go to the lower row, as in `score_sessions`."""
    n_q = len(sessions)
    q_in, q_unit = m._queries(sessions, st)
    n_c = min(st.candidates, len(m.vectors))
    dir_rows = m._search(q_in, n_c) if m.context is not None else None
    cos_rows = m._cos_search(q_unit, max(n_c // 4, 1))
    pop_rows = m.pop_order[: st.popular]
    want = n_c
    nb_params = None
    if m.neighbours is not None and st.neighbours.get("method", "stan") != "off":
        nb = dict(st.neighbours)
        nb_params = method_params(nb.pop("method", "stan"), **nb)
    unions, extra = [], []
    for i, s in enumerate(sessions):
        s = np.asarray(s, np.int64)
        known = s[s >= 0]
        parts = [known, pop_rows, cos_rows[i]]
        if dir_rows is not None:
            parts.append(dir_rows[i])
        r_rows = r_vals = nb_rows = nb_vals = None
        if m.rules is not None and len(s) and s[-1] >= 0:
            r_rows, r_vals = m.rules.row(int(s[-1]))
            parts.append(r_rows)
        if nb_params is not None and len(known):
            nb_rows, nb_vals = score_session(m.neighbours, known, nb_params)
            if len(nb_rows) > want:
                top = np.lexsort((nb_rows, -nb_vals))[:want]  # was: np.argpartition
                nb_rows, nb_vals = nb_rows[top], nb_vals[top]
            parts.append(nb_rows)
        u = np.unique(np.concatenate(parts)) if len(known) else np.zeros(0, np.int64)
        u = u[u >= 0]
        unions.append(u)
        extra.append((known, s, r_rows, r_vals, nb_rows, nb_vals))
    width = max((len(u) for u in unions), default=0)
    rows = np.full((n_q, max(width, 1)), -1, np.int64)
    vals = np.zeros((n_q, rows.shape[1], len(SIGNALS)), np.float32)
    in_sess = np.zeros(rows.shape, bool)
    last = np.full(n_q, -1, np.int64)
    i_rep, i_rules, i_nb = (SIGNALS.index(x) for x in ("repeat", "rules", "neighbours"))
    for i, (u, (known, s, r_rows, r_vals, nb_rows, nb_vals)) in enumerate(
            zip(unions, extra, strict=True)):
        rows[i, : len(u)] = u
        if len(s) and s[-1] >= 0:
            last[i] = s[-1]
        if len(known):
            back = (len(s) - 1 - np.flatnonzero(s >= 0)).astype(np.float64)
            pos = np.searchsorted(u, known)
            np.add.at(vals[i, :, i_rep], pos, (st.repeat_decay ** back).astype(np.float32))
            in_sess[i, pos] = True
        if r_rows is not None and len(r_rows):
            vals[i, np.searchsorted(u, r_rows), i_rules] = r_vals
        if nb_rows is not None and len(nb_rows):
            vals[i, np.searchsorted(u, nb_rows), i_nb] = nb_vals
    valid = rows >= 0
    safe = np.maximum(rows, 0)
    i_dir, i_cos, i_pop = (SIGNALS.index(x) for x in ("directional", "cosine", "popularity"))
    vals[:, :, i_cos] = np.einsum("ncd,nd->nc", m.unit[safe], q_unit)
    if m.context is not None:
        vals[:, :, i_dir] = np.einsum("ncd,nd->nc", m.context[safe], q_in)
    else:
        vals[:, :, i_dir] = vals[:, :, i_cos] * 10.0
    vals[:, :, i_pop] = m.pop[safe]
    vals[~valid] = 0.0
    return Signals(rows, vals, in_sess, last)


def reference_top_k(sig: Signals, st: BlendSettings, k: int, *,
                    exclude_session_items: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`blend_top_k` as it was before its numba kernel (commit ba17d9b), verbatim."""
    score = blended_scores(sig, st)
    if st.exclude_last:
        score[(sig.rows == sig.last[:, None]) & (sig.last[:, None] >= 0)] = -np.inf
    if exclude_session_items:
        score[sig.in_session] = -np.inf
    score[sig.rows < 0] = -np.inf
    tie = sig.values[:, :, SIGNALS.index("popularity")] * 1e-6
    order = np.lexsort((sig.rows, -(score + tie)), axis=-1)[:, :k] if score.size else \
        np.zeros((len(score), 0), np.int64)
    rows = np.take_along_axis(sig.rows, order, axis=1)
    sc = np.take_along_axis(score, order, axis=1).astype(np.float32)
    rows[~np.isfinite(sc)] = -1
    if rows.shape[1] < k:
        pad = k - rows.shape[1]
        rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
        sc = np.pad(sc, ((0, 0), (0, pad)), constant_values=-np.inf)
    return rows, sc


def random_model(seed: int, n: int = 300, d: int = 8, *, context: bool = True,
                 rules: bool = True, neighbours: bool = True) -> BlendModel:
    """Vectors, a click log of short sessions over `n` items, its rules and session index."""
    rng = np.random.default_rng(seed)
    vec = rng.normal(size=(n, d)).astype(np.float32)
    ctx = rng.normal(size=(n, d)).astype(np.float32) if context else None
    lens = rng.integers(2, 9, 400)
    sess = np.repeat(np.arange(len(lens)), lens)
    item = (rng.zipf(1.3, len(sess)) - 1) % n  # popular items recur: ties and long lists
    ts = np.cumsum(rng.integers(1, 5000, len(lens))).astype(np.float64)
    r = sequential_rules(item, sess, n, steps=3) if rules else None
    nbi = SessionIndex.build(sess, item, ts, n) if neighbours else None
    pop = np.bincount(item, minlength=n)
    return BlendModel(vec, ctx, rules=r, neighbours=nbi, popularity=pop)


def random_sessions(seed: int, n_items: int, n: int = 60) -> list[np.ndarray]:
    rng = np.random.default_rng(seed + 1000)
    out = []
    for _ in range(n):
        s = (rng.zipf(1.3, rng.integers(1, 12)) - 1) % n_items
        s[rng.random(len(s)) < 0.15] = -1  # items without a vector keep their place
        out.append(s.astype(np.int64))
    out += [np.zeros(0, np.int64), np.array([-1, -1]), np.array([5, -1]), np.array([-1, 7]),
            np.array([3, 3, 3])]
    return out


def settings(seed: int, **kw) -> BlendSettings:
    rng = np.random.default_rng(seed + 2000)
    w = {s: float(rng.choice([0.0, 0.03, 0.3, 1.0])) for s in SIGNALS}
    base = dict(weights=w, decay=0.6, history=5, temperature=0.5, repeat_decay=0.7,
                candidates=int(rng.integers(8, 60)), popular=int(rng.integers(0, 10)),
                neighbours={"method": str(rng.choice(["stan", "vsknn", "vstan"]))},
                exclude_last=bool(rng.random() < 0.7))
    base.update(kw)
    return BlendSettings(**base)


def assert_same_signals(a: Signals, b: Signals) -> None:
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.in_session, b.in_session)
    np.testing.assert_array_equal(a.last, b.last)
    np.testing.assert_allclose(a.values, b.values, rtol=2e-6, atol=2e-6)


def assert_same_top_k(m: BlendModel, sessions, st: BlendSettings, k: int, ex: bool) -> None:
    got = m.recommend(sessions, st, k, exclude_session_items=ex)
    want = reference_top_k(reference_signals(m, sessions, st), st, k, exclude_session_items=ex)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_signals_equal_the_reference(seed):
    m = random_model(seed)
    sessions = random_sessions(seed, len(m.vectors))
    st = settings(seed)
    assert_same_signals(m.signals(sessions, st), reference_signals(m, sessions, st))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("ex", [False, True])
def test_top_k_equals_the_reference_for_random_weights(seed, ex):
    m = random_model(seed)
    assert_same_top_k(m, random_sessions(seed, len(m.vectors)), settings(seed), 10, ex)


@pytest.mark.parametrize("signal", SIGNALS)
def test_each_signal_alone_equals_the_reference(signal):
    m = random_model(11)
    st = settings(11, weights={signal: 1.0})
    assert_same_top_k(m, random_sessions(11, len(m.vectors)), st, 15, False)


@pytest.mark.parametrize("parts", [dict(context=False), dict(rules=False),
                                   dict(neighbours=False),
                                   dict(context=False, rules=False, neighbours=False)])
def test_models_without_some_artifacts_equal_the_reference(parts):
    m = random_model(5, **parts)
    assert_same_top_k(m, random_sessions(5, len(m.vectors)), settings(5), 10, True)


def test_neighbours_off_and_a_search_function_equal_the_reference():
    m = random_model(7)
    exact = m.context  # a plain top-k "index" over the output vectors, returning -1 padding
    m.search = lambda q, k: (None, np.c_[np.argsort(-(q @ exact.T), axis=1)[:, :k - 1],
                                         np.full(len(q), -1)])
    st = settings(7, neighbours={"method": "off"})
    assert_same_top_k(m, random_sessions(7, len(m.vectors)), st, 10, False)


def test_empty_and_all_unknown_sessions_get_nothing():
    m = random_model(3)
    rows, sc = m.recommend([np.zeros(0, np.int64), np.array([-1, -1])], BlendSettings(), 5)
    assert (rows == -1).all() and np.isneginf(sc).all()
    rows, sc = m.recommend([], BlendSettings(), 5)
    assert rows.shape == (0, 5)


@pytest.mark.parametrize(("method", "kw"), [("stan", {}), ("vsknn", {}), ("vstan", {}),
                                            ("stan", {"k": 3}), ("stan", {"k": 3, "lambda2": 3e3}),
                                            ("vstan", {"k": 2, "sample_size": 4})])
def test_score_sessions_keeps_the_top_items_of_score_session(method, kw):
    # small k: many candidates per neighbour slot, so the recency-decay shortcut is taken
    m = random_model(9)
    p = method_params(method, **kw)
    prefixes = [s[s >= 0] for s in random_sessions(9, len(m.vectors))]
    counts, items, scores = score_sessions(m.neighbours, prefixes, p, top=6)
    for i, s in enumerate(prefixes):
        r, v = score_session(m.neighbours, s, p)
        keep = np.sort(np.lexsort((r, -v))[:6])
        np.testing.assert_array_equal(items[i, :counts[i]], r[keep])
        np.testing.assert_allclose(scores[i, :counts[i]], v[keep], rtol=1e-12)
        assert (items[i, counts[i]:] == -1).all()
    with pytest.raises(ValueError, match="top must be >= 1"):
        score_sessions(m.neighbours, prefixes, p, top=0)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 7, 400])
def test_blend_top_k_equals_the_reference_on_the_same_signals(seed, k):
    # random signals with ties (a coarse grid of values) and padding: rows and scores agree
    rng = np.random.default_rng(seed)
    n, c = 40, 50
    rows = np.sort(rng.choice(1000, (n, c)), axis=1)
    rows[:, -5:] = -1
    vals = (rng.integers(0, 4, (n, c, len(SIGNALS))) / 4).astype(np.float32)
    vals[rows < 0] = 0
    sig = Signals(rows, vals, rng.random((n, c)) < 0.1, np.where(rng.random(n) < 0.8,
                                                                  rows[:, 3], -1))
    st = settings(seed)
    for ex in (False, True):
        got = blend_top_k(sig, st, k, exclude_session_items=ex)
        want = reference_top_k(sig, st, k, exclude_session_items=ex)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
        # one query at a time (the serial kernel) gives the same rows
        one = blend_top_k(Signals(rows[:1], vals[:1], sig.in_session[:1], sig.last[:1]), st, k,
                          exclude_session_items=ex)
        np.testing.assert_array_equal(one[0], want[0][:1])


def test_single_and_batch_calls_agree():
    # below PARALLEL_FROM queries the serial kernels run, above it the parallel ones
    m = random_model(13)
    sessions = random_sessions(13, len(m.vectors))
    st = settings(13)
    batch = m.recommend(sessions, st, 10)
    for i in range(0, len(sessions), 9):
        one = m.recommend([sessions[i]], st, 10)
        np.testing.assert_array_equal(one[0][0], batch[0][i])
        np.testing.assert_array_equal(one[1][0], batch[1][i])


def test_k_zero_returns_empty_lists_without_touching_memory():
    """k = 0 once wrote past the top-k heap (a segfault two tests later)."""
    from recembed.blend import BlendModel, BlendSettings

    rng = np.random.default_rng(0)
    m = BlendModel(rng.normal(size=(30, 4)).astype(np.float32),
                   rng.normal(size=(30, 4)).astype(np.float32))
    rows, scores = m.recommend([np.array([1, 2]), np.array([3])], BlendSettings(), 0)
    assert rows.shape == (2, 0) and scores.shape == (2, 0)


# ---------------------------------------------------------------- retrieval = "table"


def with_tables(m: BlendModel, width: int) -> BlendModel:
    m.dir_table, m.cos_table = candidate_tables(m.vectors, m.context, width)
    return m


def test_table_rows_give_each_recent_item_a_share_by_its_decay_weight():
    table = np.arange(40, dtype=np.int32).reshape(4, 10)  # item i's list: 10i .. 10i + 9
    table[3, 2:] = -1  # item 3 has only two candidates
    # session (oldest first) 1, -1, 3, 2: item 2 is 0 steps back (weight 1), 3 is 1 (0.5),
    # the unknown item keeps its place (0.25, not counted), 1 is 3 steps back (0.125)
    w = 0.5 ** np.arange(5)
    out = table_rows(np.array([0, 4]), np.array([1, -1, 3, 2]), table, 6, w)
    total = 1 + 0.5 + 0.125
    takes = [int(np.ceil(6 * x / total)) for x in (1, 0.5, 0.125)]
    assert takes == [4, 2, 1]
    want = [20, 21, 22, 23, 30, 31, 10]
    assert out[0, :7].tolist() == want and (out[0, 7:] == -1).all()
    # a one-item session takes the whole list; width caps it
    out = table_rows(np.array([0, 1]), np.array([2]), table, 6, w)
    assert out[0, :6].tolist() == [20, 21, 22, 23, 24, 25] and (out[0, 6:] == -1).all()


def test_candidate_tables_hold_each_items_own_search():
    m = random_model(4)
    d, c = candidate_tables(m.vectors, m.context, 20, block=64)
    assert d.shape == (len(m.vectors), 20) and c.shape == (len(m.vectors), 5)
    i = 17
    assert set(d[i]) == set(np.argsort(-(m.context @ m.vectors[i]))[:20])
    assert set(c[i]) == set(np.argsort(-(m.unit @ m.unit[i]))[:5])
    assert candidate_tables(m.vectors, None, 20)[0] is None


@pytest.mark.parametrize("seed", range(4))
def test_one_item_sessions_get_the_same_answers_from_tables_and_indexes(seed):
    m = with_tables(random_model(seed), 40)
    rng = np.random.default_rng(seed)
    sessions = [np.array([x]) for x in rng.integers(0, len(m.vectors), 50)]
    st = settings(seed, candidates=40)
    a = m.recommend(sessions, st, 10)
    b = m.recommend(sessions, replace(st, retrieval="table"), 10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("retrieval", ["index", "table"])
def test_recommend_is_blend_top_k_of_signals_bit_for_bit(seed, retrieval):
    m = with_tables(random_model(seed), 30)
    sessions = random_sessions(seed, len(m.vectors))
    st = settings(seed, candidates=30, retrieval=retrieval)
    got = m.recommend(sessions, st, 10)
    want = blend_top_k(m.signals(sessions, st), st, 10, pop=m.pop)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    # the serial kernels (a batch below PARALLEL_FROM) answer the same
    for i in (0, 7, len(sessions) - 1):
        one = m.recommend([sessions[i]], st, 10)
        np.testing.assert_array_equal(one[0][0], got[0][i])


def test_table_retrieval_without_tables_and_unknown_retrieval_are_refused():
    m = random_model(1)
    with pytest.raises(ValueError, match="candidate tables"):
        m.recommend([np.array([1, 2])], BlendSettings(retrieval="table"), 5)
    with pytest.raises(ValueError, match="retrieval must be one of"):
        BlendSettings(retrieval="lsh")
    with pytest.raises(ValueError, match="one row per item"):
        BlendModel(m.vectors, m.context, cos_table=np.zeros((3, 2), np.int32))


# ---------------------------------------------------------------- the category signal


def with_categories(m: BlendModel, seed: int, n_categories: int = 7) -> tuple[BlendModel, dict]:
    """`m` with random categories (some rows without) and listing keys with ties."""
    rng = np.random.default_rng(seed + 3000)
    n = len(m.vectors)
    cats = rng.integers(0, n_categories, n)
    cats[rng.random(n) < 0.1] = -1
    listed = rng.integers(0, 40, n).astype(np.float64)  # ties: the later row is newer
    arrays = category_arrays(cats, listed)
    out = BlendModel(m.vectors, m.context, rules=m.rules, neighbours=m.neighbours,
                     popularity=np.expm1(m.pop * 5), **arrays)
    return out, {"categories": cats, "listed": listed}


def test_category_arrays_rank_each_category_newest_first():
    cats = np.array([0, 1, 0, 0, -1, 1, 0])
    listed = np.array([5.0, 1.0, 9.0, 5.0, 3.0, 2.0, -np.inf])
    a = category_arrays(cats, listed)
    # category 0: row 2 (9), then rows 3 and 0 (5; the later row is newer), then row 6 (-inf)
    assert a["category_rows"].tolist() == [2, 3, 0, 6, 5, 1]
    assert a["category_indptr"].tolist() == [0, 4, 6]
    assert a["category_rank"].tolist() == [2, 1, 0, 1, -1, 0, 3]
    assert a["item_category"].tolist() == [0, 1, 0, 0, -1, 1, 0]


def test_category_signal_is_one_over_one_plus_the_rank_in_the_last_items_category():
    vec = np.eye(6, 4, dtype=np.float32)
    a = category_arrays(np.array([0, 0, 1, 0, 1, -1]), np.array([1.0, 2, 3, 4, 5, 6]))
    m = BlendModel(vec, popularity=np.arange(6), **a)
    st = BlendSettings(weights={"category": 1.0}, popular=2, candidates=1)
    sig = m.signals([np.array([2, 1]), np.array([5]), np.array([1, -1])], st)
    i_cat = SIGNALS.index("category")
    got = {int(r): float(v) for r, v in zip(sig.rows[0], sig.values[0, :, i_cat], strict=True)
           if r >= 0}
    # last item 1, category 0 = rows 3, 1, 0 newest first: ranks 0, 1, 2; its first 2 rows
    # (popular = 2) are candidates
    assert {3, 1} <= set(got)
    assert got[3] == 1.0 and got[1] == 0.5 and got.get(0, 1 / 3) == pytest.approx(1 / 3)
    assert got[2] == 0.0 and got[4] == 0.0
    assert not sig.values[1, :, i_cat].any()  # last item without a category
    assert not sig.values[2, :, i_cat].any()  # last item without a vector


@pytest.mark.parametrize("seed", range(3))
def test_category_alone_orders_like_the_category_baseline(seed):
    from recembed.evaluate import Queries, category_scorer

    m, side = with_categories(random_model(seed), seed)
    cats = side["categories"]
    sessions = [s for s in random_sessions(seed, len(m.vectors)) if len(s) and s[-1] >= 0]
    st = BlendSettings(weights={"category": 1.0}, popular=50)
    rows, _ = m.recommend(sessions, st, 20)
    pop = np.expm1(m.pop * 5)  # what with_categories gave the model
    flat = np.concatenate(sessions)
    lens = np.array([len(s) for s in sessions])
    q = Queries(flat, np.r_[0, np.cumsum(lens)[:-1]], lens, np.zeros(len(lens), np.int64))
    base = category_scorer(cats, side["listed"], pop)(q, np.arange(len(q)))
    checked = 0
    for i, s in enumerate(sessions):
        c = cats[s[-1]]
        if c < 0:
            continue
        order = np.lexsort((np.arange(len(pop)), -base[i]))
        want = [int(x) for x in order if cats[x] == c and x != s[-1]][:20]
        got = [int(x) for x in rows[i] if x >= 0]
        # the category's items first, in the baseline's order; then the rest (score 0)
        assert got[:len(want)] == want
        assert all(cats[x] != c for x in got[len(want):])
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize("seed", range(2))
def test_recommend_with_categories_is_blend_top_k_of_signals(seed):
    m, _ = with_categories(random_model(seed), seed)
    sessions = random_sessions(seed, len(m.vectors))
    st = settings(seed)
    got = m.recommend(sessions, st, 10)
    want = blend_top_k(m.signals(sessions, st), st, 10)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    want = reference_top_k(m.signals(sessions, st), st, 10)
    np.testing.assert_array_equal(got[0], want[0])


def test_a_model_without_categories_scores_category_zero_and_half_arrays_are_refused():
    m = random_model(2)
    sig = m.signals(random_sessions(2, len(m.vectors)), settings(2))
    assert not m.has_category and not sig.values[:, :, SIGNALS.index("category")].any()
    a = category_arrays(np.zeros(len(m.vectors), np.int64), np.zeros(len(m.vectors)))
    with pytest.raises(ValueError, match="go together"):
        BlendModel(m.vectors, item_category=a["item_category"])
    with pytest.raises(ValueError, match="one entry per item"):
        BlendModel(m.vectors[:5], **a)


# ---------------------------------------------------------------- blend.npz


@pytest.mark.parametrize("parts", ["all", "no tables", "no categories"])
def test_save_then_load_answers_the_same_and_holds_the_documented_keys(tmp_path, parts):
    m, _ = with_categories(random_model(4), 4)
    if parts == "no categories":
        m = random_model(4)
    if parts != "no tables":
        with_tables(m, 40)
    path = tmp_path / "blend.npz"
    m.save(path)
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.files)
    nb = [f"nb_{f}" for f in SessionIndex.__dataclass_fields__]
    want = ["rules_indptr", "rules_indices", "rules_data", "popularity", *nb,
            *(CATEGORY_KEYS if parts != "no categories" else ()),
            *(("cos_table", "dir_table") if parts != "no tables" else ())]
    assert keys == want  # the order np.savez wrote them in, as the index stage always has
    back = BlendModel.load(path, m.vectors, m.context)
    sessions = random_sessions(4, len(m.vectors))
    for retrieval in ("index", "table") if parts != "no tables" else ("index",):
        st = settings(4, retrieval=retrieval)
        for a, b in zip(back.recommend(sessions, st, 10), m.recommend(sessions, st, 10),
                        strict=True):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.popularity, m.popularity)
    assert back.has_category == (parts != "no categories")


def test_build_gives_rows_of_codes_and_the_training_counts():
    rng = np.random.default_rng(5)
    codes = np.array([0, 2, 3, 5, 6])  # codes 1 and 4 have no vector
    sess = np.repeat(np.arange(40), 4)
    item = rng.choice(7, len(sess))
    train = pd.DataFrame({"session": sess, "item": item, "ts": np.repeat(np.arange(40.0), 4)})
    vec = rng.normal(size=(5, 4)).astype(np.float32)
    m, row_of = BlendModel.build(train, 7, codes, vec, None, rule_steps=2)
    assert row_of.tolist() == [0, -1, 1, 2, -1, 3, 4]
    np.testing.assert_array_equal(m.popularity, np.bincount(item, minlength=7)[codes])
    assert m.neighbours.n_items == 5 and len(m.rules.indptr) == 6


def test_faiss_exact_top_finds_the_same_rows_as_a_full_sort():
    from recembed.blend.model import faiss_exact_top

    rng = np.random.default_rng(3)
    items = rng.normal(size=(3_000, 16)).astype(np.float32)
    q = rng.normal(size=(40, 16)).astype(np.float32)
    got = faiss_exact_top(q, items, 25)
    full = np.argsort(-(q.astype(np.float64) @ items.T.astype(np.float64)), axis=1)[:, :25]
    assert got.shape == (40, 25) and got.dtype == np.int64
    assert all(set(got[i]) == set(full[i]) for i in range(40))
    assert (got == full).mean() > 0.99  # best first, as faiss orders them
    assert faiss_exact_top(q, items[:10], 25).shape == (40, 10)  # k capped at the items
    assert faiss_exact_top(q[:0], items, 5).shape == (0, 5)


def reference_rules(item: np.ndarray, sid: np.ndarray, n: int, steps: int, top: int):
    """`sequential_rules` as it was before its numba kernels (commit e001d58): np.unique over
    (source, target) keys, np.bincount of the weights, lexsort for the `top` per row."""
    src, dst, wt = [], [], []
    for d in range(1, steps + 1):
        same = (sid[d:] == sid[:-d]) & (item[d:] != item[:-d])
        same &= (item[d:] >= 0) & (item[:-d] >= 0)
        src.append(item[:-d][same])
        dst.append(item[d:][same])
        wt.append(np.full(int(same.sum()), 1.0 / d))
    s, t, w = np.concatenate(src), np.concatenate(dst), np.concatenate(wt)
    uk, inv = np.unique(s.astype(np.int64) * n + t, return_inverse=True)
    ws = np.bincount(inv, weights=w)
    rs, cs = uk // n, uk % n
    order = np.lexsort((cs, -ws, rs))
    rs, cs, ws = rs[order], cs[order], ws[order]
    keep = (np.arange(len(rs)) - np.searchsorted(rs, rs)) < top
    rs, cs, ws = rs[keep], cs[keep], ws[keep]
    order = np.lexsort((cs, rs))
    rs, cs, ws = rs[order], cs[order], ws[order]
    indptr = np.zeros(n + 1, np.int64)
    np.add.at(indptr, rs + 1, 1)
    return np.cumsum(indptr), cs.astype(np.int32), ws.astype(np.float32)


def test_sequential_rules_by_hand():
    # session 0: a b a c; session 1: b c (rows a=0, b=1, c=2, one -1 without a vector)
    item = np.array([0, 1, 0, 2, 1, -1, 2])
    sid = np.array([0, 0, 0, 0, 1, 1, 1])
    r = sequential_rules(item, sid, 3, steps=2)
    got = {(a, int(b)): float(w) for a in range(3)
           for b, w in zip(*r.row(a), strict=True)}
    # a->b 1 (pos 0 -> 1), a->c 1 (pos 2 -> 3; pos 0 -> 3 is 3 steps), b->a 1 (pos 1 -> 2),
    # b->c 1/2 (pos 1 -> 3) + 1/2 (pos 4 -> 6, across the -1); a->a never counts, and c's
    # next event is in another session
    assert got == {(0, 1): 1.0, (0, 2): 1.0, (1, 0): 1.0, (1, 2): 1.0}
    assert r.indptr.tolist() == [0, 2, 4, 4]
    top1 = sequential_rules(item, sid, 3, steps=2, top=1)
    assert top1.indices.tolist() == [1, 0]  # ties go to the lower column


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sequential_rules_equal_the_numpy_reference_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    n, e = 300, 20_000
    # Zipf-like rows (many ties at the top-k cut among rare pairs), some without a vector
    item = np.minimum(rng.zipf(1.3, e) - 1, n - 1).astype(np.int64)
    item[rng.random(e) < 0.05] = -1
    sid = np.sort(rng.integers(0, e // 6, e))
    for steps, top in ((10, 100), (3, 5), (1, 1)):
        r = sequential_rules(item, sid, n, steps=steps, top=top)
        indptr, indices, data = reference_rules(item, sid, n, steps, top)
        assert r.indptr.dtype == np.int64 and r.indices.dtype == np.int32
        assert r.data.dtype == np.float32
        assert np.array_equal(r.indptr, indptr)
        assert np.array_equal(r.indices, indices)
        assert np.array_equal(r.data, data)


def test_sequential_rules_refuse_rows_outside_n():
    with pytest.raises(ValueError, match="row 5 >= n=3"):
        sequential_rules(np.array([0, 5]), np.array([0, 0]), 3)
