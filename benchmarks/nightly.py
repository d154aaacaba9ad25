"""End-to-end time and peak RSS of `recembed run pipelines/nightly.toml` on a synthetic log
(default 10M events) with default settings. Target on 2 cores: under 10 minutes and 8 GB.

    python benchmarks/nightly.py [--events 10000000] [--nights 2 [--first-only]]

--nights 2 (issue 23: "a second night with reuse <= 60% of the first"): night 1 runs on the log
without its last day and publishes into an empty root; night 2 runs on the whole log, so it
holds one more day of data and finds night 1's version published: `calibrate.reuse = "auto"`
(the default) re-validates that version's choice on night 2's validation split.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import DATA, append_results, markdown_table

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--nights", type=int, choices=(1, 2), default=1)
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--first-only", action="store_true",
                    help="with --nights 2: run night 1 only (the log minus its last day, a "
                    "fresh published root), to compare with an earlier night 1")
    args = ap.parse_args()
    DATA.mkdir(exist_ok=True)
    log = DATA / f"synth_{args.events}.parquet"
    if not log.exists():
        from recembed.synth import synth_clicks, write_synth

        write_synth(synth_clicks(args.events, seed=0), log)
    items = log.with_name(f"{log.stem}_items.csv")
    published = DATA / "nightly_published"
    if args.nights == 1:
        nights = [run_night(log, items, published)]
    else:
        shutil.rmtree(published, ignore_errors=True)  # night 1 finds nothing to reuse
        first = log.with_name(f"{log.stem}_night1.parquet")
        if not first.exists():
            import pyarrow.compute as pc
            import pyarrow.parquet as pq

            t = pq.read_table(log)
            end = pc.max(t["timestamp"]).as_py()
            pq.write_table(t.filter(pc.less(t["timestamp"], end - 86_400)), first)
        nights = [run_night(first, items, published)]
        if not args.first_only:
            nights.append(run_night(log, items, published))
    for i, (rows, facts, _) in enumerate(nights, 1):
        table = markdown_table(rows)
        print(f"night {i}", table, facts, sep="\n")
        if not args.no_record:
            title = f"nightly run end to end ({args.events:,} events)" if args.nights == 1 else \
                f"nightly run end to end ({args.events:,} events), night {i} of 2"
            append_results(title, f"python benchmarks/nightly.py --events {args.events}"
                           f" --nights {args.nights}" + " --first-only" * args.first_only,
                           table,
                           facts + ". Target: < 10 min and < 8 GB on 2 cores with default "
                           "settings (issue 23: <= 300 s, <= 6 GB; a night with reuse <= 60% "
                           "of a full one)")
    if len(nights) == 2:
        w1, w2 = nights[0][2], nights[1][2]
        print(f"night 2 / night 1 wall: {w2:.0f} / {w1:.0f} s = {w2 / w1:.2f}")


def run_night(log: Path, items: Path, published: Path) -> tuple[list[dict], str, float]:
    """One `recembed run` of the nightly pipeline on `log`, publishing into `published`:
    (rows per stage, facts, wall seconds)."""
    runs = DATA / "nightly_runs"
    cmd = [str(Path(sys.executable).parent / "recembed"), "run",
           str(ROOT / "pipelines" / "nightly.toml"), "--fresh",
           "--set", f"input.paths=['{log}']", "--set", f"input.categories_path='{items}'",
           "--set", f"run.runs_dir='{runs}'", "--set", "run.progress=false",
           "--set", f"publish.dir='{published}'",
           "--set", "publish.enabled=true", "--set", "publish.force=true"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    print(out.stdout[-4000:], out.stderr[-2000:])
    if out.returncode != 0:
        sys.exit(out.returncode)
    run_dir = Path(out.stdout.split("run: ", 1)[1].split()[0])
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [{"stage": k, "seconds": round(v.get("seconds", 0), 1),
             "peak RSS so far (MB)": round(v.get("peak_rss_mb", 0))} for k, v in summary.items()]
    peak = max((v.get("peak_rss_mb", 0) for v in summary.values()), default=0)
    rows.append({"stage": "total (wall, process)", "seconds": round(wall, 1),
                 "peak RSS so far (MB)": round(peak)})
    st = summary
    cal = json.loads((run_dir / "calibration.json").read_text()) \
        if (run_dir / "calibration.json").exists() else {}
    reuse = cal.get("reuse") or {}
    facts = (f"{log.name}; {st['sessionize']['stats']['train_sessions']:,} training "
             f"sessions; {st['train']['stats']['vocab']:,} items trained; "
             f"{st['train']['stats']['tokens_trained']:,} tokens at "
             f"{st['train']['stats']['words_per_s']:,} words/s; best embedding strategy recall@20 "
             f"{st['evaluate']['stats'].get('recall@20')}; calibration: "
             f"{reuse.get('decision', '?')} ({reuse.get('reason', '')})")
    return rows, facts, wall


if __name__ == "__main__":
    main()
