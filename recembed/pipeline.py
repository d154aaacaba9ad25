"""The stage runner: calls each stage in order, stores its outputs in the run directory, and skips a
stage whose fingerprint (its settings plus its inputs' fingerprints) matches a verified earlier
output, so a crashed nightly run resumes where it stopped.

Crash safety: a stage writes into `<run>/.tmp-<stage>/`, its files are then moved into place, and
only after that is `<stage>.done.json` (fingerprint + sha256 of each output) written atomically.
A stage without a matching done-file, or whose outputs no longer hash to what it recorded, runs
again; nothing half-written is ever trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recembed import __version__
from recembed.config import Config, dump_config

log = logging.getLogger("recembed")

# Exit codes for schedulers (documented in README): 0 ok / published.
EXIT_CRASH = 1
EXIT_BAD_INPUT = 3
EXIT_GATE = 4
EXIT_LOCKED = 5


class PipelineError(RuntimeError):
    """A run that stopped for a known reason; `exit_code` tells the scheduler which."""

    def __init__(self, message: str, exit_code: int = EXIT_CRASH):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Stage:
    """One step: the config sections it reads, the stages it needs, the files it writes."""

    name: str
    fn: Callable[[Config, Path, Path], dict]  # (cfg, run_dir to read, out_dir to write) -> stats
    sections: tuple[str, ...]
    deps: tuple[str, ...]
    outputs: tuple[str, ...]
    enabled: Callable[[Config], bool] = lambda cfg: True
    inputs: Callable[[Config], list[str]] = lambda cfg: []
    # a stage that settles config values left at "auto" (calibrate): the runner hands the
    # resolved config to every later stage, so their fingerprints hold the chosen values
    resolve: Callable[[Config, Path], Config] | None = None


@dataclass
class RunReport:
    """What a run did: per-stage stats, seconds and peak RSS (MB), and whether it was skipped."""

    run_dir: Path
    stages: dict[str, dict] = field(default_factory=dict)

    def summary(self) -> str:
        """A short human-readable table of the run."""
        lines = [f"run: {self.run_dir}", f"{'stage':<11}{'status':<9}{'seconds':>9}{'peak MB':>10}"]
        for name, st in self.stages.items():
            lines.append(f"{name:<11}{st['status']:<9}{st.get('seconds', 0):>9.2f}"
                         f"{st.get('peak_rss_mb', 0):>10.0f}")
        lines.append("")
        for name, st in self.stages.items():
            facts = {k: v for k, v in st.get("stats", {}).items() if _short(v)}
            if facts:
                lines.append(f"{name}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in facts.items()))
        return "\n".join(lines)


def run_pipeline(
    cfg: Config,
    run_dir: str | Path | None = None,
    *,
    stages: list[str] | None = None,
    force: bool = False,
    echo: Callable[[str], None] = print,
) -> RunReport:
    """Run every enabled stage (or the named ones and what they need), resuming where possible."""
    all_stages = registered_stages()
    run_dir = Path(run_dir) if run_dir else default_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_text_atomic(run_dir / "config.toml", dump_config(cfg))
    wanted = [s for s in all_stages if s.enabled(cfg)]
    if stages:
        unknown = set(stages) - {s.name for s in all_stages}
        if unknown:
            raise PipelineError(f"unknown stage(s) {sorted(unknown)}; stages: "
                                f"{[s.name for s in all_stages]}")
        wanted = [s for s in wanted if s.name in _closure(stages, all_stages)]
    report = RunReport(run_dir)
    fingerprints: dict[str, str] = {}
    for st in list(wanted):
        if st not in wanted:  # switched off by a resolved setting
            continue
        fp = stage_fingerprint(cfg, st, fingerprints)
        fingerprints[st.name] = fp
        done = run_dir / f"{st.name}.done.json"
        if not force and _verified(done, fp, run_dir):
            prev = json.loads(done.read_text())
            report.stages[st.name] = {"status": "skipped", "stats": prev.get("stats", {})}
            echo(f"[{st.name}] up to date, skipped")
        else:
            echo(f"[{st.name}] running")
            report.stages[st.name] = _run_stage(cfg, st, fp, run_dir)
        if st.resolve is not None:
            cfg = st.resolve(cfg, run_dir)
            wanted = [s for s in wanted if s.enabled(cfg)]
    _write_text_atomic(run_dir / "summary.json", json.dumps(report.stages, indent=2, default=_json))
    return report


def default_run_dir(cfg: Config) -> Path:
    """runs/<name>-<hash of config and input files>: rerunning the same job resumes the same run."""
    h = hashlib.sha256(dump_config(cfg).encode())
    for p in [*cfg.input.paths, *cfg.input.test_paths]:
        h.update(json.dumps(_file_stamp(p)).encode())
    return Path(cfg.run.runs_dir) / f"{cfg.run.name}-{h.hexdigest()[:12]}"


def stage_fingerprint(cfg: Config, st: Stage, upstream: dict[str, str]) -> str:
    """sha256 over the stage's settings, its input files' stamps and its upstream fingerprints."""
    payload = {
        "stage": st.name,
        "code": __version__,
        "sections": {s: cfg.section(s) for s in st.sections},
        "seed": cfg.run.seed,
        "inputs": [_file_stamp(p) for p in st.inputs(cfg)],
        "deps": {d: upstream.get(d) for d in st.deps},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=_json).encode()).hexdigest()


def registered_stages() -> list[Stage]:
    """Every stage in run order (the stage functions live in `recembed.stages`)."""
    from recembed import stages

    return stages.STAGES


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while b := fh.read(chunk):
            h.update(b)
    return h.hexdigest()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- helpers


def _run_stage(cfg: Config, st: Stage, fp: str, run_dir: Path) -> dict:
    tmp = run_dir / f".tmp-{st.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    (run_dir / f"{st.name}.done.json").unlink(missing_ok=True)
    t0 = time.perf_counter()
    stats = st.fn(cfg, run_dir, tmp) or {}
    hashes = {}
    for name in st.outputs:
        src = tmp / name
        if not src.exists():
            raise PipelineError(f"stage {st.name} did not write its output {name}")
        hashes[name] = sha256_file(src)
    for name in st.outputs:
        os.replace(tmp / name, run_dir / name)
    shutil.rmtree(tmp, ignore_errors=True)
    record = {
        "fingerprint": fp,
        "outputs": hashes,
        "seconds": round(time.perf_counter() - t0, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "stats": stats,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_text_atomic(run_dir / f"{st.name}.done.json",
                       json.dumps(record, indent=2, default=_json))
    return {"status": "ran", **record}


def _verified(done: Path, fp: str, run_dir: Path) -> bool:
    if not done.exists():
        return False
    try:
        rec = json.loads(done.read_text())
    except (json.JSONDecodeError, OSError):
        return False
    if rec.get("fingerprint") != fp:
        return False
    for name, digest in rec.get("outputs", {}).items():
        p = run_dir / name
        if not p.exists() or sha256_file(p) != digest:
            log.warning("%s changed since it was written; rerunning its stage", p)
            return False
    return True


def _closure(names: list[str], all_stages: list[Stage]) -> set[str]:
    by_name = {s.name: s for s in all_stages}
    out: set[str] = set()
    todo = list(names)
    while todo:
        n = todo.pop()
        if n not in out:
            out.add(n)
            todo.extend(by_name[n].deps)
    return out


def _file_stamp(path: str) -> dict:
    p = Path(path)
    if not p.exists():
        return {"path": str(p), "missing": True}
    try:
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        return {"path": str(p), "files": [(f.name, f.stat().st_size, f.stat().st_mtime_ns)
                                           for f in files if f.is_file()]}
    except OSError as e:  # unreadable: ingest names it; the stamp only has to be stable
        return {"path": str(p), "unreadable": e.__class__.__name__}


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _json(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, (Path, pd.Timestamp)):
        return str(o)
    raise TypeError(type(o))


def _short(v) -> bool:
    return isinstance(v, (int, float, str, np.integer, np.floating)) and len(str(v)) < 40


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
