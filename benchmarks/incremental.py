"""Incremental nights against full retrains (`train.mode`, recembed/incremental.py).

A synth log (`recembed.synth`, a profile over several weeks) is cut into consecutive nightly
inputs: night k holds the events before day `first_day + k + 1`, and its holdout
(`holdout.days = 1`) is day `first_day + k`, the day after its training data. Two chains of
nightly runs publish into their own roots: "full" (`train.mode = "full"`) and "incremental"
(`train.mode = "incremental"`, `train.full_every_days` and `train.replay_share` as given; its
first night is full: nothing is published yet). Per night and chain: which mode ran, holdout
Recall@20 and MRR@20 of `recommend` (the blend) and of the vectors alone (`ann`, the
directional path over the context vectors) with standard errors (binomial for recall, from the
95% interval for MRR), training seconds and tokens, and neighbour drift (overlap@10 of the
items' top-10 neighbours with the previous night's version of the same chain; publish's
drift). The two chains' versions of a night are also scored on the same holdout queries, so
the difference incremental - full comes with the standard error of the paired per-query
differences (the tie rule's standard error). Calibration is off (the same training amount every night, `--target-tokens`), so the
two chains differ only by the training mode.

Decision rule (the issue's): `train.mode = "incremental"` becomes the default only if it keeps
holdout Recall@20 (of `recommend` and of the vectors alone) within one paired standard error
of the full retrain on every incremental night, at under half of its training time. The outcome is recorded in benchmarks/RESULTS.md
("incremental nights") and `recembed/incremental.py`'s docstring.

    nice -n 5 python benchmarks/incremental.py [--profile clicks] [--events 150000]
        [--days 21] [--first-day 14] [--nights 5] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import DATA, append_results, markdown_table

DAY = 86_400


def nightly_inputs(profile: str, events: int, days: int, first_day: int, nights: int,
                   seed: int, out: Path) -> list[Path]:
    """One CSV per night: the log's events before day first_day + k + 1 (k = 0..nights-1)."""
    from recembed.synth import synth_profile, write_synth

    out.mkdir(parents=True, exist_ok=True)
    full = out / "all.csv"
    write_synth(synth_profile(profile, events, seed=seed, days=days), full)
    df = pd.read_csv(full)
    ts = (pd.to_datetime(df["timestamp"]) - pd.Timestamp("1970-01-01", tz="UTC")) \
        // pd.Timedelta("1s")
    t0 = int(ts.min()) // DAY * DAY
    paths = []
    for k in range(nights):
        p = out / f"night{k + 1}" / "clicks.csv"
        p.parent.mkdir(exist_ok=True)
        df[ts < t0 + (first_day + k + 1) * DAY].to_csv(p, index=False)
        paths.append(p)
    return paths


def se_recall(p: float, n: int) -> float:
    """Binomial standard error of a recall over n queries."""
    return math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))


def run_night(log: Path, work: Path, chain: str, args) -> dict:
    """One nightly run of a chain; the row of the table."""
    from recembed import artifacts as A
    from recembed.config import load_config
    from recembed.pipeline import run_pipeline
    from recembed.stages import STAGES

    cfg = load_config(None, [
        f"input.paths=['{log}']", "input.categories_path=''",
        f"run.runs_dir='{work / 'runs'}'", f"run.name='{chain}'",
        f"publish.dir='{work / ('published-' + chain)}'", "publish.enabled=true",
        "publish.force=true", "holdout.days=1.0", "run.progress=false",
        f"run.threads={args.threads}", "train.workers=1", "calibrate.enabled=false",
        f"train.target_tokens={args.target_tokens}", "evaluate.baselines=['pop']",
        "evaluate.strategies=['ann']", f"evaluate.max_queries={args.max_queries}",
        "evaluate.report=false", f"train.mode='{chain}'",
        f"train.full_every_days={args.full_every_days}",
        f"train.replay_share={args.replay_share}", f"run.seed={args.seed}"])
    rep = run_pipeline(cfg, plan=STAGES, echo=lambda s: None)
    rd = rep.run_dir
    tr = json.loads(A.TRAIN_STATS.path(rd).read_text())
    m = A.Metrics.load(A.METRICS.path(rd))
    pub = json.loads(A.PUBLISH_INFO.path(rd).read_text())
    row = {"chain": chain, "ran": tr["mode"]}
    for label, meth in (("serving", m.serving), ("ann", next(
            x for x in m.methods.values() if x.name.endswith(":ann")))):
        s = meth.allow_repeats
        n = int(s.values["queries"])
        r = s.recall(20)
        mrr = s.values["mrr@20"]
        mrr_se = (s.values["ci95_hi:mrr@20"] - s.values["ci95_lo:mrr@20"]) / 3.92
        row[f"{label} R@20"] = r
        row[f"{label} R@20 se"] = se_recall(r, n)
        row[f"{label} MRR@20"] = mrr
        row[f"{label} MRR se"] = mrr_se
    row["queries"] = int(m.serving.allow_repeats.values["queries"])
    row["train s"] = rep.stages["train"]["seconds"]
    row["gensim s"] = tr["train_seconds"]
    row["tokens trained"] = int(tr["tokens_trained"])
    row["drift overlap@10"] = pub["drift"].get("overlap@10", float("nan"))
    row["reason"] = tr["mode_reason"]
    row["run_dir"] = rd
    row["version_dir"] = Path(pub["path"])
    return row


