import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recembed.blend import BlendSettings
from recembed.index import build_index, save_index, tune_index
from recembed.serving import ArtifactError, Recommender, write_settings


def _version(tmp_path, n=300, d=16, seed=0):
    rng = np.random.default_rng(seed)
    vec = rng.normal(size=(n, d)).astype(np.float32)
    ids = [f"sku{i}" for i in range(n)]
    pq.write_table(pa.table({"id": ids, "code": np.arange(n, dtype=np.int32)}),
                   tmp_path / "items.parquet")
    np.save(tmp_path / "vectors.npy", vec)
    index, meta = build_index(vec, factory="HNSW16")
    tune_index(index, vec, meta, target_recall=0.99, k=20, n_queries=100)
    save_index(index, meta, tmp_path)
    write_settings(tmp_path / "serving.json", BlendSettings())
    _write_manifest(tmp_path)
    return ids, vec


def _write_manifest(d):
    import hashlib
    import json

    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir()
             if p.name != "manifest.json"}
    (d / "manifest.json").write_text(json.dumps({"files": files}))


def test_similar_never_returns_the_query_and_matches_exact_cosine(tmp_path):
    ids, vec = _version(tmp_path)
    r = Recommender.load(tmp_path)
    res = r.similar(ids[:50], k=10)
    u = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    for i, (got, sc) in enumerate(zip(res.ids, res.scores, strict=True)):
        assert ids[i] not in got and len(got) == 10
        sims = u @ u[i]
        sims[i] = -np.inf
        exact = [ids[j] for j in np.argsort(-sims)[:10]]
        assert len(set(got) & set(exact)) >= 9
        assert (np.diff(sc) <= 1e-6).all()


def test_batch_and_single_queries_agree_and_exclude_works(tmp_path):
    ids, _ = _version(tmp_path)
    r = Recommender.load(tmp_path)
    batch = r.similar(ids[:5], k=8)
    for i in range(5):
        one = r.similar(ids[i], k=8)
        assert list(one.ids[0]) == list(batch.ids[i])
    ex = list(batch.ids[0][:3])
    assert not set(ex) & set(r.similar(ids[0], k=8, exclude=ex).ids[0])


def test_unknown_ids_get_a_typed_empty_result(tmp_path):
    ids, _ = _version(tmp_path)
    r = Recommender.load(tmp_path)
    res = r.similar(["nope", ids[1]], k=5)
    assert res.unknown == ["nope"] and len(res.ids[0]) == 0 and len(res.ids[1]) == 5
    rec = r.recommend(["nope", "nada"], k=5)
    assert rec.unknown == ["nada", "nope"] and len(rec.ids[0]) == 0


def test_recommend_boosts_session_items_and_skips_the_last(tmp_path):
    ids, _ = _version(tmp_path)
    # a blend where repeats dominate: item 7 (seen 1 and 3 steps back: 0.7 + 0.7**3) outranks
    # item 100 (2 steps back: 0.49), both outrank every cosine-only candidate
    r = Recommender.load(tmp_path)
    r.settings = BlendSettings(weights={"cosine": 1.0, "repeat": 3.0})
    session = [ids[7], ids[100], ids[7], ids[42]]
    rec = r.recommend(session, k=10)
    assert ids[42] not in rec.ids[0]
    assert list(rec.ids[0][:2]) == [ids[7], ids[100]]
    off = r.recommend(session, k=10, exclude_session_items=True)
    assert not set(session) & set(off.ids[0])


def _hammer(rec, ids, threads=4, rounds=15) -> int:
    """Threads start together (barrier), each with its own queries, similar() and recommend()
    interleaved; returns how many answers differed from the single-threaded ones."""
    work = [ids[t * 7:(t + 1) * 7] for t in range(threads)]
    expect = [([list(x) for x in rec.similar(w, k=5 + t).ids], list(rec.recommend(w, k=8).ids[0]))
              for t, w in enumerate(work)]
    start = threading.Barrier(threads)
    wrong = []

    def run(t):
        start.wait()
        for _ in range(rounds):
            got = ([list(x) for x in rec.similar(work[t], k=5 + t).ids],
                   list(rec.recommend(work[t], k=8).ids[0]))
            wrong.extend([t] * (got != expect[t]))

    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return len(wrong)


