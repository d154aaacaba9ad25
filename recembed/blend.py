"""The next-item blend behind `Recommender.recommend`: candidates from several signals, one
weighted score. numpy only (the serving process imports it; no pandas, scipy or numba).

Signals, each computed for every candidate of a query (the union of what the signals retrieve):

- `directional`: `q_in . out[c]`, q_in = sum of `decay ** j` times the input vector of the item j
  steps back (whole recent prefix, DESIGN.md "quality levers"), out = skip-gram output vectors.
  Normalised per query as `exp((d - max d) / temperature)`: d estimates a log co-occurrence, so
  this is a co-occurrence ratio to the best candidate.
- `cosine`: cosine of the decayed unit query with the candidate, `exp((c - max c) / 0.1)`.
- `rules`: sequential rules from the last item (b follows a within a few steps, weight
  1/distance; Ludewig & Jannach 2018), divided by the query's best rule.
- `neighbours`: session-kNN (V-SKNN / STAN, `recembed.sknn`), divided by the query's best.
- `repeat`: items already in the session, `sum repeat_decay ** steps_back`, divided by its max.
- `popularity`: log(1 + training count) / log(1 + max count).

score = sum_s weight_s * signal_s. The weights (and decay, temperature, ...) are chosen per run
on a validation split (`recembed.calibrate`) and stored in serving.json; a weight of 0 switches a
signal off. Because every single-signal corner is in the search, the chosen blend is never worse
on validation than rules, neighbours, repeats or popularity alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from recembed.sknn import method_params, score_session

SIGNALS = ("directional", "cosine", "rules", "neighbours", "repeat", "popularity")
Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]  # (queries, k) -> (D, I)


@dataclass
class BlendSettings:
    """How `recommend` scores candidates (serving.json).

    Parameters
    ----------
    weights : dict of signal name -> float >= 0
        Weight of each signal in `SIGNALS`; missing = 0.
    decay : float in (0, 1]
        Query vector weight of the item j steps back: decay ** j.
    history : int >= 1
        Recent session items in the query vector.
    temperature : float > 0
        Directional normalisation `exp((d - max d) / temperature)`.
    repeat_decay : float in (0, 1]
        Repeat bonus of an item seen j steps back: repeat_decay ** j.
    candidates : int >= 1
        Candidates fetched from the directional index per query (others add theirs).
    popular : int >= 0
        Most popular items always added as candidates (tiny catalogues, cold sessions).
    neighbours : dict
        Session-kNN method and parameter overrides (`recembed.sknn.method_params`):
        {"method": "stan" | "vsknn" | "vstan" | "off", ...}; empty = STAN's defaults.
    exclude_last : bool
        Never recommend the item being viewed.
    """

    weights: dict = field(default_factory=lambda: {"directional": 1.0, "repeat": 0.3,
                                                   "popularity": 0.01})
    decay: float = 0.65
    history: int = 10
    temperature: float = 1.0
    repeat_decay: float = 0.7
    candidates: int = 200
    popular: int = 50
    neighbours: dict = field(default_factory=lambda: {"method": "stan"})
    exclude_last: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> BlendSettings:
        """Settings from serving.json (unknown keys ignored, so old files still load)."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Csr:
    """A sparse matrix as plain arrays (rows of vector-row space)."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.indptr[r], self.indptr[r + 1]
        return self.indices[lo:hi], self.data[lo:hi]


@dataclass
class Signals:
    """Candidates per query (`rows` int64 [n, C], -1 padded, sorted ascending where valid) and
    raw signal values [n, C, len(SIGNALS)] float32; `in_session` marks session items."""

    rows: np.ndarray
    values: np.ndarray
    in_session: np.ndarray
    last: np.ndarray


class BlendModel:
    """What the signals need: input / output vectors, rules, a session-kNN index, popularity.

    Parameters
    ----------
    vectors : float32 [n, d]
        Input vectors (row = item).
    context : float32 [n, d] or None
        Output vectors; without them `directional` uses cosine.
    rules : Csr or None
        Sequential rules [n, n] in row space.
    neighbours : object or None
        A `recembed.sknn.SessionIndex` in row space.
    popularity : float [n] or None
        Training counts per row.
    search : callable or None
        `search(queries, k) -> (scores, rows)` over the output vectors (a faiss inner-product
        index); None = exact numpy search.
    """

    def __init__(self, vectors: np.ndarray, context: np.ndarray | None = None,
                 rules: Csr | None = None, neighbours=None,
                 popularity: np.ndarray | None = None, search: Search | None = None):
        self.vectors = np.ascontiguousarray(vectors, np.float32)
        self.unit = unit_rows(self.vectors)
        self.context = None if context is None else np.ascontiguousarray(context, np.float32)
        self.rules = rules
        self.neighbours = neighbours
        n = len(self.vectors)
        pop = np.zeros(n) if popularity is None else np.asarray(popularity, np.float64)
        self.pop = (np.log1p(pop) / max(np.log1p(pop.max(initial=0)), 1e-12)).astype(np.float32)
        self.pop_order = np.argsort(-pop, kind="stable")
        self.search = search

    def signals(self, sessions: list[np.ndarray], st: BlendSettings) -> Signals:
        """Candidates and raw signal values for sessions given as arrays of rows (most recent
        last, -1 = an item without a vector, which keeps its place in the decay)."""
        n_q = len(sessions)
        q_in, q_unit = self._queries(sessions, st)
        n_c = min(st.candidates, len(self.vectors))
        dir_rows = self._search(q_in, n_c) if self.context is not None else None
        cos_rows = self._cos_search(q_unit, max(n_c // 4, 1))
        pop_rows = self.pop_order[: st.popular]
        want = n_c
        nb_params = None
        if self.neighbours is not None and st.neighbours.get("method", "stan") != "off":
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
            if self.rules is not None and len(s) and s[-1] >= 0:
                r_rows, r_vals = self.rules.row(int(s[-1]))
                parts.append(r_rows)
            if nb_params is not None and len(known):
                nb_rows, nb_vals = score_session(self.neighbours, known, nb_params)
                if len(nb_rows) > want:
                    top = np.argpartition(-nb_vals, want - 1)[:want]
                    nb_rows, nb_vals = nb_rows[top], nb_vals[top]
                parts.append(nb_rows)
            # a session without any known item gets nothing (Results: unknown ids are listed)
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
        vals[:, :, i_cos] = np.einsum("ncd,nd->nc", self.unit[safe], q_unit)
        if self.context is not None:
            vals[:, :, i_dir] = np.einsum("ncd,nd->nc", self.context[safe], q_in)
        else:  # no output vectors: cosine on a comparable scale
            vals[:, :, i_dir] = vals[:, :, i_cos] * 10.0
        vals[:, :, i_pop] = self.pop[safe]
        vals[~valid] = 0.0
        return Signals(rows, vals, in_sess, last)

    def recommend(self, sessions: list[np.ndarray], st: BlendSettings, k: int, *,
                  exclude_session_items: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(rows int64 [n, k], scores float32 [n, k]), -1 / -inf padded."""
        return blend_top_k(self.signals(sessions, st), st, k,
                           exclude_session_items=exclude_session_items, pop=self.pop)

    # ------------------------------------------------------------ helpers

    def _queries(self, sessions: list[np.ndarray], st: BlendSettings):
        d = self.vectors.shape[1]
        q_in = np.zeros((len(sessions), d), np.float32)
        q_unit = np.zeros((len(sessions), d), np.float32)
        for i, s in enumerate(sessions):
            recent = np.asarray(s, np.int64)[::-1][: st.history]
            ok = recent >= 0
            if not ok.any():
                continue
            w = (st.decay ** np.arange(len(recent)))[ok].astype(np.float32)
            q_in[i] = w @ self.vectors[recent[ok]]
            q_unit[i] = w @ self.unit[recent[ok]]
        q_unit = unit_rows(q_unit)
        return q_in, q_unit

    def _search(self, q: np.ndarray, k: int) -> np.ndarray:
        if self.search is not None:
            _, rows = self.search(np.ascontiguousarray(q, np.float32), k)
            return rows
        return _exact_top(q @ self.context.T, k)

    def _cos_search(self, q: np.ndarray, k: int) -> np.ndarray:
        return _exact_top(q @ self.unit.T, k)


