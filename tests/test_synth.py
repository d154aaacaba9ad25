import numpy as np

from recembed.synth import synth_clicks


def test_same_seed_same_log_and_exact_size():
    a, b = synth_clicks(5_000, seed=1), synth_clicks(5_000, seed=1)
    assert len(a.events) == 5_000
    assert a.events.equals(b.events)
    assert not a.events.equals(synth_clicks(5_000, seed=2).events)


def test_popularity_is_heavy_tailed_and_sessions_stay_in_category():
    log = synth_clicks(50_000, seed=0)
    counts = log.events["item_id"].value_counts().to_numpy()
    top1pct = counts[: max(1, len(counts) // 100)].sum() / counts.sum()
    assert top1pct > 0.05  # Zipf head: 1% of items carry well over 1% of clicks
    cat = log.items.set_index("item_id")["category"]
    ev = log.events.sort_values(["user_id", "timestamp"], kind="stable")
    c = cat.reindex(ev["item_id"]).to_numpy()
    same_user = ev["user_id"].to_numpy()[1:] == ev["user_id"].to_numpy()[:-1]
    close = np.diff(ev["timestamp"].to_numpy()) < 1800
    mask = same_user & close
    assert (c[1:][mask] == c[:-1][mask]).mean() > 0.6


def test_bots_are_fast_and_timestamps_span_the_days():
    log = synth_clicks(50_000, seed=0, bot_share=0.04, days=10)
    ev = log.events
    span = (ev["timestamp"].max() - ev["timestamp"].min()) / 86_400
    assert 9 < span <= 10
    per_user = ev.groupby("user_id").size()
    assert per_user.max() > 1000  # bot users click far more than any person
