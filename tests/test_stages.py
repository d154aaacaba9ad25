"""The runner and the stage declarations: order, fingerprints and integrity derived from what
each stage declares; folders of part files; every documented config key read; layering."""

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recembed import artifacts as A
from recembed.config import ConfigError, load_config
from recembed.pipeline import PipelineError, Stage, resolve_plan, run_pipeline
from recembed.stages import STAGES
from tests.conftest import ROOT

PARTS = A.Artifact("parts", kind="folder", published=True)
TOTAL = A.Artifact("total.json")


def _write_parts(ctx):
    out = ctx.write(PARTS)
    n = ctx.cfg.run.seed % 5 + 2
    for i in range(n):  # one Parquet part per "partition", as Spark writes them
        A.write_parquet(pd.DataFrame({"x": np.arange(i * 10, i * 10 + 10)}),
                        out / f"part-{i:05d}.parquet")
    (out / "_SUCCESS").write_text("")
    return {"parts": n}


def _sum_parts(ctx):
    total = int(pd.read_parquet(ctx.read(PARTS))["x"].sum())
    A.write_json(ctx.write(TOTAL), {"total": total})
    return {"total": total}


TOY = [Stage("total", _sum_parts, reads=(PARTS,), writes=(TOTAL,)),  # listed first on purpose
       Stage("parts", _write_parts, writes=(PARTS,), sections=("run",))]


def _quiet(cfg, run_dir, plan, **kw):
    return run_pipeline(cfg, run_dir, plan=plan, echo=lambda s: None, **kw)


def test_a_stage_writing_a_folder_of_parts_runs_resumes_and_is_verified(tmp_path):
    cfg = load_config(None, ["run.seed=1"])
    rep = _quiet(cfg, tmp_path / "r", TOY)
    assert list(rep.stages) == ["parts", "total"]  # order from the declarations
    assert rep.stages["total"]["stats"]["total"] == sum(range(30))
    assert sorted(p.name for p in (tmp_path / "r" / "parts").iterdir()) == [
        "_SUCCESS", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    again = _quiet(cfg, tmp_path / "r", TOY)
    assert {s["status"] for s in again.stages.values()} == {"skipped"}
    # a changed part is noticed: its stage and everything downstream run again
    A.write_parquet(pd.DataFrame({"x": [1000]}), tmp_path / "r" / "parts" / "part-00001.parquet")
    rep = _quiet(cfg, tmp_path / "r", TOY)
    assert [s["status"] for s in rep.stages.values()] == ["ran", "skipped"]
    # an upstream setting that changes the folder reruns the reader too (fingerprints chain)
    rep = _quiet(load_config(None, ["run.seed=2"]), tmp_path / "r", TOY)
    assert [s["status"] for s in rep.stages.values()] == ["ran", "ran"]
    assert rep.stages["total"]["stats"]["total"] == sum(range(40))
    assert len(list((tmp_path / "r" / "parts").iterdir())) == 5  # replaced whole, no leftovers


def test_a_folder_artifact_is_published_and_verified_part_by_part(tmp_path):
    from recembed.blend import BlendSettings
    from recembed.index import build_index, save_index
    from recembed.publish import publish_version
    from recembed.serving import ArtifactError, Recommender, write_settings

    run = tmp_path / "r"
    _quiet(load_config(None, ["run.seed=1"]), run, TOY)
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(50, 8)).astype(np.float32)
    A.Embeddings(ids=np.array([f"i{i}" for i in range(50)], dtype=object),
                 codes=np.arange(50, dtype=np.int32), vectors=vec).save(run)
    index, meta = build_index(vec)
    save_index(index, meta, run)
    write_settings(A.SERVING.path(run), BlendSettings())
    files = [A.VECTORS, A.ITEMS, A.INDEX, A.INDEX_META, A.SERVING, A.CONTEXT, PARTS]
    res = publish_version(run, tmp_path / "pub", files=files, manifest={}, gate={})
    man = (res.path / A.MANIFEST).read_text()
    assert '"parts/part-00002.parquet"' in man and '"parts/_SUCCESS"' in man
    assert "context_vectors" not in man  # optional and absent: skipped
    assert A.sha256(res.path / "parts") == A.sha256(run / "parts")
    Recommender.load(tmp_path / "pub")
    (res.path / "parts" / "part-00001.parquet").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="part-00001"):
        Recommender.load(tmp_path / "pub")


