"""Issue 17, "bad input must never be silently wrong": one test per item, test_itemNN_... for item
NN of the issue, each failing on the code before the fix. Property-based variants of the ingest
items are in tests/test_properties.py."""

from __future__ import annotations

import os
import re
import shutil
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from recembed.cli import app
from recembed.config import Config, ConfigError, dump_config, load_config
from recembed.ingest import ColumnMap, IngestError, ingest
from recembed.pipeline import PipelineError, run_pipeline
from recembed.sessions import sessionize
from recembed.stages import STAGES
from tests.conftest import ROOT

runner = CliRunner()
COLS = ColumnMap(item="item", ts="ts", user="user")
T0 = 1_700_000_000  # 2023-11-14
DAY = 86_400

# the smallest full run: every stage, seconds on 2 cores
SMALL_RUN = """
[run]
name = "small"
runs_dir = "{runs}"
threads = 1
progress = false
[input]
paths = ["clicks.csv"]
categories_path = ""
[train]
epochs = 1
vector_size = 16
[walks]
walks_per_node = 1
walk_length = 5
[calibrate]
corpora = ["both"]
[index]
type = "Flat"
[evaluate]
baselines = ["pop"]
strategies = ["last"]
max_queries = 200
"""


def _csv(tmp_path, rows, name="log.csv", header="user,item,ts"):
    p = tmp_path / name
    p.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return p


