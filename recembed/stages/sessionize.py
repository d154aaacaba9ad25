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
    for w in stats["warnings"]:
        log.warning("sessionize: %s", w)
    if stats["train_sessions"] == 0:
        raise PipelineError(no_training_sessions_message(
            stats, ctx.cfg.holdout.days, ctx.read(A.EVENTS), bool(ctx.cfg.input.test_paths)),
            EXIT_BAD_INPUT)
    return stats


STAGE = Stage("sessionize", run, reads=(A.EVENTS,),
              writes=(A.SESSIONS_TRAIN, A.SESSIONS_TEST, A.SESSION_TABLE),
              sections=("session", "bots", "holdout", "validation"))
