"""Default runs on every synthetic profile (`recembed synth --profile`): what a new user gets
from a config holding only `[input]`, on logs unlike the click samples.

    python benchmarks/profiles.py [--events 200000] [--seed 0] [--only ratings,music]

For each profile the log is generated into benchmarks/data/ (rewritten each run), a TOML with
only the [input] section is written beside it, and `run_pipeline` runs it fresh with every
other key at its default (publish is off by default). It prints, and appends to RESULTS.md, an
overview (events, share removed as bots, sessions kept / too short / absent from the item2vec
corpus, queries, seconds) and, per profile, Recall@20 and MRR@20 of every method in
metrics.json (the allow_repeats variant).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from common import DATA, append_results, markdown_table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recembed.config import load_config  # noqa: E402
from recembed.pipeline import run_pipeline  # noqa: E402
from recembed.stages import STAGES  # noqa: E402
from recembed.synth import PROFILES, describe, synth_profile, write_synth  # noqa: E402


def prepare(profile: str, events: int, seed: int) -> tuple[Path, dict]:
    """The profile's log and items file in benchmarks/data (rewritten every time, so the file is
    what this commit's generator draws), the TOML with only [input], and the log's measured
    properties."""
    log_path = DATA / f"profile_{profile}_{events}_s{seed}.parquet"
    log = synth_profile(profile, events, seed)
    write_synth(log, log_path)
    items = log_path.with_name(f"{log_path.stem}_items.csv")
    toml = log_path.with_suffix(".toml")
    toml.write_text(f"[input]\npaths = ['{log_path}']\ncategories_path = '{items}'\n")
    return toml, describe(log)


def run_profile(profile: str, events: int, seed: int) -> tuple[dict, list[dict]]:
    """One fresh default run; returns the overview row and the per-method rows. A run that
    crashes gets a row naming the stage and the error (the other profiles still run)."""
    toml, props = prepare(profile, events, seed)
    cfg = load_config(toml)
    run_dir = DATA / "profile_runs" / toml.stem
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        rep = run_pipeline(cfg, run_dir, force=True, plan=STAGES, echo=lambda s: None)
    except Exception as e:  # a crash is a result here: reported in the table
        failed = next((s.name for s in STAGES if s.enabled(cfg)
                       and not (run_dir / f"{s.name}.done.json").exists()), "?")
        return {"profile": profile, "best": f"CRASHED in {failed}: {type(e).__name__}: {e}",
                "seconds": round(time.perf_counter() - t0, 1)}, []
    seconds = time.perf_counter() - t0
    st = {name: s.get("stats", {}) for name, s in rep.stages.items()}
    ses, seq = st.get("sessionize", {}), st.get("sequences", {})
    m = json.loads((run_dir / "metrics.json").read_text())
    total = ses.get("sessions_total", 0)
    row = {
        "profile": profile, "events": st["ingest"]["events"],
        "bot share removed": round(ses.get("bot_event_share", 0.0), 4),
        "bot users": ses.get("bot_entities", 0),
        "sessions (30 min)": total,
        "too short": round(ses.get("sessions_too_short", 0) / max(total, 1), 3),
        "train / holdout": f"{ses.get('train_sessions', 0):,} / {ses.get('holdout_sessions', 0):,}",
        "absent from corpus": round(seq.get("sessions_absent", 0) / max(seq.get("sessions_in", 1),
                                                                        1), 3),
        "queries": m["queries"]["queries"], "oov": round(m["queries"]["oov_share"], 3),
        "best": m["headline"]["method"], "best R@20": round(m["headline"]["recall@20"], 4),
        "seconds": round(seconds, 1),
        "log: repeat / popular next": f"{props['repeat_share']:.2f} / "
                                      f"{props['popular_next_share']:.2f}",
    }
    methods = [{"method": name, "recall@20": round(v["allow_repeats"]["recall@20"], 4),
                "mrr@20": round(v["allow_repeats"]["mrr@20"], 4)}
               for name, v in m["methods"].items()]
    return row, methods


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated profiles (default: all)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    DATA.mkdir(exist_ok=True)
    profiles = [p for p in args.only.split(",") if p] or list(PROFILES)
    rows, tables = [], []
    for p in profiles:
        row, methods = run_profile(p, args.events, args.seed)
        print(row, flush=True)
        rows.append(row)
        if methods:
            tables.append(f"**{p}** ({row['events']:,} events after ingest, {row['seconds']} s)"
                          "\n\n" + markdown_table(methods))
    keys = list(dict.fromkeys(k for r in rows for k in r))  # a crashed row has fewer columns
    table = markdown_table([{k: r.get(k, "") for k in keys} for r in rows])
    table += "\n\n" + "\n\n".join(tables)
    notes = ("Config: only [input] (paths, categories_path); every other key at its default "
             "(bots on, half_life_days 7, holdout 1 day, min_length 2, publish off). "
             "'too short': share of 30-minute sessions under min_length; 'absent from corpus': "
             "share of training sessions with zero copies in the item2vec corpus (decay). "
             "Metrics: allow_repeats variant, at most 10k sampled queries.")
    cmd = "python benchmarks/profiles.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in (("events", args.events), ("seed", args.seed),
                                                       ("only", args.only)) if v != "")
    if args.no_record:
        print(table)
    else:
        append_results(f"synthetic profiles at defaults ({args.events:,} events, seed "
                       f"{args.seed})", cmd, table, notes)


if __name__ == "__main__":
    main()
