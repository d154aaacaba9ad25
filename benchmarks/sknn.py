"""Session-kNN baselines (V-SKNN, STAN, VSTAN) next to pop, SR and item-kNN on the real samples.

Each dataset runs up to sessionize (pipelines/<dataset>.toml, run directory under /tmp), then
every method is evaluated on every holdout query (next-item protocol of recembed.evaluate).

    python benchmarks/sknn.py                       # both samples, appends to RESULTS.md
    python benchmarks/sknn.py --datasets yoochoose --no-append
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # one core: the speed target is per core
os.environ.setdefault("OMP_NUM_THREADS", "1")

from common import append_results, markdown_table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from recembed.config import load_config  # noqa: E402
from recembed.evaluate import evaluate_all  # noqa: E402
from recembed.pipeline import run_pipeline  # noqa: E402
from recembed.stages import STAGES  # noqa: E402

METHODS = ["pop", "sr", "item_knn", "vsknn", "stan", "vstan"]
# Recall@20 (MRR@20) of session-rec's implementations on the same splits (issue 12)
PEERS = {"yoochoose": {"vsknn": "0.574", "stan": "0.576 (0.255)"},
         "diginetica": {"vsknn": "0.430", "stan": "0.452"}}


def evaluate_dataset(dataset: str, workdir: Path) -> list[dict]:
    cfg = load_config(ROOT / "pipelines" / f"{dataset}.toml", ["run.progress=false"])
    run = workdir / dataset
    run_pipeline(cfg, run, stages=["sessionize"], plan=STAGES, echo=lambda s: None)
    train = pd.read_parquet(run / "sessions_train.parquet", columns=["session", "item", "ts"])
    test = pd.read_parquet(run / "sessions_test.parquet", columns=["session", "item"])
    n_items = len(pd.read_parquet(run / "vocabulary.parquet", columns=["code"]))
    evaluate_all(train, test, n_items, ks=[20], baselines=["pop"], max_queries=50)  # JIT warm-up
    t0 = time.perf_counter()
    m = evaluate_all(train, test, n_items, ks=[20], baselines=METHODS, max_queries=0)
    wall = time.perf_counter() - t0
    nq = m["queries"]["queries"]
    print(f"{dataset}: {train['session'].nunique():,} train sessions, {len(train):,} events, "
          f"{n_items:,} items, {nq:,} queries, {wall:.1f} s", flush=True)
    rows = []
    for name in METHODS:
        r, x = m["methods"][name]["allow_repeats"], m["methods"][name]["exclude_prefix"]
        rows.append({
            "dataset": dataset, "method": name, "queries": nq,
            "recall@20": round(r["recall@20"], 4), "mrr@20": round(r["mrr@20"], 4),
            "recall@20 excl. prefix": round(x["recall@20"], 4),
            "fit_s": round(r["fit_seconds"], 3), "score_s": round(r["seconds"], 3),
            "ms/query": round(1000 * r["seconds"] / max(nq, 1), 3),
            "peer recall@20": PEERS.get(dataset, {}).get(name, ""),
        })
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["yoochoose", "diginetica"])
    ap.add_argument("--no-append", action="store_true", help="print only, leave RESULTS.md")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="recembed-sknn-", dir="/tmp") as tmp:
        for ds in args.datasets:
            rows += evaluate_dataset(ds, Path(tmp))
    table = markdown_table(rows)
    notes = ("allow_repeats variant, every holdout query, one core (NUMBA/OMP threads = 1); "
             "score_s covers scoring and ranking both variants. Session-kNN at the defaults in "
             "recembed/sknn.py (`METHODS`, the authors' recommended settings).")
    if args.no_append:
        print(table)
        return
    append_results("session-kNN baselines on the real samples",
                   "python benchmarks/sknn.py " + " ".join(sys.argv[1:]), table, notes)


if __name__ == "__main__":
    main()
