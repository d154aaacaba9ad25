"""Compile the numba kernels ahead of the first run (`recembed warmup`, run by `make install`).

numba compiles a kernel on its first call and caches the machine code on disk (`cache=True`,
the folder `recembed.numba_cache_dir` picks); a fresh install has an empty cache, so its first
run paid ~40 s of compilation on 2 cores: `make demo` took 75 s cold and 35 s warm
(benchmarks/RESULTS.md, "make demo: the candidates' threads and the kernels' compilation").
`compile_kernels` runs the whole pipeline (self-calibrated, evaluated, with a category side
file) on a small synthetic log in a temporary folder, then loads the run as a serving system
would and warms `similar` and `recommend` (`recembed.server.warm`), so that every kernel a run
or a query calls is compiled for the types it is called with. Nothing is written outside the
temporary folder but the cache.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

# the log: large enough that every stage runs its real path (a validation split, walks, the
# blend search), small enough that the run itself is a few seconds of the warm-up
EVENTS = 6000


def compile_kernels(workdir: Path | None = None, *, events: int = EVENTS, seed: int = 0) -> dict:
    """Run the pipeline and the serving calls once on a synthetic log; their seconds.

    Parameters
    ----------
    workdir : Path or None
        Scratch folder (kept); None = a temporary one, removed afterwards.
    events : int >= 2000
        Events of the synthetic clicks log (`recembed.synth.synth_profile`).
    seed : int
        Seed of the log and of the run.

    Returns
    -------
    dict
        ``{"run_s", "serving_s", "total_s"}``: wall seconds of the run, of loading and warming
        the serving calls, and of both.
    """
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="recembed-warmup-") as tmp:
            return compile_kernels(Path(tmp), events=events, seed=seed)
    from recembed.config import load_config
    from recembed.pipeline import run_pipeline
    from recembed.server import warm
    from recembed.serving import Recommender
    from recembed.stages import STAGES
    from recembed.synth import synth_profile, write_synth

    t0 = time.perf_counter()
    events_path, items_path = write_synth(synth_profile("clicks", events, seed=seed),
                                          workdir / "clicks.csv")
    cfg = load_config(None, [f"input.paths=['{events_path}']",
                             f"input.categories_path='{items_path}'",
                             f"run.runs_dir='{workdir / 'runs'}'", "run.progress=false",
                             f"run.seed={seed}", "publish.enabled=false",
                             # two small amounts: the ladder climbs once, as real runs do
                             "calibrate.target_tokens=[20000, 60000]"])
    # the run's own log lines (candidates, the walk budget's warning) are about a throwaway
    # log: kept out of the install's output
    logger = logging.getLogger("recembed")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        rep = run_pipeline(cfg, plan=STAGES, echo=lambda s: None)
        t1 = time.perf_counter()
        warm(Recommender.load(rep.run_dir))
    finally:
        logger.setLevel(level)
    t2 = time.perf_counter()
    return {"run_s": round(t1 - t0, 2), "serving_s": round(t2 - t1, 2),
            "total_s": round(t2 - t0, 2)}
