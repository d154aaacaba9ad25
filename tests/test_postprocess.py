"""Post-processing of the vector space (issue 24): each transform against a hand-computed
expectation, the file's round trip, the config key, the vectors-alone objective against a
brute-force reference, calibration's record, and one transform applied identically to the
served, exported and cold vectors of a catalog run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recembed.blend import BlendModel
from recembed.calibrate import transformed_model, vector_paths, vector_paths_reference
from recembed.config import ConfigError, load_config
from recembed.evaluate import Queries
from recembed.postprocess import VectorTransform, auto_options, choose, output_dim, parse_spec
from recembed.settings import calibration_plan, postprocess, resolve_config
from tests.conftest import synth_config

# a point set with a diagonal covariance by construction: +-10 on axis 0, +-1 on axes 1, 2
# (mean 0; variances 200/6, 2/6, 2/6 with the 1/n covariance)
AXES = np.array([[10, 0, 0], [-10, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]],
                np.float64)


def _correlated(n=500, d=6, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 3.0


def test_none_is_the_identity():
    x = _correlated()
    tf = VectorTransform.fit("none", x)
    assert tf.identity
    np.testing.assert_array_equal(tf.apply(x), x.astype(np.float32))


def test_centering_subtracts_the_mean_and_leaves_zero_mean():
    x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]])
    y = VectorTransform.fit("center", x).apply(x)
    np.testing.assert_allclose(y, [[-2, -1], [0, 3], [2, -2]], atol=1e-6)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-6)


def test_all_but_the_top_removes_the_dominant_direction_and_keeps_the_rest():
    shift = np.array([5.0, -2.0, 1.0])
    x = AXES + shift
    y = VectorTransform.fit("abtt:1", x).apply(x)
    expect = AXES.copy()
    expect[:, 0] = 0  # axis 0 carries the largest variance: its component goes
    np.testing.assert_allclose(y, expect, atol=1e-5)
    # a rotated copy: the dominant direction is (1, 1, 0) / sqrt 2, removed wherever it points
    c, s = np.cos(np.pi / 4), np.sin(np.pi / 4)
    rot = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])
    u = np.array([1.0, 0, 0]) @ rot
    y = VectorTransform.fit("abtt:1", AXES @ rot).apply(AXES @ rot)
    np.testing.assert_allclose(y @ u, 0, atol=1e-5)
    np.testing.assert_allclose(y, expect @ rot, atol=1e-5)


def test_all_but_the_top_two_leaves_only_the_last_axis():
    big = np.array([[10, 0, 0], [-10, 0, 0], [0, 3, 0], [0, -3, 0], [0, 0, 1], [0, 0, -1.0]])
    y = VectorTransform.fit("abtt:2", big).apply(big)
    np.testing.assert_allclose(y, [[0, 0, 0]] * 4 + [[0, 0, 1], [0, 0, -1]], atol=1e-5)


def test_pca_whitening_gives_identity_covariance_and_reduces_the_dimension():
    # on an axis-aligned set of distinct variances PCA whitening divides each axis by its
    # standard deviation (the axes in order of variance)
    x = AXES * [1, 3, 1]
    y = VectorTransform.fit("whiten", x).apply(x)
    np.testing.assert_allclose(np.abs(y), np.abs(x) / np.sqrt([200 / 6, 18 / 6, 2 / 6]),
                               atol=1e-5)
    x = _correlated()
    for spec, r in (("whiten", 6), ("whiten:3", 3)):
        y = VectorTransform.fit(spec, x).apply(x).astype(np.float64)
        assert y.shape == (len(x), r)
        yc = y - y.mean(axis=0)
        np.testing.assert_allclose(yc.T @ yc / len(y), np.eye(r), atol=1e-4)
    # whiten:1 keeps the top direction only: axis 0, scaled to unit variance
    y = VectorTransform.fit("whiten:1", AXES).apply(AXES)
    np.testing.assert_allclose(np.abs(y[:, 0]), [np.sqrt(3)] * 2 + [0] * 4, atol=1e-5)


def test_zca_whitening_keeps_the_axes_and_equals_pca_up_to_a_rotation():
    y = VectorTransform.fit("zca", AXES).apply(AXES)
    np.testing.assert_allclose(y, AXES / np.sqrt([200 / 6, 2 / 6, 2 / 6]), atol=1e-5)
    x = _correlated()
    z = VectorTransform.fit("zca", x).apply(x).astype(np.float64)
    p = VectorTransform.fit("whiten", x).apply(x).astype(np.float64)
    zc = z - z.mean(axis=0)
    np.testing.assert_allclose(zc.T @ zc / len(z), np.eye(6), atol=1e-4)
    # the same dot products between any two vectors (so the same rankings)
    np.testing.assert_allclose(z[:20] @ z[:20].T, p[:20] @ p[:20].T, rtol=1e-3, atol=1e-3)


def test_context_vectors_get_the_map_fitted_on_the_item_vectors():
    x = AXES + 1.0
    c = np.array([[2.0, 3.0, 4.0]])
    tf = VectorTransform.fit("abtt:1", x)
    # mean (1, 1, 1) out, then axis 0 out: (2, 3, 4) -> (0, 2, 3)
    np.testing.assert_allclose(tf.apply(c), [[0, 2, 3]], atol=1e-5)


def test_save_load_round_trip_without_pickle(tmp_path):
    x = _correlated()
    for spec in ("none", "center", "abtt:2", "whiten:4", "zca"):
        tf = VectorTransform.fit(spec, x)
        tf.save(tmp_path / "t.npz")
        with np.load(tmp_path / "t.npz", allow_pickle=False) as z:
            assert sorted(z.files) == ["matrix", "mean", "spec"]
        back = VectorTransform.load(tmp_path / "t.npz")
        assert back.spec == spec
        np.testing.assert_array_equal(back.mean, tf.mean)
        np.testing.assert_array_equal(back.matrix, tf.matrix)
        np.testing.assert_array_equal(back.apply(x), tf.apply(x))


def test_a_rotated_transform_applies_the_rotation_after_the_map():
    x = _correlated()
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(6, 6)))
    tf = VectorTransform.fit("center", x)
    np.testing.assert_allclose(tf.rotated(q).apply(x), tf.apply(x) @ q, atol=1e-4)


@pytest.mark.parametrize("spec,dim,msg", [
    ("abtt", 8, "abtt needs"), ("abtt:8", 8, "1 to 7"), ("abtt:0", 8, "1 to 7"),
    ("whiten:9", 8, "1 to 8"), ("center:2", 8, "takes no number"), ("pca", 8, "unknown"),
    ("whiten:x", 8, "whole number")])
def test_bad_specs_say_what_is_allowed(spec, dim, msg):
    with pytest.raises(ValueError, match=msg):
        parse_spec(spec, dim)


def test_auto_options_and_output_dims():
    assert auto_options(64) == ["none", "center", "abtt:1", "abtt:2", "whiten:32", "whiten"]
    assert auto_options(300) == ["none", "center", "abtt:1", "abtt:2", "abtt:3", "whiten:150",
                                 "whiten"]
    assert [output_dim(s, 64) for s in ("auto", "center", "whiten", "whiten:8")] == \
        [64, 64, 64, 8]


def test_a_tie_within_one_standard_error_goes_to_the_simpler_transform():
    tried = {"none": {"objective": 0.50, "se": 0.01}, "center": {"objective": 0.505, "se": 0.01},
             "whiten": {"objective": 0.52, "se": 0.01}}
    assert choose(tried) == "whiten"  # none and center are more than one SE below
    tried["whiten"]["objective"] = 0.512
    assert choose(tried) == "center"  # 0.505 >= 0.512 - 0.01; none (0.50) is not
    assert choose({"none": {"objective": 0.2, "se": 0.0}}) == "none"


# ---------------------------------------------------------------- the config key


def test_config_refuses_impossible_postprocess_settings():
    with pytest.raises(ConfigError, match=r"train\.postprocess"):
        load_config(None, ["train.vector_size=16", "train.postprocess='abtt:16'"])
    with pytest.raises(ConfigError, match=r"train\.postprocess"):
        load_config(None, ["train.postprocess='whiten:100'"])
    with pytest.raises(ConfigError, match=r"train\.warm_start"):
        load_config(None, ["train.warm_start=true", "train.postprocess='center'"])
    # the index factory is checked against the served dimension (whiten:R reduces it)
    with pytest.raises(ConfigError, match=r"PQ"):
        load_config(None, ["train.vector_size=64", "train.postprocess='whiten:30'",
                           "index.type='IVF16,PQ16'"])
    load_config(None, ["train.vector_size=64", "train.postprocess='whiten:32'",
                       "index.type='IVF16,PQ16'"])


def test_auto_resolves_to_calibration_choice_or_none():
    cfg = load_config(None, ["train.vector_size=16"])
    assert calibration_plan(cfg).postprocess == auto_options(16)
    rec = {"enabled": True, "postprocess": "abtt:1"}
    assert postprocess(resolve_config(cfg, rec)) == "abtt:1"
    assert postprocess(resolve_config(cfg, {"enabled": False})) == "none"
    assert postprocess(resolve_config(cfg, None)) == "none"
    warm = load_config(None, ["train.warm_start=true"])
    assert calibration_plan(warm).postprocess == ["none"]
    assert postprocess(resolve_config(warm, rec)) == "none"
    fixed = load_config(None, ["train.postprocess='center'"])
    assert calibration_plan(fixed).postprocess == ["center"]
    assert postprocess(resolve_config(fixed, rec)) == "center"
    flat = load_config(None, ["train.vector_size=16", "index.type='Flat'"])
    assert "whiten:8" not in calibration_plan(flat).postprocess


# ---------------------------------------------------------------- the vectors-alone objective


def _reference(vectors, context, q: Queries, decay, history, strategy, k=20):
    """Brute force: per query, rank every item (last item excluded, ties by lower code)."""
    hits, rrs = [], []
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for s, n, t in zip(q.start, q.length, q.target, strict=True):
        prefix = q.items[s:s + n]
        if strategy == "ann":
            qv = sum(decay ** j * vectors[prefix[::-1][j]] for j in range(min(history, n)))
            score = context @ qv
        else:
            score = unit @ unit[prefix[-1]]
        score = score.astype(np.float64)
        score[prefix[-1]] = -np.inf
        order = sorted(range(len(score)), key=lambda i: (-score[i], i))
        rank = order.index(t) + 1
        hits.append(rank <= k)
        rrs.append(1.0 / rank if rank <= k else 0.0)
    return float(np.mean(hits)), float(np.mean(rrs)), np.array(hits) + np.array(rrs)


def test_vector_paths_match_a_brute_force_ranking():
    rng = np.random.default_rng(3)
    n, d = 60, 8
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    context = rng.normal(size=(n, d)).astype(np.float32)
    model = BlendModel(vectors, context, popularity=np.ones(n))
    items = rng.integers(0, n, 400).astype(np.int32)
    start = np.arange(0, 390, 6, dtype=np.int64)
    length = rng.integers(1, 6, len(start)).astype(np.int32)
    target = items[start + length]
    q = Queries(items, start, length, target)
    res = vector_paths(model, np.arange(n), q, decay=0.5, history=3)
    for name in ("ann", "last"):
        r, m, per = _reference(vectors, context, q, 0.5, 3, name)
        assert res[name]["recall@20"] == pytest.approx(r)
        assert res[name]["mrr@20"] == pytest.approx(m, abs=1e-6)
        assert res[name]["objective"] == pytest.approx(r + m, abs=1e-6)
        assert res[name]["se"] == pytest.approx(per.std(ddof=1) / np.sqrt(len(per)), abs=1e-6)
    # one path alone: the same numbers; the ANN path at another decay is that decay's
    assert vector_paths(model, np.arange(n), q, decay=0.5, history=3, paths=("ann",)) == \
        {"ann": res["ann"]}
    r9, m9, _ = _reference(vectors, context, q, 0.9, 3, "ann")
    other = vector_paths(model, np.arange(n), q, decay=0.9, history=3, paths=("ann",))["ann"]
    assert (other["recall@20"], other["mrr@20"]) == (pytest.approx(r9), pytest.approx(m9, abs=1e-6))
    with pytest.raises(ValueError, match="paths must name"):
        vector_paths(model, np.arange(n), q, decay=0.5, history=3, paths=("cosine",))
    # the transformed model scores its transformed vectors (centering: context @ (q - a mean))
    tf = VectorTransform.fit("center", vectors)
    res = vector_paths(transformed_model(model, tf), np.arange(n), q, decay=0.5, history=3)
    r, m, _ = _reference(tf.apply(vectors), tf.apply(context), q, 0.5, 3, "ann")
    assert res["ann"]["recall@20"] == pytest.approx(r)
    assert res["ann"]["mrr@20"] == pytest.approx(m, abs=1e-6)


@pytest.mark.slow
def test_calibration_records_both_objectives_and_the_transform(tmp_path):
    from recembed.calibrate import choose_vectors_decay
    from recembed.pipeline import run_pipeline
    from recembed.stages import STAGES

    cfg = synth_config(tmp_path, "music", 12_000, 7,
                       "calibrate.corpora=['sessions']", "calibrate.target_tokens=[40000]",
                       "train.vector_size=16", "train.workers=1", "holdout.days=7",
                       "evaluate.baselines=['pop']", "evaluate.ks=[20]")
    rep = run_pipeline(cfg, plan=STAGES, echo=lambda s: None)
    run = rep.run_dir
    cal = json.loads((run / "calibration.json").read_text())
    cand = cal["candidates"][0]
    assert list(cand["postprocess_tried"]) == auto_options(16)
    chosen = cand["postprocess"]
    for spec, r in cand["postprocess_tried"].items():
        # every transform's ANN path; the cosine path of the chosen one only
        assert set(r) == ({"ann", "last"} if spec == chosen else {"ann"})
        for m in r.values():
            assert m["objective"] == pytest.approx(m["recall@20"] + m["mrr@20"])
            assert 0 < m["se"] < 0.1
    assert cal["postprocess"] == chosen
    assert cand["vectors_last"]["recall@20"] == \
        cand["postprocess_tried"][chosen]["last"]["recall@20"]
    assert choose({s: r["ann"] for s, r in cand["postprocess_tried"].items()}) == chosen
    # the exported query's decays, on the chosen transform: the default's numbers are the
    # transform search's; the vectors fields are those of the decay kept
    tried = cand["vectors_decays_tried"]
    assert list(tried) == ["0.65", "0.35", "1.0", "0.15"]
    assert tried["0.65"]["recall@20"] == cand["postprocess_tried"][chosen]["ann"]["recall@20"]
    assert cand["vectors_decay"] == choose_vectors_decay(
        {float(d): {"objective": m["recall@20"] + m["mrr@20"], "se": m["se"]}
         for d, m in tried.items()})
    kept = tried[str(cand["vectors_decay"])]
    assert cand["vectors_objective"] == pytest.approx(kept["recall@20"] + kept["mrr@20"])
    assert cal["validation"]["vectors_objective"] == cand["vectors_objective"]
    assert cal["vectors_decay"] == cal["validation"]["vectors_decay"] == cand["vectors_decay"]
    # served and exported with it, and said in metrics.json and the report
    assert json.loads((run / "serving.json").read_text())["vectors_decay"] == \
        cand["vectors_decay"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["calibration"]["vectors_decay"] == cand["vectors_decay"]
    assert "the exported vectors&#x27; query decay" in (run / "report.html").read_text()
    # the final run applies the choice: train.json and the saved transform say it
    train = json.loads((run / "train.json").read_text())
    assert train["postprocess"]["spec"] == chosen
    assert VectorTransform.load(run / "postprocess.npz").spec == chosen


# ---------------------------------------------------------------- one transform everywhere


def _catalog_run(tmp_path, spec: str):
    from recembed.pipeline import run_pipeline
    from recembed.stages import STAGES
    from recembed.synth import synth_catalog, write_synth

    log = synth_catalog(8_000, new_share=0.15, seed=3)
    ev_path, items_path = write_synth(log, tmp_path / "clicks.csv")
    cfg = load_config(None, [
        f"input.paths=['{ev_path}']", f"run.runs_dir='{tmp_path / 'runs'}'",
        f"input.catalog.path='{items_path}'", "input.catalog.attributes=['category', 'price']",
        "input.catalog.numeric=['price']", "input.catalog.category='category'",
        "input.catalog.listed='listed_at'", "cold.scheme='context'", "calibrate.enabled=false",
        "train.epochs=3", "train.workers=1", "train.vector_size=16", "walks.enabled=false",
        "sequences.enabled=true", "evaluate.baselines=['pop']", "evaluate.ks=[20]",
        "evaluate.strategies=['ann']", "run.progress=false", "bots.enabled=false",
        "index.type=Flat", "serving.weights={directional = 1.0}", "serving.decay=0.65",
        "serving.temperature=1.0", "serving.neighbours='off'", "publish.enabled=true",
        f"publish.dir='{tmp_path / 'published'}'", f"train.postprocess='{spec}'"])
    rep = run_pipeline(cfg, plan=STAGES, echo=lambda s: None)
    return rep.run_dir, tmp_path / "published"


@pytest.mark.slow
def test_the_saved_transform_is_applied_identically_in_serving_exports_and_cold_vectors(
        tmp_path):
    from recembed import artifacts as A
    from recembed.export import CONTEXT, ITEM, export_version, open_target
    from recembed.serving import Recommender

    raw_run, _ = _catalog_run(tmp_path / "raw", "none")
    run, pub = _catalog_run(tmp_path / "tf", "whiten:8")
    raw = A.Embeddings.load(raw_run)
    items = pd.read_parquet(run / "items.parquet")
    assert (items["id"].to_numpy() == raw.ids).all()
    origin = items["origin"].to_numpy()
    assert (origin == "side_info").sum() > 10  # cold rows (context scheme) are in the check
    tf = VectorTransform.load(run / "postprocess.npz")
    # fitted on the trained item vectors (the raw run's, same seed, one worker)
    trained = origin == "trained"
    ref = VectorTransform.fit("whiten:8", raw.vectors[trained])
    np.testing.assert_allclose(np.abs(tf.matrix), np.abs(ref.matrix), rtol=1e-3, atol=1e-4)
    want_v, want_c = tf.apply(raw.vectors), tf.apply(raw.context)
    assert want_v.shape == (len(raw.ids), 8)
    # the run's files: every row, cold ones included, is the transform of the raw row
    emb = A.Embeddings.load(run)
    np.testing.assert_allclose(emb.vectors, want_v, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(emb.context, want_c, rtol=1e-4, atol=1e-4)
    # serving: the published version loads the transform and serves the transformed vectors
    rec = Recommender.load(pub)
    assert rec.transform is not None and rec.transform.spec == "whiten:8"
    np.testing.assert_array_equal(rec.vectors, emb.vectors)
    cold_ids = list(items.loc[origin == "side_info", "id"][:5])
    unit = want_v / np.linalg.norm(want_v, axis=1, keepdims=True)
    sim = rec.similar(cold_ids, k=5)
    for x, got, score in zip(cold_ids, sim.ids, sim.scores, strict=True):
        r = list(raw.ids).index(x)
        s = unit @ unit[r]
        s[r] = -np.inf
        # cold items sharing their attributes share a vector: compare scores (ties), and
        # every returned item scores what the transformed raw vectors say
        np.testing.assert_allclose(score, np.sort(s)[::-1][:5], atol=1e-4)
        np.testing.assert_allclose(score, s[[list(raw.ids).index(g) for g in got]], atol=1e-4)
    version = pub / (pub / "LATEST").read_text().strip()
    assert "postprocess.npz" in json.loads((version / "manifest.json").read_text())["files"]
    # the export: Qdrant holds the same vectors (cosine: stored unit length)
    target = open_target(str(tmp_path / "qdrant"))
    try:
        res = export_version(pub, target, alias="rec")
        pts, _ = target.client.scroll(res.collection, limit=len(raw.ids) + 10,
                                      with_payload=True, with_vectors=True)
        row = {x: i for i, x in enumerate(raw.ids)}
        got_i = np.array([p.vector[ITEM] for p in pts])
        got_c = np.array([p.vector[CONTEXT] for p in pts])
        rows = [row[p.payload["id"]] for p in pts]
        np.testing.assert_allclose(got_i, unit[rows], atol=1e-4)
        np.testing.assert_allclose(got_c, want_c[rows], rtol=1e-4, atol=1e-4)
    finally:
        target.close()


def test_warm_start_never_continues_from_post_processed_vectors(tmp_path):
    from recembed.publish import warm_start_vectors
    from tests.conftest import make_version

    version = make_version(tmp_path / "published", "v1", n=50, d=8)
    vocab = pd.DataFrame({"code": np.arange(50), "id": [f"sku{i}" for i in range(50)]})
    x = np.random.default_rng(0).normal(size=(50, 8))
    VectorTransform.fit("none", x).save(version / "postprocess.npz")
    codes, vectors, _ = warm_start_vectors(version, vocab)
    assert len(codes) == 50 and vectors.shape == (50, 8)
    VectorTransform.fit("center", x).save(version / "postprocess.npz")
    assert warm_start_vectors(version, vocab) is None


def test_a_plan_built_for_one_dimension_keeps_only_what_another_dimension_allows():
    from recembed.calibrate import _options_for

    opts = auto_options(64)  # whiten:32, abtt:1, abtt:2 ...
    assert _options_for(opts, 32) == ["none", "center", "abtt:1", "abtt:2", "whiten"]
    assert _options_for(opts, 2) == ["none", "center", "abtt:1", "whiten"]
    assert _options_for(["abtt:5"], 4) == ["none"]


@pytest.mark.parametrize("seed", range(4))
def test_vector_paths_equal_the_top_k_reference_bit_for_bit(seed):
    # the counting pass (`dense_target_ranks`) against embedding_scorer + top_k_lists: items
    # without a vector, repeated vectors (exact ties), popularity ties, targets equal to the
    # last item or without a vector, several product blocks
    rng = np.random.default_rng(seed)
    n, d = 90, 6
    vectors = rng.normal(size=(70, d)).astype(np.float32)
    vectors[5:9] = vectors[4]  # exact ties
    context = rng.normal(size=(70, d)).astype(np.float32)
    context[10:14] = context[3]
    row_of = np.full(n, -1, np.int64)
    row_of[np.sort(rng.choice(n, 70, replace=False))] = np.arange(70)
    model = BlendModel(vectors, context, popularity=rng.integers(0, 3, 70))
    items = rng.integers(0, n, 900).astype(np.int32)
    start = np.arange(0, 880, 4, dtype=np.int64)
    length = rng.integers(1, 4, len(start)).astype(np.int32)
    target = items[start + length]
    target[:5] = items[start[:5] + length[:5] - 1]  # the last item: never recommended
    q = Queries(items, start, length, target)
    for model_ in (model, BlendModel(vectors, None, popularity=np.ones(70))):
        for k in (1, 5, 20):
            got = vector_paths(model_, row_of, q, decay=0.6, history=3, k=k, batch=64)
            assert got == vector_paths_reference(model_, row_of, q, decay=0.6, history=3, k=k)


def test_dense_target_ranks_equal_the_rank_in_top_k_lists():
    from recembed.calibrate import dense_target_ranks
    from recembed.evaluate import query_ranks, top_k

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, (200, 40)).astype(np.float32)  # many exact ties
    scores[rng.random(scores.shape) < 0.05] = np.nan
    scores[rng.random(scores.shape) < 0.05] = -np.inf
    tie = (rng.integers(0, 3, 40) * 1e-6).astype(np.float32)
    allowed = rng.random(40) < 0.8
    last = rng.integers(0, 40, 200)
    targets = rng.integers(0, 40, 200)  # (query_ranks would match -1 to top_k's padding)
    for k in (1, 3, 20, 40):
        full = scores + tie
        full[:, ~allowed] = -np.inf
        full[np.arange(200), last] = -np.inf
        want = query_ranks(top_k(full, k), targets)
        np.testing.assert_array_equal(dense_target_ranks(scores, tie, allowed, last, targets, k),
                                      want)
    with pytest.raises(ValueError):
        dense_target_ranks(scores, tie[:3], allowed, last, targets, 5)
    with pytest.raises(ValueError):
        dense_target_ranks(scores, tie, allowed, last, targets, 0)
