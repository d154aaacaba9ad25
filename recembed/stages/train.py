"""train: the corpora -> item vectors (gensim skip-gram), optionally warm-started from the
current published version."""

from __future__ import annotations

import logging

import pandas as pd

from recembed import artifacts as A
from recembed.config import Config
from recembed.pipeline import EXIT_BAD_INPUT, PipelineError, Stage, StageContext
from recembed.publish import warm_start_vectors
from recembed.train import EmptyVocabulary, concat_corpora, export_vectors, train_word2vec

log = logging.getLogger("recembed")


def run(ctx: StageContext) -> dict:
    """Train on the session corpus and/or the walk corpus; export vectors and train.json."""
    cfg, t = ctx.cfg, ctx.cfg.train
    corpus = concat_corpora([ctx.read(a) for a in corpora(cfg)], ctx.scratch / "corpus.txt")
    vocab = pd.read_parquet(ctx.read(A.VOCABULARY), columns=["code", "id"])
    warm = ctx.inputs(A.PublishedRoot)  # declared only when train.warm_start is on
    init = warm_start_vectors(A.current_version_dir(warm[0].root), vocab) if warm else None
    try:
        res = train_word2vec(
            corpus, vector_size=t.vector_size, window=t.window, shrink_windows=t.shrink_windows,
            negative=t.negative, ns_exponent=t.ns_exponent, sample=t.sample,
            epochs=1 if t.epochs == "auto" else t.epochs,
            # "auto" epochs: the training amount decides (set by calibrate, 3M without it)
            target_tokens=int(t.target_tokens) if t.epochs == "auto" else 0,
            alpha=t.alpha, min_alpha=t.min_alpha, min_count=t.min_count, hs=t.hs,
            workers=t.workers or cfg.run.n_threads(), seed=cfg.run.seed,
            max_tokens=t.max_tokens, init=init, progress=cfg.run.progress,
        )
    except EmptyVocabulary as e:
        raise PipelineError(f"train.min_count={t.min_count} is above the corpus count of every "
                            "item: nothing left to train; lower train.min_count",
                            EXIT_BAD_INPUT) from e
    cats = pd.read_parquet(ctx.read(A.CATEGORIES))["category"].to_numpy()
    export_vectors(res, vocab, ctx.out_dir, context=writes_context(cfg), categories=cats)
    A.write_json(ctx.write(A.TRAIN_STATS), {"model": model_name(cfg), **res.stats})
    log.info("trained %s tokens at %s words/s", f"{res.stats['tokens_trained']:,}",
             f"{res.stats['words_per_s']:,}")
    return {k: v for k, v in res.stats.items() if k != "loss_per_epoch"}


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
    return (*corpora(cfg), A.VOCABULARY, A.CATEGORIES, A.CALIBRATION, *warm)


def _writes(cfg: Config) -> tuple:
    return (A.VECTORS, *([A.CONTEXT] if writes_context(cfg) else []), A.ITEMS, A.VECTORS_BIN,
            A.VECTORS_TXT, A.TRAIN_STATS)


STAGE = Stage("train", run, reads=_reads, writes=_writes, sections=("train", "sequences", "walks"))
