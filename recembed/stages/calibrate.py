"""calibrate: training sessions -> calibration.json, the corpus, training amount and serving
blend chosen on the validation split (keys left at "auto"); the runner then resolves the config
for every later stage (`resolve`)."""

from __future__ import annotations

import json
import logging

import pandas as pd

from recembed import artifacts as A
from recembed.calibrate import (
    CalibrationCatalog,
    calibrate_run,
    calibration_search,
    resolve_config,
)
from recembed.catalog import item_categories
from recembed.config import Config
from recembed.pipeline import EXIT_BAD_INPUT, PipelineError, Stage, StageContext
from recembed.train import EmptyVocabulary

log = logging.getLogger("recembed")


def run(ctx: StageContext) -> dict:
    """Train candidate models before the validation split; keep the best on validation."""
    cfg = ctx.cfg
    search = calibration_search(cfg)
    if not cfg.calibrate.enabled or not search["any"]:
        rec = {"enabled": False, "reason": "calibrate.enabled = false" if not
               cfg.calibrate.enabled else "every calibrated key is set in the config"}
    else:
        train = pd.read_parquet(ctx.read(A.SESSIONS_TRAIN), columns=["session", "item", "ts"])
        table = pd.read_parquet(ctx.read(A.SESSION_TABLE), columns=["session", "end", "split"])
        vocab = pd.read_parquet(ctx.read(A.VOCABULARY), columns=["code", "id"])
        n_items = len(vocab)
        try:
            rec = calibrate_run(train, table, n_items, ctx.scratch / "work", seed=cfg.run.seed,
                                threads=cfg.run.n_threads(), catalog=_catalog(ctx, vocab),
                                **search["kw"])
        except EmptyVocabulary as e:
            raise PipelineError(f"train.min_count={cfg.train.min_count} is above the corpus "
                                "count of every item: nothing left to train; lower "
                                "train.min_count", EXIT_BAD_INPUT) from e
    A.write_json(ctx.write(A.CALIBRATION), rec)
    for note in rec.get("notes", []):
        log.warning("calibrate: %s", note)
    v = rec.get("validation", {})
    return {"enabled": rec["enabled"], "corpus": rec.get("corpus"),
            "target_tokens": rec.get("target_tokens"), "validation_recall@20": v.get("recall@20"),
            "validation_mrr@20": v.get("mrr@20"), "seconds": rec.get("seconds")}


def _catalog(ctx: StageContext, vocab: pd.DataFrame) -> CalibrationCatalog | None:
    """The catalog as calibration sees it (cold targets scored on validation, the `category`
    signal searched), None without one."""
    cfg = ctx.cfg
    if not _has_catalog(cfg):
        return None
    table = pd.read_parquet(ctx.read(A.CATALOG))
    cats = item_categories(pd.read_parquet(ctx.read(A.CATEGORIES))["category"].to_numpy(),
                           table, from_catalog=bool(cfg.input.catalog.category))
    return CalibrationCatalog(table, vocab, len(cfg.input.catalog.attributes),
                              categories=cats if (cats >= 0).any() else None,
                              scheme=cfg.cold.scheme, knn=cfg.cold.knn,
                              candidate_scale=cfg.cold.candidate_scale,
                              dated=bool(cfg.input.catalog.listed))


def _reads(cfg: Config) -> tuple:
    return (A.SESSIONS_TRAIN, A.SESSION_TABLE, A.VOCABULARY,
            *([A.CATALOG, A.CATEGORIES] if _has_catalog(cfg) else []))


def _has_catalog(cfg: Config) -> bool:
    # recembed.stages.train.has_catalog (a stage above this one in the data flow)
    return bool(cfg.input.catalog.path)


def resolved(cfg: Config, run_dir) -> Config:
    """The config with every "auto" key set to the calibrated choice."""
    return resolve_config(cfg, json.loads(A.CALIBRATION.path(run_dir).read_text()))


STAGE = Stage("calibrate", run, reads=_reads,
              writes=(A.CALIBRATION,),
              sections=("calibrate", "session", "graph", "walks", "sequences", "train",
                        "serving", "cold"),
              resolve=resolved)
