"""Serving-side loader: a published version (or a run directory) answering top-K queries.

Imports numpy, numba, pyarrow and faiss only: no gensim, pandas or training code, so a serving
process stays small; numba and faiss load with the first version (`import recembed.serving`
itself takes numpy and the standard library). Every file is checked against the manifest's sha256 on load, and a mismatch is
refused; so is a version without a manifest, and a LATEST that leads out of the published root.
An unpublished run directory is checked against its stages' done-files (`load_run`). Reads are thread-safe: search parameters are set once at load and never changed.

- `similar(item_ids, k, exclude)`: nearest neighbours of each item (never the item itself).
- `recommend(session, k)`: the blend of `recembed.blend` (directional skip-gram score over the
  decayed prefix, sequential rules, session-kNN, in-session repeats, popularity) with the
  weights that the run chose on its validation split (serving.json, blend.npz).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recembed import artifacts as A
from recembed.artifacts import sha256
from recembed.blend import BlendSettings  # the settings only: numba loads with the model
from recembed.ids import normalize_id
from recembed.index import load_index
from recembed.postprocess import VectorTransform

if TYPE_CHECKING:
    from recembed.blend import BlendModel


class ArtifactError(RuntimeError):
    """A published version that is missing files or whose files do not match their checksums."""


@dataclass
class Results:
    """Per query: recommended ids (object array) and scores (float32, descending); queries whose
    items are all unknown get empty arrays, and `unknown` lists every unknown id seen."""

    ids: list[np.ndarray]
    scores: list[np.ndarray]
    unknown: list[str] = field(default_factory=list)


class Recommender:
    """Item ids, unit vectors and a faiss index of one published version.

    Parameters
    ----------
    ids : array [n]
        Item id of each vector row.
    vectors : float32 [n, d]
        Input vectors.
    index : faiss index
        The cosine index over the unit vectors (`similar`; the blend's cosine candidates).
    settings : BlendSettings
        serving.json.
    meta : dict or None
        index.json.
    categories : int array [n] or None
    context : float32 [n, d] or None
        Output vectors (only read when `model` is None).
    model : BlendModel or None
        The blend over `vectors` (`BlendModel.load` of blend.npz); None = vectors only, with
        `index` for the cosine candidates.
    """

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, index, settings: BlendSettings,
                 meta: dict | None = None, categories: np.ndarray | None = None,
                 context: np.ndarray | None = None, model: BlendModel | None = None):
        self.ids = np.asarray(ids, dtype=object)
        self.row_of = {str(x): i for i, x in enumerate(self.ids)}
        self.index = index
        self.settings = settings
        self.meta = meta or {}
        self.categories = categories
        self.not_served: dict[str, str] = {}  # cold start: id -> why it has no vector
        self.origin: np.ndarray | None = None  # per row: "trained" / "side_info" (catalog runs)
        # the post-processing the served vectors went through (postprocess.npz; None in
        # versions published before it): `vectors` and `context` are already transformed
        self.transform: VectorTransform | None = None
        from recembed.blend import BlendModel  # numba: loaded by the first Recommender

        # cosine candidates from the item index (what `similar` searches), not q @ unit.T over
        # the whole catalogue (benchmarks/RESULTS.md, "serving throughput on the
        # 10,000,000-event synthetic catalogue")
        self.model = model if model is not None else \
            BlendModel(vectors, context, cos_search=index.search if index is not None else None)
        if len(self.model.vectors) != len(self.ids):
            raise ValueError(f"{len(self.ids)} ids but the blend model has "
                             f"{len(self.model.vectors)} rows")

    @property
    def vectors(self) -> np.ndarray:
        """float32 [n, d], the input vectors (the model's: one copy)."""
        return self.model.vectors

    @property
    def unit(self) -> np.ndarray:
        """float32 [n, d], the vectors scaled to unit length (the model's: one copy)."""
        return self.model.unit

    @property
    def context(self) -> np.ndarray | None:
        """float32 [n, d] output vectors, or None."""
        return self.model.context

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> Recommender:
        """Load a published version: a published/ root (the version its LATEST names) or a version
        directory, every file checked against the version's manifest.json.

        A run directory (config.toml and train.done.json, no manifest) is delegated to `load_run`,
        which checks the files against the stages' done-files. Anything else is refused.

        Parameters
        ----------
        path : str or Path
            published/ root, version directory or run directory.
        verify : bool
            Hash every file against its recorded sha256 (False skips the hashing only: a version
            without a manifest, or a LATEST leaving the root, is refused either way).

        Raises
        ------
        ArtifactError
            What is wrong, and with which file.
        """
        path = Path(path)
        if not path.is_dir():
            raise ArtifactError(f"{path} is not a directory: give a published/ root, a version "
                                "or a run directory")
        if (path / A.LATEST).exists() or (path / A.LATEST).is_symlink():
            path = resolve_latest(path)
        elif not (path / A.MANIFEST).exists() and _is_run_dir(path):
            return cls.load_run(path, verify=verify)
        manifest_path = path / A.MANIFEST
        if not manifest_path.is_file():
            what = "a published version" if path.name.startswith("v") else "a version"
            raise ArtifactError(
                f"{path} has no {A.MANIFEST}: refusing to serve it, since without a manifest "
                f"its files cannot be verified. Load {what} written by `recembed publish`, or a "
                f"run directory ({A.CONFIG.name} + {A.done_file('train')}) with "
                "Recommender.load_run"
            )
        manifest = _read_json(manifest_path)
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(files, dict) or not files:
            raise ArtifactError(f"{manifest_path} lists no files: cannot verify the version")
        _check_recorded(path, files, A.MANIFEST)
        if verify:
            verify_files(path, files)
        return cls._read(path)

    @classmethod
    def load_run(cls, run_dir: str | Path, *, verify: bool = True) -> Recommender:
        """Load an unpublished run directory, checking each file it serves against the sha256
        that its stage recorded (train.done.json, index.done.json).

        Parameters
        ----------
        run_dir : str or Path
            A run directory whose train and index stages have finished.
        verify : bool
            Hash the files (False checks only that every file is recorded).

        Raises
        ------
        ArtifactError
            When a stage has not finished, the index predates the vectors, or a file is
            missing, unrecorded, truncated or changed.
        """
        run = Path(run_dir)
        if not A.CONFIG.path(run).is_file():
            raise ArtifactError(f"{run} is not a run directory (no {A.CONFIG.name})")
        recorded: dict[str, str] = {}
        source: dict[str, str] = {}
        finished: dict[str, datetime | None] = {}
        for stage in _SERVED_STAGES:
            done = run / A.done_file(stage)
            if not done.is_file():
                raise ArtifactError(
                    f"{run}: {done.name} is missing, so the {stage} stage has not finished; "
                    "finish the run (`recembed run` resumes it) before loading it"
                )
            rec = _read_json(done)
            outputs = rec.get("outputs") if isinstance(rec, dict) else None
            if not isinstance(outputs, dict):
                raise ArtifactError(f"{done} records no outputs: cannot verify the run")
            for name, digest in outputs.items():
                recorded[name] = digest
                source[name] = done.name
            finished[stage] = _finished(rec)
        t_train, t_index = finished["train"], finished["index"]
        if t_train is not None and t_index is not None and t_index < t_train:
            raise ArtifactError(
                f"{run}: {A.done_file('index')} ({t_index:%Y-%m-%d %H:%M:%S}) predates "
                f"{A.done_file('train')} ({t_train:%Y-%m-%d %H:%M:%S}): the index was built "
                "from older vectors. Rerun the index stage (`recembed run` resumes it)"
            )
        _check_recorded(run, recorded, "the run's done-files")
        if verify:
            for name in _served_files(run):
                verify_files(run, {name: recorded[name]}, source=source[name])
        return cls._read(run)

    @classmethod
    def _read(cls, path: Path) -> Recommender:
        """The artifacts of a checked directory (`load` and `load_run` verify first)."""

        try:
            emb = A.Embeddings.load(path)
            index, meta = load_index(path)
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            raise ArtifactError(f"{path}: cannot load the artifacts: {e}") from e
        if len(emb.ids) != len(emb.vectors) or index.ntotal != len(emb.vectors):
            raise ArtifactError(f"{path}: {len(emb.ids)} ids, {len(emb.vectors)} vectors and "
                                f"{index.ntotal} indexed items disagree")
        settings = BlendSettings()
        if A.SERVING.path(path).exists():
            try:
                settings = BlendSettings.from_dict(_read_json(A.SERVING.path(path)))
            except (TypeError, ValueError) as e:
                raise ArtifactError(f"{A.SERVING.path(path)}: {e}") from e
        model = _blend_model(path, emb, index)
        if settings.retrieval == "table" and model.cos_table is None:
            raise ArtifactError(f"{A.SERVING.path(path)} says retrieval = \"table\" but "
                                f"{A.BLEND.path(path)} holds no candidate tables: not a "
                                "complete version")
        rec = cls(emb.ids, emb.vectors, index, settings, meta, emb.categories, emb.context,
                  model)
        rec.not_served = _not_served(path)
        rec.origin = emb.origin
        if A.POSTPROCESS.path(path).exists():
            try:
                rec.transform = VectorTransform.load(A.POSTPROCESS.path(path))
            except (OSError, ValueError, KeyError) as e:
                raise ArtifactError(f"{A.POSTPROCESS.path(path)}: {e}") from e
            if rec.transform.dim_out != emb.vectors.shape[1]:
                raise ArtifactError(f"{A.POSTPROCESS.path(path)} gives {rec.transform.dim_out}-"
                                    f"dimensional vectors but {A.VECTORS.name} holds "
                                    f"{emb.vectors.shape[1]}: not one version")
        return rec

    def why_not_served(self, item_id) -> str:
        """Why `item_id` is never answered nor recommended ("" when it is served)."""
        item_id = _query_id(item_id)
        if item_id in self.row_of:
            return ""
        return self.not_served.get(item_id, "unknown item: not in this version")

    def similar(self, item_ids, k: int = 20, exclude=None) -> Results:
        """The k nearest items of each id in `item_ids` (one id, or a list / array of ids),
        never the item itself nor `exclude`."""
        k = _check_k(k)
        item_ids = [_query_id(x) for x in _id_list(item_ids)]
        rows, unknown = self._rows(item_ids)
        ex = {self.row_of[q] for x in (exclude or []) if (q := _query_id(x)) in self.row_of}
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
        single list (or array) of ids is one session."""
        k = _check_k(k)
        sessions = _id_list(sessions)
        if sessions and not _is_sequence(sessions[0]):
            sessions = [sessions]
        sessions = [_id_list(s) for s in sessions]
        unknown: list[str] = []
        coded = []
        for s in sessions:
            rows, unk = self._rows([_query_id(x) for x in s])
            unknown += unk
            coded.append(np.array(rows, dtype=np.int64))  # -1 keeps an unknown item's place
        rows, scores = self.recommend_rows(coded, k, exclude_session_items=exclude_session_items)
        # rows are -1 padded at the end only: one gather, then a view per session
        counts = (rows >= 0).sum(axis=1)
        all_ids = self.ids[np.maximum(rows, 0)]
        ids = [all_ids[i, :c] for i, c in enumerate(counts.tolist())]
        sc = [scores[i, :c] for i, c in enumerate(counts.tolist())]
        return Results(ids, sc, sorted(set(unknown)))

    def recommend_rows(self, sessions: list[np.ndarray], k: int, *,
                       exclude_session_items: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(rows int64 [n, k], scores float32 [n, k]), -1 / -inf padded, for sessions given as
        arrays of vector rows (most recent last; -1 for an item without a vector, which keeps
        its place in the decay). The core of `recommend`, used by evaluation."""
        if k == 0 or not len(sessions):  # nothing asked: the kernels need k >= 1 and a query
            return (np.zeros((len(sessions), k), np.int64),
                    np.zeros((len(sessions), k), np.float32))
        return self.model.recommend([np.asarray(x, np.int64) for x in sessions], self.settings,
                                    k, exclude_session_items=exclude_session_items)

    def _rows(self, ids: list[str]) -> tuple[list[int], list[str]]:
        rows = [self.row_of.get(x, -1) for x in ids]
        return rows, [x for x, r in zip(ids, rows, strict=True) if r < 0]


def verify_files(dir_: Path, files: dict[str, str], *, source: str = A.MANIFEST) -> None:
    """Raise ArtifactError unless every listed file exists and has the recorded sha256.

    Parameters
    ----------
    dir_ : Path
        The directory holding the files.
    files : dict
        File name (directly inside `dir_`) -> hex sha256.
    source : str
        Where the checksums come from, for the messages.
    """
    if not files:
        raise ArtifactError(f"{dir_}/{source} lists no files")
    for name, digest in files.items():
        # a file, or a part file of a folder artifact ("parts/part-0.parquet"); never a path
        # that leaves the directory
        if not all(_plain_name(part) for part in name.split("/")):
            raise ArtifactError(f"{dir_}/{source} lists {name!r}, which is not a file inside "
                                "the directory: refusing the version")
        p = dir_ / name
        if not p.is_file():
            raise ArtifactError(f"{p} is missing (listed in {source})")
        if sha256(p) != digest:
            raise ArtifactError(f"{p} does not match its sha256 in {source}: truncated or "
                                "tampered; refusing to serve it")


def _query_id(x) -> str:
    # the id rule of ingest (recembed.ids.normalize_id): 100.0 is "100", text is NFC
    q = normalize_id(x)
    return str(x) if q is None else q


def _check_k(k) -> int:
    """k as an int >= 0, or a ValueError saying what k must be."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise ValueError(f"k must be a whole number >= 0, got {k!r}")
    return int(k)


def _is_sequence(x) -> bool:
    return isinstance(x, list | tuple | np.ndarray) or (
        hasattr(x, "__iter__") and not isinstance(x, str | bytes))


def _id_list(x) -> list:
    """Ids (or sessions) as a list: one id, a list, a tuple or a numpy array."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, str | bytes | int | np.integer | float):
        return [x]
    if not _is_sequence(x):
        raise TypeError(f"expected an item id or a list / array of them, got {type(x).__name__}")
    return list(x)


def write_settings(path: str | Path, settings: BlendSettings) -> None:
    """serving.json with the blend weights."""
    Path(path).write_text(json.dumps(asdict(settings), indent=2))


def _blend_model(path: Path, emb: A.Embeddings, cosine_index) -> BlendModel:
    """The blend of a checked directory: blend.npz over the vectors, with the inner-product
    index over the output vectors (index_context.faiss) as its directional search, when
    present (versions published before the blend have neither: the blend then runs on
    vectors only). Cosine candidates come from the item index (what `similar` searches)."""
    import faiss

    from recembed.blend import BlendModel

    try:
        search = None
        if A.INDEX_CONTEXT.path(path).exists():
            ctx_index = faiss.read_index(str(A.INDEX_CONTEXT.path(path)))
            meta_p = A.INDEX_CONTEXT_META.path(path)
            meta = json.loads(meta_p.read_text()) if meta_p.exists() else {}
            if meta.get("search_params"):
                faiss.ParameterSpace().set_index_parameters(ctx_index, meta["search_params"])
            search = ctx_index.search
        if A.BLEND.path(path).exists():
            return BlendModel.load(A.BLEND.path(path), emb.vectors, emb.context, search=search,
                                   cos_search=cosine_index.search)
        return BlendModel(emb.vectors, emb.context, search=search,
                          cos_search=cosine_index.search)
    except (OSError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"{path}: cannot load the blend artifacts: {e}") from e


# ---------------------------------------------------------------- helpers

_SERVED_STAGES = ("train", "index")  # the stages whose outputs a run directory serves


def _not_served(path: Path) -> dict[str, str]:
    """{id: reason} of the items origins.parquet marks `none` (cold start), {} without it."""
    p = A.ORIGINS.path(path)
    if not p.exists():
        return {}
    import pyarrow.parquet as pq

    # ParquetFile, not read_table: read_table goes through pyarrow.dataset, which imports pandas
    t = pq.ParquetFile(p).read(columns=["id", "origin", "reason"]).to_pydict()
    return {i: r for i, o, r in zip(t["id"], t["origin"], t["reason"], strict=True)
            if o == "none"}


def _served_files(path: Path) -> list[str]:
    """The files `_read` will open in `path`."""
    return [*(a.name for a in A.SERVED_REQUIRED),
            *(a.name for a in A.SERVED_OPTIONAL if a.path(path).exists())]


def _check_recorded(path: Path, files: dict[str, str], source: str) -> None:
    """Every file the loader opens must have a recorded checksum: nothing is served unverified."""
    missing = [a.name for a in A.SERVED_REQUIRED if not a.path(path).is_file()]
    if missing:
        raise ArtifactError(f"{path} lacks {', '.join(missing)}: not a complete version")
    unlisted = [n for n in _served_files(path) if n not in files]
    if unlisted:
        raise ArtifactError(f"{path}: {', '.join(unlisted)} not recorded in {source}, so it "
                            "cannot be verified; refusing to serve it")


def resolve_latest(root: Path) -> Path:
    """The version directory that root/LATEST names, which must sit directly inside root (no
    absolute path, no `..`, no symlink leading out); raises ArtifactError saying what is wrong."""
    latest = root / A.LATEST
    try:
        name = latest.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{latest} cannot be read: {e}") from e
    where = f"LATEST must name a version directory directly inside the published root {root}"
    if not name:
        raise ArtifactError(f"{latest} is empty; {where}")
    if Path(name).is_absolute():
        raise ArtifactError(f"{latest} names an absolute path {name!r}; {where}")
    if not _plain_name(name):
        raise ArtifactError(f"{latest} names {name!r}, which is not a plain version name "
                            f"('..' or a path); {where}")
    target = root / name
    if not target.is_dir():
        raise ArtifactError(f"{latest} names {name!r}, which is not a directory in {root}")
    real, real_root = target.resolve(), root.resolve()
    if real.parent != real_root:
        raise ArtifactError(f"{latest} names {name!r}, a symlink to {real}, outside the "
                            f"published root; {where}")
    return real


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name \
        and "\x00" not in name


def _is_run_dir(path: Path) -> bool:
    return A.CONFIG.path(path).is_file() and (path / A.done_file("train")).is_file()


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path} is not readable JSON (truncated?): {e}") from e


def _finished(record: dict) -> datetime | None:
    try:
        return datetime.strptime(record["finished"], "%Y-%m-%dT%H:%M:%S%z")
    except (KeyError, TypeError, ValueError):
        return None  # a done-file without a time: the order check is skipped
