"""Index speed / recall / memory: faiss Flat, HNSW, IVF, IVF-PQ through recembed.index, hnswlib as
an outside reference, and recembed's auto-chosen, auto-tuned index.

1M x 128 clustered synthetic vectors (cosine), 10k held-out queries, k = 10; recall@10 against
exact search. QPS is batch search of all queries with 1 and 2 threads. Then the auto index on
real item vectors (a run directory's vectors.npy) must reach its target with no manual setting.

    python benchmarks/index.py [--n 1000000] [--real runs/yoochoose-*/]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from common import append_results, markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss

from recembed.index import build_index, choose_index, prepare_vectors, tune_index

K = 10


def clustered(n: int, d: int, n_clusters: int = 2000, seed: int = 0) -> np.ndarray:
    """Gaussian clusters of varied spread, L2-normalised (cosine)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d)).astype(np.float32)
    spread = rng.uniform(0.2, 0.6, n_clusters).astype(np.float32)
    lab = rng.integers(0, n_clusters, n)
    x = centres[lab] + spread[lab, None] * rng.normal(size=(n, d)).astype(np.float32)
    return prepare_vectors(x, "cosine")


def qps(search, q: np.ndarray, threads: int) -> tuple[float, np.ndarray]:
    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    _, ids = search(q)
    return len(q) / (time.perf_counter() - t0), ids


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(a, b)) / K for a, b in zip(ids, truth, strict=True)]))


def run_synthetic(n: int, d: int, m: int, ef_c: int, only: str = "") -> list[dict]:
    x = clustered(n + 10_000, d)
    base, q = x[:n], x[n:]
    faiss.omp_set_num_threads(2)
    exact = faiss.IndexFlatIP(d)
    exact.add(base)
    t0 = time.perf_counter()
    _, truth = exact.search(q, K)
    flat_s = time.perf_counter() - t0
    rows = [{"index": "Flat (exact)", "param": "", "build_s": 0.0,
             "memory_MB": round(base.nbytes / 2**20), "recall@10": 1.0,
             "QPS 1 thread": round(qps(lambda qq: exact.search(qq, K), q, 1)[0]),
             "QPS 2 threads": round(len(q) / flat_s)}]
    print(rows[-1], flush=True)

    configs = [(f"HNSW{m}", [f"efSearch={e}" for e in (16, 32, 64, 128, 256)]),
               ("IVF4096,Flat", [f"nprobe={p}" for p in (1, 4, 16, 64)]),
               ("IVF4096,PQ32x8,Refine(SQ8)", [f"nprobe={p},k_factor_rf={f}" for p, f in
                                               ((8, 4), (8, 16), (32, 16), (32, 64))])]
    if only:
        configs = [c for c in configs if any(c[0].startswith(o) for o in only.split(";"))]
    auto_factory, _ = choose_index(n, d, hnsw_m=m)
    ps = faiss.ParameterSpace()
    built = {}  # the build the auto row below would repeat, kept for it; the rest are freed
    for factory, grid in configs:
        faiss.omp_set_num_threads(2)
        index, meta = build_index(base, factory=factory, hnsw_m=m, ef_construction=ef_c)
        if factory == auto_factory:
            built[factory] = (index, meta)
        for params in grid:
            ps.set_index_parameters(index, params)
            q1, _ = qps(lambda qq, ix=index: ix.search(qq, K), q[:2000], 1)
            q2, ids = qps(lambda qq, ix=index: ix.search(qq, K), q, 2)
            rows.append({"index": factory, "param": params, "build_s": meta.build_seconds,
                         "memory_MB": round(meta.memory_bytes / 2**20),
                         "recall@10": round(recall(ids, truth), 4), "QPS 1 thread": round(q1),
                         "QPS 2 threads": round(q2)})
            print(rows[-1], flush=True)

    try:
        import hnswlib
    except ImportError:
        print("hnswlib not installed (pip install hnswlib): no outside reference", flush=True)
    else:
        h = hnswlib.Index(space="ip", dim=d)
        t0 = time.perf_counter()
        h.init_index(max_elements=n, M=m, ef_construction=ef_c, random_seed=0)
        h.set_num_threads(2)
        h.add_items(base)
        build = time.perf_counter() - t0
        for ef in (16, 32, 64, 128, 256):
            h.set_ef(max(ef, K))
            res = {}
            for t in (1, 2):
                h.set_num_threads(t)
                qq = q[:2000] if t == 1 else q
                t0 = time.perf_counter()
                ids, _ = h.knn_query(qq, k=K)
                res[t] = (len(qq) / (time.perf_counter() - t0), ids)
            rows.append({"index": f"hnswlib M={m}", "param": f"ef={ef}", "build_s": round(build, 1),
                         "memory_MB": round(h.element_count * (d * 4 + m * 2 * 4 + 16) / 2**20),
                         "recall@10": round(recall(res[2][1], truth), 4),
                         "QPS 1 thread": round(res[1][0]), "QPS 2 threads": round(res[2][0])})
            print(rows[-1], flush=True)

    # recembed's own choice: auto factory, tuned to recall@10 >= 0.95 on sampled base items
    faiss.omp_set_num_threads(2)
    if auto_factory in built:  # the same build as above: reuse it rather than build it twice
        index, meta = built[auto_factory]
        meta.reason, meta.tuning = "auto", []
    else:
        index, meta = build_index(base, factory="auto", hnsw_m=m, ef_construction=ef_c)
    meta = tune_index(index, base, meta, target_recall=0.95, k=K, n_queries=1000)
    q1, _ = qps(lambda qq: index.search(qq, K), q[:2000], 1)
    q2, ids = qps(lambda qq: index.search(qq, K), q, 2)
    rows.append({"index": f"recembed auto ({meta.factory})", "param": meta.search_params,
                 "build_s": meta.build_seconds, "memory_MB": round(meta.memory_bytes / 2**20),
                 "recall@10": round(recall(ids, truth), 4), "QPS 1 thread": round(q1),
                 "QPS 2 threads": round(q2)})
    print(rows[-1], flush=True)
    return rows


