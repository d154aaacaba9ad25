"""sequences: training sessions -> the item2vec corpus, replicated by decay weight."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from recembed import artifacts as A
from recembed.pipeline import Stage, StageContext
from recembed.sequences import write_session_corpus


def run(ctx: StageContext) -> dict:
    """Each session `replication * w / mean(w)` times on average, drawn per session."""
    st = write_session_corpus(
        pd.read_parquet(ctx.read(A.SESSIONS_TRAIN), columns=["session", "item"]),
        pd.read_parquet(ctx.read(A.SESSION_TABLE), columns=["session", "weight"]),
        ctx.write(A.SESSION_CORPUS), replication=ctx.cfg.sequences.replication,
        seed=ctx.cfg.run.seed, min_copies=ctx.cfg.sequences.min_copies)
    return asdict(st)


STAGE = Stage("sequences", run, reads=(A.SESSIONS_TRAIN, A.SESSION_TABLE, A.CALIBRATION),
              writes=(A.SESSION_CORPUS,), sections=("sequences",),
              enabled=lambda cfg: cfg.sequences.enabled)
