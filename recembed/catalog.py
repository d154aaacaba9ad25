"""The item catalog (side information) and vectors for items without clicks (cold start).

A catalog is a CSV / TSV / Parquet file with one row per item the shop lists: an id column and
any number of attribute columns (`[input.catalog]`). Categorical attributes are used as they
are; numeric ones (a price) are cut into `buckets` quantile buckets over the catalog's values.
Every attribute value becomes a token ``a<j>_<v>`` (attribute j, value index v) that the
skip-gram can train beside the item codes.

Bad rows are quarantined as ingest does (`file`, `row`, `raw`, `reason`): a row without an id, a
second row of an id already listed (the first one wins), a row with the wrong number of fields or
bytes that do not decode. A value that is not a number in a numeric column is not a bad row: the
attribute is missing for that item (counted in `bad_numeric`).

Origins (`ORIGINS`) of the published rows:

- ``trained``: the item has clicks in the training window and its own skip-gram vector;
- ``side_info``: no clicks; its vector comes from its attributes (`cold_vectors`);
- ``none``: no vector (no clicks, and no attribute value shared with a trained item, or no
  catalog entry any more); it is never served, as a query or as a candidate, and
  `origins.parquet` says why.

Three cold schemes (`cold.scheme`, measured in benchmarks/RESULTS.md; `pooling` is the default,
the one that kept warm-target recall on both DIGINETICA and the synth catalog profile):

- ``context`` (Meta-Prod2Vec style): sentences ``item a0_v a1_w ...`` (one per item occurrence)
  train attribute tokens in the items' skip-gram, after the items and with the items' vectors
  held fixed (training them jointly moved the warm items: measured, benchmarks/RESULTS.md); a
  cold item's vectors are the mean of its attribute tokens' input and output vectors;
- ``pooling`` (EGES-style, after training): an attribute value's vector is the mean of the
  trained items that have it; a cold item's vector is the equal-weight mean over its attributes;
- ``knn`` (Airbnb style): the mean vector of the `k` trained items sharing the most attribute
  values with it (ties: the most clicked first).

Listing order ("most recently listed first", the category baseline), from what is known when
the model is trained, never from the holdout: the `listed` column when the catalog has one (a
date, ISO-8601 or unix seconds); else the item's first event in the training window; an item the
catalog lists but nobody clicked in the training window is a new listing, newer than every
clicked one (among them, later catalog rows are newer). The catalog is a snapshot taken when the
run starts, as in production: evaluation sees the same snapshot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recembed import sources
from recembed.sources import quarantine_reason_counts, quarantine_summary

log = logging.getLogger("recembed")

ORIGINS = ("trained", "side_info", "none")
SCHEMES = ("context", "pooling", "knn", "off")
REASON_NO_ATTRIBUTES = ("no clicks in the training window and no catalog attribute: no vector, "
                        "never served; give the item attributes in the catalog")
REASON_NO_SHARED = ("no clicks in the training window and none of its attribute values is shared "
                    "with a trained item: no vector, never served")
REASON_DELISTED = "no catalog entry (delisted): not served"
# delisting more than this share of the trained items is reported loudly: shops retire a few
# percent of their catalogue a day, a truncated catalog export far more
MAX_DELISTED_SHARE = 0.1


class CatalogError(ValueError):
    """A catalog that cannot be used: missing file or column, too many bad rows, no valid row."""


@dataclass
class Catalog:
    """The valid catalog rows, the quarantined ones and counts.

    `table` has one row per listed item: `code` int32 (the ingest code; items never seen in the
    log get codes after the vocabulary's, in catalog order), `id` string, `in_log` bool,
    `listed` float64 (the listing-order key, larger = newer), `category` int32 (-1 unknown), and
    one int32 column per attribute (`attribute_columns`, value index, -1 missing).
    """

    table: pd.DataFrame
    attributes: list[str]
    quarantine: pd.DataFrame
    stats: dict = field(default_factory=dict)

    @property
    def attribute_columns(self) -> list[str]:
        """The table's attribute columns, in `attributes` order."""
        return attribute_columns(len(self.attributes))


def delisting_warning(stats: dict, catalog_path: str) -> str | None:
    """A loud warning when more than `MAX_DELISTED_SHARE` of the trained items have no catalog
    entry (`cold_rows` stats): they stop being served, which a partial catalog export would
    do to most of the catalogue silently. None below it."""
    n = stats["trained"] + stats["delisted"]
    share = stats["delisted"] / n if n else 0.0
    if share <= MAX_DELISTED_SHARE:
        return None
    return (f"{stats['delisted']:,} of {n:,} trained items ({share:.0%}) have no entry in the "
            f"catalog {catalog_path} and are not served (origin none, delisted); if the "
            "catalog export is partial, fix input.catalog.path")


def attribute_columns(n: int) -> list[str]:
    """Names of the attribute-value columns of catalog.parquet (`a0`, `a1`, ...)."""
    return [f"a{j}" for j in range(n)]


def read_catalog(
    path: str | Path, id_column: str, attributes: list[str], vocabulary: pd.DataFrame, *,
    numeric: list[str] | None = None, buckets: int = 10, category: str | None = None,
    listed: str | None = None, na_values: list[str] | None = None,
    max_bad_fraction: float = 1.0, encoding: str = "utf-8", first_seen: np.ndarray | None = None,
) -> Catalog:
    """Read and validate a catalog file; ids follow the id rule of ingest
    (`recembed.ids.normalize_ids`: "100.0" columns are integers, NFC, whitespace-only is
    missing) and are matched to the vocabulary as text; none matching is a CatalogError.

    Parameters
    ----------
    path : str or Path
        CSV / TSV (delimiter sniffed, any compression `recembed.sources` reads) or Parquet.
    id_column : str
        The item id column (`input.catalog.id`).
    attributes : list of str
        Attribute columns (`input.catalog.attributes`), at least one.
    vocabulary : pandas.DataFrame
        The run's vocabulary (`code`, `id`).
    numeric : list of str
        Attributes bucketed by value (`input.catalog.numeric`).
    buckets : int >= 2
        Quantile buckets of each numeric attribute (fewer when values repeat).
    category : str, optional
        The attribute that is the item's category (report, category baseline).
    listed : str, optional
        A listing-date column (ISO-8601 or unix seconds): the listing order.
    na_values : list of str
        Strings that mean "missing" besides the empty field (`input.na_values`).
    max_bad_fraction : float in [0, 1]
        More quarantined rows than this share of the file stops with CatalogError.
    encoding : str
        Text encoding of a CSV / TSV catalog.
    first_seen : numpy.ndarray of float, optional
        Per ingest code: unix seconds of its first event in the training window (NaN when it
        has none): the listing order without a `listed` column (module docstring).

    Raises
    ------
    CatalogError
        Naming the file and the `input.catalog` key to fix.
    """
    p = Path(path)
    numeric = list(numeric or [])
    if not p.exists():
        raise CatalogError(f"catalog file {p} (input.catalog.path) does not exist; fix the path, "
                           'or set input.catalog.path = "" to run without a catalog')
    need = list(dict.fromkeys([id_column, *attributes, *([listed] if listed else [])]))
    nulls = ["", *(na_values or [])]
    table, rows, bad = _read(p, need, nulls, encoding)
    # the id rule of the log (recembed.ids.normalize_ids): a column of integral floats
    # ("100.0") is the integers, text is NFC, whitespace-only is missing
    norm = sources.normalize_ids(table.column(id_column))
    blank_raw = {int(i): table.column(id_column)[int(i)].as_py()
                 for i in np.flatnonzero(norm.blank)}
    table = table.set_column(table.schema.get_field_index(id_column), id_column,
                             pc.cast(norm.values, pa.string()))
    df = table.to_pandas()
    quarantine = [(int(r), raw, reason) for r, raw, reason in bad]
    ids = df[id_column]
    missing_id = ids.isna().to_numpy()
    for i in np.flatnonzero(norm.blank):
        quarantine.append((int(rows[i]), f"{id_column}={blank_raw[int(i)]!r}",
                           f"whitespace-only item id (column {id_column!r})"))
    missing_id = missing_id & ~norm.blank
    dup = ids.duplicated(keep="first").to_numpy() & ~missing_id
    for i in np.flatnonzero(missing_id):
        quarantine.append((int(rows[i]), _raw(df, i, need),
                           f"missing item id (column {id_column!r})"))
    for i in np.flatnonzero(dup):
        quarantine.append((int(rows[i]), _raw(df, i, need),
                           f"duplicate item id {ids.iloc[i]!r} (the first row listing it is kept)"))
    n_rows = len(df) + len(bad)
    q = pd.DataFrame(quarantine, columns=["row", "raw", "reason"])
    q.insert(0, "file", str(p))
    q = q.sort_values("row", kind="stable", ignore_index=True)
    if n_rows and len(q) / n_rows > max_bad_fraction:
        raise CatalogError(f"catalog {p}: {len(q)} of {n_rows} rows are bad ({len(q) / n_rows:.1%}"
                           f"), above ingest.max_bad_fraction={max_bad_fraction:.2%}; most common "
                           f"reasons: {quarantine_summary(q)}")
    df = df[~missing_id & ~dup & ~norm.blank].reset_index(drop=True)
    if df.empty:
        raise CatalogError(f"catalog {p} has no valid row (input.catalog.id = {id_column!r})")
    vocab_ids = vocabulary["id"].astype(str)
    code_of = pd.Series(vocabulary["code"].to_numpy(np.int64), index=vocab_ids.to_numpy())
    cid = df[id_column].astype(str)
    code = code_of.reindex(cid.to_numpy()).to_numpy(np.float64, copy=True)
    in_log = ~np.isnan(code)
    if len(vocabulary) and not in_log.any():
        raise CatalogError(
            f"catalog {p}: none of its {len(cid)} ids (input.catalog.id = {id_column!r}, e.g. "
            f"{cid.iloc[:3].tolist()}) is an item id of the log (e.g. "
            f"{vocab_ids.iloc[:3].tolist()}); ids are compared as text after the id rule "
            "(README, 'Input'): write the ids the same way in both files")
    new = np.flatnonzero(~in_log)
    code[new] = len(vocabulary) + np.arange(len(new))
    out = pd.DataFrame({"code": code.astype(np.int32), "id": cid.to_numpy(), "in_log": in_log})
    stats: dict = {"rows": n_rows, "items": len(out), "quarantined": len(q),
                   "ids_nfc_normalized": norm.nfc_changed,
                   "quarantine_reasons": quarantine_reason_counts(q),
                   "not_in_log": int((~in_log).sum()),
                   "log_items_not_in_catalog": int(len(vocabulary) - in_log.sum()),
                   "bad_numeric": {}, "missing": {}}
    for j, a in enumerate(attributes):
        col = df[a]
        if a in numeric:
            values = pd.to_numeric(col, errors="coerce")
            stats["bad_numeric"][a] = int((values.isna() & col.notna()).sum())
            out[f"a{j}"] = quantile_buckets(values.to_numpy(np.float64), buckets)
        else:
            codes, _ = pd.factorize(col, use_na_sentinel=True)
            out[f"a{j}"] = codes.astype(np.int32)
        stats["missing"][a] = int((out[f"a{j}"] < 0).sum())
    cols = attribute_columns(len(attributes))
    out["n_attributes"] = (out[cols].to_numpy() >= 0).sum(axis=1).astype(np.int32) if cols \
        else np.zeros(len(out), np.int32)
    stats["no_attributes"] = int((out["n_attributes"] == 0).sum())
    out["category"] = out[f"a{attributes.index(category)}"] if category else np.int32(-1)
    out["listed"] = _listing_key(df, listed, code, in_log, first_seen)
    stats["listed_by"] = listed or ("first event in the training window; never clicked there = "
                                    "newest, by catalog order")
    if any(stats["bad_numeric"].values()):
        log.warning("catalog %s: values that are not numbers in %s were read as missing", p,
                    {k: v for k, v in stats["bad_numeric"].items() if v})
    return Catalog(out, list(attributes), q, stats)


def quantile_buckets(values: np.ndarray, buckets: int) -> np.ndarray:
    """Bucket index of each value (int32, -1 for NaN): `buckets` quantile buckets over the finite
    values (fewer when values repeat; equal values always share a bucket).

    Examples
    --------
    >>> quantile_buckets(np.array([1.0, 2.0, 3.0, 4.0, np.nan]), 2).tolist()
    [0, 0, 1, 1, -1]
    """
    values = np.asarray(values, np.float64)
    ok = np.isfinite(values)
    out = np.full(len(values), -1, np.int32)
    if not ok.any():
        return out
    edges = np.unique(np.quantile(values[ok], np.linspace(0, 1, buckets + 1)[1:-1]))
    out[ok] = np.searchsorted(edges, values[ok], side="left").astype(np.int32)
    return out


def attribute_tokens(table: pd.DataFrame, n_attributes: int) -> list[list[str]]:
    """The attribute tokens (``a<j>_<v>``) of each catalog row, missing values left out."""
    cols = [table[c].to_numpy() for c in attribute_columns(n_attributes)]
    return [[f"a{j}_{int(col[i])}" for j, col in enumerate(cols) if col[i] >= 0]
            for i in range(len(table))]


def write_side_sentences(corpus: Path, out: Path, table: pd.DataFrame, n_attributes: int, *,
                         copies: float = 1.0, seed: int = 0, block_bytes: int = 1 << 22) -> dict:
    """The side-information corpus of the ``context`` scheme, trained after the items
    (`recembed.train.train_word2vec(side_corpus=...)`).

    Each item occurrence in `corpus` whose item has a catalog entry with attributes gives, on
    average, `copies` sentences ``<code> a0_v a1_w ...`` (whole copies, plus one more with the
    fractional part's probability, drawn from a stream seeded by `seed`), so a value is trained
    in proportion to the clicks of the items having it; the sentences of each block of about
    `block_bytes` of corpus are shuffled.

    Returns {"corpus_tokens": tokens of `corpus`, "side_tokens": tokens written, "side_lines"}.
    """
    sentence = np.full(int(table["code"].max()) + 1 if len(table) else 0, "", dtype=object)
    for code, toks in zip(table["code"].to_numpy(), attribute_tokens(table, n_attributes),
                          strict=True):
        if toks:
            sentence[code] = f"{code} {' '.join(toks)}\n"
    width = np.array([s.count(" ") + 1 if s else 0 for s in sentence], np.int64)
    rng = np.random.default_rng(seed)
    stats = {"corpus_tokens": 0, "side_tokens": 0, "side_lines": 0}
    whole, frac = int(copies), copies - int(copies)
    with open(corpus, "rb") as src, open(out, "w", encoding="ascii") as dst:
        while True:
            lines = src.readlines(block_bytes)
            if not lines:
                break
            tok = np.array(b"".join(lines).split(), dtype=np.int64)
            stats["corpus_tokens"] += len(tok)
            tok = tok[tok < len(sentence)]
            tok = tok[width[tok] > 0]
            reps = np.full(len(tok), whole, np.int64) + (rng.random(len(tok)) < frac)
            tok = np.repeat(tok, reps)
            rng.shuffle(tok)
            if len(tok):
                dst.write("".join(sentence[tok]))
            stats["side_tokens"] += int(width[tok].sum())
            stats["side_lines"] += len(tok)
    return stats


@dataclass
class ColdRows:
    """The published rows: codes (ascending), ids, vectors, context vectors, counts, origin of
    each row, and `origins`: every catalog item and every trained item with its origin and the
    reason it is not served (`none`)."""

    codes: np.ndarray
    ids: np.ndarray
    vectors: np.ndarray
    context: np.ndarray | None
    counts: np.ndarray
    origin: np.ndarray
    origins: pd.DataFrame
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ColdParams:
    """`[cold]` and the catalog shape, as cold start needs them (`recembed.catalog.cold_rows`,
    `recembed.candidates.CalibrationCatalog`); `recembed.settings.cold_params`
    builds it from the config.

    Parameters
    ----------
    scheme : {"context", "pooling", "knn", "off"}
        `cold.scheme`; "off" when the run has no catalog.
    knn : int >= 1
        `cold.knn`.
    candidate_scale : float in [0, 1]
        `cold.candidate_scale`.
    context_copies : float in (0, 10]
        `cold.context_copies`.
    n_attributes : int >= 0
        Attribute columns of the catalog (`input.catalog.attributes`).
    dated : bool
        Whether the catalog's listing dates come from a column (`input.catalog.listed`).
    from_catalog : bool
        Whether categories come from the catalog (`categories_from_catalog`).
    """

    scheme: str = "off"
    knn: int = 3
    candidate_scale: float = 1.0
    context_copies: float = 1.0
    n_attributes: int = 0
    dated: bool = False
    from_catalog: bool = False


def cold_rows(
    codes: np.ndarray, vectors: np.ndarray, context: np.ndarray | None, counts: np.ndarray,
    vocabulary: pd.DataFrame, catalog: pd.DataFrame, n_attributes: int, *, scheme: str,
    k: int = 3, side: dict[str, tuple[np.ndarray, np.ndarray | None]] | None = None,
    candidate_scale: float = 1.0,
) -> ColdRows:
    """Trained rows plus a vector for every catalog item without clicks, by `scheme`.

    Parameters
    ----------
    codes, vectors, context, counts : numpy.ndarray
        The trained rows (`recembed.train.TrainResult`): ingest codes ascending, input vectors
        [n, dim], output vectors or None, corpus counts.
    vocabulary : pandas.DataFrame
        `code`, `id` of every ingest code.
    catalog : pandas.DataFrame
        catalog.parquet (`Catalog.table`).
    n_attributes : int
        Attribute columns in `catalog`.
    scheme : {"context", "pooling", "knn", "off"}
        How cold items get vectors (module docstring); "off" keeps the trained rows as they are
        (no catalog filtering: today's pipeline).
    k : int >= 1
        Neighbours of the ``knn`` scheme.
    side : dict, optional
        ``context`` scheme: attribute token -> (input vector, output vector or None).
    candidate_scale : float in [0, 1]
        Multiplies the cold rows' output vectors: below 1 they rank lower as directional
        (inner-product) candidates, which at 1 crowd out warm targets.

    Trained items that have no catalog entry stop being served (origin `none`, reason
    `REASON_DELISTED`); catalog items without clicks get `side_info` or `none`.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown cold scheme {scheme!r}; choose one of {SCHEMES}")
    codes = np.asarray(codes, np.int64)
    vocab_ids = vocabulary["id"].astype(str).to_numpy()
    if scheme == "off":
        origins = pd.DataFrame({"id": vocab_ids[codes], "code": codes.astype(np.int32),
                                "origin": "trained", "reason": ""})
        return ColdRows(codes.astype(np.int32), vocab_ids[codes], vectors, context, counts,
                        np.full(len(codes), "trained", dtype=object), origins,
                        {"trained": len(codes), "side_info": 0, "none": 0, "delisted": 0})
    n_total = max(int(catalog["code"].max()) + 1 if len(catalog) else 0, len(vocab_ids))
    trained_row = np.full(n_total, -1, np.int64)
    trained_row[codes] = np.arange(len(codes))
    cat_codes = catalog["code"].to_numpy(np.int64)
    listed = np.zeros(n_total, bool)
    listed[cat_codes] = True
    attrs = catalog[attribute_columns(n_attributes)].to_numpy(np.int64) if n_attributes else \
        np.zeros((len(catalog), 0), np.int64)
    warm_cat = trained_row[cat_codes] >= 0
    cold_idx = np.flatnonzero(~warm_cat)
    dim = vectors.shape[1]
    cv = np.zeros((len(cold_idx), dim), np.float32)
    cc = None if context is None else np.zeros((len(cold_idx), dim), np.float32)
    ok = np.zeros(len(cold_idx), bool)
    if len(cold_idx):
        warm_rows = trained_row[cat_codes[warm_cat]]
        if scheme == "context":
            ok = _from_tokens(attrs[cold_idx], side or {}, cv, cc)
        elif scheme == "pooling":
            side_pooled = _pooled_attributes(attrs[warm_cat], vectors[warm_rows],
                                             None if context is None else context[warm_rows])
            ok = _from_tokens(attrs[cold_idx], side_pooled, cv, cc)
        else:
            ok = _nearest_mean(attrs[cold_idx], attrs[warm_cat], counts[warm_rows],
                               vectors[warm_rows],
                               None if context is None else context[warm_rows], k, cv, cc)
    if cc is not None:
        cc *= np.float32(candidate_scale)
    served_trained = np.flatnonzero(listed[codes])
    cold_codes = cat_codes[cold_idx[ok]]
    all_codes = np.r_[codes[served_trained], cold_codes]
    order = np.argsort(all_codes, kind="stable")
    ids_of = np.r_[vocab_ids, np.full(n_total - len(vocab_ids), "", dtype=object)].astype(object)
    new = ~catalog["in_log"].to_numpy()
    ids_of[cat_codes[new]] = catalog["id"].to_numpy()[new]
    out_v = np.concatenate([vectors[served_trained], cv[ok]])[order]
    out_c = None if context is None else np.concatenate([context[served_trained], cc[ok]])[order]
    origin = np.r_[np.full(len(served_trained), "trained", dtype=object),
                   np.full(int(ok.sum()), "side_info", dtype=object)][order]
    out_counts = np.r_[counts[served_trained], np.zeros(int(ok.sum()), np.int64)][order]
    no_attr = catalog["n_attributes"].to_numpy()[cold_idx] == 0
    none_codes = cat_codes[cold_idx[~ok]]
    none_reason = np.where(no_attr[~ok], REASON_NO_ATTRIBUTES, REASON_NO_SHARED)
    delisted = codes[~listed[codes]]
    origins = pd.DataFrame({
        "code": np.r_[all_codes[order], none_codes, delisted].astype(np.int32),
        "origin": np.r_[origin, np.full(len(none_codes) + len(delisted), "none", dtype=object)],
        "reason": np.r_[np.full(len(all_codes), "", dtype=object), none_reason,
                        np.full(len(delisted), REASON_DELISTED, dtype=object)],
    })
    origins.insert(0, "id", ids_of[origins["code"].to_numpy()])
    stats = {"trained": len(served_trained), "side_info": int(ok.sum()),
             "none": len(none_codes), "delisted": len(delisted)}
    return ColdRows(all_codes[order].astype(np.int32), ids_of[all_codes[order]], out_v, out_c,
                    out_counts.astype(np.int64), origin, origins, stats)


def item_categories(categories: np.ndarray, catalog: pd.DataFrame | None, *,
                    from_catalog: bool) -> np.ndarray:
    """Category of every item code, the catalog's rows included (int32, -1 unknown): the
    catalog's `category` column when `from_catalog` (`input.catalog.category` is set; it
    supersedes input.categories_path), else `categories` (categories.parquet's)."""
    n = len(categories) if catalog is None else max(len(categories),
                                                     int(catalog["code"].max()) + 1)
    out = np.full(n, -1, np.int32)
    if catalog is not None and from_catalog:
        out[catalog["code"].to_numpy()] = catalog["category"].to_numpy()
    else:
        out[:len(categories)] = categories
    return out


def listing_order(catalog: pd.DataFrame, n_items: int) -> np.ndarray:
    """Per item code (float64 [n_items]): the listing-order key, larger = listed more recently;
    -inf for codes the catalog does not list."""
    out = np.full(n_items, -np.inf)
    out[catalog["code"].to_numpy()] = catalog["listed"].to_numpy(np.float64)
    return out


# ---------------------------------------------------------------- helpers


def _read(p: Path, need: list[str], nulls: list[str], encoding: str
          ) -> tuple[pa.Table, np.ndarray, list[tuple[int, str, str]]]:
    try:
        if p.is_dir() or sources.data_suffix(p) in (".parquet", ".pq") or \
                sources.is_parquet_file(p):
            src = sources.open_parquet(p)
            missing = [c for c in need if c not in src.columns]
            if missing:
                raise CatalogError(_missing_msg(p, missing, src.columns))
            t = sources.read_parquet(src, need)
            t = pa.table({c: pa.compute.cast(t.column(c), pa.string()) for c in need})
            df = t.to_pandas()
            for c in need:  # the empty string and na_values are missing, as in CSV
                df.loc[df[c].isin(nulls), c] = None
            return pa.Table.from_pandas(df, preserve_index=False), np.arange(len(df)), []
        delim = sources.sniff_delimiter(p, encoding)
        header = sources.read_head(p, encoding).splitlines()[0].split(delim) \
            if sources.read_head(p, encoding) else []
        header = [h.strip().strip('"') for h in header]
        missing = [c for c in need if c not in header]
        if missing:
            raise CatalogError(_missing_msg(p, missing, header))
        r = sources.read_delimited(p, header, delim, need, nulls, encoding)
        return r.table, r.rows, r.bad
    except sources.SourceError as e:
        raise CatalogError(f"catalog {p} (input.catalog.path): {e}") from e


def _missing_msg(p: Path, missing: list[str], have: list[str]) -> str:
    return (f"catalog {p} has no column(s) {missing}; it has {list(have)}. Set input.catalog.id "
            "and input.catalog.attributes (and listed) to its column names")


def _raw(df: pd.DataFrame, i: int, cols: list[str]) -> str:
    return "; ".join(f"{c}={df[c].iloc[i]}" for c in cols)


def _listing_key(df: pd.DataFrame, listed: str | None, code: np.ndarray, in_log: np.ndarray,
                 first_seen: np.ndarray | None) -> np.ndarray:
    """Larger = newer: the listed column (unix seconds), else the first event in the training
    window, else (listed, never clicked in training: a new listing) above every dated item, by
    row order."""
    row = np.arange(len(df), dtype=np.float64)
    key = np.full(len(df), np.nan)
    if listed:
        col = df[listed]
        num = pd.to_numeric(col, errors="coerce")
        dt = pd.to_datetime(col.where(num.isna()), errors="coerce", utc=True, format="mixed")
        secs = (dt - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(np.float64)
        key = np.where(num.notna(), num.to_numpy(np.float64), secs)
    if first_seen is not None:
        first = np.full(len(df), np.nan)
        first[in_log] = np.asarray(first_seen, np.float64)[code[in_log].astype(np.int64)]
        key = np.where(np.isnan(key), first, key)
    # undated rows (no click in training): new listings, above every dated one, by row order
    return np.where(np.isnan(key), 1e12 + row, key)


def _from_tokens(attrs: np.ndarray, side: dict[str, tuple[np.ndarray, np.ndarray | None]],
                 cv: np.ndarray, cc: np.ndarray | None) -> np.ndarray:
    """Mean of the attribute tokens' vectors of each row (equal weight per attribute present
    in `side`); False where none is."""
    ok = np.zeros(len(attrs), bool)
    for i, row in enumerate(attrs):
        hits = [side[t] for t in (f"a{j}_{v}" for j, v in enumerate(row) if v >= 0) if t in side]
        if not hits:
            continue
        cv[i] = np.mean([h[0] for h in hits], axis=0)
        if cc is not None and hits[0][1] is not None:
            cc[i] = np.mean([h[1] for h in hits], axis=0)
        ok[i] = True
    return ok


def _pooled_attributes(attrs: np.ndarray, vectors: np.ndarray, context: np.ndarray | None
                       ) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Token -> mean input (and output) vector of the trained items having that value."""
    out = {}
    for j in range(attrs.shape[1]):
        col = attrs[:, j]
        for v in np.unique(col[col >= 0]):
            sel = col == v
            out[f"a{j}_{int(v)}"] = (vectors[sel].mean(axis=0),
                                     None if context is None else context[sel].mean(axis=0))
    return out


def _nearest_mean(cold: np.ndarray, warm: np.ndarray, counts: np.ndarray, vectors: np.ndarray,
                  context: np.ndarray | None, k: int, cv: np.ndarray, cc: np.ndarray | None
                  ) -> np.ndarray:
    """Airbnb-style: mean vectors of the k trained items sharing the most attribute values with
    each cold row (ties: more clicks first, then lower row); False when none shares any."""
    import scipy.sparse as sp

    n_attr = warm.shape[1]
    offsets = np.r_[0, np.cumsum([max(int(max(warm[:, j].max(initial=-1),
                                              cold[:, j].max(initial=-1))) + 1, 0)
                                  for j in range(n_attr)])]

    def onehot(a: np.ndarray) -> sp.csr_matrix:
        r, c = np.nonzero(a >= 0)
        return sp.csr_matrix((np.ones(len(r), np.float32), (r, a[r, c] + offsets[c])),
                             shape=(len(a), int(offsets[-1])))

    w = onehot(warm).T.tocsr()
    # tie-break below one shared value: more clicks first
    tie = (np.log1p(counts) / (np.log1p(counts.max(initial=0)) + 1) * 0.5).astype(np.float32)
    ok = np.zeros(len(cold), bool)
    block = max(1, (1 << 23) // max(len(warm), 1))  # a dense block of <= 32 MB of scores
    for lo in range(0, len(cold), block):
        s = (onehot(cold[lo:lo + block]) @ w).toarray()
        shared = s > 0
        s = np.where(shared, s + tie, -np.inf)
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        for i in range(len(s)):
            nb = top[i][np.isfinite(s[i, top[i]])]
            if len(nb):
                cv[lo + i] = vectors[nb].mean(axis=0)
                if cc is not None and context is not None:
                    cc[lo + i] = context[nb].mean(axis=0)
                ok[lo + i] = True
    return ok
