"""The run-directory contract: every file a stage reads or writes, its schema, the typed records
read from it, atomic writes (of files and of folders of part files) and sha256.

This is the only module that knows file names. Stages name artifacts (`VECTORS`, `METRICS`, ...),
never strings; the runner hashes and moves whatever a stage declared, file or folder alike.

Imports the standard library, numpy and pyarrow only, so the serving loader can use it.

One meaning of "code" everywhere: the int32 item code assigned at ingest (`vocabulary.parquet`
column `code`). A table keyed by vector row says so by its row order (row i = vector row i) and
carries the ingest code in its `code` column.

Examples
--------
>>> import tempfile, numpy as np
>>> from pathlib import Path
>>> d = Path(tempfile.mkdtemp())
>>> with atomic_path(d / "x.txt") as tmp:
...     _ = tmp.write_text("hello")
>>> sha256(d / "x.txt")[:12]
'2cf24dba5fb0'
>>> emb = Embeddings(ids=np.array(["a", "b"], dtype=object), codes=np.array([4, 7], np.int32),
...                  vectors=np.eye(2, dtype=np.float32))
>>> _ = emb.save(d)
>>> Embeddings.load(d).codes.tolist()
[4, 7]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------- the artifacts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Artifact:
    """A file or a folder of part files in the run directory (and maybe in a published version).

    Parameters
    ----------
    name : str
        File or folder name inside the run directory.
    kind : {"file", "folder"}
        A folder holds part files (e.g. Spark's Parquet parts); it is hashed, moved, published
        and verified as a whole, each part listed in a version's manifest.
    columns : tuple of str
        Parquet artifacts: the columns every writer must provide (checked on write).
    published : bool
        Copied into a published version when the publish stage reads it.
    served : {"", "required", "optional"}
        What the serving loader (`recembed.serving`) makes of it: "required" = a version
        without it is refused, "optional" = read (and verified) when present, "" = not read.
    """

    name: str
    kind: str = "file"
    columns: tuple[str, ...] = ()
    published: bool = False
    served: str = ""

    def __post_init__(self) -> None:
        if self.served not in ("", "required", "optional"):
            raise ValueError(f"{self.name}: served must be '', 'required' or 'optional', got "
                             f"{self.served!r}")

    def path(self, root: str | Path) -> Path:
        """Where the artifact lives under `root` (a run, stage-output or version directory)."""
        return Path(root) / self.name


EVENTS = Artifact("events.parquet", columns=("user", "item", "ts", "row"))
VOCABULARY = Artifact("vocabulary.parquet", columns=("code", "id", "count", "first_ts", "last_ts"))
CATEGORIES = Artifact("categories.parquet", columns=("code", "category"))
QUARANTINE = Artifact("quarantine.parquet", columns=("file", "row", "raw", "reason"))
SESSIONS_TRAIN = Artifact("sessions_train.parquet", columns=("session", "item", "ts", "pos"))
SESSIONS_TEST = Artifact("sessions_test.parquet", columns=("session", "item", "ts", "pos"))
SESSION_TABLE = Artifact("session_table.parquet", columns=("session", "weight"))
# the item catalog (side information, recembed.catalog): valid rows and the quarantined ones
CATALOG = Artifact("catalog.parquet", columns=("code", "id", "in_log", "listed", "category",
                                              "n_attributes"))
CATALOG_QUARANTINE = Artifact("catalog_quarantine.parquet", columns=("file", "row", "raw",
                                                                     "reason"))
GRAPH = Artifact("graph.npz")
WALKS = Artifact("walks.txt")
SESSION_CORPUS = Artifact("sessions.txt")
VECTORS = Artifact("vectors.npy", published=True, served="required")
CONTEXT = Artifact("context_vectors.npy", published=True, served="optional")
ITEMS = Artifact("items.parquet", columns=("id", "code", "count"), published=True,
                 served="required")
VECTORS_BIN = Artifact("vectors.bin", published=True)
# every catalog and trained item: origin (trained | side_info | none) and why a `none` item is
# not served (written with a catalog only)
ORIGINS = Artifact("origins.parquet", columns=("id", "code", "origin", "reason"), published=True,
                   served="optional")
VECTORS_TXT = Artifact("vectors.txt")
# the post-processing of the vector space the served vectors went through (recembed.postprocess;
# owner `VectorTransform`): vectors.npy, context_vectors.npy and the exports are already
# transformed, the file says how (and maps a raw vector of the same training into the space)
POSTPROCESS = Artifact("postprocess.npz", published=True, served="optional")
TRAIN_STATS = Artifact("train.json")
INDEX = Artifact("index.faiss", published=True, served="required")
INDEX_META = Artifact("index.json", published=True, served="required")
SERVING = Artifact("serving.json", published=True, served="optional")
CALIBRATION = Artifact("calibration.json", published=True)  # what the run chose on validation
# rules, session-kNN index, popularity, category lists, candidate tables (`recembed.blend`)
BLEND = Artifact("blend.npz", published=True, served="optional")
# inner product over the context vectors
INDEX_CONTEXT = Artifact("index_context.faiss", published=True, served="optional")
INDEX_CONTEXT_META = Artifact("index_context.json", published=True, served="optional")
METRICS = Artifact("metrics.json", published=True)
REPORT = Artifact("report.html", published=True)
PUBLISH_INFO = Artifact("publish.json")
# written by the runner itself, before any stage
CONFIG = Artifact("config.toml", published=True)
SUMMARY = Artifact("summary.json")
RUNNER_FILES = (CONFIG, SUMMARY)
# written by `recembed run` when the run ends, also when it fails: exit code, times, per-stage
# summary, warnings, error (no stage reads it)
RUN_RECORD = Artifact("run.json")
# written by `recembed tune` (the Optuna study), outside the stage graph; the report shows it
TUNE_DB = Artifact("tune.db")
TUNE_RECORD = Artifact("tune.json")  # the study's summary of the last `tune` call
TUNED = Artifact("tuned.toml")  # the best trial as config sections (include it from a TOML)
TUNE_WORK = Artifact(".tune-work", kind="folder")  # the running trials' scratch
TUNE_LOCK = Artifact(".tune.lock")  # flock held by the `recembed tune` using a run directory
# scratch files of a stage (in its .tmp-<stage> folder, removed when it ends)
SCRATCH_CORPUS = "corpus.txt"  # the corpora concatenated for gensim's corpus_file mode
SCRATCH_SIDE = "side.txt"  # the cold-start "context" scheme's attribute sentences
# an incremental night's training corpus (recembed.incremental): its sessions, its walk lines,
# and the two concatenated
SCRATCH_INCR_SESSIONS = "incremental_sessions.txt"
SCRATCH_INCR_WALKS = "incremental_walks.txt"
SCRATCH_INCR_CORPUS = "incremental_corpus.txt"
# a published root and its versions
RUN_LOCK = ".lock"  # flock held by the run using a run directory (the runner's)
LATEST = "LATEST"
MANIFEST = "manifest.json"


def _declared() -> tuple[Artifact, ...]:
    return tuple(v for v in globals().values() if isinstance(v, Artifact))


# what a served version must hold and what the loader reads when present (`Artifact.served`)
SERVED_REQUIRED = tuple(a for a in _declared() if a.served == "required")
SERVED_OPTIONAL = tuple(a for a in _declared() if a.served == "optional")


def done_file(stage: str) -> str:
    """Name of the record a finished stage leaves in the run directory."""
    return f"{stage}.done.json"


def stage_scratch(stage: str) -> str:
    """Name of the folder a running stage writes into before its outputs are moved into place."""
    return f".tmp-{stage}"


# ---------------------------------------------------------------- inputs from outside the run


@dataclass(frozen=True)
class InputFiles:
    """Files or directories outside the run (the click logs, a categories file); their stamp
    (names, sizes, mtimes) enters the fingerprint of every stage that reads them."""

    paths: tuple[str, ...]

    def stamp(self) -> list[dict]:
        """One `file_stamp` per path."""
        return [file_stamp(p) for p in self.paths]


@dataclass(frozen=True)
class PublishedRoot:
    """A published/ root read by a stage (warm start, the gate): its stamp is the current
    version and the sha256 of that version's manifest, so publishing a new version changes the
    fingerprint of every stage that reads the root."""

    root: str

    def stamp(self) -> dict:
        """{"root", "current": version name or None, "manifest": sha256 or None}."""
        cur = current_version_dir(Path(self.root))
        man = cur / MANIFEST if cur is not None else None
        return {"root": str(self.root), "current": cur.name if cur is not None else None,
                "manifest": sha256(man) if man is not None and man.exists() else None}


@dataclass(frozen=True)
class PreviousVersion:
    """The published version a run builds on (calibration reuse): the version `LATEST` names,
    or, when the run directory `run_dir` published that one itself (a rerun after a crash past
    its publish), the newest other version. Its stamp names that version and its manifest's
    sha256, so the run's own publish never changes the fingerprint of a stage that reads it.

    `run_dir` "" = the run directory of the stage that declares it: the runner binds it
    (`bound`) before fingerprinting or running the stage (the train stage's declaration under
    `train.mode = "incremental"`)."""

    root: str
    run_dir: str = ""

    def bound(self, run_dir: str | Path) -> PreviousVersion:
        """This input with `run_dir` set to the running stage's, when it was left "";
        otherwise itself."""
        return self if self.run_dir else PreviousVersion(self.root, str(run_dir))

    def version_dir(self) -> Path | None:
        """The version folder, or None when there is none."""
        import json

        root = Path(self.root)
        cur = current_version_dir(root)
        others = sorted((d for d in root.iterdir() if d.is_dir() and (d / MANIFEST).exists()
                         and d != cur), key=lambda d: d.name, reverse=True) \
            if root.is_dir() else []
        for d in ([cur] if cur is not None else []) + others:
            try:
                made_by = json.loads((d / MANIFEST).read_text()).get("run_dir")
            except (OSError, ValueError):
                continue
            if made_by is None or Path(made_by).resolve() != Path(self.run_dir).resolve():
                return d
        return None

    def stamp(self) -> dict:
        """{"root", "version": name or None, "manifest": sha256 or None}."""
        d = self.version_dir()
        return {"root": str(self.root), "version": d.name if d is not None else None,
                "manifest": sha256(d / MANIFEST) if d is not None else None}


def current_version_dir(published: str | Path) -> Path | None:
    """The version directory `published/LATEST` points to, or None when nothing is published."""
    latest = Path(published) / LATEST
    if not latest.exists():
        return None
    d = Path(published) / latest.read_text().strip()
    return d if d.is_dir() else None


def file_stamp(path: str | Path) -> dict:
    """{"path", "files": [(path relative to `path`, bytes, sha256)]} of a file (relative path
    its name) or of every file under a directory; {"path", "missing": True} when absent.

    The stamp is the content: an input edited in place, whatever its size and mtime say
    (`cp -p`, `rsync -t`, `tar -x`), changes it, and touching a file does not. The digest of a
    file is computed once per process for one (inode, size, mtime, ctime): ctime cannot be set
    back by a copy tool, so an edit always rehashes (cost: `benchmarks/RESULTS.md`, "Input
    stamps"). A directory is walked by `walk_files` (symlink loops are skipped).
    """
    p = Path(path)
    if not p.exists():
        return {"path": str(p), "missing": True}
    try:
        files = walk_files(p) if p.is_dir() else [p]
        rows = []
        for f in files:
            st = f.stat()
            rel = f.name if f == p else f.relative_to(p).as_posix()
            rows.append((rel, st.st_size, content_digest(f, st)))
        return {"path": str(p), "files": rows}
    except OSError as e:  # unreadable: ingest names it; the stamp only has to be stable
        return {"path": str(p), "unreadable": e.__class__.__name__}


_DIGESTS: dict[tuple, str] = {}


def content_digest(path: str | Path, st: os.stat_result | None = None) -> str:
    """sha256 of a file's bytes, memoised per (device, inode, size, mtime_ns, ctime_ns).

    Parameters
    ----------
    path : str or pathlib.Path
        A regular file.
    st : os.stat_result, optional
        Its stat, when the caller has it.

    Returns
    -------
    str
        64 hex digits.
    """
    st = st or os.stat(path)
    key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256(path)
    return _DIGESTS[key]


def walk_files(root: str | Path) -> list[Path]:
    """Every regular file under a directory, sorted, each file once.

    Directory symlinks are followed, except one that leads back to a directory already on the
    walk (`self -> .`, `loop -> ..`): those are skipped with a warning, so a symlink loop can
    neither hang a walk nor read a file twice; a file reached by two paths is listed once
    (under its first path in sorted order).

    Parameters
    ----------
    root : str or pathlib.Path
        A directory.

    Returns
    -------
    list of pathlib.Path
        Paths under `root` (as reached from it, not resolved).
    """
    root = Path(root)
    seen_dirs = {os.path.realpath(root)}
    seen_files: set[str] = set()
    out: list[Path] = []
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for e in entries:
            try:
                if e.is_dir():
                    real = os.path.realpath(e.path)
                    if real in seen_dirs:
                        log.warning("%s: skipping %s, a symlink back to a directory already "
                                    "read (a loop)", root, Path(e.path).relative_to(root))
                        continue
                    seen_dirs.add(real)
                    subdirs.append(Path(e.path))
                elif e.is_file():
                    real = os.path.realpath(e.path)
                    if real not in seen_files:
                        seen_files.add(real)
                        out.append(Path(e.path))
            except OSError:
                continue
        stack.extend(reversed(subdirs))
    return sorted(out)


# ---------------------------------------------------------------- locks


class LockHeld(RuntimeError):
    """Another live process holds the lock; `holder` says who (pid, host, since)."""

    def __init__(self, path: Path, holder: str):
        super().__init__(f"{path} is held by {holder}")
        self.holder = holder


@contextmanager
def exclusive_lock(path: str | Path, wait_s: float = 0.0) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if absent) for the `with` block.

    The kernel releases a flock when its holder dies, so a lock left by a killed run never
    blocks the next one. The file records the holder (pid, host, time) for the message of the
    next process that finds it held. Raises LockHeld after waiting `wait_s` seconds (>= 0).
    """
    import errno
    import fcntl
    import socket
    import time

    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
                    raise LockHeld(path, holder or "unknown") from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%dT%H:%M:%S')}".encode(), 0)
        yield
    finally:
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # closing releases the flock


# ---------------------------------------------------------------- checksums


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, or of a folder: of its sorted (relative path, sha256) pairs.

    Parameters
    ----------
    path : str or Path
        A file, or a folder of part files (hidden files, e.g. `_SUCCESS` markers, included).
    chunk : int
        Read size in bytes.
    """
    p = Path(path)
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(p.rglob("*")):  # relative paths: a copy hashes the same
            if f.is_file():
                h.update(f"{f.relative_to(p).as_posix()}\0{sha256(f)}\n".encode())
        return h.hexdigest()
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        while b := fh.read(chunk):
            h.update(b)
    return h.hexdigest()


def file_hashes(path: str | Path, name: str | None = None) -> dict[str, str]:
    """{relative path: sha256} of a file (one entry, keyed `name` or its own name) or of every
    part file of a folder (keyed `<name>/<part>`): what a version's manifest lists."""
    p = Path(path)
    name = name or p.name
    if not p.is_dir():
        return {name: sha256(p)}
    return {f"{name}/{f.relative_to(p).as_posix()}": sha256(f)
            for f in sorted(p.rglob("*")) if f.is_file()}


# ---------------------------------------------------------------- atomic writes


@contextmanager
def atomic_path(path: str | Path, *, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write into; on success it is fsynced and renamed
    over `path`, on any error removed. A crash never leaves a half-written `path`.

    Parameters
    ----------
    path : str or Path
        The final file or folder.
    folder : bool
        Yield an empty temporary folder (for part files) instead of a file path.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove(tmp)
    if folder:
        tmp.mkdir(parents=True)
    try:
        yield tmp
        _fsync_tree(tmp)
        replace(tmp, path)
    finally:
        _remove(tmp)


def replace(src: str | Path, dst: str | Path) -> None:
    """Move a file or folder to `dst`, replacing what is there; the parent is fsynced.

    A file moves in one atomic rename. A folder cannot be renamed over a non-empty one, so the
    old folder is first renamed aside and removed after the new one is in place."""
    src, dst = Path(src), Path(dst)
    if src.is_dir() and dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        _remove(old)
        os.replace(dst, old)
        os.replace(src, dst)
        _remove(old)
    else:
        os.replace(src, dst)
    fsync_dir(dst.parent)


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically (temp file, fsync, rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj, *, indent: int = 2) -> None:
    """Write JSON atomically; numpy scalars and paths are converted."""
    write_text(path, dumps(obj, indent=indent))


def dumps(obj, *, indent: int | None = None) -> str:
    """JSON text of `obj`; numpy scalars and arrays, paths and timestamps are converted."""
    return json.dumps(obj, indent=indent, default=_json_default)


def write_parquet(table, path: str | Path, columns: tuple[str, ...] = ()) -> None:
    """Write a pyarrow Table or pandas DataFrame as Parquet, atomically.

    Parameters
    ----------
    table : pyarrow.Table or pandas.DataFrame
        The rows; a DataFrame's index is not written.
    path : str or Path
        Destination file.
    columns : tuple of str
        Columns the table must have (an artifact's schema); a missing one is an error.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{Path(path).name} must have columns {list(columns)}; "
                         f"missing {missing}")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def copy_synced(src: str | Path, dst: str | Path) -> None:
    """Copy a file (or a folder of part files) and fsync every copied file."""
    src, dst = Path(src), Path(dst)
    if src.is_dir():
        dst.mkdir()
        for f in sorted(src.rglob("*")):
            target = dst / f.relative_to(src)
            if f.is_dir():
                target.mkdir(exist_ok=True)
            else:
                copy_synced(f, target)
        fsync_dir(dst)
        return
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        shutil.copyfileobj(fi, fo, 1 << 22)
        fo.flush()
        os.fsync(fo.fileno())


def fsync_dir(path: str | Path) -> None:
    """fsync a directory, so the renames inside it survive a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def session_weights_by_id(sessions: np.ndarray, weights) -> np.ndarray:
    """The weight of each entry of `sessions` (session ids), joined by id, never by position.

    Parameters
    ----------
    sessions : numpy.ndarray of int
        Session ids to look up (one per event, or unique ones).
    weights : pandas.DataFrame, pandas.Series or numpy.ndarray
        The session table (columns `session`, `weight`), weights indexed by session id, or a
        dense array whose entry i is the weight of session id i.

    Raises ValueError naming a session that has no weight, or a session id listed twice.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"session": [7, 3], "weight": [0.5, 1.0]})
    >>> session_weights_by_id(np.array([3, 3, 7]), table).tolist()
    [1.0, 1.0, 0.5]
    """
    sessions = np.asarray(sessions)
    if hasattr(weights, "columns"):
        ids, w = weights["session"].to_numpy(), weights["weight"].to_numpy()
    elif hasattr(weights, "index"):
        ids, w = weights.index.to_numpy(), weights.to_numpy()
    else:
        w = np.asarray(weights)
        ids = np.arange(len(w))
    w = np.asarray(w, np.float64)
    order = np.argsort(ids, kind="stable")
    ids, w = np.asarray(ids)[order], w[order]
    if len(ids) > 1 and (ids[1:] == ids[:-1]).any():
        dup = ids[1:][ids[1:] == ids[:-1]][0]
        raise ValueError(f"session {dup} has two weights in the session table")
    pos = np.searchsorted(ids, sessions)
    found = pos < len(ids)
    found[found] = ids[pos[found]] == sessions[found]
    if not found.all():
        raise ValueError(f"session {sessions[~found][0]} has no weight in the session table "
                         f"({int((~found).sum())} rows without one); rebuild the sessions")
    return w[pos]


# ---------------------------------------------------------------- typed records


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of `x` scaled to unit L2 norm, as float32 (all-zero rows stay zero).

    Examples
    --------
    >>> unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    x = np.asarray(x, np.float32)
    return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))


@dataclass
class Embeddings:
    """Trained item vectors: `vectors.npy`, `context_vectors.npy` and `items.parquet`.

    Parameters
    ----------
    ids : numpy.ndarray of str
        Original item id of each vector row.
    codes : numpy.ndarray of int32
        Ingest code (`vocabulary.parquet` `code`) of each row; ascending for a fresh run.
    vectors : numpy.ndarray of float32, shape (n, dim)
        Input vectors (row i = item `ids[i]`).
    context : numpy.ndarray of float32, shape (n, dim), optional
        Output (context) vectors in the same row order, for directional scoring.
    counts : numpy.ndarray of int64, optional
        Corpus occurrences of each item.
    categories : numpy.ndarray of int32, optional
        Category of each item (-1 = unknown).
    origin : numpy.ndarray of str, optional
        How each row's vector was obtained: "trained" or "side_info" (cold start from the
        catalog, `recembed.catalog`); None = all trained (runs without a catalog).
    """

    ids: np.ndarray
    codes: np.ndarray
    vectors: np.ndarray
    context: np.ndarray | None = None
    counts: np.ndarray | None = None
    categories: np.ndarray | None = None
    origin: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def unit(self) -> np.ndarray:
        """The vectors scaled to unit length (float32)."""
        return unit_rows(self.vectors)

    def save(self, out_dir: str | Path) -> list[Artifact]:
        """Write vectors.npy, items.parquet and (when present) context_vectors.npy atomically;
        returns the artifacts written."""
        import pyarrow as pa

        out_dir = Path(out_dir)
        cols = {"id": pa.array([str(x) for x in self.ids], pa.string()),
                "code": pa.array(np.asarray(self.codes, np.int32)),
                "count": pa.array(np.zeros(len(self), np.int64) if self.counts is None
                                  else np.asarray(self.counts, np.int64))}
        if self.categories is not None:
            cols["category"] = pa.array(np.asarray(self.categories, np.int32))
        if self.origin is not None:
            cols["origin"] = pa.array([str(x) for x in self.origin], pa.string())
        write_parquet(pa.table(cols), ITEMS.path(out_dir), ITEMS.columns)
        _save_npy(VECTORS.path(out_dir), self.vectors)
        written = [VECTORS, ITEMS]
        if self.context is not None:
            _save_npy(CONTEXT.path(out_dir), self.context)
            written.append(CONTEXT)
        return written

    @classmethod
    def load(cls, dir_: str | Path, *, context: bool = True) -> Embeddings:
        """Read a run or version directory's vectors (context vectors when present and
        `context`); no pickle is ever loaded.

        Reads items.parquet with `pyarrow.parquet.ParquetFile` and converts its columns without
        pyarrow's pandas bridge, so that a serving process never imports pandas (0.26-0.5 s:
        benchmarks/RESULTS.md, "Serving for real", second round).
        """
        import pyarrow.parquet as pq

        dir_ = Path(dir_)
        table = pq.ParquetFile(ITEMS.path(dir_)).read()
        vectors = np.load(VECTORS.path(dir_), allow_pickle=False)
        ctx_path = CONTEXT.path(dir_)
        ctx = np.load(ctx_path, allow_pickle=False) if context and ctx_path.exists() else None
        names = table.column_names
        return cls(
            ids=_object_column(table.column("id")),
            codes=_numeric_column(table.column("code")).astype(np.int32),
            vectors=vectors, context=ctx,
            counts=_numeric_column(table.column("count")) if "count" in names else None,
            categories=_numeric_column(table.column("category")) if "category" in names
            else None,
            origin=_object_column(table.column("origin")) if "origin" in names else None,
        )


def _numeric_column(col) -> np.ndarray:
    """A pyarrow integer or float column as a numpy array of the same dtype, read from its data
    buffer (pyarrow's own `to_numpy` goes through its pandas bridge, which imports pandas); a
    column with nulls falls back to `to_numpy` (nulls become NaN there)."""
    import pyarrow as pa

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    numeric = pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)
    if arr.null_count or not numeric:
        return arr.to_numpy(zero_copy_only=False)
    dtype = np.dtype(arr.type.to_pandas_dtype())
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr),
                         offset=arr.offset * dtype.itemsize).copy()


