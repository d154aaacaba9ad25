import json

import numpy as np
import pandas as pd
import pytest

from recembed import artifacts as A


def _parts(d, n=3):
    d.mkdir()
    for i in range(n):
        pd.DataFrame({"x": np.arange(i, i + 5)}).to_parquet(d / f"part-{i:05d}.parquet")
    (d / "_SUCCESS").write_text("")
    return d


def test_folder_sha256_covers_every_part_and_survives_a_copy(tmp_path):
    d = _parts(tmp_path / "parts")
    digest = A.sha256(d)
    A.copy_synced(d, tmp_path / "copy")
    assert A.sha256(tmp_path / "copy") == digest
    hashes = A.file_hashes(d, "parts")
    assert set(hashes) == {"parts/_SUCCESS", *(f"parts/part-{i:05d}.parquet" for i in range(3))}
    pd.DataFrame({"x": [9]}).to_parquet(d / "part-00001.parquet")
    assert A.sha256(d) != digest
    changed = A.sha256(d)
    (d / "part-00003.parquet").write_bytes(b"")
    assert A.sha256(d) != changed


def test_atomic_path_leaves_the_old_file_on_error(tmp_path):
    p = tmp_path / "x.json"
    A.write_json(p, {"a": np.int64(1), "b": np.float32(0.5)})
    assert json.loads(p.read_text()) == {"a": 1, "b": 0.5}
    with pytest.raises(RuntimeError), A.atomic_path(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert json.loads(p.read_text()) == {"a": 1, "b": 0.5}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["x.json"]


def test_a_folder_replaces_an_existing_folder_whole(tmp_path):
    old = _parts(tmp_path / "parts", n=3)
    with A.atomic_path(old, folder=True) as tmp:
        pd.DataFrame({"x": [1]}).to_parquet(tmp / "part-00000.parquet")
    assert sorted(x.name for x in old.iterdir()) == ["part-00000.parquet"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["parts"]


def test_write_parquet_checks_the_schema(tmp_path):
    with pytest.raises(ValueError, match=r"sessions_train.parquet.*missing \['pos'\]"):
        A.write_parquet(pd.DataFrame({"session": [0], "item": [1], "ts": [2]}),
                        A.SESSIONS_TRAIN.path(tmp_path), A.SESSIONS_TRAIN.columns)
    assert not A.SESSIONS_TRAIN.path(tmp_path).exists()


def test_embeddings_round_trip_with_ingest_codes(tmp_path):
    rng = np.random.default_rng(0)
    emb = A.Embeddings(ids=np.array(["b", "a", "c"], dtype=object),
                       codes=np.array([5, 2, 9], np.int32),
                       vectors=rng.normal(size=(3, 4)).astype(np.float32),
                       context=rng.normal(size=(3, 4)).astype(np.float32),
                       counts=np.array([3, 2, 1]), categories=np.array([1, -1, 1]))
    assert {a.name for a in emb.save(tmp_path)} == {"vectors.npy", "items.parquet",
                                                   "context_vectors.npy"}
    back = A.Embeddings.load(tmp_path)
    assert back.ids.tolist() == ["b", "a", "c"] and back.codes.tolist() == [5, 2, 9]
    np.testing.assert_array_equal(back.vectors, emb.vectors)
    np.testing.assert_array_equal(back.context, emb.context)
    assert back.categories.tolist() == [1, -1, 1]
    np.testing.assert_allclose(np.linalg.norm(back.unit(), axis=1), 1, rtol=1e-6)
    assert list(pd.read_parquet(tmp_path / "items.parquet").columns) == [
        "id", "code", "count", "category"]


RAW = {"ks": [10, 20], "queries": {"targets": 9, "oov_targets": 1, "oov_share": 0.1,
                                   "queries": 8},
       "methods": {
           "pop": {v: {"recall@10": 0.1, "recall@20": 0.2, "coverage@20": 0.05}
                   for v in A.VARIANTS},
           "item2vec:last": {v: {"recall@10": 0.3, "recall@20": 0.4, "recall@20_tail": 0.25}
                             for v in A.VARIANTS},
           "item2vec:serving": {v: {"recall@10": 0.35, "recall@20": 0.5, "coverage@20": 0.3}
                                for v in A.VARIANTS}}}


def test_metrics_are_read_by_field(tmp_path):
    m = A.Metrics.from_evaluation(RAW, "item2vec", {"epochs": 3})
    assert m.serving.name == "item2vec:serving" and m.serving.allow_repeats.recall(20) == 0.5
    assert [x.name for x in m.of_kind("baseline")] == ["pop"]
    assert [x.name for x in m.of_kind("embedding")] == ["item2vec:last"]
    assert m.best().name == "item2vec:serving"
    assert m.best(kinds=("embedding",)).allow_repeats.recall_by_bucket(20, "tail") == 0.25
    assert m.methods["pop"].allow_repeats.recall_by_bucket(20, "tail") == 0.0
    m.save(tmp_path / "metrics.json")
    back = A.Metrics.load(tmp_path / "metrics.json")
    assert back.model == "item2vec" and back.train == {"epochs": 3}
    assert back.to_dict() == m.to_dict()
    assert json.loads((tmp_path / "metrics.json").read_text())["headline"] == {
        "method": "item2vec:serving", "recall@20": 0.5}
    no_serving = A.Metrics.from_evaluation({**RAW, "methods": {"pop": RAW["methods"]["pop"]}})
    with pytest.raises(KeyError, match="no serving evaluation"):
        _ = no_serving.serving


def test_session_weights_are_joined_by_id_not_position():
    table = pd.DataFrame({"session": [40, 7, 19], "weight": [0.1, 0.7, 0.4]})
    got = A.session_weights_by_id(np.array([7, 7, 19, 40]), table)
    assert got.tolist() == [0.7, 0.7, 0.4, 0.1]
    series = table.set_index("session")["weight"]
    assert A.session_weights_by_id(np.array([19]), series).tolist() == [0.4]
    with pytest.raises(ValueError, match="session 8 has no weight"):
        A.session_weights_by_id(np.array([7, 8]), table)
    with pytest.raises(ValueError, match="session 7 has two weights"):
        A.session_weights_by_id(np.array([7]), pd.DataFrame({"session": [7, 7],
                                                             "weight": [1.0, 2.0]}))


def test_published_root_stamp_follows_the_current_version(tmp_path):
    root = A.PublishedRoot(str(tmp_path))
    assert root.stamp()["current"] is None
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / A.MANIFEST).write_text("{}")
    (tmp_path / A.LATEST).write_text("v1\n")
    first = root.stamp()
    assert first["current"] == "v1" and first["manifest"]
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / A.MANIFEST).write_text('{"x": 1}')
    (tmp_path / A.LATEST).write_text("v2\n")
    assert root.stamp() != first


