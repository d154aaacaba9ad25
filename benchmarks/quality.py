"""Quality of every method on the real samples (../shared/data), plus the tuning sweeps and the
Recall@20-vs-training-tokens curves the config defaults were chosen from.

    python benchmarks/quality.py                      # comparison tables (samples + synth profiles)
    python benchmarks/quality.py --sweep              # + hyper-parameter sweeps and token curves

The comparison is one default run per dataset (`recembed run` on pipelines/<dataset>.toml, or a
synth profile with a config holding only [input]): the run calibrates itself on its validation
split; the baselines are evaluated on the same holdout in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
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


def default_run(dataset: str, workdir: Path, extra: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """One run at the defaults (self-calibrated): a sample's pipelines/<name>.toml, or a synth
    profile with a config holding only [input]; `extra` = --set overrides. (metrics.json, run
    info)."""
    from profiles import prepare

    ov = [f"run.runs_dir='{workdir}'", "run.progress=false", *extra]
    if (ROOT / "pipelines" / f"{dataset}.toml").exists():
        cfg = load_config(ROOT / "pipelines" / f"{dataset}.toml", ov)
    else:
        toml, _ = prepare(dataset, PROFILE_EVENTS, 0)
        cfg = load_config(toml, ov)
    t0 = time.perf_counter()
    rep = run_pipeline(cfg, plan=STAGES, echo=lambda s: None)
    metrics = json.loads((rep.run_dir / "metrics.json").read_text())
    cal = json.loads((rep.run_dir / "calibration.json").read_text())
    info = {"wall_s": time.perf_counter() - t0,
            "calibrate_s": rep.stages["calibrate"].get("seconds", 0),
            "fit_s": sum(st.get("seconds", 0) for n, st in rep.stages.items()
                         if n in ("graph", "walks", "sequences", "train", "index")),
            "chosen": f"{cal.get('corpus')}, {cal.get('target_tokens')} tokens, "
                      f"post-processing {cal.get('postprocess')}, "
                      f"weights {(cal.get('blend') or {}).get('settings', {}).get('weights')}",
            "vectors": _vectors_note(cal),
            "queries": metrics["queries"]["queries"]}
    return metrics, info


PROFILE_EVENTS = 200_000


def _vectors_note(cal: dict) -> str:
    """The vectors-alone objective on validation of the chosen candidate, per transform tried."""
    best = next((c for c in cal.get("candidates", [])
                 if c.get("corpus") == cal.get("corpus")
                 and c.get("target_tokens") == cal.get("target_tokens")), None)
    if not best or "postprocess_tried" not in best:
        return ""
    parts = [f"{s}: ann {r['ann']['objective']:.4f} (se {r['ann']['se']:.4f}), "
             f"last {r['last']['objective']:.4f}" for s, r in best["postprocess_tried"].items()]
    return ("Validation vectors-alone objective (Recall@20 + MRR@20) of the chosen candidate "
            "per transform: " + "; ".join(parts) + ".")


def run(dataset: str, overrides: list[str], workdir: Path, baselines: bool = False) -> dict:
    """Train + evaluate one configuration of a sample (the sweeps); metrics.json + timings."""
    ov = [f"run.runs_dir='{workdir}'", "run.progress=false", "evaluate.ks=[10,20]",
          "calibrate.enabled=false", *overrides]
    if not baselines:
        ov.append("evaluate.baselines=[]")
    cfg = load_config(ROOT / "pipelines" / f"{dataset}.toml", ov)
    t0 = time.perf_counter()
    rep = run_pipeline(cfg, plan=STAGES, echo=lambda s: None)
    metrics = json.loads((rep.run_dir / "metrics.json").read_text())
    metrics["fit_seconds"] = sum(st.get("seconds", 0) for n, st in rep.stages.items()
                                 if n in ("graph", "walks", "sequences", "train"))
    metrics["wall_seconds"] = time.perf_counter() - t0
    return metrics


def comparison(dataset: str, workdir: Path, extra: tuple[str, ...] = ()
               ) -> tuple[list[dict], dict]:
    """Every baseline and recembed's paths (recommend, the ANN-only strategies) of one default
    run, with seconds (baselines: fit + scoring; recembed: the run's training and calibration)."""
    m, info = default_run(dataset, workdir, extra)
    rows = []
    for method, res in m["methods"].items():
        r = res["allow_repeats"]
        secs = r.get("fit_seconds", 0) + r.get("seconds", 0)
        rows.append({
            "method": method, "recall@20": round(r["recall@20"], 4),
            "mrr@20": round(r["mrr@20"], 4), "coverage@20": round(r["coverage@20"], 3),
            "recall@20 excl. prefix": round(res["exclude_prefix"]["recall@20"], 4),
            "seconds": round(secs, 2)})
        print(rows[-1], flush=True)
    return rows, info


# the baseline the recorded sweeps varied one setting at a time from (the defaults back then)
SWEEP_BASE = ["walks.enabled=false", "train.epochs=20", "train.max_tokens=0"]


def sweep(dataset: str, workdir: Path) -> list[dict]:
    """One-at-a-time sweeps around SWEEP_BASE, then token curves (epochs for item2vec, walks
    per node for DeepWalk)."""
    grid = [("train.window", [1, 2, 3, 5]), ("train.ns_exponent", [-0.5, 0.0, 0.5, 0.75]),
            ("train.negative", [5, 10, 20]), ("train.vector_size", [32, 64, 128])]
    rows = []
    for key, values in grid:
        for v in values:
            m = run(dataset, [*SWEEP_BASE, f"{key}={v}"], workdir)
            rows.append(_row("item2vec", key, v, m))
    # token curves: corpus size x epochs
    for rep in (1.0, 2.0, 4.0):
        for epochs in (10, 20, 40, 80):
            m = run(dataset, [*SWEEP_BASE, f"sequences.replication={rep}",
                              f"train.epochs={epochs}"], workdir)
            rows.append(_row("item2vec", "replication x epochs", f"{rep:g}x{epochs}", m))
    for wpn, length, epochs in ((1, 20, 10), (2, 20, 5), (2, 20, 10), (2, 20, 20), (5, 20, 5),
                                (5, 20, 10), (10, 20, 10), (10, 40, 10), (5, 10, 10)):
        m = run(dataset, ["sequences.enabled=false", "walks.enabled=true",
                          f"walks.walks_per_node={wpn}",
                          f"walks.walk_length={length}", f"train.epochs={epochs}"], workdir)
        rows.append(_row("deepwalk", "walks/node x length x epochs", f"{wpn}x{length}x{epochs}",
                         m))
    for key, values in (("serving.decay", [0.3, 0.5, 0.8]), ("serving.history", [1, 3, 5, 10])):
        for v in values:
            m = run(dataset, [*SWEEP_BASE, f"{key}={v}"], workdir)
            rows.append(_row("item2vec", key, v, m))
    for wpn, epochs in ((2, 10), (2, 20), (5, 10)):
        m = run(dataset, ["walks.enabled=true", f"walks.walks_per_node={wpn}",
                          f"train.epochs={epochs}"], workdir)
        rows.append(_row("item2vec+deepwalk", "walks/node x epochs", f"{wpn}x{epochs}", m))
    return rows


def _row(model: str, key: str, value, m: dict) -> dict:
    name, r20 = max(((n, v["allow_repeats"]["recall@20"]) for n, v in m["methods"].items()
                     if not n.endswith(":serving")),
                    key=lambda t: t[1])
    t = m["train"]
    r = {"model": model, "setting": key, "value": value,
         "tokens_trained": t["tokens_trained"], "best strategy": name.split(":")[-1],
         "recall@20": round(r20, 4), "mrr@20": round(m["methods"][name]["allow_repeats"]["mrr@20"], 4),
         "serving recall@20": round(next((v["allow_repeats"]["recall@20"] for n, v in
                                          m["methods"].items() if n.endswith(":serving")), 0), 4),
         "train_s": t["train_seconds"], "words/s": t["words_per_s"]}
    print(r, flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["yoochoose", "diginetica", "clicks",
                                                      "ratings", "histories", "purchases",
                                                      "music"])
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--no-compare", action="store_true", help="skip the comparison tables")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override of the comparison runs (e.g. train.postprocess=none)")
    args = ap.parse_args()
    extra = tuple(args.set)
    sets = "".join(f" --set {x}" for x in extra)
    with tempfile.TemporaryDirectory() as tmp:
        for ds in args.datasets:
            if not args.no_compare:
                load0 = os.getloadavg()[0]
                rows, info = comparison(ds, Path(tmp), extra)
                table = markdown_table(rows)
                info["vectors"] += (f" Load average (1 min) {load0:.2f} at the start, "
                                    f"{os.getloadavg()[0]:.2f} at the end: a shared machine "
                                    "(other jobs ran beside it), so seconds are loose.")
            if not args.no_compare and not args.no_record:
                append_results(
                    f"quality on {ds} (defaults{sets}, self-calibrated)",
                    f"python benchmarks/quality.py --datasets {ds}{sets}", table,
                    f"{info['queries']:,} holdout queries; allow_repeats variant unless noted "
                    "(only the query item itself is excluded). `:serving` is "
                    "`Recommender.recommend`; `:ann` the inner-product index over the context "
                    "vectors queried with the decayed prefix; `:last` the cosine `similar` path. "
                    f"Run: {info['wall_s']:.0f} s in all, calibration {info['calibrate_s']:.0f} "
                    f"s, graph+walks+corpus+training+index {info['fit_s']:.0f} s. Chosen on "
                    f"validation: {info['chosen']}. Synth profiles: {PROFILE_EVENTS:,} events, "
                    "seed 0, config with only [input]. " + info["vectors"])
            if args.sweep:
                table = markdown_table(sweep(ds, Path(tmp)))
                if not args.no_record:
                    append_results(f"tuning sweep and token curve on {ds}",
                                   f"python benchmarks/quality.py --sweep --datasets {ds}", table,
                                   "One setting changed at a time from the defaults; best "
                                   "embedding strategy per row.")


if __name__ == "__main__":
    main()
