"""Sessionize clean events: bot filter, gap or supplied sessions, repeat collapsing, length cap,
time-decay weights and the temporal holdout split. Vectorized numpy throughout.

Outputs (see DESIGN.md):
- sessions (one row per event): `session` int64, `item` int32, `ts` int64, `pos` int32,
  `event` int32 (row index in the events table, for tracing; int64 past 2**31 events)
- session table: `session` int64, `user` int32, `start`, `end` int64, `length` int32,
  `weight` float64, `split` int8 (1 = holdout)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

DAY = 86_400


@dataclass
class SessionResult:
    """Train and holdout events by session, the session table, and counts for the run summary."""

    train: pd.DataFrame
    test: pd.DataFrame
    table: pd.DataFrame
    stats: dict = field(default_factory=dict)


def sessionize(
    events: pd.DataFrame,
    *,
    gap_minutes: float = 30.0,
    max_length: int = 200,
    min_length: int = 2,
    collapse_repeats: bool = True,
    half_life_days: float = 7.0,
    holdout_days: float = 1.0,
    bots: bool = True,
    max_events_per_day: int = 1000,
    min_median_gap_s: float = 1.0,
    min_events_for_gap_rule: int = 20,
) -> SessionResult:
    """Sessions from events (columns as produced by `ingest`), split into train and holdout.

    A `session` column in `events` wins over gap splitting. When rows carry `split` = 1 (events
    from explicit test files), those sessions form the holdout; otherwise it is the sessions that
    end in the last `holdout_days` days.
    """
    stats: dict = {}
    n0 = len(events)
    supplied = "session" in events.columns
    if not supplied and (events["user"].to_numpy() < 0).any():
        raise ValueError(
            "events without a user id cannot be sessionized by gap: map a session column "
            "([input.columns] session = ...) or a user column"
        )
    key = events["session"].to_numpy() if supplied else events["user"].to_numpy().astype(np.int64)
    ts = events["ts"].to_numpy()
    order = _stable_order(key, ts)
    key, ts = key[order], ts[order]
    item = events["item"].to_numpy()[order]
    # int32 indices halve the working set; logs past 2**31 events need Spark anyway
    ev = order.astype(np.int32 if n0 < 2**31 else np.int64)
    del order
    # Every mask below is computed on all sorted rows and applied once: bots are whole entities,
    # so dropping them changes no other row's neighbours, and each filter pass costs a copy.
    new_entity = np.empty(n0, bool)
    new_entity[:1] = True
    np.not_equal(key[1:], key[:-1], out=new_entity[1:])

    # Bot / abuse filter on the sessionization entity (user, or the supplied session).
    drop = np.zeros(n0, bool)
    stats["bot_entities"] = 0
    if bots and n0:
        drop = _bot_rows(key, ts, new_entity, max_events_per_day, min_median_gap_s,
                         min_events_for_gap_rule)
        stats["bot_entities"] = int((drop & new_entity).sum())
        stats["bot_events"] = int(drop.sum())
        stats["bot_event_share"] = float(drop.mean())
    del key

    gap_s = gap_minutes * 60
    if collapse_repeats and n0:
        # an immediate repeat (same entity, same item, within the gap) is one view: collapsing
        # comes before gap splitting, so no kept session has an inner gap above the threshold
        rep = np.zeros(n0, bool)
        rep[1:] = (item[1:] == item[:-1]) & ~new_entity[1:]
        if not supplied:
            rep[1:] &= np.diff(ts) <= gap_s
        stats["repeats_collapsed"] = int((rep & ~drop).sum())
        drop |= rep
        del rep
    if drop.any():
        keep = ~drop
        new_entity, ts, item, ev = new_entity[keep], ts[keep], item[keep], ev[keep]
    del drop

    # Session starts: a new entity, or (gap mode) an inactivity gap above the threshold.
    start = new_entity
    if not supplied and len(ts):
        start[1:] |= np.diff(ts) > gap_s
    sid = np.cumsum(start, dtype=np.int64) - 1
    del start, new_entity

    # Cap the length by splitting into consecutive chunks of at most max_length events.
    pos = _positions(sid)
    chunk_start = (pos % max_length == 0)
    stats["sessions_split_by_cap"] = int((chunk_start & (pos > 0)).sum())
    sid = np.cumsum(chunk_start) - 1
    pos = (pos % max_length).astype(np.int32)

    lengths = np.bincount(sid) if len(sid) else np.zeros(0, np.int64)
    stats["sessions_total"] = len(lengths)
    short = lengths < min_length
    stats["sessions_too_short"] = int(short.sum())
    keep = ~short[sid]
    sid, ts, item, pos, ev = sid[keep], ts[keep], item[keep], pos[keep], ev[keep]
    # contiguous session ids 0..S-1 in the same order (sid is non-decreasing)
    sid = np.cumsum(np.r_[len(sid) > 0, sid[1:] != sid[:-1]], dtype=np.int64) - 1

    starts = np.flatnonzero(pos == 0)
    ends = np.r_[starts[1:], len(sid)] - 1
    s_start, s_end = ts[starts], ts[ends]
    s_len = (ends - starts + 1).astype(np.int32)
    split_in = events["split"].to_numpy() if "split" in events else np.zeros(n0, np.int8)
    if (split_in == 1).any():
        s_split = np.maximum.reduceat(split_in[ev], starts).astype(np.int8) if len(starts) \
            else np.zeros(0, np.int8)
    else:
        cutoff = (s_end.max() if len(s_end) else 0) - holdout_days * DAY
        s_split = ((s_end > cutoff) & (holdout_days > 0)).astype(np.int8)
    train_end = s_end[s_split == 0]
    ref = train_end.max() if len(train_end) else (s_end.max() if len(s_end) else 0)
    weights = session_weights(s_end, ref, half_life_days)

    table = pd.DataFrame(
        {"session": np.arange(len(starts), dtype=np.int64), "user": events["user"].to_numpy()[ev[starts]],
         "start": s_start, "end": s_end, "length": s_len, "weight": weights, "split": s_split},
        copy=False,
    )
    is_test = s_split[sid] == 1
    cols = {"session": sid, "item": item.astype(np.int32), "ts": ts, "pos": pos, "event": ev}
    # copy=False: no block consolidation, the filtered arrays become the columns as they are
    train = pd.DataFrame({k: v[~is_test] for k, v in cols.items()}, copy=False)
    test = pd.DataFrame({k: v[is_test] for k, v in cols.items()}, copy=False)
    stats.update(
        events_in=n0, events_kept=len(sid), sessions=len(table),
        train_sessions=int((s_split == 0).sum()), holdout_sessions=int((s_split == 1).sum()),
        train_events=len(train), holdout_events=len(test),
        mean_session_length=float(s_len.mean()) if len(s_len) else 0.0,
    )
    return SessionResult(train, test, table, stats)


def session_weights(end_ts: np.ndarray, ref_ts: float, half_life_days: float) -> np.ndarray:
    """Time-decay weight per session, `0.5 ** (age / half_life)` in (0, 1]; age = ref - end."""
    if np.isinf(half_life_days):
        return np.ones(len(end_ts))
    age_days = np.maximum(ref_ts - end_ts.astype(np.float64), 0.0) / DAY
    w = np.exp2(-age_days / half_life_days)
    return np.maximum(w, np.finfo(np.float64).tiny)


# ---------------------------------------------------------------- helpers


def _stable_order(key: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Order by (key, ts), ties kept in input order.

    Two LSD passes of a packed uint64 sort (value in the high bits, position in the low bits):
    numpy's SIMD sort of plain integers is ~10x faster than a stable argsort. The ts pass is
    skipped when the input is already time-ordered, as logs usually are.
    """
    n = len(key)
    if n == 0:
        return np.zeros(0, np.int64)
    ib = max(1, (n - 1).bit_length())
    ts_off = ts - ts.min()
    k_off = key.astype(np.int64) - int(key.min())
    if max(int(ts_off.max()).bit_length(), int(k_off.max()).bit_length()) + ib > 63:
        return np.lexsort((np.arange(n), ts, key))
    mask = np.uint64((1 << ib) - 1)
    shift = np.uint64(ib)
    pos = np.arange(n, dtype=np.uint64)
    if (np.diff(ts) >= 0).all():
        by_ts = None
    else:
        by_ts = (np.sort((ts_off.astype(np.uint64) << shift) | pos) & mask).astype(np.int64)
        k_off = k_off[by_ts]
    second = (np.sort((k_off.astype(np.uint64) << shift) | pos) & mask).astype(np.int64)
    return second if by_ts is None else by_ts[second]


