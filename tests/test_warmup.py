"""`recembed warmup`: every kernel a run and a query call is compiled and cached."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _cache_files(folder: Path) -> set[str]:
    # numba's index (.nbi) and machine-code (.nbc) files, one set per compiled signature
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix in (".nbi", ".nbc")}


@pytest.mark.slow  # compiles every kernel into an empty cache: ~45 s on 2 cores
def test_after_the_warmup_a_run_and_a_query_compile_nothing(tmp_path):
    cache = tmp_path / "numba"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    exe = Path(sys.executable).with_name("recembed")
    out = subprocess.run([str(exe), "warmup"], env=env, capture_output=True, text=True,
                         check=True)
    assert "kernels compiled and cached" in out.stdout
    assert out.stderr.strip() == ""  # the throwaway run's log lines stay out of the install
    compiled = _cache_files(cache)
    assert any("sknn_kernels." in f for f in compiled)
    # a default run of another profile (a config with only [input]) and a query on it: the
    # cache gains nothing, so neither compiled a kernel the warm-up missed
    script = f"""
from pathlib import Path
from recembed.config import load_config
from recembed.pipeline import run_pipeline
from recembed.serving import Recommender
from recembed.stages import STAGES
from recembed.synth import synth_profile, write_synth
ev, _ = write_synth(synth_profile("music", 4000, seed=3), Path({str(tmp_path)!r}) / "m.csv")
cfg = load_config(None, [f"input.paths=['{{ev}}']", "input.categories_path=''",
                         "run.runs_dir='{tmp_path / 'runs'}'", "run.progress=false",
                         "publish.enabled=false"])
rep = run_pipeline(cfg, plan=STAGES, echo=lambda s: None)
rec = Recommender.load(rep.run_dir)
ids = [str(x) for x in rec.ids[:3]]
rec.similar(ids[0], k=10)
rec.recommend([ids], k=10)
"""
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)
    assert _cache_files(cache) == compiled
