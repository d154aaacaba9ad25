"""`recembed ...` command line (typer)."""

from __future__ import annotations

import logging
import sys
import time
import traceback
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from recembed.config import ConfigError, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Click logs to item embeddings and nearest-neighbour indexes.")

SetOpt = Annotated[Optional[list[str]],  # noqa: UP045 - typer needs Optional
                   typer.Option("--set", help="override a config key: section.key=value")]


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(message)s")
    if not verbose:  # their per-epoch INFO lines drown the run summary; we report our own
        for name in ("gensim", "faiss", "numba", "smart_open"):
            logging.getLogger(name).setLevel(logging.WARNING)


class LogFormat(str, Enum):
    """How `recembed run` reports: text for people, JSON lines for schedulers."""

    human = "human"
    json = "json"


@app.command()
def run(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Argument(help="pipeline TOML")] = None,  # noqa: UP045
    set_: SetOpt = None,
    run_dir: Annotated[Optional[Path], typer.Option(help="where outputs go")] = None,  # noqa: UP045
    resume: Annotated[Optional[Path], typer.Option(help="resume this run directory")] = None,  # noqa: UP045
    stage: Annotated[Optional[list[str]], typer.Option(help="run only these stages")] = None,  # noqa: UP045
    fresh: Annotated[bool, typer.Option(help="rerun every stage even when up to date")] = False,
    force: Annotated[bool, typer.Option(help="publish even if the quality gate refuses "
                                        "(logged)")] = False,
    log_format: Annotated[LogFormat, typer.Option(
        help="human: a line per stage and a summary; json: one JSON object per stage and one "
             "per run on stdout, nothing else (logs and errors go to stderr)")] = LogFormat.human,
) -> None:
    """Run the pipeline; a rerun of the same config on the same inputs resumes.

    Exit codes: 0 done/published, 1 crash, 2 bad config, 3 bad input, 4 quality gate refused,
    5 publish lock held by another run. Every run that got as far as its run directory leaves
    run.json there (exit code, times, per-stage summary, warnings, the error of a failed run).
    """
    from recembed import artifacts as A
    from recembed.pipeline import (
        EXIT_CRASH,
        PipelineError,
        RunReport,
        default_run_dir,
        run_pipeline,
    )
    from recembed.stages import STAGES

    if config is None and not set_ and resume is None:
        # a forgotten argument, not a wish to run on the built-in defaults for minutes
        typer.echo(ctx.get_help())
        typer.secho("\nerror: recembed run needs a pipeline config (CONFIG), --set overrides or "
                    "--resume RUN_DIR; nothing was run", err=True)
        raise typer.Exit(2)
    as_json = log_format is LogFormat.json
    t0, started = time.perf_counter(), A.now_iso()

    def emit(obj: dict) -> None:
        typer.echo(A.dumps(obj))

    def refuse(msg: str, code: int) -> None:  # before there is a run directory
        if as_json:
            emit({"event": "run", "run_dir": None, "exit_code": code,
                  "seconds": round(time.perf_counter() - t0, 3), "warnings": [], "error": msg})
        _fail(msg, code)

    if resume is not None:
        if not A.CONFIG.path(resume).exists():
            refuse(f"{resume} is not a run directory (no {A.CONFIG.name})", 3)
        config, run_dir = A.CONFIG.path(resume), resume
    try:
        cfg = load_config(config, [*(set_ or []), *(["publish.force=true"] if force else [])])
    except ConfigError as e:
        refuse(str(e), 2)
    run_dir = Path(run_dir) if run_dir else default_run_dir(cfg)
    report = RunReport(run_dir)  # replaced by the runner's own as soon as a stage finishes
    current: list[str] = []

    def on_start(name: str) -> None:
        current[:] = [name]
        if not as_json and sys.stdout.isatty():  # a log file gets one line per stage, at its end
            typer.echo(f"[{name}] running")

    def on_stage(rep: RunReport, name: str) -> None:
        nonlocal report
        report, current[:] = rep, []
        if as_json:
            emit(rep.stage_event(name))

    def finish(code: int, error: str | None = None) -> None:
        rec = report.record(code, started=started, seconds=time.perf_counter() - t0,
                            error=error, failed_stage=current[0] if current else None)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            A.write_json(A.RUN_RECORD.path(run_dir), rec)
        except OSError as e:  # the record must not hide the run's own outcome
            typer.secho(f"warning: could not write {A.RUN_RECORD.path(run_dir)}: {e}", err=True)
        if as_json:
            emit({"event": "run", **{k: rec[k] for k in ("run_dir", "exit_code", "seconds",
                                                          "warnings", "failed_stage", "error")}})

    try:
        report = run_pipeline(cfg, run_dir, plan=STAGES, stages=stage, force=fresh,
                              echo=(lambda line: None) if as_json else typer.echo,
                              on_start=on_start, on_stage=on_stage)
    except PipelineError as e:
        finish(e.exit_code, str(e))
        _fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        finish(130, "interrupted")
        raise
    except Exception as e:  # a crash: recorded, then the traceback for whoever debugs it
        finish(EXIT_CRASH, f"{type(e).__name__}: {e}")
        traceback.print_exc(file=sys.stderr)
        raise typer.Exit(EXIT_CRASH) from None
    finish(0)
    if not as_json:
        typer.echo(report.summary())


