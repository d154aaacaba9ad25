"""End-to-end time and peak RSS of `recembed run pipelines/nightly.toml` on a synthetic log
(default 10M events) with default settings. Target on 2 cores: under 10 minutes and 8 GB.

    python benchmarks/nightly.py [--events 10000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import DATA, append_results, markdown_table

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    DATA.mkdir(exist_ok=True)
    log = DATA / f"synth_{args.events}.parquet"
    if not log.exists():
        from recembed.synth import synth_clicks, write_synth

        write_synth(synth_clicks(args.events, seed=0), log)
    items = log.with_name(f"{log.stem}_items.csv")
    runs = DATA / "nightly_runs"
    cmd = [str(Path(sys.executable).parent / "recembed"), "run",
           str(ROOT / "pipelines" / "nightly.toml"), "--fresh",
           "--set", f"input.paths=['{log}']", "--set", f"input.categories_path='{items}'",
           "--set", f"run.runs_dir='{runs}'", "--set", "run.progress=false",
           "--set", f"publish.dir='{DATA / 'nightly_published'}'",
           "--set", "publish.enabled=true", "--set", "publish.force=true"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(out.stdout[-4000:], out.stderr[-2000:])
    if out.returncode != 0:
        sys.exit(out.returncode)
    run_dir = Path(out.stdout.split("run: ", 1)[1].split()[0])
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [{"stage": k, "seconds": round(v.get("seconds", 0), 1),
             "peak RSS so far (MB)": round(v.get("peak_rss_mb", 0))} for k, v in summary.items()]
    rows.append({"stage": "total (wall, process)", "seconds": round(wall, 1),
                 "peak RSS so far (MB)": round(peak * 1024)})
    st = summary
    facts = (f"{args.events:,} events; {st['sessionize']['stats']['train_sessions']:,} training "
             f"sessions; {st['train']['stats']['vocab']:,} items trained; "
             f"{st['train']['stats']['tokens_trained']:,} tokens at "
             f"{st['train']['stats']['words_per_s']:,} words/s; best embedding strategy recall@20 "
             f"{st['evaluate']['stats'].get('recall@20')}")
    table = markdown_table(rows)
    print(table, facts, sep="\n")
    if not args.no_record:
        append_results(f"nightly run end to end ({args.events:,} events)",
                       f"python benchmarks/nightly.py --events {args.events}", table,
                       facts + ". Target: < 10 min and < 8 GB on 2 cores with default settings.")


if __name__ == "__main__":
    main()
