import itertools

import numpy as np
import pandas as pd

from recembed.sequences import session_multiplicity, write_session_corpus


def _sessions(n, length=3, n_items=50, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"session": np.repeat(np.arange(n), length),
                         "item": rng.integers(0, n_items, n * length)})


def _lines(path):
    return path.read_text().splitlines()


def test_old_sessions_appear_proportionally_less(tmp_path):
    """A short half-life: weights 1, 0.25 and 0.1 (mean 0.45) with replication 1.8 (copies per
    session on average) -> 4, 1 and 0.4 expected copies."""
    n = 3000
    s = pd.DataFrame({"session": np.arange(3 * n), "item": np.arange(3 * n)})  # token = session
    w = np.r_[np.full(n, 1.0), np.full(n, 0.25), np.full(n, 0.1)]
    st = write_session_corpus(s, w, tmp_path / "c.txt", replication=1.8, seed=1, min_copies=0)
    # single-token sessions are still written (filtering is sessionize's job)
    counts = np.bincount([int(x) for x in _lines(tmp_path / "c.txt")], minlength=3 * n)
    assert counts[:n].mean() == 4.0
    assert abs(counts[n:2 * n].mean() - 1.0) < 1e-9
    assert abs(counts[2 * n:].mean() - 0.4) < 0.03  # Bernoulli(0.4) x 3000: sd 0.009
    assert st.sessions_absent == int((counts == 0).sum()) > 0
    # at the default floor no session drops out: the light ones appear once
    write_session_corpus(s, w, tmp_path / "d.txt", replication=1.8, seed=1)
    floor = np.bincount([int(x) for x in _lines(tmp_path / "d.txt")], minlength=3 * n)
    assert floor[2 * n:].min() == 1 and (floor[:n] == 4).all()


def test_repeats_are_spread_not_adjacent(tmp_path):
    s = _sessions(200)
    write_session_corpus(s, np.full(200, 1.0), tmp_path / "c.txt", replication=3, seed=0)
    lines = _lines(tmp_path / "c.txt")
    assert len(lines) == 600
    assert all(a != b for a, b in itertools.pairwise(lines))
    assert lines[:200] == lines[200:400]  # round r repeats the corpus order


def test_no_decay_gives_every_session_once_in_order(tmp_path):
    s = _sessions(50, length=4)
    write_session_corpus(s, np.ones(50), tmp_path / "c.txt")
    lines = _lines(tmp_path / "c.txt")
    expect = [" ".join(map(str, g["item"])) for _, g in s.groupby("session")]
    assert lines == expect


def test_long_sessions_are_split_for_gensim(tmp_path):
    s = pd.DataFrame({"session": np.zeros(25_000, int), "item": np.arange(25_000) % 97})
    st = write_session_corpus(s, np.ones(1), tmp_path / "c.txt")
    lens = [len(x.split()) for x in _lines(tmp_path / "c.txt")]
    assert lens == [10_000, 10_000, 5_000] and st.tokens == 25_000


def test_multiplicity_is_seeded():
    w = np.random.default_rng(0).random(1000)
    a = session_multiplicity(w, 2.0, seed=5, min_copies=0)
    b = session_multiplicity(w, 2.0, seed=5, min_copies=0)
    assert (a == b).all() and not (a == session_multiplicity(w, 2.0, seed=6, min_copies=0)).all()
    m = 2 * w / w.mean()
    assert ((a == np.floor(m)) | (a == np.floor(m) + 1)).all()
    assert abs(a.mean() - 2.0) < 0.1


def test_replication_draws_from_each_sessions_own_stream(tmp_path):
    """Any partitioning of the sessions gives the same corpus: a session's copies depend on
    the seed, its id and its weight only, not on which other sessions are written with it."""
    rng = np.random.default_rng(1)
    n = 400
    s = pd.DataFrame({"session": np.repeat(np.arange(n) * 3 + 5, 2),
                      "item": rng.integers(0, 30, 2 * n)})
    table = pd.DataFrame({"session": np.arange(n) * 3 + 5, "weight": rng.random(n)})
    mean = table["weight"].mean()
    write_session_corpus(s, table, tmp_path / "all.txt", replication=1.5, seed=9)
    parts = []
    for half in (s["session"] % 2 == 0, s["session"] % 2 == 1):
        sub = s[half.to_numpy()]
        sub_table = table[table["session"].isin(sub["session"])]
        # scale so that each partition's mean weight is the global one
        sub_table = sub_table.assign(weight=sub_table["weight"] * mean / sub_table["weight"].mean())
        write_session_corpus(sub, sub_table, tmp_path / "part.txt", replication=1.5, seed=9)
        parts += _lines(tmp_path / "part.txt")
    assert sorted(parts) == sorted(_lines(tmp_path / "all.txt"))


def test_weights_are_joined_by_session_id(tmp_path):
    s = pd.DataFrame({"session": [2, 2, 9, 9], "item": [1, 2, 3, 4]})
    table = pd.DataFrame({"session": [9, 2], "weight": [1e-9, 1.0]})  # table order != id order
    write_session_corpus(s, table, tmp_path / "c.txt", replication=1.0, seed=0, min_copies=0)
    assert _lines(tmp_path / "c.txt") == ["1 2", "1 2"]  # all the weight is session 2's


def test_the_session_stream_is_the_walk_stream():
    from recembed.sequences import session_uniform
    from recembed.walks import _uniform, _walk_state

    ids = np.array([0, 1, 17, 2**40 + 3])
    # np.uint64 around the state: from Python, numba hands it back as a plain (signed) int
    expect = [_uniform(np.uint64(_walk_state(np.uint64(5), np.uint64(i))))[1] for i in ids]
    np.testing.assert_array_equal(session_uniform(5, ids), expect)
