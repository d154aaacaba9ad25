"""The next-item blend behind `Recommender.recommend`: candidates from several signals, one
weighted score. numpy and numba only (the serving process imports it; no pandas or scipy);
the numba kernels live here, so recembed.sknn stays numpy only.

`BlendModel.recommend` runs as numba kernels over the whole batch (candidate unions and signal
values per query in parallel, laid end to end; session-kNN through `score_sessions`; top-k);
the answers are those of the per-query numpy code it replaced (kept in tests/test_blend.py as
the reference). `BlendModel.signals` pads the same kernel's output per query for calibration.

Candidates (`BlendSettings.retrieval`): "index" searches the decayed prefix query in the
inner-product and cosine faiss indexes; "table" reads each recent item's precomputed top lists
(`candidate_tables`, stored in blend.npz), the searches a one-item session would run. At 199k
items the two HNSW searches were half of a query's time (190 of 370 us); the tables answer
with the same next-item recall (benchmarks/RESULTS.md).

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
- `category` (runs with a catalog): the items of the last item's category, most recently listed
  first (the evaluation's `category` baseline, `recembed.evaluate.category_scorer`): a candidate
  of that category scores 1 / (1 + its rank in the category by listing recency, 0 = newest),
  others 0, divided by the query's best. The first `BlendSettings.popular` rows of the
  category's list join the candidates. Models without the category arrays (no catalog) score
  0 everywhere: the signal is off.

score = sum_s weight_s * signal_s. The weights (and decay, temperature, ...) are chosen per run
on a validation split (`recembed.calibrate`) and stored in serving.json; a weight of 0 switches a
signal off. Because every single-signal corner is in the search, the chosen blend is never worse
on validation than rules, neighbours, repeats, popularity or the category baseline alone.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numba
import numpy as np
from numba import njit, prange

from recembed.sknn import (
    MATCH_WEIGHTINGS,
    PREFIX_WEIGHTINGS,
    SessionIndex,
    SknnParams,
    method_params,
)

SIGNALS = ("directional", "cosine", "rules", "neighbours", "repeat", "popularity", "category")
N_SIGNALS = len(SIGNALS)  # the kernels' signal count (a compile-time constant for numba)
RETRIEVALS = ("index", "table")
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
        Most popular items always added as candidates (tiny catalogues, cold sessions); with
        category arrays, also the newest items of the last item's category.
    neighbours : dict
        Session-kNN method and parameter overrides (`recembed.sknn.method_params`):
        {"method": "stan" | "vsknn" | "vstan" | "off", ...}; empty = STAN's defaults.
    exclude_last : bool
        Never recommend the item being viewed.
    retrieval : "index" | "table"
        Where the directional and cosine candidates come from. "index": a search of the
        decayed prefix query in the inner-product and cosine indexes (two ANN searches per
        query: ~190 us of CPU at 199k items, HNSW32, k = 200). "table": each item's own top
        `candidates` (directional) and top `candidates // 4` (cosine), searched once per
        item when the version is built (`candidate_tables`); a session takes a share of
        each recent item's list proportional to its decay weight (`table_rows`), so a
        one-item session gets exactly what "index" gives it. Settings files without the key
        (older versions) mean "index".
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
    retrieval: str = "index"

    def __post_init__(self) -> None:
        if self.retrieval not in RETRIEVALS:
            raise ValueError(f"serving retrieval must be one of {RETRIEVALS}, got "
                             f"{self.retrieval!r}")

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
    cos_search : callable or None
        `cos_search(unit queries, k) -> (scores, rows)` over the unit input vectors (the
        cosine faiss index serving loads); None = exact search over every item (q @ unit.T:
        milliseconds per query on a large catalogue).
    dir_table, cos_table : int32 [n, w] or None
        Per-item candidate lists of `candidate_tables` (-1 padded), for settings with
        ``retrieval = "table"``.
    item_category, category_rank : int32 [n] or None
        The row's category (-1 = none) and its rank in that category by listing recency
        (0 = newest, -1 = none); `category_arrays` builds them. None = no `category` signal.
    category_indptr : int64 [n_categories + 1] or None
    category_rows : int32 [sum of category sizes] or None
        The rows of each category, newest first (CSR).
    """

    def __init__(self, vectors: np.ndarray, context: np.ndarray | None = None,
                 rules: Csr | None = None, neighbours=None,
                 popularity: np.ndarray | None = None, search: Search | None = None,
                 cos_search: Search | None = None, dir_table: np.ndarray | None = None,
                 cos_table: np.ndarray | None = None, item_category: np.ndarray | None = None,
                 category_rank: np.ndarray | None = None,
                 category_indptr: np.ndarray | None = None,
                 category_rows: np.ndarray | None = None):
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
        self.cos_search = cos_search
        self.dir_table, self.cos_table = dir_table, cos_table
        for name, t in (("dir_table", dir_table), ("cos_table", cos_table)):
            if t is not None and (t.ndim != 2 or len(t) != n):
                raise ValueError(f"{name} must have one row per item ({n}), got {t.shape}")
        parts = (item_category, category_rank, category_indptr, category_rows)
        if any(x is not None for x in parts) and any(x is None for x in parts):
            raise ValueError("item_category, category_rank, category_indptr and category_rows "
                             "go together: give all four or none")
        self.has_category = item_category is not None
        if self.has_category:
            self.item_category = np.ascontiguousarray(item_category, np.int32)
            self.category_rank = np.ascontiguousarray(category_rank, np.int32)
            self.category_indptr = np.ascontiguousarray(category_indptr, np.int64)
            self.category_rows = np.ascontiguousarray(category_rows, np.int32)
            for name, a in (("item_category", self.item_category),
                            ("category_rank", self.category_rank)):
                if a.shape != (n,):
                    raise ValueError(f"{name} must have one entry per item ({n}), got {a.shape}")
            if self.category_indptr[-1] != len(self.category_rows) or \
                    int(self.item_category.max(initial=-1)) >= len(self.category_indptr) - 1:
                raise ValueError("category_indptr / category_rows do not match item_category")
        else:  # zero-length arrays switch the signal off inside the kernels
            self.item_category = self.category_rank = np.zeros(0, np.int32)
            self.category_indptr = np.zeros(1, np.int64)
            self.category_rows = np.zeros(0, np.int32)
        self._max_category = int(np.diff(self.category_indptr).max(initial=0))
        self._scratch = None if neighbours is None else Scratch(neighbours.n_items)
        self._max_rule = 0 if rules is None else int(np.diff(rules.indptr).max(initial=0))

    def signals(self, sessions: list[np.ndarray], st: BlendSettings) -> Signals:
        """Candidates and raw signal values for sessions given as arrays of rows (most recent
        last, -1 = an item without a vector, which keeps its place in the decay), padded to
        one width: what calibration searches blends over."""
        offsets, rows, vals, in_sess, last = _flat_signals(*self._gather(sessions, st))
        n = len(offsets) - 1
        counts = np.diff(offsets)
        width = max(int(counts.max(initial=0)), 1)
        q = np.repeat(np.arange(n), counts)
        j = np.arange(len(rows)) - offsets[q]  # each candidate's place in its query's row
        p_rows = np.full((n, width), -1, np.int64)
        p_vals = np.zeros((n, width, len(SIGNALS)), np.float32)
        p_in = np.zeros((n, width), np.bool_)
        p_rows[q, j], p_vals[q, j], p_in[q, j] = rows, vals, in_sess
        return Signals(p_rows, p_vals, p_in, last)

    def recommend(self, sessions: list[np.ndarray], st: BlendSettings, k: int, *,
                  exclude_session_items: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(rows int64 [n, k], scores float32 [n, k]), -1 / -inf padded: `blend_top_k` of
        `signals`, bit for bit, without the padded [n, C, N_SIGNALS] arrays (the candidates of all
        queries sit end to end): 3x less time than signals + blend_top_k at 199k items."""
        n = len(sessions)
        if k <= 0 or n == 0:
            return np.zeros((n, max(k, 0)), np.int64), np.zeros((n, max(k, 0)), np.float32)
        a = self._gather(sessions, st)
        offsets, rows, vals, in_sess, last = _flat_signals(*a)
        w = _weights(st)
        expo = np.zeros((len(rows), 2))
        counts = np.diff(offsets)
        nonempty = counts > 0
        for j in (0, 1):
            if w[j] != 0.0 and len(rows):
                x = vals[:, j].astype(np.float64)
                m = np.repeat(np.maximum.reduceat(x, offsets[:-1][nonempty]), counts[nonempty])
                t = st.temperature if j == 0 else COSINE_TEMPERATURE
                expo[:, j] = np.exp((x - m) / t)  # numpy's exp, as `normalise`
        return _flat_top_k(offsets, rows, vals, expo, in_sess, last, w, bool(st.exclude_last),
                           bool(exclude_session_items), int(k))

    # ------------------------------------------------------------ helpers

    def _gather(self, sessions: list[np.ndarray], st: BlendSettings) -> tuple:
        """Everything the signal kernels take: packed sessions, candidate lists of each
        source, rules, neighbours, vectors and query vectors."""
        n_q = len(sessions)
        sess = [np.asarray(s, np.int64) for s in sessions]
        s_indptr = _indptr(sess)
        s_flat = np.concatenate(sess) if n_q else np.zeros(0, np.int64)
        if st.retrieval == "index":
            q_in, q_unit = self._queries(sess, st)
        else:
            q_in, q_unit = self._query_vectors(s_indptr, s_flat, st)
        n_c = min(st.candidates, len(self.vectors))
        has_dir = self.context is not None
        dir_rows, cos_rows = self._candidates(s_indptr, s_flat, q_in, q_unit, st, n_c, has_dir)
        pop_rows = self.pop_order[: st.popular].astype(np.int64)
        if self.neighbours is not None and st.neighbours.get("method", "stan") != "off":
            nb_params = _neighbour_params(st.neighbours)
            nb_n, nb_rows, nb_vals = score_sessions(
                self.neighbours, [s[s >= 0] for s in sess], nb_params, max(n_c, 1), self._scratch)
        else:
            nb_n = np.zeros(n_q, np.int64)
            nb_rows, nb_vals = np.zeros((n_q, 1), np.int64), np.zeros((n_q, 1))
        if self.rules is not None:
            r_ptr, r_idx, r_val = (np.asarray(self.rules.indptr, np.int64),
                                   np.asarray(self.rules.indices), np.asarray(self.rules.data))
        else:
            r_ptr = np.zeros(len(self.vectors) + 1, np.int64)
            r_idx, r_val = np.zeros(0, np.int32), np.zeros(0, np.float32)
        context = self.context if has_dir else self.unit
        return (s_indptr, s_flat, np.ascontiguousarray(dir_rows, np.int64),
                np.ascontiguousarray(cos_rows, np.int64), pop_rows, r_ptr, r_idx, r_val,
                self._max_rule, nb_n, nb_rows, nb_vals, float(st.repeat_decay), self.unit,
                context, q_unit, q_in, self.pop, has_dir, self.item_category,
                self.category_rank, self.category_indptr, self.category_rows,
                min(int(st.popular), self._max_category))

    def _candidates(self, s_indptr, s_flat, q_in, q_unit, st: BlendSettings, n_c: int,
                    has_dir: bool) -> tuple[np.ndarray, np.ndarray]:
        """Directional and cosine candidate rows per query (-1 padded) from the indexes or the
        per-item tables (`BlendSettings.retrieval`)."""
        n_q = len(s_indptr) - 1
        n_cos = max(n_c // 4, 1)
        if st.retrieval == "table":
            if self.cos_table is None or (has_dir and self.dir_table is None):
                raise ValueError('retrieval = "table" needs the candidate tables '
                                 "(blend.npz dir_table / cos_table); this model has none")
            w = np.float64(st.decay) ** np.arange(st.history)
            dir_rows = table_rows(s_indptr, s_flat, self.dir_table, n_c, w) if has_dir else \
                np.zeros((n_q, 0), np.int64)
            return dir_rows, table_rows(s_indptr, s_flat, self.cos_table, n_cos, w)
        dir_rows = self._search(q_in, n_c) if has_dir else np.zeros((n_q, 0), np.int64)
        return dir_rows, self._cos_search(q_unit, n_cos)

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

    def _query_vectors(self, s_indptr: np.ndarray, s_flat: np.ndarray, st: BlendSettings):
        """`_queries` as one parallel numba kernel: 7 us of serial Python per session less in a
        batch. Its float32 sums run in another order than numpy's matmul, so the query vectors
        may differ in the last bit: the "index" retrieval keeps `_queries`, whose searches then
        return exactly what older versions served."""
        w = (st.decay ** np.arange(st.history)).astype(np.float32)  # as `_queries` rounds them
        kernel = _queries_par if len(s_indptr) - 1 >= PARALLEL_FROM else _queries_ser
        q_in, q_unit = kernel(s_indptr, s_flat, self.vectors, self.unit, w)
        return q_in, unit_rows(q_unit)

    def _search(self, q: np.ndarray, k: int) -> np.ndarray:
        if self.search is not None:
            _, rows = self.search(np.ascontiguousarray(q, np.float32), k)
            return rows
        return _exact_top(q @ self.context.T, k)

    def _cos_search(self, q: np.ndarray, k: int) -> np.ndarray:
        if self.cos_search is not None:
            _, rows = self.cos_search(np.ascontiguousarray(q, np.float32), k)
            return rows
        # blocks of queries: the [block, n] score matrix stays small
        return np.concatenate([_exact_top(q[i:i + 256] @ self.unit.T, k)
                               for i in range(0, len(q), 256)]) if len(q) else \
            np.zeros((0, min(k, len(self.unit))), np.int64)


COSINE_TEMPERATURE = 0.1  # cosine normalisation exp((c - max c) / 0.1)


def _indptr(arrays: list) -> np.ndarray:
    """int64 [n + 1] offsets of arrays laid end to end (np.r_ cost ~10 us a call: a quarter
    of the Python time of a one-session `recommend`)."""
    out = np.zeros(len(arrays) + 1, np.int64)
    np.cumsum(np.fromiter((len(a) for a in arrays), np.int64, len(arrays)), out=out[1:])
    return out


@functools.lru_cache(maxsize=64)
def _params_of(items: tuple) -> SknnParams:
    nb = dict(items)
    return method_params(nb.pop("method", "stan"), **nb)


def _neighbour_params(neighbours: dict) -> SknnParams:
    """`method_params` of a settings' neighbours dict, built once per distinct dict."""
    return _params_of(tuple(sorted(neighbours.items())))


def _weights(st: BlendSettings) -> np.ndarray:
    return np.array([float(st.weights.get(name, 0.0)) for name in SIGNALS])


def category_arrays(categories: np.ndarray, listed: np.ndarray) -> dict[str, np.ndarray]:
    """The `BlendModel` category arrays of rows with a category and a listing-order key.

    Rows are ranked inside their category exactly as `recembed.evaluate.category_scorer`
    orders them: by `listed` (larger = newer; non-finite = oldest), ties to the higher row
    (the baseline's stable argsort gives the later of equal keys the higher recency).

    Parameters
    ----------
    categories : int [n]
        Category per row (>= 0), -1 = none (no category signal from or to the row).
    listed : float [n]
        Listing-order key per row (`recembed.catalog.listing_order`), larger = newer.

    Returns
    -------
    dict with ``item_category`` int32 [n], ``category_rank`` int32 [n] (0 = newest, -1 =
    none), ``category_indptr`` int64 [max category + 2], ``category_rows`` int32 (each
    category's rows, newest first).
    """
    cat = np.asarray(categories, np.int64)
    key = np.asarray(listed, np.float64)
    if cat.shape != key.shape or cat.ndim != 1:
        raise ValueError(f"categories {cat.shape} and listed {key.shape} must be one per row")
    key = np.where(np.isfinite(key), key, -np.inf)
    newest = np.argsort(key, kind="stable")[::-1]  # the baseline's recency, descending
    newest = newest[cat[newest] >= 0]
    by_cat = newest[np.argsort(cat[newest], kind="stable")]
    n_cat = int(cat.max(initial=-1)) + 1
    indptr = np.zeros(n_cat + 1, np.int64)
    np.cumsum(np.bincount(cat[by_cat], minlength=n_cat), out=indptr[1:])
    rank = np.full(len(cat), -1, np.int32)
    rank[by_cat] = np.arange(len(by_cat)) - indptr[cat[by_cat]]
    return {"item_category": np.where(cat >= 0, cat, -1).astype(np.int32),
            "category_rank": rank, "category_indptr": indptr,
            "category_rows": by_cat.astype(np.int32)}


CATEGORY_KEYS = ("item_category", "category_rank", "category_indptr", "category_rows")


def candidate_tables(vectors: np.ndarray, context: np.ndarray | None, width: int, *,
                     search: Search | None = None, cos_search: Search | None = None,
                     block: int = 4096) -> tuple[np.ndarray | None, np.ndarray]:
    """Each item's own candidate lists for ``retrieval = "table"``: (dir_table int32 [n, width]
    or None without output vectors, cos_table int32 [n, max(width // 4, 1)]), -1 padded.

    Row i holds what the "index" retrieval fetches for a session of item i alone: the top
    `width` items by ``vectors[i] . context`` and the top ``width // 4`` by cosine, searched
    with the same `search` / `cos_search` serving uses (None = exact numpy search).

    Parameters
    ----------
    vectors : float32 [n, d]
    context : float32 [n, d] or None
    width : int >= 1
        `BlendSettings.candidates`.
    search, cos_search : callable or None
        As `BlendModel` takes them.
    block : int
        Items searched per call (bounds the [block, n] score matrix of exact search).
    """
    if width < 1:
        raise ValueError(f"candidate table width must be >= 1, got {width}")
    m = BlendModel(vectors, context, search=search, cos_search=cos_search)
    n = len(m.vectors)
    n_c, n_cos = min(width, n), max(min(width, n) // 4, 1)
    dir_t = None if m.context is None else np.full((n, n_c), -1, np.int32)
    cos_t = np.full((n, n_cos), -1, np.int32)
    for lo in range(0, n, block):
        q = m.vectors[lo:lo + block]
        if dir_t is not None:
            r = m._search(q, n_c)
            dir_t[lo:lo + len(q), :r.shape[1]] = r
        r = m._cos_search(unit_rows(m.unit[lo:lo + block]), n_cos)
        cos_t[lo:lo + len(q), :r.shape[1]] = r
    return dir_t, cos_t


def table_rows(s_indptr: np.ndarray, s_flat: np.ndarray, table: np.ndarray, width: int,
               weights: np.ndarray) -> np.ndarray:
    """Candidate rows of each session from per-item lists: the item j steps back (weight
    ``weights[j]``, -1 items skipped but keeping their place) gives the first
    ``ceil(width * weights[j] / sum of the known items' weights)`` entries of its list.
    int64 [n, width + len(weights)], -1 padded, duplicates kept (the union removes them)."""
    return _table_rows(np.asarray(s_indptr, np.int64), np.asarray(s_flat, np.int64), table,
                       int(min(width, table.shape[1])), np.asarray(weights, np.float64))


@njit(cache=True, nogil=True)
def _table_rows(s_indptr, s_flat, table, width, weights):
    n = len(s_indptr) - 1
    h = len(weights)
    out = np.full((n, width + h), -1, np.int64)
    for i in range(n):
        lo, hi = s_indptr[i], s_indptr[i + 1]
        total = 0.0
        for j in range(min(h, hi - lo)):
            if s_flat[hi - 1 - j] >= 0:
                total += weights[j]
        m = 0
        for j in range(min(h, hi - lo)):
            x = s_flat[hi - 1 - j]
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


def blend_top_k(sig: Signals, st: BlendSettings, k: int, *, exclude_session_items: bool = False,
                pop: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows and blended scores of each query (ties: more popular, then lower row);
    (rows int64 [n, k], scores float32 [n, k]), -1 / -inf padded. A numba kernel over the
    scores of `blended_scores`, bit for bit."""
    if k <= 0:  # the kernel's heap needs a slot (k = 0 wrote out of bounds: a later segfault)
        n = len(sig.rows)
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
    w = _weights(st)
    rows = np.ascontiguousarray(sig.rows, np.int64)
    vals = np.ascontiguousarray(sig.values, np.float32)
    # the exp-normalised signals with numpy's exp, exactly as `blended_scores` computes them
    # (numba's exp may differ in the last bit, which could reorder exactly tied blends)
    expo = np.zeros((*rows.shape, 2))
    valid = rows >= 0
    for j in (0, 1):
        if w[j] != 0.0:
            expo[:, :, j] = normalise(vals[:, :, j], valid, SIGNALS[j], st.temperature)
    n, width = rows.shape
    # each padded row is one query's candidates (padding scores -inf inside the kernel)
    return _flat_top_k(np.arange(n + 1, dtype=np.int64) * width, rows.reshape(-1),
                       vals.reshape(-1, len(SIGNALS)), expo.reshape(-1, 2),
                       np.ascontiguousarray(sig.in_session, np.bool_).reshape(-1),
                       np.ascontiguousarray(sig.last, np.int64), w, bool(st.exclude_last),
                       bool(exclude_session_items), int(k))


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
        t = temperature if name == "directional" else COSINE_TEMPERATURE
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


@njit(cache=True, nogil=True, fastmath=True)
def _dot(a, b):
    # float32 inner product; fastmath lets LLVM vectorise it (a different order of summation
    # than numpy's einsum: equal to float32 rounding)
    acc = np.float32(0.0)
    for d in range(len(a)):
        acc += a[d] * b[d]
    return acc


@njit(cache=True, nogil=True)
def _union_one(s, dir_row, cos_row, pop_rows, r_ptr, r_idx, nb_n, nb_row, item_cat, cat_ptr,
               cat_rows, n_cat, out):
    """The sorted distinct candidates of one query into `out`; returns how many."""
    m = 0
    for x in s:
        if x >= 0:
            out[m] = x
            m += 1
    if m == 0:  # a session without any known item gets nothing
        return 0
    for x in pop_rows:
        out[m] = x
        m += 1
    for x in cos_row:
        out[m] = x
        m += 1
    for x in dir_row:
        out[m] = x
        m += 1
    if len(s) and s[-1] >= 0:
        for e in range(r_ptr[s[-1]], r_ptr[s[-1] + 1]):
            out[m] = r_idx[e]
            m += 1
    for t in range(nb_n):
        out[m] = nb_row[t]
        m += 1
    if n_cat > 0 and len(s) and s[-1] >= 0 and item_cat[s[-1]] >= 0:
        cl = item_cat[s[-1]]
        for e in range(cat_ptr[cl], min(cat_ptr[cl] + n_cat, cat_ptr[cl + 1])):
            out[m] = cat_rows[e]
            m += 1
    row = np.sort(out[:m])
    c = 0
    for t in range(m):
        if row[t] >= 0 and (c == 0 or row[t] != out[c - 1]):
            out[c] = row[t]
            c += 1
    return c


@njit(cache=True, nogil=True)
def _fill_one(s, u, r_ptr, r_idx, r_val, nb_n, nb_row, nb_val, repeat_decay, unit, context,
              q_unit, q_in, pop, has_dir, item_cat, cat_rank, vals, in_sess):
    """The raw signals of one query's candidates `u` (sorted) into vals [C, N_SIGNALS],
    in_sess [C]."""
    ls = len(s)
    for p in range(ls):
        if s[p] >= 0:
            j = np.searchsorted(u, s[p])
            vals[j, 4] += np.float32(repeat_decay ** float(ls - 1 - p))
            in_sess[j] = True
    if ls and s[-1] >= 0:
        for e in range(r_ptr[s[-1]], r_ptr[s[-1] + 1]):
            vals[np.searchsorted(u, r_idx[e]), 2] = r_val[e]
    for t in range(nb_n):
        vals[np.searchsorted(u, nb_row[t]), 3] = np.float32(nb_val[t])
    for j in range(len(u)):
        x = u[j]
        cs = _dot(unit[x], q_unit)
        vals[j, 1] = cs
        if has_dir:
            vals[j, 0] = _dot(context[x], q_in)
        else:  # no output vectors: cosine on a comparable scale
            vals[j, 0] = cs * np.float32(10.0)
        vals[j, 5] = pop[x]
    if len(item_cat) and ls and s[-1] >= 0 and item_cat[s[-1]] >= 0:
        cl = item_cat[s[-1]]
        for j in range(len(u)):
            if item_cat[u[j]] == cl:
                vals[j, 6] = np.float32(1.0) / np.float32(1 + cat_rank[u[j]])


# per-query work is tens of microseconds: below this many queries, threads cost more than they
# save (a single session runs on one core)
PARALLEL_FROM = 16


def _make_queries_kernel(parallel: bool):
    loop = prange if parallel else range

    def kernel(s_indptr, s_flat, vectors, unit, w):
        n, d = len(s_indptr) - 1, vectors.shape[1]
        q_in = np.zeros((n, d), np.float32)
        q_unit = np.zeros((n, d), np.float32)
        for i in loop(n):
            lo, hi = s_indptr[i], s_indptr[i + 1]
            for j in range(min(len(w), hi - lo)):  # j steps back, most recent first
                x = s_flat[hi - 1 - j]
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


def _make_flat_signals_kernel(parallel: bool):
    loop = prange if parallel else range

    def kernel(s_indptr, s_flat, dir_rows, cos_rows, pop_rows, r_ptr, r_idx, r_val, max_rule,
               nb_n, nb_rows, nb_vals, repeat_decay, unit, context, q_unit, q_in, pop,
               has_dir, item_cat, cat_rank, cat_ptr, cat_rows, n_cat):
        n = len(s_indptr) - 1
        max_len = 0
        for i in range(n):
            max_len = max(max_len, s_indptr[i + 1] - s_indptr[i])
        cap = max_len + len(pop_rows) + cos_rows.shape[1] + dir_rows.shape[1] + max_rule + \
            nb_rows.shape[1] + n_cat
        buf = np.empty((n, max(cap, 1)), np.int64)
        offsets = np.zeros(n + 1, np.int64)
        for i in loop(n):
            offsets[i + 1] = _union_one(s_flat[s_indptr[i]:s_indptr[i + 1]], dir_rows[i],
                                        cos_rows[i], pop_rows, r_ptr, r_idx, nb_n[i], nb_rows[i],
                                        item_cat, cat_ptr, cat_rows, n_cat, buf[i])
        for i in range(n):
            offsets[i + 1] += offsets[i]
        total = offsets[n]
        rows = np.empty(total, np.int64)
        vals = np.zeros((total, N_SIGNALS), np.float32)
        in_sess = np.zeros(total, np.bool_)
        last = np.full(n, -1, np.int64)
        for i in loop(n):
            s = s_flat[s_indptr[i]:s_indptr[i + 1]]
            lo, hi = offsets[i], offsets[i + 1]
            rows[lo:hi] = buf[i, :hi - lo]
            if len(s) and s[-1] >= 0:
                last[i] = s[-1]
            if hi > lo:
                _fill_one(s, rows[lo:hi], r_ptr, r_idx, r_val, nb_n[i], nb_rows[i], nb_vals[i],
                          repeat_decay, unit, context, q_unit[i], q_in[i], pop, has_dir,
                          item_cat, cat_rank, vals[lo:hi], in_sess[lo:hi])
        return offsets, rows, vals, in_sess, last

    kernel.__name__ = kernel.__qualname__ = "flat_signals_" + ("par" if parallel else "ser")
    return njit(cache=True, parallel=parallel, nogil=True)(kernel)


_flat_signals_par = _make_flat_signals_kernel(True)
_flat_signals_ser = _make_flat_signals_kernel(False)


def _flat_signals(*args):
    """Candidate unions (sorted) and the raw signals of every query, end to end: (offsets
    int64 [n + 1], rows [T], vals [T, N_SIGNALS], in_session [T], last [n]); query i owns
    ``offsets[i]:offsets[i + 1]``. The per-query numpy code it replaced is the reference in
    tests/test_blend.py."""
    n = len(args[0]) - 1
    return (_flat_signals_par if n >= PARALLEL_FROM else _flat_signals_ser)(*args)


@njit(cache=True, nogil=True)
def _top_stable(neg, k):
    """The first k of np.argsort(neg, kind="stable"), without sorting all of neg."""
    n = len(neg)
    if n <= k:
        return np.argsort(neg, kind="mergesort")
    t = np.partition(neg.copy(), k - 1)[k - 1]
    sel = np.empty(k, np.int64)
    ns = 0
    for c in range(n):
        if neg[c] < t:
            sel[ns] = c
            ns += 1
    for c in range(n):
        if ns == k:
            break
        if neg[c] == t:
            sel[ns] = c
            ns += 1
    return sel[np.argsort(neg[sel], kind="mergesort")]


@njit(cache=True, nogil=True)
def _top_k_one(rows, vals, expo, in_sess, last, w, exclude_last, exclude_session, k, out_rows,
               out_sc):
    """`blend_top_k` for one query: the same float64 sums as `blended_scores`, in the same
    order of signals."""
    c = len(rows)
    score = np.zeros(c)  # (np.float64, not float(): numba's float() keeps a float32 a float32)
    for j in range(len(w)):
        if w[j] == 0.0:
            continue
        if j == 0 or j == 1:  # directional, cosine: exp((x - max) / t), numpy's exp (below)
            for a in range(c):
                score[a] += w[j] * expo[a, j]
        elif j == 5:  # popularity as it is
            for a in range(c):
                score[a] += w[j] * np.float64(vals[a, j])
        else:  # rules, neighbours, repeat, category: divided by the query's best (padding 0)
            mx = np.float64(vals[0, j])
            for a in range(c):
                mx = max(mx, np.float64(vals[a, j]))
            for a in range(c):
                x = np.float64(vals[a, j]) / mx if mx > 0 else 0.0
                score[a] += w[j] * x
    neg = np.empty(c)
    for a in range(c):
        if (exclude_last and last >= 0 and rows[a] == last) or (exclude_session and in_sess[a]) \
                or rows[a] < 0:
            score[a] = -np.inf
        # the popularity tie-break, in float32 as numpy computes it
        neg[a] = -(score[a] + np.float64(vals[a, 5] * np.float32(1e-6)))
    sel = _top_stable(neg, k)
    for t in range(len(sel)):
        sc = np.float32(score[sel[t]])
        if np.isfinite(sc):
            out_rows[t] = rows[sel[t]]
            out_sc[t] = sc


def _make_flat_top_k_kernel(parallel: bool):
    loop = prange if parallel else range

    def kernel(offsets, rows, vals, expo, in_sess, last, w, exclude_last, exclude_session, k):
        n = len(offsets) - 1
        out_rows = np.full((n, k), -1, np.int64)
        out_sc = np.full((n, k), -np.inf, np.float32)
        for i in loop(n):
            lo, hi = offsets[i], offsets[i + 1]
            if hi > lo:
                _top_k_one(rows[lo:hi], vals[lo:hi], expo[lo:hi], in_sess[lo:hi], last[i], w,
                           exclude_last, exclude_session, k, out_rows[i], out_sc[i])
        return out_rows, out_sc

    kernel.__name__ = kernel.__qualname__ = "flat_top_k_" + ("par" if parallel else "ser")
    return njit(cache=True, parallel=parallel, nogil=True)(kernel)


_flat_top_k_par = _make_flat_top_k_kernel(True)
_flat_top_k_ser = _make_flat_top_k_kernel(False)


def _flat_top_k(offsets, *args):
    """`blend_top_k`'s kernel over the end-to-end candidates of `_flat_signals`."""
    n = len(offsets) - 1
    return (_flat_top_k_par if n >= PARALLEL_FROM else _flat_top_k_ser)(offsets, *args)


# ---------------------------------------------------------------- session-kNN kernel

_PREFIX_CODE = {name: i for i, name in enumerate(PREFIX_WEIGHTINGS)}
_MATCH_CODE = {name: i for i, name in enumerate(MATCH_WEIGHTINGS)}


class Scratch:
    """Per-thread item stamps and score accumulators of `score_sessions`, allocated once and
    reused (stamps mark what a query wrote, so nothing is cleared); a lock serialises callers."""

    def __init__(self, n_items: int):
        self.n_items = n_items
        self.lock = threading.Lock()
        self._arrays = None
        self._pos_decay: dict[tuple[float, int], np.ndarray] = {}

    def pos_decay(self, lambda3: float, max_pos: int) -> np.ndarray:
        """exp(-d / lambda3) for d = 0..max_pos (STAN's position weight), computed once per
        lambda3 by the kernel's own exp: the same float64 as computing it per entry, which
        took a quarter of STAN's time (21 us of 82 per query, 199k items)."""
        key = (float(lambda3), int(max_pos))
        if key not in self._pos_decay:
            self._pos_decay[key] = _pos_decay_table(max_pos, float(lambda3)) if lambda3 > 0 \
                else np.zeros(1)
        return self._pos_decay[key]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = numba.get_num_threads()
        if self._arrays is None or len(self._arrays[2]) != t:
            self._arrays = (np.zeros((t, self.n_items), np.int64), np.zeros((t, self.n_items)),
                            np.zeros(t, np.int64))
        return self._arrays


def score_sessions(index: SessionIndex, prefixes: list[np.ndarray], params: SknnParams,
                   top: int, scratch: Scratch | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The `top` best items of `recembed.sknn.score_session` for many prefixes at once (a numba
    kernel, parallel over prefixes; what `BlendModel.signals` uses). recembed.sknn itself stays
    numpy only.

    Parameters
    ----------
    index : SessionIndex
    prefixes : list of int arrays
        Each prefix as `score_session` takes it.
    params : SknnParams
    top : int
        Items kept per prefix, >= 1: its `top` best (ties: the lower item code).
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
    p_indptr = _indptr(prefixes)
    flat = np.concatenate([np.asarray(p, np.int64) for p in prefixes]) if len(prefixes) else \
        np.zeros(0, np.int64)
    scratch = scratch or Scratch(index.n_items)
    kernel = _sknn_par if len(prefixes) >= PARALLEL_FROM else _sknn_ser
    with scratch.lock:
        return kernel(
            p_indptr, flat, index.item_indptr, index.item_sessions, index.session_indptr,
            index.session_items, index.session_lastpos, index.session_end, index._posting_size,
            scratch.pos_decay(params.lambda3, index._max_pos), index._idf, int(params.k),
            int(params.sample_size), params.similarity == "cosine",
            _PREFIX_CODE[params.prefix_weighting], float(params.lambda1),
            _MATCH_CODE[params.match_weighting], float(params.lambda_match),
            float(params.lambda2), float(params.lambda3), float(params.idf_weight), int(top),
            *scratch.arrays())


@njit(cache=True, nogil=True)
def _pw(pos: float, length: int, kind: int, lambda1: float) -> float:
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
def _mw(step: float, kind: int, lam: float) -> float:
    if kind == 0:
        return 1.0
    if kind == 1:
        return 1.0 / step
    if kind == 2:
        return 1.0 / step ** 2
    if kind == 3:
        return 1.0 / np.log10(step + 1.7)
    return np.exp(-(step - 1.0) / lam)


@njit(cache=True, nogil=True)
def _heap_replace_min(heap, x):
    """Replace the smallest value of a binary min-heap by x and restore the heap."""
    n = len(heap)
    i = 0
    while True:
        a = 2 * i + 1
        if a >= n:
            break
        b = a + 1
        m = b if b < n and heap[b] < heap[a] else a
        if heap[m] >= x:
            break
        heap[i] = heap[m]
        i = m
    heap[i] = x


@njit(cache=True, nogil=True)
def _one_session(prefix, item_indptr, item_sessions, session_indptr, session_items,
                 session_lastpos, session_end, posting_size, pos_decay, idf, k, sample_size,
                 cosine, pkind,
                 lambda1, mkind, lambda_match, lambda2, lambda3, idf_weight, top,
                 item_stamp, item_score, stamp):
    """(items ascending, scores) of one prefix; mirrors `_neighbour_entries` + `score_session`
    step by step, so that every float64 sum runs in the same order."""
    n_items = len(item_indptr) - 1
    length = len(prefix)
    empty_i = np.zeros(0, np.int64)
    empty_f = np.zeros(0)
    if length == 0:
        return empty_i, empty_f
    # distinct prefix items, most recent first (their first index in the reversed prefix)
    u = np.empty(length, np.int64)
    first_rev = np.empty(length, np.int64)
    nd = 0
    for j in range(length):
        x = prefix[length - 1 - j]
        seen = False
        for t in range(nd):
            if u[t] == x:
                seen = True
                break
        if not seen:
            u[nd] = x
            first_rev[nd] = j
            nd += 1
    w1 = np.empty(nd)
    for t in range(nd):
        w1[t] = _pw(float(length - first_rev[t]), length, pkind, lambda1)
    sq = 0.0
    for t in range(nd):
        sq += w1[t] * w1[t]
    w1_norm = np.sqrt(sq)
    # valid items, in most-recent-first order
    vu = np.empty(nd, np.int64)
    vstep = np.empty(nd, np.int64)
    vw = np.empty(nd)
    nv = 0
    for t in range(nd):
        if u[t] >= 0 and u[t] < n_items:
            vu[nv] = u[t]
            vstep[nv] = first_rev[t] + 1
            vw[nv] = w1[t]
            nv += 1
    # merge the (cut) session lists: ascending session = most recent first
    head = np.empty(nv, np.int64)
    end_ = np.empty(nv, np.int64)
    total = 0
    for j in range(nv):
        lo = item_indptr[vu[j]]
        n = item_indptr[vu[j] + 1] - lo
        if sample_size > 0 and n > sample_size:
            n = sample_size
        head[j] = lo
        end_[j] = lo + n
        total += n
    if total == 0:
        return empty_i, empty_f
    cap = total if sample_size <= 0 else min(total, sample_size)
    cand = np.empty(cap, np.int64)
    num = np.empty(cap)
    owner = np.empty(cap, np.int64)
    csize = np.empty(cap, np.int64)
    nc = 0
    big = np.iinfo(np.int64).max
    if nv == 1:  # one list: the merge is a copy (39% of queries on the 199k-item benchmark)
        lo = head[0]
        for c in range(cap):
            cand[c] = item_sessions[lo + c]
            num[c] = 0.0 + vw[0]
            owner[c] = 0
            csize[c] = posting_size[lo + c]
        nc = cap
    while nc < cap:
        v = big
        for j in range(nv):
            if head[j] < end_[j]:
                s = item_sessions[head[j]]
                if s < v:
                    v = s
        if v == big:
            break
        acc = 0.0
        own = -1
        for j in range(nv):
            if head[j] < end_[j] and item_sessions[head[j]] == v:
                acc += vw[j]
                if own < 0:
                    own = j
                    # |session| beside the posting: read in merge order, not by random access
                    # to a per-session array (2,000+ cache misses per query)
                    csize[nc] = posting_size[head[j]]
                head[j] += 1
        cand[nc] = v
        num[nc] = acc
        owner[nc] = own
        nc += 1
    sim = np.empty(nc)
    for c in range(nc):
        if not cosine:
            sim[c] = num[c] / nd
        else:
            sim[c] = num[c] / (w1_norm * np.sqrt(float(csize[c])))
    if lambda2 > 0:
        e0 = session_end[cand[0]]
        n_exact = nc if nc <= k else k
        for c in range(n_exact):
            sim[c] = sim[c] * np.exp((session_end[cand[c]] - e0) / lambda2)
        if nc > k:
            # the decay only falls along the candidates (most recent first), so a candidate
            # whose similarity times the last decay computed is below the k-th best of the
            # first k cannot be a neighbour: skip its exp (the costliest part of STAN)
            heap = np.sort(sim[:k])  # a sorted array is a valid min-heap: heap[0] = k-th best
            f_last = np.exp((session_end[cand[k - 1]] - e0) / lambda2)
            for c in range(k, nc):
                if sim[c] * f_last < heap[0]:
                    sim[c] = 0.0
                    continue
                f_last = np.exp((session_end[cand[c]] - e0) / lambda2)
                sim[c] = sim[c] * f_last
                if sim[c] > heap[0]:
                    _heap_replace_min(heap, sim[c])
    keep = np.empty(nc, np.int64)
    nk = 0
    for c in range(nc):
        if sim[c] > 0:
            keep[nk] = c
            nk += 1
    keep = keep[:nk]
    if nk > k:  # the k most similar, ties to the more recent (lower) session
        neg = np.empty(nk)
        for c in range(nk):
            neg[c] = -sim[keep[c]]
        sel = _top_stable(neg, k)
        keep = keep[sel]
    # entries of every neighbour, summed per item in the reference's order
    stamp_v = stamp[0] + 1
    stamp[0] = stamp_v
    n_out = 0
    for c in keep:
        n_out += session_indptr[cand[c] + 1] - session_indptr[cand[c]]
    out_items = np.empty(n_out, np.int64)
    m = 0
    for c in keep:
        sess = cand[c]
        star = owner[c]
        nw = sim[c] * _mw(float(vstep[star]), mkind, lambda_match)
        lo, hi = session_indptr[sess], session_indptr[sess + 1]
        pos_star = 0.0
        if lambda3 > 0:
            for e in range(lo, hi):
                if session_items[e] == vu[star]:
                    pos_star = float(session_lastpos[e])
        for e in range(lo, hi):
            it = session_items[e]
            w = nw
            if lambda3 > 0:  # exp(-|pos - pos_star| / lambda3), tabulated
                w = w * pos_decay[int(np.abs(session_lastpos[e] - pos_star))]
            if idf_weight > 0:
                w = w * (1.0 + idf_weight * idf[it])
            if item_stamp[it] != stamp_v:
                item_stamp[it] = stamp_v
                item_score[it] = 0.0
                out_items[m] = it
                m += 1
            item_score[it] += w
    items = np.sort(out_items[:m])
    scores = np.empty(m)
    for t in range(m):
        scores[t] = item_score[items[t]]
    if top > 0 and m > top:  # the `top` best, ties to the lower item; then ascending again
        sel = np.sort(_top_stable(-scores, top))
        items, scores = items[sel], scores[sel]
    return items, scores


@njit(cache=True, nogil=True)
def _pos_decay_table(max_pos, lambda3):
    out = np.empty(max_pos + 1)
    for d in range(max_pos + 1):
        out[d] = np.exp(-np.float64(d) / lambda3)
    return out


def _make_sknn_kernel(parallel: bool):
    loop = prange if parallel else range

    def kernel(p_indptr, flat, item_indptr, item_sessions, session_indptr, session_items,
               session_lastpos, session_end, posting_size, pos_decay, idf, k, sample_size,
               cosine, pkind, lambda1,
               mkind, lambda_match, lambda2, lambda3, idf_weight, top, item_stamp, item_score,
               stamp):
        n = len(p_indptr) - 1
        n_chunks = max(min(n, len(stamp)), 1)
        bounds = np.linspace(0, n, n_chunks + 1).astype(np.int64)
        counts = np.zeros(n, np.int64)
        out_items = np.full((n, top), -1, np.int64)
        out_scores = np.zeros((n, top))
        for ch in loop(n_chunks):  # one scratch row per chunk; stamps make it reusable
            for i in range(bounds[ch], bounds[ch + 1]):
                it, sc = _one_session(flat[p_indptr[i]:p_indptr[i + 1]], item_indptr,
                                      item_sessions, session_indptr, session_items,
                                      session_lastpos, session_end, posting_size, pos_decay,
                                      idf, k, sample_size,
                                      cosine, pkind, lambda1, mkind, lambda_match, lambda2,
                                      lambda3, idf_weight, top, item_stamp[ch], item_score[ch],
                                      stamp[ch:ch + 1])
                counts[i] = len(it)
                out_items[i, :len(it)] = it
                out_scores[i, :len(it)] = sc
        return counts, out_items, out_scores

    kernel.__name__ = kernel.__qualname__ = "sknn_" + ("par" if parallel else "ser")
    return njit(cache=True, parallel=parallel, nogil=True)(kernel)


_sknn_par = _make_sknn_kernel(True)
_sknn_ser = _make_sknn_kernel(False)
