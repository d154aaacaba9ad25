"""graph: training sessions -> the weighted item graph (CSR)."""

from __future__ import annotations

import pandas as pd

from recembed import artifacts as A
from recembed.graph import build_item_graph, graph_summary, save_graph
from recembed.pipeline import Stage, StageContext


def run(ctx: StageContext) -> dict:
    """Edges between items that follow each other, weighted by the sessions' decay weights."""
    gc = ctx.cfg.graph
    kw = dict(window=gc.window, distance_weighting=gc.distance_weighting, directed=gc.directed,
              min_weight=gc.min_weight, max_out_edges=gc.max_out_edges)
    if ctx.cfg.run.engine == "spark":  # per-row sums in the local order (recembed.spark)
        from recembed.spark import graph as spark_graph
        from recembed.spark.session import from_config

        g = spark_graph.build_item_graph(
            from_config(ctx.cfg), ctx.read(A.SESSIONS_TRAIN), ctx.read(A.SESSION_TABLE),
            len(pd.read_parquet(ctx.read(A.VOCABULARY), columns=["code"])), ctx.scratch, **kw)
        save_graph(g, ctx.write(A.GRAPH))
        return graph_summary(g).as_dict()
    g = build_item_graph(
        pd.read_parquet(ctx.read(A.SESSIONS_TRAIN), columns=["session", "item"]),
        pd.read_parquet(ctx.read(A.SESSION_TABLE), columns=["session", "weight"]),
        len(pd.read_parquet(ctx.read(A.VOCABULARY), columns=["code"])), **kw)
    save_graph(g, ctx.write(A.GRAPH))
    return graph_summary(g).as_dict()


STAGE = Stage("graph", run,
              reads=(A.SESSIONS_TRAIN, A.SESSION_TABLE, A.VOCABULARY, A.CALIBRATION),
              writes=(A.GRAPH,), sections=("graph",), enabled=lambda cfg: cfg.walks.enabled)
