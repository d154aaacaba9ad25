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


def token_table(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The decimal text of the codes 0..n-1: ASCII digits packed little-endian into uint64 and
    their lengths (uint8). Codes have at most 8 digits (n <= 10^8)."""
    if n > 100_000_000:
        raise ValueError(f"token_table handles up to 10^8 codes, got {n:,}")
    return _token_table(n)


def format_padded(rows: np.ndarray, packed: np.ndarray, lens: np.ndarray, min_len: int = 2,
                  out: np.ndarray | None = None) -> tuple[np.ndarray, int, int]:
    """(ASCII bytes uint8, lines, tokens) of the rows of a -1-padded int32 code array, one line
    per row of >= min_len codes, using `token_table` output for the digits. `out` (uint8, at
    least `padded_text_size` long) is reused instead of allocating; the bytes are a view of it."""
    rows = np.ascontiguousarray(rows)
    if out is None:
        out = np.empty(padded_text_size(rows.shape, lens), np.uint8)
    elif len(out) < padded_text_size(rows.shape, lens):
        raise ValueError("out is too small for these rows")
    size, lines, tokens = _format_padded(rows, packed, lens, min_len, out)
    return out[:size], int(lines), int(tokens)


def padded_text_size(shape: tuple[int, int], lens: np.ndarray) -> int:
    """Bytes `format_padded` may need for rows of this shape (longest code everywhere)."""
    width = int(lens.max()) + 1 if len(lens) else 2
    return shape[0] * shape[1] * width + 8


@njit(cache=True)
def _token_table(n):
    packed = np.zeros(n, np.uint64)
    lens = np.zeros(n, np.uint8)
    for x in range(n):
        d = _digits(x)
        y = x
        word = np.uint64(0)
        for j in range(d - 1, -1, -1):
            word |= np.uint64(48 + y % 10) << np.uint64(8 * j)
            y //= 10
        packed[x] = word
        lens[x] = d
    return packed, lens


@njit(parallel=True, cache=True, nogil=True)
def _format_padded(rows, packed, lens, min_len, buf):
    n, m = rows.shape
    nbytes = np.zeros(n + 1, np.int64)
    ntok = np.zeros(n, np.int64)
    for i in prange(n):
        b = 0
        k = 0
        while k < m and rows[i, k] >= 0:
            b += lens[rows[i, k]] + 1
            k += 1
        if k >= min_len:
            nbytes[i + 1] = b
            ntok[i] = k
    starts = np.cumsum(nbytes)
    for i in prange(n):
        o = starts[i]
        end = starts[i + 1]
        for k in range(ntok[i] - 1):
            x = rows[i, k]
            word = packed[x]
            if o + 8 <= end:
                # all 8 bytes of the word, no mispredicted length loop; the next token
                # overwrites what lies past this one (never past this line: other threads)
                for j in range(8):
                    buf[o + j] = (word >> np.uint64(8 * j)) & np.uint64(255)
            else:
                for j in range(lens[x]):
                    buf[o + j] = (word >> np.uint64(8 * j)) & np.uint64(255)
            o += lens[x]
            buf[o] = 32
            o += 1
        if ntok[i] > 0:  # the line's last token exactly, so nothing spills into the next line
            x = rows[i, ntok[i] - 1]
            word = packed[x]
            for j in range(lens[x]):
                buf[o + j] = (word >> np.uint64(8 * j)) & np.uint64(255)
            buf[o + lens[x]] = 10
    lines = 0
    for i in range(n):
        lines += ntok[i] > 0
    return starts[-1], lines, ntok.sum()
