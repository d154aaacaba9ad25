import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from recembed.cli import app
from recembed.synth import PROFILES, SynthLog, describe, synth_clicks, synth_profile

DAY = 86_400


def _by_user(ev: pd.DataFrame) -> pd.DataFrame:
    return ev.sort_values(["user_id", "timestamp"], kind="stable", ignore_index=True)


def _next_mask(ev: pd.DataFrame) -> np.ndarray:
    u = ev["user_id"].to_numpy()
    return np.r_[False, u[1:] == u[:-1]]


def test_same_seed_same_log_and_exact_size():
    a, b = synth_clicks(5_000, seed=1), synth_clicks(5_000, seed=1)
    assert len(a.events) == 5_000
    assert a.events.equals(b.events)
    assert not a.events.equals(synth_clicks(5_000, seed=2).events)


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_is_deterministic_exact_and_well_formed(name):
    a, b = synth_profile(name, 4_000, seed=3), synth_profile(name, 4_000, seed=3)
    assert a.events.equals(b.events) and a.items.equals(b.items)
    assert not a.events.equals(synth_profile(name, 4_000, seed=4).events)
    ev = a.events
    assert len(ev) == 4_000
    assert {"user_id", "item_id", "timestamp"} <= set(ev.columns)
    assert all(ev[c].dtype == np.int64 for c in ("user_id", "item_id", "timestamp"))
    assert ev["timestamp"].is_monotonic_increasing
    assert ev["item_id"].isin(a.items["item_id"]).all()
    assert a.items["item_id"].is_unique and "category" in a.items


def test_the_clicks_profile_is_the_original_generator():
    a = synth_profile("clicks", 3_000, seed=5)
    b = synth_clicks(3_000, seed=5)
    assert a.events.equals(b.events) and a.items.equals(b.items)
    assert synth_profile("clicks", 3_000, seed=5, bot_share=0.1).events.equals(
        synth_clicks(3_000, seed=5, bot_share=0.1).events)


def test_ratings_have_no_repeats_fast_bursts_and_span_months():
    ev = _by_user(synth_profile("ratings", 20_000, seed=0).events)
    assert not ev.duplicated(["user_id", "item_id"]).any()
    nxt = _next_mask(ev)
    gaps = pd.Series(np.diff(ev["timestamp"].to_numpy(), prepend=0)[nxt]).groupby(
        ev["user_id"].to_numpy()[nxt]).median()
    assert (gaps < 5).mean() > 0.5  # most users rate within seconds
    assert (gaps > 60).mean() < 0.1  # ... but every user is human-paced, not a crawler
    span = (ev["timestamp"].max() - ev["timestamp"].min()) / DAY
    assert 150 < span <= 212
    # many events per user, over months for the users who come back
    per_user = ev.groupby("user_id")["timestamp"].agg(["size", "min", "max"])
    assert per_user["size"].median() >= 40
    assert ((per_user["max"] - per_user["min"]) > 30 * DAY).mean() > 0.3


def test_ratings_plant_taste_not_order():
    log = synth_profile("ratings", 20_000, seed=1)
    ev = _by_user(log.events)
    cat = log.items.set_index("item_id")["category"].reindex(ev["item_id"]).to_numpy()
    nxt = _next_mask(ev)
    same = (cat[1:] == cat[:-1])[nxt[1:]].mean()
    shares = pd.Series(cat).value_counts(normalize=True).to_numpy()
    # consecutive ratings share a genre more often than independent draws would
    assert same > 1.25 * (shares ** 2).sum()
    # ... and a hidden niche far more often: a user's ratings concentrate on a few niches
    niche = log.items.set_index("item_id")["niche"].reindex(ev["item_id"]).to_numpy()
    conc = pd.Series(niche).groupby(ev["user_id"].to_numpy()).agg(
        lambda x: (x.value_counts(normalize=True) ** 2).sum())
    n_share = pd.Series(niche).value_counts(normalize=True).to_numpy()
    assert conc.median() > 2 * (n_share ** 2).sum()  # 1x for taste-free draws


def test_histories_span_years_with_sessions_days_apart():
    ev = _by_user(synth_profile("histories", 20_000, seed=0).events)
    span = (ev["timestamp"].max() - ev["timestamp"].min()) / DAY
    assert span > 2.5 * 365
    ts, nxt = ev["timestamp"].to_numpy(), _next_mask(ev)
    gap = np.diff(ts, prepend=0)
    starts = ~nxt | (gap > 1800)
    s_gap = gap[starts & nxt] / DAY  # gaps between a user's sessions
    assert np.median(s_gap) > 2
    per_user_span = ev.groupby("user_id")["timestamp"].agg(lambda s: s.max() - s.min()) / DAY
    assert (per_user_span > 365).mean() > 0.3


def test_histories_step_forward_inside_sessions():
    log = synth_profile("histories", 20_000, seed=2)
    ev = _by_user(log.events)
    it, ts, nxt = ev["item_id"].to_numpy(), ev["timestamp"].to_numpy(), _next_mask(ev)
    in_sess = nxt[1:] & (np.diff(ts) <= 1800)
    step = np.diff(it)[in_sess]
    assert ((step >= 1) & (step <= 3)).mean() > 0.4  # series order: i -> i+1..3
    assert (step == -1).mean() < 0.05


