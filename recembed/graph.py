"""The weighted item graph as CSR (scipy.sparse, int32 indices, float32 weights).

Edge a -> b for each item b that follows a within `window` steps of a session; the weight is the
sum of the sessions' decay weights (optionally divided by the step distance). networkx appears
only in the import/export helpers, never in the build.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from recembed.artifacts import session_weights_by_id

if TYPE_CHECKING:  # pandas costs ~1 s to import; loading a graph to walk it never needs it
    import pandas as pd

    from recembed.runtime import Runtime


@dataclass(frozen=True)
class GraphParams:
    """How the item graph is built (`[graph]`); the keywords of `build_item_graph`.

    Parameters
    ----------
    window : int >= 1, steps
        Edge a -> b when b follows a within this many steps of a session.
    distance_weighting : bool
        Divide an edge's session weight by its step distance.
    directed : bool
        Keep a -> b only; False adds b -> a too.
    min_weight : float >= 0
        Drop edges lighter than this (after summing).
    max_out_edges : int >= 0
        Keep only the heaviest out-edges of each node; 0 = all.
    """

    window: int = 1
    distance_weighting: bool = False
    directed: bool = False
    min_weight: float = 0.0
    max_out_edges: int = 0


@dataclass
class GraphSummary:
    """Size and shape of an item graph (degrees are out-degrees)."""

    nodes: int
    edges: int
    isolated: int
    dangling: int
    degree_p50: float
    degree_p90: float
    degree_p99: float
    degree_max: int
    weak_components: int
    largest_component: int

    def as_dict(self) -> dict:
        return asdict(self)


def build_item_graph(
    sessions: pd.DataFrame,
    session_weight,
    n_items: int,
    *,
    window: int = 1,
    distance_weighting: bool = False,
    directed: bool = False,
    min_weight: float = 0.0,
    max_out_edges: int = 0,
) -> sp.csr_matrix:
    """Item graph [n_items x n_items]: edge a -> b weighted by the sessions in which b follows a.

    Parameters
    ----------
    sessions : pandas.DataFrame
        Columns `session` (int64 id) and `item` (int32 code in [0, n_items)), ordered by
        session, then position.
    session_weight : pandas.DataFrame, pandas.Series or numpy.ndarray
        Decay weight of each session, joined by session id: the session table (`session`,
        `weight`), a Series indexed by session id, or a dense array indexed by session id.
        Weights are in (0, 1] for decay weights; any finite value >= 0 works.
    n_items : int
        Number of item codes (rows and columns of the result).
    window : int >= 1, steps
        Edge a -> b when b follows a within this many steps.
    distance_weighting : bool
        Divide an edge's session weight by its step distance.
    directed : bool
        Keep a -> b only; False adds b -> a too.
    min_weight : float >= 0
        Drop edges lighter than this (after summing).
    max_out_edges : int >= 0
        Keep only the heaviest out-edges of each node (ties: lower code); 0 = all.

    Returns
    -------
    scipy.sparse.csr_matrix
        float32 weights, int32 indices, sorted column indices per row (the walkers rely on it);
        self-loops are dropped.

    Examples
    --------
    >>> import pandas as pd
    >>> s = pd.DataFrame({"session": [5, 5, 5, 9, 9], "item": [0, 1, 2, 1, 2]})
    >>> w = pd.DataFrame({"session": [9, 5], "weight": [0.5, 1.0]})
    >>> g = build_item_graph(s, w, 3, directed=True)
    >>> g.toarray().tolist()
    [[0.0, 1.0, 0.0], [0.0, 0.0, 1.5], [0.0, 0.0, 0.0]]
    """
    if window < 1:
        raise ValueError(f"graph window must be >= 1, got {window}")
    sess = sessions["session"].to_numpy()
    item = sessions["item"].to_numpy().astype(np.int32)
    if len(item) and item.max() >= n_items:
        raise ValueError(f"item code {item.max()} >= n_items={n_items}")
    # join by id once per session, then spread over its events
    first = np.flatnonzero(np.r_[True, sess[1:] != sess[:-1]]) if len(sess) else np.zeros(0, int)
    w_ev = np.repeat(session_weights_by_id(sess[first], session_weight),
                     np.diff(np.r_[first, len(sess)]))
    src, dst, wt = [], [], []
    for d in range(1, window + 1):
        same = (sess[d:] == sess[:-d]) & (item[d:] != item[:-d])
        w = w_ev[:-d][same]
        src.append(item[:-d][same])
        dst.append(item[d:][same])
        wt.append(w / d if distance_weighting else w)
    src_a, dst_a, wt_a = np.concatenate(src), np.concatenate(dst), np.concatenate(wt)
    if not directed:
        src_a, dst_a = np.r_[src_a, dst_a], np.r_[dst_a, src_a]
        wt_a = np.r_[wt_a, wt_a]
    g = sp.csr_matrix((wt_a, (src_a, dst_a)), shape=(n_items, n_items), dtype=np.float64)
    return finish_graph(g, min_weight=min_weight, max_out_edges=max_out_edges)


def finish_graph(g: sp.csr_matrix, *, min_weight: float = 0.0,
                 max_out_edges: int = 0) -> sp.csr_matrix:
    """Sum duplicate edges, cut light edges, cap the out-degree: the last steps of the graph
    build, the same for both engines (Spark runs it on each partition's rows).

    Parameters
    ----------
    g : scipy.sparse.csr_matrix
        float64 edge weights, duplicates not yet summed; each row's entries in the order the
        local build emits them (the float sums depend on it).
    min_weight : float >= 0
        Drop edges lighter than this after summing; 0 keeps all.
    max_out_edges : int >= 0
        Keep only each row's heaviest edges (`keep_heaviest_edges`); 0 = all.

    Returns
    -------
    scipy.sparse.csr_matrix
        float32 weights, sorted column indices per row, int32 indices and indptr (when the
        edge count fits).
    """
    g.sum_duplicates()
    if min_weight > 0:
        g.data[g.data < min_weight] = 0
        g.eliminate_zeros()
    if max_out_edges > 0:
        g = keep_heaviest_edges(g, max_out_edges)
    g = g.astype(np.float32)
    g.sort_indices()
    if g.nnz < 2**31:  # scipy wants indices and indptr of one dtype
        g.indices, g.indptr = g.indices.astype(np.int32), g.indptr.astype(np.int32)
    return g


def graph_from_files(sessions_path: str | Path, table_path: str | Path, n_items: int,
                     params: GraphParams, runtime: Runtime) -> sp.csr_matrix:
    """The graph stage, local engine: `build_item_graph` of the sessions_train and session
    table artifacts (the engine-neutral signature `recembed.spark.graph` shares).

    Parameters
    ----------
    sessions_path, table_path : str or pathlib.Path
        The sessions_train (`session`, `item`, ordered) and session table (`session`,
        `weight`) Parquet files.
    n_items : int >= 0
        Item codes (rows and columns).
    params : GraphParams
        How the graph is built.
    runtime : recembed.runtime.Runtime
        Unused by the local engine.

    Returns
    -------
    scipy.sparse.csr_matrix
        As `build_item_graph`.
    """
    import pandas as pd

    return build_item_graph(pd.read_parquet(sessions_path, columns=["session", "item"]),
                            pd.read_parquet(table_path, columns=["session", "weight"]),
                            n_items, **asdict(params))


def graph_summary(g: sp.csr_matrix) -> GraphSummary:
    """Nodes, edges, isolated / dangling nodes, out-degree quantiles and weak components of a
    square CSR graph `g`.

    Examples
    --------
    >>> g = sp.csr_matrix(np.array([[0, 1, 0], [0, 0, 0], [0, 0, 0]], np.float32))
    >>> s = graph_summary(g)
    >>> (s.nodes, s.edges, s.isolated, s.dangling, s.weak_components)
    (3, 1, 1, 1, 2)
    """
    out_deg = np.diff(g.indptr)
    in_deg = np.bincount(g.indices, minlength=g.shape[0])
    from scipy.sparse.csgraph import connected_components

    n_comp, labels = connected_components(g, directed=True, connection="weak")
    sizes = np.bincount(labels) if len(labels) else np.zeros(1, np.int64)
    q = np.quantile(out_deg, [0.5, 0.9, 0.99]) if len(out_deg) else np.zeros(3)
    return GraphSummary(
        nodes=int(g.shape[0]), edges=int(g.nnz),
        isolated=int(((out_deg == 0) & (in_deg == 0)).sum()),
        dangling=int(((out_deg == 0) & (in_deg > 0)).sum()),
        degree_p50=float(q[0]), degree_p90=float(q[1]), degree_p99=float(q[2]),
        degree_max=int(out_deg.max()) if len(out_deg) else 0,
        weak_components=int(n_comp), largest_component=int(sizes.max()),
    )


def to_networkx(g: sp.csr_matrix, ids: list | np.ndarray | None = None, directed: bool = True):
    """A networkx (Di)Graph with `weight` edge attributes, nodes named by `ids` when given."""
    import networkx as nx

    G = nx.from_scipy_sparse_array(g, create_using=nx.DiGraph if directed else nx.Graph)
    if ids is not None:
        G = nx.relabel_nodes(G, dict(enumerate(ids)), copy=False)
    return G


def from_networkx(G, nodes: list | None = None) -> tuple[sp.csr_matrix, list]:
    """CSR (float32 weights, default 1) and the node list giving row order, from a networkx graph."""
    import networkx as nx

    nodes = list(G.nodes) if nodes is None else nodes
    g = nx.to_scipy_sparse_array(G, nodelist=nodes, weight="weight", dtype=np.float32,
                                 format="csr")
    g = sp.csr_matrix(g)
    g.sort_indices()
    return g, nodes


def save_graph(g: sp.csr_matrix, path) -> None:
    """Write the CSR graph as an uncompressed .npz of plain arrays (no pickle)."""
    sp.save_npz(path, g, compressed=False)


def load_graph(path) -> sp.csr_matrix:
    """Read a graph written by `save_graph`."""
    return sp.load_npz(path).tocsr()


# ---------------------------------------------------------------- helpers


def keep_heaviest_edges(g: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the k heaviest out-edges of each row (ties: lower column index first).

    Parameters
    ----------
    g : scipy.sparse.csr_matrix
        Summed edge weights (no duplicates).
    k : int >= 1
        Out-edges kept per row.

    Returns
    -------
    scipy.sparse.csr_matrix
        `g` itself when no row has more than k edges, else a new matrix of the kept edges.
    """
    deg = np.diff(g.indptr)
    if deg.max(initial=0) <= k:
        return g
    rows = np.repeat(np.arange(g.shape[0]), deg)
    order = np.lexsort((g.indices, -g.data, rows))
    rank = np.empty(g.nnz, np.int64)
    rank[order] = np.arange(g.nnz) - np.repeat(g.indptr[:-1], deg)
    keep = rank < k
    return sp.csr_matrix((g.data[keep], (rows[keep], g.indices[keep])), shape=g.shape)
