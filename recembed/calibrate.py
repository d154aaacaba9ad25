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

The objective is Recall@20 + MRR@20 on validation (allow-repeats protocol).

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

from recembed.blend import (
    SIGNALS,
    BlendModel,
    BlendSettings,
    Signals,
    blended_scores,
    category_arrays,
)

log = logging.getLogger("recembed")

WEIGHT_GRID = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0)
DECAYS = (0.5, 0.65, 0.8)
TEMPERATURES = (0.5, 1.0, 2.0)
CANDIDATES = (50, 100)  # serving.candidates tried below the default (200), fewest first
NEIGHBOUR_SAMPLES = (500, 1000)  # serving.neighbour_sample tried below the method's default
DEFAULT_TARGET_TOKENS = 3_000_000  # the training amount without calibration (DESIGN.md: 2-3M)


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
        Category per item code (-1 unknown; `recembed.stages.train.item_categories`); None =
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
                 time_budget_s: float = 60.0) -> BlendChoice:
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
    time_budget_s : float, seconds
        Stop searching (keeping the best so far) past this.
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
    t0 = time.perf_counter()  # the budget is for the search, not for the first signals
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
    for _round in range(3):
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
            if time.perf_counter() - t0 > time_budget_s:
                break
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
        # (199k items: 174 us per session at 200, 103 at 50, the same recall;
        # benchmarks/RESULTS.md, serving throughput)
        best, best_rm, sizes = fewest(best, best_rm, best.candidates, CANDIDATES,
                                      lambda st_, c: replace(st_, candidates=c))
    if (not sample_fixed and model.neighbours is not None
            and best.neighbours.get("method", "stan") != "off"
            and best.weights.get("neighbours", 0.0) > 0):
        # the fewest recent sessions session-kNN reads per query that lose nothing: the
        # sessions it merges are most of its time (STAN 83 us per query at 5,000, 52 at 1,000;
        # 199k items, benchmarks/RESULTS.md)
        best, best_rm, samples = fewest(
            best, best_rm, _neighbour_sample(best.neighbours), NEIGHBOUR_SAMPLES,
            lambda st_, n: replace(st_, neighbours={**st_.neighbours, "sample_size": n}))
    return BlendChoice(best, best_rm[0], best_rm[1], corners, n_eval,
                       time.perf_counter() - t0,
                       {str(c): {"recall@20": r, "mrr@20": m} for c, (r, m) in sizes.items()},
                       {str(c): {"recall@20": r, "mrr@20": m} for c, (r, m) in samples.items()})


def _neighbour_sample(neighbours: dict) -> int:
    """The sample_size a settings' neighbours dict means (its method's default if unset)."""
    from recembed.sknn import method_params

    nb = dict(neighbours)
    return int(method_params(nb.pop("method", "stan"), **nb).sample_size)


