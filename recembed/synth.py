"""A realistic synthetic click-log generator, vectorized so 50M events take seconds.

Structure it plants (so tests know the right answer): Zipf item popularity inside categories of
Zipf-distributed size and traffic; sessions that mostly stay in one category and drift along a
ring of related items there (so next-item structure exists beyond popularity); re-views of
earlier items in the session; lognormal gaps within sessions and multi-hour breaks between them;
a share of bot users with very fast, very long random sessions; popularity that drifts from day
to day.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DAY = 86_400


@dataclass
class SynthLog:
    """Events (`user_id`, `item_id`, `timestamp` unix seconds, `event_type`) and item categories."""

    events: pd.DataFrame
    items: pd.DataFrame


def synth_clicks(
    n_events: int,
    *,
    n_items: int | None = None,
    n_categories: int | None = None,
    days: int = 14,
    mean_session_length: float = 6.0,
    stay_in_category: float = 0.9,
    repeat_share: float = 0.2,
    bot_share: float = 0.02,
    drift: float = 0.3,
    seed: int = 0,
    start_ts: int = 1_700_000_000,
) -> SynthLog:
    """A click log of about `n_events` events (exactly that many), sorted by timestamp."""
    rng = np.random.default_rng(seed)
    n_items = n_items or max(200, int(n_events ** 0.8 // 2))
    n_categories = n_categories or max(5, int(np.sqrt(n_items) / 2))
    n_bot_events = int(n_events * bot_share)
    n_human = n_events - n_bot_events

    # Categories: Zipf sizes, items laid out contiguously per category.
    cat_w = 1.0 / np.arange(1, n_categories + 1) ** 0.8
    cat_size = np.maximum(2, np.round(cat_w / cat_w.sum() * n_items)).astype(np.int64)
    cat_off = np.r_[0, np.cumsum(cat_size)[:-1]]
    n_items = int(cat_size.sum())
    item_cat = np.repeat(np.arange(n_categories), cat_size)

    # Sessions: lengths 2 + geometric, users Zipf-ish, start times spread over the days.
    n_sess = int(n_human / mean_session_length * 1.2) + 10
    lengths = 1 + rng.geometric(1.0 / (mean_session_length - 1 + 1e-9), n_sess)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), n_human) + 1]
    lengths[-1] -= lengths.sum() - n_human
    lengths = lengths[lengths > 0]
    n_sess = len(lengths)
    n_users = max(10, n_sess // 3)
    sess_user = (rng.pareto(1.2, n_sess) * n_users / 20).astype(np.int64) % n_users
    sess_day = rng.integers(0, days, n_sess)
    sess_start = start_ts + sess_day * DAY + rng.integers(0, DAY - 3600, n_sess)
    sess_cat = rng.choice(n_categories, n_sess, p=_traffic(cat_size))

    sess_of = np.repeat(np.arange(n_sess), lengths)
    first = np.r_[0, np.cumsum(lengths)[:-1]]
    pos = np.arange(n_human) - first[sess_of]
    cat = sess_cat[sess_of].copy()
    wander = rng.random(n_human) > stay_in_category
    cat[wander] = rng.choice(n_categories, int(wander.sum()), p=_traffic(cat_size))

    # Within a category: Zipf draws (fresh jumps) or steps along a ring of related items.
    size = cat_size[cat]
    zipf_rank = (rng.zipf(1.3, n_human) - 1) % size
    day = sess_day[sess_of]
    trending = rng.random(n_human) < drift
    zipf_rank = np.where(trending, (zipf_rank + day * 7) % size, zipf_rank)
    jump = (pos == 0) | wander | (rng.random(n_human) < 0.3)
    jump |= np.r_[False, cat[1:] != cat[:-1]]
    step = rng.choice(np.array([-2, -1, 1, 1, 2, 3]), n_human)
    seg = np.cumsum(jump) - 1
    base = zipf_rank[jump][seg]
    walk = np.cumsum(np.where(jump, 0, step))
    walk -= walk[jump][seg]
    local = (base + walk) % size
    item = cat_off[cat] + local

    # Re-views: some events repeat the item seen two steps earlier in the same session.
    rep = (pos >= 2) & (rng.random(n_human) < repeat_share)
    idx = np.flatnonzero(rep)
    item[idx] = item[idx - 2]

    gaps = np.exp(rng.normal(np.log(45), 1.0, n_human)).astype(np.int64)
    gaps[pos == 0] = 0
    ts = sess_start[sess_of] + _segment_cumsum(gaps, pos == 0)
    user = sess_user[sess_of]

    # Bots: a few users producing long, fast, random click streams.
    n_bots = max(1, n_bot_events // 2000) if n_bot_events else 0
    b_user = np.sort(n_users + rng.integers(0, max(n_bots, 1), n_bot_events))
    b_item = rng.integers(0, n_items, n_bot_events)
    # each bot clicks every 0.2-2 s in one burst on a random day
    b_start = start_ts + rng.integers(0, days, n_bots) * DAY + rng.integers(0, DAY // 2, n_bots)
    b_ts = b_start[b_user - n_users] + _segment_cumsum(
        rng.uniform(0.2, 2.0, n_bot_events), np.r_[True, b_user[1:] != b_user[:-1]]
    ).astype(np.int64) if n_bot_events else np.zeros(0, np.int64)

    ev = pd.DataFrame(
        {
            "user_id": np.r_[user, b_user].astype(np.int64),
            "item_id": (np.r_[item, b_item] + 100_000).astype(np.int64),
            "timestamp": np.r_[ts, b_ts].astype(np.int64),
        }
    )
    ev["event_type"] = pd.Categorical.from_codes(
        (rng.random(len(ev)) < 0.03).astype(np.int8), ["view", "cart"]
    )
    ev = ev.sort_values("timestamp", kind="stable", ignore_index=True)
    items = pd.DataFrame(
        {"item_id": np.arange(n_items, dtype=np.int64) + 100_000, "category": item_cat}
    )
    return SynthLog(ev, items)


def write_synth(log: SynthLog, path: str | Path) -> tuple[Path, Path]:
    """Write events (CSV or Parquet by suffix) and `<stem>_items.csv`; returns both paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".parquet", ".pq"):
        log.events.to_parquet(path, index=False)
    else:
        ev = log.events.copy()
        ev["timestamp"] = pd.to_datetime(ev["timestamp"], unit="s", utc=True).dt.strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        ev.to_csv(path, index=False)
    items_path = path.with_name(f"{path.stem}_items.csv")
    log.items.to_csv(items_path, index=False)
    return path, items_path


def _traffic(cat_size: np.ndarray) -> np.ndarray:
    w = cat_size.astype(np.float64) ** 0.9
    return w / w.sum()


def _segment_cumsum(x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    c = np.cumsum(x)
    seg = np.cumsum(starts) - 1
    offsets = (c - x)[starts]
    return c - offsets[seg]
