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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads

log = logging.getLogger(__name__)

NULL_STRINGS = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]
QUARANTINE_SCHEMA = pa.schema(
    [("file", pa.string()), ("row", pa.int64()), ("raw", pa.string()), ("reason", pa.string())]
)
_UNIT_SCALE = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


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
    max_bad_fraction: float = 0.01,
    drop_duplicates: bool = True,
    window_days: float = 0.0,
    quarantine_path: str | Path | None = None,
) -> IngestResult:
    """Read, validate and code every input file; bad rows go to the quarantine with a reason.

    Raises IngestError (after writing the quarantine) when more than `max_bad_fraction` of the
    rows are bad, when a column is missing, or when no valid event is left. `window_days` > 0
    keeps only events of the last that many days before the newest one.
    """
    test_paths = test_paths or []
    files = [*_expand(paths), *_expand(test_paths)]
    n_train_files = len(_expand(paths))
    if not files:
        raise IngestError(f"no input files matched {paths + test_paths}")
    parts, bad_parts, stats = [], [], {"rows_read": 0, "files": [str(f) for f in files]}
    detected_units: set[str] = set()
    for fi, f in enumerate(files):
        table, bad, n_rows = _read_file(f, columns, fmt, delimiter)
        stats["rows_read"] += n_rows
        part, bad2, unit = _parse(table, f, fi, columns, ts_unit, ts_offset_unit)
        if unit:
            detected_units.add(unit)
        part["split"] = np.full(len(part["ts_exact"]), 1 if fi >= n_train_files else 0, np.int8)
        parts.append(part)
        del table  # the typed arrays are all that is needed from here on
        bad_parts.extend([bad, bad2])
    quarantine = pd.concat(bad_parts, ignore_index=True) if bad_parts else _empty_quarantine()
    quarantine = quarantine.sort_values(["file", "row"], kind="stable", ignore_index=True)
    stats["quarantined"] = len(quarantine)
    if quarantine_path is not None:
        write_parquet_atomic(
            pa.Table.from_pandas(quarantine, schema=QUARANTINE_SCHEMA, preserve_index=False),
            quarantine_path,
        )
    stats["ts_unit"] = ",".join(sorted(detected_units)) or ts_unit
    if stats["rows_read"] == 0:
        raise IngestError(f"no rows in the input files: {', '.join(map(str, files))}")
    bad_frac = len(quarantine) / stats["rows_read"]
    if bad_frac > max_bad_fraction:
        reasons = quarantine["reason"].value_counts().head(3).to_dict()
        raise IngestError(
            f"{len(quarantine)} of {stats['rows_read']} rows ({bad_frac:.2%}) are bad, above "
            f"ingest.max_bad_fraction={max_bad_fraction:.2%}; most common reasons: {reasons}; "
            f"the rows are kept in {quarantine_path or 'the quarantine'}"
        )

    raw = _concat(parts)
    del parts
    if event_types and columns.event_type:
        keep = np.isin(raw.pop("event_type"), event_types)
        stats["filtered_event_type"] = int((~keep).sum())
        raw = {k: v[keep] for k, v in raw.items()}
    raw.pop("event_type", None)
    if window_days > 0 and len(raw["ts_exact"]):
        # a rolling window: the nightly job trains on the last N days only
        keep = raw["ts_exact"] > raw["ts_exact"].max() - window_days * 86_400
        stats["outside_window"] = int((~keep).sum())
        if not keep.all():
            raw = {k: v[keep] for k, v in raw.items()}
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
        del ts_exact
        stats["duplicates"] = int(dup.sum())
        if stats["duplicates"]:
            df = df.loc[~dup].reset_index(drop=True)
    stats["events"] = len(df)
    stats["items"] = len(item_ids)
    stats["users"] = int(df["user"].max()) + 1 if len(df) else 0
    vocab = _vocabulary(df, item_ids)
    return IngestResult(df, vocab, quarantine, stats)


