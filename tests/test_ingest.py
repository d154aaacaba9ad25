import numpy as np
import pandas as pd
import pytest

from recembed.ingest import ColumnMap, IngestError, ingest
from tests.conftest import DIGI, YOO

YOO_COLS = ColumnMap(item="ItemId", ts="Time", session="SessionId")


def _csv(tmp_path, text, name="log.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_yoochoose_reader_counts_and_vocabulary():
    res = ingest([str(YOO / "train.tsv")], YOO_COLS, test_paths=[str(YOO / "test.tsv")])
    raw = pd.concat([pd.read_csv(YOO / f, sep="\t") for f in ("train.tsv", "test.tsv")])
    n_dup = int(raw.duplicated().sum())
    assert res.stats["rows_read"] == len(raw)
    assert res.stats["duplicates"] == n_dup
    assert len(res.events) == len(raw) - n_dup
    assert res.stats["ts_unit"] == "s"
    # vocabulary: original ids, counts and first/last seen from an independent groupby
    dedup = raw.drop_duplicates()
    g = dedup.groupby(dedup["ItemId"].astype(str))
    v = res.vocabulary.set_index("id")
    assert len(v) == dedup["ItemId"].nunique()
    assert (v["count"] == g.size().reindex(v.index)).all()
    assert (v["first_ts"] == np.floor(g["Time"].min()).astype(np.int64).reindex(v.index)).all()
    assert res.events["item"].dtype == np.int32
    assert (res.events["user"] == -1).all()
    assert res.events["split"].sum() == len(pd.read_csv(YOO / "test.tsv", sep="\t"))


def test_diginetica_reader_adds_offset_to_the_day():
    cols = ColumnMap(item="item_id", ts="eventdate", ts_offset="timeframe", session="session_id",
                     user="user_id")
    # the sample writes absent users as NA: an id unless input.na_values says otherwise
    res = ingest([str(DIGI / "train-item-views.csv")], cols, ts_unit="iso", na_values=["NA"])
    raw = pd.read_csv(DIGI / "train-item-views.csv", sep=";")
    expect = (pd.to_datetime(raw["eventdate"]).astype("datetime64[s]").astype(np.int64)
              + raw["timeframe"] // 1000)
    got = res.events.sort_values("row")["ts"].to_numpy()
    assert (got == expect.to_numpy()).all()
    assert (res.events["user"] == -1).sum() == raw["user_id"].isna().sum()


def test_quarantine_gets_exactly_the_corrupted_rows(tmp_path):
    lines = ["user,item,ts"] + [f"u{i % 7},i{i % 13},{1_700_000_000 + 60 * i}" for i in range(300)]
    lines[11] = "u1,i2,not-a-time"          # data row 10: bad timestamp
    lines[51] = "u1,,1700003000"            # data row 50: empty item id
    lines[101] = "u1,i3,1700006000,extra"   # data row 100: wrong column count
    p = _csv(tmp_path, "\n".join(lines) + "\n")
    q = tmp_path / "q.parquet"
    res = ingest([str(p)], ColumnMap(item="item", ts="ts", user="user"), quarantine_path=q)
    quar = pd.read_parquet(q)
    assert quar["row"].tolist() == [10, 50, 100]
    assert "timestamp" in quar.loc[0, "reason"] and "not-a-time" in quar.loc[0, "raw"]
    assert "empty item id" in quar.loc[1, "reason"]
    assert "column count" in quar.loc[2, "reason"] and "extra" in quar.loc[2, "raw"]
    assert (quar["file"] == str(p)).all()
    assert len(res.events) == 297
    # the valid rows keep their position in the input file
    assert 100 not in set(res.events["row"]) and 101 in set(res.events["row"])


def test_too_many_bad_rows_stops_but_keeps_them(tmp_path):
    lines = ["user,item,ts"] + [f"u1,i{i},{'bad' if i % 20 == 0 else 1_700_000_000 + i}"
                                for i in range(200)]
    p = _csv(tmp_path, "\n".join(lines) + "\n")
    q = tmp_path / "q.parquet"
    with pytest.raises(IngestError, match=r"10 of 200 rows \(5.00%\).*max_bad_fraction"):
        ingest([str(p)], ColumnMap(item="item", ts="ts", user="user"), quarantine_path=q)
    assert len(pd.read_parquet(q)) == 10


def test_missing_column_names_file_column_and_existing_columns(tmp_path):
    p = _csv(tmp_path, "user,product,ts\nu1,i1,1\n")
    with pytest.raises(IngestError) as e:
        ingest([str(p)], ColumnMap(item="item", ts="ts", user="user"))
    msg = str(e.value)
    assert str(p) in msg and "'item'" in msg and "product" in msg


def test_empty_and_missing_files_fail_clearly(tmp_path):
    p = _csv(tmp_path, "user,item,ts\n")
    with pytest.raises(IngestError, match="no rows"):
        ingest([str(p)], ColumnMap(item="item", ts="ts", user="user"))
    with pytest.raises(IngestError, match="does not exist"):
        ingest([str(tmp_path / "nope.csv")], ColumnMap(item="item", ts="ts", user="user"))


@pytest.mark.parametrize(
    ("values", "unit", "expect"),
    [
        (["1700000000", "1700000060"], "s", [1_700_000_000, 1_700_000_060]),
        (["1700000000123", "1700000060999"], "ms", [1_700_000_000, 1_700_000_060]),
        (["2023-11-14T22:13:20Z", "2023-11-14 22:14:20"], "iso", [1_700_000_000, 1_700_000_060]),
    ],
)
def test_timestamp_units_are_detected(tmp_path, values, unit, expect):
    p = _csv(tmp_path, "user,item,ts\n" + "".join(f"u,i{k},{v}\n" for k, v in enumerate(values)))
    res = ingest([str(p)], ColumnMap(item="item", ts="ts", user="user"))
    assert res.stats["ts_unit"] == unit
    assert res.events["ts"].tolist() == expect


def test_parquet_file_and_directory_give_the_same_events(tmp_path):
    df = pd.DataFrame({"u": [1, 1, 2, 2], "it": ["a", "b", "a", "c"],
                       "t": [10, 20, 30, 40]})
    (tmp_path / "dir").mkdir()
    df.iloc[:2].to_parquet(tmp_path / "dir" / "part-0.parquet")
    df.iloc[2:].to_parquet(tmp_path / "dir" / "part-1.parquet")
    df.to_parquet(tmp_path / "one.parquet")
    cols = ColumnMap(item="it", ts="t", user="u")
    a = ingest([str(tmp_path / "one.parquet")], cols).events
    b = ingest([str(tmp_path / "dir")], cols).events
    assert a[["user", "item", "ts"]].equals(b[["user", "item", "ts"]])


def test_exact_duplicates_are_dropped_and_counted(tmp_path):
    p = _csv(tmp_path, "user,item,ts\nu1,a,1.5\nu1,a,1.5\nu1,a,1.7\nu2,a,1.5\n")
    res = ingest([str(p)], ColumnMap(item="item", ts="ts", user="user"), ts_unit="s")
    # the 1.7 event is not a duplicate even though it falls in the same second
    assert res.stats["duplicates"] == 1 and len(res.events) == 3


def test_rolling_window_keeps_the_last_days(tmp_path):
    day = 86_400
    rows = "".join(f"u1,i{d},{1_700_000_000 + d * day}\n" for d in range(10))
    p = _csv(tmp_path, "user,item,ts\n" + rows)
    res = ingest([str(p)], ColumnMap(item="item", ts="ts", user="user"), window_days=3.5)
    assert sorted(res.events["ts"]) == [1_700_000_000 + d * day for d in (6, 7, 8, 9)]
    assert res.stats["outside_window"] == 6


def test_an_iso_time_past_2262_is_quarantined_not_a_crash(tmp_path):
    # pandas 3 parses it (in us); the epoch arithmetic in ns overflowed and ingest crashed
    rows = "".join(f"u,i{k},2023-11-14T{10 + k // 60:02d}:{k % 60:02d}:20Z\n" for k in range(300))
    p = _csv(tmp_path, "user,item,ts\n" + rows + "u,late,2999-01-01T00:00:00Z\n")
    res = ingest([str(p)], ColumnMap(item="item", ts="ts", user="user"), ts_unit="iso")
    assert len(res.events) == 300 and "late" not in set(res.events["item"])
    q = res.quarantine
    assert len(q) == 1 and "item='late'" in q["raw"].iloc[0]
    assert "implausible" in q["reason"].iloc[0]
