"""Ingest on Spark: the same readers, column mapping, timestamp units and quarantine rules as
`recembed.ingest.ingest`, with the files read in parallel and the global steps in Spark.

- Each input file (a CSV / TSV file, a Parquet file or directory) is read and parsed by one
  task with the local functions (`read_log_file`, `parse_log_rows`): encodings, compression, Hive
  partitions, id typing, timestamp-unit detection per file and the per-row quarantine reasons
  are the local engine's code, not a second implementation. (A data lake's table is many part
  files: list them, or their folders, in `input.paths` to read them in parallel.)
- The global rules run in Spark over all files: timestamps far from the median (the median
  from two exact order statistics, numpy's arithmetic on them), the rolling window and its
  stragglers (exact percentiles and the newest 0.1% of rows, then the local rule), the
  event-type filter, id codes in order of first appearance (`pd.factorize`: a global running
  count over (file, row)), exact duplicates (the first by (file, row) kept) and the vocabulary.
- Quarantined rows are few (at most `ingest.max_bad_fraction`): they are collected and their
  texts made by the local `quarantine_rows`, then sorted by (file, row) as the local engine
  sorts them.

Outputs: events.parquet (same columns, dtypes and row order), vocabulary.parquet and the
quarantine, written as the local engine writes them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from recembed import ingest as L
from recembed import sources
from recembed.ingest import ColumnMap, IngestError, IngestParams, IngestResult
from recembed.runtime import Runtime
from recembed.spark import io
from recembed.spark.session import from_runtime

_ROWS = pa.schema([
    ("kind", pa.int8()),  # 0 event, 1 quarantined row, 2 the file's metadata
    ("file", pa.int16()), ("row", pa.int64()), ("item", pa.string()), ("user", pa.string()),
    ("session", pa.string()), ("keep_type", pa.bool_()), ("ts", pa.float64()),
    ("split", pa.int8()), ("raw", pa.string()), ("reason", pa.string()),
    ("last", pa.float64()),  # metadata: the file's last time (its first is in ts)
    ("nfc", pa.int64()),  # metadata: id values NFC normalisation changed
    ("note", pa.string()),  # metadata: the file's warning (parse_log_rows' notes)
])
# 3: a text item id that reads as an integer (item = the id, user = the integer as text)
_EVENT, _BAD, _META, _NUMTEXT = 0, 1, 2, 3


def ingest_files(params: IngestParams, events_path: str | Path,
                 quarantine_path: str | Path | None, runtime: Runtime) -> IngestResult:
    """The ingest stage on Spark, with the signature of `recembed.ingest.ingest_files`:
    `ingest` in the run's SparkSession (`runtime`), part files in runtime.scratch."""
    return ingest(from_runtime(runtime), list(params.paths), params.columns, events_path,
                  runtime.scratch, quarantine_path=quarantine_path, **params.arguments())


