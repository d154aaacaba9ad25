"""Cold start on the DIGINETICA sample (issue 14): the catalog (`product-categories.csv`) gives
every listed item a vector; the holdout's targets unseen in training are scored, not dropped.

    python benchmarks/coldstart.py [--config pipelines/diginetica.toml]
    python benchmarks/coldstart.py --synth 200000   # the synth catalog profile instead

One run directory serves every scheme: the stages before train (ingest, sessionize, calibrate,
corpus) run once and are skipped afterwards; train, index and evaluate rerun per scheme
(`cold.scheme`). "off" is today's pipeline (trained items only) scored the same way, on the same
queries: its cold targets can only be misses. Prints a table and appends it to RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import append_results, markdown_table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recembed.config import load_config  # noqa: E402
from recembed.pipeline import run_pipeline  # noqa: E402
from recembed.stages import STAGES  # noqa: E402

SCHEMES = ("off", "context", "pooling", "knn")


def warm_prefix_recall(run_dir: Path, cfg, model: str, k: int = 20) -> tuple[dict, int]:
    """Recall@k of the ann and serving paths on warm queries only: each holdout session cut
    before its first cold item, so no prefix holds one (cold items stay candidates). What is
    left of a scheme's effect on warm items: its warm vectors (context changes them) and cold
    candidates crowding warm targets. ({method: recall}, queries)."""
    import numpy as np
    import pandas as pd

    from recembed import artifacts as A
    from recembed.evaluate import embedding_scorer, evaluate_all, serving_recommend
    from recembed.serving import Recommender

    train = pd.read_parquet(A.SESSIONS_TRAIN.path(run_dir), columns=["session", "item", "ts"])
    test = pd.read_parquet(A.SESSIONS_TEST.path(run_dir), columns=["session", "item"])
    n_vocab = len(pd.read_parquet(A.VOCABULARY.path(run_dir), columns=["code"]))
    cat = pd.read_parquet(A.CATALOG.path(run_dir), columns=["code"])
    n = max(n_vocab, int(cat["code"].max()) + 1)
    pop = np.bincount(train["item"].to_numpy(), minlength=n).astype(np.float64)
    cold = pd.Series(pop[test["item"].to_numpy()] == 0, index=test.index)
    test = test[~cold.groupby(test["session"]).cummax()]
    listed = np.zeros(n, bool)
    listed[cat["code"].to_numpy()] = True
    emb = A.Embeddings.load(run_dir)
    e = cfg.evaluate
    scorer = embedding_scorer(emb.vectors, emb.codes, n, pop, strategy="ann",
                              context=emb.context, decay=e.decay, history=e.history)
    rec = serving_recommend(Recommender.load(run_dir), emb.codes, n)
    m = evaluate_all(train, test, n, ks=[k], baselines=[], embeddings={f"{model}:ann": scorer},
                     recommenders={f"{model}:serving": rec}, max_queries=e.max_queries,
                     seed=cfg.run.seed, catalog=listed)
    return ({name: v["allow_repeats"][f"recall@{k}"] for name, v in m["methods"].items()},
            m["queries"]["queries"])


def _path(method: str) -> str:
    """"item2vec:serving" -> ":serving"."""
    return method[method.index(":"):]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default=str(ROOT / "pipelines" / "diginetica.toml"))
    ap.add_argument("--threads", type=int, default=1,
                    help="run.threads (1: gensim is deterministic, schemes compare exactly)")
    ap.add_argument("--synth", type=int, default=0,
                    help="events of the synth catalog profile to run on instead (0: --config)")
    ap.add_argument("--schemes", default=",".join(SCHEMES),
                    help="comma-separated cold.scheme values, 'off' first")
    ap.add_argument("--set", action="append", default=[],
                    help="extra config overrides, section.key=value (e.g. cold.candidate_scale=0.5)")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="coldstart-"))
    config, base = args.config, []
    if args.synth:
        from recembed.synth import synth_catalog, write_synth

        ev, items = write_synth(synth_catalog(args.synth, seed=0), work / "clicks.csv")
        config = None
        base = [f"input.paths=['{ev}']", f"input.catalog.path='{items}'",
                "input.catalog.attributes=['category', 'price']",
                "input.catalog.numeric=['price']", "input.catalog.category='category'",
                "input.catalog.listed='listed_at'"]
    rows, warm_off, prefix_off = [], None, None
    k = 20
    for scheme in args.schemes.split(","):
        cfg = load_config(config, [*base, f"run.runs_dir='{work}'", "run.progress=false",
                                        f"run.threads={args.threads}", f"cold.scheme='{scheme}'",
                                   *args.set])
        t0 = time.perf_counter()
        rep = run_pipeline(cfg, run_dir=work / "run", plan=STAGES, echo=lambda s: None)
        secs = time.perf_counter() - t0
        m = json.loads((rep.run_dir / "metrics.json").read_text())
        tr = json.loads((rep.run_dir / "train.json").read_text())
        q = m["queries"]
        prefix, n_prefix = warm_prefix_recall(rep.run_dir, cfg, tr["model"], k)
        for name, meth in m["methods"].items():
            if scheme != "off" and ":" not in name:
                continue  # baselines do not depend on the scheme
            if ":" in name and not (name.endswith(":serving") or name.endswith(":ann")):
                continue
            v = meth["allow_repeats"]
            row = {"scheme": scheme if ":" in name else "(baseline)", "method": name,
                   f"R@{k} overall": v[f"recall@{k}"], f"R@{k} warm": v[f"recall@{k}_warm"],
                   f"R@{k} cold": v[f"recall@{k}_cold"],
                   f"R@{k} warm prefix+target": prefix.get(name, ""),
                   "side_info items": tr.get("origin_side_info", 0),
                   "none items": tr.get("origin_none", 0),
                   "train+index+eval s": round(secs, 1)}
            rows.append(row)
        if scheme == "off":
            # by path (":ann", ":serving"): calibration runs per scheme (the cold rows are in
            # its validation) and may choose another corpus, hence another model name
            warm_off = {_path(n): mm["allow_repeats"][f"recall@{k}_warm"]
                        for n, mm in m["methods"].items() if ":" in n}
            prefix_off = {_path(n): v for n, v in prefix.items()}
        print(f"{scheme}: done in {secs:.1f} s", flush=True)
    for r in rows:
        base = r["scheme"] in ("off", "(baseline)")
        r["warm Δ vs off"] = "" if base else round(
            r[f"R@{k} warm"] - warm_off[_path(r["method"])], 4)
        r["warm-prefix Δ vs off"] = "" if base else round(
            r[f"R@{k} warm prefix+target"] - prefix_off[_path(r["method"])], 4)
    table = markdown_table(rows)
    notes = (f"{q['targets']:,} holdout targets, {q['queries']:,} scored (max_queries), "
             f"{q.get('cold_share', 0):.1%} of them cold (unseen in training, listed in the "
             "catalog). Every method is scored on the same queries; `off` = today's pipeline "
             "(trained items only), whose cold targets can only be misses. `category` = the "
             "query item's category, most recently listed first ("
             + ("by the catalog's listed_at). " if args.synth else
                "the catalog has no listing date: by first event in the training window, items "
                "never clicked there as the newest). ")
             + "ann = decayed prefix sum . context vectors "
             "(index_context.faiss); serving = Recommender.recommend (the blend). "
             "warm Δ = warm-target Recall@20 minus the same method's under `off` (limit: -0.01). "
             f"warm prefix+target: {n_prefix:,} queries of the holdout sessions cut before "
             "their first cold item (no cold item in any prefix; cold items stay candidates): "
             "the scheme's effect on warm items alone. "
             f"run.threads={args.threads}; overrides: {args.set or 'none'}.")
    print(table)
    if not args.no_append:
        title = (f"cold start on the synth catalog profile ({args.synth:,} events)"
                 if args.synth else "cold start on DIGINETICA (catalog = product-categories.csv)")
        command = "python benchmarks/coldstart.py" + (f" --synth {args.synth}" if args.synth
                                                      else "") + "".join(
            f" --set {x}" for x in args.set)
        append_results(title, command, table, notes)
    else:
        print(notes)


if __name__ == "__main__":
    main()
