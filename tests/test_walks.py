import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import chisquare

from recembed.walks import random_walks, walk_array

# A small weighted undirected graph. Node 1's neighbours: 0 (weight 2), 2 (1), 3 (3), 4 (0.5).
# 0 and 2 are adjacent, 0 and 3 are not; 4 is adjacent to 0.
EDGES = {(0, 1): 2.0, (1, 2): 1.0, (1, 3): 3.0, (1, 4): 0.5, (0, 2): 1.5, (3, 5): 1.0,
         (0, 4): 2.5, (2, 5): 0.7}


def _graph():
    n = 6
    a = np.zeros((n, n), np.float32)
    for (i, j), w in EDGES.items():
        a[i, j] = a[j, i] = w
    return sp.csr_matrix(a), a


def _chi2_ok(counts: np.ndarray, probs: np.ndarray) -> float:
    probs = np.asarray(probs, np.float64)
    exp = probs / probs.sum() * counts.sum()
    return chisquare(counts, exp).pvalue


def test_first_order_transitions_match_edge_weights():
    g, a = _graph()
    n_walks = 200_000
    for v in range(6):
        w = walk_array(g, np.full(n_walks, v), walk_length=2, seed=11 + v)
        counts = np.bincount(w[:, 1], minlength=6)
        nz = a[v] > 0
        assert counts[~nz].sum() == 0
        assert _chi2_ok(counts[nz], a[v][nz]) > 1e-3


@pytest.mark.parametrize(("p", "q"), [(1.0, 1.0), (0.5, 2.0), (2.0, 0.5), (0.25, 4.0), (4.0, 0.25)])
def test_node2vec_second_order_transitions_are_exact(p, q):
    """From t=0 through v=1: x=0 is a return (1/p), x=2 and x=4 neighbour t (1), x=3 is farther
    (1/q); each times the edge weight w(1, x)."""
    g, a = _graph()
    w = walk_array(g, np.zeros(400_000, np.int32), method="node2vec", walk_length=3, p=p, q=q,
                   seed=5)
    via1 = w[w[:, 1] == 1]
    counts = np.bincount(via1[:, 2], minlength=6)
    alpha = np.array([1 / p, 0, 1.0, 1 / q, 1.0, 0])
    probs = alpha * a[1]
    assert counts[probs == 0].sum() == 0
    assert len(via1) > 50_000
    assert _chi2_ok(counts[probs > 0], probs[probs > 0]) > 1e-3


@pytest.mark.parametrize(("p", "q"), [(0.25, 4.0), (0.5, 2.0), (0.3, 0.5), (2.0, 0.5)])
def test_node2vec_on_a_directed_graph_uses_the_reverse_edge_weight_and_out_rows(p, q):
    """Directed: t=0 -> v=1 has weight 1 but 1 -> 0 weighs 3, so a return is 3/p. "x neighbours
    t" means the edge t -> x: 0 -> 2 exists (alpha 1), 4 -> 0 exists but 0 -> 4 does not (1/q).
    With 1/p above max(1, 1/q) the return node has its own envelope box, sized by w(1, 0)."""
    edges = {(0, 1): 1.0, (1, 0): 3.0, (1, 2): 1.0, (1, 3): 2.0, (1, 4): 0.5, (0, 2): 1.0,
             (4, 0): 1.0, (2, 5): 1.0, (3, 5): 1.0, (5, 0): 1.0}
    i, j = zip(*edges, strict=True)
    g = sp.csr_matrix((np.array(list(edges.values()), np.float32), (i, j)), shape=(6, 6))
    w = walk_array(g, np.zeros(300_000, np.int32), method="node2vec", walk_length=3, p=p, q=q,
                   seed=8)
    via1 = w[w[:, 1] == 1]
    counts = np.bincount(via1[:, 2], minlength=6)
    probs = np.array([3 / p, 0, 1.0, 2 / q, 0.5 / q, 0])
    assert counts[probs == 0].sum() == 0
    assert _chi2_ok(counts[probs > 0], probs[probs > 0]) > 1e-3
    # without the edge 1 -> 0 there is no way back: only 2 (alpha 1) and 3, 4 (1/q)
    del edges[(1, 0)]
    i, j = zip(*edges, strict=True)
    g = sp.csr_matrix((np.array(list(edges.values()), np.float32), (i, j)), shape=(6, 6))
    w = walk_array(g, np.zeros(100_000, np.int32), method="node2vec", walk_length=3, p=p, q=q,
                   seed=9)
    counts = np.bincount(w[w[:, 1] == 1, 2], minlength=6)
    probs = np.array([0, 0, 1.0, 2 / q, 0.5 / q, 0])
    assert counts[probs == 0].sum() == 0
    assert _chi2_ok(counts[probs > 0], probs[probs > 0]) > 1e-3


def test_node2vec_with_p_q_one_equals_first_order_distribution():
    g, a = _graph()
    w = walk_array(g, np.zeros(200_000, np.int32), method="node2vec", walk_length=3, seed=3)
    via1 = w[w[:, 1] == 1]
    counts = np.bincount(via1[:, 2], minlength=6)
    assert _chi2_ok(counts[a[1] > 0], a[1][a[1] > 0]) > 1e-3


