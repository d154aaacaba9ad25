"""Quality claims on the real samples, with default settings (slow: trains two models)."""

import json

import pytest

from recembed.config import load_config
from recembed.pipeline import run_pipeline
from recembed.stages import STAGES
from tests.conftest import ROOT


def _metrics(name, tmp_path):
    cfg = load_config(ROOT / "pipelines" / f"{name}.toml",
                      [f"run.runs_dir='{tmp_path}'", "run.progress=false"])
    rep = run_pipeline(cfg, plan=STAGES, echo=lambda s: None)
    m = json.loads((rep.run_dir / "metrics.json").read_text())["methods"]
    return {n: v["allow_repeats"] for n, v in m.items()}


@pytest.mark.slow
def test_yoochoose_targets(tmp_path):
    m = _metrics("yoochoose", tmp_path)
    emb = {n: v for n, v in m.items() if ":" in n}
    best = max(emb, key=lambda n: emb[n]["recall@20"])
    assert emb[best]["recall@20"] >= 0.40 and emb[best]["mrr@20"] >= 0.17
    assert emb[best]["recall@20"] > m["item_knn"]["recall@20"]
    # issue 12: at defaults (self-calibrated) `recommend` is at least the best of V-SKNN / STAN
    # in Recall@20 and MRR@20 (measured 0.614 / 0.268 against 0.581 / 0.255, 7,519 queries)
    serving = next(v for n, v in m.items() if n.endswith(":serving"))
    for b in ("vsknn", "stan"):
        assert serving["recall@20"] >= m[b]["recall@20"], b
        assert serving["mrr@20"] >= m[b]["mrr@20"], b


@pytest.mark.slow
def test_diginetica_embeddings_beat_every_baseline(tmp_path):
    m = _metrics("diginetica", tmp_path)
    best = max(v["recall@20"] for n, v in m.items() if ":" in n)
    assert all(best > m[b]["recall@20"] for b in ("pop", "session_pop", "item_knn", "sr"))
    # issue 12 (measured 0.468 / 0.219 against STAN 0.441 / 0.175): 297 queries, s.e. ~0.029,
    # and gensim with 2 workers is not reproducible, so a margin of one s.e. on recall
    serving = next(v for n, v in m.items() if n.endswith(":serving"))
    for b in ("vsknn", "stan"):
        assert serving["recall@20"] >= m[b]["recall@20"] - 0.03, b
        assert serving["mrr@20"] >= m[b]["mrr@20"], b