def _object_column(col) -> np.ndarray:
    """A pyarrow text column as an object array of str (None for a null), without pandas."""
    out = np.empty(len(col), dtype=object)
    out[:] = col.to_pylist()
    return out


VARIANTS = ("allow_repeats", "exclude_prefix")
BUCKETS = ("head", "torso", "tail")


@dataclass(frozen=True)
class Scores:
    """One method's metrics in one evaluation variant; read by metric and cut-off K."""

    values: Mapping[str, float]

    def recall(self, k: int) -> float:
        """Recall@k (share of targets in the top k)."""
        return float(self.values[f"recall@{k}"])

    def mrr(self, k: int) -> float:
        """MRR@k."""
        return float(self.values[f"mrr@{k}"])

    def ndcg(self, k: int) -> float:
        """NDCG@k."""
        return float(self.values[f"ndcg@{k}"])

    def coverage(self, k: int) -> float:
        """Share of the catalogue recommended in some top k."""
        return float(self.values[f"coverage@{k}"])

    def interval(self, metric: str, k: int) -> tuple[float, float] | None:
        """Bootstrap 95% interval of `metric` ("recall" or "mrr") at k over the holdout's
        queries; None when not measured (only the headline K is, in metrics of this version)."""
        lo = self.values.get(f"ci95_lo:{metric}@{k}")
        hi = self.values.get(f"ci95_hi:{metric}@{k}")
        return None if lo is None or hi is None else (float(lo), float(hi))

    def recall_by_bucket(self, k: int, bucket: str) -> float:
        """Recall@k of targets in a popularity bucket (`BUCKETS`); 0 when not measured."""
        return float(self.values.get(f"recall@{k}_{bucket}", 0.0))

    @property
    def seconds(self) -> float:
        """Scoring time of the method (seconds)."""
        return float(self.values.get("seconds", 0.0))


