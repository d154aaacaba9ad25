"""The numba kernels of the blend: query vectors, candidate unions, the raw signals of every
candidate, per-item table rows and the blended top-k.

The arguments travel as NamedTuples of arrays (numba takes them as tuples), so that a call
names what it passes. Batch kernels come in a parallel and a serial build, and a plain Python
wrapper here (`query_vectors`, `flat_signals`, `flat_top_k`) picks one by the batch size
(`recembed.topk.PARALLEL_FROM`); `recembed.blend.model` / `recembed.blend.scores` build the
records from checked model arrays (`table_rows` wraps `table_rows_kernel`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from recembed.blend.settings import N_SIGNALS
from recembed.topk import PARALLEL_FROM, top_stable

# the signal columns of a [candidates, N_SIGNALS] array (the order of SIGNALS)
DIRECTIONAL, COSINE, RULES, NEIGHBOURS, REPEAT, POPULARITY, CATEGORY = range(7)


class Sessions(NamedTuple):
    """Query sessions laid end to end: session i is ``items[indptr[i]:indptr[i + 1]]``."""

    indptr: np.ndarray  # int64 [n + 1]
    items: np.ndarray  # int64, vector rows, most recent last; -1 = an item without a vector


class Retrieved(NamedTuple):
    """Candidates found by search (or the tables), per query; -1 padded."""

    directional: np.ndarray  # int64 [n, a]
    cosine: np.ndarray  # int64 [n, b]
    popular: np.ndarray  # int64 [p], the most popular rows (every query)


class Rules(NamedTuple):
    """Sequential rules, CSR over rows."""

    indptr: np.ndarray  # int64 [rows + 1]
    items: np.ndarray  # int32
    weights: np.ndarray  # float32
    longest: int  # the longest row (bounds a query's rule candidates)


class NeighbourItems(NamedTuple):
    """What `recembed.sknn_kernels.score_sessions` returns for the queries."""

    counts: np.ndarray  # int64 [n]
    rows: np.ndarray  # int64 [n, top], ascending, -1 padded
    scores: np.ndarray  # float64 [n, top]


class ItemVectors(NamedTuple):
    """Per-row arrays of the model."""

    unit: np.ndarray  # float32 [rows, d], unit input vectors
    context: np.ndarray  # float32 [rows, d], output vectors (the unit vectors without them)
    has_context: bool  # False: directional = 10 x cosine
    popularity: np.ndarray  # float32 [rows], log(1 + count) / log(1 + max count)


class QueryVectors(NamedTuple):
    """Per-query vectors: the decayed prefix of input vectors and its unit cosine query."""

    unit: np.ndarray  # float32 [n, d]
    input: np.ndarray  # float32 [n, d]


class CategoryLists(NamedTuple):
    """The `category` signal's arrays (zero-length = the signal is off)."""

    of_row: np.ndarray  # int32 [rows], -1 = none
    rank: np.ndarray  # int32 [rows], 0 = newest in its category
    indptr: np.ndarray  # int64 [categories + 1]
    rows: np.ndarray  # int32, each category's rows, newest first
    listed: int  # the first rows of the last item's category that join the candidates


class FlatSignals(NamedTuple):
    """Every query's candidates and raw signals laid end to end: query i owns
    ``offsets[i]:offsets[i + 1]``."""

    offsets: np.ndarray  # int64 [n + 1]
    rows: np.ndarray  # int64 [T], ascending within a query
    values: np.ndarray  # float32 [T, N_SIGNALS]
    in_session: np.ndarray  # bool [T]
    last: np.ndarray  # int64 [n], the last item of each session (-1 = none)


# ---------------------------------------------------------------- query vectors


