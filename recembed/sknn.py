"""Session-kNN baselines: V-SKNN, STAN and VSTAN over an index of training sessions (numpy only).

All three share one scheme. For a query prefix s (items, most recent last):

1. Candidates: the training sessions that contain any prefix item; when there are more than
   `sample_size`, the `sample_size` most recent (by session end time) are kept.
2. Similarity of s to a candidate n, over the distinct prefix items u shared with n, each
   weighted by its last position in s (``w1``, `prefix_weighting`):
   - ``dot``:    sum_u w1(u) / |distinct(s)|                         (V-SKNN's ``vec``)
   - ``cosine``: sum_u w1(u) / (sqrt(sum_{u in s} w1(u)^2) * sqrt(|distinct(n)|))  (STAN)
   times ``exp(-(t_ref - t_n) / lambda2)`` (neighbour recency, STAN's w2) when lambda2 > 0.
3. The `k` most similar candidates are the neighbours (ties: the more recent session first).
4. Every distinct item j of neighbour n gets
   ``sim(s, n) * w_match(step_n) * exp(-|p(j, n) - p(i*, n)| / lambda3) * (1 + idf_weight *
   idf(j))``, summed over neighbours. ``i*`` is the most recent prefix item that n contains,
   ``step_n`` its distance from the end of s (1 = the last item: `match_weighting`, V-SKNN's
   ``weighting_score`` and VSTAN's lambda_ipw), ``p(., n)`` the last 1-based position of an item
   in n (STAN's w3), ``idf(j) = ln(S / sessions containing j)``.

The reference time of the recency decay is the most recent candidate's end: a common factor of
every neighbour's weight, it changes no ranking, so queries need no timestamp (holdout queries
are later than every training session) and the decay never underflows on long logs.

Defaults (`METHODS`) are the settings the authors recommend, not tuned to any data set:

- ``vsknn`` (Ludewig & Jannach 2018, session-rec ``VMContextKNN`` defaults): k 100, sample 1000,
  dot similarity, linear prefix weights ``i / L`` (session-rec's ``div``), match weight
  ``1 / step`` (``div_score``), no IDF.
- ``stan`` (Garg et al. 2019; session-rec ``STAN`` defaults): k 100, sample 5000, cosine,
  ``w1 = exp((i - L) / 1.02)``, lambda2 5 days, lambda3 2.05, no match weight.
- ``vstan`` (Ludewig et al. 2021; session-rec ``VSKNN_STAN`` defaults): STAN's settings plus the
  match weight ``exp(-(step - 1) / 1.02)`` (lambda_ipw) and IDF weight 5 (lambda_idf).

One deliberate difference from session-rec: STAN's ``p(i*, n)`` is the position in n of the
most recent prefix item n contains (the paper's definition), where session-rec takes the last
position in n of any prefix item.

This module imports numpy only: the serving process loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal

import numpy as np

TIE = 1e-6
DAY = 86_400.0
PREFIX_WEIGHTINGS = ("same", "linear", "quadratic", "log", "exp")
MATCH_WEIGHTINGS = ("same", "div", "quadratic", "log", "exp")
SIMILARITIES = ("dot", "cosine")


@dataclass(frozen=True)
class SknnParams:
    """Parameters of one session-kNN method (see the module docstring for the formulas).

    Parameters
    ----------
    k : int
        Neighbours kept, >= 1.
    sample_size : int
        Most recent candidate sessions considered, >= 1; 0 = every candidate.
    similarity : {"dot", "cosine"}
        Prefix-to-session similarity.
    prefix_weighting : {"same", "linear", "quadratic", "log", "exp"}
        Weight of a prefix item at 1-based position i of L: 1, i/L, (i/L)^2,
        1/log10(L - i + 1.7), exp((i - L) / lambda1).
    lambda1 : float
        Prefix position decay of ``exp`` weighting, positions, > 0 (STAN's lambda1).
    match_weighting : {"same", "div", "quadratic", "log", "exp"}
        Weight of a neighbour by the distance `step` (1 = last) of the most recent prefix item
        it contains: 1, 1/step, 1/step^2, 1/log10(step + 1.7), exp(-(step - 1) / lambda_match).
    lambda_match : float
        Decay of ``exp`` match weighting, positions, > 0 (VSTAN's lambda_ipw).
    lambda2 : float
        Neighbour session recency decay, seconds, >= 0; 0 = off (STAN's lambda2).
    lambda3 : float
        Decay by the distance of a neighbour's item from the shared item, positions, >= 0;
        0 = off (STAN's lambda3).
    idf_weight : float
        Item score factor ``1 + idf_weight * idf``, >= 0; 0 = off (VSTAN's lambda_idf).
    """

    k: int = 100
    sample_size: int = 1000
    similarity: Literal["dot", "cosine"] = "dot"
    prefix_weighting: Literal["same", "linear", "quadratic", "log", "exp"] = "linear"
    lambda1: float = 1.02
    match_weighting: Literal["same", "div", "quadratic", "log", "exp"] = "div"
    lambda_match: float = 1.02
    lambda2: float = 0.0
    lambda3: float = 0.0
    idf_weight: float = 0.0

    def __post_init__(self) -> None:
        if int(self.k) != self.k or self.k < 1:
            raise ValueError(f"sknn k must be an integer >= 1, got {self.k!r}")
        if int(self.sample_size) != self.sample_size or self.sample_size < 0:
            raise ValueError(f"sknn sample_size must be an integer >= 0 (0 = all), got "
                             f"{self.sample_size!r}")
        for name, allowed in (("similarity", SIMILARITIES),
                              ("prefix_weighting", PREFIX_WEIGHTINGS),
                              ("match_weighting", MATCH_WEIGHTINGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"sknn {name} must be one of {allowed}, got "
                                 f"{getattr(self, name)!r}")
        for name in ("lambda1", "lambda_match"):
            if not getattr(self, name) > 0:
                raise ValueError(f"sknn {name} must be > 0, got {getattr(self, name)!r}")
        for name in ("lambda2", "lambda3", "idf_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"sknn {name} must be >= 0 (0 = off), got "
                                 f"{getattr(self, name)!r}")


METHODS: dict[str, SknnParams] = {
    "vsknn": SknnParams(k=100, sample_size=1000, similarity="dot", prefix_weighting="linear",
                        match_weighting="div"),
    "stan": SknnParams(k=100, sample_size=5000, similarity="cosine", prefix_weighting="exp",
                       lambda1=1.02, match_weighting="same", lambda2=5 * DAY, lambda3=2.05),
    "vstan": SknnParams(k=100, sample_size=5000, similarity="cosine", prefix_weighting="exp",
                        lambda1=1.02, match_weighting="exp", lambda_match=1.02,
                        lambda2=5 * DAY, lambda3=2.05, idf_weight=5.0),
}


def method_params(method: str, **overrides) -> SknnParams:
    """The default parameters of `method` ("vsknn", "stan", "vstan") with `overrides` applied."""
    if method not in METHODS:
        raise ValueError(f"unknown session-kNN method {method!r}; methods: {sorted(METHODS)}")
    known = {f.name for f in fields(SknnParams)}
    bad = set(overrides) - known
    if bad:
        raise ValueError(f"unknown sknn parameter(s) {sorted(bad)}; parameters: {sorted(known)}")
    return replace(METHODS[method], **overrides)


def session_end_times(session: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The last timestamp of each session, one per session in order of first appearance
    (events grouped by session), as `SessionIndex.build` takes them."""
    session = np.asarray(session)
    starts = _group_starts(session)
    return np.maximum.reduceat(np.asarray(ts, np.float64), starts) if len(starts) else \
        np.zeros(0)


@dataclass
class SessionIndex:
    """Training sessions for neighbour search. Sessions are numbered by recency: index 0 is the
    session that ended last.

    Attributes
    ----------
    session_indptr, session_items, session_lastpos
        CSR session -> distinct items, each with its last 1-based position in the session.
    item_indptr, item_sessions
        CSR item -> sessions containing it, most recent first.
    session_end : float64 [S]
        End time of each session, seconds, non-increasing.
    session_ids : int64 [S]
        The caller's id of each session.
    """

    session_indptr: np.ndarray
    session_items: np.ndarray
    session_lastpos: np.ndarray
    item_indptr: np.ndarray
    item_sessions: np.ndarray
    session_end: np.ndarray
    session_ids: np.ndarray

    @classmethod
    def build(cls, session: np.ndarray, item: np.ndarray, session_end: np.ndarray,
              n_items: int) -> SessionIndex:
        """Index from training events grouped by session, in session order.

        Parameters
        ----------
        session : int array [E]
            Session id of each event; each session's events are contiguous.
        item : int array [E]
            Item code of each event, in [0, n_items), in order within the session.
        session_end : float array [S]
            End time (seconds) of each session, in order of first appearance in `session`
            (see `session_end_times`).
        n_items : int
            Catalogue size.
        """
        session = np.asarray(session)
        item = np.asarray(item).astype(np.int64)
        session_end = np.asarray(session_end, np.float64)
        if len(session) != len(item):
            raise ValueError(f"session ({len(session)}) and item ({len(item)}) arrays differ "
                             "in length")
        if len(item) and (item.min() < 0 or item.max() >= n_items):
            bad = int(np.flatnonzero((item < 0) | (item >= n_items))[0])
            raise ValueError(f"item code {item[bad]} at event {bad} is outside [0, {n_items})")
        starts = _group_starts(session)
        if len(np.unique(session[starts])) != len(starts):
            raise ValueError("events are not grouped by session: sort them by session, then "
                             "by position")
        n_sess = len(starts)
        if len(session_end) != n_sess:
            raise ValueError(f"session_end has {len(session_end)} values for {n_sess} sessions")
        # recency numbering: 0 = ended last; ties keep the order of appearance
        by_recency = np.argsort(-session_end, kind="stable")
        rank = np.empty(n_sess, np.int64)
        rank[by_recency] = np.arange(n_sess)
        lens = np.diff(np.r_[starts, len(session)])
        sidx = np.repeat(np.arange(n_sess), lens)
        pos = np.arange(len(session)) - np.repeat(starts, lens) + 1
        r = rank[sidx]
        # distinct (session, item) pairs with the last position: sort, keep each group's last
        order = np.lexsort((pos, item, r))
        r, it, ps = r[order], item[order], pos[order]
        last = np.r_[(r[1:] != r[:-1]) | (it[1:] != it[:-1]), True] if len(r) else \
            np.zeros(0, bool)
        r, it, ps = r[last], it[last], ps[last]
        order = np.lexsort((ps, r))  # within a session, by last position
        r, it, ps = r[order], it[order], ps[order]
        s_indptr = np.r_[0, np.cumsum(np.bincount(r, minlength=n_sess))]
        order = np.lexsort((r, it))  # item -> sessions, most recent first
        i_indptr = np.r_[0, np.cumsum(np.bincount(it, minlength=n_items))]
        return cls(
            session_indptr=s_indptr.astype(np.int64), session_items=it.astype(np.int32),
            session_lastpos=ps.astype(np.int32), item_indptr=i_indptr.astype(np.int64),
            item_sessions=r[order].astype(np.int32), session_end=session_end[by_recency],
            session_ids=session[starts][by_recency].astype(np.int64),
        )

    def __post_init__(self) -> None:
        # per-query lookups: computed once here, not stored (derived from the arrays)
        df = np.diff(self.item_indptr)
        self._size = np.diff(self.session_indptr)
        self._idf = np.log(max(len(self.session_end), 1) / np.maximum(df, 1)) * (df > 0)
        self._posting_size = self._size[self.item_sessions]
        self._max_pos = int(self.session_lastpos.max(initial=0))

    @property
    def n_sessions(self) -> int:
        return len(self.session_end)

    @property
    def n_items(self) -> int:
        return len(self.item_indptr) - 1

    @property
    def session_count(self) -> np.ndarray:
        """Training sessions containing each item (its document frequency), int64 [n_items]."""
        return np.diff(self.item_indptr)

    @property
    def idf(self) -> np.ndarray:
        """ln(S / sessions containing the item); 0 for items in no session."""
        return self._idf

    @property
    def session_size(self) -> np.ndarray:
        """Distinct items of each session, int64 [S]."""
        return self._size

    @property
    def posting_size(self) -> np.ndarray:
        """|session| of every entry of `item_sessions`, int64 (read beside the postings while
        the serving kernel merges them, `recembed.sknn_kernels`)."""
        return self._posting_size

    @property
    def max_pos(self) -> int:
        """The largest 1-based position in `session_lastpos` (0 for an empty index)."""
        return self._max_pos

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (for `np.save` per key or `np.savez`; no pickle needed to load)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_arrays(cls, d: dict[str, np.ndarray]) -> SessionIndex:
        """The index from `to_arrays` output (e.g. an `np.load(..., allow_pickle=False)`)."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in d]
        if missing:
            raise ValueError(f"session index arrays missing {missing}")
        return cls(**{n: np.asarray(d[n]) for n in names})


def score_session(index: SessionIndex, prefix: np.ndarray,
                  params: SknnParams) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the next item after one prefix.

    Parameters
    ----------
    index : SessionIndex
    prefix : int array
        Item codes of the session so far, most recent last; codes outside the index's catalogue
        or in no training session still count for positions but find no neighbours.
    params : SknnParams

    Returns
    -------
    items : int64 array
        Candidate item codes, ascending.
    scores : float64 array
        Their scores (> 0, higher is better; unnormalized).
    """
    ent_item, ent_w = _neighbour_entries(index, np.asarray(prefix, np.int64), params)
    if len(ent_item) == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    items, inv = np.unique(ent_item, return_inverse=True)
    return items, np.bincount(inv, weights=ent_w)


def score_queries(index: SessionIndex, params: SknnParams, queries, idx: np.ndarray,
                  n_items: int | None = None) -> np.ndarray:
    """Dense float32 scores [len(idx), n_items] for evaluation (recembed.evaluate's Scorer).

    `queries` has `items`, `start`, `length` (query i's prefix is
    ``items[start[i]:start[i] + length[i]]``). Each row is the query's `score_session` scores
    divided by their maximum (so in (0, 1]); items it does not score get
    ``TIE * popularity * (smallest score in the row)``, below every scored item and ordered by
    the number of training sessions holding them (a row with no neighbours is popularity).
    """
    n_items = index.n_items if n_items is None else n_items
    pop = np.zeros(n_items, np.float64)
    df = index.session_count[:n_items]
    pop[:len(df)] = df / max(df.max(), 1) if len(df) else 0
    out = np.empty((len(idx), n_items), np.float32)
    for row, i in enumerate(np.asarray(idx)):
        s = queries.start[i]
        items, sc = score_session(index, queries.items[s:s + queries.length[i]], params)
        keep = items < n_items
        items, sc = items[keep], sc[keep]
        if len(sc) == 0:
            out[row] = TIE * pop
            continue
        sc = sc / sc.max()
        out[row] = (TIE * sc.min()) * pop
        out[row, items] = sc
    return out


def sknn_scorer(index: SessionIndex, params: SknnParams, n_items: int | None = None):
    """`score_queries` bound to an index and parameters: ``scorer(queries, idx) -> float32``."""
    return lambda q, idx: score_queries(index, params, q, idx, n_items)


# ---------------------------------------------------------------- helpers


def _group_starts(key: np.ndarray) -> np.ndarray:
    if len(key) == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.r_[True, key[1:] != key[:-1]])


def _gather(indptr: np.ndarray, rows: np.ndarray, cap: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the CSR entries of `rows` (each slice cut to its first `cap` entries when
    cap > 0), concatenated in row order, and the index into `rows` of each position."""
    lo = indptr[rows]
    n = indptr[rows + 1] - lo
    if cap > 0:
        n = np.minimum(n, cap)
    total = int(n.sum())
    owner = np.repeat(np.arange(len(rows)), n)
    offs = np.cumsum(n) - n
    return np.repeat(lo - offs, n) + np.arange(total), owner


def _prefix_weight(pos: np.ndarray, length: int, p: SknnParams) -> np.ndarray:
    pos = pos.astype(np.float64)
    kind = p.prefix_weighting
    if kind == "same":
        return np.ones_like(pos)
    if kind == "linear":
        return pos / length
    if kind == "quadratic":
        return (pos / length) ** 2
    if kind == "log":
        return 1.0 / np.log10(length - pos + 1.7)
    return np.exp((pos - length) / p.lambda1)


def _match_weight(step: np.ndarray, p: SknnParams) -> np.ndarray:
    step = step.astype(np.float64)
    kind = p.match_weighting
    if kind == "same":
        return np.ones_like(step)
    if kind == "div":
        return 1.0 / step
    if kind == "quadratic":
        return 1.0 / step ** 2
    if kind == "log":
        return 1.0 / np.log10(step + 1.7)
    return np.exp(-(step - 1.0) / p.lambda_match)


def _neighbour_entries(index: SessionIndex, prefix: np.ndarray,
                       p: SknnParams) -> tuple[np.ndarray, np.ndarray]:
    """(item, weight) of every distinct item of every neighbour of `prefix`; an item's score
    is the sum of its weights."""
    empty = np.zeros(0, np.int64), np.zeros(0)
    length = len(prefix)
    if length == 0:
        return empty
    # distinct prefix items, most recent first: step = distance from the end (1 = last)
    first_rev = np.unique(prefix[::-1], return_index=True)[1]
    first_rev.sort()
    step = first_rev + 1
    u = prefix[::-1][first_rev]
    w1 = _prefix_weight(length - first_rev, length, p)
    n_distinct, w1_norm = len(u), float(np.sqrt((w1 * w1).sum()))
    ok = (u >= 0) & (u < index.n_items)
    u, step, w1 = u[ok], step[ok], w1[ok]
    # candidates: sessions of the prefix items; a session among the sample_size most recent of
    # the union is among the first sample_size of every item slice it appears in, so cut slices
    ent, owner = _gather(index.item_indptr, u, p.sample_size)
    if len(ent) == 0:
        return empty
    sess = index.item_sessions[ent]
    # slices are concatenated most recent prefix item first: a candidate's first entry names
    # the most recent prefix item it contains
    cand, first, inv = np.unique(sess, return_index=True, return_inverse=True)
    num = np.bincount(inv, weights=w1[owner], minlength=len(cand))
    if p.sample_size > 0 and len(cand) > p.sample_size:  # cand ascending = most recent first
        cand, first, num = cand[:p.sample_size], first[:p.sample_size], num[:p.sample_size]
    if p.similarity == "dot":
        sim = num / n_distinct
    else:
        size = index.session_size[cand]
        sim = num / (w1_norm * np.sqrt(size))
    if p.lambda2 > 0:
        end = index.session_end[cand]
        sim = sim * np.exp((end - end[0]) / p.lambda2)
    keep = sim > 0
    cand, first, sim = cand[keep], first[keep], sim[keep]
    if len(cand) > p.k:  # stable: equal similarity goes to the more recent session
        top = np.argsort(-sim, kind="stable")[:p.k]
        cand, first, sim = cand[top], first[top], sim[top]
    star = owner[first]  # the most recent shared prefix item of each neighbour
    nw = sim * _match_weight(step[star], p)
    pos_e, nb = _gather(index.session_indptr, cand.astype(np.int64))
    items = index.session_items[pos_e].astype(np.int64)
    w = nw[nb]
    if p.lambda3 > 0:
        lastpos = index.session_lastpos[pos_e]
        is_star = items == u[star][nb]
        pos_star = np.zeros(len(cand), np.float64)
        pos_star[nb[is_star]] = lastpos[is_star]
        w = w * np.exp(-np.abs(lastpos - pos_star[nb]) / p.lambda3)
    if p.idf_weight > 0:
        w = w * (1.0 + p.idf_weight * index.idf[items])
    return items, w
