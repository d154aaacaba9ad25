"""Small numba pieces shared by the kernels of `recembed.sknn_kernels` and `recembed.blend`:
stable top-k selection, a min-heap step, and batches of arrays laid end to end.

Imports numpy and numba only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

# per-query work is tens of microseconds: below this many queries, threads cost more than they
# save (a single session runs on one core)
PARALLEL_FROM = 16


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
