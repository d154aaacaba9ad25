"""Session-kNN scores of many prefixes at once: `recembed.sknn.score_session` as numba kernels
(parallel over prefixes), for the serving blend. recembed.sknn itself stays numpy only.

The kernels follow `recembed.sknn._neighbour_entries` step by step, so that every float64 sum
runs in the same order: the query's distinct items and their prefix weights, the candidate
sessions (a merge of the items' session lists), the similarity (times the recency decay), the
top neighbours, and the per-item scores. They read the index through the public arrays and
properties of `SessionIndex` only.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from recembed.sknn import MATCH_WEIGHTINGS, PREFIX_WEIGHTINGS, SessionIndex, SknnParams
from recembed.topk import PARALLEL_FROM, ScoreBuffer, heap_replace_min, offsets, top_stable

PREFIX_CODE = {name: i for i, name in enumerate(PREFIX_WEIGHTINGS)}  # the kernels' kind codes
MATCH_CODE = {name: i for i, name in enumerate(MATCH_WEIGHTINGS)}


class IndexArrays(NamedTuple):
    """The `SessionIndex` arrays the kernels read (numba takes a NamedTuple as a tuple)."""

    item_indptr: np.ndarray  # int64 [n_items + 1]: item -> sessions, most recent first
    item_sessions: np.ndarray  # int32
    posting_size: np.ndarray  # int64, |session| of each entry of item_sessions
    session_indptr: np.ndarray  # int64 [S + 1]: session -> distinct items
    session_items: np.ndarray  # int32
    session_lastpos: np.ndarray  # int32, each item's last 1-based position in the session
    session_end: np.ndarray  # float64 [S], seconds
    idf: np.ndarray  # float64 [n_items]
    pos_decay: np.ndarray  # float64, exp(-d / lambda3) for d = 0..max_pos (STAN's w3)


class KernelParams(NamedTuple):
    """`SknnParams` as numbers (weighting kinds as their codes in PREFIX_CODE / MATCH_CODE)."""

    k: int
    sample_size: int
    cosine: bool
    prefix_weighting: int
    lambda1: float
    match_weighting: int
    lambda_match: float
    lambda2: float
    lambda3: float
    idf_weight: float
    top: int


class Scratch:
    """Per-thread item stamps and score accumulators of `score_sessions`, allocated once and
    reused (stamps mark what a query wrote, so nothing is cleared); a lock serialises callers.

    Parameters
    ----------
    n_items : int >= 0
        The index's catalogue size (`SessionIndex.n_items`).
    """

    def __init__(self, n_items: int):
        self.n_items = n_items
        self.lock = threading.Lock()
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._pos_decay: dict[tuple[float, int], np.ndarray] = {}

    def pos_decay(self, lambda3: float, max_pos: int) -> np.ndarray:
        """exp(-d / lambda3) for d = 0..max_pos (STAN's position weight), computed once per
        lambda3 by the kernel's own exp: the same float64 as computing it per entry, at a
        fraction of the cost (benchmarks/RESULTS.md, "serving throughput on the
        10,000,000-event synthetic catalogue").

        Parameters
        ----------
        lambda3 : float >= 0
            Positions; 0 = off (a one-entry table that is never read).
        max_pos : int >= 0
            The largest position in the index (`SessionIndex.max_pos`).
        """
        key = (float(lambda3), int(max_pos))
        if key not in self._pos_decay:
            self._pos_decay[key] = _pos_decay_table(max_pos, float(lambda3)) if lambda3 > 0 \
                else np.zeros(1)
        return self._pos_decay[key]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item_stamp int64 [threads, n_items], item_score float64 [threads, n_items],
        stamp int64 [threads]), reallocated when numba's thread count changes."""
        t = numba.get_num_threads()
        if self._arrays is None or len(self._arrays[2]) != t:
            self._arrays = (np.zeros((t, self.n_items), np.int64), np.zeros((t, self.n_items)),
                            np.zeros(t, np.int64))
        return self._arrays


def score_sessions(index: SessionIndex, prefixes: list[np.ndarray], params: SknnParams,
                   top: int, scratch: Scratch | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The `top` best items of `recembed.sknn.score_session` for many prefixes at once (a numba
    kernel, parallel over prefixes; what `recembed.blend.BlendModel.signals` uses).

    Parameters
    ----------
    index : SessionIndex
    prefixes : list of int arrays
        Each prefix as `score_session` takes it (item codes, most recent last).
    params : SknnParams
    top : int >= 1
        Items kept per prefix: its `top` best (ties: the lower item code).
    scratch : Scratch or None
        Reusable work arrays for `index` (a model keeps one); None = fresh ones.

    Returns
    -------
    counts : int64 [n]
        Items kept for prefix i.
    items : int64 [n, top]
        Prefix i's items in ``items[i, :counts[i]]``, ascending; -1 padded.
    scores : float64 [n, top]
        Their scores: `score_session`'s, summed in the same order (equal up to the last bits
        of exp).
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    p_indptr = offsets(prefixes)
    flat = np.concatenate([np.asarray(p, np.int64) for p in prefixes]) if len(prefixes) else \
        np.zeros(0, np.int64)
    scratch = scratch or Scratch(index.n_items)
    kernel = _sknn_par if len(prefixes) >= PARALLEL_FROM else _sknn_ser
    with scratch.lock:
        item_stamp, item_score, stamp = scratch.arrays()
        return kernel(p_indptr, flat, index_arrays(index, scratch, params),
                      kernel_params(params, top), item_stamp, item_score, stamp)


def index_arrays(index: SessionIndex, scratch: Scratch, params: SknnParams) -> IndexArrays:
    """The kernels' view of `index` (no copies), with the position decay table of `params`."""
    return IndexArrays(
        item_indptr=index.item_indptr, item_sessions=index.item_sessions,
        posting_size=index.posting_size, session_indptr=index.session_indptr,
        session_items=index.session_items, session_lastpos=index.session_lastpos,
        session_end=index.session_end, idf=index.idf,
        pos_decay=scratch.pos_decay(params.lambda3, index.max_pos))


def kernel_params(params: SknnParams, top: int) -> KernelParams:
    """`params` as the kernels take them, keeping each prefix's `top` best items."""
    return KernelParams(
        k=int(params.k), sample_size=int(params.sample_size),
        cosine=params.similarity == "cosine",
        prefix_weighting=PREFIX_CODE[params.prefix_weighting], lambda1=float(params.lambda1),
        match_weighting=MATCH_CODE[params.match_weighting],
        lambda_match=float(params.lambda_match), lambda2=float(params.lambda2),
        lambda3=float(params.lambda3), idf_weight=float(params.idf_weight), top=int(top))


# ---------------------------------------------------------------- the steps of one prefix


@njit(cache=True, nogil=True)
def _prefix_weight(pos, length, kind, lambda1):
    """`recembed.sknn._prefix_weight` of one 1-based position `pos` of `length`."""
    if kind == 0:
        return 1.0
    if kind == 1:
        return pos / length
    if kind == 2:
        return (pos / length) ** 2
    if kind == 3:
        return 1.0 / np.log10(length - pos + 1.7)
    return np.exp((pos - length) / lambda1)


@njit(cache=True, nogil=True)
def _match_weight(step, kind, lambda_match):
    """`recembed.sknn._match_weight` of one step back (1 = the last item)."""
    if kind == 0:
        return 1.0
    if kind == 1:
        return 1.0 / step
    if kind == 2:
        return 1.0 / step ** 2
    if kind == 3:
        return 1.0 / np.log10(step + 1.7)
    return np.exp(-(step - 1.0) / lambda_match)


@njit(cache=True, nogil=True)
def _distinct_recent_first(prefix):
    """(distinct items, steps back - 1 of each one's last occurrence), most recent first."""
    length = len(prefix)
    items = np.empty(length, np.int64)
    first_rev = np.empty(length, np.int64)
    n_distinct = 0
    for j in range(length):
        x = prefix[length - 1 - j]
        seen = False
        for t in range(n_distinct):
            if items[t] == x:
                seen = True
                break
        if not seen:
            items[n_distinct] = x
            first_rev[n_distinct] = j
            n_distinct += 1
    return items[:n_distinct], first_rev[:n_distinct]


@njit(cache=True, nogil=True)
def _query_items(prefix, n_items, p):
    """The prefix items that can find neighbours, most recent first: (items, steps back
    (1 = last), prefix weights), and over every distinct item, valid or not, their count and
    the L2 norm of their prefix weights (the similarity's denominators)."""
    length = len(prefix)
    distinct, first_rev = _distinct_recent_first(prefix)
    n_distinct = len(distinct)
    weight = np.empty(n_distinct)
    for t in range(n_distinct):
        weight[t] = _prefix_weight(float(length - first_rev[t]), length, p.prefix_weighting,
                                   p.lambda1)
    sq = 0.0
    for t in range(n_distinct):
        sq += weight[t] * weight[t]
    weight_norm = np.sqrt(sq)
    items = np.empty(n_distinct, np.int64)
    steps = np.empty(n_distinct, np.int64)
    weights = np.empty(n_distinct)
    n_valid = 0
    for t in range(n_distinct):
        if distinct[t] >= 0 and distinct[t] < n_items:
            items[n_valid] = distinct[t]
            steps[n_valid] = first_rev[t] + 1
            weights[n_valid] = weight[t]
            n_valid += 1
    return items[:n_valid], steps[:n_valid], weights[:n_valid], n_distinct, weight_norm


@njit(cache=True, nogil=True)
def _candidate_sessions(ix, items, weights, sample_size):
    """The candidate sessions (at most `sample_size`, the most recent; 0 = all): a merge of
    the items' session lists (each cut to `sample_size`; ascending session = most recent
    first). Returns (sessions, overlap = the summed prefix weights of the items each shares,
    owner = the index in `items` of the most recent item it shares, |session|)."""
    n_lists = len(items)
    head = np.empty(n_lists, np.int64)
    end = np.empty(n_lists, np.int64)
    total = 0
    for j in range(n_lists):
        lo = ix.item_indptr[items[j]]
        n = ix.item_indptr[items[j] + 1] - lo
        if sample_size > 0 and n > sample_size:
            n = sample_size
        head[j] = lo
        end[j] = lo + n
        total += n
    cap = total if sample_size <= 0 else min(total, sample_size)
    sessions = np.empty(cap, np.int64)
    overlap = np.empty(cap)
    owner = np.empty(cap, np.int64)
    size = np.empty(cap, np.int64)
    n_cand = 0
    if n_lists == 1:  # one list: the merge is a copy (a large share of queries)
        lo = head[0]
        for c in range(cap):
            sessions[c] = ix.item_sessions[lo + c]
            overlap[c] = 0.0 + weights[0]
            owner[c] = 0
            size[c] = ix.posting_size[lo + c]
        n_cand = cap
    big = np.iinfo(np.int64).max
    while n_cand < cap:
        v = big
        for j in range(n_lists):
            if head[j] < end[j]:
                s = ix.item_sessions[head[j]]
                if s < v:
                    v = s
        if v == big:
            break
        acc = 0.0
        own = -1
        for j in range(n_lists):
            if head[j] < end[j] and ix.item_sessions[head[j]] == v:
                acc += weights[j]
                if own < 0:
                    own = j
                    # |session| beside the posting: read in merge order, not by random access
                    # to a per-session array (a cache miss per candidate)
                    size[n_cand] = ix.posting_size[head[j]]
                head[j] += 1
        sessions[n_cand] = v
        overlap[n_cand] = acc
        owner[n_cand] = own
        n_cand += 1
    return sessions[:n_cand], overlap[:n_cand], owner[:n_cand], size[:n_cand]


@njit(cache=True, nogil=True)
def _similarity(ix, sessions, overlap, size, n_distinct, weight_norm, p):
    """Similarity of the prefix to each candidate (dot or cosine), times the neighbour
    recency decay when lambda2 > 0 (`_recency_decay`)."""
    n_cand = len(sessions)
    sim = np.empty(n_cand)
    for c in range(n_cand):
        if not p.cosine:
            sim[c] = overlap[c] / n_distinct
        else:
            sim[c] = overlap[c] / (weight_norm * np.sqrt(float(size[c])))
    if p.lambda2 > 0:
        _recency_decay(ix.session_end, sessions, sim, p.k, p.lambda2)
    return sim


@njit(cache=True, nogil=True)
def _recency_decay(session_end, sessions, sim, k, lambda2):
    """sim *= exp((end - end of the most recent candidate) / lambda2), in place; zero for
    candidates that cannot be among the `k` most similar."""
    n_cand = len(sessions)
    e0 = session_end[sessions[0]]
    n_exact = n_cand if n_cand <= k else k
    for c in range(n_exact):
        sim[c] = sim[c] * np.exp((session_end[sessions[c]] - e0) / lambda2)
    if n_cand > k:
        # the decay only falls along the candidates (most recent first), so a candidate
        # whose similarity times the last decay computed is below the k-th best of the
        # first k cannot be a neighbour: skip its exp (the costliest part of STAN)
        heap = np.sort(sim[:k])  # a sorted array is a valid min-heap: heap[0] = k-th best
        f_last = np.exp((session_end[sessions[k - 1]] - e0) / lambda2)
        for c in range(k, n_cand):
            if sim[c] * f_last < heap[0]:
                sim[c] = 0.0
                continue
            f_last = np.exp((session_end[sessions[c]] - e0) / lambda2)
            sim[c] = sim[c] * f_last
            if sim[c] > heap[0]:
                heap_replace_min(heap, sim[c])


@njit(cache=True, nogil=True)
def _top_neighbours(sim, k):
    """Indexes of the (at most) `k` most similar candidates with sim > 0, ties to the more
    recent (lower) session."""
    n_cand = len(sim)
    keep = np.empty(n_cand, np.int64)
    n_keep = 0
    for c in range(n_cand):
        if sim[c] > 0:
            keep[n_keep] = c
            n_keep += 1
    keep = keep[:n_keep]
    if n_keep > k:
        neg = np.empty(n_keep)
        for c in range(n_keep):
            neg[c] = -sim[keep[c]]
        keep = keep[top_stable(neg, k)]
    return keep


@njit(cache=True, nogil=True)
def _neighbour_scores(ix, p, neighbours, sessions, owner, sim, items, steps, item_stamp,
                      item_score, stamp):
    """(items ascending, scores) from the entries of every neighbour, summed per item in the
    reference's order; the `p.top` best (ties: the lower item) when there are more."""
    stamp_v = stamp[0] + 1
    stamp[0] = stamp_v
    n_entries = 0
    for c in neighbours:
        n_entries += ix.session_indptr[sessions[c] + 1] - ix.session_indptr[sessions[c]]
    out_items = np.empty(n_entries, np.int64)
    m = 0
    for c in neighbours:
        star = owner[c]  # the most recent prefix item the neighbour shares
        weight = sim[c] * _match_weight(float(steps[star]), p.match_weighting, p.lambda_match)
        lo, hi = ix.session_indptr[sessions[c]], ix.session_indptr[sessions[c] + 1]
        pos_star = 0.0
        if p.lambda3 > 0:
            for e in range(lo, hi):
                if ix.session_items[e] == items[star]:
                    pos_star = float(ix.session_lastpos[e])
        for e in range(lo, hi):
            it = ix.session_items[e]
            w = weight
            if p.lambda3 > 0:  # exp(-|pos - pos_star| / lambda3), tabulated
                w = w * ix.pos_decay[int(np.abs(ix.session_lastpos[e] - pos_star))]
            if p.idf_weight > 0:
                w = w * (1.0 + p.idf_weight * ix.idf[it])
            if item_stamp[it] != stamp_v:
                item_stamp[it] = stamp_v
                item_score[it] = 0.0
                out_items[m] = it
                m += 1
            item_score[it] += w
    scored = np.sort(out_items[:m])
    scores = np.empty(m)
    for t in range(m):
        scores[t] = item_score[scored[t]]
    if p.top > 0 and m > p.top:  # the `top` best, ties to the lower item; then ascending again
        sel = np.sort(top_stable(-scores, p.top))
        scored, scores = scored[sel], scores[sel]
    return scored, scores


@njit(cache=True, nogil=True)
def _one_session(prefix, ix, p, item_stamp, item_score, stamp):
    """(items ascending, scores) of one prefix: `recembed.sknn.score_session`, cut to its
    `p.top` best."""
    empty_i = np.zeros(0, np.int64)
    empty_f = np.zeros(0)
    if len(prefix) == 0:
        return empty_i, empty_f
    items, steps, weights, n_distinct, weight_norm = _query_items(
        prefix, len(ix.item_indptr) - 1, p)
    sessions, overlap, owner, size = _candidate_sessions(ix, items, weights, p.sample_size)
    if len(sessions) == 0:
        return empty_i, empty_f
    sim = _similarity(ix, sessions, overlap, size, n_distinct, weight_norm, p)
    neighbours = _top_neighbours(sim, p.k)
    return _neighbour_scores(ix, p, neighbours, sessions, owner, sim, items, steps, item_stamp,
                             item_score, stamp)


@njit(cache=True, nogil=True)
def _pos_decay_table(max_pos, lambda3):
    out = np.empty(max_pos + 1)
    for d in range(max_pos + 1):
        out[d] = np.exp(-np.float64(d) / lambda3)
    return out


def _make_sknn_kernel(parallel: bool):
    loop = prange if parallel else range

    def kernel(p_indptr, flat, ix, p, item_stamp, item_score, stamp):
        n = len(p_indptr) - 1
        n_chunks = max(min(n, len(stamp)), 1)
        bounds = np.linspace(0, n, n_chunks + 1).astype(np.int64)
        counts = np.zeros(n, np.int64)
        out_items = np.full((n, p.top), -1, np.int64)
        out_scores = np.zeros((n, p.top))
        for ch in loop(n_chunks):  # one scratch row per chunk; stamps make it reusable
            for i in range(bounds[ch], bounds[ch + 1]):
                it, sc = _one_session(flat[p_indptr[i]:p_indptr[i + 1]], ix, p, item_stamp[ch],
                                      item_score[ch], stamp[ch:ch + 1])
                counts[i] = len(it)
                out_items[i, :len(it)] = it
                out_scores[i, :len(it)] = sc
        return counts, out_items, out_scores

    kernel.__name__ = kernel.__qualname__ = "sknn_" + ("par" if parallel else "ser")
    return njit(cache=True, parallel=parallel, nogil=True)(kernel)


_sknn_par = _make_sknn_kernel(True)
_sknn_ser = _make_sknn_kernel(False)


# ---------------------------------------------------------------- dense scores (evaluation)


def dense_scores(index: SessionIndex, params: SknnParams, prefixes: list[np.ndarray],
                 n_items: int | None = None, *, block: int = 128,
                 scratch: Scratch | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """`recembed.sknn.score_queries` of many prefixes through the kernels: float32
    [len(prefixes), n_items], each row the prefix's `score_session` scores divided by their
    maximum, items it does not score ``TIE * popularity * (smallest score in the row)``.

    The kernels keep every scored item (their `top` is the most distinct items `params.k`
    neighbours can hold), so the rows hold the same items; the float64 scores equal
    `score_session`'s up to the last bits of exp, below float32's resolution.

    Parameters
    ----------
    index : SessionIndex
    params : SknnParams
    prefixes : list of int arrays
        Item codes, most recent last (codes outside the index find no neighbours).
    n_items : int or None
        Columns (default `index.n_items`); items at or past it are dropped.
    block : int >= 1
        Prefixes per kernel call (bounds its [block, top] work arrays).
    scratch : Scratch or None
        Reusable work arrays for `index`.
    out : float32 [len(prefixes), n_items] or None
        Where to write the rows (every entry is written); None = a new array.
    """
    from recembed.sknn import TIE

    n_items = index.n_items if n_items is None else int(n_items)
    pop = np.zeros(n_items, np.float64)
    df = index.session_count[:n_items]
    pop[:len(df)] = df / max(df.max(), 1) if len(df) else 0
    sizes = np.sort(np.diff(index.session_indptr))[::-1]
    top = max(1, min(index.n_items, int(sizes[:max(int(params.k), 1)].sum())))
    scratch = scratch or Scratch(index.n_items)
    if out is None:
        out = np.empty((len(prefixes), n_items), np.float32)
    elif out.shape != (len(prefixes), n_items) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 [{len(prefixes)}, {n_items}], got {out.dtype} "
                         f"{out.shape}")
    for lo in range(0, len(prefixes), block):
        counts, items, scores = score_sessions(index, prefixes[lo:lo + block], params, top,
                                               scratch)
        for r in range(len(counts)):
            it, sc = items[r, :counts[r]], scores[r, :counts[r]]
            keep = it < n_items
            it, sc = it[keep], sc[keep]
            if len(sc) == 0:
                out[lo + r] = TIE * pop
                continue
            sc = sc / sc.max()
            out[lo + r] = (TIE * sc.min()) * pop
            out[lo + r, it] = sc
    return out


def dense_scorer(index: SessionIndex, params: SknnParams, n_items: int | None = None):
    """`dense_scores` as an evaluation scorer, ``scorer(queries, idx) -> float32`` (the
    kernel twin of `recembed.sknn.sknn_scorer`); the rows it returns are overwritten by the
    next call (`recembed.topk.ScoreBuffer`)."""
    scratch = Scratch(index.n_items)
    buf = ScoreBuffer(index.n_items if n_items is None else int(n_items))

    def score(q, idx: np.ndarray) -> np.ndarray:
        prefixes = [q.items[q.start[i]:q.start[i] + q.length[i]] for i in np.asarray(idx)]
        return dense_scores(index, params, prefixes, n_items, scratch=scratch,
                            out=buf.rows(len(prefixes)))

    return score
