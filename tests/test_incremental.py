"""recembed.incremental (train.mode = "incremental"): the mode decision, the session selection
and replay sample, training that continues the previous vectors and adds new items, the config
refusals, the train stage's declared input, and two nights through the pipeline."""

import json

import numpy as np
import pandas as pd
import pytest

from recembed import artifacts as A
from recembed.config import ConfigError, load_config
from recembed.incremental import (
    DAY,
    IncrementalParams,
    PreviousModel,
    decide,
    replay_sample,
    sample_lines,
    select_sessions,
)
from recembed.train import train_word2vec

T0 = 1_700_000_000


def _prev(**kw) -> PreviousModel:
    base = dict(version="v1", model="item2vec+deepwalk", dimension=16, postprocess="none",
                data_end=T0, last_full_end=T0, codes=np.arange(3),
                vectors=np.zeros((3, 16), np.float32), context=np.zeros((3, 16), np.float32))
    return PreviousModel(**{**base, **kw})


INC = IncrementalParams(mode="incremental", full_every_days=7.0, replay_share=0.1, seed=1)


def _decide(prev, data_end=T0 + DAY, params=INC, model="item2vec+deepwalk", dim=16):
    return decide(params, prev, data_end=data_end, model=model, vector_size=dim)


def test_incremental_when_the_previous_version_can_be_continued():
    d = _decide(_prev(last_full_end=T0 - 2 * DAY))
    assert d.mode == "incremental" and d.previous == "v1"
    assert d.last_full_end == T0 - 2 * DAY  # the full training behind it, carried forward
    assert "v1" in d.reason and "3.00 days" in d.reason


@pytest.mark.parametrize(("prev", "kw", "words"), [
    (None, {}, "no version is published"),
    (_prev(last_full_end=T0 - 6 * DAY), {}, "scheduled"),           # 7.0 days >= 7
    (_prev(dimension=32), {}, "32 dimensions, train.vector_size is 16"),
    (_prev(postprocess="center"), {}, "post-processed (center)"),
    (_prev(model="item2vec+deepwalk+line"), {}, "LINE"),
    (_prev(model="item2vec"), {}, "another corpus"),
    (_prev(data_end=None, last_full_end=None), {}, "records no training data end"),
    (_prev(), {"data_end": T0}, "no training session ends after"),
    (_prev(), {"params": IncrementalParams(mode="full")}, 'train.mode = "full"'),
])
def test_full_retrain_when_none_old_or_incompatible_and_says_why(prev, kw, words):
    d = _decide(prev, **kw)
    assert d.mode == "full" and words in d.reason
    assert d.last_full_end == kw.get("data_end", T0 + DAY)  # this run is the new full training


def test_a_version_without_context_vectors_continues_its_input_vectors():
    d = _decide(_prev(context=None))
    assert d.mode == "incremental" and "no context vectors" in d.reason


def test_the_schedule_counts_data_days_not_the_clock():
    prev = _prev(last_full_end=T0 - DAY)
    assert _decide(prev, data_end=T0 - DAY + int(6.99 * DAY)).mode == "incremental"
    assert _decide(prev, data_end=T0 - DAY + 7 * DAY).mode == "full"


def _sessions():
    # sessions 0..99 end at T0 + s hours; items: session s holds items s % 10 and s % 10 + 10;
    # session 5 also holds item 50, which the previous version never trained
    ids = np.repeat(np.arange(100), 2)
    items = np.stack([np.arange(100) % 10, np.arange(100) % 10 + 10], 1).ravel()
    sessions = pd.DataFrame({"session": np.r_[ids, 5], "item": np.r_[items, 50]}) \
        .sort_values("session", kind="stable")
    table = pd.DataFrame({"session": np.arange(101), "end": T0 + np.arange(101) * 3600,
                          "split": np.r_[np.zeros(100, np.int8), 1]})  # 100: holdout
    return sessions, table


