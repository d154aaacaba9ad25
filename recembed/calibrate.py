"""Self-calibration on a validation split carved from the end of the training window.

A run trains a few candidate models on the training sessions *before* the validation split
(`split` = 0), scores every candidate's serving blend on the validation sessions (`split` = 2)
and keeps the best; the final model is then trained on the whole window with the chosen
settings. Nothing here ever sees the holdout.

What is chosen (explicit config values always win; only keys left at "auto" are searched):

- the corpus: sessions only / walks only / both, and the training amount (corpus tokens x
  epochs; DESIGN.md: winners saw about 2-3M tokens whatever the corpus size);
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

The objective is Recall@20 + MRR@20 on validation (allow-repeats protocol); every candidate
also records the vectors-alone objective (the ANN path's Recall@20 + MRR@20 and its standard
error), which the candidate choice does not use.

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
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from recembed.blend import SIGNALS, BlendModel, BlendSettings, Signals, blended_scores
from recembed.candidates import CalibrationCatalog, train_model
from recembed.graph import GraphParams
from recembed.line import LineParams
from recembed.progress import progress_bar
from recembed.train import TrainParams
from recembed.walks import WalkParams

log = logging.getLogger("recembed")

WEIGHT_GRID = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0)
DECAYS = (0.5, 0.65, 0.8)
TEMPERATURES = (0.5, 1.0, 2.0)
CANDIDATES = (50, 100)  # serving.candidates tried below the default (200), fewest first
NEIGHBOUR_SAMPLES = (500, 1000)  # serving.neighbour_sample tried below the method's default


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

    def planned(self) -> int:
        """Candidates `calibrate_run` trains: every corpus at the middle training amount, then
        the other amounts for the best corpus."""
        return len(self.corpora) + len(self.target_tokens) - 1


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
                       train_params: TrainParams | None = None, callbacks: tuple = ()) -> dict:
    """Train one candidate (`recembed.candidates.train_model`), choose the post-processing of
    its vector space on the vectors-alone objective, and choose its blend on the transformed
    model, on the validation queries `q`.

    The candidate's record: corpus, target_tokens, epochs, corpus_tokens, recall@20, mrr@20,
    objective (the blend's, Recall@20 + MRR@20), the vectors-alone paths of the chosen
    transform (`vector_paths`: ``vectors_ann`` and ``vectors_last``, each recall@20 and mrr@20),
    ``vectors_objective`` (the ANN path's Recall@20 + MRR@20: what an exported vector database
    answers) and ``vectors_se`` (its standard error over the queries), ``postprocess`` (the
    chosen transform: the simplest of `plan.postprocess` within one standard error of the best
    ANN objective, `recembed.postprocess.choose`), ``postprocess_tried`` (every tried
    transform's paths), seconds, and `choice`, the BlendChoice. The transforms are fitted on
    the rows the candidate trained (training count > 0), as the train stage fits the final one.
    `walk_params` / `train_params` replace the plan's (`recembed.tune`'s trials)."""
    from recembed.postprocess import VectorTransform
    from recembed.postprocess import choose as choose_transform

    t0 = time.perf_counter()
    cm = train_model(ct, weights, n_items, workdir, corpus=corpus, tokens=tokens,
                     graph_params=plan.graph_params,
                     walk_params=plan.walk_params if walk_params is None else walk_params,
                     train_params=plan.train_params if train_params is None else train_params,
                     rule_steps=plan.rule_steps, seed=seed, threads=threads, catalog=catalog,
                     listing=listing, callbacks=callbacks, line_params=plan.line_params)
    trained = cm.model.popularity > 0
    fit_on = cm.model.vectors[trained] if trained.any() else cm.model.vectors
    kw = {"decay": plan.base_blend.decay, "history": plan.base_blend.history}
    tried: dict[str, dict] = {}
    for spec in _options_for(plan.postprocess, fit_on.shape[1]):
        tf = VectorTransform.fit(spec, fit_on)
        tried[spec] = vector_paths(transformed_model(cm.model, tf), cm.row_of, q, **kw)
    chosen = choose_transform({s: r["ann"] for s, r in tried.items()})
    model = transformed_model(cm.model, VectorTransform.fit(chosen, fit_on))
    prefixes = [cm.row_of[q.items[s: s + n]] for s, n in zip(q.start, q.length, strict=True)]
    choice = choose_blend(model, prefixes, cm.row_of[q.target], base=plan.base_blend,
                          fixed=plan.blend_fixed, neighbour_options=plan.neighbour_options)
    best = tried[chosen]
    return {"corpus": corpus, "target_tokens": tokens, "epochs": cm.epochs,
            "corpus_tokens": cm.corpus_tokens, "recall@20": choice.recall,
            "mrr@20": choice.mrr, "objective": choice.recall + choice.mrr,
            "vectors_ann": _rm(best["ann"]), "vectors_last": _rm(best["last"]),
            "vectors_objective": best["ann"]["objective"], "vectors_se": best["ann"]["se"],
            "postprocess": chosen, "postprocess_tried": tried,
            "seconds": round(time.perf_counter() - t0, 3), "choice": choice}


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


def vector_paths(model: BlendModel, row_of: np.ndarray, q, *, decay: float, history: int,
                 k: int = 20) -> dict[str, dict]:
    """The vectors alone on the validation queries `q` (ingest codes), scored by
    `recembed.evaluate.embedding_scorer` as the holdout's `:ann` and `:last` rows are, with
    the evaluation's ranking (`top_k_lists`, allow-repeats: the last item is never
    recommended, items without a vector neither).

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

    Returns
    -------
    dict
        ``ann`` (the decayed prefix sum of item vectors . context vectors: what an
        inner-product index over the exported context vectors answers; item vectors when the
        model has none) and ``last`` (cosine with the last item: `similar`), each with
        ``recall@20``, ``mrr@20``, ``objective`` (their sum) and ``se`` (the standard error
        of the per-query hit + reciprocal rank, whose mean is the objective).
    """
    from recembed.evaluate import embedding_scorer, per_query_objective, top_k_lists

    n = len(row_of)
    codes = np.flatnonzero(row_of >= 0)
    rows_item = np.empty(len(model.vectors), np.int64)
    rows_item[row_of[codes]] = codes
    pop = np.zeros(n)
    pop[rows_item] = model.popularity
    ctx = model.context if model.context is not None else model.vectors
    out: dict[str, dict] = {}
    for name in ("ann", "last"):
        sc = embedding_scorer(model.vectors, rows_item, n, pop, strategy=name, context=ctx,
                              decay=decay, history=history)
        hit, rr = per_query_objective(top_k_lists(sc, q, n, k=k)["allow_repeats"],
                                      q.target, k)
        per = hit + rr
        out[name] = {"recall@20": float(hit.mean()) if len(per) else 0.0,
                     "mrr@20": float(rr.mean()) if len(per) else 0.0,
                     "objective": float(per.mean()) if len(per) else 0.0,
                     "se": float(per.std(ddof=1) / np.sqrt(len(per))) if len(per) > 1 else 0.0}
    return out


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

    def as_dict(self) -> dict:
        return {"settings": self.settings.to_dict(), "recall@20": self.recall,
                "mrr@20": self.mrr, "signals_alone": self.corners,
                "candidate_sizes": self.candidate_sizes,
                "neighbour_samples": self.neighbour_samples,
                "evaluations": self.evaluations, "seconds": round(self.seconds, 3)}


def choose_blend(model: BlendModel, prefixes: list[np.ndarray], targets: np.ndarray, *,
                 base: BlendSettings | None = None, fixed: dict | None = None, k: int = 20,
                 neighbour_options: list[dict] | None = None,
                 max_rounds: int = 3) -> BlendChoice:
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
    # signals per (decay, neighbour option); the union of candidates is the same per option
    cache: dict[tuple[float, int], Signals] = {}

    def signals(decay: float, opt: int) -> Signals:
        key = (decay, opt)
        if key not in cache:
            cache[key] = _chunked_signals(model, prefixes, replace(st, decay=decay,
                                                                   neighbours=options[opt]))
        return cache[key]

    n_eval = 0

    def score(s: BlendSettings, opt: int) -> tuple[float, float]:
        nonlocal n_eval
        n_eval += 1
        return _recall_mrr(signals(s.decay, opt), s, targets, k)

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
            tried[x] = _recall_mrr(_chunked_signals(model, prefixes, cand), cand, targets, k)
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
    return BlendChoice(best, best_rm[0], best_rm[1], corners, n_eval,
                       time.perf_counter() - t0,
                       {str(c): {"recall@20": r, "mrr@20": m} for c, (r, m) in sizes.items()},
                       {str(c): {"recall@20": r, "mrr@20": m} for c, (r, m) in samples.items()})


def neighbour_sample_size(neighbours: dict) -> int:
    """The sample_size a settings' neighbours dict means (its method's default if unset)."""
    from recembed.sknn import method_params

    nb = dict(neighbours)
    return int(method_params(nb.pop("method", "stan"), **nb).sample_size)


def calibrate_run(
    train: pd.DataFrame, table: pd.DataFrame, n_items: int, workdir: Path, plan: CalibrationPlan,
    *, baselines: tuple[str, ...] = ("pop", "session_pop", "sr", "item_knn", "vsknn", "stan"),
    seed: int = 0, threads: int = 1, catalog: CalibrationCatalog | None = None,
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
    """
    from recembed.evaluate import evaluate_all

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
    base = evaluate_all(ct, val, vs.n_items, ks=[20], baselines=list(baselines),
                        max_queries=plan.max_queries, seed=seed, train_ts=ct["ts"].to_numpy(),
                        **vs.cold_kw)
    record["baselines"] = {n: {"recall@20": m["allow_repeats"]["recall@20"],
                               "mrr@20": m["allow_repeats"]["mrr@20"]}
                           for n, m in base["methods"].items()}
    workdir.mkdir(parents=True, exist_ok=True)
    tokens_plan = plan.target_tokens
    todo = [(c, tokens_plan[len(tokens_plan) // 2]) for c in plan.corpora]
    best: dict | None = None
    bar = progress_bar(plan.planned(), plan.progress, unit="candidate", desc="calibrate")
    try:
        i = 0
        while i < len(todo):
            corpus, tokens = todo[i]
            i += 1
            cand = evaluate_candidate(ct, weights, n_items, q, workdir, plan, corpus=corpus,
                                      tokens=tokens, seed=seed, threads=threads,
                                      catalog=catalog, listing=vs.listing)
            record["candidates"].append({k: v for k, v in cand.items() if k != "choice"})
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{corpus}, {tokens or cand['epochs']:,} "
                                    f"{'tokens' if tokens else 'epochs'}: "
                                    f"{cand['objective']:.4f}")
            amount = (f"{tokens:,} tokens" if tokens else f"{cand['epochs']} epochs (train.epochs)")
            log.info("calibrate: candidate %d of %d: %s, %s (%s tokens trained): validation "
                     "recall@20 %.4f mrr@20 %.4f (%.1f s)", i, plan.planned(), corpus, amount,
                     f"{cand['corpus_tokens'] * cand['epochs']:,}", cand["recall@20"],
                     cand["mrr@20"], cand["seconds"])
            elapsed = time.perf_counter() - t0
            if plan.max_seconds and elapsed > plan.max_seconds and i < len(todo):
                raise CalibrationTimeout(
                    f"calibration ran {elapsed:,.0f} s, past calibrate.max_seconds = "
                    f"{plan.max_seconds:g}, after {i} of {plan.planned()} candidates; nothing "
                    "was chosen (time never changes the choice). Raise calibrate.max_seconds "
                    "(0 = no limit), or make calibration cheaper: calibrate.max_train_tokens, "
                    "fewer calibrate.corpora / calibrate.target_tokens")
            if best is None or cand["objective"] > best["objective"]:
                best = cand
            if i == len(plan.corpora):  # corpus chosen: now the training amount
                todo += [(best["corpus"], t) for t in tokens_plan if t != tokens]
    finally:
        if bar is not None:
            bar.close()
        shutil.rmtree(workdir, ignore_errors=True)
    assert best is not None
    choice: BlendChoice = best["choice"]
    record.update(corpus=best["corpus"], target_tokens=best["target_tokens"],
                  postprocess=best["postprocess"], blend=choice.as_dict(),
                  seconds=round(time.perf_counter() - t0, 3))
    record["validation"] = {"recall@20": choice.recall, "mrr@20": choice.mrr,
                            "vectors_ann": best["vectors_ann"],
                            "vectors_last": best["vectors_last"],
                            "vectors_objective": best["vectors_objective"],
                            "vectors_se": best["vectors_se"]}
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


def _chunked_signals(model: BlendModel, prefixes: list[np.ndarray], st: BlendSettings,
                     chunk: int = 256) -> Signals:
    """`model.signals` in blocks of queries, padded to one width: the exact candidate searches
    score every item per query, so all validation queries at once do not fit in memory on a big
    catalogue (benchmarks/RESULTS.md, "nightly run end to end")."""
    parts = [model.signals(prefixes[i:i + chunk], st) for i in range(0, len(prefixes), chunk)]
    width = max(p.rows.shape[1] for p in parts)

    def pad(x: np.ndarray, value) -> np.ndarray:
        extra = [(0, 0), (0, width - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
        return np.pad(x, extra, constant_values=value)

    return Signals(np.concatenate([pad(p.rows, -1) for p in parts]),
                   np.concatenate([pad(p.values, 0) for p in parts]),
                   np.concatenate([pad(p.in_session, False) for p in parts]),
                   np.concatenate([p.last for p in parts]))



def _recall_mrr(sig: Signals, st: BlendSettings, targets: np.ndarray, k: int
                ) -> tuple[float, float]:
    """Recall@k and MRR@k of the blend over precomputed signals (allow-repeats protocol)."""
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
    recall = float(ok.mean())
    mrr = float(np.where(ok, 1.0 / rank, 0.0).mean())
    return recall, mrr
