"""Opening inputs (recembed.sources via ingest): compression, encodings, Hive partitions, pruning."""

import bz2
import gzip
import lzma
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recembed.ingest import ColumnMap, IngestError, ingest
from recembed.sources import SourceOptions, detect_compression, open_parquet
from tests.conftest import YOO

COLS = ColumnMap(item="item", ts="ts", user="user")
YOO_COLS = ColumnMap(item="ItemId", ts="Time", session="SessionId")
DAY = 86_400
T0 = 1_700_000_000  # 2023-11-14T22:13:20Z


def _log_text(n=50, sep=","):
    lines = [sep.join(("user", "item", "ts"))]
    lines += [sep.join((f"u{i % 5}", f"i{i % 11}", str(T0 + 60 * i))) for i in range(n)]
    return "\n".join(lines) + "\n"


def _compress(data: bytes, codec: str) -> bytes:
    if codec == "gzip":
        return gzip.compress(data)
    if codec == "bz2":
        return bz2.compress(data)
    # zstd: no stdlib codec before Python 3.14; pyarrow's writer is independent of its reader path
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


def _events(res):
    return res.events[["user", "item", "ts", "row"]].reset_index(drop=True)


# ---------------------------------------------------------------- compression


@pytest.mark.parametrize("codec, suffix", [("gzip", ".gz"), ("bz2", ".bz2"), ("zstd", ".zst")])
@pytest.mark.parametrize("kind, sep", [("csv", ","), ("tsv", "\t")])
def test_compressed_csv_and_tsv_read_like_the_plain_file(tmp_path, codec, suffix, kind, sep):
    text = _log_text(sep=sep)
    plain = tmp_path / f"log.{kind}"
    plain.write_text(text)
    packed = tmp_path / f"log.{kind}{suffix}"
    packed.write_bytes(_compress(text.encode(), codec))
    assert detect_compression(packed) == codec
    a, b = ingest([str(plain)], COLS), ingest([str(packed)], COLS)
    assert b.stats["rows_read"] == 50
    assert _events(a).equals(_events(b))
    assert a.vocabulary["id"].tolist() == b.vocabulary["id"].tolist()


@pytest.mark.parametrize("codec", ["gzip", "bz2", "zstd"])
def test_compression_is_found_by_magic_bytes_without_a_suffix(tmp_path, codec):
    p = tmp_path / "export.csv"  # compressed content under a plain name
    p.write_bytes(_compress(_log_text().encode(), codec))
    assert detect_compression(p) == codec
    res = ingest([str(p)], COLS)
    assert len(res.events) == 50 and res.events["ts"].min() == T0


def test_real_yoochoose_sample_gzipped_gives_the_same_events(tmp_path):
    p = tmp_path / "train.tsv.gz"
    p.write_bytes(gzip.compress((YOO / "train.tsv").read_bytes()))
    a = ingest([str(YOO / "train.tsv")], YOO_COLS)
    b = ingest([str(p)], YOO_COLS)
    assert len(a.events) > 50_000
    assert a.events.equals(b.events)


def test_a_plain_file_with_a_compression_suffix_is_read_by_its_content(tmp_path):
    p = tmp_path / "log.csv.gz"
    p.write_text(_log_text())
    assert detect_compression(p) is None
    assert len(ingest([str(p)], COLS).events) == 50


@pytest.mark.parametrize("name", ["log.csv.xz", "log.csv.zip", "log.csv"])
def test_unsupported_compression_names_the_file_and_the_supported_formats(tmp_path, name):
    data = _log_text().encode()
    p = tmp_path / name
    if name.endswith(".zip"):
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("log.csv", data)
    else:
        p.write_bytes(lzma.compress(data))  # "log.csv": xz content under a plain name
    kind = "zip" if name.endswith(".zip") else "xz"
    with pytest.raises(IngestError) as e:
        ingest([str(p)], COLS)
    msg = str(e.value)
    assert str(p) in msg and f"{kind} compression is not supported" in msg
    assert "gzip, bz2, zstd" in msg


# ---------------------------------------------------------------- encodings


@pytest.mark.parametrize("compressed", [False, True])
def test_issue17_item17_utf8_bom_is_stripped(tmp_path, compressed):
    data = b"\xef\xbb\xbf" + _log_text().encode()  # what Excel writes
    p = tmp_path / ("bom.csv.gz" if compressed else "bom.csv")
    p.write_bytes(gzip.compress(data) if compressed else data)
    res = ingest([str(p)], COLS)
    assert len(res.events) == 50 and res.events["user"].max() == 4