def test_the_runner_holds_stages_to_their_declarations(tmp_path):
    cfg = load_config(None)

    def sneaky(ctx):
        ctx.read(A.VOCABULARY)

    with pytest.raises(PipelineError, match=r"reads vocabulary\.parquet without declaring it"):
        _quiet(cfg, tmp_path / "a", [Stage("s", sneaky)])

    def litter(ctx):
        (ctx.out_dir / "stray.txt").write_text("x")
        A.write_json(ctx.write(TOTAL), {})

    with pytest.raises(PipelineError, match=r"wrote \['stray.txt'\], which it does not declare"):
        _quiet(cfg, tmp_path / "b", [Stage("s", litter, writes=(TOTAL,))])
    with pytest.raises(PipelineError, match="did not write its declared output parts"):
        _quiet(cfg, tmp_path / "c", [Stage("s", lambda ctx: {}, writes=(PARTS,))])
    with pytest.raises(PipelineError, match="reads parts, which no enabled stage writes"):
        resolve_plan([TOY[0]], cfg)
    with pytest.raises(PipelineError, match=r"both write total\.json"):
        resolve_plan([*TOY, dataclasses.replace(TOY[0], name="again")], cfg)


def test_the_nightly_plan_is_ordered_by_its_declarations():
    cfg = load_config(None, ["publish.enabled=true"])
    names = [s.name for s in resolve_plan(list(reversed(STAGES)), cfg)]
    for before, after in [("ingest", "sessionize"), ("sessionize", "calibrate"),
                          ("calibrate", "graph"), ("calibrate", "sequences"),
                          ("calibrate", "index"), ("graph", "walks"), ("walks", "train"),
                          ("sequences", "train"), ("train", "index"), ("index", "evaluate"),
                          ("evaluate", "publish")]:
        assert names.index(before) < names.index(after)
    only = [s.name for s in resolve_plan(STAGES, cfg, ["sequences"])]
    assert only == ["ingest", "sessionize", "calibrate", "sequences"]
    no_walks = load_config(None, ["walks.enabled=false"])
    assert "graph" not in [s.name for s in resolve_plan(STAGES, no_walks)]


def test_warm_start_makes_the_published_root_an_input_of_train(tmp_path):
    from recembed.pipeline import stage_fingerprint

    train = next(s for s in STAGES if s.name == "train")
    cfg = load_config(None, [f"publish.dir='{tmp_path}'", "train.warm_start=true"])
    before = stage_fingerprint(cfg, train, {})
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / A.MANIFEST).write_text("{}")
    (tmp_path / A.LATEST).write_text("v1\n")
    assert stage_fingerprint(cfg, train, {}) != before
    cold = load_config(None, [f"publish.dir='{tmp_path}'"])
    assert A.PublishedRoot(str(tmp_path)) not in train.declared_reads(cold)


@pytest.mark.parametrize(("overrides", "keys"), [
    (["train.negative=0"], ["train.negative", "train.hs"]),
    (["walks.enabled=false", "sequences.enabled=false"], ["sequences.enabled", "walks.enabled"]),
    (["publish.enabled=true", "evaluate.enabled=false"], ["publish.enabled", "evaluate.enabled"]),
    (["input.event_types=['view']"], ["input.event_types", "input.columns.event_type"]),
    (["input.columns.user=''"], ["input.columns.user", "input.columns.session"]),
])
def test_config_combinations_no_stage_can_run_are_refused_by_key(overrides, keys):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    for k in keys:
        assert k in str(e.value)


@pytest.mark.slow  # a whole run with hierarchical softmax
def test_hierarchical_softmax_without_negatives_runs(synth_small, tmp_path):
    """train.negative = 0 with train.hs = true used to pass validation and then crash: 'stage
    train did not write its output context_vectors.npy'."""
    cfg = _small_cfg(synth_small, tmp_path, "train.negative=0", "train.hs=true")
    rep = run_pipeline(cfg, plan=STAGES, echo=lambda s: None)
    assert rep.stages["evaluate"]["status"] == "ran"
    assert not A.CONTEXT.path(rep.run_dir).exists()
    m = A.Metrics.load(A.METRICS.path(rep.run_dir))
    assert "item2vec+deepwalk:directional" not in m.methods and m.serving.allow_repeats.recall(20)


@pytest.fixture(scope="module")
def synth_small(tmp_path_factory):
    from recembed.synth import synth_clicks, write_synth

    p = tmp_path_factory.mktemp("small") / "clicks.csv"
    write_synth(synth_clicks(6_000, seed=2), p)
    return p


