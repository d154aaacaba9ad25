"""`recembed ...` command line (typer)."""

from __future__ import annotations

import logging
import sys
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


@app.command()
def run(
    config: Annotated[Optional[Path], typer.Argument(help="pipeline TOML")] = None,  # noqa: UP045
    set_: SetOpt = None,
    run_dir: Annotated[Optional[Path], typer.Option(help="where outputs go")] = None,  # noqa: UP045
    resume: Annotated[Optional[Path], typer.Option(help="resume this run directory")] = None,  # noqa: UP045
    stage: Annotated[Optional[list[str]], typer.Option(help="run only these stages")] = None,  # noqa: UP045
    force: Annotated[bool, typer.Option(help="rerun stages even when up to date; "
                                        "publish past a quality-gate refusal")] = False,
) -> None:
    """Run the pipeline; a rerun of the same config on the same inputs resumes."""
    from recembed.pipeline import PipelineError, run_pipeline

    if resume is not None:
        if not (resume / "config.toml").exists():
            _fail(f"{resume} is not a run directory (no config.toml)", 3)
        config, run_dir = resume / "config.toml", resume
    try:
        cfg = load_config(config, set_)
    except ConfigError as e:
        _fail(str(e), 2)
    try:
        report = run_pipeline(cfg, run_dir, stages=stage, force=force, echo=typer.echo)
    except PipelineError as e:
        _fail(str(e), e.exit_code)
    typer.echo(report.summary())


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="output .csv or .parquet")],
    events: Annotated[int, typer.Option(help="number of events")] = 100_000,
    days: Annotated[int, typer.Option(help="days covered")] = 14,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Generate a realistic synthetic click log (and `<stem>_items.csv` with categories)."""
    from recembed.synth import synth_clicks, write_synth

    log = synth_clicks(events, days=days, seed=seed)
    ev, items = write_synth(log, out)
    typer.echo(f"wrote {len(log.events):,} events to {ev} and {len(log.items):,} items to {items}")


def _fail(msg: str, code: int) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
