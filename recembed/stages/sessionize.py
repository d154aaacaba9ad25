"""sessionize: clean events -> train / holdout sessions and the session table."""

from __future__ import annotations

import logging

from recembed import artifacts as A
from recembed import settings
from recembed.pipeline import EXIT_BAD_INPUT, PipelineError, Stage, StageContext
from recembed.sessions import DataLossError, no_training_sessions_message

log = logging.getLogger("recembed")


def run(ctx: StageContext) -> dict:
    """Bot filter, sessions, decay weights and the temporal split (Spark: window functions,
    the same rules)."""
    try:
        stats = settings.engine(ctx.cfg, "sessions").sessionize_files(
            ctx.read(A.EVENTS), ctx.write(A.SESSIONS_TRAIN), ctx.write(A.SESSIONS_TEST),
            ctx.write(A.SESSION_TABLE), settings.session_params(ctx.cfg),
            settings.runtime(ctx.cfg, ctx.scratch))
    except DataLossError as e:
        raise PipelineError(str(e), EXIT_BAD_INPUT) from e
    if not ctx.cfg.input.test_paths:
        small = small_holdout_warning(ctx.write(A.SESSION_TABLE), ctx.cfg.holdout.days)
        if small:
            stats["warnings"].append(small)
    for w in stats["warnings"]:
        log.warning("sessionize: %s", w)
    if stats["train_sessions"] == 0:
        raise PipelineError(no_training_sessions_message(
            stats, ctx.cfg.holdout.days, ctx.read(A.EVENTS), bool(ctx.cfg.input.test_paths)),
            EXIT_BAD_INPUT)
    return stats


SMALL_HOLDOUT_SESSIONS = 100  # fewer holdout sessions than this: its metrics are noise
SUGGESTED_HOLDOUT_SESSIONS = 1000


def small_holdout_warning(table_path, holdout_days: float) -> str | None:
    """The warning for a holdout of fewer than `SMALL_HOLDOUT_SESSIONS` sessions when the log
    holds ten times more (a log spanning years whose last `holdout.days` is nearly empty), with
    the holdout.days that would hold about `SUGGESTED_HOLDOUT_SESSIONS` (at most a tenth of the
    sessions); None when the holdout is large enough or days are 0 (no holdout asked for).

    Parameters
    ----------
    table_path : path
        The session table (columns `end`, seconds, and `split`: 1 = holdout).
    holdout_days : float >= 0, days
    """
    import numpy as np
    import pyarrow.parquet as pq

    t = pq.read_table(table_path, columns=["end", "split"])
    end = np.asarray(t.column("end").to_numpy(), np.float64)
    split = np.asarray(t.column("split").to_numpy())
    n, n_hold = len(end), int((split == 1).sum())
    if holdout_days <= 0 or n_hold >= SMALL_HOLDOUT_SESSIONS or n < 10 * SMALL_HOLDOUT_SESSIONS:
        return None
    want = min(SUGGESTED_HOLDOUT_SESSIONS, n // 10)
    ends = np.sort(end)
    days = int(np.ceil((ends[-1] - ends[-want]) / 86_400.0)) or 1
    return (f"holdout.days={holdout_days:g} leaves {n_hold} of {n:,} sessions in the holdout, "
            "too few for its Recall@K / MRR@K to mean anything (the log's last days are nearly "
            f"empty). holdout.days = {days} would hold about {want:,} sessions (which are then "
            "not trained on); calibration uses its own validation split and is unaffected")


STAGE = Stage("sessionize", run, reads=(A.EVENTS,),
              writes=(A.SESSIONS_TRAIN, A.SESSIONS_TEST, A.SESSION_TABLE),
              sections=("session", "bots", "holdout", "validation"))