def _small_cfg(log, tmp, *extra):
    return load_config(None, [
        f"input.paths=['{log}']", f"input.categories_path='{log.with_name('clicks_items.csv')}'",
        f"run.runs_dir='{tmp / 'runs'}'", f"publish.dir='{tmp / 'published'}'",
        "train.epochs=1", "train.workers=1", "train.vector_size=8", "walks.walks_per_node=1",
        "evaluate.baselines=['pop']", "evaluate.ks=[20]", "run.progress=false", *extra])


def _documented_keys() -> set[str]:
    import re

    section, keys = None, set()
    for line in (ROOT / "pipelines" / "nightly.toml").read_text().splitlines():
        if m := re.match(r"^\[([\w.]+)\]", line):
            section = m.group(1)
        elif (m := re.match(r"^#?\s*(\w+)\s*=\s*[^#]*#\s*\S", line)) and section:
            keys.add(f"{section}.{m.group(1)}")
    return keys


@pytest.mark.slow  # the whole plan twice, every config read recorded (~50 s)
def test_every_documented_key_is_read_by_a_run(synth_small, tmp_path, monkeypatch):
    """Run the whole plan (publish, warm start and alignment included) with every config read
    recorded: a documented key that nothing reads is a knob that does nothing. (That the
    documented keys are exactly the Config fields is tests/test_config.py's check.)"""
    from recembed import config as C

    items = synth_small.with_name("clicks_items.csv")
    cfg = _small_cfg(synth_small, tmp_path, "publish.enabled=true", "train.warm_start=true",
                     "publish.align_to_previous=true", "publish.force=true",
                     # the catalog (cold start) is on, so its keys are read too
                     f"input.catalog.path='{items}'", "input.catalog.attributes=['category']",
                     "input.catalog.category='category'", "cold.scheme='context'",
                     # both corpora, so that both corpus stages run whatever calibration's
                     # validation would choose
                     "calibrate.corpora=['both']")
    run_pipeline(cfg, plan=STAGES, echo=lambda s: None)  # a version to warm-start from
    # by section type, not object: the calibrate stage hands later stages a resolved copy
    paths = {type(getattr(cfg, name)): name for name in C.Config.model_fields}
    paths[type(cfg.input.columns)] = "input.columns"
    paths[type(cfg.input.catalog)] = "input.catalog"
    read: set[str] = set()
    real_get = C._Section.__getattribute__

    def recording(self, name):
        value = real_get(self, name)
        where = paths.get(type(self))
        if where and name in type(self).model_fields:
            read.add(f"{where}.{name}")
        return value

    monkeypatch.setattr(C._Section, "__getattribute__", recording)
    run_pipeline(cfg, plan=STAGES, echo=lambda s: None, force=True)
    monkeypatch.undo()
    # the [spark] keys are read by Spark runs only: tests/test_spark.py checks they reach the
    # session
    documented = {k for k in _documented_keys() if not k.startswith("spark.")}
    unread = sorted(documented - read)
    assert not unread, f"documented but never read by any stage: {unread}"


# the data flow, bottom up: a module may import only modules of lower layers
LAYERS = [
    # the contract first: `sources` lists input directories with `artifacts.walk_files`, the
    # walk the input stamps use (docs/ARCHITECTURE.md lists artifacts on its own row)
    {"recembed.blend.settings"},  # a leaf: the config may name the signals
    {"recembed", "recembed.artifacts", "recembed.ids"},
    {"recembed.progress", "recembed.corpus", "recembed.synth", "recembed.sources", "recembed.sknn",
     "recembed.spark", "recembed.runtime", "recembed.topk", "recembed.postprocess"},
    {"recembed.config"},
    {"recembed.spark.session", "recembed.spark.io", "recembed.sknn_kernels",
     "recembed.blend.kernels"},
    {"recembed.blend.scores"},
    {"recembed.ingest", "recembed.sessions", "recembed.blend.model", "recembed.catalog"},
    {"recembed.blend"},
    {"recembed.graph", "recembed.sequences"},
    {"recembed.walks"},
    {"recembed.spark.ingest", "recembed.spark.sessions", "recembed.spark.graph",
     "recembed.spark.walks", "recembed.spark.sequences"},
    {"recembed.incremental"},  # what an incremental night trains on (train counts its tokens)
    {"recembed.train"},
    {"recembed.line", "recembed.factorize"},  # beside the skip-gram (results: a TrainResult)
    {"recembed.index"},
    {"recembed.evaluate", "recembed.serving", "recembed.report"},
    {"recembed.server", "recembed.export"},  # the HTTP service, vector database export
    {"recembed.candidates"},
    {"recembed.calibrate"},
    {"recembed.publish"},
    {"recembed.settings"},
    {"recembed.pipeline"},
    {"recembed.stages.ingest", "recembed.stages.sessionize", "recembed.stages.catalog"},
    {"recembed.stages.calibrate"},
    {"recembed.stages.graph", "recembed.stages.sequences"},
    {"recembed.stages.walks"},
    {"recembed.stages.train"},
    {"recembed.stages.index"},
    {"recembed.stages.evaluate"},
    {"recembed.stages.publish"},
    {"recembed.stages"},
    {"recembed.tune", "recembed.warmup"},  # warmup: a whole run, to compile its kernels
    {"recembed.cli"},
]


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):  # function-level imports too
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("recembed")}


