"""`recembed ...` command line (typer)."""

from __future__ import annotations

import json
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


_VERBOSE = False


@app.callback()
def _main(verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="debug logs, and every stage's statistics after a run")] = False,
          ) -> None:
    global _VERBOSE
    _VERBOSE = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(message)s")
    if not verbose:  # their per-epoch INFO lines drown the run summary; we report our own
        for name in ("gensim", "faiss", "numba", "smart_open"):
            logging.getLogger(name).setLevel(logging.WARNING)


class LogFormat(str, Enum):
    """How `recembed run` reports: text for people, JSON lines for schedulers."""

    human = "human"
    json = "json"


class StageName(str, Enum):
    """The stages of the nightly plan, in run order (`recembed.stages.STAGES`; a test keeps
    the two equal, so the CLI need not import every stage to print its help)."""

    ingest = "ingest"
    sessionize = "sessionize"
    calibrate = "calibrate"
    graph = "graph"
    walks = "walks"
    sequences = "sequences"
    catalog = "catalog"
    train = "train"
    index = "index"
    evaluate = "evaluate"
    publish = "publish"


class Profile(str, Enum):
    """`recembed synth --profile`: the synthetic log's kind (`recembed.synth.PROFILES`)."""

    clicks = "clicks"
    ratings = "ratings"
    histories = "histories"
    purchases = "purchases"
    music = "music"


@app.command()
def run(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Argument(help="pipeline TOML")] = None,  # noqa: UP045
    set_: SetOpt = None,
    run_dir: Annotated[Optional[Path], typer.Option(help="where outputs go")] = None,  # noqa: UP045
    resume: Annotated[Optional[Path], typer.Option(help="resume this run directory")] = None,  # noqa: UP045
    stage: Annotated[Optional[list[StageName]], typer.Option(  # noqa: UP045
        help="run only this stage and the stages it needs (repeatable)")] = None,
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
        report = run_pipeline(cfg, run_dir, plan=STAGES,
                              stages=[StageName(x).value for x in stage] if stage else None,
                              force=fresh,
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
        if _VERBOSE:
            typer.echo(report.summary())
        typer.echo(report.headline())


@app.command()
def publish(
    run_dir: Annotated[Path, typer.Argument(help="a finished run directory (recembed run's "
                                            "runs/<name>-<hash>/)")],
    set_: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        "--set", help="override a publish.* key, e.g. publish.dir=/srv/published")] = None,
    force: Annotated[bool, typer.Option(help="publish even if the quality gate refuses "
                                        "(logged)")] = False,
) -> None:
    """Publish exactly the run that was evaluated: trains, indexes and evaluates nothing.

    Every stage before publish is taken from RUN_DIR as it is (its outputs verified against its
    done-file); only the quality gate and the publish step run, with the run's config.toml and
    publish.enabled = true. Exit codes as for run: 0 published (or already current), 2 a --set
    key outside the publish section, 3 not a finished run, 4 gate refused, 5 publish lock held.
    """
    from recembed import artifacts as A
    from recembed.pipeline import PipelineError, run_pipeline
    from recembed.stages import STAGES

    if not A.CONFIG.path(run_dir).exists():
        _fail(f"{run_dir} is not a run directory (no {A.CONFIG.name}); give the directory "
              "recembed run printed after 'run:'", 3)
    model_keys = [x for x in set_ or [] if not x.strip().startswith("publish.")]
    if model_keys:
        _fail(f"recembed publish takes only publish.* settings, not {model_keys}: any other "
              "key changes the model or its evaluation; use recembed run CONFIG --set ... "
              "instead", 2)
    try:
        cfg = load_config(A.CONFIG.path(run_dir), [*(set_ or []), "publish.enabled=true",
                                                   *(["publish.force=true"] if force else [])])
    except ConfigError as e:
        _fail(str(e), 2)
    try:
        rep = run_pipeline(cfg, run_dir, plan=STAGES, stages=["publish"],
                           reuse=[s.name for s in STAGES if s.name != "publish"],
                           echo=lambda line: None)
    except PipelineError as e:
        _fail(str(e), e.exit_code)
    info = json.loads(A.PUBLISH_INFO.path(run_dir).read_text())
    st = rep.stages.get("publish", {})
    typer.echo(f"published {run_dir} as {info.get('version')} in {cfg.publish.dir} "
               f"({info.get('reason') or 'ok'}; {st.get('seconds', 0):.1f} s)")


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
            run_pipeline(cfg, target, plan=STAGES, stages=["evaluate"],
                         echo=typer.echo if _VERBOSE else (lambda line: None))
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
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, help="neighbours per item")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Nearest neighbours of items in a published version (exit 6: an id is unknown)."""
    rec = _load(version)
    res = rec.similar(item_id, k=k)
    if as_json:
        _emit_json(version, rec, [{"id": q, "items": _items(rec, ids, sc)}
                                  for q, ids, sc in zip(item_id, res.ids, res.scores,
                                                        strict=True)], res.unknown)
    else:
        for q, ids, sc in zip(item_id, res.ids, res.scores, strict=True):
            typer.echo(f"\n{q}" + ("  (unknown id)" if q in res.unknown else ""))
            _table(rec, ids, sc)
    _unknown_exit(res.unknown, item_id)


@app.command()
def recommend(
    version: Annotated[Path, typer.Argument(help="published root, version or run directory")],
    item_id: Annotated[list[str], typer.Argument(help="recent items of a session, oldest first")],
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, help="items to recommend")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Next-item recommendations for a session (repeat-aware blend, see serving.json); unknown
    ids keep their place in the decay and are reported on stderr (exit 6)."""
    rec = _load(version)
    res = rec.recommend(item_id, k=k)
    if as_json:
        _emit_json(version, rec, [{"items": _items(rec, res.ids[0], res.scores[0])}],
                   res.unknown)
    else:
        _table(rec, res.ids[0], res.scores[0])
    _unknown_exit(res.unknown, item_id)


