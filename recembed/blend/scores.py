"""The blended score of candidates whose raw signals are known (`Signals`): per-query
normalisation of each signal, the weighted sum, and its top-k.

Calibration searches blends over `Signals` with `blended_scores`; `blend_top_k` is the serving
kernel over the same values, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recembed.blend.kernels import FlatSignals, flat_top_k
from recembed.blend.settings import SIGNALS, BlendSettings

COSINE_TEMPERATURE = 0.1  # cosine normalisation exp((c - max c) / 0.1)


@dataclass
class Signals:
    """Candidates per query and their raw signal values, padded to one width.

    Attributes
    ----------
    rows : int64 [n, C]
        Candidate rows, -1 padded, ascending where valid.
    values : float32 [n, C, len(SIGNALS)]
        Raw signal values (the order of `SIGNALS`).
    in_session : bool [n, C]
        The candidate is an item of the session.
    last : int64 [n]
        The session's last row (-1 = none).
    """

    rows: np.ndarray
    values: np.ndarray
    in_session: np.ndarray
    last: np.ndarray


def signal_weights(st: BlendSettings) -> np.ndarray:
    """float64 [len(SIGNALS)]: each signal's weight in `st` (missing = 0)."""
    return np.array([float(st.weights.get(name, 0.0)) for name in SIGNALS])


def normalise(x: np.ndarray, valid: np.ndarray, name: str, temperature: float) -> np.ndarray:
    """One signal scaled per query to [0, 1] (see `recembed.blend`).

    Parameters
    ----------
    x : float [n, C]
        Raw values of signal `name`.
    valid : bool [n, C]
        Real candidates (False = padding, scored 0).
    name : str
        One of `SIGNALS`.
    temperature : float > 0
        The directional temperature (cosine uses `COSINE_TEMPERATURE`).
    """
    x = x.astype(np.float64)
    if name in ("directional", "cosine"):
        t = temperature if name == "directional" else COSINE_TEMPERATURE
        m = np.where(valid, x, -np.inf).max(axis=1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        return np.where(valid, np.exp((x - m) / t), 0.0)
    if name == "popularity":
        return x
    m = x.max(axis=1, keepdims=True)
    return np.divide(x, m, out=np.zeros_like(x), where=m > 0)


def blended_scores(sig: Signals, st: BlendSettings) -> np.ndarray:
    """float64 [n, C]: sum of weight x normalised signal (padding scores 0)."""
    v = sig.values
    valid = sig.rows >= 0
    out = np.zeros(v.shape[:2])
    for j, name in enumerate(SIGNALS):
        w = float(st.weights.get(name, 0.0))
        if w == 0.0:
            continue
        out += w * normalise(v[:, :, j], valid, name, st.temperature)
    return out


def blend_top_k(sig: Signals, st: BlendSettings, k: int, *, exclude_session_items: bool = False,
                pop: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows and blended scores of each query (ties: more popular, then lower row).

    A numba kernel over the scores of `blended_scores`, bit for bit.

    Parameters
    ----------
    sig : Signals
    st : BlendSettings
    k : int >= 0
        Rows per query.
    exclude_session_items : bool
        Never recommend an item of the session.
    pop : ignored
        Kept for older callers (the popularity tie-break reads `sig.values`).

    Returns
    -------
    (rows int64 [n, k], scores float32 [n, k]), -1 / -inf padded.
    """
    if k <= 0:  # the kernel's heap needs a slot (k = 0 wrote out of bounds: a later segfault)
        n = len(sig.rows)
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
    w = signal_weights(st)
    rows = np.ascontiguousarray(sig.rows, np.int64)
    vals = np.ascontiguousarray(sig.values, np.float32)
    # the exp-normalised signals with numpy's exp, exactly as `blended_scores` computes them
    # (numba's exp may differ in the last bit, which could reorder exactly tied blends)
    expo = np.zeros((*rows.shape, 2))
    valid = rows >= 0
    for j in (0, 1):
        if w[j] != 0.0:
            expo[:, :, j] = normalise(vals[:, :, j], valid, SIGNALS[j], st.temperature)
    n, width = rows.shape
    # each padded row is one query's candidates (padding scores -inf inside the kernel)
    flat = FlatSignals(offsets=np.arange(n + 1, dtype=np.int64) * width,
                       rows=rows.reshape(-1), values=vals.reshape(-1, len(SIGNALS)),
                       in_session=np.ascontiguousarray(sig.in_session, np.bool_).reshape(-1),
                       last=np.ascontiguousarray(sig.last, np.int64))
    return flat_top_k(flat, expo.reshape(-1, 2), w, exclude_last=bool(st.exclude_last),
                      exclude_session=bool(exclude_session_items), k=int(k))
