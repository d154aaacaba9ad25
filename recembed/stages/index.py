"""index: item vectors -> a faiss index tuned to a target recall, and the serving settings."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from recembed import artifacts as A
from recembed.config import Config
from recembed.index import build_index, save_index, set_threads, tune_index
from recembed.pipeline import Stage, StageContext
from recembed.serving import ServingSettings, write_settings

log = logging.getLogger("recembed")


def run(ctx: StageContext) -> dict:
    """Build, tune and save the index; write serving.json."""
    index, meta = tuned_index(ctx.cfg, ctx.read(A.VECTORS))
    save_index(index, meta, ctx.out_dir)
    write_settings(ctx.write(A.SERVING), ServingSettings(**ctx.cfg.section("serving")))
    d = asdict(meta)
    d.pop("tuning")
    return d


def tuned_index(cfg: Config, vectors_path: Path):
    """(faiss index, IndexMeta) over the vectors in `vectors_path` with the config's index
    settings, tuned to `index.target_recall`; the metadata records the sha256 of the vectors it
    was measured on. Publishing reuses it to re-index aligned vectors."""
    ic = cfg.index
    vectors = np.load(vectors_path, allow_pickle=False)
    set_threads(cfg.run.n_threads())
    index, meta = build_index(vectors, factory=ic.type, metric=ic.metric,
                              memory_budget_gb=ic.memory_budget_gb, hnsw_m=ic.hnsw_m,
                              ef_construction=ic.ef_construction, seed=cfg.run.seed)
    meta = tune_index(index, vectors, meta, target_recall=ic.target_recall, k=ic.tune_k,
                      n_queries=ic.tune_queries, seed=cfg.run.seed)
    if not meta.reached_target:
        log.warning("index: %s", meta.reason)
    meta.vectors_sha256 = A.sha256(vectors_path)
    return index, meta


STAGE = Stage("index", run, reads=(A.VECTORS,), writes=(A.INDEX, A.INDEX_META, A.SERVING),
              sections=("index", "serving"))