def _positions(group: np.ndarray) -> np.ndarray:
    """0-based position of each row within its run of equal consecutive `group` values."""
    n = len(group)
    if n == 0:
        return np.zeros(0, np.int64)
    starts = np.r_[True, group[1:] != group[:-1]]
    idx = np.arange(n)
    first = np.maximum.accumulate(np.where(starts, idx, 0))
    return idx - first


def _bot_rows(
    key: np.ndarray, ts: np.ndarray, new_entity: np.ndarray, max_per_day: int,
    min_median_gap: float, min_events: int,
) -> np.ndarray:
    """Rows of entities over the daily event limit or with a median gap under the threshold."""
    ent = np.cumsum(new_entity) - 1
    n_ent = int(ent[-1]) + 1
    day = ts // DAY
    # (entity, day) runs are contiguous because rows are sorted by (entity, ts)
    run_start = new_entity | np.r_[True, day[1:] != day[:-1]]
    run_id = np.cumsum(run_start) - 1
    run_len = np.bincount(run_id)
    run_ent = ent[run_start]
    max_daily = np.zeros(n_ent, np.int64)
    np.maximum.at(max_daily, run_ent, run_len)
    bot = max_daily > max_per_day

    counts = np.bincount(ent, minlength=n_ent)
    gaps = np.diff(ts).astype(np.float64)
    inner = ~new_entity[1:]
    eligible = counts[ent[1:]] >= min_events
    sel = inner & eligible
    if sel.any():
        med = pd.Series(gaps[sel]).groupby(ent[1:][sel]).median()
        bot[med.index.to_numpy()[med.to_numpy() < min_median_gap]] = True
    return bot[ent]
