import numpy as np
import pandas as pd
from hypothesis import example, given, settings
from hypothesis import strategies as st

from recembed.ingest import ColumnMap, ingest
from recembed.sessions import DAY, session_weights, sessionize
from tests.conftest import DIGI, YOO


def _reference_sessions(df: pd.DataFrame, max_length: int = 200, min_length: int = 2):
    """Straightforward per-session loop: sort by (session, floored ts) keeping input order,
    collapse immediate repeats, split at max_length, drop short ones. Returns lengths per split."""
    out = {0: [], 1: []}
    for (_, split), g in df.groupby(["sid", "split"], sort=False):
        g = g.sort_values("t", kind="stable")
        items = g["item"].tolist()
        collapsed = [x for i, x in enumerate(items) if i == 0 or x != items[i - 1]]
        for k in range(0, len(collapsed), max_length):
            chunk = collapsed[k:k + max_length]
            if len(chunk) >= min_length:
                out[split].append(len(chunk))
    return out


def test_yoochoose_sessions_match_a_straightforward_count():
    res = ingest([str(YOO / "train.tsv")], ColumnMap(item="ItemId", ts="Time", session="SessionId"),
                 test_paths=[str(YOO / "test.tsv")])
    s = sessionize(res.events, half_life_days=float("inf"))
    raw = pd.concat([pd.read_csv(YOO / "train.tsv", sep="\t").assign(split=0),
                     pd.read_csv(YOO / "test.tsv", sep="\t").assign(split=1)], ignore_index=True)
    raw = raw.drop_duplicates(["SessionId", "ItemId", "Time"])
    raw = raw.assign(sid=raw["SessionId"], item=raw["ItemId"], t=np.floor(raw["Time"]))
    ref = _reference_sessions(raw)
    tab = s.table
    assert sorted(tab.loc[tab["split"] != 1, "length"]) == sorted(ref[0])
    assert sorted(tab.loc[tab["split"] == 1, "length"]) == sorted(ref[1])
    assert len(s.train) == sum(ref[0]) and len(s.test) == sum(ref[1])


def test_diginetica_sessions_and_holdout_match_a_straightforward_count():
    cols = ColumnMap(item="item_id", ts="eventdate", ts_offset="timeframe", session="session_id",
                     user="user_id")
    res = ingest([str(DIGI / "train-item-views.csv")], cols, ts_unit="iso")
    s = sessionize(res.events, holdout_days=7)
    raw = pd.read_csv(DIGI / "train-item-views.csv", sep=";").drop_duplicates(
        ["session_id", "item_id", "eventdate", "timeframe"])
    t = (pd.to_datetime(raw["eventdate"]).astype("datetime64[s]").astype(np.int64)
         + raw["timeframe"] // 1000)
    raw = raw.assign(sid=raw["session_id"], item=raw["item_id"], t=t, split=0)
    # holdout: sessions whose last event is within 7 days of the newest session end
    kept = []
    for _, g in raw.groupby("sid"):
        g = g.sort_values("t", kind="stable")
        items = g["item"].tolist()
        collapsed = [x for i, x in enumerate(items) if i == 0 or x != items[i - 1]]
        if len(collapsed) >= 2:
            kept.append((len(collapsed), g["t"].max()))
    ends = np.array([e for _, e in kept])
    test = ends > ends.max() - 7 * DAY
    assert sorted(s.table.loc[s.table["split"] == 1, "length"]) == sorted(
        n for (n, _), m in zip(kept, test, strict=False) if m)
    assert len(s.table) == len(kept)


def test_bots_are_removed_and_reported():
    rng = np.random.default_rng(0)
    human = pd.DataFrame({"user": np.repeat(np.arange(50), 10), "item": rng.integers(0, 30, 500),
                          "ts": np.tile(np.arange(10) * 60, 50) + 1_000_000})
    bot = pd.DataFrame({"user": 99, "item": rng.integers(0, 30, 3000),
                        "ts": 1_000_000 + np.arange(3000) // 3})  # 3 clicks per second
    ev = pd.concat([human, bot], ignore_index=True).astype({"user": np.int32, "item": np.int32})
    s = sessionize(ev, holdout_days=0, collapse_repeats=False, bot_max_share=1.0)
    assert s.stats["bot_entities"] == 1 and s.stats["bot_events"] == 3000
    assert (s.table["user"] != 99).all()
    off = sessionize(ev, holdout_days=0, bots=False, collapse_repeats=False)
    assert (off.table["user"] == 99).any()


def test_long_sessions_are_split_not_truncated():
    ev = pd.DataFrame({"user": np.zeros(25, np.int32), "item": np.arange(25, dtype=np.int32),
                       "ts": np.arange(25) * 10})
    s = sessionize(ev, max_length=10, holdout_days=0, bots=False)
    assert s.table["length"].tolist() == [10, 10, 5]
    assert s.train["item"].tolist() == list(range(25))


def test_weights_follow_the_half_life():
    w = session_weights(np.array([10 * DAY, 3 * DAY, 10 * DAY - 7 * DAY]), 10 * DAY, 7.0)
    np.testing.assert_allclose(w, [1.0, 0.5, 0.5])
    assert (session_weights(np.array([0, 5]), 100 * DAY, float("inf")) == 1).all()


events_strategy = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 6), st.integers(0, 20_000)),
    min_size=1, max_size=150,
)


@settings(max_examples=150, deadline=None)
@given(events_strategy, st.integers(1, 90), st.integers(2, 8), st.booleans())
# a collapsed repeat must not bridge a gap: 0 -> 1 s -> 421 s with a 420 s gap
@example(rows=[(0, 0, 0), (0, 0, 1), (0, 1, 421)], gap_minutes=7, cap=2, collapse=True)
def test_sessionize_properties(rows, gap_minutes, cap, collapse):
    ev = pd.DataFrame(rows, columns=["user", "item", "ts"]).astype(
        {"user": np.int32, "item": np.int32, "ts": np.int64})
    s = sessionize(ev, gap_minutes=gap_minutes, max_length=cap, min_length=1,
                   collapse_repeats=collapse, holdout_days=0, bots=False, half_life_days=3)
    sess = pd.concat([s.train, s.test])
    # every kept event appears exactly once; without collapsing, every event is kept
    assert sess["event"].is_unique
    if not collapse:
        assert sorted(sess["event"]) == list(range(len(ev)))
    for _, g in sess.groupby("session"):
        assert len(g) <= cap
        assert (np.diff(g["ts"]) <= gap_minutes * 60).all()
        assert (np.diff(g["ts"]) >= 0).all()
        assert ev.loc[g["event"], "user"].nunique() == 1
        assert (g["item"].to_numpy() == ev.loc[g["event"], "item"].to_numpy()).all()
        if collapse:
            assert (np.diff(g["item"]) != 0).all()
    w = s.table["weight"].to_numpy()
    assert ((w > 0) & (w <= 1)).all()
    order = np.argsort(s.table["end"].to_numpy(), kind="stable")
    assert (np.diff(w[order]) >= -1e-12).all()  # older sessions never weigh more
