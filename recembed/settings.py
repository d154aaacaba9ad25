"""The one boundary where a Config becomes plain values.

Every stage adapter (`recembed.stages`), `recembed.calibrate`'s caller and `recembed.tune` get
their parameters here, as the small typed records that the consuming modules define
(`recembed.train.TrainParams`, `recembed.index.IndexParams`, `recembed.calibrate.CalibrationPlan`,
`recembed.blend.BlendSettings`, ...). The policy for keys left at "auto" lives here too:
`resolve_config` sets them from a calibration record, `resolve_retrieval` chooses the serving
candidates' source. Nothing below this module sees a Config.
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

from recembed.blend import BlendSettings
from recembed.calibrate import VECTORS_DECAYS, CalibrationPlan
from recembed.catalog import ColdParams
from recembed.config import Config
from recembed.graph import GraphParams
from recembed.incremental import IncrementalParams
from recembed.index import IndexParams
from recembed.ingest import ColumnMap, IngestParams
from recembed.line import LineParams, split_corpus
from recembed.publish import PublishPolicy
from recembed.runtime import Runtime
from recembed.sequences import CorpusParams
from recembed.sessions import SessionParams
from recembed.sources import SourceOptions
from recembed.train import TrainParams
from recembed.walks import WalkParams

# the training amount without calibration (DESIGN.md "quality levers": winners saw 2-3M tokens)
DEFAULT_TARGET_TOKENS = 3_000_000
# the session-kNN methods calibration tries in the blend, first = the default
NEIGHBOUR_METHODS = ("stan", "vsknn")


# ---- data half


def engine(cfg: Config, stage: str) -> ModuleType:
    """The module that runs a data-half stage under `run.engine`.

    Parameters
    ----------
    cfg : Config
    stage : {"ingest", "sessions", "graph", "walks", "sequences"}
        The stage module's name; the local engine's is `recembed.<stage>`, Spark's
        `recembed.spark.<stage>` (imported only then: it needs pyspark).

    Returns
    -------
    module
        Either engine's module; both have the same engine-neutral stage function
        (`ingest_files`, `sessionize_files`, `graph_from_files`, `walks_from_graph_file`,
        `corpus_from_files`) with the same signature and the same output bytes.
    """
    if stage not in ("ingest", "sessions", "graph", "walks", "sequences"):
        raise ValueError(f"{stage!r} is not a data-half stage module")
    prefix = "recembed.spark." if cfg.run.engine == "spark" else "recembed."
    return importlib.import_module(prefix + stage)


def runtime(cfg: Config, scratch: str | Path) -> Runtime:
    """Where a data-half stage runs (`[run]` threads and progress, `[spark]`), with its scratch
    folder."""
    r = cfg.run
    return Runtime(scratch=Path(scratch), threads=r.n_threads(), progress=r.progress,
                   spark_master=cfg.spark.master, spark_conf=dict(cfg.spark.conf),
                   app_name=f"recembed-{r.name}")


def ingest_params(cfg: Config) -> IngestParams:
    """`[input]` and `[ingest]` as `recembed.ingest.IngestParams`."""
    c, i, g = cfg.input.columns, cfg.input, cfg.ingest
    return IngestParams(
        paths=tuple(i.paths), test_paths=tuple(i.test_paths),
        columns=ColumnMap(item=c.item, ts=c.ts, user=c.user, session=c.session,
                          event_type=c.event_type, ts_offset=c.ts_offset),
        fmt=i.format, delimiter=i.delimiter, ts_unit=i.ts_unit, ts_offset_unit=i.ts_offset_unit,
        event_types=tuple(i.event_types), na_values=tuple(i.na_values),
        max_bad_fraction=g.max_bad_fraction, max_ts_distance_days=g.max_ts_distance_days,
        drop_duplicates=g.drop_duplicates, window_days=g.window_days,
        source=SourceOptions(encoding=i.encoding, partition_date=i.partition_date,
                             filters={k: [str(v) for v in vs] for k, vs in i.filters.items()}),
    )


def session_params(cfg: Config) -> SessionParams:
    """`[session]`, `[bots]`, `[holdout]` and `[validation]` as
    `recembed.sessions.SessionParams`."""
    s, b, v = cfg.session, cfg.bots, cfg.validation
    return SessionParams(
        gap_minutes=s.gap_minutes, max_length=s.max_length, min_length=s.min_length,
        collapse_repeats=s.collapse_repeats, half_life_days=s.half_life_days,
        holdout_days=cfg.holdout.days, bots=b.enabled, max_events_per_day=b.max_events_per_day,
        min_median_gap_s=b.min_median_gap_s, min_events_for_gap_rule=b.min_events_for_gap_rule,
        bot_outlier_z=b.outlier_z, bot_max_share=b.max_share, auto_gap=s.auto_gap,
        max_short_share=s.max_short_share, validation_share=v.share,
        validation_min_sessions=v.min_sessions, validation_max_sessions=v.max_sessions,
    )


def graph_params(cfg: Config) -> GraphParams:
    """`[graph]` as `recembed.graph.GraphParams`."""
    g = cfg.graph
    return GraphParams(window=g.window, distance_weighting=g.distance_weighting,
                       directed=g.directed, min_weight=g.min_weight,
                       max_out_edges=g.max_out_edges)


def walk_params(cfg: Config) -> WalkParams:
    """`[walks]` and the run's seed as `recembed.walks.WalkParams`."""
    w = cfg.walks
    cap, source = w.max_tokens, "walks.max_tokens"
    amount = target_tokens(cfg) if cfg.train.target_tokens != "auto" else 0
    if amount > 0 and (cap == 0 or max(amount // 2, 1000) < cap):
        # the walk corpus at most half the training amount, as calibration's candidates have
        # it (recembed.candidates.train_model): the model served is trained as the one
        # validated. Without it a 143k-item log walked 10M tokens and trained them for a 1M
        # choice, 10x the validated amount (benchmarks/RESULTS.md, "a huge catalogue of rare
        # items", in "Serving for real, third round")
        cap = max(amount // 2, 1000)
        source = f"half the training amount ({amount:,} tokens, train.target_tokens)"
    return WalkParams(method=w.method, walks_per_node=w.walks_per_node,
                      walk_length=w.walk_length, p=w.p, q=w.q, seed=cfg.run.seed,
                      max_tokens=cap, max_tokens_source=source)


def corpus_params(cfg: Config) -> CorpusParams:
    """`[sequences]` and the run's seed as `recembed.sequences.CorpusParams`."""
    s = cfg.sequences
    return CorpusParams(replication=s.replication, min_copies=s.min_copies, seed=cfg.run.seed)


# ---- model half: what the run trains, serves and publishes


def has_catalog(cfg: Config) -> bool:
    """Whether the run has an item catalog (`input.catalog.path`): the catalog stage runs and
    calibrate, train, index, evaluate and publish read it."""
    return bool(cfg.input.catalog.path)


def categories_from_catalog(cfg: Config) -> bool:
    """Whether item categories come from the catalog (`input.catalog.category`; it supersedes
    input.categories_path): `recembed.catalog.item_categories(from_catalog=...)`."""
    return bool(cfg.input.catalog.category)


def writes_context(cfg: Config) -> bool:
    """Whether the run has output (context) vectors: negative sampling trains them, and
    `train.export_context_vectors` keeps them. Evaluation, the gate and the published version
    all see the same answer."""
    return cfg.train.negative > 0 and cfg.train.export_context_vectors


def corpus_names(cfg: Config) -> list[str]:
    """The skip-gram corpora training reads, in concatenation order: "sessions" (the item2vec
    corpus) and/or "walks" (none with line.mode or svd.mode = "alone"). A key still at "auto"
    (not yet resolved by calibrate) counts as on, as the stages' declarations need."""
    if cfg.line.mode == "alone" or cfg.svd.mode == "alone":
        return []
    return ["sessions"] * (cfg.sequences.enabled is not False) + [
        "walks"] * (cfg.walks.enabled is not False)


def uses_line(cfg: Config) -> bool:
    """Whether training may use LINE vectors: line.mode "alone" / "concat", or "auto" while
    calibration may still choose a LINE option (the corpus left to it and
    `calibrated_corpora` listing one); the train stage then reads the item graph."""
    mode = cfg.line.mode
    if mode != "auto":
        return mode != "off"
    return corpus_set(cfg) is None and any(split_corpus(c)[1] != "off"
                                           for c in calibrated_corpora(cfg))


def uses_svd(cfg: Config) -> bool:
    """Whether training may factorize item-kNN's similarity (`recembed.factorize`): svd.mode
    "alone", or "auto" while calibration may still choose the option "svd"; the train stage
    then reads the training sessions."""
    if cfg.svd.mode != "auto":
        return cfg.svd.mode == "alone"
    return corpus_set(cfg) is None and "svd" in calibrated_corpora(cfg)


def uses_graph(cfg: Config) -> bool:
    """Whether the graph stage runs: the walks or LINE need it."""
    return cfg.walks.enabled is not False or uses_line(cfg)


def model_name(cfg: Config) -> str:
    """item2vec, deepwalk, node2vec, line or a '+' of them, or svd: what the vectors were
    trained on."""
    if cfg.svd.mode == "alone":
        return "svd"
    parts = [] if cfg.line.mode == "alone" else (
        ["item2vec"] * (cfg.sequences.enabled is not False)
        + [cfg.walks.method] * (cfg.walks.enabled is not False))
    return "+".join(parts + ["line"] * (cfg.line.mode in ("alone", "concat")))


def line_params(cfg: Config) -> LineParams:
    """`[line]` and the run's seed as `recembed.line.LineParams`; `samples` = 0 when "auto"
    (the caller sets it from the training amount: `recembed.line.samples_for`)."""
    ln = cfg.line
    return LineParams(order=ln.order, dimension=ln.dimension,
                      samples=0 if ln.samples == "auto" else int(ln.samples),
                      negative=ln.negative, ns_exponent=ln.ns_exponent, alpha=ln.alpha,
                      seed=cfg.run.seed, workers=ln.workers)


def train_params(cfg: Config) -> TrainParams:
    """The skip-gram settings of `[train]` (epochs 1 when the training amount decides)."""
    t = cfg.train
    return TrainParams(vector_size=t.vector_size, window=t.window,
                       shrink_windows=t.shrink_windows, negative=t.negative,
                       ns_exponent=t.ns_exponent, sample=t.sample, alpha=t.alpha,
                       min_alpha=t.min_alpha, min_count=t.min_count, hs=t.hs,
                       workers=t.workers or cfg.run.n_threads(), max_tokens=t.max_tokens,
                       epochs=1 if t.epochs == "auto" else t.epochs)


def postprocess(cfg: Config) -> str:
    """The post-processing of the vector space a resolved config applies
    (`recembed.postprocess`; "auto" left over = "none")."""
    return "none" if cfg.train.postprocess == "auto" else cfg.train.postprocess


def postprocess_options(cfg: Config) -> list[str]:
    """The transforms calibration tries, simplest first: the configured one, or with "auto"
    `recembed.postprocess.auto_options` (only "none" with train.warm_start, which continues
    from the published vectors; without the dimension-reducing whitening when index.type is
    set, whose factory was checked against train.vector_size)."""
    from recembed.postprocess import auto_options, output_dim

    t = cfg.train
    if t.postprocess != "auto":
        return [t.postprocess]
    if continues_published(cfg):
        return ["none"]
    opts = auto_options(t.vector_size)
    if cfg.index.type != "auto":
        opts = [o for o in opts if output_dim(o, t.vector_size) == t.vector_size]
    return opts


def continues_published(cfg: Config) -> bool:
    """Whether training may start from the published vectors (`train.warm_start`, or
    `train.mode = "incremental"`): then the vector space is never post-processed and LINE is
    never a calibration option."""
    return cfg.train.warm_start or cfg.train.mode == "incremental"


def incremental_params(cfg: Config) -> IncrementalParams:
    """`train.mode`, `train.full_every_days`, `train.replay_share` and the run's seed as
    `recembed.incremental.IncrementalParams`."""
    t = cfg.train
    return IncrementalParams(mode=t.mode, full_every_days=t.full_every_days,
                             replay_share=t.replay_share, seed=cfg.run.seed)


def target_tokens(cfg: Config) -> int:
    """The training amount (corpus tokens x epochs) of a resolved config; 0 = train.epochs
    decides."""
    t = cfg.train
    return int(t.target_tokens) if t.epochs == "auto" else 0


def cold_params(cfg: Config) -> ColdParams:
    """The cold-start settings; scheme "off" without a catalog."""
    c, cat = cfg.cold, cfg.input.catalog
    return ColdParams(scheme=c.scheme if has_catalog(cfg) else "off", knn=c.knn,
                      candidate_scale=c.candidate_scale, context_copies=c.context_copies,
                      n_attributes=len(cat.attributes), dated=bool(cat.listed),
                      from_catalog=categories_from_catalog(cfg))


def index_params(cfg: Config) -> IndexParams:
    """The `[index]` settings."""
    ic = cfg.index
    return IndexParams(factory=ic.type, metric=ic.metric, target_recall=ic.target_recall,
                       tune_k=ic.tune_k, tune_queries=ic.tune_queries,
                       memory_budget_gb=ic.memory_budget_gb, hnsw_m=ic.hnsw_m,
                       ef_construction=ic.ef_construction)


def calibration_reuse_root(cfg: Config) -> Path | None:
    """The published root (`publish.dir`) whose version calibration re-validates with
    `calibrate.reuse = "auto"`, else None. Read whether or not this run publishes: turning
    `publish.enabled` on for a finished run must not change calibrate's fingerprint."""
    return Path(cfg.publish.dir) if cfg.calibrate.reuse == "auto" else None


def published_root(cfg: Config) -> Path | None:
    """The published root (`publish.dir`) when publishing is on, else None."""
    return Path(cfg.publish.dir) if cfg.publish.enabled else None


def publish_policy(cfg: Config) -> PublishPolicy:
    """The `[publish]` settings (and the evaluation's query sample, which the gate shares)."""
    pc = cfg.publish
    return PublishPolicy(max_recall_drop=pc.max_recall_drop,
                         min_coverage_ratio=pc.min_coverage_ratio, force=pc.force,
                         keep_versions=pc.keep_versions, lock_wait_s=pc.lock_wait_s,
                         align_to_previous=pc.align_to_previous, drift_k=pc.drift_k,
                         max_queries=cfg.evaluate.max_queries, seed=cfg.run.seed)


# ---- the blend: [serving] <-> BlendSettings, both directions in one place

# the [serving] keys calibration may choose (the others are never searched)
CALIBRATED_SERVING_KEYS = ("weights", "decay", "temperature", "candidates", "neighbours",
                           "neighbour_sample")


def neighbours_setting(method: str, sample: int | str = "auto") -> dict:
    """`BlendSettings.neighbours` of a session-kNN method and a `serving.neighbour_sample`
    ("auto" = the method's default sample size)."""
    return {"method": method} if sample == "auto" else {"method": method,
                                                         "sample_size": int(sample)}


def blend_settings(cfg: Config) -> BlendSettings:
    """The serving blend of a config; keys still at "auto" take `BlendSettings`' defaults
    (a resolved config has none left)."""
    sv, d = cfg.serving, BlendSettings()

    def pick(key: str):
        v = getattr(sv, key)
        return getattr(d, key) if v == "auto" else v

    nb = neighbours_setting(d.neighbours["method"] if sv.neighbours == "auto"
                            else sv.neighbours, sv.neighbour_sample)
    return BlendSettings(weights=dict(pick("weights")), decay=float(pick("decay")),
                         vectors_decay=float(pick("vectors_decay")), temperature=float(pick("temperature")), history=sv.history,
                         repeat_decay=sv.repeat_decay, candidates=int(pick("candidates")),
                         popular=sv.popular, neighbours=dict(nb),
                         retrieval="index" if sv.retrieval == "auto" else sv.retrieval)


def blend_fixed(cfg: Config) -> dict[str, Any]:
    """The blend settings a config sets explicitly (never searched): BlendSettings field ->
    value, plus "neighbour_sample" when `serving.neighbour_sample` is set."""
    sv = cfg.serving
    fixed = {k: getattr(sv, k) for k in ("weights", "decay", "temperature", "candidates",
                                          "neighbour_sample") if getattr(sv, k) != "auto"}
    if sv.neighbours != "auto":
        fixed["neighbours"] = neighbours_setting(sv.neighbours, sv.neighbour_sample)
    return fixed


def neighbour_options(cfg: Config) -> list[dict]:
    """The session-kNN settings the blend search tries (first = the default)."""
    return [neighbours_setting(m, cfg.serving.neighbour_sample) for m in NEIGHBOUR_METHODS]


def serving_values(st: BlendSettings, sample_size: int) -> dict[str, Any]:
    """The `[serving]` keys of a chosen blend (`recembed tune` writes them to tuned.toml):
    non-zero weights, decay, temperature, candidates, neighbours (the method) and
    neighbour_sample (`sample_size`, the sessions the method reads)."""
    return {"weights": {k: float(v) for k, v in st.weights.items() if v},
            "decay": float(st.decay), "temperature": float(st.temperature),
            "candidates": int(st.candidates), "neighbour_sample": int(sample_size),
            "neighbours": st.neighbours.get("method", "stan")}


# ---- calibration: what a run searches, and the config it then runs with


def calibration_plan(cfg: Config, *, progress: bool | None = None) -> CalibrationPlan:
    """What a run's calibration searches: only keys left at "auto" (`recembed.calibrate`)."""
    t = cfg.train
    fixed_corpus = corpus_set(cfg)
    corpora = (calibrated_corpora(cfg) if fixed_corpus is None else [fixed_corpus])
    amounts = sorted(cfg.calibrate.target_tokens)
    transforms = postprocess_options(cfg)
    if t.epochs != "auto":
        tokens: list[int] = [0]  # the configured epochs
    elif t.target_tokens != "auto":
        tokens = [int(t.target_tokens)]
    else:
        tokens = amounts
    fixed = blend_fixed(cfg)
    sgns = sgns_searched(cfg)
    decays = (VECTORS_DECAYS if cfg.serving.vectors_decay == "auto"
              else (float(cfg.serving.vectors_decay),))
    return CalibrationPlan(
        corpora=corpora, target_tokens=tokens, half_life_days=cfg.session.half_life_days,
        graph_params=graph_params(cfg), walk_params=walk_params(cfg),
        # candidates train on one gensim thread whatever train.workers says: Hogwild threads
        # make every candidate's vectors, and so the choice, depend on how busy the machine is
        # (the demo chose walks 3M from 8 candidates with 2 threads, both 1M from 4 with one;
        # benchmarks/RESULTS.md, "make demo: the candidates' threads and the kernels'
        # compilation"); LINE's are line.workers
        train_params=replace(train_params(cfg), workers=1), line_params=line_params(cfg),
        blend_fixed=fixed, base_blend=blend_settings(cfg),
        neighbour_options=neighbour_options(cfg), rule_steps=cfg.serving.rule_steps,
        max_queries=cfg.calibrate.max_queries, max_train_tokens=cfg.calibrate.max_train_tokens,
        max_seconds=cfg.calibrate.max_seconds, enabled=cfg.calibrate.enabled,
        postprocess=transforms,
        progress=cfg.run.progress if progress is None else progress,
        reuse=cfg.calibrate.reuse,
        max_age_days=cfg.calibrate.max_age_days, max_turnover=cfg.calibrate.max_turnover,
        cost_ratio=cfg.calibrate.cost_ratio, sgns=sgns, sgns_values=sgns_values(cfg, sgns),
        vectors_decays=decays,
        searches=len(corpora) > 1 or len(tokens) > 1 or len(fixed) < 6
        or len(transforms) > 1 or bool(sgns) or len(decays) > 1)


def sgns_searched(cfg: Config) -> list[str]:
    """The skip-gram settings calibration searches for the exported vectors
    (`recembed.calibrate.sgns_search`): `calibrate.sgns` less the train keys the config sets
    itself (an explicit train.window, ... always wins)."""
    explicit = explicit_train_keys(cfg)
    return [k for k in cfg.calibrate.sgns if k not in explicit]


def explicit_train_keys(cfg: Config) -> set[str]:
    """The `[train]` keys whose value differs from the default: those the skip-gram search
    leaves alone. A value equal to the default counts as unset, so a config read back from a
    run's config.toml (every key written out) searches and resolves as the original did."""
    t = cfg.train
    return {k for k, f in type(t).model_fields.items()
            if getattr(t, k) != f.get_default(call_default_factory=True)}


def sgns_values(cfg: Config, keys: list[str]) -> dict[str, tuple]:
    """The values tried per searched setting (`recembed.calibrate.SGNS_VALUES`); dimensions
    an explicit train.postprocess cannot apply to (whiten:R above them) are left out."""
    from recembed.calibrate import SGNS_VALUES
    from recembed.postprocess import parse_spec

    out = {k: SGNS_VALUES[k] for k in keys}
    if "vector_size" in out and cfg.train.postprocess != "auto":
        ok = []
        for d in out["vector_size"]:
            try:
                parse_spec(cfg.train.postprocess, d)
            except ValueError:
                continue
            ok.append(d)
        out["vector_size"] = tuple(ok)
    return out


def training_amount_set(cfg: Config) -> bool:
    """Whether the config sets the training amount (train.epochs or train.target_tokens):
    then calibration and tune keep it."""
    return cfg.train.epochs != "auto" or cfg.train.target_tokens != "auto"


def corpus_set(cfg: Config) -> str | None:
    """The corpus option a config sets (`split_corpus` spells them): walks.enabled or
    sequences.enabled given explicitly (a switch left at "auto" beside one that is set counts
    as on), line.mode "alone" ("line"); line.mode "concat" appends "+line" to a set corpus,
    and line.mode "auto" beside a set switch counts as "off". None = calibration chooses."""
    w, sq, mode = cfg.walks.enabled, cfg.sequences.enabled, cfg.line.mode
    if cfg.svd.mode == "alone":
        return "svd"
    if mode == "alone":
        return "line"
    if w == "auto" and sq == "auto":
        return None
    walks, sessions = w in (True, "auto"), sq in (True, "auto")
    base = "both" if walks and sessions else ("walks" if walks else "sessions")
    return base + "+line" if mode == "concat" else base


def calibrated_corpora(cfg: Config) -> list[str]:
    """The corpus options calibration tries when `corpus_set` is None: `calibrate.corpora`,
    with line.mode "concat" each skip-gram corpus with "+line" appended, with "off" none of
    LINE's; under train.warm_start or the "context" cold scheme LINE options are dropped (the
    config refuses them set explicitly); "svd" is dropped under the same conditions, with
    svd.mode "off" and with line.mode "concat" (it trains no skip-gram to append to)."""
    mode, out = cfg.line.mode, []
    no_line = continues_published(cfg) or (has_catalog(cfg) and cfg.cold.scheme == "context")
    for c in cfg.calibrate.corpora:
        if c == "svd":
            if not (no_line or mode == "concat" or cfg.svd.mode == "off") and c not in out:
                out.append(c)
            continue
        base, kind = split_corpus(c)
        if mode == "concat":
            c = None if base is None else base + "+line"
        elif mode == "off" or (no_line and kind != "off"):
            c = base
        if c is not None and c not in out:
            out.append(c)
    return out or ["both+line" if mode == "concat" else "both"]


def resolve_config(cfg: Config, record: dict | None) -> Config:
    """A copy of `cfg` with every "auto" key set: to the calibrated choice in `record`
    (calibration.json), or to the documented fallback (both corpora, no LINE, 3M training
    tokens, the default blend, no post-processing of the vectors). The skip-gram settings the
    calibration record's ``sgns.chosen`` holds replace the train keys the config does not set
    itself (`sgns_searched`)."""
    out = cfg.model_copy(deep=True)
    rec = record if record and record.get("enabled") else {}
    corpus = rec.get("corpus") or corpus_set(cfg) or "both"
    base, kind = split_corpus(corpus)
    if out.line.mode == "auto":
        out.line.mode = kind
    if out.svd.mode == "auto":
        out.svd.mode = "alone" if corpus == "svd" else "off"
    if out.line.mode == "alone" or out.svd.mode == "alone":
        base = None
        out.walks.enabled = out.walks.enabled is True
        out.sequences.enabled = out.sequences.enabled is True
    if out.walks.enabled == "auto" and out.sequences.enabled == "auto":
        out.walks.enabled = base in ("both", "walks")
        out.sequences.enabled = base in ("both", "sessions")
    if out.walks.enabled == "auto":
        out.walks.enabled = True
    if out.sequences.enabled == "auto":
        out.sequences.enabled = True
    if out.train.target_tokens == "auto":
        out.train.target_tokens = int(rec.get("target_tokens") or DEFAULT_TARGET_TOKENS)
    if out.train.postprocess == "auto":
        # calibration's choice of the vector space's post-processing (never with warm start)
        out.train.postprocess = "none" if continues_published(out) else \
            str(rec.get("postprocess") or "none")
    explicit = explicit_train_keys(cfg)
    for key, value in ((rec.get("sgns") or {}).get("chosen") or {}).items():
        # the skip-gram search's choice, for the train keys the config leaves unset
        if key not in explicit:
            setattr(out.train, key, value)
    chosen = (rec.get("blend") or {}).get("settings") or {}
    default = BlendSettings()
    for key in ("weights", "decay", "temperature", "candidates"):
        if getattr(out.serving, key) == "auto":
            setattr(out.serving, key, chosen.get(key, getattr(default, key)))
    if out.serving.vectors_decay == "auto":
        out.serving.vectors_decay = float(rec.get("vectors_decay") or default.vectors_decay)
    nb = chosen.get("neighbours") or default.neighbours
    if out.serving.neighbours == "auto":
        out.serving.neighbours = nb["method"]
    if out.serving.neighbour_sample == "auto" and "sample_size" in nb:
        out.serving.neighbour_sample = int(nb["sample_size"])
    return out


def resolve_retrieval(setting: str, n_items: int, candidates: int, max_mb: float
                      ) -> tuple[str, str]:
    """("index" | "table", why) for `serving.retrieval`: "auto" takes the per-item candidate
    tables when they fit in `max_mb` (n_items x (candidates + candidates // 4) x 4 bytes);
    they replace the two ANN searches per query at the same recall (benchmarks/RESULTS.md,
    "serving throughput")."""
    width = min(candidates, n_items)
    mb = n_items * (width + max(width // 4, 1)) * 4 / 2**20
    if setting != "auto":
        return setting, f"set in serving.retrieval ({mb:,.0f} MB of tables)" \
            if setting == "table" else "set in serving.retrieval"
    if mb <= max_mb:
        return "table", f"auto: the candidate tables take {mb:,.0f} MB <= serving.table_max_mb"
    return "index", (f"auto: the candidate tables would take {mb:,.0f} MB > "
                     f"serving.table_max_mb = {max_mb:,.0f}: searching the indexes per query")


def served_blend(cfg: Config, n_items: int) -> tuple[BlendSettings, str]:
    """The blend a resolved config serves over `n_items` rows, its retrieval chosen
    (`resolve_retrieval`), and why that retrieval."""
    st = blend_settings(cfg)
    st.retrieval, why = resolve_retrieval(cfg.serving.retrieval, n_items, st.candidates,
                                          cfg.serving.table_max_mb)
    return st, why
