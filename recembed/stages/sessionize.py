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
    kw = dict(
        gap_minutes=s.gap_minutes,
        max_length=s.max_length, min_length=s.min_length,
        collapse_repeats=s.collapse_repeats, half_life_days=s.half_life_days,
        holdout_days=ctx.cfg.holdout.days, bots=b.enabled,
        max_events_per_day=b.max_events_per_day, min_median_gap_s=b.min_median_gap_s,
        min_events_for_gap_rule=b.min_events_for_gap_rule, bot_outlier_z=b.outlier_z,
        bot_max_share=b.max_share, auto_gap=s.auto_gap, max_short_share=s.max_short_share,
        validation_share=v.share, validation_min_sessions=v.min_sessions,
        validation_max_sessions=v.max_sessions,
    )
    outs = [(art, ctx.write(art)) for art in (A.SESSIONS_TRAIN, A.SESSIONS_TEST, A.SESSION_TABLE)]
    try:
        if ctx.cfg.run.engine == "spark":  # window functions, the same rules (recembed.spark)
            from recembed.spark import sessions as spark_sessions
            from recembed.spark.session import from_config

            stats = spark_sessions.sessionize(from_config(ctx.cfg), ctx.read(A.EVENTS),
                                              *[p for _, p in outs], ctx.scratch, **kw)
        else:
            res = sessionize(pd.read_parquet(ctx.read(A.EVENTS)), **kw)
            for (art, path), table in zip(outs, (res.train, res.test, res.table), strict=True):
                A.write_parquet(table, path, art.columns)
            stats = res.stats
    except DataLossError as e:
        raise PipelineError(str(e), EXIT_BAD_INPUT) from e
    for w in stats["warnings"]:
        log.warning("sessionize: %s", w)
    if stats["train_sessions"] == 0:
        raise PipelineError("no training sessions left after sessionizing "
                            f"({stats}); check the column mapping and session settings",
                            EXIT_BAD_INPUT)
    return stats


STAGE = Stage("sessionize", run, reads=(A.EVENTS,),
              writes=(A.SESSIONS_TRAIN, A.SESSIONS_TEST, A.SESSION_TABLE),
              sections=("session", "bots", "holdout", "validation"))