def paired(full: dict, inc: dict, max_queries: int, seed: int) -> dict:
    """Both chains' versions of one night on the same holdout queries: per-query hits@20 of
    `recommend` (the published version, as served) and of the vectors alone (`ann` over the
    run's vectors), and the mean and standard error of the paired differences (incremental -
    full). Both runs of a night read the same input, so their codes agree (checked)."""
    from recembed import artifacts as A
    from recembed.evaluate import (
        embedding_scorer,
        make_queries,
        per_query_objective,
        serving_recommend,
        top_k_lists,
    )
    from recembed.serving import Recommender

    rd_f, rd_i = full["run_dir"], inc["run_dir"]
    vocab = pd.read_parquet(A.VOCABULARY.path(rd_i), columns=["code", "id"])
    other = pd.read_parquet(A.VOCABULARY.path(rd_f), columns=["code", "id"])
    assert vocab.equals(other), "the two chains' runs of a night must read the same input"
    train = pd.read_parquet(A.SESSIONS_TRAIN.path(rd_i), columns=["session", "item"])
    test = pd.read_parquet(A.SESSIONS_TEST.path(rd_i), columns=["session", "item"])
    n = len(vocab)
    pop = np.bincount(train["item"].to_numpy(), minlength=n).astype(np.float64)
    q, _ = make_queries(test, pop > 0, max_queries=max_queries, seed=seed)
    code_of = pd.Series(vocab["code"].to_numpy(), index=vocab["id"].astype(str))
    hits = {}
    for chain, r in (("full", full), ("incremental", inc)):
        rec = Recommender.load(r["version_dir"])
        rows_item = code_of.reindex([str(x) for x in rec.ids]).fillna(-1).to_numpy()
        lists = top_k_lists(None, q, n, k=20, recommender=serving_recommend(
            rec, rows_item.astype(np.int64), n))["allow_repeats"]
        hits[chain, "recommend"] = per_query_objective(lists, q.target)[0]
        emb = A.Embeddings.load(r["run_dir"])
        sc = embedding_scorer(emb.vectors, emb.codes, n, pop, strategy="ann",
                              context=emb.context, decay=0.65, history=10)
        lists = top_k_lists(sc, q, n, k=20, popularity=pop, candidates=pop > 0)["allow_repeats"]
        hits[chain, "ann"] = per_query_objective(lists, q.target)[0]
    out = {"paired queries": len(q)}
    for path in ("recommend", "ann"):
        d = hits["incremental", path] - hits["full", path]
        out[f"Δ {path} R@20"] = float(d.mean())
        out[f"paired se {path}"] = float(d.std(ddof=1) / math.sqrt(max(len(d), 1)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="clicks")
    ap.add_argument("--events", type=int, default=150_000)
    ap.add_argument("--days", type=int, default=21)
    ap.add_argument("--first-day", type=int, default=14)
    ap.add_argument("--nights", type=int, default=5)
    ap.add_argument("--target-tokens", type=int, default=2_000_000)
    ap.add_argument("--full-every-days", type=float, default=7.0)
    ap.add_argument("--replay-share", type=float, default=0.1)
    ap.add_argument("--max-queries", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    work = DATA / f"incremental_{args.profile}_{args.events}"
    shutil.rmtree(work, ignore_errors=True)
    logs = nightly_inputs(args.profile, args.events, args.days, args.first_day, args.nights,
                          args.seed, work / "inputs")
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    rows = []
    for k, log in enumerate(logs):
        for chain in ("full", "incremental"):
            row = {"night": k + 1, **run_night(log, work, chain, args)}
            rows.append(row)
            print({key: (round(v, 4) if isinstance(v, float) else v) for key, v in row.items()},
                  flush=True)
        rows[-1].update(paired(rows[-2], rows[-1], args.max_queries, args.seed))
        print({key: round(v, 4) for key, v in rows[-1].items() if key.startswith(("Δ", "paired"))},
              flush=True)
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()

    table_rows, verdict = [], []
    for k in range(1, args.nights + 1):
        f = next(r for r in rows if r["night"] == k and r["chain"] == "full")
        i = next(r for r in rows if r["night"] == k and r["chain"] == "incremental")
        for r in (f, i):
            table_rows.append({
                "night": k, "chain": r["chain"], "ran": r["ran"],
                "recommend R@20 ± se": f"{r['serving R@20']:.4f} ± {r['serving R@20 se']:.4f}",
                "recommend MRR@20": f"{r['serving MRR@20']:.4f} ± {r['serving MRR se']:.4f}",
                "ann R@20 ± se": f"{r['ann R@20']:.4f} ± {r['ann R@20 se']:.4f}",
                "ann MRR@20": f"{r['ann MRR@20']:.4f} ± {r['ann MRR se']:.4f}",
                "train stage s": round(r["train s"], 2), "gensim s": round(r["gensim s"], 2),
                "tokens trained": r["tokens trained"],
                "drift overlap@10": "" if k == 1 else round(r["drift overlap@10"], 3)})
        if i["ran"] == "incremental":
            tie = all(i[f"Δ {p} R@20"] > -i[f"paired se {p}"] for p in ("recommend", "ann"))
            verdict.append({
                "night": k,
                "Δ recommend R@20 ± paired se":
                    f"{i['Δ recommend R@20']:+.4f} ± {i['paired se recommend']:.4f}",
                "Δ ann R@20 ± paired se": f"{i['Δ ann R@20']:+.4f} ± {i['paired se ann']:.4f}",
                "no loss beyond 1 se": "yes" if tie else "no",
                "train time share": round(i["train s"] / f["train s"], 3),
                "token share": round(i["tokens trained"] / f["tokens trained"], 3)})
    inc_rows = verdict
    keep = bool(inc_rows) and all(v["no loss beyond 1 se"] == "yes" for v in inc_rows) and \
        np.mean([v["train time share"] for v in inc_rows]) < 0.5
    table = markdown_table(table_rows) + "\n\n" + markdown_table(verdict)
    facts = (f"synth {args.profile}, {args.events:,} events over {args.days} days; nights "
             f"{args.first_day + 1}..{args.first_day + args.nights} (holdout = the next day); "
             f"calibration off, train.target_tokens = {args.target_tokens:,}, train.workers = 1, "
             f"incremental: full_every_days = {args.full_every_days:g}, replay_share = "
             f"{args.replay_share:g}. Δ = incremental - full on the same holdout queries, with the "
             "standard error of the paired per-query differences. Load average before / after: "
             f"{load0[0]:.2f} / {load1[0]:.2f}; {wall:.0f} s in all. Ties: a loss below one "
             "paired standard error. Verdict: " +
             ("incremental keeps quality within one SE at a fraction of the training time on "
              "every incremental night." if keep else
              "incremental does NOT keep quality within one SE on every incremental night "
              "at under half the training time, so the default stays train.mode = \"full\"."))
    print(table, facts, sep="\n\n")
    if not args.no_record:
        append_results(f"incremental nights ({args.profile}, {args.events:,} events)",
                       "nice -n 5 python benchmarks/incremental.py " + " ".join(
                           f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                           if k != "no_record"), table, facts)


if __name__ == "__main__":
    main()
