"""Versioned publishing: the quality gate and its inputs, drift, alignment, warm start, an atomic
LATEST pointer, retention and a publish lock.

A version is assembled in `published/.tmp-<version>/`, verified (checksums, loadable by
`recembed.serving`, consistent row counts), renamed into place, and only then made current by
atomically replacing `published/LATEST` (temp file, fsync, rename). Anything that fails before
that last rename leaves the current version and LATEST exactly as they were.

The gate compares what each version *serves*: the new run's `Recommender.recommend` (as
evaluated into metrics.json) against the current version's `recommend` on the same holdout.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recembed import artifacts as A
from recembed.artifacts import Artifact, Embeddings, Metrics, Scores, current_version_dir
from recembed.incremental import TRAINING_KEYS
from recembed.postprocess import VectorTransform

log = logging.getLogger("recembed")

__all__ = ["current_version_dir"]  # re-exported: callers find versions here


class GateRefused(RuntimeError):
    """The quality gate refused the new version; the current one stays."""


class LockBusy(RuntimeError):
    """Another run holds the publish lock."""


@dataclass
class PublishPolicy:
    """The publish settings (`[publish]` in the config).

    Parameters
    ----------
    max_recall_drop : float in [0, 1]
        Refuse when holdout Recall@20 falls by more than this share of the current version's.
    min_coverage_ratio : float in [0, 1]
        Refuse when coverage@20 falls below this share of the current version's.
    force : bool
        Publish even when the gate refuses (logged, recorded in the manifest).
    keep_versions : int >= 1
        Versions kept; the current one is never deleted.
    lock_wait_s : float >= 0, seconds
        Wait this long for another run's publish lock; 0 = fail at once.
    align_to_previous : bool
        Rotate the new vectors onto the current version's (orthogonal Procrustes on shared
        items) and re-index them.
    drift_k : int >= 1
        K of the neighbour-overlap drift measure.
    max_queries : int >= 0
        Holdout queries the current version is evaluated on (0 = all), as for the new one.
    seed : int
        Seed of the query sample, drift sample and re-indexing.
    """

    max_recall_drop: float = 0.05
    min_coverage_ratio: float = 0.5
    force: bool = False
    keep_versions: int = 5
    lock_wait_s: float = 0.0
    align_to_previous: bool = False
    drift_k: int = 10
    max_queries: int = 10_000
    seed: int = 0


@dataclass
class PublishResult:
    """What publishing did: the version name and directory, whether it became current, why."""

    version: str
    path: Path | None
    published: bool
    reason: str
    gate: dict = field(default_factory=dict)
    drift: dict = field(default_factory=dict)
    recall_new: float | None = None
    recall_current: float | None = None


Reindex = Callable[[Path], tuple]  # vectors.npy path -> (faiss index, IndexMeta)


def publish_run(
    run_dir: Path, published: Path, *, files: Sequence[Artifact], manifest: dict,
    policy: PublishPolicy, reindex: Reindex | None = None, version: str | None = None,
) -> PublishResult:
    """Gate this run's serving path against the current version on this run's holdout, then
    publish `files` as a new version (aligned to the current one when the policy says so).

    Parameters
    ----------
    run_dir : Path
        A run directory with metrics.json, the holdout, the vocabulary and the `files`.
    published : Path
        The published/ root (created when absent).
    files : sequence of Artifact
        What a version holds (files or folders of part files); absent optional ones
        (context vectors, report) are skipped.
    manifest : dict
        Provenance (`version_manifest`); `fingerprints` tell a rerun of an already published
        run, `counts.vectors` is checked against what is published.
    policy : PublishPolicy
        Thresholds, retention, lock wait, alignment, seeds.
    reindex : callable, optional
        ``reindex(vectors_path) -> (index, IndexMeta)``: builds and tunes the index of aligned
        vectors (needed when `policy.align_to_previous`).
    version : str, optional
        The version name; default `v<YYYYmmdd-HHMMSS>`.

    Returns
    -------
    PublishResult
        Raises GateRefused (unless `policy.force`) or LockBusy; on any error the current
        version is untouched. A current version that fails verification does not block: the
        new one is gated on its own checks and `gate["current_broken"]` says why.
    """
    from recembed.serving import ArtifactError, Recommender

    metrics = Metrics.load(A.METRICS.path(run_dir))
    new_scores = metrics.serving.allow_repeats
    current = current_version_dir(published)
    if current is not None and _same_run(current, manifest):
        # a rerun after a crash between publishing and recording it: already current
        log.info("%s already holds this run's artifacts; nothing to publish", current.name)
        return PublishResult(current.name, current, False, "already current",
                             recall_new=new_scores.recall(20))
    old_scores, drift, transform, broken = None, {}, None, None
    if current is not None:
        try:
            old = Recommender.load(current)
        except ArtifactError as e:
            # a corrupt current version must not block every later night: it is reported,
            # kept for inspection, and the new version is gated on its own checks only
            broken = f"{current.name} fails verification: {e}"
            log.error("the current version %s; publishing the new version without comparing "
                      "against it (the broken one is kept)", broken)
            current = None
    if current is not None:
        old_scores = evaluate_version(old, run_dir, ks=metrics.ks, max_queries=policy.max_queries,
                                      seed=policy.seed)
        # drift and alignment read the new run's ids and unit vectors only (what a loaded
        # Recommender's `unit` holds), not its index, tables and session index: the new version
        # is loaded and verified in full once assembled
        emb = Embeddings.load(run_dir)
        new_ids, new_unit = list(emb.ids), A.unit_rows(emb.vectors)
        del emb
        drift = neighbour_drift(new_ids, new_unit, list(old.ids), old.unit,
                                k=policy.drift_k, seed=policy.seed)
        drift["previous_version"] = current.name
        if policy.align_to_previous:
            rot = procrustes_rotation(new_ids, new_unit, list(old.ids), old.unit)
            if rot is not None:
                if reindex is None:
                    raise ValueError("align_to_previous needs a reindex function")
                transform = lambda d: align_version(d, rot, reindex)  # noqa: E731
                drift["aligned_to_previous"] = True
        # the current version is not needed past here: released before the new version is
        # assembled and loaded for its verification (peak RSS, not the result)
        del old, new_unit
    gate = quality_gate(run_dir, new_scores, old_scores, max_recall_drop=policy.max_recall_drop,
                        min_coverage_ratio=policy.min_coverage_ratio)
    if broken:
        gate["current_broken"] = broken
    if gate["failures"]:
        if not policy.force:
            raise GateRefused("; ".join(gate["failures"]))
        log.warning("quality gate failed but --force was given, publishing anyway: %s",
                    "; ".join(gate["failures"]))
        gate["forced"] = True
    res = publish_version(run_dir, published, files=files, manifest=manifest, gate=gate,
                          keep_versions=policy.keep_versions, lock_wait_s=policy.lock_wait_s,
                          version=version, drift=drift, transform=transform)
    res.recall_new = new_scores.recall(20)
    res.recall_current = old_scores.recall(20) if old_scores is not None else None
    return res


def quality_gate(run_dir: Path, new: Scores, current: Scores | None, *,
                 max_recall_drop: float = 0.05, min_coverage_ratio: float = 0.5) -> dict:
    """The gate record: {"failures": [...], "coverage", and against a current version
    "recall_new", "recall_current", "relative_drop", "coverage_ratio"}.

    Fails on an empty vocabulary, NaN vectors, zero coverage@20, a relative Recall@20 drop
    beyond `max_recall_drop`, or coverage@20 below `min_coverage_ratio` of the current's.
    """
    failures = []
    vec = np.load(A.VECTORS.path(run_dir), allow_pickle=False, mmap_mode="r")
    if len(vec) == 0:
        failures.append("empty vocabulary: no vectors were trained")
    elif not np.isfinite(np.asarray(vec)).all():
        failures.append("vectors contain NaN or infinite values")
    cov = new.coverage(20)
    if cov <= 0:
        failures.append("coverage@20 is zero: the model recommends nothing")
    gate: dict = {"failures": failures, "coverage": cov}
    if current is None:
        return gate
    r_new, r_cur = new.recall(20), current.recall(20)
    drop = (r_cur - r_new) / r_cur if r_cur > 0 else 0.0
    gate.update(recall_new=r_new, recall_current=r_cur, relative_drop=round(drop, 4))
    if drop > max_recall_drop:
        failures.append(f"holdout recall@20 fell {drop:.1%} ({r_cur:.4f} -> {r_new:.4f}), "
                        f"more than publish.max_recall_drop={max_recall_drop:.0%}")
    if current.coverage(20) > 0:
        ratio = cov / current.coverage(20)
        gate["coverage_ratio"] = round(ratio, 4)
        if ratio < min_coverage_ratio:
            failures.append(f"coverage@20 collapsed to {ratio:.0%} of the current version's")
    return gate


def evaluate_version(rec, run_dir: Path, *, ks: Sequence[int] = (20,), max_queries: int = 10_000,
                     seed: int = 0) -> Scores:
    """A loaded version's `recommend` on a run's holdout (allow_repeats scores), its items
    matched to the run's vocabulary by original id: the gate's view of the current version, and
    `recembed evaluate <published> --run <run>`. The gate passes the run's own cut-offs `ks`
    (20 among them), so both versions are scored by the same protocol (the serving path fetches
    candidates for the largest K)."""
    import pandas as pd

    from recembed.evaluate import evaluate_all, serving_recommend

    train = pd.read_parquet(A.SESSIONS_TRAIN.path(run_dir), columns=["session", "item"])
    test = pd.read_parquet(A.SESSIONS_TEST.path(run_dir), columns=["session", "item"])
    vocab = pd.read_parquet(A.VOCABULARY.path(run_dir), columns=["code", "id"])
    n_items, cold_kw = len(vocab), {}
    if A.CATALOG.path(run_dir).exists():
        # the run scored cold targets (its catalog): score the version on the same queries,
        # its items matched by id to the run's catalog codes too
        cat = pd.read_parquet(A.CATALOG.path(run_dir), columns=["code", "id"])
        vocab = pd.concat([vocab, cat[cat["code"] >= len(vocab)]], ignore_index=True)
        n_items = max(n_items, int(cat["code"].max()) + 1)
        listed = np.zeros(n_items, bool)
        listed[cat["code"].to_numpy()] = True
        cold_kw = {"catalog": listed}
    rows_item = _codes_of(vocab, rec.ids)
    m = evaluate_all(train, test, n_items, ks=sorted({20, *ks}), baselines=[],
                     recommenders={"v:serving": serving_recommend(rec, rows_item, n_items)},
                     max_queries=max_queries, seed=seed, **cold_kw)
    scores = Metrics.from_evaluation(m).serving.allow_repeats
    return Scores({**scores.values, "queries": m["queries"]["queries"]})


def warm_start_vectors(version_dir: Path | None, vocabulary) -> tuple | None:
    """(ingest codes, vectors, context or None) of a published version's items that are in this
    run's `vocabulary` (DataFrame with `code`, `id`), for `train_word2vec(init=...)`; None when
    nothing is published yet, or when its vectors were post-processed (`train.postprocess`
    other than none: not a skip-gram space to continue from)."""
    if version_dir is None:
        log.warning("train.warm_start is on but nothing is published yet; training from scratch")
        return None
    tpath = A.POSTPROCESS.path(version_dir)
    if tpath.exists() and not (tf := VectorTransform.load(tpath)).identity:
        # its vectors went through a post-processing (centering, whitening...): not the
        # skip-gram space training continues in
        log.warning("train.warm_start is on but the published version %s was post-processed "
                    "(%s): training from scratch", version_dir.name, tf.spec)
        return None
    prev = Embeddings.load(version_dir)
    codes = _codes_of(vocabulary, prev.ids)
    ok = codes >= 0
    return (codes[ok], prev.vectors[ok], None if prev.context is None else prev.context[ok])


def align_version(version_dir: Path, rotation: np.ndarray, reindex: Reindex) -> None:
    """Rotate a version's vectors (and context vectors) in place, and its post-processing
    transform with them, rewrite vectors.bin, and rebuild and re-tune its index on the rotated
    vectors, so index.json records the recall measured on what is published."""
    from recembed.index import save_index
    from recembed.train import write_word2vec

    emb = Embeddings.load(version_dir)
    emb.vectors = emb.vectors @ rotation
    tpath = A.POSTPROCESS.path(version_dir)
    if tpath.exists():
        # the served vectors are the transform's output rotated: the file must say so
        VectorTransform.load(tpath).rotated(rotation).save(tpath)
    if emb.context is not None:
        emb.context = emb.context @ rotation
    emb.save(version_dir)
    write_word2vec([str(x) for x in emb.ids], emb.vectors, A.VECTORS_BIN.path(version_dir),
                   binary=True)
    index, meta = reindex(A.VECTORS.path(version_dir))
    save_index(index, meta, version_dir)
    cpath = A.INDEX_CONTEXT.path(version_dir)
    if cpath.exists():
        # the inner-product index over the output vectors must hold the rotated ones too: the
        # rotated query vectors searched the old coordinates before (wrong candidates)
        _rebuild_context_index(version_dir, emb.context if emb.context is not None
                               else emb.vectors)


def _rebuild_context_index(version_dir: Path, vectors: np.ndarray) -> None:
    """index_context.faiss over `vectors`, with the factory and search parameters its
    index_context.json recorded."""
    import faiss

    from recembed.index import build_index

    meta_p = A.INDEX_CONTEXT_META.path(version_dir)
    meta = json.loads(meta_p.read_text()) if meta_p.exists() else {}
    index, _ = build_index(vectors, factory=meta.get("factory", "Flat"), metric="ip")
    if meta.get("search_params"):
        faiss.ParameterSpace().set_index_parameters(index, meta["search_params"])
    with A.atomic_path(A.INDEX_CONTEXT.path(version_dir)) as tmp:
        faiss.write_index(index, str(tmp))


def publish_version(
    run_dir: Path, published: Path, *, files: Sequence[Artifact], manifest: dict, gate: dict,
    keep_versions: int = 5, lock_wait_s: float = 0.0, version: str | None = None,
    drift: dict | None = None, transform: Callable[[Path], None] | None = None,
) -> PublishResult:
    """Assemble, verify and atomically publish `files` of a run as a new version (no gate:
    `publish_run` decides). `transform(dir)` may rewrite files in the temp dir (alignment)
    before checksums are taken. Raises LockBusy; on any error the current version is
    untouched."""
    from recembed.serving import Recommender

    published = Path(published)
    version = version or f"v{time.strftime('%Y%m%d-%H%M%S')}"
    with publish_lock(published, lock_wait_s):
        # versions a killed publisher left half-assembled: nobody else assembles while we
        # hold the lock, so they are garbage (the kill test found them piling up)
        for stale in published.glob(".tmp-v*"):
            log.warning("removing %s, left by a publish that was killed", stale.name)
            shutil.rmtree(stale, ignore_errors=True)
        while (published / version).exists():
            version += "b"
        tmp = published / f".tmp-{version}"
        placed = False
        try:
            tmp.mkdir()
            present = [a for a in files if a.path(run_dir).exists()]
            for a in present:
                A.copy_synced(a.path(run_dir), a.path(tmp))
            if transform is not None:
                transform(tmp)
            hashes = {k: v for a in present for k, v in A.file_hashes(a.path(tmp), a.name).items()}
            man = {**manifest, "version": version, "gate": gate, "drift": drift or {},
                   "files": dict(sorted(hashes.items()))}
            _write_synced(tmp / A.MANIFEST, _dumps(man))
            rec = Recommender.load(tmp, verify=True)  # checksums + loadable + counts agree
            expect = manifest.get("counts", {}).get("vectors")
            if expect is not None and len(rec.ids) != expect:
                raise RuntimeError(f"{len(rec.ids)} items published but the run trained {expect}")
            A.fsync_dir(tmp)
            _fault_point("assembled")
            os.rename(tmp, published / version)
            placed = True
            A.fsync_dir(published)
            _fault_point("renamed")  # in place, LATEST not yet switched: the delicate moment
            _write_synced(published / A.LATEST, version + "\n", atomic=True)
            placed = False  # LATEST points at it now: it is the current version
            A.fsync_dir(published)
            _fault_point("pointed")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if placed:  # renamed into place but never made current: not a version
                shutil.rmtree(published / version, ignore_errors=True)
            raise
        removed = apply_retention(published, keep_versions)
    reason = "published" + (f"; removed old versions {removed}" if removed else "")
    return PublishResult(version, published / version, True, reason, gate, drift or {})


def version_manifest(*, code_version: str, run_dir: Path, model: str, fingerprints: dict,
                     inputs: Sequence[str], stats: dict[str, dict], metrics: Metrics) -> dict:
    """Provenance for manifest.json: inputs (sizes, mtimes), event time range, counts per stage
    (from each stage's statistics), fingerprints and the headline metrics."""
    import platform

    import pyarrow.parquet as pq

    vocab = pq.read_table(A.VOCABULARY.path(run_dir), columns=["first_ts", "last_ts"])
    files = []
    for p in inputs:
        q = Path(p)
        found = sorted(q.rglob("*")) if q.is_dir() else [q]
        files += [{"path": str(f), "bytes": f.stat().st_size,
                   "mtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(f.stat().st_mtime))}
                  for f in found if f.is_file()]
    first = vocab.column("first_ts").to_numpy()
    last = vocab.column("last_ts").to_numpy()

    def count(stage: str, key: str):
        return stats.get(stage, {}).get(key)

    best = metrics.best()
    return {
        "created": A.now_iso(), "code_version": code_version,
        "python": platform.python_version(), "run_dir": str(run_dir), "model": model,
        "fingerprints": fingerprints, "inputs": files,
        "time_range": {"first_ts": int(first.min()), "last_ts": int(last.max())},
        "counts": {
            **{k: count("ingest", k) for k in ("rows_read", "quarantined", "duplicates",
                                               "events", "items")},
            **{k: count("sessionize", k) for k in ("bot_events", "train_sessions",
                                                   "holdout_sessions")},
            "vectors": _served_rows(stats.get("train", {})),
            "corpus_tokens": count("train", "corpus_tokens"),
        },
        # cold start (recembed.catalog): how many rows are trained / side_info, how many catalog
        # items have no vector (none) and how many trained items left the catalog (delisted);
        # origins.parquet lists each with its reason
        **({"origins": {k: count("train", f"origin_{k}")
                        for k in ("trained", "side_info", "none", "delisted")},
            "cold_scheme": count("train", "cold_scheme")}
           if count("train", "cold_scheme") is not None else {}),
        "metrics": {"headline": {"method": best.name if best else "",
                                 "recall@20": best.allow_repeats.recall(20) if best else 0.0},
                    "queries": metrics.queries,
                    "serving": dict(metrics.serving.allow_repeats.values)},
        # what the run chose on its validation split, and the validation numbers
        "calibration": metrics.calibration,
        # which training ran (full / incremental) and why, and the data ends behind it: the
        # next incremental night reads them (recembed.incremental.load_previous)
        "training": {k: count("train", k) for k in TRAINING_KEYS
                     if count("train", k) is not None},
    }


def list_versions(published: Path) -> list[str]:
    """Published version names, oldest first."""
    if not Path(published).exists():
        return []
    return sorted(p.name for p in Path(published).iterdir()
                  if p.is_dir() and p.name.startswith("v") and (p / A.MANIFEST).exists())


@contextmanager
def publish_lock(published: Path, wait_s: float = 0.0):
    """Exclusive lock on `published/.lock` (`artifacts.exclusive_lock`: the kernel frees it if
    the holder dies, so a stale lock from a killed run never blocks the next one). Raises
    LockBusy after `wait_s`."""
    published.mkdir(parents=True, exist_ok=True)
    try:
        with A.exclusive_lock(published / ".lock", wait_s):
            yield
    except A.LockHeld as e:
        raise LockBusy(f"{published} is being published by another run ({e.holder}); "
                       "set publish.lock_wait_s to wait for it") from None


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
    """How far two versions' neighbourhoods moved.

    Parameters
    ----------
    new_ids, old_ids : list of str
        Item ids of each version's rows.
    new_vec, old_vec : numpy.ndarray, shape (n, dim)
        Their vectors (dimensions may differ).
    k : int >= 1
        Neighbours compared.
    sample : int >= 1
        Shared items sampled as queries.
    seed : int
        Seed of the sample.

    Returns
    -------
    dict
        `overlap@k` (mean share of exact cosine neighbours, among shared items, that both
        versions agree on; in [0, 1], None with too few shared items), `items_new`,
        `items_previous`, `shared`, `new_share`, `dropped_share`.

    Examples
    --------
    >>> v = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    >>> ids = [str(i) for i in range(50)]
    >>> neighbour_drift(ids, v, ids, 2 * v, k=5)["overlap@5"]
    1.0
    """
    new_pos = {x: i for i, x in enumerate(new_ids)}
    old_pos = {x: i for i, x in enumerate(old_ids)}
    shared = [x for x in new_ids if x in old_pos]
    out = {"items_new": len(new_ids), "items_previous": len(old_ids), "shared": len(shared),
           "new_share": 1 - len(shared) / max(len(new_ids), 1),
           "dropped_share": 1 - len(shared) / max(len(old_ids), 1)}
    if len(shared) <= k:
        out[f"overlap@{k}"] = None
        return out
    a = A.unit_rows(new_vec[[new_pos[x] for x in shared]])
    b = A.unit_rows(old_vec[[old_pos[x] for x in shared]])
    rng = np.random.default_rng(seed)
    q = rng.choice(len(shared), min(sample, len(shared)), replace=False)
    overlaps = []
    for lo in range(0, len(q), DRIFT_BLOCK):
        qi = q[lo:lo + DRIFT_BLOCK]
        ta, tb = _top_neighbours(a, qi, k), _top_neighbours(b, qi, k)
        overlaps += [len(np.intersect1d(x, y)) / k for x, y in zip(ta, tb, strict=True)]
    out[f"overlap@{k}"] = float(np.mean(overlaps))
    return out


# queries per block of `neighbour_drift`: at 512 queries over 195k items the two versions' score
# matrices, their negated copies and argpartition's int64 index matrices took 3.5 GB, the jump of
# publish's peak RSS on the 10M log (benchmarks/RESULTS.md, "index, evaluate and publish at 194k
# items"); 64 queries hold one 50 MB score matrix at a time. Rows are independent, so the block
# changes no result.
DRIFT_BLOCK = 64


def _top_neighbours(unit: np.ndarray, qi: np.ndarray, k: int) -> np.ndarray:
    """int32 [len(qi), k]: the k rows of `unit` with the largest inner product with each row
    `qi` (itself left out), best first. The heap top-k of `recembed.topk.heap_top_k` reads each
    score once, where np.argpartition's selection on the negated matrix took 20 of drift's
    24 CPU s at 195k items; equal scores at the k-th place go to the lower row (argpartition
    took any of them)."""
    from recembed.topk import heap_top_k

    s = unit[qi] @ unit.T
    s[np.arange(len(qi)), qi] = -np.inf
    return heap_top_k(s, k)


def procrustes_rotation(new_ids: list[str], new_vec: np.ndarray, old_ids: list[str],
                        old_vec: np.ndarray) -> np.ndarray | None:
    """Orthogonal R (float32 [dim, dim]) minimising ||new[shared] R - old[shared]||, matching
    rows by id; None when the dimensions differ or fewer than `dim` items are shared. A rotation
    keeps cosine and in.out scores, so it changes no ranking, only coordinates.

    Examples
    --------
    >>> v = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    >>> q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    >>> ids = [str(i) for i in range(20)]
    >>> r = procrustes_rotation(ids, v @ q.astype(np.float32), ids, v)
    >>> bool(np.allclose(v @ q @ r, v, atol=1e-4))
    True
    """
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


def _served_rows(train_stats: dict) -> int | None:
    """Rows a version serves: the trained items, plus the side_info ones with a catalog."""
    if "origin_trained" in train_stats:
        return int(train_stats["origin_trained"]) + int(train_stats.get("origin_side_info", 0))
    return train_stats.get("vocab")


def _codes_of(vocabulary, ids) -> np.ndarray:
    """This run's ingest code of each id (int64; -1 for an id the run has never seen)."""
    import pandas as pd

    code_of = pd.Series(vocabulary["code"].to_numpy(), index=vocabulary["id"].astype(str))
    return code_of.reindex([str(x) for x in ids]).fillna(-1).to_numpy().astype(np.int64)


def _same_run(version_dir: Path, manifest: dict) -> bool:
    import json

    try:
        prev = json.loads((version_dir / A.MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    # the stages that made what is served (their fingerprints cover everything upstream);
    # not evaluate: its report follows the published root, so this run's own publish changes
    # its fingerprint, and a rerun after a crash past LATEST would publish a duplicate
    keys = ("train", "index")
    return all(prev.get("fingerprints", {}).get(k) == manifest["fingerprints"].get(k)
               and manifest["fingerprints"].get(k) for k in keys)


def _dumps(obj) -> str:
    import json

    return json.dumps(obj, indent=2, default=str)


FAULT_ENV = "RECEMBED_TEST_KILL_AT"


def _fault_point(name: str) -> None:
    """Test-only: SIGKILL this process at the named point of `publish_version` when the
    environment variable RECEMBED_TEST_KILL_AT equals `name` ("assembled": the version is
    complete in its temp dir; "renamed": renamed into place, LATEST not yet switched;
    "pointed": LATEST switched, retention and the lock release not yet done). Unset (always,
    outside tests/test_kill.py) it costs one dictionary lookup."""
    if os.environ.get(FAULT_ENV) == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _write_synced(path: Path, text: str, atomic: bool = False) -> None:
    # one seam for the tests that crash a publish between the version and LATEST
    if atomic:
        A.write_text(path, text)
        return
    with open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
