"""Read click logs (CSV / TSV / Parquet), validate them, map ids to int32 codes, quarantine bad rows.

Output tables (see DESIGN.md):
- events: `user` int32 (-1 absent), `item` int32, `ts` int64 unix seconds, `session` int64 (when a
  session column is mapped), `row` int64 (0-based data row within its file), `file` int16 (index
  into the list of input files), `split` int8 (1 for rows from `test_paths`, else 0).
- vocabulary: `code` int32, `id` string, `count` int64, `first_ts`, `last_ts` int64.
- quarantine: `file` string, `row` int64, `raw` string, `reason` string.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recembed import sources
from recembed.sources import (  # noqa: F401 - the quarantine rules, shared with Spark
    quarantine_reason_counts,
    quarantine_summary,
    reason_kind,
)

if TYPE_CHECKING:
    from recembed.runtime import Runtime

log = logging.getLogger(__name__)

# Only the empty field is missing: "NA", "None", "null", "nan" are ids like any other string
# unless `input.na_values` lists them (see `parse_log_rows`).
NULL_STRINGS = [""]
QUARANTINE_SCHEMA = pa.schema(
    [("file", pa.string()), ("row", pa.int64()), ("raw", pa.string()), ("reason", pa.string())]
)
_UNIT_SCALE = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
DAY = 86_400
# float64 holds every integer up to 2**53 exactly; a float id above it was rounded when written
_MAX_EXACT_FLOAT = sources.MAX_EXACT_FLOAT
# pandas datetimes hold 1677-09-21 .. 2262-04-11; a timestamp outside is a wrong unit or garbage
TS_LIMIT_S = 9_223_372_036
# At most this share of the newest rows can be cut from the top as stragglers (see window_mask).
STRAGGLER_SHARE = 0.001


class IngestError(ValueError):
    """Input that cannot be used: a missing file or column, an empty log, too many bad rows."""


@dataclass
class ColumnMap:
    """Which input column holds what; None for an optional column that is absent."""

    item: str
    ts: str
    user: str | None = None
    session: str | None = None
    event_type: str | None = None
    ts_offset: str | None = None

    def required(self) -> list[str]:
        return [c for c in (self.item, self.ts, self.user, self.session, self.event_type,
                            self.ts_offset) if c]


@dataclass
class IngestResult:
    """Clean events, the item vocabulary, quarantined rows and counts (see module docstring)."""

    events: pd.DataFrame
    vocabulary: pd.DataFrame
    quarantine: pd.DataFrame
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True)
class IngestParams:
    """What is read and how it is validated (`[input]`, `[ingest]`): the arguments of `ingest`
    but the quarantine path, with its units and ranges (see there).

    Parameters
    ----------
    paths, test_paths : tuple of str
        Training and explicit holdout input files (or Parquet folders).
    columns : ColumnMap
        Which input column holds what.
    fmt : {"auto", "csv", "tsv", "parquet"}
    delimiter : str or None
        CSV delimiter; None = sniffed.
    ts_unit : {"auto", "s", "ms", "us", "ns", "iso"}
    ts_offset_unit : {"s", "ms"}
    event_types, na_values : tuple of str
        Event types kept (empty = all); extra strings read as a missing id.
    max_bad_fraction : float in [0, 1]
    max_ts_distance_days : float >= 0, days (0 = no limit)
    drop_duplicates : bool
    window_days : float >= 0, days (0 = everything)
    source : recembed.sources.SourceOptions
        How inputs are opened.
    """

    paths: tuple[str, ...]
    columns: ColumnMap
    test_paths: tuple[str, ...] = ()
    fmt: str = "auto"
    delimiter: str | None = None
    ts_unit: str = "auto"
    ts_offset_unit: str = "ms"
    event_types: tuple[str, ...] = ()
    na_values: tuple[str, ...] = ()
    max_bad_fraction: float = 0.01
    max_ts_distance_days: float = 10_957.5
    drop_duplicates: bool = True
    window_days: float = 0.0
    source: sources.SourceOptions = field(default_factory=sources.SourceOptions)

    def arguments(self) -> dict:
        """The keyword arguments of `ingest` (lists where it takes lists); paths excluded."""
        return dict(test_paths=list(self.test_paths), fmt=self.fmt, delimiter=self.delimiter,
                    ts_unit=self.ts_unit, ts_offset_unit=self.ts_offset_unit,
                    event_types=list(self.event_types), na_values=list(self.na_values),
                    max_bad_fraction=self.max_bad_fraction,
                    max_ts_distance_days=self.max_ts_distance_days,
                    drop_duplicates=self.drop_duplicates, window_days=self.window_days,
                    source=self.source)


def ingest(
    paths: list[str],
    columns: ColumnMap,
    *,
    test_paths: list[str] | None = None,
    fmt: str = "auto",
    delimiter: str | None = None,
    ts_unit: str = "auto",
    ts_offset_unit: str = "ms",
    event_types: list[str] | None = None,
    na_values: list[str] | None = None,
    max_bad_fraction: float = 0.01,
    max_ts_distance_days: float = 10_957.5,
    drop_duplicates: bool = True,
    window_days: float = 0.0,
    quarantine_path: str | Path | None = None,
    source: sources.SourceOptions | None = None,
) -> IngestResult:
    """Read, validate and code every input file; bad rows go to the quarantine with a reason.

    Ids follow the one id rule (`recembed.ids.normalize_ids`, README "Item ids"): float and
    decimal columns give the same ids as the integers (a non-integral one is refused), text is
    NFC normalised but never trimmed (`stats["ids_nfc_normalized"]` counts the values that
    changed); the empty field and whitespace-only text are missing ids, and so is any string in
    `na_values` (nothing else: "NA" or "null" are ids by default). A row without an item id, or
    without a user id when there is no session column, is quarantined with its reason. Text ids
    of one file equal, read as integers, to integer ids of another file give a warning naming
    both files (`stats["warnings"]`, `id_collision_warnings`).

    Timestamps further than `max_ts_distance_days` (days, >= 0; 0 = no limit) from the median
    event time, or outside what a datetime can hold, are quarantined with their reason (a row in
    ms inside a seconds file lands ~50,000 years away). `window_days` > 0 keeps only events of the
    last that many days before the window's end: the newest event, unless at most 0.1% of the rows
    follow the rest after a silence longer than the window (or than max(1 day, 1000 typical
    gaps), when shorter); those are clock errors, quarantined, and the window ends before them.

    Raises IngestError (after writing the quarantine) when more than `max_bad_fraction` of the
    rows are bad, when a column is missing, or when no valid event is left.
    """
    if not columns.user and not columns.session:
        raise IngestError("events need a user or a session column to be grouped into sessions "
                          "(input.columns.user / input.columns.session)")
    test_paths = test_paths or []
    files = [*existing_input_files(paths), *existing_input_files(test_paths)]
    n_train_files = len(existing_input_files(paths))
    if not files:
        raise IngestError(f"no input files matched {paths + test_paths}")
    parts, bad_parts, stats = [], [], {"rows_read": 0, "files": [str(f) for f in files],
                                 "ids_nfc_normalized": 0}
    units: list[str | None] = []
    file_warnings: list[str] = []
    for fi, f in enumerate(files):
        table, bad, n_rows = read_log_file(f, columns, fmt, delimiter, source, window_days)
        stats["rows_read"] += n_rows
        part, bad2, unit, notes = parse_log_rows(table, f, fi, columns, ts_unit,
                                                 ts_offset_unit, na_values or [])
        stats["ids_nfc_normalized"] += notes["ids_nfc_normalized"]
        file_warnings += [notes["warning"]] if notes["warning"] else []
        units.append(unit)
        part["split"] = np.full(len(part["ts_exact"]), 1 if fi >= n_train_files else 0, np.int8)
        parts.append(part)
        del table  # the typed arrays are all that is needed from here on
        bad_parts.extend([bad, bad2])
    stats["warnings"] = file_warnings + id_collision_warnings(_collision_pairs(parts, files),
                                                             columns.item)
    for w in stats["warnings"]:
        log.warning("%s", w)
    raw = _concat(parts)
    del parts
    ctx = (files, units, columns)
    far = _implausible_ts(raw["ts_exact"], max_ts_distance_days)
    stats["ts_implausible"] = int(far.sum())
    if far.any():
        med = float(np.median(raw["ts_exact"][~far])) if (~far).any() else 0.0
        bad_parts.append(quarantine_rows(raw, far, ctx, lambda t, u: implausible_ts_reason(
            t, u, med, max_ts_distance_days, columns.ts)))
        raw = {k: v[~far] for k, v in raw.items()}
    if event_types and columns.event_type:
        keep = np.isin(raw.pop("event_type"), event_types)
        stats["filtered_event_type"] = int((~keep).sum())
        raw = {k: v[keep] for k, v in raw.items()}
    raw.pop("event_type", None)
    if window_days > 0 and len(raw["ts_exact"]):
        # a rolling window: the nightly job trains on the last N days only
        keep, late, anchor = window_mask(raw["ts_exact"], window_days * DAY)
        stats["window_end"] = iso_time(anchor)
        stats["window_stragglers"] = int(late.sum())
        stats["outside_window"] = int((~keep & ~late).sum())
        if late.any():
            bad_parts.append(quarantine_rows(raw, late, ctx, lambda t, u: (
                f"straggler timestamp {iso_time(t)}, {(t - anchor) / DAY:.1f} days after the rest "
                f"of the log, behind a silence (clock error?); ingest.window_days ends at "
                f"{iso_time(anchor)}, the newest event before the silence")))
        if not keep.all():
            raw = {k: v[keep] for k, v in raw.items()}
    quarantine = pd.concat(bad_parts, ignore_index=True) if bad_parts else empty_quarantine()
    quarantine = quarantine.sort_values(["file", "row"], kind="stable", ignore_index=True)
    stats["quarantined"] = len(quarantine)
    stats["quarantine_reasons"] = quarantine_reason_counts(quarantine)
    if quarantine_path is not None:
        write_quarantine(quarantine, quarantine_path)
    stats["ts_unit"] = ",".join(sorted({u for u in units if u})) or ts_unit
    if stats["rows_read"] == 0:
        raise IngestError(f"no rows in the input files: {', '.join(map(str, files))}")
    bad_frac = len(quarantine) / stats["rows_read"]
    if bad_frac > max_bad_fraction:
        reasons = quarantine_summary(quarantine)
        raise IngestError(
            f"{len(quarantine)} of {stats['rows_read']} rows ({bad_frac:.2%}) are bad, above "
            f"ingest.max_bad_fraction={max_bad_fraction:.2%}; most common reasons: {reasons}; "
            f"the rows are kept in {quarantine_path or 'the quarantine'}"
        )

    if len(raw["ts_exact"]) == 0:
        raise IngestError(f"no valid events left in {', '.join(map(str, files))}")

    item_codes, item_ids = pd.factorize(raw.pop("item_raw"), sort=False)
    item_codes = item_codes.astype(np.int32)
    events: dict[str, np.ndarray] = {}
    if "user_raw" in raw:
        ucodes, _ = pd.factorize(raw.pop("user_raw"), sort=False, use_na_sentinel=True)
        events["user"] = ucodes.astype(np.int32)
    else:
        events["user"] = np.full(len(item_codes), -1, np.int32)
    events["item"] = item_codes.astype(np.int32)
    if "session_raw" in raw:
        scodes, _ = pd.factorize(raw.pop("session_raw"), sort=False)
        events["session"] = scodes.astype(np.int64)
    ts_exact = raw["ts_exact"]
    events["ts"] = np.floor(ts_exact).astype(np.int64)
    if "session" in events:
        events["session"] = events.pop("session")  # column order of the data contract
    events.update(row=raw["row"], file=raw["file"], split=raw["split"])
    df = pd.DataFrame(events, copy=False)
    del events

    stats["duplicates"] = 0
    if drop_duplicates:
        dup = _duplicated(df, ts_exact)
        stats["duplicates"] = int(dup.sum())
        if stats["duplicates"]:
            df = df.loc[~dup].reset_index(drop=True)
            ts_exact = ts_exact[~dup]
    if len(ts_exact) > 1 and (np.diff(ts_exact) < 0).any() \
            and (ts_exact != np.floor(ts_exact)).any():
        # `ts` keeps whole seconds (the data contract) and sessionize orders by it, ties in row
        # order: rows in time order keep the sub-second order of events within one second
        order = np.argsort(ts_exact, kind="stable")
        df = df.take(order).reset_index(drop=True)
    del ts_exact
    stats["events"] = len(df)
    stats["items"] = len(item_ids)
    stats["users"] = int(df["user"].max()) + 1 if len(df) else 0
    vocab = item_vocabulary(df, item_ids)
    return IngestResult(df, vocab, quarantine, stats)


def ingest_files(params: IngestParams, events_path: str | Path,
                 quarantine_path: str | Path | None, runtime: Runtime) -> IngestResult:
    """The ingest stage, local engine: `ingest`, the events written to `events_path` (the
    engine-neutral signature `recembed.spark.ingest` shares).

    Parameters
    ----------
    params : IngestParams
        What is read and how it is validated.
    events_path : str or pathlib.Path
        The events artifact to write (Parquet, atomically).
    quarantine_path : str, pathlib.Path or None
        Where the quarantine goes (written even when the run stops for too many bad rows).
    runtime : recembed.runtime.Runtime
        Unused by the local engine.

    Returns
    -------
    IngestResult
        Vocabulary, quarantine and statistics; `events` as written (the Spark engine's is
        empty).

    Raises
    ------
    IngestError
        As `ingest`.
    """
    from recembed import artifacts as A

    res = ingest(list(params.paths), params.columns, quarantine_path=quarantine_path,
                 **params.arguments())
    A.write_parquet(res.events, events_path, A.EVENTS.columns)
    return res


def read_categories(path: str, item_col: str, cat_col: str, vocabulary: pd.DataFrame) -> np.ndarray:
    """Category code per item code (int32, -1 unknown), from a side file of (item id, category).

    Item ids follow the id rule of `ingest` (`recembed.ids.normalize_ids`). Raises
    IngestError naming the file and the config key when the file is missing or lacks a column.
    """
    p = Path(path)
    if not p.is_file():
        raise IngestError(f"categories file {p} (input.categories_path) does not exist; fix the "
                          'path, or set input.categories_path = "" to run without categories')
    delim = _sniff_delimiter(p)
    try:
        have = list(pd.read_csv(p, sep=delim, nrows=0).columns)
    except (ValueError, UnicodeDecodeError) as e:  # pandas' EmptyDataError / ParserError too
        raise IngestError(f"categories file {p} (input.categories_path): cannot read it as CSV: "
                          f"{e}") from e
    missing = [c for c in (item_col, cat_col) if c not in have]
    if missing:
        raise IngestError(
            f"categories file {p} has no column(s) {missing}; the file has columns {have}. Set "
            "input.categories_columns = [item column, category column]")
    df = pd.read_csv(p, sep=delim, dtype=str, usecols=[item_col, cat_col],
                     keep_default_na=False, na_values=[""])
    cats, _ = pd.factorize(df[cat_col])
    ids = pc.cast(sources.normalize_ids(pa.array(df[item_col].to_numpy(object), pa.string()))
                  .values, pa.string()).to_numpy(zero_copy_only=False)
    lookup = pd.Series(cats, index=pd.Index(ids, dtype=object)).groupby(level=0).first()
    out = lookup.reindex(vocabulary["id"].astype(str)).fillna(-1).to_numpy().astype(np.int32)
    return out


def write_quarantine(quarantine: pd.DataFrame, path: str | Path) -> None:
    """Write the quarantine table atomically (temp name, fsync, rename).

    Parameters
    ----------
    quarantine : pandas.DataFrame
        Columns `file` (str), `row` (int64, 0-based data row), `raw` (str), `reason` (str), as
        `quarantine_rows` makes them.
    path : str or pathlib.Path
        The Parquet file to write, with `QUARANTINE_SCHEMA`.
    """
    from recembed.artifacts import write_parquet

    write_parquet(pa.Table.from_pandas(quarantine, schema=QUARANTINE_SCHEMA,
                                       preserve_index=False), path)


# ---------------------------------------------------------------- helpers


def existing_input_files(paths: list[str]) -> list[Path]:
    """The input paths as Paths, in order; IngestError names the first that does not exist.

    Parameters
    ----------
    paths : list of str
        Input files or Parquet folders.

    Returns
    -------
    list of pathlib.Path
    """
    out = []
    for p in paths:
        q = Path(p)
        if not q.exists():
            raise IngestError(f"input file {q} does not exist")
        out.append(q)
    return out


def _format_of(path: Path, fmt: str) -> str:
    """csv / tsv / parquet: `fmt` unless auto; then a directory or a Parquet suffix or magic
    number is Parquet, `.tsv` / `.tab` (under any compression suffix) TSV, anything else CSV."""
    if fmt != "auto":
        return fmt
    suffix = sources.data_suffix(path)
    if path.is_dir() or suffix in (".parquet", ".pq") or sources.is_parquet_file(path):
        return "parquet"
    return "tsv" if suffix in (".tsv", ".tab") else "csv"


def _sniff_delimiter(path: Path, encoding: str = "utf-8") -> str:
    try:
        return sources.sniff_delimiter(path, encoding)
    except sources.SourceError as e:
        raise IngestError(str(e)) from e


def read_log_file(
    path: Path, columns: ColumnMap, fmt: str, delimiter: str | None,
    source: sources.SourceOptions | None = None, window_days: float = 0.0,
) -> tuple[pa.Table, pd.DataFrame, int]:
    """The mapped columns of one file (plus `__row`), rows that could not be read, rows read.

    Parameters are `ingest`'s for one file (`window_days` >= 0 prunes Hive partitions older
    than the window). Returns (table, quarantine rows, rows read). Opening (compression, encoding, Hive partitions, pruning) is `recembed.sources`' job.
    """
    source = source or sources.SourceOptions()
    kind = _format_of(path, fmt)
    need = list(dict.fromkeys(columns.required()))
    try:
        if kind == "parquet":
            src = sources.open_parquet(path, ts_column=columns.ts, options=source,
                                       window_days=window_days)
            _check_columns(path, columns, src.columns)
            table = sources.read_parquet(src, need)
            table = table.append_column(
                "__row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
            return table, empty_quarantine(), table.num_rows
        if source.filters:
            raise IngestError(f"input.filters selects Hive partitions of Parquet directories; "
                              f"{path} is a {kind.upper()} file. Remove input.filters or filter "
                              "the file upstream.")
        delim = delimiter or ("\t" if kind == "tsv" else _sniff_delimiter(path, source.encoding))
        line = sources.read_head(path, source.encoding)
        header = [h.strip() for h in next(csv.reader([line], delimiter=delim), [])]
        if not header:
            raise IngestError(f"{path}: empty file (no header line)")
        _check_columns(path, columns, header)
        got = sources.read_delimited(path, header, delim, need, NULL_STRINGS, source.encoding)
    except sources.SourceError as e:
        raise IngestError(str(e)) from e
    table = got.table.append_column("__row", pa.array(got.rows))
    bad = pd.DataFrame(
        {"file": str(path), "row": [r for r, _, _ in got.bad], "raw": [t for _, t, _ in got.bad],
         "reason": [m for _, _, m in got.bad]}
    )
    return table, bad if len(bad) else empty_quarantine(), got.n_rows


# Column names other logs use for each role, tried in this order when a mapped column is missing,
# so the error can print the exact [input.columns] lines to add (never applied silently).
COLUMN_ALIASES = {
    "user": ("user", "userid", "user_id", "uid", "visitor_id", "visitorid", "customer_id",
             "customerid", "client_id", "account_id"),
    "session": ("session_id", "sessionid", "session", "sid", "visit_id"),
    "item": ("item", "itemid", "item_id", "product_id", "productid", "product", "sku",
             "track_id", "trackid", "movie_id", "movieid", "song_id", "venue_id", "venueid",
             "article_id", "content_id", "asin"),
    "ts": ("ts", "time", "timestamp", "datetime", "date", "event_time", "eventtime",
           "created_at", "utc_time", "unix_time", "eventdate"),
}


def _check_columns(path: Path, columns: ColumnMap, have: list[str]) -> None:
    need = list(dict.fromkeys(columns.required()))
    missing = [c for c in need if c not in have]
    if not missing:
        return
    fixes = _column_suggestions(columns, have)
    hint = ("Add under [input.columns] in the config:\n" + "\n".join(fixes) if fixes else
            "Map them under [input.columns] in the config (item, ts, and user or session).")
    raise IngestError(
        f"{path}: missing required column(s) {missing}; the file has columns {have}. {hint}")


def _column_suggestions(columns: ColumnMap, have: list[str]) -> list[str]:
    """TOML lines mapping each missing role onto a column the file has (by `COLUMN_ALIASES`);
    a missing user column with a session column present suggests sessions instead."""
    lower = {h.lower().replace(" ", "_"): h for h in have}
    taken = {c for c in columns.required() if c in have}

    def find(role: str) -> str | None:
        for alias in COLUMN_ALIASES[role]:
            h = lower.get(alias)
            if h is not None and h not in taken:
                return h
        return None

    lines = []
    for role in ("item", "ts"):
        if getattr(columns, role) not in have:
            h = find(role)
            if h is None:
                return []
            taken.add(h)
            lines.append(f'{role} = "{h}"')
    if columns.user and columns.user not in have:
        h = find("user")
        if h is not None:
            lines.append(f'user = "{h}"')
        elif not columns.session and (s := find("session")) is not None:
            lines += ['user = ""', f'session = "{s}"']
        else:
            return []
    if columns.session and columns.session not in have:
        h = find("session")
        if h is None:
            return []
        lines.append(f'session = "{h}"')
    for role in ("event_type", "ts_offset"):
        if getattr(columns, role) and getattr(columns, role) not in have:
            return []
    return lines


def parse_log_rows(
    table: pa.Table, path: Path, file_index: int, columns: ColumnMap, ts_unit: str,
    offset_unit: str, na_values: list[str],
) -> tuple[dict[str, np.ndarray], pd.DataFrame, str | None, dict]:
    """Typed arrays of one file's valid rows, the rows that failed, the detected ts unit and
    notes on the file (NFC changes, a warning).

    Parameters
    ----------
    table : pyarrow.Table
        One file's mapped columns, as `read_log_file` returns them.
    path : pathlib.Path
        The file (named in quarantine rows).
    file_index : int >= 0
        Its index in the run's list of input files.
    columns, ts_unit, offset_unit, na_values
        As `ingest` (`offset_unit` is its `ts_offset_unit`).

    Returns
    -------
    (dict of str to numpy.ndarray, pandas.DataFrame, str or None, dict)
        Arrays of the valid rows, the quarantine rows, the timestamp unit read ("s", "ms",
        "us", "ns", "iso"; None when no row had one), and notes: `ids_nfc_normalized` (int,
        id values of item, user and session that NFC normalisation changed,
        `recembed.ids.normalize_ids`), `warning` (str or None, `seconds_or_ms_warning`).
    """
    n = table.num_rows
    # reason code per row (0 = good); the first reason found wins
    code = np.zeros(n, np.int8)
    reason_text = [""]

    def mark(mask: np.ndarray, reason: str) -> None:
        if mask.any():
            reason_text.append(reason)
            code[mask & (code == 0)] = len(reason_text) - 1

    rows_in = table.column("__row").to_numpy()
    nfc = 0
    item, blank, changed = _ids(table.column(columns.item), columns.item, path, rows_in,
                                na_values)
    nfc += changed
    na_note = f" or one of input.na_values={na_values}" if na_values else ""
    mark(blank, f"whitespace-only item id (column {columns.item})")
    mark(_null_mask(item), f"empty item id{na_note} (column {columns.item})")
    ts, unit, ts_bad = _timestamps(table.column(columns.ts), ts_unit)
    mark(ts_bad, f"unparseable timestamp (column {columns.ts})")
    if columns.ts_offset:
        off = pd.to_numeric(pd.Series(table.column(columns.ts_offset).to_numpy(zero_copy_only=False)),
                            errors="coerce").to_numpy(np.float64)
        bad_off = ~np.isfinite(off)
        mark(bad_off, f"unparseable time offset (column {columns.ts_offset})")
        ts = ts + np.where(bad_off, 0, off) / _UNIT_SCALE[offset_unit]
    out: dict[str, np.ndarray] = {"item_raw": item}
    if columns.session:
        s, blank, changed = _ids(table.column(columns.session), columns.session, path, rows_in,
                                 na_values)
        nfc += changed
        mark(blank, f"whitespace-only session id (column {columns.session})")
        mark(_null_mask(s), f"empty session id{na_note} (column {columns.session})")
        out["session_raw"] = s
    if columns.user:
        u, blank, changed = _ids(table.column(columns.user), columns.user, path, rows_in,
                                 na_values)
        nfc += changed
        if not columns.session:
            mark(blank, f"whitespace-only user id (column {columns.user}) and no session "
                        "column")
            # without a session column the user id is what groups events into sessions
            mark(_null_mask(u), f"empty user id{na_note} (column {columns.user}) and no "
                                "session column")
        out["user_raw"] = u
    if columns.event_type:
        out["event_type"] = table.column(columns.event_type).to_numpy(zero_copy_only=False)
    row = rows_in
    bad = code > 0
    quarantine = empty_quarantine()
    if bad.any():
        idx = np.flatnonzero(bad)
        raw_cols = [c for c in dict.fromkeys(columns.required())]
        raw = [
            "; ".join(f"{c}={table.column(c)[int(i)].as_py()!r}" for c in raw_cols) for i in idx
        ]
        quarantine = pd.DataFrame(
            {"file": str(path), "row": row[idx], "raw": raw,
             "reason": np.array(reason_text, dtype=object)[code[idx]]}
        )
    keep = ~bad
    if bad.any():
        out = {k: v[keep] for k, v in out.items()}
        ts, row = ts[keep], row[keep]
    out["ts_exact"] = ts
    out["row"] = row
    out["file"] = np.full(len(ts), file_index, np.int16)
    notes = {"ids_nfc_normalized": nfc, "warning": None}
    if ts_unit == "auto" and unit == "s" and len(ts):
        ent = out.get("session_raw", out.get("user_raw"))
        if ent is not None:
            notes["warning"] = seconds_or_ms_warning(ts, ent, path, columns.ts)
    return out, quarantine, unit, notes


def _ids(col: pa.ChunkedArray, name: str, path: Path, rows: np.ndarray,
         na_values: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """Ids as a numpy array under the id rule (`recembed.ids.normalize_ids`), None where
    missing; the rows that were whitespace-only; the rows NFC normalisation changed.

    Integers stay integers (fast factorize); float and decimal columns give the same integers,
    and are refused when a value is not an exact integer; text is NFC, never trimmed. Missing:
    null, the empty string, NaN of a float column, whitespace-only text (flagged apart, for its
    own quarantine reason), and any value whose text is in `na_values`.
    """
    norm = sources.normalize_ids(col)
    if norm.not_integral.any():
        bad = norm.not_integral
        i = int(np.flatnonzero(bad)[0])
        v = col.combine_chunks()[i].as_py() if isinstance(col, pa.ChunkedArray) else col[i]
        raise IngestError(
            f"{path}: column {name} holds {col.type} values that are not exact integer ids "
            f"({int(bad.sum())} rows, first {v!r} in data row {int(rows[i])}); ids must be "
            "integers (below 2**53 when stored as floats) or strings: write the column as int64 "
            "or string")
    col, blank = norm.values, norm.blank
    if norm.kind == "int" and col.null_count == 0:
        a = col.to_numpy()
        na_ints = [int(x) for x in na_values if x.lstrip("+-").isdigit()]
        if not na_ints or not np.isin(a, na_ints).any():
            return a, blank, 0
    if norm.kind == "int":
        col = pc.cast(col, pa.string())
    missing = pc.equal(col, "")
    if na_values:
        missing = pc.or_kleene(missing, pc.is_in(col, value_set=pa.array(na_values, pa.string())))
    col = pc.if_else(missing, pa.scalar(None, col.type), col)
    return col.to_numpy(zero_copy_only=False), blank, norm.nfc_changed


def seconds_or_ms_warning(ts: np.ndarray, entity: np.ndarray, path: Path, col: str
                          ) -> str | None:
    """A warning naming `input.ts_unit` when numbers auto-read as seconds look like
    milliseconds of early 1970 (a device whose clock was reset): years of span, and hours
    between one user's consecutive events, that read as milliseconds become days of span and
    click-like seconds.

    Parameters
    ----------
    ts : numpy.ndarray
        float64 unix seconds as read, one file's valid rows.
    entity : numpy.ndarray
        The session (or user) id of each row.
    path : pathlib.Path
        The file.
    col : str
        The timestamp column.

    Returns
    -------
    str or None
    """
    if len(ts) < 20 or float(ts.max() - ts.min()) < 365 * DAY:
        return None
    codes, _ = pd.factorize(entity)
    order = np.lexsort((ts, codes))
    same = codes[order][1:] == codes[order][:-1]
    gaps = np.diff(ts[order])[same]
    if not len(gaps):
        return None
    med = float(np.median(gaps))
    if med <= 3600 or med / 1000 > 600:
        return None
    lo, hi = float(ts.min()), float(ts.max())
    return (f"{path}: input.ts_unit = \"auto\" read column {col} as seconds "
            f"({iso_time(lo)} .. {iso_time(hi)}) with a median gap of {med / 3600:,.1f} hours "
            f"between one user's consecutive events; as milliseconds they would be "
            f"{iso_time(lo / 1000)} .. {iso_time(hi / 1000)}, {med / 1000:,.0f} s apart (a "
            "device clock reset to 1970?). If they are milliseconds, set input.ts_unit = \"ms\"")


def text_id_candidates(ids: np.ndarray) -> pd.DataFrame:
    """The distinct text ids that read as an integer but are not written as one ("00123",
    "+5", "7.0"): those that can collide with an integer id of another file.

    Parameters
    ----------
    ids : numpy.ndarray
        One file's item ids as `parse_log_rows` gives them (object array of str / None; an
        integer array has none).

    Returns
    -------
    pandas.DataFrame
        `id` (the text), `key` (the integer it reads as, canonical text).
    """
    if ids.dtype != object or not len(ids):
        return pd.DataFrame({"id": pd.Series(dtype=object), "key": pd.Series(dtype=object)})
    u = pd.unique(ids[~pd.isna(ids)])
    keys = sources.integral_text_key(u)
    sel = np.array([k is not None and k != x for k, x in zip(keys, u, strict=True)], bool)
    return pd.DataFrame({"id": u[sel], "key": keys[sel]})


def id_collision_warnings(pairs: pd.DataFrame, column: str) -> list[str]:
    """The loud warning of the id rule: a text id of one file equal, read as an integer, to an
    integer id of another file ("00123" in a CSV, 123 in an int64 Parquet file). The ids stay
    apart (text is kept as written); one warning per pair of files, naming both.

    Parameters
    ----------
    pairs : pandas.DataFrame
        `text_file`, `text_id`, `int_file`, `int_id` (str): every colliding pair found.
    column : str
        The id column's name (`input.columns.item`).

    Returns
    -------
    list of str
        Warnings, one per (text file, integer file), with the number of ids and examples.
    """
    out = []
    if not len(pairs):
        return out
    for (tf, nf), g in pairs.groupby(["text_file", "int_file"], sort=True):
        g = g.sort_values("text_id")
        ex = ", ".join(f"{a!r} vs {b}" for a, b in zip(g["text_id"][:3], g["int_id"][:3],
                                                          strict=True))
        out.append(f"id collision in column {column}: {g['text_id'].nunique()} text ids of {tf} "
                   f"read as integers equal integer ids of {nf} (e.g. {ex}); they are kept as "
                   "different items (text ids are compared as written). Write the ids with one "
                   "type in every file (e.g. cast the text column to integers, or the integer "
                   "column to zero-padded text)")
    return out


def _collision_pairs(parts: list[dict[str, np.ndarray]], files: list[Path]) -> pd.DataFrame:
    """The pairs `id_collision_warnings` takes, from the parsed files of the local engine."""
    texts = [(str(files[i]), text_id_candidates(p["item_raw"])) for i, p in enumerate(parts)
             if p["item_raw"].dtype == object]
    ints = [(str(files[i]), p["item_raw"]) for i, p in enumerate(parts)
            if p["item_raw"].dtype != object]
    rows = []
    for tf, cand in texts:
        if not len(cand):
            continue
        for nf, a in ints:
            hit = cand[cand["key"].isin(pd.unique(a).astype(str))]
            rows += [(tf, x, nf, k) for x, k in zip(hit["id"], hit["key"], strict=True)]
    return pd.DataFrame(rows, columns=["text_file", "text_id", "int_file", "int_id"])


def _null_mask(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        return np.zeros(len(a), bool)
    return pd.isna(a)


def _timestamps(col: pa.ChunkedArray, unit: str) -> tuple[np.ndarray, str | None, np.ndarray]:
    """Unix seconds (float64, sub-second precision kept), the unit used (detected when `unit` is
    auto), and a bad-row mask."""
    t = col.type
    if pa.types.is_date(t):
        col = pc.cast(col, pa.timestamp("s"))  # whole days: exact in seconds
        t = col.type
    if pa.types.is_timestamp(t):
        # the integer count in the column's own unit, then seconds as float64: casting to
        # timestamp("s") would refuse (or drop) sub-second values; float rounding is monotone,
        # so order is kept (events < ~0.25 us apart may tie, and then keep their row order)
        ticks = pc.cast(col, pa.int64())
        bad = pc.is_null(ticks).to_numpy(zero_copy_only=False)
        secs = np.nan_to_num(ticks.to_numpy(zero_copy_only=False).astype(np.float64))
        return secs / _UNIT_SCALE[t.unit], "timestamp", bad
    values = col.to_numpy(zero_copy_only=False)
    if unit != "iso":
        num = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64) \
            if values.dtype.kind not in "iuf" else values.astype(np.float64)
        ok = np.isfinite(num)
        if unit != "auto" or values.dtype.kind in "iuf" or (ok.any() and ok.mean() >= 0.5):
            if unit == "auto":
                sample = num[ok][:: max(1, int(ok.sum()) // 100_000)]
                med = float(np.median(np.abs(sample))) if len(sample) else 0.0
                unit = "s" if med < 1e11 else "ms" if med < 1e14 else "us" if med < 1e17 else "ns"
            return np.where(ok, num, 0) / _UNIT_SCALE[unit], unit, ~ok
    parsed = pd.to_datetime(pd.Series(values, dtype=object), utc=True, errors="coerce",
                            format="ISO8601")
    bad = parsed.isna().to_numpy()
    # the integer ticks in pandas' own resolution (us or ns): subtracting the epoch as a
    # Timestamp overflowed for years past 2262 (pandas 3 parses them in us) and crashed ingest;
    # such rows are quarantined as implausible times instead
    ticks = parsed.dt.tz_convert(None).to_numpy()
    res = np.datetime_data(ticks.dtype)[0]
    secs = np.where(bad, 0, ticks.view(np.int64)).astype(np.float64) / _UNIT_SCALE[res]
    return secs, "iso", bad


def _implausible_ts(ts: np.ndarray, max_days: float) -> np.ndarray:
    """Rows whose time a datetime cannot hold, or (max_days > 0) further than max_days from the
    median of the others."""
    out = np.abs(ts) > TS_LIMIT_S
    if max_days > 0 and (~out).any():
        med = np.median(ts[~out])
        out |= np.abs(ts - med) > max_days * DAY
    return out


def implausible_ts_reason(t: float, unit: str | None, med: float, max_days: float,
                          col: str) -> str:
    """The quarantine reason of an implausible timestamp, with a hint at the likely unit.

    Parameters
    ----------
    t : float, unix seconds
        The timestamp as read.
    unit : str or None
        The unit it was read in ("s", "ms", "us", "ns", "iso").
    med : float, unix seconds
        The median event time.
    max_days : float >= 0, days
        `ingest.max_ts_distance_days`.
    col : str
        The timestamp column's name.

    Returns
    -------
    str
    """
    where = "outside the years 1677..2262 a datetime can hold" if abs(t) > TS_LIMIT_S else (
        f"{abs(t - med) / (365.25 * DAY):,.0f} years from the median event time {iso_time(med)} "
        f"(ingest.max_ts_distance_days={max_days:g})")
    hint = ""
    names = list(_UNIT_SCALE)
    for k in (1, 2, 3, -1, -2, -3):
        f = 1000.0**k
        if abs(t / f - med) <= max(max_days, 366) * DAY:
            i = names.index(unit) + k if unit in names else -1
            other = f"in {names[i]} " if 0 <= i < len(names) else ""
            hint = (f"; it looks like a value {other}read as {unit}: "
                    f"it would be {iso_time(t / f)}")
            break
    return f"implausible timestamp (column {col}) {where}{hint}"


def window_mask(ts: np.ndarray, window_s: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The time-window rule of `ingest` (`ingest.window_days`).

    Parameters
    ----------
    ts : numpy.ndarray
        float64 unix seconds of every row (non-empty).
    window_s : float > 0, seconds
        The window's length.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, float)
        Rows in the window, straggler rows after its end (at most `STRAGGLER_SHARE` of the
        rows, after a silence), and the end (unix seconds): the newest event that is not a
        straggler.
    """
    n = len(ts)
    m = max(1, int(n * STRAGGLER_SHARE))
    anchor = float(ts.max())
    if n > m + 1:
        lo, hi = np.percentile(ts, [1, 99])
        typical = (hi - lo) / (0.98 * n)
        silence = min(window_s, max(DAY, 1000 * typical))
        top = np.sort(np.partition(ts, n - m - 1)[n - m - 1:])  # the m + 1 newest
        big = np.flatnonzero(np.diff(top) > silence)
        if big.size:
            anchor = float(top[big[0]])
    late = ts > anchor
    return (ts > anchor - window_s) & ~late, late, anchor


