"""Opening input files: compression, text encoding, Hive-partitioned Parquet and partition pruning.

`recembed.ingest` parses and validates; this module only turns a path into an Arrow table of the
mapped columns, with the rows it could not read kept aside with their reason.

- **Compression.** CSV / TSV files may be gzip, bz2 or zstd compressed. The content decides: the
  first bytes (magic numbers) are checked, the suffix (`.gz`, `.bz2`, `.zst`) is the fallback for
  files too short to carry a magic number. A suffix that disagrees with the content is logged and
  the content wins. xz, zip, lz4, 7z, brotli and snappy are refused with a message naming the file
  and the formats that are read. Decompression is pyarrow's own streaming codec.
- **Encoding.** `input.encoding` (default utf-8). A UTF-8 byte-order mark (Excel) is stripped.
  A row whose mapped columns do not decode goes to the quarantine with its file, row and the
  offending byte; the other rows are read. UTF-8 is validated by Arrow block by block (only a
  failing block is decoded value by value); other encodings are transcoded by pyarrow, and when a
  byte does not decode, an ASCII-compatible encoding (cp1252, latin-1, ...) is re-read and
  decoded row by row, while any other (utf-16) stops with the file's name.
- **Hive partitions.** A Parquet directory laid out as `dt=2026-11-21/region=eu/part-*.parquet`
  gets its partition columns (`dt`, `region`) as string columns, usable as any mapped column
  (e.g. `columns.ts = "dt"`) and in `input.filters` (column -> values to keep), which prunes
  whole partitions before any file is opened.
- **Window pruning.** With `ingest.window_days` > 0, partitions older than the window are not
  read when the partition column is the timestamp column, or when `input.partition_date` names
  the partition column holding each event's date. The cut is conservative: partitions from
  `window_days + PRUNE_SLACK_DAYS` days before the newest partition on are read, and the exact
  row-level window is applied by ingest afterwards, so pruning never changes the events kept.
  A newest partition more than a window beyond the next older one (a mistyped `dt=3026-...`) does
  not anchor the cut: it is read, and the cut is anchored at the next one.
"""

from __future__ import annotations

import codecs
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads

from recembed.ids import (  # noqa: F401 - the id rule, read with the inputs
    MAX_EXACT_FLOAT,
    NormalizedIds,
    integral_text_key,
    normalize_id,
    normalize_ids,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SUPPORTED_COMPRESSIONS = ("gzip", "bz2", "zstd")
# Partitions up to this many days beyond the window are still read: day-granular partition values
# and partitions filed by a local date (up to +-14 h from UTC) must never lose an event in the window.
PRUNE_SLACK_DAYS = 2.0

_MAGIC = [  # (leading bytes, compression name); the content decides, not the suffix
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"\xff\x06\x00\x00sNaPpY", "snappy"),
    (b"\x1f\x9d", "compress"),
]
_SUFFIX = {
    ".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".bz": "bz2", ".zst": "zstd", ".zstd": "zstd",
    ".xz": "xz", ".lzma": "xz", ".zip": "zip", ".lz4": "lz4", ".7z": "7z", ".br": "brotli",
    ".snappy": "snappy", ".sz": "snappy", ".z": "compress",
}
_PARQUET_MAGIC = b"PAR1"
_HEAD_BYTES = 1 << 20  # the header line must fit in the first MiB
_CHECK_BLOCK = 1 << 16  # rows per UTF-8 validation block (a failing block is checked row by row)


class SourceError(ValueError):
    """An input that cannot be opened; the message names the file and says how to fix it."""


@dataclass(frozen=True)
class SourceOptions:
    """How to open inputs (from `[input]`).

    Parameters
    ----------
    encoding : str
        Text encoding of CSV / TSV files (`input.encoding`), any Python codec name.
    partition_date : str or None
        Hive partition column whose value is the date (or datetime, UTC) of every event in the
        partition (`input.partition_date`); enables window pruning when the timestamp itself is
        a file column.
    filters : dict
        Hive partition column -> values to keep (`input.filters`); values compare as strings.
    """

    encoding: str = "utf-8"
    partition_date: str | None = None
    filters: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class DelimitedRead:
    """One CSV / TSV file: the mapped columns (string), the 0-based data row of each table row,
    rows that could not be read as (row, raw text, reason), and the number of data rows."""

    table: pa.Table
    rows: np.ndarray
    bad: list[tuple[int, str, str]]
    n_rows: int


