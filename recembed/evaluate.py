"""Offline evaluation: the next-item protocol on the temporal holdout, full ranking, baselines.

For each holdout session and each position t, the prefix up to t is the query and item t+1 the
target. Every method scores every catalogue item (no sampled negatives), the prefix's last item
is never recommended (repeats are collapsed, so it is never the target), and, in the
`exclude_prefix` variant, no earlier prefix item either. Targets never seen in training are
counted (`oov_share`) and left out of the metrics, for every method alike, unless the run has an
item catalog: then targets unseen in training but listed in the catalog are scored (cold start,
`cold_targets`), every listed item is a candidate, and each method's metrics add
`recall@K_warm` / `recall@K_cold` (targets seen / unseen in training) beside the overall ones.
A method that has nothing for a cold item simply never hits it.

A method is a *scorer*: `scorer(queries, idx) -> float32 [len(idx), n_items]`, higher is better,
-inf for items it must not recommend; the dense scorers return a buffer they overwrite on the
next call (`recembed.topk.ScoreBuffer`), which the caller may change in place. Scorers add
`1e-6 * popularity` so ties fall to popular items (the usual popularity fill); `top_k` then
breaks exact ties by lower item code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recembed.graph import build_item_graph
from recembed.sknn import METHODS, SessionIndex, method_params, session_end_times
from recembed.sknn_kernels import dense_scorer
from recembed.topk import ScoreBuffer, heap_top_k, without_listed

Scorer = Callable[["Queries", np.ndarray], np.ndarray]
Recommend = Callable[["Queries", np.ndarray, int, bool], np.ndarray]
TIE = 1e-6
# the longest query prefix (distinct items) for which both variants share one top-k pass of
# k + that many columns (`top_k_lists`); longer ones take a second pass (a long-history log's
# heap of thousands would cost more than the second scan it saves)
MAX_SHARED_EXTRA = 200


@dataclass
class Queries:
    """(prefix, target) pairs over a flat array of holdout items: query i's prefix is
    `items[start[i] : start[i] + length[i]]`, its target `target[i]`."""

    items: np.ndarray
    start: np.ndarray
    length: np.ndarray
    target: np.ndarray

    def __len__(self) -> int:
        return len(self.target)

    def last(self, idx: np.ndarray) -> np.ndarray:
        """The last prefix item of each query in idx."""
        return self.items[self.start[idx] + self.length[idx] - 1]

    def prefix_matrix(self, idx: np.ndarray, n_items: int) -> sp.csr_matrix:
        """Sparse [len(idx), n_items] counts of each query's prefix items."""
        lens = self.length[idx]
        rows = np.repeat(np.arange(len(idx)), lens)
        pos = np.repeat(self.start[idx] - np.r_[0, np.cumsum(lens)[:-1]], lens) + np.arange(
            lens.sum())
        return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, self.items[pos])),
                             shape=(len(idx), n_items))


def make_queries(
    test: pd.DataFrame, known: np.ndarray, *, max_queries: int = 0, seed: int = 0
) -> tuple[Queries, dict]:
    """Queries from holdout sessions (`session`, `item`, ordered by session, pos).

    `known[i]` says whether item i was seen in training; queries whose target is unknown are
    dropped and counted. With `max_queries` > 0 a seeded sample of that many is kept.
    """
    sess = test["session"].to_numpy()
    items = test["item"].to_numpy().astype(np.int32)
    if len(sess) == 0:
        z = np.zeros(0, np.int64)
        return Queries(items, z, z.astype(np.int32), z.astype(np.int32)), {
            "targets": 0, "oov_targets": 0, "oov_share": 0.0, "queries": 0}
    first = np.r_[True, sess[1:] != sess[:-1]]
    sstart = np.maximum.accumulate(np.where(first, np.arange(len(sess)), 0))
    is_query = np.r_[~first[1:], False]  # position t has a next item in the same session
    t = np.flatnonzero(is_query)
    start, length, target = sstart[t], (t - sstart[t] + 1).astype(np.int32), items[t + 1]
    ok = known[target]
    stats = {"targets": len(t), "oov_targets": int((~ok).sum()),
             "oov_share": float((~ok).mean()) if len(t) else 0.0}
    start, length, target = start[ok], length[ok], target[ok]
    if 0 < max_queries < len(target):
        pick = np.sort(np.random.default_rng(seed).choice(len(target), max_queries,
                                                          replace=False))
        start, length, target = start[pick], length[pick], target[pick]
    stats["queries"] = len(target)
    return Queries(items, start.astype(np.int64), length, target), stats