def test_purchases_are_sparse_short_and_weeks_apart():
    log = synth_profile("purchases", 20_000, seed=0)
    ev = _by_user(log.events)
    counts = ev["item_id"].value_counts()
    assert (counts <= 3).mean() > 0.5
    assert counts.max() > 20  # a popular head exists
    ts, nxt = ev["timestamp"].to_numpy(), _next_mask(ev)
    gap = np.diff(ts, prepend=0)
    starts = ~nxt | (gap > 1800)
    lengths = np.bincount(np.cumsum(starts) - 1)
    assert lengths.max() <= 4 and lengths.mean() < 2  # 1-3 items an order
    assert np.median(gap[starts & nxt]) > 7 * DAY
    cat = log.items.set_index("item_id")["category"].reindex(ev["item_id"]).to_numpy()
    in_sess = ~starts[1:]
    assert (cat[1:] == cat[:-1])[in_sess].mean() > 0.8


def test_music_replays_and_plays_albums_in_order():
    log = synth_profile("music", 20_000, seed=0)
    ev = _by_user(log.events)
    nxt = _next_mask(ev)
    seen_before = ev.duplicated(["user_id", "item_id"]).to_numpy()
    assert seen_before[nxt].mean() > 0.4
    items = log.items.set_index("item_id")
    alb = items["album"].reindex(ev["item_id"]).to_numpy()
    trk = items["track"].reindex(ev["item_id"]).to_numpy()
    nxt_track = (alb[1:] == alb[:-1]) & (trk[1:] == trk[:-1] + 1)
    assert nxt_track[nxt[1:]].mean() > 0.2
    per_user_items = ev.groupby("user_id")["item_id"].nunique()
    assert per_user_items.median() < 0.1 * len(log.items)  # a small library per user


@pytest.mark.parametrize("name", PROFILES)
def test_bot_share_adds_that_share_of_fast_regular_long_bots(name):
    log = synth_profile(name, 10_000, seed=0, bot_share=0.2)
    ev = log.events
    is_bot = ev["user_id"].isin(log.bot_users)
    assert is_bot.mean() == pytest.approx(0.2, abs=0.001)
    bots = _by_user(ev[is_bot])
    gaps = bots.groupby("user_id")["timestamp"].agg(lambda s: np.median(np.diff(s.to_numpy())))
    assert (gaps <= 2).all()
    def daily_max(e: pd.DataFrame) -> pd.Series:
        return e.groupby(["user_id", e["timestamp"] // DAY]).size().groupby(level=0).max()

    assert daily_max(bots).min() > max(500, daily_max(ev[~is_bot]).max())


def test_profiles_other_than_clicks_have_no_bots_unless_asked():
    for name in PROFILES[1:]:
        assert len(synth_profile(name, 2_000, seed=0).bot_users) == 0


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(PROFILES), n=st.integers(100, 3_000), seed=st.integers(0, 2**31),
       bot_share=st.sampled_from([0.0, 0.05, 0.5]))
def test_any_size_and_seed_gives_an_exact_sorted_log(name, n, seed, bot_share):
    log = synth_profile(name, n, seed, bot_share=bot_share)
    assert len(log.events) == n
    assert log.events["timestamp"].is_monotonic_increasing
    assert log.events["item_id"].isin(log.items["item_id"]).all()
    if name == "ratings":
        humans = log.events[~log.events["user_id"].isin(log.bot_users)]
        assert not humans.duplicated(["user_id", "item_id"]).any()


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match=r"unknown synth profile 'movies'.*ratings"):
        synth_profile("movies", 1_000)
    with pytest.raises(ValueError, match="bot_share"):
        synth_profile("music", 1_000, bot_share=1.0)
    with pytest.raises(ValueError, match="n_events"):
        synth_profile("music", 10)


def test_describe_counts_repeats_gaps_and_popularity_by_hand():
    ev = pd.DataFrame({
        "user_id": [1, 1, 1, 1, 2, 2],
        "item_id": [10, 11, 10, 12, 10, 12],
        "timestamp": [0, 2, 4, 4 + 5 * DAY, 0, 10],
    })
    items = pd.DataFrame({"item_id": [10, 11, 12], "category": [0, 0, 1]})
    d = describe(SynthLog(ev, items, np.array([2])))
    # next events: user 1's 11, 10, 12 and user 2's 12
    assert d["repeat_share"] == pytest.approx(1 / 4)  # user 1's second 10
    assert d["immediate_repeat_share"] == 0
    assert d["user_median_gap_s"] == pytest.approx(6.0)  # users: median(2, 2, 5 days) and 10
    assert d["sessions"] == 3 and d["bot_event_share"] == pytest.approx(2 / 6)
    assert d["popular_next_share"] == pytest.approx(1 / 4)  # item 10 (tied top, lower id)
    assert d["same_category_next_share"] == pytest.approx(2 / 3)  # 10-11, 11-10 yes; 10-12 no
    assert d["median_session_gap_days"] == pytest.approx(5, abs=1e-3)
    assert d["span_days"] == pytest.approx(5, abs=1e-3)


def test_cli_synth_writes_a_profile_and_rejects_an_unknown_one(tmp_path):
    runner = CliRunner()
    out = tmp_path / "r.parquet"
    r = runner.invoke(app, ["synth", str(out), "--profile", "ratings", "--events", "3000",
                            "--seed", "2", "--bot-share", "0.1"])
    assert r.exit_code == 0, r.output
    got = pd.read_parquet(out)
    want = synth_profile("ratings", 3_000, 2, bot_share=0.1).events
    assert got.equals(want)
    assert (tmp_path / "r_items.csv").exists()
    r = runner.invoke(app, ["synth", str(tmp_path / "x.csv"), "--profile", "movies"])
    # --profile is a choice: the CLI refuses it and lists the profiles
    assert r.exit_code == 2 and "movies" in r.output and "ratings" in r.output
