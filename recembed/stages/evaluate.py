"""evaluate: vectors, index and holdout -> metrics of every method (metrics.json) and the
report."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from recembed import artifacts as A
from recembed import settings as S
from recembed.catalog import item_categories, listing_order
from recembed.config import Config
from recembed.evaluate import embedding_scorer, evaluate_all, serving_recommend
from recembed.pipeline import Stage, StageContext, stage_records
from recembed.report import tuning_section_html, version_history, write_report
from recembed.serving import Recommender

log = logging.getLogger("recembed")


def run(ctx: StageContext) -> dict:
    """Baselines, every query strategy and the serving path on the same holdout queries."""
    e, seed = ctx.cfg.evaluate, ctx.cfg.run.seed
    # event times: the session-kNN baselines weigh neighbours by recency
    train = pd.read_parquet(ctx.read(A.SESSIONS_TRAIN), columns=["session", "item", "ts"])
    test = pd.read_parquet(ctx.read(A.SESSIONS_TEST), columns=["session", "item"])
    n_items = len(pd.read_parquet(ctx.read(A.VOCABULARY), columns=["code"]))
    emb = A.Embeddings.load(ctx.run_dir)
    catalog = pd.read_parquet(ctx.read(A.CATALOG)) if S.has_catalog(ctx.cfg) else None
    from_catalog = S.categories_from_catalog(ctx.cfg)
    cold_kw: dict = {}
    baselines = list(e.baselines)
    if catalog is not None:
        # cold start: catalog items have codes after the vocabulary's; targets unseen in
        # training but listed are scored (recembed.evaluate)
        n_items = max(n_items, int(catalog["code"].max()) + 1)
        listed = np.zeros(n_items, bool)
        listed[catalog["code"].to_numpy()] = True
        cats_all = item_categories(pd.read_parquet(ctx.read(A.CATEGORIES))[
            "category"].to_numpy(), catalog, from_catalog=from_catalog)
        cold_kw = {"catalog": listed, "categories": cats_all,
                   "listed": listing_order(catalog, n_items)}
        if from_catalog and "category" not in baselines:
            baselines.append("category")  # the cold-start baseline, whenever there is one
    train_stats = json.loads(ctx.read(A.TRAIN_STATS).read_text())
    model = train_stats["model"]
    pop = np.bincount(train["item"].to_numpy(), minlength=n_items).astype(np.float64)
    strategies = [s for s in e.strategies
                  if s not in ("directional", "ann") or emb.context is not None]
    if len(strategies) < len(e.strategies):
        log.warning("evaluate.strategies: 'directional' skipped, the run has no context vectors "
                    "(train.negative = 0 or train.export_context_vectors = false)")
    recommender = Recommender.load(ctx.run_dir)
    # the ANN row scores the exported directional query, at the version's own decay
    # (serving.vectors_decay, chosen on the vectors-alone objective); `decayed` at evaluate.decay
    vdecay = recommender.settings.vectors_decay
    embeddings = {f"{model}:{s}": embedding_scorer(emb.vectors, emb.codes, n_items, pop,
                                                   strategy=s, context=emb.context,
                                                   decay=vdecay if s == "ann" else e.decay,
                                                   history=e.history)
                  for s in strategies}
    serving = serving_recommend(recommender, emb.codes, n_items)
    raw = evaluate_all(train, test, n_items, ks=e.ks, baselines=baselines,
                       embeddings=embeddings, recommenders={f"{model}:serving": serving},
                       max_queries=e.max_queries, seed=seed, **cold_kw)
    calibration = _calibration_summary(json.loads(ctx.read(A.CALIBRATION).read_text()))
    if calibration.get("blend"):
        # what is served: the index stage chose the retrieval after calibration (serving.json)
        served = json.loads(ctx.read(A.SERVING).read_text())
        calibration["blend"] = {**calibration["blend"],
                                "retrieval": served.get("retrieval", "index")}
    metrics = A.Metrics.from_evaluation(raw, model, train_stats, calibration)
    metrics.save(ctx.write(A.METRICS))
    if e.report:
        cats = item_categories(pd.read_parquet(ctx.read(A.CATEGORIES))["category"].to_numpy(),
                               catalog, from_catalog=from_catalog)
        # The history of published versions is shown as it is when the report is written. The
        # published root is deliberately not a declared read: turning publishing on for a
        # finished run (or a new version appearing) must not rerun evaluate, since nothing it
        # measures depends on it (only `publish` reads the root).
        root = S.published_root(ctx.cfg)
        history = version_history(root) if root is not None and root.is_dir() else []
        note = ("Nothing is published yet." if root is not None else
                "Publishing is off for this run (publish.enabled = false): no version history.")
        # The funnel's counts are the earlier stages' statistics in their done-files: those are
        # the runner's records, not artifacts, so they are read through stage_records (every
        # stage before this one has finished, so each record is final). tune.db is written by
        # `recembed tune` outside the stage graph and is shown when it is there.
        write_report(ctx.write(A.REPORT), metrics, loss_per_epoch=train_stats.get("loss_per_epoch"),
                     vectors=emb.vectors, categories=cats[emb.codes],
                     title=f"recembed: {ctx.cfg.run.name}", records=_records(ctx),
                     history=history, history_note=note,
                     tuning_html=tuning_section_html(ctx.run_dir))
    k = metrics.cutoff
    best = metrics.best()
    return {"queries": metrics.queries["queries"], "oov_share": metrics.queries["oov_share"],
            "best": best.name if best else "",
            f"recall@{k}": best.allow_repeats.recall(k) if best else 0.0,
            # cold start: the share of cold targets and the best method's recall on them
            **({"cold_share": metrics.queries["cold_share"],
                f"recall@{k}_cold": best.allow_repeats.values.get(f"recall@{k}_cold", 0.0)
                if best else 0.0} if "cold_share" in metrics.queries else {}),
            **{f"{m.name}_recall@{k}": m.allow_repeats.recall(k)
               for m in metrics.of_kind("baseline")}}


def _records(ctx: StageContext) -> dict[str, dict]:
    """The done-files of this run's stages before evaluate; a stage the (calibrated) config
    switched off may have left a record from an earlier config, which the funnel must not
    show."""
    recs = stage_records(ctx.run_dir)
    if not ctx.cfg.sequences.enabled:
        recs.pop("sequences", None)
    return {k: v for k, v in recs.items() if k not in ("evaluate", "publish")}


def _calibration_summary(rec: dict) -> dict:
    """What metrics.json, the report and the manifest say of calibration (no candidate list)."""
    if not rec.get("enabled"):
        return {"enabled": False, "reason": rec.get("reason", "")}
    blend = rec.get("blend", {})
    return {"enabled": True, "corpus": rec.get("corpus"), "target_tokens": rec.get("target_tokens"),
            "postprocess": rec.get("postprocess"), "vectors_decay": rec.get("vectors_decay"),
            "blend": blend.get("settings"), "validation": rec.get("validation"),
            "signals_alone": blend.get("signals_alone"), "baselines": rec.get("baselines"),
            "validation_queries": rec.get("validation_queries"), "notes": rec.get("notes", []),
            "candidates": [{k: c.get(k) for k in ("corpus", "option_tokens", "target_tokens",
                                                  "epochs", "tokens_trained", "recall@20",
                                                  "mrr@20", "objective_se", "postprocess",
                                                  "vectors_objective", "vectors_se",
                                                  "vectors_decay", "sgns", "seconds")}
                           for c in rec.get("candidates", [])],
            "reuse": rec.get("reuse"), "cost": rec.get("cost"), "sgns": rec.get("sgns"),
            "seconds": rec.get("seconds")}


def _reads(cfg: Config) -> tuple:
    return (A.CALIBRATION, A.SESSIONS_TRAIN, A.SESSIONS_TEST, A.VOCABULARY, A.CATEGORIES,
            *([A.CATALOG] if S.has_catalog(cfg) else []), A.VECTORS,
            *([A.CONTEXT] if S.writes_context(cfg) else []), A.ITEMS, A.TRAIN_STATS, A.INDEX,
            A.INDEX_META, A.SERVING)


STAGE = Stage("evaluate", run, reads=_reads,
              writes=lambda cfg: (A.METRICS, *([A.REPORT] if cfg.evaluate.report else [])),
              sections=("evaluate",), enabled=lambda cfg: cfg.evaluate.enabled)