@app.command()
def tune(
    config: Annotated[Path, typer.Argument(help="pipeline TOML")],
    trials: Annotated[int, typer.Option(help="trials to add to the study")] = 50,
    time_budget: Annotated[float, typer.Option(help="seconds; no trial starts after this, and "
                                               "a running one stops at its next epoch end "
                                               "(0 = no limit)")] = 3600.0,
    sample_sessions: Annotated[int, typer.Option(help="tune on the N most recent "
                                                 "calibration-train sessions (0 = all)")] = 0,
    set_: SetOpt = None,
    space: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        help="search key=value (TOML): a list, \\[lo, hi] range or a fixed value, e.g. "
             "'train.vector_size=\\[32, 64]'")] = None,
    run_dir: Annotated[Optional[Path], typer.Option(help="run directory")] = None,  # noqa: UP045
) -> None:
    """Optuna search of corpus, training and blend settings on the validation split; resumes
    from <run>/tune.db and writes <run>/tuned.toml (include it from a pipeline TOML)."""
    from recembed.pipeline import EXIT_LOCKED, PipelineError
    from recembed.tune import TuneError, TuneLocked, parse_space
    from recembed.tune import tune as run_tune

    try:
        cfg = load_config(config, set_ or [])
        res = run_tune(cfg, run_dir, trials=trials, time_budget_s=time_budget,
                       sample_sessions=sample_sessions, space=parse_space(space or []),
                       echo=typer.echo)
    except TuneLocked as e:
        _fail(str(e), EXIT_LOCKED)
    except (ConfigError, TuneError) as e:
        _fail(str(e), 2)
    except PipelineError as e:
        _fail(str(e), e.exit_code)
    typer.echo(res.table())
    typer.echo(f"study {res.study_name} in {res.storage}: {res.added} trials added "
               f"({res.seconds:.1f} s)" + (f"; {res.stopped}" if res.stopped else ""))
    if res.tuned_path:
        typer.echo(f"best settings: {res.tuned_path}\nto use them, add this line at the top of "
                   f"{config}:\n  {res.include_line}")
    else:
        typer.echo("no trial completed: nothing written")


@app.command()
def serve(
    published: Annotated[Path, typer.Argument(help="published root (holds LATEST)")],
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(help="worker processes (each loads the version)")] = 1,
    poll: Annotated[float, typer.Option(help="seconds between two reads of LATEST")] = 1.0,
    max_k: Annotated[int, typer.Option(help="largest k a request may ask for")] = 1000,
    max_session: Annotated[int, typer.Option(help="most ids in one session")] = 200,
    max_batch: Annotated[int, typer.Option(help="most sessions in one request")] = 1000,
    access_log: Annotated[bool, typer.Option(help="one log line per request")] = False,
) -> None:
    """HTTP service (FastAPI on uvicorn) of the version LATEST names, swapped when LATEST
    changes; JSON log lines on stderr. See recembed.server for the endpoints."""
    from recembed import artifacts as A
    from recembed.server import ServeSettings
    from recembed.server import serve as run_server

    if not (published / A.LATEST).exists():
        _fail(f"{published} has no {A.LATEST}: give a published root", 3)
    run_server(ServeSettings(root=str(published), max_k=max_k, max_session=max_session,
                             max_batch=max_batch, poll_s=poll),
               host=host, port=port, workers=workers, access_log=access_log)