def read_categories(path: str, item_col: str, cat_col: str, vocabulary: pd.DataFrame) -> np.ndarray:
    """Category code per item code (int32, -1 unknown), from a side file of (item id, category)."""
    p = Path(path)
    delim = _sniff_delimiter(p)
    df = pd.read_csv(p, sep=delim, dtype=str, usecols=[item_col, cat_col])
    cats, _ = pd.factorize(df[cat_col])
    lookup = pd.Series(cats, index=df[item_col].astype(str)).groupby(level=0).first()
    out = lookup.reindex(vocabulary["id"].astype(str)).fillna(-1).to_numpy().astype(np.int32)
    return out


def write_parquet_atomic(table: pa.Table | pd.DataFrame, path: str | Path) -> None:
    """Write Parquet to a temp name, fsync, rename: a crash never leaves a half file at `path`."""
    from recembed.artifacts import write_parquet

    write_parquet(table, path)


# ---------------------------------------------------------------- helpers


def _expand(paths: list[str]) -> list[Path]:
    out = []
    for p in paths:
        q = Path(p)
        if not q.exists():
            raise IngestError(f"input file {q} does not exist")
        out.append(q)
    return out


def _format_of(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.is_dir() or path.suffix in (".parquet", ".pq"):
        return "parquet"
    return "tsv" if path.suffix == ".tsv" else "csv"


def _sniff_delimiter(path: Path) -> str:
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        head = fh.readline()
    counts = {d: head.count(d) for d in (",", ";", "\t", "|")}
    return max(counts, key=counts.get) if max(counts.values()) else ","


def _read_file(
    path: Path, columns: ColumnMap, fmt: str, delimiter: str | None
) -> tuple[pa.Table, pd.DataFrame, int]:
    """The mapped columns of one file (plus `__row`), rows that could not be parsed, rows read."""
    kind = _format_of(path, fmt)
    need = list(dict.fromkeys(columns.required()))
    if kind == "parquet":
        try:
            dataset = pads.dataset(path, format="parquet")
        except (pa.ArrowInvalid, OSError) as e:
            raise IngestError(f"{path}: not a readable Parquet file or directory: {e}") from e
        _check_columns(path, need, dataset.schema.names)
        try:
            table = dataset.to_table(columns=need)
        except (pa.ArrowInvalid, OSError) as e:
            raise IngestError(f"{path}: corrupted Parquet data: {e}") from e
        table = table.append_column("__row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
        return table, _empty_quarantine(), table.num_rows

    delim = delimiter or ("\t" if kind == "tsv" else _sniff_delimiter(path))
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        header = next(csv.reader([fh.readline()], delimiter=delim), [])
    header = [h.strip() for h in header]
    if not header:
        raise IngestError(f"{path}: empty file (no header line)")
    _check_columns(path, need, header)
    invalid: list[tuple[int | None, str, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        # row.number is the 1-based line number (None when reading multi-threaded)
        invalid.append(
            (None if row.number is None else row.number - 2, row.text,
             f"wrong column count: expected {row.expected_columns}, got {row.actual_columns}")
        )
        return "skip"

    def read(threads: bool) -> pa.Table:
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1,
                                           block_size=1 << 24, use_threads=threads),
            parse_options=pacsv.ParseOptions(delimiter=delim, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                include_columns=need,
                column_types={c: pa.string() for c in need},
                null_values=NULL_STRINGS,
                strings_can_be_null=True,
            ),
        )

    try:
        table = read(threads=True)
        if invalid:
            # row numbers of bad lines are only known to the single-threaded reader
            invalid.clear()
            table = read(threads=False)
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        raise IngestError(f"{path}: cannot parse as {kind.upper()}: {e}") from e
    n_total = table.num_rows + len(invalid)
    bad_rows = np.array(sorted(r for r, _, _ in invalid), dtype=np.int64)
    rows = np.setdiff1d(np.arange(n_total, dtype=np.int64), bad_rows, assume_unique=True)
    table = table.append_column("__row", pa.array(rows))
    bad = pd.DataFrame(
        {"file": str(path), "row": [r for r, _, _ in invalid], "raw": [t for _, t, _ in invalid],
         "reason": [m for _, _, m in invalid]}
    )
    return table, bad if len(bad) else _empty_quarantine(), n_total


def _check_columns(path: Path, need: list[str], have: list[str]) -> None:
    missing = [c for c in need if c not in have]
    if missing:
        raise IngestError(
            f"{path}: missing required column(s) {missing}; the file has columns {have}. "
            "Map them under [input.columns] in the config."
        )


def _parse(
    table: pa.Table, path: Path, file_index: int, columns: ColumnMap, ts_unit: str,
    offset_unit: str,
) -> tuple[dict[str, np.ndarray], pd.DataFrame, str | None]:
    """Typed arrays of one file's valid rows, the rows that failed, and the detected ts unit."""
    n = table.num_rows
    # reason code per row (0 = good); the first reason found wins
    code = np.zeros(n, np.int8)
    reason_text = [""]

    def mark(mask: np.ndarray, reason: str) -> None:
        if mask.any():
            reason_text.append(reason)
            code[mask & (code == 0)] = len(reason_text) - 1

    item = _ids(table.column(columns.item))
    mark(_null_mask(item), f"empty item id (column {columns.item})")
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
        s = _ids(table.column(columns.session))
        mark(_null_mask(s), f"empty session id (column {columns.session})")
        out["session_raw"] = s
    if columns.user:
        out["user_raw"] = _ids(table.column(columns.user))
    if columns.event_type:
        out["event_type"] = table.column(columns.event_type).to_numpy(zero_copy_only=False)
    row = table.column("__row").to_numpy()
    bad = code > 0
    quarantine = _empty_quarantine()
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
    return out, quarantine, unit


def _ids(col: pa.ChunkedArray) -> np.ndarray:
    """Ids as a numpy array: integers stay integers (fast factorize), everything else strings."""
    t = col.type
    if pa.types.is_integer(t) and col.null_count == 0:
        return col.to_numpy()
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        col = pc.utf8_trim_whitespace(col)
        col = pc.if_else(pc.equal(col, ""), pa.scalar(None, col.type), col)
        return col.to_numpy(zero_copy_only=False)
    return pc.cast(col, pa.string()).to_numpy(zero_copy_only=False)


def _null_mask(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        return np.zeros(len(a), bool)
    return pd.isna(a)


def _timestamps(col: pa.ChunkedArray, unit: str) -> tuple[np.ndarray, str | None, np.ndarray]:
    """Unix seconds (float64, sub-second precision kept), the unit used (detected when `unit` is
    auto), and a bad-row mask."""
    t = col.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        secs = pc.cast(pc.cast(col, pa.timestamp("s")), pa.int64())
        bad = pc.is_null(secs).to_numpy(zero_copy_only=False)
        return np.nan_to_num(secs.to_numpy(zero_copy_only=False).astype(np.float64)), \
            "timestamp", bad
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
    # pandas may store datetimes in ns or us: divide by a Timedelta, never assume the resolution
    secs = ((parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).fillna(0)
    secs = secs.to_numpy(np.float64)
    return secs, "iso", bad


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    keys = parts[0].keys()
    out = {}
    for k in keys:
        arrs = [p[k] for p in parts]
        if any(a.dtype == object for a in arrs) and not all(a.dtype == object for a in arrs):
            arrs = [a.astype(str).astype(object) for a in arrs]
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


def _vocabulary(df: pd.DataFrame, item_ids: pd.Index | np.ndarray) -> pd.DataFrame:
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


def _empty_quarantine() -> pd.DataFrame:
    return pd.DataFrame({"file": pd.Series(dtype=str), "row": pd.Series(dtype=np.int64),
                         "raw": pd.Series(dtype=str), "reason": pd.Series(dtype=str)})