def _latin1_log(tmp_path, n=300, bad=(40, 207)):
    lines = [b"user,item,ts"]
    for i in range(n):
        item = b"caf\xe9" if i in bad else f"i{i % 13}".encode()  # Latin-1 e-acute
        lines.append(b"u%d,%s,%d" % (i % 7, item, T0 + 60 * i))
    p = tmp_path / "latin.csv"
    p.write_bytes(b"\n".join(lines) + b"\n")
    return p


def test_issue17_item18_undecodable_rows_are_quarantined_with_row_and_reason(tmp_path):
    p = _latin1_log(tmp_path)
    q = tmp_path / "q.parquet"
    res = ingest([str(p)], COLS, quarantine_path=q)
    quar = pd.read_parquet(q)
    assert quar["row"].tolist() == [40, 207]
    assert (quar["file"] == str(p)).all()
    assert quar["reason"].str.contains("not valid UTF-8 in column item").all()
    assert quar["reason"].str.contains("0xe9").all()
    assert quar["reason"].str.contains("input.encoding").all()
    assert quar["raw"].str.contains(r"caf\xe9", regex=False).all()
    assert len(res.events) == 298
    assert not {40, 207} & set(res.events["row"]) and 41 in set(res.events["row"])
    assert "café" not in set(res.vocabulary["id"])


def test_issue17_item18_input_encoding_reads_latin1(tmp_path):
    p = _latin1_log(tmp_path)
    res = ingest([str(p)], COLS, source=SourceOptions(encoding="latin-1"))
    assert len(res.events) == 300 and len(res.quarantine) == 0
    cafe = res.vocabulary.set_index("id").loc["café", "count"]
    assert cafe == 2


def test_issue17_item18_rows_undecodable_under_input_encoding_are_quarantined(tmp_path):
    # 0x81 is undefined in cp1252; 0x80 is the euro sign
    p = tmp_path / "cp.csv"
    p.write_bytes(b"user,item,ts\nu1,a\x81b,1700000000\nu2,\x80,1700000060\nu3,c,1700000120\n")
    q = tmp_path / "q.parquet"
    res = ingest([str(p)], COLS, source=SourceOptions(encoding="cp1252"), max_bad_fraction=0.5,
                 quarantine_path=q)
    quar = pd.read_parquet(q)
    assert quar["row"].tolist() == [0]
    assert "not valid cp1252 in column item (byte 0x81" in quar.loc[0, "reason"]
    assert sorted(res.vocabulary["id"]) == ["c", "\u20ac"]


def test_utf16_input_is_transcoded(tmp_path):
    p = tmp_path / "u16.csv"
    p.write_bytes(_log_text().replace("i3", "ü3").encode("utf-16"))  # with its BOM
    res = ingest([str(p)], COLS, source=SourceOptions(encoding="utf-16"))
    assert len(res.events) == 50 and "ü3" in set(res.vocabulary["id"])


def test_a_wholly_latin1_file_stops_with_advice_on_input_encoding(tmp_path):
    p = _latin1_log(tmp_path, n=100, bad=range(100))
    with pytest.raises(IngestError, match=r"100 of 100 rows.*not valid UTF-8.*input\.encoding"):
        ingest([str(p)], COLS)


def test_unknown_encoding_is_refused_at_config_load():
    from recembed.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"input\.encoding.*klingon"):
        load_config(None, ["input.encoding=klingon"])


# ---------------------------------------------------------------- Hive-partitioned Parquet


