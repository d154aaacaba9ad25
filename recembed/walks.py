"""DeepWalk and node2vec random walks over a CSR item graph, in numba kernels.

- DeepWalk: the next node is drawn proportionally to edge weight from per-row alias tables
  (Walker/Vose): O(1) per step. Each edge slot is one 12-byte record (neighbour, alias
  probability, alias neighbour), so a step costs two cache misses (the row offsets and the
  record). Walks are memory-latency bound: on a 200k-node item graph a binary search over
  cumulative weights ran about 2x slower end to end (2.6M vs 5.4M steps/s), and separate
  prob/alias/index arrays reached 6.0M steps/s in the kernel against 9.9M for packed records.
- node2vec: exact second-order transitions P(x | t, v) ∝ alpha_pq(t, x) * w(v, x) by rejection
  sampling (KnightKing): propose x from the first-order alias table, accept with probability
  alpha(t, x) / max(alpha). A draw below min(alpha) / max(alpha) is accepted without looking at
  x at all (so p = q = 1 costs what DeepWalk costs); otherwise whether x neighbours t is a binary
  search in t's sorted row. No second-order table is ever built: memory stays O(edges) and hubs
  cost O(log degree) per checked step.
- Every walk has its own random stream, derived from (seed, walk index), so the corpus is
  byte-identical whatever the number of threads.
- Walks are generated and written in chunks; the corpus never exists as a Python list.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import scipy.sparse as sp
from numba import njit, prange

from recembed.corpus import format_lines, padded_to_lines

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class WalkStats:
    """What a walk run produced: walks written, total steps (tokens), seconds, steps per second."""

    walks: int
    tokens: int
    seconds: float
    steps_per_s: float


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
    chunk_walks: int = 200_000,
    progress: bool = False,
) -> WalkStats:
    """Write random walks over `g` to `out_path`, one walk per line as space-separated node codes.

    Walks start from every node with out-edges, `walks_per_node` rounds in a seeded node order,
    or (when `popularity` is given) from start nodes drawn proportionally to it. Walks stop early
    at dangling nodes; walks of a single node are not written.
    """
    t0 = time.perf_counter()
    indptr, table = prepare_csr(g)
    _check_walk_args(method, walks_per_node, walk_length, p, q)
    starts = walk_starts(indptr, walks_per_node, seed, popularity)
    if threads > 0:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    tokens = walks = 0
    bar = _bar(len(starts), progress)
    with open(tmp, "wb") as fh:
        for lo in range(0, len(starts), chunk_walks):
            chunk = starts[lo:lo + chunk_walks]
            buf = np.full((len(chunk), walk_length), -1, np.int32)
            _walk(method, indptr, table, chunk, seed, lo, p, q, buf)
            toks, offs = padded_to_lines(buf)
            fh.write(format_lines(toks, offs).tobytes())
            tokens += len(toks)
            walks += len(offs) - 1
            if bar is not None:
                bar.update(len(chunk))
        fh.flush()
        os.fsync(fh.fileno())
    if bar is not None:
        bar.close()
    os.replace(tmp, out_path)
    secs = time.perf_counter() - t0
    return WalkStats(walks, tokens, secs, tokens / secs if secs else 0.0)


def walk_array(
    g: sp.csr_matrix, starts: np.ndarray, *, method: str = "deepwalk", walk_length: int = 20,
    p: float = 1.0, q: float = 1.0, seed: int = 0,
) -> np.ndarray:
    """Walks from the given start nodes as an int32 array [len(starts), walk_length], -1 padded.

    For tests and small jobs; `random_walks` streams large corpora to disk instead.
    """
    indptr, table = prepare_csr(g)
    _check_walk_args(method, 1, walk_length, p, q)
    starts = np.asarray(starts, np.int32)
    buf = np.full((len(starts), walk_length), -1, np.int32)
    _walk(method, indptr, table, starts, seed, 0, p, q, buf)
    return buf


def prepare_csr(g: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(indptr int64, edge records int32 [nnz, 3]) of a CSR graph: per edge slot its neighbour
    (rows sorted), its alias probability (float32 bits) and its alias neighbour."""
    if not sp.issparse(g) or g.shape[0] != g.shape[1]:
        raise ValueError("the graph must be a square scipy.sparse matrix")
    g = g.tocsr()
    if not g.has_sorted_indices:
        g = g.copy()
        g.sort_indices()
    data = np.asarray(g.data, np.float64)
    if len(data) and (not np.isfinite(data).all() or data.min() <= 0):
        raise ValueError("edge weights must be finite and positive")
    indptr = g.indptr.astype(np.int64)
    indices = g.indices.astype(np.int32)
    prob, alias = _alias_tables(indptr, data)
    table = np.empty((len(indices), 3), np.int32)
    table[:, 0] = indices
    table[:, 1] = prob.view(np.int32)
    table[:, 2] = indices[alias.astype(np.int64) + np.repeat(indptr[:-1], np.diff(indptr))]
    return indptr, table


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
def _step(indptr, table, ptable, v, u):
    """v's next node, drawn proportionally to edge weight, for u uniform in [0, 1): the integer
    part of u * degree picks a slot, the fraction decides its neighbour or its alias."""
    lo = indptr[v]
    x = u * (indptr[v + 1] - lo)
    k = int(x)
    if x - k < ptable[lo + k, 1]:
        return table[lo + k, 0]
    return table[lo + k, 2]


