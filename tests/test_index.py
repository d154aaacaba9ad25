import numpy as np
import pytest

from recembed.index import (
    EXACT_BELOW,
    HNSW_BELOW,
    IP_EXACT_BELOW,
    build_index,
    choose_index,
    exact_search,
    load_index,
    prepare_vectors,
    save_index,
    tune_index,
)


@pytest.mark.parametrize(("n", "budget", "expect"), [
    (10_000, 8, "Flat"), (EXACT_BELOW - 1, 8, "Flat"), (200_000, 8, "HNSW32"),
    (HNSW_BELOW + 1, 8, "IVF"), (5_000_000, 1, "PQ"),
])
def test_auto_choice_by_size_and_memory(n, budget, expect):
    factory, reason = choose_index(n, 64, memory_budget_gb=budget)
    assert expect in factory and reason
    if factory.startswith("IVF"):
        nlist = int(factory[3:].split(",")[0].split("_")[0])
        assert 4 * np.sqrt(n) <= nlist <= 16 * np.sqrt(n)
        assert n / nlist >= 39


def test_ivf_without_enough_training_points_falls_back_and_says_why():
    x = np.random.default_rng(0).normal(size=(500, 16)).astype(np.float32)
    _index, meta = build_index(x, factory="IVF1024,Flat")
    assert meta.factory == "Flat" and "39" in meta.reason


def _clustered(n=20_000, d=32, k=50, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    return (centres[rng.integers(0, k, n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize("factory", ["HNSW16", "IVF128,Flat"])
def test_tuning_reaches_the_target_measured_against_exact_search(factory):
    import faiss

    x = _clustered()
    index, meta = build_index(x, factory=factory, hnsw_m=16, ef_construction=40)
    meta = tune_index(index, x, meta, target_recall=0.95, k=50, n_queries=300, seed=1)
    assert meta.reached_target and meta.recall >= 0.95
    # re-measure independently with the chosen parameters
    xn = prepare_vectors(x, "cosine")
    q = xn[np.random.default_rng(7).choice(len(x), 300, replace=False)]
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(xn)
    _, truth = exact.search(q, 50)
    _, got = index.search(q, 50)
    rec = np.mean([len(np.intersect1d(a, b)) / 50 for a, b in zip(got, truth, strict=True)])
    assert rec >= 0.93
    assert meta.tuning[0]["recall"] <= meta.recall


def test_recall_on_real_item_vectors_is_measured(tmp_path):
    from recembed.sequences import write_session_corpus
    from recembed.train import train_word2vec
    from tests.test_graph import _real_sessions

    s, _ = _real_sessions("yoochoose")
    write_session_corpus(s.train, s.table["weight"].to_numpy(), tmp_path / "c.txt")
    res = train_word2vec(tmp_path / "c.txt", vector_size=16, epochs=3, workers=2)
    index, meta = build_index(res.vectors, factory="HNSW8", hnsw_m=8, ef_construction=16)
    meta = tune_index(index, res.vectors, meta, target_recall=0.99, k=100, n_queries=500)
    assert meta.tuning[0]["recall"] < 1.0  # a small efSearch really is approximate here
    assert meta.reached_target and meta.recall >= 0.99
    assert meta.search_params.startswith("efSearch=")
    save_index(index, meta, tmp_path)
    loaded, m = load_index(tmp_path)
    assert m["recall"] == meta.recall and loaded.ntotal == len(res.vectors)


def test_nan_vectors_are_refused():
    x = np.ones((10, 4), np.float32)
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        build_index(x)


@pytest.mark.slow  # IVF-PQ training and tuning
def test_ivf_pq_with_refinement_builds_and_tunes():
    x = _clustered(n=20_000, d=32)
    index, meta = build_index(x, factory="IVF64,PQ8x8,Refine(SQ8)")
    meta = tune_index(index, x, meta, target_recall=0.9, k=10, n_queries=200)
    # the refinement parameter is applied (faiss names it k_factor_rf) and recall is measured
    assert "k_factor_rf" in meta.search_params and meta.recall > 0.5 and len(meta.tuning) > 1
    # the grid raises the refinement factor as well as nprobe, so the target is reachable
    assert {t["params"].split("k_factor_rf=")[1] for t in meta.tuning} >= {"4", "16"}
    assert meta.reached_target


def test_an_inner_product_index_stays_exact_below_its_own_bound():
    assert choose_index(200_000, 64, metric="ip")[0] == "Flat"
    assert choose_index(200_000, 64, metric="cosine")[0] == "HNSW32"
    assert choose_index(IP_EXACT_BELOW, 64, metric="ip")[0] == "HNSW32"
    assert choose_index(EXACT_BELOW - 1, 64, metric="ip")[0] == "Flat"


@pytest.mark.parametrize("block", [1, 7, 256])
def test_exact_search_gives_faiss_exact_lists_in_order(block):
    import faiss

    rng = np.random.default_rng(3)
    items = rng.normal(size=(3_000, 16)).astype(np.float32)
    q = rng.normal(size=(50, 16)).astype(np.float32)
    _, rows = exact_search(items, block=block)(q, 40)
    d_ref, _ = faiss.knn(q, items, 40, metric=faiss.METRIC_INNER_PRODUCT)
    assert rows.shape == (50, 40) and rows.dtype == np.int32
    got = np.take_along_axis(q @ items.T, rows.astype(np.int64), axis=1)
    # the same top scores, best first (sets agree up to float ties)
    assert np.allclose(got, d_ref, rtol=1e-5, atol=1e-5)
    assert (np.diff(got, axis=1) <= 1e-6).all()
    # a k above the catalogue is cut to it, and results do not depend on the block
    _, all_rows = exact_search(items[:30], block=block)(q, 100)
    assert all_rows.shape == (50, 30) and (np.sort(all_rows, axis=1) == np.arange(30)).all()
    assert (exact_search(items, block=3)(q, 40)[1] == rows).all()


def test_exact_search_refuses_bad_shapes():
    s = exact_search(np.ones((5, 4), np.float32))
    with pytest.raises(ValueError, match="queries"):
        s(np.ones((2, 3), np.float32), 2)
    with pytest.raises(ValueError, match="k must be"):
        s(np.ones((2, 4), np.float32), 0)
    with pytest.raises(ValueError, match="non-empty"):
        exact_search(np.ones((0, 4), np.float32))
