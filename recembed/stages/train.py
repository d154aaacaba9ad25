"""train: the corpora -> item vectors (gensim skip-gram), optionally warm-started from the
current published version, or with train.mode = "incremental" continued from the previous
published version on the sessions added since it (`recembed.incremental`: which mode ran and
why goes into train.json); with line.mode "alone" / "concat" LINE vectors over the item graph
(`recembed.line`) replace or extend them; with svd.mode "alone" the factorization of item-kNN's
similarity (`recembed.factorize`) replaces them; post-processed (`recembed.postprocess`:
postprocess.npz)."""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from recembed import artifacts as A
from recembed import settings as S
from recembed.catalog import cold_rows, delisting_warning, item_categories, write_side_sentences
from recembed.config import Config
from recembed.factorize import factorize_sessions
from recembed.graph import load_graph
from recembed.incremental import (
    PreviousModel,
    count_tokens,
    decide,
    load_previous,
    sample_lines,
    select_sessions,
)
from recembed.line import samples_for, train_line, with_line
from recembed.pipeline import EXIT_BAD_INPUT, PipelineError, Stage, StageContext
from recembed.postprocess import VectorTransform
from recembed.publish import warm_start_vectors
from recembed.sequences import write_session_corpus
from recembed.train import (
    EmptyVocabulary,
    TrainResult,
    concat_corpora,
    export_vectors,
    train_word2vec,
)

log = logging.getLogger("recembed")


def run(ctx: StageContext) -> dict:
    """Train on the session corpus and/or the walk corpus and/or LINE over the item graph;
    export vectors and train.json."""
    cfg = ctx.cfg
    params, cold = S.train_params(cfg), S.cold_params(cfg)
    vocab = pd.read_parquet(ctx.read(A.VOCABULARY), columns=["code", "id"])
    if cfg.line.mode == "alone" or cfg.svd.mode == "alone":
        catalog = pd.read_parquet(ctx.read(A.CATALOG)) if S.has_catalog(cfg) else None
        res = _line(ctx, None) if cfg.line.mode == "alone" else _svd(ctx, vocab)
        return _export(ctx, res, vocab, catalog, {})
    corpus = concat_corpora([ctx.read(a) for a in corpora(cfg)], ctx.scratch / A.SCRATCH_CORPUS)
    mode, prev, train_file = _mode(ctx, vocab)
    if prev is not None:  # incremental: the previous version's trained rows
        init = (prev.codes, prev.vectors, prev.context)
    else:  # a full training: warm-started when train.warm_start is on
        warm = ctx.inputs(A.PublishedRoot)  # declared only when train.warm_start is on
        init = warm_start_vectors(A.current_version_dir(warm[0].root), vocab) if warm else None
        if init is not None and init[1].shape[1] != params.vector_size:
            log.warning("train.warm_start is on but the published version has %d dimensions, "
                        "train.vector_size is %d: training from scratch", init[1].shape[1],
                        params.vector_size)
            init = None
    catalog = pd.read_parquet(ctx.read(A.CATALOG)) if S.has_catalog(cfg) else None
    side: dict = {}
    side_corpus = None
    if cold.scheme == "context":
        # attribute tokens share the items' skip-gram, trained after them (recembed.catalog)
        side_corpus = ctx.scratch / A.SCRATCH_SIDE
        side = write_side_sentences(corpus, side_corpus, catalog, cold.n_attributes,
                                    copies=cold.context_copies, seed=cfg.run.seed)
    try:
        # "auto" epochs: the training amount decides (set by calibrate, 3M without it)
        res = train_word2vec(corpus, target_tokens=S.target_tokens(cfg), seed=cfg.run.seed,
                             init=init, side_corpus=side_corpus,
                             side_tokens=side.get("side_tokens", 0), progress=cfg.run.progress,
                             train_file=train_file, **params.kwargs())
    except EmptyVocabulary as e:
        raise PipelineError(f"train.min_count={params.min_count} is above the corpus count of "
                            "every item: nothing left to train; lower train.min_count",
                            EXIT_BAD_INPUT) from e
    if prev is not None:
        trained = np.isin(res.codes, prev.codes)
        mode.update(new_items=int((~trained).sum()),
                    removed_items=int((~np.isin(prev.codes, res.codes)).sum()))
    res.stats.update(mode)
    if cfg.line.mode == "concat":
        res = _line(ctx, res)
    return _export(ctx, res, vocab, catalog, side)


