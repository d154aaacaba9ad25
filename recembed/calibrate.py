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
  least as good on validation as each signal alone (rules, neighbours, repeats, popularity).

The objective is Recall@20 + MRR@20 on validation (allow-repeats protocol).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np

from recembed.blend import SIGNALS, BlendModel, BlendSettings, Signals, blended_scores

log = logging.getLogger("recembed")

WEIGHT_GRID = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0)
DECAYS = (0.5, 0.65, 0.8)
TEMPERATURES = (0.5, 1.0, 2.0)


@dataclass
class BlendChoice:
    """The chosen settings, their validation metrics, and every corner's for the report."""

    settings: BlendSettings
    recall: float
    mrr: float
    corners: dict = field(default_factory=dict)
    evaluations: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"settings": self.settings.to_dict(), "recall@20": self.recall,
                "mrr@20": self.mrr, "signals_alone": self.corners,
                "evaluations": self.evaluations, "seconds": round(self.seconds, 3)}


def validation_queries(sessions: np.ndarray, items: np.ndarray, known: np.ndarray, *,
                       max_queries: int = 5000, seed: int = 0
                       ) -> tuple[list[np.ndarray], np.ndarray, dict]:
    """(prefixes, targets, counts): every (prefix, next item) of the validation sessions whose
    target `known[target]` is true and differs from the last prefix item; a seeded sample of at
    most `max_queries`. `sessions`/`items` are per-event arrays in session order."""
    if len(sessions) == 0:
        return [], np.zeros(0, np.int64), {"targets": 0, "queries": 0, "oov_targets": 0}
    first = np.r_[True, sessions[1:] != sessions[:-1]]
    sstart = np.maximum.accumulate(np.where(first, np.arange(len(sessions)), 0))
    t = np.flatnonzero(np.r_[~first[1:], False])
    target = items[t + 1]
    ok = known[target] & (target != items[t])
    stats = {"targets": len(t), "oov_targets": int((~known[target]).sum())}
    t = t[ok]
    if 0 < max_queries < len(t):
        t = np.sort(np.random.default_rng(seed).choice(t, max_queries, replace=False))
    prefixes = [items[sstart[i]: i + 1] for i in t]
    stats["queries"] = len(t)
    return prefixes, items[t + 1].astype(np.int64), stats


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
            cache[key] = model.signals(prefixes, replace(st, decay=decay,
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
    # corners: every signal alone (its baseline inside the blend)
    corners: dict = {}
    best, best_rm, best_opt = st, (-1.0, -1.0), 0
    names = [s for s in SIGNALS if not (s == "neighbours" and model.neighbours is None)
             and not (s == "rules" and model.rules is None)]
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
                if obj(rm) > obj(best_rm) + 1e-9:
                    best, best_rm, best_opt, improved = cand, rm, opt, True
        if not improved:
            break
    best = replace(best, neighbours=options[best_opt])
    return BlendChoice(best, best_rm[0], best_rm[1], corners, n_eval,
                       time.perf_counter() - t0)


def epochs_for(corpus_tokens: int, target_tokens: int, *, lo: int = 1, hi: int = 500) -> int:
    """Epochs so that corpus tokens x epochs is about `target_tokens` (DESIGN.md: a fixed epoch
    count is wrong for most logs; DIGINETICA's 9.8k-token corpus needed 100-200 epochs)."""
    if corpus_tokens <= 0:
        return lo
    return int(min(max(round(target_tokens / corpus_tokens), lo), hi))


# ---------------------------------------------------------------- helpers


def _recall_mrr(sig: Signals, st: BlendSettings, targets: np.ndarray, k: int
                ) -> tuple[float, float]:
    """Recall@k and MRR@k of the blend over precomputed signals (allow-repeats protocol)."""
    score = blended_scores(sig, st)
    score += sig.values[:, :, SIGNALS.index("popularity")] * 1e-6
    if st.exclude_last:
        score[(sig.rows == sig.last[:, None]) & (sig.last[:, None] >= 0)] = -np.inf
    score[sig.rows < 0] = -np.inf
    hit = sig.rows == targets[:, None]
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