def _clicks(n, *, users=50, items=40, span_days=20.0, seed=0):
    """n clicks of `users` users over `span_days` days, in time order."""
    rng = np.random.default_rng(seed)
    ts = np.sort(T0 + rng.uniform(0, span_days * DAY, n)).astype(np.int64)
    return [(f"u{rng.integers(users)}", f"i{rng.integers(items)}", t) for t in ts]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A finished run (every stage) of SMALL_RUN in a project directory: (project, run dir)."""
    from recembed.synth import synth_clicks, write_synth

    proj = tmp_path_factory.mktemp("proj")
    write_synth(synth_clicks(3000, days=5, seed=1), proj / "clicks.csv")
    (proj / "job.toml").write_text(SMALL_RUN.format(runs=proj / "runs"))
    r = runner.invoke(app, ["run", str(proj / "job.toml")])
    assert r.exit_code == 0, r.output
    (run_dir,) = (proj / "runs").iterdir()
    return proj, run_dir


# ---------------------------------------------------------------- silently wrong or lost


def test_item01_integral_float_ids_are_the_integer_ids(tmp_path):
    ean = [4006381333945, 4006381333952, 4006381333969]
    ts = [T0 + 60 * i for i in range(6)]
    pd.DataFrame({"user": ["a"] * 3, "item": ean, "ts": ts[:3]}).to_parquet(tmp_path / "int.parquet")
    # one NaN makes pandas store the whole column as float64
    pd.DataFrame({"user": ["b"] * 3, "item": [ean[0], np.nan, ean[2]], "ts": ts[3:]}).to_parquet(
        tmp_path / "float.parquet")
    assert pq.read_schema(tmp_path / "float.parquet").field("item").type == pa.float64()
    res = ingest([str(tmp_path / "int.parquet"), str(tmp_path / "float.parquet")], COLS,
                 max_bad_fraction=0.5)
    assert sorted(res.vocabulary["id"]) == [str(x) for x in ean]  # no doubled catalogue
    assert len(res.events) == 5
    assert res.quarantine["reason"].str.contains("empty item id").tolist() == [True]
    # the NaN row is quarantined, not turned into an id
    pd.DataFrame({"user": ["b"] * 2, "item": [1.0, 2.5], "ts": ts[:2]}).to_parquet(
        tmp_path / "frac.parquet")
    with pytest.raises(IngestError, match=r"frac\.parquet: column item .*2\.5.*data row 1"):
        ingest([str(tmp_path / "frac.parquet")], COLS)


def test_item02_ms_rows_in_a_seconds_file_are_quarantined_with_the_reason(tmp_path):
    rows = _clicks(1000)
    ms = set(range(5, 1000, 10))  # 10% of the rows written in milliseconds
    rows = [(u, i, t * 1000 if k in ms else t) for k, (u, i, t) in enumerate(rows)]
    p = _csv(tmp_path, rows)
    q = tmp_path / "q.parquet"
    with pytest.raises(IngestError, match="implausible timestamp"):
        ingest([str(p)], COLS, quarantine_path=q)  # 10% bad > max_bad_fraction 1%
    quar = pd.read_parquet(q)
    assert sorted(quar["row"]) == sorted(ms)
    assert quar["reason"].str.contains("implausible timestamp .*a value in ms read as s").all()
    res = ingest([str(p)], COLS, max_bad_fraction=0.2)
    assert res.stats["ts_unit"] == "s" and len(res.events) == 900
    assert res.events["ts"].max() < T0 + 21 * DAY


@pytest.mark.parametrize("outlier", ["year3000", "two_years_ahead"])
def test_item02_one_far_future_row_does_not_empty_the_window(tmp_path, outlier):
    rows = _clicks(3000, span_days=60)
    late = {"year3000": 32_503_680_000, "two_years_ahead": rows[-1][2] + 730 * DAY}[outlier]
    rows.insert(1234, ("u1", "i1", late))
    q = tmp_path / "q.parquet"
    res = ingest([str(_csv(tmp_path, rows))], COLS, window_days=28, quarantine_path=q)
    newest = max(t for _, _, t in rows if t != late)
    expect = sum(1 for _, _, t in rows if newest - 28 * DAY < t <= newest)
    assert len(res.events) == expect > 1000
    quar = pd.read_parquet(q)
    assert quar["row"].tolist() == [1234]
    assert re.search("implausible timestamp" if outlier == "year3000" else "silence",
                     quar.loc[0, "reason"])


def test_item03_every_config_key_survives_its_round_trip(tmp_path):
    from tests.test_properties import changed_config_raw, leaf_keys

    raw = changed_config_raw()
    cfg = Config.model_validate(raw)
    default = Config()
    alone = Config.model_validate({"evaluate": {"enabled": False}})
    for key in leaf_keys(Config):  # the test covers every key: each differs from its default
        c = alone if key == "evaluate.enabled" else cfg
        assert _get(c, key) != _get(default, key), key
    paths = {"run.runs_dir", "input.paths", "input.test_paths", "input.categories_path",
             "input.catalog.path", "publish.dir"}  # relative ones are resolved by the first load
    for c in (default, cfg, alone):
        p = tmp_path / "c.toml"
        p.write_text(dump_config(c))
        once = load_config(p)
        for key in set(leaf_keys(Config)) - paths:
            assert _get(once, key) == _get(c, key), key  # input.delimiter None became ''
        p.write_text(dump_config(once))
        assert load_config(p) == once


def _get(cfg, key):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.slow  # small_run: a default (calibrated) run, ~100 s on a busy machine
def test_item03_resume_and_evaluate_skip_every_finished_stage(small_run):
    _, run_dir = small_run
    vec = run_dir / "vectors.npy"
    before = (vec.stat().st_mtime_ns, vec.read_bytes())
    stages = [p.name.split(".")[0] for p in run_dir.glob("*.done.json")]
    assert len(stages) == 9  # ingest, sessionize, calibrate, graph .. evaluate
    r = runner.invoke(app, ["run", "--resume", str(run_dir)])
    assert r.exit_code == 0, r.output
    for st in stages:
        assert f"[{st}] up to date, skipped" in r.output
    assert "running" not in r.output
    r = runner.invoke(app, ["evaluate", str(run_dir)])
    assert r.exit_code == 0, r.output
    assert "running" not in r.output and "recall@20" in r.output
    assert (vec.stat().st_mtime_ns, vec.read_bytes()) == before


def test_item04_ids_with_whitespace_round_trip_through_the_word2vec_exports(tmp_path):
    from gensim.models import KeyedVectors

    from recembed.train import TrainResult, export_vectors

    ids = ["plain", "two words", " lead", "trail ", "tab\there", "new\nline", "100%",
           "a%20b", "nbsp\u00a0x", "line\u2028sep", "ü é"]
    n = len(ids)
    vectors = np.arange(n * 4, dtype=np.float32).reshape(n, 4) / 7
    res = TrainResult(vectors, None, np.arange(n, dtype=np.int32), np.ones(n, np.int64))
    vocab = pd.DataFrame({"code": np.arange(n, dtype=np.int32), "id": ids})
    export_vectors(res, vocab, tmp_path, context=False)
    assert pd.read_parquet(tmp_path / "items.parquet")["id"].tolist() == ids
    for name, binary in (("vectors.txt", False), ("vectors.bin", True)):
        kv = KeyedVectors.load_word2vec_format(str(tmp_path / name), binary=binary)
        assert [unquote(k) for k in kv.index_to_key] == ids, name
        np.testing.assert_allclose(kv.vectors, vectors, rtol=1e-6)


def test_item05_ids_are_kept_byte_for_byte(tmp_path):
    rows = [("u1", " padded ", T0), ("u1", "padded", T0 + 1), ("u1", "trail ", T0 + 2),
            ("u1", "\ttab", T0 + 3)]
    res = ingest([str(_csv(tmp_path, rows))], COLS)
    assert sorted(res.vocabulary["id"]) == sorted(["\ttab", " padded ", "padded", "trail "])
    assert len(res.quarantine) == 0


def test_item06_event_types_without_an_event_type_column_is_refused(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[input]\nevent_types = ["buy"]\n')
    with pytest.raises(ConfigError, match=r"input\.event_types.*input\.columns\.event_type"):
        load_config(p)
    cfg = load_config(p, ["input.columns.event_type=kind"])
    assert cfg.input.event_types == ["buy"]


# ---------------------------------------------------------------- crashes -> clear errors


def test_item07_na_like_strings_are_ids_unless_na_values_says_so(tmp_path):
    na = ["NA", "None", "null", "nan", "NaN", "N/A", "NULL"]
    rows = [("u1", x, T0 + k) for k, x in enumerate(na)]
    p = _csv(tmp_path, rows)
    res = ingest([str(p)], COLS)
    assert sorted(res.vocabulary["id"]) == sorted(na) and len(res.quarantine) == 0
    cfg = load_config(None, ['input.na_values=["NA", "null"]'])
    res = ingest([str(p)], COLS, na_values=cfg.input.na_values, max_bad_fraction=1)
    assert sorted(res.vocabulary["id"]) == sorted(set(na) - {"NA", "null"})
    assert res.quarantine["row"].tolist() == [0, 2]
    assert res.quarantine["reason"].str.contains("empty item id or one of input.na_values").all()


def test_item09_an_empty_user_id_is_quarantined(tmp_path):
    rows = _clicks(6300)
    rows[4321] = ("", rows[4321][1], rows[4321][2])
    res = ingest([str(_csv(tmp_path, rows))], COLS)
    assert res.quarantine["row"].tolist() == [4321]
    assert "empty user id" in res.quarantine.loc[0, "reason"]
    assert (res.events["user"] >= 0).all() and len(res.events) == 6299
    assert sessionize(res.events).stats["sessions"] > 0


def test_item09_no_user_and_no_session_column_is_refused_at_load():
    with pytest.raises(ConfigError, match=r"input\.columns\.user.*input\.columns\.session"):
        load_config(None, ['input.columns.user=""'])
    assert load_config(None, ['input.columns.user=""', "input.columns.session=sid"])


def test_item10_subsecond_parquet_datetimes_keep_their_order(tmp_path):
    # one user's clicks a, b, c within one second, written out of time order
    t = pd.to_datetime(["2023-11-14 22:13:20.900", "2023-11-14 22:13:20.100",
                        "2023-11-14 22:13:20.500", "2023-11-14 22:13:21.250"]).as_unit("ms")
    df = pd.DataFrame({"user": ["u"] * 4, "item": ["c", "a", "b", "d"], "ts": t})
    df.to_parquet(tmp_path / "t.parquet")
    res = ingest([str(tmp_path / "t.parquet")], COLS)
    assert res.stats["ts_unit"] == "timestamp"
    assert res.events["ts"].tolist() == [T0] * 3 + [T0 + 1]
    s = sessionize(res.events, holdout_days=0, bots=False, collapse_repeats=False)
    ids = res.vocabulary["id"].to_numpy()[s.train.sort_values(["session", "pos"])["item"]]
    assert ids.tolist() == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("override", "key"),
    [(["evaluate.ks=[0]"], "evaluate.ks"), (["evaluate.ks=[]"], "evaluate.ks"),
     (["evaluate.ks=[-5, 20]"], "evaluate.ks"),
     (["evaluate.ks=[10]", "publish.enabled=true"], "evaluate.ks"),
     (["index.type=bogus"], "index.type"), (["index.type='IVF64,PQ7'"], "index.type"),
     (["input.categories_columns=['item']"], "input.categories_columns")],
)
def test_item13_bad_values_are_refused_at_load_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(None, override)


@pytest.mark.slow  # small_run (see above)
def test_item13_min_count_above_every_count_exits_3_naming_the_key(small_run, tmp_path):
    proj, run_dir = small_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    cfg = load_config(proj / "job.toml", ["train.min_count=1000000"])
    with pytest.raises(PipelineError, match=r"train\.min_count=1000000") as e:
        run_pipeline(cfg, copy, plan=STAGES, echo=lambda s: None)
    assert e.value.exit_code == 3


@pytest.mark.parametrize("case", ["missing_file", "wrong_columns"])
def test_item14_categories_errors_exit_3_naming_key_and_file(synth_csv, tmp_path, case):
    items = synth_csv.with_name(synth_csv.stem + "_items.csv")
    path, cols = ((tmp_path / "nope.csv", '["item_id", "category"]') if case == "missing_file"
                  else (items, '["item", "cat"]'))
    cfg = load_config(None, [f"input.paths=['{synth_csv}']", f"input.categories_path='{path}'",
                             f"input.categories_columns={cols}", f"run.runs_dir='{tmp_path}'"])
    with pytest.raises(PipelineError) as e:
        run_pipeline(cfg, tmp_path / "r", stages=["ingest"], plan=STAGES, echo=lambda s: None)
    assert e.value.exit_code == 3
    msg = str(e.value)
    assert str(path) in msg
    if case == "missing_file":
        assert "input.categories_path" in msg and "does not exist" in msg
    else:
        assert "input.categories_columns" in msg and "'item', 'cat'" in msg
        assert "item_id" in msg  # the columns the file does have


# ---------------------------------------------------------------- unclear messages


def test_item19_relative_paths_resolve_against_the_project_root(tmp_path, monkeypatch):
    from recembed.synth import synth_clicks, write_synth

    proj = tmp_path / "proj"
    (proj / "pipelines").mkdir(parents=True)
    (proj / "data").mkdir()
    write_synth(synth_clicks(2000, days=3, seed=2), proj / "data" / "clicks.csv")
    (proj / "pipelines" / "job.toml").write_text(
        '[run]\nname = "job"\nruns_dir = "runs"\n[input]\npaths = ["data/clicks.csv"]\n'
        'categories_path = "data/clicks_items.csv"\n[publish]\ndir = "published"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(proj / "pipelines" / "job.toml", ["input.test_paths=['data/clicks.csv']"])
    assert cfg.run.runs_dir == str(proj / "runs")
    assert cfg.publish.dir == str(proj / "published")
    assert cfg.input.paths == cfg.input.test_paths == [str(proj / "data" / "clicks.csv")]
    assert cfg.input.categories_path == str(proj / "data" / "clicks_items.csv")
    r = runner.invoke(app, ["run", str(proj / "pipelines" / "job.toml"), "--stage", "ingest"])
    assert r.exit_code == 0, r.output
    assert os.listdir(elsewhere) == []
    assert [p.name.startswith("job-") for p in (proj / "runs").iterdir()] == [True]
    # the same rule for a file outside pipelines/: its own directory
    (proj / "job2.toml").write_text('[run]\nruns_dir = "out"\n')
    assert load_config(proj / "job2.toml").run.runs_dir == str(proj / "out")


# ---------------------------------------------------------------- exit codes


def _readme_exit_codes() -> dict[int, str]:
    text = (ROOT / "README.md").read_text()
    table = text.split("### Exit codes", 1)[1].split("\n\n")[1]
    codes = {}
    for line in table.splitlines():
        m = re.match(r"^\|\s*(\d+)\s*\|\s*(.+?)\s*\|$", line)
        if m:
            codes[int(m.group(1))] = m.group(2).lower()
    return codes


def test_readme_exit_code_table_matches_the_code(synth_csv, tmp_path):
    from recembed import pipeline

    codes = _readme_exit_codes()
    assert sorted(codes) == [0, 1, 2, 3, 4, 5, 6]
    assert "empty answer" in codes[pipeline.EXIT_EMPTY]
    assert "crash" in codes[pipeline.EXIT_CRASH]
    assert "bad input" in codes[pipeline.EXIT_BAD_INPUT]
    assert "quality gate" in codes[pipeline.EXIT_GATE]
    assert "lock" in codes[pipeline.EXIT_LOCKED]
    base = ["run", "--set", f"input.paths=['{synth_csv}']", "--set", f"run.runs_dir='{tmp_path}'"]
    # a value refused at load time (item 13) is a bad config
    r = runner.invoke(app, [*base, "--set", "evaluate.ks=[0]", "--stage", "ingest"])
    assert "config" in codes[r.exit_code] and "evaluate.ks" in r.output
    r = runner.invoke(app, [*base, "--set", "input.event_types=['buy']", "--stage", "ingest"])
    assert "config" in codes[r.exit_code] and "input.columns.event_type" in r.output
    # a missing categories file (item 14) is bad input
    r = runner.invoke(app, [*base, "--set", f"input.categories_path='{tmp_path / 'no.csv'}'",
                            "--stage", "ingest"])
    assert "bad input" in codes[r.exit_code] and "categories" in codes[r.exit_code]


def test_item00_a_three_year_history_runs_at_the_default_half_life():
    """Weights 0.5 ** (3 years / 7 days) used to round to 0 in the float32 graph and the walks
    refused it; the floor keeps every edge positive."""
    from recembed.graph import build_item_graph
    from recembed.sessions import sessionize
    from recembed.synth import synth_profile
    from recembed.walks import walk_array

    log = synth_profile("histories", 20_000, seed=4)
    ev = pd.DataFrame({"user": pd.factorize(log.events["user_id"])[0].astype(np.int32),
                       "item": pd.factorize(log.events["item_id"])[0].astype(np.int32),
                       "ts": log.events["timestamp"].to_numpy().astype(np.int64)})
    s = sessionize(ev, holdout_days=7, half_life_days=7.0)
    g = build_item_graph(s.train, s.table[["session", "weight"]], int(ev["item"].max()) + 1)
    assert g.data.dtype == np.float32 and (g.data > 0).all()
    walks = walk_array(g, np.flatnonzero(np.diff(g.indptr) > 0)[:100], walk_length=5)
    assert (walks[:, 1] >= 0).any()


def test_item08_input_that_leaves_no_session_exits_3_naming_the_filters(tmp_path):
    p = tmp_path / "one_click_each.csv"
    p.write_text("user_id,item_id,timestamp\n" + "".join(
        f"u{i},i{i % 7},{1_700_000_000 + i * 60}\n" for i in range(40)))
    r = runner.invoke(app, ["run", "--set", f"input.paths=['{p}']", "--set",
                            "input.categories_path=''", "--set", f"run.runs_dir='{tmp_path}'"])
    assert r.exit_code == 3, r.output
    assert "no session is left" in r.output and "session.min_length=2" in r.output
