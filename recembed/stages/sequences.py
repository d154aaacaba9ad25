"""sequences: training sessions -> the item2vec corpus, replicated by decay weight."""

from __future__ import annotations

from dataclasses import asdict

from recembed import artifacts as A
from recembed import settings
from recembed.pipeline import Stage, StageContext


def run(ctx: StageContext) -> dict:
    """Each session `replication * w / mean(w)` times on average, drawn per session (Spark:
    per-session streams, any partitioning)."""
    st = settings.engine(ctx.cfg, "sequences").corpus_from_files(
        ctx.read(A.SESSIONS_TRAIN), ctx.read(A.SESSION_TABLE), ctx.write(A.SESSION_CORPUS),
        settings.corpus_params(ctx.cfg), settings.runtime(ctx.cfg, ctx.scratch))
    return asdict(st)


STAGE = Stage("sequences", run, reads=(A.SESSIONS_TRAIN, A.SESSION_TABLE, A.CALIBRATION),
              writes=(A.SESSION_CORPUS,), sections=("sequences",),
              enabled=lambda cfg: cfg.sequences.enabled)