def ingest(
    spark,
    paths: list[str],
    columns: ColumnMap,
    events_path: str | Path,
    scratch: str | Path,
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
    partitions: int = 0,
) -> IngestResult:
    """`recembed.ingest.ingest` on Spark; the events are written to `events_path` (the
    result's `events` is empty), the vocabulary and quarantine returned as the local engine
    returns them, with the same statistics. Parameters as the local function, plus the
    SparkSession, a scratch folder and `partitions` (0 = spark.sql.shuffle.partitions).
    Raises IngestError with the local engine's messages."""
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not columns.user and not columns.session:
        raise IngestError("events need a user or a session column to be grouped into sessions "
                          "(input.columns.user / input.columns.session)")
    partitions = partitions or int(spark.conf.get("spark.sql.shuffle.partitions"))
    test_paths = test_paths or []
    files = [*L.existing_input_files(paths), *L.existing_input_files(test_paths)]
    n_train_files = len(L.existing_input_files(paths))
    if not files:
        raise IngestError(f"no input files matched {paths + test_paths}")
    names = [str(f) for f in files]
    read = _reader(names, n_train_files, columns, fmt, delimiter, source, window_days, ts_unit,
                   ts_offset_unit, na_values or [], event_types or [])
    rows = (spark.range(len(files), numPartitions=len(files)).mapInArrow(read, io.ddl(_ROWS))
            .persist(StorageLevel.MEMORY_AND_DISK))
    small = io.to_arrow(rows.filter(F.col("kind") != _EVENT), scratch, _ROWS).to_pandas()
    meta = small[small["kind"] == _META].sort_values("file")
    errors = meta[meta["reason"].notna()]
    if len(errors):
        rows.unpersist()
        raise IngestError(errors["reason"].iloc[0])
    bad_parts = [small[small["kind"] == _BAD][["file", "row", "raw", "reason"]]
                 .assign(file=lambda d: [names[i] for i in d["file"]])]
    units = [u or None for u in meta["raw"]]
    # per column: did every file give integer ids (then the quarantine shows them as ints)
    int_ids = {c: bool((meta[c] == "int").all()) for c in ("item", "user", "session")}
    stats: dict = {"rows_read": int(meta["row"].sum()), "files": names,
                   "ids_nfc_normalized": int(meta["nfc"].sum())}
    ev = rows.filter(F.col("kind") == _EVENT).drop("kind", "raw", "reason", "nfc", "note")
    stats["warnings"] = [w for w in meta["note"] if isinstance(w, str)]
    stats["warnings"] += L.id_collision_warnings(
        _collision_pairs(ev, small[small["kind"] == _NUMTEXT], meta, names), columns.item)
    for w in stats["warnings"]:
        L.log.warning("%s", w)
    ctx = (files, units, columns)

    agg = ev.agg(F.count(F.lit(1)).alias("n"), F.min("ts").alias("lo"), F.max("ts").alias("hi"),
                 F.max(F.abs("ts")).alias("abs")).collect()[0]
    n = int(agg["n"])
    far = F.abs(F.col("ts")) > F.lit(float(L.TS_LIMIT_S))
    med = None
    # no row can be further than (newest - oldest) from the median: then there is none to find
    maybe_far = n and (agg["abs"] > L.TS_LIMIT_S or (
        max_ts_distance_days > 0 and agg["hi"] - agg["lo"] > max_ts_distance_days * L.DAY))
    if max_ts_distance_days > 0 and maybe_far:
        inside = ev.filter(~far)
        m = inside.count()
        if m:
            a, b = _order_stats(inside, "ts", [(m - 1) // 2, m // 2], m)
            med = float(np.mean(np.array([a, b]))) if m % 2 == 0 else a
            far = far | (F.abs(F.col("ts") - F.lit(med)) > F.lit(max_ts_distance_days * L.DAY))
    far_rows = _collect(ev.filter(far), scratch) if maybe_far else _collect(ev.limit(0), scratch)
    stats["ts_implausible"] = len(far_rows)
    if len(far_rows):
        # the reason quotes the median of the rows that are not far (not the rule's median)
        rest = ev.filter(~far)
        k = n - len(far_rows)
        med_ = 0.0
        if k:
            a, b = _order_stats(rest, "ts", [(k - 1) // 2, k // 2], k)
            med_ = float(np.mean(np.array([a, b]))) if k % 2 == 0 else a
        bad_parts.append(_quarantine(far_rows, ctx, int_ids, lambda t, u: L.implausible_ts_reason(
            t, u, med_, max_ts_distance_days, columns.ts)))
        ev = rest
    if event_types and columns.event_type:
        stats["filtered_event_type"] = ev.filter(~F.col("keep_type")).count()
        ev = ev.filter(F.col("keep_type"))
    ev = ev.drop("keep_type")
    n = n - stats["ts_implausible"] - stats.get("filtered_event_type", 0)
    if window_days > 0 and n:
        keep, late, anchor = _window(ev, n, window_days * L.DAY)
        stats["window_end"] = L.iso_time(anchor)
        late_rows = _collect(ev.filter(late), scratch)
        stats["window_stragglers"] = len(late_rows)
        stats["outside_window"] = ev.filter(~keep & ~late).count()
        if len(late_rows):
            bad_parts.append(_quarantine(late_rows, ctx, int_ids, lambda t, u: (
                f"straggler timestamp {L.iso_time(t)}, {(t - anchor) / L.DAY:.1f} days after the "
                f"rest of the log, behind a silence (clock error?); ingest.window_days ends at "
                f"{L.iso_time(anchor)}, the newest event before the silence")))
        ev = ev.filter(keep)
        n -= len(late_rows) + stats["outside_window"]
    quarantine = pd.concat([p for p in bad_parts if len(p)] or [L.empty_quarantine()],
                           ignore_index=True).astype({"row": np.int64})
    quarantine = quarantine.sort_values(["file", "row"], kind="stable", ignore_index=True)
    stats["quarantined"] = len(quarantine)
    stats["quarantine_reasons"] = L.quarantine_reason_counts(quarantine)
    if quarantine_path is not None:
        L.write_quarantine(quarantine, quarantine_path)
    stats["ts_unit"] = ",".join(sorted({u for u in units if u})) or ts_unit
    if stats["rows_read"] == 0:
        raise IngestError(f"no rows in the input files: {', '.join(map(str, files))}")
    bad_frac = len(quarantine) / stats["rows_read"]
    if bad_frac > max_bad_fraction:
        reasons = L.quarantine_summary(quarantine)
        raise IngestError(
            f"{len(quarantine)} of {stats['rows_read']} rows ({bad_frac:.2%}) are bad, above "
            f"ingest.max_bad_fraction={max_bad_fraction:.2%}; most common reasons: {reasons}; "
            f"the rows are kept in {quarantine_path or 'the quarantine'}"
        )
    if n == 0:
        raise IngestError(f"no valid events left in {', '.join(map(str, files))}")

    # codes in order of first appearance over (file, row): pd.factorize(sort=False)
    ev = ev.persist(StorageLevel.MEMORY_AND_DISK)
    item_codes, n_items = _factorize(ev, "item", partitions)
    ev = ev.join(item_codes, "item")
    if columns.user:
        user_codes, _ = _factorize(ev.filter(F.col("user").isNotNull()), "user", partitions)
        ev = (ev.join(user_codes, "user", "left")
              .withColumn("user_code", F.coalesce(F.col("user_code"), F.lit(-1))))
    else:
        ev = ev.withColumn("user_code", F.lit(-1))
    if columns.session:
        sess_codes, _ = _factorize(ev, "session", partitions)
        ev = ev.join(sess_codes, "session")
    ev = ev.withColumn("ts_int", F.floor("ts").cast("long"))
    stats["duplicates"] = 0
    if drop_duplicates:
        keys = ["user_code", "item_code", "ts", *(["session_code"] if columns.session else [])]
        first = Window.partitionBy(*keys).orderBy("file", "row")
        ev = ev.withColumn("k", F.row_number().over(first))
        ev = ev.persist(StorageLevel.MEMORY_AND_DISK)
        stats["duplicates"] = ev.filter(F.col("k") > 1).count()
        ev = ev.filter(F.col("k") == 1)
    out = ev.select(F.col("user_code").cast("int").alias("user"),
                    F.col("item_code").cast("int").alias("item"), F.col("ts_int").alias("ts"),
                    *([F.col("session_code").alias("session")] if columns.session else []),
                    "row", "file", "split", F.col("ts").alias("ts_exact"))
    out = out.persist(StorageLevel.MEMORY_AND_DISK)
    order = ["file", "row"]
    fractional = out.filter(F.col("ts_exact") != F.floor("ts_exact")).limit(1).count() > 0
    # each reader task checked its own file: all in order, and the files after each other
    firsts, lasts = meta["ts"].to_numpy(np.float64), meta["last"].to_numpy(np.float64)
    ne = ~np.isnan(firsts)
    in_order = bool(meta["keep_type"].astype(bool).all()) and bool(
        (lasts[ne][:-1] <= firsts[ne][1:]).all())
    if fractional and not in_order and not _ascending(out, order, "ts_exact", partitions):
        # the local engine's stable sort by the exact time: ties keep (file, row) order
        order = ["ts_exact", "file", "row"]
    dtypes = {"user": "int32", "item": "int32", "ts": "int64",
              **({"session": "int64"} if columns.session else {}),
              "row": "int64", "file": "int16", "split": "int8"}
    stats["events"] = io.write_single(out.orderBy(*order), events_path,
                                      io.pandas_schema(dtypes), scratch)
    stats["items"] = n_items
    top = out.agg(F.max("user")).collect()[0][0]
    stats["users"] = int(top) + 1 if stats["events"] else 0
    vocab = _vocabulary(out, item_codes, n_items, scratch)
    for df in (out, ev, rows):
        df.unpersist()
    return IngestResult(pd.DataFrame(), vocab, quarantine, stats)


# ---------------------------------------------------------------- helpers


def _reader(names, n_train_files, columns, fmt, delimiter, source, window_days, ts_unit,
            offset_unit, na_values, event_types):
    """The task that reads and parses one file with the local functions: its events, its
    quarantined rows, and one metadata row (rows read, ts unit, id types, or the error)."""

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for b in batches:
            for fi in b.column(0).to_pylist():
                yield from _read_one(fi)

    def _read_one(fi: int) -> Iterator[pa.RecordBatch]:
        f = Path(names[fi])
        try:
            table, bad, n_rows = L.read_log_file(f, columns, fmt, delimiter, source, window_days)
            part, bad2, unit, notes = L.parse_log_rows(table, f, fi, columns, ts_unit,
                                                       offset_unit, na_values)
        except IngestError as e:
            yield _batch(_META, fi, reason=[str(e)])
            return
        del table
        m = len(part["ts_exact"])
        kinds = {}
        strs = {}
        for c, k in (("item", "item_raw"), ("user", "user_raw"), ("session", "session_raw")):
            if k in part:
                a = part[k]
                kinds[c] = "str" if a.dtype == object else "int"
                strs[c] = a if a.dtype == object else a.astype(str).astype(object)
        keep = (np.isin(part["event_type"], event_types) if event_types and "event_type" in part
                else np.ones(m, bool))
        yield _batch(_EVENT, fi, m, row=part["row"], ts=part["ts_exact"], keep_type=keep,
                     split=np.full(m, 1 if fi >= n_train_files else 0, np.int8), **strs)
        q = pd.concat([bad, bad2], ignore_index=True)
        if len(q):
            yield _batch(_BAD, fi, len(q), row=q["row"].to_numpy(np.int64),
                         raw=q["raw"].astype(str).to_numpy(object),
                         reason=q["reason"].astype(str).to_numpy(object))
        cand = L.text_id_candidates(part["item_raw"])
        if len(cand):
            yield _batch(_NUMTEXT, fi, len(cand), item=cand["id"].to_numpy(object),
                         user=cand["key"].to_numpy(object))
        t = part["ts_exact"]
        yield _batch(_META, fi, row=[n_rows], raw=[unit or ""],
                     nfc=[notes["ids_nfc_normalized"]], note=[notes["warning"]],
                     keep_type=[bool((np.diff(t) >= 0).all())],
                     ts=[float(t[0]) if m else np.nan], last=[float(t[-1]) if m else np.nan],
                     **{c: [kinds.get(c, "")] for c in ("item", "user", "session")})

    return read


def _collision_pairs(ev, cand: pd.DataFrame, meta: pd.DataFrame, names: list[str]
                     ) -> pd.DataFrame:
    """The pairs `recembed.ingest.id_collision_warnings` takes: each file's text ids that read
    as integers (`cand`: file, item = id, user = key), matched against the integer files."""
    from pyspark.sql import functions as F

    cols = ["text_file", "text_id", "int_file", "int_id"]
    int_files = [int(f) for f, k in zip(meta["file"], meta["item"], strict=True) if k == "int"]
    if not len(cand) or not int_files:
        return pd.DataFrame(columns=cols)
    keys = sorted(set(cand["user"]))
    hits = (ev.filter(F.col("file").isin(int_files) & F.col("item").isin(keys))
            .select("file", "item").distinct().toPandas())
    m = cand.merge(hits, left_on="user", right_on="item", suffixes=("_t", "_i"))
    return pd.DataFrame({"text_file": [names[i] for i in m["file_t"]], "text_id": m["item_t"],
                         "int_file": [names[i] for i in m["file_i"]], "int_id": m["item_i"]})


def _batch(kind: int, fi: int, n: int = 1, **cols) -> pa.RecordBatch:
    arrays = []
    for f in _ROWS:
        if f.name == "kind":
            arrays.append(pa.array(np.full(n, kind, np.int8)))
        elif f.name == "file":
            arrays.append(pa.array(np.full(n, fi, np.int16)))
        elif f.name in cols:
            arrays.append(pa.array(cols[f.name], f.type))
        else:
            arrays.append(pa.nulls(n, f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=_ROWS)


def _collect(df, scratch) -> pd.DataFrame:
    """A few rows (quarantined ones) on the driver, in (file, row) order."""
    return io.to_arrow(df.orderBy("file", "row"), scratch).to_pandas()


def _quarantine(rows: pd.DataFrame, ctx: tuple, int_ids: dict, reason_of) -> pd.DataFrame:
    """The local `quarantine_rows` on collected rows: ids typed as the local engine held them
    (ints when every file gave ints), so `raw` shows them the same way."""
    raw = {"file": rows["file"].to_numpy(np.int16), "row": rows["row"].to_numpy(np.int64),
           "ts_exact": rows["ts"].to_numpy(np.float64)}
    for c in ("item", "user", "session"):
        if getattr(ctx[2], c):
            v = rows[c].to_numpy(object)
            raw[f"{c}_raw"] = (np.array([None if x is None else np.int64(x) for x in v],
                                        dtype=object) if int_ids[c] else v)
    return L.quarantine_rows(raw, np.ones(len(rows), bool), ctx, reason_of)


def _order_stats(df, col: str, ranks: list[int], n: int) -> list[float]:
    """The values of rank r (0-based, ascending) of `col`, exactly: approximate quantiles
    bracket each rank, the rows inside the bracket are counted and collected (a few thousand),
    and the rank is read off them."""
    from pyspark.sql import functions as F

    err = min(0.01, max(1e-5, 1000 / n))
    out = []
    for r in ranks:
        lo_p, hi_p = max(0.0, r / n - 2 * err), min(1.0, (r + 1) / n + 2 * err)
        lo, hi = df.approxQuantile(col, [lo_p, hi_p], err)
        below = df.filter(F.col(col) < lo).count()
        if below > r:  # outside the guarantee: widen to everything below
            lo, below = None, 0
        cond = F.col(col) <= hi if lo is None else (F.col(col) >= lo) & (F.col(col) <= hi)
        vals = np.sort(np.array([x[0] for x in df.filter(cond).select(col).collect()],
                                np.float64))
        if r - below >= len(vals):  # above the bracket: take everything from lo on
            cond = F.lit(True) if lo is None else F.col(col) >= lo
            vals = np.sort(np.array([x[0] for x in df.filter(cond).select(col).collect()],
                                    np.float64))
        out.append(float(vals[r - below]))
    return out


def _lerp(a: float, b: float, t: float) -> float:
    # numpy's linear interpolation for percentiles (np.lib's _lerp), the same arithmetic
    d = b - a
    return float(b - d * (1 - t)) if t >= 0.5 else float(a + d * t)


def _percentile(df, col: str, n: int, q: float) -> float:
    vi = (q / 100) * (n - 1)
    i = int(np.floor(vi))
    a, b = _order_stats(df, col, [i, min(i + 1, n - 1)], n)
    return _lerp(a, b, vi - i)


def _window(ev, n: int, window_s: float):
    """`recembed.ingest.window_mask` as column conditions: (keep, late, anchor)."""
    from pyspark.sql import functions as F

    m = max(1, int(n * L.STRAGGLER_SHARE))
    anchor = float(ev.agg(F.max("ts")).collect()[0][0])
    if n > m + 1:
        lo, hi = _percentile(ev, "ts", n, 1), _percentile(ev, "ts", n, 99)
        typical = (hi - lo) / (0.98 * n)
        silence = min(window_s, max(L.DAY, 1000 * typical))
        top = np.sort(np.array([x[0] for x in ev.orderBy(F.desc("ts")).limit(m + 1)
                                .select("ts").collect()], np.float64))
        big = np.flatnonzero(np.diff(top) > silence)
        if big.size:
            anchor = float(top[big[0]])
    late = F.col("ts") > F.lit(anchor)
    return (F.col("ts") > F.lit(anchor - window_s)) & ~late, late, anchor


def _factorize(df, col: str, partitions: int):
    """(DataFrame col -> `col`_code, number of codes): codes 0.. in order of first appearance
    over (file, row), as pd.factorize(sort=False) gives them."""
    from pyspark.sql import functions as F

    first = df.groupBy(col).agg(F.min(F.struct("file", "row")).alias("p")).select(
        col, F.col("p.file").alias("f"), F.col("p.row").alias("r"), F.lit(True).alias("one"))
    coded = io.numbered(first, ["f", "r"], "one", f"{col}_code", partitions)
    coded = coded.select(col, f"{col}_code").persist()
    return coded, coded.count()


def _ascending(df, order: list[str], col: str, partitions: int) -> bool:
    """Whether `col` never decreases along `order` (the local np.diff(ts) >= 0 check), one
    range partition per task: each checks its rows and reports its first and last value."""

    ranged = df.select(*order, col).repartitionByRange(partitions, *order).sortWithinPartitions(
        *order)
    schema = pa.schema([("p", pa.int32()), ("ok", pa.bool_()), ("first", pa.float64()),
                        ("last", pa.float64())])

    def check(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        vals = [b.column(col).to_numpy() for b in batches]
        v = np.concatenate(vals) if vals else np.zeros(0)
        if len(v):
            yield pa.RecordBatch.from_arrays(
                [pa.array([TaskContext.get().partitionId()], pa.int32()),
                 pa.array([bool((np.diff(v) >= 0).all())]), pa.array([float(v[0])]),
                 pa.array([float(v[-1])])], schema=schema)

    got = ranged.mapInArrow(check, io.ddl(schema)).orderBy("p").collect()
    if not all(r["ok"] for r in got):
        return False
    return all(a["last"] <= b["first"] for a, b in itertools.pairwise(got))


def _vocabulary(events, item_codes, n_items: int, scratch) -> pd.DataFrame:
    """`recembed.ingest.item_vocabulary`: per code its id, count and first / last event time."""
    from pyspark.sql import functions as F

    per = events.groupBy("item").agg(F.count(F.lit(1)).alias("count"),
                                     F.min("ts").alias("first_ts"), F.max("ts").alias("last_ts"))
    ids = item_codes.select(F.col("item_code").cast("int").alias("item"),
                            F.col("item").alias("id"))
    t = io.to_arrow(ids.join(per, "item", "left").orderBy("item"), scratch).to_pandas()
    t = t.set_index("item").reindex(range(n_items))
    return pd.DataFrame({
        "code": np.arange(n_items, dtype=np.int32),
        "id": pd.array(pd.Index(t["id"].to_numpy(object)).astype(str), dtype="string"),
        "count": t["count"].fillna(0).to_numpy(np.int64),
        "first_ts": t["first_ts"].fillna(0).to_numpy(np.int64),
        "last_ts": t["last_ts"].fillna(0).to_numpy(np.int64),
    })