def test_new_sessions_and_sessions_with_untrained_items_are_kept_and_a_share_replayed():
    sessions, table = _sessions()
    since = T0 + 79 * 3600  # sessions 80..99 are new
    keep, st = select_sessions(sessions, table, since, known=np.arange(20), share=0.25, seed=3)
    assert st["incremental_sessions"] == 20 and st["older_sessions"] == 80
    assert st["new_item_sessions"] == 1 and 5 in keep  # item 50 needs training
    assert set(range(80, 100)) <= set(keep) and 100 not in keep  # never the holdout
    assert st["replayed_sessions"] == round(0.25 * 79) == len(keep) - 21
    again, _ = select_sessions(sessions, table, since, np.arange(20), 0.25, 3)
    other, _ = select_sessions(sessions, table, since, np.arange(20), 0.25, 4)
    assert np.array_equal(keep, again) and not np.array_equal(keep, other)
    none, st0 = select_sessions(sessions, table, since, np.arange(60), 0.0, 3)
    assert st0["replayed_sessions"] == 0 and list(none) == list(range(80, 100))


def test_replay_sample_is_the_seeds_alone():
    a = replay_sample(1000, 0.1, seed=7)
    assert len(a) == 100 and len(set(a)) == 100 and (np.diff(a) > 0).all()
    assert np.array_equal(a, replay_sample(1000, 0.1, seed=7))
    assert not np.array_equal(a, replay_sample(1000, 0.1, seed=8))
    assert len(replay_sample(1000, 0.0, 7)) == 0 and len(replay_sample(1000, 1.0, 7)) == 1000


def test_walk_lines_are_sampled_by_seed(tmp_path):
    src = tmp_path / "walks.txt"
    src.write_text("".join(f"{i} {i + 1}\n" for i in range(2000)))
    n = sample_lines(src, tmp_path / "a.txt", 0.3, seed=1)
    sample_lines(src, tmp_path / "b.txt", 0.3, seed=1)
    sample_lines(src, tmp_path / "c.txt", 0.3, seed=2)
    a = (tmp_path / "a.txt").read_text()
    assert 500 < n < 700 and len(a.splitlines()) == n
    assert a == (tmp_path / "b.txt").read_text() != (tmp_path / "c.txt").read_text()
    assert set(a.splitlines()) <= set(src.read_text().splitlines())


def test_continued_training_keeps_untouched_items_and_trains_new_ones(tmp_path):
    """Vocabulary from the whole corpus, passes over the new corpus only: an item absent from
    the new corpus keeps its previous input vector exactly (only centre words move), a new
    item gets a vector near the items it was clicked with, a previous item the run no longer
    has is not in the result."""
    rng = np.random.default_rng(0)
    full = tmp_path / "full.txt"
    new = tmp_path / "new.txt"
    # old: clusters 0..9 and 10..19; new sessions: item 20 with cluster 0..9 only
    old_lines = [" ".join(map(str, c * 10 + rng.integers(0, 10, 6)))
                 for c in rng.integers(0, 2, 400)]
    new_lines = [" ".join(map(str, [*rng.integers(0, 10, 5), 20])) for _ in range(200)]
    full.write_text("\n".join(old_lines + new_lines) + "\n")
    new.write_text("\n".join(new_lines) + "\n")
    base = train_word2vec(tmp_path / "full.txt", vector_size=16, epochs=5, workers=1, seed=1)
    keep = base.codes < 20
    # the previous version also had item 99, gone from this run's corpus
    init = (np.r_[base.codes[keep], 99], np.r_[base.vectors[keep], np.ones((1, 16))],
            np.r_[base.context[keep], np.ones((1, 16))])
    res = train_word2vec(full, vector_size=16, epochs=5, workers=1, seed=2,
                         init=tuple(np.asarray(x, np.float32) if i else x
                                    for i, x in enumerate(init)), train_file=new)
    assert 99 not in res.codes and 20 in res.codes
    assert res.stats["warm_started"] == 20
    assert res.stats["train_corpus_tokens"] == 1200
    assert res.stats["tokens_trained"] == 1200 * 5 < res.stats["corpus_tokens"] * 5
    rows = {int(c): i for i, c in enumerate(res.codes)}
    untouched = [rows[c] for c in range(10, 20)]  # cluster 10..19: not in the new corpus
    np.testing.assert_array_equal(res.vectors[untouched], base.vectors[keep][10:20])
    u = res.vectors / np.linalg.norm(res.vectors, axis=1, keepdims=True)
    v20 = u[rows[20]]
    assert v20 @ u[[rows[c] for c in range(10)]].mean(0) > v20 @ u[untouched].mean(0) + 0.2