def evaluate(
    scorer: Scorer | None, q: Queries, n_items: int, *, ks: list[int],
    exclude_prefix: bool = False, popularity: np.ndarray | None = None, batch: int = 512,
    recommender: Recommend | None = None,
) -> dict:
    """Metrics of one method: recall/mrr/ndcg/coverage/pop_percentile at each K, recall@K by
    target popularity bucket, seconds. Items never seen in training are never recommended.

    The method is a `scorer` (dense scores, ranked here) or a `recommender` that returns its
    own top-K lists (the serving path, evaluated exactly as it answers in production)."""
    variant = "exclude_prefix" if exclude_prefix else "allow_repeats"
    return evaluate_variants(scorer, q, n_items, ks=ks, popularity=popularity, batch=batch,
                             recommender=recommender, variants=(variant,))[variant]


def evaluate_variants(
    scorer: Scorer | None, q: Queries, n_items: int, *, ks: list[int],
    popularity: np.ndarray | None = None, batch: int = 512, recommender: Recommend | None = None,
    variants: tuple[str, ...] = ("allow_repeats", "exclude_prefix"),
    candidates: np.ndarray | None = None, cold: np.ndarray | None = None,
    intervals: bool = True,
) -> dict[str, dict]:
    """`evaluate` for several variants, scoring each batch once: {variant: metrics}.

    `candidates` (bool per item) are the items a scorer may recommend (default: popularity >
    0); `cold` (bool per item) marks cold-start targets, whose recall is reported apart
    (`recall@K_cold`, `recall@K_warm`, `cold_share`); `intervals` = False leaves out the
    bootstrap intervals (`ranking_metrics`)."""
    t0 = time.perf_counter()
    recs = top_k_lists(scorer, q, n_items, k=max(ks), popularity=popularity, batch=batch,
                       recommender=recommender, variants=variants, candidates=candidates)
    secs = time.perf_counter() - t0
    out = {}
    for v in variants:
        out[v] = ranking_metrics(recs[v], q.target, ks, n_items, intervals=intervals)
        if popularity is not None:
            out[v].update(popularity_metrics(recs[v], q.target, ks, popularity))
        if cold is not None:
            out[v].update(cold_metrics(recs[v], q.target, ks, cold))
        out[v]["seconds"] = round(secs, 3)
    return out


def top_k_lists(
    scorer: Scorer | None, q: Queries, n_items: int, *, k: int,
    popularity: np.ndarray | None = None, batch: int = 512, recommender: Recommend | None = None,
    variants: tuple[str, ...] = ("allow_repeats",), candidates: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The top-`k` lists (int32 [len(q), k], -1 padded) of a method per variant, as
    `evaluate_variants` ranks them: a `scorer`'s dense scores (the last prefix item, items
    outside `candidates` (default: popularity > 0, or all) and, for ``exclude_prefix``, every
    prefix item never recommended), or a `recommender`'s own lists."""
    allowed = candidates if candidates is not None else (
        None if popularity is None else popularity > 0)
    recs = {v: np.full((len(q), k), -1, np.int32) for v in variants}
    for lo in range(0, len(q), batch):
        idx = np.arange(lo, min(lo + batch, len(q)))
        if recommender is not None:
            for v in variants:
                recs[v][idx] = recommender(q, idx, k, v == "exclude_prefix")
            continue
        scores = np.asarray(scorer(q, idx), np.float32)
        if allowed is not None:
            scores[:, ~allowed] = -np.inf
        scores[np.arange(len(idx)), q.last(idx)] = -np.inf
        if "exclude_prefix" not in variants:
            recs["allow_repeats"][idx] = top_k(scores, k)
            continue
        pm = q.prefix_matrix(idx, n_items)
        pm.sum_duplicates()  # canonical: sorted, distinct columns per row
        extra = int(np.diff(pm.indptr).max(initial=0))
        if extra <= MAX_SHARED_EXTRA:
            # one heap pass for both variants: the top k + extra lists, and each row without
            # its prefix items (`without_listed`) is the exclude-prefix list, the same lists
            # as a second pass over the scores with those items at -inf
            # (benchmarks/RESULTS.md, "one top-k pass for both variants")
            wide = top_k(scores, k + extra)
            if "allow_repeats" in variants:
                recs["allow_repeats"][idx] = wide[:, :k]
            recs["exclude_prefix"][idx] = without_listed(
                wide, pm.indptr.astype(np.int64), pm.indices.astype(np.int32), k)
            continue
        if "allow_repeats" in variants:
            recs["allow_repeats"][idx] = top_k(scores, k)
        coo = pm.tocoo()
        scores[coo.row, coo.col] = -np.inf
        recs["exclude_prefix"][idx] = top_k(scores, k)
    return recs


