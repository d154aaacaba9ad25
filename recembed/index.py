"""faiss indexes over item vectors: choose, build, tune to a target recall, save, load, search.

Cosine similarity is inner product on L2-normalised vectors (raw inner product on unnormalised
vectors breaks HNSW's recall, so "ip" is only for directional scoring). Tuning measures recall
against exact search on a sample of real item queries and raises efSearch / nprobe until the
target is met, or says it cannot; what was measured goes into the index metadata (index.json).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from recembed.artifacts import INDEX, INDEX_META, atomic_path, sha256, unit_rows, write_text

# faiss guidelines (wiki "Guidelines to choose an index"), in items
EXACT_BELOW = 50_000
HNSW_BELOW = 2_000_000
MIN_POINTS_PER_CENTROID = 39
# inner-product ("ip") indexes over unnormalised vectors (index_context.faiss, the directional
# search) stay exact below this many items: HNSW cannot rank raw inner products (on the 10M-event
# synthetic log's 194k context vectors it reached recall@100 0.77 at efSearch = 1024, the end of
# the tuning grid, at 2.8 ms a query), while exact search reads n x dim floats a query and the
# per-item candidate tables, n^2 x dim multiply-adds in all (2.4e12 at 194k items x 64), cost
# less than building and searching that graph (benchmarks/RESULTS.md, "index, evaluate and
# publish at 194k items"). Above it the n^2 tables grow past the nightly budget: HNSW as before.
IP_EXACT_BELOW = 250_000


@dataclass(frozen=True)
class IndexParams:
    """The `[index]` settings (`recembed.settings.index_params`): `build_index` takes
    factory, metric, memory_budget_gb, hnsw_m and ef_construction, `tune_index` target_recall,
    k (= tune_k) and n_queries (= tune_queries); their docstrings give units and ranges."""

    factory: str = "auto"
    metric: str = "cosine"
    target_recall: float = 0.95
    tune_k: int = 100
    tune_queries: int = 1000
    memory_budget_gb: float = 8.0
    hnsw_m: int = 32
    ef_construction: int = 200

    def build_kwargs(self, metric: str | None = None) -> dict:
        """`build_index` keyword arguments (`metric` overrides the configured one)."""
        return {"factory": self.factory, "metric": metric or self.metric,
                "memory_budget_gb": self.memory_budget_gb, "hnsw_m": self.hnsw_m,
                "ef_construction": self.ef_construction}

    def tune_kwargs(self) -> dict:
        """`tune_index` keyword arguments."""
        return {"target_recall": self.target_recall, "k": self.tune_k,
                "n_queries": self.tune_queries}


@dataclass
class IndexMeta:
    """What index.json records: the factory string, metric, size, the chosen search parameters
    and what was measured with them."""

    factory: str
    metric: str
    n: int
    dim: int
    reason: str
    search_params: str = ""
    target_recall: float = 0.0
    tune_k: int = 0
    recall: float | None = None
    reached_target: bool | None = None
    latency_ms: float | None = None
    qps_batch: float | None = None
    memory_bytes: int = 0
    build_seconds: float = 0.0
    vectors_sha256: str = ""  # of the vectors.npy the index was built and measured on
    tuning: list[dict] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def set_threads(n: int) -> None:
    """faiss OpenMP threads (numba keeps its own pool; see recembed/__init__ for the wait policy)."""
    import faiss

    faiss.omp_set_num_threads(max(1, n))


def choose_index(n: int, dim: int, memory_budget_gb: float = 8.0, hnsw_m: int = 32,
                 metric: str = "cosine") -> tuple[str, str]:
    """(faiss factory string, reason) for a catalogue of n vectors of dimension dim; an
    inner-product (`metric` "ip") index stays exact below `IP_EXACT_BELOW` items."""
    raw_gb = n * dim * 4 / 2**30
    if n < EXACT_BELOW:
        return "Flat", f"{n:,} items < {EXACT_BELOW:,}: exact search is fast enough"
    if metric == "ip" and n < IP_EXACT_BELOW:
        return "Flat", (f"{n:,} items < {IP_EXACT_BELOW:,} with the inner-product metric: exact "
                        "search (HNSW misses the recall target on raw inner products)")
    nlist = _nlist(n)
    if raw_gb + n * hnsw_m * 8 / 2**30 > memory_budget_gb:
        m = _pq_m(dim)
        return (f"IVF{nlist},PQ{m}x8,Refine(SQ8)",
                f"vectors need {raw_gb:.1f} GB (+ graph), over the {memory_budget_gb} GB budget: "
                f"IVF-PQ with an SQ8 refinement")
    if n < HNSW_BELOW:
        return f"HNSW{hnsw_m}", f"{n:,} items: HNSW (graph) index"
    return (f"IVF{nlist}_HNSW32,Flat",
            f"{n:,} items >= {HNSW_BELOW:,}: IVF with an HNSW coarse quantizer, nlist={nlist}")


def build_index(
    vectors: np.ndarray, *, factory: str = "auto", metric: str = "cosine",
    memory_budget_gb: float = 8.0, hnsw_m: int = 32, ef_construction: int = 200, seed: int = 0,
):
    """(faiss index, IndexMeta) over `vectors` (row i = id i); cosine normalises a copy first."""
    import faiss

    x = prepare_vectors(vectors, metric)
    n, dim = x.shape
    reason = "set in the config"
    if factory == "auto":
        factory, reason = choose_index(n, dim, memory_budget_gb, hnsw_m, metric)
    factory, fallback = _check_training_size(factory, n)
    if fallback:
        reason = fallback
    t0 = time.perf_counter()
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    hnsw = _hnsw_of(index)
    if hnsw is not None:
        hnsw.efConstruction = ef_construction
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample = x[rng.choice(n, min(n, 256 * _nlist_of(factory, n)), replace=False)]
        _train_seeded(index, sample, seed)
    index.add(x)
    meta = IndexMeta(factory=factory, metric=metric, n=n, dim=dim, reason=reason,
                     build_seconds=round(time.perf_counter() - t0, 3),
                     memory_bytes=len(faiss.serialize_index(index)))
    return index, meta


def tune_index(
    index, vectors: np.ndarray, meta: IndexMeta, *, target_recall: float = 0.95, k: int = 100,
    n_queries: int = 1000, seed: int = 0,
) -> IndexMeta:
    """Raise efSearch / nprobe until recall@k against exact search on sampled item queries
    reaches `target_recall` (or the largest setting is measured); records all in `meta`."""
    import faiss

    x = prepare_vectors(vectors, meta.metric)
    n = len(x)
    k = min(k, n)
    rng = np.random.default_rng(seed)
    qidx = rng.choice(n, min(n_queries, n), replace=False)
    q = x[qidx]
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    _, truth = exact.search(q, k)
    meta.target_recall, meta.tune_k = target_recall, k
    grid = _param_grid(index, meta.factory)
    ps = faiss.ParameterSpace()
    for params in grid:
        if params:
            ps.set_index_parameters(index, params)
        t0 = time.perf_counter()
        _, got = index.search(q, k)
        dt = time.perf_counter() - t0
        rec = _recall(got, truth)
        meta.tuning.append({"params": params, "recall": round(rec, 4),
                            "qps_batch": round(len(q) / dt, 1)})
        meta.search_params, meta.recall, meta.qps_batch = params, round(rec, 4), round(
            len(q) / dt, 1)
        if rec >= target_recall:
            break
    meta.reached_target = bool(meta.recall is not None and meta.recall >= target_recall)
    if not meta.reached_target:
        meta.reason += (f"; tuning could not reach recall@{k} {target_recall} (best "
                        f"{meta.recall}): use a larger hnsw_m / nlist or a Flat index")
    # single-query latency with the chosen parameters
    t0 = time.perf_counter()
    for i in range(min(200, len(q))):
        index.search(q[i:i + 1], min(10, k))
    meta.latency_ms = round((time.perf_counter() - t0) / min(200, len(q)) * 1e3, 4)
    return meta


def prepare_vectors(vectors: np.ndarray, metric: str) -> np.ndarray:
    """float32 C-contiguous vectors, L2-normalised for the cosine metric."""
    if metric not in ("cosine", "ip"):
        raise ValueError(f"index metric must be 'cosine' or 'ip', got {metric!r}")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"vectors must be a non-empty 2-D array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or infinite values")
    return unit_rows(x) if metric == "cosine" else x


def save_index(index, meta: IndexMeta, out_dir: str | Path) -> None:
    """Write index.faiss and index.json into out_dir (faiss' own format; no pickle)."""
    import faiss

    out_dir = Path(out_dir)
    with atomic_path(INDEX.path(out_dir)) as tmp:
        faiss.write_index(index, str(tmp))
    write_text(INDEX_META.path(out_dir), meta.to_json())


def load_index(dir_: str | Path):
    """(faiss index with its tuned search parameters applied, metadata dict) of a run or
    version directory. Search parameters are set here once and never per query, so concurrent
    searches are safe."""
    import faiss

    dir_ = Path(dir_)
    index = faiss.read_index(str(INDEX.path(dir_)))
    meta = json.loads(INDEX_META.path(dir_).read_text())
    if meta.get("search_params"):
        faiss.ParameterSpace().set_index_parameters(index, meta["search_params"])
    return index, meta


# ---------------------------------------------------------------- helpers


def _nlist(n: int) -> int:
    # between 4*sqrt(N) and 16*sqrt(N), a power of two, and >= 39 training points per centroid
    nlist = 2 ** round(math.log2(8 * math.sqrt(n)))
    return max(1, min(nlist, n // MIN_POINTS_PER_CENTROID))


def _pq_m(dim: int) -> int:
    for m in (dim // 4, dim // 2, dim // 8, 16, 8, 4, 2, 1):
        if m >= 1 and dim % m == 0:
            return m
    return 1


def _nlist_of(factory: str, n: int) -> int:
    import re

    m = re.match(r"IVF(\d+)", factory)
    return int(m.group(1)) if m else 1


def _check_training_size(factory: str, n: int) -> tuple[str, str]:
    nlist = _nlist_of(factory, n)
    if factory.startswith("IVF") and nlist * MIN_POINTS_PER_CENTROID > n:
        return "Flat", (f"{factory} needs {nlist * MIN_POINTS_PER_CENTROID:,} training points "
                        f"({MIN_POINTS_PER_CENTROID} per centroid) but there are {n:,} items: "
                        "fell back to exact Flat search")
    return factory, ""


def _train_seeded(index, sample: np.ndarray, seed: int) -> None:
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        cp = ivf.cp
        cp.seed = seed
    index.train(sample)


def _hnsw_of(index):
    import faiss

    for candidate in (index, getattr(index, "base_index", None)):
        if candidate is None:
            continue
        try:
            return faiss.downcast_index(candidate).hnsw
        except AttributeError:
            continue
    return None


def _param_grid(index, factory: str) -> list[str]:
    if factory.startswith("HNSW"):
        return [f"efSearch={e}" for e in (16, 32, 64, 128, 256, 512, 1024)]
    if factory.startswith("IVF"):
        nlist = _nlist_of(factory, 0)
        probes = [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if p <= nlist]
        extra = ",quantizer_efSearch={}" if "_HNSW" in factory else ""
        # a Refine index re-ranks k_factor_rf * k PQ candidates exactly; where PQ codes are
        # coarse, 4x caps recall whatever nprobe (0.68 recall@10 on 1M clustered vectors)
        factors = (4, 16, 64) if "Refine" in factory else (0,)
        return [f"nprobe={p}" + (extra.format(max(2 * p, 64)) if extra else "")
                + (f",k_factor_rf={f}" if f else "") for p in probes for f in factors]
    return [""]


def _recall(got: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(g[g >= 0], t)) for g, t in zip(got, truth, strict=True))
    return hits / truth.size


def tuned_index(params: IndexParams, vectors_path: Path, *, threads: int, seed: int):
    """(faiss index, IndexMeta) over the vectors in `vectors_path` with the run's index
    settings, tuned to `params.target_recall`; the metadata records the sha256 of the vectors
    it was measured on. Publishing reuses it to re-index aligned vectors.

    Parameters
    ----------
    params : IndexParams
        The `[index]` settings (`recembed.settings.index_params`).
    vectors_path : Path
        A vectors.npy.
    threads : int >= 1
        faiss threads.
    seed : int
        Seed of the index training and the tuning queries.
    """
    vectors = np.load(vectors_path, allow_pickle=False)
    set_threads(threads)
    index, meta = build_index(vectors, seed=seed, **params.build_kwargs())
    meta = tune_index(index, vectors, meta, seed=seed, **params.tune_kwargs())
    if not meta.reached_target:
        logging.getLogger("recembed").warning("index: %s", meta.reason)
    meta.vectors_sha256 = sha256(vectors_path)
    return index, meta


# queries per matrix product of `exact_search`: its [block, n] float32 score buffer is 200 MB at
# 195k items, reused from block to block (no fresh pages each time)
EXACT_BLOCK = 256


def exact_search(items: np.ndarray, *, block: int = EXACT_BLOCK):
    """A ``search(q, k) -> (None, rows)`` over `items` by exact inner product, as a faiss
    index's ``search`` is called for the candidate tables (`recembed.blend.candidate_tables`):
    BLAS products of `block` queries at a time and a heap top-k (`recembed.topk.heap_top_k`:
    best first, ties to the lower row). On 194k x 64 vectors it reads the top 200 of every item
    in 2.4e12 multiply-adds, no graph to build, recall 1 where the tuned HNSW reached 0.77.

    Parameters
    ----------
    items : float32 [n, d]
        The searched vectors (rows = ids).
    block : int >= 1
        Queries per product.

    Returns
    -------
    callable
        ``search(q, k)``: q float32 [m, d] -> (None, int32 rows [m, min(k, n)], -1 only for
        rows whose scores are not finite).
    """
    from recembed.topk import heap_top_k

    x = np.ascontiguousarray(items, np.float32)
    if x.ndim != 2 or not len(x):
        raise ValueError(f"items must be a non-empty 2-D array, got shape {x.shape}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    xt = np.ascontiguousarray(x.T)
    buf = None

    def search(q: np.ndarray, k: int):
        nonlocal buf
        q = np.ascontiguousarray(q, np.float32)
        if q.ndim != 2 or q.shape[1] != x.shape[1]:
            raise ValueError(f"queries must be [m, {x.shape[1]}], got {q.shape}")
        k = min(int(k), len(x))
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if buf is None:
            buf = np.empty((block, len(x)), np.float32)
        out = np.empty((len(q), k), np.int32)
        for lo in range(0, len(q), block):
            s = buf[:len(q[lo:lo + block])]
            np.matmul(q[lo:lo + block], xt, out=s)
            out[lo:lo + len(s)] = heap_top_k(s, k)
        return None, out

    return search