@dataclass(frozen=True)
class MethodMetrics:
    """A method's scores in both variants. `kind` is "baseline", "embedding" (a query strategy
    over the vectors) or "serving" (what `Recommender.recommend` answers)."""

    name: str
    kind: str
    allow_repeats: Scores
    exclude_prefix: Scores

    def variant(self, name: str) -> Scores:
        """The scores of one variant (`VARIANTS`)."""
        return getattr(self, name)


@dataclass
class Metrics:
    """metrics.json: evaluation of every method on the holdout, read by field.

    Parameters
    ----------
    ks : list of int
        Cut-offs evaluated (ascending).
    queries : dict
        Counts: `targets`, `oov_targets`, `oov_share` (in [0, 1]), `queries`.
    methods : dict of str to MethodMetrics
        By name: baselines by their own name, embeddings as `<model>:<strategy>`, the serving
        path as `<model>:serving`.
    model : str
        What the vectors were trained on (`item2vec`, `deepwalk`, `item2vec+node2vec`, ...).
    train : dict
        The train stage's statistics (loss per epoch, tokens, seconds).
    calibration : dict
        What the run chose on its validation split (calibration.json: corpus, training amount,
        blend settings, validation Recall@20 / MRR@20 of the blend, of each signal alone and of
        the baselines); {} when calibration was off.
    """

    ks: list[int]
    queries: dict
    methods: dict[str, MethodMetrics]
    model: str = ""
    train: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)

    @classmethod
    def from_evaluation(cls, raw: Mapping, model: str = "", train: dict | None = None,
                        calibration: dict | None = None) -> Metrics:
        """From `recembed.evaluate.evaluate_all`'s output (or a metrics.json). Method names are
        the one string contract parsed here: `<model>:serving` is the serving path,
        `<model>:<strategy>` an embedding strategy, anything else a baseline."""
        methods = {}
        for name, m in raw["methods"].items():
            kind = "baseline"
            if ":" in name:
                kind = "serving" if name.endswith(":serving") else "embedding"
                model = model or name.split(":", 1)[0]
            methods[name] = MethodMetrics(name, kind, *(Scores(dict(m[v])) for v in VARIANTS))
        return cls(list(raw["ks"]), dict(raw["queries"]), methods, model, dict(train or {}),
                   dict(calibration or {}))

    @property
    def cutoff(self) -> int:
        """The headline K: 20 when evaluated, else the largest K."""
        return 20 if 20 in self.ks else self.ks[-1]

    @property
    def serving(self) -> MethodMetrics:
        """The serving path's metrics; KeyError naming the fix when it was not evaluated."""
        for m in self.methods.values():
            if m.kind == "serving":
                return m
        raise KeyError("metrics.json has no serving evaluation; run the evaluate stage")

    def of_kind(self, kind: str) -> list[MethodMetrics]:
        """Methods of one kind, in evaluation order."""
        return [m for m in self.methods.values() if m.kind == kind]

    def best(self, kinds: tuple[str, ...] = ("embedding", "serving"),
             k: int | None = None) -> MethodMetrics | None:
        """The method of one of `kinds` with the highest Recall@k (allow_repeats; k defaults to
        `cutoff`), or None when there is none."""
        k = k or self.cutoff
        cands = [m for m in self.methods.values() if m.kind in kinds]
        return max(cands, key=lambda m: m.allow_repeats.recall(k), default=None)

    def to_dict(self) -> dict:
        """The JSON layout of metrics.json."""
        best = self.best()
        return {
            "ks": self.ks, "queries": self.queries, "model": self.model,
            "methods": {n: {v: dict(m.variant(v).values) for v in VARIANTS}
                        for n, m in self.methods.items()},
            "headline": {"method": best.name if best else "",
                         f"recall@{self.cutoff}":
                             best.allow_repeats.recall(self.cutoff) if best else 0.0},
            "train": self.train,
            "calibration": self.calibration,
        }

    def save(self, path: str | Path) -> None:
        """Write metrics.json atomically."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Metrics:
        """Read metrics.json."""
        d = json.loads(Path(path).read_text())
        return cls.from_evaluation(d, d.get("model", ""), d.get("train"), d.get("calibration"))


# ---------------------------------------------------------------- helpers


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(array), allow_pickle=False)


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for f in path.rglob("*"):
            if f.is_file():
                _fsync_file(f)
        fsync_dir(path)
    elif path.exists():
        _fsync_file(path)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "isoformat"):  # timestamps
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def now_iso() -> str:
    """Local time as ISO-8601 with the UTC offset (manifests, done-files)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
