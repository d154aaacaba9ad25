import numpy as np
import pandas as pd
import pytest

from recembed.artifacts import Embeddings
from recembed.train import export_vectors, train_word2vec


def _cluster_corpus(path, n_clusters=5, per=20, sessions=3000, seed=0):
    """Sessions drawn from disjoint item clusters: items c*per .. c*per+per-1."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as fh:
        for _ in range(sessions):
            c = rng.integers(n_clusters)
            fh.write(" ".join(map(str, c * per + rng.integers(0, per, 8))) + "\n")
    return n_clusters, per


def test_neighbours_stay_in_their_cluster(tmp_path):
    n_c, per = _cluster_corpus(tmp_path / "c.txt")
    res = train_word2vec(tmp_path / "c.txt", vector_size=16, epochs=5, workers=2, seed=1)
    assert (res.codes == np.arange(n_c * per)).all()
    u = res.vectors / np.linalg.norm(res.vectors, axis=1, keepdims=True)
    sim = u @ u.T
    np.fill_diagonal(sim, -np.inf)
    nn = np.argsort(-sim, axis=1)[:, :10]
    assert ((nn // per) == (np.arange(n_c * per) // per)[:, None]).all()


def test_same_seed_one_worker_identical_vectors(tmp_path):
    _cluster_corpus(tmp_path / "c.txt", sessions=500)
    kw = dict(vector_size=8, epochs=2, workers=1)
    a = train_word2vec(tmp_path / "c.txt", seed=3, **kw)
    b = train_word2vec(tmp_path / "c.txt", seed=3, **kw)
    c = train_word2vec(tmp_path / "c.txt", seed=4, **kw)
    assert np.array_equal(a.vectors, b.vectors) and np.array_equal(a.context, b.context)
    assert not np.array_equal(a.vectors, c.vectors)


def test_per_epoch_loss_and_throughput_are_reported(tmp_path):
    _cluster_corpus(tmp_path / "c.txt", sessions=500)
    res = train_word2vec(tmp_path / "c.txt", vector_size=8, epochs=4, workers=1)
    loss = res.stats["loss_per_epoch"]
    assert len(loss) == 4 and all(x > 0 for x in loss)
    assert loss[-1] < loss[0]  # per-epoch, not cumulative: it falls as training converges
    assert res.stats["tokens_trained"] == 500 * 8 * 4 and res.stats["words_per_s"] > 0


def test_exports_load_in_gensim_and_match_npy(tmp_path):
    from gensim.models import KeyedVectors

    _cluster_corpus(tmp_path / "c.txt", sessions=300)
    res = train_word2vec(tmp_path / "c.txt", vector_size=8, epochs=1, workers=1)
    vocab = pd.DataFrame({"code": np.arange(100), "id": [f"sku-{i}" for i in range(100)]})
    files = export_vectors(res, vocab, tmp_path)
    assert {"vectors.npy", "items.parquet", "vectors.bin", "vectors.txt",
            "context_vectors.npy"} <= {a.name for a in files}
    emb = Embeddings.load(tmp_path)
    vecs, ctx = emb.vectors, emb.context
    assert emb.ids.tolist() == [f"sku-{i}" for i in res.codes]
    assert (emb.codes == res.codes).all()  # `code` is the ingest code, as in the vocabulary
    for binary, name in ((True, "vectors.bin"), (False, "vectors.txt")):
        kv = KeyedVectors.load_word2vec_format(str(tmp_path / name), binary=binary)
        got = np.stack([kv[i] for i in emb.ids])
        np.testing.assert_allclose(got, vecs, rtol=0, atol=1e-5 if not binary else 0)
    assert ctx.shape == vecs.shape


def test_warm_start_initialises_shared_items(tmp_path):
    _cluster_corpus(tmp_path / "c.txt", sessions=300)
    init_vec = np.full((3, 8), 0.5, np.float32)
    res = train_word2vec(tmp_path / "c.txt", vector_size=8, epochs=1, workers=1, alpha=1e-9,
                         min_alpha=1e-9, init=(np.array([0, 1, 2]), init_vec, None))
    np.testing.assert_allclose(res.vectors[:3], 0.5, atol=1e-4)  # ~no learning: init survives


def test_empty_corpus_is_refused(tmp_path):
    (tmp_path / "e.txt").write_text("")
    with pytest.raises(ValueError, match="empty"):
        train_word2vec(tmp_path / "e.txt")


def test_token_budget_lowers_the_epochs(tmp_path):
    _cluster_corpus(tmp_path / "c.txt", sessions=500)  # 4,000 tokens
    res = train_word2vec(tmp_path / "c.txt", vector_size=8, epochs=10, workers=1,
                         max_tokens=12_500)
    assert res.stats["epochs"] == 3 and res.stats["epochs_requested"] == 10
    assert len(res.stats["loss_per_epoch"]) == 3
    assert res.stats["tokens_trained"] == 12_000


def test_token_budget_holds_when_one_pass_is_over_it(tmp_path):
    """issue 17, token budget: a corpus longer than train.max_tokens trains on its head."""
    from recembed.train import train_word2vec

    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"{i} {i + 1} {i + 2}\n" for i in range(0, 3000, 3)))
    res = train_word2vec(corpus, vector_size=4, epochs=5, workers=1, seed=1, max_tokens=900)
    assert res.stats["epochs"] == 1 and res.stats["corpus_tokens"] <= 900
    assert res.stats["tokens_trained"] <= 900 and res.codes.max() < 900
