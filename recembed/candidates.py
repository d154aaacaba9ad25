"""The calibration mini-pipeline: one candidate model trained on the calibration-train sessions
(corpus -> skip-gram -> the serving blend's model), as `recembed.calibrate` and `recembed.tune`
score it on the validation split.

A candidate writes its corpora (the item2vec session corpus and/or random walks over the item
graph of the calibration-train sessions) into a scratch folder, trains `recembed.train` on them
and builds the blend model (`BlendModel.build`: sequential rules, session-kNN index, popularity, in
vector-row space). With an item catalog (`CalibrationCatalog`) the model also holds the catalog
items unseen by those sessions, with vectors from the run's cold scheme, and the `category`
signal's arrays (see `recembed.calibrate` for the protocol).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from recembed import artifacts as A
from recembed.blend import BlendModel, category_arrays
from recembed.catalog import ColdParams
from recembed.graph import GraphParams
from recembed.line import LineParams
from recembed.train import TrainParams
from recembed.walks import WalkParams


@dataclass
class CalibrationCatalog:
    """What calibration needs of the item catalog (runs with `input.catalog`).

    Parameters
    ----------
    table : DataFrame
        catalog.parquet (`recembed.catalog.Catalog.table`).
    vocabulary : DataFrame
        `code`, `id` of every ingest code.
    n_attributes : int
        Attribute columns of `table`.
    categories : int array or None
        Category per item code (-1 unknown; `recembed.catalog.item_categories`); None =
        no `category` signal.
    scheme : {"context", "pooling", "knn", "off"}
        `cold.scheme` ("context" calibrates with "pooling" rows, see the module docstring).
    knn : int
        `cold.knn`.
    candidate_scale : float in [0, 1]
        `cold.candidate_scale`.
    dated : bool
        Whether `table.listed` comes from a catalog column (`input.catalog.listed`).
    """

    table: pd.DataFrame
    vocabulary: pd.DataFrame
    n_attributes: int
    categories: np.ndarray | None = None
    scheme: str = "pooling"
    knn: int = 3
    candidate_scale: float = 1.0
    dated: bool = False

    @classmethod
    def build(cls, table: pd.DataFrame, vocabulary: pd.DataFrame, categories: np.ndarray,
              cold: ColdParams) -> CalibrationCatalog:
        """From catalog.parquet, the vocabulary and categories.parquet's `category` column,
        with the run's cold-start settings: categories from the catalog when
        `cold.from_catalog`; no `category` signal when no item has one."""
        from recembed.catalog import item_categories

        cats = item_categories(categories, table, from_catalog=cold.from_catalog)
        return cls(table, vocabulary, cold.n_attributes, categories=cats if (cats >= 0).any()
                   else None, scheme=cold.scheme, knn=cold.knn,
                   candidate_scale=cold.candidate_scale, dated=cold.dated)

    @property
    def n_total(self) -> int:
        """Item codes including the catalog's new ones (codes after the vocabulary's)."""
        return max(len(self.vocabulary), int(self.table["code"].max()) + 1
                   if len(self.table) else 0)

    def listed_mask(self) -> np.ndarray:
        out = np.zeros(self.n_total, bool)
        out[self.table["code"].to_numpy()] = True
        return out

    def listing(self, ct: pd.DataFrame) -> np.ndarray:
        """Listing-order key per code from what calibration may know (module docstring);
        -inf for codes the catalog does not list."""
        codes = self.table["code"].to_numpy(np.int64)
        out = np.full(self.n_total, -np.inf)
        if self.dated:
            out[codes] = self.table["listed"].to_numpy(np.float64)
            return out
        first = ct.groupby("item")["ts"].min()
        seen = np.full(self.n_total, np.nan)
        seen[first.index.to_numpy()] = first.to_numpy(np.float64)
        key = seen[codes]
        out[codes] = np.where(np.isnan(key), 1e12 + np.arange(len(codes)), key)
        return out


@dataclass
class CandidateModel:
    """A trained candidate: its blend model, `row_of[ingest code]` = model row (-1 = none),
    and the training's epochs and corpus tokens."""

    model: BlendModel
    row_of: np.ndarray
    epochs: int
    corpus_tokens: int