@app.command()
def evaluate(
    target: Annotated[Path, typer.Argument(help="a run directory, or a published version / "
                                           "published root (then --run gives the holdout)")],
    run_: Annotated[Optional[Path], typer.Option("--run", help="run whose holdout to use")] = None,  # noqa: UP045
) -> None:
    """Evaluate a run (all methods) or a published version's recommend on a run's holdout."""
    from recembed import artifacts as A
    from recembed.pipeline import PipelineError, run_pipeline
    from recembed.stages import STAGES

    if A.CONFIG.path(target).exists() and A.SESSIONS_TEST.path(target).exists():
        cfg = load_config(A.CONFIG.path(target), ["evaluate.enabled=true"])
        try:
            run_pipeline(cfg, target, plan=STAGES, stages=["evaluate"], echo=typer.echo)
        except PipelineError as e:
            _fail(str(e), e.exit_code)
        m = A.Metrics.load(A.METRICS.path(target))
        k = m.cutoff
        typer.echo(f"{m.queries['queries']:,} queries, {m.queries['oov_share']:.2%} of "
                   "targets unseen in training")
        typer.echo(f"{'method':<34}{'recall@' + str(k):>11}{'mrr@' + str(k):>9}"
                   f"{'coverage':>10}{'excl. prefix':>14}")
        for v in m.methods.values():
            a = v.allow_repeats
            typer.echo(f"{v.name:<34}{a.recall(k):>11.4f}{a.mrr(k):>9.4f}"
                       f"{a.coverage(k):>10.3f}{v.exclude_prefix.recall(k):>14.4f}")
        return
    if run_ is None:
        _fail("evaluating a published version needs --run RUN_DIR (whose holdout to use)", 2)
    import pandas as pd

    from recembed.evaluate import shared_targets
    from recembed.pipeline import EXIT_EMPTY
    from recembed.serving import ArtifactError
    from recembed.stages.publish import evaluate_published

    try:
        s = evaluate_published(target, run_)
        rec = _load(target)
        vocab = pd.read_parquet(A.VOCABULARY.path(run_), columns=["code", "id"])
        test = pd.read_parquet(A.SESSIONS_TEST.path(run_), columns=["item"])
    except (ArtifactError, OSError) as e:
        _fail(str(e), 3)
    typer.echo(f"recall@20 {s.recall(20):.4f}  mrr@20 {s.mrr(20):.4f}  "
               f"coverage@20 {s.coverage(20):.3f}  ({s.values['queries']:,} queries)")
    shared, n_targets = shared_targets(rec.ids, vocab, test["item"].to_numpy())
    if n_targets and shared == 0:
        _warn_exit(f"warning: the version {target} and the holdout of {run_} share no item (0 of "
              f"{n_targets:,} holdout items are in the version): the scores above are 0 by "
              "construction, not a measurement. Evaluate the version on a run of the same "
              "catalogue", EXIT_EMPTY)


@app.command()
def query(
    version: Annotated[Path, typer.Argument(help="published root, version or run directory")],
    item_id: Annotated[list[str], typer.Argument(help="item id(s)")],
    k: Annotated[int, typer.Option("-k", help="neighbours per item")] = 20,
) -> None:
    """Nearest neighbours of items in a published version."""
    rec = _load(version)
    res = rec.similar(item_id, k=k)
    for q, ids, sc in zip(item_id, res.ids, res.scores, strict=True):
        typer.echo(f"\n{q}" + ("  (unknown id)" if q in res.unknown else ""))
        _table(rec, ids, sc)
    _empty_answer(version, item_id, res)


@app.command()
def recommend(
    version: Annotated[Path, typer.Argument(help="published root, version or run directory")],
    item_id: Annotated[list[str], typer.Argument(help="recent items of a session, oldest first")],
    k: Annotated[int, typer.Option("-k", help="items to recommend")] = 20,
) -> None:
    """Next-item recommendations for a session (repeat-aware blend, see serving.json)."""
    rec = _load(version)
    res = rec.recommend(item_id, k=k)
    if res.unknown:
        typer.echo(f"unknown ids ignored: {', '.join(res.unknown)}")
    _table(rec, res.ids[0], res.scores[0])
    _empty_answer(version, item_id, res)


