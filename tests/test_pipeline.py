import json

import pandas as pd
import pytest

from recembed.config import load_config
from recembed.pipeline import PipelineError, run_pipeline
from recembed.stages import STAGES


def _cfg(synth_csv, tmp_path, *extra):
    return load_config(None, [
        f"input.paths=['{synth_csv}']", "input.columns.user='user_id'",
        f"input.categories_path='{synth_csv.with_name(synth_csv.stem + '_items.csv')}'",
        f"run.runs_dir='{tmp_path}'", "evaluate.enabled=false", "calibrate.enabled=false",
        *extra])


def test_run_writes_outputs_and_a_rerun_skips(synth_csv, tmp_path):
    cfg = _cfg(synth_csv, tmp_path)
    rep = run_pipeline(cfg, plan=STAGES, stages=["sessionize"], echo=lambda s: None)
    assert rep.stages["ingest"]["status"] == "ran"
    sessions = pd.read_parquet(rep.run_dir / "sessions_train.parquet")
    assert len(sessions) > 1000
    assert json.loads((rep.run_dir / "summary.json").read_text())["ingest"]["stats"]["events"]
    again = run_pipeline(cfg, plan=STAGES, stages=["sessionize"], echo=lambda s: None)
    assert again.run_dir == rep.run_dir
    assert {s["status"] for s in again.stages.values()} == {"skipped"}


def test_a_changed_setting_reruns_only_what_depends_on_it(synth_csv, tmp_path):
    cfg = _cfg(synth_csv, tmp_path)
    rep = run_pipeline(cfg, tmp_path / "r", plan=STAGES, stages=["sessionize"], echo=lambda s: None)
    cfg2 = _cfg(synth_csv, tmp_path, "session.gap_minutes=10")
    rep2 = run_pipeline(cfg2, tmp_path / "r", plan=STAGES, stages=["sessionize"], echo=lambda s: None)
    assert rep2.stages["ingest"]["status"] == "skipped"
    assert rep2.stages["sessionize"]["status"] == "ran"
    assert rep2.stages["sessionize"]["stats"]["sessions"] > rep.stages["sessionize"]["stats"]["sessions"]


def test_a_tampered_output_is_not_trusted(synth_csv, tmp_path):
    cfg = _cfg(synth_csv, tmp_path)
    run_pipeline(cfg, tmp_path / "r", plan=STAGES, stages=["sessionize"], echo=lambda s: None)
    p = tmp_path / "r" / "events.parquet"
    p.write_bytes(p.read_bytes()[:100])
    rep = run_pipeline(cfg, tmp_path / "r", plan=STAGES, stages=["sessionize"], echo=lambda s: None)
    assert rep.stages["ingest"]["status"] == "ran"
    assert len(pd.read_parquet(p)) > 0


def test_bad_input_stops_with_the_bad_input_exit_code(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("user_id,item_id,timestamp\n" + "u,i,garbage\n" * 10)
    cfg = load_config(None, [f"input.paths=['{p}']", f"run.runs_dir='{tmp_path}'",
                             "input.categories_path=''"])
    with pytest.raises(PipelineError) as e:
        run_pipeline(cfg, tmp_path / "r", plan=STAGES, echo=lambda s: None)
    assert e.value.exit_code == 3
    assert len(pd.read_parquet(tmp_path / "r" / "quarantine.parquet")) == 10
    assert not (tmp_path / "r" / "events.parquet").exists()
