"""`BlendModel`: what the blend's signals read (vectors, rules, a session-kNN index,
popularity, the category lists and the candidate tables), how they are built from training
sessions (`BlendModel.build`) and stored in a version (`save` / `load`: blend.npz, owned here).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit, prange

from recembed.artifacts import BLEND, atomic_path, unit_rows
from recembed.blend.kernels import (
    CategoryLists,
    FlatSignals,
    ItemVectors,
    NeighbourItems,
    QueryVectors,
    Retrieved,
    Rules,
    Sessions,
    SignalInputs,
    flat_signals,
    flat_top_k,
    query_vectors,
    table_rows_kernel,
)
from recembed.blend.scores import COSINE_TEMPERATURE, Signals, signal_weights
from recembed.blend.settings import CATEGORY_KEYS, SIGNALS, BlendSettings
from recembed.sknn import SessionIndex, SknnParams, method_params, session_end_times
from recembed.sknn_kernels import Scratch, score_sessions
from recembed.topk import PARALLEL_FROM, ScoreBuffer, offsets

Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]  # (queries, k) -> (D, I)

# blend.npz, in the order of its arrays: the rules, popularity, the session-kNN index
# (`SessionIndex.to_arrays`, each key prefixed "nb_"), with a catalog the `category` lists
# (CATEGORY_KEYS), for retrieval = "table" the candidate tables
RULES_KEYS = ("rules_indptr", "rules_indices", "rules_data")
POPULARITY_KEY = "popularity"
NEIGHBOURS_PREFIX = "nb_"
TABLE_KEYS = ("cos_table", "dir_table")


@dataclass
class Csr:
    """A sparse matrix as plain arrays (rows of vector-row space)."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """(columns, values) of row `r`."""
        lo, hi = self.indptr[r], self.indptr[r + 1]
        return self.indices[lo:hi], self.data[lo:hi]


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
    neighbours : SessionIndex or None
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
                 rules: Csr | None = None, neighbours: SessionIndex | None = None,
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
        # the training counts as blend.npz stores them; `pop` is the popularity signal
        self.popularity = np.zeros(n) if popularity is None else \
            np.asarray(popularity, np.float64)
        pop = self.popularity
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

    # ------------------------------------------------------------ building and storing

    @classmethod
    def build(cls, train, n_items: int, codes: np.ndarray, vectors: np.ndarray,
              context: np.ndarray | None, *, rule_steps: int = 10, search: Search | None = None,
              cos_search: Search | None = None, category: dict | None = None
              ) -> tuple[BlendModel, np.ndarray]:
        """The blend model of trained vectors and the training sessions: rules, session-kNN
        index and popularity in vector-row space.

        Parameters
        ----------
        train : DataFrame
            Training events with columns `session`, `item` (ingest code in [0, n_items)) and
            `ts` (seconds), grouped by session, in order within a session.
        n_items : int
            Ingest codes in use (every code of `train` and of `codes` is below it).
        codes : int [n]
            The ingest code of each vector row, ascending.
        vectors, context : float32 [n, d]; context may be None
            Input and output vectors, row i = `codes[i]`.
        rule_steps : int >= 1
            Sequential rules a -> b for b within this many steps after a.
        search, cos_search : callable or None
            As the constructor takes them.
        category : dict or None
            The rows' `category_arrays` (the `category` signal); None = none.

        Returns
        -------
        model : BlendModel
        row_of : int64 [n_items]
            The vector row of each ingest code, -1 for codes without a vector.
        """
        row_of = np.full(n_items, -1, np.int64)
        row_of[codes] = np.arange(len(codes))
        items = train["item"].to_numpy()
        rows = row_of[items]
        sess = train["session"].to_numpy()
        rules = sequential_rules(rows, sess, len(codes), steps=rule_steps)
        ok = rows >= 0
        ends = session_end_times(sess[ok], train["ts"].to_numpy()[ok])
        neighbours = SessionIndex.build(sess[ok], rows[ok], ends, len(codes))
        pop = np.bincount(items, minlength=n_items)[codes]
        return cls(vectors, context, rules=rules, neighbours=neighbours, popularity=pop,
                   search=search, cos_search=cos_search, **(category or {})), row_of

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays of blend.npz, in the file's order: ``rules_indptr``, ``rules_indices``,
        ``rules_data`` (with rules), ``popularity`` (training counts, float64), ``nb_<name>``
        for each array of `SessionIndex.to_arrays` (with a session index), the
        `CATEGORY_KEYS` (with a catalog), ``cos_table`` and ``dir_table`` (when built)."""
        arrays: dict[str, np.ndarray] = {}
        if self.rules is not None:
            arrays.update(zip(RULES_KEYS, (self.rules.indptr, self.rules.indices,
                                           self.rules.data), strict=True))
        arrays[POPULARITY_KEY] = self.popularity
        if self.neighbours is not None:
            arrays.update({NEIGHBOURS_PREFIX + k: v
                           for k, v in self.neighbours.to_arrays().items()})
        if self.has_category:
            arrays.update({k: getattr(self, k) for k in CATEGORY_KEYS})
        for k in TABLE_KEYS:
            if getattr(self, k) is not None:
                arrays[k] = getattr(self, k)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], vectors: np.ndarray,
                    context: np.ndarray | None = None, *, search: Search | None = None,
                    cos_search: Search | None = None) -> BlendModel:
        """The model of `to_arrays` output (e.g. blend.npz) over `vectors` / `context`; keys
        left out switch their signal off (older versions have no tables or category lists)."""
        rules = Csr(*(arrays[k] for k in RULES_KEYS)) if RULES_KEYS[0] in arrays else None
        nb = {k.removeprefix(NEIGHBOURS_PREFIX): v for k, v in arrays.items()
              if k.startswith(NEIGHBOURS_PREFIX)}
        neighbours = SessionIndex.from_arrays(nb) if nb else None
        return cls(vectors, context, rules=rules, neighbours=neighbours,
                   popularity=arrays.get(POPULARITY_KEY), search=search, cos_search=cos_search,
                   dir_table=arrays.get("dir_table"), cos_table=arrays.get("cos_table"),
                   **{k: arrays[k] for k in CATEGORY_KEYS if k in arrays})

    def save(self, path: str | Path) -> None:
        """Write blend.npz (`to_arrays`, uncompressed, no pickle) atomically to `path`."""
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **self.to_arrays())

    @classmethod
    def load(cls, path: str | Path, vectors: np.ndarray, context: np.ndarray | None = None, *,
             search: Search | None = None, cos_search: Search | None = None) -> BlendModel:
        """The model `save` wrote to `path`, over the version's `vectors` / `context` (no
        pickle is ever loaded).

        Raises
        ------
        OSError, ValueError
            The file is missing, truncated or not a blend.npz.
        """
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return cls.from_arrays(arrays, vectors, context, search=search, cos_search=cos_search)

    # ------------------------------------------------------------ scoring

    def signals(self, sessions: list[np.ndarray], st: BlendSettings) -> Signals:
        """Candidates and raw signal values for sessions given as arrays of rows (most recent
        last, -1 = an item without a vector, which keeps its place in the decay), padded to
        one width: what calibration searches blends over."""
        return padded_signals(flat_signals(self._gather(sessions, st)))

    def recommend(self, sessions: list[np.ndarray], st: BlendSettings, k: int, *,
                  exclude_session_items: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows of each session: `blend_top_k` of `signals`, bit for bit, without the
        padded [n, C, N_SIGNALS] arrays (the candidates of all queries sit end to end; the
        time it saves: benchmarks/RESULTS.md, "serving throughput on the 10,000,000-event
        synthetic catalogue").

        Parameters
        ----------
        sessions : list of int arrays
            Vector rows, most recent last (-1 = an item without a vector).
        st : BlendSettings
        k : int >= 0
        exclude_session_items : bool
            Never recommend an item of the session.

        Returns
        -------
        (rows int64 [n, k], scores float32 [n, k]), -1 / -inf padded.
        """
        n = len(sessions)
        if k <= 0 or n == 0:
            return np.zeros((n, max(k, 0)), np.int64), np.zeros((n, max(k, 0)), np.float32)
        flat = flat_signals(self._gather(sessions, st))
        w = signal_weights(st)
        return flat_top_k(flat, self._exp_normalised(flat, w, st), w,
                          exclude_last=bool(st.exclude_last),
                          exclude_session=bool(exclude_session_items), k=int(k))

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _exp_normalised(flat: FlatSignals, w: np.ndarray, st: BlendSettings) -> np.ndarray:
        """float64 [T, 2]: the directional and cosine signals as exp((x - query max) / t),
        with numpy's exp, as `normalise` computes them (0 for a signal of weight 0)."""
        expo = np.zeros((len(flat.rows), 2))
        counts = np.diff(flat.offsets)
        nonempty = counts > 0
        for j in (0, 1):
            if w[j] != 0.0 and len(flat.rows):
                x = flat.values[:, j].astype(np.float64)
                m = np.repeat(np.maximum.reduceat(x, flat.offsets[:-1][nonempty]),
                              counts[nonempty])
                t = st.temperature if j == 0 else COSINE_TEMPERATURE
                expo[:, j] = np.exp((x - m) / t)
        return expo

    def _gather(self, sessions: list[np.ndarray], st: BlendSettings) -> SignalInputs:
        """Everything the signal kernels read: packed sessions, candidate lists of each
        source, rules, neighbours, vectors and query vectors."""
        sess = [np.asarray(s, np.int64) for s in sessions]
        packed = pack_sessions(sess)
        q_in, q_unit = self._query_pair(sess, packed, st)
        n_c = min(st.candidates, len(self.vectors))
        dir_rows, cos_rows = self._candidates(packed, q_in, q_unit, st, n_c,
                                              self.context is not None)
        return self._inputs(packed, dir_rows, cos_rows, self._neighbour_items(sess, st, n_c),
                            q_in, q_unit, st)

    def _query_pair(self, sess: list[np.ndarray], packed: Sessions, st: BlendSettings
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(input query, unit query) per session as the retrieval of `st` computes them."""
        if st.retrieval == "index":
            return self._queries(sess, st)
        return self._query_vectors(packed, st)

    def _neighbour_items(self, sess: list[np.ndarray], st: BlendSettings,
                         n_c: int) -> NeighbourItems:
        """The session-kNN signal's top max(n_c, 1) items per session (empty when off)."""
        if self.neighbours is not None and st.neighbours.get("method", "stan") != "off":
            return NeighbourItems(*score_sessions(
                self.neighbours, [s[s >= 0] for s in sess], neighbour_params(st.neighbours),
                max(n_c, 1), self._scratch))
        n_q = len(sess)
        return NeighbourItems(counts=np.zeros(n_q, np.int64), rows=np.zeros((n_q, 1), np.int64),
                              scores=np.zeros((n_q, 1)))

    def _inputs(self, packed: Sessions, dir_rows: np.ndarray, cos_rows: np.ndarray,
                neighbours: NeighbourItems, q_in: np.ndarray, q_unit: np.ndarray,
                st: BlendSettings) -> SignalInputs:
        """The `SignalInputs` record of computed parts and the model's fixed arrays."""
        retrieved = Retrieved(directional=np.ascontiguousarray(dir_rows, np.int64),
                              cosine=np.ascontiguousarray(cos_rows, np.int64),
                              popular=self.pop_order[: st.popular].astype(np.int64))
        if self.rules is not None:
            rules = Rules(indptr=np.asarray(self.rules.indptr, np.int64),
                          items=np.asarray(self.rules.indices),
                          weights=np.asarray(self.rules.data), longest=self._max_rule)
        else:
            rules = Rules(indptr=np.zeros(len(self.vectors) + 1, np.int64),
                          items=np.zeros(0, np.int32), weights=np.zeros(0, np.float32),
                          longest=0)
        has_dir = self.context is not None
        items = ItemVectors(unit=self.unit, context=self.context if has_dir else self.unit,
                            has_context=has_dir, popularity=self.pop)
        categories = CategoryLists(of_row=self.item_category, rank=self.category_rank,
                                   indptr=self.category_indptr, rows=self.category_rows,
                                   listed=min(int(st.popular), self._max_category))
        return SignalInputs(sessions=packed, retrieved=retrieved, rules=rules,
                            neighbours=neighbours, items=items,
                            queries=QueryVectors(unit=q_unit, input=q_in),
                            categories=categories, repeat_decay=float(st.repeat_decay))

    def _candidates(self, sessions: Sessions, q_in: np.ndarray, q_unit: np.ndarray,
                    st: BlendSettings, n_c: int, has_dir: bool
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Directional and cosine candidate rows per query (-1 padded) from the indexes or the
        per-item tables (`BlendSettings.retrieval`)."""
        n_q = len(sessions.indptr) - 1
        n_cos = max(n_c // 4, 1)
        if st.retrieval == "table":
            if self.cos_table is None or (has_dir and self.dir_table is None):
                raise ValueError('retrieval = "table" needs the candidate tables '
                                 f"({BLEND.name} dir_table / cos_table); this model has none")
            w = np.float64(st.decay) ** np.arange(st.history)
            dir_rows = table_rows(sessions.indptr, sessions.items, self.dir_table, n_c, w) \
                if has_dir else np.zeros((n_q, 0), np.int64)
            return dir_rows, table_rows(sessions.indptr, sessions.items, self.cos_table, n_cos,
                                        w)
        dir_rows = self._search(q_in, n_c) if has_dir else np.zeros((n_q, 0), np.int64)
        return dir_rows, self._cos_search(q_unit, n_cos)

    def _queries(self, sessions: list[np.ndarray], st: BlendSettings
                 ) -> tuple[np.ndarray, np.ndarray]:
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

    def _query_vectors(self, sessions: Sessions, st: BlendSettings
                       ) -> tuple[np.ndarray, np.ndarray]:
        """`_queries` as one parallel numba kernel (no serial Python per session). Its
        float32 sums run in another order than numpy's matmul, so the query vectors may
        differ in the last bit: the "index" retrieval keeps `_queries`, whose searches then
        return exactly what older versions served."""
        w = (st.decay ** np.arange(st.history)).astype(np.float32)  # as `_queries` rounds them
        q_in, q_unit = query_vectors(sessions, self.vectors, self.unit, w)
        return q_in, unit_rows(q_unit)

    def _search(self, q: np.ndarray, k: int) -> np.ndarray:
        if self.search is not None:
            _, rows = self.search(np.ascontiguousarray(q, np.float32), k)
            return rows
        if len(self.context) >= FAISS_EXACT_FROM:
            return faiss_exact_top(q, self.context, k)
        return exact_top(q @ self.context.T, k)

    def _cos_search(self, q: np.ndarray, k: int) -> np.ndarray:
        if self.cos_search is not None:
            _, rows = self.cos_search(np.ascontiguousarray(q, np.float32), k)
            return rows
        if len(self.unit) >= FAISS_EXACT_FROM:
            return faiss_exact_top(q, self.unit, k)
        # blocks of queries: the [block, n] score matrix stays small
        return np.concatenate([exact_top(q[i:i + 256] @ self.unit.T, k)
                               for i in range(0, len(q), 256)]) if len(q) else \
            np.zeros((0, min(k, len(self.unit))), np.int64)


class SignalBatch:
    """The signals of one fixed set of query sessions under many settings: what
    calibration's blend search scores (`recembed.calibrate.choose_blend`).

    `flat(st)` equals ``flat_signals(model._gather(sessions, st))`` and `padded(st)` equals
    ``model.signals(sessions, st)``, bit for bit, but each part is computed once per distinct
    value of what it depends on: the query vectors per (retrieval, decay, history), the
    directional and cosine candidates per (retrieval, decay, history, candidates), the
    session-kNN items per (neighbours, candidates), the signals per all of those plus
    popular and repeat_decay (weights, temperature and exclude_last change no signal).

    Parameters
    ----------
    model : BlendModel
    sessions : list of int arrays
        Vector rows, most recent last (-1 = an item without a vector).
    block : int >= 1
        Queries per exact search (bounds its [block, n_items] score matrix; the searches of
        a block are the ones `model.signals` of that block runs).
    keep : int >= 1
        Signal sets kept (least recently used dropped first); the parts are all kept.
    shared : dict, optional
        The session-kNN parts of batches over the same session index (the same object) and
        the same sessions, kept across batches: calibration's candidates over the same rows
        share one index (`recembed.candidates.train_model`) and score the same queries, and
        the session-kNN items depend on nothing else. The caller keeps one dict; None = this
        batch's own.
    """

    def __init__(self, model: BlendModel, sessions: list[np.ndarray], *, block: int = 256,
                 keep: int = 8, shared: dict | None = None):
        if block < 1 or keep < 1:
            raise ValueError(f"block and keep must be >= 1, got {block}, {keep}")
        self.model = model
        self.sessions = [np.asarray(s, np.int64) for s in sessions]
        self.packed = pack_sessions(self.sessions)
        self.block, self.keep = int(block), int(keep)
        self.shared = shared
        # what `shared` entries are keyed by besides the settings: these exact sessions
        self._sessions_key = (self.packed.indptr.tobytes(), self.packed.items.tobytes()) \
            if shared is not None else None
        self._parts: dict[tuple, object] = {}
        self._flat: dict[tuple, FlatSignals] = {}
        self.built = 0  # signal sets computed (kernel runs), for the search's record

    def __len__(self) -> int:
        return len(self.sessions)

    @staticmethod
    def key(st: BlendSettings) -> tuple:
        """What the signals of `st` depend on (equal keys, equal signals)."""
        return (st.retrieval, float(st.decay), int(st.history), int(st.candidates),
                int(st.popular), _frozen(st.neighbours), float(st.repeat_decay))

    def _part(self, key: tuple, make: Callable[[], object]):
        if key not in self._parts:
            self._parts[key] = make()
        return self._parts[key]

    def flat(self, st: BlendSettings) -> FlatSignals:
        """The candidates and raw signals of every session under `st`, end to end."""
        key = self.key(st)
        if key in self._flat:
            self._flat[key] = self._flat.pop(key)  # most recently used last
            return self._flat[key]
        m, sess = self.model, self.sessions
        qkey = (st.retrieval, float(st.decay), int(st.history))
        q_in, q_unit = self._part(("queries", *qkey),
                                  lambda: m._query_pair(sess, self.packed, st))
        n_c = min(st.candidates, len(m.vectors))
        dir_rows, cos_rows = self._part(("candidates", *qkey, n_c),
                                        lambda: self._candidates(q_in, q_unit, st, n_c))
        nb_key = ("neighbours", _frozen(st.neighbours), n_c)
        nb = self._part(nb_key, lambda: self._neighbours(nb_key, st, n_c))
        flat = flat_signals(m._inputs(self.packed, dir_rows, cos_rows, nb, q_in, q_unit, st))
        self.built += 1
        self._flat[key] = flat
        while len(self._flat) > self.keep:
            self._flat.pop(next(iter(self._flat)))
        return flat

    def _neighbours(self, key: tuple, st: BlendSettings, n_c: int) -> NeighbourItems:
        """`model._neighbour_items` of the sessions, from `shared` when a batch over the same
        index and sessions computed it."""
        m = self.model
        if self.shared is None or m.neighbours is None:
            return m._neighbour_items(self.sessions, st, n_c)
        if self.shared.get("index") is not m.neighbours:
            self.shared.clear()  # another index: nothing kept applies
            self.shared["index"] = m.neighbours
        full = (key, len(m.vectors), self._sessions_key)
        if full not in self.shared:
            self.shared[full] = m._neighbour_items(self.sessions, st, n_c)
        return self.shared[full]

    def padded(self, st: BlendSettings) -> Signals:
        """`flat(st)` padded per query (`BlendModel.signals`)."""
        return padded_signals(self.flat(st))

    def _candidates(self, q_in: np.ndarray, q_unit: np.ndarray, st: BlendSettings,
                    n_c: int) -> tuple[np.ndarray, np.ndarray]:
        """`BlendModel._candidates` block by block of `block` sessions. Where those would be
        `faiss_exact_top` searches (index retrieval, no search given, a large catalogue) the
        same candidate sets come from `verified_exact_top` (the signals sort each query's
        candidates, so only the sets matter)."""
        m, n, b = self.model, len(self.sessions), self.block
        has_dir = m.context is not None
        if (st.retrieval == "index" and m.search is None and m.cos_search is None
                and len(m.vectors) >= FAISS_EXACT_FROM):
            dir_rows = verified_exact_top(q_in, m.context, n_c) if has_dir else \
                np.zeros((n, 0), np.int64)
            return dir_rows, verified_exact_top(q_unit, m.unit, max(n_c // 4, 1))
        parts = [m._candidates(pack_sessions(self.sessions[lo:lo + b]), q_in[lo:lo + b],
                               q_unit[lo:lo + b], st, n_c, m.context is not None)
                 for lo in range(0, max(n, 1), b)]
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def _frozen(d: dict) -> tuple:
    return tuple(sorted(d.items()))


def pack_sessions(sessions: list[np.ndarray]) -> Sessions:
    """int64 session arrays laid end to end (`Sessions`)."""
    return Sessions(indptr=offsets(sessions),
                    items=np.concatenate(sessions) if len(sessions) else np.zeros(0, np.int64))


def padded_signals(flat: FlatSignals) -> Signals:
    """`flat` padded to one width (at least 1) per query: rows -1, values 0, in_session
    False past each query's candidates."""
    n = len(flat.offsets) - 1
    counts = np.diff(flat.offsets)
    width = max(int(counts.max(initial=0)), 1)
    q = np.repeat(np.arange(n), counts)
    j = np.arange(len(flat.rows)) - flat.offsets[q]  # each candidate's place in its row
    p_rows = np.full((n, width), -1, np.int64)
    p_vals = np.zeros((n, width, len(SIGNALS)), np.float32)
    p_in = np.zeros((n, width), np.bool_)
    p_rows[q, j], p_vals[q, j], p_in[q, j] = flat.rows, flat.values, flat.in_session
    return Signals(p_rows, p_vals, p_in, flat.last)


@functools.lru_cache(maxsize=64)
def _params_of(items: tuple) -> SknnParams:
    nb = dict(items)
    return method_params(nb.pop("method", "stan"), **nb)


def neighbour_params(neighbours: dict) -> SknnParams:
    """`method_params` of a settings' neighbours dict, built once per distinct dict."""
    return _params_of(tuple(sorted(neighbours.items())))


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
    block : int >= 1
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
    """Candidate rows of each session from per-item lists.

    The item j steps back (weight ``weights[j]``; -1 items skipped but keeping their place)
    gives the first ``ceil(width * weights[j] / sum of the known items' weights)`` entries of
    its list.

    Parameters
    ----------
    s_indptr : int [n + 1]
        Session i is ``s_flat[s_indptr[i]:s_indptr[i + 1]]``.
    s_flat : int
        Vector rows, most recent last, -1 = an item without a vector.
    table : int32 [rows, w]
        `candidate_tables` output, -1 padded.
    width : int >= 0
        Candidates per session (at most w are read per item).
    weights : float [history]
        Decay weight of the item j steps back.

    Returns
    -------
    int64 [n, width + len(weights)], -1 padded, duplicates kept (the union removes them).
    """
    sessions = Sessions(indptr=np.asarray(s_indptr, np.int64),
                        items=np.asarray(s_flat, np.int64))
    return table_rows_kernel(sessions, table, int(min(width, table.shape[1])),
                             np.asarray(weights, np.float64))


def sequential_rules(sessions_item: np.ndarray, sessions_id: np.ndarray, n: int, *,
                     steps: int = 10, top: int = 100) -> Csr:
    """Rules a -> b for b following a within `steps` steps of a session, weight 1/distance,
    summed over sessions; the `top` heaviest per row kept.

    Parameters
    ----------
    sessions_item : int [E]
        Rows of vector space in session order, -1 = no vector (skipped).
    sessions_id : int [E]
        The session of each event (grouped).
    n : int
        Rows.
    steps : int >= 1
    top : int >= 1

    Returns
    -------
    Csr [n, n]: indptr int64, indices int32, data float32.
    """
    item = np.ascontiguousarray(sessions_item, np.int64)
    sid = np.ascontiguousarray(sessions_id)
    if item.shape != sid.shape or item.ndim != 1:
        raise ValueError(f"sessions_item {item.shape} and sessions_id {sid.shape} must be "
                         "1-d of one length")
    if steps < 1 or top < 1:
        raise ValueError(f"steps={steps} and top={top} must be >= 1")
    if len(item) and int(item.max()) >= n:
        raise ValueError(f"sessions_item holds row {int(item.max())} >= n={n}")
    # one pass per source row over its occurrences into a dense accumulator, instead of
    # np.unique over every (source, target) key: the same sums in the same order (d, then
    # position), so the same float64 weights and lists (benchmarks/RESULTS.md, "the rules
    # without np.unique")
    start, pos = _occurrences(item, n)
    # two passes of the same kernel: the kept length per row, then the rows in place (no
    # [n, top] staging arrays, 155 MB at 194k items)
    length = np.zeros(n, np.int64)
    _rule_rows(item, sid, start, pos, steps, top, np.zeros(n + 1, np.int64), length,
               np.zeros(0, np.int32), np.zeros(0, np.float32), True)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(length, out=indptr[1:])
    indices = np.empty(int(indptr[-1]), np.int32)
    data = np.empty(int(indptr[-1]), np.float32)
    _rule_rows(item, sid, start, pos, steps, top, indptr, length, indices, data, False)
    return Csr(indptr, indices, data)


# rows are dealt to this many interleaved chunks, each with its own accumulator: popular rows
# spread over the threads, and the result does not depend on the thread count
_RULE_CHUNKS = 64


@njit(cache=True, nogil=True)
def _occurrences(item, n):
    """(start int64 [n + 1], pos int64 [...]): the positions of each row's events, ascending."""
    start = np.zeros(n + 1, np.int64)
    for p in range(len(item)):
        if item[p] >= 0:
            start[item[p] + 1] += 1
    for a in range(n):
        start[a + 1] += start[a]
    pos = np.empty(start[n], np.int64)
    fill = start[:n].copy()
    for p in range(len(item)):
        a = item[p]
        if a >= 0:
            pos[fill[a]] = p
            fill[a] += 1
    return start, pos


@njit(cache=True, nogil=True, parallel=True)
def _rule_rows(item, sid, start, pos, steps, top, indptr, length, indices, data, count_only):
    """Per source row a: weight 1/d summed over the events d <= `steps` after each occurrence
    in its session (other rows, with a vector), the `top` heaviest kept (ties: lower column),
    written in column order at indptr[a]; `count_only` writes only the kept `length`."""
    n = len(start) - 1
    e = len(item)
    chunks = _RULE_CHUNKS
    for c in prange(chunks):
        acc = np.zeros(n, np.float64)
        seen = np.zeros(n, np.bool_)
        touched = np.empty(n, np.int64)
        for a in range(c, n, chunks):
            m = 0
            for d in range(1, steps + 1):
                w = 1.0 / d
                for j in range(start[a], start[a + 1]):
                    p = pos[j]
                    q = p + d
                    if q >= e or sid[q] != sid[p]:
                        continue
                    b = item[q]
                    if b < 0 or b == a:
                        continue
                    if not seen[b]:
                        seen[b] = True
                        touched[m] = b
                        m += 1
                    acc[b] += w
            k = min(m, top)
            if count_only:
                length[a] = k
            elif k > 0:
                cols = np.sort(touched[:m])
                ws = np.empty(m, np.float64)
                for i in range(m):
                    ws[i] = -acc[cols[i]]
                keep = np.sort(cols[np.argsort(ws, kind="mergesort")[:k]])
                o = indptr[a]
                for i in range(k):
                    indices[o + i] = keep[i]
                    data[o + i] = acc[keep[i]]
            for i in range(m):
                acc[touched[i]] = 0.0
                seen[touched[i]] = False


# from this many items the exact searches without an index (calibration's candidate models)
# go through faiss.knn: 143,000 items x 1,024 queries, k = 200: 9.4 s with numpy's product +
# argpartition, 2.4 s with faiss on one thread, the same sets (benchmarks/RESULTS.md, "Serving
# for real, third round"); below it numpy's exact_top, whose results older versions keep
FAISS_EXACT_FROM = 20_000


def faiss_exact_top(q: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """int64 [len(q), min(k, n)]: the rows of `items` with the k largest inner products with
    each query, exact (faiss.knn: blocked BLAS products and a heap; no [len(q), n] matrix),
    best first (`exact_top` of ``q @ items.T`` up to ties and order)."""
    import faiss

    k = min(k, len(items))
    if k <= 0 or not len(q):
        return np.zeros((len(q), max(k, 0)), np.int64)
    _, rows = faiss.knn(np.ascontiguousarray(q, np.float32),
                        np.ascontiguousarray(items, np.float32), k,
                        metric=faiss.METRIC_INNER_PRODUCT)
    return rows.astype(np.int64)


def verified_exact_top(q: np.ndarray, items: np.ndarray, k: int, *, block: int = 512
                       ) -> np.ndarray:
    """int64 [len(q), min(k, n)]: the same row set per query as `faiss_exact_top` (in another
    order), from numpy's float32 product block by block and a top-(k + 1) selection
    (`_top_set`): 2-4x faster on calibration's candidate models, which spent most of the
    blend search in faiss.knn (benchmarks/RESULTS.md, "calibration cost on the 10M-event
    log").

    Two float32 computations of a d-term dot product differ by at most 2 gamma_d sum |x_i y_i|
    <= 2 gamma_d |x| |y| (gamma_d = d u / (1 - d u), u = 2**-24: Higham, any summation order),
    so where a query's k-th and (k + 1)-th products here are further apart than twice that
    (with the largest item norm), faiss's products rank the same k rows first. The other
    queries (near ties at the boundary, non-finite scores) go through `faiss_exact_top`
    itself: the sets equal faiss's in every case.

    Parameters
    ----------
    q : float32 [nq, d]
    items : float32 [n, d]
    k : int
    block : int >= 2
        Queries per product (bounds its [block, n] matrix).
    """
    n, d = items.shape
    k = min(int(k), n)
    if k <= 0 or not len(q):
        return np.zeros((len(q), max(k, 0)), np.int64)
    if k >= n:
        return faiss_exact_top(q, items, k)
    q = np.ascontiguousarray(q, np.float32)
    items = np.ascontiguousarray(items, np.float32)
    u = 2.0 ** -24
    gamma = d * u / (1.0 - d * u)
    item_max = float(np.sqrt((items.astype(np.float64) ** 2).sum(axis=1).max()))
    out = np.empty((len(q), k), np.int64)
    buf = ScoreBuffer(n)
    for lo in range(0, len(q), block):
        qb = q[lo:lo + block]
        rows, gap = _top_set(np.matmul(qb, items.T, out=buf.rows(len(qb))), k)
        bound = 4.0 * gamma * np.sqrt((qb.astype(np.float64) ** 2).sum(axis=1)) * item_max
        ok = gap > bound
        out[lo:lo + len(qb)][ok] = rows[ok]
        if not ok.all():
            bad = np.flatnonzero(~ok)
            out[lo + bad] = faiss_exact_top(qb[bad], items, k)
    return out


@njit(parallel=True, cache=True, nogil=True)
def _top_set(scores, k):
    """(rows int64 [n, k], gap float64 [n]): per row the columns of the k largest scores
    (unordered) and the k-th minus the (k + 1)-th largest score (-1 when a score is NaN or
    infinite); 0 < k < columns."""
    n, m = scores.shape
    kk = k + 1
    rows = np.zeros((n, k), np.int64)
    gap = np.full(n, -1.0)
    for i in prange(n):
        hv = np.empty(kk, np.float32)  # min-heap of the k + 1 largest: the root is the (k+1)-th
        hi = np.empty(kk, np.int64)
        size = 0
        bad = False
        for j in range(m):
            s = scores[i, j]
            if not np.isfinite(s):
                bad = True
                break
            if size < kk:
                c = size
                size += 1
                hv[c] = s
                hi[c] = j
                while c > 0:
                    p = (c - 1) >> 1
                    if hv[c] < hv[p]:
                        hv[c], hv[p] = hv[p], hv[c]
                        hi[c], hi[p] = hi[p], hi[c]
                        c = p
                    else:
                        break
            elif s > hv[0]:
                hv[0] = s
                hi[0] = j
                c = 0
                while True:
                    a = 2 * c + 1
                    if a >= kk:
                        break
                    w = a + 1 if a + 1 < kk and hv[a + 1] < hv[a] else a
                    if hv[w] < hv[c]:
                        hv[c], hv[w] = hv[w], hv[c]
                        hi[c], hi[w] = hi[w], hi[c]
                        c = w
                    else:
                        break
        if bad or size < kk:
            continue
        # the k-th largest is the smallest of the root's children
        kth = hv[1] if kk == 2 else min(hv[1], hv[2])
        gap[i] = np.float64(kth) - np.float64(hv[0])
        rows[i] = hi[1:kk]
    return rows, gap


def exact_top(scores: np.ndarray, k: int) -> np.ndarray:
    """int64 [n, min(k, C)]: the columns of the k largest scores of each row (unordered): the
    sets of ``np.argpartition(-scores, k - 1, axis=1)[:, :k]`` in every case.

    A row whose k-th and (k + 1)-th largest scores differ (finite) has one such set, and it
    comes from the parallel heap of `_top_set`; the other rows (a tie at the boundary, a
    non-finite score) go through argpartition itself, so ties keep numpy's choice. On the
    demo's [256, 3,240] blocks: 5.4 ms against 8.9 ms at k = 200, 1.8 against 8.7 at k = 50
    (benchmarks/RESULTS.md, "candidates trained ahead")."""
    n, c = scores.shape
    k = min(k, c)
    if k <= 0:
        return np.zeros((n, 0), np.int64)
    if k >= c or scores.dtype != np.float32 or n < PARALLEL_FROM:
        return _argpartition_top(scores, k)
    rows, gap = _top_set(scores, k)
    bad = gap <= 0.0
    if bad.any():
        rows[bad] = _argpartition_top(scores[bad], k)
    return rows


def _argpartition_top(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argpartition(-scores, k - 1, axis=1)[:, :k].astype(np.int64)
