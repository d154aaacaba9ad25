"""Issue 25, "bad input, third round": one test per item, test_itemNN_... for item NN of the
issue, each failing on the code before the fix. The id rule's properties are at the end."""

from __future__ import annotations

import decimal
import logging
import os
import re
import unicodedata

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from recembed.cli import app
from recembed.ingest import ColumnMap, IngestError, ingest

runner = CliRunner()
COLS = ColumnMap(item="item", ts="ts", user="user")
T0 = 1_700_000_000
DAY = 86_400


def _pq(path, items, *, users=None, ts=None):
    n = len(items)
    pq.write_table(pa.table({"user": users or [f"u{k % 3}" for k in range(n)], "item": items,
                             "ts": ts or [T0 + 60 * k for k in range(n)]}), path)
    return path


# ---------------------------------------------------------------- silently wrong


def test_item01_decimal_ids_are_the_integer_ids(tmp_path):
    d = pa.array([decimal.Decimal(f"{k}.00") for k in (1, 2, 3)], pa.decimal128(10, 2))
    a = _pq(tmp_path / "db.parquet", d)
    b = _pq(tmp_path / "int.parquet", pa.array([1, 2, 3], pa.int64()), users=["v"] * 3)
    res = ingest([str(a), str(b)], COLS)
    assert res.vocabulary["id"].tolist() == ["1", "2", "3"]
    assert res.vocabulary["count"].tolist() == [2, 2, 2]


def test_item01_a_fractional_decimal_id_is_refused_naming_the_file(tmp_path):
    d = pa.array([decimal.Decimal("1.50")], pa.decimal128(10, 2))
    a = _pq(tmp_path / "db.parquet", d)
    with pytest.raises(IngestError, match=r"db\.parquet.*not exact integer"):
        ingest([str(a)], COLS)


def test_item02_whitespace_only_ids_are_missing_and_quarantined(tmp_path):
    items = [" " if k % 30 == 0 else f"i{k % 7}" for k in range(300)]
    p = _pq(tmp_path / "log.parquet", items)
    res = ingest([str(p)], COLS, max_bad_fraction=0.05)
    assert " " not in set(res.vocabulary["id"])
    assert len(res.quarantine) == 10
    assert res.stats["quarantine_reasons"] == {"whitespace-only item id": 10}
    assert (res.quarantine["raw"].str.contains("item=' '")).all()


def test_item03_nfc_and_nfd_ids_are_one_item_and_counted(tmp_path):
    nfc = unicodedata.normalize("NFC", "café")
    nfd = unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    p = _pq(tmp_path / "log.parquet", [nfc, nfd, nfd, "x"])
    res = ingest([str(p)], COLS)
    assert res.vocabulary["id"].tolist() == [nfc, "x"]
    assert res.vocabulary["count"].tolist() == [3, 1]
    assert res.stats["ids_nfc_normalized"] == 2


def test_item04_zero_padded_text_next_to_integers_warns_naming_both_files(tmp_path, caplog):
    a = tmp_path / "export.csv"
    a.write_text("user,item,ts\n" + "".join(f"u,{i:05d},{T0 + k}\n"
                                            for k, i in enumerate((123, 124, 7))))
    b = _pq(tmp_path / "db.parquet", pa.array([123, 124, 9], pa.int64()))
    with caplog.at_level(logging.WARNING):
        res = ingest([str(a), str(b)], COLS)
    (w,) = res.stats["warnings"]
    assert "export.csv" in w and "db.parquet" in w and "2 text ids" in w
    assert "'00123' vs 123" in w
    assert w in caplog.text
    # byte for byte stays the rule: the ids are not merged
    assert "00123" in set(res.vocabulary["id"]) and "123" in set(res.vocabulary["id"])


def test_item04_no_warning_when_the_types_agree(tmp_path):
    a = _pq(tmp_path / "a.parquet", pa.array(["00123", "5"]))
    b = _pq(tmp_path / "b.parquet", pa.array(["123", "5"]))
    assert ingest([str(a), str(b)], COLS).stats["warnings"] == []


# ---------------------------------------------------------------- crashes and hangs


def _vocab(ids):
    return pd.DataFrame({"code": np.arange(len(ids), dtype=np.int32), "id": ids})