def train_model(ct: pd.DataFrame, weights: pd.Series, n_items: int, workdir: Path, *,
                corpus: str, tokens: int, graph_params: GraphParams, walk_params: WalkParams,
                train_params: TrainParams, rule_steps: int, seed: int, threads: int,
                catalog: CalibrationCatalog | None = None, listing: np.ndarray | None = None,
                callbacks: tuple = (), line_params: LineParams | None = None,
                parts: dict | None = None, vectors=None) -> CandidateModel:
    """Train one candidate model on the calibration-train events `ct`.

    Parameters
    ----------
    ct : DataFrame
        Calibration-train events (`session`, `item`, `ts`), by session then position.
    weights : Series
        Decay weight per session id (`recembed.sessions.session_weights`).
    n_items : int
        Catalogue size (ingest codes).
    workdir : Path
        Scratch folder for the corpora (the caller removes it).
    corpus : {"both", "sessions", "walks", "line", "both+line", "sessions+line", "walks+line",
              "svd"}
        What to train on (`recembed.line.split_corpus`: "line" = LINE vectors alone, "+line" =
        LINE's appended to the skip-gram's; "svd" = item-kNN's similarity factorized,
        `recembed.factorize`, whatever `tokens`).
    tokens : int >= 0, tokens
        Training amount (corpus tokens x epochs); 0 = `train_params.epochs`.
    graph_params, walk_params : GraphParams, WalkParams
        The item graph's and the random walks' settings (the walks' seed is `seed`).
    train_params : TrainParams
        The skip-gram settings.
    rule_steps : int >= 1
        Steps of the sequential rules.
    seed : int
        Seed of the corpora and the training.
    threads : int >= 1
        Threads of the walks.
    catalog, listing : CalibrationCatalog and its `listing` key per code, or None
        With a catalog, the catalog items unseen by `ct` become rows (cold scheme) and the
        `category` signal gets its arrays.
    callbacks : tuple
        gensim epoch-end callbacks (`recembed.tune`'s pruning).
    line_params : LineParams, optional
        LINE's settings for the LINE options (default `LineParams()`); its seed is `seed`, and
        its samples follow the training amount (`recembed.line.samples_for`).
    parts : dict, optional
        A cache of the model's vector-free parts (rules, session index, popularity, row_of)
        for candidates of the same `ct`: a candidate with the same rows as the last one built
        reuses them (`BlendModel.build` took ~11 CPU s per candidate on the 10M-event log).
        The caller keeps one dict per `ct`; None = always build.
    vectors : TrainResult, optional
        The candidate's vectors, trained ahead with these same arguments
        (`prepare_vectors(...)`, its `run` in a worker thread, then `finish`): only the blend
        model is built here. None = train them here.
    """
    if vectors is not None:
        res = vectors
    elif corpus == "svd":
        from recembed.factorize import factorize_sessions

        res = factorize_sessions(ct["session"].to_numpy(), ct["item"].to_numpy(), n_items,
                                 dimension=train_params.vector_size,
                                 min_count=train_params.min_count, seed=seed)
    else:
        job = prepare_vectors(ct, weights, n_items, workdir, corpus=corpus, tokens=tokens,
                              graph_params=graph_params, walk_params=walk_params,
                              train_params=train_params, seed=seed, threads=threads,
                              callbacks=callbacks, line_params=line_params)
        res = job.finish(job.run())
    codes, vectors, context, category = res.codes, res.vectors, res.context, None
    n_model = n_items
    if catalog is not None:
        codes, vectors, context, category = calibration_rows(catalog, res, ct, listing)
        n_model = catalog.n_total
    key = (n_model, int(rule_steps), len(codes), hashlib.sha1(
        np.ascontiguousarray(codes, np.int64).tobytes()).hexdigest())
    if parts is not None and key in parts:
        # the rules, session index and popularity depend on the rows, not on the vectors
        rules, neighbours, popularity, row_of = parts[key]
        model = BlendModel(vectors, context, rules=rules, neighbours=neighbours,
                           popularity=popularity, **(category or {}))
    else:
        model, row_of = BlendModel.build(ct, n_model, codes, vectors, context,
                                         rule_steps=rule_steps, category=category)
        if parts is not None:
            parts.clear()  # one set kept: a session index of the calibration log is large
            parts[key] = (model.rules, model.neighbours, model.popularity, row_of)
    return CandidateModel(model, row_of, int(res.stats["epochs"]),
                          int(res.stats["corpus_tokens"]))