@app.command()
def export(
    published: Annotated[Path, typer.Argument(help="published root (the version LATEST names)")],
    to: Annotated[str, typer.Option("--to", help="a .db file (Milvus Lite), a directory "
                                    "(Qdrant local mode), milvus://host:port or "
                                    "qdrant://host:port")],
    alias: Annotated[str, typer.Option(help="the alias readers query")] = "recembed",
    keep: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="collections kept (default: the version's publish.keep_versions)")] = None,
) -> None:
    """Export the current version into a vector database: one collection per version (item
    and context vectors, id / category / origin), the alias moved once it is complete."""
    from recembed import artifacts as A
    from recembed.export import ExportError, export_version, open_target
    from recembed.serving import ArtifactError, resolve_latest

    if keep is None:
        keep = 5
        try:
            version_dir = resolve_latest(published) if (published / A.LATEST).exists() \
                else published
            keep = load_config(A.CONFIG.path(version_dir)).publish.keep_versions
        except (ArtifactError, ConfigError, OSError):
            pass  # a version without a readable config.toml: the publish default
    try:
        target = open_target(to)
    except ExportError as e:
        _fail(str(e), 2)
    try:
        res = export_version(published, target, alias=alias, keep=keep, echo=typer.echo)
    except ArtifactError as e:
        _fail(str(e), 3)
    except ExportError as e:
        _fail(str(e), 1)
    finally:
        target.close()
    typer.echo(f"{res.items:,} items of {res.version} in {res.collection}"
               f"{' (already complete)' if res.reused else ''}; alias {res.alias!r} moved"
               + (f"; dropped {', '.join(res.dropped)}" if res.dropped else "")
               + f" ({res.seconds:.1f} s)")
    typer.echo(f"directional query: sum of decay**j x item vector j steps back over the "
               f"{res.history} most recent items, decay = {res.decay:g}, searched in "
               f"'context' (inner product); similar: 'item' (cosine)")


def _load(path: Path):
    from recembed.serving import ArtifactError, Recommender

    try:
        return Recommender.load(path)
    except ArtifactError as e:
        _fail(str(e), 3)


# query / recommend: an id is not in the version, the answer incomplete or empty (0-5: `recembed
# run`); the same code as an empty `evaluate` (recembed.pipeline.EXIT_EMPTY)
EXIT_UNKNOWN_IDS = 6

JsonOpt = Annotated[bool, typer.Option("--json", help="one JSON object on stdout: version, "
                                       "results / items, unknown")]


def _items(rec, ids, scores) -> list[dict]:
    """[{"id", "score", "category"?}] of one answer."""
    cats = None if rec.categories is None else rec.categories[[rec.row_of[str(x)] for x in ids]]
    return [{"id": str(x), "score": float(sc), **({} if cats is None else
                                                 {"category": int(cats[i])})}
            for i, (x, sc) in enumerate(zip(ids, scores.tolist(), strict=True))]


def _emit_json(path: Path, rec, results: list[dict], unknown: list[str]) -> None:
    """The --json answer: {"version", "results" (query) or "items" (recommend), "unknown"}."""
    import json

    from recembed import artifacts as A
    from recembed.serving import resolve_latest

    name = resolve_latest(path).name if (path / A.LATEST).exists() else Path(path).resolve().name
    body = {"version": name, **({"items": results[0]["items"]}
                                if set(results[0]) == {"items"} else {"results": results}),
            "unknown": list(unknown)}
    typer.echo(json.dumps(body, ensure_ascii=False))


def _unknown_exit(unknown: list[str], asked: list[str] | None = None) -> None:
    """Unknown ids: named on stderr, exit `EXIT_UNKNOWN_IDS` (the answer for the known ids is
    printed first; when every id asked is unknown the answer is empty, and the message says
    so)."""
    if unknown:
        if asked and set(map(str, asked)) <= set(map(str, unknown)):
            typer.secho(f"error: none of the ids {', '.join(map(repr, asked))} is an item of "
                        "this version: the answer is empty", fg=typer.colors.RED, err=True)
        else:
            typer.secho(f"error: unknown ids (not in this version): {', '.join(unknown)}",
                        fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_UNKNOWN_IDS)


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
    profile: Annotated[Profile, typer.Option(help="which kind of log")] = "clicks",
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
        log = synth_profile(Profile(profile).value, events, seed, bot_share=bot_share, days=days)
    except ValueError as e:
        _fail(str(e), 2)
    ev, items = write_synth(log, out)
    typer.echo(f"wrote {len(log.events):,} events to {ev} and {len(log.items):,} items to {items}")


@app.command()
def warmup() -> None:
    """Compile the numba kernels now (a small synthetic run and the serving calls), so that the
    first real run and the first query do not pay for it (~40 s on 2 cores); `make install`
    runs it. Writes nothing but numba's on-disk cache."""
    from recembed.warmup import compile_kernels

    t = compile_kernels()
    typer.echo(f"kernels compiled and cached in {t['total_s']:.1f} s (run {t['run_s']:.1f} s, "
               f"serving {t['serving_s']:.1f} s)")


def _warn_exit(msg: str, code: int) -> None:
    typer.secho(msg, fg=typer.colors.YELLOW, err=True)
    raise typer.Exit(code)


def _fail(msg: str, code: int) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
