"""ingest: click logs -> clean events, vocabulary, item categories (+ the quarantine)."""

from __future__ import annotations

import logging
from functools import partial

import pandas as pd

from recembed import artifacts as A
from recembed.config import Config
from recembed.ingest import ColumnMap, IngestError, ingest, read_categories
from recembed.pipeline import EXIT_BAD_INPUT, PipelineError, Stage, StageContext
from recembed.sources import SourceOptions

log = logging.getLogger("recembed")


def run(ctx: StageContext) -> dict:
    """Read and validate the logs; the quarantine goes straight into the run directory so that
    it survives a run stopped by too many bad rows."""
    cfg = ctx.cfg
    c, i = cfg.input.columns, cfg.input
    quarantine = A.QUARANTINE.path(ctx.run_dir)
    engine = ingest
    if cfg.run.engine == "spark":  # the same rules, files read in parallel (recembed.spark)
        from recembed.spark import ingest as spark_ingest
        from recembed.spark.session import from_config

        engine = partial(spark_ingest.ingest, from_config(cfg), events_path=ctx.write(A.EVENTS),
                         scratch=ctx.scratch)
    try:
        res = engine(
            i.paths,
            ColumnMap(item=c.item, ts=c.ts, user=c.user, session=c.session,
                      event_type=c.event_type, ts_offset=c.ts_offset),
            test_paths=i.test_paths, fmt=i.format, delimiter=i.delimiter, ts_unit=i.ts_unit,
            ts_offset_unit=i.ts_offset_unit, event_types=i.event_types, na_values=i.na_values,
            max_bad_fraction=cfg.ingest.max_bad_fraction,
            max_ts_distance_days=cfg.ingest.max_ts_distance_days,
            drop_duplicates=cfg.ingest.drop_duplicates, window_days=cfg.ingest.window_days,
            quarantine_path=quarantine,
            source=SourceOptions(encoding=i.encoding, partition_date=i.partition_date,
                                 filters={k: [str(v) for v in vs] for k, vs in i.filters.items()}),
        )
    except IngestError as e:
        raise PipelineError(str(e), EXIT_BAD_INPUT) from e
    if cfg.run.engine == "local":  # Spark wrote its events itself
        A.write_parquet(res.events, ctx.write(A.EVENTS), A.EVENTS.columns)
    A.write_parquet(res.vocabulary, ctx.write(A.VOCABULARY), A.VOCABULARY.columns)
    cats = pd.DataFrame({"code": res.vocabulary["code"], "category": -1})
    if i.categories_path:
        item_col, cat_col = i.categories_columns
        try:
            cats["category"] = read_categories(i.categories_path, item_col, cat_col,
                                               res.vocabulary)
        except IngestError as e:
            raise PipelineError(str(e), EXIT_BAD_INPUT) from e
    A.write_parquet(cats, ctx.write(A.CATEGORIES), A.CATEGORIES.columns)
    if res.stats["quarantined"]:
        log.warning("%d rows quarantined in %s", res.stats["quarantined"], quarantine)
    return {k: v for k, v in res.stats.items() if k != "files"}


def _inputs(cfg: Config) -> tuple:
    cats = [cfg.input.categories_path] if cfg.input.categories_path else []
    return (A.InputFiles((*cfg.input.paths, *cfg.input.test_paths, *cats)),)


STAGE = Stage("ingest", run, reads=_inputs, writes=(A.EVENTS, A.VOCABULARY, A.CATEGORIES),
              sections=("input", "ingest"))
