"""`recembed query` / `recommend`: --json answers and the exit code for unknown ids."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from recembed.cli import EXIT_UNKNOWN_IDS, app
from recembed.serving import Recommender
from tests.conftest import make_version

runner = CliRunner()


def test_query_and_recommend_json_and_unknown_ids_exit_6(tmp_path):
    root = tmp_path / "published"
    make_version(root, "v1", n=120, seed=4, prefix="q")
    rec = Recommender.load(root)
    assert EXIT_UNKNOWN_IDS == 6

    r = runner.invoke(app, ["query", str(root), "q1", "q2", "-k", "4", "--json"])
    assert r.exit_code == 0, r.output
    body = json.loads(r.stdout)
    assert body["version"] == "v1" and body["unknown"] == []
    assert [x["id"] for x in body["results"][1]["items"]] == list(rec.similar("q2", 4).ids[0])
    assert body["results"][0]["id"] == "q1" and "category" in body["results"][0]["items"][0]

    r = runner.invoke(app, ["recommend", str(root), "q1", "nope", "q3", "-k", "5", "--json"])
    assert r.exit_code == EXIT_UNKNOWN_IDS
    body = json.loads(r.stdout)  # the answer is still printed, on stdout only
    exp = rec.recommend(["q1", "nope", "q3"], k=5)
    assert body["version"] == "v1" and body["unknown"] == ["nope"]
    assert [x["id"] for x in body["items"]] == list(exp.ids[0])
    assert np.array_equal(np.float32([x["score"] for x in body["items"]]), exp.scores[0])
    assert "unknown ids" in r.stderr and "nope" in r.stderr

    r = runner.invoke(app, ["query", str(root / "v1"), "q1", "zz top"])
    assert r.exit_code == EXIT_UNKNOWN_IDS and "zz top" in r.stderr
    assert "(unknown id)" in r.stdout
    r = runner.invoke(app, ["recommend", str(root), "q1", "q2"])
    assert r.exit_code == 0 and r.stderr == ""
