from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from recembed.graph import (
    build_item_graph,
    from_networkx,
    graph_summary,
    load_graph,
    save_graph,
    to_networkx,
)
from recembed.ingest import ColumnMap, ingest
from recembed.sessions import sessionize
from tests.conftest import DIGI, YOO


def _real_sessions(name):
    if name == "yoochoose":
        res = ingest([str(YOO / "train.tsv")],
                     ColumnMap(item="ItemId", ts="Time", session="SessionId"))
        s = sessionize(res.events, holdout_days=0, half_life_days=float("inf"))
    else:
        res = ingest([str(DIGI / "train-item-views.csv")],
                     ColumnMap(item="item_id", ts="eventdate", ts_offset="timeframe",
                               session="session_id", user="user_id"), ts_unit="iso")
        s = sessionize(res.events, holdout_days=0, half_life_days=3)
    return s, len(res.vocabulary)


def _straightforward(train: pd.DataFrame, weight, window, directed, distance_weighting):
    edges = defaultdict(float)
    for sid, g in train.groupby("session"):
        items = g.sort_values("pos")["item"].tolist()
        for i, a in enumerate(items):
            for d in range(1, window + 1):
                if i + d < len(items) and items[i + d] != a:
                    w = weight[sid] / (d if distance_weighting else 1)
                    edges[(a, items[i + d])] += w
                    if not directed:
                        edges[(items[i + d], a)] += w
    return edges


@pytest.mark.parametrize(("name", "window", "directed", "dist"),
                         [("yoochoose", 1, False, False), ("diginetica", 2, True, True),
                          ("diginetica", 3, False, False)])
def test_edge_weights_equal_a_straightforward_count(name, window, directed, dist):
    s, n = _real_sessions(name)
    w = s.table["weight"].to_numpy()
    g = build_item_graph(s.train, w, n, window=window, directed=directed, distance_weighting=dist)
    ref = _straightforward(s.train, w, window, directed, dist)
    coo = g.tocoo()
    got = {(int(a), int(b)): float(v) for a, b, v in zip(coo.row, coo.col, coo.data, strict=True)}
    assert got.keys() == ref.keys()
    np.testing.assert_allclose([got[k] for k in ref], list(ref.values()), rtol=1e-5)
    assert g.indices.dtype == np.int32 and g.data.dtype == np.float32
    assert g.has_sorted_indices


def test_min_weight_and_out_edge_cap():
    sessions = pd.DataFrame({"session": [0, 0, 1, 1, 2, 2, 3, 3],
                             "item": [0, 1, 0, 1, 0, 2, 0, 3]})
    w = np.array([1.0, 1.0, 0.5, 0.2])
    g = build_item_graph(sessions, w, 4, directed=True)
    assert g[0, 1] == 2.0 and g[0, 2] == 0.5 and g[0, 3] == pytest.approx(0.2)
    g2 = build_item_graph(sessions, w, 4, directed=True, min_weight=0.3)
    assert g2[0, 3] == 0 and g2.nnz == 2
    g3 = build_item_graph(sessions, w, 4, directed=True, max_out_edges=1)
    assert g3.nnz == 1 and g3[0, 1] == 2.0


def test_summary_networkx_round_trip_and_save(tmp_path):
    sessions = pd.DataFrame({"session": [0, 0, 0, 1, 1], "item": [0, 1, 2, 3, 4]})
    g = build_item_graph(sessions, np.ones(2), 6)
    s = graph_summary(g)
    assert (s.nodes, s.edges, s.isolated, s.weak_components, s.largest_component) == (6, 6, 1, 3, 3)
    G = to_networkx(g, ids=["a", "b", "c", "d", "e", "f"])
    assert G["a"]["b"]["weight"] == 1.0
    g2, _nodes = from_networkx(G, nodes=["a", "b", "c", "d", "e", "f"])
    assert (g2 != g).nnz == 0
    save_graph(g, tmp_path / "g.npz")
    assert (load_graph(tmp_path / "g.npz") != g).nnz == 0


def test_session_weights_are_joined_by_session_id():
    """Ids that are not 0..S-1 in table order (another engine, a filtered table) must still
    pair each session with its own weight."""
    sessions = pd.DataFrame({"session": [3, 3, 10, 10, 42, 42], "item": [0, 1, 1, 2, 0, 2]})
    table = pd.DataFrame({"session": [42, 3, 10, 77], "weight": [0.25, 1.0, 0.5, 9.0]})
    g = build_item_graph(sessions, table, 3, directed=True)
    assert g[0, 1] == 1.0 and g[1, 2] == 0.5 and g[0, 2] == 0.25 and g.nnz == 3
    series = table.set_index("session")["weight"]
    assert (build_item_graph(sessions, series, 3, directed=True) != g).nnz == 0
    with pytest.raises(ValueError, match="session 10 has no weight"):
        build_item_graph(sessions, table[table["session"] != 10], 3)
