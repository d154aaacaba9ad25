"""The item2vec corpus: sessions as sentences for gensim's corpus_file mode, time decay honoured.

gensim has no per-sentence weights, so a session of weight w appears with expected multiplicity
`replication * w / mean(w)`: proportional to its weight, and `replication` copies per session on
average, so a half-life much shorter than the log's span reweights the corpus instead of
shrinking it to the last few days. The integer part is written plus a Bernoulli draw for the
fraction, taken from the session's own random stream (a hash of the seed and the session id,
as each walk has its own), so any engine and any partitioning of the sessions give the same
corpus. Copies are written in rounds (round r holds every session with more than r copies), so
repeats of a session are a whole corpus pass apart rather than adjacent (gensim issue #2701:
adjacent repeats act like a larger learning rate on one sentence).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recembed.artifacts import atomic_path, session_weights_by_id
from recembed.corpus import GENSIM_MAX_TOKENS, format_lines, token_table

if TYPE_CHECKING:
    from recembed.runtime import Runtime


@dataclass
class CorpusStats:
    """Sentences and tokens written, sessions read, sessions dropped by a zero draw, and the
    most copies of one session."""

    sentences: int
    tokens: int
    sessions_in: int
    sessions_absent: int
    max_copies: int


@dataclass(frozen=True)
class CorpusParams:
    """How the session corpus is replicated (`[sequences]`, the run's seed); keywords of
    `write_session_corpus`.

    Parameters
    ----------
    replication : float > 0
        Copies per session on average (`replication * w / mean(w)` each).
    min_copies : int >= 0
        Every session is written at least this often.
    seed : int >= 0
        Seed of the per-session replication streams.
    """

    replication: float = 1.0
    min_copies: int = 1
    seed: int = 0


def session_multiplicity(
    weights: np.ndarray, replication: float = 1.0, seed: int = 0,
    sessions: np.ndarray | None = None, min_copies: int = 1,
) -> np.ndarray:
    """Copies of each session (int32), expected `replication * w / mean(w)`.

    Parameters
    ----------
    weights : numpy.ndarray of float, >= 0
        Decay weight of each session.
    replication : float > 0
        Copies per session on average.
    seed : int
        Seed of the per-session streams.
    sessions : numpy.ndarray of int64, optional
        The sessions' ids (default 0..n-1): session s's fractional copy is drawn from the
        stream of (seed, s), so it does not depend on which other sessions are present.
    min_copies : int >= 0
        Floor of the copies: decay down-weights a session but never erases it (1, the
        default); 0 lets a session with a small weight drop out (counted as `sessions_absent`).

    Examples
    --------
    >>> session_multiplicity(np.array([1.0, 1.0, 0.5, 1.5]), replication=2.0).tolist()
    [2, 2, 1, 3]
    """
    w = np.asarray(weights, np.float64)
    if (w < 0).any() or not np.isfinite(w).all():
        raise ValueError("session weights must be finite and non-negative")
    m = w * (replication / w.mean()) if len(w) and w.mean() > 0 else w
    base = np.floor(m)
    ids = np.arange(len(m)) if sessions is None else np.asarray(sessions)
    extra = session_uniform(seed, ids) < (m - base)
    return np.maximum(base + extra, min_copies).astype(np.int32)


def session_uniform(seed: int, sessions: np.ndarray) -> np.ndarray:
    """One uniform draw in [0, 1) per session id from its own stream: splitmix64 seeded with
    a hash of (seed, session id). It is the first draw of `recembed.walks`' stream for a walk
    of that id, so both corpora derive randomness the same way."""
    with np.errstate(over="ignore"):
        s = np.asarray(sessions).astype(np.uint64)
        x = np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ (s * np.uint64(0xD1B54A32D192ED03))
        state = _splitmix(x)[1]
        z = _splitmix(state)[1]
    return (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


def write_session_corpus(
    sessions: pd.DataFrame,
    weights,
    out_path: str | Path,
    *,
    replication: float = 1.0,
    seed: int = 0,
    max_tokens: int = GENSIM_MAX_TOKENS,
    min_copies: int = 1,
) -> CorpusStats:
    """Write sessions as corpus lines (space-separated item codes), replicated by weight.

    Parameters
    ----------
    sessions : pandas.DataFrame
        Columns `session` (int64 id) and `item` (int code >= 0), ordered by session, then
        position.
    weights : pandas.DataFrame, pandas.Series or numpy.ndarray
        Decay weight of each session, joined by session id: the session table (`session`,
        `weight`), a Series indexed by id, or a dense array indexed by id.
    out_path : str or Path
        The corpus file (written atomically).
    replication : float > 0
        Copies per session on average.
    seed : int
        Seed of the per-session replication streams.
    max_tokens : int >= 1
        Sessions longer than this are split into lines of at most this many tokens (gensim
        truncates longer sentences silently).
    min_copies : int >= 0
        Every session is written at least this often (`session_multiplicity`).

    Returns
    -------
    CorpusStats

    Examples
    --------
    >>> import tempfile, pandas as pd
    >>> s = pd.DataFrame({"session": [3, 3, 8, 8], "item": [10, 11, 12, 10]})
    >>> w = pd.DataFrame({"session": [3, 8], "weight": [1.0, 1.0]})
    >>> out = Path(tempfile.mkdtemp()) / "sessions.txt"
    >>> write_session_corpus(s, w, out).sentences
    2
    >>> out.read_text()
    '10 11\\n12 10\\n'
    """
    sess = sessions["session"].to_numpy()
    item = sessions["item"].to_numpy().astype(np.int64)
    if len(sess) and (np.diff(sess) < 0).any():
        raise ValueError("sessions must be ordered by session id (then position)")
    ids, starts, lengths = np.unique(sess, return_index=True, return_counts=True)
    copies = session_multiplicity(session_weights_by_id(ids, weights), replication, seed, ids,
                                  min_copies=min_copies)
    # split long sessions into pieces of at most max_tokens, each piece its own line
    piece_starts, piece_sess = token_pieces(starts, lengths, max_tokens)
    piece_ends = np.r_[piece_starts[1:], len(item)]
    piece_copies = copies[piece_sess]
    table = token_table(int(item.max()) + 1 if len(item) else 1)
    n_lines = n_tok = 0
    with atomic_path(out_path) as tmp, open(tmp, "wb") as fh:
        for r in range(int(copies.max(initial=0))):
            sel = piece_copies > r
            ps, pe = piece_starts[sel], piece_ends[sel]
            lens = pe - ps
            idx = np.repeat(ps - np.r_[0, np.cumsum(lens)[:-1]], lens) + np.arange(lens.sum())
            fh.write(format_lines(item[idx], np.r_[0, np.cumsum(lens)], table).tobytes())
            n_lines += len(ps)
            n_tok += int(lens.sum())
    return CorpusStats(n_lines, n_tok, len(ids), int((copies == 0).sum()),
                       int(copies.max(initial=0)))


def corpus_from_files(sessions_path: str | Path, table_path: str | Path,
                      corpus_path: str | Path, params: CorpusParams,
                      runtime: Runtime) -> CorpusStats:
    """The sequences stage, local engine: `write_session_corpus` of the sessions_train and
    session table artifacts (the engine-neutral signature `recembed.spark.sequences` shares).

    Parameters
    ----------
    sessions_path, table_path : str or pathlib.Path
        The sessions_train (`session`, `item`, ordered) and session table (`session`,
        `weight`) Parquet files.
    corpus_path : str or pathlib.Path
        sessions.txt to write (atomically).
    params : CorpusParams
        Replication and seed.
    runtime : recembed.runtime.Runtime
        Unused by the local engine.

    Returns
    -------
    CorpusStats
    """
    return write_session_corpus(pd.read_parquet(sessions_path, columns=["session", "item"]),
                                pd.read_parquet(table_path, columns=["session", "weight"]),
                                corpus_path, **asdict(params))


def _splitmix(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # numpy twin of recembed.walks._splitmix (uint64 arithmetic wraps)
    x = x + np.uint64(0x9E3779B97F4A7C15)
    z = x
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x, z ^ (z >> np.uint64(31))


def token_pieces(starts: np.ndarray, lengths: np.ndarray,
                 max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Split each session's token run into lines of at most `max_tokens` tokens.

    Parameters
    ----------
    starts : numpy.ndarray
        int offset of each session's first token in the token stream.
    lengths : numpy.ndarray
        int tokens per session (>= 1).
    max_tokens : int >= 1
        Tokens per line at most.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Each piece's first token offset, and the index of the session it belongs to.
    """
    n_pieces = -(-lengths // max_tokens)
    piece_sess = np.repeat(np.arange(len(starts)), n_pieces)
    within = np.arange(n_pieces.sum()) - np.repeat(np.r_[0, np.cumsum(n_pieces)[:-1]], n_pieces)
    return starts[piece_sess] + within * max_tokens, piece_sess
