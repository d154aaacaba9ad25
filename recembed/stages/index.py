"""index: item vectors -> a faiss index tuned to a target recall, and the serving settings."""

from __future__ import annotations

import logging
from dataclasses import asdict

import faiss
import numpy as np
import pandas as pd

from recembed import artifacts as A
from recembed import settings as S
from recembed.blend import BlendModel, candidate_tables, category_arrays
from recembed.catalog import item_categories, listing_order
from recembed.config import Config
from recembed.index import (
    EXACT_BELOW,
    build_index,
    exact_search,
    save_index,
    tune_index,
    tuned_index,
)
from recembed.pipeline import Stage, StageContext
from recembed.serving import write_settings

log = logging.getLogger("recembed")


def run(ctx: StageContext) -> dict:
    """Build, tune and save the index; the serving blend: serving.json (the calibrated
    settings), blend.npz (rules, session-kNN index, popularity; with a catalog, the rows'
    categories and listing ranks of the `category` signal) and index_context.faiss (an
    inner-product index over the output vectors: the directional score as plain ANN)."""
    cfg = ctx.cfg
    ip = S.index_params(cfg)
    index, meta = tuned_index(ip, ctx.read(A.VECTORS), threads=cfg.run.n_threads(),
                              seed=cfg.run.seed)
    save_index(index, meta, ctx.out_dir)
    emb = A.Embeddings.load(ctx.run_dir)
    # without output vectors (hs) the same search runs over the input vectors
    ctx_vectors = emb.context if emb.context is not None else emb.vectors
    cindex, cmeta = build_index(ctx_vectors, seed=cfg.run.seed, **ip.build_kwargs(metric="ip"))
    cmeta = tune_index(cindex, ctx_vectors, cmeta, seed=cfg.run.seed, **ip.tune_kwargs())
    faiss.write_index(cindex, str(ctx.write(A.INDEX_CONTEXT)))
    A.write_text(ctx.write(A.INDEX_CONTEXT_META), cmeta.to_json())
    train = pd.read_parquet(ctx.read(A.SESSIONS_TRAIN), columns=["session", "item", "ts"])
    n_items = len(pd.read_parquet(ctx.read(A.VOCABULARY), columns=["code"]))
    # catalog items never seen in the log have codes after the vocabulary's (recembed.catalog):
    # the blend's arrays cover every served row, cold ones with no clicks, rules or sessions
    n_items = max(n_items, int(emb.codes.max()) + 1 if len(emb.codes) else 0)
    category = None
    if S.has_catalog(cfg):
        # the `category` signal: each row's category and rank by listing recency, cold rows
        # included (the evaluation's category baseline, recembed.evaluate.category_scorer)
        catalog = pd.read_parquet(ctx.read(A.CATALOG), columns=["code", "listed", "category"])
        n_items = max(n_items, int(catalog["code"].max()) + 1)
        cats = item_categories(pd.read_parquet(ctx.read(A.CATEGORIES))["category"].to_numpy(),
                               catalog, from_catalog=S.categories_from_catalog(cfg))
        cats = np.r_[cats, np.full(max(n_items - len(cats), 0), -1, np.int32)]
        if (cats[emb.codes] >= 0).any():
            category = category_arrays(cats[emb.codes],
                                       listing_order(catalog, n_items)[emb.codes])
    model, _ = BlendModel.build(train, n_items, emb.codes, emb.vectors, emb.context,
                                rule_steps=cfg.serving.rule_steps, category=category)
    settings, why = S.served_blend(cfg, len(emb.vectors))
    log.info("index: retrieval = %s (%s)", settings.retrieval, why)
    if settings.retrieval == "table":
        # the searches serving would run for a one-item session, once per item: the same
        # indexes and search parameters as `recembed.serving` loads
        model.dir_table, model.cos_table = candidate_tables(
            emb.vectors, emb.context, settings.candidates,
            search=_table_search(cindex, cmeta, ctx_vectors) if emb.context is not None
            else None, cos_search=index.search)
    model.save(ctx.write(A.BLEND))
    write_settings(ctx.write(A.SERVING), settings)
    d = asdict(meta)
    d.pop("tuning")
    d["context_index"] = cmeta.factory
    d["retrieval"] = settings.retrieval
    return d


def _table_search(cindex, cmeta, ctx_vectors: np.ndarray):
    """The directional search the candidate tables are built with: the context index's own,
    or, for an exact (Flat) one over a catalogue where `choose_index` would otherwise have
    built a graph (>= EXACT_BELOW items), `exact_search` (BLAS blocks and a heap top-k:
    the same exact lists, 2x less CPU than faiss' Flat search at k = 200; below that size
    the Flat index's search stays, so small logs keep their tables bit for bit)."""
    if cmeta.factory == "Flat" and cmeta.n >= EXACT_BELOW:
        return exact_search(ctx_vectors)
    return cindex.search


def _reads(cfg: Config) -> tuple:
    return (A.VECTORS, *([A.CONTEXT] if S.writes_context(cfg) else []), A.ITEMS,
            A.SESSIONS_TRAIN, A.VOCABULARY, A.CALIBRATION,
            *([A.CATALOG, A.CATEGORIES] if S.has_catalog(cfg) else []))


STAGE = Stage("index", run, reads=_reads,
              writes=(A.INDEX, A.INDEX_META, A.SERVING, A.BLEND, A.INDEX_CONTEXT,
                      A.INDEX_CONTEXT_META),
              sections=("index", "serving"))
