"""The item catalog and cold start (issue 14): reading and quarantining catalog rows, the cold
schemes, the origin flags, evaluation with cold targets, and end-to-end serving of cold items."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recembed.catalog import (
    REASON_DELISTED,
    REASON_NO_ATTRIBUTES,
    CatalogError,
    cold_rows,
    delisting_warning,
    read_catalog,
    write_side_sentences,
)
from recembed.evaluate import Queries, category_scorer, cold_metrics
from recembed.synth import synth_catalog, write_synth

VOCAB = pd.DataFrame({"code": np.arange(4, dtype=np.int32), "id": ["a", "b", "c", "d"],
                      "first_ts": [100, 200, 300, 400]})


def _csv(tmp_path, text: str):
    p = tmp_path / "catalog.csv"
    p.write_text(text)
    return p


def test_catalog_quarantines_missing_and_duplicate_ids_and_codes_unknown_ids(tmp_path):
    p = _csv(tmp_path, "sku;cat;price\n"
                       "a;x;10\n"
                       ";x;3\n"          # row 1: no id
                       "b;y;abc\n"       # price not a number: missing, not a bad row
                       "a;z;5\n"         # row 3: a again
                       "new1;x;7\n"      # not in the log: a code after the vocabulary's
                       "c;;\n"           # no attribute at all
                       "new2;;\n")
    cat = read_catalog(p, "sku", ["cat", "price"], VOCAB, numeric=["price"], buckets=2,
                       category="cat", first_seen=np.array([100.0, 200, np.nan, 400]))
    q = cat.quarantine
    assert q["row"].tolist() == [1, 3]
    assert "missing item id" in q["reason"][0] and "duplicate item id 'a'" in q["reason"][1]
    assert (q["file"] == str(p)).all() and "cat=z" in q["raw"][1]
    t = cat.table.set_index("id")
    assert t.loc["a", "a0"] == t.loc["new1", "a0"] != t.loc["b", "a0"]  # the first a row kept
    assert t.loc["new1", "code"] == 4 and t.loc["new2", "code"] == 5
    assert t["in_log"].to_dict() == {"a": True, "b": True, "new1": False, "c": True,
                                     "new2": False}
    assert t.loc["b", "a1"] == -1 and cat.stats["bad_numeric"] == {"price": 1}
    assert t.loc["c", "n_attributes"] == 0 and t.loc["a", "n_attributes"] == 2
    assert t.loc["a", "a1"] == 1 and t.loc["new1", "a1"] == 0  # 10 above the median of 10, 7
    assert cat.stats["log_items_not_in_catalog"] == 1  # d
    assert t.loc["a", "listed"] == 100  # first event in training: no listing column
    # never clicked in training (c, new1, new2): new listings, newer than every clicked item,
    # later catalog rows newer
    assert t.loc["b", "listed"] < t.loc["new1", "listed"] < t.loc["c", "listed"] \
        < t.loc["new2", "listed"]


def test_catalog_errors_name_the_key_and_the_columns(tmp_path):
    with pytest.raises(CatalogError, match=r"input\.catalog\.path"):
        read_catalog(tmp_path / "nope.csv", "sku", ["cat"], VOCAB)
    p = _csv(tmp_path, "sku,cat\na,x\n")
    with pytest.raises(CatalogError, match=r"no column\(s\) \['colour'\].*'sku', 'cat'"):
        read_catalog(p, "sku", ["colour"], VOCAB)
    bad = _csv(tmp_path, "sku,cat\n,x\n,y\na,z\n")
    with pytest.raises(CatalogError, match=r"2 of 3 rows are bad.*max_bad_fraction"):
        read_catalog(bad, "sku", ["cat"], VOCAB, max_bad_fraction=0.5)


def _table(rows: list[tuple]) -> pd.DataFrame:
    """A catalog table by hand: (code, id, in_log, category or -1)."""
    df = pd.DataFrame(rows, columns=["code", "id", "in_log", "a0"])
    df["code"] = df["code"].astype(np.int32)
    df["n_attributes"] = (df["a0"] >= 0).astype(np.int32)
    df["category"] = df["a0"]
    df["listed"] = np.arange(len(df), dtype=np.float64)
    return df


VOC6 = pd.DataFrame({"code": np.arange(6, dtype=np.int32), "id": list("abcdef")})
# trained: a, b, c (category 0), d (category 1), f (category 0, delisted below)
CODES = np.array([0, 1, 2, 3, 5])
VEC = np.array([[1, 0], [0, 1], [1, 1], [5, 5], [9, 9]], np.float32)
CTX = -VEC
COUNTS = np.array([10, 30, 20, 5, 1])
CAT = _table([(0, "a", True, 0), (1, "b", True, 0), (2, "c", True, 0), (3, "d", True, 1),
              (4, "e", True, 0),          # in the log, no clicks in training: cold
              (6, "n", False, 1),         # listed only
              (7, "z", False, -1)])       # listed only, no attribute


def test_knn_cold_vector_is_the_mean_of_the_three_most_clicked_items_sharing_the_category():
    r = cold_rows(CODES, VEC, CTX, COUNTS, VOC6, CAT, 1, scheme="knn", k=3)
    got = dict(zip(r.ids, r.vectors.tolist(), strict=True))
    np.testing.assert_allclose(got["e"], [2 / 3, 2 / 3])  # mean of a, b, c
    np.testing.assert_allclose(got["n"], [5, 5])          # d alone shares category 1
    np.testing.assert_allclose(r.context[list(r.ids).index("e")], [-2 / 3, -2 / 3])
    assert r.codes.tolist() == [0, 1, 2, 3, 4, 6]  # ascending; f (delisted) and z not served
    assert dict(zip(r.ids, r.origin, strict=True)) == {
        "a": "trained", "b": "trained", "c": "trained", "d": "trained", "e": "side_info",
        "n": "side_info"}
    o = r.origins.set_index("id")
    assert o.loc["z", "origin"] == "none" and o.loc["z", "reason"] == REASON_NO_ATTRIBUTES
    assert o.loc["f", "origin"] == "none" and o.loc["f", "reason"] == REASON_DELISTED
    assert r.stats == {"trained": 4, "side_info": 2, "none": 1, "delisted": 1}


def test_knn_takes_the_most_clicked_when_more_than_k_share_the_category():
    r = cold_rows(CODES, VEC, CTX, COUNTS, VOC6, CAT, 1, scheme="knn", k=1)
    np.testing.assert_allclose(r.vectors[list(r.ids).index("e")], [0, 1])  # b: 30 clicks


def test_pooling_and_context_average_attribute_vectors():
    r = cold_rows(CODES, VEC, CTX, COUNTS, VOC6, CAT, 1, scheme="pooling")
    np.testing.assert_allclose(r.vectors[list(r.ids).index("e")], [2 / 3, 2 / 3])
    side = {"a0_0": (np.array([3, 4], np.float32), np.array([1, 1], np.float32))}
    r = cold_rows(CODES, VEC, CTX, COUNTS, VOC6, CAT, 1, scheme="context", side=side)
    i = list(r.ids).index("e")
    assert r.vectors[i].tolist() == [3, 4] and r.context[i].tolist() == [1, 1]
    # no trained token for category 1: n has no vector, and says why
    assert "n" not in set(r.ids)
    assert "none of its attribute values" in r.origins.set_index("id").loc["n", "reason"]


def test_off_keeps_exactly_the_trained_rows():
    r = cold_rows(CODES, VEC, CTX, COUNTS, VOC6, CAT, 1, scheme="off")
    assert r.codes.tolist() == CODES.tolist() and (r.vectors == VEC).all()
    assert set(r.origin) == {"trained"}


def test_side_sentences_follow_each_occurrence_of_an_item_with_attributes(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("0 1 3\n5 0\n")
    stats = write_side_sentences(corpus, tmp_path / "o.txt", CAT, 1, copies=1.0, seed=0)
    lines = (tmp_path / "o.txt").read_text().splitlines()
    # 0 twice, 1 and 3 once; 5 (f) has no catalog row
    assert sorted(lines) == ["0 a0_0", "0 a0_0", "1 a0_0", "3 a0_1"]
    assert stats == {"corpus_tokens": 5, "side_tokens": 8, "side_lines": 4}


def test_cold_metrics_and_the_category_baseline_by_hand():
    recs = np.array([[3, 1], [2, 0], [1, 4]])
    targets = np.array([1, 0, 4])
    cold = np.array([False, False, False, False, True])
    m = cold_metrics(recs, targets, [1, 2], cold)
    assert m["recall@1_warm"] == 0 and m["recall@2_warm"] == 1.0
    assert m["recall@2_cold"] == 1.0 and m["recall@1_cold"] == 0
    assert m["cold_share"] == pytest.approx(1 / 3)
    cats = np.array([0, 1, 0, 0, -1])
    listed = np.array([5.0, 1.0, 9.0, 2.0, 0.0])
    q = Queries(np.array([0, 4]), np.array([0, 1]), np.array([1, 1]), np.array([1, 1]))
    s = category_scorer(cats, listed, np.array([1.0, 1, 1, 50, 1]))(q, np.array([0, 1]))
    assert np.argsort(-s[0])[:3].tolist() == [2, 0, 3]  # category 0 by listing, newest first
    assert np.argmax(s[1]) == 3  # unknown category: popularity


def _catalog_run(tmp_path, scheme: str = "knn", *extra):
    from recembed.config import load_config
    from recembed.pipeline import run_pipeline
    from recembed.stages import STAGES

    log = synth_catalog(20_000, new_share=0.15, seed=3)
    ev_path, items_path = write_synth(log, tmp_path / "clicks.csv")
    items = pd.read_csv(items_path)
    # a listed item with no attribute and no click: gets `none`
    items = pd.concat([items, pd.DataFrame({"item_id": [999_999]})], ignore_index=True)
    # the most clicked item leaves the catalog: it must stop being served
    gone = log.events["item_id"].value_counts().index[0]
    items = items[items["item_id"] != gone]
    items.to_csv(items_path, index=False)
    cfg = load_config(None, [
        f"input.paths=['{ev_path}']", f"run.runs_dir='{tmp_path / 'runs'}'",
        f"input.catalog.path='{items_path}'", "input.catalog.attributes=['category', 'price']",
        "input.catalog.numeric=['price']", "input.catalog.category='category'",
        "input.catalog.listed='listed_at'", f"cold.scheme='{scheme}'", "calibrate.enabled=false",
        "train.epochs=5", "train.workers=1", "train.vector_size=16", "walks.enabled=false",
        "sequences.enabled=true", "evaluate.baselines=['pop']", "evaluate.ks=[20]",
        "evaluate.strategies=['ann']", "run.progress=false", "bots.enabled=false",
        "index.type=Flat", "serving.weights={directional = 1.0}", "serving.decay=0.65",
        "serving.temperature=1.0", "serving.neighbours='off'", *extra])
    rep = run_pipeline(cfg, plan=STAGES, echo=lambda s: None)
    log.items = log.items[log.items["item_id"] != gone]  # what the catalog lists
    return log, rep.run_dir, str(gone)


@pytest.fixture(scope="module")
def knn_run(tmp_path_factory):
    return _catalog_run(tmp_path_factory.mktemp("cold"), "knn")


def test_cold_items_are_served_as_queries_and_candidates(knn_run):
    from recembed.serving import Recommender

    log, run_dir, _ = knn_run
    rec = Recommender.load(run_dir)
    items = pd.read_parquet(run_dir / "items.parquet")
    origin = dict(zip(items["id"], items["origin"], strict=True))
    new_ids = [str(i) for i in log.items.loc[log.items["new"], "item_id"]]
    # new items with clicks only in the holdout, and listed ones never clicked: side_info
    assert all(origin[i] == "side_info" for i in new_ids)
    cold = [i for i, o in origin.items() if o == "side_info"]
    res = rec.similar(cold[:20], k=10)
    assert all(len(x) == 10 for x in res.ids) and not res.unknown
    out = rec.recommend([[c] for c in cold[:50]], k=20)
    assert all(len(x) == 20 for x in out.ids)
    # as candidates: a cold item's nearest neighbours by the knn scheme's construction are warm
    # items, and a session of those items reaches cold items
    shown = {x for ids in rec.similar([i for i, o in origin.items() if o == "trained"][:300],
                                      k=20).ids for x in ids}
    assert shown & set(cold)


def test_an_item_without_attributes_gets_none_and_is_never_served(knn_run):
    from recembed.serving import Recommender

    _, run_dir, _ = knn_run
    o = pd.read_parquet(run_dir / "origins.parquet").set_index("id")
    assert o.loc["999999", "origin"] == "none"
    assert o.loc["999999", "reason"] == REASON_NO_ATTRIBUTES
    rec = Recommender.load(run_dir)
    assert "999999" not in rec.row_of
    assert rec.why_not_served("999999") == REASON_NO_ATTRIBUTES
    assert rec.why_not_served(rec.ids[0]) == ""
    res = rec.similar(["999999"], k=5)
    assert res.unknown == ["999999"] and len(res.ids[0]) == 0
    everyone = rec.recommend([[x] for x in rec.ids[:200]], k=50)
    assert all("999999" not in set(ids) for ids in everyone.ids)


def test_cold_targets_are_scored_and_reported_apart(knn_run):
    _, run_dir, _ = knn_run
    m = json.loads((run_dir / "metrics.json").read_text())
    assert 0.05 < m["queries"]["cold_share"] < 0.5
    for name, meth in m["methods"].items():
        v = meth["allow_repeats"]
        share = v["cold_share"]
        assert v["recall@20"] == pytest.approx(
            share * v["recall@20_cold"] + (1 - share) * v["recall@20_warm"], abs=1e-9), name
    assert m["methods"]["pop"]["allow_repeats"]["recall@20_cold"] == 0  # pop has no cold item
    assert m["methods"]["category"]["allow_repeats"]["recall@20_cold"] > 0
    assert m["methods"]["item2vec:serving"]["allow_repeats"]["recall@20_cold"] > 0.05
    html = (run_dir / "report.html").read_text()
    assert "cold" in html and "warm" in html


def test_cold_item_neighbours_land_in_their_category_well_above_chance(knn_run):
    from recembed.serving import Recommender

    log, run_dir, _ = knn_run
    rec = Recommender.load(run_dir)
    cat_of = dict(zip(log.items["item_id"].astype(str), log.items["category"], strict=False))
    new_ids = [str(i) for i in log.items.loc[log.items["new"], "item_id"]]
    res = rec.similar(new_ids, k=10)
    same = np.mean([np.mean([cat_of[x] == cat_of[q] for x in ids])
                    for q, ids in zip(new_ids, res.ids, strict=True)])
    sizes = log.items["category"].value_counts(normalize=True)
    chance = float((sizes ** 2).sum())  # two random items share a category
    assert same > 0.6 and same > 5 * chance, (same, chance)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["context", "pooling"])
def test_the_other_schemes_place_cold_items_in_their_category(tmp_path, scheme):
    from recembed.serving import Recommender

    log, run_dir, _ = _catalog_run(tmp_path, scheme)
    rec = Recommender.load(run_dir)
    cat_of = dict(zip(log.items["item_id"].astype(str), log.items["category"], strict=False))
    new_ids = [str(i) for i in log.items.loc[log.items["new"], "item_id"]]
    res = rec.similar(new_ids, k=10)
    same = np.mean([np.mean([cat_of[x] == cat_of[q] for x in ids])
                    for q, ids in zip(new_ids, res.ids, strict=True)])
    chance = float((log.items["category"].value_counts(normalize=True) ** 2).sum())
    assert same > 5 * chance, (same, chance)


def test_an_item_that_leaves_the_catalog_stops_being_served(knn_run):
    from recembed.serving import Recommender

    log, run_dir, gone = knn_run
    vocab = pd.read_parquet(run_dir / "vocabulary.parquet")
    assert gone in set(vocab["id"])  # it has clicks ...
    rec = Recommender.load(run_dir)
    assert gone not in rec.row_of  # ... but is not served
    assert rec.why_not_served(gone) == REASON_DELISTED
    # the category signal's arrays cover every served row, cold ones included
    assert rec.model.has_category and len(rec.model.item_category) == len(rec.ids)
    cat_of = dict(zip(log.items["item_id"].astype(str), log.items["category"], strict=False))
    items = pd.read_parquet(run_dir / "items.parquet")
    cold = items.loc[items["origin"] == "side_info", "id"].astype(str).tolist()
    codes: dict = {}  # the cold rows of one catalog category share one category code >= 0
    for i in cold[:50]:
        codes.setdefault(cat_of[i], set()).add(int(rec.model.item_category[rec.row_of[i]]))
    assert all(len(v) == 1 and min(v) >= 0 for v in codes.values())
    train = json.loads((run_dir / "train.json").read_text())
    assert train["origin_delisted"] == 1 and train["origin_none"] == 1


def test_a_bad_catalog_stops_the_run_naming_the_key(tmp_path):
    from recembed.config import load_config
    from recembed.pipeline import EXIT_BAD_INPUT, PipelineError, run_pipeline
    from recembed.stages import STAGES

    ev_path, items_path = write_synth(synth_catalog(2_000, seed=1), tmp_path / "clicks.csv")
    cfg = load_config(None, [
        f"input.paths=['{ev_path}']", f"run.runs_dir='{tmp_path / 'runs'}'",
        f"input.catalog.path='{items_path}'", "input.catalog.attributes=['colour']",
        "calibrate.enabled=false", "train.epochs=1", "walks.enabled=false",
        "sequences.enabled=true", "run.progress=false"])
    with pytest.raises(PipelineError, match=r"no column\(s\) \['colour'\].*input\.catalog") as e:
        run_pipeline(cfg, plan=STAGES, echo=lambda s: None, stages=["catalog"])
    assert e.value.exit_code == EXIT_BAD_INPUT


@pytest.mark.parametrize(("over", "key"), [
    (["input.catalog.path='x.csv'"], "input.catalog.attributes"),
    (["input.catalog.attributes=['a']", "input.catalog.numeric=['p']"], "input.catalog.numeric"),
    (["input.catalog.attributes=['a']", "input.catalog.category='c'"], "input.catalog.category"),
])
def test_impossible_catalog_settings_are_refused_at_load(over, key):
    from recembed.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, over)


def test_a_published_version_carries_the_origins_and_serves_cold_items(tmp_path):
    from recembed.serving import Recommender

    pub = tmp_path / "published"
    _, _, gone = _catalog_run(tmp_path, "knn", "publish.enabled=true",
                              f"publish.dir='{pub}'")
    rec = Recommender.load(pub)  # LATEST, every file checked against the manifest
    version = pub / (pub / "LATEST").read_text().strip()
    man = json.loads((version / "manifest.json").read_text())
    items = pd.read_parquet(version / "items.parquet")
    counts = items["origin"].value_counts().to_dict()
    assert man["origins"]["trained"] == counts["trained"]
    assert man["origins"]["side_info"] == counts["side_info"] > 0
    assert man["origins"]["none"] == 1 and man["origins"]["delisted"] == 1
    assert man["counts"]["vectors"] == len(items) == len(rec.ids)
    assert "origins.parquet" in man["files"]
    cold = items.loc[items["origin"] == "side_info", "id"].tolist()[:5]
    assert all(len(x) == 10 for x in rec.similar(cold, k=10).ids)
    assert rec.why_not_served(gone) == REASON_DELISTED


def test_context_scheme_trains_attribute_tokens_without_moving_the_items(tmp_path):
    from recembed.train import train_word2vec

    rng = np.random.default_rng(0)
    # two groups of items that co-occur; attribute a0_0 for items 0-4, a0_1 for 5-9
    lines = [" ".join(map(str, rng.choice(5, 4) + 5 * (i % 2))) for i in range(400)]
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(lines) + "\n")
    table = _table([(c, str(c), True, c // 5) for c in range(10)])
    stats = write_side_sentences(corpus, tmp_path / "side.txt", table, 1, seed=0)
    kw = dict(vector_size=8, epochs=3, workers=1, seed=1)
    plain = train_word2vec(corpus, **kw)
    side = train_word2vec(corpus, side_corpus=tmp_path / "side.txt",
                          side_tokens=stats["side_tokens"], **kw)
    assert (plain.vectors == side.vectors).all() and (plain.context == side.context).all()
    assert set(side.side) == {"a0_0", "a0_1"} and not plain.side
    # each token sits with its own items: its input vector predicts their output vectors
    v0, v1 = side.side["a0_0"][0], side.side["a0_1"][0]
    u = side.context
    assert (u[:5] @ v0).mean() > (u[5:] @ v0).mean()
    assert (u[5:] @ v1).mean() > (u[:5] @ v1).mean()


def test_candidate_scale_shrinks_only_the_cold_output_vectors():
    r = cold_rows(CODES, VEC, CTX, COUNTS, VOC6, CAT, 1, scheme="knn", k=3, candidate_scale=0.5)
    i = list(r.ids).index("e")
    np.testing.assert_allclose(r.context[i], [-1 / 3, -1 / 3])  # half of the mean of a, b, c
    np.testing.assert_allclose(r.vectors[i], [2 / 3, 2 / 3])    # input vectors untouched
    assert (r.context[list(r.ids).index("a")] == CTX[0]).all()  # trained rows untouched


def _newest_in_category_log(path, seed: int = 0, n_cat: int = 8, days: int = 21,
                            sessions: int = 7000):
    """Clicks where the next item is the newest listed item of the viewed one's category (a
    new item per category per day): (events csv, catalog csv)."""
    rng = np.random.default_rng(seed)
    day = 86_400.0
    listed = [(c, -1000.0 + i) for c in range(n_cat) for i in range(10)]
    listed += [(c, d * day + float(rng.uniform(0, day))) for d in range(days) for c in range(n_cat)]
    items = pd.DataFrame(listed, columns=["category", "listed_at"])
    items["item_id"] = [f"i{k}" for k in range(len(items))]
    rows = []
    for s, t in enumerate(np.sort(rng.uniform(0, days * day, sessions))):
        c = int(rng.integers(n_cat))
        mine = items[(items["category"] == c) & (items["listed_at"] <= t)]
        order = mine.sort_values("listed_at", kind="stable")["item_id"].to_numpy()
        first, other = rng.choice(order[:-1], 2, replace=False)
        for j, it in enumerate((first, order[-1], other)):
            rows.append((f"u{s}", it, t + 60 * j))
    ev = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    ev["timestamp"] = pd.to_datetime(ev["timestamp"] + 1.7e9, unit="s", utc=True).dt.strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    items["listed_at"] += 1.7e9
    ev.to_csv(path / "clicks.csv", index=False)
    items[["item_id", "category", "listed_at"]].to_csv(path / "items.csv", index=False)
    return path / "clicks.csv", path / "items.csv"


@pytest.mark.slow
def test_calibration_weighs_the_category_signal_on_cold_validation_targets(tmp_path):
    from recembed.config import load_config
    from recembed.pipeline import run_pipeline
    from recembed.stages import STAGES

    ev_path, items_path = _newest_in_category_log(tmp_path)
    cfg = load_config(None, [
        f"input.paths=['{ev_path}']", f"run.runs_dir='{tmp_path / 'runs'}'",
        f"input.catalog.path='{items_path}'", "input.catalog.attributes=['category']",
        "input.catalog.category='category'", "input.catalog.listed='listed_at'",
        "input.categories_path=''", "calibrate.corpora=['sessions']",
        "calibrate.target_tokens=[30000]", "train.workers=1", "train.vector_size=16",
        "evaluate.baselines=['pop']", "evaluate.ks=[20]", "evaluate.strategies=['ann']",
        "run.progress=false", "bots.enabled=false", "index.type=Flat", "holdout.days=1"])
    rep = run_pipeline(cfg, plan=STAGES, echo=lambda s: None)
    run = rep.run_dir
    cal = json.loads((run / "calibration.json").read_text())
    # validation scores targets the calibration model never trained (listed the same days)
    assert cal["validation_queries"]["cold_queries"] > 50
    assert cal["baselines"]["category"]["recall@20"] > 0.7
    # the blend's category signal alone is the baseline (its candidates: the category's newest)
    assert cal["blend"]["signals_alone"]["category"]["recall@20"] == pytest.approx(
        cal["baselines"]["category"]["recall@20"], abs=0.02)
    served = json.loads((run / "serving.json").read_text())
    assert served["weights"]["category"] > 0
    items = pd.read_parquet(run / "items.parquet")
    with np.load(run / "blend.npz") as z:
        assert len(z["item_category"]) == len(items)  # cold rows included
        assert (z["item_category"] >= 0).all()
    m = json.loads((run / "metrics.json").read_text())["methods"]
    serving = next(v for k, v in m.items() if k.endswith(":serving"))["allow_repeats"]
    base = m["category"]["allow_repeats"]
    assert m and serving["recall@20_cold"] > 0.5
    # what the run serves does not lose to the baseline it measured
    assert serving["recall@20"] >= base["recall@20"] - 1e-9
    assert serving["recall@20_cold"] >= base["recall@20_cold"] - 1e-9


def test_a_catalog_missing_many_trained_items_warns_loudly():
    # a truncated catalog export would stop most of the catalogue being served: say so
    warn = delisting_warning({"trained": 60, "side_info": 5, "none": 0, "delisted": 40},
                             "items.csv")
    assert warn and "40 of 100 trained items (40%)" in warn and "input.catalog.path" in warn
    assert delisting_warning({"trained": 95, "side_info": 0, "none": 3, "delisted": 5},
                             "items.csv") is None
