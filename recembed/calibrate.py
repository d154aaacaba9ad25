"""Self-calibration on a validation split carved from the end of the training window.

A run trains a few candidate models on the training sessions *before* the validation split
(`split` = 0), scores every candidate's serving blend on the validation sessions (`split` = 2)
and keeps the best; the final model is then trained on the whole window with the chosen
settings. Nothing here ever sees the holdout.

What is chosen (explicit config values always win; only keys left at "auto" are searched):

- the corpus: sessions only / walks only / both, and the training amount (corpus tokens x
  epochs; DESIGN.md: winners saw about 2-3M tokens whatever the corpus size); or "svd",
  item-kNN's similarity factorized (`recembed.factorize`), trained once whatever the amount;
- the serving blend (`recembed.blend`): signal weights, query decay, directional temperature,
  neighbour method. Coordinate ascent from the best single signal, so the chosen blend is at
  least as good on validation as each signal alone (rules, neighbours, repeats, popularity;
  with a catalog, the category baseline).
  Then the fewest candidates per query (50, 100 or 200) and the fewest recent sessions the
  session-kNN signal reads (500, 1,000 or the method's default) that lose less than half a
  query (serving time grows with both).

- the post-processing of the vector space (`recembed.postprocess`: none, centering, removing
  the top principal directions, whitening), per candidate, on the vectors-alone objective
  (`vector_paths`: the directional ANN path over the exported vectors, and cosine `similar`);
  the simplest transform within one standard error of the best is kept, and the candidate's
  blend is chosen on the transformed vectors (what the final model serves).
- the skip-gram settings of the exported vectors (`calibrate.sgns`: ns_exponent, window,
  sample, optionally vector_size; `sgns_search`), after the corpus / amount choice: one
  setting at a time from its current value, on the chosen corpus at the smallest amount, the
  blend held at that candidate's; the vectors-alone objective decides among the settings whose
  blend objective is within one standard error of the best (`choose_sgns`), ties go to
  the current value, then the cheaper one. Its candidates count against `cost_ratio`.


The objective is Recall@20 + MRR@20 on validation (allow-repeats protocol); per query it is
hit + reciprocal rank (in [0, 2]), whose standard error every candidate records. Every
candidate also records the vectors-alone objective (the ANN path's Recall@20 + MRR@20 and its
standard error), which the tie rule below takes in.

The search's cost is bounded in tokens (issue 23; `_successive_halving`). Every candidate
records its tokens trained (corpus tokens x epochs) and calibration.json their total beside the
final model's planned tokens. Candidates train `CalibrationPlan.scale()` of an option's amount,
sized so that every corpus at the smallest amount plus one candidate at the next costs at most
`calibrate.cost_ratio` x the smallest amount: the default 6 trains candidates at full size
(3 x 1M, and 3M only while the total stays within 6 x the final model); cost_ratio = 1 trains
them at 1/6 (167k per corpus, then 500k), which met "no more tokens than the final model" but
cost YOOCHOOSE 0.015 holdout Recall@20 (undertrained candidates favour larger amounts;
benchmarks/RESULTS.md, "calibration cost_ratio"). Every
corpus starts at the smallest amount; at each larger amount only the leader and the candidates
tied with it (within one paired standard error of the per-query objective difference; at most
half, rounded up) continue, the leader alone when its margin exceeds that error; the climb stops
when the larger amount did not beat the smaller by more than its standard error, or when the
next candidate would take the tokens past cost_ratio x the final model the current choice
trains. The choice
(`choose_candidate`): inside the tie set on the blend objective, the candidates whose
`vectors_objective` (when present) is not below the best one's by more than `vectors_se`, and
among them the cheapest (fewer tokens, then "sessions", which needs no walks).

Two threads, one result: scoring a candidate is mostly one core's work and gensim with
`workers = 1` is another's, so the next candidate of the first rung (and the next value of a
skip-gram setting) trains in a worker thread while the current one is scored
(`recembed.candidates.VectorJob`: the corpora are written in the calling thread, the worker runs
gensim alone). Each training is the one it would be alone (its seed, one gensim thread, its own
folder), candidates are scored and recorded in the plan's order, and a prefetch never changes
what is recorded or chosen, only when the second core works (benchmarks/RESULTS.md,
"candidates trained ahead").

The vectors floor (issue 24: the exported vectors alone at least the item-kNN baseline;
`vectors_floor`): while the current choice's vectors-alone objective is below item-kNN's on the
same validation queries, the climb also goes on when the vectors gain more than their standard
error with the blend no more than its own standard error lower (`climb_pays`), a larger amount
is budgeted against the model it would train, and the choice widens to every candidate within
the blend's own standard error of the leader. Above the floor nothing changes, so the samples,
whose vectors beat item-kNN at the smallest amount, choose as before; a sparse purchase log,
whose vectors need many passes over rare items, climbs (benchmarks/RESULTS.md, "the vectors
floor"). A choice left below the floor is a warning and a note in calibration.json.

Reuse across nights (`calibrate.reuse = "auto"`, `PreviousChoice`): when the publish root holds
a version with a calibration record, its choice (corpus, amount, blend) is trained once and
scored on today's validation queries, and kept unless (a) its objective fell below what that
version recorded by more than the standard error of the difference (both objectives' standard
errors combined), (b) more than `calibrate.max_turnover` of
today's validation-query items are unseen by that version, or (c) the full calibration behind it
is more than `calibrate.max_age_days` older than today's data (the newest event's timestamp;
never the clock). Otherwise calibration runs fully. `reuse` in calibration.json says which and
why.

With an item catalog (`CalibrationCatalog`) validation follows the holdout's cold-start
protocol: targets unseen by the calibration-train sessions but listed in the catalog are scored,
not dropped. The calibration model holds those items as rows, with vectors from the run's cold
scheme (`recembed.catalog.cold_rows`; the ``context`` scheme's attribute tokens need their own
training, so its calibration rows use ``pooling``), and the `category` signal's arrays for every
row, so that the `category` weight is chosen on warm and cold targets as the holdout scores them.
The calibration's listing order knows the calibration-train sessions only: the catalog's
`listed` dates when `input.catalog.listed` is set, else the first click in calibration training,
items without one being the newest (later catalog rows newer), as `recembed.catalog` orders them.
"""

from __future__ import annotations

import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from numba import njit, prange

from recembed.blend import SIGNALS, BlendModel, BlendSettings, Signals, blended_scores
from recembed.blend.kernels import COSINE, DIRECTIONAL, flat_ranks
from recembed.blend.model import SignalBatch, _frozen
from recembed.blend.scores import signal_weights
from recembed.candidates import CalibrationCatalog, prepare_vectors, train_model
from recembed.graph import GraphParams
from recembed.line import LineParams
from recembed.progress import progress_bar
from recembed.topk import ScoreBuffer
from recembed.train import TrainParams
from recembed.walks import WalkParams

log = logging.getLogger("recembed")

WEIGHT_GRID = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0)
DECAYS = (0.5, 0.65, 0.8)
# the exported vectors' query decay (`serving.vectors_decay`), the default first: on the same
# validation queries the ANN path gained 9-14 standard errors at 0.02-0.35 on synth music, up to
# 5 at 0.2-0.5 on histories, 2.8 at 1.0 (a plain sum) on ratings' sessions candidate, and tied
# or gained about one on the samples (benchmarks/RESULTS.md, "the vectors' query decay")
VECTORS_DECAYS = (0.65, 0.35, 1.0, 0.15)
TEMPERATURES = (0.5, 1.0, 2.0)
CANDIDATES = (50, 100)  # serving.candidates tried below the default (200), fewest first
NEIGHBOUR_SAMPLES = (500, 1000)  # serving.neighbour_sample tried below the method's default
# the skip-gram settings `sgns_search` tries (Caselles-Dupre et al. 2018: negative exponents,
# larger windows and subsampling can matter for recommendation). No sample below 1e-4: at 1e-5
# gensim drops most occurrences of every item on a small corpus (the vectors collapse).
SGNS_VALUES: dict[str, tuple] = {
    "ns_exponent": (-0.5, 0.0, 0.5, 0.75, 1.0),
    "window": (1, 3, 5, 10),
    "sample": (0.0, 1e-4, 1e-3),
    "vector_size": (32, 64, 128),
    "alpha": (0.025, 0.05, 0.1),
}