@pytest.mark.parametrize(("overrides", "keys"), [
    (["line.mode='concat'"], ("train.mode", "line.mode")),
    (["train.postprocess='center'"], ("train.mode", "train.postprocess")),
])
def test_impossible_combinations_are_refused_naming_the_keys(overrides, keys):
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.mode='incremental'", *overrides])
    assert all(k in str(e.value) for k in keys)


def test_incremental_with_warm_start_warm_starts_the_full_nights():
    """Both on is a valid config: incremental nights continue the previous version, full ones
    (scheduled or forced) start from the published vectors as warm start does."""
    from recembed.stages import STAGES

    train = next(s for s in STAGES if s.name == "train")
    cfg = load_config(None, ["train.mode='incremental'", "train.warm_start=true"])
    kinds = {type(r) for r in train.declared_reads(cfg)}
    assert {A.PublishedRoot, A.PreviousVersion} <= kinds


def test_incremental_mode_never_post_processes_nor_tries_line():
    from recembed import settings as S

    cfg = load_config(None, ["train.mode='incremental'",
                             "calibrate.corpora=['both', 'both+line']"])
    assert S.postprocess_options(cfg) == ["none"]
    assert all("line" not in c for c in S.calibrated_corpora(cfg))
    assert S.resolve_config(cfg, {"enabled": True, "postprocess": "zca"}).train.postprocess \
        == "none"


def test_the_previous_version_is_an_input_of_train_bound_to_its_run(tmp_path):
    """A changed previous version changes train's fingerprint; the version this run directory
    published itself is not its previous version (a rerun after a crash past publish)."""
    from recembed.pipeline import stage_fingerprint
    from recembed.stages import STAGES

    train = next(s for s in STAGES if s.name == "train")
    pub, run = tmp_path / "published", tmp_path / "runs" / "r"
    cfg = load_config(None, [f"publish.dir='{pub}'", "train.mode='incremental'"])
    assert A.SESSIONS_TRAIN in train.declared_reads(cfg)
    assert not any(isinstance(r, A.PreviousVersion)
                   for r in train.declared_reads(load_config(None, [f"publish.dir='{pub}'"])))

    def version(name, made_by):
        (pub / name).mkdir(parents=True)
        A.write_json(pub / name / A.MANIFEST, {"run_dir": str(made_by)})
        (pub / A.LATEST).write_text(name + "\n")

    before = stage_fingerprint(cfg, train, {}, run)
    version("v1", tmp_path / "runs" / "other")
    with_v1 = stage_fingerprint(cfg, train, {}, run)
    assert with_v1 != before
    version("v2", run)  # this run's own publish
    assert stage_fingerprint(cfg, train, {}, run) == with_v1
    bound = [r for r in train.declared_reads(cfg, run) if isinstance(r, A.PreviousVersion)]
    assert bound[0].version_dir().name == "v1"


