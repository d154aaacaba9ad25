"""Random walks on Spark: the graph's alias tables are broadcast once, and each task runs the
numba kernels of `recembed.walks` over its slice of the start nodes.

Every walk's random stream is derived from (seed, walk index), and a task walks the indices
`lo .. hi-1` of the driver's seeded start order, so the corpus is byte for byte the local
engine's, however the walks are split into tasks. Broadcast cost: the 12-byte edge records
and 8 bytes per node (DeepWalk); node2vec also ships the neighbour list and the weights (8
more bytes per edge) for its rejection test.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from recembed.artifacts import atomic_path
from recembed.graph import load_graph
from recembed.runtime import Runtime
from recembed.spark import io
from recembed.spark.session import from_runtime
from recembed.walks import (
    WalkGraph,
    WalkParams,
    WalkStats,
    capped_starts,
    check_walk_args,
    prepare_graph,
    start_popularity,
    walk_into,
    walk_starts,
)

log = logging.getLogger("recembed")

_TEXT = pa.schema([("chunk", pa.int64()), ("text", pa.binary()), ("lines", pa.int64()),
                   ("tokens", pa.int64()), ("walk_s", pa.float64())])
# walks per task are capped so a task's text (~7 bytes a token) stays a few MB
_TASK_TOKENS = 2_000_000


def walks_from_graph_file(graph_path: str | Path, walks_path: str | Path, params: WalkParams,
                          runtime: Runtime,
                          popularity_path: str | Path | None = None) -> WalkStats:
    """The walks stage on Spark, with the signature of `recembed.walks.walks_from_graph_file`:
    `random_walks` in the run's SparkSession (`runtime`), part files in runtime.scratch."""
    return random_walks(from_runtime(runtime), load_graph(graph_path), walks_path,
                        runtime.scratch, popularity=start_popularity(popularity_path),
                        **asdict(params))


def random_walks(
    spark,
    g: sp.csr_matrix,
    out_path: str | Path,
    scratch: str | Path,
    *,
    method: str = "deepwalk",
    walks_per_node: int = 10,
    walk_length: int = 20,
    p: float = 1.0,
    q: float = 1.0,
    popularity: np.ndarray | None = None,
    seed: int = 0,
    max_tokens: int = 0,
    max_tokens_source: str = "walks.max_tokens",
) -> WalkStats:
    """`recembed.walks.random_walks` on Spark: the same walks.txt, bytes equal.

    Parameters are those of the local function (same meaning and ranges), plus the
    SparkSession and a scratch folder for the tasks' part files. Tasks hold about
    min(2M, walks / default parallelism) tokens each.
    """
    t0 = time.perf_counter()
    check_walk_args(method, walks_per_node, walk_length, p, q)
    wg = prepare_graph(g)
    starts = walk_starts(wg.indptr, walks_per_node, seed, popularity)
    starts = capped_starts(starts, walk_length, max_tokens, max_tokens_source)
    sc = spark.sparkContext
    per_task = max(1, min(_TASK_TOKENS // walk_length,
                          -(-len(starts) // max(1, sc.defaultParallelism))))
    n_tasks = -(-len(starts) // per_task)
    first_order = method == "deepwalk" or (p == 1.0 and q == 1.0)
    arrays = {"indptr": wg.indptr, "records": wg.records, "starts": starts}
    if not first_order:
        arrays.update(indices=wg.indices, weights=wg.weights, row_sum=wg.row_sum,
                      row_max=wg.row_max)
    shared = sc.broadcast(arrays)
    prepare_s = time.perf_counter() - t0

    def walk(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import numba

        from recembed.corpus import format_padded, token_table

        numba.set_num_threads(1)  # one task per core: Spark runs the tasks side by side
        a = shared.value
        empty = np.zeros(0, np.float32)
        graph = WalkGraph(a["indptr"], a.get("indices", empty), a["records"],
                          a.get("weights", empty), a.get("row_sum", empty),
                          a.get("row_max", empty))
        packed, lens = token_table(graph.n)
        for b in batches:
            for c in b.column(0).to_pylist():
                lo = c * per_task
                part = a["starts"][lo:lo + per_task]
                out = np.empty((len(part), walk_length), np.int32)
                t = time.perf_counter()
                walk_into(method, graph, part, seed, lo, p, q, out)
                dt = time.perf_counter() - t
                text, lines, tokens = format_padded(out, packed, lens)
                yield pa.RecordBatch.from_arrays(
                    [pa.array([c], pa.int64()), pa.array([text.tobytes()], pa.binary()),
                     pa.array([lines], pa.int64()), pa.array([tokens], pa.int64()),
                     pa.array([dt], pa.float64())], schema=_TEXT)

    texts = spark.range(n_tasks, numPartitions=max(1, n_tasks)).mapInArrow(walk, io.ddl(_TEXT))
    t1 = time.perf_counter()
    parts = Path(scratch) / "walk-parts"
    texts.write.mode("overwrite").parquet(str(parts))
    t2 = time.perf_counter()
    walks = tokens = 0
    walk_s = 0.0
    with atomic_path(out_path) as tmp, open(tmp, "wb") as fh:
        for tab in io.iter_parts(parts):  # parts in task order = walk order
            tab = tab.sort_by("chunk")
            for text in tab.column("text").to_pylist():
                fh.write(text)
            walks += int(np.sum(tab.column("lines").to_numpy()))
            tokens += int(np.sum(tab.column("tokens").to_numpy()))
            walk_s += float(np.sum(tab.column("walk_s").to_numpy()))
    shared.unpersist()
    secs = time.perf_counter() - t0
    return WalkStats(walks, tokens, secs, tokens / secs if secs else 0.0, prepare_s,
                     walk_s, t2 - t1, time.perf_counter() - t2)
