"""Serving throughput: `Recommender.recommend` and `similar` on the 195k-item synthetic catalogue.

The version is built from the 10M-event synthetic click log (`recembed.synth.synth_clicks`, the
nightly benchmark's log: 195,281 items). Sessions come from a plain 30-minute-gap sessionizer
(bots dropped); the blend artifacts are built from the training sessions exactly as the index
stage builds them (`recembed.blend.BlendModel.build`: sequential rules, session-kNN index,
popularity). Item and output vectors are synthetic (64-d, clustered by category, as trained
vectors are) so that no training run is needed; both indexes are HNSW32 (what `auto` picks for
195k items), efSearch 64 (what the nightly run's tuning chose). Everything is cached under
benchmarks/data/serving_cache/.

Measured: single-session calls (one session per call, latency p50/p99 over calls) and batch
calls (`--batch` sessions per call, sessions/s) of `recommend` with the blend weights a
calibrated clicks run chose (every signal on), and `similar` for the last item.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/serving.py --threads 2 --label after
    python benchmarks/serving.py --label before --code /tmp/recembed-base   # older code

Each run saves its rows to benchmarks/data/serving_<label>.json; the table printed and appended
to RESULTS.md holds every saved label (so "before" and "after" sit side by side).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import DATA, append_results, markdown_table  # noqa: E402

EVENTS = 10_000_000
DIM = 64
GAP_S = 1800
# (retrieval, candidates, STAN sample_size): the first is what serving did before the candidate
# tables; the others are what calibration can choose (serving.retrieval / candidates /
# neighbour_sample)
VARIANTS = (("index", 200, 5000), ("table", 200, 5000), ("table", 100, 5000),
            ("table", 50, 5000), ("table", 50, 1000), ("table", 50, 500))
WEIGHTS = {"directional": 0.3, "cosine": 0.03, "rules": 0.1, "neighbours": 0.3, "repeat": 0.3,
           "popularity": 0.03}  # chosen on validation by the calibrated clicks run (RESULTS.md)


def build_cache(cache: Path, events: int, seed: int = 0) -> None:
    """Synthetic log -> sessions -> vectors, blend arrays and both HNSW indexes, in `cache`."""
    import faiss
    import pandas as pd

    from recembed.blend import BlendModel
    from recembed.index import build_index
    from recembed.synth import synth_clicks

    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log = synth_clicks(events, seed=seed)
    ev = log.events[~log.events["user_id"].isin(log.bot_users)]
    n_items = len(log.items)
    item = (ev["item_id"].to_numpy() - 100_000).astype(np.int64)
    user, ts = ev["user_id"].to_numpy(), ev["timestamp"].to_numpy()
    order = np.lexsort((ts, user))
    item, user, ts = item[order], user[order], ts[order]
    new = np.r_[True, (user[1:] != user[:-1]) | (np.diff(ts) > GAP_S)]
    sess = np.cumsum(new) - 1
    print(f"log: {len(item):,} events, {sess[-1] + 1:,} sessions, {n_items:,} items "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    # holdout: sessions starting on the last day
    start_ts = ts[np.flatnonzero(new)][sess]
    test = start_ts >= ts.max() - 86_400
    train = pd.DataFrame({"session": sess[~test], "item": item[~test], "ts": ts[~test]})
    # vectors: a category centre plus noise (input), and a shifted copy (output vectors)
    rng = np.random.default_rng(seed)
    cat = log.items["category"].to_numpy()
    centres = rng.normal(size=(cat.max() + 1, DIM)).astype(np.float32)
    vec = centres[cat] + 0.6 * rng.normal(size=(n_items, DIM)).astype(np.float32)
    ctx = 0.8 * centres[cat] + 0.6 * rng.normal(size=(n_items, DIM)).astype(np.float32)
    codes = np.arange(n_items)
    t0 = time.perf_counter()
    model, _ = BlendModel.build(train, n_items, codes, vec, ctx)
    print(f"blend arrays: {len(model.rules.data):,} rules, "
          f"{model.neighbours.n_sessions:,} indexed sessions ({time.perf_counter() - t0:.0f} s)",
          flush=True)
    pop = np.bincount(train["item"].to_numpy(), minlength=n_items)
    arrays = {"rules_indptr": model.rules.indptr, "rules_indices": model.rules.indices,
              "rules_data": model.rules.data, "popularity": pop.astype(np.float64),
              **{f"nb_{k}": v for k, v in model.neighbours.to_arrays().items()}}
    np.savez(cache / "blend.npz", **arrays)
    np.save(cache / "vectors.npy", vec)
    np.save(cache / "context_vectors.npy", ctx)
    t0 = time.perf_counter()
    for name, x, metric in (("index.faiss", vec, "cosine"), ("index_context.faiss", ctx, "ip")):
        index, _ = build_index(x, factory="HNSW32", metric=metric, ef_construction=80)
        faiss.write_index(index, str(cache / name))
    print(f"indexes: {time.perf_counter() - t0:.0f} s", flush=True)
    # queries: a random prefix (>= 1 item) of each holdout session of >= 2 events
    ts_sess = sess[test]
    it_test = item[test]
    starts = np.flatnonzero(np.r_[True, ts_sess[1:] != ts_sess[:-1]])
    lens = np.diff(np.r_[starts, len(ts_sess)])
    ok = lens >= 2
    starts, lens = starts[ok], lens[ok]
    plen = 1 + (rng.random(len(lens)) * (lens - 1)).astype(np.int64)
    keep = rng.permutation(len(starts))[:50_000]
    q_indptr = np.r_[0, np.cumsum(plen[keep])]
    q_items = np.concatenate([it_test[s:s + n] for s, n in zip(starts[keep], plen[keep],
                                                                strict=True)])
    targets = it_test[starts[keep] + plen[keep]]  # the item that followed each prefix
    np.savez(cache / "queries.npz", indptr=q_indptr, items=q_items, targets=targets)


def load_recommender(cache: Path):
    import faiss

    from recembed.blend import BlendModel, BlendSettings, candidate_tables
    from recembed.serving import Recommender

    vec = np.load(cache / "vectors.npy")
    ctx = np.load(cache / "context_vectors.npy")
    with np.load(cache / "blend.npz") as z:
        extras = {k: z[k] for k in z.files}
    index = faiss.read_index(str(cache / "index.faiss"))
    cindex = faiss.read_index(str(cache / "index_context.faiss"))
    for ix in (index, cindex):
        faiss.ParameterSpace().set_index_parameters(ix, "efSearch=64")
    tables = cache / "tables.npz"
    if not tables.exists():  # what the index stage stores in blend.npz for retrieval = "table"
        t0 = time.perf_counter()
        dir_t, cos_t = candidate_tables(vec, ctx, BlendSettings().candidates,
                                        search=cindex.search, cos_search=index.search)
        np.savez(tables, dir_table=dir_t, cos_table=cos_t)
        print(f"candidate tables: {time.perf_counter() - t0:.0f} s", flush=True)
    with np.load(tables) as z:
        extras.update({k: z[k] for k in z.files})
    ids = np.array([str(100_000 + i) for i in range(len(vec))], dtype=object)
    st = BlendSettings(weights=dict(WEIGHTS))
    model = BlendModel.from_arrays(extras, vec, ctx, search=cindex.search,
                                   cos_search=index.search)
    return Recommender(ids, vec, index, st, {}, None, ctx, model)


def measure(rec, sessions: list[list[str]], n_single: int, batch: int, n_batch: int,
            with_similar: bool = True) -> list[dict]:
    rows = []
    last = [s[-1] for s in sessions]

    def timed(fn, calls: list, n_sessions: int) -> dict:
        """Sessions/s over all calls, and p50 / p99 latency per call (after one warm-up call:
        numba compilation, caches)."""
        fn(calls[0])
        lat = np.empty(len(calls))
        t_all = time.perf_counter()
        for i, a in enumerate(calls):
            t0 = time.perf_counter()
            fn(a)
            lat[i] = time.perf_counter() - t0
        wall = time.perf_counter() - t_all
        return {"sessions/s": round(n_sessions / wall), "p50 ms": float(np.median(lat) * 1e3),
                "p99 ms": float(np.quantile(lat, 0.99) * 1e3)}

    def single(fn, args_list):
        return timed(fn, args_list, len(args_list))

    def batched(fn, args_list):
        return timed(fn, [args_list[i:i + batch] for i in range(0, len(args_list), batch)],
                     len(args_list))

    calls = [("recommend", lambda s: rec.recommend(s, 20), lambda c: rec.recommend(c, 20),
              sessions)]
    if with_similar:
        calls.append(("similar", lambda x: rec.similar([x], 20), lambda c: rec.similar(c, 20),
                      last))
    for name, fn1, fnb, args in calls:
        r = single(fn1, args[:n_single])
        rows.append({"call": name, "mode": "single", "sessions": n_single, **r})
        print(rows[-1], flush=True)
        r = batched(fnb, args[:n_batch])
        rows.append({"call": name, "mode": f"batch of {batch}", "sessions": n_batch, **r})
        print(rows[-1], flush=True)
    return rows


def next_item_quality(rec, items: np.ndarray, indptr: np.ndarray, targets: np.ndarray,
                      n: int) -> tuple[float, float]:
    """Recall@20 and MRR@20 of `recommend` for the item that followed each of the first `n`
    prefixes (their holdout sessions)."""
    coded = [items[indptr[i]:indptr[i + 1]].astype(np.int64) for i in range(n)]
    got = np.concatenate([rec.recommend_rows(coded[i:i + 1000], 20)[0]
                          for i in range(0, n, 1000)])
    hit = got == targets[:n, None]
    rank = np.where(hit, np.arange(1, 21), 0).max(axis=1)
    return (round(float(hit.any(axis=1).mean()), 4),
            round(float(np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0).mean()), 4))


def exact_cosine_agreement(rec, items: np.ndarray, indptr: np.ndarray, n: int) -> str:
    """How often the top-20 changes when the cosine candidates come from an exact search over
    every item instead of the cosine index (code that has `cos_search` only)."""
    model = rec.model
    if n <= 0 or getattr(model, "cos_search", None) is None:
        return ""
    coded = [items[indptr[i]:indptr[i + 1]].astype(np.int64) for i in range(n)]
    fast = model.recommend(coded, rec.settings, 20)
    cs, model.cos_search = model.cos_search, None
    try:
        exact = model.recommend(coded, rec.settings, 20)
    finally:
        model.cos_search = cs
    same_rows = (fast[0] == exact[0]).all(axis=1)
    same_set = np.array([set(a) == set(b) for a, b in zip(fast[0], exact[0], strict=True)])
    line = (f"Cosine candidates from the HNSW item index instead of an exact search over every "
            f"item: on {n:,} sessions the top-20 is identical for {same_rows.mean():.1%} "
            f"(same set: {same_set.mean():.1%}); recall of the 20 items "
            f"{np.mean([len(set(a) & set(b)) / 20 for a, b in zip(fast[0], exact[0], strict=True)]):.2%}.")
    print(line, flush=True)
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="faiss / numba / BLAS threads")
    ap.add_argument("--label", default="after", help="name of this measurement in the table")
    ap.add_argument("--code", default=str(HERE.parent),
                    help="checkout whose recembed is measured (default: this one)")
    ap.add_argument("--events", type=int, default=EVENTS)
    ap.add_argument("--single", type=int, default=2000, help="single-session calls")
    ap.add_argument("--batch", type=int, default=1000, help="sessions per batch call")
    ap.add_argument("--batched", type=int, default=20_000, help="sessions in batch calls")
    ap.add_argument("--agreement", type=int, default=2000,
                    help="sessions compared with exact cosine retrieval (0 = skip)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(args.code).resolve()))
    import faiss

    import recembed

    faiss.omp_set_num_threads(args.threads)
    try:
        import numba

        numba.set_num_threads(args.threads)
    except (ImportError, ValueError):
        pass
    print(f"recembed from {Path(recembed.__file__).parent}, {args.threads} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '')}", flush=True)
    cache = DATA / f"serving_cache_{args.events}"
    if not (cache / "queries.npz").exists():
        build_cache(cache, args.events)
    rec = load_recommender(cache)
    with np.load(cache / "queries.npz") as z:
        indptr, items, targets = z["indptr"], z["items"], z["targets"]
    sessions = [[str(100_000 + x) for x in items[indptr[i]:indptr[i + 1]]]
                for i in range(len(indptr) - 1)]
    t0 = time.perf_counter()
    base = rec.settings
    rows = []
    for retrieval, cands, sample in VARIANTS:
        if args.code != str(HERE.parent) and retrieval == "table":
            continue  # older code: no tables
        if hasattr(base, "retrieval"):
            rec.settings = replace(base, retrieval=retrieval, candidates=cands,
                                   neighbours={"method": "stan", "sample_size": sample})
        got = measure(rec, sessions, args.single, args.batch, args.batched,
                      with_similar=(retrieval, cands, sample) == VARIANTS[0])
        rec20, mrr20 = next_item_quality(rec, items, indptr, targets, args.batched)
        for r in got:
            r.update({"retrieval": retrieval, "candidates": cands, "stan sample": sample})
            if r["call"] == "recommend":
                r.update({"recall@20": rec20, "mrr@20": mrr20})
        rows += got
    rec.settings = base
    agree = exact_cosine_agreement(rec, items, indptr, args.agreement)
    load = os.getloadavg()
    for r in rows:
        r["label"] = args.label
    out = DATA / f"serving_{args.label}.json"
    out.write_text(json.dumps({"rows": rows, "load": load, "threads": args.threads,
                               "agreement": agree}))
    print(f"measured in {time.perf_counter() - t0:.0f} s; load average {load}")
    all_rows, loads = [], []
    for p in sorted(DATA.glob("serving_*.json")):
        d = json.loads(p.read_text())
        first = ("label", "retrieval", "candidates", "stan sample", "call", "mode")
        all_rows += [{**{k: r.get(k, "") for k in first},
                      **{k: v for k, v in r.items() if k not in first}} for r in d["rows"]]
        loads.append(f"{d['rows'][0]['label']}: {d['threads']} threads, load "
                     f"{d['load'][0]:.2f}")
    table = markdown_table(all_rows)
    print(table)
    if not args.no_record:
        append_results(
            f"serving throughput on the {args.events:,}-event synthetic catalogue",
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '')} python "
            f"benchmarks/serving.py {' '.join(sys.argv[1:])}", table,
            f"{len(rec.ids):,} items, HNSW32 efSearch=64 for both indexes, 64-d synthetic "
            f"vectors; blend weights {WEIGHTS}, STAN neighbours, k=20. retrieval index = two "
            "HNSW searches per query; table = per-item candidate tables (blend.npz), searched "
            "once per item on the same indexes; recall@20 / mrr@20 = the item that followed "
            "each prefix in its holdout session (over the batch sessions). Single: "
            "one session per call, latency per call; batch: latency per batch call. Load "
            "average (1 min) when measured: " + "; ".join(loads) + ". The machine's 2 cores "
            "are shared with other agents, so the numbers are noisy. " + agree)


if __name__ == "__main__":
    main()
