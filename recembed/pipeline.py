"""The stage runner: given a list of stages, derives their order from the artifacts each one
declares it reads and writes, fingerprints each stage, stores its outputs in the run directory,
and skips a stage whose fingerprint matches a verified earlier output, so a crashed nightly run
resumes where it stopped. It imports no stage: the caller passes the plan
(`recembed.stages.STAGES` for the nightly job).

- Order: a stage runs after the stages that write what it reads (ties keep the plan's order).
- Fingerprint: sha256 over the stage's config sections, the seed, the fingerprint of the stage
  that wrote each artifact it reads, the stamp of each outside input it reads (input files, the
  published root) and the names it writes.
- Integrity: a stage writes into `<run>/.tmp-<stage>/`; the runner checks that it wrote exactly
  what it declared (files or folders of part files), hashes each output, moves it into place,
  and only then writes `<stage>.done.json` (fingerprint + sha256 of each output) atomically. A
  stage without a matching done-file, or whose outputs no longer hash to what it recorded, runs
  again; nothing half-written is ever trusted.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import resource
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recembed import __version__
from recembed import artifacts as A
from recembed.artifacts import Artifact
from recembed.config import Config, dump_config

log = logging.getLogger("recembed")

# Exit codes for schedulers (documented in README): 0 ok / published.
EXIT_CRASH = 1
EXIT_BAD_INPUT = 3
EXIT_GATE = 4
EXIT_LOCKED = 5
# an answer that is empty for a reason a script must see (unknown ids, no shared item)
EXIT_EMPTY = 6

Declared = Sequence | Callable[[Config], Sequence]


class PipelineError(RuntimeError):
    """A run that stopped for a known reason; `exit_code` tells the scheduler which."""

    def __init__(self, message: str, exit_code: int = EXIT_CRASH):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Stage:
    """One step of a plan.

    Parameters
    ----------
    name : str
        Unique stage name (also names its done-file and scratch folder).
    run : callable
        ``run(ctx: StageContext) -> dict``: reads `ctx.read(artifact)`, writes
        `ctx.write(artifact)`, returns statistics for the run summary (JSON-serialisable).
    reads, writes : sequence, or callable ``(Config) -> sequence``
        The artifacts (`recembed.artifacts.Artifact`) and outside inputs
        (`InputFiles`, `PublishedRoot`) it reads; the artifacts it writes. A callable makes
        them depend on the config (e.g. train reads walks.txt only when walks are on).
    sections : tuple of str
        Config sections whose values enter the fingerprint.
    enabled : callable ``(Config) -> bool``
        Whether the stage is part of this run.
    resolve : callable ``(Config, run_dir) -> Config``, optional
        After the stage ran (or was skipped), the config for the stages after it: the
        calibrate stage sets every key left at "auto" to what it chose.
    """

    name: str
    run: Callable[[StageContext], dict | None]
    reads: Declared = ()
    writes: Declared = ()
    sections: tuple[str, ...] = ()
    enabled: Callable[[Config], bool] = lambda cfg: True
    # a stage that settles config values left at "auto" (calibrate): the runner hands the
    # resolved config to every later stage, so their plan and fingerprints hold the choices
    resolve: Callable[[Config, Path], Config] | None = None

    def declared_reads(self, cfg: Config, run_dir: str | Path | None = None) -> tuple:
        """What this stage reads under `cfg`; with `run_dir`, outside inputs that depend on the
        run directory (`PreviousVersion` declared with run_dir "") are bound to it."""
        reads = tuple(self.reads(cfg) if callable(self.reads) else self.reads)
        if run_dir is None:
            return reads
        return tuple(r.bound(run_dir) if hasattr(r, "bound") else r for r in reads)

    def declared_writes(self, cfg: Config) -> tuple[Artifact, ...]:
        """What this stage writes under `cfg`."""
        return tuple(self.writes(cfg) if callable(self.writes) else self.writes)


@dataclass
class StageContext:
    """What a running stage sees: the config, where to read, where to write, and its declared
    artifacts. Reading or writing an artifact it did not declare is an error, so the
    declarations the runner orders and fingerprints by are the files the stage really uses."""

    cfg: Config
    stage: str
    run_dir: Path
    out_dir: Path
    reads: tuple
    writes: tuple[Artifact, ...]

    def read(self, artifact: Artifact) -> Path:
        """Path of a declared input artifact in the run directory."""
        if artifact not in self.reads and artifact not in A.RUNNER_FILES:
            raise PipelineError(f"stage {self.stage} reads {artifact.name} without declaring it")
        return artifact.path(self.run_dir)

    def write(self, artifact: Artifact) -> Path:
        """Path to write a declared output artifact to (a folder is created for folders)."""
        if artifact not in self.writes:
            raise PipelineError(f"stage {self.stage} writes {artifact.name} without declaring it")
        p = artifact.path(self.out_dir)
        if artifact.kind == "folder":
            p.mkdir(exist_ok=True)
        return p

    @property
    def scratch(self) -> Path:
        """A folder for temporary files, removed after the stage (never an output)."""
        p = self.out_dir / ".scratch"
        p.mkdir(exist_ok=True)
        return p

    def inputs(self, kind: type) -> list:
        """The declared outside inputs of one type (e.g. `PublishedRoot`)."""
        return [r for r in self.reads if isinstance(r, kind)]


@dataclass
class RunReport:
    """What a run did: per-stage stats, seconds and peak RSS (MB), and whether it was skipped.

    The same facts in three shapes: `summary()` for people, `stage_event()` (one JSON object
    per stage, `recembed run --log-format json`) and `record()` (run.json) for schedulers.
    """

    run_dir: Path
    stages: dict[str, dict] = field(default_factory=dict)

    def summary(self) -> str:
        """A short human-readable table of the run, its counts and its warnings."""
        lines = [f"run: {self.run_dir}", f"{'stage':<11}{'status':<9}{'seconds':>9}{'peak MB':>10}"]
        for name, st in self.stages.items():
            lines.append(f"{name:<11}{st['status']:<9}{st.get('seconds', 0):>9.2f}"
                         f"{st.get('peak_rss_mb', 0):>10.0f}")
        lines.append("")
        for name, st in self.stages.items():
            facts = _facts(st.get("stats", {}))
            if facts:
                lines.append(f"{name}: {facts}")
        warnings = self.warnings()
        if warnings:
            lines += ["", "warnings:", *(f"  - {w}" for w in warnings)]
        return "\n".join(lines)

    def headline(self) -> str:
        """The end-of-run console summary: the served Recall@K / MRR@K with their bootstrap 95%
        intervals against the best baseline's, what calibration chose, the warnings and where
        the report and the per-stage details (run.json) are.

        Returns
        -------
        str
            A few lines; the per-stage statistics are left to `summary()` (``--verbose``) and
            run.json.
        """
        ran = sum(st["status"] == "ran" for st in self.stages.values())
        secs = sum(st.get("seconds", 0) for st in self.stages.values())
        peak = max((st.get("peak_rss_mb") or 0 for st in self.stages.values()), default=0)
        lines = [f"run: {self.run_dir}",
                 f"  {len(self.stages)} stages ({ran} ran, {len(self.stages) - ran} up to date) "
                 f"in {secs:.1f} s, peak {peak:.0f} MB"]
        met = A.METRICS.path(self.run_dir)
        if "evaluate" in self.stages and met.exists():
            m = A.Metrics.load(met)
            k = m.cutoff
            rows = []
            try:
                rows.append(("served", m.serving))
            except KeyError:
                pass
            base = max(m.of_kind("baseline"), key=lambda b: b.allow_repeats.recall(k),
                       default=None)
            if base is not None:
                rows.append(("best baseline", base))
            lines.append(f"  holdout: {m.queries.get('queries', 0):,} queries; Recall@{k} / "
                         f"MRR@{k} [bootstrap 95% interval]")
            for label, mm in rows:
                sc = mm.allow_repeats
                cells = []
                for metric, val in (("recall", sc.recall(k)), ("mrr", sc.mrr(k))):
                    ci = sc.interval(metric, k)
                    cells.append(f"{val:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
                lines.append(f"  {label + ' (' + mm.name + ')':<34} {cells[0]:<22} {cells[1]}")
        choice = _calibration_line(self.run_dir) if "calibrate" in self.stages else ""
        if choice:
            lines.append(f"  calibration: {choice}")
        warnings = self.warnings()
        if warnings:
            lines += ["warnings:", *(f"  - {w}" for w in warnings)]
        rep = A.REPORT.path(self.run_dir)
        if rep.exists() and "evaluate" in self.stages:
            lines.append(f"report: {rep}")
        pub = self.stages.get("publish", {}).get("stats", {})
        if pub.get("version"):
            lines.append(f"published: {pub['version']}")
        lines.append(f"details: {A.RUN_RECORD.path(self.run_dir)} (per-stage statistics; "
                     "recembed --verbose run prints them)")
        return "\n".join(lines)

    def stage_line(self, name: str) -> str:
        """One log line for a finished stage: status, seconds, peak memory and its counts."""
        st = self.stages[name]
        if st["status"] == "skipped":
            head = f"[{name}] up to date, skipped"
        else:
            cpu = st.get("cpu_seconds")
            head = (f"[{name}] {st['status']} in {st.get('seconds', 0):.2f} s"
                    + (f", CPU {cpu:.2f} s" if cpu is not None else "")
                    + f", peak {st.get('peak_rss_mb', 0):.0f} MB")
        facts = _facts(st.get("stats", {}))
        return f"{head}: {facts}" if facts else head

    def stage_event(self, name: str) -> dict:
        """The JSON object of one stage: name, status (ran / skipped), seconds, cpu_seconds
        (the process's CPU seconds while it ran; None when skipped), peak_rss_mb and the
        stage's statistics."""
        st = self.stages[name]
        return {"event": "stage", "name": name, "status": st["status"],
                "seconds": st.get("seconds", 0.0), "cpu_seconds": st.get("cpu_seconds"),
                "peak_rss_mb": st.get("peak_rss_mb"), "stats": st.get("stats", {})}

    def warnings(self) -> list[str]:
        """What an operator should read: each stage's `stats["warnings"]` (sessionize: filters
        that removed a surprising share, widened session gaps) and calibration.json's `notes`,
        each prefixed by its stage."""
        out = [f"{name}: {w}" for name, st in self.stages.items()
               for w in (st.get("stats", {}).get("warnings") or [])]
        cal = A.CALIBRATION.path(self.run_dir)
        if "calibrate" in self.stages and cal.exists():
            try:
                notes = json.loads(cal.read_text()).get("notes", [])
            except (OSError, json.JSONDecodeError):
                notes = []
            out += [f"calibrate: {n}" for n in notes]
        return out

    def record(self, exit_code: int, *, started: str, seconds: float,
               error: str | None = None, failed_stage: str | None = None) -> dict:
        """What run.json holds: exit code, start and end time, seconds, the per-stage summary,
        the warnings and, for a failed run, the error and the stage it happened in."""
        return {"run_dir": str(self.run_dir), "exit_code": exit_code,
                "status": "ok" if exit_code == 0 else "failed", "code_version": __version__,
                "started": started, "finished": A.now_iso(), "seconds": round(seconds, 3),
                "stages": {n: {k: v for k, v in self.stage_event(n).items() if k != "event"}
                           for n in self.stages},
                "warnings": self.warnings(), "failed_stage": failed_stage, "error": error}


def run_pipeline(
    cfg: Config,
    run_dir: str | Path | None = None,
    *,
    plan: Sequence[Stage],
    stages: list[str] | None = None,
    force: bool = False,
    echo: Callable[[str], None] = print,
    on_start: Callable[[str], None] | None = None,
    on_stage: Callable[[RunReport, str], None] | None = None,
    reuse: Sequence[str] = (),
) -> RunReport:
    """Run the enabled stages of `plan` (or the named ones and what they need), resuming.

    Parameters
    ----------
    cfg : Config
        The resolved config.
    run_dir : str or Path, optional
        Where outputs go; default `default_run_dir(cfg)` (the same job resumes the same run).
    plan : sequence of Stage
        Every stage the job knows (`recembed.stages.STAGES`), in any order.
    stages : list of str, optional
        Run only these stages and the stages that write what they read.
    force : bool
        Rerun every selected stage even when it is up to date.
    echo : callable
        Receives one line per stage when it has run or was skipped: status, seconds, peak
        memory and its counts (`RunReport.stage_line`).
    on_start : callable, optional
        ``on_start(stage_name)`` before a stage runs (not called for a skipped stage).
    on_stage : callable, optional
        ``on_stage(report, stage_name)`` after each stage ran or was skipped: a caller that
        streams per-stage records (`RunReport.stage_event`), or keeps what a run that fails
        later did.
    reuse : sequence of str
        Stages taken from the run directory as they are (`recembed publish RUN_DIR`): their
        done-file stands in for the stage, its outputs verified by sha256 but its fingerprint
        not compared with the current config, and its recorded fingerprint feeds the stages
        after it. A reused stage without a done-file, or whose outputs changed, is a
        PipelineError (exit 3) that names the stage and how to finish the run. The run's
        `config.toml` is then left as it is (the evaluated config).

    Returns
    -------
    RunReport
        Status, seconds, peak memory and statistics of each stage.

    Examples
    --------
    >>> from recembed.config import load_config
    >>> from recembed.stages import STAGES
    >>> cfg = load_config("pipelines/nightly.toml")            # doctest: +SKIP
    >>> report = run_pipeline(cfg, plan=STAGES)                 # doctest: +SKIP
    >>> print(report.summary())                                 # doctest: +SKIP
    """
    order = resolve_plan(plan, cfg, stages)
    run_dir = Path(run_dir) if run_dir else default_run_dir(cfg)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = A.exclusive_lock(run_dir / A.RUN_LOCK)
        lock.__enter__()
    except A.LockHeld as e:
        raise PipelineError(f"the run directory {run_dir} is in use by another run ({e.holder}): "
                            "two runs would delete each other's scratch folders; wait for it to "
                            "finish, or give this one another --run-dir", EXIT_LOCKED) from None
    except OSError as e:
        raise PipelineError(f"cannot write the run directory {run_dir}: {e.strerror}; check "
                            "run.runs_dir (and free space)", EXIT_BAD_INPUT) from e
    try:
        return _run_locked(cfg, run_dir, order, plan, stages, force, echo, on_start, on_stage,
                           frozenset(reuse))
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT):
            raise
        where = e.filename or f"the run directory {run_dir} or publish.dir"
        raise PipelineError(f"writing {where} failed: {e.strerror}; free space or fix the "
                            "permissions, then rerun: finished stages are kept and the "
                            "published version is untouched", EXIT_BAD_INPUT) from e
    finally:
        lock.__exit__(None, None, None)


