"""The blend search's fast path (issue 23, "runs in 60 s"): `SignalBatch` gives the signals
`BlendModel.signals` gives, and `BlendScorer` the numbers of the numpy reference `_recall_mrr`,
bit for bit, so that the search chooses what it chose before, only sooner."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from recembed.blend import SIGNALS, BlendSettings
from recembed.blend.model import SignalBatch, padded_signals
from recembed.calibrate import BlendScorer, _recall_mrr, choose_blend
from tests.test_blend import random_model, random_sessions, settings, with_categories, with_tables


def assert_identical(a, b) -> None:
    for x, y in zip((a.rows, a.values, a.in_session, a.last),
                    (b.rows, b.values, b.in_session, b.last), strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def _model(seed: int, kind: str):
    m = random_model(seed)
    if kind == "categories":
        m, _ = with_categories(m, seed)
    if kind == "tables":
        m = with_tables(m, 40)
    return m


@pytest.mark.parametrize("kind", ["plain", "categories", "tables"])
@pytest.mark.parametrize("seed", range(3))
def test_batch_signals_equal_the_models_whatever_the_order_of_settings(seed, kind):
    m = _model(seed, kind)
    sessions = random_sessions(seed, len(m.vectors))
    batch = SignalBatch(m, sessions, block=len(sessions), keep=2)
    retrieval = "table" if kind == "tables" else "index"
    sts = [settings(seed + i, retrieval=retrieval, decay=d, candidates=c)
           for i, (d, c) in enumerate([(0.5, 30), (0.8, 30), (0.5, 12), (0.5, 30), (0.8, 12)])]
    sts += [replace(sts[0], neighbours={"method": "vsknn", "sample_size": 50}),
            replace(sts[0], neighbours={"method": "off"}), replace(sts[0], popular=0),
            replace(sts[0], repeat_decay=0.3), replace(sts[0], history=2)]
    for st in sts + sts[::-1]:  # evicted (keep=2) and recomputed sets equal too
        assert_identical(batch.padded(st), m.signals(sessions, st))
    # settings that change no signal share one set
    built = batch.built
    batch.flat(replace(sts[0], weights={"rules": 1.0}, temperature=3.0, exclude_last=False))
    batch.flat(sts[0])
    assert batch.built <= built + 1


def test_searches_in_blocks_equal_the_models_signals_of_each_block():
    m = random_model(3)
    sessions = random_sessions(3, len(m.vectors), n=100)
    st = settings(3)
    got = SignalBatch(m, sessions, block=7).flat(st)
    parts = [m.signals(sessions[i:i + 7], st) for i in range(0, len(sessions), 7)]
    counts = np.diff(got.offsets)
    assert counts.tolist() == [int((r >= 0).sum()) for p in parts for r in p.rows]
    rows = np.concatenate([r[r >= 0] for p in parts for r in p.rows])
    np.testing.assert_array_equal(got.rows, rows)
    vals = np.concatenate([v[r >= 0] for p in parts for r, v in zip(p.rows, p.values,
                                                                    strict=True)])
    np.testing.assert_array_equal(got.values, vals)


def test_batch_refuses_a_block_of_zero_and_handles_no_sessions():
    m = random_model(0)
    with pytest.raises(ValueError, match="block"):
        SignalBatch(m, [np.array([1])], block=0)
    sig = SignalBatch(m, []).padded(settings(0))
    assert sig.rows.shape == (0, 1) and sig.last.shape == (0,)


def _targets(sessions, m, rng) -> np.ndarray:
    """A mix: the planted next item, the last item (excluded under exclude_last), no row
    (-1), an item no signal retrieves, any row."""
    out = []
    for s in sessions:
        r = rng.random()
        known = s[s >= 0]
        if r < 0.2 and len(known):
            out.append(int(known[-1]))
        elif r < 0.3:
            out.append(-1)
        elif r < 0.4:
            out.append(len(m.vectors) - 1)
        else:
            out.append(int(rng.integers(0, len(m.vectors))))
    return np.array(out, np.int64)


@pytest.mark.parametrize("kind", ["plain", "categories"])
@pytest.mark.parametrize("seed", range(4))
def test_scorer_equals_the_numpy_reference_bit_for_bit(seed, kind):
    m = _model(seed, kind)
    sessions = random_sessions(seed, len(m.vectors), n=120)
    targets = _targets(sessions, m, np.random.default_rng(seed))
    scorer = BlendScorer(SignalBatch(m, sessions), targets, k=20)
    rng = np.random.default_rng(seed + 7)
    sts = [settings(seed + i, temperature=float(rng.choice([0.5, 1.0, 2.0])))
           for i in range(6)]
    # one signal alone: many exact ties (zeros), broken by popularity then the lower row
    sts += [BlendSettings(weights={s: 1.0}, candidates=30, exclude_last=bool(i % 2))
            for i, s in enumerate(SIGNALS)]
    for st in sts:
        sig = m.signals(sessions, st)
        for k in (1, 5, 20):
            scorer.k = k
            assert scorer(st) == _recall_mrr(sig, st, targets, k)
        hit, rr = scorer(st, per_query=True)
        want_hit, want_rr = _recall_mrr(sig, st, targets, 20, per_query=True)
        np.testing.assert_array_equal(hit, want_hit)
        np.testing.assert_array_equal(rr, want_rr)
    assert 0 < scorer(sts[0])[0] < 1  # some hits, some misses: the test can tell them apart


def test_scorer_refuses_targets_of_another_length():
    m = random_model(0)
    with pytest.raises(ValueError, match="targets"):
        BlendScorer(SignalBatch(m, [np.array([1]), np.array([2])]), np.array([1]))


def test_the_search_chooses_what_the_reference_scores_best():
    # the chosen blend's numbers, recomputed from scratch with the numpy reference on the
    # model's own signals, are what the search reported; and the per-query objective too
    m, _ = with_categories(random_model(5), 5)
    sessions = random_sessions(5, len(m.vectors), n=200)
    rng = np.random.default_rng(5)
    targets = np.array([int(s[s >= 0][-1] + 1) % len(m.vectors) if (s >= 0).any()
                        else int(rng.integers(0, len(m.vectors))) for s in sessions])
    choice = choose_blend(m, sessions, targets,
                          neighbour_options=[{"method": "stan"}, {"method": "vsknn"}])
    sig = m.signals(sessions, choice.settings)
    assert _recall_mrr(sig, choice.settings, targets, 20) == (choice.recall, choice.mrr)
    hit, rr = _recall_mrr(sig, choice.settings, targets, 20, per_query=True)
    np.testing.assert_array_equal(choice.per_query, hit + rr)
    for name, c in choice.corners.items():
        assert choice.recall + choice.mrr >= c["recall@20"] + c["mrr@20"], name


def test_padded_signals_of_nothing_is_one_empty_column():
    m = random_model(1)
    flat = SignalBatch(m, [np.zeros(0, np.int64), np.array([-1])]).flat(settings(1))
    sig = padded_signals(flat)
    assert sig.rows.tolist() == [[-1], [-1]] and not sig.values.any()


def test_scorer_reuses_a_ranking_only_where_the_scores_cannot_differ():
    m = random_model(2)
    sessions = random_sessions(2, len(m.vectors), n=80)
    targets = _targets(sessions, m, np.random.default_rng(2))
    scorer = BlendScorer(SignalBatch(m, sessions), targets)
    no_dir = BlendSettings(weights={"rules": 1.0, "cosine": 0.3}, candidates=30)
    first = scorer(no_dir)
    assert scorer(replace(no_dir, temperature=7.0)) == first and scorer.ranked == 1
    with_dir = replace(no_dir, weights={"rules": 1.0, "directional": 0.3})
    scorer(with_dir)
    scorer(replace(with_dir, temperature=0.05))  # the directional signal changes: rescored
    assert scorer.ranked == 3
    for st in (replace(with_dir, temperature=0.05), replace(no_dir, exclude_last=False)):
        fresh = BlendScorer(SignalBatch(m, sessions), targets)
        assert scorer(st) == fresh(st) == _recall_mrr(m.signals(sessions, st), st, targets, 20)


def _tied_items_and_queries(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """500 items, 10 of them copies of item 7 (exact ties at any boundary they fall on), and
    300 queries, the first 20 equal to item 7."""
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(500, 16)).astype(np.float32)
    items[100:110] = items[7]
    q = rng.normal(size=(300, 16)).astype(np.float32)
    q[:20] = items[7]
    return items, q


@pytest.mark.parametrize("seed", range(3))
def test_verified_search_returns_the_sets_of_faiss_exact_search(seed, monkeypatch):
    import recembed.blend.model as bm

    items, q = _tied_items_and_queries(seed)
    fallback = []
    faiss_top = bm.faiss_exact_top
    monkeypatch.setattr(bm, "faiss_exact_top",
                        lambda a, b, k: (fallback.append(len(a)), faiss_top(a, b, k))[1])
    for k in (1, 3, 50, 499, 500, 800):
        got = bm.verified_exact_top(q, items, k, block=64)
        want = faiss_top(q, items, k)
        assert got.shape == want.shape
        np.testing.assert_array_equal(np.sort(got, axis=1), np.sort(want, axis=1))
    assert 0 < sum(fallback) < 6 * len(q)  # the ties went to faiss, most queries did not
    assert bm.verified_exact_top(q[:0], items, 5).shape == (0, 5)


@pytest.mark.parametrize("seed", range(3))
def test_exact_top_returns_argpartitions_sets_ties_included(seed, monkeypatch):
    import recembed.blend.model as bm

    items, q = _tied_items_and_queries(seed)
    scores = q @ items.T
    scores[30, 5] = np.nan
    scores[31, :] = 0.0  # every column tied
    fallback = []
    argpartition = bm._argpartition_top
    monkeypatch.setattr(bm, "_argpartition_top",
                        lambda s, k: (fallback.append(len(s)), argpartition(s, k))[1])
    for k in (1, 3, 50, 499, 500, 800):
        got = bm.exact_top(scores, k)
        # the reference written out: numpy's own selection, the sets compared
        want = np.argpartition(-scores, min(k, 500) - 1, axis=1)[:, :min(k, 500)]
        assert got.shape == want.shape and got.dtype == np.int64
        np.testing.assert_array_equal(np.sort(got, axis=1), np.sort(want, axis=1))
    # the heap answered most rows; the ties, the NaN row and k >= columns went to numpy
    assert 2 * len(scores) < sum(fallback) < 4 * len(scores)
    assert bm.exact_top(scores[:0], 5).shape == (0, 5)
    assert bm.exact_top(scores, 0).shape == (300, 0)


@pytest.mark.parametrize("kind", ["plain", "categories"])
def test_batch_signals_over_a_large_catalogue_equal_the_models(kind, monkeypatch):
    # from FAISS_EXACT_FROM items the batch takes its candidates from verified_exact_top,
    # the model from faiss_exact_top: the same signals bit for bit
    import recembed.blend.model as bm

    monkeypatch.setattr(bm, "FAISS_EXACT_FROM", 100)
    m = _model(4, kind)
    sessions = random_sessions(4, len(m.vectors), n=120)
    batch = SignalBatch(m, sessions, block=32)
    for st in (settings(4, decay=0.5, candidates=40), settings(5, decay=0.8, candidates=9)):
        assert_identical(batch.padded(st), m.signals(sessions, st))


def test_batches_over_one_session_index_share_its_session_knn_items(monkeypatch):
    """`SignalBatch(shared=...)`: a second model with other vectors over the same session
    index and queries (calibration's next candidate) takes the session-kNN items the first
    batch computed, and its signals equal an unshared batch's bit for bit; another index or
    other queries compute their own."""
    import recembed.blend.model as bm

    calls = []
    real = bm.score_sessions
    monkeypatch.setattr(bm, "score_sessions", lambda *a: (calls.append(1), real(*a))[1])
    first = random_model(4)
    second = random_model(5)  # other vectors, rules and index
    second = bm.BlendModel(second.vectors, second.context, rules=second.rules,
                           neighbours=first.neighbours, popularity=second.popularity)
    sessions = random_sessions(4, len(first.vectors))
    sts = [settings(4), replace(settings(4), candidates=12),
           replace(settings(4), neighbours={"method": "vsknn", "sample_size": 50})]
    shared: dict = {}
    for st in sts:
        SignalBatch(first, sessions, shared=shared).flat(st)
    n_first = len(calls)
    assert n_first == len(sts)
    batch = SignalBatch(second, sessions, shared=shared)
    for st in sts:
        assert_identical(batch.padded(st), second.signals(sessions, st))
    # the model's own signals call the kernel; the shared batch did not
    assert len(calls) == n_first + len(sts)
    SignalBatch(second, sessions[:-3], shared=shared).flat(sts[0])  # other queries
    SignalBatch(random_model(6), sessions, shared=shared).flat(sts[0])  # another index
    assert len(calls) == n_first + len(sts) + 2
