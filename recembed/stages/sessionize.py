"""sessionize: clean events -> train / holdout sessions and the session table."""

from __future__ import annotations

import pandas as pd

from recembed import artifacts as A
from recembed.pipeline import EXIT_BAD_INPUT, PipelineError, Stage, StageContext
from recembed.sessions import sessionize


def run(ctx: StageContext) -> dict:
    """Bot filter, sessions, decay weights and the temporal split."""
    s, b = ctx.cfg.session, ctx.cfg.bots
    res = sessionize(
        pd.read_parquet(ctx.read(A.EVENTS)), gap_minutes=s.gap_minutes, max_length=s.max_length,
        min_length=s.min_length, collapse_repeats=s.collapse_repeats,
        half_life_days=s.half_life_days, holdout_days=ctx.cfg.holdout.days, bots=b.enabled,
        max_events_per_day=b.max_events_per_day, min_median_gap_s=b.min_median_gap_s,
        min_events_for_gap_rule=b.min_events_for_gap_rule,
    )
    if res.stats["train_sessions"] == 0:
        raise PipelineError("no training sessions left after sessionizing "
                            f"({res.stats}); check the column mapping and session settings",
                            EXIT_BAD_INPUT)
    for art, table in ((A.SESSIONS_TRAIN, res.train), (A.SESSIONS_TEST, res.test),
                       (A.SESSION_TABLE, res.table)):
        A.write_parquet(table, ctx.write(art), art.columns)
    return res.stats


STAGE = Stage("sessionize", run, reads=(A.EVENTS,),
              writes=(A.SESSIONS_TRAIN, A.SESSIONS_TEST, A.SESSION_TABLE),
              sections=("session", "bots", "holdout"))
