"""The item2vec corpus on Spark: `recembed.sequences.write_session_corpus`, the same bytes.

Each session's copies are drawn from its own stream (a hash of the seed and the session id),
so they do not depend on partitioning. The one global number, the mean weight that scales
`replication * w / mean(w)`, is numpy's mean of the weights in session-id order, computed on the
driver from the collected weight column (8 bytes per session): a Spark sum could differ from
numpy's pairwise sum in the last bit, and move a session across a copy boundary. Lines are
sorted by (round, session) in Spark, written as part files, and streamed into sessions.txt in
order: round r holds every session with more than r copies, as in the local engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from recembed.artifacts import atomic_path
from recembed.corpus import GENSIM_MAX_TOKENS, format_lines, token_table
from recembed.runtime import Runtime
from recembed.sequences import CorpusParams, CorpusStats, session_uniform, token_pieces
from recembed.spark import io
from recembed.spark.session import from_runtime

_LINES = pa.schema([("session", pa.int64()), ("copies", pa.int32()), ("text", pa.binary()),
                    ("lines", pa.int64()), ("tokens", pa.int64())])


def corpus_from_files(sessions_path: str | Path, table_path: str | Path,
                      corpus_path: str | Path, params: CorpusParams,
                      runtime: Runtime) -> CorpusStats:
    """The sequences stage on Spark, with the signature of
    `recembed.sequences.corpus_from_files`: `write_session_corpus` in the run's SparkSession
    (`runtime`), part files in runtime.scratch."""
    return write_session_corpus(from_runtime(runtime), sessions_path, table_path, corpus_path,
                                runtime.scratch, **asdict(params))


def write_session_corpus(
    spark,
    sessions_path: str | Path,
    table_path: str | Path,
    out_path: str | Path,
    scratch: str | Path,
    *,
    replication: float = 1.0,
    seed: int = 0,
    max_tokens: int = GENSIM_MAX_TOKENS,
    min_copies: int = 1,
) -> CorpusStats:
    """Write the session corpus of the sessions_train artifact, replicated by the weights of
    the session table; parameters as `recembed.sequences.write_session_corpus` (plus the
    SparkSession, artifact paths and a scratch folder). Raises ValueError for weights that are
    negative or not finite, or a session without a weight."""
    from pyspark.sql import functions as F

    s = spark.read.parquet(str(sessions_path)).select("session", "item", "pos")
    t = spark.read.parquet(str(table_path)).select("session", "weight")
    ids = s.select("session").distinct()
    joined = ids.join(t, "session", "left")
    w = io.to_arrow(joined.orderBy("session"), scratch)
    wv = w.column("weight").to_numpy(zero_copy_only=False)
    if np.isnan(wv).any():  # a left join's null: no weight
        first = w.column("session").to_numpy()[np.isnan(wv)][0]
        raise ValueError(f"session {first} has no weight in the session table "
                         f"({int(np.isnan(wv).sum())} sessions without one); rebuild the "
                         "sessions")
    if (wv < 0).any() or not np.isfinite(wv).all():
        raise ValueError("session weights must be finite and non-negative")
    mean = wv.mean() if len(wv) else 0.0
    n_items = int(s.agg(F.max("item")).collect()[0][0] or 0) + 1
    per_session = (s.groupBy("session")
                   .agg(F.array_sort(F.collect_list(F.struct("pos", "item"))).alias("x"))
                   .select("session", F.col("x.item").alias("items"))
                   .join(t, "session"))

    def lines(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        table = token_table(n_items)
        for b in batches:
            sess = b.column("session").to_numpy()
            w_ = b.column("weight").to_numpy()
            items = b.column("items")
            flat = items.flatten().to_numpy().astype(np.int64)
            offs = items.offsets.to_numpy().astype(np.int64)
            lens = np.diff(offs)
            # `session_multiplicity` with the global mean: m = replication * w / mean(w)
            m = w_ * (replication / mean) if len(wv) and mean > 0 else w_
            base = np.floor(m)
            extra = session_uniform(seed, sess) < (m - base)
            copies = np.maximum(base + extra, min_copies).astype(np.int32)
            # pieces of at most max_tokens, one line each (gensim truncates longer ones),
            # formatted for the whole batch at once, then cut into one text per session
            piece_starts, piece_sess = token_pieces(offs[:-1], lens, max_tokens)
            buf = format_lines(flat, np.r_[piece_starts, len(flat)], table)
            tok_bytes = table[1][flat].astype(np.int64) + 1  # digits + space or newline
            byte_offs = np.r_[0, np.cumsum(tok_bytes)][offs].astype(np.int32)
            texts = pa.Array.from_buffers(pa.binary(), len(sess),
                                          [None, pa.py_buffer(byte_offs), pa.py_buffer(buf)])
            yield pa.RecordBatch.from_arrays(
                [pa.array(sess, pa.int64()), pa.array(copies, pa.int32()), texts,
                 pa.array(np.bincount(piece_sess, minlength=len(sess)), pa.int64()),
                 pa.array(lens, pa.int64())], schema=_LINES)

    formatted = per_session.mapInArrow(lines, io.ddl(_LINES)).persist()
    st = formatted.agg(F.count(F.lit(1)).alias("n"),
                       F.sum((F.col("copies") == 0).cast("long")).alias("absent"),
                       F.max("copies").alias("maxc"),
                       F.sum(F.col("lines") * F.col("copies")).alias("lines"),
                       F.sum(F.col("tokens") * F.col("copies")).alias("tokens")).collect()[0]
    rounds = (formatted.filter(F.col("copies") > 0)
              .withColumn("round", F.explode(F.sequence(F.lit(0), F.col("copies") - 1)))
              .orderBy("round", "session").select("text"))
    parts = Path(scratch) / "corpus-parts"
    rounds.write.mode("overwrite").parquet(str(parts))
    with atomic_path(out_path) as tmp, open(tmp, "wb") as fh:
        for tab in io.iter_parts(parts):
            for text in tab.column("text").to_pylist():
                fh.write(text)
    formatted.unpersist()
    return CorpusStats(int(st["lines"] or 0), int(st["tokens"] or 0), int(st["n"]),
                       int(st["absent"] or 0), int(st["maxc"] or 0))
