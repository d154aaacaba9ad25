"""graph: training sessions -> the weighted item graph (CSR)."""

from __future__ import annotations

import pandas as pd

from recembed import artifacts as A
from recembed import settings
from recembed.graph import graph_summary, save_graph
from recembed.pipeline import Stage, StageContext


def run(ctx: StageContext) -> dict:
    """Edges between items that follow each other, weighted by the sessions' decay weights
    (Spark: per-row sums in the local order)."""
    g = settings.engine(ctx.cfg, "graph").graph_from_files(
        ctx.read(A.SESSIONS_TRAIN), ctx.read(A.SESSION_TABLE),
        len(pd.read_parquet(ctx.read(A.VOCABULARY), columns=["code"])),
        settings.graph_params(ctx.cfg), settings.runtime(ctx.cfg, ctx.scratch))
    save_graph(g, ctx.write(A.GRAPH))
    return graph_summary(g).as_dict()


STAGE = Stage("graph", run,
              reads=(A.SESSIONS_TRAIN, A.SESSION_TABLE, A.VOCABULARY, A.CALIBRATION),
              writes=(A.GRAPH,), sections=("graph",), enabled=settings.uses_graph)