def _empty_answer(version: Path, asked: list[str], res) -> None:
    """Exit `EXIT_EMPTY` with a warning when every id asked is unknown (an empty table is no
    answer); a partly unknown query is answered (exit 0) with a warning."""
    from recembed.pipeline import EXIT_EMPTY

    unknown = set(res.unknown)
    if asked and all(str(q) in unknown for q in asked):
        _warn_exit(f"warning: none of the ids {', '.join(map(repr, asked))} is an item of {version}: "
              "the answer is empty", EXIT_EMPTY)
    if unknown:
        typer.secho(f"warning: unknown ids: {', '.join(sorted(unknown))}", err=True)


@app.command()
def tune(
    config: Annotated[Path, typer.Argument(help="pipeline TOML")],
    trials: Annotated[int, typer.Option(help="trials to add to the study")] = 50,
    time_budget: Annotated[float, typer.Option(help="seconds; no trial starts after this "
                                               "(0 = no limit)")] = 3600.0,
    sample_sessions: Annotated[int, typer.Option(help="tune on the N most recent "
                                                 "calibration-train sessions (0 = all)")] = 0,
    set_: SetOpt = None,
    space: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        help="search key=value (TOML): a list, [lo, hi] range or a fixed value, e.g. "
             "'train.vector_size=[32, 64]'")] = None,
    run_dir: Annotated[Optional[Path], typer.Option(help="run directory")] = None,  # noqa: UP045
) -> None:
    """Optuna search of corpus, training and blend settings on the validation split; resumes
    from <run>/tune.db and writes <run>/tuned.toml (include it from a pipeline TOML)."""
    from recembed.pipeline import PipelineError
    from recembed.tune import TuneError, parse_space
    from recembed.tune import tune as run_tune

    try:
        cfg = load_config(config, set_ or [])
        res = run_tune(cfg, run_dir, trials=trials, time_budget_s=time_budget,
                       sample_sessions=sample_sessions, space=parse_space(space or []),
                       echo=typer.echo)
    except (ConfigError, TuneError) as e:
        _fail(str(e), 2)
    except PipelineError as e:
        _fail(str(e), e.exit_code)
    typer.echo(res.table())
    typer.echo(f"study {res.study_name} in {res.storage}: {res.added} trials added "
               f"({res.seconds:.1f} s)")
    typer.echo(f"best settings: {res.tuned_path}" if res.tuned_path else
               "no trial completed: nothing written")


def _load(path: Path):
    from recembed.serving import ArtifactError, Recommender

    try:
        return Recommender.load(path)
    except ArtifactError as e:
        _fail(str(e), 3)


def _table(rec, ids, scores) -> None:
    cats = None
    if rec.categories is not None:
        cats = rec.categories[[rec.row_of[str(x)] for x in ids]]
    typer.echo(f"{'rank':>4}  {'item':<20}{'score':>8}" + ("  category" if cats is not None else ""))
    for i, (x, s) in enumerate(zip(ids, scores, strict=True)):
        c = f"  {cats[i]}" if cats is not None else ""
        typer.echo(f"{i + 1:>4}  {x!s:<20}{s:>8.4f}{c}")


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="output .csv or .parquet")],
    profile: Annotated[str, typer.Option(help="clicks, ratings, histories, purchases or "
                                         "music")] = "clicks",
    events: Annotated[int, typer.Option(help="number of events")] = 100_000,
    days: Annotated[Optional[float], typer.Option(help="days covered (default: the "  # noqa: UP045
                                                  "profile's)")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    bot_share: Annotated[Optional[float], typer.Option(help="share of events from bots "  # noqa: UP045
                                                       "(default: 0.02 clicks, else 0)")] = None,
) -> None:
    """Generate a realistic synthetic log (and `<stem>_items.csv` with categories)."""
    from recembed.synth import synth_profile, write_synth

    try:
        log = synth_profile(profile, events, seed, bot_share=bot_share, days=days)
    except ValueError as e:
        _fail(str(e), 2)
    ev, items = write_synth(log, out)
    typer.echo(f"wrote {len(log.events):,} events to {ev} and {len(log.items):,} items to {items}")


def _warn_exit(msg: str, code: int) -> None:
    typer.secho(msg, fg=typer.colors.YELLOW, err=True)
    raise typer.Exit(code)


def _fail(msg: str, code: int) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
