"""Glue between the config and the stage functions: each `*_stage` reads its inputs from the run
directory, calls plain functions with plain arguments, and writes its outputs to `out`.

The stage modules themselves never see a Config; this is the only place that unpacks it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from recembed.config import Config
from recembed.ingest import ColumnMap, IngestError, ingest, read_categories, write_parquet_atomic
from recembed.pipeline import EXIT_BAD_INPUT, PipelineError, Stage
from recembed.sessions import sessionize

log = logging.getLogger("recembed")


def ingest_stage(cfg: Config, run: Path, out: Path) -> dict:
    """events.parquet, vocabulary.parquet, quarantine.parquet (and categories.parquet)."""
    c, i = cfg.input.columns, cfg.input
    try:
        res = ingest(
            i.paths,
            ColumnMap(item=c.item, ts=c.ts, user=c.user, session=c.session,
                      event_type=c.event_type, ts_offset=c.ts_offset),
            test_paths=i.test_paths, fmt=i.format, delimiter=i.delimiter, ts_unit=i.ts_unit,
            ts_offset_unit=i.ts_offset_unit, event_types=i.event_types,
            max_bad_fraction=cfg.ingest.max_bad_fraction,
            drop_duplicates=cfg.ingest.drop_duplicates,
            # the quarantine goes straight into the run dir so it survives a failed run
            quarantine_path=run / "quarantine.parquet",
        )
    except IngestError as e:
        raise PipelineError(str(e), EXIT_BAD_INPUT) from e
    write_parquet_atomic(res.events, out / "events.parquet")
    write_parquet_atomic(res.vocabulary, out / "vocabulary.parquet")
    cats = pd.DataFrame({"code": res.vocabulary["code"], "category": -1})
    if i.categories_path:
        item_col, cat_col = i.categories_columns
        cats["category"] = read_categories(i.categories_path, item_col, cat_col, res.vocabulary)
    write_parquet_atomic(cats, out / "categories.parquet")
    if res.stats["quarantined"]:
        log.warning("%d rows quarantined in %s", res.stats["quarantined"],
                    run / "quarantine.parquet")
    stats = dict(res.stats)
    stats.pop("files")
    return stats


def sessionize_stage(cfg: Config, run: Path, out: Path) -> dict:
    """sessions_train.parquet, sessions_test.parquet, session_table.parquet."""
    events = pd.read_parquet(run / "events.parquet")
    s, b = cfg.session, cfg.bots
    res = sessionize(
        events, gap_minutes=s.gap_minutes, max_length=s.max_length, min_length=s.min_length,
        collapse_repeats=s.collapse_repeats, half_life_days=s.half_life_days,
        holdout_days=cfg.holdout.days, bots=b.enabled, max_events_per_day=b.max_events_per_day,
        min_median_gap_s=b.min_median_gap_s, min_events_for_gap_rule=b.min_events_for_gap_rule,
    )
    if res.stats["train_sessions"] == 0:
        raise PipelineError("no training sessions left after sessionizing "
                            f"({res.stats}); check the column mapping and session settings",
                            EXIT_BAD_INPUT)
    write_parquet_atomic(res.train, out / "sessions_train.parquet")
    write_parquet_atomic(res.test, out / "sessions_test.parquet")
    write_parquet_atomic(res.table, out / "session_table.parquet")
    return res.stats


STAGES: list[Stage] = [
    Stage("ingest", ingest_stage, ("input", "ingest"), (),
          ("events.parquet", "vocabulary.parquet", "categories.parquet"),
          inputs=lambda cfg: [*cfg.input.paths, *cfg.input.test_paths,
                              *([cfg.input.categories_path] if cfg.input.categories_path else [])]),
    Stage("sessionize", sessionize_stage, ("session", "bots", "holdout"), ("ingest",),
          ("sessions_train.parquet", "sessions_test.parquet", "session_table.parquet")),
]