@dataclass
class CalibrationPlan:
    """What a run's calibration searches (`recembed.settings.calibration_plan` builds it from
    the config: only keys left at "auto" are searched).

    Parameters
    ----------
    corpora : list of str
        Corpus options to try, first = the default: "both", "sessions", "walks", "line"
        (LINE alone) or a skip-gram corpus + "+line" (`recembed.line.split_corpus`).
    target_tokens : list of int, tokens
        Training amounts (corpus tokens x epochs) to try, middle = the default; [0] = the
        configured epochs.
    half_life_days : float, days
        Decay of the session weights (reference: the newest calibration-train session).
    graph_params, walk_params : GraphParams, WalkParams
        The item graph's and the random walks' settings.
    train_params : TrainParams
        The skip-gram settings (without the training amount).
    blend_fixed : dict
        Blend settings given explicitly in the config (never searched).
    base_blend : BlendSettings
        The blend's fixed parts (history, candidates, ...).
    neighbour_options : list of dict
        Session-kNN settings to try in the blend (first = the default).
    rule_steps : int >= 1
        Steps of the sequential rules.
    max_queries : int >= 10
        Validation queries (a seeded sample).
    max_train_tokens : int >= 1000, events
        The calibration models train on the most recent calibration-train sessions holding at
        most this many events (bounds calibration time on big logs).
    max_seconds : float >= 0, seconds
        A wall-clock limit: past it the run stops with `CalibrationTimeout` (0 = none). Time
        never changes what calibration chooses: every budget that does is work (tokens,
        queries, evaluations), so the same config and data give the same choice on a busy or
        an idle machine.
    enabled : bool
        `calibrate.enabled`.
    postprocess : list of str
        Post-processing transforms of the vector space tried on each candidate
        (`recembed.postprocess`), simplest first (a tie within one standard error goes to the
        earlier one); ["none"] = none tried.
    searches : bool
        Whether any key is left to search.
    progress : bool
        Show a progress bar.
    line_params : LineParams, optional
        LINE's settings for the LINE corpus options (`[line]`).
    postprocess : list of str
        Post-processing transforms tried per candidate (`recembed.postprocess`), simplest first.
    reuse : {"auto", "never"}
        `calibrate.reuse`: re-validate the previous published version's choice first.
    max_age_days : float > 0, days of data time
        Recalibrate fully when the full calibration behind a kept choice is older.
    max_turnover : float in [0, 1]
        Recalibrate fully when more than this share of the validation-query items is unseen by
        the previous version.
    cost_ratio : float in [0.1, 100]
        Tokens all candidates may train, in multiples of the final model's (and of the smallest
        amount for the candidates' scale, `scale`); module docstring.
    sgns : list of str
        The skip-gram settings searched for the exported vectors after the corpus / amount
        search (`sgns_search`), in search order: "ns_exponent", "window", "sample", "alpha",
        "vector_size" (`calibrate.sgns` less the train keys the config sets); [] = off.
    sgns_values : dict of str to tuple
        The values tried per setting (default `SGNS_VALUES`); the current value (the plan's
        `train_params`) is the start and wins ties.
    vectors_decays : tuple of float in (0, 1]
        The exported directional query's decays scored per candidate (`choose_vectors_decay`),
        the default first: `VECTORS_DECAYS`, or the one `serving.vectors_decay` sets.
    """

    corpora: list[str]
    target_tokens: list[int]
    half_life_days: float
    graph_params: GraphParams
    walk_params: WalkParams
    train_params: TrainParams
    blend_fixed: dict
    base_blend: BlendSettings
    neighbour_options: list[dict]
    rule_steps: int = 10
    max_queries: int = 5000
    max_train_tokens: int = 3_000_000
    max_seconds: float = 0.0
    enabled: bool = True
    searches: bool = True
    progress: bool = False
    line_params: LineParams | None = None
    postprocess: list[str] = field(default_factory=lambda: ["none"])
    reuse: str = "auto"
    max_age_days: float = 7.0
    max_turnover: float = 0.2
    cost_ratio: float = 6.0
    sgns: list[str] = field(default_factory=list)
    sgns_values: dict = field(default_factory=dict)
    vectors_decays: tuple = (0.65,)

    def planned(self) -> int:
        """Candidates `calibrate_run` trains at most: every corpus at the smallest amount, then
        up to half of them (rounded up) at each larger amount, then the skip-gram search's
        values (`sgns_search`)."""
        values = self.sgns_values or SGNS_VALUES
        return (len(self.corpora) + -(-len(self.corpora) // 2) * (len(self.target_tokens) - 1)
                + sum(v != getattr(self.train_params, k) for k in self.sgns
                      for v in values.get(k, ())))

    def scale(self) -> float:
        """Candidate amount / option amount, in (0, 1]: the schedule's base (every corpus at
        the smallest amount, one at the next) costs at most `cost_ratio` x the smallest
        amount, the cheapest final model calibration may choose. "svd" trains nothing at an
        amount (`recembed.factorize`), so it is not counted."""
        t = sorted(self.target_tokens)
        if not t or t[0] <= 0:
            return 1.0
        trained = sum(c != "svd" for c in self.corpora)
        base = max(trained, 1) * t[0] + (t[1] if len(t) > 1 else 0)
        return min(1.0, self.cost_ratio * t[0] / base)

    def candidate_tokens(self, amount: int) -> int:
        """Tokens a candidate for the option `amount` trains (0 = the configured epochs)."""
        return 0 if amount <= 0 else max(1000, int(amount * self.scale()))


class CalibrationTimeout(RuntimeError):
    """Calibration ran past `calibrate.max_seconds` (a stop, never a different choice)."""


@dataclass
class CalibrationSplit:
    """The calibration-train events (`ct`, sessions of split 0, optionally only the most
    recent) and the validation events (`val`, split 2) of a training window; `ends` = end time
    per session id, `ref` = the newest calibration-train session's end (the decay's
    reference), `notes` = what was left out and why."""

    ct: pd.DataFrame
    val: pd.DataFrame
    ends: pd.Series
    ref: float
    n_validation_sessions: int
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """No calibration-train or no validation event: nothing to calibrate on."""
        return not len(self.ct) or not len(self.val)

    def weights(self, half_life_days: float) -> pd.Series:
        """Decay weight per session id (`recembed.sessions.session_weights`) from `ref`."""
        from recembed.sessions import session_weights

        return pd.Series(session_weights(self.ends.to_numpy(np.float64), self.ref,
                                         half_life_days), index=self.ends.index)


def calibration_split(train: pd.DataFrame, table: pd.DataFrame, *, max_events: int = 0,
                      max_sessions: int = 0) -> CalibrationSplit:
    """The calibration split of the training window, as calibration and `recembed tune` use it.

    Parameters
    ----------
    train : DataFrame
        Training-window events (`session`, `item`, `ts`), by session then position.
    table : DataFrame
        The session table (`session`, `end`, `split`: 0 train, 2 validation).
    max_events : int >= 0, events
        Keep the most recent calibration-train sessions holding at most this many events
        (0 = all; `calibrate.max_train_tokens`).
    max_sessions : int >= 0, sessions
        Keep only the most recent this many calibration-train sessions (0 = all; `tune
        --sample-sessions`).
    """
    split = table["split"].to_numpy()
    ssplit = pd.Series(split, index=table["session"].to_numpy())
    ev_split = ssplit.reindex(train["session"].to_numpy()).to_numpy()
    ct, val = train[ev_split == 0], train[ev_split == 2]
    ends = table.set_index("session")["end"]
    notes: list[str] = []
    n_val = int((split == 2).sum())
    if not len(ct) or not len(val):
        return CalibrationSplit(ct, val, ends, 0.0, n_val, notes)
    ct_sess = np.unique(ct["session"].to_numpy())
    order = np.argsort(-ends.reindex(ct_sess).to_numpy(), kind="stable")
    if max_events and len(ct) > max_events:
        lens = ct.groupby("session").size().reindex(ct_sess).to_numpy()
        keep = ct_sess[order[np.cumsum(lens[order]) <= max_events]]
        ct = ct[np.isin(ct["session"].to_numpy(), keep)]
        notes.append(f"calibration models trained on the {len(keep):,} most recent "
                     f"sessions ({len(ct):,} events; calibrate.max_train_tokens)")
    if max_sessions:
        keep = ct_sess[order[:max_sessions]]
        ct = ct[np.isin(ct["session"].to_numpy(), keep)]
    ref = float(ends.reindex(np.unique(ct["session"].to_numpy())).max())
    return CalibrationSplit(ct, val, ends, ref, n_val, notes)


@dataclass
class ValidationSet:
    """The validation queries (`recembed.evaluate.Queries`) and what scoring them needs: the
    item count scored over (catalog items included), the evaluation's cold-start keywords,
    the listing key per code (catalog runs), and the queries' statistics."""

    queries: object
    stats: dict
    n_items: int
    cold_kw: dict
    listing: np.ndarray | None


def validation_set(split: CalibrationSplit, n_items: int, catalog: CalibrationCatalog | None,
                   *, max_queries: int, seed: int) -> ValidationSet:
    """The validation queries of `split`, as the holdout's protocol scores them: targets seen
    by the calibration-train sessions, and with a catalog also the listed ones (cold
    targets).

    Parameters
    ----------
    split : CalibrationSplit
    n_items : int
        Catalogue size (ingest codes).
    catalog : CalibrationCatalog or None
    max_queries : int >= 1
        Queries kept (a seeded sample).
    seed : int
        Seed of the sample.
    """
    from recembed.evaluate import make_queries

    ct = split.ct
    pop = np.bincount(ct["item"].to_numpy(), minlength=n_items).astype(np.float64)
    cold_kw: dict = {}
    listing = None
    n_eval = n_items
    if catalog is None:
        known = pop > 0
    else:
        n_eval = catalog.n_total
        listed = catalog.listed_mask()
        known = (pop > 0) | listed[:n_items]
        listing = catalog.listing(ct)
        cold_kw = {"catalog": listed, "listed": listing,
                   "categories": catalog.categories if catalog.categories is not None
                   else np.full(n_eval, -1, np.int32)}
    q, qstats = make_queries(split.val, known, max_queries=max_queries, seed=seed)
    if catalog is not None:
        qstats["cold_queries"] = int((pop[q.target] == 0).sum())
        qstats["cold_share"] = float((pop[q.target] == 0).mean()) if len(q) else 0.0
    return ValidationSet(q, qstats, n_eval, cold_kw, listing)


def evaluate_candidate(ct: pd.DataFrame, weights: pd.Series, n_items: int, q, workdir: Path,
                       plan: CalibrationPlan, *, corpus: str, tokens: int, seed: int,
                       threads: int, catalog: CalibrationCatalog | None = None,
                       listing: np.ndarray | None = None, walk_params: WalkParams | None = None,
                       train_params: TrainParams | None = None, callbacks: tuple = (),
                       parts: dict | None = None, vectors=None,
                       signal_parts: dict | None = None) -> dict:
    """Train one candidate (`recembed.candidates.train_model`) and choose its blend on the
    validation queries `q`: the candidate's record (corpus, target_tokens, epochs,
    corpus_tokens, tokens_trained (= corpus_tokens x epochs), recall@20, mrr@20, objective,
    objective_se (its standard error over the queries), per_query (recall + reciprocal rank
    per query, for paired standard errors), seconds, and `choice`, the BlendChoice).
    The post-processing of its vector space is chosen first, on the vectors-alone objective,
    and the blend on the transformed model: the record adds the vectors-alone paths of the
    chosen transform (`vector_paths`: ``vectors_ann`` and ``vectors_last``, each recall@20
    and mrr@20), ``vectors_objective`` (the ANN path's Recall@20 + MRR@20: what an exported
    vector database answers) and ``vectors_se`` (its standard error over the queries),
    ``postprocess`` (the simplest of `plan.postprocess` within one standard error of the best
    ANN objective, `recembed.postprocess.choose`) and ``postprocess_tried`` (the ANN path of
    each, the cosine path of the chosen one). The transforms are
    fitted on the rows the candidate trained (training count > 0), as the train stage fits
    the final one. The transforms are compared at the first of `plan.vectors_decays`; on the
    chosen one the ANN path is then scored at the others, and ``vectors_decay`` is the
    exported query's decay (`choose_vectors_decay`; ``vectors_decays_tried``): the vectors
    fields are at that decay.
    `walk_params` / `train_params` replace the plan's (`recembed.tune`'s trials); `parts`
    (one dict per `ct`) lets candidates with the same rows share the rules and session index
    (`train_model`); `vectors`, the candidate's vectors trained ahead (`train_model`);
    `signal_parts` (one dict per run), the session-kNN parts the blend searches of candidates
    with the same session index share (`choose_blend`'s `shared`)."""
    from recembed.postprocess import VectorTransform
    from recembed.postprocess import choose as choose_transform

    t0 = time.perf_counter()
    cm = train_model(ct, weights, n_items, workdir, corpus=corpus, tokens=tokens,
                     graph_params=plan.graph_params,
                     walk_params=plan.walk_params if walk_params is None else walk_params,
                     train_params=plan.train_params if train_params is None else train_params,
                     rule_steps=plan.rule_steps, seed=seed, threads=threads, catalog=catalog,
                     listing=listing, callbacks=callbacks, line_params=plan.line_params,
                     parts=parts, vectors=vectors)
    trained = cm.model.popularity > 0
    fit_on = cm.model.vectors[trained] if trained.any() else cm.model.vectors
    decays, history = plan.vectors_decays, plan.base_blend.history
    tried: dict[str, dict] = {}
    for spec in _options_for(plan.postprocess, fit_on.shape[1]):
        tf = VectorTransform.fit(spec, fit_on)
        tried[spec] = vector_paths(transformed_model(cm.model, tf), cm.row_of, q,
                                   decay=decays[0], history=history, paths=("ann",))
    chosen = choose_transform({s: r["ann"] for s, r in tried.items()})
    model = transformed_model(cm.model, VectorTransform.fit(chosen, fit_on))
    # on the chosen transform only: the cosine path (`similar`, no decay) and the exported
    # query's other decays; the transforms' `last` paths chose nothing and cost one product
    # each (benchmarks/RESULTS.md, "the vectors' query decay")
    tried[chosen].update(vector_paths(model, cm.row_of, q, decay=decays[0], history=history,
                                      paths=("last",)))
    by_decay = {decays[0]: tried[chosen]["ann"]}
    for dcy in decays[1:]:
        by_decay[dcy] = vector_paths(model, cm.row_of, q, decay=dcy, history=history,
                                     paths=("ann",))["ann"]
    vdecay = choose_vectors_decay(by_decay)
    prefixes = [cm.row_of[q.items[s: s + n]] for s, n in zip(q.start, q.length, strict=True)]
    choice = choose_blend(model, prefixes, cm.row_of[q.target], base=plan.base_blend,
                          fixed=plan.blend_fixed, neighbour_options=plan.neighbour_options,
                          shared=signal_parts)
    best = tried[chosen]
    return {"corpus": corpus, "target_tokens": tokens, "epochs": cm.epochs,
            "corpus_tokens": cm.corpus_tokens, "tokens_trained": cm.corpus_tokens * cm.epochs,
            "recall@20": choice.recall, "mrr@20": choice.mrr,
            "objective": choice.recall + choice.mrr, "objective_se": choice.se,
            "per_query": choice.per_query,
            "vectors_ann": _rm(by_decay[vdecay]), "vectors_last": _rm(best["last"]),
            "vectors_objective": by_decay[vdecay]["objective"],
            "vectors_se": by_decay[vdecay]["se"], "vectors_decay": vdecay,
            "vectors_decays_tried": {str(d): {**_rm(r), "se": r["se"]}
                                     for d, r in by_decay.items()},
            "postprocess": chosen, "postprocess_tried": tried,
            "seconds": round(time.perf_counter() - t0, 3), "choice": choice}


def validation_baselines(train: pd.DataFrame, test: pd.DataFrame, n_items: int,
                         baselines: list[str], *, max_queries: int, seed: int,
                         train_ts: np.ndarray | None = None, catalog: np.ndarray | None = None,
                         categories: np.ndarray | None = None,
                         listed: np.ndarray | None = None, k: int = 20) -> dict[str, dict]:
    """{name: {"recall@20", "mrr@20"}} of each baseline on the validation queries: the
    allow-repeats numbers of `recembed.evaluate.evaluate_all` (same queries, scorers, blocks
    and candidates), bit for bit (tests/test_calibrate.py pins them), without the
    exclude-prefix variant, the other metrics and the top-k lists calibration never reads:
    each target's rank comes from `dense_target_ranks`.

    Parameters are `evaluate_all`'s (``ks = [k]``, no intervals).
    """
    from recembed import evaluate as E

    popularity = np.bincount(train["item"].to_numpy(), minlength=n_items).astype(np.float64)
    warm = popularity > 0
    known = warm if catalog is None else warm | np.asarray(catalog, bool)[:n_items]
    q, _ = E.make_queries(test, known, max_queries=max_queries, seed=seed)
    makers = {
        "pop": lambda: E.popularity_scorer(popularity),
        "session_pop": lambda: E.session_popularity_scorer(popularity),
        "item_knn": lambda: E.item_knn_scorer(train, n_items, popularity),
        "sr": lambda: E.sequential_rules_scorer(train, n_items, popularity),
        **{m: (lambda m=m: E._sknn_maker(m, train, n_items, train_ts)) for m in E.METHODS},
        "category": lambda: E.category_scorer(
            np.full(n_items, -1) if categories is None else categories[:n_items],
            np.zeros(n_items) if listed is None else listed[:n_items], popularity),
    }
    zero = np.zeros(n_items, np.float32)  # no tie-break beyond the scorer's own
    target = np.asarray(q.target, np.int64)
    out: dict[str, dict] = {}
    for name in baselines:
        scorer = makers[name]()
        rank = np.zeros(len(q), np.int64)
        for lo in range(0, len(q), 512):  # top_k_lists' blocks
            idx = np.arange(lo, min(lo + 512, len(q)))
            rank[idx] = dense_target_ranks(np.asarray(scorer(q, idx), np.float32), zero, known,
                                           q.last(idx), target[idx], k)
        inside = rank > 0
        out[name] = {"recall@20": float(inside.mean()) if len(q) else 0.0,
                     "mrr@20": float(np.divide(1.0, rank, out=np.zeros(len(q)),
                                               where=inside).mean()) if len(q) else 0.0}
    return out


def _options_for(specs: list[str], dim: int) -> list[str]:
    """The transforms of `specs` that exist for `dim`-dimensional vectors (`recembed.tune`'s
    trials change train.vector_size under a plan built for the configured one): invalid ones
    and a ``whiten:R`` that keeps every dimension (= ``whiten``) are left out; ["none"] when
    nothing is left."""
    from recembed.postprocess import parse_spec

    out = []
    for s in specs:
        try:
            kind, p = parse_spec(s, dim)
        except ValueError:
            continue
        if not (kind == "whiten" and ":" in s and p == dim and "whiten" in specs):
            out.append(s)
    return out or ["none"]


def _rm(r: dict) -> dict:
    return {"recall@20": r["recall@20"], "mrr@20": r["mrr@20"]}


def transformed_model(model: BlendModel, tf) -> BlendModel:
    """`model` over post-processed vectors (`recembed.postprocess.VectorTransform` `tf`
    applied to the input and the context vectors, as the train stage writes them); the
    rules, session-kNN index, popularity and category arrays are shared. `model` itself when
    `tf` is the identity. Candidate tables and searches are not carried (calibration models
    have none)."""
    if tf.identity:
        return model
    return BlendModel.from_arrays(model.to_arrays(), tf.apply(model.vectors),
                                  tf.apply(model.context))


def choose_vectors_decay(results: dict[float, dict]) -> float:
    """The exported directional query's decay (`serving.vectors_decay`): the first of
    `results` (the default, then `VECTORS_DECAYS`' order) whose ANN objective is within one
    standard error of the best one's, as `recembed.postprocess.choose` keeps a transform.

    Parameters
    ----------
    results : dict
        decay in (0, 1] -> {"objective": float, "se": float >= 0}, the default first.
    """
    from recembed.postprocess import choose

    if not results:
        raise ValueError("no decay scored")
    return float(choose(results))


def vector_paths(model: BlendModel, row_of: np.ndarray, q, *, decay: float, history: int,
                 k: int = 20, batch: int = 512,
                 paths: tuple[str, ...] = ("ann", "last")) -> dict[str, dict]:
    """The vectors alone on the validation queries `q` (ingest codes), scored as
    `recembed.evaluate.embedding_scorer` scores the holdout's `:ann` and `:last` rows, with
    the evaluation's ranking (`top_k_lists`, allow-repeats: the last item is never
    recommended, items without a vector neither).

    Only each target's rank is needed, so the ranking is `dense_target_ranks` (a counting
    pass over each query's row, stopped at `k` better items) instead of a top-k heap per row
    and the masks: the same numbers bit for bit as `vector_paths_reference` (the scores are
    the same float32 BLAS products of the same `batch`-query blocks; tests/test_calibrate.py
    pins the two equal). The product per block is what is left of the cost.

    Parameters
    ----------
    model : BlendModel
        The candidate's model (its rows' vectors and context vectors, training counts).
    row_of : int array [n_codes]
        Model row of each ingest code (-1 = none).
    q : recembed.evaluate.Queries
    decay : float in (0, 1]
        Weight decay per step back of the ANN path's prefix sum.
    history : int >= 1
        Prefix items the ANN path sums.
    k : int >= 1
    batch : int >= 1
        Queries per product (`top_k_lists`' batch: the blocks, and so the float32 products,
        are the evaluation's).
    paths : tuple of {"ann", "last"}
        The paths to score (each costs one product per block).

    Returns
    -------
    dict
        ``ann`` (the decayed prefix sum of item vectors . context vectors: what an
        inner-product index over the exported context vectors answers; item vectors when the
        model has none) and ``last`` (cosine with the last item: `similar`), each with
        ``recall@20``, ``mrr@20``, ``objective`` (their sum) and ``se`` (the standard error
        of the per-query hit + reciprocal rank, whose mean is the objective).
    """
    from recembed.evaluate import TIE

    n = len(row_of)
    rows_item, popularity, ctx = _item_rows(model, row_of)
    # embedding_scorer's arrays, expression for expression (the same float32 values)
    d = model.vectors.shape[1]
    emb = np.zeros((n, d), np.float32)
    emb[rows_item] = model.vectors
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    has_vec = np.zeros(n, bool)
    has_vec[rows_item] = True
    tie = (popularity / max(popularity.max(), 1)).astype(np.float32) * TIE
    out_m = np.zeros((n, d), np.float32)
    out_m[rows_item] = ctx
    target = np.asarray(q.target, np.int64)
    if not paths or set(paths) - {"ann", "last"}:
        raise ValueError(f"paths must name 'ann' and / or 'last', got {paths!r}")
    out: dict[str, dict] = {}
    buf = ScoreBuffer(n)
    for name in paths:
        cand, qm = (out_m, emb) if name == "ann" else (unit, unit)
        rank = np.zeros(len(q), np.int64)
        for lo in range(0, len(q), batch):
            idx = np.arange(lo, min(lo + batch, len(q)))
            if name == "ann":
                qv = np.zeros((len(idx), d), np.float32)
                end = q.start[idx] + q.length[idx]
                for j in range(history):
                    ok = q.length[idx] > j
                    qv[ok] += (decay ** j) * qm[q.items[end[ok] - 1 - j]]
            else:
                qv = qm[q.last(idx)]
            s = np.matmul(qv, cand.T, out=buf.rows(len(idx)))  # qv @ cand.T, bit for bit
            rank[idx] = dense_target_ranks(s, tie, has_vec, q.last(idx), target[idx], k)
        inside = rank > 0
        hit = inside.astype(np.float64)
        rr = np.divide(1.0, rank, out=np.zeros(len(rank)), where=inside)
        out[name] = _path_metrics(hit, rr)
    return out


def dense_target_ranks(scores: np.ndarray, tie: np.ndarray, allowed: np.ndarray,
                       last: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """int64 [n]: the rank (1 = first) of each row's target in `top_k` of ``scores + tie``
    with the columns outside `allowed` and each row's `last` column at -inf, 0 when it is not
    in the top `k` (`per_query_objective` of `top_k_lists`' allow-repeats lists).

    Parameters
    ----------
    scores : float32 [n, m]
    tie : float32 [m]
        Added to every row (the popularity tie-break), in float32 as numpy adds it.
    allowed : bool [m]
        Columns that may be ranked.
    last : int [n]
        Each row's excluded column (the query's last item).
    targets : int [n]
        The column to rank per row (outside [0, m) = never ranked).
    k : int >= 1
    """
    scores = np.ascontiguousarray(scores, np.float32)
    n, m = scores.shape
    tie = np.ascontiguousarray(tie, np.float32)
    allowed = np.ascontiguousarray(allowed, np.bool_)
    if tie.shape != (m,) or allowed.shape != (m,) or len(last) != n or len(targets) != n:
        raise ValueError(f"scores {scores.shape} need tie and allowed of {m} and last and "
                         f"targets of {n}: got {tie.shape}, {allowed.shape}, {len(last)}, "
                         f"{len(targets)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return _dense_ranks(scores, tie, allowed, np.ascontiguousarray(last, np.int64),
                        np.ascontiguousarray(targets, np.int64), int(k))


@njit(parallel=True, cache=True, nogil=True)
def _dense_ranks(scores, tie, allowed, last, targets, k):
    n, m = scores.shape
    out = np.zeros(n, np.int64)
    for i in prange(n):
        t, x = targets[i], last[i]
        if t < 0 or t >= m or not allowed[t] or t == x:
            continue
        ts = scores[i, t] + tie[t]
        if ts != ts or ts == -np.inf:  # top_k never lists NaN or -inf
            continue
        better = 0  # columns top_k puts before t: higher score, or equal with a lower index
        for j in range(m):
            if allowed[j] and j != x:
                s = scores[i, j] + tie[j]
                if s > ts or (s == ts and j < t):
                    better += 1
                    if better >= k:
                        break
        if better < k:
            out[i] = better + 1
    return out


def vector_paths_reference(model: BlendModel, row_of: np.ndarray, q, *, decay: float,
                           history: int, k: int = 20) -> dict[str, dict]:
    """`vector_paths` through `recembed.evaluate.embedding_scorer` and `top_k_lists` (full
    top-k lists of every query): the reference the fast path is tested against."""
    from recembed.evaluate import embedding_scorer, per_query_objective, top_k_lists

    n = len(row_of)
    rows_item, pop, ctx = _item_rows(model, row_of)
    out: dict[str, dict] = {}
    for name in ("ann", "last"):
        sc = embedding_scorer(model.vectors, rows_item, n, pop, strategy=name, context=ctx,
                              decay=decay, history=history)
        hit, rr = per_query_objective(top_k_lists(sc, q, n, k=k)["allow_repeats"],
                                      q.target, k)
        out[name] = _path_metrics(hit, rr)
    return out


def _path_metrics(hit: np.ndarray, rr: np.ndarray) -> dict:
    """Recall@20, MRR@20, their sum (the objective) and its standard error over the queries,
    from per-query hits (0 / 1) and reciprocal ranks (0 past 20)."""
    per = hit + rr
    return {"recall@20": float(hit.mean()) if len(per) else 0.0,
            "mrr@20": float(rr.mean()) if len(per) else 0.0,
            "objective": float(per.mean()) if len(per) else 0.0,
            "se": float(per.std(ddof=1) / np.sqrt(len(per))) if len(per) > 1 else 0.0}


def _item_rows(model: BlendModel, row_of: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows_item: the ingest code of each model row, popularity per ingest code, the
    candidate side's vectors: context vectors, else the item vectors) of `vector_paths`."""
    codes = np.flatnonzero(row_of >= 0)
    rows_item = np.empty(len(model.vectors), np.int64)
    rows_item[row_of[codes]] = codes
    popularity = np.zeros(len(row_of))
    popularity[rows_item] = model.popularity
    ctx = model.context if model.context is not None else model.vectors
    return rows_item, popularity, ctx


@dataclass
class BlendChoice:
    """The chosen settings, their validation metrics, and every corner's for the report."""

    settings: BlendSettings
    recall: float
    mrr: float
    corners: dict = field(default_factory=dict)
    evaluations: int = 0
    seconds: float = 0.0
    candidate_sizes: dict = field(default_factory=dict)
    neighbour_samples: dict = field(default_factory=dict)
    per_query: np.ndarray | None = None  # recall + reciprocal rank per validation query

    @property
    def se(self) -> float:
        """Standard error of the objective (recall@20 + mrr@20) over the validation queries
        (0 without per-query values)."""
        return objective_se(self.per_query)

    def as_dict(self) -> dict:
        return {"settings": self.settings.to_dict(), "recall@20": self.recall,
                "mrr@20": self.mrr, "signals_alone": self.corners,
                "candidate_sizes": self.candidate_sizes,
                "neighbour_samples": self.neighbour_samples,
                "evaluations": self.evaluations, "seconds": round(self.seconds, 3),
                "objective_se": self.se}


def choose_blend(model: BlendModel, prefixes: list[np.ndarray], targets: np.ndarray, *,
                 base: BlendSettings | None = None, fixed: dict | None = None, k: int = 20,
                 neighbour_options: list[dict] | None = None,
                 max_rounds: int = 3, shared: dict | None = None) -> BlendChoice:
    """Search the blend on validation queries (rows of `model`), coordinate ascent.

    Parameters
    ----------
    model : BlendModel
        The calibration model (trained without the validation sessions).
    prefixes : list of int arrays
        Query prefixes as vector rows (-1 = no vector), most recent last.
    targets : int array
        The next item's row per query (>= 0).
    base : BlendSettings
        Starting point; keys in `fixed` are never changed.
    fixed : dict
        Settings given explicitly in the config (name -> value), e.g. {"decay": 0.5}.
    neighbour_options : list of dicts
        Session-kNN parameter sets to try (first = default).
    max_rounds : int >= 1
        Rounds of coordinate ascent at most (each round tries every coordinate's values; it
        stops earlier when a round improves nothing). The search's cost is work, never time.
    shared : dict, optional
        Session-kNN parts kept across searches over the same session index and queries
        (`SignalBatch`'s `shared`).
    """
    t0 = time.perf_counter()
    fixed = dict(fixed or {})
    # not a BlendSettings field: an explicit serving.neighbour_sample is already inside the
    # neighbour options (and fixed["neighbours"]); here it only stops the sample search
    sample_fixed = fixed.pop("neighbour_sample", None) is not None
    st = replace(base or BlendSettings(), **fixed)
    if "weights" not in fixed:
        st = replace(st, weights={s: 0.0 for s in SIGNALS})
    options = neighbour_options or [st.neighbours]
    if "neighbours" in fixed or model.neighbours is None:
        options = [st.neighbours]
    decays = [st.decay] if "decay" in fixed else sorted(set(DECAYS) | {st.decay})
    # every signal set computed once per distinct (decay, neighbour option, candidates, ...),
    # its parts once per what each depends on; scored by a kernel (`BlendScorer`)
    scorer = BlendScorer(SignalBatch(model, prefixes, shared=shared), targets, k)

    def signals(decay: float, opt: int) -> None:
        scorer.batch.flat(replace(st, decay=decay, neighbours=options[opt]))

    n_eval = 0

    def score(s: BlendSettings, opt: int) -> tuple[float, float]:
        nonlocal n_eval
        n_eval += 1
        return scorer(replace(s, neighbours=options[opt]))

    def obj(rm: tuple[float, float]) -> float:
        return rm[0] + rm[1]

    if not len(targets):
        return BlendChoice(st, 0.0, 0.0, seconds=time.perf_counter() - t0)
    # a move must win at least half a query: on a few hundred validation queries, smaller
    # gains are noise that coordinate ascent would happily fit
    min_gain = 0.5 / len(targets)
    signals(st.decay, 0)
    t0 = time.perf_counter()
    # corners: every signal alone (its baseline inside the blend)
    corners: dict = {}
    best, best_rm, best_opt = st, (-1.0, -1.0), 0
    names = [s for s in SIGNALS if not (s == "neighbours" and model.neighbours is None)
             and not (s == "rules" and model.rules is None)
             and not (s == "category" and not model.has_category)]
    if "weights" in fixed:
        best_rm = score(st, 0)
    else:
        for name in names:
            for opt in (range(len(options)) if name == "neighbours" else [0]):
                cand = replace(st, weights={**dict.fromkeys(SIGNALS, 0.0), name: 1.0})
                rm = score(cand, opt)
                label = name if opt == 0 else f"{name}[{opt}]"
                corners[label] = {"recall@20": rm[0], "mrr@20": rm[1]}
                if obj(rm) > obj(best_rm):
                    best, best_rm, best_opt = cand, rm, opt
    # coordinate ascent over weights, temperature, decay, neighbour option
    for _round in range(max_rounds):
        improved = False
        coords: list[tuple[str, list]] = []
        if "weights" not in fixed:
            coords += [(f"w:{n}", list(WEIGHT_GRID)) for n in names]
        if "temperature" not in fixed:
            coords.append(("temperature", list(TEMPERATURES)))
        if len(decays) > 1:
            coords.append(("decay", decays))
        if len(options) > 1:
            coords.append(("opt", list(range(len(options)))))
        for coord, values in coords:
            for v in values:
                cand, opt = best, best_opt
                if coord.startswith("w:"):
                    cand = replace(best, weights={**best.weights, coord[2:]: float(v)})
                    if not any(cand.weights.values()):
                        continue
                elif coord == "opt":
                    opt = int(v)
                else:
                    cand = replace(best, **{coord: v})
                rm = score(cand, opt)
                if obj(rm) > obj(best_rm) + min_gain:
                    best, best_rm, best_opt, improved = cand, rm, opt, True
        if not improved:
            break
    best = replace(best, neighbours=options[best_opt])
    def fewest(best, best_rm, current: int, smaller, make):
        """The first of `smaller` (ascending, below `current`) whose settings `make(best, x)`
        lose at most min_gain on validation (fresh signals: the candidate lists change),
        else `best`; and the metrics of every size tried."""
        nonlocal n_eval
        tried = {current: best_rm}
        # never below a signal alone (each baseline inside the blend), whatever min_gain allows
        floor = max([obj(best_rm) - min_gain] +
                    [m["recall@20"] + m["mrr@20"] for m in corners.values()])
        for x in sorted(v for v in smaller if v < current):
            cand = make(best, x)
            n_eval += 1
            tried[x] = scorer(cand)
            if obj(tried[x]) >= floor:
                return cand, tried[x], tried
        return best, best_rm, tried

    sizes, samples = {}, {}
    if "candidates" not in fixed:
        # the fewest candidates that lose nothing: each costs serving time in every signal
        # (benchmarks/RESULTS.md, "serving throughput": the same recall at 50 as at 200)
        best, best_rm, sizes = fewest(best, best_rm, best.candidates, CANDIDATES,
                                      lambda st_, c: replace(st_, candidates=c))
    if (not sample_fixed and model.neighbours is not None
            and best.neighbours.get("method", "stan") != "off"
            and best.weights.get("neighbours", 0.0) > 0):
        # the fewest recent sessions session-kNN reads per query that lose nothing: the
        # sessions it merges are most of its time (benchmarks/RESULTS.md, "serving
        # throughput")
        best, best_rm, samples = fewest(
            best, best_rm, neighbour_sample_size(best.neighbours), NEIGHBOUR_SAMPLES,
            lambda st_, n: replace(st_, neighbours={**st_.neighbours, "sample_size": n}))
    hit, rr = scorer(best, per_query=True)
    return BlendChoice(best, best_rm[0], best_rm[1], corners, n_eval,
                       time.perf_counter() - t0,
                       {str(c): {"recall@20": r, "mrr@20": m} for c, (r, m) in sizes.items()},
                       {str(c): {"recall@20": r, "mrr@20": m} for c, (r, m) in samples.items()},
                       hit + rr)


def neighbour_sample_size(neighbours: dict) -> int:
    """The sample_size a settings' neighbours dict means (its method's default if unset)."""
    from recembed.sknn import method_params

    nb = dict(neighbours)
    return int(method_params(nb.pop("method", "stan"), **nb).sample_size)


def calibrate_run(
    train: pd.DataFrame, table: pd.DataFrame, n_items: int, workdir: Path, plan: CalibrationPlan,
    *, baselines: tuple[str, ...] = ("pop", "session_pop", "sr", "item_knn", "vsknn", "stan"),
    seed: int = 0, threads: int = 1, catalog: CalibrationCatalog | None = None,
    previous: PreviousChoice | None = None, item_ids: np.ndarray | None = None,
) -> dict:
    """Train candidate models on the sessions before the validation split, choose corpus,
    training amount and blend on the validation sessions; the calibration record.

    Parameters
    ----------
    train : DataFrame
        Training-window events (`session`, `item`, `ts`), ordered by session then position;
        the validation sessions included.
    table : DataFrame
        The session table (`session`, `end`, `split`: 0 train, 2 validation).
    n_items : int
        Catalogue size (ingest codes).
    workdir : Path
        Scratch directory for candidate corpora (removed afterwards).
    plan : CalibrationPlan
        What to search (`recembed.settings.calibration_plan`).
    baselines : tuple of str
        The baselines measured on the same validation queries (`recembed.evaluate`).
    seed : int
        Seed of the query sample and of every candidate.
    threads : int >= 1
        Threads of the random walks.
    catalog : CalibrationCatalog or None
        The run's item catalog: validation scores cold targets and the `category` signal is
        searched (module docstring). None = no catalog: warm targets only, no category signal.
    previous : PreviousChoice or None
        The previous published version's calibration (`plan.reuse = "auto"`): re-validated
        and kept when it still holds (module docstring, "reuse"); None = calibrate fully.
    item_ids : array of str or None
        Item id per ingest code (the vocabulary), to compare today's validation items with
        the previous version's; None = no turnover check (the choice is recalibrated).
    """
    t0 = time.perf_counter()
    split = calibration_split(train, table, max_events=plan.max_train_tokens)
    record: dict = {"enabled": True, "validation_sessions": split.n_validation_sessions,
                    "notes": list(split.notes), "candidates": []}
    if split.empty:
        record.update(enabled=False, reason="no validation split (too few training sessions)")
        return record
    ct, val = split.ct, split.val
    weights = split.weights(plan.half_life_days)
    vs = validation_set(split, n_items, catalog, max_queries=plan.max_queries, seed=seed)
    q = vs.queries
    if catalog is not None and catalog.categories is not None and "category" not in baselines:
        baselines = (*baselines, "category")
    record["validation_queries"] = vs.stats
    record["baselines"] = {}  # below, while the first candidate trains
    record["vectors_floor"] = {}
    workdir.mkdir(parents=True, exist_ok=True)
    data_end = float(train["ts"].max())
    log_share = len(ct) / max(len(train), 1)  # the final model trains on all of `train`
    record.update(data_end=data_end, log_share=round(log_share, 6),
                  candidate_scale=plan.scale())
    bar = progress_bar(plan.planned(), plan.progress, unit="candidate", desc="calibrate")
    n_done = 0
    parts: dict = {}  # the candidates' shared rules and session index (`train_model`)
    signal_parts: dict = {}  # and the session-kNN items of their blend searches

    # the skip-gram of the next candidate trains in this thread while the current one is
    # scored (`run_one(..., then=...)`): scoring is mostly one core's work and gensim with
    # workers = 1 the other's, and neither depends on the thread
    # (benchmarks/RESULTS.md, "candidates trained ahead")
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="calibrate-train")
    ahead: dict[tuple, tuple] = {}  # (corpus, amount, sgns) -> (its folder, job, future)
    started = 0

    def train_ahead(corpus: str, amount: int, sgns: dict | None = None) -> None:
        nonlocal started
        key = (corpus, amount, _frozen(sgns or {}))
        if corpus == "svd" or key in ahead:
            return
        started += 1
        where = workdir / f"ahead-{started}"
        tp = replace(plan.train_params, **sgns) if sgns else plan.train_params
        job = prepare_vectors(ct, weights, n_items, where, corpus=corpus,
                              tokens=plan.candidate_tokens(amount),
                              graph_params=plan.graph_params, walk_params=plan.walk_params,
                              train_params=tp, seed=seed, threads=threads,
                              line_params=plan.line_params)
        ahead[key] = (where, job, pool.submit(job.run))

    def run_one(corpus: str, amount: int, *, fixed: dict | None = None,
                sgns: dict | None = None, then: str | None = None) -> dict:
        """Candidate `corpus` at `amount`; `then`, the corpus trained next at the same
        amount, starts training before this one is scored."""
        nonlocal n_done
        tokens = plan.candidate_tokens(amount)
        p = plan if fixed is None else replace(plan, blend_fixed=fixed)
        tp = replace(plan.train_params, **sgns) if sgns else None
        vectors = None
        if then is not None:
            train_ahead(corpus, amount, sgns)  # a no-op when it was started ahead
        key = (corpus, amount, _frozen(sgns or {}))
        if key in ahead:
            where, job, running = ahead.pop(key)
            vectors = job.finish(running.result())
            shutil.rmtree(where, ignore_errors=True)
        if then is not None:
            train_ahead(then, amount)
        cand = evaluate_candidate(ct, weights, n_items, q, workdir, p, corpus=corpus,
                                  tokens=tokens, seed=seed, threads=threads, catalog=catalog,
                                  listing=vs.listing, train_params=tp, parts=parts,
                                  vectors=vectors, signal_parts=signal_parts)
        cand["option_tokens"] = amount
        if sgns:
            cand["sgns"] = dict(sgns)
        n_done += 1
        record["candidates"].append(_candidate_json(cand))
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{corpus}, {cand['tokens_trained']:,} tokens: "
                                f"{cand['objective']:.4f}")
        log.info("calibrate: candidate %d (of at most %d): %s for %s (%s tokens trained): "
                 "validation recall@20 %.4f mrr@20 %.4f, objective %.4f +- %.4f (%.1f s)",
                 n_done, plan.planned(), corpus,
                 f"{amount:,} tokens" if amount else f"{cand['epochs']} epochs (train.epochs)",
                 f"{cand['tokens_trained']:,}", cand["recall@20"], cand["mrr@20"],
                 cand["objective"], cand["objective_se"], cand["seconds"])
        elapsed = time.perf_counter() - t0
        if plan.max_seconds and elapsed > plan.max_seconds:
            raise CalibrationTimeout(
                f"calibration ran {elapsed:,.0f} s, past calibrate.max_seconds = "
                f"{plan.max_seconds:g}, after {n_done} of at most {plan.planned()} candidates; "
                "nothing was chosen (time never changes the choice). Raise "
                "calibrate.max_seconds (0 = no limit), or make calibration cheaper: "
                "calibrate.max_train_tokens, fewer calibrate.corpora / calibrate.target_tokens")
        return cand

    try:
        cands: list[dict] = []
        reuse = _reuse_check(plan, previous, data_end, vs, item_ids)
        trained = [c for c in plan.corpora if c != "svd"]
        if reuse["decision"] != "revalidate" and trained and plan.target_tokens:
            # the first rung's first skip-gram trains while the baselines are scored
            train_ahead(trained[0], min(plan.target_tokens))
        record["baselines"] = validation_baselines(
            ct, val, vs.n_items, list(baselines), max_queries=plan.max_queries, seed=seed,
            train_ts=ct["ts"].to_numpy(), **vs.cold_kw)
        floor = vectors_floor(record["baselines"])
        record["vectors_floor"] = {"baseline": "item_knn", "objective": floor}
        prev_sgns = _previous_sgns(plan, previous)
        if reuse["decision"] == "revalidate":
            prev = previous.record
            kept = run_one(prev["corpus"], int(prev["target_tokens"] or 0),
                           fixed=_fixed_blend(prev), sgns=prev_sgns or None)
            reuse.update(_revalidated(prev, kept))
            if reuse["decision"] == "kept":
                cands = [kept]
        if not cands:
            cands = _successive_halving(plan, run_one, record, log_share, floor)
        best = choose_candidate(cands, floor)
        if reuse["decision"] == "kept":
            if prev_sgns:
                record["sgns"] = {"keys": list(plan.sgns), "chosen": prev_sgns,
                                  "decision": "kept", "changed": True}
        else:
            _sgns_stage(plan, best, cands, run_one, record, log_share, prefetch=train_ahead)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
        shutil.rmtree(workdir, ignore_errors=True)
    choice: BlendChoice = best["choice"]
    spent = sum(int(c["tokens_trained"]) for c in record["candidates"])
    final = final_tokens_planned(best["option_tokens"], best["corpus_tokens"], log_share,
                                 best["epochs"])
    record.update(corpus=best["corpus"], target_tokens=best["option_tokens"],
                  candidate_target_tokens=best["target_tokens"],
                  postprocess=record.get("postprocess", best["postprocess"]),
                  blend=choice.as_dict(), seconds=round(time.perf_counter() - t0, 3),
                  reuse=reuse,
                  calibrated_data_end=(previous.record.get("calibrated_data_end", data_end)
                                       if reuse["decision"] == "kept" else data_end))
    record["cost"] = {"tokens_trained": spent, "final_tokens_planned": final,
                      "ratio": round(spent / final, 4) if final else None,
                      "candidates": len(record["candidates"])}
    record["vectors_decay"] = best["vectors_decay"]
    record["validation"] = {"recall@20": choice.recall, "mrr@20": choice.mrr,
                            "objective": choice.recall + choice.mrr, "objective_se": choice.se,
                            "vectors_decay": best["vectors_decay"],
                            "vectors_ann": best["vectors_ann"],
                            "vectors_last": best["vectors_last"],
                            "vectors_objective": best["vectors_objective"],
                            "vectors_se": best["vectors_se"]}
    if below_floor(best, floor):
        why = (f"the exported vectors alone (the ANN path) reach {best['vectors_objective']:.4f} "
               f"(Recall@20 + MRR@20) on validation, below the item-kNN baseline's "
               f"{floor:.4f}: no candidate tried within the blend's standard error did better "
               "(see not_tried); more training may help: calibrate.cost_ratio or a larger "
               "calibrate.target_tokens")
        record["notes"].append(why)
        log.warning("calibrate: %s", why)
    log.info("calibrate: %s (%s); chose %s at %s tokens; %s tokens trained across %d "
             "candidates = %.2f x the final model's planned %s tokens",
             reuse["decision"], reuse["reason"], best["corpus"], f"{best['option_tokens']:,}",
             f"{spent:,}", len(record["candidates"]), spent / final if final else 0.0,
             f"{final:,}")
    inside = {"session_pop": "repeat", "sr": "rules", "vsknn": "neighbours",
              "stan": "neighbours", "pop": "popularity", "category": "category"}
    for name, m in record["baselines"].items():
        if m["recall@20"] > choice.recall:
            why = (f"its signal ({inside[name]}) is in the blend search, but the candidate set "
                   "or the blend's normalisation loses part of it" if name in inside else
                   "its signal is not a blend signal (covered by rules and neighbours)")
            record["notes"].append(f"baseline {name} beats the blend on validation "
                                   f"({m['recall@20']:.4f} vs {choice.recall:.4f}): {why}")
    return record


# ---------------------------------------------------------------- helpers


class BlendScorer:
    """Recall@k and MRR@k of blends over the signals of one `SignalBatch` (fixed queries):
    `_recall_mrr`'s numbers, bit for bit (tests/test_calibrate.py pins them), from a numba
    kernel over the end-to-end candidates (`recembed.blend.kernels.flat_ranks`), with the
    exp-normalised directional signal kept per temperature and the cosine one per signal set.

    Parameters
    ----------
    batch : SignalBatch
        The queries' signals (its sessions are the queries).
    targets : int array [n]
        The next item's row per query (-1 = none: never a hit).
    k : int >= 1
        The cut-off.
    """

    def __init__(self, batch: SignalBatch, targets: np.ndarray, k: int = 20):
        if len(targets) != len(batch):
            raise ValueError(f"{len(batch)} queries, {len(targets)} targets")
        self.batch, self.k = batch, int(k)
        self.targets = np.ascontiguousarray(targets, np.int64)
        self._cos: dict[tuple, np.ndarray] = {}
        self._expo: dict[tuple, np.ndarray] = {}
        self._ranks: dict[tuple, np.ndarray] = {}
        self.ranked = 0  # kernel runs (settings scored that no earlier one scored the same)

    def _exp(self, flat, st: BlendSettings, key: tuple) -> np.ndarray:
        """float64 [T, 2]: `BlendModel._exp_normalised` of both signals (a few kept; the
        cosine column, which no temperature changes, once per signal set)."""
        full = (*key, float(st.temperature))
        if full not in self._expo:
            both = np.ones(len(SIGNALS))
            both[COSINE] = 0.0
            expo = BlendModel._exp_normalised(flat, both, st)
            if key not in self._cos:
                cos = np.zeros(len(SIGNALS))
                cos[COSINE] = 1.0
                self._cos[key] = BlendModel._exp_normalised(flat, cos, st)[:, COSINE]
                while len(self._cos) > self.batch.keep:
                    self._cos.pop(next(iter(self._cos)))
            expo[:, COSINE] = self._cos[key]
            while len(self._expo) >= 6:
                self._expo.pop(next(iter(self._expo)))
            self._expo[full] = expo
        return self._expo[full]

    def ranks(self, st: BlendSettings) -> np.ndarray:
        """int64 [n]: each target's rank under `st` (0 = not ranked: not a candidate, or the
        excluded last item). Settings that score every candidate the same share one run of
        the kernel: equal signals (`SignalBatch.key`), weights and exclude_last, and the
        temperature when the directional signal weighs anything."""
        key = SignalBatch.key(st)
        w = signal_weights(st)
        memo = (key, tuple(w), bool(st.exclude_last),
                float(st.temperature) if w[DIRECTIONAL] != 0.0 else None)
        if memo not in self._ranks:
            flat = self.batch.flat(st)
            self._ranks[memo] = flat_ranks(flat, self._exp(flat, st, key), w,
                                           exclude_last=bool(st.exclude_last),
                                           targets=self.targets)
            self.ranked += 1
        return self._ranks[memo]

    def __call__(self, st: BlendSettings, *, per_query: bool = False) -> tuple:
        """(recall@k, mrr@k) of `st`; with ``per_query=True`` the per-query (hit in {0, 1},
        reciprocal rank in [0, 1], 0 past k) arrays instead, as `_recall_mrr` returns them."""
        rank = self.ranks(st)
        ok = (rank > 0) & (rank <= self.k)
        rr = np.where(ok, 1.0 / np.maximum(rank, 1), 0.0)
        if per_query:
            return ok.astype(np.float64), rr
        return float(ok.mean()), float(rr.mean())


def _recall_mrr(sig: Signals, st: BlendSettings, targets: np.ndarray, k: int, *,
                per_query: bool = False) -> tuple:
    """Recall@k and MRR@k of the blend over precomputed signals (allow-repeats protocol):
    the numpy reference of `BlendScorer` (which the search uses; tests/test_calibrate.py
    pins the two equal).

    With ``per_query=True`` the two per-query arrays instead (hit in {0, 1}, reciprocal rank
    in [0, 1], 0 past k): their means are the two metrics, and their sum is the per-query
    objective whose standard error `objective_se` / `paired_se` measure."""
    score = blended_scores(sig, st)
    score += sig.values[:, :, SIGNALS.index("popularity")] * 1e-6
    if st.exclude_last:
        score[(sig.rows == sig.last[:, None]) & (sig.last[:, None] >= 0)] = -np.inf
    score[sig.rows < 0] = -np.inf
    hit = (sig.rows == targets[:, None]) & (targets[:, None] >= 0)  # -1: a target without a row
    found = hit.any(axis=1)
    pos = hit.argmax(axis=1)
    ts = score[np.arange(len(score)), pos]
    # rank = 1 + candidates scoring higher (+ equal ones with a lower row: the tie rule)
    higher = (score > ts[:, None]).sum(axis=1)
    ties = ((score == ts[:, None]) & (sig.rows < targets[:, None])).sum(axis=1)
    rank = higher + ties + 1
    ok = found & np.isfinite(ts) & (rank <= k)
    if per_query:
        return ok.astype(np.float64), np.where(ok, 1.0 / rank, 0.0)
    recall = float(ok.mean())
    mrr = float(np.where(ok, 1.0 / rank, 0.0).mean())
    return recall, mrr


# ---------------------------------------------------------------- the search and its rules


def objective_se(per_query: np.ndarray | None) -> float:
    """Standard error of the mean of per-query objectives (recall + reciprocal rank, each
    query in [0, 2]); 0 for None or fewer than two queries."""
    if per_query is None or len(per_query) < 2:
        return 0.0
    return float(np.std(np.asarray(per_query, np.float64), ddof=1) / np.sqrt(len(per_query)))


def paired_se(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Standard error of the mean per-query difference a - b (the same queries in the same
    order); 0 when either is missing or their lengths differ."""
    if a is None or b is None or len(a) != len(b):
        return 0.0
    return objective_se(np.asarray(a, np.float64) - np.asarray(b, np.float64))


def tie_set(cands: list[dict]) -> tuple[dict, list[dict]]:
    """The leader (highest `objective`, first on equal ones) and every candidate within one
    paired standard error of it (the leader included), by objective, highest first."""
    best = max(cands, key=lambda c: c["objective"])
    tied = [c for c in cands if c is best or best["objective"] - c["objective"]
            <= paired_se(best.get("per_query"), c.get("per_query"))]
    return best, sorted(tied, key=lambda c: -c["objective"])


def _cost_key(c: dict) -> tuple:
    # fewer tokens trained, then a corpus without walks (no graph, no walk stage), then the
    # higher objective
    return (int(c.get("tokens_trained", 0)), c.get("corpus") != "sessions", -c["objective"])


def choose_candidate(cands: list[dict], floor: float | None = None) -> dict:
    """The chosen candidate: inside the tie set on the blend objective (`tie_set`), the ones
    whose `vectors_objective` (when every tied candidate has one) is not below the best one's
    by more than their `vectors_se`; among those the cheapest (`tokens_trained`, then
    "sessions", which needs no walks, then the higher objective).

    When `floor` (the item-kNN baseline's validation objective, Recall@20 + MRR@20) is given
    and that choice's vectors fall below it, the exported vectors would lose to a baseline the
    run measured: the choice then widens to issue 24's rule, every candidate whose blend
    objective is within the blend's own standard error of the leader's (not the far narrower
    paired one), and takes one whose vectors beat the first choice's by more than their
    standard error, when there is one (the best vectors, then the cheapest within their
    standard error of them)."""
    _, tied = tie_set(cands)
    if len(tied) > 1 and all("vectors_objective" in c for c in tied):
        top = max(tied, key=lambda c: c["vectors_objective"])
        tied = [c for c in tied if top["vectors_objective"] - c["vectors_objective"]
                <= _vectors_noise(top, c)]
    chosen = min(tied, key=_cost_key)
    if not below_floor(chosen, floor):
        return chosen
    best = max(cands, key=lambda c: c["objective"])
    wide = [c for c in cands if "vectors_objective" in c
            and best["objective"] - c["objective"] <= _blend_noise(best, c)]
    if not wide:
        return chosen
    top = max(wide, key=lambda c: c["vectors_objective"])
    if top["vectors_objective"] - chosen["vectors_objective"] <= _vectors_noise(top, chosen):
        return chosen
    return min((c for c in wide if top["vectors_objective"] - c["vectors_objective"]
                <= _vectors_noise(top, c)), key=_cost_key)


def _vectors_noise(a: dict, b: dict) -> float:
    # the larger of two candidates' vectors-alone standard errors
    return max(float(a.get("vectors_se", 0.0)), float(b.get("vectors_se", 0.0)))


def _blend_noise(a: dict, b: dict) -> float:
    # the larger of two candidates' own standard errors of the blend objective (issue 24's
    # "within the blend's noise"; the tie set uses the far narrower paired one)
    return max(float(a.get("objective_se", 0.0)), float(b.get("objective_se", 0.0)))


def vectors_floor(baselines: dict[str, dict]) -> float | None:
    """The validation objective (Recall@20 + MRR@20) the exported vectors must reach: the
    item-kNN baseline's (issue 24: the vectors alone at least item-kNN), None when the run did
    not measure it (`calibrate` baselines without ``item_knn``)."""
    m = baselines.get("item_knn")
    return None if m is None else float(m["recall@20"]) + float(m["mrr@20"])


def final_tokens_planned(amount: int, corpus_tokens: int, log_share: float,
                         epochs: int = 1) -> int:
    """The final model's planned tokens (corpus tokens x epochs) for the training amount
    `amount` (tokens; 0 = the configured `epochs`): its corpus is about a candidate's
    `corpus_tokens` / `log_share` (the calibration-train share of the training window's
    events, in (0, 1]) and it trains `recembed.train.epochs_for` epochs of it."""
    from recembed.train import epochs_for

    full = max(round(corpus_tokens / max(log_share, 1e-9)), 1)
    return full * (epochs_for(full, amount) if amount > 0 else max(int(epochs), 1))


def _successive_halving(plan: CalibrationPlan, run_one, record: dict,
                        log_share: float, floor: float | None = None) -> list[dict]:
    """Every corpus at the smallest amount; then, amount by amount, the leader and the
    candidates tied with it (at most half, rounded up; the leader alone when its margin over
    every other exceeds the paired standard error) at the next amount ("svd" is trained once
    and left out of the ladder, whose leader and ties are the trained corpora's), while the
    larger amount paid beyond the noise (`climb_pays`) and the tokens stay within `cost_ratio` x the final
    model the current choice would train; while the current choice's vectors are below the
    vectors `floor` (`vectors_floor`), within `cost_ratio` x the larger of that model and the
    one the candidate would train."""
    amounts = sorted(set(plan.target_tokens))
    first = list(plan.corpora)
    # each corpus of the first rung starts training while the one before it is scored, and
    # "svd" (no skip-gram) is scored first, while the first skip-gram trains; the record and
    # the choice keep the plan's order
    order = sorted(range(len(first)), key=lambda i: first[i] != "svd")
    n0 = len(record["candidates"])
    done = {}
    for j, i in enumerate(order):
        done[i] = run_one(first[i], amounts[0],
                          then=first[order[j + 1]] if j + 1 < len(order) else None)
    cands = [done[i] for i in range(len(first))]
    ran = record["candidates"][n0:]  # recorded in the order they ran
    record["candidates"][n0:] = [ran[order.index(i)] for i in range(len(first))]
    rung = cands
    for amount in amounts[1:]:
        # "svd" has no amount to climb: the ladder is the trained corpora's,
        # as if it were not there (an svd leader stopped a histories log's skip-gram climb
        # short of the vectors the floor asks for: benchmarks/RESULTS.md, "item-kNN
        # factorized"); it competes in the choice
        trained = [c for c in rung if c["corpus"] != "svd"]
        if not trained:
            break
        _, tied = tie_set(trained)
        keep = tied[:max(1, -(-len(trained) // 2))]
        nxt = []
        for c in keep:
            if same_training(c, plan.candidate_tokens(amount)):
                # one pass of the corpus is already more than either amount: the candidate
                # would be c again (a 10M-event log trained 3.2M tokens for both 1M and 3M,
                # 153 s for an identical model; benchmarks/RESULTS.md, "nightly run end to end
                # (10,000,000 events), two nights")
                why = (f"{c['corpus']} at {amount:,} tokens (the same training as at "
                       f"{int(c['option_tokens']):,}: {c['epochs']} epoch(s) of its "
                       f"{int(c['corpus_tokens']):,}-token corpus)")
                record.setdefault("not_tried", []).append(why)
                log.info("calibrate: not tried: %s", why)
                continue
            lead = choose_candidate(cands + nxt, floor)
            spent = sum(int(x["tokens_trained"]) for x in record["candidates"])
            est = max(plan.candidate_tokens(amount), int(c["corpus_tokens"]))
            final = final_tokens_planned(lead["option_tokens"], lead["corpus_tokens"], log_share,
                                         lead["epochs"])
            below = below_floor(lead, floor)
            if below:
                # the vectors lose to item-kNN: a larger amount is budgeted against the model
                # it would train, or a sparse purchase log never tries the amounts whose
                # vectors reach item-kNN (benchmarks/RESULTS.md, "the training amount and the
                # exported vectors: synth purchases")
                final = max(final, final_tokens_planned(amount, int(c["corpus_tokens"]),
                                                        log_share))
            budget = plan.cost_ratio * final
            if spent + est > budget:
                # the budget at work, not a problem: recorded and logged, not a warning
                why = (f"{c['corpus']} at {amount:,} tokens (about {est:,} more tokens would "
                       f"pass {budget:,.0f}, {plan.cost_ratio:g} x the final model "
                       + ("it would train)" if below else "the current choice trains)"))
                record.setdefault("not_tried", []).append(why)
                log.info("calibrate: not tried: %s", why)
                continue
            nxt.append(run_one(c["corpus"], amount))
        cands += nxt
        if not nxt or not climb_pays(nxt, rung, floor):
            break  # more training did not pay beyond the noise: stop climbing
        rung = nxt
    return cands


def below_floor(cand: dict, floor: float | None) -> bool:
    """Whether `cand`'s vectors-alone objective is below the vectors `floor` (None: never)."""
    return floor is not None and "vectors_objective" in cand and \
        float(cand["vectors_objective"]) < floor


def climb_pays(nxt: list[dict], rung: list[dict], floor: float | None = None) -> bool:
    """Whether the candidates `nxt`, at a larger amount, beat their corpus's candidate in
    `rung` beyond the noise: the best blend objective by more than the paired standard error;
    or, while that corpus's vectors in `rung` are below the vectors `floor`, the best
    vectors-alone objective by more than its standard error (the larger of the two
    candidates') with that candidate's blend objective no more than its own standard error
    lower (the rule `choose_candidate` widens to below the floor)."""
    def before(x: dict) -> dict:
        return next(p for p in rung if p["corpus"] == x["corpus"])

    top = max(nxt, key=lambda x: x["objective"])
    prev = before(top)
    if top["objective"] - prev["objective"] > paired_se(top.get("per_query"),
                                                        prev.get("per_query")):
        return True
    low = [x for x in nxt if "vectors_objective" in x and below_floor(before(x), floor)]
    if not low:
        return False
    top = max(low, key=lambda x: x["vectors_objective"])
    prev = before(top)
    return (top["vectors_objective"] - prev["vectors_objective"] > _vectors_noise(top, prev)
            and prev["objective"] - top["objective"] <= _blend_noise(top, prev))


def same_training(cand: dict, tokens: int) -> bool:
    """Whether a candidate for the training amount `tokens` would train exactly what `cand`
    trained: "svd" always; a sessions corpus (it does not depend on the amount; walk corpora
    and LINE's samples do) with the same epochs by `recembed.train.epochs_for`. Checked only
    when the rule reproduces `cand`'s own epochs, so a record it cannot explain is never
    skipped."""
    from recembed.train import epochs_for

    if cand.get("corpus") == "svd":
        return True  # the factorization does not depend on the amount (recembed.factorize)
    if cand.get("corpus") != "sessions" or tokens <= 0 or cand.get("sgns"):
        return False
    own, corpus = int(cand.get("target_tokens") or 0), int(cand.get("corpus_tokens") or 0)
    if own <= 0 or corpus <= 0 or epochs_for(corpus, own) != cand.get("epochs"):
        return False
    return epochs_for(corpus, tokens) == cand["epochs"]


def sgns_cost(key: str, value: float) -> float:
    """Training cost rank of one skip-gram setting's value, for ties (lower = cheaper): a
    smaller window or dimension trains fewer pairs / weights, a larger `sample` drops more
    occurrences; every `ns_exponent` and learning rate `alpha` costs the same (0)."""
    if key in ("window", "vector_size"):
        return float(value)
    if key == "sample":
        return -float(value)
    return 0.0


def choose_sgns(cands: list[dict], default: dict, reference: list[dict] | None = None) -> dict:
    """The rule of the skip-gram search (`sgns_search`) over candidates that differ in one
    setting.

    Only candidates whose blend `objective` is within one standard error (`objective_se`,
    the larger of the two) of the best blend objective in `reference` are eligible; among them the vectors-alone objective (`vectors_objective`) decides: the
    eligible candidates within one `vectors_se` (the larger of the two) of the best one tie,
    and a tie goes to `default` (the current setting) when it is tied, else to the cheapest
    (`sgns_cost` under the candidate's ``sgns_cost``, 0 when absent), then the higher vectors
    objective.

    Parameters
    ----------
    cands : list of dict
        Candidate records (`evaluate_candidate`); `default` is one of them.
    default : dict
        The current setting's candidate (the start of this coordinate).
    reference : list of dict, optional
        The candidates whose best blend objective bounds the loss (every candidate of the
        search so far); default `cands`.

    Returns
    -------
    dict
        The chosen candidate (`default` when no other is eligible and better).
    """
    ref = max(reference or cands, key=lambda c: c["objective"])
    # the blend's own standard error (the larger of the two), not the paired one: settings
    # whose blend differs by a fraction of a query can have a paired SE far below it, and a
    # blend gain that small must not exclude the default whose vectors are better (measured
    # on synth music: window 1 taken at 4 SE worse vectors for +0.0025 blend)
    eligible = [c for c in cands
                if c is ref or ref["objective"] - c["objective"] <= _blend_noise(ref, c)]
    if not eligible:
        return default
    top = max(eligible, key=lambda c: c["vectors_objective"])
    tied = [c for c in eligible if top["vectors_objective"] - c["vectors_objective"]
            <= max(float(top.get("vectors_se", 0.0)), float(c.get("vectors_se", 0.0)))]
    if any(c is default for c in tied):
        return default
    return min(tied, key=lambda c: (float(c.get("sgns_cost", 0.0)), -c["vectors_objective"]))


def _sgns_row(c: dict, settings: dict) -> dict:
    """One tried setting as calibration.json's ``sgns.tried`` lists it."""
    return {"settings": dict(settings), "objective": c["objective"],
            "objective_se": c["objective_se"], "vectors_objective": c["vectors_objective"],
            "vectors_se": c["vectors_se"], "vectors_ann": c["vectors_ann"],
            "vectors_last": c["vectors_last"], "vectors_decay": c.get("vectors_decay"),
            "tokens_trained": int(c["tokens_trained"]), "postprocess": c["postprocess"]}


def sgns_search(plan: CalibrationPlan, base: dict, run_sgns, record: dict,
                budget: float, prefetch=None) -> tuple[dict, dict]:
    """Coordinate search over the skip-gram settings of the exported vectors (issue 24).

    After the corpus / amount search, from the plan's settings (`plan.train_params`), one
    setting at a time in `plan.sgns` order: every other value of `plan.sgns_values` (default
    `SGNS_VALUES`) is trained on the chosen corpus at the smallest amount (the `base`
    candidate's) and scored with the base candidate's blend (fixed: the blend objective says
    what the served blend loses), and `choose_sgns` keeps one (reference: every candidate of
    the search so far, so the losses of successive steps never add up past one standard error
    of the best blend objective); the next setting starts from it. A candidate that would take
    the tokens trained across all candidates past `budget` is not trained (recorded).

    Parameters
    ----------
    plan : CalibrationPlan
    base : dict
        The chosen corpus's candidate at the smallest amount (the plan's settings).
    run_sgns : callable
        ``run_sgns(settings) -> candidate``: trains and scores one candidate with the
        skip-gram settings `settings` (a dict of `plan.sgns` keys), recorded in
        ``record["candidates"]``.
    record : dict
        The calibration record (its ``candidates`` give the tokens spent so far).
    budget : float, tokens
        Tokens all candidates may train (``cost_ratio`` x the final model's).
    prefetch : callable, optional
        ``prefetch(settings)``: starts training the next value of the same setting while
        the current one trains and is scored (`calibrate_run`'s worker thread), when both
        fit the budget at the base candidate's tokens; what is chosen does not change.

    Returns
    -------
    (dict, dict)
        calibration.json's ``sgns`` (keys, default, chosen, changed, steps, tried with both
        objectives, standard errors and tokens, not_tried) and the chosen candidate.
    """
    values = plan.sgns_values or SGNS_VALUES
    current = {k: getattr(plan.train_params, k) for k in plan.sgns}
    start = dict(current)
    cur = base
    pool = [base]
    rows = [_sgns_row(base, current)]
    steps: list[dict] = []
    not_tried: list[str] = []
    est = int(base["tokens_trained"])
    for key in plan.sgns:
        cands = [cur]
        todo = [v for v in values.get(key, ()) if v != current[key]]
        for i, v in enumerate(todo):
            spent = sum(int(x["tokens_trained"]) for x in record["candidates"])
            if spent + est > budget:
                why = (f"{key} = {v} (about {est:,} more tokens would pass {budget:,.0f}, "
                       f"{plan.cost_ratio:g} x the final model's)")
                not_tried.append(why)
                log.info("calibrate: skip-gram search: not tried: %s", why)
                continue
            if prefetch is not None and i + 1 < len(todo) and spent + 2 * est <= budget:
                prefetch({**current, key: todo[i + 1]})
            settings = {**current, key: v}
            c = run_sgns(settings)
            c["sgns_cost"] = sgns_cost(key, v) - sgns_cost(key, current[key])
            c["sgns"] = settings
            rows.append(_sgns_row(c, settings))
            cands.append(c)
            pool.append(c)
        chosen = choose_sgns(cands, cur, reference=pool)
        if chosen is not cur:
            chosen_settings = dict(chosen["sgns"])
        else:
            chosen_settings = current
        steps.append({"setting": key, "from": current[key], "to": chosen_settings[key],
                      "values_tried": len(cands) - 1})
        cur, current = chosen, chosen_settings
    for row in rows:
        row["chosen"] = row["settings"] == current
    out = {"keys": list(plan.sgns), "default": start, "chosen": current,
           "changed": current != start, "decision": "searched",
           "base": {"corpus": base["corpus"], "option_tokens": base.get("option_tokens"),
                    "tokens_trained": int(base["tokens_trained"])},
           "steps": steps, "tried": rows, "not_tried": not_tried,
           "validation": {"objective": cur["objective"], "objective_se": cur["objective_se"],
                          "vectors_objective": cur["vectors_objective"],
                          "vectors_se": cur["vectors_se"],
                          "default_objective": base["objective"],
                          "default_vectors_objective": base["vectors_objective"]}}
    return out, cur


def _previous_sgns(plan: CalibrationPlan, previous: PreviousChoice | None) -> dict:
    """The skip-gram settings the previous version's calibration chose, restricted to the ones
    this plan searches (a re-validated choice trains with them); {} when none."""
    if previous is None:
        return {}
    chosen = (previous.record.get("sgns") or {}).get("chosen") or {}
    return {k: v for k, v in chosen.items() if k in plan.sgns}


def _sgns_stage(plan: CalibrationPlan, best: dict, cands: list[dict], run_one, record: dict,
                log_share: float, prefetch=None) -> None:
    """Run `sgns_search` after the corpus / amount choice `best` (when `plan.sgns` lists a
    setting and the corpus has a skip-gram) and record it: ``record["sgns"]``, and when the
    settings changed, the chosen candidate's post-processing (chosen on its vectors) as the
    run's. The blend stays `best`'s. `prefetch(corpus, amount, settings)` starts a
    candidate's training ahead (`sgns_search`)."""
    from recembed.line import split_corpus

    if not plan.sgns:
        return
    if split_corpus(best["corpus"])[0] is None:
        record["sgns"] = {"keys": list(plan.sgns), "decision": "off",
                          "reason": f"corpus {best['corpus']!r} trains no skip-gram"}
        return
    low = min(plan.target_tokens)
    base = next((c for c in cands if c["corpus"] == best["corpus"]
                 and c.get("option_tokens") == low and not c.get("sgns")), best)
    fixed = _fixed_blend({"blend": base["choice"].as_dict()})
    budget = plan.cost_ratio * final_tokens_planned(best["option_tokens"], best["corpus_tokens"],
                                                    log_share, best["epochs"])
    corpus, amount = base["corpus"], int(base["option_tokens"])
    rec, chosen = sgns_search(
        plan, base, lambda st: run_one(corpus, amount, fixed=fixed, sgns=st), record, budget,
        prefetch=None if prefetch is None else (lambda st: prefetch(corpus, amount, st)))
    record["sgns"] = rec
    if rec["changed"]:
        record["postprocess"] = chosen["postprocess"]
    log.info("calibrate: skip-gram search on %s: chose %s (default %s): vectors objective "
             "%.4f vs %.4f, blend objective %.4f vs %.4f", base["corpus"], rec["chosen"],
             rec["default"], chosen["vectors_objective"], base["vectors_objective"],
             chosen["objective"], base["objective"])


@dataclass
class PreviousChoice:
    """The previous published version's calibration, as `calibrate.reuse = "auto"` reads it.

    Parameters
    ----------
    version : str
        The version's name (the folder `LATEST` names).
    record : dict
        Its calibration.json.
    item_ids : set of str
        The item ids it serves (its items.parquet).
    """

    version: str
    record: dict
    item_ids: set


def _reuse_check(plan: CalibrationPlan, previous: PreviousChoice | None, data_end: float,
                 vs: ValidationSet, item_ids: np.ndarray | None) -> dict:
    """The cheap checks before re-validating the previous choice: "revalidate", or "full"
    with the reason."""
    out: dict = {"decision": "full", "policy": plan.reuse, "previous_version": None}
    if plan.reuse != "auto":
        return {**out, "reason": 'calibrate.reuse = "never"'}
    if previous is None:
        return {**out, "reason": "no previous published version with a calibration record"}
    prev = previous.record
    out["previous_version"] = previous.version
    if not prev.get("enabled") or not prev.get("corpus") or not prev.get("blend"):
        return {**out, "reason": f"version {previous.version} has no calibrated choice"}
    amount = int(prev.get("target_tokens") or 0)
    if prev["corpus"] not in plan.corpora or amount not in plan.target_tokens:
        return {**out, "reason": f"the previous choice ({prev['corpus']}, {amount:,} tokens) is "
                "outside what this config searches"}
    made = float(prev.get("calibrated_data_end", prev.get("data_end", float("-inf"))))
    age = (data_end - made) / 86_400.0
    out["age_days"] = round(age, 3) if np.isfinite(age) else None
    if not np.isfinite(age) or age > plan.max_age_days:
        return {**out, "reason": f"the full calibration behind it is {age:.1f} days older than "
                f"today's data, past calibrate.max_age_days = {plan.max_age_days:g}"}
    if item_ids is None:
        return {**out, "reason": "no vocabulary to compare items with"}
    q = vs.queries
    codes = np.unique(np.concatenate([q.items, q.target]))
    codes = codes[(codes >= 0) & (codes < len(item_ids))]
    ids = np.asarray(item_ids)[codes]
    unseen = float(np.mean([i not in previous.item_ids for i in ids])) if len(ids) else 0.0
    out["turnover"] = round(unseen, 6)
    if unseen > plan.max_turnover:
        return {**out, "reason": f"{unseen:.1%} of today's validation items are unseen by "
                f"version {previous.version}, past calibrate.max_turnover = "
                f"{plan.max_turnover:g}"}
    return {**out, "decision": "revalidate", "reason": "age and turnover within bounds"}


def _fixed_blend(prev: dict) -> dict:
    """Every blend setting of a calibration record, as `choose_blend`'s `fixed` (scoring
    only, no search)."""
    st = BlendSettings.from_dict(prev["blend"]["settings"])
    fixed = {k: getattr(st, k) for k in ("weights", "decay", "temperature", "candidates",
                                        "neighbours")}
    # the method's default sample when the record names none: scoring only, no sample search
    nb = st.neighbours
    fixed["neighbour_sample"] = (nb.get("sample_size") or (
        neighbour_sample_size(nb) if nb.get("method", "stan") != "off" else 0))
    return fixed


def _revalidated(prev: dict, kept: dict) -> dict:
    """Keep the previous choice unless its objective on today's validation fell below what the
    version that chose it recorded by more than the standard error of that difference: the
    two objectives' standard errors combined, sqrt(se_before^2 + se_today^2). Both are
    estimates, and the recorded one is the best of the candidates (biased upward by the
    choice), so one standard error of the old one alone refused a choice that still held: the
    10M nightly's night 2 fell 0.0128 against 0.0107 and recalibrated in full (benchmarks/
    RESULTS.md, "night 2 again, after the reuse rule changed")."""
    v = prev.get("validation") or {}
    before = float(v.get("objective", v.get("recall@20", 0.0) + v.get("mrr@20", 0.0)))
    se_before = float(v.get("objective_se", prev.get("blend", {}).get("objective_se", 0.0)))
    se_today = float(kept.get("objective_se", 0.0))
    se = float(np.hypot(se_before, se_today))
    out = {"previous_objective": before, "previous_se": se_before, "objective": kept["objective"],
           "objective_se": se_today, "difference_se": se}
    if kept["objective"] < before - se:
        return {**out, "decision": "full", "reason": f"its validation objective fell to "
                f"{kept['objective']:.4f} from {before:.4f}, more than the standard error of "
                f"the difference ({se:.4f})"}
    return {**out, "decision": "kept", "reason": f"validation objective {kept['objective']:.4f} "
            f"vs {before:.4f} recorded (within the standard error of the difference, {se:.4f})"}


def _candidate_json(cand: dict) -> dict:
    """A candidate's calibration.json entry (no BlendChoice, no per-query arrays)."""
    return {k: v for k, v in cand.items() if k not in ("choice", "per_query")}
