"""Serving integrity (issue 15): only verified files are served. A published version needs its
manifest, LATEST may only name a directory directly inside the published root, and a run
directory is checked against the sha256 its stages recorded in their done-files."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from recembed.config import load_config
from recembed.pipeline import run_pipeline
from recembed.publish import current_version_dir
from recembed.serving import ArtifactError, Recommender
from recembed.stages import STAGES

FAST = ["train.epochs=2", "train.workers=1", "train.vector_size=8", "evaluate.baselines=[]",
        "evaluate.strategies=['last']", "walks.walks_per_node=1", "publish.enabled=true",
        "run.progress=false", "calibrate.enabled=false"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One finished, published run: (run dir, published root); tests tamper with copies."""
    from recembed.synth import synth_clicks, write_synth

    tmp = tmp_path_factory.mktemp("built")
    log = tmp / "clicks.csv"
    write_synth(synth_clicks(4_000, seed=7), log)
    cfg = load_config(None, [f"input.paths=['{log}']", "input.categories_path=''",
                             f"run.runs_dir='{tmp / 'runs'}'",
                             f"publish.dir='{tmp / 'published'}'", *FAST])
    rep = run_pipeline(cfg, plan=STAGES, echo=lambda s: None)
    return rep.run_dir, tmp / "published"


@pytest.fixture
def published(built, tmp_path):
    dst = tmp_path / "published"
    shutil.copytree(built[1], dst, symlinks=True)
    return dst


@pytest.fixture
def run_dir(built, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(built[0], dst)
    return dst


def _current(published: Path) -> Path:
    cur = current_version_dir(published)
    assert cur is not None
    return cur


def test_published_root_version_and_run_dir_load_the_same_model(published, run_dir):
    a = Recommender.load(published)
    b = Recommender.load(_current(published))
    c = Recommender.load(run_dir)  # a run directory: delegated to load_run
    d = Recommender.load_run(run_dir)
    assert len(a.ids) > 50
    for r in (b, c, d):
        assert list(r.ids) == list(a.ids) and np.array_equal(r.vectors, a.vectors)


def test_a_version_without_manifest_is_refused(published):
    (_current(published) / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=r"no manifest\.json.*cannot be verified"):
        Recommender.load(published)
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        Recommender.load(_current(published), verify=False)


def test_an_absolute_latest_is_refused_even_when_it_names_a_good_version(published):
    (published / "LATEST").write_text(str(_current(published)) + "\n")
    with pytest.raises(ArtifactError, match=r"absolute path.*directly inside the published root"):
        Recommender.load(published)


def test_a_dotdot_latest_is_refused(published, tmp_path):
    shutil.copytree(_current(published), tmp_path / "elsewhere")  # a complete, verified version
    (published / "LATEST").write_text("../elsewhere\n")
    with pytest.raises(ArtifactError, match=r"'\.\./elsewhere'.*not a plain version name"):
        Recommender.load(published)
    (published / "LATEST").write_text("..\n")
    with pytest.raises(ArtifactError, match=r"'\.\.'"):
        Recommender.load(published)


def test_a_symlink_out_of_the_root_is_refused_and_one_inside_is_followed(published, tmp_path):
    good = _current(published)
    outside = tmp_path / "outside"
    shutil.copytree(good, outside)  # complete, with a valid manifest
    os.symlink(outside, published / "vevil")
    (published / "LATEST").write_text("vevil\n")
    with pytest.raises(ArtifactError, match=r"'vevil', a symlink to .*outside.*published root"):
        Recommender.load(published)
    os.symlink(good.name, published / "current")  # relative link to a version in the root
    (published / "LATEST").write_text("current\n")
    assert len(Recommender.load(published).ids) > 50


def test_an_empty_or_dangling_latest_is_refused(published):
    (published / "LATEST").write_text("\n")
    with pytest.raises(ArtifactError, match="LATEST is empty"):
        Recommender.load(published)
    (published / "LATEST").write_text("v19990101-000000\n")
    with pytest.raises(ArtifactError, match=r"'v19990101-000000', which is not a directory"):
        Recommender.load(published)


@pytest.mark.parametrize("name", ["vectors.npy", "index.faiss", "items.parquet"])
def test_a_truncated_published_file_is_refused(published, name):
    p = _current(published) / name
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(ArtifactError, match=rf"{name}.*sha256 in manifest\.json.*truncated"):
        Recommender.load(published)


def test_a_file_the_manifest_does_not_record_is_refused(published):
    man_path = _current(published) / "manifest.json"
    man = json.loads(man_path.read_text())
    del man["files"]["serving.json"]
    man_path.write_text(json.dumps(man))
    with pytest.raises(ArtifactError, match=r"serving\.json not recorded in manifest\.json"):
        Recommender.load(published)
    man["files"]["../../etc/passwd"] = "0" * 64
    man["files"]["serving.json"] = "0" * 64
    man_path.write_text(json.dumps(man))
    with pytest.raises(ArtifactError, match=r"'\.\./\.\./etc/passwd'.*not a file inside"):
        Recommender.load(published)


@pytest.mark.parametrize("name, stage", [("vectors.npy", "train"), ("index.json", "index"),
                                         ("items.parquet", "train")])
def test_a_tampered_run_dir_file_is_refused(run_dir, name, stage):
    p = run_dir / name
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    p.write_bytes(bytes(data))
    for load in (Recommender.load, Recommender.load_run):
        with pytest.raises(ArtifactError, match=rf"{name}.*sha256 in {stage}\.done\.json"):
            load(run_dir)


def test_a_truncated_run_dir_file_is_refused(run_dir):
    p = run_dir / "index.faiss"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(ArtifactError, match=r"index\.faiss.*index\.done\.json.*truncated"):
        Recommender.load(run_dir)


def test_a_run_dir_whose_index_stage_has_not_finished_is_refused(run_dir):
    (run_dir / "index.done.json").unlink()
    with pytest.raises(ArtifactError, match=r"index\.done\.json is missing.*index stage"):
        Recommender.load_run(run_dir)
    # without train.done.json it is no run directory, and it has no manifest either
    (run_dir / "train.done.json").unlink()
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        Recommender.load(run_dir)


def test_an_index_older_than_the_vectors_is_refused(run_dir):
    done = run_dir / "train.done.json"
    rec = json.loads(done.read_text())
    rec["finished"] = "2999-01-01T00:00:00+0000"  # train reran after the index was built
    done.write_text(json.dumps(rec))
    with pytest.raises(ArtifactError, match=r"index\.done\.json .* predates train\.done\.json"):
        Recommender.load_run(run_dir)


def test_a_directory_that_is_neither_version_nor_run_is_refused(run_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("vectors.npy", "items.parquet", "index.faiss", "index.json"):
        shutil.copy(run_dir / name, bare / name)
    with pytest.raises(ArtifactError, match=r"bare has no manifest\.json"):
        Recommender.load(bare)
    with pytest.raises(ArtifactError, match=r"not a run directory"):
        Recommender.load_run(bare)
