"""How a data-half stage runs, as opposed to what it computes: one record for either engine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Runtime:
    """Where and with what a data-half stage runs; never changes its output.

    Parameters
    ----------
    scratch : pathlib.Path
        A folder for temporary files (Spark part files); removed by the runner afterwards.
    threads : int >= 1
        Threads of the local engine's kernels (walks).
    progress : bool
        Show a progress bar (local walks).
    spark_master : str
        Spark master URL (`spark.master`) for the Spark engine; unused by the local one.
    spark_conf : mapping of str to str / int / float / bool
        Extra Spark settings (`spark.conf`).
    app_name : str
        Spark application name.
    """

    scratch: Path
    threads: int = 1
    progress: bool = False
    spark_master: str = "local[2]"
    spark_conf: Mapping[str, object] = field(default_factory=dict)
    app_name: str = "recembed"
