"""Token-line text files for gensim's corpus_file mode: one sentence per line, item codes as
space-separated decimal tokens.

One numba kernel formats every corpus (sessions and walks): each code's digits come from a
per-code table packed into one uint64, so writing 100M tokens takes seconds and never builds
Python strings per token.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

GENSIM_MAX_TOKENS = 10_000  # gensim silently truncates longer sentences; callers split first


def format_lines(tokens: np.ndarray, offsets: np.ndarray,
                 table: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """ASCII bytes (uint8) of lines `tokens[offsets[i]:offsets[i+1]]`, each ending in a newline
    (empty lines are not written).

    Parameters
    ----------
    tokens : numpy.ndarray of int, >= 0
        Item codes, all lines back to back.
    offsets : numpy.ndarray of int64, shape (n_lines + 1,)
        Line boundaries, ascending, from 0 to len(tokens).
    table : (packed, lens), optional
        `token_table` output covering every token (default: built for max(tokens) + 1).

    Examples
    --------
    >>> format_lines(np.array([3, 14, 15]), np.array([0, 1, 3])).tobytes()
    b'3\\n14 15\\n'
    """
    tokens = np.ascontiguousarray(tokens)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if len(tokens) and tokens.min() < 0:
        raise ValueError("tokens must be non-negative")
    packed, lens = table if table is not None else token_table(
        int(tokens.max()) + 1 if len(tokens) else 1)
    return _format_any(tokens, offsets, packed, lens, 1, None)[0]


def format_padded(rows: np.ndarray, packed: np.ndarray, lens: np.ndarray, min_len: int = 2,
                  out: np.ndarray | None = None) -> tuple[np.ndarray, int, int]:
    """(ASCII bytes uint8, lines, tokens) of the rows of a -1-padded code array, one line per
    row of at least `min_len` codes.

    Parameters
    ----------
    rows : numpy.ndarray of int32, shape (n, width)
        Codes >= 0, each row padded with -1 after its last code (random walks).
    packed, lens : numpy.ndarray
        `token_table` output covering every code.
    min_len : int >= 1
        Shorter rows are not written (a one-node walk has no context).
    out : numpy.ndarray of uint8, optional
        A buffer of at least `padded_text_size` bytes, reused instead of allocating; the bytes
        returned are a view of it.

    Examples
    --------
    >>> packed, lens = token_table(100)
    >>> text, lines, tokens = format_padded(np.array([[7, 42, -1], [5, -1, -1]], np.int32),
    ...                                     packed, lens)
    >>> text.tobytes(), lines, tokens
    (b'7 42\\n', 1, 2)
    """
    rows = np.ascontiguousarray(rows)
    n, m = rows.shape
    return _format_any(rows.reshape(-1), np.arange(n + 1, dtype=np.int64) * m, packed, lens,
                       min_len, out)


def padded_text_size(shape: tuple[int, int], lens: np.ndarray) -> int:
    """Bytes `format_padded` may need for rows of this shape (longest code everywhere)."""
    width = int(lens.max()) + 1 if len(lens) else 2
    return shape[0] * shape[1] * width + 8


def token_table(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The decimal text of the codes 0..n-1: ASCII digits packed little-endian into uint64 and
    their lengths (uint8). Codes have at most 8 digits (n <= 10^8)."""
    if n > 100_000_000:
        raise ValueError(f"token_table handles up to 10^8 codes, got {n:,}")
    return _token_table(n)


# ---------------------------------------------------------------- helpers


def _format_any(tokens, offsets, packed, lens, min_len, out):
    size = padded_text_size((1, int(offsets[-1] - offsets[0]) if len(offsets) else 0), lens)
    if out is None:
        out = np.empty(size, np.uint8)
    elif len(out) < size:
        raise ValueError("out is too small for these rows")
    nbytes, lines, n_tok = _format_spans(tokens, offsets, packed, lens, min_len, out)
    return out[:nbytes], int(lines), int(n_tok)


@njit(cache=True)
def _digits(x):
    d = 1
    while x >= 10:
        x //= 10
        d += 1
    return d


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
def _format_spans(tokens, offsets, packed, lens, min_len, buf):
    """Line i is tokens[offsets[i]:offsets[i+1]] up to its first negative token (walk
    padding); lines shorter than min_len are skipped. Returns (bytes, lines, tokens) written
    into buf."""
    n = len(offsets) - 1
    nbytes = np.zeros(n + 1, np.int64)
    ntok = np.zeros(n, np.int64)
    for i in prange(n):
        # a view per line: indices from 0 compile without negative-index checks
        line = tokens[offsets[i]:offsets[i + 1]]
        b = 0
        k = 0
        while k < len(line) and line[k] >= 0:
            b += lens[line[k]] + 1
            k += 1
        if k >= min_len:
            nbytes[i + 1] = b
            ntok[i] = k
    starts = np.cumsum(nbytes)
    for i in prange(n):
        o = starts[i]
        stop = starts[i + 1]
        line = tokens[offsets[i]:offsets[i + 1]]
        nt = ntok[i]
        for k in range(nt - 1):
            x = line[k]
            word = packed[x]
            if o + 8 <= stop:
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
        if nt > 0:  # the line's last token exactly, so nothing spills into the next line
            x = line[nt - 1]
            word = packed[x]
            for j in range(lens[x]):
                buf[o + j] = (word >> np.uint64(8 * j)) & np.uint64(255)
            buf[o + lens[x]] = 10
    lines = 0
    for i in range(n):
        lines += ntok[i] > 0
    return starts[-1], lines, ntok.sum()
