"""Sessionize on Spark: the rules of `recembed.sessions.sessionize`, per event as window
functions over (entity, ts, event row), the population statistics exact on the driver.

Parity with the local engine, rule by rule:

- Order: by (entity, ts, row in the events table): the local engine's stable sort, ties in
  input order.
- Bots: the population statistics (median and MAD of log10 of each entity's busiest day, and of
  its median gap) are computed on the driver from *histograms* (distinct value -> entities),
  a few thousand rows whatever the log's size, with numpy exactly as `robust_z` does; a rule
  is monotone in its value, so it reduces to one threshold that Spark applies to every entity.
  Spark's own log10 and medians could differ from numpy's in the last bit; these cannot.
- Repeats, gaps, `auto_gap`, the length cap, short sessions: window functions (lag, running
  sums) over the same order; shares are integer counts divided on the driver.
- Session ids: a global running count of session starts in (entity, ts, row) order
  (`io.numbered`), contiguous 0..S-1 as in the local engine.
- Holdout, validation (the most recent training sessions by end time, ties by id) and weights:
  weights are `recembed.sessions.session_weights` itself, applied to each batch of the session
  table in a Python worker (Spark's exp2 could round differently).

Outputs are written as the local engine's files (`io.write_single`): sessions_train /
sessions_test ordered by (session, pos), the session table ordered by session.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recembed.runtime import Runtime
from recembed.sessions import (
    DAY,
    DataLossError,
    SessionParams,
    choose_gap,
    nothing_left_message,
    session_weights,
    short_sessions_warning,
    too_many_bots_message,
    validation_count,
)
from recembed.spark import io
from recembed.spark.session import from_runtime

TRAIN_DTYPES = {"session": "int64", "item": "int32", "ts": "int64", "pos": "int32",
                "event": "int32"}
TABLE_DTYPES = {"session": "int64", "user": "int32", "start": "int64", "end": "int64",
                "length": "int32", "weight": "float64", "split": "int8"}


def sessionize_files(events_path: str | Path, train_path: str | Path, test_path: str | Path,
                     table_path: str | Path, params: SessionParams, runtime: Runtime) -> dict:
    """The sessionize stage on Spark, with the signature of
    `recembed.sessions.sessionize_files`: `sessionize` in the run's SparkSession (`runtime`),
    part files in runtime.scratch."""
    return sessionize(from_runtime(runtime), events_path, train_path, test_path, table_path,
                      runtime.scratch, **asdict(params))


def sessionize(
    spark,
    events_path: str | Path,
    out_train: str | Path,
    out_test: str | Path,
    out_table: str | Path,
    scratch: str | Path,
    *,
    gap_minutes: float = 30.0,
    max_length: int = 200,
    min_length: int = 2,
    collapse_repeats: bool = True,
    half_life_days: float = 7.0,
    holdout_days: float = 1.0,
    bots: bool = True,
    max_events_per_day: int = 1000,
    min_median_gap_s: float = 1.0,
    min_events_for_gap_rule: int = 20,
    bot_outlier_z: float = 3.5,
    bot_max_share: float = 0.25,
    auto_gap: bool = True,
    max_short_share: float = 0.25,
    validation_share: float = 0.1,
    validation_min_sessions: int = 1000,
    validation_max_sessions: int = 20_000,
    partitions: int = 0,
) -> dict:
    """Write sessions_train, sessions_test and the session table from an events artifact;
    returns the statistics `recembed.sessions.sessionize` returns (same keys, same values).

    Parameters are those of `recembed.sessions.sessionize` (same units and ranges), plus the
    SparkSession, the file paths, a scratch folder for part files, and `partitions` (range
    partitions for the global numbering; 0 = spark.sql.shuffle.partitions). Raises
    DataLossError (and ValueError for gap mode without users) as the local engine does.
    """
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    partitions = partitions or int(spark.conf.get("spark.sql.shuffle.partitions"))
    import pyarrow.parquet as pq

    have = pq.read_schema(str(events_path)).names
    supplied = "session" in have
    cols = ["user", "item", "ts", *(["session"] if supplied else []),
            *(["split"] if "split" in have else [])]
    ev = io.read_indexed(spark, events_path, cols, "ev")
    if "split" not in have:
        ev = ev.withColumn("split", F.lit(0).cast("tinyint"))
    stats: dict = {"warnings": []}
    first = ev.agg(F.count(F.lit(1)).alias("n"), F.min("user").alias("user"),
                   F.max("split").alias("split")).collect()[0]
    n0 = int(first["n"])
    if not supplied and n0 and first["user"] < 0:
        raise ValueError(
            "events without a user id cannot be sessionized by gap: map a session column "
            "([input.columns] session = ...) or a user column"
        )
    any_test = n0 > 0 and first["split"] == 1
    key = F.col("session") if supplied else F.col("user").cast("long")
    ev = ev.withColumn("key", key).drop("session")
    # one shuffle by entity; every window below partitions by it and orders the same way
    ev = ev.repartition(partitions, "key").persist(StorageLevel.MEMORY_AND_DISK)
    w = Window.partitionBy("key").orderBy("ts", "ev")
    ev = (ev.withColumn("rn", F.row_number().over(w))
          .withColumn("prev_item", F.lag("item").over(w))
          .withColumn("prev_ts", F.lag("ts").over(w)))

    # ---- bot filter on the entity (user, or supplied session)
    stats["bot_entities"] = 0
    bot_col = F.lit(False)
    if bots and n0:
        flags, rules = _bot_entities(ev, n0, max_events_per_day, min_median_gap_s,
                                     min_events_for_gap_rule, bot_outlier_z)
        stats.update(rules.pop("stats"))
        stats.update(rules)
        if stats["bot_event_share"] > bot_max_share:
            raise DataLossError(too_many_bots_message(stats, n0, bot_max_share))
        if flags is not None:
            ev = ev.join(F.broadcast(flags) if stats["bot_entities"] < 1_000_000 else flags,
                         "key", "left")
            bot_col = F.coalesce(F.col("bot"), F.lit(False))
    stats.setdefault("bot_events", 0)
    ev = ev.withColumn("bot", bot_col)

    gap_s = gap_minutes * 60
    rep = F.lit(False)
    if collapse_repeats and n0:
        # an immediate repeat (same entity, same item, within the gap) is one view
        rep = F.col("prev_item").isNotNull() & (F.col("item") == F.col("prev_item"))
        if not supplied:
            rep = rep & ((F.col("ts") - F.col("prev_ts")) <= F.lit(float(gap_s)))
    counts = ev.agg(F.sum((rep & ~F.col("bot")).cast("long")).alias("rep"),
                    F.sum((~(F.col("bot") | rep)).cast("long")).alias("kept")).collect()[0]
    if collapse_repeats and n0:
        stats["repeats_collapsed"] = int(counts["rep"] or 0)
    n_kept = int(counts["kept"] or 0)
    kept = (ev.filter(~(F.col("bot") | rep))
            .select("key", "user", "item", "ts", "ev", "split")
            .persist(StorageLevel.MEMORY_AND_DISK))
    kept = (kept.withColumn("rn", F.row_number().over(w))
            .withColumn("d", F.col("ts") - F.lag("ts").over(w))
            .withColumn("n_ent", F.count(F.lit(1)).over(Window.partitionBy("key"))))

    stats["gap_minutes"] = gap_minutes
    if not supplied and n_kept:
        gap_s = choose_gap(_short_shares(kept, n_kept, min_length), gap_s, max_short_share,
                           auto_gap, stats)
    start = (F.col("rn") == 1) if supplied else ((F.col("rn") == 1) |
                                                (F.col("d") > F.lit(float(gap_s))))
    s_start, s_len = _session_bounds(start)
    kept = (kept.withColumn("g_start", s_start).withColumn("g_len", s_len)
            .withColumn("g_pos", F.col("rn") - F.col("g_start")))
    # the length cap: consecutive chunks of at most max_length events
    kept = (kept.withColumn("chunk", F.floor(F.col("g_pos") / max_length))
            .withColumn("pos", (F.col("g_pos") % max_length).cast("int"))
            .withColumn("c_len", F.least(F.lit(max_length),
                                         F.col("g_len") - F.col("chunk") * max_length)))
    agg = kept.agg(
        F.sum(((F.col("pos") == 0) & (F.col("g_pos") > 0)).cast("long")).alias("split_by_cap"),
        F.sum((F.col("pos") == 0).cast("long")).alias("total"),
        F.sum(((F.col("pos") == 0) & (F.col("c_len") < min_length)).cast("long")).alias("short"),
        F.sum((F.col("c_len") < min_length).cast("long")).alias("short_events"),
    ).collect()[0]
    ev.unpersist()  # kept is materialized now
    stats["sessions_split_by_cap"] = int(agg["split_by_cap"] or 0)
    stats["sessions_total"] = int(agg["total"] or 0)
    stats["sessions_too_short"] = int(agg["short"] or 0)
    stats["events_in_short_sessions"] = int(agg["short_events"] or 0)
    if n_kept and stats["events_in_short_sessions"] / n_kept > max_short_share:
        stats["warnings"].append(short_sessions_warning(min_length,
                                                stats["events_in_short_sessions"] / n_kept))
    rows = (kept.filter(F.col("c_len") >= min_length)
            .select("key", "ts", "ev", "user", "item", "split", "pos",
                    (F.col("pos") == 0).alias("first")))
    if stats["events_in_short_sessions"] == n_kept:
        raise DataLossError(nothing_left_message(stats, n0, min_length))
    # contiguous session ids 0..S-1 in (entity, ts, row) order
    rows = io.numbered(rows, ["key", "ts", "ev"], "first", "session", partitions)
    rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
    kept.unpersist()

    table = rows.groupBy("session").agg(
        F.min_by("user", "pos").alias("user"), F.min("ts").alias("start"),
        F.max("ts").alias("end"), F.count(F.lit(1)).cast("int").alias("length"),
        F.max("split").alias("split_in")).persist(StorageLevel.MEMORY_AND_DISK)
    top = table.agg(F.max("end").alias("end"), F.count(F.lit(1)).alias("n")).collect()[0]
    n_sessions = int(top["n"])
    if any_test:
        table = table.withColumn("split", (F.col("split_in") == 1).cast("tinyint"))
    else:
        cutoff = float(np.int64(top["end"]) - holdout_days * DAY)
        table = table.withColumn(
            "split", ((F.col("end") > F.lit(cutoff)) & F.lit(holdout_days > 0)).cast("tinyint"))
    table = _mark_validation(table, validation_share, validation_min_sessions,
                             validation_max_sessions)
    table = table.persist(StorageLevel.MEMORY_AND_DISK)
    refs = table.agg(F.max(F.when(F.col("split") != 1, F.col("end"))).alias("train"),
                     F.max("end").alias("all")).collect()[0]
    ref = refs["train"] if refs["train"] is not None else refs["all"]
    table = _weighted(table, float(np.int64(ref)), half_life_days)
    table = table.persist(StorageLevel.MEMORY_AND_DISK)
    t = table.agg(
        F.sum((F.col("split") != 1).cast("long")).alias("train"),
        F.sum((F.col("split") == 1).cast("long")).alias("test"),
        F.sum((F.col("split") == 2).cast("long")).alias("val"),
        F.sum(F.when(F.col("split") != 1, F.col("weight"))).alias("w1"),
        F.sum(F.when(F.col("split") != 1, F.col("weight") ** 2)).alias("w2"),
        F.sum("length").alias("events"),
        F.sum(F.when(F.col("split") == 1, F.col("length"))).alias("test_events")).collect()[0]
    # a summary number only (no artifact depends on it): Spark's sum order may differ from
    # numpy's pairwise sum in the last bits
    stats["effective_sessions"] = float(t["w1"] ** 2 / t["w2"]) if t["w2"] else 0.0

    splits = table.select("session", "split")
    out = rows.drop("split").join(splits, "session").select(
        "session", "item", "ts", "pos", F.col("ev").alias("event"), "split")
    dtypes = dict(TRAIN_DTYPES, event="int32" if n0 < 2**31 else "int64")
    schema = io.pandas_schema(dtypes)
    # one sorted pass writes both; the driver splits the parts into the two files
    parts = Path(scratch) / "session-parts"
    out.orderBy("session", "pos").write.mode("overwrite").parquet(str(parts))
    train_rows = io.merge_parts(parts, out_train, schema,
                                lambda t: pc.not_equal(t.column("split"), 1))
    test_rows = io.merge_parts(parts, out_test, schema, lambda t: pc.equal(t.column("split"), 1))
    io.write_single(table.orderBy("session"), out_table, io.pandas_schema(TABLE_DTYPES), scratch)
    for df in (rows, table):
        df.unpersist()
    stats.update(
        events_in=n0, events_kept=int(t["events"]), sessions=n_sessions,
        train_sessions=int(t["train"]), holdout_sessions=int(t["test"]),
        validation_sessions=int(t["val"]),
        train_events=train_rows, holdout_events=test_rows,
        mean_session_length=float(int(t["events"]) / n_sessions) if n_sessions else 0.0,
    )
    return stats


# ---------------------------------------------------------------- helpers


def _bot_entities(ev, n0: int, max_per_day: int, min_median_gap: float, min_events: int,
                  z: float):
    """(DataFrame key -> bot of the bot entities or None, rule counts and stats): the rules of
    `recembed.sessions.bot_rows`, thresholds from exact population histograms."""
    from pyspark.sql import functions as F

    # whole days as the local engine's ts // DAY (floor, also for negative times)
    day = (F.col("ts") - F.pmod(F.col("ts"), F.lit(DAY))) / F.lit(DAY)
    per_day = ev.groupBy("key", day.cast("long").alias("day")).count()
    ent = per_day.groupBy("key").agg(F.max("count").alias("max_daily"),
                                     F.sum("count").alias("n"))
    gaps = (ev.filter(F.col("prev_ts").isNotNull())
            .withColumn("gap", (F.col("ts") - F.col("prev_ts")).cast("double")))
    med = gaps.groupBy("key").agg(F.expr("percentile(gap, 0.5)").alias("med"))
    ent = ent.join(med, "key", "left").persist()
    hist_daily = ent.groupBy("max_daily").count().toPandas()
    lv = np.log10(hist_daily["max_daily"].to_numpy().astype(np.float64))
    volume_vals = hist_daily["max_daily"].to_numpy()[
        (hist_daily["max_daily"].to_numpy() > max_per_day)
        & (_hist_robust_z(lv, lv, hist_daily["count"].to_numpy()) > z)]
    # the population of the gap rule: entities with 3+ events
    hist_med = ent.filter(F.col("n") >= 3).groupBy("med").count().toPandas()
    gap_t = None
    if len(hist_med):
        m = hist_med["med"].to_numpy(np.float64)
        lg = np.log10(np.maximum(m, 0.01))
        low = -_hist_robust_z(lg, lg, hist_med["count"].to_numpy()) > z
        hit = m[low & (m < min_median_gap)]
        gap_t = float(hit.max()) if len(hit) else None
    # both rules are monotone in their value: one threshold each
    volume = (F.col("max_daily") >= int(volume_vals.min())) if len(volume_vals) else F.lit(False)
    gap_bot = ((F.col("med") <= F.lit(gap_t)) & (F.col("n") >= 3) & (F.col("n") >= min_events)
               if gap_t is not None else F.lit(False))
    flagged = ent.select("key", "n", volume.alias("volume"), gap_bot.alias("gap_bot"))
    flagged = flagged.filter(F.col("volume") | F.col("gap_bot")).persist()
    r = flagged.agg(F.count(F.lit(1)).alias("ents"), F.sum("n").alias("events"),
                    F.sum(F.when(F.col("volume"), F.col("n"))).alias("vol"),
                    F.sum(F.when(F.col("gap_bot") & ~F.col("volume"), F.col("n"))).alias("gap")
                    ).collect()[0]
    ent.unpersist()
    bot_events = int(r["events"] or 0)
    rules = {"bot_events_volume_rule": int(r["vol"] or 0),
             "bot_events_gap_rule": int(r["gap"] or 0),
             "stats": {"bot_entities": int(r["ents"] or 0), "bot_events": bot_events,
                       "bot_event_share": bot_events / n0 if n0 else 0.0}}
    if not r["ents"]:
        flagged.unpersist()
        return None, rules
    return flagged.select("key", F.lit(True).alias("bot")), rules


def _hist_median(values: np.ndarray, counts: np.ndarray) -> float:
    """np.median of the array holding each value `counts` times, from the histogram: the mean
    of the two middle elements (numpy's own arithmetic on them)."""
    order = np.argsort(values, kind="stable")
    v, c = values[order], np.cumsum(counts[order])
    n = int(c[-1])
    lo = v[np.searchsorted(c, (n - 1) // 2 + 1)]
    hi = v[np.searchsorted(c, n // 2 + 1)]
    return float(np.mean(np.array([lo, hi]))) if n % 2 == 0 else float(lo)


def _hist_robust_z(x: np.ndarray, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """`recembed.sessions.robust_z(x, population)` with the population as a histogram."""
    med = _hist_median(values, counts)
    mad = max(_hist_median(np.abs(values - med), counts), 0.1)
    return 0.6745 * (x - med) / mad


def _session_bounds(start):
    """(1-based row of the session's first event within the entity, session length) for a
    session-start flag, as windows over (entity, ts, row)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    run = Window.partitionBy("key").orderBy("ts", "ev").rowsBetween(
        Window.unboundedPreceding, Window.currentRow)
    ahead = Window.partitionBy("key").orderBy("ts", "ev").rowsBetween(1, Window.unboundedFollowing)
    first = F.max(F.when(start, F.col("rn"))).over(run)
    nxt = F.min(F.when(start, F.col("rn"))).over(ahead)
    last = F.coalesce(nxt - 1, F.col("n_ent"))
    return first, last - first + 1


def _short_shares(kept, n: int, min_length: int):
    """`recembed.sessions.choose_gap`'s share function: the share of events in short sessions
    per candidate gap, all candidates in one pass."""
    from pyspark.sql import functions as F

    def shares(gaps: list[float]) -> list[float]:
        # window columns first, then one aggregate over them (Spark forbids windows inside
        # aggregates); every candidate shares the one sort by (entity, ts, row)
        cols = [f"s{i}" for i in range(len(gaps))]
        flags = kept.select(*[_win_col(g, min_length).alias(c) for g, c in
                              zip(gaps, cols, strict=True)])
        row = flags.agg(*[F.sum(c).alias(c) for c in cols]).collect()[0]
        return [int(row[c] or 0) / n for c in cols]

    return shares


def _win_col(g: float, min_length: int):
    from pyspark.sql import functions as F

    start = (F.col("rn") == 1) | (F.col("d") > F.lit(float(g)))
    _, length = _session_bounds(start)
    return (length < min_length).cast("long")


def _mark_validation(table, share: float, least: int, cap: int):
    """`recembed.sessions.mark_validation`: split = 2 for the most recent training sessions
    (by end time, ties by session id: the local stable sort)."""
    from pyspark.sql import functions as F

    n_train = table.filter(F.col("split") == 0).count()
    n_val = validation_count(n_train, share, least, cap)
    if n_val == 0:
        return table
    last = (table.filter(F.col("split") == 0).orderBy(F.desc("end"), F.desc("session"))
            .limit(n_val).agg(F.min(F.struct("end", "session")).alias("b")).collect()[0]["b"])
    e0, s0 = int(last["end"]), int(last["session"])
    val = (F.col("split") == 0) & ((F.col("end") > e0) |
                                   ((F.col("end") == e0) & (F.col("session") >= s0)))
    return table.withColumn("split", F.when(val, F.lit(2)).otherwise(F.col("split"))
                            .cast("tinyint"))


def _weighted(table, ref: float, half_life_days: float):
    """The session table with `weight` = `recembed.sessions.session_weights` of each batch."""
    schema = pa.schema([("session", pa.int64()), ("user", pa.int32()), ("start", pa.int64()),
                        ("end", pa.int64()), ("length", pa.int32()), ("weight", pa.float64()),
                        ("split", pa.int8())])
    cols = ["session", "user", "start", "end", "length", "split"]

    def weigh(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for b in batches:
            end = b.column("end").to_numpy(zero_copy_only=False)
            w = session_weights(end, ref, half_life_days)
            yield pa.RecordBatch.from_arrays(
                [b.column("session"), b.column("user").cast(pa.int32()), b.column("start"),
                 b.column("end"), b.column("length").cast(pa.int32()), pa.array(w, pa.float64()),
                 b.column("split").cast(pa.int8())], schema=schema)

    return table.select(*cols).mapInArrow(weigh, io.ddl(schema))
