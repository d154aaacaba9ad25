"""Tables between Spark and the run directory: read an artifact with its row numbers, write a
DataFrame as the one Parquet file (same schema, same pandas metadata) the local engine writes,
and number rows in a global order without moving them to one partition.

The run directory must be visible to the executors under the same path (local mode, or a
shared file system on a cluster): executors read artifacts and write part files there.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recembed import artifacts as A

ROW_GROUP = 1024 * 1024  # rows per row group of pyarrow.parquet.write_table (its default)
_DDL = {pa.int8(): "tinyint", pa.int16(): "smallint", pa.int32(): "int", pa.int64(): "bigint",
        pa.float32(): "float", pa.float64(): "double", pa.string(): "string",
        pa.large_string(): "string", pa.bool_(): "boolean", pa.binary(): "binary"}


def ddl(schema: pa.Schema) -> str:
    """The Spark DDL string of an Arrow schema (for mapInArrow's output)."""
    return ", ".join(f"`{f.name}` {_DDL[f.type]}" for f in schema)


def pandas_schema(dtypes: dict[str, str]) -> pa.Schema:
    """The Arrow schema, with pandas metadata, that `artifacts.write_parquet` gives a DataFrame
    of these column dtypes: a file written with it reads back to the same DataFrame."""
    import pandas as pd

    empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in dtypes.items()})
    return pa.Schema.from_pandas(empty, preserve_index=False)


def read_indexed(spark, path: str | Path, columns: list[str], index: str):
    """A Parquet artifact as a Spark DataFrame of `columns` plus `index` (int64): each row's
    0-based position in the file. One task per row group; offsets come from the footer."""
    path = str(path)
    md = pq.ParquetFile(path).metadata
    sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64).tolist()
    file_schema = pq.read_schema(path)
    out = pa.schema([file_schema.field(c).remove_metadata() for c in columns]
                    + [pa.field(index, pa.int64())])

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        f = pq.ParquetFile(path)
        for b in batches:
            for rg in b.column(0).to_pylist():
                t = f.read_row_group(rg, columns=columns)
                idx = np.arange(offsets[rg], offsets[rg + 1], dtype=np.int64)
                yield from pa.Table.from_arrays([*t.columns, pa.array(idx)],
                                                schema=out).to_batches()

    n = max(1, len(sizes))
    return spark.range(len(sizes), numPartitions=n).mapInArrow(read, ddl(out))


def write_single(df, path: str | Path, schema: pa.Schema, scratch: str | Path) -> int:
    """Write a DataFrame as one Parquet file at `path` (atomically), rows in partition order
    (so an `orderBy` before it sets the row order), columns cast to `schema`. Returns rows.

    Spark writes part files into `scratch`; the driver streams them, part by part, into the
    single file the local engine writes, so the downstream stages read the same artifact."""
    parts_dir = Path(scratch) / f"parts-{uuid.uuid4().hex[:8]}"
    df.select(*schema.names).write.mode("overwrite").parquet(str(parts_dir))
    try:
        return merge_parts(parts_dir, path, schema)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)


def merge_parts(parts_dir: str | Path, path: str | Path, schema: pa.Schema,
                keep=None) -> int:
    """Concatenate the Parquet part files of a Spark output folder, in part order, into one file
    with `schema` (of the rows `keep(table)` selects, when given); returns the rows written.

    Row groups hold ROW_GROUP rows, as `pyarrow.parquet.write_table` (the local engine's writer)
    makes them, so the file is byte for byte the local engine's for the same rows."""
    rows = 0
    buf: list[pa.Table] = []
    with A.atomic_path(path) as tmp:
        writer = None
        try:
            for t in iter_parts(parts_dir):
                if keep is not None:
                    t = t.filter(keep(t))
                buf.append(pa.Table.from_arrays([t.column(n).cast(f.type) for n, f in
                                                 zip(schema.names, schema, strict=True)],
                                                schema=schema))
                rows += t.num_rows
                while sum(b.num_rows for b in buf) >= ROW_GROUP:
                    whole = pa.concat_tables(buf)
                    writer = writer or pq.ParquetWriter(tmp, schema)
                    # contiguous columns: chunk boundaries would move the data pages
                    writer.write_table(whole.slice(0, ROW_GROUP).combine_chunks(),
                                       row_group_size=ROW_GROUP)
                    buf = [whole.slice(ROW_GROUP)]
            rest = pa.concat_tables(buf).combine_chunks() if buf else schema.empty_table()
            if writer is None:  # everything fits one group (or nothing): write_table's layout
                pq.write_table(rest, tmp)
            elif rest.num_rows:
                writer.write_table(rest, row_group_size=ROW_GROUP)
        finally:
            if writer is not None:
                writer.close()
    return rows


def iter_parts(parts_dir: str | Path, schema: pa.Schema | None = None) -> Iterator[pa.Table]:
    """The part files of a Spark output folder as Arrow tables, in part (partition) order."""
    for p in sorted(Path(parts_dir).glob("part-*")):
        t = pq.read_table(p)
        if schema is not None:
            t = pa.Table.from_arrays([t.column(n).cast(f.type) for n, f in
                                      zip(schema.names, schema, strict=True)], schema=schema)
        if t.num_rows:
            yield t


def to_arrow(df, scratch: str | Path, schema: pa.Schema | None = None) -> pa.Table:
    """A (small) DataFrame on the driver as one Arrow table, through part files (no row
    objects), in partition order."""
    parts_dir = Path(scratch) / f"small-{uuid.uuid4().hex[:8]}"
    df.write.mode("overwrite").parquet(str(parts_dir))
    try:
        tables = list(iter_parts(parts_dir, schema))
        if not tables:
            return (schema or _spark_arrow_schema(df)).empty_table()
        return pa.concat_tables(tables)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)


def numbered(df, order: list[str], flag: str, out: str, partitions: int):
    """Add `out` = (number of rows with `flag` true up to and including this row, in the global
    order `order`) - 1: a global running count, e.g. session ids from session-start flags.

    The rows are range-partitioned by `order` and sorted within partitions; one job counts the
    flags per partition, and a second adds the partition's offset to a running count inside it.
    No partition ever holds more than its range (a window without partitionBy would move every
    row to one task). Returns the (persisted) DataFrame, globally sorted by `order`.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    ranged = df.repartitionByRange(partitions, *order).sortWithinPartitions(*order)
    ranged = ranged.persist(StorageLevel.MEMORY_AND_DISK)
    counts = dict(ranged.groupBy(F.spark_partition_id().alias("p"))
                  .agg(F.sum(F.col(flag).cast("long")).alias("n")).collect())
    n_parts = ranged.rdd.getNumPartitions()
    offsets = np.r_[0, np.cumsum([int(counts.get(p) or 0) for p in range(n_parts)])].tolist()
    schema = _spark_arrow_schema(ranged)
    out_schema = schema.append(pa.field(out, pa.int64()))

    def number(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        running = offsets[TaskContext.get().partitionId()]
        for b in batches:
            f = b.column(flag).to_numpy(zero_copy_only=False).astype(np.int64)
            c = running + np.cumsum(f) - 1
            running += int(f.sum())
            yield pa.RecordBatch.from_arrays([*b.columns, pa.array(c, pa.int64())],
                                             schema=out_schema)

    return ranged.mapInArrow(number, ddl(out_schema))


def _spark_arrow_schema(df) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(df.schema)
