"""The item graph on Spark: edges from window functions over each session, weights summed per
(src, dst) exactly as the local engine sums them.

Why not `groupBy(src, dst).sum(weight)`: float addition is not associative, so a shuffle's
summation order would change the last bits of some float64 sums, and now and then the float32
weight they round to. The local engine sums a row's duplicates in the order scipy sorts the
row's entries (`csr_sort_indices`, per row, from the entries in input order). So Spark emits
each edge with its input position (reversed?, step, session, pos), partitions by src, sorts by
that position, and runs the same scipy code on each partition's rows: every row sees the same
entry sequence, hence the same sums, min_weight cut and heaviest-edges cap (per row, as
`recembed.graph.finish_graph`). The driver assembles the CSR from the rows (it is broadcast to
the walkers anyway: about 12 bytes per edge).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from recembed.graph import GraphParams, finish_graph
from recembed.runtime import Runtime
from recembed.spark import io
from recembed.spark.session import from_runtime

_EDGES = pa.schema([("src", pa.int32()), ("dst", pa.int32()), ("w", pa.float32())])


def build_item_graph(
    spark,
    sessions_path: str | Path,
    table_path: str | Path,
    n_items: int,
    scratch: str | Path,
    *,
    window: int = 1,
    distance_weighting: bool = False,
    directed: bool = False,
    min_weight: float = 0.0,
    max_out_edges: int = 0,
    partitions: int = 0,
) -> sp.csr_matrix:
    """`recembed.graph.build_item_graph` from the sessions_train and session-table artifacts:
    the same CSR (float32 weights, int32 indices, sorted rows), equal bit for bit.

    Parameters are those of the local function (same units and ranges), plus the SparkSession,
    the artifact paths, a scratch folder and `partitions` (by src; 0 =
    spark.sql.shuffle.partitions). Raises ValueError for a session without a weight (or with
    two), or an item code >= n_items, as the local engine does.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if window < 1:
        raise ValueError(f"graph window must be >= 1, got {window}")
    partitions = partitions or int(spark.conf.get("spark.sql.shuffle.partitions"))
    s = spark.read.parquet(str(sessions_path)).select("session", "item", "pos")
    t = spark.read.parquet(str(table_path)).select("session", "weight")
    _check_weights(s, t, n_items)
    s = s.join(t, "session", "left")
    by_session = Window.partitionBy("session").orderBy("pos")
    edges = []
    for d in range(1, window + 1):
        nxt = F.lead("item", d).over(by_session)
        e = s.withColumn("nxt", nxt).filter(F.col("nxt").isNotNull()
                                            & (F.col("nxt") != F.col("item")))
        w = F.col("weight") / d if distance_weighting else F.col("weight")
        e = e.select(F.lit(d).alias("d"), "session", "pos", "item", "nxt", w.alias("w"))
        edges.append(e.select(F.lit(0).alias("rev"), "d", "session", "pos",
                              F.col("item").alias("src"), F.col("nxt").alias("dst"), "w"))
        if not directed:
            edges.append(e.select(F.lit(1).alias("rev"), "d", "session", "pos",
                                  F.col("nxt").alias("src"), F.col("item").alias("dst"), "w"))
    df = edges[0]
    for e in edges[1:]:
        df = df.unionByName(e)
    # the local engine's input order within a row: all forward edges (by step, then position
    # in the sessions file), then all reversed ones
    df = (df.repartition(partitions, "src")
          .sortWithinPartitions("src", "rev", "d", "session", "pos")
          .select("src", "dst", "w"))

    def rows(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        # the whole partition: its rows' edges, each row's in input order
        tab = pa.Table.from_batches(list(batches))
        if tab.num_rows == 0:
            return
        src = tab.column("src").to_numpy()
        dst = tab.column("dst").to_numpy()
        wt = tab.column("w").to_numpy()
        nodes, local = np.unique(src, return_inverse=True)
        g = sp.csr_matrix((wt, (local, dst)), shape=(len(nodes), n_items), dtype=np.float64)
        g = finish_graph(g, min_weight=min_weight, max_out_edges=max_out_edges)
        deg = np.diff(g.indptr)
        yield pa.RecordBatch.from_arrays(
            [pa.array(np.repeat(nodes, deg).astype(np.int32)),
             pa.array(g.indices.astype(np.int32)), pa.array(g.data)], schema=_EDGES)

    out = io.to_arrow(df.mapInArrow(rows, io.ddl(_EDGES)), scratch, _EDGES)
    src = out.column("src").to_numpy()
    dst = out.column("dst").to_numpy()
    wt = out.column("w").to_numpy()
    order = np.lexsort((dst, src))
    indptr = np.r_[0, np.cumsum(np.bincount(src, minlength=n_items))]
    idx_type = np.int32 if len(order) < 2**31 else np.int64
    g = sp.csr_matrix((wt[order].astype(np.float32), dst[order].astype(idx_type),
                       indptr.astype(idx_type)), shape=(n_items, n_items))
    g.has_sorted_indices = True
    return g


def graph_from_files(sessions_path: str | Path, table_path: str | Path, n_items: int,
                     params: GraphParams, runtime: Runtime) -> sp.csr_matrix:
    """The graph stage on Spark, with the signature of `recembed.graph.graph_from_files`:
    `build_item_graph` in the run's SparkSession (`runtime`), part files in runtime.scratch."""
    return build_item_graph(from_runtime(runtime), sessions_path, table_path, n_items,
                            runtime.scratch, **asdict(params))


def _check_weights(s, t, n_items: int) -> None:
    """The errors `recembed.artifacts.session_weights_by_id` and the local build raise."""
    from pyspark.sql import functions as F

    dup = t.groupBy("session").count().filter(F.col("count") > 1).limit(1).collect()
    if dup:
        raise ValueError(f"session {dup[0]['session']} has two weights in the session table")
    missing = s.select("session").distinct().join(t, "session", "left_anti")
    first = missing.orderBy("session").limit(1).collect()
    if first:
        raise ValueError(f"session {first[0]['session']} has no weight in the session table "
                         f"({s.join(missing, 'session').count()} rows without one); rebuild "
                         "the sessions")
    top = s.agg(F.max("item")).collect()[0][0]
    if top is not None and top >= n_items:
        raise ValueError(f"item code {top} >= n_items={n_items}")
