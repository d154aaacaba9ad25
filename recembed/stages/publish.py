"""publish: gate this run against the current version, then publish it as a new version.

The gate, its inputs, alignment and warm start live in `recembed.publish`; this adapter unpacks
the config and maps refusals to exit codes.
"""

from __future__ import annotations

import logging
from pathlib import Path

from recembed import __version__
from recembed import artifacts as A
from recembed import settings as S
from recembed.config import Config, load_config
from recembed.index import tuned_index
from recembed.pipeline import (
    EXIT_GATE,
    EXIT_LOCKED,
    PipelineError,
    Stage,
    StageContext,
    stage_records,
)
from recembed.publish import (
    GateRefused,
    LockBusy,
    evaluate_version,
    publish_run,
    version_manifest,
)

log = logging.getLogger("recembed")


def run(ctx: StageContext) -> dict:
    """Gate, align, publish; publish.json records what happened."""
    cfg, pc = ctx.cfg, ctx.cfg.publish
    published = Path(pc.dir)
    metrics = A.Metrics.load(ctx.read(A.METRICS))
    records = stage_records(ctx.run_dir)
    manifest = version_manifest(
        code_version=__version__, run_dir=ctx.run_dir, model=metrics.model,
        fingerprints={k: v.get("fingerprint") for k, v in records.items()},
        inputs=[*cfg.input.paths, *cfg.input.test_paths],
        stats={k: v.get("stats", {}) for k, v in records.items()}, metrics=metrics)
    try:
        res = publish_run(ctx.run_dir, published, files=published_files(ctx), manifest=manifest,
                          policy=S.publish_policy(cfg), reindex=lambda p: tuned_index(
                              S.index_params(cfg), p, threads=cfg.run.n_threads(),
                              seed=cfg.run.seed))
    except GateRefused as e:
        current = A.current_version_dir(published)
        raise PipelineError(f"quality gate refused to publish: {e}; the current version "
                            f"({current.name if current else 'none'}) stays. Use --force to "
                            "publish anyway.", EXIT_GATE) from e
    except LockBusy as e:
        raise PipelineError(str(e), EXIT_LOCKED) from e
    A.write_json(ctx.write(A.PUBLISH_INFO), {"version": res.version, "path": res.path,
                                             "reason": res.reason, "gate": res.gate,
                                             "drift": res.drift})
    if res.published:
        log.info("published %s to %s", res.version, published)
    if res.gate.get("current_broken"):
        log.warning("publish: %s", res.gate["current_broken"])
    return {"version": res.version, "recall@20": res.recall_new,
            "current_broken": res.gate.get("current_broken", ""),
            "previous_recall@20": res.recall_current,
            **{f"drift_{k}": v for k, v in res.drift.items() if isinstance(v, float)}}


def evaluate_published(version: Path, run_dir: Path) -> A.Scores:
    """A published version's `recommend` on a run's holdout, with that run's settings."""
    from recembed.serving import Recommender

    cfg = load_config(A.CONFIG.path(run_dir))
    return evaluate_version(Recommender.load(version), run_dir, ks=cfg.evaluate.ks,
                            max_queries=cfg.evaluate.max_queries, seed=cfg.run.seed)


def published_files(ctx: StageContext) -> list[A.Artifact]:
    """The declared reads a version holds (the artifacts marked `published`)."""
    return [a for a in ctx.reads if isinstance(a, A.Artifact) and a.published]


def _reads(cfg: Config) -> tuple:
    return (A.METRICS, A.SESSIONS_TRAIN, A.SESSIONS_TEST, A.VOCABULARY, A.VECTORS,
            *([A.CONTEXT] if S.writes_context(cfg) else []), A.ITEMS, A.VECTORS_BIN,
            A.POSTPROCESS, A.INDEX,
            A.INDEX_META, A.SERVING, A.BLEND, A.INDEX_CONTEXT, A.INDEX_CONTEXT_META,
            A.CALIBRATION, *([A.REPORT] if cfg.evaluate.report else []), A.CONFIG,
            # cold start: origins.parquet ships; the gate scores on the catalog's targets
            *([A.ORIGINS, A.CATALOG] if S.has_catalog(cfg) else []),
            A.PublishedRoot(cfg.publish.dir))


STAGE = Stage("publish", run, reads=_reads, writes=(A.PUBLISH_INFO,),
              sections=("publish",), enabled=lambda cfg: cfg.publish.enabled)
