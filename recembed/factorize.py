"""Item vectors by factorizing item-kNN's similarity: the corpus option "svd" (`[svd]`).

The item-kNN baseline (`recembed.evaluate.item_knn_scorer`) ranks by the cosine of two items'
columns in the binary session x item matrix X. With each column scaled to unit norm,
X_n = X D^-1/2 (D = the items' session counts), that cosine is the dot product of two columns
of X_n, so a rank-d truncated SVD X_n ~ U S V^T gives item vectors V S whose dot products are
the best rank-d approximation (least squares) of item-kNN's whole similarity matrix. The
vectors and the context vectors are the same rows: the directional ANN path (a query's decayed
sum of its last items' vectors . every item's context vector, `index_context.faiss`) then
answers item-kNN's ranking from plain vectors.

Why it is an option and not a replacement (benchmarks/RESULTS.md, "item-kNN factorized"): on a
small dense catalogue (synth ratings) rank 64 reaches item-kNN and the skip-gram does not; on a
large catalogue of rare items (purchases, histories, music) rank 64 cannot hold the sharp
neighbourhoods and the skip-gram is far better. Calibration measures it beside the skip-gram
corpora on the same validation queries and chooses.

Every training session counts once, as in item-kNN: the recency decay of the skip-gram's
corpus (`recembed.sessions.session_weights`) is not applied. Scaling each session's row by
sqrt(weight) was tried and lost: on synth ratings the vectors' validation objective fell from
0.093 to 0.038, below item-kNN's 0.075 (benchmarks/RESULTS.md, "item-kNN factorized").

Determinism: ARPACK (`scipy.sparse.linalg.svds`) starts from a vector drawn from `seed`; a
catalogue of at most `DENSE_BELOW` items takes the exact eigen-decomposition of the Gram matrix
instead (no start vector at all). A singular vector's sign is arbitrary, but the dot products
the vectors serve are not.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

DENSE_BELOW = 1024  # items: the n x n Gram matrix (float64, 8 MB) is decomposed exactly


def factorize_sessions(sessions: np.ndarray, items: np.ndarray, n_items: int, *, dimension: int, min_count: int = 1, seed: int = 0):
    """Item vectors whose dot products approximate item-kNN's cosine similarity.

    Parameters
    ----------
    sessions : ndarray of int, shape (n_events,)
        Session id of each event (>= 0).
    items : ndarray of int, shape (n_events,)
        Item code of each event, in [0, n_items).
    n_items : int >= 1
        Catalogue size (ingest codes).
    dimension : int >= 1
        Dimension of the vectors (`train.vector_size`). A catalogue with fewer items than
        dimensions gets zero columns past its rank.
    min_count : int >= 1
        Items seen in fewer sessions get no row (`train.min_count`, as the skip-gram's
        vocabulary).
    seed : int
        ARPACK's start vector.

    Returns
    -------
    recembed.train.TrainResult
        vectors = context (float32, [n_rows, dimension]), the item code of each row
        (ascending), the session count of each row, and `stats` (vocab, corpus_tokens =
        tokens_trained = the matrix's nonzeros, the work calibration's budgets count for it:
        one pass over the matrix, no SGD; train_seconds, and ``svd``: rank, solver, sessions,
        the items seen but dropped by `min_count`, the share of the squared norm the rank
        keeps).
    """
    from recembed.train import EmptyVocabulary, TrainResult

    sessions = np.asarray(sessions, np.int64)
    items = np.asarray(items, np.int64)
    if sessions.shape != items.shape:
        raise ValueError(f"sessions ({sessions.shape}) and items ({items.shape}) differ in "
                         "length")
    if dimension < 1:
        raise ValueError(f"dimension must be >= 1, got {dimension}")
    if len(items) and (items.min() < 0 or items.max() >= n_items):
        raise ValueError(f"item codes must lie in [0, {n_items})")
    t0 = time.perf_counter()
    srow = np.unique(sessions, return_inverse=True)[1] if len(sessions) else sessions
    n_sess = int(srow.max()) + 1 if len(srow) else 0
    x = sp.csr_matrix((np.ones(len(items)), (srow, items)), shape=(n_sess, n_items))
    x.data[:] = 1.0  # binary occurrence, as item-kNN's (duplicates were summed)
    counts = np.diff(x.tocsc().indptr)  # sessions per item
    codes = np.flatnonzero(counts >= max(min_count, 1)).astype(np.int32)
    if len(codes) == 0:
        raise EmptyVocabulary(f"no item is in {min_count} or more sessions")
    # a binary column's norm is the root of its session count (>= 1 for every kept code)
    x = (x[:, codes] @ sp.diags(1.0 / np.sqrt(counts[codes]))).tocsr()
    vectors, solver, rank, kept = _top_factors(x, dimension, seed)
    total = float(len(codes))  # each unit-norm column adds 1 to the squared norm
    seconds = time.perf_counter() - t0
    stats = {"vocab": len(codes), "corpus_tokens": int(x.nnz), "epochs": 1,
             "epochs_requested": 1, "tokens_trained": int(x.nnz), "train_seconds": round(seconds, 3),
             "words_per_s": 0,
             "svd": {"rank": rank, "solver": solver, "sessions": n_sess,
                     "below_min_count": int((counts > 0).sum()) - len(codes),
                     "norm_kept": round(kept / total, 6)}}
    v = vectors.astype(np.float32)
    return TrainResult(v, v.copy(), codes, counts[codes].astype(np.int64), stats)


def _top_factors(x: sp.csr_matrix, dimension: int, seed: int
                 ) -> tuple[np.ndarray, str, int, float]:
    """(V S padded to `dimension` columns, solver, rank, sum of the kept squared singular
    values) of `x`, largest singular value first."""
    n = x.shape[1]
    if n <= DENSE_BELOW or min(x.shape) <= dimension + 1:
        # small: the exact eigen-decomposition of the Gram matrix X^T X = V S^2 V^T
        gram = (x.T @ x).toarray()
        lam, q = np.linalg.eigh(gram)
        order = np.argsort(-lam, kind="stable")[:dimension]
        lam, q = np.clip(lam[order], 0.0, None), q[:, order]
        factors, solver = q * np.sqrt(lam), "eigh"
        kept = float(lam.sum())
    else:
        k = min(dimension, min(x.shape) - 1)
        v0 = np.random.default_rng(seed).uniform(-1.0, 1.0, min(x.shape))
        _, s, vt = svds(x, k=k, v0=v0)
        order = np.argsort(-s, kind="stable")
        s, vt = s[order], vt[order]
        factors, solver = vt.T * s, "arpack"
        kept = float((s ** 2).sum())
    rank = int(factors.shape[1])
    out = np.zeros((n, dimension))
    out[:, :rank] = factors
    return out, solver, rank, kept