def _mode(ctx: StageContext, vocab: pd.DataFrame
          ) -> tuple[dict, PreviousModel | None, Path | None]:
    """Which training runs (`recembed.incremental.decide`) and, for an incremental one, the
    previous version and the corpus of the new sessions, the replay sample and walk lines in
    the same share. Returns (train.json's mode record, previous model or None, corpus or None)."""
    cfg = ctx.cfg
    inc = S.incremental_params(cfg)
    table = pd.read_parquet(ctx.read(A.SESSION_TABLE), columns=["session", "end", "split",
                                                                 "weight"])
    train_end = table.loc[table["split"] != 1, "end"]
    data_end = int(train_end.max()) if len(train_end) else 0
    prev = None
    if inc.mode == "incremental":
        roots = ctx.inputs(A.PreviousVersion)
        prev = load_previous(roots[0].version_dir() if roots else None, vocab)
    d = decide(inc, prev, data_end=data_end, model=S.model_name(cfg),
               vector_size=cfg.train.vector_size)
    mode = {"mode": d.mode, "mode_requested": inc.mode, "mode_reason": d.reason,
            "previous_version": d.previous, "data_end": data_end,
            "last_full_end": d.last_full_end}
    if d.mode == "full" or prev is None or prev.data_end is None:
        log.info("train: full training (%s)", d.reason)
        return mode, None, None
    sessions = pd.read_parquet(ctx.read(A.SESSIONS_TRAIN), columns=["session", "item"])
    keep, counts = select_sessions(sessions, table, prev.data_end, prev.codes,
                                   inc.replay_share, inc.seed)
    share = len(keep) / max(counts["older_sessions"] + counts["incremental_sessions"], 1)
    parts = []
    for name in S.corpus_names(cfg):
        if name == "sessions":
            out = ctx.scratch / A.SCRATCH_INCR_SESSIONS
            write_session_corpus(sessions[sessions["session"].isin(keep)],
                                 table[["session", "weight"]], out,
                                 **asdict(S.corpus_params(cfg)))
        else:  # walks over the whole graph: the same share of their lines
            out = ctx.scratch / A.SCRATCH_INCR_WALKS
            sample_lines(ctx.read(A.WALKS), out, share, inc.seed)
        parts.append(out)
    train_file = concat_corpora(parts, ctx.scratch / A.SCRATCH_INCR_CORPUS) if parts else None
    if train_file is None or count_tokens(train_file) == 0:
        reason = "the incremental corpus is empty (no new session, nothing replayed)"
        log.info("train: full training (%s)", reason)
        return {**mode, "mode": "full", "mode_reason": reason, "last_full_end": data_end}, \
            None, None
    mode.update(counts, session_share=round(share, 4))
    log.info("train: incremental (%s): %d new sessions, %d replayed, %d older ones with new "
             "items", d.reason, counts["incremental_sessions"], counts["replayed_sessions"],
             counts["new_item_sessions"])
    return mode, prev, train_file


def _line(ctx: StageContext, res: TrainResult | None) -> TrainResult:
    """LINE over the graph artifact, alone (`res` None) or appended to the skip-gram's."""
    cfg = ctx.cfg
    lp = S.line_params(cfg)
    g = load_graph(ctx.read(A.GRAPH))
    lp = replace(lp, samples=samples_for(lp, S.target_tokens(cfg), g.nnz,
                                         S.train_params(cfg).epochs))
    line = train_line(g, **lp.kwargs())
    log.info("LINE (order %s, %d dims): %s samples at %s samples/s", lp.order, lp.dimension,
             f"{line.stats['samples']:,}", f"{line.stats['samples_per_s']:,}")
    return with_line(res, line)


def _svd(ctx: StageContext, vocab: pd.DataFrame) -> TrainResult:
    """item-kNN's similarity factorized (`recembed.factorize`) over the training sessions."""
    cfg = ctx.cfg
    events = pd.read_parquet(ctx.read(A.SESSIONS_TRAIN), columns=["session", "item"])
    n_items = int(vocab["code"].max()) + 1 if len(vocab) else 0
    try:
        res = factorize_sessions(events["session"].to_numpy(), events["item"].to_numpy(),
                                 n_items, dimension=cfg.train.vector_size,
                                 min_count=cfg.train.min_count, seed=cfg.run.seed)
    except EmptyVocabulary as e:
        raise PipelineError(f"train.min_count={cfg.train.min_count} is above the session "
                            "count of every item: nothing left to factorize; lower "
                            "train.min_count", EXIT_BAD_INPUT) from e
    sv = res.stats["svd"]
    log.info("svd: rank %d (%s) over %s items and %s sessions, %.1f%% of the squared norm; "
             "%s items in fewer than train.min_count sessions left out", sv["rank"],
             sv["solver"], f"{len(res.codes):,}", f"{sv['sessions']:,}",
             100 * sv["norm_kept"], f"{sv['below_min_count']:,}")
    return res


