"""Nightly operation under faults: the current published version must stay byte-identical and
nothing may be lost; a rerun after a crash resumes and publishes what an uninterrupted run
would have."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recembed import artifacts as A
from recembed.config import load_config
from recembed.pipeline import EXIT_BAD_INPUT, EXIT_GATE, EXIT_LOCKED, PipelineError, run_pipeline
from recembed.publish import apply_retention, current_version_dir, list_versions, publish_lock
from recembed.serving import ArtifactError, Recommender
from recembed.stages import STAGES

FAST = ["train.epochs=3", "train.workers=1", "train.vector_size=16", "evaluate.baselines=[]",
        "evaluate.strategies=['last']", "walks.enabled=true", "walks.walks_per_node=2",
        "publish.enabled=true", "run.progress=false", "calibrate.enabled=false"]


@pytest.fixture(scope="module")
def log_csv(tmp_path_factory):
    from recembed.synth import synth_clicks, write_synth

    p = tmp_path_factory.mktemp("log") / "clicks.csv"
    write_synth(synth_clicks(15_000, seed=5), p)
    return p


def cfg_for(log, tmp, *extra):
    return load_config(None, [f"input.paths=['{log}']", "input.categories_path=''",
                              f"run.runs_dir='{tmp / 'runs'}'",
                              f"publish.dir='{tmp / 'published'}'", *FAST, *extra])


def snapshot(published: Path) -> dict:
    """sha256 of every file under published/ (LATEST included), to prove nothing changed."""
    return {str(p.relative_to(published)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(published.rglob("*")) if p.is_file() and p.name != ".lock"}


def set_args(args):
    return [x for a in args for x in ("--set", a)]


def quiet(cfg, run_dir=None, plan=STAGES, **kw):
    return run_pipeline(cfg, run_dir, plan=plan, echo=lambda s: None, **kw)


def test_publish_layout_manifest_and_serving(log_csv, tmp_path):
    rep = quiet(cfg_for(log_csv, tmp_path))
    cur = current_version_dir(tmp_path / "published")
    assert cur is not None and rep.stages["publish"]["stats"]["version"] == cur.name
    man = json.loads((cur / "manifest.json").read_text())
    for key in ("version", "created", "code_version", "inputs", "time_range", "counts",
                "metrics", "files"):
        assert key in man
    assert set(man["files"]) >= {"vectors.npy", "items.parquet", "vectors.bin", "index.faiss",
                                 "metrics.json", "config.toml", "context_vectors.npy"}
    assert man["counts"]["vectors"] == len(np.load(cur / "vectors.npy"))
    assert man["inputs"][0]["bytes"] == log_csv.stat().st_size
    rec = Recommender.load(tmp_path / "published")
    assert len(rec.similar(rec.ids[0], k=5).ids[0]) == 5


def test_second_version_records_drift_and_retention_keeps_current(log_csv, tmp_path):
    quiet(cfg_for(log_csv, tmp_path))
    quiet(cfg_for(log_csv, tmp_path, "run.seed=7", "publish.max_recall_drop=1.0"))
    cur = current_version_dir(tmp_path / "published")
    drift = json.loads((cur / "manifest.json").read_text())["drift"]
    assert 0 < drift["overlap@10"] <= 1 and drift["new_share"] == 0
    assert len(list_versions(tmp_path / "published")) == 2
    removed = apply_retention(tmp_path / "published", keep=1)
    assert len(removed) == 1 and list_versions(tmp_path / "published") == [cur.name]
    apply_retention(tmp_path / "published", keep=1)
    assert current_version_dir(tmp_path / "published") == cur


def test_quality_gate_refuses_a_worse_config(log_csv, tmp_path):
    quiet(cfg_for(log_csv, tmp_path))
    before = snapshot(tmp_path / "published")
    worse = cfg_for(log_csv, tmp_path, "train.vector_size=2", "train.epochs=1",
                    "train.alpha=0.0005", "walks.enabled=false")
    with pytest.raises(PipelineError, match="quality gate refused") as e:
        quiet(worse)
    assert e.value.exit_code == EXIT_GATE
    assert snapshot(tmp_path / "published") == before
    forced = cfg_for(log_csv, tmp_path, "train.vector_size=2", "train.epochs=1",
                     "train.alpha=0.0005", "walks.enabled=false", "publish.force=true")
    quiet(forced)
    man = json.loads((current_version_dir(tmp_path / "published") / "manifest.json").read_text())
    assert man["gate"]["forced"] and man["gate"]["failures"]


STAGE_NAMES = ["ingest", "sessionize", "graph", "walks", "sequences", "train", "index",
               "evaluate", "publish"]


@pytest.fixture(scope="module")
def reference(log_csv, tmp_path_factory):
    """An uninterrupted run: the bytes a resumed run must reproduce."""
    tmp = tmp_path_factory.mktemp("ref")
    quiet(cfg_for(log_csv, tmp))
    cur = current_version_dir(tmp / "published")
    return {n: (cur / n).read_bytes() for n in ("vectors.npy", "index.faiss", "items.parquet")}


# ingest and train in the fast suite (the first stage, the model); every stage in test-slow
@pytest.mark.parametrize("stage", [s if s in ("ingest", "train") else
                                   pytest.param(s, marks=pytest.mark.slow) for s in STAGE_NAMES])
def test_exception_in_a_stage_then_resume_publishes_the_same(log_csv, tmp_path, reference,
                                                             stage, monkeypatch):
    """An exception at the end of each stage (its outputs already written), then a rerun."""
    import dataclasses

    quiet(cfg_for(log_csv, tmp_path, "run.seed=3"))  # a current version to protect
    before = snapshot(tmp_path / "published")
    cfg = cfg_for(log_csv, tmp_path)
    plan = list(STAGES)
    idx = [s.name for s in plan].index(stage)
    real = plan[idx].run

    def crash(ctx):
        real(ctx)  # outputs half-way into place, then the process "dies"
        raise RuntimeError(f"injected crash in {stage}")

    if stage == "publish":
        # the most delicate moment: the version is in place, LATEST not yet switched
        from recembed import publish

        real_write = publish._write_synced

        def crash_on_latest(path, text, atomic=False):
            if path.name == "LATEST":
                raise RuntimeError("injected crash in publish")
            real_write(path, text, atomic)

        monkeypatch.setattr(publish, "_write_synced", crash_on_latest)
    else:
        plan[idx] = dataclasses.replace(plan[idx], run=crash)
    with pytest.raises(RuntimeError, match="injected"):
        quiet(cfg, plan=plan)
    assert snapshot(tmp_path / "published") == before
    monkeypatch.undo()
    rep = quiet(cfg)
    ran = [n for n, s in rep.stages.items() if s["status"] == "ran"]
    assert ran[0] == stage  # everything before the crashed stage was resumed, not redone
    cur = current_version_dir(tmp_path / "published")
    for name, data in reference.items():
        assert (cur / name).read_bytes() == data, name


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["walks", "train"])
def test_kill_9_mid_stage_then_resume_publishes_the_same(log_csv, tmp_path, stage):
    """A real SIGKILL of a `recembed run` subprocess while `stage` is writing its output."""
    # bigger corpora so the stage lasts long enough to be killed inside it
    extra = (["walks.walks_per_node=50", "walks.walk_length=40", "train.epochs=1"]
             if stage == "walks" else ["train.epochs=60"])
    args = [f"input.paths=['{log_csv}']", "input.categories_path=''",
            f"run.runs_dir='{tmp_path / 'runs'}'", f"publish.dir='{tmp_path / 'published'}'",
            *FAST, *extra]
    ref_args = [a.replace(str(tmp_path / "published"), str(tmp_path / "ref")).replace(
        str(tmp_path / "runs"), str(tmp_path / "refruns")) for a in args]
    quiet(load_config(None, ref_args))
    quiet(load_config(None, [*args, "run.seed=3"]))
    before = snapshot(tmp_path / "published")
    cmd = [sys.executable, "-m", "recembed.cli", "run", *set_args(args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        runs = [d for d in (tmp_path / "runs").glob("*") if (d / f".tmp-{stage}").exists()]
        if runs and stage == "walks" and list((runs[0] / ".tmp-walks").glob(".walks.txt.tmp-*")):
            run_dir = runs[0]  # the walk corpus is half-written right now
            break
        if runs and stage == "train":
            run_dir = runs[0]
            time.sleep(1.0)  # well inside gensim's epochs
            break
        time.sleep(0.005)
    assert run_dir is not None, f"never caught {stage} in progress: {proc.communicate()[0]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / f"{stage}.done.json").exists()
    assert snapshot(tmp_path / "published") == before
    rep = quiet(load_config(None, args))
    assert rep.stages[stage]["status"] == "ran"
    assert all(rep.stages[s]["status"] == "skipped" for s in ("ingest", "sessionize"))
    a = current_version_dir(tmp_path / "published") / "vectors.npy"
    b = current_version_dir(tmp_path / "ref") / "vectors.npy"
    assert a.read_bytes() == b.read_bytes()


def _bad_input_case(tmp_path, log_csv, kind):
    p = tmp_path / ("in.parquet" if kind == "corrupt" else "in.csv")
    if kind == "corrupt":
        pd.read_csv(log_csv).to_parquet(p)
        data = bytearray(p.read_bytes())
        data[len(data) // 2: len(data) // 2 + 200] = b"\0" * 200
        p.write_bytes(bytes(data))
    elif kind == "bad_rows":
        lines = log_csv.read_text().splitlines()
        for i in range(1, len(lines), 20):  # 5% of the rows get an unparseable timestamp
            parts = lines[i].split(",")
            parts[2] = "yesterday-ish"
            lines[i] = ",".join(parts)
        p.write_text("\n".join(lines) + "\n")
    else:
        p.write_text("user_id,item_id,timestamp,event_type\n")
    return p


@pytest.mark.parametrize("kind", ["corrupt", "bad_rows", "empty"])
def test_bad_input_fails_clearly_and_keeps_the_current_version(log_csv, tmp_path, kind):
    quiet(cfg_for(log_csv, tmp_path))
    before = snapshot(tmp_path / "published")
    bad = _bad_input_case(tmp_path, log_csv, kind)
    cfg = cfg_for(bad, tmp_path)
    with pytest.raises(PipelineError) as e:
        quiet(cfg, tmp_path / "badrun")
    assert e.value.exit_code == EXIT_BAD_INPUT
    assert snapshot(tmp_path / "published") == before
    if kind == "bad_rows":
        q = pd.read_parquet(tmp_path / "badrun" / "quarantine.parquet")
        assert len(q) == len(range(1, 15_001, 20)) and "timestamp" in q["reason"].iloc[0]
        assert "yesterday-ish" in q["raw"].iloc[0]


def test_disk_full_while_writing_a_version(log_csv, tmp_path, monkeypatch):
    from recembed import artifacts

    quiet(cfg_for(log_csv, tmp_path))
    before = snapshot(tmp_path / "published")
    calls = {"n": 0}
    real = artifacts.copy_synced

    def full(src, dst):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(artifacts, "copy_synced", full)
    # issue 17, item 16: a clear error with exit 3, not an OSError traceback
    with pytest.raises(PipelineError, match="No space left on device") as e:
        quiet(cfg_for(log_csv, tmp_path, "run.seed=9", "publish.max_recall_drop=1.0"))
    assert e.value.exit_code == 3 and "finished stages are kept" in str(e.value)
    assert snapshot(tmp_path / "published") == before
    assert not list((tmp_path / "published").glob(".tmp-*"))
    assert not list(next((tmp_path / "runs").iterdir()).glob(".tmp-*"))


def test_item12_a_second_run_on_the_same_run_directory_exits_5(log_csv, tmp_path):
    """issue 17, item 12: the run directory is locked; the second run says so (exit 5)."""
    from recembed import artifacts

    cfg = cfg_for(log_csv, tmp_path)
    run_dir = tmp_path / "runs" / "shared"
    run_dir.mkdir(parents=True)
    with artifacts.exclusive_lock(run_dir / artifacts.RUN_LOCK):  # another live run holds it
        with pytest.raises(PipelineError, match="in use by another run") as e:
            run_pipeline(cfg, run_dir, plan=STAGES, echo=lambda s: None)
    assert e.value.exit_code == 5
    assert not list(run_dir.glob("*.done.json"))  # it touched nothing
    rep = run_pipeline(cfg, run_dir, plan=STAGES, stages=["ingest"], echo=lambda s: None)
    assert rep.stages["ingest"]["status"] == "ran"  # free again once the holder is gone


def test_item16_disk_full_in_a_stage_exits_3_and_cleans_its_scratch(log_csv, tmp_path,
                                                                    monkeypatch):
    from recembed import train

    def full(*a, **k):
        raise OSError(28, "No space left on device", "/data/runs/x/.tmp-train/corpus.txt")

    monkeypatch.setattr(train, "concat_corpora", full)
    import recembed.stages.train as train_stage

    monkeypatch.setattr(train_stage, "concat_corpora", full)
    with pytest.raises(PipelineError, match=r"corpus\.txt failed: No space left") as e:
        quiet(cfg_for(log_csv, tmp_path))
    assert e.value.exit_code == 3
    run_dir = next((tmp_path / "runs").iterdir())
    assert not (run_dir / ".tmp-train").exists() and (run_dir / "walks.done.json").exists()


@pytest.mark.slow  # a second process waits on the lock
def test_lock_held_by_another_run(log_csv, tmp_path):
    quiet(cfg_for(log_csv, tmp_path))
    before = snapshot(tmp_path / "published")
    cfg = cfg_for(log_csv, tmp_path, "run.seed=8", "publish.max_recall_drop=1.0")
    with publish_lock(tmp_path / "published"):
        with pytest.raises(PipelineError, match="another run") as e:
            quiet(cfg)
        assert e.value.exit_code == EXIT_LOCKED
    assert snapshot(tmp_path / "published") == before
    # with a wait, the second run publishes once the first lets go
    waiting = cfg_for(log_csv, tmp_path, "run.seed=8", "publish.max_recall_drop=1.0",
                      "publish.lock_wait_s=30")
    with publish_lock(tmp_path / "published"):
        t = threading.Thread(target=lambda: quiet(waiting))
        t.start()
        time.sleep(1.0)
        assert snapshot(tmp_path / "published") == before
    t.join()
    assert len(list_versions(tmp_path / "published")) == 2


def test_rerun_after_publishing_is_idempotent(log_csv, tmp_path):
    cfg = cfg_for(log_csv, tmp_path)
    quiet(cfg)
    (next((tmp_path / "runs").glob("*")) / "publish.done.json").unlink()  # crash before recording
    quiet(cfg)
    assert len(list_versions(tmp_path / "published")) == 1


def test_stale_lock_of_a_dead_process_does_not_block(log_csv, tmp_path):
    (tmp_path / "published").mkdir()
    (tmp_path / "published" / ".lock").write_text("pid 999999 on somehost since 2020-01-01")
    quiet(cfg_for(log_csv, tmp_path))
    assert current_version_dir(tmp_path / "published") is not None


@pytest.mark.slow
def test_two_concurrent_runs_on_the_same_published_dir(log_csv, tmp_path):
    procs = []
    for seed in (11, 12):
        args = [f"input.paths=['{log_csv}']", "input.categories_path=''",
                f"run.runs_dir='{tmp_path / f'runs{seed}'}'",
                f"publish.dir='{tmp_path / 'published'}'", *FAST, f"run.seed={seed}",
                "publish.lock_wait_s=120", "publish.max_recall_drop=1.0"]
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "recembed.cli", "run", *set_args(args)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    versions = list_versions(tmp_path / "published")
    assert len(versions) == 2
    for v in versions:
        Recommender.load(tmp_path / "published" / v)  # both complete and verified


def test_truncated_published_artifact_is_refused(log_csv, tmp_path):
    quiet(cfg_for(log_csv, tmp_path))
    cur = current_version_dir(tmp_path / "published")
    p = cur / "index.faiss"
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    with pytest.raises(ArtifactError, match=r"index\.faiss"):
        Recommender.load(tmp_path / "published")


@pytest.mark.slow  # two full runs
def test_warm_start_initialises_every_shared_item_and_follows_the_published_version(log_csv,
                                                                                   tmp_path):
    quiet(cfg_for(log_csv, tmp_path))
    v1 = A.Embeddings.load(current_version_dir(tmp_path / "published"))
    warm = cfg_for(log_csv, tmp_path, "train.warm_start=true", "publish.max_recall_drop=1.0")
    st = quiet(warm).stages["train"]["stats"]
    # the same log: every trained item is in the published version and starts from it
    assert st["warm_started"] == st["vocab"] == len(v1) > 0
    # a newer published version is a new starting point: train must not be skipped
    quiet(cfg_for(log_csv, tmp_path, "run.seed=4", "publish.max_recall_drop=1.0"))
    assert quiet(warm).stages["train"]["status"] == "ran"


def test_without_context_vectors_the_gate_scores_what_is_published(log_csv, tmp_path):
    """train.export_context_vectors = false: the run evaluated (and gated) a blend with
    context vectors while the published version, without them, served cosine only."""
    from recembed.stages.publish import evaluate_published

    rep = quiet(cfg_for(log_csv, tmp_path, "train.export_context_vectors=false"))
    cur = current_version_dir(tmp_path / "published")
    assert not (cur / "context_vectors.npy").exists()
    assert not (rep.run_dir / "context_vectors.npy").exists()
    gated = A.Metrics.load(rep.run_dir / "metrics.json").serving.allow_repeats
    served = evaluate_published(cur, rep.run_dir)
    assert served.recall(20) == gated.recall(20) and served.mrr(20) == gated.mrr(20)


def test_evaluate_report_false_writes_and_publishes_no_report(log_csv, tmp_path):
    rep = quiet(cfg_for(log_csv, tmp_path, "evaluate.report=false"))
    cur = current_version_dir(tmp_path / "published")
    assert not (rep.run_dir / "report.html").exists() and not (cur / "report.html").exists()
    assert "report.html" not in json.loads((cur / "manifest.json").read_text())["files"]
    assert (rep.run_dir / "metrics.json").exists()


@pytest.mark.slow  # two full runs and a re-tuned index
def test_align_to_previous_rotates_onto_the_current_version_and_remeasures_the_index(
        log_csv, tmp_path):
    import faiss
    from gensim.models import KeyedVectors

    from recembed.index import load_index, prepare_vectors

    hnsw = "index.type='HNSW16'"
    quiet(cfg_for(log_csv, tmp_path, hnsw))
    v1 = current_version_dir(tmp_path / "published")
    rep = quiet(cfg_for(log_csv, tmp_path, hnsw, "run.seed=7", "publish.max_recall_drop=1.0",
                        "publish.align_to_previous=true"))
    v2 = current_version_dir(tmp_path / "published")
    man = json.loads((v2 / "manifest.json").read_text())
    assert man["drift"]["aligned_to_previous"]
    old, new = A.Embeddings.load(v1), A.Embeddings.load(v2)
    run = A.Embeddings.load(rep.run_dir)
    assert new.ids.tolist() == run.ids.tolist()
    # a rotation: every cosine (and so every ranking) is unchanged ...
    np.testing.assert_allclose(new.unit() @ new.unit().T, run.unit() @ run.unit().T, atol=2e-5)
    np.testing.assert_allclose(new.vectors @ new.context.T, run.vectors @ run.context.T,
                               rtol=1e-3, atol=1e-3)
    # ... that brings the shared items onto the previous version's coordinates
    pos = {x: i for i, x in enumerate(old.ids)}
    shared = [i for i, x in enumerate(new.ids) if x in pos]
    prev = old.unit()[[pos[new.ids[i]] for i in shared]]
    assert (np.linalg.norm(new.unit()[shared] - prev)
            < 0.8 * np.linalg.norm(run.unit()[shared] - prev))
    kv = KeyedVectors.load_word2vec_format(str(v2 / "vectors.bin"), binary=True)
    np.testing.assert_array_equal(np.stack([kv[x] for x in new.ids]), new.vectors)
    # index.json describes the published index over the published (rotated) vectors ...
    meta = json.loads((v2 / "index.json").read_text())
    assert meta["vectors_sha256"] == man["files"]["vectors.npy"] == A.sha256(v2 / "vectors.npy")
    assert meta["vectors_sha256"] != A.sha256(rep.run_dir / "vectors.npy")
    # ... and its recall is what that index measures, with the recorded parameters
    index, _ = load_index(v2)
    x = prepare_vectors(new.vectors, meta["metric"])
    q = x[np.random.default_rng(7).choice(len(x), min(1000, len(x)),
                                          replace=False)]
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    k = meta["tune_k"]
    _, truth = exact.search(q, k)
    _, got = index.search(q, k)
    hits = sum(len(np.intersect1d(g[g >= 0], t)) for g, t in zip(got, truth, strict=True))
    assert meta["recall"] == round(hits / truth.size, 4)
    # the inner-product index over the output vectors holds the rotated ones as well (it
    # answers rotated queries), and the version verifies with it
    cindex = faiss.read_index(str(v2 / "index_context.faiss"))
    qv = new.vectors[:50]
    flat = faiss.IndexFlatIP(new.context.shape[1])
    flat.add(new.context)
    _, truth = flat.search(qv, 10)
    _, got = cindex.search(qv, 10)
    overlap = np.mean([len(np.intersect1d(g, t)) / 10 for g, t in zip(got, truth, strict=True)])
    assert overlap > 0.9, overlap
    from recembed.serving import Recommender

    Recommender.load(tmp_path / "published")


def test_item11_a_corrupt_current_version_does_not_block_the_next(log_csv, tmp_path):
    """issue 17, item 11: the broken version is reported and kept; the new one publishes."""
    quiet(cfg_for(log_csv, tmp_path))
    broken = current_version_dir(tmp_path / "published")
    vec = broken / "vectors.npy"
    vec.write_bytes(vec.read_bytes()[:-64])  # truncated on disk
    rep = quiet(cfg_for(log_csv, tmp_path, "run.seed=5"))
    new = current_version_dir(tmp_path / "published")
    assert new != broken and broken.exists()  # kept for inspection
    Recommender.load(tmp_path / "published")  # LATEST names a version that verifies
    info = json.loads((rep.run_dir / "publish.json").read_text())
    assert broken.name in info["gate"]["current_broken"]
    assert "vectors.npy" in rep.stages["publish"]["stats"]["current_broken"]


def _drift_reference(a, b, qs, k):
    """neighbour_drift's overlap as it was computed before the blocks and the heap top-k:
    one [queries, n] matrix per version and np.argpartition."""
    sa, sb = a[qs] @ a.T, b[qs] @ b.T
    sa[np.arange(len(qs)), qs] = -np.inf
    sb[np.arange(len(qs)), qs] = -np.inf
    ta = np.argpartition(-sa, k, axis=1)[:, :k]
    tb = np.argpartition(-sb, k, axis=1)[:, :k]
    return float(np.mean([len(np.intersect1d(x, y)) / k for x, y in zip(ta, tb, strict=True)]))


def test_neighbour_drift_in_blocks_equals_the_whole_matrix_computation(monkeypatch):
    import recembed.publish as P

    rng = np.random.default_rng(4)
    new = rng.normal(size=(700, 8)).astype(np.float32)
    old = new + 0.3 * rng.normal(size=(700, 8)).astype(np.float32)
    ids = [str(i) for i in range(700)]
    q = np.random.default_rng(0).choice(700, 300, replace=False)
    want = _drift_reference(A.unit_rows(new), A.unit_rows(old), q, 10)
    assert 0 < want < 1
    for block in (1, 64, 1000):
        monkeypatch.setattr(P, "DRIFT_BLOCK", block)
        got = P.neighbour_drift(ids, new, ids, old, k=10, sample=300, seed=0)
        assert got["overlap@10"] == pytest.approx(want, abs=1e-12)
