"""The Spark engine (`run.engine = "spark"`, recembed/spark/) against the local engine: the same
artifacts, equal for the same seed, on both shared samples and on a synthetic log with bad rows;
the same errors and exit codes on bad input; the `[spark]` settings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recembed import artifacts as A
from recembed.config import ConfigError, load_config
from recembed.graph import load_graph
from recembed.pipeline import EXIT_BAD_INPUT, PipelineError, run_pipeline
from recembed.stages import STAGES
from tests.conftest import ROOT

TABLES = (A.QUARANTINE, A.EVENTS, A.VOCABULARY, A.CATEGORIES, A.SESSIONS_TRAIN, A.SESSIONS_TEST,
          A.SESSION_TABLE)
# heavy stages only; calibration off: it trains models and has nothing to do with the engine
HEAVY = ["walks.enabled=true", "sequences.enabled=true", "calibrate.enabled=false",
         "run.progress=false"]
# timings, and one summary number that Spark sums in another order (no artifact depends on it)
NOT_COMPARED = {"seconds", "steps_per_s", "prepare_s", "walk_s", "format_s", "write_wait_s",
                "effective_sessions", "files"}


def _both(tmp, config, overrides, stages=("walks", "sequences")):
    """Run `stages` (and what they need) with each engine: {engine: RunReport or the
    PipelineError it raised}."""
    out = {}
    for engine in ("local", "spark"):
        cfg = load_config(config, [*overrides, f"run.engine={engine}",
                                   f"run.runs_dir='{tmp / 'runs'}'"])
        try:
            out[engine] = run_pipeline(cfg, tmp / engine, plan=STAGES, stages=list(stages),
                                       echo=lambda s: None)
        except PipelineError as e:
            out[engine] = e
    return out


def _assert_same_artifacts(tmp, reports):
    local, spark = tmp / "local", tmp / "spark"
    for art in TABLES:
        want, got = pd.read_parquet(art.path(local)), pd.read_parquet(art.path(spark))
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=art.name)
    g0, g1 = load_graph(A.GRAPH.path(local)), load_graph(A.GRAPH.path(spark))
    for k in ("indptr", "indices", "data"):
        a, b = getattr(g0, k), getattr(g1, k)
        assert a.dtype == b.dtype and np.array_equal(a, b), f"graph {k}"
    for art in (*TABLES, A.GRAPH, A.WALKS, A.SESSION_CORPUS):  # the files, byte for byte
        assert A.sha256(art.path(spark)) == A.sha256(art.path(local)), art.name
    for name, st in reports["local"].stages.items():
        want = {k: v for k, v in st["stats"].items() if k not in NOT_COMPARED}
        got = {k: v for k, v in reports["spark"].stages[name]["stats"].items()
               if k not in NOT_COMPARED}
        assert got == want, name
    eff = [r.stages["sessionize"]["stats"]["effective_sessions"] for r in reports.values()]
    assert eff[0] == pytest.approx(eff[1], rel=1e-12)


# The samples run with the slow tests (CI runs them too, `make test-slow`): every Spark run
# costs ~15-30 s of job scheduling on 2 shared cores, so the fast suite keeps the synthetic
# log (which exercises the most rules) and the bad-input cases
@pytest.mark.slow
@pytest.mark.parametrize("sample", ["yoochoose", "diginetica"])
def test_both_samples_give_the_same_artifacts_on_spark(spark, tmp_path, sample):
    reports = _both(tmp_path, ROOT / "pipelines" / f"{sample}.toml", HEAVY)
    _assert_same_artifacts(tmp_path, reports)
    # the samples exercise what they should: yoochoose's explicit test file and fractional
    # seconds (re-sorted by exact time), diginetica's supplied sessions with absent users
    ev = pd.read_parquet(A.EVENTS.path(tmp_path / "spark"))
    assert (ev["split"] == 1).any() if sample == "yoochoose" else (ev["user"] == -1).any()
    assert pd.read_parquet(A.SESSION_TABLE.path(tmp_path / "spark"))["split"].eq(2).any()


@pytest.mark.slow  # ~3 min on 2 cores (every stage on Spark, then locally)
def test_a_synthetic_log_with_bad_rows_gives_the_same_artifacts_on_spark(spark, synth_csv,
                                                                         tmp_path):
    """Bots, auto gap, the length cap, a rolling window with a straggler, far and unparseable
    timestamps, an empty item id, a short line, node2vec and a windowed, capped graph."""
    log = tmp_path / "clicks.csv"
    lines = synth_csv.read_text().splitlines()
    header, body = lines[0], lines[1:]
    cols = header.split(",")
    u, i, t = cols.index("user_id"), cols.index("item_id"), cols.index("timestamp")
    ts = [int(pd.Timestamp(r.split(",")[t]).timestamp()) for r in body]

    def row(user, item, when):
        f = [""] * len(cols)
        f[u], f[i], f[t] = user, item, when
        return ",".join(f)

    iso = lambda s: pd.Timestamp(s, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    bad = [row("u1", "", iso(ts[0])), row("u1", "i1", "yesterday"),
           row("u2", "i2", "2200-01-01T00:00:00Z"), row("u3", "i3", iso(max(ts) + 40 * 86_400)),
           "u4,i4"]
    for k, b in enumerate(bad):
        body.insert(100 + 997 * k, b)
    # a crawler: 1500 views one second apart two days before the end (the daily-volume rule)
    body += [row("crawler", f"c{k % 50}", iso(max(ts) - 2 * 86_400 + k)) for k in range(1500)]
    log.write_text("\n".join([header, *body]) + "\n")
    over = [*HEAVY, f"input.paths=['{log}']", "input.categories_path=''",
            "ingest.window_days=20", "ingest.max_bad_fraction=0.01", "session.max_length=6",
            "graph.window=2", "graph.distance_weighting=true", "graph.max_out_edges=8",
            "walks.method='node2vec'", "walks.p=0.5", "walks.q=2.0", "walks.walks_per_node=2",
            "sequences.replication=2.0"]
    reports = _both(tmp_path, None, over)
    _assert_same_artifacts(tmp_path, reports)
    quar = pd.read_parquet(A.QUARANTINE.path(tmp_path / "spark"))
    assert len(quar) >= len(bad)
    for reason in ("empty item id", "unparseable timestamp", "implausible timestamp",
                   "straggler timestamp", "wrong column count"):
        assert quar["reason"].str.contains(reason).any(), reason
    st = reports["spark"].stages["sessionize"]["stats"]
    assert st["bot_entities"] > 0 and st["sessions_split_by_cap"] > 0


def _clicks_csv(path, rows):
    path.write_text("user_id,item_id,timestamp\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    return path


def _normal_users(n=60, per=8, t0=1_700_000_000):
    return [(f"u{k}", f"i{(k * 7 + j) % 23}", t0 + k * 3600 + j * 90)
            for k in range(n) for j in range(per)]


@pytest.mark.slow  # a Spark job per case; with the others, the fast suite starts no JVM
@pytest.mark.parametrize("case", ["too_many_bad_rows", "missing_column", "missing_file",
                                  "bots_over_max_share"])
def test_bad_input_gets_the_same_error_and_exit_code_on_spark(spark, tmp_path, case):
    rows = _normal_users()
    stages = ["ingest"]
    extra = []
    if case == "too_many_bad_rows":  # 10% in milliseconds: quarantined, then the stop
        rows = [(a, b, c * 1000 if k % 10 == 3 else c) for k, (a, b, c) in enumerate(rows)]
    elif case == "bots_over_max_share":  # one user clicking every 0.5 s for hours
        rows += [("bot", f"i{k % 5}", 1_700_100_000 + k // 2) for k in range(6000)]
        stages = ["sessionize"]
    p = _clicks_csv(tmp_path / "clicks.csv", rows)
    if case == "missing_column":
        extra = ["input.columns.ts='time'"]
    if case == "missing_file":
        p = tmp_path / "absent.csv"
    over = [*HEAVY, f"input.paths=['{p}']", "input.categories_path=''", *extra]
    res = _both(tmp_path, None, over, stages)
    local, sp = res["local"], res["spark"]
    assert isinstance(local, PipelineError) and isinstance(sp, PipelineError), res
    assert sp.exit_code == local.exit_code == EXIT_BAD_INPUT
    assert str(sp).replace(str(tmp_path / "spark"), "RUN") == str(local).replace(
        str(tmp_path / "local"), "RUN")
    if case == "too_many_bad_rows":
        pd.testing.assert_frame_equal(pd.read_parquet(A.QUARANTINE.path(tmp_path / "spark")),
                                      pd.read_parquet(A.QUARANTINE.path(tmp_path / "local")))
        assert len(pd.read_parquet(A.QUARANTINE.path(tmp_path / "spark"))) == len(rows) // 10


def test_the_spark_settings_are_checked_at_load_and_reach_the_session(monkeypatch):
    from recembed import config as C
    from recembed.spark import session as S

    for bad, key in (("spark.master='local-2'", "spark.master"),
                     ("spark.conf={executor_memory='4g'}", "spark.conf")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(None, [bad])
    monkeypatch.setattr(C, "_has_pyspark", lambda: False)
    with pytest.raises(ConfigError, match=r"run\.engine.*recembed\[spark\]"):
        load_config(None, ["run.engine=spark"])
    monkeypatch.undo()
    cfg = load_config(ROOT / "pipelines" / "spark.toml",
                      ["spark.conf={\"spark.executor.memory\"='3g'}", "spark.master='local[3]'"])
    assert cfg.run.engine == "spark" and cfg.input.paths == load_config(
        ROOT / "pipelines" / "nightly.toml").input.paths  # the nightly job, included
    seen = {}
    monkeypatch.setattr(S, "spark_session", lambda master, conf, app_name: seen.update(
        master=master, conf=conf, app=app_name))
    S.from_config(cfg)
    assert seen == {"master": "local[3]", "conf": {"spark.executor.memory": "3g"},
                    "app": "recembed-spark"}


@pytest.mark.slow  # needs the SparkSession fixture (a JVM start)
def test_a_running_session_is_reused_with_local_defaults(spark):
    from recembed.spark.session import spark_session

    assert spark_session("local[7]") is spark  # spark-submit's session wins over [spark]
    assert spark.conf.get("spark.driver.bindAddress") == "127.0.0.1"
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"


@pytest.mark.slow
def test_the_spark_nightly_job_publishes_the_local_engines_vectors(spark, tmp_path):
    """`recembed run pipelines/spark.toml` on the bundled sample publishes the same version
    (same vectors) as the local engine, with single-threaded training."""
    published = {}
    for engine in ("local", "spark"):
        cfg = load_config(ROOT / "pipelines" / "spark.toml", [
            f"run.engine={engine}", f"run.runs_dir='{tmp_path / 'runs'}'",
            f"publish.dir='{tmp_path / engine}'", "publish.enabled=true", "train.workers=1",
            # calibration as in the nightly job, with small candidates and no time limit (a
            # clock cut would make the choice depend on the machine's speed)
            "run.threads=1",
            "calibrate.target_tokens=[200000]", "run.progress=false"])
        run_pipeline(cfg, tmp_path / f"run-{engine}", plan=STAGES, echo=lambda s: None)
        published[engine] = A.current_version_dir(tmp_path / engine)
    a, b = published["local"], published["spark"]
    assert a is not None and b is not None
    for art in (A.VECTORS, A.CONTEXT):
        assert np.array_equal(np.load(art.path(a)), np.load(art.path(b))), art.name
    pd.testing.assert_frame_equal(pd.read_parquet(A.ITEMS.path(a)),
                                  pd.read_parquet(A.ITEMS.path(b)))


@pytest.mark.slow  # a JVM start: the fast suite starts none
def test_the_id_rule_gives_the_same_ingest_on_spark(spark, tmp_path):
    """Issue 25: decimals next to int64, whitespace-only and NFD ids, zero-padded text next to
    integers (the collision warning), a symlink loop: the same artifacts, stats and warnings."""
    import decimal
    import unicodedata

    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = 1_700_000_000
    d = tmp_path / "logs"
    d.mkdir()
    n = 400
    users = [f"u{k % 40}" for k in range(n)]
    pq.write_table(pa.table({"user_id": users, "item_id": pa.array(
        [decimal.Decimal(f"{k % 30}.00") for k in range(n)], pa.decimal128(10, 2)),
        "timestamp": [t0 + 60 * k for k in range(n)]}), tmp_path / "a_db.parquet")
    pq.write_table(pa.table({"user_id": users, "item_id": pa.array(
        [k % 25 + 100 for k in range(n)], pa.int64()),
        "timestamp": [t0 + 60 * k + 7 for k in range(n)]}), d / "b_int.parquet")
    nfd = unicodedata.normalize("NFD", "café")
    text = [" " if k % 97 == 0 else nfd if k % 5 == 0 else f"{k % 25 + 100:05d}" if k % 3 == 0
            else f"t{k % 11}" for k in range(n)]
    (d / "loop").symlink_to(".")
    c = _clicks_csv(tmp_path / "c_text.csv", [(u, x, t0 + 60 * k + 11)
                                               for k, (u, x) in enumerate(zip(users, text, strict=True))])
    # (one directory is one dataset of one schema: the decimal file is an input of its own)
    over = [f"input.paths=['{tmp_path / 'a_db.parquet'}', '{d}', '{c}']",
            "input.categories_path=''", "run.progress=false"]
    reports = _both(tmp_path, None, over, stages=("ingest",))
    for engine, rep in reports.items():
        assert not isinstance(rep, PipelineError), (engine, str(rep))
    local, sp = tmp_path / "local", tmp_path / "spark"
    for art in (A.EVENTS, A.VOCABULARY, A.QUARANTINE):
        assert A.sha256(art.path(sp)) == A.sha256(art.path(local)), art.name
    want, got = (reports[e].stages["ingest"]["stats"] for e in ("local", "spark"))
    drop = lambda st: {k: v for k, v in st.items() if k not in NOT_COMPARED}  # noqa: E731
    assert drop(got) == drop(want)
    assert want["ids_nfc_normalized"] == 79 and want["rows_read"] == 3 * n
    (w,) = want["warnings"]
    assert "c_text.csv" in w and f"{d}" in w  # the input holding the integer file
    vocab = pd.read_parquet(A.VOCABULARY.path(local))["id"]
    assert {"0", "29", unicodedata.normalize("NFC", nfd)} <= set(vocab) and " " not in set(vocab)
