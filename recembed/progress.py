"""Progress bars for the long steps (walks, training), or nothing when progress is off or when
nobody watches: under cron or Airflow stderr is a file, and tqdm would write every refresh as a
new line (hundreds per run). There the runner's one line per stage says what happened."""

from __future__ import annotations

import sys


def bars_shown(enabled: bool) -> bool:
    """Whether progress bars are drawn: `enabled` (`run.progress`, the master switch) and stderr
    is a terminal."""
    if not enabled:
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def progress_bar(total: int, enabled: bool, *, unit: str, desc: str, mininterval: float = 0.5):
    """A tqdm bar over `total` units on stderr, or None when `bars_shown(enabled)` is false
    (callers check for None, so a disabled bar costs nothing and tqdm is never imported)."""
    if not bars_shown(enabled):
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, mininterval=mininterval, file=sys.stderr)
