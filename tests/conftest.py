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