def _lake(root: Path, days=10, regions=("eu", "us"), per=6, corrupt: str | None = None):
    """dt=YYYY-MM-DD/region=R/part-0.parquet with `per` events a partition, 1 h apart (file
    column `t`, seconds); `corrupt` = a dt whose files are garbage (must never be opened)."""
    rows = []
    start = pd.Timestamp("2026-11-12", tz="UTC")
    for d in range(days):
        day = start + pd.Timedelta(days=d)
        dt = day.strftime("%Y-%m-%d")
        for r in regions:
            part = root / f"dt={dt}" / f"region={r}"
            part.mkdir(parents=True)
            t = int(day.timestamp()) + 3600 * np.arange(per)
            df = pd.DataFrame({"u": [f"{r}{k % 2}" for k in range(per)],
                               "it": [f"{r}-{d}-{k % 3}" for k in range(per)], "t": t})
            if dt == corrupt:
                (part / "part-0.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
            else:
                df.to_parquet(part / "part-0.parquet")
            rows.append(df.assign(dt=dt, region=r))
    return pd.concat(rows, ignore_index=True)


def test_hive_partition_columns_can_be_the_timestamp_and_a_filter(tmp_path):
    truth = _lake(tmp_path / "lake", days=4)
    cols = ColumnMap(item="it", ts="dt", user="region")
    res = ingest([str(tmp_path / "lake")], cols, drop_duplicates=False,
                 source=SourceOptions(filters={"region": ["eu"]}))
    eu = truth[truth["region"] == "eu"]
    assert res.stats["rows_read"] == len(eu)
    midnight = (pd.to_datetime(eu["dt"], utc=True) - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    assert sorted(res.events["ts"]) == sorted(midnight.astype(np.int64))
    assert res.events["user"].nunique() == 1  # only region eu was read
    assert set(res.vocabulary["id"]) == set(eu["it"])


def test_hive_partition_values_are_strings_and_file_columns_are_kept(tmp_path):
    truth = _lake(tmp_path / "lake", days=2, regions=("01",))
    src = open_parquet(tmp_path / "lake")
    assert src.partition_columns == ["dt", "region"]
    res = ingest([str(tmp_path / "lake")], ColumnMap(item="it", ts="t", user="region"))
    assert sorted(res.events["ts"]) == sorted(truth["t"])
    assert len(res.events) == len(truth)


def test_filter_on_a_column_that_is_not_a_partition_names_the_key(tmp_path):
    _lake(tmp_path / "lake", days=2)
    with pytest.raises(IngestError, match=r"input\.filters\.country.*\['dt', 'region'\]"):
        ingest([str(tmp_path / "lake")], ColumnMap(item="it", ts="t", user="u"),
               source=SourceOptions(filters={"country": ["de"]}))


def test_filters_that_select_no_partition_say_so(tmp_path):
    _lake(tmp_path / "lake", days=2)
    with pytest.raises(IngestError, match=r"input\.filters .*'asia'.*leave no partition"):
        ingest([str(tmp_path / "lake")], ColumnMap(item="it", ts="t", user="u"),
               source=SourceOptions(filters={"region": ["asia"]}))


def test_filters_on_a_csv_input_are_refused(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text(_log_text())
    with pytest.raises(IngestError, match=r"input\.filters.*Parquet"):
        ingest([str(p)], COLS, source=SourceOptions(filters={"region": ["eu"]}))


def test_window_prunes_partitions_when_the_timestamp_is_the_partition(tmp_path):
    # the oldest partition holds garbage: success proves it was never opened, not even for its schema
    truth = _lake(tmp_path / "lake", days=10, corrupt="2026-11-12")
    cols = ColumnMap(item="it", ts="dt", user="u")
    with pytest.raises(IngestError, match="Parquet"):
        ingest([str(tmp_path / "lake")], cols)  # without a window every partition is read
    res = ingest([str(tmp_path / "lake")], cols, window_days=3)
    # the row-level window: dates strictly after newest - 3 days, i.e. 11-19, 11-20, 11-21
    keep = truth[truth["dt"] > "2026-11-18"]
    # 11-16, 11-17, 11-18 are read (window + 2 days of slack) and then cut by the row window
    assert res.stats["outside_window"] == 3 * 2 * 6
    assert len(res.events) == len(keep)
    assert set(res.vocabulary["id"]) == set(keep["it"])


def test_window_prunes_by_partition_date_and_keeps_every_event_in_the_window(tmp_path):
    truth = _lake(tmp_path / "lake", days=10, corrupt="2026-11-12")
    cols = ColumnMap(item="it", ts="t", user="u")
    res = ingest([str(tmp_path / "lake")], cols, window_days=2.5,
                 source=SourceOptions(partition_date="dt"))
    newest = truth["t"].max()
    keep = truth[truth["t"] > newest - 2.5 * DAY]
    assert sorted(res.events["ts"]) == sorted(keep["t"])


def test_partition_date_must_be_a_date_partition(tmp_path):
    _lake(tmp_path / "lake", days=2)
    cols = ColumnMap(item="it", ts="t", user="u")
    with pytest.raises(IngestError, match=r"input\.partition_date='region'.*not dates"):
        ingest([str(tmp_path / "lake")], cols, window_days=1,
               source=SourceOptions(partition_date="region"))
    with pytest.raises(IngestError, match=r"input\.partition_date='day'.*no such partition"):
        ingest([str(tmp_path / "lake")], cols, window_days=1,
               source=SourceOptions(partition_date="day"))


def test_a_far_future_partition_does_not_anchor_the_pruning(tmp_path):
    _lake(tmp_path / "lake", days=10)
    typo = tmp_path / "lake" / "dt=3026-11-21" / "region=eu"
    typo.mkdir(parents=True)
    pd.DataFrame({"u": ["x"], "it": ["y"], "t": [T0]}).to_parquet(typo / "part-0.parquet")
    src = open_parquet(tmp_path / "lake", ts_column="dt", window_days=3)
    read = sorted({Path(f.path).parent.parent.name
                   for f in src.dataset.get_fragments(filter=src.selection)})
    # anchored at 2026-11-21: 3 days + 2 days slack back, and the typo partition is still read
    assert read == [f"dt=2026-11-{d}" for d in range(16, 22)] + ["dt=3026-11-21"]


def test_parquet_is_found_by_magic_bytes_and_single_files_have_no_partitions(tmp_path):
    d = tmp_path / "dt=2026-01-01"
    d.mkdir()
    pq.write_table(pa.table({"user": ["a", "a"], "item": ["x", "y"], "ts": [T0, T0 + 5]}),
                   d / "export.bin")
    res = ingest([str(d / "export.bin")], COLS)
    assert res.events["ts"].tolist() == [T0, T0 + 5]
    assert open_parquet(d / "export.bin").partition_columns == []


def test_the_input_keys_reach_the_reader_through_the_pipeline(tmp_path):
    from recembed.config import load_config
    from recembed.pipeline import run_pipeline
    from recembed.stages import STAGES

    truth = _lake(tmp_path / "lake", days=6, corrupt="2026-11-12")
    cfg = load_config(None, [
        f"input.paths=['{tmp_path / 'lake'}']", "input.categories_path=''",
        "input.columns.item='it'", "input.columns.ts='t'", "input.columns.user='u'",
        "input.partition_date='dt'", "input.filters={region=['us']}", "ingest.window_days=1",
        f"run.runs_dir='{tmp_path / 'runs'}'", "run.progress=false"])
    rep = run_pipeline(cfg, stages=["ingest"], plan=STAGES, echo=lambda s: None)
    events = pd.read_parquet(rep.run_dir / "events.parquet")
    us = truth[(truth["region"] == "us") & (truth["t"] > truth["t"].max() - DAY)]
    assert sorted(events["ts"]) == sorted(us["t"])


def _mixed_type_dir(root: Path) -> None:
    """Two writers of one log: decimal ids and float seconds in a.parquet, int64 ids and
    int64 seconds in b.parquet."""
    import decimal

    root.mkdir()
    items_a, items_b = [5, 6, 7, 5], [7, 8, 5, 9]
    pq.write_table(pa.table({
        "u": ["x", "x", "y", "y"],
        "it": pa.array([decimal.Decimal(i) for i in items_a], pa.decimal128(10, 0)),
        "t": pa.array([1.7e9, 1.7e9 + 60, 1.7e9 + 120, 1.7e9 + 180], pa.float64())}),
        root / "a.parquet")
    pq.write_table(pa.table({
        "u": ["z", "z", "w", "w"], "it": pa.array(items_b, pa.int64()),
        "t": pa.array([1_700_000_240, 1_700_000_300, 1_700_000_360, 1_700_000_420], pa.int64())}),
        root / "b.parquet")


def test_a_directory_whose_files_disagree_on_column_types_loses_no_row(tmp_path, caplog):
    _mixed_type_dir(tmp_path / "logs")
    with caplog.at_level("WARNING"):
        res = ingest([str(tmp_path / "logs")], ColumnMap(item="it", ts="t", user="u"),
                     drop_duplicates=False)
    assert res.stats["rows_read"] == 8 and len(res.events) == 8
    # decimal 5 and int64 5 are one item (the id rule): 5 distinct ids, not 8
    assert sorted(res.vocabulary["id"]) == ["5", "6", "7", "8", "9"]
    assert sorted(res.events["ts"]) == [1_700_000_000 + 60 * k for k in range(8)]
    assert "disagree on the type of column 'it'" in caplog.text
    assert "a.parquet" in caplog.text and "b.parquet" in caplog.text


def test_unified_type_rules():
    from recembed.sources import unified_type

    assert unified_type([pa.int32(), pa.int64(), pa.uint16()]) == pa.int64()
    assert unified_type([pa.decimal128(10, 0), pa.int64()]) == pa.string()
    assert unified_type([pa.float64(), pa.int64()], timestamp=True) == pa.float64()
    assert unified_type([pa.string(), pa.int64()], timestamp=True) == pa.string()
    assert unified_type([pa.int64(), pa.int64()]) == pa.int64()


def test_missing_columns_error_prints_the_lines_to_add(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("SessionId,ItemId,Time\n1,10,1700000000\n1,11,1700000060\n")
    with pytest.raises(IngestError) as e:
        ingest([str(path)], ColumnMap(item="item_id", ts="timestamp", user="user_id"))
    msg = str(e.value)
    assert "log.csv" in msg and "['item_id', 'timestamp', 'user_id']" in msg
    assert 'item = "ItemId"' in msg and 'ts = "Time"' in msg
    assert 'user = ""' in msg and 'session = "SessionId"' in msg


def test_missing_columns_error_without_a_guess_says_what_to_map(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("a,b,c\n1,10,1700000000\n")
    with pytest.raises(IngestError, match=r"Map them under \[input.columns\]"):
        ingest([str(path)], ColumnMap(item="item_id", ts="timestamp", user="user_id"))