def _run_locked(cfg: Config, run_dir: Path, order: list[Stage], plan: Sequence[Stage],
                stages: list[str] | None, force: bool, echo: Callable[[str], None],
                on_start: Callable[[str], None] | None,
                on_stage: Callable[[RunReport, str], None] | None,
                reuse: frozenset[str] = frozenset()) -> RunReport:
    if not reuse:
        A.write_text(A.CONFIG.path(run_dir), dump_config(cfg))
    report = RunReport(run_dir)
    fingerprints: dict[str, str] = {}
    producer = {a.name: st.name for st in order for a in st.declared_writes(cfg)}
    i = 0
    while i < len(order):
        st = order[i]
        i += 1
        fp = stage_fingerprint(cfg, st, {n: fingerprints.get(p) for n, p in producer.items()},
                               run_dir)
        done = run_dir / A.done_file(st.name)
        t0 = time.perf_counter()
        if st.name in reuse:
            fp = _reused_fingerprint(done, st.name, run_dir)
        fingerprints[st.name] = fp
        if st.name in reuse or (not force and _verified(done, fp, run_dir)):
            prev = json.loads(done.read_text())
            report.stages[st.name] = {"status": "skipped",  # seconds: verifying its outputs
                                      "seconds": round(time.perf_counter() - t0, 3),
                                      "peak_rss_mb": round(peak_rss_mb(), 1),
                                      "stats": prev.get("stats", {})}
        else:
            if on_start is not None:
                on_start(st.name)
            report.stages[st.name] = _run_stage(cfg, st, fp, run_dir)
        echo(report.stage_line(st.name))
        if on_stage is not None:
            on_stage(report, st.name)
        if st.resolve is not None:
            # the rest of the plan under the resolved config (a chosen corpus may switch
            # stages off); stages already done keep their place
            cfg = st.resolve(cfg, run_dir)
            seen = {s.name for s in order[:i]}
            order = order[:i] + [s for s in resolve_plan(plan, cfg, stages) if s.name not in seen]
            producer = {a.name: s.name for s in order for a in s.declared_writes(cfg)}
    A.write_json(A.SUMMARY.path(run_dir), report.stages)
    return report


