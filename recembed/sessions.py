"""Sessionize clean events: bot filter, gap or supplied sessions, repeat collapsing, length cap,
time-decay weights and the temporal holdout split. Vectorized numpy throughout.

Outputs (see DESIGN.md):
- sessions (one row per event): `session` int64, `item` int32, `ts` int64, `pos` int32,
  `event` int64 (row index in the events table, for tracing)
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
    ev = order.astype(np.int64)
    user = events["user"].to_numpy()[order]
    split = events["split"].to_numpy()[order] if "split" in events else np.zeros(n0, np.int8)

    # Bot / abuse filter on the sessionization entity (user, or the supplied session).
    new_entity = np.empty(n0, bool)
    new_entity[:1] = True
    np.not_equal(key[1:], key[:-1], out=new_entity[1:])
    stats["bot_entities"] = 0
    if bots and n0:
        bot = _bot_rows(key, ts, new_entity, max_events_per_day, min_median_gap_s,
                        min_events_for_gap_rule)
        stats["bot_entities"] = int((bot & new_entity).sum())
        stats["bot_events"] = int(bot.sum())
        stats["bot_event_share"] = float(bot.mean())
        if bot.any():
            keep = ~bot
            key, ts, item, user, split, new_entity, ev = (
                key[keep], ts[keep], item[keep], user[keep], split[keep], new_entity[keep],
                ev[keep]
            )
            new_entity[:1] = True
            np.not_equal(key[1:], key[:-1], out=new_entity[1:])

    # Session starts: a new entity, or (gap mode) an inactivity gap above the threshold.
    start = new_entity.copy()
    if not supplied:
        gap = np.empty(len(ts), bool)
        gap[:1] = True
        np.greater(np.diff(ts), gap_minutes * 60, out=gap[1:])
        start |= gap
    sid = np.cumsum(start) - 1

    if collapse_repeats and len(item):
        rep = np.zeros(len(item), bool)
        rep[1:] = (item[1:] == item[:-1]) & (sid[1:] == sid[:-1])
        stats["repeats_collapsed"] = int(rep.sum())
        keep = ~rep
        sid, ts, item, user, split, ev = (sid[keep], ts[keep], item[keep], user[keep],
                                          split[keep], ev[keep])

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
    sid, ts, item, user, split, pos, ev = (sid[keep], ts[keep], item[keep], user[keep],
                                           split[keep], pos[keep], ev[keep])
    _, sid = np.unique(sid, return_inverse=True)  # contiguous session ids 0..S-1, same order
    sid = sid.astype(np.int64)

    starts = np.flatnonzero(pos == 0)
    ends = np.r_[starts[1:], len(sid)] - 1
    s_start, s_end = ts[starts], ts[ends]
    s_len = (ends - starts + 1).astype(np.int32)
    if (split == 1).any():
        s_split = np.maximum.reduceat(split, starts).astype(np.int8) if len(starts) else \
            np.zeros(0, np.int8)
    else:
        cutoff = (s_end.max() if len(s_end) else 0) - holdout_days * DAY
        s_split = ((s_end > cutoff) & (holdout_days > 0)).astype(np.int8)
    train_end = s_end[s_split == 0]
    ref = train_end.max() if len(train_end) else (s_end.max() if len(s_end) else 0)
    weights = session_weights(s_end, ref, half_life_days)

    table = pd.DataFrame(
        {"session": np.arange(len(starts), dtype=np.int64), "user": user[starts],
         "start": s_start, "end": s_end, "length": s_len, "weight": weights, "split": s_split}
    )
    ev_split = s_split[sid]
    frame = pd.DataFrame({"session": sid, "item": item.astype(np.int32), "ts": ts, "pos": pos,
                          "event": ev})
    train = frame.loc[ev_split == 0].reset_index(drop=True)
    test = frame.loc[ev_split == 1].reset_index(drop=True)
    stats.update(
        events_in=n0, events_kept=len(frame), sessions=len(table),
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


def split_by_days(table: pd.DataFrame, days: float) -> np.ndarray:
    """Boolean mask of sessions whose end falls in the last `days` days of the table."""
    end = table["end"].to_numpy()
    return end > end.max() - days * DAY


# ---------------------------------------------------------------- helpers


def _stable_order(key: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Order by (key, ts), ties kept in input order; one stable int64 sort when it fits."""
    if len(key) == 0:
        return np.zeros(0, np.int64)
    kmin, tmin = int(key.min()), int(ts.min())
    span = int(ts.max()) - tmin + 1
    kspan = int(key.max()) - kmin + 1
    if kspan * span < 2**62:
        combined = (key.astype(np.int64) - kmin) * span + (ts - tmin)
        return np.argsort(combined, kind="stable")
    return np.lexsort((ts, key))


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