def blend_top_k(sig: Signals, st: BlendSettings, k: int, *, exclude_session_items: bool = False,
                pop: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows and blended scores of each query (ties: more popular, then lower row)."""
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


def blended_scores(sig: Signals, st: BlendSettings) -> np.ndarray:
    """float64 [n, C]: sum of weight x normalised signal (padding scores 0)."""
    v = sig.values
    valid = sig.rows >= 0
    out = np.zeros(v.shape[:2])
    for j, name in enumerate(SIGNALS):
        w = float(st.weights.get(name, 0.0))
        if w == 0.0:
            continue
        out += w * normalise(v[:, :, j], valid, name, st.temperature)
    return out


def normalise(x: np.ndarray, valid: np.ndarray, name: str, temperature: float) -> np.ndarray:
    """One signal scaled per query to [0, 1] (see the module docstring)."""
    x = x.astype(np.float64)
    if name in ("directional", "cosine"):
        t = temperature if name == "directional" else 0.1
        m = np.where(valid, x, -np.inf).max(axis=1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        return np.where(valid, np.exp((x - m) / t), 0.0)
    if name == "popularity":
        return x
    m = x.max(axis=1, keepdims=True)
    return np.divide(x, m, out=np.zeros_like(x), where=m > 0)


def sequential_rules(sessions_item: np.ndarray, sessions_id: np.ndarray, n: int, *,
                     steps: int = 10, top: int = 100) -> Csr:
    """Rules a -> b for b following a within `steps` steps of a session, weight 1/distance,
    summed over sessions; the `top` heaviest per row kept. Items and sessions are arrays in
    session order (rows of vector space, -1 = no vector: skipped)."""
    src, dst, wt = [], [], []
    for d in range(1, steps + 1):
        same = (sessions_id[d:] == sessions_id[:-d]) & (sessions_item[d:] != sessions_item[:-d])
        same &= (sessions_item[d:] >= 0) & (sessions_item[:-d] >= 0)
        src.append(sessions_item[:-d][same])
        dst.append(sessions_item[d:][same])
        wt.append(np.full(int(same.sum()), 1.0 / d))
    s, t, w = np.concatenate(src), np.concatenate(dst), np.concatenate(wt)
    key = s.astype(np.int64) * n + t
    uk, inv = np.unique(key, return_inverse=True)
    ws = np.bincount(inv, weights=w)
    rs, cs = uk // n, uk % n
    # keep the heaviest `top` per row: order by (row, -weight)
    order = np.lexsort((cs, -ws, rs))
    rs, cs, ws = rs[order], cs[order], ws[order]
    rank = np.arange(len(rs)) - np.searchsorted(rs, rs)
    keep = rank < top
    rs, cs, ws = rs[keep], cs[keep], ws[keep]
    order = np.lexsort((cs, rs))
    rs, cs, ws = rs[order], cs[order], ws[order]
    indptr = np.zeros(n + 1, np.int64)
    np.add.at(indptr, rs + 1, 1)
    return Csr(np.cumsum(indptr), cs.astype(np.int32), ws.astype(np.float32))


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32."""
    x = np.asarray(x, np.float32)
    return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))


def _exact_top(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, scores.shape[1])
    if k <= 0:
        return np.zeros((len(scores), 0), np.int64)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return part.astype(np.int64)