@dataclass
class ParquetSource:
    """A Parquet file or (Hive-partitioned) directory with its partitions selected, not yet read.

    `selection` is the partition expression of `input.filters` and the window cut (None: all);
    `ts_column` the timestamp column (`columns.ts`).
    """

    path: Path
    dataset: pads.Dataset
    partition_columns: list[str]
    selection: pc.Expression | None = None
    ts_column: str | None = None

    @property
    def columns(self) -> list[str]:
        """Every column: the files' columns and the partition columns."""
        return list(self.dataset.schema.names)


def detect_compression(path: str | Path) -> str | None:
    """The compression of a file: one of SUPPORTED_COMPRESSIONS, or None for plain data.

    The leading bytes decide; the suffix is used only when the file is too short to tell.
    Raises SourceError for a compression that is not supported.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(16)
    by_magic = next((name for magic, name in _MAGIC if head.startswith(magic)), None)
    if by_magic == "bz2" and head[3:4] not in b"123456789":  # "BZh" + block size 1-9
        by_magic = None
    by_suffix = _SUFFIX.get(path.suffix.lower())
    found = by_magic
    if by_magic is None and by_suffix is not None:
        if len(head) >= 4:
            log.warning("%s: the suffix says %s but the content is not compressed; reading it as "
                        "plain text", path, by_suffix)
        elif head:
            found = by_suffix
    elif by_suffix is not None and by_magic != by_suffix:
        log.warning("%s: the suffix says %s but the content is %s; reading it as %s",
                    path, by_suffix, by_magic, by_magic)
    if found is not None and found not in SUPPORTED_COMPRESSIONS:
        raise SourceError(
            f"{path}: {found} compression is not supported; recembed reads plain, "
            f"{', '.join(SUPPORTED_COMPRESSIONS)} compressed CSV/TSV and Parquet. Decompress the "
            "file or recompress it (e.g. `gzip` or `zstd`)."
        )
    return found


def data_suffix(path: str | Path) -> str:
    """The suffix that names the data format, under any compression suffix (`a.tsv.gz` -> .tsv)."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in _SUFFIX:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def is_parquet_file(path: str | Path) -> bool:
    """True when the file starts with the Parquet magic number (whatever its name)."""
    with open(path, "rb") as fh:
        return fh.read(4) == _PARQUET_MAGIC


def read_head(path: str | Path, encoding: str = "utf-8", max_bytes: int = _HEAD_BYTES) -> str:
    """The first line of a text file (decompressed, decoded, byte-order mark stripped), or ""."""
    path = Path(path)
    compression = detect_compression(path)
    try:
        with pa.input_stream(str(path), compression=compression) as stream:
            raw = stream.read(max_bytes)
    except OSError as e:
        raise SourceError(_unreadable(path, compression, e)) from e
    end = raw.find(b"\n")
    raw = raw if end < 0 else raw[: end + 1]
    enc = _canonical(encoding)
    if enc == "utf-8" and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    text = codecs.getincrementaldecoder(enc)(errors="replace").decode(raw, final=False)
    return text.lstrip("\ufeff").rstrip("\r\n")


def sniff_delimiter(path: str | Path, encoding: str = "utf-8") -> str:
    """The most frequent of , ; TAB | in the header line (`,` when none occurs)."""
    head = read_head(path, encoding)
    counts = {d: head.count(d) for d in (",", ";", "\t", "|")}
    return max(counts, key=counts.get) if max(counts.values()) else ","


