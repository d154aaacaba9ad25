"""`recembed export PUBLISHED_ROOT --to URI`: a published version into a vector database.

Targets (`open_target`), each through the client API its server uses:

- a path ending in ``.db``: **Milvus Lite** (a local file, `pymilvus.MilvusClient`);
- ``milvus://host:port``: a Milvus server (the same code, over the network);
- ``qdrant://host:port``: a Qdrant server;
- any other path: **Qdrant local mode** (a directory, `qdrant_client.QdrantClient(path=…)`).

Each version becomes its own collection, ``{alias}_{version}`` (non-alphanumerics as ``_``),
holding per item: ``row`` (the vector row, the point id / primary key), the payload ``id``
(the item id, any text), ``category`` (-1 = none) and ``origin`` ("trained" / "side_info"), and
two vectors: ``item`` (the input vectors, cosine) and ``context`` (the output vectors, inner
product; the input vectors when the version has none). Qdrant stores them as named vectors, Milvus
as two vector fields with FLAT (exact) indexes. The alias is moved to the new collection only
after every row is in and counted; older collections beyond `keep` are dropped after the move
(the alias target never is). A collection of the same version that an interrupted export left
incomplete is dropped and rebuilt; a complete one is reused.

What a client runs, one query each (tests/test_export.py checks both against faiss):

- ``similar(x)``: the ``item`` vector of x, searched in ``item`` (cosine), k + 1 results, x
  dropped;
- directional candidates of a session: ``q = sum_j decay**j * item_vector(the item j steps
  back)`` over the `history` most recent items (``decay`` = the version's
  ``vectors_decay`` and ``history`` from its serving.json, `ExportResult.decay` / `.history`),
  searched in ``context`` (inner product).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recembed import artifacts as A
from recembed.serving import Recommender, resolve_latest

ITEM, CONTEXT = "item", "context"  # the vector names in both databases
MAX_ID_LENGTH = 4096  # Milvus VARCHAR bound for the item id (bytes, UTF-8)


class ExportError(RuntimeError):
    """A target that cannot be opened, or a collection that did not fill completely."""


@dataclass
class ExportResult:
    """What `export_version` did."""

    version: str
    collection: str
    alias: str
    items: int
    reused: bool  # the collection was already complete
    dropped: list[str]
    seconds: float
    decay: float  # the directional query's decay: the version's serving.json vectors_decay
    history: int


def collection_name(alias: str, version: str) -> str:
    """``{alias}_{version}`` with every character outside [A-Za-z0-9_] as ``_`` (Milvus'
    rule; Qdrant accepts it too)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{alias}_{version}")


# ---------------------------------------------------------------- targets