def _night_logs(tmp_path):
    from recembed.synth import synth_clicks, write_synth

    write_synth(synth_clicks(6_000, days=10, seed=2), tmp_path / "all.csv")
    df = pd.read_csv(tmp_path / "all.csv")
    ts = (pd.to_datetime(df["timestamp"]) - pd.Timestamp("1970-01-01", tz="UTC")) \
        // pd.Timedelta("1s")
    out = []
    for night, days in ((1, 8), (2, 9)):
        p = tmp_path / f"night{night}" / "clicks.csv"
        p.parent.mkdir()
        df[ts < ts.min() + days * DAY].to_csv(p, index=False)
        out.append(p)
    return out


@pytest.mark.slow  # two small nightly runs (~25 s)
def test_two_nights_the_second_incremental_and_its_manifest_says_so(tmp_path):
    from recembed.pipeline import run_pipeline
    from recembed.stages import STAGES

    pub = tmp_path / "published"
    reports = []
    for log in _night_logs(tmp_path):
        cfg = load_config(None, [
            f"input.paths=['{log}']", "input.categories_path=''",
            f"run.runs_dir='{tmp_path / 'runs'}'", f"publish.dir='{pub}'",
            "train.workers=1", "train.vector_size=8", "walks.walks_per_node=1",
            "calibrate.enabled=false", "train.target_tokens=100000",
            "evaluate.baselines=['pop']", "evaluate.ks=[20]", "run.progress=false",
            "publish.enabled=true", "publish.force=true", "train.mode='incremental'"])
        reports.append(run_pipeline(cfg, plan=STAGES, echo=lambda s: None))
    first, second = (json.loads(A.TRAIN_STATS.path(r.run_dir).read_text()) for r in reports)
    assert first["mode"] == "full" and "no version is published" in first["mode_reason"]
    assert second["mode"] == "incremental" and second["mode_requested"] == "incremental"
    v1 = reports[0].stages["publish"]["stats"]["version"]
    assert second["previous_version"] == v1 and v1 in second["mode_reason"]
    assert second["last_full_end"] == first["data_end"] < second["data_end"]
    assert second["incremental_sessions"] > 0 and second["warm_started"] > 0
    assert second["tokens_trained"] < second["corpus_tokens"] * second["epochs"]
    assert second["vocab"] == second["warm_started"] + second["new_items"]
    v2 = A.current_version_dir(pub)
    man = json.loads((v2 / A.MANIFEST).read_text())
    assert man["training"]["mode"] == "incremental" and man["training"]["previous_version"] == v1
    assert A.Metrics.load(A.METRICS.path(v2)).train["mode"] == "incremental"
    # a rerun of night 2 (its own version now LATEST) resumes: train is not rerun
    again = run_pipeline(cfg, plan=STAGES, echo=lambda s: None)
    assert again.stages["train"]["status"] == "skipped"


def test_load_previous_keeps_trained_rows_this_run_knows(tmp_path):
    """Cold-start rows (origin side_info) and ids this run has never seen are not continued;
    the data ends come from the manifest's `training` record."""
    from recembed.incremental import load_previous
    from tests.conftest import make_version

    v = make_version(tmp_path / "published", "v1", n=10, d=4)
    # this run knows sku0..sku8 under other codes (sku9 is gone from its data)
    vocab = pd.DataFrame({"code": np.arange(9) + 100, "id": [f"sku{i}" for i in range(9)]})
    prev = load_previous(v, vocab)
    assert prev.data_end is None and prev.dimension == 4 and prev.postprocess == "none"
    assert prev.codes.tolist() == list(range(100, 107))  # sku7..sku9 are side_info rows
    emb = A.Embeddings.load(v)
    np.testing.assert_array_equal(prev.vectors, emb.vectors[:7])
    np.testing.assert_array_equal(prev.context, emb.context[:7])
    man = json.loads((v / A.MANIFEST).read_text())
    man["training"] = {"data_end": T0, "last_full_end": T0 - DAY}
    A.write_json(v / A.MANIFEST, man)
    again = load_previous(v, vocab)
    assert (again.data_end, again.last_full_end) == (T0, T0 - DAY)
    assert load_previous(None, vocab) is None