def test_no_module_imports_one_above_it_in_the_data_flow():
    layer = {m: i for i, group in enumerate(LAYERS) for m in group}
    pkg = ROOT / "recembed"
    modules = {".".join(("recembed", *p.relative_to(pkg).with_suffix("").parts))
               .removesuffix(".__init__"): p for p in pkg.rglob("*.py")}
    assert set(modules) <= set(layer), f"unlayered modules: {set(modules) - set(layer)}"
    bad = []
    for mod, path in modules.items():
        for dep in _imports(path) & set(modules):
            if dep != mod and dep != "recembed" and layer[dep] >= layer[mod]:
                bad.append(f"{mod} imports {dep}")
    assert not bad, bad
    assert not any(d.startswith("recembed.stages") for d in _imports(modules["recembed.pipeline"]))


def test_the_spark_engine_uses_only_public_names_of_the_local_modules():
    # a rule the two engines share is a public function of the local module: a private name
    # (`ingest._parse`, `from recembed.graph import _keep_heaviest`) would tie Spark to a
    # helper the local module may change at will
    pkg = ROOT / "recembed"
    local = {p.stem for p in pkg.glob("*.py")} - {"__init__"}
    bad = []
    for path in sorted((pkg / "spark").glob("*.py")):
        tree = ast.parse(path.read_text())
        aliases = {}  # local name -> recembed module
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "recembed":
                aliases |= {a.asname or a.name: a.name for a in node.names if a.name in local}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                    "recembed.") and node.module.removeprefix("recembed.") in local:
                bad += [f"{path.name}: from {node.module} import {a.name}" for a in node.names
                        if a.name.startswith("_")]
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("recembed.") and a.name.removeprefix("recembed.") in local:
                        aliases[a.asname or a.name] = a.name.removeprefix("recembed.")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                base = ast.unparse(node.value)
                if base in aliases:
                    bad.append(f"{path.name}: {base}.{node.attr} ({aliases[base]})")
    assert not bad, bad


# model-half adapters that still import another (being rewritten; remove as they go)
def test_no_stage_adapter_imports_another():
    # adapters share what they share through recembed.settings, never through each other
    pkg = ROOT / "recembed" / "stages"
    names = {p.stem for p in pkg.glob("*.py")} - {"__init__"}
    found = {f"{name} -> {dep.removeprefix('recembed.stages.')}" for name in names
             for dep in _imports(pkg / f"{name}.py")
             if dep.removeprefix("recembed.stages.") in names - {name}}
    assert not found, sorted(found)


def test_a_nearly_empty_holdout_is_warned_with_the_days_that_would_fill_it(tmp_path):
    from recembed.stages.sessionize import small_holdout_warning

    day = 86_400.0
    t_max = 1_000 * day
    # 2,000 sessions: 1,999 spread over the first 900 days, one in the last day (the holdout);
    # want = min(1,000, 2,000 // 10) = 200 sessions: the 200th from the end ends 30.5 days
    # before the last one, so 31 days hold them
    ends = np.r_[np.linspace(0, 900 * day, 1_800), np.linspace(t_max - 30.5 * day,
                                                               t_max - 2 * day, 199), t_max]
    split = np.zeros(len(ends), np.int8)
    split[-1] = 1
    path = tmp_path / "table.parquet"
    pd.DataFrame({"end": ends, "split": split}).to_parquet(path)
    msg = small_holdout_warning(path, 1.0)
    assert msg is not None
    assert "holdout.days=1 leaves 1 of 2,000 sessions" in msg
    assert "holdout.days = 31 would hold about 200 sessions" in msg
    assert small_holdout_warning(path, 0.0) is None  # no holdout asked for
    split[-150:] = 1  # 150 holdout sessions: enough
    pd.DataFrame({"end": ends, "split": split}).to_parquet(path)
    assert small_holdout_warning(path, 1.0) is None