def test_item08_catalog_ids_written_as_floats_match_integer_log_ids(tmp_path):
    from recembed.catalog import read_catalog

    p = tmp_path / "catalog.csv"
    p.write_text("id,brand\n100.0,a\n101.0,b\n102.0,a\n")
    cat = read_catalog(p, "id", ["brand"], _vocab(["100", "101", "7"]))
    assert cat.table["in_log"].tolist() == [True, True, False]
    assert cat.table["id"].tolist() == ["100", "101", "102"]


def test_item08_a_catalog_sharing_no_id_with_the_log_is_refused(tmp_path):
    from recembed.catalog import CatalogError, read_catalog

    p = tmp_path / "catalog.csv"
    p.write_text("id,brand\nx1,a\nx2,b\n")
    with pytest.raises(CatalogError, match=r"catalog\.csv: none of its 2 ids"):
        read_catalog(p, "id", ["brand"], _vocab(["100", "101"]))


def test_item05_an_input_edited_in_place_with_its_old_mtime_changes_the_stamp(tmp_path):
    from recembed.artifacts import file_stamp

    p = tmp_path / "log.csv"
    p.write_text("user,item,ts\nu,a,1\n")
    st = p.stat()
    before = file_stamp(p)
    p.write_text("user,item,ts\nu,b,1\n")  # same size
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # cp -p / rsync -t / tar -x
    assert p.stat().st_size == st.st_size and p.stat().st_mtime_ns == st.st_mtime_ns
    assert file_stamp(p) != before


def test_item05_a_directory_stamp_holds_relative_paths(tmp_path):
    from recembed.artifacts import file_stamp

    for sub in ("dt=1", "dt=2"):
        (tmp_path / "d" / sub).mkdir(parents=True)
    (tmp_path / "d" / "dt=1" / "part.parquet").write_bytes(b"x")
    before = file_stamp(tmp_path / "d")
    assert [f[0] for f in before["files"]] == ["dt=1/part.parquet"]
    (tmp_path / "d" / "dt=1" / "part.parquet").rename(tmp_path / "d" / "dt=2" / "part.parquet")
    assert file_stamp(tmp_path / "d") != before


