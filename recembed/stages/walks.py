"""walks: the item graph -> a corpus of DeepWalk / node2vec random walks."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from recembed import artifacts as A
from recembed.config import Config
from recembed.graph import load_graph
from recembed.pipeline import Stage, StageContext
from recembed.walks import random_walks


def run(ctx: StageContext) -> dict:
    """Walks from every node (or by popularity), one line per walk."""
    w, r = ctx.cfg.walks, ctx.cfg.run
    pop = None
    if w.start_by_popularity:
        pop = pd.read_parquet(ctx.read(A.VOCABULARY), columns=["count"])["count"].to_numpy()
    kw = dict(method=w.method, walks_per_node=w.walks_per_node, walk_length=w.walk_length,
              p=w.p, q=w.q, popularity=pop, seed=r.seed, max_tokens=w.max_tokens)
    if r.engine == "spark":  # broadcast graph, the same kernels per task (recembed.spark)
        from recembed.spark import walks as spark_walks
        from recembed.spark.session import from_config

        st = spark_walks.random_walks(from_config(ctx.cfg), load_graph(ctx.read(A.GRAPH)),
                                      ctx.write(A.WALKS), ctx.scratch, **kw)
    else:
        st = random_walks(load_graph(ctx.read(A.GRAPH)), ctx.write(A.WALKS),
                          threads=r.n_threads(), progress=r.progress, **kw)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(st).items()}


def _reads(cfg: Config) -> tuple:
    return (A.GRAPH, *([A.VOCABULARY] if cfg.walks.start_by_popularity else []))


STAGE = Stage("walks", run, reads=_reads, writes=(A.WALKS,), sections=("walks",),
              enabled=lambda cfg: cfg.walks.enabled)