def calibrate_run(
    train: pd.DataFrame, table: pd.DataFrame, n_items: int, workdir: Path, *,
    half_life_days: float, corpora: list[str], target_tokens: list[int],
    graph_params: dict, walk_params: dict, train_params: dict, blend_fixed: dict,
    base_blend: BlendSettings, neighbour_options: list[dict], rule_steps: int = 10,
    baselines: tuple[str, ...] = ("pop", "session_pop", "sr", "item_knn", "vsknn", "stan"),
    max_queries: int = 5000, max_train_tokens: int = 3_000_000, time_budget_s: float = 300.0,
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
    half_life_days : float, days
        Decay of the session weights (reference: the newest calibration-train session).
    corpora : list of {"both", "sessions", "walks"}
        Corpus options to try, first = the default.
    target_tokens : list of int
        Training amounts (corpus tokens x epochs) to try, middle = the default; [0] = the
        configured epochs.
    graph_params, walk_params, train_params : dict
        Keyword arguments of `build_item_graph`, `random_walks`, `train_word2vec` (without
        seeds, threads and target_tokens).
    blend_fixed : dict
        Blend settings given explicitly in the config (never searched).
    base_blend : BlendSettings
        The blend's fixed parts (history, candidates, ...).
    neighbour_options : list of dict
        Session-kNN methods to try in the blend.
    max_queries : int
        Validation queries (a seeded sample).
    max_train_tokens : int
        The calibration models train on the most recent calibration-train sessions holding at
        most this many events (bounds calibration time on big logs).
    time_budget_s : float, seconds
        Candidates after this much time are skipped (the best so far is kept, and the record
        says what was skipped).
    catalog : CalibrationCatalog or None
        The run's item catalog: validation scores cold targets and the `category` signal is
        searched (module docstring). None = no catalog: warm targets only, no category signal.
    """
    from recembed.evaluate import evaluate_all, make_queries
    from recembed.sessions import session_weights

    t0 = time.perf_counter()
    split = table["split"].to_numpy()
    sid = train["session"].to_numpy()
    ssplit = pd.Series(split, index=table["session"].to_numpy())
    ev_split = ssplit.reindex(sid).to_numpy()
    ct = train[ev_split == 0]
    val = train[ev_split == 2]
    record: dict = {"enabled": True, "validation_sessions": int((split == 2).sum()),
                    "notes": [], "candidates": []}
    if not len(val) or not len(ct):
        record.update(enabled=False, reason="no validation split (too few training sessions)")
        return record
    # the most recent calibration-train sessions, at most max_train_tokens events
    ends = table.set_index("session")["end"]
    ct_sess = np.unique(ct["session"].to_numpy())
    if len(ct) > max_train_tokens:
        lens = ct.groupby("session").size().reindex(ct_sess).to_numpy()
        order = np.argsort(-ends.reindex(ct_sess).to_numpy(), kind="stable")
        keep = ct_sess[order[np.cumsum(lens[order]) <= max_train_tokens]]
        ct = ct[np.isin(ct["session"].to_numpy(), keep)]
        record["notes"].append(f"calibration models trained on the {len(keep):,} most recent "
                               f"sessions ({len(ct):,} events; calibrate.max_train_tokens)")
    ref = float(ends.reindex(np.unique(ct["session"].to_numpy())).max())
    weights = pd.Series(session_weights(ends.to_numpy(np.float64), ref, half_life_days),
                        index=ends.index)
    pop = np.bincount(ct["item"].to_numpy(), minlength=n_items).astype(np.float64)
    cold_kw: dict = {}
    listing = None
    n_eval_items = n_items
    if catalog is None:
        known = pop > 0
    else:
        # cold-start validation, as the holdout: targets listed in the catalog but unseen by
        # the calibration-train sessions are scored
        n_eval_items = catalog.n_total
        listed = catalog.listed_mask()
        known = (pop > 0) | listed[:n_items]
        listing = catalog.listing(ct)
        cold_kw = {"catalog": listed, "listed": listing,
                   "categories": catalog.categories if catalog.categories is not None
                   else np.full(n_eval_items, -1, np.int32)}
        if catalog.categories is not None and "category" not in baselines:
            baselines = (*baselines, "category")
    q, qstats = make_queries(val, known, max_queries=max_queries, seed=seed)
    if catalog is not None:
        qstats["cold_queries"] = int((pop[q.target] == 0).sum())
        qstats["cold_share"] = float((pop[q.target] == 0).mean()) if len(q) else 0.0
    record["validation_queries"] = qstats
    base = evaluate_all(ct, val, n_eval_items, ks=[20], baselines=list(baselines),
                        max_queries=max_queries, seed=seed, train_ts=ct["ts"].to_numpy(),
                        **cold_kw)
    record["baselines"] = {n: {"recall@20": m["allow_repeats"]["recall@20"],
                               "mrr@20": m["allow_repeats"]["mrr@20"]}
                           for n, m in base["methods"].items()}
    workdir.mkdir(parents=True, exist_ok=True)
    plan = [(c, target_tokens[len(target_tokens) // 2]) for c in corpora]
    best: dict | None = None
    try:
        i = 0
        while i < len(plan):
            corpus, tokens = plan[i]
            i += 1
            if best is not None and time.perf_counter() - t0 > time_budget_s:
                record["notes"].append(f"time budget calibrate.time_budget_s={time_budget_s:g} "
                                       f"reached: skipped {plan[i - 1:]}")
                break
            cand = train_candidate(ct, weights, n_items, q, workdir, corpus=corpus, tokens=tokens,
                              graph_params=graph_params, walk_params=walk_params,
                              train_params=train_params, blend_fixed=blend_fixed,
                              base_blend=base_blend, neighbour_options=neighbour_options,
                              rule_steps=rule_steps, seed=seed, threads=threads,
                              budget=max(time_budget_s / 10, 5.0), catalog=catalog,
                              listing=listing)
            record["candidates"].append({k: v for k, v in cand.items() if k != "choice"})
            log.info("calibrate: %s, %s tokens: validation recall@20 %.4f mrr@20 %.4f (%.1f s)",
                     corpus, f"{tokens:,}", cand["recall@20"], cand["mrr@20"], cand["seconds"])
            if best is None or cand["objective"] > best["objective"]:
                best = cand
            if i == len(corpora):  # corpus chosen: now the training amount
                plan += [(best["corpus"], t) for t in target_tokens if t != tokens]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert best is not None
    choice: BlendChoice = best["choice"]
    record.update(corpus=best["corpus"], target_tokens=best["target_tokens"],
                  blend=choice.as_dict(), seconds=round(time.perf_counter() - t0, 3))
    record["validation"] = {"recall@20": choice.recall, "mrr@20": choice.mrr}
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


def calibration_search(cfg) -> dict:
    """What a run searches: only keys left at "auto" ({"any": bool, "kw": calibrate_run's
    keyword arguments})."""
    w, sq, t, sv = cfg.walks, cfg.sequences, cfg.train, cfg.serving
    if w.enabled == "auto" and sq.enabled == "auto":
        corpora = list(cfg.calibrate.corpora)
    else:
        corpora = [_corpus_of(_on(w.enabled), _on(sq.enabled))]
    amounts = sorted(cfg.calibrate.target_tokens)
    if t.epochs != "auto":
        tokens: list[int] = [0]  # the configured epochs
    elif t.target_tokens != "auto":
        tokens = [int(t.target_tokens)]
    else:
        tokens = amounts
    fixed = {k: getattr(sv, k) for k in ("weights", "decay", "temperature", "candidates",
                                          "neighbour_sample") if getattr(sv, k) != "auto"}
    if sv.neighbours != "auto":
        fixed["neighbours"] = _neighbours_setting(sv.neighbours, sv.neighbour_sample)
    options = [{"method": "stan"}, {"method": "vsknn"}]
    if sv.neighbour_sample != "auto":
        options = [_neighbours_setting(o["method"], sv.neighbour_sample) for o in options]
    search_any = len(corpora) > 1 or len(tokens) > 1 or len(fixed) < 6
    tp = {"vector_size": t.vector_size, "window": t.window, "shrink_windows": t.shrink_windows,
          "negative": t.negative, "ns_exponent": t.ns_exponent, "sample": t.sample,
          "alpha": t.alpha, "min_alpha": t.min_alpha, "min_count": t.min_count, "hs": t.hs,
          "workers": t.workers or cfg.run.n_threads(), "max_tokens": t.max_tokens,
          "epochs": 1 if t.epochs == "auto" else t.epochs}
    gp = {"window": cfg.graph.window, "distance_weighting": cfg.graph.distance_weighting,
          "directed": cfg.graph.directed, "min_weight": cfg.graph.min_weight,
          "max_out_edges": cfg.graph.max_out_edges}
    wp = {"method": w.method, "walks_per_node": w.walks_per_node, "walk_length": w.walk_length,
          "p": w.p, "q": w.q, "max_tokens": w.max_tokens}
    kw = {"half_life_days": cfg.session.half_life_days, "corpora": corpora,
          "target_tokens": tokens, "graph_params": gp, "walk_params": wp, "train_params": tp,
          "blend_fixed": fixed, "base_blend": blend_settings(cfg),
          "neighbour_options": options, "rule_steps": sv.rule_steps,
          "max_queries": cfg.calibrate.max_queries,
          "max_train_tokens": cfg.calibrate.max_train_tokens,
          "time_budget_s": cfg.calibrate.time_budget_s}
    return {"any": search_any, "kw": kw}


def resolve_config(cfg, record: dict | None):
    """A copy of `cfg` with every "auto" key set: to the calibrated choice in `record`, or to
    the documented fallback (both corpora, 3M training tokens, the default blend)."""
    out = cfg.model_copy(deep=True)
    rec = record if record and record.get("enabled") else {}
    corpus = rec.get("corpus", "both")
    if out.walks.enabled == "auto" and out.sequences.enabled == "auto":
        out.walks.enabled = corpus in ("both", "walks")
        out.sequences.enabled = corpus in ("both", "sessions")
    if out.walks.enabled == "auto":
        out.walks.enabled = True
    if out.sequences.enabled == "auto":
        out.sequences.enabled = True
    if out.train.target_tokens == "auto":
        out.train.target_tokens = int(rec.get("target_tokens") or DEFAULT_TARGET_TOKENS)
    chosen = (rec.get("blend") or {}).get("settings") or {}
    default = BlendSettings()
    for key in ("weights", "decay", "temperature", "candidates"):
        if getattr(out.serving, key) == "auto":
            setattr(out.serving, key, chosen.get(key, getattr(default, key)))
    nb = chosen.get("neighbours") or default.neighbours
    if out.serving.neighbours == "auto":
        out.serving.neighbours = nb["method"]
    if out.serving.neighbour_sample == "auto" and "sample_size" in nb:
        out.serving.neighbour_sample = int(nb["sample_size"])
    return out


def _neighbours_setting(method: str, sample) -> dict:
    """BlendSettings.neighbours of a method and a `serving.neighbour_sample` ("auto" = the
    method's default)."""
    return {"method": method} if sample == "auto" else {"method": method,
                                                         "sample_size": int(sample)}


def blend_settings(cfg) -> BlendSettings:
    """The serving blend of a resolved config ("auto" keys take the defaults)."""
    sv, d = cfg.serving, BlendSettings()

    def pick(key):
        v = getattr(sv, key)
        return getattr(d, key) if v == "auto" else v

    nb = _neighbours_setting(d.neighbours["method"] if sv.neighbours == "auto"
                             else sv.neighbours, sv.neighbour_sample)
    return BlendSettings(weights=dict(pick("weights")), decay=float(pick("decay")),
                         temperature=float(pick("temperature")), history=sv.history,
                         repeat_decay=sv.repeat_decay, candidates=int(pick("candidates")),
                         popular=sv.popular, neighbours=dict(nb),
                         retrieval="index" if sv.retrieval == "auto" else sv.retrieval)


def resolve_retrieval(setting: str, n_items: int, candidates: int, max_mb: float
                      ) -> tuple[str, str]:
    """("index" | "table", why) for `serving.retrieval`: "auto" takes the per-item candidate
    tables when both fit in `max_mb` (n_items x (candidates + candidates // 4) x 4 bytes):
    they replace the two ANN searches per query (190 of 370 us per session at 199k items,
    HNSW32) at the same recall (benchmarks/RESULTS.md, serving throughput)."""
    width = min(candidates, n_items)
    mb = n_items * (width + max(width // 4, 1)) * 4 / 2**20
    if setting != "auto":
        return setting, f"set in serving.retrieval ({mb:,.0f} MB of tables)" \
            if setting == "table" else "set in serving.retrieval"
    if mb <= max_mb:
        return "table", f"auto: the candidate tables take {mb:,.0f} MB <= serving.table_max_mb"
    return "index", (f"auto: the candidate tables would take {mb:,.0f} MB > "
                     f"serving.table_max_mb = {max_mb:,.0f}: searching the indexes per query")


def train_candidate(ct: pd.DataFrame, weights: pd.Series, n_items: int, q, workdir: Path, *,
               corpus: str, tokens: int, graph_params: dict, walk_params: dict,
               train_params: dict, blend_fixed: dict, base_blend: BlendSettings,
               neighbour_options: list[dict], rule_steps: int, seed: int, threads: int,
               budget: float, catalog: CalibrationCatalog | None = None,
               listing: np.ndarray | None = None) -> dict:
    """Train one calibration model on `ct` and choose its blend on the queries `q`: the
    candidate's record (corpus, target_tokens, epochs, corpus_tokens, recall@20, mrr@20,
    objective, seconds, and `choice`, the BlendChoice). `recembed.tune` trains its trials
    with it. With `catalog` (and `listing`, its `CalibrationCatalog.listing` key per code) the
    model also holds the catalog items unseen by `ct` and the `category` signal's arrays."""
    from recembed.graph import build_item_graph
    from recembed.sequences import write_session_corpus
    from recembed.train import concat_corpora, train_word2vec
    from recembed.walks import random_walks

    t0 = time.perf_counter()
    files = []
    w = weights.reindex(np.arange(int(weights.index.max()) + 1)).fillna(0).to_numpy()
    if corpus in ("both", "sessions"):
        write_session_corpus(ct, w, workdir / "sessions.txt", seed=seed)
        files.append(workdir / "sessions.txt")
    if corpus in ("both", "walks"):
        g = build_item_graph(ct, w, n_items, **graph_params)
        wp = dict(walk_params)
        if tokens > 0:
            # one epoch of the walk corpus must not dwarf the training amount being compared
            # (10M-event nightly: 23M walk tokens made every candidate train 23M tokens)
            wp["max_tokens"] = min(wp.get("max_tokens") or tokens, max(tokens // 2, 1000))
        random_walks(g, workdir / "walks.txt", seed=seed, threads=threads, **wp)
        files.append(workdir / "walks.txt")
    path = concat_corpora(files, workdir / "corpus.txt")
    res = train_word2vec(path, seed=seed, target_tokens=tokens, progress=False, **train_params)
    codes, vectors, context, category = res.codes, res.vectors, res.context, None
    n_model = n_items
    if catalog is not None:
        codes, vectors, context, category = calibration_rows(catalog, res, ct, listing)
        n_model = catalog.n_total
    model, row_of = serving_model(ct, n_model, codes, vectors, context,
                                  rule_steps=rule_steps, category=category)
    prefixes = [row_of[q.items[s: s + n]] for s, n in zip(q.start, q.length, strict=True)]
    choice = choose_blend(model, prefixes, row_of[q.target], base=base_blend, fixed=blend_fixed,
                          neighbour_options=neighbour_options, time_budget_s=budget)
    return {"corpus": corpus, "target_tokens": tokens, "epochs": res.stats["epochs"],
            "corpus_tokens": res.stats["corpus_tokens"], "recall@20": choice.recall,
            "mrr@20": choice.mrr, "objective": choice.recall + choice.mrr,
            "seconds": round(time.perf_counter() - t0, 3), "choice": choice}


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


def serving_model(train: pd.DataFrame, n_items: int, codes: np.ndarray, vectors: np.ndarray,
                  context: np.ndarray | None, *, rule_steps: int = 10, search=None,
                  category: dict | None = None) -> tuple[BlendModel, np.ndarray]:
    """The blend model of trained vectors (rows = `codes`, ingest codes ascending) and the
    training sessions: rules and session-kNN index in vector-row space; (model, row_of) with
    row_of[ingest code] = vector row or -1. `category`: the rows' `category_arrays` (the
    `category` signal), None = none."""
    from recembed.blend import sequential_rules
    from recembed.sknn import SessionIndex, session_end_times

    row_of = np.full(n_items, -1, np.int64)
    row_of[codes] = np.arange(len(codes))
    rows = row_of[train["item"].to_numpy()]
    sess = train["session"].to_numpy()
    rules = sequential_rules(rows, sess, len(codes), steps=rule_steps)
    ok = rows >= 0
    ends = session_end_times(sess[ok], train["ts"].to_numpy()[ok])
    nbi = SessionIndex.build(sess[ok], rows[ok], ends, len(codes))
    pop = np.bincount(train["item"].to_numpy(), minlength=n_items)[codes]
    return BlendModel(vectors, context, rules=rules, neighbours=nbi, popularity=pop,
                      search=search, **(category or {})), row_of


# ---------------------------------------------------------------- helpers


def _chunked_signals(model: BlendModel, prefixes: list[np.ndarray], st: BlendSettings,
                     chunk: int = 256) -> Signals:
    """`model.signals` in blocks of queries, padded to one width: the exact candidate searches
    score every item per query, and 5000 queries x 200k items at once took 14.5 GB (measured,
    10M-event nightly)."""
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


def _on(v) -> bool:
    return v is True or v == "auto"


def _corpus_of(walks: bool, sessions: bool) -> str:
    return "both" if walks and sessions else ("walks" if walks else "sessions")
