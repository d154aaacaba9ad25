"""walks: the item graph -> a corpus of DeepWalk / node2vec random walks."""

from __future__ import annotations

from dataclasses import asdict

from recembed import artifacts as A
from recembed import settings
from recembed.config import Config
from recembed.pipeline import Stage, StageContext


def run(ctx: StageContext) -> dict:
    """Walks from every node (or by popularity), one line per walk (Spark: broadcast graph,
    the same kernels per task)."""
    pop = ctx.read(A.VOCABULARY) if ctx.cfg.walks.start_by_popularity else None
    st = settings.engine(ctx.cfg, "walks").walks_from_graph_file(
        ctx.read(A.GRAPH), ctx.write(A.WALKS), settings.walk_params(ctx.cfg),
        settings.runtime(ctx.cfg, ctx.scratch), popularity_path=pop)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(st).items()}


def _reads(cfg: Config) -> tuple:
    return (A.GRAPH, *([A.VOCABULARY] if cfg.walks.start_by_popularity else []))


STAGE = Stage("walks", run, reads=_reads, writes=(A.WALKS,), sections=("walks",),
              enabled=lambda cfg: cfg.walks.enabled)