class Target:
    """The operations `export_version` needs, on one database."""

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def create(self, name: str, dim: int) -> None:
        raise NotImplementedError

    def insert(self, name: str, rows: np.ndarray, ids: list[str], category: np.ndarray,
               origin: list[str], item: np.ndarray, context: np.ndarray) -> None:
        raise NotImplementedError

    def count(self, name: str) -> int:
        raise NotImplementedError

    def drop(self, name: str) -> None:
        raise NotImplementedError

    def collections(self) -> list[str]:
        raise NotImplementedError

    def alias_target(self, alias: str) -> str | None:
        raise NotImplementedError

    def move_alias(self, alias: str, name: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class QdrantTarget(Target):
    """Qdrant: local mode (`path`) or a server (`url`); `client` reuses an open client (local
    mode allows one per directory)."""

    def __init__(self, *, path: str | None = None, url: str | None = None, client=None):
        from qdrant_client import QdrantClient, models

        self.models = models
        self.client = client or (QdrantClient(path=path) if path else QdrantClient(url=url))

    def exists(self, name: str) -> bool:
        return self.client.collection_exists(name)

    def create(self, name: str, dim: int) -> None:
        m = self.models
        self.client.create_collection(name, vectors_config={
            ITEM: m.VectorParams(size=dim, distance=m.Distance.COSINE),
            CONTEXT: m.VectorParams(size=dim, distance=m.Distance.DOT)})

    def insert(self, name, rows, ids, category, origin, item, context) -> None:
        m = self.models
        self.client.upsert(name, wait=True, points=[
            m.PointStruct(id=int(r), vector={ITEM: it.tolist(), CONTEXT: cx.tolist()},
                          payload={"id": i, "category": int(c), "origin": o, "row": int(r)})
            for r, i, c, o, it, cx in zip(rows, ids, category, origin, item, context,
                                          strict=True)])

    def count(self, name: str) -> int:
        return int(self.client.count(name, exact=True).count)

    def drop(self, name: str) -> None:
        self.client.delete_collection(name)

    def collections(self) -> list[str]:
        return [c.name for c in self.client.get_collections().collections]

    def alias_target(self, alias: str) -> str | None:
        for a in self.client.get_aliases().aliases:
            if a.alias_name == alias:
                return a.collection_name
        return None

    def move_alias(self, alias: str, name: str) -> None:
        m = self.models
        ops = []
        if self.alias_target(alias) is not None:
            ops.append(m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=alias)))
        ops.append(m.CreateAliasOperation(create_alias=m.CreateAlias(collection_name=name,
                                                                     alias_name=alias)))
        self.client.update_collection_aliases(change_aliases_operations=ops)  # one request

    def close(self) -> None:
        self.client.close()


