"""The SparkSession of a run: `[spark]` settings, safe local-mode defaults."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

# Defaults a setting in `spark.conf` overrides. Arrow moves columns between the JVM and Python
# workers (mapInArrow, toPandas); UTC so no timestamp depends on the machine's zone; no web UI
# (it binds a port, and the nightly job has no one to look at it).
DEFAULTS = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.adaptive.enabled": "true",
}
# local mode: the driver and its executors talk over loopback only (no network interface is
# needed, and nothing listens on a public address)
LOCAL = {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}


def spark_session(master: str = "local[2]", conf: Mapping[str, object] | None = None,
                  app_name: str = "recembed"):
    """The active SparkSession, or a new one on `master` with `conf` (`[spark]` settings).

    Parameters
    ----------
    master : str
        Spark master URL (`spark.master`): local[N], yarn, k8s://..., spark://... . Ignored
        when a session already exists (a notebook's, a test fixture's) and under
        spark-submit, whose --master decides.
    conf : mapping of str to str / int / float / bool
        Extra Spark settings (`spark.conf`), passed through as strings; they win over the
        defaults here.
    app_name : str
        Application name shown by the cluster manager.

    Executors run the driver's Python (`PYSPARK_PYTHON` = this interpreter unless set), so the
    numba kernels and pandas they use are the driver's versions.
    """
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    settings = dict(DEFAULTS)
    # under spark-submit the JVM is already up (it set PYSPARK_GATEWAY_PORT) and --master
    # decides; a master set on the builder would override it
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    if master.startswith("local") and not submitted:
        settings.update(LOCAL)
    settings.update({k: _text(v) for k, v in (conf or {}).items()})
    builder = SparkSession.builder.appName(app_name)
    if not submitted:
        builder = builder.master(master)
    for k, v in settings.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _text(v: object) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def from_config(cfg):
    """The SparkSession of a run's `[spark]` settings (`recembed.config.Config`)."""
    return spark_session(cfg.spark.master, cfg.spark.conf, app_name=f"recembed-{cfg.run.name}")


def from_runtime(rt):
    """The SparkSession of a `recembed.runtime.Runtime` (its `spark_*` fields)."""
    return spark_session(rt.spark_master, rt.spark_conf, app_name=rt.app_name)
