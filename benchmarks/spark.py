"""Spark engine (local[2]) against the local engine: ingest + sessionize + graph + walks on
synthetic logs (`recembed.synth.synth_clicks`, Parquet), time per stage and peak memory.

Each engine runs in a fresh process (`recembed.pipeline.run_pipeline`, stages up to walks,
calibration off). Peak memory is sampled every 0.2 s: the driver (the Python process that runs
the pipeline), the JVM (Spark's driver and its local executors), and the Python workers Spark
forks for mapInArrow (summed). The stages' output hashes (done-files) are compared, so the
benchmark also checks that both engines wrote the same artifacts at this size.

    python benchmarks/spark.py --sizes 10000000 50000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from common import DATA, append_results, markdown_table

CHILD = r"""
import json, sys, threading, time, resource
import psutil
from recembed.config import load_config
from recembed.pipeline import run_pipeline, stage_records
from recembed.stages import STAGES
path, engine, run_dir, driver_mem = sys.argv[1:5]
peak = {"jvm": 0, "workers": 0}
stop = False
def sample():
    me = psutil.Process()
    while not stop:
        jvm = workers = 0
        for p in me.children(recursive=True):
            try:
                rss = p.memory_info().rss
                if "java" in p.name():
                    jvm += rss
                else:
                    workers += rss
            except psutil.Error:
                pass
        peak["jvm"] = max(peak["jvm"], jvm)
        peak["workers"] = max(peak["workers"], workers)
        time.sleep(0.2)
threading.Thread(target=sample, daemon=True).start()
cfg = load_config(None, [f"input.paths=['{path}']", "input.categories_path=''",
                         f"run.engine={engine}", "run.threads=2", "run.progress=false",
                         "walks.enabled=true", "sequences.enabled=false",
                         "calibrate.enabled=false",
                         "spark.master='local[2]'",
                         'spark.conf={"spark.driver.memory"="%s",'
                         '"spark.sql.shuffle.partitions"=8}' % driver_mem])
t0 = time.perf_counter()
rep = run_pipeline(cfg, run_dir, plan=STAGES, stages=["walks"], echo=lambda s: None)
total = time.perf_counter() - t0
stop = True
time.sleep(0.3)
rec = stage_records(run_dir)
print(json.dumps({"total_s": total,
                  "stages": {k: v["seconds"] for k, v in rep.stages.items()},
                  "outputs": {k: rec[k]["outputs"] for k in ("ingest", "sessionize", "graph",
                                                             "walks")},
                  "driver_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "jvm_gb": peak["jvm"] / 2**30, "workers_gb": peak["workers"] / 2**30,
                  "events": rep.stages["ingest"]["stats"]["events"],
                  "edges": rep.stages["graph"]["stats"]["edges"],
                  "walk_tokens": rep.stages["walks"]["stats"]["tokens"]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000_000, 50_000_000])
    ap.add_argument("--engines", nargs="+", default=["local", "spark"])
    ap.add_argument("--driver-memory", default="8g", help="spark.driver.memory (local mode: "
                    "the driver JVM also runs the executors)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    rows, notes = [], []
    for n in args.sizes:
        path = DATA / f"synth_{n}.parquet"
        if not path.exists():
            from recembed.synth import synth_clicks, write_synth

            t = time.perf_counter()
            write_synth(synth_clicks(n, seed=0), path)
            print(f"generated {n:,} events in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        got = {}
        for engine in args.engines:
            run_dir = DATA / f"spark-bench-{engine}-{n}"
            subprocess.run(["rm", "-rf", str(run_dir)], check=True)
            out = subprocess.run([sys.executable, "-c", CHILD, str(path), engine, str(run_dir),
                                  args.driver_memory], capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-3000:], file=sys.stderr)
                notes.append(f"{engine} at {n:,} events failed (exit {out.returncode}): "
                             f"{out.stderr.strip().splitlines()[-1][:200]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            got[engine] = r
            st = r["stages"]
            rows.append({"events": n, "engine": engine if engine == "local" else "spark local[2]",
                         "ingest_s": round(st["ingest"], 1), "sessionize_s": round(st["sessionize"], 1),
                         "graph_s": round(st["graph"], 1), "walks_s": round(st["walks"], 1),
                         "total_s": round(r["total_s"], 1),
                         "driver_peak_gb": round(r["driver_gb"], 2),
                         "jvm_peak_gb": round(r["jvm_gb"], 2),
                         "py_workers_peak_gb": round(r["workers_gb"], 2),
                         "edges": r["edges"], "walk_tokens": r["walk_tokens"]})
            print(rows[-1], flush=True)
            subprocess.run(["rm", "-rf", str(run_dir)], check=True)
        if len(got) == 2:
            same = got["local"]["outputs"] == got["spark"]["outputs"]
            notes.append(f"{n:,} events: the two engines' ingest, sessionize, graph and walks "
                         f"outputs are {'identical (sha256)' if same else 'DIFFERENT'}.")
    table = markdown_table(rows)
    print(table)
    print("\n".join(notes))
    if not args.no_record:
        append_results("Spark engine (local[2]) vs local engine: ingest + sessionize + graph + "
                       "walks", "python benchmarks/spark.py --sizes "
                       + " ".join(map(str, args.sizes)), table, "\n".join(notes))


if __name__ == "__main__":
    main()