@dataclass
class VectorJob:
    """A candidate's vectors, split where a thread may run them: `prepare_vectors` wrote the
    corpora (walks are numba kernels: the calling thread), `run` trains the skip-gram on them
    (gensim alone, which releases the GIL and calls no numba kernel, so a worker thread may
    run it while the calling thread scores the previous candidate), `finish` adds LINE
    (numba) in the calling thread. One `run` at a time per job; the result does not depend on
    the thread (gensim with workers = 1 is seeded by `seed`)."""

    corpus_file: Path | None
    graph: object | None
    line_mode: str
    tokens: int
    train_params: TrainParams
    seed: int
    callbacks: tuple
    line_params: LineParams | None

    def run(self):
        """The skip-gram's `recembed.train.TrainResult` (None for LINE alone)."""
        from recembed.train import train_word2vec

        if self.corpus_file is None:
            return None
        return train_word2vec(self.corpus_file, seed=self.seed, target_tokens=self.tokens,
                              progress=False, callbacks=self.callbacks,
                              **self.train_params.kwargs())

    def finish(self, res):
        """`res` (from `run`) with LINE's vectors, alone or appended, per the corpus option."""
        from recembed.line import samples_for, train_line, with_line

        if self.line_mode == "off":
            return res
        lp = self.line_params or LineParams()
        lp = replace(lp, seed=self.seed, samples=samples_for(lp, self.tokens, self.graph.nnz,
                                                             self.train_params.epochs))
        return with_line(res, train_line(self.graph, **lp.kwargs()))


def prepare_vectors(ct: pd.DataFrame, weights: pd.Series, n_items: int, workdir: Path, *,
                    corpus: str, tokens: int, graph_params: GraphParams,
                    walk_params: WalkParams, train_params: TrainParams, seed: int,
                    threads: int, callbacks: tuple = (),
                    line_params: LineParams | None = None) -> VectorJob:
    """The corpora of a skip-gram and / or LINE candidate written into `workdir` (created),
    and the training left to run (`VectorJob`); `train_model`'s parameters ("svd" has no
    job: `train_model` factorizes)."""
    from recembed.graph import build_item_graph
    from recembed.line import split_corpus
    from recembed.sequences import write_session_corpus
    from recembed.train import concat_corpora
    from recembed.walks import random_walks

    if corpus == "svd":
        raise ValueError('corpus "svd" trains no skip-gram: train_model factorizes it')
    workdir.mkdir(parents=True, exist_ok=True)
    w = weights.reindex(np.arange(int(weights.index.max()) + 1)).fillna(0).to_numpy()
    base, kind = split_corpus(corpus)
    files = []
    if base in ("both", "sessions"):
        write_session_corpus(ct, w, A.SESSION_CORPUS.path(workdir), seed=seed)
        files.append(A.SESSION_CORPUS.path(workdir))
    g = None
    if base in ("both", "walks") or kind != "off":
        g = build_item_graph(ct, w, n_items, **asdict(graph_params))
    if base in ("both", "walks"):
        wp = replace(walk_params, seed=seed)
        if tokens > 0:
            # one epoch of the walk corpus must not dwarf the training amount being compared
            # (benchmarks/RESULTS.md, "nightly run end to end": the walks alone were 23M tokens)
            wp = replace(wp, max_tokens=min(wp.max_tokens or tokens, max(tokens // 2, 1000)))
        random_walks(g, A.WALKS.path(workdir), threads=threads, **asdict(wp))
        files.append(A.WALKS.path(workdir))
    path = concat_corpora(files, workdir / A.SCRATCH_CORPUS) if base is not None else None
    return VectorJob(corpus_file=path, graph=g, line_mode=kind, tokens=tokens,
                     train_params=train_params, seed=seed, callbacks=tuple(callbacks),
                     line_params=line_params)


def calibration_rows(catalog: CalibrationCatalog, res, ct: pd.DataFrame,
                     listing: np.ndarray | None = None) -> tuple:
    """(codes, vectors, context, category arrays or None) of a calibration model trained on
    `ct` (`res`, a `recembed.train.TrainResult`): the catalog items it has not trained get
    vectors from the run's cold scheme ("context" -> "pooling": module docstring), as the
    train stage gives the final model's."""
    from recembed.catalog import cold_rows

    scheme = "pooling" if catalog.scheme == "context" else catalog.scheme
    rows = cold_rows(res.codes, res.vectors, res.context, res.counts, catalog.vocabulary,
                     catalog.table, catalog.n_attributes, scheme=scheme, k=catalog.knn,
                     candidate_scale=catalog.candidate_scale)
    codes = np.asarray(rows.codes, np.int64)
    category = None
    if catalog.categories is not None:
        cats = np.full(catalog.n_total, -1, np.int64)
        cats[:len(catalog.categories)] = catalog.categories[:catalog.n_total]
        if (cats[codes] >= 0).any():
            key = catalog.listing(ct) if listing is None else listing
            category = category_arrays(cats[codes], key[codes])
    return codes, rows.vectors, rows.context, category
