"""The one boundary where a Config becomes plain values: typed parameter records for the stage
modules, which never see a Config. Stage adapters call these; nothing else reads a Config's
sections for a stage module's arguments."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from recembed.config import Config
from recembed.graph import GraphParams
from recembed.ingest import ColumnMap, IngestParams
from recembed.runtime import Runtime
from recembed.sequences import CorpusParams
from recembed.sessions import SessionParams
from recembed.sources import SourceOptions
from recembed.walks import WalkParams

# ---- data half


def engine(cfg: Config, stage: str) -> ModuleType:
    """The module that runs a data-half stage under `run.engine`.

    Parameters
    ----------
    cfg : Config
    stage : {"ingest", "sessions", "graph", "walks", "sequences"}
        The stage module's name; the local engine's is `recembed.<stage>`, Spark's
        `recembed.spark.<stage>` (imported only then: it needs pyspark).

    Returns
    -------
    module
        Either engine's module; both have the same engine-neutral stage function
        (`ingest_files`, `sessionize_files`, `graph_from_files`, `walks_from_graph_file`,
        `corpus_from_files`) with the same signature and the same output bytes.
    """
    if stage not in ("ingest", "sessions", "graph", "walks", "sequences"):
        raise ValueError(f"{stage!r} is not a data-half stage module")
    prefix = "recembed.spark." if cfg.run.engine == "spark" else "recembed."
    return importlib.import_module(prefix + stage)


def runtime(cfg: Config, scratch: str | Path) -> Runtime:
    """Where a data-half stage runs (`[run]` threads and progress, `[spark]`), with its scratch
    folder."""
    r = cfg.run
    return Runtime(scratch=Path(scratch), threads=r.n_threads(), progress=r.progress,
                   spark_master=cfg.spark.master, spark_conf=dict(cfg.spark.conf),
                   app_name=f"recembed-{r.name}")


def ingest_params(cfg: Config) -> IngestParams:
    """`[input]` and `[ingest]` as `recembed.ingest.IngestParams`."""
    c, i, g = cfg.input.columns, cfg.input, cfg.ingest
    return IngestParams(
        paths=tuple(i.paths), test_paths=tuple(i.test_paths),
        columns=ColumnMap(item=c.item, ts=c.ts, user=c.user, session=c.session,
                          event_type=c.event_type, ts_offset=c.ts_offset),
        fmt=i.format, delimiter=i.delimiter, ts_unit=i.ts_unit, ts_offset_unit=i.ts_offset_unit,
        event_types=tuple(i.event_types), na_values=tuple(i.na_values),
        max_bad_fraction=g.max_bad_fraction, max_ts_distance_days=g.max_ts_distance_days,
        drop_duplicates=g.drop_duplicates, window_days=g.window_days,
        source=SourceOptions(encoding=i.encoding, partition_date=i.partition_date,
                             filters={k: [str(v) for v in vs] for k, vs in i.filters.items()}),
    )


def session_params(cfg: Config) -> SessionParams:
    """`[session]`, `[bots]`, `[holdout]` and `[validation]` as
    `recembed.sessions.SessionParams`."""
    s, b, v = cfg.session, cfg.bots, cfg.validation
    return SessionParams(
        gap_minutes=s.gap_minutes, max_length=s.max_length, min_length=s.min_length,
        collapse_repeats=s.collapse_repeats, half_life_days=s.half_life_days,
        holdout_days=cfg.holdout.days, bots=b.enabled, max_events_per_day=b.max_events_per_day,
        min_median_gap_s=b.min_median_gap_s, min_events_for_gap_rule=b.min_events_for_gap_rule,
        bot_outlier_z=b.outlier_z, bot_max_share=b.max_share, auto_gap=s.auto_gap,
        max_short_share=s.max_short_share, validation_share=v.share,
        validation_min_sessions=v.min_sessions, validation_max_sessions=v.max_sessions,
    )


def graph_params(cfg: Config) -> GraphParams:
    """`[graph]` as `recembed.graph.GraphParams`."""
    g = cfg.graph
    return GraphParams(window=g.window, distance_weighting=g.distance_weighting,
                       directed=g.directed, min_weight=g.min_weight,
                       max_out_edges=g.max_out_edges)


def walk_params(cfg: Config) -> WalkParams:
    """`[walks]` and the run's seed as `recembed.walks.WalkParams`."""
    w = cfg.walks
    return WalkParams(method=w.method, walks_per_node=w.walks_per_node,
                      walk_length=w.walk_length, p=w.p, q=w.q, seed=cfg.run.seed,
                      max_tokens=w.max_tokens)


def corpus_params(cfg: Config) -> CorpusParams:
    """`[sequences]` and the run's seed as `recembed.sequences.CorpusParams`."""
    s = cfg.sequences
    return CorpusParams(replication=s.replication, min_copies=s.min_copies, seed=cfg.run.seed)