def quarantine_rows(raw: dict[str, np.ndarray], mask: np.ndarray, ctx: tuple,
                    reason_of) -> pd.DataFrame:
    """Quarantine rows for `mask` of the concatenated arrays; `reason_of(seconds, unit)` says
    why.

    Parameters
    ----------
    raw : dict of str to numpy.ndarray
        The concatenated parsed arrays (`file`, `row`, `ts_exact`, `*_raw` ids).
    mask : numpy.ndarray
        bool per row: the rows to quarantine.
    ctx : tuple
        (input files, ts unit per file, ColumnMap).
    reason_of : callable (float, str or None) -> str
        The reason text of a row from its time (unix seconds) and its file's unit.

    Returns
    -------
    pandas.DataFrame
        `file`, `row`, `raw`, `reason` (see `write_quarantine`).
    """
    files, units, columns = ctx
    idx = np.flatnonzero(mask)
    fi, ts = raw["file"][idx], raw["ts_exact"][idx]
    cols = [(columns.item, "item_raw"), (columns.user, "user_raw"),
            (columns.session, "session_raw")]
    texts = []
    for j, i in enumerate(idx):
        parts = [f"{c}={_py(raw[k][i])!r}" for c, k in cols if c and k in raw]
        parts.append(f"{columns.ts}={_ts_text(float(ts[j]), units[fi[j]])}")
        texts.append("; ".join(parts))
    return pd.DataFrame({"file": [str(files[k]) for k in fi], "row": raw["row"][idx],
                         "raw": texts,
                         "reason": [reason_of(float(t), units[k]) for t, k in zip(ts, fi, strict=True)]})


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


