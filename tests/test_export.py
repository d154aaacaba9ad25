"""`recembed export` against the real engines: Milvus Lite (a .db file) and Qdrant local mode (a
directory). The database's answers to one query each must match faiss exact search."""

from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest
from typer.testing import CliRunner

from recembed import artifacts as A
from recembed.artifacts import unit_rows
from recembed.cli import app
from recembed.export import (
    CONTEXT,
    ITEM,
    MilvusTarget,
    QdrantTarget,
    collection_name,
    directional_query,
    export_version,
    open_target,
)
from recembed.serving import Recommender
from tests.conftest import make_version

pytest.importorskip("qdrant_client", reason="the export extra is part of the dev install")
pytest.importorskip("pymilvus", reason="the export extra is part of the dev install")

N, K = 1500, 20
ODD_IDS = ["with space", 'with "quotes"', "it's", "naïve café", "日本語", "emoji 🚀", "a,b;c",
           "back\\slash"]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("pub") / "published"
    ids = [*ODD_IDS, *(f"i{j}" for j in range(N - len(ODD_IDS)))]
    make_version(root, "v1", ids=ids, seed=11)
    return root


def _search(target, name: str, field: str, queries: np.ndarray, limit: int) -> list[list[str]]:
    """One search per query (batched into one request), answering payload ids."""
    if isinstance(target, QdrantTarget):
        m = target.models
        reqs = [m.QueryRequest(query=q.tolist(), using=field, limit=limit, with_payload=True)
                for q in queries]
        out = []
        for lo in range(0, len(reqs), 200):
            for r in target.client.query_batch_points(name, requests=reqs[lo:lo + 200]):
                out.append([p.payload["id"] for p in r.points])
        return out
    res = []
    for lo in range(0, len(queries), 200):
        hits = target.client.search(name, data=queries[lo:lo + 200].tolist(), anns_field=field,
                                    limit=limit, output_fields=["id"],
                                    search_params={"metric_type": "COSINE" if field == ITEM
                                                   else "IP"})
        res += [[h["entity"]["id"] for h in row] for row in hits]
    return res


def _exact(vectors: np.ndarray, queries: np.ndarray, limit: int) -> np.ndarray:
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, np.float32))
    return index.search(np.ascontiguousarray(queries, np.float32), limit)[1]


def _check_matches_faiss(target, alias: str, rec: Recommender, decay: float, history: int):
    ids = np.array([str(x) for x in rec.ids], dtype=object)
    q_rows = np.arange(min(1000, len(ids)))
    # similar: the item's own vector, searched in `item` (cosine); the item itself dropped
    got = _search(target, alias, ITEM, rec.vectors[q_rows], K + 1)
    unit = unit_rows(rec.vectors)
    exact = _exact(unit, unit[q_rows], K + 1)
    same = [set(g) - {ids[r]} == set(ids[e]) - {ids[r]} for r, g, e in
            zip(q_rows, got, exact, strict=True)]
    assert np.mean(same) >= 0.95, np.mean(same)
    # directional: decayed prefix sum of item vectors, searched in `context` (inner product)
    rng = np.random.default_rng(0)
    sessions = [[*rng.integers(0, len(ids), rng.integers(1, 6)).tolist(), int(r)]
                for r in q_rows]
    qs = np.stack([directional_query(rec.vectors, s, decay, history) for s in sessions])
    got = _search(target, alias, CONTEXT, qs, K)
    exact = _exact(rec.context, qs, K)
    same = [set(g) == set(ids[e]) for g, e in zip(got, exact, strict=True)]
    assert np.mean(same) >= 0.95, np.mean(same)


def _payloads(target, name: str) -> dict[str, tuple[int, str]]:
    if isinstance(target, QdrantTarget):
        pts, _ = target.client.scroll(name, limit=N + 10, with_payload=True)
        return {p.payload["id"]: (p.payload["category"], p.payload["origin"]) for p in pts}
    rows = target.client.query(name, filter="row >= 0", output_fields=["id", "category",
                                                                       "origin"], limit=N + 10)
    return {r["id"]: (r["category"], r["origin"]) for r in rows}


@pytest.mark.parametrize("kind", ["milvus", "qdrant"])
def test_export_matches_faiss_roundtrips_ids_and_moves_the_alias(published, tmp_path, kind):
    uri = str(tmp_path / ("vectors.db" if kind == "milvus" else "qdrant"))
    target = open_target(uri)
    assert isinstance(target, MilvusTarget if kind == "milvus" else QdrantTarget)
    try:
        rec = Recommender.load(published)
        res = export_version(published, target, alias="rec", keep=2)
        assert res.collection == collection_name("rec", "v1") == "rec_v1" and res.items == N
        assert target.alias_target("rec") == "rec_v1"
        # the directional query's decay is the version's vectors_decay, not the blend's
        assert (res.decay, rec.settings.decay) == (0.3, 0.65)
        _check_matches_faiss(target, "rec", rec, res.decay, res.history)

        payload = _payloads(target, "rec")
        assert set(payload) == {str(x) for x in rec.ids}  # odd ids round-trip exactly
        assert set(ODD_IDS) <= set(payload)
        assert payload["i100"] == (int(rec.categories[rec.row_of["i100"]]), "trained")
        assert payload[str(rec.ids[-1])][1] == "side_info"

        # a second export of the same version reuses the complete collection
        assert export_version(published, target, alias="rec", keep=2).reused

        # new versions while a reader queries the alias: it never sees a partial collection
        make_version(published, "v2", n=900, seed=12, prefix="w")
        sizes, errors, stop = [], [], threading.Event()

        def reader():
            while not stop.is_set():
                try:
                    sizes.append(target.count(target.alias_target("rec")))
                except Exception as e:  # any failure is a finding
                    errors.append(repr(e))

        th = threading.Thread(target=reader)
        th.start()
        try:
            res2 = export_version(published, target, alias="rec", keep=2, batch=100)
        finally:
            stop.set()
            th.join()
        assert not errors, errors[:3]
        assert sizes and set(sizes) <= {N, 900}, sorted(set(sizes))
        assert res2.collection == "rec_v2" and target.alias_target("rec") == "rec_v2"
        assert res2.dropped == []
        assert set(_payloads(target, "rec")) == {f"w{j}" for j in range(900)}

        make_version(published, "v3", n=300, seed=13, prefix="x")
        res3 = export_version(published, target, alias="rec", keep=2)
        assert res3.dropped == ["rec_v1"]
        assert sorted(c for c in target.collections() if c.startswith("rec_")) == \
            ["rec_v2", "rec_v3"]
        assert target.alias_target("rec") == "rec_v3"
    finally:
        for v in ("v2", "v3"):  # the module's root serves the other engine too
            import shutil

            shutil.rmtree(published / v, ignore_errors=True)
        (published / A.LATEST).write_text("v1\n")
        target.close()


def test_cli_export_to_qdrant(published, tmp_path):
    r = CliRunner().invoke(app, ["export", str(published), "--to", str(tmp_path / "q"),
                                 "--alias", "shop"])
    assert r.exit_code == 0, r.output
    assert "1,500 items of v1 in shop_v1" in r.stdout and "alias 'shop' moved" in r.stdout
    # the query a client must build, with the version's vectors_decay (0.3; its blend's is 0.65)
    assert "10 most recent items, decay = 0.3, searched in 'context'" in r.stdout
    target = open_target(str(tmp_path / "q"))
    try:
        assert target.alias_target("shop") == "shop_v1" and target.count("shop") == N
    finally:
        target.close()