def read_delimited(
    path: str | Path, header: list[str], delimiter: str, need: list[str],
    null_values: list[str], encoding: str = "utf-8",
) -> DelimitedRead:
    """The `need` columns of a CSV / TSV file as strings.

    Rows with the wrong number of fields, and rows whose `need` columns do not decode under
    `encoding`, are returned in `bad` with their 0-based data row and reason; the rest is read.
    Raises SourceError when the file cannot be parsed at all.
    """
    path = Path(path)
    compression = detect_compression(path)
    enc = _canonical(encoding)
    utf8 = enc == "utf-8"
    invalid: list[tuple[int | None, str, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        # row.number is the 1-based line number (None when reading multi-threaded)
        invalid.append(
            (None if row.number is None else row.number - 2, row.text,
             f"wrong column count: expected {row.expected_columns}, got {row.actual_columns}")
        )
        return "skip"

    def read(threads: bool, raw: bool) -> pa.Table:
        return pacsv.read_csv(
            pa.input_stream(str(path), compression=compression),
            read_options=pacsv.ReadOptions(
                column_names=header, skip_rows=1, block_size=1 << 24, use_threads=threads,
                # raw: bytes as they are, decoded per row below; else pyarrow transcodes
                encoding="utf8" if raw else enc),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                include_columns=need,
                column_types={c: pa.binary() if raw else pa.string() for c in need},
                null_values=null_values,
                strings_can_be_null=True,
            ),
        )

    def read_all(raw: bool) -> pa.Table:
        invalid.clear()
        table = read(threads=True, raw=raw)
        if invalid:
            # row numbers of bad lines are only known to the single-threaded reader
            invalid.clear()
            table = read(threads=False, raw=raw)
        return table

    # UTF-8 is read raw and validated per row. Other encodings are transcoded by pyarrow; when a
    # byte does not decode, an ASCII-compatible encoding is re-read raw and decoded row by row
    # so that only the rows holding such bytes are quarantined.
    raw = utf8
    try:
        try:
            table = read_all(raw)
        except (pa.ArrowInvalid, UnicodeError) as e:
            if raw or not _ascii_compatible(enc) or "decode" not in str(e):
                raise
            raw = True
            table = read_all(raw)
    except (pa.ArrowInvalid, UnicodeError) as e:
        hint = "" if utf8 else f" (input.encoding={encoding!r})"
        raise SourceError(f"{path}: cannot parse as delimited text{hint}: {e}") from e
    except OSError as e:  # a truncated or corrupt compressed stream, a read error
        raise SourceError(_unreadable(path, compression, e)) from e
    n_total = table.num_rows + len(invalid)
    bad_rows = np.array(sorted(r for r, _, _ in invalid), dtype=np.int64)
    rows = np.setdiff1d(np.arange(n_total, dtype=np.int64), bad_rows, assume_unique=True)
    bad = [(int(r), t, m) for r, t, m in invalid]
    if raw:
        strings, keep, undecodable = _decode(table, need, enc, encoding)
        for i, reason in undecodable:
            shown = "; ".join(f"{c}={_show(table.column(c)[i].as_py(), enc)}" for c in need)
            bad.append((int(rows[i]), shown, reason))
        table = strings
        if undecodable:
            table, rows = table.filter(pa.array(keep)), rows[keep]
    bad.sort(key=lambda b: b[0])
    return DelimitedRead(table, rows, bad, n_total)


def open_parquet(
    path: str | Path, *, ts_column: str | None = None, options: SourceOptions | None = None,
    window_days: float = 0.0,
) -> ParquetSource:
    """A Parquet file or directory; Hive partition directories (`key=value`) become string columns,
    and the partitions that `options.filters` and the window leave are selected.

    No file of a partition left out is ever opened, not even for its schema: the schema is read
    from the first selected file.

    Parameters
    ----------
    path : str or Path
        A Parquet file, or a directory of them (Hive-partitioned or not).
    ts_column : str or None
        The timestamp column (`columns.ts`); a partition column there enables window pruning.
    options : SourceOptions
        `input.filters` and `input.partition_date`.
    window_days : float
        `ingest.window_days` (days, >= 0; 0 = no window).

    Raises
    ------
    SourceError
        Not readable Parquet, no file, or a filter / `partition_date` key that does not fit.
    """
    path = Path(path)
    options = options or SourceOptions()
    try:
        if not path.is_dir():  # a single file is never partitioned, whatever its path holds
            return ParquetSource(path, pads.dataset(path, format="parquet"), [],
                                 ts_column=ts_column)
        # listed by our own walk: a symlink loop (`self -> .`) neither hangs nor repeats files
        files = parquet_files(path)
        if not files:
            raise SourceError(f"{path}: the directory holds no Parquet files")
        names = _partition_names(path, files)
        # partition values as strings: `hour=03` stays "03", and ids / dates parse like any
        # string column instead of by a type pyarrow guessed from the directory names
        keys = pa.schema([(n, pa.string()) for n in names])
        part = pads.partitioning(keys, flavor="hive")
        by_partition = pads.dataset(files, format="parquet", partitioning=part, schema=keys,
                                    partition_base_dir=str(path))
        selection = _selection(path, by_partition, names, ts_column, options, window_days)
        first = next(iter(by_partition.get_fragments(filter=selection)), None)
        if first is None:
            raise SourceError(f"{path}: input.filters {options.filters} leave no partition to "
                              "read; check the values against the partition directories")
        file_schema = first.physical_schema
        schema = pa.schema([f for f in file_schema if f.name not in names] + list(keys))
        dataset = pads.dataset(files, format="parquet", partitioning=part, schema=schema,
                               partition_base_dir=str(path))
    except (pa.ArrowInvalid, OSError) as e:
        raise SourceError(f"{path}: not a readable Parquet file or directory: {e}") from e
    return ParquetSource(path, dataset, names, selection, ts_column)


def read_parquet(src: ParquetSource, need: list[str]) -> pa.Table:
    """The `need` columns of the selected partitions. Raises SourceError on corrupt data.

    The dataset reads every file with the first file's schema. When the files of a directory
    disagree on a column's type (one writer's decimal ids beside another's int64, int32 beside
    int64, a float timestamp beside an integer one), that cast can fail; the column is then read
    with a type every file converts to (`unified_type`), and the log says which files disagreed.
    """
    try:
        return src.dataset.to_table(columns=need, filter=src.selection)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
        first_error = e
    schema = _unified_schema(src, need) if src.path.is_dir() else None
    if schema is None:
        raise SourceError(f"{src.path}: corrupted Parquet data: {first_error}") from first_error
    try:
        dataset = pads.dataset(src.dataset.files, format="parquet", schema=schema,
                               partitioning=src.dataset.partitioning,
                               partition_base_dir=str(src.path))
        return dataset.to_table(columns=need, filter=src.selection)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
        raise SourceError(f"{src.path}: corrupted Parquet data: {e}") from e


def unified_type(types: list[pa.DataType], *, timestamp: bool = False) -> pa.DataType:
    """One type that each of `types` (the same column in different files) casts to losslessly
    for recembed's parsers: any mix of integer widths -> int64; a numeric timestamp column
    (`timestamp`) mixing integers, floats and decimals -> float64; anything else mixed -> string
    (ids then follow the id rule, `recembed.ids`: "123" and 123 are the same id)."""
    if all(t == types[0] for t in types):
        return types[0]
    if all(pa.types.is_integer(t) for t in types):
        return pa.int64()
    numeric = all(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
                  for t in types)
    if timestamp and numeric:
        return pa.float64()
    return pa.string()


def _unified_schema(src: ParquetSource, need: list[str]) -> pa.Schema | None:
    """The dataset schema with each `need` column whose type differs between the selected files
    replaced by `unified_type` (None when the files agree: the error was something else)."""
    seen: dict[str, dict[pa.DataType, str]] = {}
    for frag in src.dataset.get_fragments(filter=src.selection):
        for f in frag.physical_schema:
            if f.name in need:
                seen.setdefault(f.name, {}).setdefault(f.type, frag.path)
    schema = src.dataset.schema
    changed = False
    for name, types in seen.items():
        if len(types) < 2:
            continue
        target = unified_type(list(types), timestamp=name == src.ts_column)
        listing = ", ".join(f"{t} in {Path(f).name}" for t, f in types.items())
        log.warning("%s: the files disagree on the type of column %r (%s): read as %s",
                    src.path, name, listing, target)
        schema = schema.set(schema.get_field_index(name), pa.field(name, target))
        changed = True
    return schema if changed else None


def parquet_files(root: str | Path) -> list[str]:
    """The data files of a Parquet directory: every file `recembed.artifacts.walk_files` lists
    (each once, symlink loops skipped) but those under a name starting with "." or "_"
    (`_SUCCESS`, `.crc`, `_metadata`: what pyarrow's own discovery ignores).

    Parameters
    ----------
    root : str or pathlib.Path
        A directory.

    Returns
    -------
    list of str
        Sorted paths under `root`.
    """
    from recembed.artifacts import walk_files

    root = Path(root)
    return [str(f) for f in walk_files(root)
            if not any(part.startswith((".", "_")) for part in f.relative_to(root).parts)]


# ---------------------------------------------------------------- helpers


def _partition_names(root: Path, files: list[str]) -> list[str]:
    """Hive partition keys in directory order (outermost first), from the `key=value` segments."""
    names: dict[str, None] = {}
    for f in files:
        for seg in Path(f).relative_to(root).parts[:-1]:
            if "=" in seg:
                names.setdefault(seg.split("=", 1)[0], None)
    return list(names)


def _selection(
    path: Path, by_partition: pads.Dataset, parts: list[str], ts_column: str | None,
    options: SourceOptions, window_days: float,
) -> pc.Expression | None:
    """The partition expression for `options.filters` and the window cut (None: read all)."""
    for key in options.filters:
        if key not in parts:
            raise SourceError(
                f"input.filters.{key}: {path} has no partition column {key!r}; its partition "
                f"columns are {parts or 'none (not a Hive-partitioned directory)'}"
            )
    if options.partition_date and options.partition_date not in parts:
        raise SourceError(
            f"input.partition_date={options.partition_date!r}: {path} has no such partition "
            f"column; its partition columns are {parts or 'none'}"
        )
    expr = None
    for key, values in options.filters.items():
        e = pc.field(key).isin([str(v) for v in values])
        expr = e if expr is None else expr & e
    date_col = options.partition_date or (ts_column if ts_column in parts else None)
    if window_days > 0 and date_col is not None:
        cut = _window_cut(path, by_partition, date_col, expr, window_days,
                          strict=bool(options.partition_date))
        if cut is not None:
            expr = cut if expr is None else expr & cut
    if expr is not None:
        n_read = sum(1 for _ in by_partition.get_fragments(filter=expr))
        log.info("%s: reading %d of %d files (partition filters and window)", path, n_read,
                 len(by_partition.files))
    return expr


def _window_cut(
    path: Path, by_partition: pads.Dataset, col: str, expr: pc.Expression | None,
    window_days: float, strict: bool,
) -> pc.Expression | None:
    """`col IN (values on or after the cut)` or None when nothing is pruned."""
    values = sorted({str(v) for f in by_partition.get_fragments(filter=expr)
                     if (v := pads.get_partition_keys(f.partition_expression).get(col)) is not None})
    if not values:
        return None
    secs = np.array([_iso_seconds(v) for v in values], np.float64)
    if strict and not np.isfinite(secs).all():
        bad = [v for v, t in zip(values, secs, strict=True) if not np.isfinite(t)][:3]
        raise SourceError(
            f"input.partition_date={col!r}: {path} has partition values {bad} that are not "
            "dates (YYYY-MM-DD or ISO-8601); unset input.partition_date or fix the partitions"
        )
    dated = np.flatnonzero(np.isfinite(secs))
    if not len(dated):
        return None
    order = dated[np.argsort(secs[dated], kind="stable")]
    span = (window_days + PRUNE_SLACK_DAYS) * 86_400
    top = len(order) - 1
    # an isolated newest partition (a typo such as dt=3026-01-01) does not anchor the cut
    while top > 0 and secs[order[top]] - secs[order[top - 1]] > span:
        log.warning("%s: partition %s=%s is more than %.0f days after the next older one; it is "
                    "read but does not anchor the window", path, col, values[order[top]],
                    span / 86_400)
        top -= 1
    cut = secs[order[top]] - span
    # unparseable values are kept: ingest quarantines their rows with a reason
    keep = [v for v, s in zip(values, secs, strict=True) if not (np.isfinite(s) and s < cut)]
    if len(keep) == len(values):
        return None
    log.info("%s: the %.4g-day window skips %d of %d %s partitions", path, window_days,
             len(values) - len(keep), len(values), col)
    return pc.field(col).isin(keep)


def _iso_seconds(value: str) -> float:
    """Unix seconds of an ISO-8601 date or datetime (naive = UTC), NaN when it is not one."""
    for tz in (None, "UTC"):  # arrow parses a zone suffix only into a zoned type
        try:
            return float(pc.cast(pa.array([value]), pa.timestamp("s", tz=tz))
                         .cast(pa.int64())[0].as_py())
        except (pa.ArrowInvalid, TypeError):
            continue
    return float("nan")


def _decode(
    table: pa.Table, need: list[str], enc: str, configured: str,
) -> tuple[pa.Table, np.ndarray, list[tuple[int, str]]]:
    """(the `need` columns decoded to strings, keep mask, [(table row, reason)]) for a table of
    raw bytes; a row with a value that does not decode under `enc` is not kept."""
    keep = np.ones(table.num_rows, bool)
    reasons: dict[int, str] = {}
    if enc == "utf-8":
        advice = ("if the file is not UTF-8, set input.encoding (e.g. 'cp1252' or 'latin-1')")
        what = "not valid UTF-8"
    else:
        advice = f"check input.encoding={configured!r}"
        what = f"not valid {configured}"
    out = {}
    for c in need:
        col = table.column(c).combine_chunks() if table.num_rows else pa.array([], pa.binary())
        blocks = []
        for start in range(0, len(col), _CHECK_BLOCK):
            block = col.slice(start, _CHECK_BLOCK)
            if enc == "utf-8":
                try:  # arrow validates UTF-8 in C; only a failing block is decoded value by value
                    blocks.append(pc.cast(block, pa.string()))
                    continue
                except pa.ArrowInvalid:
                    pass
            values = []
            for j, v in enumerate(block.to_pylist()):
                try:
                    values.append(None if v is None else v.decode(enc))
                except UnicodeDecodeError as e:
                    values.append(None)
                    keep[start + j] = False
                    reasons.setdefault(
                        start + j, f"{what} in column {c} (byte 0x{v[e.start]:02x} at offset "
                                   f"{e.start}); {advice}")
            blocks.append(pa.array(values, pa.string()))
        out[c] = pa.chunked_array(blocks, pa.string())
    return pa.table(out), keep, sorted(reasons.items())


def _unreadable(path: Path, compression: str | None, e: OSError) -> str:
    what = f"{compression} stream" if compression else "file"
    return (f"{path}: cannot read the {what} to its end ({e}); the file is truncated or "
            "corrupt (an interrupted download or copy?): nothing of it was used. Copy or export "
            "it again" + (f", and check it with `{'gzip -t' if compression == 'gzip' else compression + ' -t'}`"
                          if compression else ""))


def _ascii_compatible(enc: str) -> bool:
    """Delimiters, quotes and newlines are the ASCII bytes (cp1252, latin-1, shift_jis: yes;
    utf-16: no), so the raw bytes can be split into rows before decoding."""
    try:
        return all(ch.encode(enc) == ch.encode("ascii") for ch in ',;|\t"\r\n')
    except (UnicodeError, LookupError):
        return False


def _show(v: bytes | None, enc: str = "utf-8") -> str:
    # the bytes that do not decode are shown as \xNN escapes
    return "None" if v is None else "'" + v.decode(enc, errors="backslashreplace") + "'"


def _canonical(encoding: str) -> str:
    """Python's name of a codec; utf-8-sig reads as utf-8 (the BOM is stripped either way)."""
    name = codecs.lookup(encoding).name
    return "utf-8" if name in ("utf-8", "utf-8-sig") else name


# ---------------------------------------------------------------- quarantine summaries

# where the kind of a quarantine reason ends and the row's own values begin
_REASON_KIND_END = re.compile(r"\s\(|:|,|\s[0-9'\"]")


def reason_kind(reason: str) -> str:
    """The kind of a quarantine reason: its text before the first row-specific part (a
    parenthesis, a colon, a comma, or a number or quoted value after a space), so that rows of
    one kind group together whatever values their reasons quote.

    >>> reason_kind("wrong column count: expected 3, got 4")
    'wrong column count'
    >>> reason_kind("straggler timestamp 2026-01-02T00:00:00Z, 3.0 days after the rest")
    'straggler timestamp'
    """
    return _REASON_KIND_END.split(str(reason), maxsplit=1)[0].strip()


def quarantine_reason_counts(quarantine: pd.DataFrame) -> dict[str, int]:
    """Rows per quarantine reason kind (`reason_kind`).

    Parameters
    ----------
    quarantine : pandas.DataFrame
        With a `reason` column.

    Returns
    -------
    dict of str to int
        Rows (>= 1) per reason kind, most frequent first.
    """
    kinds = quarantine["reason"].astype(str).map(reason_kind)
    return {k: int(v) for k, v in kinds.value_counts().items()}


def quarantine_summary(quarantine: pd.DataFrame, top: int = 3, examples: int = 2) -> str:
    """The most common reason kinds with their row counts and a few example rows each, for an
    error message ("315 rows: empty item id, e.g. a.csv row 4: ...").

    Parameters
    ----------
    quarantine : pandas.DataFrame
        `file`, `row`, `reason`.
    top : int >= 1
        Reason kinds shown.
    examples : int >= 0
        Example rows shown per kind (file, 0-based data row, full reason).

    Returns
    -------
    str
    """
    kinds = quarantine["reason"].astype(str).map(reason_kind)
    parts = []
    for kind, n in kinds.value_counts().head(top).items():
        rows = quarantine[kinds == kind].head(examples)
        ex = "; ".join(f"{Path(str(f)).name} row {int(r)}: {reason}" for f, r, reason in
                       zip(rows["file"], rows["row"], rows["reason"], strict=True))
        parts.append(f"{int(n)} rows: {kind} (e.g. {ex})")
    rest = int(kinds.nunique()) - top
    return " | ".join(parts) + (f" | and {rest} more kind(s)" if rest > 0 else "")
