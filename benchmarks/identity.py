"""Output identity across a refactor: run YOOCHOOSE, DIGINETICA and a synthetic-catalog log with
`train.workers=1` and write the sha256 of every artifact and of `recommend`'s answers on the
holdout sessions, so that two commits can be compared file by file.

    python benchmarks/identity.py --out /tmp/before.json        # on the old commit
    python benchmarks/identity.py --out /tmp/after.json         # on the new one
    python benchmarks/identity.py --compare /tmp/before.json /tmp/after.json

What differs on every run by design is normalised before hashing: JSON files lose their
timing and memory fields (`seconds`, `words_per_s`, `latency_ms`, `peak_rss_mb`, ...), the
stage fingerprints (they cover the inputs' stamps and paths) and the raw hashes of such JSON
files in the done-files; config.toml loses its absolute paths (the scratch folder); report.html
loses its digits (timings; its numbers are metrics.json's, compared there).

    python benchmarks/identity.py --rehash WORK --out x.json   # hash the runs left in WORK
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
# keys whose values are wall-clock measurements or paths of the scratch directory
VOLATILE = ("seconds", "words_per_s", "elapsed", "started", "finished", "_s", "time", "date",
            "path", "dir", "host", "pid", "rss", "memory", "mb", "peak", "latency", "qps",
            "fingerprint", "_ms")


def _volatile(key: str) -> bool:
    k = key.lower()
    return any(k == v or k.endswith(v) or k.startswith(v) for v in VOLATILE)


def _strip(x):
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if not _volatile(str(k))
                and not str(k).endswith((".json", ".html"))}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


def file_hashes(run_dir: Path) -> dict[str, str]:
    """relative path -> sha256 (JSON files: of their content without volatile keys)."""
    out = {}
    for p in sorted(run_dir.rglob("*")):
        if not p.is_file():
            continue
        rel = str(p.relative_to(run_dir))
        data = p.read_bytes()
        if p.suffix == ".json":
            try:
                data = json.dumps(_strip(json.loads(data)), sort_keys=True).encode()
            except ValueError:
                pass
        elif p.suffix == ".toml":
            data = re.sub(rb'"/[^"]*"', b'"<path>"', data)
        elif p.suffix == ".html":
            data = re.sub(rb"\d+(?:\.\d+)?(?:e[-+]?\d+)?", b"#", data)
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def recommend_hash(run_dir: Path, n: int = 1000) -> dict:
    """sha256 of the rows and scores `recommend` gives the first `n` holdout prefixes."""
    from recembed.serving import Recommender

    rec = Recommender.load_run(run_dir)
    test = pd.read_parquet(run_dir / "sessions_test.parquet", columns=["session", "item"])
    vocab = pd.read_parquet(run_dir / "vocabulary.parquet", columns=["code", "id"])
    ids = vocab.set_index("code")["id"].astype(str)
    sessions = []
    for _, g in test.groupby("session", sort=True):
        items = ids.reindex(g["item"].to_numpy()).tolist()
        for j in range(1, len(items)):
            sessions.append(items[:j])
            if len(sessions) >= n:
                break
        if len(sessions) >= n:
            break
    res = rec.recommend(sessions, k=20)
    h = hashlib.sha256()
    for r, s in zip(res.ids, res.scores, strict=True):
        h.update("\x1f".join(map(str, r)).encode())
        h.update(np.asarray(s, np.float32).tobytes())
    return {"sessions": len(sessions), "sha256": h.hexdigest()}


def runs(work: Path, events: int) -> dict[str, tuple[str | None, list[str]]]:
    from recembed.synth import synth_catalog, write_synth

    ev, items = write_synth(synth_catalog(events, seed=0), work / "clicks.csv")
    return {
        "yoochoose": (str(ROOT / "pipelines" / "yoochoose.toml"), []),
        "diginetica": (str(ROOT / "pipelines" / "diginetica.toml"), []),
        "synth-catalog": (None, [f"input.paths=['{ev}']", f"input.catalog.path='{items}'",
                                 "input.catalog.attributes=['category', 'price']",
                                 "input.catalog.numeric=['price']",
                                 "input.catalog.category='category'",
                                 "input.catalog.listed='listed_at'"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the hashes here")
    ap.add_argument("--events", type=int, default=50_000, help="synthetic-catalog events")
    ap.add_argument("--only", default="", help="comma-separated run names (default: all)")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    ap.add_argument("--rehash", type=Path, help="hash the run directories left in this folder")
    args = ap.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))
    if args.rehash:
        out = {d.name: {"files": file_hashes(d), "recommend": recommend_hash(d)}
               for d in sorted(args.rehash.iterdir()) if d.is_dir()}
        if args.out:
            args.out.write_text(json.dumps(out, indent=1, sort_keys=True))
        return
    import os

    os.chdir(ROOT)
    from recembed.config import load_config
    from recembed.pipeline import run_pipeline
    from recembed.stages import STAGES

    work = Path(tempfile.mkdtemp(prefix="identity-"))
    out = {}
    for name, (config, sets) in runs(work, args.events).items():
        if args.only and name not in args.only.split(","):
            continue
        # no wall clock in any choice: code from before that rule gets an unbounded calibration
        # budget (its calibrate.time_budget_s skipped candidates on a busy machine)
        from recembed.config import CalibrateConfig

        unbounded = (["calibrate.time_budget_s=1e9"]
                     if "time_budget_s" in CalibrateConfig.model_fields else [])
        cfg = load_config(config, [*sets, f"run.runs_dir='{work}'", "run.progress=false",
                                   "train.workers=1", *unbounded])
        rep = run_pipeline(cfg, run_dir=work / name, plan=STAGES, echo=lambda s: None)
        out[name] = {"files": file_hashes(Path(rep.run_dir)),
                     "recommend": recommend_hash(Path(rep.run_dir))}
        print(name, len(out[name]["files"]), "files", out[name]["recommend"], flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1, sort_keys=True))


def compare(before: Path, after: Path) -> int:
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    bad = 0
    for name in sorted(set(a) | set(b)):
        fa, fb = a.get(name, {}).get("files", {}), b.get(name, {}).get("files", {})
        for f in sorted(set(fa) | set(fb)):
            if fa.get(f) != fb.get(f):
                bad += 1
                print(f"{name}: {f}: {fa.get(f, 'missing')[:12]} -> {fb.get(f, 'missing')[:12]}")
        ra, rb = a.get(name, {}).get("recommend"), b.get(name, {}).get("recommend")
        if ra != rb:
            bad += 1
            print(f"{name}: recommend {ra} -> {rb}")
        print(f"{name}: {len(fb)} files compared")
    print("identical" if not bad else f"{bad} differences")
    return int(bad > 0)


if __name__ == "__main__":
    main()
