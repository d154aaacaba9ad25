"""LINE item embeddings (Tang et al. 2015): first- and second-order proximity trained by SGD on
edges sampled by weight from the item graph, in numba kernels.

- **Edge sampling.** One alias table (Walker/Vose) over every edge of the CSR graph, weight =
  the edge's weight: an O(1) draw of edge a -> b in proportion to w(a, b). The graph's direction
  is kept: a directed graph holds a -> b only, so (b, a) is never drawn; an undirected graph
  (`graph.directed = false`) already stores both directions.
- **Negatives.** Nodes drawn by weighted degree (in + out) ** `ns_exponent` (0.75 in the
  paper), one alias table; a negative equal to the positive's target is skipped.
- **First order** (`order = 1`): one vector per node, the loss of sigma(u_a . u_b) against
  sigma(-u_a . u_n); undirected by nature (it sees a -> b and b -> a alike).
- **Second order** (`order = 2`): vertex vectors u and context vectors c, sigma(u_a . c_b) for
  a -> b; the context vectors then serve the directional path (query vectors . context) as
  SGNS's syn1neg does.
- **Both** (`order = "both"`): each order trained with half the dimension, each normalized per
  row, then concatenated (the paper's recipe); the context half of order 1 is its vectors.
- Learning rate: linear decay from `alpha` to `alpha * 1e-4` over the samples (the reference
  implementation's schedule).

Why not gensim: skip-gram's objective is the second-order one, but gensim trains on sentences:
an edge written as the sentence "a b" with window 1 trains both a -> b and b -> a (so direction
is lost), weighted sampling would have to be written out as repeated sentences (a corpus of
`samples` lines), and the first-order objective (both sides of a pair share one vector table)
has no gensim equivalent. The sampler, the negatives and both SGD updates are therefore written
here (~60 lines of kernel), not delegated.

Determinism: the samples are cut into blocks of `BLOCK` samples, and block k draws from its own
random stream derived from (seed, order, k), as `recembed.walks` derives one stream per walk.
With `workers = 1` (the default) the blocks are applied in order on one thread: the vectors are
byte-identical whatever numba's thread count. `workers > 1` runs the blocks Hogwild-style in
parallel (lock-free updates of shared rows): faster, but the result then depends on thread
timing, as gensim's does with more than one worker.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numba
import numpy as np
import scipy.sparse as sp
from numba import njit, prange

from recembed.walks import _uniform, _walk_state

if TYPE_CHECKING:
    from recembed.train import TrainResult

BLOCK = 1 << 16  # samples per random stream (one block = one unit of parallel work)
_MAX_EXP = 6.0  # sigma clipped to [sigma(-6), sigma(6)], as word2vec's table


@dataclass(frozen=True)
class LineParams:
    """LINE settings (`[line]`, the run's seed); keywords of `train_line`.

    Parameters
    ----------
    order : {1, 2, "both"}
        First-order, second-order proximity, or both concatenated.
    dimension : int >= 2
        Dimension of the LINE vectors ("both": half per order, so it must be even).
    samples : int >= 0, edge samples
        Edge samples in all (per order); 0 = `epochs` x edges.
    epochs : float > 0
        Edge samples per edge when `samples` = 0 (a "pass" over the edges, drawn by weight).
    negative : int >= 1
        Negative nodes per sampled edge.
    ns_exponent : float
        Exponent of the negatives' weighted-degree distribution (0.75 in the paper).
    alpha : float > 0
        Initial learning rate (decays linearly to alpha * 1e-4).
    seed : int >= 0
        Seed of the initial vectors and of every block's random stream.
    workers : int >= 1
        1 = deterministic (blocks in order, one thread); > 1 = Hogwild on numba threads.
    """

    order: int | str = 1
    dimension: int = 64
    samples: int = 0
    epochs: float = 50.0
    negative: int = 5
    ns_exponent: float = 0.75
    alpha: float = 0.025
    seed: int = 0
    workers: int = 1

    def kwargs(self) -> dict:
        """The settings as `train_line` keyword arguments."""
        return asdict(self)


@dataclass
class LineResult:
    """LINE vectors of the nodes with at least one edge: `vectors` [n, dimension] float32,
    `context` [n, dimension] (order 1: the vectors themselves), `codes` (int32 node ids,
    ascending), `counts` (int64 edges touching the node, in + out) and `stats`."""

    vectors: np.ndarray
    context: np.ndarray
    codes: np.ndarray
    counts: np.ndarray
    stats: dict = field(default_factory=dict)


@dataclass
class EdgeSampler:
    """Alias tables of a graph's edges (by weight) and of its nodes (negatives).

    `src`, `dst` (int32 [nnz]): edge e is src[e] -> dst[e]; `edge_prob` (float64), `edge_alias`
    (int64) [nnz]: Vose alias table over the edge weights; `node_prob`, `node_alias` [n]: over
    weighted degree ** ns_exponent (nodes without edges have probability 0).
    """

    src: np.ndarray
    dst: np.ndarray
    edge_prob: np.ndarray
    edge_alias: np.ndarray
    node_prob: np.ndarray
    node_alias: np.ndarray

    @classmethod
    def build(cls, g: sp.csr_matrix, ns_exponent: float = 0.75) -> EdgeSampler:
        """From a square CSR graph with finite positive weights and at least one edge."""
        if not sp.issparse(g) or g.shape[0] != g.shape[1]:
            raise ValueError("the graph must be a square scipy.sparse matrix")
        g = g.tocsr()
        if g.nnz == 0:
            raise ValueError("LINE needs a graph with at least one edge")
        w = np.asarray(g.data, np.float64)
        if not (np.isfinite(w).all() and w.min() > 0):
            raise ValueError("edge weights must be finite and positive")
        n = g.shape[0]
        src = np.repeat(np.arange(n, dtype=np.int32), np.diff(g.indptr))
        dst = np.asarray(g.indices, np.int32)
        deg = np.bincount(src, w, minlength=n) + np.bincount(dst, w, minlength=n)
        node_w = np.zeros(n)
        node_w[deg > 0] = deg[deg > 0] ** ns_exponent
        ep, ea = alias_table(w)
        npb, na = alias_table(node_w)
        return cls(src, dst, ep, ea, npb, na)

    def draw_edges(self, n: int, seed: int) -> np.ndarray:
        """`n` edge indices drawn by weight from one random stream (for tests and checks)."""
        return _draw_many(self.edge_prob, self.edge_alias, n, np.uint64(seed))

    def draw_nodes(self, n: int, seed: int) -> np.ndarray:
        """`n` negative nodes drawn by degree ** ns_exponent from one random stream."""
        return _draw_many(self.node_prob, self.node_alias, n, np.uint64(seed))


def alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias table of non-negative weights (not all zero).

    Returns
    -------
    (prob float64 [n], alias int64 [n])
        Slot k = floor(u * n) is taken when the fraction of u * n is below prob[k], else
        alias[k]: P(k) = weights[k] / sum(weights).
    """
    w = np.asarray(weights, np.float64)
    if len(w) == 0 or not (np.isfinite(w).all() and w.min() >= 0 and w.sum() > 0):
        raise ValueError("alias weights must be finite, >= 0 and not all 0")
    return _alias(w)


def train_line(g: sp.csr_matrix, *, order: int | str = 1, dimension: int = 64, samples: int = 0,
               epochs: float = 50.0, negative: int = 5, ns_exponent: float = 0.75,
               alpha: float = 0.025, seed: int = 0, workers: int = 1) -> LineResult:
    """Train LINE on the item graph `g` (`LineParams` documents the keywords).

    Parameters
    ----------
    g : scipy.sparse.csr_matrix
        Square item graph (`recembed.graph.build_item_graph`): edge a -> b of weight > 0.

    Returns
    -------
    LineResult
        Rows for the nodes with at least one edge; stats: order, dimension, samples (per
        order), edges, nodes, train_seconds, samples_per_s.

    Examples
    --------
    >>> g = sp.csr_matrix(np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]], np.float32))
    >>> r = train_line(g, dimension=4, samples=1000, seed=1)
    >>> r.vectors.shape, r.context.shape, r.codes.tolist()
    ((3, 4), (3, 4), [0, 1, 2])
    """
    check_line_args(order, dimension, samples, epochs, negative, alpha, workers)
    t0 = time.perf_counter()
    es = EdgeSampler.build(g, ns_exponent)
    n = g.shape[0]
    total = int(samples) if samples > 0 else max(1, round(epochs * g.nnz))
    orders = (1, 2) if order == "both" else (int(order),)
    dim = dimension // len(orders)
    parts_v, parts_c = [], []
    for o in orders:
        rng = np.random.default_rng([seed, o])
        vert = ((rng.random((n, dim), dtype=np.float32) - 0.5) / dim).astype(np.float32)
        ctx = vert if o == 1 else np.zeros((n, dim), np.float32)
        stream = np.uint64(seed) ^ (np.uint64(o) << np.uint64(56))
        args = (es.src, es.dst, es.edge_prob, es.edge_alias, es.node_prob, es.node_alias, vert,
                ctx, np.int64(total), np.int64(negative), np.float64(alpha), stream)
        if workers > 1:
            numba.set_num_threads(min(workers, numba.config.NUMBA_NUM_THREADS))
            _train_hogwild(*args)
        else:
            _train_serial(*args)
        parts_v.append(vert)
        parts_c.append(ctx)
    deg = np.bincount(es.src, minlength=n) + np.bincount(es.dst, minlength=n)
    codes = np.flatnonzero(deg > 0).astype(np.int32)
    if len(orders) == 1:
        vectors, context = parts_v[0][codes], parts_c[0][codes]
    else:  # the paper: normalize each order's vectors, then concatenate
        v1, v2 = unit_rows(parts_v[0][codes]), unit_rows(parts_v[1][codes])
        c2 = parts_c[1][codes]
        c2 = c2 / max(float(np.linalg.norm(c2, axis=1).mean()), 1e-12)
        vectors, context = np.hstack([v1, v2]), np.hstack([v1, c2])
    secs = time.perf_counter() - t0
    stats = {"order": order, "dimension": dimension, "samples": total, "edges": int(g.nnz),
             "nodes": len(codes), "train_seconds": round(secs, 3),
             "samples_per_s": round(total * len(orders) / secs) if secs else 0}
    return LineResult(np.ascontiguousarray(vectors, np.float32),
                      np.ascontiguousarray(context, np.float32), codes,
                      deg[codes].astype(np.int64), stats)


def split_corpus(option: str) -> tuple[str | None, str]:
    """A corpus option (`calibrate.corpora`) as (skip-gram corpus or None, line mode):
    "both" -> ("both", "off"), "line" -> (None, "alone"), "walks+line" -> ("walks", "concat");
    "svd" (`recembed.factorize`, no skip-gram and no LINE) -> (None, "off").
    """
    if option == "svd":
        return None, "off"
    if option == "line":
        return None, "alone"
    if option.endswith("+line"):
        return option[: -len("+line")], "concat"
    return option, "off"


def samples_for(params: LineParams, tokens: int, edges: int, epochs: int) -> int:
    """LINE's edge samples per order: `params.samples` when set (> 0), else the training
    amount in tokens (one edge sample per skip-gram token: the same amount the corpus options
    are compared at), else `epochs` x edges (train.epochs set).

    Parameters
    ----------
    params : LineParams
    tokens : int >= 0, tokens
        The training amount (0 = train.epochs decides).
    edges : int >= 0
        Edges of the item graph.
    epochs : int >= 1
        train.epochs when it is set.
    """
    if params.samples > 0:
        return int(params.samples)
    return int(tokens) if tokens > 0 else max(1, int(epochs) * int(edges))


def with_line(res: TrainResult | None, line: LineResult) -> TrainResult:
    """The vectors training exports: LINE's alone (`res` None) or appended to the skip-gram's
    (`concat_vectors`, rows = the skip-gram's); `stats["line"]` holds LINE's statistics."""
    from recembed.train import TrainResult

    if res is None:
        st = line.stats
        stats = {"vocab": len(line.codes), "corpus_tokens": st["edges"], "epochs": 1,
                 "epochs_requested": 1, "tokens_trained": st["samples"],
                 "train_seconds": st["train_seconds"], "words_per_s": st["samples_per_s"],
                 "line": st}
        return TrainResult(line.vectors, line.context, line.codes, line.counts, stats)
    vectors, context = concat_vectors(res.codes, res.vectors, res.context, line)
    stats = {**res.stats, "line": line.stats}
    return TrainResult(vectors, context, res.codes, res.counts, stats, res.side)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero); float32."""
    nrm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(nrm > 0, nrm, 1.0)).astype(np.float32)


def concat_vectors(codes_a: np.ndarray, vec_a: np.ndarray, ctx_a: np.ndarray | None,
                   line: LineResult) -> tuple[np.ndarray, np.ndarray | None]:
    """SGNS rows (`codes_a`, `vec_a`, `ctx_a`) with LINE's appended, for the rows of `codes_a`.

    Each block is normalized so neither dominates a dot product: item vectors per row to unit
    norm, context vectors by one factor per block (mean row norm 1), so the directional path's
    scores (a query's item vector . an item's context vector) stay a sum of the two models'.
    A code LINE has no row for (no edge) gets zeros in the LINE half.

    Returns
    -------
    (vectors [n, d_a + d_line] float32, context of the same shape or None when `ctx_a` is None)
    """
    pos = np.searchsorted(line.codes, codes_a)
    pos = np.minimum(pos, max(len(line.codes) - 1, 0))
    hit = (line.codes[pos] == codes_a) if len(line.codes) else np.zeros(len(codes_a), bool)
    lv = np.where(hit[:, None], line.vectors[pos], 0.0).astype(np.float32)
    vectors = np.hstack([unit_rows(vec_a), unit_rows(lv)])
    if ctx_a is None:
        return vectors, None
    lc = np.where(hit[:, None], line.context[pos], 0.0).astype(np.float32)

    def scaled(c):
        m = float(np.linalg.norm(c, axis=1).mean()) if len(c) else 0.0
        return (c / m if m > 0 else c).astype(np.float32)

    return vectors, np.hstack([scaled(ctx_a), scaled(lc)])


def check_line_args(order, dimension: int, samples: int, epochs: float, negative: int,
                    alpha: float, workers: int) -> None:
    """Raise ValueError for settings `train_line` cannot use (see `LineParams`)."""
    if order not in (1, 2, "both"):
        raise ValueError(f"LINE order must be 1, 2 or 'both', got {order!r}")
    if dimension < 2 or (order == "both" and dimension % 2):
        raise ValueError(f"LINE dimension must be >= 2 (even for order 'both'), got {dimension}")
    if samples < 0 or not epochs > 0 or negative < 1 or not alpha > 0 or workers < 1:
        raise ValueError("LINE needs samples >= 0, epochs > 0, negative >= 1, alpha > 0 and "
                         "workers >= 1")


# ---------------------------------------------------------------- numba kernels


@njit(cache=True)
def _alias(w):
    n = len(w)
    prob = np.ones(n, np.float64)
    alias = np.arange(n).astype(np.int64)
    scaled = w * (n / w.sum())
    small = np.empty(n, np.int64)
    large = np.empty(n, np.int64)
    ns = nl = 0
    for k in range(n):
        if scaled[k] < 1.0:
            small[ns] = k
            ns += 1
        else:
            large[nl] = k
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        s = small[ns]
        lg = large[nl - 1]
        prob[s] = scaled[s]
        alias[s] = lg
        scaled[lg] -= 1.0 - scaled[s]
        if scaled[lg] < 1.0:
            nl -= 1
            small[ns] = lg
            ns += 1
    return prob, alias  # leftovers keep prob 1, alias self (1 up to rounding)


@njit(inline="always")
def _pick(prob, alias, state):
    state, u = _uniform(state)
    x = u * len(prob)
    k = int(x)
    return state, (k if x - k < prob[k] else alias[k])


@njit(cache=True)
def _draw_many(prob, alias, n, seed):
    out = np.empty(n, np.int64)
    state = _walk_state(seed, 0)
    for i in range(n):
        state, out[i] = _pick(prob, alias, state)
    return out


@njit(inline="always")
def _sgd_pair(vert, ctx, a, x, label, lr, err):
    """One logistic update of vert[a] . ctx[x] towards `label`; ctx[x] moves now, vert[a]'s
    gradient accumulates in `err`."""
    dim = vert.shape[1]
    f = 0.0
    for d in range(dim):
        f += vert[a, d] * ctx[x, d]
    if f > _MAX_EXP:
        f = _MAX_EXP
    elif f < -_MAX_EXP:
        f = -_MAX_EXP
    g = (label - 1.0 / (1.0 + np.exp(-f))) * lr
    for d in range(dim):
        err[d] += g * ctx[x, d]
        ctx[x, d] += g * vert[a, d]


@njit(inline="always")
def _block(b, src, dst, eprob, ealias, nprob, nalias, vert, ctx, total, negative, alpha, seed,
           err):
    """Samples [b * BLOCK, min((b + 1) * BLOCK, total)) from block b's own stream."""
    state = _walk_state(seed, b)
    lo = b * BLOCK
    hi = min(lo + BLOCK, total)
    dim = vert.shape[1]
    for t in range(lo, hi):
        lr = alpha * (1.0 - t / total)
        if lr < alpha * 1e-4:
            lr = alpha * 1e-4
        state, e = _pick(eprob, ealias, state)
        a = src[e]
        pos = dst[e]
        for d in range(dim):
            err[d] = 0.0
        _sgd_pair(vert, ctx, a, pos, 1.0, lr, err)
        for _ in range(negative):
            state, x = _pick(nprob, nalias, state)
            if x == pos or x == a:
                continue
            _sgd_pair(vert, ctx, a, x, 0.0, lr, err)
        for d in range(dim):
            vert[a, d] += err[d]


@njit(cache=True, nogil=True)
def _train_serial(src, dst, eprob, ealias, nprob, nalias, vert, ctx, total, negative, alpha,
                  seed):
    err = np.empty(vert.shape[1], np.float32)
    for b in range((total + BLOCK - 1) // BLOCK):
        _block(b, src, dst, eprob, ealias, nprob, nalias, vert, ctx, total, negative, alpha,
               seed, err)


@njit(parallel=True, cache=True, nogil=True)
def _train_hogwild(src, dst, eprob, ealias, nprob, nalias, vert, ctx, total, negative, alpha,
                   seed):
    for b in prange((total + BLOCK - 1) // BLOCK):
        err = np.empty(vert.shape[1], np.float32)
        _block(b, src, dst, eprob, ealias, nprob, nalias, vert, ctx, total, negative, alpha,
               seed, err)