def _export(ctx: StageContext, res: TrainResult, vocab: pd.DataFrame,
            catalog: pd.DataFrame | None, side: dict) -> dict:
    """Write the vectors (cold rows with a catalog) and train.json; the stage statistics."""
    cfg = ctx.cfg
    cold, context = S.cold_params(cfg), S.writes_context(cfg)
    cats = pd.read_parquet(ctx.read(A.CATEGORIES))["category"].to_numpy()
    # the post-processing of the vector space (calibration's choice, recembed.postprocess):
    # fitted on the trained item vectors, applied to every row written (cold ones after their
    # scheme computed them in the trained space), so the index, `similar`, the directional
    # path and the exports all see the same space
    tf = VectorTransform.fit(S.postprocess(cfg), res.vectors)
    tf.save(ctx.write(A.POSTPROCESS))
    res.stats["postprocess"] = tf.to_dict()
    if catalog is None:
        export_vectors(TrainResult(tf.apply(res.vectors), tf.apply(res.context), res.codes,
                                   res.counts), vocab, ctx.out_dir, context=context,
                       categories=cats)
    else:
        rows = cold_rows(res.codes, res.vectors, res.context, res.counts, vocab, catalog,
                         cold.n_attributes, scheme=cold.scheme, k=cold.knn, side=res.side,
                         candidate_scale=cold.candidate_scale)
        export_vectors(TrainResult(tf.apply(rows.vectors), tf.apply(rows.context), rows.codes,
                                   rows.counts),
                       vocab, ctx.out_dir, context=context,
                       categories=item_categories(cats, catalog,
                                                  from_catalog=cold.from_catalog),
                       ids=rows.ids, origin=rows.origin)
        A.write_parquet(rows.origins, ctx.write(A.ORIGINS), A.ORIGINS.columns)
        res.stats.update({"cold_scheme": cold.scheme, **{f"origin_{k}": v
                                                    for k, v in rows.stats.items()},
                          **{f"side_{k}": v for k, v in side.items()}})
        log.info("cold start (%s): %s", cold.scheme, rows.stats)
        warn = delisting_warning(rows.stats, cfg.input.catalog.path)
        if warn:
            log.warning("train: %s", warn)
            res.stats.setdefault("warnings", []).append(warn)
    # the skip-gram settings trained with (calibration's `sgns` choice where it searched them)
    tp = S.train_params(cfg)
    sgns = {k: getattr(tp, k) for k in ("vector_size", "window", "ns_exponent", "sample",
                                        "negative", "alpha")}
    A.write_json(ctx.write(A.TRAIN_STATS), {"model": S.model_name(cfg), "sgns": sgns,
                                            **res.stats})
    log.info("trained %s tokens at %s words/s", f"{res.stats['tokens_trained']:,}",
             f"{res.stats['words_per_s']:,}")
    return {k: v for k, v in res.stats.items() if k != "loss_per_epoch"}


def corpora(cfg: Config) -> list[A.Artifact]:
    """The corpus artifacts training reads under `cfg`."""
    files = {"sessions": A.SESSION_CORPUS, "walks": A.WALKS}
    return [files[c] for c in S.corpus_names(cfg)]


def _reads(cfg: Config) -> tuple:
    warm = (A.PublishedRoot(cfg.publish.dir),) if cfg.train.warm_start else ()
    # incremental: the previous version (bound to this run directory by the runner, so a
    # rerun after this run's own publish still continues the same version) and the sessions
    incr = (A.SESSIONS_TRAIN, A.PreviousVersion(str(cfg.publish.dir))) \
        if cfg.train.mode == "incremental" else ()
    graph = (A.GRAPH,) if S.uses_line(cfg) else ()
    # the factorization reads the training sessions themselves
    # (never beside incremental training, which the config refuses and calibration drops)
    svd = (A.SESSIONS_TRAIN,) if S.uses_svd(cfg) else ()
    return (*corpora(cfg), *graph, A.VOCABULARY, A.CATEGORIES, A.CALIBRATION, A.SESSION_TABLE,
            *incr, *svd, *warm,
            *([A.CATALOG] if S.has_catalog(cfg) else []))


def _writes(cfg: Config) -> tuple:
    return (A.VECTORS, *([A.CONTEXT] if S.writes_context(cfg) else []), A.ITEMS, A.VECTORS_BIN,
            A.VECTORS_TXT, A.TRAIN_STATS, A.POSTPROCESS, *([A.ORIGINS] if S.has_catalog(cfg) else []))


STAGE = Stage("train", run, reads=_reads, writes=_writes,
              sections=("train", "sequences", "walks", "line", "svd", "cold"))