def run_real(paths: list[str]) -> list[dict]:
    rows = []
    for p in paths:
        vec = np.load(Path(p) / "vectors.npy")
        faiss.omp_set_num_threads(2)
        index, meta = build_index(vec, factory="auto")
        meta = tune_index(index, vec, meta, target_recall=0.95, k=100, n_queries=1000)
        rows.append({"vectors": str(p), "items": len(vec), "auto index": meta.factory,
                     "search params": meta.search_params or "-", "recall@100": meta.recall,
                     "reached 0.95": meta.reached_target, "latency_ms": meta.latency_ms,
                     "build_s": meta.build_seconds})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=80)
    ap.add_argument("--real", nargs="*", default=[])
    ap.add_argument("--only", default="",
                    help="factory prefixes to run, ;-separated (factories contain commas), "
                         "e.g. 'HNSW;IVF4096,PQ'")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    table = markdown_table(run_synthetic(args.n, args.d, args.m, args.ef_construction,
                                         args.only))
    real = markdown_table(run_real(args.real)) if args.real else ""
    print(table, real, sep="\n\n")
    if not args.no_record:
        append_results(f"indexes on {args.n:,} x {args.d} clustered vectors",
                       f"python benchmarks/index.py --n {args.n} --only '{args.only}' "
                       f"--real {' '.join(args.real)}",
                       table + ("\n\nAuto index on real item vectors:\n\n" + real if real else ""),
                       f"k=10, 10k held-out queries, cosine; HNSW M={args.m}, efConstruction="
                       f"{args.ef_construction} for faiss and hnswlib alike. QPS 1 thread on "
                       "2k queries, 2 threads on 10k.")
    Path("/tmp/index_bench.json").write_text(json.dumps({"table": table, "real": real}))


if __name__ == "__main__":
    main()