def test_walks_stop_at_dangling_nodes_and_single_nodes_are_not_written(tmp_path):
    # directed chain 0 -> 1 -> 2, node 2 dangling, node 3 isolated
    g = sp.csr_matrix((np.ones(2, np.float32), ([0, 1], [1, 2])), shape=(4, 4))
    w = walk_array(g, np.array([0, 2]), walk_length=5)
    assert w[0].tolist() == [0, 1, 2, -1, -1]
    assert w[1].tolist() == [2, -1, -1, -1, -1]
    st = random_walks(g, tmp_path / "w.txt", walks_per_node=3, walk_length=5)
    lines = (tmp_path / "w.txt").read_text().splitlines()
    assert sorted(lines) == ["0 1 2"] * 3 + ["1 2"] * 3
    assert st.walks == 6 and st.tokens == 15


@pytest.mark.parametrize("method", ["deepwalk", "node2vec"])
def test_same_seed_same_corpus_whatever_the_threads(tmp_path, method):
    rng = np.random.default_rng(0)
    n = 3000
    g = sp.random(n, n, density=0.004, format="csr", random_state=1, dtype=np.float32)
    g = (g + g.T).tocsr()
    g.data = rng.random(g.nnz).astype(np.float32) + 0.1
    kw = dict(method=method, walks_per_node=4, walk_length=15, p=0.5, q=2.0, seed=9,
              chunk_walks=1000)
    random_walks(g, tmp_path / "a.txt", threads=1, **kw)
    random_walks(g, tmp_path / "b.txt", threads=2, **kw)
    random_walks(g, tmp_path / "c.txt", threads=2, **{**kw, "seed": 10})
    a, b = (tmp_path / "a.txt").read_bytes(), (tmp_path / "b.txt").read_bytes()
    assert a == b and len(a) > 100_000
    assert (tmp_path / "c.txt").read_bytes() != a


def test_corpus_lines_are_the_walks_in_decimal(tmp_path):
    """The formatted corpus equals the walks of `walk_array` from the same starts, code by code
    (codes up to 5 digits), whatever the chunking."""
    from recembed.walks import prepare_graph, walk_starts

    n, m = 20_000, 120_000
    rng = np.random.default_rng(2)
    g = sp.csr_matrix((rng.random(m, np.float32) + 0.1, (rng.integers(0, n, m),
                                                         rng.integers(0, n, m))), shape=(n, n))
    for chunk in (0, 777):
        random_walks(g, tmp_path / "w.txt", method="node2vec", p=0.5, q=2.0, walks_per_node=2,
                     walk_length=9, seed=4, chunk_walks=chunk)
        starts = walk_starts(prepare_graph(g).indptr, 2, seed=4)
        w = walk_array(g, starts, method="node2vec", p=0.5, q=2.0, walk_length=9, seed=4)
        expected = [" ".join(str(x) for x in row[row >= 0]) for row in w if row[1] >= 0]
        assert (tmp_path / "w.txt").read_text().splitlines() == expected
        assert max(len(x) for line in expected for x in line.split()) == 5


def test_popularity_start_weighting():
    from recembed.walks import walk_starts

    indptr = np.array([0, 1, 2, 3, 4])
    s = walk_starts(indptr, 1000, seed=0, popularity=np.array([1.0, 0, 0, 3.0]))
    assert set(np.unique(s)) == {0, 3}
    assert 0.7 < (s == 3).mean() < 0.8


def test_bad_input_is_refused():
    g, _ = _graph()
    with pytest.raises(ValueError, match="p and q"):
        walk_array(g, [0], method="node2vec", p=0)
    with pytest.raises(ValueError, match="method"):
        walk_array(g, [0], method="node3vec")
    bad = g.copy()
    bad.data[0] = -1
    with pytest.raises(ValueError, match="positive"):
        walk_array(bad, [0])


def test_walk_budget_holds_whatever_the_graph(tmp_path):
    """issue 17, token budget: walks.max_tokens caps the corpus; every node still starts one."""
    from recembed.walks import random_walks

    n = 500
    rows = np.arange(n)
    g = sp.csr_matrix((np.ones(n), (rows, (rows + 1) % n)), shape=(n, n))
    full = random_walks(g, tmp_path / "a.txt", walks_per_node=10, walk_length=8, seed=1)
    capped = random_walks(g, tmp_path / "b.txt", walks_per_node=10, walk_length=8, seed=1,
                          max_tokens=8 * 1200)
    assert full.walks == 5000 and capped.walks == 1200 and capped.tokens <= 8 * 1200
    starts = [int(line.split()[0]) for line in (tmp_path / "b.txt").read_text().splitlines()]
    counts = np.bincount(starts, minlength=n)
    assert counts.min() >= 2 and counts.max() <= 3  # rounds: every node before any twice


def test_walk_cap_says_how_many_walks_it_drops_and_why(caplog):
    from recembed.walks import capped_starts

    starts = np.arange(5000)
    with caplog.at_level("WARNING", logger="recembed"):
        kept = capped_starts(starts, 8, 8 * 1200, "half the training amount (x)")
    assert len(kept) == 1200 and (kept == starts[:1200]).all()
    assert "half the training amount (x) = 9,600 tokens: walking 1,200 of the 5,000" in caplog.text
    caplog.clear()
    assert capped_starts(starts, 8, 0) is starts and capped_starts(starts, 8, 40_000) is starts
    assert caplog.text == ""