def query_ranks(recs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The 1-based rank of each query's target in its top-K list (int [n]; 0 = not in it)."""
    hit = recs == targets[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)


def per_query_objective(recs: np.ndarray, targets: np.ndarray, k: int = 20
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(hit@k as 0/1, reciprocal rank@k) per query, float64 [n] each: their means are
    recall@k and mrr@k (`ranking_metrics`)."""
    rank = query_ranks(recs, targets)
    inside = (rank > 0) & (rank <= k)
    return inside.astype(np.float64), np.divide(1.0, rank, out=np.zeros(len(rank)),
                                                where=inside)


def evaluate_all(
    train: pd.DataFrame, test: pd.DataFrame, n_items: int, *, ks: list[int],
    baselines: list[str], embeddings: dict[str, Scorer] | None = None,
    recommenders: dict[str, Recommend] | None = None, max_queries: int = 0, seed: int = 0,
    train_ts: np.ndarray | None = None, catalog: np.ndarray | None = None,
    categories: np.ndarray | None = None, listed: np.ndarray | None = None,
    intervals: bool = True,
) -> dict:
    """Every baseline and embedding scorer on the same queries, both variants (prefix items
    allowed / excluded): {"ks", "queries": counts, "methods": {name: {variant: metrics}}}.

    The session-kNN baselines (vsknn, stan, vstan) need event times (unix seconds): `train_ts`
    aligned with `train`'s rows, else its `ts` column. `catalog` (bool per item code: listed in
    the item catalog) turns on the cold-start protocol (module docstring); `categories` (int per
    item, -1 unknown) and `listed` (listing-order key per item, larger = newer) feed the
    ``category`` baseline. `intervals` = False: no bootstrap intervals (calibration reads
    the means only)."""
    popularity = np.bincount(train["item"].to_numpy(), minlength=n_items).astype(np.float64)
    warm = popularity > 0
    known = warm if catalog is None else warm | np.asarray(catalog, bool)[:n_items]
    cold = None if catalog is None else known & ~warm
    q, qstats = make_queries(test, known, max_queries=max_queries, seed=seed)
    if cold is not None:
        qstats["cold_queries"] = int(cold[q.target].sum())
        qstats["cold_share"] = float(cold[q.target].mean()) if len(q) else 0.0
    kw = {"candidates": known, "cold": cold, "intervals": intervals}
    shared: dict = {}  # the session index of the session-kNN baselines, built once for all
    makers = {
        "pop": lambda: popularity_scorer(popularity),
        "session_pop": lambda: session_popularity_scorer(popularity),
        "item_knn": lambda: item_knn_scorer(train, n_items, popularity),
        "sr": lambda: sequential_rules_scorer(train, n_items, popularity),
        **{m: (lambda m=m: _sknn_maker(m, train, n_items, train_ts, shared)) for m in METHODS},
        "category": lambda: category_scorer(
            np.full(n_items, -1) if categories is None else categories[:n_items],
            np.zeros(n_items) if listed is None else listed[:n_items], popularity),
    }
    methods: dict = {}
    for name in baselines:
        t0 = time.perf_counter()
        scorer = makers[name]()
        fit = time.perf_counter() - t0
        res = evaluate_variants(scorer, q, n_items, ks=ks, popularity=popularity, **kw)
        methods[name] = {v: {**m, "fit_seconds": round(fit, 3)} for v, m in res.items()}
    for name, scorer in (embeddings or {}).items():
        methods[name] = evaluate_variants(scorer, q, n_items, ks=ks, popularity=popularity, **kw)
    for name, rec in (recommenders or {}).items():
        methods[name] = evaluate_variants(None, q, n_items, ks=ks, popularity=popularity,
                                          recommender=rec, **kw)
    return {"ks": list(ks), "queries": qstats, "methods": methods}


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores per row (int32 [n, k]): higher score first, ties by lower
    index; -inf entries are never returned (-1 pads rows with fewer than k finite scores)."""
    scores = np.ascontiguousarray(scores, np.float32)
    return heap_top_k(scores, k)


def ranking_metrics(recs: np.ndarray, targets: np.ndarray, ks: list[int], n_items: int, *,
                    intervals: bool = True) -> dict:
    """recall@K (= hit rate, one target), mrr@K, ndcg@K, coverage@K (share of the n_items
    catalogue appearing in any top-K list) from top-K lists [n, >= max(ks)]; with
    `intervals`, the bootstrap 95% interval of recall and mrr at the headline K (20 when
    listed, else the largest) as ``ci95_lo:<metric>@K`` / ``ci95_hi:<metric>@K``."""
    n = len(targets)
    rank = query_ranks(recs, targets)  # 1-based; 0 = not found
    out: dict = {"queries": n}
    for k in ks:
        inside = (rank > 0) & (rank <= k)
        out[f"recall@{k}"] = float(inside.mean()) if n else 0.0
        rr = np.divide(1.0, rank, out=np.zeros(n), where=inside)
        out[f"mrr@{k}"] = float(rr.mean()) if n else 0.0
        gain = np.divide(1.0, np.log2(rank + 1.0), out=np.zeros(n), where=inside)
        out[f"ndcg@{k}"] = float(gain.mean()) if n else 0.0
        top = recs[:, :k]
        out[f"coverage@{k}"] = float(len(np.unique(top[top >= 0])) / n_items) if n_items else 0.0
        if intervals and k == (20 if 20 in ks else max(ks)) and n:  # the headline K
            for name, per_query in (("recall", inside.astype(np.float64)), ("mrr", rr)):
                lo, hi = bootstrap_interval(per_query)
                out[f"ci95_lo:{name}@{k}"], out[f"ci95_hi:{name}@{k}"] = lo, hi
    return out


def bootstrap_interval(per_query: np.ndarray, *, resamples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean over queries.

    Parameters
    ----------
    per_query : ndarray
        One value per query (1/0 hits for recall, reciprocal ranks for MRR).
    resamples : int
        Bootstrap resamples of the queries (with replacement).
    seed : int
        Seed of the resampling: the same values give the same interval (metrics.json stays
        byte-identical on a rerun).
    level : float
        Coverage of the interval.

    Returns
    -------
    tuple of float
        (lower, upper) bounds of the mean.
    """
    x = np.asarray(per_query, np.float64)
    n = len(x)
    means = np.empty(resamples)
    for lo, idx in _resample_chunks(n, resamples, seed):
        means[lo:lo + len(idx)] = x[idx].mean(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def _resample_chunks(n: int, resamples: int, seed: int):
    """(first resample, int indices [chunk, n]) of the bootstrap's resamples, in the order the
    seeded generator draws them (chunks of about 2M indices). The evaluation asks for the same
    (n, resamples, seed) for every method and metric: up to 20M indices are kept
    (`_RESAMPLES`, as int32) and reused, larger draws are made afresh each time."""
    key = (n, resamples, seed)
    if key in _RESAMPLES:
        return _RESAMPLES[key]
    draws = _draw_resamples(n, resamples, seed)
    if n * resamples > 20_000_000:
        return draws
    _RESAMPLES.clear()  # one draw kept: the queries of one evaluation
    _RESAMPLES[key] = [(lo, idx.astype(np.int32)) for lo, idx in draws]
    return _RESAMPLES[key]


def _draw_resamples(n: int, resamples: int, seed: int):
    rng = np.random.default_rng(seed)
    step = max(1, 2_000_000 // max(n, 1))  # resamples per chunk: a few MB of indices
    for lo in range(0, resamples, step):
        yield lo, rng.integers(0, n, size=(min(resamples, lo + step) - lo, n))


_RESAMPLES: dict[tuple, list] = {}


def popularity_metrics(recs: np.ndarray, targets: np.ndarray, ks: list[int],
                       popularity: np.ndarray) -> dict:
    """Mean popularity percentile of recommended items at each K (1 = the most popular item),
    and recall@K per target bucket: head / torso / tail = the items making up the first, second
    and last third of training clicks."""
    pct = _pop_percentile(popularity)
    bucket = popularity_buckets(popularity)
    out: dict = {}
    for k in ks:
        top = recs[:, :k]
        out[f"pop_percentile@{k}"] = float(pct[top[top >= 0]].mean()) if (top >= 0).any() else 0.0
    hit = (recs == targets[:, None])
    rank = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)
    for b, name in enumerate(("head", "torso", "tail")):
        sel = bucket[targets] == b
        out[f"{name}_share"] = float(sel.mean()) if len(sel) else 0.0
        for k in ks:
            out[f"recall@{k}_{name}"] = float(((rank[sel] > 0) & (rank[sel] <= k)).mean()) \
                if sel.any() else 0.0
    return out


def cold_metrics(recs: np.ndarray, targets: np.ndarray, ks: list[int], cold: np.ndarray) -> dict:
    """recall@K of warm and of cold targets (`recall@K_warm`, `recall@K_cold`; 0 when there is
    none) and `cold_share`, the share of targets that are cold."""
    hit = recs == targets[:, None]
    rank = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)
    is_cold = cold[targets]
    out: dict = {"cold_share": float(is_cold.mean()) if len(targets) else 0.0}
    for name, sel in (("warm", ~is_cold), ("cold", is_cold)):
        for k in ks:
            out[f"recall@{k}_{name}"] = float(((rank[sel] > 0) & (rank[sel] <= k)).mean()) \
                if sel.any() else 0.0
    return out


def popularity_buckets(popularity: np.ndarray) -> np.ndarray:
    """0 head / 1 torso / 2 tail per item: thirds of the total click mass, most popular first."""
    order = np.argsort(-popularity, kind="stable")
    cum = np.cumsum(popularity[order]) / max(popularity.sum(), 1)
    b = np.empty(len(popularity), np.int8)
    b[order] = np.minimum((cum - popularity[order] / max(popularity.sum(), 1)) * 3, 2).astype(
        np.int8)
    return b


# ---------------------------------------------------------------- scorers


def popularity_scorer(popularity: np.ndarray) -> Scorer:
    """Most popular items overall."""
    pop = (popularity / max(popularity.max(), 1)).astype(np.float32)
    buf = ScoreBuffer(len(pop))

    def score(q: Queries, idx: np.ndarray) -> np.ndarray:
        s = buf.rows(len(idx))
        s[:] = pop
        return s

    return score


def session_popularity_scorer(popularity: np.ndarray) -> Scorer:
    """Items of the current session by their count in it, then overall popularity."""
    pop = (popularity / max(popularity.max(), 1)).astype(np.float32)
    tie = TIE * pop
    buf = ScoreBuffer(len(pop))

    def score(q: Queries, idx: np.ndarray) -> np.ndarray:
        s = q.prefix_matrix(idx, len(pop)).toarray(out=buf.rows(len(idx)))
        s += tie
        return s

    return score


def category_scorer(categories: np.ndarray, listed: np.ndarray, popularity: np.ndarray
                    ) -> Scorer:
    """The items of the last prefix item's category, most recently listed first (`listed`:
    larger = newer, `recembed.catalog.listing_order`), then the others by popularity; a query
    item of unknown category (-1) gets popularity alone."""
    categories = np.asarray(categories)
    pop = (popularity / max(popularity.max(), 1)).astype(np.float32) * TIE
    finite = np.where(np.isfinite(listed), listed, -np.inf)
    recency = np.empty(len(finite), np.float32)
    recency[np.argsort(finite, kind="stable")] = np.arange(len(finite)) / max(len(finite), 1)

    def score(q: Queries, idx: np.ndarray) -> np.ndarray:
        c = categories[q.last(idx)]
        same = (categories[None, :] == c[:, None]) & (c[:, None] >= 0)
        return np.where(same, 1.0 + recency, 0.0).astype(np.float32) + pop

    return score


def item_knn_scorer(train: pd.DataFrame, n_items: int, popularity: np.ndarray) -> Scorer:
    """Cosine similarity of items over session co-occurrence (binary session x item matrix),
    scored from the last item."""
    sess = train["session"].to_numpy()
    _, srow = np.unique(sess, return_inverse=True)
    x = sp.csr_matrix((np.ones(len(sess), np.float32), (srow, train["item"].to_numpy())),
                      shape=(srow.max() + 1 if len(srow) else 0, n_items))
    x.data[:] = 1.0  # duplicates summed above; binary occurrence
    co = (x.T @ x).tocsr()
    norm = np.sqrt(co.diagonal()).astype(np.float32)
    inv = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
    sim = sp.diags(inv) @ co @ sp.diags(inv)
    sim.setdiag(0)
    return _sparse_row_scorer(sim.tocsr(), popularity)


def sequential_rules_scorer(train: pd.DataFrame, n_items: int, popularity: np.ndarray,
                            steps: int = 10) -> Scorer:
    """Sequential rules a -> b when b follows a within `steps` steps, weight 1/distance,
    scored from the last item (Ludewig & Jannach 2018)."""
    rules = build_item_graph(train, np.ones(int(train["session"].max()) + 1 if len(train) else 0),
                             n_items, window=steps, distance_weighting=True, directed=True)
    return _sparse_row_scorer(rules, popularity)


def embedding_scorer(
    vectors: np.ndarray, rows_item: np.ndarray, n_items: int, popularity: np.ndarray, *,
    strategy: str = "last", context: np.ndarray | None = None, decay: float = 0.5,
    history: int = 5,
) -> Scorer:
    """Scores from item vectors (row r belongs to item code `rows_item[r]`):
    - last: cosine between the last item and every item;
    - decayed: cosine with the sum of the last `history` items' unit vectors, weight decay**k;
    - directional: in[last] . out[candidate] with the output (context) vectors;
    - ann: sum of the last `history` items' input vectors (weight decay**k) . out[candidate]:
      what an inner-product index over context_vectors.npy answers (index_context.faiss), the
      directional score as plain ANN without recembed's Python."""
    d = vectors.shape[1]
    emb = np.zeros((n_items, d), np.float32)
    emb[rows_item] = vectors
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    has_vec = np.zeros(n_items, bool)
    has_vec[rows_item] = True
    pop = (popularity / max(popularity.max(), 1)).astype(np.float32) * TIE
    buf = ScoreBuffer(n_items)
    if strategy in ("directional", "ann"):
        if context is None:
            raise ValueError(f"the {strategy} strategy needs output (context) vectors")
        out_m = np.zeros((n_items, d), np.float32)
        out_m[rows_item] = context
        cand, qm = out_m, emb
    elif strategy in ("last", "decayed"):
        cand, qm = unit, unit
    else:
        raise ValueError(f"unknown strategy {strategy!r}")

    def score(q: Queries, idx: np.ndarray) -> np.ndarray:
        if strategy in ("decayed", "ann"):
            qv = np.zeros((len(idx), d), np.float32)
            end = q.start[idx] + q.length[idx]
            for k in range(history):
                ok = q.length[idx] > k
                qv[ok] += (decay ** k) * qm[q.items[end[ok] - 1 - k]]
        else:
            qv = qm[q.last(idx)]
        s = np.matmul(qv, cand.T, out=buf.rows(len(idx)))  # qv @ cand.T, bit for bit
        s += pop
        s[:, ~has_vec] = -np.inf
        return s

    return score


def shared_targets(version_ids, vocabulary: pd.DataFrame, test_items: np.ndarray
                   ) -> tuple[int, int]:
    """How many distinct holdout items of a run a version can recommend at all (matched by id).

    Parameters
    ----------
    version_ids : array-like of str
        The version's item ids.
    vocabulary : pandas.DataFrame
        The run's vocabulary (`code`, `id`).
    test_items : numpy.ndarray
        int item codes of the run's holdout events.

    Returns
    -------
    (int, int)
        Distinct holdout items that the version holds, distinct holdout items.
    """
    codes = np.unique(np.asarray(test_items, np.int64))
    id_of = vocabulary.set_index("code")["id"].astype(str)
    targets = id_of.reindex(codes).dropna().to_numpy()
    have = set(map(str, version_ids))
    return int(sum(t in have for t in targets)), len(codes)


def serving_recommend(recommender, rows_item: np.ndarray, n_items: int) -> Recommend:
    """The serving `Recommender.recommend_rows` as an evaluation method: maps ingest codes to
    vector rows and back (`rows_item[r]` = ingest code of vector row r)."""
    row_of = np.full(n_items, -1, np.int64)
    mapped = rows_item >= 0  # rows of items this run has never seen map to -1 (never a hit)
    row_of[rows_item[mapped]] = np.flatnonzero(mapped)

    def recommend(q: Queries, idx: np.ndarray, k: int, exclude_prefix: bool) -> np.ndarray:
        sessions = []
        for i in idx:
            r = row_of[q.items[q.start[i]: q.start[i] + q.length[i]]]
            sessions.append(r)
        rows, _ = recommender.recommend_rows(sessions, k, exclude_session_items=exclude_prefix)
        return np.where(rows >= 0, rows_item[np.maximum(rows, 0)], -1).astype(np.int32)

    return recommend


# ---------------------------------------------------------------- helpers


def _sknn_maker(method: str, train: pd.DataFrame, n_items: int,
                train_ts: np.ndarray | None, shared: dict | None = None) -> Scorer:
    """The dense scorer of a session-kNN baseline; `shared` keeps the session index between
    the methods of one evaluation (it depends on the training events only; ~10 s a build
    at 1.3M training sessions)."""
    if train_ts is None and "ts" not in train.columns:
        raise ValueError(f"baseline {method!r} needs the training events' times: pass train_ts "
                         "or a ts column in train")
    index = None if shared is None else shared.get("index")
    if index is None:
        ts = train["ts"].to_numpy() if train_ts is None else np.asarray(train_ts)
        sess = train["session"].to_numpy()
        index = SessionIndex.build(sess, train["item"].to_numpy(), session_end_times(sess, ts),
                                   n_items)
        if shared is not None:
            shared["index"] = index
    # the kernels' twin of `sknn_scorer` (the same rows; benchmarks/RESULTS.md, "runs in 60 s")
    return dense_scorer(index, method_params(method), n_items)


def _sparse_row_scorer(m: sp.csr_matrix, popularity: np.ndarray) -> Scorer:
    m = m.tocsr().astype(np.float32)
    mx = float(m.max()) if m.nnz else 1.0
    pop = (popularity / max(popularity.max(), 1)).astype(np.float32) * TIE * max(mx, 1e-6)
    buf = ScoreBuffer(m.shape[1])

    def score(q: Queries, idx: np.ndarray) -> np.ndarray:
        s = m[q.last(idx)].toarray(out=buf.rows(len(idx)))
        s += pop
        return s

    return score


def _pop_percentile(popularity: np.ndarray) -> np.ndarray:
    order = np.argsort(-popularity, kind="stable")
    pct = np.empty(len(popularity))
    pct[order] = 1.0 - np.arange(len(popularity)) / max(len(popularity), 1)
    return pct
