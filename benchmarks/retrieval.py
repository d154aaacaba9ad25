"""Serving variants on one trained model: where the candidates come from (`serving.retrieval`
index / table) and how many (`serving.candidates`), scored on the run's holdout.

One default (self-calibrated) run per dataset up to the index stage (a sample's
pipelines/<name>.toml, or a synth profile with a config holding only [input]); then the same
vectors, rules and session index are served four ways: index and table retrieval, each at 200
candidates and at the count calibration chose. Only the serving settings differ, so any change
in Recall@20 / MRR@20 is theirs (a fresh run would add training noise of +-0.005).

    python benchmarks/retrieval.py                       # yoochoose, diginetica, clicks
    python benchmarks/retrieval.py --datasets clicks --no-record
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import append_results, markdown_table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recembed import artifacts as A  # noqa: E402
from recembed.config import load_config  # noqa: E402
from recembed.pipeline import run_pipeline  # noqa: E402
from recembed.stages import STAGES  # noqa: E402


def variants(dataset: str, workdir: Path, max_queries: int) -> list[dict]:
    """Rows (dataset, retrieval, candidates, recall@20, mrr@20, seconds) of one dataset."""
    import pandas as pd

    from recembed.evaluate import evaluate_all, serving_recommend
    from recembed.serving import Recommender

    over = [f"run.runs_dir='{workdir}'", "run.progress=false", "evaluate.enabled=false"]
    if (ROOT / "pipelines" / f"{dataset}.toml").exists():
        cfg = load_config(ROOT / "pipelines" / f"{dataset}.toml", over)
    else:
        from profiles import prepare

        toml, _ = prepare(dataset, 200_000, 0)
        cfg = load_config(toml, over)
    run = run_pipeline(cfg, plan=STAGES, stages=["index"], echo=lambda s: None).run_dir
    train = pd.read_parquet(run / "sessions_train.parquet")
    test = pd.read_parquet(run / "sessions_test.parquet")
    n_items = len(pd.read_parquet(run / "vocabulary.parquet", columns=["code"]))
    codes = A.Embeddings.load(run).codes
    chosen = Recommender.load_run(run).settings
    rows = []
    for retrieval, cands in (("index", 200), ("table", 200), ("index", chosen.candidates),
                             ("table", chosen.candidates)):
        if (retrieval, cands) in {(r["retrieval"], r["candidates"]) for r in rows}:
            continue
        rec = Recommender.load_run(run)
        rec.settings = replace(chosen, retrieval=retrieval, candidates=cands)
        t0 = time.perf_counter()
        raw = evaluate_all(train, test, n_items, ks=[20], baselines=[],
                           recommenders={"serving": serving_recommend(rec, codes, n_items)},
                           max_queries=max_queries, seed=0)
        m = raw["methods"]["serving"]["allow_repeats"]
        rows.append({"dataset": dataset, "items": len(codes), "retrieval": retrieval,
                     "candidates": cands,
                     "chosen": "yes" if (retrieval, cands) == (chosen.retrieval,
                                                               chosen.candidates) else "",
                     "recall@20": round(m["recall@20"], 4), "mrr@20": round(m["mrr@20"], 4),
                     "queries": raw["queries"]["queries"],
                     "seconds": round(time.perf_counter() - t0, 2)})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["yoochoose", "diginetica", "clicks"])
    ap.add_argument("--max-queries", type=int, default=10_000)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for d in args.datasets:
            rows += variants(d, Path(tmp) / d, args.max_queries)
    table = markdown_table(rows)
    print(table)
    if not args.no_record:
        append_results(
            "serving variants on one trained model (retrieval x candidates)",
            f"python benchmarks/retrieval.py {' '.join(sys.argv[1:])}", table,
            "Same run, same vectors and blend weights; only serving.retrieval and "
            "serving.candidates change. `chosen` = what the run itself serves (retrieval auto, "
            "candidates chosen on validation). The session-kNN baselines and the run's other "
            "numbers are in the quality tables.")


if __name__ == "__main__":
    main()