def test_concurrent_reads_agree(tmp_path):
    import time

    ids, _ = _version(tmp_path)
    assert _hammer(Recommender.load(tmp_path), ids) == 0

    class Racy(Recommender):
        """Keeps per-query state on the shared object, as a thread-unsafe loader would."""

        def similar(self, item_ids, k=20, exclude=None):
            self._pending = (item_ids, k)
            time.sleep(0.001)
            return super().similar(*self._pending, exclude=exclude)

    racy = Recommender.load(tmp_path)
    racy.__class__ = Racy
    assert _hammer(racy, ids) > 0  # the check can fail: it catches shared per-query state


def test_tampered_files_are_refused(tmp_path):
    _version(tmp_path)
    Recommender.load(tmp_path)
    p = tmp_path / "vectors.npy"
    p.write_bytes(p.read_bytes()[:-8])
    with pytest.raises(ArtifactError, match=r"vectors\.npy.*sha256"):
        Recommender.load(tmp_path)


def test_serving_imports_no_training_stack():
    import subprocess

    code = ("import sys, recembed.serving; bad = [m for m in ('gensim', 'pandas', "
            "'recembed.train') if m in sys.modules]; print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_item15_bad_k_and_array_likes(tmp_path):
    """issue 17, item 15: k < 0 is a clear ValueError; arrays and single ids are accepted."""
    ids, _ = _version(tmp_path)
    r = Recommender.load(tmp_path)
    for bad in (-1, 2.5, "3", True):
        with pytest.raises(ValueError, match="k must be a whole number"):
            r.recommend([ids[1]], k=bad)
        with pytest.raises(ValueError, match="k must be a whole number"):
            r.similar([ids[1]], k=bad)
    arr = np.array([ids[3], ids[4]], dtype=object)
    assert list(r.recommend(arr, k=5).ids[0]) == list(r.recommend([ids[3], ids[4]], k=5).ids[0])
    batch = r.recommend([np.array([ids[3]]), (ids[4], ids[5])], k=5)
    assert len(batch.ids) == 2 and len(batch.ids[1]) == 5
    assert list(r.similar(np.array(ids[:2]), k=3).ids[1]) == list(r.similar(ids[1], k=3).ids[0])
    assert r.similar(42, k=3).unknown == ["42"]  # a number is an id, unknown here
    assert len(r.recommend([ids[2]], k=0).ids[0]) == 0


def test_table_retrieval_without_tables_or_a_bad_retrieval_is_refused(tmp_path):
    import json

    _version(tmp_path)
    p = tmp_path / "serving.json"
    d = json.loads(p.read_text())
    p.write_text(json.dumps({**d, "retrieval": "table"}))
    _write_manifest(tmp_path)
    with pytest.raises(ArtifactError, match="holds no candidate tables"):
        Recommender.load(tmp_path)
    p.write_text(json.dumps({**d, "retrieval": "nearest"}))
    _write_manifest(tmp_path)
    with pytest.raises(ArtifactError, match=r"serving\.json.*retrieval must be one of"):
        Recommender.load(tmp_path)


def test_a_settings_file_from_before_the_tables_searches_the_indexes(tmp_path):
    import json

    _version(tmp_path)
    p = tmp_path / "serving.json"
    d = json.loads(p.read_text())
    del d["retrieval"]  # versions published before serving.retrieval existed
    p.write_text(json.dumps(d))
    _write_manifest(tmp_path)
    rec = Recommender.load(tmp_path)
    assert rec.settings.retrieval == "index"
    assert len(rec.recommend(["sku1", "sku2"], 5).ids[0]) == 5


def test_a_settings_file_from_before_vectors_decay_exports_with_the_blends_decay(tmp_path):
    import json

    _version(tmp_path)
    p = tmp_path / "serving.json"
    d = json.loads(p.read_text())
    del d["vectors_decay"]  # versions published before serving.vectors_decay existed
    p.write_text(json.dumps({**d, "decay": 0.5}))
    _write_manifest(tmp_path)
    rec = Recommender.load(tmp_path)
    assert (rec.settings.decay, rec.settings.vectors_decay) == (0.5, 0.5)


def test_a_fresh_process_serves_without_pandas_and_imports_light(tmp_path):
    """`import recembed.serving` loads numpy and the standard library only; loading a version
    and answering both calls never imports pandas (pyarrow's read_table and to_numpy would:
    0.26-0.5 s of the load, benchmarks/RESULTS.md "Serving for real", second round)."""
    import subprocess

    from tests.conftest import ROOT, make_version

    make_version(tmp_path / "pub", "v1", n=60, seed=3, prefix="a")
    code = (
        "import sys, recembed.serving as S\n"
        "third = sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names))\n"
        "third = [m for m in third if not m.startswith('_')]\n"
        "assert third == ['numpy', 'recembed'], third\n"
        f"r = S.Recommender.load({str(tmp_path / 'pub')!r})\n"
        "res = r.recommend(['a1', 'a2'], k=5)\n"
        "assert len(res.ids[0]) == 5\n"
        "assert len(r.similar('a1', k=3).ids[0]) == 3\n"
        "assert list(r.origin[:2]) == ['trained', 'trained'] and r.not_served\n"
        "bad = [m for m in ('pandas', 'gensim', 'pyarrow.dataset') if m in sys.modules]\n"
        "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(("env", "writable_dirs", "expected"), [
    ({"NUMBA_CACHE_DIR": "/set"}, set(), None),  # the user's choice always wins
    ({}, {"/pkg/__pycache__"}, None),  # numba's in-tree cache
    ({"XDG_CACHE_HOME": "/xdg"}, {"/xdg/numba"}, None),  # numba's user-wide cache
    ({"XDG_CACHE_HOME": "/xdg"}, set(), "tmp"),  # read-only install, read-only home
])
def test_numba_cache_dir_is_set_only_when_numba_has_nowhere_to_write(env, writable_dirs,
                                                                      expected):
    import os
    import tempfile

    from recembed import NUMBA_FALLBACK_DIR, numba_cache_dir

    got = numba_cache_dir(env, "/pkg", lambda p: p in writable_dirs)
    if expected is None:
        assert got is None
    else:
        assert os.path.dirname(got) == tempfile.gettempdir()
        assert os.path.basename(got).startswith(NUMBA_FALLBACK_DIR)