class MilvusTarget(Target):
    """Milvus: Milvus Lite (`uri` a .db file) or a server (`uri` http://host:port)."""

    def __init__(self, uri: str, client=None):
        from pymilvus import DataType, MilvusClient

        self.DataType = DataType
        self.client = client or MilvusClient(uri)

    def exists(self, name: str) -> bool:
        return self.client.has_collection(name)

    def create(self, name: str, dim: int) -> None:
        T = self.DataType
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("row", T.INT64, is_primary=True)
        schema.add_field("id", T.VARCHAR, max_length=MAX_ID_LENGTH)
        schema.add_field("category", T.INT64)
        schema.add_field("origin", T.VARCHAR, max_length=32)
        schema.add_field(ITEM, T.FLOAT_VECTOR, dim=dim)
        schema.add_field(CONTEXT, T.FLOAT_VECTOR, dim=dim)
        index = self.client.prepare_index_params()
        index.add_index(ITEM, index_type="FLAT", metric_type="COSINE")
        index.add_index(CONTEXT, index_type="FLAT", metric_type="IP")
        self.client.create_collection(name, schema=schema, index_params=index)

    def insert(self, name, rows, ids, category, origin, item, context) -> None:
        self.client.insert(name, [
            {"row": int(r), "id": i, "category": int(c), "origin": o, ITEM: it.tolist(),
             CONTEXT: cx.tolist()}
            for r, i, c, o, it, cx in zip(rows, ids, category, origin, item, context,
                                          strict=True)])

    def count(self, name: str) -> int:
        self.client.flush(name)
        res = self.client.query(name, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def drop(self, name: str) -> None:
        self.client.drop_collection(name)

    def collections(self) -> list[str]:
        return list(self.client.list_collections())

    def alias_target(self, alias: str) -> str | None:
        try:
            return self.client.describe_alias(alias).get("collection_name")
        except Exception:  # pymilvus raises a plain MilvusException for "no such alias"
            return None

    def move_alias(self, alias: str, name: str) -> None:
        if self.alias_target(alias) is None:
            self.client.create_alias(name, alias)
        else:
            self.client.alter_alias(name, alias)  # atomic on the server

    def close(self) -> None:
        self.client.close()


def open_target(uri: str) -> Target:
    """The database that `uri` names (see the module docstring).

    Raises
    ------
    ExportError
        The client library is not installed.
    """
    try:
        if uri.startswith("milvus://"):
            return MilvusTarget("http://" + uri.removeprefix("milvus://"))
        if uri.startswith("qdrant://"):
            return QdrantTarget(url="http://" + uri.removeprefix("qdrant://"))
        if uri.endswith(".db"):
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            return MilvusTarget(str(Path(uri).resolve()))
        Path(uri).mkdir(parents=True, exist_ok=True)
        return QdrantTarget(path=str(uri))
    except ImportError as e:
        raise ExportError(f"{uri}: the client library is missing ({e}); install the export "
                          "extra: pip install 'recembed[export]'") from e


# ---------------------------------------------------------------- the export


def export_version(published: str | Path, target: Target, *, alias: str = "recembed",
                   keep: int = 5, batch: int = 1000, echo=None) -> ExportResult:
    """Export the version that `published`/LATEST names (verified against its manifest) into
    `target` as collection ``{alias}_{version}``, then move `alias` to it and drop the oldest
    collections of this alias beyond `keep`.

    Parameters
    ----------
    published : str or Path
        The published root (or a version directory).
    target : Target
        From `open_target`.
    alias : str
        The alias readers query (also the collections' name prefix).
    keep : int >= 1
        Collections of this alias kept (the new one included).
    batch : int
        Rows per insert request.
    echo : callable or None
        Progress lines.

    Raises
    ------
    ExportError
        The collection did not fill completely (the alias is not moved).
    recembed.serving.ArtifactError
        The version is incomplete or does not match its manifest.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    t0 = time.perf_counter()
    root = Path(published)
    path = resolve_latest(root) if (root / A.LATEST).exists() else root
    rec = Recommender.load(path, verify=True)
    version = path.name
    name = collection_name(alias, version)
    n, dim = rec.vectors.shape
    reused = target.exists(name) and target.count(name) == n
    if not reused:
        if target.exists(name):  # left incomplete by an interrupted export
            target.drop(name)
        target.create(name, dim)
        ids = [str(x) for x in rec.ids]
        too_long = [x for x in ids if len(x.encode()) > MAX_ID_LENGTH]
        if too_long:
            raise ExportError(f"item id {too_long[0][:40]!r}... is longer than "
                              f"{MAX_ID_LENGTH} bytes")
        cats = np.full(n, -1, np.int64) if rec.categories is None else \
            np.asarray(rec.categories, np.int64)
        origin = ["trained"] * n if rec.origin is None else [str(x) for x in rec.origin]
        context = rec.context if rec.context is not None else rec.vectors
        for lo in range(0, n, batch):
            hi = min(lo + batch, n)
            target.insert(name, np.arange(lo, hi), ids[lo:hi], cats[lo:hi], origin[lo:hi],
                          rec.vectors[lo:hi], context[lo:hi])
            if echo:
                echo(f"{name}: {hi:,} / {n:,} items")
        got = target.count(name)
        if got != n:
            raise ExportError(f"{name} holds {got:,} of {n:,} items after the export: the "
                              f"alias {alias!r} is left where it was")
    target.move_alias(alias, name)
    mine = sorted(c for c in target.collections() if c.startswith(f"{alias}_"))
    dropped = [c for c in mine[: max(len(mine) - keep, 0)] if c != name]
    for c in dropped:
        target.drop(c)
    return ExportResult(version, name, alias, n, reused, dropped,
                        round(time.perf_counter() - t0, 3), float(rec.settings.vectors_decay),
                        int(rec.settings.history))


def directional_query(item_vectors: np.ndarray, session_rows: list[int], decay: float,
                      history: int) -> np.ndarray:
    """The directional query of a session (rows of its items, most recent last): the sum of
    ``decay ** j`` times the item vector j steps back over the `history` most recent items,
    float32 as `recembed.blend` computes it. Search it in the ``context`` vectors (inner
    product)."""
    recent = np.asarray(session_rows, np.int64)[::-1][:history]
    w = (decay ** np.arange(len(recent))).astype(np.float32)
    return w @ np.asarray(item_vectors, np.float32)[recent]
