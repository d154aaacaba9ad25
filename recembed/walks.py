"""DeepWalk and node2vec random walks over a CSR item graph, in numba kernels.

- DeepWalk: the next node is drawn proportionally to edge weight from per-row alias tables
  (Walker/Vose): O(1) per step. Each edge slot is one 12-byte record (neighbour, alias
  probability, alias neighbour), so a step touches one record.
- Walks are memory-latency bound, so each thread advances a block of `_LANES` walks in lockstep:
  their loads are independent and the CPU overlaps the cache misses. On the 200k-node item graph
  of a 10M-event log this took the DeepWalk kernel from 10M to 50-90M steps/s (2 threads) and
  node2vec (0.5, 2) from 4.9M to 6-8M; one walk at a time waits on every miss. Measured
  alternatives: cumulative weights + binary search ran ~2x slower than alias tables, separate
  prob/alias/index arrays 1.6x slower than packed records, and batching the node2vec binary
  searches one probe per lane per sweep gained nothing.
- node2vec: exact second-order transitions P(x | t, v) ∝ alpha_pq(t, x) * w(v, x) by rejection
  sampling (KnightKing) without any second-order table: memory stays O(edges). Propose x from
  the first-order alias table and accept with probability alpha(t, x) / M; a draw below
  min(alpha) / M is accepted without looking at x, otherwise "x neighbours t" is a binary search
  in t's sorted row (O(log degree), so hubs stay cheap). When returning is the most likely move
  (1/p > max(1, 1/q)) the return node t is folded out of the envelope as KnightKing's "outlier":
  M = max(1, 1/q) and t gets a box of its own of mass w(v, t) * (1/p - M), which halves the
  proposals for p < 1. p = q = 1 is DeepWalk and runs its kernel.
- Every walk has its own random stream, derived from (seed, walk index), so the corpus is
  byte-identical whatever the number of threads.
- Walks are generated, formatted (a per-node table of ASCII codes) and written in chunks, the
  write of one chunk overlapping the walks of the next; the corpus never exists as a Python list.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numba
import numpy as np
import scipy.sparse as sp
from numba import njit, prange

from recembed.artifacts import atomic_path
from recembed.corpus import format_padded, padded_text_size, token_table
from recembed.progress import progress_bar

if TYPE_CHECKING:
    from recembed.runtime import Runtime

log = logging.getLogger("recembed")

_LANES = 32  # walks advanced in lockstep per thread (16-64 measured within 15% of each other)
_CHUNK_TOKENS = 8_000_000  # walk tokens per chunk: ~32 MB of codes + ~60 MB of text


@dataclass(frozen=True)
class WalkParams:
    """Which walks are written (`[walks]`, the run's seed); keywords of `random_walks`.

    Parameters
    ----------
    method : {"deepwalk", "node2vec"}
        First-order walks, or node2vec's second-order ones.
    walks_per_node : int >= 1
        Walks started per node with out-edges (or drawn by popularity, as many in all).
    walk_length : int >= 2, nodes
        Nodes per walk at most.
    p, q : float > 0
        node2vec return and in-out parameters (1, 1 = DeepWalk).
    seed : int >= 0
        Seed of the start order and of every walk's random stream.
    max_tokens : int >= 0, tokens
        Cap on walks x walk_length; 0 = no cap.
    max_tokens_source : str
        What set `max_tokens`, for the message when it applies (a config key, or the
        training-amount rule of `recembed.settings.walk_params`).
    """

    method: str = "deepwalk"
    walks_per_node: int = 10
    walk_length: int = 20
    p: float = 1.0
    q: float = 1.0
    seed: int = 0
    max_tokens: int = 0
    max_tokens_source: str = "walks.max_tokens"


@dataclass
class WalkStats:
    """What a walk run produced: walks written, total steps (tokens), seconds (all of it), steps
    per second, and where the seconds went: preparing the graph, walking, formatting text, and
    waiting for the disk (writes overlap the walks; this is the part they did not hide)."""

    walks: int
    tokens: int
    seconds: float
    steps_per_s: float
    prepare_s: float = 0.0
    walk_s: float = 0.0
    format_s: float = 0.0
    write_wait_s: float = 0.0


@dataclass
class WalkGraph:
    """A CSR graph prepared for walking: row offsets (int64 [n+1]), sorted neighbours (int32
    [nnz]), edge records (int32 [nnz, 3]: neighbour, alias probability as float32 bits, alias
    neighbour), edge weights (float32 [nnz]), row weight sums (float64 [n]) and row maxima."""

    indptr: np.ndarray
    indices: np.ndarray
    records: np.ndarray
    weights: np.ndarray
    row_sum: np.ndarray
    row_max: np.ndarray

    @property
    def n(self) -> int:
        return len(self.indptr) - 1


def random_walks(
    g: sp.csr_matrix,
    out_path: str | Path,
    *,
    method: str = "deepwalk",
    walks_per_node: int = 10,
    walk_length: int = 20,
    p: float = 1.0,
    q: float = 1.0,
    popularity: np.ndarray | None = None,
    seed: int = 0,
    threads: int = 0,
    chunk_walks: int = 0,
    progress: bool = False,
    max_tokens: int = 0,
    max_tokens_source: str = "walks.max_tokens",
) -> WalkStats:
    """Write random walks over `g` to `out_path`, one walk per line as space-separated node codes.

    Walks start from every node with out-edges, `walks_per_node` rounds in a seeded node order,
    or (when `popularity` is given) from start nodes drawn proportionally to it. Walks stop early
    at dangling nodes; walks of a single node are not written. `chunk_walks` (0 = about 8M
    tokens' worth) bounds memory. Seconds include preparing the graph. `max_tokens` > 0 caps
    the corpus at about that many tokens (walks x walk_length): the first walks of the start
    order are kept, so each node keeps about the same number of walks.
    """
    t0 = time.perf_counter()
    check_walk_args(method, walks_per_node, walk_length, p, q)
    if threads > 0:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    wg = prepare_graph(g)
    starts = walk_starts(wg.indptr, walks_per_node, seed, popularity)
    starts = capped_starts(starts, walk_length, max_tokens, max_tokens_source)
    packed, lens = token_table(wg.n)
    clock = {"prepare": time.perf_counter() - t0, "walk": 0.0, "format": 0.0, "wait": 0.0}
    chunk = min(chunk_walks or max(1, _CHUNK_TOKENS // walk_length), max(1, len(starts)))
    ids = np.empty((chunk, walk_length), np.int32)
    # two text buffers: the writer thread writes one while the next chunk is formatted
    texts = [np.empty(padded_text_size(ids.shape, lens), np.uint8) for _ in range(2)]
    tokens = walks = 0
    bar = progress_bar(len(starts), progress, unit="walk", desc="walks", mininterval=1.0)
    try:
        with atomic_path(out_path) as tmp, open(tmp, "wb") as fh, ThreadPoolExecutor(1) as writer:
            pending = None
            for c, lo in enumerate(range(0, len(starts), chunk)):
                part = ids[:min(chunk, len(starts) - lo)]
                t1 = time.perf_counter()
                walk_into(method, wg, starts[lo:lo + len(part)], seed, lo, p, q, part)
                t2 = time.perf_counter()
                text, n_lines, n_tokens = format_padded(part, packed, lens, out=texts[c % 2])
                t3 = time.perf_counter()
                if pending is not None:
                    pending.result()  # the previous chunk, in the other buffer
                clock["walk"] += t2 - t1
                clock["format"] += t3 - t2
                clock["wait"] += time.perf_counter() - t3
                pending = writer.submit(fh.write, text)
                tokens += n_tokens
                walks += n_lines
                if bar is not None:
                    bar.update(len(part))
            t = time.perf_counter()
            if pending is not None:
                pending.result()
            fh.flush()
            os.fsync(fh.fileno())  # the stage marks itself done next: the corpus must be on disk
            clock["wait"] += time.perf_counter() - t
    finally:
        if bar is not None:
            bar.close()
    secs = time.perf_counter() - t0
    return WalkStats(walks, tokens, secs, tokens / secs if secs else 0.0, clock["prepare"],
                     clock["walk"], clock["format"], clock["wait"])


def capped_starts(starts: np.ndarray, walk_length: int, max_tokens: int,
                  source: str = "walks.max_tokens") -> np.ndarray:
    """The walk starts that fit `max_tokens` (walks x `walk_length`; 0 = no cap), logged with
    what set the cap (`source`) and how many walks it drops.

    The budget holds whatever the graph: the first rounds of the seeded start order (every node
    once before any twice), so fewer walks per node, never a skewed sample.
    """
    if max_tokens <= 0 or len(starts) * walk_length <= max_tokens:
        return starts
    keep = max(1, max_tokens // walk_length)
    log.warning("%s = %s tokens: walking %s of the %s walks of up to %d steps (fewer walks "
                "per node: the first rounds of the seeded start order)", source,
                f"{max_tokens:,}", f"{keep:,}", f"{len(starts):,}", walk_length)
    return starts[:keep]


def walks_from_graph_file(graph_path: str | Path, walks_path: str | Path, params: WalkParams,
                          runtime: Runtime,
                          popularity_path: str | Path | None = None) -> WalkStats:
    """The walks stage, local engine: `random_walks` over a saved graph (the engine-neutral
    signature `recembed.spark.walks` shares).

    Parameters
    ----------
    graph_path : str or pathlib.Path
        The graph artifact (`recembed.graph.save_graph`).
    walks_path : str or pathlib.Path
        walks.txt to write.
    params : WalkParams
        Which walks.
    runtime : recembed.runtime.Runtime
        Its `threads` (>= 1) and `progress`.
    popularity_path : str or pathlib.Path, optional
        A vocabulary whose `count` column weights the start nodes (`start_popularity`); None
        starts `walks_per_node` walks from every node.

    Returns
    -------
    WalkStats
    """
    from recembed.graph import load_graph

    return random_walks(load_graph(graph_path), walks_path, threads=runtime.threads,
                        progress=runtime.progress, popularity=start_popularity(popularity_path),
                        **asdict(params))


def start_popularity(vocabulary_path: str | Path | None) -> np.ndarray | None:
    """Start-node weights of popularity-drawn walks: the vocabulary's event counts.

    Parameters
    ----------
    vocabulary_path : str, pathlib.Path or None
        The vocabulary artifact (`count` int64 per item code); None = no popularity.

    Returns
    -------
    numpy.ndarray or None
        int64 counts (>= 0) indexed by item code, or None.
    """
    if vocabulary_path is None:
        return None
    import pandas as pd

    return pd.read_parquet(vocabulary_path, columns=["count"])["count"].to_numpy()


def walk_array(
    g: sp.csr_matrix, starts: np.ndarray, *, method: str = "deepwalk", walk_length: int = 20,
    p: float = 1.0, q: float = 1.0, seed: int = 0,
) -> np.ndarray:
    """Walks from the given start nodes as an int32 array [len(starts), walk_length], -1 padded.

    For tests and small jobs; `random_walks` streams large corpora to disk instead.
    """
    check_walk_args(method, 1, walk_length, p, q)
    wg = prepare_graph(g)
    starts = np.asarray(starts, np.int32)
    if len(starts) and (starts.min() < 0 or starts.max() >= wg.n):
        raise ValueError(f"start nodes must be in [0, {wg.n})")
    out = np.empty((len(starts), walk_length), np.int32)
    walk_into(method, wg, starts, seed, 0, p, q, out)
    return out


def prepare_graph(g: sp.csr_matrix) -> WalkGraph:
    """The alias tables and row statistics of a square CSR graph with positive finite weights."""
    if not sp.issparse(g) or g.shape[0] != g.shape[1]:
        raise ValueError("the graph must be a square scipy.sparse matrix")
    g = g.tocsr()
    if not g.has_sorted_indices:
        g = g.copy()
        g.sort_indices()
    weights = np.asarray(g.data, np.float32)
    if len(weights) and not (np.isfinite(weights).all() and weights.min() > 0):
        raise ValueError("edge weights must be finite and positive")
    indptr = g.indptr.astype(np.int64)
    indices = np.asarray(g.indices, np.int32)
    records, row_sum, row_max = _alias_records(indptr, indices, weights)
    return WalkGraph(indptr, indices, records, weights, row_sum, row_max)


def walk_starts(
    indptr: np.ndarray, walks_per_node: int, seed: int, popularity: np.ndarray | None = None
) -> np.ndarray:
    """Start node of every walk (int32): rounds over a seeded permutation of non-dangling nodes,
    or draws proportional to `popularity` (same total) when given."""
    has_out = np.flatnonzero(np.diff(indptr) > 0).astype(np.int32)
    rng = np.random.default_rng(seed)
    if popularity is not None:
        w = np.asarray(popularity, np.float64)[has_out]
        if w.sum() <= 0:
            raise ValueError("popularity weights sum to zero over nodes with out-edges")
        return rng.choice(has_out, size=walks_per_node * len(has_out), p=w / w.sum()).astype(
            np.int32)
    return np.concatenate([rng.permutation(has_out) for _ in range(walks_per_node)]) if len(
        has_out) else np.zeros(0, np.int32)


def walk_into(method: str, wg: WalkGraph, starts, seed: int, first_id: int, p: float, q: float,
              out: np.ndarray) -> None:
    """Walk from each of `starts` into `out` with the numba kernels (both engines' walker).

    Parameters
    ----------
    method : {"deepwalk", "node2vec"}
    wg : WalkGraph
        `prepare_graph` of the graph.
    starts : numpy.ndarray
        int32 start nodes.
    seed : int >= 0
        The run's seed; walk i's stream is derived from (seed, first_id + i).
    first_id : int >= 0
        Global index of the first walk (so any split into tasks gives the same walks).
    p, q : float > 0
        node2vec parameters (both 1 = DeepWalk).
    out : numpy.ndarray
        int32 [len(starts), walk_length], filled; -1 after a walk's dangling end.
    """
    probs = wg.records.view(np.float32)  # the same records, read as float32 for the probability
    if method == "deepwalk" or (p == 1.0 and q == 1.0):
        _deepwalk_kernel(wg.indptr, wg.records, probs, starts, np.uint64(seed), first_id, out)
    else:
        _node2vec_kernel(wg.indptr, wg.indices, wg.records, probs, wg.weights, wg.row_sum,
                         wg.row_max, starts, np.uint64(seed), first_id, 1.0 / p, 1.0 / q, out)


# ---------------------------------------------------------------- numba kernels


@njit(inline="always")
def _splitmix(x):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    z = x
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x, z ^ (z >> np.uint64(31))


@njit(inline="always")
def _uniform(state):
    state, z = _splitmix(state)
    return state, (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(inline="always")
def _walk_state(seed, walk_id):
    # an independent stream per walk: hash (seed, walk id) into a splitmix64 state
    _, s = _splitmix(seed ^ (np.uint64(walk_id) * np.uint64(0xD1B54A32D192ED03)))
    return s


@njit(inline="always")
def _lanes_start(i0, m, starts, seed, first_id, out, cur, rng):
    """The prologue of both kernels: lanes 0..m-1 take walks i0.., each with its own random
    stream, and write their start node."""
    for j in range(m):
        rng[j] = _walk_state(seed, first_id + i0 + j)
        cur[j] = starts[i0 + j]
        out[i0 + j, 0] = cur[j]


@njit(inline="always")
def _draw(indptr, records, probs, v, state):
    """v's next node, drawn proportionally to edge weight: the integer part of u * degree picks
    a slot, the fraction decides its neighbour or its alias. Returns (state, node)."""
    state, u = _uniform(state)
    lo = indptr[v]
    x = u * (indptr[v + 1] - lo)
    k = int(x)
    # one expression, so it compiles to a select instead of a branch the CPU mispredicts
    return state, records[lo + k, 0] if x - k < probs[lo + k, 1] else records[lo + k, 2]


@njit(inline="always")
def _find(indices, a, b, x):
    """Slot of x in the sorted slice indices[a:b], or -1."""
    while a < b:
        m = (a + b) >> 1
        y = indices[m]
        if y < x:
            a = m + 1
        elif y > x:
            b = m
        else:
            return m
    return -1


@njit(inline="always")
def _attempt(indptr, indices, records, probs, weights, row_sum, row_max, v, t, state, env, box,
             sure):
    """One node2vec rejection-sampling attempt at v coming from t: (state, x, u) where u < 0
    means x is accepted, else x still needs the check u * env < alpha(t, x). A rejected attempt
    starts over here, box included."""
    if box > 0.0:
        state, u0 = _uniform(state)
        # the box wins iff u0 * (E + W_v M) < E with E = w(v, t) * box; row_max bounds w(v, t),
        # so most draws rule the box out without looking t up in v's row
        if u0 * row_sum[v] * env < row_max[v] * box * (1.0 - u0):
            e = _find(indices, indptr[v], indptr[v + 1], t)
            if e >= 0:
                big = weights[e] * box
                if u0 * (big + row_sum[v] * env) < big:
                    return state, t, -1.0
    state, x = _draw(indptr, records, probs, v, state)
    state, u = _uniform(state)
    if u < sure:
        return state, x, -1.0
    return state, x, u


@njit(parallel=True, cache=True, nogil=True)
def _deepwalk_kernel(indptr, records, probs, starts, seed, first_id, out):
    n, length = out.shape
    for b in prange((n + _LANES - 1) // _LANES):
        i0 = b * _LANES
        m = min(_LANES, n - i0)
        cur = np.empty(_LANES, np.int64)
        rng = np.empty(_LANES, np.uint64)
        _lanes_start(i0, m, starts, seed, first_id, out, cur, rng)
        for s in range(1, length):
            for j in range(m):
                v = cur[j]
                if v < 0:
                    out[i0 + j, s] = -1
                    continue
                if indptr[v] == indptr[v + 1]:  # dangling: the walk ends here
                    cur[j] = -1
                    out[i0 + j, s] = -1
                    continue
                state, nxt = _draw(indptr, records, probs, v, rng[j])
                rng[j] = state
                cur[j] = nxt
                out[i0 + j, s] = nxt


@njit(parallel=True, cache=True, nogil=True)
def _node2vec_kernel(indptr, indices, records, probs, weights, row_sum, row_max, starts, seed,
                     first_id, inv_p, inv_q, out):
    n, length = out.shape
    env = max(1.0, inv_q)  # envelope height M for every node but the return node
    box = inv_p - env  # > 0: the return node t gets an extra box of mass w(v, t) * box
    a_ret = min(inv_p, env)  # acceptance numerator of t drawn from the first-order proposal
    sure = min(a_ret, 1.0, inv_q) / env  # acceptance draws below this need no edge check
    for b in prange((n + _LANES - 1) // _LANES):
        i0 = b * _LANES
        m = min(_LANES, n - i0)
        cur = np.empty(_LANES, np.int64)
        prev = np.empty(_LANES, np.int64)
        rng = np.empty(_LANES, np.uint64)
        cand = np.empty(_LANES, np.int64)  # a proposal waiting for its edge check
        cand_u = np.empty(_LANES, np.float64)
        waiting = np.empty(_LANES, np.int64)
        _lanes_start(i0, m, starts, seed, first_id, out, cur, rng)
        for j in range(m):
            prev[j] = -1
        for s in range(1, length):
            # pass 1: end walks at dangling nodes, take first steps (first order)
            n_wait = 0
            for j in range(m):
                v = cur[j]
                if v >= 0 and indptr[v] == indptr[v + 1]:
                    v = -1
                    cur[j] = -1
                if v < 0:
                    out[i0 + j, s] = -1
                    continue
                t = prev[j]
                state = rng[j]
                if t < 0:  # first step: first order
                    state, x = _draw(indptr, records, probs, v, state)
                    rng[j] = state
                    prev[j] = v
                    cur[j] = x
                    out[i0 + j, s] = x
                    continue
                cand[j] = -1  # no proposal yet
                waiting[n_wait] = j
                n_wait += 1
            # pass 2: the lanes propose and check in lockstep until every one has accepted
            while n_wait > 0:
                k = 0
                for r in range(n_wait):
                    j = waiting[r]
                    v = cur[j]
                    t = prev[j]
                    x = cand[j]
                    if x >= 0:
                        if x == t:
                            a = a_ret
                        elif _find(indices, indptr[t], indptr[t + 1], x) >= 0:
                            a = 1.0
                        else:
                            a = inv_q
                        if cand_u[j] * env < a:
                            prev[j] = v
                            cur[j] = x
                            out[i0 + j, s] = x
                            continue
                    state, x, u = _attempt(indptr, indices, records, probs, weights, row_sum,
                                           row_max, v, t, rng[j], env, box, sure)
                    rng[j] = state
                    if u < 0.0:
                        prev[j] = v
                        cur[j] = x
                        out[i0 + j, s] = x
                        continue
                    cand[j] = x
                    cand_u[j] = u
                    waiting[k] = j
                    k += 1
                n_wait = k


@njit(parallel=True, cache=True, nogil=True)
def _alias_records(indptr, indices, weights):
    """Per-row alias tables (Vose) packed as edge records, plus row weight sums and maxima."""
    n = len(indptr) - 1
    records = np.empty((len(indices), 3), np.int32)
    probs = records.view(np.float32)
    row_sum = np.zeros(n, np.float64)
    row_max = np.zeros(n, np.float32)
    n_blocks = min(n, 256)
    for b in prange(n_blocks):
        r0 = b * n // n_blocks
        r1 = (b + 1) * n // n_blocks
        dmax = 0
        for v in range(r0, r1):
            dmax = max(dmax, indptr[v + 1] - indptr[v])
        scaled = np.empty(dmax, np.float64)
        stack = np.empty(dmax, np.int64)  # small slots from the front, large from the back
        for v in range(r0, r1):
            lo = indptr[v]
            d = indptr[v + 1] - lo
            if d == 0:
                continue
            total = 0.0
            top = 0.0
            for k in range(d):
                total += weights[lo + k]
                top = max(top, weights[lo + k])
            row_sum[v] = total
            row_max[v] = top
            ns = 0
            nl = d
            for k in range(d):
                records[lo + k, 0] = indices[lo + k]
                scaled[k] = weights[lo + k] * d / total
                if scaled[k] < 1.0:
                    stack[ns] = k
                    ns += 1
                else:
                    nl -= 1
                    stack[nl] = k
            while ns > 0 and nl < d:
                ns -= 1
                sm = stack[ns]
                lg = stack[nl]
                probs[lo + sm, 1] = scaled[sm]
                records[lo + sm, 2] = indices[lo + lg]
                scaled[lg] -= 1.0 - scaled[sm]
                if scaled[lg] < 1.0:
                    nl += 1
                    stack[ns] = lg
                    ns += 1
            for k in range(nl, d):  # leftovers are 1 up to rounding
                probs[lo + stack[k], 1] = 1.0
                records[lo + stack[k], 2] = indices[lo + stack[k]]
            for k in range(ns):
                probs[lo + stack[k], 1] = 1.0
                records[lo + stack[k], 2] = indices[lo + stack[k]]
    return records, row_sum, row_max


# ---------------------------------------------------------------- helpers


def check_walk_args(method: str, walks_per_node: int, walk_length: int, p: float,
                    q: float) -> None:
    """Raise ValueError unless method is "deepwalk" / "node2vec", walks_per_node >= 1,
    walk_length >= 2 and p, q > 0 (see `WalkParams`)."""
    if method not in ("deepwalk", "node2vec"):
        raise ValueError(f"walk method must be 'deepwalk' or 'node2vec', got {method!r}")
    if walks_per_node < 1 or walk_length < 2:
        raise ValueError("walks_per_node must be >= 1 and walk_length >= 2")
    if not (p > 0 and q > 0):
        raise ValueError(f"node2vec p and q must be > 0, got p={p}, q={q}")


