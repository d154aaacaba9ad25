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
    lens = (rows >= 0).sum(axis=1)
    keep = lens >= min_len
    rows, lens = rows[keep], lens[keep]
    tokens = rows[rows >= 0]  # row-major order keeps each walk's tokens in sequence
    return tokens, np.r_[0, np.cumsum(lens)]


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
