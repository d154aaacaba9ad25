"""sequences: training sessions -> the item2vec corpus, replicated by decay weight."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from recembed import artifacts as A
from recembed.pipeline import Stage, StageContext
from recembed.sequences import write_session_corpus


def run(ctx: StageContext) -> dict:
    """Each session `replication * w / mean(w)` times on average, drawn per session."""
    kw = dict(replication=ctx.cfg.sequences.replication, seed=ctx.cfg.run.seed,
              min_copies=ctx.cfg.sequences.min_copies)
    if ctx.cfg.run.engine == "spark":  # per-session streams, any partitioning (recembed.spark)
        from recembed.spark import sequences as spark_sequences
        from recembed.spark.session import from_config

        st = spark_sequences.write_session_corpus(
            from_config(ctx.cfg), ctx.read(A.SESSIONS_TRAIN), ctx.read(A.SESSION_TABLE),
            ctx.write(A.SESSION_CORPUS), ctx.scratch, **kw)
        return asdict(st)
    st = write_session_corpus(
        pd.read_parquet(ctx.read(A.SESSIONS_TRAIN), columns=["session", "item"]),
        pd.read_parquet(ctx.read(A.SESSION_TABLE), columns=["session", "weight"]),
        ctx.write(A.SESSION_CORPUS), **kw)
    return asdict(st)


STAGE = Stage("sequences", run, reads=(A.SESSIONS_TRAIN, A.SESSION_TABLE, A.CALIBRATION),
              writes=(A.SESSION_CORPUS,), sections=("sequences",),
              enabled=lambda cfg: cfg.sequences.enabled)