def resolve_plan(plan: Sequence[Stage], cfg: Config, only: list[str] | None = None
                 ) -> list[Stage]:
    """The enabled stages in run order: each after the stages that write what it reads.

    Raises PipelineError for an unknown stage name, two stages writing one artifact, an
    artifact that no enabled stage writes, or a cycle.
    """
    names = [s.name for s in plan]
    unknown = set(only or []) - set(names)
    if unknown:
        raise PipelineError(f"unknown stage(s) {sorted(unknown)}; stages: {names}")
    enabled = [s for s in plan if s.enabled(cfg)]
    producer: dict[str, str] = {}
    for st in enabled:
        for a in st.declared_writes(cfg):
            if a.name in producer:
                raise PipelineError(f"stages {producer[a.name]} and {st.name} both write {a.name}")
            producer[a.name] = st.name
    deps: dict[str, set[str]] = {}
    for st in enabled:
        deps[st.name] = set()
        for a in st.declared_reads(cfg):
            if not isinstance(a, Artifact) or a in A.RUNNER_FILES:
                continue
            if a.name not in producer:
                raise PipelineError(f"stage {st.name} reads {a.name}, which no enabled stage "
                                    "writes; enable the stage that writes it")
            deps[st.name].add(producer[a.name])
    if only:
        wanted, todo = set(), [n for n in only if n in deps]
        missing = [n for n in only if n not in deps]
        if missing:
            raise PipelineError(f"stage(s) {missing} are disabled by the config")
        while todo:
            n = todo.pop()
            if n not in wanted:
                wanted.add(n)
                todo.extend(deps[n])
        enabled = [s for s in enabled if s.name in wanted]
    order: list[Stage] = []
    placed: set[str] = set()
    while len(order) < len(enabled):
        ready = [s for s in enabled if s.name not in placed and deps[s.name] <= placed]
        if not ready:
            raise PipelineError("the stages' declarations form a cycle: "
                                f"{sorted(set(deps) - placed)}")
        order.append(ready[0])
        placed.add(ready[0].name)
    return order