@pytest.mark.slow
def test_read_only_install_caches_kernels_in_the_fallback_folder(tmp_path):
    """numba with no writable locator refuses `cache=True` kernels ("no locator available");
    with recembed's fallback NUMBA_CACHE_DIR the kernels import, run, and are cached there.
    numba is told to use only its in-tree locator, made unusable by a file where its
    __pycache__ would be (root ignores permissions, so chmod cannot make it read-only)."""
    import os
    import shutil
    import subprocess

    from tests.conftest import ROOT

    pkg = tmp_path / "site" / "recembed"
    shutil.copytree(ROOT / "recembed", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for d in [pkg, *[p for p in pkg.rglob("*") if p.is_dir()]]:
        (d / "__pycache__").write_text("not a folder")  # no in-tree cache possible
    cache = tmp_path / "fallback"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "PYTHONDONTWRITEBYTECODE": "1",
           "NUMBA_CACHE_LOCATOR_CLASSES": "UserProvidedCacheLocator,InTreeCacheLocator",
           "HOME": str(tmp_path / "nohome"), "XDG_CACHE_HOME": str(pkg / "__pycache__"),
           "TMPDIR": str(cache)}
    env.pop("NUMBA_CACHE_DIR", None)
    cache.mkdir()
    code = ("import os, numpy as np, recembed.topk as T\n"
            "print(os.environ['NUMBA_CACHE_DIR'])\n"
            "print(T.top_stable(np.array([1.0, 3.0, 2.0]), 2).tolist() == [0, 2])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    where, top = r.stdout.split()
    assert where.startswith(str(cache)) and top == "True"
    assert any(p.suffix == ".nbi" for p in Path(where).rglob("*"))
