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


def test_index_stage_writes_candidate_tables_when_they_fit_and_serves_them(synth_csv, tmp_path):
    from dataclasses import replace

    import numpy as np

    from recembed.blend import candidate_tables
    from recembed.serving import Recommender

    run = tmp_path / "r"
    cfg = _cfg(synth_csv, tmp_path, "train.epochs=1", "walks.enabled=false",
               "sequences.enabled=true")
    rep = run_pipeline(cfg, run, plan=STAGES, stages=["index"], echo=lambda s: None)
    assert rep.stages["index"]["stats"]["retrieval"] == "table"
    st = json.loads((run / "serving.json").read_text())
    assert st["retrieval"] == "table"
    with np.load(run / "blend.npz") as z:
        n = len(np.load(run / "vectors.npy"))
        assert z["dir_table"].shape == (n, min(200, n)) and z["cos_table"].shape[0] == n
    rec = Recommender.load_run(run)
    ids = [str(x) for x in rec.ids[:5]]
    tabled = rec.recommend([[x] for x in ids], 10)
    assert all(len(r) == 10 for r in tabled.ids)
    # over the size budget, auto searches the indexes instead; a one-item session gets the
    # same answer either way (its table row is that search, on the same loaded indexes)
    cfg2 = _cfg(synth_csv, tmp_path, "train.epochs=1", "walks.enabled=false",
                "sequences.enabled=true", "serving.table_max_mb=0.001")
    run_pipeline(cfg2, run, plan=STAGES, stages=["index"], echo=lambda s: None)
    assert json.loads((run / "serving.json").read_text())["retrieval"] == "index"
    with np.load(run / "blend.npz") as z:
        assert "dir_table" not in z.files
    rec = Recommender.load_run(run)
    searched = rec.recommend([[x] for x in ids], 10)
    m = rec.model
    m.dir_table, m.cos_table = candidate_tables(m.vectors, m.context, rec.settings.candidates,
                                                search=m.search, cos_search=m.cos_search)
    rec.settings = replace(rec.settings, retrieval="table")
    tabled = rec.recommend([[x] for x in ids], 10)
    assert [list(r) for r in searched.ids] == [list(r) for r in tabled.ids]


@pytest.mark.slow
def test_the_ann_row_scores_the_versions_vectors_decay(synth_csv, tmp_path):
    """serving.vectors_decay reaches serving.json and the evaluation's `:ann` row (the exported
    directional query); the `decayed` strategy keeps evaluate.decay."""
    def run(vdecay: str):
        cfg = _cfg(synth_csv, tmp_path, "evaluate.enabled=true", "evaluate.baselines=['pop']",
                   "evaluate.strategies=['decayed', 'ann']", "evaluate.ks=[20]",
                   "train.vector_size=16", "train.target_tokens=60000", "train.workers=1",
                   f"serving.vectors_decay={vdecay}")
        rep = run_pipeline(cfg, tmp_path / "r", plan=STAGES, echo=lambda s: None)
        served = json.loads((rep.run_dir / "serving.json").read_text())
        methods = json.loads((rep.run_dir / "metrics.json").read_text())["methods"]
        rows = {n.split(":")[-1]: m["allow_repeats"] for n, m in methods.items() if ":" in n}
        return rep, served, rows

    _, s1, m1 = run("1.0")
    _, s2, m2 = run("0.15")
    assert (s1["vectors_decay"], s2["vectors_decay"]) == (1.0, 0.15)
    assert s1["decay"] == s2["decay"] == 0.65  # the blend's own decay is another setting
    def timeless(m: dict) -> dict:
        return {k: v for k, v in m.items() if "seconds" not in k}

    assert timeless(m1["decayed"]) == timeless(m2["decayed"])
    assert m1["ann"]["recall@20"] != m2["ann"]["recall@20"]