@pytest.mark.parametrize("module", ["recembed.artifacts", "recembed.graph", "recembed.sequences",
                                    "recembed.corpus", "recembed.train", "recembed.publish"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0


def _declared_names() -> set[str]:
    names = {a.name for a in vars(A).values() if isinstance(a, A.Artifact)}
    return names | {A.MANIFEST, A.done_file("train").removeprefix("train")}


def _literals(path):
    """(line, text) of every string constant and f-string fragment that is not a docstring."""
    import ast

    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and n.body and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)}
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
            yield n.lineno, n.value


def test_no_module_but_artifacts_spells_out_a_run_directory_file_name():
    """One owner for the run-directory contract: every other module takes the names from
    `recembed.artifacts` (docstrings may name them)."""
    import re
    from pathlib import Path

    names = _declared_names()
    word = re.compile(r"[\w.-]+")
    root = Path(A.__file__).parent
    bad = [f"{p.relative_to(root)}:{line}: {text!r}"
           for p in sorted(root.rglob("*.py")) if p.name != "artifacts.py"
           for line, text in _literals(p)
           if any(w in names or (w.startswith(".") and w in names) for w in word.findall(text))
           or any(text.endswith(n) for n in names if n.startswith("."))]
    assert not bad, "\n".join(bad)


def test_columns_are_read_without_pandas_and_equal_pyarrows_own_conversion():
    """`Embeddings.load` reads numeric columns from their buffers and text through to_pylist
    (pyarrow's to_numpy imports pandas): same values and dtypes, slices, chunks and nulls."""
    import pyarrow as pa

    from recembed.artifacts import _numeric_column, _object_column

    base = pa.array(np.arange(10, dtype=np.int32) * 7)
    cases = [base, base.slice(3, 5), pa.chunked_array([base.slice(0, 4), base.slice(6)]),
             pa.array(np.linspace(0, 1, 5)), pa.chunked_array([pa.array([1, 2], pa.int64())])]
    for col in cases:
        got, ref = _numeric_column(col), col.to_numpy()
        assert got.dtype == ref.dtype and np.array_equal(got, ref)
        assert got.flags.writeable  # a copy, not a view of pyarrow's buffer
    with_null = pa.array([1, None, 3], pa.int64())
    assert np.array_equal(_numeric_column(with_null), [1.0, np.nan, 3.0], equal_nan=True)
    text = pa.chunked_array([pa.array(["a b", "é"]), pa.array([None, "\"q\""])])
    got = _object_column(text)
    assert got.dtype == object and got.tolist() == ["a b", "é", None, "\"q\""]
