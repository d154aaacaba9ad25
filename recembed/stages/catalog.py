"""catalog: the item catalog (side information) and the training sessions -> catalog.parquet
(+ its quarantine), with the ingest codes and listing order of the listed items; runs only when
`input.catalog.path` is set."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from recembed import artifacts as A
from recembed.catalog import CatalogError, read_catalog
from recembed.config import Config
from recembed.pipeline import EXIT_BAD_INPUT, PipelineError, Stage, StageContext

log = logging.getLogger("recembed")


def run(ctx: StageContext) -> dict:
    """Read and validate the catalog; match its ids to the vocabulary."""
    cfg = ctx.cfg
    c = cfg.input.catalog
    vocab = pd.read_parquet(ctx.read(A.VOCABULARY), columns=["code", "id"])
    # the listing order knows the training window only, never the holdout
    train = pd.read_parquet(ctx.read(A.SESSIONS_TRAIN), columns=["item", "ts"])
    first = train.groupby("item")["ts"].min()
    first_seen = np.full(len(vocab), np.nan)
    first_seen[first.index.to_numpy()] = first.to_numpy(np.float64)
    try:
        cat = read_catalog(c.path, c.id, c.attributes, vocab, numeric=c.numeric,
                           buckets=c.buckets, category=c.category, listed=c.listed,
                           na_values=cfg.input.na_values, encoding=cfg.input.encoding,
                           max_bad_fraction=cfg.ingest.max_bad_fraction, first_seen=first_seen)
    except CatalogError as e:
        raise PipelineError(str(e), EXIT_BAD_INPUT) from e
    A.write_parquet(cat.table, ctx.write(A.CATALOG), A.CATALOG.columns)
    A.write_parquet(cat.quarantine, ctx.write(A.CATALOG_QUARANTINE), A.CATALOG_QUARANTINE.columns)
    if cat.stats["quarantined"]:
        log.warning("catalog: %d rows quarantined in %s", cat.stats["quarantined"],
                    A.CATALOG_QUARANTINE.path(ctx.run_dir))
    return cat.stats


def enabled(cfg: Config) -> bool:
    """Whether the run has a catalog."""
    return bool(cfg.input.catalog.path)


def _reads(cfg: Config) -> tuple:
    path = cfg.input.catalog.path  # None when off: the plan still fingerprints every stage
    return (A.VOCABULARY, A.SESSIONS_TRAIN, A.InputFiles((path,) if path else ()))


STAGE = Stage("catalog", run, reads=_reads, writes=(A.CATALOG, A.CATALOG_QUARANTINE),
              sections=("input", "ingest"), enabled=enabled)
