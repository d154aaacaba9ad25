"""sessionize: clean events -> train / holdout sessions and the session table."""

from __future__ import annotations

import logging

import pandas as pd

from recembed import artifacts as A
from recembed.pipeline import EXIT_BAD_INPUT, PipelineError, Stage, StageContext
from recembed.sessions import DataLossError, sessionize

log = logging.getLogger("recembed")


def run(ctx: StageContext) -> dict:
    """Bot filter, sessions, decay weights and the temporal split."""
    s, b, v = ctx.cfg.session, ctx.cfg.bots, ctx.cfg.validation
    try:
        res = sessionize(
            pd.read_parquet(ctx.read(A.EVENTS)), gap_minutes=s.gap_minutes,
            max_length=s.max_length, min_length=s.min_length,
            collapse_repeats=s.collapse_repeats, half_life_days=s.half_life_days,
            holdout_days=ctx.cfg.holdout.days, bots=b.enabled,
            max_events_per_day=b.max_events_per_day, min_median_gap_s=b.min_median_gap_s,
            min_events_for_gap_rule=b.min_events_for_gap_rule, bot_outlier_z=b.outlier_z,
            bot_max_share=b.max_share, auto_gap=s.auto_gap, max_short_share=s.max_short_share,
            validation_share=v.share, validation_min_sessions=v.min_sessions,
            validation_max_sessions=v.max_sessions,
        )
    except DataLossError as e:
        raise PipelineError(str(e), EXIT_BAD_INPUT) from e
    for w in res.stats["warnings"]:
        log.warning("sessionize: %s", w)
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
              sections=("session", "bots", "holdout", "validation"))
