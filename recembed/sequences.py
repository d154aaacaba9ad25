"""The item2vec corpus: sessions as sentences for gensim's corpus_file mode, time decay honoured.

gensim has no per-sentence weights, so a session of weight w appears with expected multiplicity
`replication * w / mean(w)`: proportional to its weight, and `replication` copies per session on
average, so a half-life much shorter than the log's span reweights the corpus instead of
shrinking it to the last few days. The integer part is written plus a seeded Bernoulli draw for
the fraction. Copies are
written in rounds (round r holds every session with more than r copies), so repeats of a session
are a whole corpus pass apart rather than adjacent (gensim issue #2701: adjacent repeats act like
a larger learning rate on one sentence).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recembed.corpus import GENSIM_MAX_TOKENS, format_lines


@dataclass
class CorpusStats:
    """Sentences and tokens written, and sessions dropped by a zero draw."""

    sentences: int
    tokens: int
    sessions_in: int
    sessions_absent: int
    max_copies: int


def session_multiplicity(
    weights: np.ndarray, replication: float = 1.0, seed: int = 0,
    session_ids: np.ndarray | None = None, min_copies: int = 1,
) -> np.ndarray:
    """Copies of each session (int32), expected `replication * w / mean(w)`: the floor plus a
    Bernoulli draw for the fraction, at least `min_copies`.

    Parameters
    ----------
    weights : float array [S], >= 0
        Decay weight of each session.
    replication : float > 0
        Copies per session on average.
    seed : int
        The run's seed.
    session_ids : int array [S] or None
        Each session's id: the Bernoulli draw of a session comes from a hash of (seed, id), one
        stream per session, so any engine or partitioning writes the same corpus. None = 0..S-1.
    min_copies : int >= 0
        Floor of the copies: decay down-weights a session but never erases it (1, the default);
        0 lets a session with a small weight drop out of the corpus (counted as
        `sessions_absent`).
    """
    w = np.asarray(weights, np.float64)
    if (w < 0).any() or not np.isfinite(w).all():
        raise ValueError("session weights must be finite and non-negative")
    m = w * (replication / w.mean()) if len(w) and w.mean() > 0 else w
    base = np.floor(m)
    ids = np.arange(len(w)) if session_ids is None else np.asarray(session_ids)
    extra = session_uniform(ids, seed) < (m - base)
    return np.maximum(base + extra, min_copies).astype(np.int32)


def session_uniform(session_ids: np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) number per session from splitmix64 of (seed, session id): the same for a
    session whatever else is in the batch."""
    with np.errstate(over="ignore"):
        z = (np.asarray(session_ids).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
             + np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def write_session_corpus(
    sessions: pd.DataFrame,
    weights: np.ndarray,
    out_path: str | Path,
    *,
    replication: float = 1.0,
    seed: int = 0,
    max_tokens: int = GENSIM_MAX_TOKENS,
    min_copies: int = 1,
) -> CorpusStats:
    """Write sessions (`session`, `item`, ordered by session then pos) as corpus lines.

    `weights[s]` is session s's decay weight. Sessions longer than `max_tokens` are split.
    """
    sess = sessions["session"].to_numpy()
    item = sessions["item"].to_numpy().astype(np.int64)
    if len(sess) and (np.diff(sess) < 0).any():
        raise ValueError("sessions must be ordered by session id (then position)")
    ids, starts, lengths = np.unique(sess, return_index=True, return_counts=True)
    copies = session_multiplicity(np.asarray(weights)[ids], replication, seed, session_ids=ids,
                                  min_copies=min_copies)
    # split long sessions into pieces of at most max_tokens, each piece its own line
    piece_starts, piece_sess = _pieces(starts, lengths, max_tokens)
    piece_ends = np.r_[piece_starts[1:], len(item)]
    piece_copies = copies[piece_sess]
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    n_lines = n_tok = 0
    with open(tmp, "wb") as fh:
        for r in range(int(copies.max(initial=0))):
            sel = piece_copies > r
            ps, pe = piece_starts[sel], piece_ends[sel]
            lens = pe - ps
            idx = np.repeat(ps - np.r_[0, np.cumsum(lens)[:-1]], lens) + np.arange(lens.sum())
            fh.write(format_lines(item[idx], np.r_[0, np.cumsum(lens)]).tobytes())
            n_lines += len(ps)
            n_tok += int(lens.sum())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out_path)
    return CorpusStats(n_lines, n_tok, len(ids), int((copies == 0).sum()),
                       int(copies.max(initial=0)))


def _pieces(starts: np.ndarray, lengths: np.ndarray, max_tokens: int):
    n_pieces = -(-lengths // max_tokens)
    piece_sess = np.repeat(np.arange(len(starts)), n_pieces)
    within = np.arange(n_pieces.sum()) - np.repeat(np.r_[0, np.cumsum(n_pieces)[:-1]], n_pieces)
    return starts[piece_sess] + within * max_tokens, piece_sess
