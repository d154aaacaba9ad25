"""train: the corpora -> item vectors (gensim skip-gram), optionally warm-started from the
current published version."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from recembed import artifacts as A
from recembed.catalog import cold_rows, delisting_warning, write_side_sentences
from recembed.catalog import item_categories as catalog_categories
from recembed.config import Config
from recembed.pipeline import EXIT_BAD_INPUT, PipelineError, Stage, StageContext
from recembed.publish import warm_start_vectors
from recembed.train import (
    EmptyVocabulary,
    TrainResult,
    concat_corpora,
    export_vectors,
    train_word2vec,
)

log = logging.getLogger("recembed")


def run(ctx: StageContext) -> dict:
    """Train on the session corpus and/or the walk corpus; export vectors and train.json."""
    cfg, t = ctx.cfg, ctx.cfg.train
    corpus = concat_corpora([ctx.read(a) for a in corpora(cfg)], ctx.scratch / "corpus.txt")
    vocab = pd.read_parquet(ctx.read(A.VOCABULARY), columns=["code", "id"])
    warm = ctx.inputs(A.PublishedRoot)  # declared only when train.warm_start is on
    init = warm_start_vectors(A.current_version_dir(warm[0].root), vocab) if warm else None
    catalog = pd.read_parquet(ctx.read(A.CATALOG)) if has_catalog(cfg) else None
    n_attr = len(cfg.input.catalog.attributes)
    scheme = cfg.cold.scheme if catalog is not None else "off"
    side: dict = {}
    side_corpus = None
    if scheme == "context":
        # attribute tokens share the items' skip-gram, trained after them (recembed.catalog)
        side_corpus = ctx.scratch / "side.txt"
        side = write_side_sentences(corpus, side_corpus, catalog, n_attr,
                                    copies=cfg.cold.context_copies, seed=cfg.run.seed)
    try:
        res = train_word2vec(
            corpus, vector_size=t.vector_size, window=t.window, shrink_windows=t.shrink_windows,
            negative=t.negative, ns_exponent=t.ns_exponent, sample=t.sample,
            epochs=1 if t.epochs == "auto" else t.epochs,
            # "auto" epochs: the training amount decides (set by calibrate, 3M without it)
            target_tokens=int(t.target_tokens) if t.epochs == "auto" else 0,
            alpha=t.alpha, min_alpha=t.min_alpha, min_count=t.min_count, hs=t.hs,
            workers=t.workers or cfg.run.n_threads(), seed=cfg.run.seed,
            max_tokens=t.max_tokens, init=init, side_corpus=side_corpus,
            side_tokens=side.get("side_tokens", 0), progress=cfg.run.progress,
        )
    except EmptyVocabulary as e:
        raise PipelineError(f"train.min_count={t.min_count} is above the corpus count of every "
                            "item: nothing left to train; lower train.min_count",
                            EXIT_BAD_INPUT) from e
    cats = pd.read_parquet(ctx.read(A.CATEGORIES))["category"].to_numpy()
    if catalog is None:
        export_vectors(res, vocab, ctx.out_dir, context=writes_context(cfg), categories=cats)
    else:
        rows = cold_rows(res.codes, res.vectors, res.context, res.counts, vocab, catalog, n_attr,
                         scheme=scheme, k=cfg.cold.knn, side=res.side,
                         candidate_scale=cfg.cold.candidate_scale)
        export_vectors(TrainResult(rows.vectors, rows.context, rows.codes, rows.counts),
                       vocab, ctx.out_dir, context=writes_context(cfg),
                       categories=item_categories(cfg, cats, catalog), ids=rows.ids,
                       origin=rows.origin)
        A.write_parquet(rows.origins, ctx.write(A.ORIGINS), A.ORIGINS.columns)
        res.stats.update({"cold_scheme": scheme, **{f"origin_{k}": v
                                                    for k, v in rows.stats.items()},
                          **{f"side_{k}": v for k, v in side.items()}})
        log.info("cold start (%s): %s", scheme, rows.stats)
        warn = delisting_warning(rows.stats, cfg.input.catalog.path)
        if warn:
            log.warning("train: %s", warn)
            res.stats.setdefault("warnings", []).append(warn)
    A.write_json(ctx.write(A.TRAIN_STATS), {"model": model_name(cfg), **res.stats})
    log.info("trained %s tokens at %s words/s", f"{res.stats['tokens_trained']:,}",
             f"{res.stats['words_per_s']:,}")
    return {k: v for k, v in res.stats.items() if k != "loss_per_epoch"}


def has_catalog(cfg: Config) -> bool:
    """Whether the run has an item catalog (`input.catalog.path`): the catalog stage runs and
    train, index and evaluate read it."""
    return bool(cfg.input.catalog.path)


def item_categories(cfg: Config, categories: np.ndarray, catalog: pd.DataFrame | None
                    ) -> np.ndarray:
    """Category of every item code, the catalog's rows included (-1 unknown): the catalog's
    `input.catalog.category` when set (it supersedes input.categories_path), else
    categories.parquet's."""
    return catalog_categories(categories, catalog, from_catalog=bool(cfg.input.catalog.category))


def corpora(cfg: Config) -> list[A.Artifact]:
    """The corpus artifacts training reads under `cfg`."""
    return ([A.SESSION_CORPUS] if cfg.sequences.enabled else []) + (
        [A.WALKS] if cfg.walks.enabled else [])


def writes_context(cfg: Config) -> bool:
    """Whether the run has output (context) vectors: negative sampling trains them, and
    `train.export_context_vectors` keeps them. Evaluation, the gate and the published version
    all see the same answer."""
    return cfg.train.negative > 0 and cfg.train.export_context_vectors


def model_name(cfg: Config) -> str:
    """item2vec, deepwalk, node2vec, or a '+' of them: what the vectors were trained on."""
    # "auto" (not yet resolved by calibrate) counts as on, as for the stages' declarations
    return "+".join(["item2vec"] * (cfg.sequences.enabled is not False)
                    + [cfg.walks.method] * (cfg.walks.enabled is not False))


def _reads(cfg: Config) -> tuple:
    warm = (A.PublishedRoot(cfg.publish.dir),) if cfg.train.warm_start else ()
    return (*corpora(cfg), A.VOCABULARY, A.CATEGORIES, A.CALIBRATION, *warm,
            *([A.CATALOG] if has_catalog(cfg) else []))


def _writes(cfg: Config) -> tuple:
    return (A.VECTORS, *([A.CONTEXT] if writes_context(cfg) else []), A.ITEMS, A.VECTORS_BIN,
            A.VECTORS_TXT, A.TRAIN_STATS, *([A.ORIGINS] if has_catalog(cfg) else []))


STAGE = Stage("train", run, reads=_reads, writes=_writes,
              sections=("train", "sequences", "walks", "cold"))
