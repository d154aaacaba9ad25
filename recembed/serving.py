"""Serving-side loader: a published version (or a run directory) answering top-K queries.

Imports numpy, pyarrow and faiss only: no gensim, pandas or training code, so a serving process
stays small. Every file is checked against the manifest's sha256 on load, and a mismatch is
refused. Reads are thread-safe: search parameters are set once at load and never changed.

- `similar(item_ids, k, exclude)`: nearest neighbours of each item (never the item itself).
- `recommend(session, k)`: the blend of `recembed.blend` (directional skip-gram score over the
  decayed prefix, sequential rules, session-kNN, in-session repeats, popularity) with the
  weights that the run chose on its validation split (serving.json, blend.npz).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from recembed.blend import BlendModel, BlendSettings, Csr


class ArtifactError(RuntimeError):
    """A published version that is missing files or whose files do not match their checksums."""


# the blend's settings are serving.json; the name is kept for callers of the first release
ServingSettings = BlendSettings


@dataclass
class Results:
    """Per query: recommended ids (object array) and scores (float32, descending); queries whose
    items are all unknown get empty arrays, and `unknown` lists every unknown id seen."""

    ids: list[np.ndarray]
    scores: list[np.ndarray]
    unknown: list[str] = field(default_factory=list)


class Recommender:
    """Item ids, unit vectors and a faiss index of one published version."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, index, settings: BlendSettings,
                 meta: dict | None = None, categories: np.ndarray | None = None,
                 context: np.ndarray | None = None, extras: dict | None = None,
                 context_index=None):
        self.ids = np.asarray(ids, dtype=object)
        self.row_of = {str(x): i for i, x in enumerate(self.ids)}
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.unit = np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.context = None if context is None else np.ascontiguousarray(context, np.float32)
        self.index = index
        self.settings = settings
        self.meta = meta or {}
        self.categories = categories
        self.model = _blend_model(self.vectors, self.context, extras or {}, context_index)

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> Recommender:
        """Load a version directory, or the current version of a published/ root (via LATEST)."""
        import faiss
        import pyarrow.parquet as pq

        path = Path(path)
        if (path / "LATEST").exists():
            path = path / (path / "LATEST").read_text().strip()
        if not (path / "vectors.npy").exists():
            raise ArtifactError(f"{path} holds no vectors.npy: not a version or run directory")
        manifest = {}
        if (path / "manifest.json").exists():
            manifest = json.loads((path / "manifest.json").read_text())
            if verify:
                verify_files(path, manifest.get("files", {}))
        try:
            table = pq.read_table(path / "items.parquet")
            vectors = np.load(path / "vectors.npy", allow_pickle=False)
            ctx_path = path / "context_vectors.npy"
            context = np.load(ctx_path, allow_pickle=False) if ctx_path.exists() else None
            index = faiss.read_index(str(path / "index.faiss"))
            meta = json.loads((path / "index.json").read_text())
        except (OSError, ValueError, RuntimeError) as e:
            raise ArtifactError(f"{path}: cannot load the artifacts: {e}") from e
        if meta.get("search_params"):
            faiss.ParameterSpace().set_index_parameters(index, meta["search_params"])
        if len(table) != len(vectors) or index.ntotal != len(vectors):
            raise ArtifactError(f"{path}: {len(table)} ids, {len(vectors)} vectors and "
                                f"{index.ntotal} indexed items disagree")
        settings = BlendSettings()
        if (path / "serving.json").exists():
            settings = BlendSettings.from_dict(json.loads((path / "serving.json").read_text()))
        cats = table.column("category").to_numpy() if "category" in table.column_names else None
        extras, ctx_index = _load_extras(path)
        return cls(table.column("id").to_pylist(), vectors, index, settings, meta, cats, context,
                   extras, ctx_index)

    def similar(self, item_ids, k: int = 20, exclude=None) -> Results:
        """The k nearest items of each id in `item_ids`, never the item itself nor `exclude`."""
        item_ids = [str(x) for x in ([item_ids] if isinstance(item_ids, str) else item_ids)]
        rows, unknown = self._rows(item_ids)
        ex = {self.row_of[str(x)] for x in (exclude or []) if str(x) in self.row_of}
        known = [r for r in rows if r >= 0]
        out_ids: list[np.ndarray] = []
        out_sc: list[np.ndarray] = []
        if known:
            d, nb = self.index.search(self.unit[known], min(k + 1 + len(ex), len(self.ids)))
        j = 0
        for r in rows:
            if r < 0:
                out_ids.append(np.array([], dtype=object))
                out_sc.append(np.array([], dtype=np.float32))
                continue
            keep = (nb[j] >= 0) & (nb[j] != r)
            if ex:
                keep &= ~np.isin(nb[j], list(ex))
            sel = nb[j][keep][:k]
            out_ids.append(self.ids[sel])
            out_sc.append(d[j][keep][:k].astype(np.float32))
            j += 1
        return Results(out_ids, out_sc, unknown)

    def recommend(self, sessions, k: int = 20, *, exclude_session_items: bool = False) -> Results:
        """Top-k next items for each session (a list of recent item ids, most recent last); a
        single list of ids is one session."""
        if sessions and isinstance(sessions[0], str | int | np.integer):
            sessions = [sessions]
        unknown: list[str] = []
        coded = []
        for s in sessions:
            rows, unk = self._rows([str(x) for x in s])
            unknown += unk
            coded.append(np.array(rows, dtype=np.int64))  # -1 keeps an unknown item's place
        rows, scores = self.recommend_rows(coded, k, exclude_session_items=exclude_session_items)
        ids = [self.ids[r[r >= 0]] for r in rows]
        sc = [s[r >= 0] for r, s in zip(rows, scores, strict=True)]
        return Results(ids, sc, sorted(set(unknown)))

    def recommend_rows(self, sessions: list[np.ndarray], k: int, *,
                       exclude_session_items: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(rows int64 [n, k], scores float32 [n, k]), -1 / -inf padded, for sessions given as
        arrays of vector rows (most recent last; -1 for an item without a vector, which keeps
        its place in the decay). The core of `recommend`, used by evaluation."""
        return self.model.recommend([np.asarray(x, np.int64) for x in sessions], self.settings,
                                    k, exclude_session_items=exclude_session_items)

    def _rows(self, ids: list[str]) -> tuple[list[int], list[str]]:
        rows = [self.row_of.get(x, -1) for x in ids]
        return rows, [x for x, r in zip(ids, rows, strict=True) if r < 0]


def verify_files(dir_: Path, files: dict[str, str]) -> None:
    """Raise ArtifactError unless every listed file exists and has the recorded sha256."""
    if not files:
        raise ArtifactError(f"{dir_}/manifest.json lists no files")
    for name, digest in files.items():
        p = dir_ / name
        if not p.exists():
            raise ArtifactError(f"{p} is missing (listed in the manifest)")
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            while b := fh.read(1 << 20):
                h.update(b)
        if h.hexdigest() != digest:
            raise ArtifactError(f"{p} does not match its sha256 in the manifest: truncated or "
                                "tampered; refusing to serve it")


def write_settings(path: str | Path, settings: BlendSettings) -> None:
    """serving.json with the blend weights."""
    Path(path).write_text(json.dumps(asdict(settings), indent=2))


def _load_extras(path: Path) -> tuple[dict, object]:
    """blend.npz arrays and the inner-product index over the output vectors, when present
    (versions published before the blend have neither: the blend then runs on vectors only)."""
    import faiss

    extras: dict = {}
    try:
        if (path / "blend.npz").exists():
            with np.load(path / "blend.npz", allow_pickle=False) as z:
                extras = {k: z[k] for k in z.files}
        ctx_index = None
        if (path / "index_context.faiss").exists():
            ctx_index = faiss.read_index(str(path / "index_context.faiss"))
            meta_p = path / "index_context.json"
            meta = json.loads(meta_p.read_text()) if meta_p.exists() else {}
            if meta.get("search_params"):
                faiss.ParameterSpace().set_index_parameters(ctx_index, meta["search_params"])
    except (OSError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"{path}: cannot load the blend artifacts: {e}") from e
    return extras, ctx_index


def _blend_model(vectors: np.ndarray, context: np.ndarray | None, extras: dict,
                 context_index) -> BlendModel:
    from recembed.sknn import SessionIndex

    rules = None
    if "rules_indptr" in extras:
        rules = Csr(extras["rules_indptr"], extras["rules_indices"], extras["rules_data"])
    nb = {k[3:]: v for k, v in extras.items() if k.startswith("nb_")}
    neighbours = SessionIndex.from_arrays(nb) if nb else None
    search = context_index.search if context_index is not None else None
    return BlendModel(vectors, context, rules=rules, neighbours=neighbours,
                      popularity=extras.get("popularity"), search=search)