# Settings that never change what a run trains, indexes or evaluates, so they stay out of the
# run directory's identity: `--set publish.enabled=true` on a finished run lands in the same run
# directory and only the stages whose own fingerprint changed run again (publish; evaluate when
# the report shows the published history). Each stage's fingerprint still covers its sections.
IDENTITY_EXCLUDED = {
    "publish": None,   # the whole section: gate, directory, retention, lock
    "spark": None,     # where the heavy stages run: both engines write the same files
    "run": ("progress", "threads", "engine"),
    "evaluate": ("report", "enabled"),
}


def identity(cfg: Config) -> dict:
    """The settings that name a run directory: the config minus `IDENTITY_EXCLUDED`.

    Parameters
    ----------
    cfg : Config
        A loaded config.

    Returns
    -------
    dict
        The config as plain JSON values, without the sections and keys that do not change the
        model or its evaluation (publishing, the report switch, progress bars, threads, engine).
    """
    d = cfg.model_dump(mode="json")
    for section, keys in IDENTITY_EXCLUDED.items():
        if keys is None:
            d.pop(section, None)
        else:
            for k in keys:
                d.get(section, {}).pop(k, None)
    return d


def default_run_dir(cfg: Config) -> Path:
    """runs/<name>-<hash of the config's identity and the input files>: rerunning the same job
    resumes the same run, whatever its publish / report / progress settings (`identity`)."""
    h = hashlib.sha256(json.dumps(identity(cfg), sort_keys=True).encode())
    for p in [*cfg.input.paths, *cfg.input.test_paths]:
        h.update(json.dumps(A.file_stamp(p)).encode())
    return Path(cfg.run.runs_dir) / f"{cfg.run.name}-{h.hexdigest()[:12]}"


