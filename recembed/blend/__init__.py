"""The next-item blend behind `Recommender.recommend`: candidates from several signals, one
weighted score. numpy and numba only (the serving process imports it; no pandas or scipy).

- `recembed.blend.settings`: `SIGNALS`, `BlendSettings` (a leaf module: the standard library
  only, so the configuration can name the signals without loading numba).
- `recembed.blend.model`: `BlendModel` (build, save / load of blend.npz, signals, recommend),
  `SignalBatch` (fixed queries' signals under many settings: calibration's blend search),
  `category_arrays`, `candidate_tables`, `sequential_rules`.
- `recembed.blend.scores`: `Signals`, `blended_scores`, `blend_top_k`.
- `recembed.blend.kernels`: the numba kernels; session-kNN's are `recembed.sknn_kernels`.

Importing this package loads the settings only; the other names load their module on first
use.

`BlendModel.recommend` runs as numba kernels over the whole batch (candidate unions and signal
values per query in parallel, laid end to end; session-kNN through
`recembed.sknn_kernels.score_sessions`; top-k);
the answers are those of the per-query numpy code it replaced (kept in tests/test_blend.py as
the reference). `BlendModel.signals` pads the same kernel's output per query for calibration.

Candidates (`BlendSettings.retrieval`): "index" searches the decayed prefix query in the
inner-product and cosine faiss indexes; "table" reads each recent item's precomputed top lists
(`candidate_tables`, stored in blend.npz), the searches a one-item session would run. The two
HNSW searches are a large share of a query's time; the tables answer with the same next-item
recall (benchmarks/RESULTS.md, "serving variants on one trained model (retrieval x
candidates)").

Signals, each computed for every candidate of a query (the union of what the signals retrieve):

- `directional`: `q_in . out[c]`, q_in = sum of `decay ** j` times the input vector of the item j
  steps back (whole recent prefix, DESIGN.md "quality levers"), out = skip-gram output vectors.
  Normalised per query as `exp((d - max d) / temperature)`: d estimates a log co-occurrence, so
  this is a co-occurrence ratio to the best candidate.
- `cosine`: cosine of the decayed unit query with the candidate, `exp((c - max c) / 0.1)`.
- `rules`: sequential rules from the last item (b follows a within a few steps, weight
  1/distance; Ludewig & Jannach 2018), divided by the query's best rule.
- `neighbours`: session-kNN (V-SKNN / STAN, `recembed.sknn`), divided by the query's best.
- `repeat`: items already in the session, `sum repeat_decay ** steps_back`, divided by its max.
- `popularity`: log(1 + training count) / log(1 + max count).
- `category` (runs with a catalog): the items of the last item's category, most recently listed
  first (the evaluation's `category` baseline, `recembed.evaluate.category_scorer`): a candidate
  of that category scores 1 / (1 + its rank in the category by listing recency, 0 = newest),
  others 0, divided by the query's best. The first `BlendSettings.popular` rows of the
  category's list join the candidates. Models without the category arrays (no catalog) score
  0 everywhere: the signal is off.

score = sum_s weight_s * signal_s. The weights (and decay, temperature, ...) are chosen per run
on a validation split (`recembed.calibrate`) and stored in serving.json; a weight of 0 switches a
signal off. Because every single-signal corner is in the search, the chosen blend is never worse
on validation than rules, neighbours, repeats, popularity or the category baseline alone.
"""

from __future__ import annotations

from recembed.blend.settings import (
    CATEGORY_KEYS,
    N_SIGNALS,
    RETRIEVALS,
    SIGNALS,
    BlendSettings,
)

_MODEL = ("BlendModel", "Csr", "Search", "SignalBatch", "candidate_tables", "category_arrays",
          "neighbour_params", "sequential_rules", "table_rows")
_SCORES = ("COSINE_TEMPERATURE", "Signals", "blend_top_k", "blended_scores", "normalise",
           "signal_weights")
_SKNN = ("Scratch", "score_sessions")

__all__ = ["CATEGORY_KEYS", "N_SIGNALS", "RETRIEVALS", "SIGNALS", "BlendSettings", *_MODEL,
           *_SCORES, *_SKNN]


def __getattr__(name: str):
    """The names of the numba-backed modules, imported on first use (PEP 562)."""
    if name in _MODEL:
        from recembed.blend import model as where
    elif name in _SCORES:
        from recembed.blend import scores as where
    elif name in _SKNN:
        from recembed import sknn_kernels as where
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(where, name)
    globals()[name] = value
    return value
