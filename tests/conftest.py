"""Shared fixtures: paths to the real samples in ../shared/data and small synthetic logs."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
YOO = DATA / "yoochoose-clicks-100k"
DIGI = DATA / "diginetica-sample"


def pytest_collection_modifyitems(config, items):
    # The real samples are part of CI; a missing folder is a failure, not a skip.
    if not DATA.exists():
        raise pytest.UsageError(f"real sample data not found at {DATA}")


@pytest.fixture(scope="session")
def synth_csv(tmp_path_factory) -> Path:
    """A 20k-event synthetic CSV log with its items file beside it."""
    from recembed.synth import synth_clicks, write_synth

    out = tmp_path_factory.mktemp("synth") / "clicks.csv"
    write_synth(synth_clicks(20_000, seed=3), out)
    return out


def synth_config(tmp_path: Path, profile: str, events: int, seed: int, *overrides: str):
    """A synth profile's log written to tmp_path/<profile>.csv and the config a new user would
    write for it (only [input]; runs under tmp_path, no progress bars) plus `overrides`."""
    from recembed.config import load_config
    from recembed.synth import synth_profile, write_synth

    path = tmp_path / f"{profile}.csv"
    write_synth(synth_profile(profile, events, seed=seed), path)
    return load_config(None, [f"input.paths=['{path}']", "input.categories_path=''",
                              f"run.runs_dir='{tmp_path}'", "run.progress=false", *overrides])


@pytest.fixture(scope="session")
def spark():
    """One SparkSession for the whole test run: local[2], loopback only, no UI, executors on
    this interpreter, 2 shuffle partitions (the samples are small; Spark's 200 would spend the
    time scheduling empty tasks)."""
    import os
    import sys

    try:
        import pyspark  # noqa: F401
    except ImportError:  # CI installs the spark extra: a missing pyspark is a failure
        pytest.fail("pyspark is not installed, so the Spark engine cannot be tested; install the "
                    "spark extra (make .venv/.installed does: pip install -e '.[dev,spark]')")
    from recembed.spark.session import spark_session

    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = spark_session("local[2]", {
        "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
        "spark.sql.shuffle.partitions": 2, "spark.ui.enabled": False,
        "spark.default.parallelism": 2})
    yield session
    session.stop()


# ---------------------------------------------------------------- a published root, by hand

def make_version(published: Path, name: str, *, n: int = 400, d: int = 16, seed: int = 0,
                 prefix: str = "sku", point: bool = True, ids: list[str] | None = None) -> Path:
    """A complete published version `published/name` built without the pipeline (seconds, not a
    training run): items.parquet with categories and origins, input and context vectors, the
    cosine and inner-product faiss indexes, blend.npz (rules, session-kNN, popularity from
    random sessions), serving.json, origins.parquet (two catalogue items without a vector) and
    manifest.json; `point` makes LATEST name it (written atomically, as publish does).

    Parameters
    ----------
    published : Path
        The published root (created when missing).
    name : str
        Version directory name ("v..." so that `list_versions` sees it).
    n, d, seed : int
        Items, dimensions, random seed.
    prefix : str
        Item ids are f"{prefix}{i}" (different prefixes tell versions apart in answers).
    point : bool
        Point LATEST at the new version.
    ids : list of str or None
        Explicit item ids instead of the prefix ones.
    """
    import faiss
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from recembed import artifacts as A
    from recembed.blend import BlendModel, BlendSettings
    from recembed.index import build_index, save_index
    from recembed.serving import write_settings

    rng = np.random.default_rng(seed)
    out = Path(published) / name
    out.mkdir(parents=True)
    ids = list(ids) if ids is not None else [f"{prefix}{i}" for i in range(n)]
    n = len(ids)
    vec = rng.normal(size=(n, d)).astype(np.float32)
    ctx = rng.normal(size=(n, d)).astype(np.float32)
    cats = (np.arange(n) % 7).astype(np.int32)
    origin = np.array(["trained"] * (n - 3) + ["side_info"] * 3, dtype=object)
    A.Embeddings(ids=np.array(ids, dtype=object), codes=np.arange(n, dtype=np.int32),
                 vectors=vec, context=ctx, counts=rng.integers(1, 50, n),
                 categories=cats, origin=origin).save(out)
    index, meta = build_index(vec, factory="Flat")
    save_index(index, meta, out)
    cindex, cmeta = build_index(ctx, factory="Flat", metric="ip")
    faiss.write_index(cindex, str(A.INDEX_CONTEXT.path(out)))
    A.write_text(A.INDEX_CONTEXT_META.path(out), cmeta.to_json())
    sess = np.repeat(np.arange(n // 2), 4)
    train = pd.DataFrame({"session": sess, "item": rng.integers(0, n, len(sess)),
                          "ts": np.arange(len(sess), dtype=np.int64) * 10})
    model, _ = BlendModel.build(train, n, np.arange(n), vec, ctx)
    model.save(A.BLEND.path(out))
    write_settings(A.SERVING.path(out), BlendSettings(
        weights={"directional": 1.0, "rules": 0.5, "neighbours": 0.3, "repeat": 0.3,
                 "popularity": 0.01}, vectors_decay=0.3))
    A.write_parquet(pa.table({"id": [*ids, "cold one", "cold two"],
                              "code": np.arange(n + 2, dtype=np.int32),
                              "origin": [*origin, "none", "none"],
                              "reason": [""] * n + ["no vector: no events, no category"] * 2}),
                    A.ORIGINS.path(out), A.ORIGINS.columns)
    files = {}
    for p in sorted(out.iterdir()):
        files.update(A.file_hashes(p, p.name))
    A.write_json(out / A.MANIFEST, {"version": name, "created": A.now_iso(),
                                    "code_version": "test", "counts": {"vectors": n},
                                    "files": files})
    if point:
        tmp = Path(published) / ".LATEST.tmp"
        tmp.write_text(name + "\n")
        tmp.replace(Path(published) / A.LATEST)
    return out