def test_item05_an_edit_in_place_reruns_ingest_and_an_unchanged_input_is_up_to_date(tmp_path):
    from recembed.config import load_config
    from recembed.pipeline import run_pipeline
    from recembed.stages import STAGES

    log = tmp_path / "log.csv"
    rows = [(f"u{k % 5}", f"i{k % 4}", T0 + 60 * k) for k in range(40)]
    log.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    cfg = load_config(None, [f'input.paths=["{log}"]', 'input.categories_path=""',
                             f'run.runs_dir="{tmp_path / "runs"}"', "run.progress=false"])
    rd = tmp_path / "run"

    def ingest_stage():
        return run_pipeline(cfg, rd, stages=["ingest"], plan=STAGES, echo=lambda s: None)

    ingest_stage()
    assert ingest_stage().stages["ingest"]["status"] == "skipped"  # up to date
    st = log.stat()
    text = log.read_text()
    log.write_text(text.replace("i3", "i9"))  # same size, old mtime back
    os.utime(log, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert ingest_stage().stages["ingest"]["status"] == "ran"
    vocab = pd.read_parquet(rd / "vocabulary.parquet")
    assert "i9" in set(vocab["id"]) and "i3" not in set(vocab["id"])


def test_item10_symlink_loops_in_a_parquet_directory_are_read_once(tmp_path):
    d = tmp_path / "logs"
    (d / "dt=1").mkdir(parents=True)
    _pq(d / "dt=1" / "part.parquet", [f"i{k % 3}" for k in range(30)])
    (d / "self").symlink_to(".")
    (d / "dt=1" / "loop").symlink_to("..")
    res = ingest([str(d)], COLS, drop_duplicates=False)
    assert res.stats["rows_read"] == 30 and res.stats["events"] == 30


def test_item07_a_truncated_gzip_input_exits_3_naming_the_file(tmp_path):
    import gzip

    data = ("user_id,item_id,timestamp\n" + "".join(
        f"u{k % 7},i{k % 13},{T0 + k}\n" for k in range(100_000))).encode()
    z = gzip.compress(data)
    p = tmp_path / "clicks.csv.gz"
    p.write_bytes(z[: len(z) // 2])
    with pytest.raises(IngestError, match=r"clicks\.csv\.gz: cannot read the gzip stream"):
        ingest([str(p)], ColumnMap(item="item_id", ts="timestamp", user="user_id"))
    r = runner.invoke(app, ["run", "--set", f'input.paths=["{p}"]', "--set",
                            'input.categories_path=""', "--set",
                            f'run.runs_dir="{tmp_path / "runs"}"', "--stage", "ingest"])
    assert r.exit_code == 3, r.output
    assert "clicks.csv.gz" in r.output and "Traceback" not in r.output


def test_item14_run_without_any_config_prints_usage_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["run"])
    assert r.exit_code == 2
    assert "Usage" in r.output and "needs a pipeline config" in r.output
    assert list(tmp_path.iterdir()) == []  # no stray run directory


def test_item13_the_too_many_bad_rows_error_groups_reasons_by_kind_with_examples(tmp_path):
    # 315 stragglers-like rows of one kind, each reason quoting its own value
    rows = [("u", f"i{k % 5}", T0 + 60 * k) for k in range(400)]
    rows += [("u", f"x{k}", f"bad{k}") for k in range(315)]
    p = tmp_path / "log.csv"
    p.write_text("user,item,ts\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows)
                 + "".join(f"u,i1,{T0},extra{k}\n" for k in range(3)))
    with pytest.raises(IngestError) as e:
        ingest([str(p)], COLS)
    msg = str(e.value)
    assert "315 rows: unparseable timestamp (e.g. log.csv row 400" in msg
    assert "3 rows: wrong column count (e.g." in msg


def test_item13_reason_kinds_drop_the_row_values():
    from recembed.sources import reason_kind

    assert reason_kind("wrong column count: expected 3, got 4") == "wrong column count"
    assert reason_kind("straggler timestamp 2026-01-02T00:00:00Z, 3.0 days after") == \
        "straggler timestamp"
    assert reason_kind("not valid UTF-8 in column item (byte 0xff at offset 2)") == \
        "not valid UTF-8 in column item"
    assert reason_kind("implausible timestamp (column ts) 5 years from") == \
        "implausible timestamp"


def test_item11_every_event_at_one_second_names_the_holdout_window(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("user_id,item_id,timestamp\n" + "".join(
        f"u{k % 20},i{k % 9},{T0}\n" for k in range(400)))
    (tmp_path / "job.toml").write_text(
        f'[run]\nruns_dir = "{tmp_path / "runs"}"\nprogress = false\n'
        f'[input]\npaths = ["{p}"]\ncategories_path = ""\n')
    r = runner.invoke(app, ["run", str(tmp_path / "job.toml"), "--stage", "sessionize"])
    assert r.exit_code == 3, r.output
    assert "every session ends in the last holdout.days" in r.output
    assert "every event at the same second" in r.output
    assert "{'" not in r.output  # no raw statistics dict


def test_item12_milliseconds_of_january_1970_warn_naming_input_ts_unit(tmp_path):
    rng = np.random.default_rng(0)
    start = 1_000_000_000  # ms: 1970-01-12
    rows = []
    for u in range(30):
        t = start + int(rng.integers(0, 3 * DAY * 1000))
        for _ in range(8):
            t += int(rng.integers(5_000, 120_000))  # 5 s .. 2 min apart, in ms
            rows.append((f"u{u}", f"i{rng.integers(9)}", t))
    p = _csv3(tmp_path, rows)
    res = ingest([str(p)], COLS, max_ts_distance_days=0)
    assert res.stats["ts_unit"] == "s"
    (w,) = res.stats["warnings"]
    assert 'input.ts_unit = "ms"' in w and "log.csv" in w and "1970-01-1" in w
    # a seconds log of clicks gets no such warning
    secs = [(u, i, T0 + t // 1000) for u, i, t in rows]
    assert ingest([str(_csv3(tmp_path, secs, "s.csv"))], COLS).stats["warnings"] == []


def _csv3(tmp_path, rows, name="log.csv"):
    p = tmp_path / name
    p.write_text("user,item,ts\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    return p


@pytest.mark.parametrize(("override", "key"), [
    ("train.vector_size=1000000000", "train.vector_size"),
    ("walks.walk_length=100000000", "walks.walk_length"),
])
def test_item09_sizes_no_machine_has_are_refused_at_load_naming_the_key(override, key):
    from recembed.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(None, [override])
    r = runner.invoke(app, ["run", "--set", override])
    assert r.exit_code == 2 and key in r.output and "Traceback" not in r.output


def test_item09_the_memory_estimate_names_walks_without_a_token_cap():
    from recembed.config import load_config, size_problems

    cfg = load_config(None, ["walks.walks_per_node=1000", "walks.walk_length=1000",
                             "walks.max_tokens=0"])
    (msg,) = size_problems(cfg, memory=1 << 30)
    assert "walks.walks_per_node=1,000 x walks.walk_length=1,000" in msg
    assert size_problems(load_config(None, []), memory=1 << 30) == []


@pytest.mark.slow  # a whole run and publish (~50 s on 2 cores)
def test_item06_empty_answers_warn_and_exit_6(tmp_path):
    from recembed.pipeline import EXIT_EMPTY
    from recembed.synth import synth_clicks, write_synth

    assert EXIT_EMPTY == 6
    write_synth(synth_clicks(3000, days=5, seed=1), tmp_path / "clicks.csv")
    sets = [f"input.paths=['{tmp_path / 'clicks.csv'}']", "input.categories_path=''",
            f"run.runs_dir='{tmp_path / 'runs'}'", f"publish.dir='{tmp_path / 'pub'}'",
            "publish.enabled=true", "train.epochs=1", "train.workers=1", "train.vector_size=16",
            "run.threads=1", "run.progress=false", "walks.walks_per_node=1",
            "walks.walk_length=5", "calibrate.corpora=['both']", "index.type='Flat'",
            "evaluate.baselines=['pop']", "evaluate.strategies=['last']",
            "evaluate.max_queries=200"]
    r = runner.invoke(app, ["run", *[x for s in sets for x in ("--set", s)]])
    assert r.exit_code == 0, r.output
    pub = tmp_path / "pub"
    known = str(pd.read_parquet(next(pub.glob("*/items.parquet")))["id"].iloc[0])
    # only unknown ids: an empty table is no answer
    for cmd in ("query", "recommend"):
        r = runner.invoke(app, [cmd, str(pub), "nope-1", "nope-2"])
        assert r.exit_code == 6, (cmd, r.output)
        assert "none of the ids" in r.output
    # some known: answered, the unknown one named, and still a distinct exit code (a script
    # must not read an incomplete answer as success)
    r = runner.invoke(app, ["query", str(pub), known, "nope-1"])
    assert r.exit_code == 6 and "unknown ids (not in this version): nope-1" in r.output
    assert known in r.output
    # a run whose holdout shares no item with the version
    other = tmp_path / "other.csv"
    log = pd.read_csv(tmp_path / "clicks.csv")
    item_col = next(c for c in log.columns if "item" in c)
    log[item_col] = "x-" + log[item_col].astype(str)
    log.to_csv(other, index=False)
    r = runner.invoke(app, ["run", "--set", f"input.paths=['{other}']",
                            "--set", "input.categories_path=''", "--set",
                            f"run.runs_dir='{tmp_path / 'runs2'}'", "--stage", "sessionize"])
    assert r.exit_code == 0, r.output
    run2 = next((tmp_path / "runs2").iterdir())
    r = runner.invoke(app, ["evaluate", str(pub), "--run", str(run2)])
    assert r.exit_code == 6, r.output
    assert "share no item" in r.output and "recall@20 0.0000" in r.output


def test_serving_queries_follow_the_id_rule(tmp_path):
    from recembed.serving import Recommender
    from tests.test_properties import _check_exports

    nfc = unicodedata.normalize("NFC", "crème")
    _check_exports(["100", nfc, "00123"], tmp_path)
    rec = Recommender.load(tmp_path)
    res = rec.similar([100.0, decimal.Decimal("100.00"), unicodedata.normalize("NFD", nfc),
                       "00123", 123], k=1)
    assert res.unknown == ["123"]  # "00123" is kept as written; 123 is another id
    assert rec.why_not_served(100.0) == ""
