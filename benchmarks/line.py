"""LINE (recembed/line.py) against today's skip-gram vectors, on the samples and synth profiles.

    python benchmarks/line.py [--datasets diginetica yoochoose purchases music]
                              [--variants sgns line concat] [--set KEY=VALUE ...] [--no-record]

Per dataset, one run per variant at the same training amount, calibration off (the corpus and
the amount fixed, so only the vectors differ; the blend at its defaults):

- `sgns`: skip-gram on sessions + walks (today's default corpus "both");
- `line`: LINE vectors alone (`line.mode = "alone"`);
- `concat`: LINE's appended to the skip-gram's (`line.mode = "concat"`, twice the dimension).

It prints, and appends to RESULTS.md, Recall@20 and MRR@20 (allow_repeats) of the `:ann`
(directional inner product over the context vectors), `:last` (cosine `similar`) and `:serving`
(`Recommender.recommend`) paths, and the training seconds (skip-gram, LINE, and
graph + walks + corpus + train in all). The machine is shared: the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import append_results, markdown_table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recembed.config import load_config  # noqa: E402
from recembed.pipeline import run_pipeline  # noqa: E402
from recembed.stages import STAGES  # noqa: E402

VARIANTS = {
    "sgns": ["walks.enabled=true", "sequences.enabled=true", "line.mode=off"],
    "line": ["line.mode=alone"],
    "concat": ["walks.enabled=true", "sequences.enabled=true", "line.mode=concat"],
}
PROFILE_EVENTS = 100_000
TOKENS = 3_000_000  # the training amount without calibration (settings.DEFAULT_TARGET_TOKENS)


def config_path(dataset: str) -> Path:
    """pipelines/<dataset>.toml, or a synth profile's [input]-only TOML (benchmarks/profiles)."""
    if (ROOT / "pipelines" / f"{dataset}.toml").exists():
        return ROOT / "pipelines" / f"{dataset}.toml"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from profiles import prepare

    return prepare(dataset, PROFILE_EVENTS, 0)[0]


def one_run(toml: Path, variant: str, extra: list[str], workdir: Path) -> dict:
    """Run one variant; its :ann / :last / :serving metrics and seconds."""
    ov = [f"run.runs_dir='{workdir}'", "run.progress=false", "calibrate.enabled=false",
          "evaluate.baselines=['item_knn', 'vsknn']", f"train.target_tokens={TOKENS}",
          "run.threads=2", "train.workers=1", *VARIANTS[variant], *extra]
    cfg = load_config(toml, ov)
    t0 = time.perf_counter()
    rep = run_pipeline(cfg, plan=STAGES, echo=lambda s: None)
    run_dir = rep.run_dir
    m = json.loads((run_dir / "metrics.json").read_text())
    tr = json.loads((run_dir / "train.json").read_text())
    line = tr.get("line", {})
    sg = 0.0 if variant == "line" else tr["train_seconds"]
    row = {"variant": variant, "model": tr["model"],
           "dim": int(np.load(run_dir / "vectors.npy", mmap_mode="r").shape[1])}
    for path in ("ann", "last", "serving"):
        name = next(n for n in m["methods"] if n.endswith(f":{path}"))
        r = m["methods"][name]["allow_repeats"]
        row[f"{path} R@20"] = round(r["recall@20"], 4)
        row[f"{path} MRR@20"] = round(r["mrr@20"], 4)
    for b in ("item_knn", "vsknn"):
        if b in m["methods"]:
            row[f"{b} R@20"] = round(m["methods"][b]["allow_repeats"]["recall@20"], 4)
    row["sgns_s"] = round(sg, 1)
    row["line_s"] = round(line.get("train_seconds", 0.0), 1)
    row["line samples"] = line.get("samples", 0)
    row["fit_s"] = round(sum(st.get("seconds", 0) for n, st in rep.stages.items()
                             if n in ("graph", "walks", "sequences", "train")), 1)
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+",
                    default=["diginetica", "yoochoose", "purchases", "music"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--set", nargs="*", default=[], dest="extra",
                    help="extra config overrides for every run, e.g. line.order=both")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for ds in args.datasets:
        rows = []
        toml = config_path(ds)
        load = os.getloadavg()
        with tempfile.TemporaryDirectory() as tmp:
            for v in args.variants:
                rows.append({"dataset": ds, **one_run(toml, v, args.extra, Path(tmp) / v)})
                print(rows[-1], flush=True)
        load_after = os.getloadavg()
        if not args.no_record:
            extra = " ".join(args.extra)
            append_results(
                f"LINE against skip-gram on {ds}",
                f"python benchmarks/line.py --datasets {ds}"
                + (f" --set {extra}" if extra else ""),
                markdown_table(rows),
                f"Calibration off, {TOKENS:,} training tokens for every variant (LINE: one edge "
                "sample per token and order), the blend at its defaults, allow_repeats. `:ann` "
                "= inner product of the decayed prefix's vector with the context vectors, "
                "`:last` = cosine `similar` of the last item, `:serving` = "
                "`Recommender.recommend`. sgns_s / line_s = training seconds of each model; "
                "fit_s = graph + walks + corpus + train stages. Shared machine (2 cores, other "
                f"jobs running): load average {load[0]:.1f} before, {load_after[0]:.1f} after."
                + (f" Synth profiles: {PROFILE_EVENTS:,} events, seed 0." if not (
                    ROOT / "pipelines" / f"{ds}.toml").exists() else ""))


if __name__ == "__main__":
    main()
