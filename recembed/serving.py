"""Serving-side loader: a published version (or a run directory) answering top-K queries.

Imports numpy, pyarrow and faiss only: no gensim, pandas or training code, so a serving process
stays small. Every file is checked against the manifest's sha256 on load, and a mismatch is
refused. Reads are thread-safe: search parameters are set once at load and never changed.

- `similar(item_ids, k, exclude)`: nearest neighbours of each item (never the item itself).
- `recommend(session, k)`: the decay-weighted average of the recent items' unit vectors is the
  query; its nearest neighbours are the candidates, scored
  `(1 - w) * cosine + w * sigmoid(in[last] . out[candidate])` when the version has output
  (context) vectors (the skip-gram probability that the candidate follows the last item), and
  items already in the session get a repeat-aware bonus (about a third of next clicks repeat an
  item of the session, which nearest-neighbour search alone cannot recommend). Weights live in
  serving.json (defaults chosen by offline evaluation, see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from recembed import artifacts as A
from recembed.artifacts import sha256, unit_rows
from recembed.index import load_index


class ArtifactError(RuntimeError):
    """A published version that is missing files or whose files do not match their checksums."""


@dataclass
class ServingSettings:
    """Blend weights of `recommend` (serving.json)."""

    decay: float = 0.5          # weight of the item j steps back in the query vector: decay**j
    history: int = 5            # recent items used for the query vector
    repeat_weight: float = 0.5  # bonus per (decayed) occurrence of an item already in the session
    repeat_decay: float = 0.7   # older occurrences count less: repeat_decay**steps_back
    exclude_last: bool = True   # never recommend the item being viewed
    candidates: int = 200       # neighbours fetched from the index before blending
    directional_weight: float = 0.5  # w above; 0 = cosine only

    @classmethod
    def from_dict(cls, d: dict) -> ServingSettings:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class Results:
    """Per query: recommended ids (object array) and scores (float32, descending); queries whose
    items are all unknown get empty arrays, and `unknown` lists every unknown id seen."""

    ids: list[np.ndarray]
    scores: list[np.ndarray]
    unknown: list[str] = field(default_factory=list)


class Recommender:
    """Item ids, unit vectors and a faiss index of one published version."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, index, settings: ServingSettings,
                 meta: dict | None = None, categories: np.ndarray | None = None,
                 context: np.ndarray | None = None):
        self.ids = np.asarray(ids, dtype=object)
        self.row_of = {str(x): i for i, x in enumerate(self.ids)}
        self.unit = unit_rows(vectors)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.context = None if context is None else np.ascontiguousarray(context, np.float32)
        self.index = index
        self.settings = settings
        self.meta = meta or {}
        self.categories = categories

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> Recommender:
        """Load a version directory, or the current version of a published/ root (via LATEST)."""
        path = Path(path)
        if (path / A.LATEST).exists():
            path = path / (path / A.LATEST).read_text().strip()
        if not A.VECTORS.path(path).exists():
            raise ArtifactError(f"{path} holds no {A.VECTORS.name}: not a version or run directory")
        manifest = {}
        if (path / A.MANIFEST).exists():
            manifest = json.loads((path / A.MANIFEST).read_text())
            if verify:
                verify_files(path, manifest.get("files", {}))
        try:
            emb = A.Embeddings.load(path)
            index, meta = load_index(path)
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            raise ArtifactError(f"{path}: cannot load the artifacts: {e}") from e
        if len(emb.ids) != len(emb.vectors) or index.ntotal != len(emb.vectors):
            raise ArtifactError(f"{path}: {len(emb.ids)} ids, {len(emb.vectors)} vectors and "
                                f"{index.ntotal} indexed items disagree")
        settings = ServingSettings()
        if A.SERVING.path(path).exists():
            settings = ServingSettings.from_dict(json.loads(A.SERVING.path(path).read_text()))
        return cls(emb.ids, emb.vectors, index, settings, meta, emb.categories, emb.context)

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
        st = self.settings
        n = len(sessions)
        out_r = np.full((n, k), -1, np.int64)
        out_s = np.full((n, k), -np.inf, np.float32)
        live = [i for i, s in enumerate(sessions) if (np.asarray(s) >= 0).any()]
        if not live:
            return out_r, out_s
        q = np.zeros((len(live), self.unit.shape[1]), np.float32)
        for j, i in enumerate(live):
            recent = np.asarray(sessions[i])[::-1][: st.history]
            wts = (st.decay ** np.arange(len(recent))).astype(np.float32)
            q[j] = wts[recent >= 0] @ self.unit[recent[recent >= 0]]
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        n_c = min(st.candidates + k, len(self.ids))
        cand_s, cand_r = self.index.search(q, n_c)
        w = st.directional_weight if self.context is not None else 0.0
        for j, i in enumerate(live):
            full = np.asarray(sessions[i])
            steps_back = np.arange(len(full))[::-1][full >= 0]
            s = full[full >= 0]  # known items; the directional term uses the latest of them
            ok = cand_r[j] >= 0
            cand = cand_r[j][ok]
            in_session = np.unique(s)
            rows = np.concatenate([cand, in_session[~np.isin(in_session, cand)]])
            base = np.concatenate([cand_s[j][ok], self.unit[rows[len(cand):]] @ q[j]])
            if w > 0:
                d = self.context[rows] @ self.vectors[s[-1]]
                base = (1 - w) * base + w / (1 + np.exp(-d))
            scores = dict(zip(rows.tolist(), base.tolist(), strict=True))
            # repeat-aware bonus for items already in the session (the last one excluded)
            for item, back in zip(s.tolist(), steps_back.tolist(), strict=True):
                if exclude_session_items:
                    scores.pop(item, None)
                    continue
                scores[item] += st.repeat_weight * st.repeat_decay ** back
            if st.exclude_last and full[-1] >= 0:
                scores.pop(int(full[-1]), None)
            if not scores:
                continue
            r = np.fromiter(scores.keys(), np.int64, len(scores))
            v = np.fromiter(scores.values(), np.float32, len(scores))
            top = np.lexsort((r, -v))[:k]
            out_r[i, : len(top)] = r[top]
            out_s[i, : len(top)] = v[top]
        return out_r, out_s

    def _rows(self, ids: list[str]) -> tuple[list[int], list[str]]:
        rows = [self.row_of.get(x, -1) for x in ids]
        return rows, [x for x, r in zip(ids, rows, strict=True) if r < 0]


def verify_files(dir_: Path, files: dict[str, str]) -> None:
    """Raise ArtifactError unless every listed file exists and has the recorded sha256."""
    if not files:
        raise ArtifactError(f"{dir_}/{A.MANIFEST} lists no files")
    for name, digest in files.items():
        p = dir_ / name
        if not p.exists():
            raise ArtifactError(f"{p} is missing (listed in the manifest)")
        if sha256(p) != digest:
            raise ArtifactError(f"{p} does not match its sha256 in the manifest: truncated or "
                                "tampered; refusing to serve it")


def write_settings(path: str | Path, settings: ServingSettings) -> None:
    """serving.json with the blend weights."""
    Path(path).write_text(json.dumps(asdict(settings), indent=2))