def _ts_text(t: float, unit: str | None) -> str:
    if unit in _UNIT_SCALE:
        v = t * _UNIT_SCALE[unit]
        return repr(int(v)) if v == int(v) else repr(v)
    return iso_time(t)


def iso_time(t: float) -> str:
    """A unix time (seconds) as ISO 8601 UTC text, or as seconds when no datetime holds it
    (beyond `TS_LIMIT_S`)."""
    if abs(t) > TS_LIMIT_S:
        return f"{t:.6g} s since 1970"
    return pd.Timestamp(t, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    keys = parts[0].keys()
    out = {}
    for k in keys:
        arrs = [p[k] for p in parts]
        if any(a.dtype == object for a in arrs) and not all(a.dtype == object for a in arrs):
            # integer ids of one file meet string ids of another: compare them as text (a
            # missing id stays None, never the string "None")
            arrs = [a if a.dtype == object else a.astype(str).astype(object) for a in arrs]
        out[k] = np.concatenate(arrs)
    return out


def _duplicated(df: pd.DataFrame, ts_exact: np.ndarray) -> np.ndarray:
    """Exact duplicate events (same user, item, session and timestamp at input precision, not
    rounded to seconds); the first occurrence is kept."""
    cols = ["user", "item", "ts_exact", *(["session"] if "session" in df else [])]
    # One 64-bit hash per row finds the candidates fast; only rows sharing a hash get the exact
    # (slow, multi-column) check, so a hash collision can never drop a real event.
    h = _mix(ts_exact.view(np.uint64))
    for c in cols:
        if c != "ts_exact":
            h = _mix(h ^ df[c].to_numpy().astype(np.uint64))
    hs = np.sort(h)
    cand = np.isin(h, hs[1:][hs[1:] == hs[:-1]])
    out = np.zeros(len(df), bool)
    if cand.any():
        sub = df.loc[cand, [c for c in cols if c != "ts_exact"]].assign(ts_exact=ts_exact[cand])
        out[cand] = sub.duplicated(keep="first").to_numpy()
    return out


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a fast, well-spread 64-bit hash of each element."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def item_vocabulary(df: pd.DataFrame, item_ids: pd.Index | np.ndarray) -> pd.DataFrame:
    """The vocabulary: per item code its id, event count and first / last event time.

    Parameters
    ----------
    df : pandas.DataFrame
        Events with `item` (int32 code in [0, len(item_ids))) and `ts` (int64 unix seconds).
    item_ids : pandas.Index or numpy.ndarray
        The raw id of each code, in code order.

    Returns
    -------
    pandas.DataFrame
        `code` int32, `id` string, `count` int64, `first_ts`, `last_ts` int64 (0 for an item
        without events).
    """
    item = df["item"].to_numpy()
    n = len(item_ids)
    g = pd.Series(df["ts"].to_numpy()).groupby(item)
    first = g.min().reindex(range(n)).fillna(0).to_numpy(np.int64)
    last = g.max().reindex(range(n)).fillna(0).to_numpy(np.int64)
    ids = pd.Index(item_ids).astype(str)
    return pd.DataFrame(
        {
            "code": np.arange(n, dtype=np.int32),
            "id": pd.array(ids, dtype="string"),
            "count": np.bincount(item, minlength=n).astype(np.int64),
            "first_ts": first,
            "last_ts": last,
        }
    )


def empty_quarantine() -> pd.DataFrame:
    """A quarantine table without rows (`file`, `row`, `raw`, `reason`, typed)."""
    return pd.DataFrame({"file": pd.Series(dtype=str), "row": pd.Series(dtype=np.int64),
                         "raw": pd.Series(dtype=str), "reason": pd.Series(dtype=str)})
