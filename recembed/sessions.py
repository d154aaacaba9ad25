"""Sessionize clean events: bot filter, gap or supplied sessions, repeat collapsing, length cap,
time-decay weights and the temporal holdout split. Vectorized numpy throughout.

Outputs (see DESIGN.md):
- sessions (one row per event): `session` int64, `item` int32, `ts` int64, `pos` int32,
  `event` int32 (row index in the events table, for tracing; int64 past 2**31 events)
- session table: `session` int64, `user` int32, `start`, `end` int64, `length` int32,
  `weight` float64, `split` int8 (1 = holdout)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from recembed.runtime import Runtime

DAY = 86_400
MIN_WEIGHT = 1e-6  # decay floor: a normal float32, so no session's edges round to zero
_WIDER_GAPS_S = (2 * 3600, 8 * 3600, DAY, 7 * DAY, np.inf)


class DataLossError(ValueError):
    """A filter would remove a surprising share of the data (or all of it); the message names
    the rule, the share and the key that overrides it."""


@dataclass
class SessionResult:
    """Train and holdout events by session, the session table, and counts for the run summary."""

    train: pd.DataFrame
    test: pd.DataFrame
    table: pd.DataFrame
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SessionParams:
    """How events become sessions (`[session]`, `[bots]`, `[holdout]`, `[validation]`): the
    keywords of `sessionize`, with its units and ranges (see there)."""

    gap_minutes: float = 30.0
    max_length: int = 200
    min_length: int = 2
    collapse_repeats: bool = True
    half_life_days: float = 7.0
    holdout_days: float = 1.0
    bots: bool = True
    max_events_per_day: int = 1000
    min_median_gap_s: float = 1.0
    min_events_for_gap_rule: int = 20
    bot_outlier_z: float = 3.5
    bot_max_share: float = 0.25
    auto_gap: bool = True
    max_short_share: float = 0.25
    validation_share: float = 0.1
    validation_min_sessions: int = 1000
    validation_max_sessions: int = 20_000


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
    bot_outlier_z: float = 3.5,
    bot_max_share: float = 0.25,
    auto_gap: bool = True,
    max_short_share: float = 0.25,
    validation_share: float = 0.1,
    validation_min_sessions: int = 1000,
    validation_max_sessions: int = 20_000,
) -> SessionResult:
    """Sessions from events (columns as produced by `ingest`), split into train and holdout.

    A `session` column in `events` wins over gap splitting. When rows carry `split` = 1 (events
    from explicit test files), those sessions form the holdout; otherwise it is the sessions that
    end in the last `holdout_days` days.

    Parameters
    ----------
    events : DataFrame
        `user` int32 (-1 absent), `item` int32, `ts` int64 unix seconds[, `session`][, `split`].
    gap_minutes : float, minutes, > 0
        Inactivity gap that starts a new session (gap mode).
    max_length, min_length : int, events
        Longer sessions are split into chunks; shorter ones are dropped (counted).
    collapse_repeats : bool
        Collapse immediate repeats of the same item.
    half_life_days : float, days, > 0 (inf = no decay)
        Session weight `0.5 ** (age / half_life)`, floored at `MIN_WEIGHT`: decay down-weights,
        it never erases a session.
    holdout_days : float, days, >= 0
        Sessions ending in the last N days are the holdout (when no explicit test files).
    bots, max_events_per_day, min_median_gap_s, min_events_for_gap_rule, bot_outlier_z
        Bot filter. An entity (user, or supplied session) is a bot when it is an *outlier of the
        population* on a rule and also past the rule's absolute bound: more than
        `max_events_per_day` events on a day, or (with at least `min_events_for_gap_rule`
        events) a median gap under `min_median_gap_s` seconds. Outlier = modified z-score of
        log10(value) beyond `bot_outlier_z` (Iglewicz & Hoaglin's 3.5): a log whose users all
        rate items seconds apart keeps them.
    bot_max_share : float in [0, 1]
        More bot events than this share stops the run (`DataLossError`, names the key).
    auto_gap : bool
        Gap mode only: when one-event sessions would hold more than `max_short_share` of the
        events (purchase logs: days between a user's events), widen the gap (2 h, 8 h, 1 d, 7 d,
        whole user history) until they do not; reported as a warning.
    validation_share, validation_min_sessions, validation_max_sessions
        The most recent training sessions (this share; at least the minimum but never more than
        a quarter of them; at most the maximum) get `split` = 2: the
        validation split that calibration uses. It is part of the training window (never the
        holdout); `sessions_train` holds them too.
    """
    stats: dict = {"warnings": []}
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
        drop, rules = bot_rows(key, ts, new_entity, max_events_per_day, min_median_gap_s,
                                min_events_for_gap_rule, bot_outlier_z)
        stats["bot_entities"] = int((drop & new_entity).sum())
        stats["bot_events"] = int(drop.sum())
        stats["bot_event_share"] = float(drop.mean())
        stats.update(rules)
        if stats["bot_event_share"] > bot_max_share:
            raise DataLossError(too_many_bots_message(stats, n0, bot_max_share))
    stats.setdefault("bot_events", 0)
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
    stats["gap_minutes"] = gap_minutes
    if not supplied and len(ts):
        gap_s = choose_gap(_short_shares(new_entity, ts, min_length), gap_s, max_short_share,
                           auto_gap, stats)
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
    stats["events_in_short_sessions"] = int((~keep).sum())
    if len(keep) and (~keep).mean() > max_short_share:
        stats["warnings"].append(short_sessions_warning(min_length, float((~keep).mean())))
    sid, ts, item, pos, ev = sid[keep], ts[keep], item[keep], pos[keep], ev[keep]
    # contiguous session ids 0..S-1 in the same order (sid is non-decreasing)
    sid = np.cumsum(np.r_[len(sid) > 0, sid[1:] != sid[:-1]], dtype=np.int64) - 1

    if not len(ts):
        raise DataLossError(nothing_left_message(stats, n0, min_length))
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
    s_split = mark_validation(s_split, s_end, validation_share, validation_min_sessions,
                               validation_max_sessions)
    train_end = s_end[s_split != 1]
    ref = train_end.max() if len(train_end) else (s_end.max() if len(s_end) else 0)
    weights = session_weights(s_end, ref, half_life_days)
    tw = weights[s_split != 1]
    stats["effective_sessions"] = float(tw.sum() ** 2 / (tw ** 2).sum()) if len(tw) else 0.0

    table = pd.DataFrame(
        {"session": np.arange(len(starts), dtype=np.int64), "user": events["user"].to_numpy()[ev[starts]],
         "start": s_start, "end": s_end, "length": s_len, "weight": weights, "split": s_split},
        copy=False,
    )
    is_test = s_split[sid] == 1
    if not len(table):
        raise DataLossError(nothing_left_message(stats, n0, min_length))
    cols = {"session": sid, "item": item.astype(np.int32), "ts": ts, "pos": pos, "event": ev}
    # copy=False: no block consolidation, the filtered arrays become the columns as they are
    train = pd.DataFrame({k: v[~is_test] for k, v in cols.items()}, copy=False)
    test = pd.DataFrame({k: v[is_test] for k, v in cols.items()}, copy=False)
    stats.update(
        events_in=n0, events_kept=len(sid), sessions=len(table),
        train_sessions=int((s_split != 1).sum()), holdout_sessions=int((s_split == 1).sum()),
        validation_sessions=int((s_split == 2).sum()),
        train_events=len(train), holdout_events=len(test),
        mean_session_length=float(s_len.mean()) if len(s_len) else 0.0,
    )
    return SessionResult(train, test, table, stats)


def sessionize_files(events_path: str | Path, train_path: str | Path, test_path: str | Path,
                     table_path: str | Path, params: SessionParams, runtime: Runtime) -> dict:
    """The sessionize stage, local engine: `sessionize` of the events artifact, its three
    tables written (the engine-neutral signature `recembed.spark.sessions` shares).

    Parameters
    ----------
    events_path : str or pathlib.Path
        The events artifact (Parquet, as `recembed.ingest.ingest_files` writes it).
    train_path, test_path, table_path : str or pathlib.Path
        sessions_train, sessions_test and the session table to write (atomically).
    params : SessionParams
        Sessions, bot filter, holdout and validation split.
    runtime : recembed.runtime.Runtime
        Unused by the local engine.

    Returns
    -------
    dict
        The statistics of `sessionize` (`warnings` a list of str).

    Raises
    ------
    DataLossError
        As `sessionize`.
    """
    from recembed import artifacts as A

    res = sessionize(pd.read_parquet(events_path), **asdict(params))
    for art, path, table in ((A.SESSIONS_TRAIN, train_path, res.train),
                             (A.SESSIONS_TEST, test_path, res.test),
                             (A.SESSION_TABLE, table_path, res.table)):
        A.write_parquet(table, path, art.columns)
    return res.stats


def session_weights(end_ts: np.ndarray, ref_ts: float, half_life_days: float) -> np.ndarray:
    """Time-decay weight per session, `0.5 ** (age / half_life)` in [MIN_WEIGHT, 1];
    age = ref - end.

    The floor keeps every session in the graph and corpus: stored as float32 in the graph, an
    unfloored weight of a session 3 years old at a 7-day half-life rounds to 0 and the walks
    refused the graph (issue 17, item 0).
    """
    if np.isinf(half_life_days):
        return np.ones(len(end_ts))
    age_days = np.maximum(ref_ts - end_ts.astype(np.float64), 0.0) / DAY
    w = np.exp2(-age_days / half_life_days)
    return np.maximum(w, MIN_WEIGHT)


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


def bot_rows(
    key: np.ndarray, ts: np.ndarray, new_entity: np.ndarray, max_per_day: int,
    min_median_gap: float, min_events: int, z: float,
) -> tuple[np.ndarray, dict]:
    """Rows of bot entities, and per-rule counts: an entity is a bot when it is past a rule's
    absolute bound AND an outlier of the population on that rule (modified z-score of log10).

    Parameters
    ----------
    key : numpy.ndarray
        Entity of each row (rows sorted by entity, then time).
    ts : numpy.ndarray
        int64 unix seconds.
    new_entity : numpy.ndarray
        bool, True on each entity's first row.
    max_per_day : int >= 0, events
        `bots.max_events_per_day`.
    min_median_gap : float >= 0, seconds
        `bots.min_median_gap_s`.
    min_events : int >= 0, events
        `bots.min_events_for_gap_rule`.
    z : float > 0
        `bots.outlier_z`.

    Returns
    -------
    (numpy.ndarray, dict)
        bool per row (a bot's), and events per rule (`bot_events_volume_rule`,
        `bot_events_gap_rule`).
    """
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
    lv = np.log10(max_daily.astype(np.float64))
    volume = (max_daily > max_per_day) & (robust_z(lv, lv) > z)

    counts = np.bincount(ent, minlength=n_ent)
    gaps = np.diff(ts).astype(np.float64)
    inner = ~new_entity[1:]
    gap_bot = np.zeros(n_ent, bool)
    sel = inner & (counts[ent[1:]] >= 3)
    if sel.any():
        med = pd.Series(gaps[sel]).groupby(ent[1:][sel]).median()
        who = med.index.to_numpy()
        lg = np.log10(np.maximum(med.to_numpy(), 0.01))
        # the population (entities with 3+ events) sets the scale; the rule applies to those
        # with min_events+ only, and only below the absolute bound
        low = -robust_z(lg, lg) > z
        gap_bot[who] = low & (med.to_numpy() < min_median_gap) & (counts[who] >= min_events)
    bot = volume | gap_bot
    rules = {"bot_events_volume_rule": int(counts[volume].sum()),
             "bot_events_gap_rule": int(counts[gap_bot & ~volume].sum())}
    return bot[ent], rules


def robust_z(x: np.ndarray, population: np.ndarray) -> np.ndarray:
    """Modified z-score of x against the population: 0.6745 (x - median) / MAD, the MAD floored
    at 0.1 decades so that a population of identical users does not make every deviation
    infinite.

    Parameters
    ----------
    x, population : numpy.ndarray
        float64 values (log10 decades here); population non-empty.

    Returns
    -------
    numpy.ndarray
        float64 z-scores of x.
    """
    med = np.median(population)
    mad = max(np.median(np.abs(population - med)), 0.1)
    return 0.6745 * (x - med) / mad


def choose_gap(short_shares, gap_s: float, max_short: float, auto: bool, stats: dict) -> float:
    """The configured gap, or (auto) the smallest wider one that leaves no more than `max_short`
    of the events in sessions shorter than session.min_length (a loud warning in `stats`).
    `short_shares(gaps)` gives that share for each gap: numpy here, a Spark aggregate in
    `recembed.spark.sessions`; the rule is this one function for both engines."""
    share = short_shares([gap_s])[0]
    if not auto or share <= max_short:
        return gap_s
    wider = [g for g in _WIDER_GAPS_S if g > gap_s]
    for g, s2 in zip(wider, short_shares(wider), strict=True):
        if s2 <= max_short or np.isinf(g):
            label = "the whole user history" if np.isinf(g) else f"{g / 60:g} minutes"
            stats["gap_minutes"] = float(g / 60)
            stats["warnings"].append(
                f"session.gap_minutes={gap_s / 60:g} left {share:.0%} of the events in sessions "
                f"shorter than session.min_length; the gap was widened to {label} ({s2:.0%} "
                "left). Set session.auto_gap=false to keep the configured gap")
            return float(g)
    return gap_s


def validation_count(n_train: int, share: float, least: int, cap: int) -> int:
    """How many of `n_train` training sessions the validation split takes: `share` of them, at
    least `least` but never more than a quarter, at most `cap`; 0 when that would leave no
    training session (or share is 0)."""
    n_val = min(max(int(n_train * share), min(least, n_train // 4)), cap)
    if share <= 0 or n_val < 1 or n_train - n_val < 1:
        return 0
    return n_val


def _short_shares(new_entity: np.ndarray, ts: np.ndarray, min_length: int):
    """`choose_gap`'s share function over sorted events (entity starts marked)."""
    d = np.diff(ts)
    n = len(ts)

    def shares(gaps: list[float]) -> list[float]:
        out = []
        for g in gaps:
            start = new_entity.copy()
            start[1:] |= d > g
            lengths = np.bincount(np.cumsum(start) - 1)
            out.append(float(lengths[lengths < min_length].sum() / n))
        return out

    return shares


def mark_validation(split: np.ndarray, end: np.ndarray, share: float, least: int,
                    cap: int) -> np.ndarray:
    """split = 2 for the most recent training sessions (by end time, ties by order).

    Parameters
    ----------
    split : numpy.ndarray
        int8 per session: 0 train, 1 holdout.
    end : numpy.ndarray
        int64 unix seconds: each session's last event.
    share, least, cap
        As `validation_count` (`validation.share`, `.min_sessions`, `.max_sessions`).

    Returns
    -------
    numpy.ndarray
        A copy of `split` with 2 for the validation sessions (`split` itself when none).
    """
    train = np.flatnonzero(split == 0)
    n_val = validation_count(len(train), share, least, cap)
    if n_val == 0:
        return split
    order = train[np.argsort(end[train], kind="stable")]
    out = split.copy()
    out[order[-n_val:]] = 2
    return out


def too_many_bots_message(stats: dict, n0: int, bot_max_share: float) -> str:
    """The DataLossError text when bots hold more than `bot_max_share` (in [0, 1]) of the `n0`
    events; `stats` holds the bot counts (`bot_events`, `bot_event_share`, per rule)."""
    return (f"the bot filter would remove {stats['bot_event_share']:.1%} of all events "
            f"({stats['bot_events']:,} of {n0:,}; daily-volume rule "
            f"{stats['bot_events_volume_rule']:,}, median-gap rule "
            f"{stats['bot_events_gap_rule']:,}), above bots.max_share={bot_max_share:.0%}. "
            "If these really are bots, raise bots.max_share; if they are people, set "
            "bots.enabled=false or loosen bots.min_median_gap_s / bots.max_events_per_day")


def short_sessions_warning(min_length: int, share: float) -> str:
    """The warning when `share` (in [0, 1]) of the events are in sessions shorter than
    `min_length` events."""
    return (f"session.min_length={min_length}: {share:.0%} of the events are in sessions too "
            "short to carry co-occurrence and are not trained on")


def nothing_left_message(stats: dict, n0: int, min_length: int) -> str:
    """The DataLossError text when no session of the `n0` events is left: what removed them
    (bots, repeats, sessions shorter than `min_length`), from `stats`."""
    parts = [f"{n0:,} events in"]
    if stats.get("bot_events"):
        parts.append(f"{stats['bot_events']:,} removed as bots (bots.enabled)")
    if stats.get("repeats_collapsed"):
        parts.append(f"{stats['repeats_collapsed']:,} immediate repeats collapsed "
                     "(session.collapse_repeats)")
    parts.append(f"{stats.get('sessions_too_short', 0):,} sessions shorter than "
                 f"session.min_length={min_length} dropped")
    return ("no session is left to train on: " + "; ".join(parts) + ". A log needs users (or "
            "sessions) with at least two events: check [input.columns] and [session]")


def no_training_sessions_message(stats: dict, holdout_days: float, events_path: str | Path,
                                 has_test_paths: bool = False) -> str:
    """The error text when sessionize leaves sessions but none to train on, naming the cause.

    Parameters
    ----------
    stats : dict
        The statistics of `sessionize` (either engine): `sessions`, `holdout_sessions`,
        `validation_sessions`.
    holdout_days : float >= 0, days
        `holdout.days`.
    events_path : str or pathlib.Path
        The events artifact (its `ts` column gives the span of the log).
    has_test_paths : bool
        The holdout comes from `input.test_paths` rather than from the time window.

    Returns
    -------
    str
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    def iso_time(t: int) -> str:
        return pd.Timestamp(t, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")

    ts = pq.read_table(events_path, columns=["ts"]).column("ts")
    lo, hi = (pc.min(ts).as_py() or 0, pc.max(ts).as_py() or 0) if len(ts) else (0, 0)
    span = f"{hi - lo:,} s" if hi - lo < DAY else f"{(hi - lo) / DAY:,.1f} days"
    n, held = stats.get("sessions", 0), stats.get("holdout_sessions", 0)
    head = f"no training session: of {n:,} sessions, {held:,} are in the holdout"
    if stats.get("validation_sessions"):
        head += f" and {stats['validation_sessions']:,} in validation"
    if has_test_paths:
        return (f"{head}: every session holds an event of input.test_paths; give training "
                "events in input.paths that are not in the test files")
    same = " (every event at the same second: an export stamped at write time?)" if hi == lo \
        else ""
    return (f"{head}, because every session ends in the last holdout.days={holdout_days:g} "
            f"days of the log, which spans {span} ({iso_time(lo)} .. {iso_time(hi)}){same}. "
            "Check the timestamp column (input.columns.ts, input.ts_unit), lower holdout.days, "
            "or give the holdout as input.test_paths")

