"""calibrate: training sessions -> calibration.json, the corpus, training amount and serving
blend chosen on the validation split (keys left at "auto"); the runner then resolves the config
for every later stage (`resolve`)."""

from __future__ import annotations

import json
import logging

import pandas as pd

from recembed import artifacts as A
from recembed import settings as S
from recembed.calibrate import CalibrationTimeout, PreviousChoice, calibrate_run
from recembed.candidates import CalibrationCatalog
from recembed.catalog import ColdParams
from recembed.config import Config
from recembed.pipeline import EXIT_BAD_INPUT, EXIT_CRASH, PipelineError, Stage, StageContext
from recembed.train import EmptyVocabulary

log = logging.getLogger("recembed")


def run(ctx: StageContext) -> dict:
    """Train candidate models before the validation split; keep the best on validation."""
    cfg = ctx.cfg
    plan = S.calibration_plan(cfg)
    if not plan.enabled or not plan.searches:
        rec = {"enabled": False, "reason": "calibrate.enabled = false" if not
               plan.enabled else "every calibrated key is set in the config"}
    else:
        train = pd.read_parquet(ctx.read(A.SESSIONS_TRAIN), columns=["session", "item", "ts"])
        table = pd.read_parquet(ctx.read(A.SESSION_TABLE), columns=["session", "end", "split"])
        vocab = pd.read_parquet(ctx.read(A.VOCABULARY), columns=["code", "id"])
        catalog = (read_calibration_catalog(ctx, vocab, S.cold_params(cfg))
                   if S.has_catalog(cfg) else None)
        try:
            rec = calibrate_run(train, table, len(vocab), ctx.scratch / "work", plan,
                                seed=cfg.run.seed, threads=cfg.run.n_threads(), catalog=catalog,
                                previous=previous_choice(ctx),
                                item_ids=vocab.sort_values("code")["id"].astype(str).to_numpy())
        except EmptyVocabulary as e:
            raise PipelineError(f"train.min_count={cfg.train.min_count} is above the corpus "
                                "count of every item: nothing left to train; lower "
                                "train.min_count", EXIT_BAD_INPUT) from e
        except CalibrationTimeout as e:
            raise PipelineError(str(e), EXIT_CRASH) from e
    A.write_json(ctx.write(A.CALIBRATION), rec)
    for note in rec.get("notes", []):
        log.warning("calibrate: %s", note)
    v = rec.get("validation", {})
    cost, reuse = rec.get("cost") or {}, rec.get("reuse") or {}
    return {"enabled": rec["enabled"], "corpus": rec.get("corpus"),
            "reuse": reuse.get("decision"), "reuse_reason": reuse.get("reason"),
            "tokens_trained": cost.get("tokens_trained"),
            "final_tokens_planned": cost.get("final_tokens_planned"),
            "cost_ratio": cost.get("ratio"),
            "target_tokens": rec.get("target_tokens"), "validation_recall@20": v.get("recall@20"),
            "validation_mrr@20": v.get("mrr@20"), "seconds": rec.get("seconds")}


def previous_choice(ctx: StageContext) -> PreviousChoice | None:
    """The previous published version's calibration record and item ids (the declared
    `PreviousVersion`, read only with `calibrate.reuse = "auto"`), or None."""
    roots = ctx.inputs(A.PreviousVersion)
    cur = roots[0].version_dir() if roots else None
    if cur is None or not A.CALIBRATION.path(cur).exists() or not A.ITEMS.path(cur).exists():
        return None
    ids = pd.read_parquet(A.ITEMS.path(cur), columns=["id"])["id"].astype(str)
    return PreviousChoice(cur.name, json.loads(A.CALIBRATION.path(cur).read_text()), set(ids))


def read_calibration_catalog(ctx: StageContext, vocab: pd.DataFrame,
                             cold: ColdParams) -> CalibrationCatalog:
    """The catalog as calibration sees it (cold targets scored on validation, the `category`
    signal searched)."""
    return CalibrationCatalog.build(
        pd.read_parquet(ctx.read(A.CATALOG)), vocab,
        pd.read_parquet(ctx.read(A.CATEGORIES))["category"].to_numpy(), cold)


def _reads(cfg: Config) -> tuple:
    root = S.calibration_reuse_root(cfg)
    return (A.SESSIONS_TRAIN, A.SESSION_TABLE, A.VOCABULARY,
            *([A.CATALOG, A.CATEGORIES] if S.has_catalog(cfg) else []),
            *([A.PreviousVersion(str(root), str(_run_dir(cfg)))] if root is not None else []))


_RUN_DIRS: dict = {}


def _run_dir(cfg: Config):
    """The run directory a default run of `cfg` uses (`recembed.pipeline.default_run_dir`),
    cached per config identity and input file (path, size, mtime): it hashes the inputs."""
    from pathlib import Path

    from recembed.pipeline import default_run_dir, identity

    files = [(str(p), Path(p).stat().st_size, Path(p).stat().st_mtime_ns) if Path(p).is_file()
             else (str(p), None, None) for p in [*cfg.input.paths, *cfg.input.test_paths]]
    key = json.dumps([identity(cfg), files, cfg.run.runs_dir, cfg.run.name], sort_keys=True,
                     default=str)
    if key not in _RUN_DIRS:
        _RUN_DIRS[key] = default_run_dir(cfg)
    return _RUN_DIRS[key]


def resolved(cfg: Config, run_dir) -> Config:
    """The config with every "auto" key set to the calibrated choice."""
    return S.resolve_config(cfg, json.loads(A.CALIBRATION.path(run_dir).read_text()))


STAGE = Stage("calibrate", run, reads=_reads,
              writes=(A.CALIBRATION,),
              sections=("calibrate", "session", "graph", "walks", "sequences", "line", "svd",
                        "train", "serving", "cold"),
              resolve=resolved)
