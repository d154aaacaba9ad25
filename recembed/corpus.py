"""Token-line text files for gensim's corpus_file mode: one sentence per line, item codes as
space-separated decimal tokens. Formatting is a numba kernel, so writing 100M tokens takes
seconds and never builds Python strings per token."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

GENSIM_MAX_TOKENS = 10_000  # gensim silently truncates longer sentences; callers split first


def format_lines(tokens: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """ASCII bytes (uint8) of lines `tokens[offsets[i]:offsets[i+1]]`, each ending in a newline.

    Tokens must be non-negative integers.
    """
    tokens = np.ascontiguousarray(tokens, dtype=np.int64)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if len(tokens) and tokens.min() < 0:
        raise ValueError("tokens must be non-negative")
    return _format(tokens, offsets)


def padded_to_lines(rows: np.ndarray, min_len: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, offsets) of the rows of a -1-padded 2D array, keeping rows of >= min_len tokens."""
    return _compact(np.ascontiguousarray(rows), min_len)


@njit(parallel=True, cache=True)
def _compact(rows, min_len):
    n, m = rows.shape
    lens = np.zeros(n, np.int64)
    for i in prange(n):
        k = 0
        while k < m and rows[i, k] >= 0:
            k += 1
        lens[i] = k if k >= min_len else 0
    offsets = np.zeros(n + 1, np.int64)
    offsets[1:] = np.cumsum(lens)
    tokens = np.empty(offsets[-1], np.int64)
    for i in prange(n):
        for k in range(lens[i]):
            tokens[offsets[i] + k] = rows[i, k]
    keep = np.flatnonzero(lens > 0)
    return tokens, np.append(offsets[keep], offsets[-1])


@njit(cache=True)
def _digits(x):
    d = 1
    while x >= 10:
        x //= 10
        d += 1
    return d


@njit(parallel=True, cache=True)
def _format(tokens, offsets):
    n = len(offsets) - 1
    nbytes = np.zeros(n + 1, np.int64)
    for i in prange(n):
        b = 0
        for k in range(offsets[i], offsets[i + 1]):
            b += _digits(tokens[k]) + 1
        nbytes[i + 1] = b
    starts = np.cumsum(nbytes)
    buf = np.empty(starts[-1], np.uint8)
    for i in prange(n):
        o = starts[i]
        last = offsets[i + 1] - 1
        for k in range(offsets[i], offsets[i + 1]):
            x = tokens[k]
            d = _digits(x)
            for j in range(d - 1, -1, -1):
                buf[o + j] = 48 + x % 10
                x //= 10
            o += d
            buf[o] = 10 if k == last else 32
            o += 1
    return buf
