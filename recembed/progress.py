"""Progress bars for the long steps (walks, training), or nothing when progress is off."""

from __future__ import annotations


def progress_bar(total: int, enabled: bool, *, unit: str, desc: str, mininterval: float = 0.5):
    """A tqdm bar over `total` units, or None when `enabled` is false (callers check for None,
    so a disabled bar costs nothing and tqdm is never imported)."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, mininterval=mininterval)