def _make_queries_kernel(parallel: bool):
    loop = prange if parallel else range

    def kernel(sessions, vectors, unit, w):
        # (record fields are read into locals outside the parallel loops: numba's parfors
        # cannot type a record's attributes inside them)
        s_indptr, s_items = sessions.indptr, sessions.items
        n, d = len(s_indptr) - 1, vectors.shape[1]
        q_in = np.zeros((n, d), np.float32)
        q_unit = np.zeros((n, d), np.float32)
        for i in loop(n):
            lo, hi = s_indptr[i], s_indptr[i + 1]
            for j in range(min(len(w), hi - lo)):  # j steps back, most recent first
                x = s_items[hi - 1 - j]
                if x < 0:
                    continue
                for t in range(d):
                    q_in[i, t] += w[j] * vectors[x, t]
                    q_unit[i, t] += w[j] * unit[x, t]
        return q_in, q_unit

    kernel.__name__ = kernel.__qualname__ = "queries_" + ("par" if parallel else "ser")
    return njit(cache=True, parallel=parallel, nogil=True)(kernel)


_queries_par = _make_queries_kernel(True)
_queries_ser = _make_queries_kernel(False)


def query_vectors(sessions: Sessions, vectors: np.ndarray, unit: np.ndarray,
                  weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(decayed input query float32 [n, d], decayed unit query before normalising [n, d]):
    the item j steps back weighs ``weights[j]`` (float32), -1 items skipped."""
    kernel = _queries_par if len(sessions.indptr) - 1 >= PARALLEL_FROM else _queries_ser
    return kernel(sessions, vectors, unit, weights)


# ---------------------------------------------------------------- table rows


@njit(cache=True, nogil=True)
def table_rows_kernel(sessions, table, width, weights):
    """`recembed.blend.model.table_rows` (which checks the arguments)."""
    n = len(sessions.indptr) - 1
    h = len(weights)
    out = np.full((n, width + h), -1, np.int64)
    for i in range(n):
        lo, hi = sessions.indptr[i], sessions.indptr[i + 1]
        total = 0.0
        for j in range(min(h, hi - lo)):
            if sessions.items[hi - 1 - j] >= 0:
                total += weights[j]
        m = 0
        for j in range(min(h, hi - lo)):
            x = sessions.items[hi - 1 - j]
            if x < 0:
                continue
            take = min(int(np.ceil(width * weights[j] / total)), width)
            for t in range(take):
                r = table[x, t]
                if r < 0:
                    break
                out[i, m] = r
                m += 1
    return out


# ---------------------------------------------------------------- candidates and signals


@njit(cache=True, nogil=True, fastmath=True)
def _dot(a, b):
    # float32 inner product; fastmath lets LLVM vectorise it (a different order of summation
    # than numpy's einsum: equal to float32 rounding)
    acc = np.float32(0.0)
    for d in range(len(a)):
        acc += a[d] * b[d]
    return acc


@njit(cache=True, nogil=True)
def _union_one(s, directional, cosine, popular, rules, nb_count, nb_rows, categories, out):
    """The sorted distinct candidates of one query (session `s`) into `out`; returns how
    many."""
    m = 0
    for x in s:
        if x >= 0:
            out[m] = x
            m += 1
    if m == 0:  # a session without any known item gets nothing
        return 0
    for x in popular:
        out[m] = x
        m += 1
    for x in cosine:
        out[m] = x
        m += 1
    for x in directional:
        out[m] = x
        m += 1
    last_known = len(s) > 0 and s[-1] >= 0
    if last_known:
        for e in range(rules.indptr[s[-1]], rules.indptr[s[-1] + 1]):
            out[m] = rules.items[e]
            m += 1
    for t in range(nb_count):
        out[m] = nb_rows[t]
        m += 1
    if categories.listed > 0 and last_known and categories.of_row[s[-1]] >= 0:
        cl = categories.of_row[s[-1]]
        for e in range(categories.indptr[cl],
                       min(categories.indptr[cl] + categories.listed, categories.indptr[cl + 1])):
            out[m] = categories.rows[e]
            m += 1
    row = np.sort(out[:m])
    c = 0
    for t in range(m):
        if row[t] >= 0 and (c == 0 or row[t] != out[c - 1]):
            out[c] = row[t]
            c += 1
    return c


@njit(cache=True, nogil=True)
def _fill_one(s, cand, rules, nb_count, nb_rows, nb_scores, repeat_decay, items, q_unit, q_in,
              categories, values, in_session):
    """The raw signals of one query's candidates `cand` (sorted) into values [C, N_SIGNALS]
    and in_session [C]."""
    ls = len(s)
    for p in range(ls):
        if s[p] >= 0:
            j = np.searchsorted(cand, s[p])
            values[j, REPEAT] += np.float32(repeat_decay ** float(ls - 1 - p))
            in_session[j] = True
    last_known = ls > 0 and s[-1] >= 0
    if last_known:
        for e in range(rules.indptr[s[-1]], rules.indptr[s[-1] + 1]):
            values[np.searchsorted(cand, rules.items[e]), RULES] = rules.weights[e]
    for t in range(nb_count):
        values[np.searchsorted(cand, nb_rows[t]), NEIGHBOURS] = np.float32(nb_scores[t])
    for j in range(len(cand)):
        x = cand[j]
        cs = _dot(items.unit[x], q_unit)
        values[j, COSINE] = cs
        if items.has_context:
            values[j, DIRECTIONAL] = _dot(items.context[x], q_in)
        else:  # no output vectors: cosine on a comparable scale
            values[j, DIRECTIONAL] = cs * np.float32(10.0)
        values[j, POPULARITY] = items.popularity[x]
    if len(categories.of_row) and last_known and categories.of_row[s[-1]] >= 0:
        cl = categories.of_row[s[-1]]
        for j in range(len(cand)):
            if categories.of_row[cand[j]] == cl:
                values[j, CATEGORY] = np.float32(1.0) / np.float32(1 + categories.rank[cand[j]])


def _make_flat_signals_kernel(parallel: bool):
    loop = prange if parallel else range

    def kernel(sessions, retrieved, rules, neighbours, items, queries, categories,
               repeat_decay):
        # (record fields are read into locals outside the parallel loops: numba's parfors
        # cannot type a record's attributes inside them)
        s_indptr, s_items = sessions.indptr, sessions.items
        directional, cosine, popular = retrieved.directional, retrieved.cosine, retrieved.popular
        nb_counts, nb_rows, nb_scores = neighbours.counts, neighbours.rows, neighbours.scores
        q_unit, q_in = queries.unit, queries.input
        n = len(s_indptr) - 1
        max_len = 0
        for i in range(n):
            max_len = max(max_len, s_indptr[i + 1] - s_indptr[i])
        cap = max_len + len(popular) + cosine.shape[1] + directional.shape[1] + \
            rules.longest + nb_rows.shape[1] + categories.listed
        buf = np.empty((n, max(cap, 1)), np.int64)
        offsets = np.zeros(n + 1, np.int64)
        for i in loop(n):
            offsets[i + 1] = _union_one(s_items[s_indptr[i]:s_indptr[i + 1]], directional[i],
                                        cosine[i], popular, rules, nb_counts[i], nb_rows[i],
                                        categories, buf[i])
        for i in range(n):
            offsets[i + 1] += offsets[i]
        total = offsets[n]
        rows = np.empty(total, np.int64)
        values = np.zeros((total, N_SIGNALS), np.float32)
        in_session = np.zeros(total, np.bool_)
        last = np.full(n, -1, np.int64)
        for i in loop(n):
            s = s_items[s_indptr[i]:s_indptr[i + 1]]
            lo, hi = offsets[i], offsets[i + 1]
            rows[lo:hi] = buf[i, :hi - lo]
            if len(s) and s[-1] >= 0:
                last[i] = s[-1]
            if hi > lo:
                _fill_one(s, rows[lo:hi], rules, nb_counts[i], nb_rows[i], nb_scores[i],
                          repeat_decay, items, q_unit[i], q_in[i], categories, values[lo:hi],
                          in_session[lo:hi])
        return offsets, rows, values, in_session, last

    kernel.__name__ = kernel.__qualname__ = "flat_signals_" + ("par" if parallel else "ser")
    return njit(cache=True, parallel=parallel, nogil=True)(kernel)


_flat_signals_par = _make_flat_signals_kernel(True)
_flat_signals_ser = _make_flat_signals_kernel(False)


class SignalInputs(NamedTuple):
    """Everything `flat_signals` reads (`recembed.blend.BlendModel` gathers it)."""

    sessions: Sessions
    retrieved: Retrieved
    rules: Rules
    neighbours: NeighbourItems
    items: ItemVectors
    queries: QueryVectors
    categories: CategoryLists
    repeat_decay: float  # in (0, 1]: an item j steps back scores repeat_decay ** j, summed


def flat_signals(inputs: SignalInputs) -> FlatSignals:
    """Candidate unions (sorted) and the raw signals of every query, end to end. The
    per-query numpy code it replaced is the reference in tests/test_blend.py."""
    n = len(inputs.sessions.indptr) - 1
    kernel = _flat_signals_par if n >= PARALLEL_FROM else _flat_signals_ser
    return FlatSignals(*kernel(inputs.sessions, inputs.retrieved, inputs.rules,
                               inputs.neighbours, inputs.items, inputs.queries,
                               inputs.categories, float(inputs.repeat_decay)))


# ---------------------------------------------------------------- top-k


@njit(cache=True, nogil=True)
def _blend_one(values, expo, w):
    """float64 [C]: the blended score of one query's candidates, the same float64 sums as
    `recembed.blend.scores.blended_scores`, in the same order of signals."""
    c = len(values)
    score = np.zeros(c)  # (np.float64, not float(): numba's float() keeps a float32 a float32)
    for j in range(len(w)):
        if w[j] == 0.0:
            continue
        if j == DIRECTIONAL or j == COSINE:  # exp((x - max) / t), numpy's exp (in `expo`)
            for a in range(c):
                score[a] += w[j] * expo[a, j]
        elif j == POPULARITY:  # as it is
            for a in range(c):
                score[a] += w[j] * np.float64(values[a, j])
        else:  # rules, neighbours, repeat, category: divided by the query's best (padding 0)
            mx = np.float64(values[0, j])
            for a in range(c):
                mx = max(mx, np.float64(values[a, j]))
            for a in range(c):
                x = np.float64(values[a, j]) / mx if mx > 0 else 0.0
                score[a] += w[j] * x
    return score


@njit(cache=True, nogil=True)
def _top_k_one(rows, values, expo, in_session, last, w, exclude_last, exclude_session, k,
               out_rows, out_scores):
    """`blend_top_k` for one query (`_blend_one`'s scores)."""
    c = len(rows)
    score = _blend_one(values, expo, w)
    neg = np.empty(c)
    for a in range(c):
        if (exclude_last and last >= 0 and rows[a] == last) or \
                (exclude_session and in_session[a]) or rows[a] < 0:
            score[a] = -np.inf
        # the popularity tie-break, in float32 as numpy computes it
        neg[a] = -(score[a] + np.float64(values[a, POPULARITY] * np.float32(1e-6)))
    sel = top_stable(neg, k)
    for t in range(len(sel)):
        sc = np.float32(score[sel[t]])
        if np.isfinite(sc):
            out_rows[t] = rows[sel[t]]
            out_scores[t] = sc


def _make_flat_top_k_kernel(parallel: bool):
    loop = prange if parallel else range

    def kernel(flat, expo, w, exclude_last, exclude_session, k):
        # (record fields read outside the parallel loop, as in the signals kernel)
        offsets, rows, values, in_session, last = flat
        n = len(offsets) - 1
        out_rows = np.full((n, k), -1, np.int64)
        out_scores = np.full((n, k), -np.inf, np.float32)
        for i in loop(n):
            lo, hi = offsets[i], offsets[i + 1]
            if hi > lo:
                _top_k_one(rows[lo:hi], values[lo:hi], expo[lo:hi], in_session[lo:hi], last[i],
                           w, exclude_last, exclude_session, k, out_rows[i], out_scores[i])
        return out_rows, out_scores

    kernel.__name__ = kernel.__qualname__ = "flat_top_k_" + ("par" if parallel else "ser")
    return njit(cache=True, parallel=parallel, nogil=True)(kernel)


_flat_top_k_par = _make_flat_top_k_kernel(True)
_flat_top_k_ser = _make_flat_top_k_kernel(False)


@njit(cache=True, nogil=True)
def _rank_one(rows, values, expo, last, w, exclude_last, target):
    """The rank (1 = first) of row `target` among one query's candidates by `_blend_one`'s
    score plus the popularity tie-break, ties to the lower row; 0 when the target is not a
    candidate or scores -inf (the last item under exclude_last)."""
    if target < 0:
        return 0
    pos = -1
    for a in range(len(rows)):
        if rows[a] == target:
            pos = a
            break
    if pos < 0:
        return 0
    score = _blend_one(values, expo, w)
    for a in range(len(rows)):
        # the popularity tie-break in float32, as numpy computes it
        score[a] += np.float64(values[a, POPULARITY] * np.float32(1e-6))
        if (exclude_last and last >= 0 and rows[a] == last) or rows[a] < 0:
            score[a] = -np.inf
    ts = score[pos]
    if not np.isfinite(ts):
        return 0
    rank = 1
    for a in range(len(rows)):
        if score[a] > ts or (score[a] == ts and rows[a] < target):
            rank += 1
    return rank


def _make_flat_ranks_kernel(parallel: bool):
    loop = prange if parallel else range

    def kernel(flat, expo, w, exclude_last, targets):
        offsets, rows, values, _, last = flat
        n = len(offsets) - 1
        out = np.zeros(n, np.int64)
        for i in loop(n):
            lo, hi = offsets[i], offsets[i + 1]
            if hi > lo:
                out[i] = _rank_one(rows[lo:hi], values[lo:hi], expo[lo:hi], last[i], w,
                                   exclude_last, targets[i])
        return out

    kernel.__name__ = kernel.__qualname__ = "flat_ranks_" + ("par" if parallel else "ser")
    return njit(cache=True, parallel=parallel, nogil=True)(kernel)


_flat_ranks_par = _make_flat_ranks_kernel(True)
_flat_ranks_ser = _make_flat_ranks_kernel(False)


def flat_ranks(flat: FlatSignals, expo: np.ndarray, weights: np.ndarray, *,
               exclude_last: bool, targets: np.ndarray) -> np.ndarray:
    """int64 [n]: each query's target's rank by the blend (`_rank_one`; 0 = not ranked).

    Parameters
    ----------
    flat : FlatSignals
    expo : float64 [T, 2]
        The exp-normalised directional and cosine signals (numpy's exp).
    weights : float64 [N_SIGNALS]
    exclude_last : bool
        The session's last item is never ranked.
    targets : int64 [n]
        The row to rank per query (-1 = none: rank 0).
    """
    n = len(flat.offsets) - 1
    if len(targets) != n or len(expo) != len(flat.rows):
        raise ValueError(f"{n} queries need {n} targets (got {len(targets)}) and "
                         f"{len(flat.rows)} expo rows (got {len(expo)})")
    kernel = _flat_ranks_par if n >= PARALLEL_FROM else _flat_ranks_ser
    return kernel(flat, np.ascontiguousarray(expo, np.float64),
                  np.ascontiguousarray(weights, np.float64), bool(exclude_last),
                  np.ascontiguousarray(targets, np.int64))


def flat_top_k(flat: FlatSignals, expo: np.ndarray, weights: np.ndarray, *,
               exclude_last: bool, exclude_session: bool, k: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """`blend_top_k`'s kernel over the end-to-end candidates of `flat_signals`.

    Parameters
    ----------
    flat : FlatSignals
    expo : float64 [T, 2]
        The exp-normalised directional and cosine signals (numpy's exp).
    weights : float64 [N_SIGNALS]
    exclude_last, exclude_session : bool
        Never recommend the session's last item / any of its items.
    k : int >= 1

    Returns
    -------
    (rows int64 [n, k], scores float32 [n, k]), -1 / -inf padded.
    """
    n = len(flat.offsets) - 1
    kernel = _flat_top_k_par if n >= PARALLEL_FROM else _flat_top_k_ser
    return kernel(flat, expo, weights, bool(exclude_last), bool(exclude_session), int(k))
