"""ingest: click logs -> clean events, vocabulary, item categories (+ the quarantine)."""

from __future__ import annotations

import logging

import pandas as pd

from recembed import artifacts as A
from recembed import settings
from recembed.config import Config
from recembed.ingest import IngestError, read_categories
from recembed.pipeline import EXIT_BAD_INPUT, PipelineError, Stage, StageContext

log = logging.getLogger("recembed")


def run(ctx: StageContext) -> dict:
    """Read and validate the logs; the quarantine goes straight into the run directory so that
    it survives a run stopped by too many bad rows. Either engine writes the events itself
    (Spark: the same rules, files read in parallel)."""
    cfg = ctx.cfg
    i = cfg.input
    quarantine = A.QUARANTINE.path(ctx.run_dir)
    try:
        res = settings.engine(cfg, "ingest").ingest_files(
            settings.ingest_params(cfg), ctx.write(A.EVENTS), quarantine,
            settings.runtime(cfg, ctx.scratch))
    except IngestError as e:
        raise PipelineError(str(e), EXIT_BAD_INPUT) from e
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
