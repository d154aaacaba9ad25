"""Small numba pieces shared by the kernels of `recembed.sknn_kernels` and `recembed.blend`:
stable top-k selection, a min-heap step, and batches of arrays laid end to end; the heap
top-k of dense score rows behind `recembed.evaluate.top_k` and `recembed.index.exact_search`.

Imports numpy and numba only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit, prange

# per-query work is tens of microseconds: below this many queries, threads cost more than they
# save (a single session runs on one core)
PARALLEL_FROM = 16


class ScoreBuffer:
    """A float32 [rows, columns] score matrix reused from block to block.

    A fresh [512, 197k] product (400 MB) per block of queries had the kernel zero new pages
    every time: 76 ms of system time beside the product's 95 ms on the 10M-event log's
    catalogue, and 35.6 of the 147 CPU seconds of that log's evaluate stage run alone
    (benchmarks/RESULTS.md, "reused score buffers"). The view `rows` returns is overwritten by the next call.

    Parameters
    ----------
    columns : int >= 0
        Columns of every block (the catalogue).
    """

    def __init__(self, columns: int):
        self.columns = int(columns)
        self._buf: np.ndarray | None = None

    def rows(self, n: int) -> np.ndarray:
        """A C-contiguous float32 [n, columns] view of the buffer (grown when n is larger),
        its values left from the previous use."""
        if self._buf is None or len(self._buf) < n:
            self._buf = np.empty((n, self.columns), np.float32)
        return self._buf[:n]


def offsets(arrays: Sequence) -> np.ndarray:
    """int64 [n + 1] offsets of `arrays` laid end to end: array i owns
    ``offsets[i]:offsets[i + 1]``. (np.r_ costs a noticeable share of a one-session
    `recommend`: benchmarks/RESULTS.md, "serving throughput on the 10,000,000-event synthetic
    catalogue".)"""
    out = np.zeros(len(arrays) + 1, np.int64)
    np.cumsum(np.fromiter((len(a) for a in arrays), np.int64, len(arrays)), out=out[1:])
    return out


@njit(cache=True, nogil=True)
def top_stable(neg, k):
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
def heap_replace_min(heap, x):
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


@njit(parallel=True, cache=True)
def heap_top_k(scores, k):
    """int32 [n, k]: the k best finite scores of each row, best first, ties to the lower
    index, -1 padded (`recembed.evaluate.top_k` validates its inputs)."""
    n, m = scores.shape
    out = np.full((n, k), -1, np.int32)
    for i in prange(n):
        hs = np.empty(k, np.float32)  # min-heap of the best k; root = the worst kept
        hi = np.empty(k, np.int32)
        size = 0
        for j in range(m):
            s = scores[i, j]
            if s == -np.inf or s != s:
                continue
            if size < k:
                c = size
                size += 1
                hs[c] = s
                hi[c] = j
                while c > 0:  # sift up
                    p = (c - 1) >> 1
                    if _worse(hs[c], hi[c], hs[p], hi[p]):
                        hs[c], hs[p] = hs[p], hs[c]
                        hi[c], hi[p] = hi[p], hi[c]
                        c = p
                    else:
                        break
            elif _worse(hs[0], hi[0], s, j):
                hs[0] = s
                hi[0] = j
                _sift_down(hs, hi, size)
        # pop the heap worst-first into the tail of the output
        for r in range(size - 1, -1, -1):
            out[i, r] = hi[0]
            hs[0] = hs[size - 1]
            hi[0] = hi[size - 1]
            size -= 1
            _sift_down(hs, hi, size)
    return out


@njit(parallel=True, cache=True)
def without_listed(lists, indptr, listed, k):
    """int32 [n, k]: each row of the top lists `lists` (int32 [n, K], best first, -1 padded)
    without the columns ``listed[indptr[i]:indptr[i + 1]]`` (sorted) of its row, the first k
    kept, -1 padded: the top-k of the same scores with those columns at -inf, when K is at
    least k plus the row's listed count."""
    n, width = lists.shape
    out = np.full((n, k), -1, np.int32)
    for i in prange(n):
        mine = listed[indptr[i]:indptr[i + 1]]
        c = 0
        for j in range(width):
            x = lists[i, j]
            if x < 0 or c == k:
                break
            p = np.searchsorted(mine, x)
            if p < len(mine) and mine[p] == x:
                continue
            out[i, c] = x
            c += 1
    return out


@njit(inline="always")
def _sift_down(hs, hi, size):
    c = 0
    while True:
        left = 2 * c + 1
        if left >= size:
            break
        w = left
        if left + 1 < size and _worse(hs[left + 1], hi[left + 1], hs[left], hi[left]):
            w = left + 1
        if _worse(hs[w], hi[w], hs[c], hi[c]):
            hs[c], hs[w] = hs[w], hs[c]
            hi[c], hi[w] = hi[w], hi[c]
            c = w
        else:
            break


@njit(inline="always")
def _worse(s1, i1, s2, i2):
    """Is (s1, i1) ranked below (s2, i2)? Lower score, or equal score and higher index."""
    return s1 < s2 or (s1 == s2 and i1 > i2)