@njit(parallel=True, cache=True)
def _alias_tables(indptr, weights):
    """Per-row alias tables (Vose): prob[j] and the alias slot of each edge slot j."""
    n = len(indptr) - 1
    prob = np.ones(len(weights), np.float32)
    alias = np.zeros(len(weights), np.int32)
    for v in prange(n):
        lo = indptr[v]
        d = indptr[v + 1] - lo
        if d == 0:
            continue
        total = 0.0
        for k in range(d):
            total += weights[lo + k]
        scaled = np.empty(d, np.float64)
        small = np.empty(d, np.int64)
        large = np.empty(d, np.int64)
        ns = 0
        nl = 0
        for k in range(d):
            scaled[k] = weights[lo + k] * d / total
            if scaled[k] < 1.0:
                small[ns] = k
                ns += 1
            else:
                large[nl] = k
                nl += 1
        while ns > 0 and nl > 0:
            ns -= 1
            sm = small[ns]
            nl -= 1
            lg = large[nl]
            prob[lo + sm] = scaled[sm]
            alias[lo + sm] = lg
            scaled[lg] -= 1.0 - scaled[sm]
            if scaled[lg] < 1.0:
                small[ns] = lg
                ns += 1
            else:
                large[nl] = lg
                nl += 1
        for k in range(nl):  # leftovers are 1 up to rounding
            prob[lo + large[k]] = 1.0
            alias[lo + large[k]] = large[k]
        for k in range(ns):
            prob[lo + small[k]] = 1.0
            alias[lo + small[k]] = small[k]
    return prob, alias


@njit(inline="always")
def _has_edge(indptr, table, t, x):
    a = indptr[t]
    b = indptr[t + 1]
    while a < b:
        m = (a + b) >> 1
        y = table[m, 0]
        if y < x:
            a = m + 1
        elif y > x:
            b = m
        else:
            return True
    return False


@njit(parallel=True, cache=True, nogil=True)
def _deepwalk_kernel(indptr, table, ptable, starts, seed, first_id, out):
    n, length = out.shape
    for i in prange(n):
        state = _walk_state(seed, first_id + i)
        v = starts[i]
        out[i, 0] = v
        for s in range(1, length):
            if indptr[v] == indptr[v + 1]:
                break
            state, u = _uniform(state)
            v = _step(indptr, table, ptable, v, u)
            out[i, s] = v


@njit(parallel=True, cache=True, nogil=True)
def _node2vec_kernel(indptr, table, ptable, starts, seed, first_id, inv_p, inv_q, out):
    n, length = out.shape
    amax = max(inv_p, 1.0, inv_q)
    sure = min(inv_p, 1.0, inv_q) / amax  # acceptance draws below this need no edge check
    for i in prange(n):
        state = _walk_state(seed, first_id + i)
        t = -1
        v = starts[i]
        out[i, 0] = v
        for s in range(1, length):
            if indptr[v] == indptr[v + 1]:
                break
            if t < 0:
                state, u = _uniform(state)
                x = _step(indptr, table, ptable, v, u)
            else:
                while True:
                    state, u = _uniform(state)
                    x = _step(indptr, table, ptable, v, u)
                    state, u2 = _uniform(state)
                    if u2 < sure:
                        break
                    if x == t:
                        a = inv_p
                    elif _has_edge(indptr, table, t, x):
                        a = 1.0
                    else:
                        a = inv_q
                    if u2 * amax < a:
                        break
            t = v
            v = x
            out[i, s] = v


def _walk(method, indptr, table, starts, seed, first_id, p, q, out) -> None:
    ptable = table.view(np.float32)  # the same records, read as float32 for the probability
    if method == "deepwalk":
        _deepwalk_kernel(indptr, table, ptable, starts, np.uint64(seed), first_id, out)
    else:
        _node2vec_kernel(indptr, table, ptable, starts, np.uint64(seed), first_id, 1.0 / p,
                         1.0 / q, out)


# ---------------------------------------------------------------- helpers


def _check_walk_args(method: str, walks_per_node: int, walk_length: int, p: float, q: float):
    if method not in ("deepwalk", "node2vec"):
        raise ValueError(f"walk method must be 'deepwalk' or 'node2vec', got {method!r}")
    if walks_per_node < 1 or walk_length < 2:
        raise ValueError("walks_per_node must be >= 1 and walk_length >= 2")
    if not (p > 0 and q > 0):
        raise ValueError(f"node2vec p and q must be > 0, got p={p}, q={q}")


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="walk", desc="walks", mininterval=1.0)
