"""Versioned publishing: quality gate, drift, atomic LATEST pointer, retention, a publish lock.

A version is assembled in `published/.tmp-<version>/`, verified (checksums, loadable by
`recembed.serving`, consistent row counts), renamed into place, and only then made current by
atomically replacing `published/LATEST` (temp file, fsync, rename). Anything that fails before
that last rename leaves the current version and LATEST exactly as they were.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("recembed")

VERSION_FILES = ("vectors.npy", "items.parquet", "vectors.bin", "index.faiss", "index.json",
                 "serving.json", "blend.npz", "index_context.faiss", "index_context.json",
                 "calibration.json", "metrics.json", "config.toml", "report.html")


class GateRefused(RuntimeError):
    """The quality gate refused the new version; the current one stays."""


class LockBusy(RuntimeError):
    """Another run holds the publish lock."""


@dataclass
class PublishResult:
    """What publishing did: the version name and directory, whether it became current, why."""

    version: str
    path: Path | None
    published: bool
    reason: str
    gate: dict = field(default_factory=dict)
    drift: dict = field(default_factory=dict)


def current_version_dir(published: Path) -> Path | None:
    """The directory LATEST points to, or None when nothing is published yet."""
    latest = Path(published) / "LATEST"
    if not latest.exists():
        return None
    d = Path(published) / latest.read_text().strip()
    return d if d.is_dir() else None


def list_versions(published: Path) -> list[str]:
    """Published version names, oldest first."""
    if not Path(published).exists():
        return []
    return sorted(p.name for p in Path(published).iterdir()
                  if p.is_dir() and p.name.startswith("v") and (p / "manifest.json").exists())


@contextmanager
def publish_lock(published: Path, wait_s: float = 0.0):
    """Exclusive lock on `published/.lock` (flock: the kernel frees it if the holder dies, so a
    stale lock from a killed run never blocks the next one). Raises LockBusy after `wait_s`."""
    published.mkdir(parents=True, exist_ok=True)
    path = published / ".lock"
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
                    holder = Path(path).read_text().strip() or "unknown"
                    raise LockBusy(f"{published} is being published by another run ({holder}); "
                                   "set publish.lock_wait_s to wait for it") from None
                time.sleep(0.2)
        stale = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if stale:
            log.info("publish lock was last held by %s (that process has exited)", stale)
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


def publish_version(
    run_dir: Path, published: Path, *, manifest: dict, gate_metric: tuple[float, float] | None,
    max_recall_drop: float = 0.05, min_coverage_ratio: float = 0.5, keep_versions: int = 5,
    lock_wait_s: float = 0.0, force: bool = False, include_context: bool = True,
    version: str | None = None, drift: dict | None = None,
    transform: Callable[[Path], None] | None = None, coverage_ratio: float | None = None,
) -> PublishResult:
    """Gate, assemble, verify and atomically publish the run's artifacts as a new version.

    `gate_metric` = (new recall@20, current recall@20 on the same holdout) or None when nothing
    is published yet. `transform(dir)` may rewrite the vectors in the temp dir (alignment) before
    checksums are taken. Raises GateRefused (unless `force`) or LockBusy; on any error the
    current version is untouched.
    """
    from recembed.serving import Recommender

    published = Path(published)
    version = version or f"v{time.strftime('%Y%m%d-%H%M%S')}"
    gate = sanity_checks(run_dir)
    if gate_metric is not None:
        new, cur = gate_metric
        drop = (cur - new) / cur if cur > 0 else 0.0
        gate.update(recall_new=new, recall_current=cur, relative_drop=round(drop, 4))
        if drop > max_recall_drop:
            gate["failures"].append(f"holdout recall@20 fell {drop:.1%} ({cur:.4f} -> {new:.4f}), "
                                    f"more than publish.max_recall_drop={max_recall_drop:.0%}")
    if coverage_ratio is not None:
        gate["coverage_ratio"] = round(coverage_ratio, 4)
    if coverage_ratio is not None and coverage_ratio < min_coverage_ratio:
        gate["failures"].append(f"coverage@20 collapsed to {gate['coverage_ratio']:.0%} of the "
                                "current version's")
    if gate["failures"]:
        if not force:
            raise GateRefused("; ".join(gate["failures"]))
        log.warning("quality gate failed but --force was given, publishing anyway: %s",
                    "; ".join(gate["failures"]))
        gate["forced"] = True

    with publish_lock(published, lock_wait_s):
        while (published / version).exists():
            version += "b"
        tmp = published / f".tmp-{version}"
        shutil.rmtree(tmp, ignore_errors=True)
        placed = False
        try:
            tmp.mkdir()
            names = [*VERSION_FILES, *(["context_vectors.npy"] if include_context and (
                run_dir / "context_vectors.npy").exists() else [])]
            for name in names:
                _copy_synced(run_dir / name, tmp / name)
            if transform is not None:
                transform(tmp)
            from recembed.pipeline import sha256_file

            files = {n: sha256_file(tmp / n) for n in sorted(names)}
            man = {**manifest, "version": version, "gate": gate, "drift": drift or {},
                   "files": files}
            _write_synced(tmp / "manifest.json", json.dumps(man, indent=2, default=str))
            rec = Recommender.load(tmp, verify=True)  # checksums + loadable + counts agree
            expect = manifest.get("counts", {}).get("vectors")
            if expect is not None and len(rec.ids) != expect:
                raise RuntimeError(f"{len(rec.ids)} items published but the run trained {expect}")
            _fsync_dir(tmp)
            os.rename(tmp, published / version)
            placed = True
            _fsync_dir(published)
            _write_synced(published / "LATEST", version + "\n", atomic=True)
            placed = False  # LATEST points at it now: it is the current version
            _fsync_dir(published)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if placed:  # renamed into place but never made current: not a version
                shutil.rmtree(published / version, ignore_errors=True)
            raise
        removed = apply_retention(published, keep_versions)
    reason = "published" + (f"; removed old versions {removed}" if removed else "")
    return PublishResult(version, published / version, True, reason, gate, drift or {})


def sanity_checks(run_dir: Path) -> dict:
    """{'failures': [...], 'coverage': ...}: empty vocabulary, NaN vectors, no coverage."""
    failures = []
    vec = np.load(run_dir / "vectors.npy", allow_pickle=False, mmap_mode="r")
    if len(vec) == 0:
        failures.append("empty vocabulary: no vectors were trained")
    elif not np.isfinite(np.asarray(vec)).all():
        failures.append("vectors contain NaN or infinite values")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cov = _serving_metric(metrics, "coverage@20")
    if cov is not None and cov <= 0:
        failures.append("coverage@20 is zero: the model recommends nothing")
    return {"failures": failures, "coverage": cov}


def apply_retention(published: Path, keep: int) -> list[str]:
    """Delete the oldest versions beyond `keep`, never the current one; returns those removed."""
    current = current_version_dir(published)
    versions = list_versions(published)
    removed = []
    for v in versions[: max(0, len(versions) - keep)]:
        if current is not None and v == current.name:
            continue
        shutil.rmtree(published / v, ignore_errors=True)
        removed.append(v)
    return removed


def neighbour_drift(new_ids: list[str], new_vec: np.ndarray, old_ids: list[str],
                    old_vec: np.ndarray, k: int = 10, sample: int = 2000, seed: int = 0) -> dict:
    """overlap@k of exact cosine neighbour lists (restricted to shared items) between two
    versions on a sample of shared items, and the shares of new and dropped items."""
    new_pos = {x: i for i, x in enumerate(new_ids)}
    old_pos = {x: i for i, x in enumerate(old_ids)}
    shared = [x for x in new_ids if x in old_pos]
    out = {"items_new": len(new_ids), "items_previous": len(old_ids), "shared": len(shared),
           "new_share": 1 - len(shared) / max(len(new_ids), 1),
           "dropped_share": 1 - len(shared) / max(len(old_ids), 1)}
    if len(shared) <= k:
        out[f"overlap@{k}"] = None
        return out
    a = _unit(new_vec[[new_pos[x] for x in shared]])
    b = _unit(old_vec[[old_pos[x] for x in shared]])
    rng = np.random.default_rng(seed)
    q = rng.choice(len(shared), min(sample, len(shared)), replace=False)
    overlaps = []
    for lo in range(0, len(q), 512):
        qi = q[lo:lo + 512]
        sa, sb = a[qi] @ a.T, b[qi] @ b.T
        sa[np.arange(len(qi)), qi] = -np.inf
        sb[np.arange(len(qi)), qi] = -np.inf
        ta = np.argpartition(-sa, k, axis=1)[:, :k]
        tb = np.argpartition(-sb, k, axis=1)[:, :k]
        overlaps += [len(np.intersect1d(x, y)) / k for x, y in zip(ta, tb, strict=True)]
    out[f"overlap@{k}"] = float(np.mean(overlaps))
    return out


def procrustes_rotation(new_ids: list[str], new_vec: np.ndarray, old_ids: list[str],
                        old_vec: np.ndarray) -> np.ndarray | None:
    """Orthogonal R minimising ||new[shared] R - old[shared]|| (None if too few shared items).
    Rotation keeps cosine and in.out scores, so it changes no ranking, only coordinates."""
    from scipy.linalg import orthogonal_procrustes

    if new_vec.shape[1] != old_vec.shape[1]:
        return None
    old_pos = {x: i for i, x in enumerate(old_ids)}
    pairs = [(i, old_pos[x]) for i, x in enumerate(new_ids) if x in old_pos]
    if len(pairs) < new_vec.shape[1]:
        return None
    ni, oi = map(list, zip(*pairs, strict=True))
    r, _ = orthogonal_procrustes(new_vec[ni], old_vec[oi])
    return r.astype(np.float32)


# ---------------------------------------------------------------- helpers


def _serving_metric(metrics: dict, key: str) -> float | None:
    for name, m in metrics.get("methods", {}).items():
        if name.endswith(":serving"):
            return m["allow_repeats"].get(key)
    return None


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _copy_synced(src: Path, dst: Path) -> None:
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        shutil.copyfileobj(fi, fo, 1 << 22)
        fo.flush()
        os.fsync(fo.fileno())


def _write_synced(path: Path, text: str, atomic: bool = False) -> None:
    target = path.with_name(f".{path.name}.tmp-{os.getpid()}") if atomic else path
    with open(target, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    if atomic:
        os.replace(target, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
