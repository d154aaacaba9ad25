"""Calibration's cost and quality, before (another checkout's code) and after (this one).

    python benchmarks/calibration.py --before /tmp/calb/main-before   # both, appends RESULTS.md
    python benchmarks/calibration.py --only yoochoose,clicks           # this checkout only
    python benchmarks/calibration.py --before B --only demo,yoochoose,diginetica --repeat 2

"demo" is `make demo`'s run (pipelines/nightly.toml on the bundled sample). Each run is timed
from the parent: wall seconds of the whole subprocess (interpreter start and imports included,
as a `recembed run` would take) and its CPU seconds (user + system, every thread: on a shared
machine the CPU seconds are what the run itself cost), with the load average before and after.
With --repeat N the before and after runs alternate N times (the same minutes for both).

Per dataset (the YOOCHOOSE and DIGINETICA samples as pipelines/<name>.toml runs them, and synth
profiles with a config holding only [input], `--events` events, seed 0): one default run
(self-calibrated), and from it calibrate's seconds, the tokens trained across candidates vs
the final model's (train.json: corpus tokens x epochs), the choice, the validation objective
(calibration.json) and the holdout Recall@20 / MRR@20 of the served blend (`:serving`) with
their standard errors (the bootstrap 95% interval / 3.92). A checkout whose calibration.json
records no standard error (main before issue 23) shows "-".

Each run is a subprocess with PYTHONPATH set to the checkout it measures, so `--before` runs
that checkout's code on the same data. A "before" checkout outside /work must have a
`../shared` next to it (a symlink to the shared data) for the sample pipelines' relative paths.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ("yoochoose", "diginetica")
PIPELINES = {"demo": "nightly"}  # other datasets run pipelines/<name>.toml


def worker(dataset: str, events: int, workdir: Path, out: Path,
           overrides: list[str] | None = None) -> None:
    """One default run of `dataset` with whatever `recembed` is on sys.path (and the config
    `overrides`, `--set` style); facts to `out`."""
    # recembed first, from PYTHONPATH (the measured checkout): profiles.py would put this
    # checkout first on sys.path
    from recembed.config import load_config
    from recembed.pipeline import run_pipeline
    from recembed.stages import STAGES

    prepare = __import__("profiles").prepare

    code_root = Path(sys.modules["recembed"].__file__).resolve().parents[1]
    ov = [f"run.runs_dir='{workdir}'", "run.progress=false", "publish.enabled=false",
          *(overrides or [])]
    if dataset in SAMPLES or dataset in PIPELINES:
        cfg = load_config(code_root / "pipelines" / f"{PIPELINES.get(dataset, dataset)}.toml",
                          ov)
    else:
        toml, _ = prepare(dataset, events, 0)
        cfg = load_config(toml, ov)
    t0 = time.perf_counter()
    rep = run_pipeline(cfg, plan=STAGES, echo=lambda s: None)
    wall = time.perf_counter() - t0
    cal = json.loads((rep.run_dir / "calibration.json").read_text())
    train = json.loads((rep.run_dir / "train.json").read_text())
    metrics = json.loads((rep.run_dir / "metrics.json").read_text())
    methods = metrics["methods"]
    serving = next(v for n, v in methods.items() if n.endswith(":serving"))
    ar = serving["allow_repeats"]

    def holdout(suffix: str) -> dict:
        # a method's holdout R@20 / MRR@20 (the exported vectors' ":ann", ":last"; baselines)
        m = next((v for n, v in methods.items() if n == suffix or n.endswith(":" + suffix)),
                 None)
        return {} if m is None else {"recall": m["allow_repeats"]["recall@20"],
                                     "mrr": m["allow_repeats"]["mrr@20"]}
    spent = sum(int(c.get("tokens_trained", c["corpus_tokens"] * c["epochs"]))
                for c in cal.get("candidates", []))
    st = train.get("stats", train)
    final = int(st["corpus_tokens"] * st["epochs"])
    v = cal.get("validation", {})

    def se(metric: str):
        lo, hi = ar.get(f"ci95_lo:{metric}@20"), ar.get(f"ci95_hi:{metric}@20")
        return None if lo is None or hi is None else (hi - lo) / 3.92

    cal_stage = rep.stages["calibrate"]
    out.write_text(json.dumps({
        "wall_s": wall, "calibrate_s": cal_stage.get("seconds", 0),
        "calibrate_cpu_s": cal_stage.get("cpu_seconds"),
        "stage_s": {n: st.get("seconds", 0) for n, st in rep.stages.items()},
        "candidates": len(cal.get("candidates", [])), "tokens_trained": spent,
        "final_tokens": final, "choice": f"{cal.get('corpus')} {cal.get('target_tokens'):,}",
        "postprocess": cal.get("postprocess", "-"),
        "vectors_decay": cal.get("vectors_decay"),
        # the skip-gram settings the final model trained with, and the search's steps
        "sgns": train.get("sgns"),
        "sgns_steps": (cal.get("sgns") or {}).get("steps"),
        "reuse": (cal.get("reuse") or {}).get("decision", "-"),
        "val_objective": v.get("recall@20", 0) + v.get("mrr@20", 0),
        "val_se": v.get("objective_se"),
        "val_vectors": v.get("vectors_objective"), "val_vectors_se": v.get("vectors_se"),
        "val_item_knn": sum((cal.get("baselines", {}).get("item_knn") or {}).get(m, 0.0)
                            for m in ("recall@20", "mrr@20")),
        "holdout_ann": holdout("ann"), "holdout_last": holdout("last"),
        "holdout_item_knn": holdout("item_knn"), "holdout_vsknn": holdout("vsknn"),
        "holdout_recall": ar["recall@20"], "holdout_recall_se": se("recall"),
        "holdout_mrr": ar["mrr@20"], "holdout_mrr_se": se("mrr"),
        "holdout_queries": metrics["queries"]["queries"]}))


def measure(code: Path, dataset: str, events: int, overrides: list[str] | None = None) -> dict:
    """One run of `dataset` on the checkout `code` (a subprocess), with the subprocess's wall
    and CPU seconds (`resource.getrusage` of the children) and the load average around it."""
    import resource

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "facts.json"
        env = {**os.environ, "PYTHONPATH": f"{code}{os.pathsep}{ROOT / 'benchmarks'}",
               "OMP_WAIT_POLICY": "PASSIVE"}
        load0 = os.getloadavg()[0]
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--worker", dataset, "--events", str(events),
                        "--workdir", tmp, "--out", str(out),
                        *[a for o in overrides or [] for a in ("--set", o)]],
                       check=True, env=env, cwd=code)
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        facts = json.loads(out.read_text())
        facts.update(process_wall_s=wall, process_cpu_s=(r1.ru_utime - r0.ru_utime)
                     + (r1.ru_stime - r0.ru_stime), load=(load0, os.getloadavg()[0]))
        return facts


def row(label: str, dataset: str, f: dict) -> dict:
    def pm(x, s):
        return f"{x:.4f}" + (f" ± {s:.4f}" if s is not None else "")

    wall = f.get("process_wall_s", f["wall_s"])
    cpu = f.get("process_cpu_s")
    load = f.get("load")
    return {"dataset": dataset, "code": label, "run wall s": round(wall, 1),
            "run CPU s": round(cpu, 1) if cpu is not None else "-",
            "calibrate s": round(f["calibrate_s"], 1),
            "calibrate CPU s": (round(f["calibrate_cpu_s"], 1)
                                if f.get("calibrate_cpu_s") is not None else "-"),
            "calibrate share": f"{f['calibrate_s'] / max(f['wall_s'], 1e-9):.0%}",
            "load 1 min": f"{load[0]:.1f}-{load[1]:.1f}" if load else "-",
            "candidates": f["candidates"],
            "tokens trained": f["tokens_trained"], "final tokens": f["final_tokens"],
            "ratio": round(f["tokens_trained"] / max(f["final_tokens"], 1), 2),
            "choice": f["choice"], "post-processing": f.get("postprocess", "-"),
            "vectors decay": (f"{f['vectors_decay']:g}" if f.get("vectors_decay") is not None
                              else "-"),
            "validation R+MRR": pm(f["val_objective"], f["val_se"]),
            "holdout R@20": pm(f["holdout_recall"], f["holdout_recall_se"]),
            "holdout MRR@20": pm(f["holdout_mrr"], f["holdout_mrr_se"]),
            "validation vectors R+MRR": (pm(f["val_vectors"], f.get("val_vectors_se"))
                                         if f.get("val_vectors") is not None else "-"),
            "validation item-kNN R+MRR": (f"{f['val_item_knn']:.4f}"
                                          if f.get("val_item_knn") else "-"),
            **{f"holdout {name} R@20 / MRR@20": (
                f"{f[key]['recall']:.4f} / {f[key]['mrr']:.4f}" if f.get(key) else "-")
               for name, key in ((":ann", "holdout_ann"), (":last", "holdout_last"),
                                 ("item-kNN", "holdout_item_knn"),
                                 ("V-SKNN", "holdout_vsknn"))}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, help="checkout whose code is 'before'")
    ap.add_argument("--only", default="yoochoose,diginetica,clicks,ratings")
    ap.add_argument("--events", type=int, default=50_000, help="events per synth profile")
    ap.add_argument("--repeat", type=int, default=1, help="runs per (dataset, code), "
                    "alternating before and after")
    ap.add_argument("--no-append", action="store_true", help="print only")
    ap.add_argument("--facts", type=Path, help="read before_<dataset>.json / after_<dataset>.json "
                    "from this folder (runs made earlier, e.g. in the background) instead of "
                    "running; a missing file skips that row")
    ap.add_argument("--save", type=Path, help="also write each run's facts into this folder")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="a config override for every run, e.g. --set train.workers=1 "
                    "(repeatable): train.workers=1 makes a run's candidates reproducible")
    ap.add_argument("--title", default="calibration: cost and quality, before vs after "
                    "(issue 23)", help="the RESULTS.md section's title")
    ap.add_argument("--worker")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.events, args.workdir, args.out, args.overrides)
        return
    from common import append_results, markdown_table

    rows = []
    for ds, rep in [(d, r) for d in args.only.split(",") if d for r in range(args.repeat)]:
        for label, code in ([("before", args.before)] if args.before else []) + [("after", ROOT)]:
            name = f"{label}_{ds}" + (f"_{rep}" if args.repeat > 1 else "")
            saved = (args.facts / f"{name}.json") if args.facts else None
            if saved is not None:
                if not saved.exists():
                    continue
                facts = json.loads(saved.read_text())
            else:
                facts = measure(code.resolve(), ds, args.events, args.overrides)
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                (args.save / f"{name}.json").write_text(json.dumps(facts))
            rows.append(row(label, ds, facts))
            print(rows[-1], flush=True)
    table = markdown_table(rows)
    load = os.getloadavg()
    notes = (f"Load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min): "
             "the machine is shared with other jobs, so seconds are loaded timings; tokens and "
             "metrics do not depend on load. `tokens trained` = corpus tokens x epochs summed over "
             "calibration's candidates; `final tokens` = the final model's (train.json). Holdout "
             "± = bootstrap 95% interval / 3.92; validation ± = the objective's standard error "
             "over the validation queries (not recorded before). Synth profiles: "
             f"{args.events:,} events, seed 0.")
    if args.no_append:
        print(table + "\n\n" + notes)
    else:
        cmd = "python benchmarks/calibration.py " + " ".join(sys.argv[1:])
        append_results(args.title, cmd, table, notes)


if __name__ == "__main__":
    main()