def stage_fingerprint(cfg: Config, st: Stage, written_by: dict[str, str | None],
                      run_dir: str | Path | None = None) -> str:
    """sha256 over the stage's settings, the fingerprints behind the artifacts it reads (by the
    stage that writes each, `written_by[name]`), its outside inputs' stamps (bound to
    `run_dir`, `Stage.declared_reads`) and its outputs."""
    reads = []
    for r in st.declared_reads(cfg, run_dir):
        if isinstance(r, Artifact):
            reads.append({"artifact": r.name, "from": written_by.get(r.name)})
        else:
            reads.append({"input": type(r).__name__, "stamp": r.stamp()})
    payload = {
        "stage": st.name,
        "code": __version__,
        # model_dump, not Config.section: fingerprinting is not a stage reading its settings
        "sections": {s: getattr(cfg, s).model_dump(mode="json") for s in st.sections},
        "seed": cfg.run.seed,
        "reads": reads,
        "writes": [(a.name, a.kind) for a in st.declared_writes(cfg)],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def stage_records(run_dir: str | Path) -> dict[str, dict]:
    """{stage: its done-file record} of the stages that finished in a run directory."""
    out = {}
    for p in sorted(Path(run_dir).glob(A.done_file("*"))):
        try:
            out[p.name.split(".")[0]] = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return out


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- helpers


def _run_stage(cfg: Config, st: Stage, fp: str, run_dir: Path) -> dict:
    tmp = run_dir / A.stage_scratch(st.name)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    (run_dir / A.done_file(st.name)).unlink(missing_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    writes = st.declared_writes(cfg)
    ctx = StageContext(cfg, st.name, run_dir, tmp, st.declared_reads(cfg, run_dir), writes)
    try:
        stats = st.run(ctx) or {}
    except OSError:
        # a full disk: the stage's temporary files (a training corpus can be GBs) go at once
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp / ".scratch", ignore_errors=True)
    hashes = {}
    for a in writes:
        src = a.path(tmp)
        if not (src.is_dir() if a.kind == "folder" else src.is_file()):
            raise PipelineError(f"stage {st.name} did not write its declared output {a.name} "
                                f"(a {a.kind})")
        hashes[a.name] = A.sha256(src)
    extra = sorted(p.name for p in tmp.iterdir() if p.name not in hashes)
    if extra:
        raise PipelineError(f"stage {st.name} wrote {extra}, which it does not declare")
    for a in writes:
        A.replace(a.path(tmp), a.path(run_dir))
    shutil.rmtree(tmp, ignore_errors=True)
    record = {
        "fingerprint": fp,
        "outputs": hashes,
        "seconds": round(time.perf_counter() - t0, 3),
        # CPU seconds of the whole process (every thread) while the stage ran: on a shared
        # machine the wall clock counts the others' work too
        "cpu_seconds": round(time.process_time() - c0, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "stats": stats,
        "finished": A.now_iso(),
    }
    A.write_json(run_dir / A.done_file(st.name), record)
    return {"status": "ran", **record}


def _reused_fingerprint(done: Path, stage: str, run_dir: Path) -> str:
    """The recorded fingerprint of a stage taken as it is; refuses a missing or changed one."""
    how = (f"finish the run first (recembed run --resume {run_dir}), or run the whole job "
           "with publish.enabled = true")
    try:
        rec = json.loads(done.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{run_dir} has no finished {stage} stage ({done.name} is missing): "
                            f"{how}", EXIT_BAD_INPUT) from None
    except (OSError, json.JSONDecodeError) as e:
        raise PipelineError(f"{done} cannot be read ({e}): {how}", EXIT_BAD_INPUT) from None
    if not _verified(done, rec.get("fingerprint", ""), run_dir):
        raise PipelineError(f"the outputs of stage {stage} in {run_dir} changed since "
                            f"{done.name} recorded them, so they are not what was evaluated: "
                            f"{how}", EXIT_BAD_INPUT)
    return rec["fingerprint"]


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
        if not p.exists() or A.sha256(p) != digest:
            log.warning("%s changed since it was written; rerunning its stage", p)
            return False
    return True


def _calibration_line(run_dir: Path) -> str:
    """What calibration chose, in one line (calibration.json), or why it was off."""
    try:
        rec = json.loads(A.CALIBRATION.path(run_dir).read_text())
    except (OSError, json.JSONDecodeError):
        return ""
    if not rec.get("enabled"):
        return f"off ({rec.get('reason') or 'calibrate.enabled = false'})"
    parts = [f"corpus {rec.get('corpus')}"]
    if rec.get("target_tokens") and rec.get("corpus") != "svd":  # svd trains no amount
        parts.append(f"{int(rec['target_tokens']):,} training tokens")
    sg = rec.get("sgns") or {}
    if sg.get("chosen"):
        parts.append("skip-gram " + ", ".join(f"{k} {v}" for k, v in sg["chosen"].items())
                     + (" (kept)" if sg.get("decision") == "kept" else
                        "" if sg.get("changed") else " (the defaults)"))
    blend = (rec.get("blend") or {}).get("settings") or {}
    weights = blend.get("weights")
    if isinstance(weights, dict):
        parts.append("blend " + ", ".join(f"{k} {float(v):.2g}" for k, v in weights.items()
                                          if float(v) > 0))
    v = rec.get("validation") or {}
    if "recall@20" in v:
        parts.append(f"validation Recall@20 {float(v['recall@20']):.3f}")
    return "; ".join(parts)


def _facts(stats: dict) -> str:
    """The short scalar statistics as `key=value, ...`, and small count tables (ingest's
    `quarantine_reasons`) as `key[entry]=n`: every filter and quarantine reason says how many
    rows it removed. Lists and big tables are left to run.json."""
    out = []
    for k, v in stats.items():
        if _short(v):
            out.append(f"{k}={_fmt(v)}")
        elif isinstance(v, dict) and 0 < len(v) <= 12 and all(_short(x) for x in v.values()):
            out += [f"{k}[{str(sub)[:60]}]={_fmt(x)}" for sub, x in v.items()]
    return ", ".join(out)


def _short(v) -> bool:
    return isinstance(v, (int, float, str, np.integer, np.floating)) and len(str(v)) < 40


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
