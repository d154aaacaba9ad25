"""One typed config for the whole pipeline, read from TOML.

Every knob lives here with its default; `pipelines/nightly.toml` documents each key. Unknown keys
are an error naming the key and the closest valid one.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from recembed.artifacts import TUNED
from recembed.blend.settings import SIGNALS
from recembed.postprocess import output_dim, parse_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says what to change."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(_Section):
    name: str = "recembed"
    runs_dir: str = "runs"
    seed: int = 42
    threads: int = 0  # 0 = all cores
    progress: bool = True
    # where the heavy stages (ingest, sessionize, graph, walks, sequences) run; both engines
    # write the same artifacts, so train / index / evaluate / publish never know which ran
    engine: Literal["local", "spark"] = "local"

    def n_threads(self) -> int:
        """Threads to use: the configured number, or all cores when 0."""
        return self.threads if self.threads > 0 else (os.cpu_count() or 1)


class ColumnsConfig(_Section):
    """Input column names; "" or unset for an absent optional column."""

    item: str = Field("item_id", min_length=1)
    ts: str = Field("timestamp", min_length=1)
    user: str | None = "user_id"
    session: str | None = None
    event_type: str | None = None
    ts_offset: str | None = None

    @field_validator("user", "session", "event_type", "ts_offset")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v or None


class CatalogConfig(_Section):
    """The item catalog (side information, `recembed.catalog`); path "" = no catalog."""

    path: str | None = None
    id: str = Field("item_id", min_length=1)
    attributes: list[str] = Field(default_factory=list)
    numeric: list[str] = Field(default_factory=list)
    buckets: int = Field(10, ge=2, le=1000)
    category: str | None = None
    listed: str | None = None

    @field_validator("path", "category", "listed")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v or None

    @model_validator(mode="after")
    def _columns_known(self) -> CatalogConfig:
        if self.path and not self.attributes:
            raise ValueError("input.catalog.attributes is empty: name at least one attribute "
                             "column of the catalog (e.g. [\"category\"])")
        extra = [c for c in self.numeric if c not in self.attributes]
        if extra:
            raise ValueError(f"input.catalog.numeric lists {extra}, which are not in "
                             f"input.catalog.attributes {self.attributes}; add them there")
        if self.category and self.category not in self.attributes:
            raise ValueError(f"input.catalog.category = {self.category!r} is not in "
                             f"input.catalog.attributes {self.attributes}; add it there")
        if self.category and self.category in self.numeric:
            raise ValueError(f"input.catalog.category = {self.category!r} is numeric "
                             "(input.catalog.numeric): a category must be categorical")
        if self.id in self.attributes:
            raise ValueError(f"input.catalog.id = {self.id!r} is also an attribute; remove it "
                             "from input.catalog.attributes")
        return self


class InputConfig(_Section):
    paths: list[str] = Field(default_factory=lambda: ["data/sample_clicks.csv"])
    test_paths: list[str] = Field(default_factory=list)
    format: Literal["auto", "csv", "tsv", "parquet"] = "auto"
    delimiter: str | None = None
    columns: ColumnsConfig = Field(default_factory=ColumnsConfig)
    ts_unit: Literal["auto", "s", "ms", "us", "ns", "iso"] = "auto"
    ts_offset_unit: Literal["s", "ms"] = "ms"
    event_types: list[str] = Field(default_factory=list)
    categories_path: str | None = None
    categories_columns: list[str] = Field(default_factory=lambda: ["item_id", "category"],
                                          min_length=2, max_length=2)
    na_values: list[str] = Field(default_factory=list)
    encoding: str = "utf-8"
    partition_date: str | None = None
    filters: dict[str, list[str | int]] = Field(default_factory=dict)
    catalog: CatalogConfig = Field(default_factory=CatalogConfig)

    @field_validator("delimiter", "categories_path", "partition_date")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        # TOML has no null: dump_config writes None as "", which must load back as None
        return v or None

    @model_validator(mode="after")
    def _needs_columns(self) -> InputConfig:
        if self.event_types and not self.columns.event_type:
            raise ValueError(
                f"input.event_types={self.event_types} needs input.columns.event_type (the "
                "column that holds the event type); set it, or set input.event_types = []")
        if not self.columns.user and not self.columns.session:
            raise ValueError(
                "input.columns.user is empty and input.columns.session is not set: events "
                "cannot be grouped into sessions; map a user column or a session column")
        return self

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, v: str) -> str:
        import codecs

        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown text encoding {v!r} (e.g. utf-8, cp1252, latin-1)") from None
        return v



class IngestConfig(_Section):
    max_bad_fraction: float = Field(0.01, ge=0, le=1)
    max_ts_distance_days: float = Field(10_957.5, ge=0)
    window_days: float = Field(0.0, ge=0)
    drop_duplicates: bool = True


class SessionConfig(_Section):
    gap_minutes: float = Field(30.0, gt=0)
    auto_gap: bool = True
    max_short_share: float = Field(0.25, ge=0, le=1)
    max_length: int = Field(200, ge=2)
    min_length: int = Field(2, ge=1)
    collapse_repeats: bool = True
    half_life_days: float = Field(7.0, gt=0)


class BotConfig(_Section):
    enabled: bool = True
    max_events_per_day: int = Field(1000, ge=1)
    min_median_gap_s: float = Field(1.0, ge=0)
    min_events_for_gap_rule: int = Field(20, ge=2)
    outlier_z: float = Field(3.5, gt=0)
    max_share: float = Field(0.25, ge=0, le=1)


class HoldoutConfig(_Section):
    days: float = Field(1.0, ge=0)


class ValidationConfig(_Section):
    share: float = Field(0.1, ge=0, le=0.5)
    min_sessions: int = Field(1000, ge=0)
    max_sessions: int = Field(20_000, ge=0)


class CalibrateConfig(_Section):
    enabled: bool = True
    max_seconds: float = Field(0.0, ge=0)
    max_queries: int = Field(5000, ge=10)
    max_train_tokens: int = Field(3_000_000, ge=1000)
    corpora: list[Literal["both", "sessions", "walks", "line", "both+line", "sessions+line",
                          "walks+line", "svd"]] = Field(
        default_factory=lambda: ["both", "sessions", "walks", "svd"])
    target_tokens: list[int] = Field(default_factory=lambda: [1_000_000, 3_000_000, 10_000_000])
    reuse: Literal["auto", "never"] = "auto"
    max_age_days: float = Field(7.0, gt=0)
    max_turnover: float = Field(0.2, ge=0, le=1)
    cost_ratio: float = Field(6.0, ge=0.1, le=100)
    # the skip-gram settings searched for the exported vectors after the corpus / amount search
    # (recembed.calibrate.sgns_search, issue 24); [] = off; a train key set in the config is
    # never searched. Default window only: on five logs ns_exponent and sample never won, and
    # the full list cost DIGINETICA's calibrate 125 -> 366 s (benchmarks/RESULTS.md, "skip-gram
    # settings for the exported vectors")
    sgns: list[Literal["ns_exponent", "window", "sample", "vector_size", "alpha"]] = Field(
        default_factory=lambda: ["window"])

    @field_validator("sgns")
    @classmethod
    def _sgns_once(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError(f"calibrate.sgns={v} lists a setting twice")
        return v


class GraphConfig(_Section):
    window: int = Field(1, ge=1)
    distance_weighting: bool = False
    directed: bool = False
    min_weight: float = Field(0.0, ge=0)
    max_out_edges: int = Field(0, ge=0)


class WalksConfig(_Section):
    enabled: bool | Literal["auto"] = "auto"
    method: Literal["deepwalk", "node2vec"] = "deepwalk"
    walks_per_node: int = Field(5, ge=1)
    walk_length: int = Field(20, ge=2)
    p: float = Field(1.0, gt=0)
    q: float = Field(1.0, gt=0)
    start_by_popularity: bool = False
    max_tokens: int = Field(10_000_000, ge=0)


class SequencesConfig(_Section):
    enabled: bool | Literal["auto"] = "auto"
    replication: float = Field(1.0, gt=0)
    min_copies: int = Field(1, ge=0)


class LineConfig(_Section):
    """LINE vectors over the item graph (`recembed.line`): alone, or appended to SGNS's."""

    mode: Literal["auto", "off", "alone", "concat"] = "auto"
    order: Literal[1, 2, "both"] = 1
    dimension: int = Field(64, ge=2)
    samples: Annotated[int, Field(ge=1000)] | Literal["auto"] = "auto"
    negative: int = Field(5, ge=1)
    ns_exponent: float = 0.75
    alpha: float = Field(0.025, gt=0)
    workers: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _even(self) -> LineConfig:
        if self.order == "both" and self.dimension % 2:
            raise ValueError(f'line.order = "both" trains half of line.dimension per order: '
                             f"line.dimension={self.dimension} must be even")
        return self


class SvdConfig(_Section):
    """Item vectors factorizing item-kNN's similarity (`recembed.factorize`), instead of the
    skip-gram: "auto" = calibration may choose the corpus option "svd", "alone" = always,
    "off" = never."""

    mode: Literal["auto", "off", "alone"] = "auto"


class ColdConfig(_Section):
    """Vectors for catalog items without clicks (`recembed.catalog`); needs input.catalog."""

    scheme: Literal["context", "pooling", "knn", "off"] = "pooling"
    knn: int = Field(3, ge=1)
    context_copies: float = Field(1.0, gt=0, le=10)
    candidate_scale: float = Field(1.0, ge=0, le=1)


class TrainConfig(_Section):
    vector_size: int = Field(64, ge=2)
    window: int = Field(3, ge=1)
    shrink_windows: bool = True
    negative: int = Field(10, ge=0)
    ns_exponent: float = 0.5
    sample: float = Field(0.0, ge=0)
    epochs: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    target_tokens: Annotated[int, Field(ge=1000)] | Literal["auto"] = "auto"
    max_tokens: int = Field(60_000_000, ge=0)
    # 0.05, not gensim's 0.025: on eight logs the exported vectors gained up to 5 SE on
    # validation (histories 0.724 -> 0.772) and no validation blend moved by one SE (benchmarks/RESULTS.md,
    # "the skip-gram learning rate")
    alpha: float = Field(0.05, gt=0)
    min_alpha: float = Field(0.0001, ge=0)
    min_count: int = Field(1, ge=1)
    hs: bool = False
    workers: int = Field(1, ge=0)  # 1 = reproducible; 0 = run.threads (Hogwild)
    export_context_vectors: bool = True
    warm_start: bool = False
    # incremental nights (recembed.incremental): "full" retrains from scratch every run;
    # "incremental" continues from the current published version on the sessions added since
    # its data end plus a replay share of older ones, with a full retrain every
    # full_every_days of data time (and whenever the previous version cannot be continued)
    mode: Literal["full", "incremental"] = "full"
    full_every_days: float = Field(7.0, gt=0)
    replay_share: float = Field(0.1, ge=0, le=1)
    # post-processing of the vector space (recembed.postprocess): none, center, abtt:D,
    # whiten, whiten:R, zca; "auto" = calibration's choice ("none" without calibration)
    postprocess: str = "auto"

    @model_validator(mode="after")
    def _postprocess_spec(self) -> TrainConfig:
        if self.postprocess != "auto":
            try:
                parse_spec(self.postprocess, self.vector_size)
            except ValueError as e:
                raise ValueError(f"train.postprocess: {e}") from e
        return self


class IndexConfig(_Section):
    type: str = Field("auto", min_length=1)
    metric: Literal["cosine", "ip"] = "cosine"
    target_recall: float = Field(0.95, gt=0, le=1)
    tune_k: int = Field(100, ge=1)
    tune_queries: int = Field(1000, ge=10)
    memory_budget_gb: float = Field(8.0, gt=0)
    hnsw_m: int = Field(32, ge=4)
    ef_construction: int = Field(200, ge=8)


class ServingConfig(_Section):
    # one list of signals: recembed.blend.settings, a leaf module below the config
    weights: dict[Literal[SIGNALS], float] | Literal["auto"] = "auto"  # type: ignore[valid-type]
    decay: Annotated[float, Field(gt=0, le=1)] | Literal["auto"] = "auto"
    vectors_decay: Annotated[float, Field(gt=0, le=1)] | Literal["auto"] = "auto"
    temperature: Annotated[float, Field(gt=0)] | Literal["auto"] = "auto"
    neighbours: Literal["auto", "vsknn", "stan", "off"] = "auto"
    neighbour_sample: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    history: int = Field(10, ge=1)
    repeat_decay: float = Field(0.7, gt=0, le=1)
    candidates: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    popular: int = Field(50, ge=0)
    rule_steps: int = Field(10, ge=1)
    retrieval: Literal["auto", "index", "table"] = "auto"
    table_max_mb: float = Field(1024.0, gt=0)

    @field_validator("weights")
    @classmethod
    def _known_signals(cls, v):
        if isinstance(v, dict):
            if any(x < 0 for x in v.values()) or not any(v.values()):
                raise ValueError("weights must be >= 0 and not all 0")
        return v


class EvaluateConfig(_Section):
    enabled: bool = True
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10, 20, 50])
    baselines: list[Literal["pop", "session_pop", "item_knn", "sr", "vsknn", "stan", "vstan",
                            "category"]] = \
        Field(default_factory=lambda: ["pop", "session_pop", "item_knn", "sr", "vsknn", "stan",
                                       "vstan"])
    strategies: list[Literal["last", "decayed", "directional", "ann"]] = Field(
        default_factory=lambda: ["last", "decayed", "directional", "ann"]
    )
    decay: float = Field(0.65, gt=0, le=1)
    history: int = Field(10, ge=1)
    max_queries: int = Field(10_000, ge=0)
    report: bool = True

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("needs at least one cut-off, e.g. [1, 5, 10, 20, 50]")
        bad = [k for k in v if k < 1]
        if bad:
            raise ValueError(f"cut-offs must be >= 1 (got {bad})")
        return sorted(set(v))


class PublishConfig(_Section):
    enabled: bool = False
    dir: str = "published"
    max_recall_drop: float = Field(0.05, ge=0, le=1)
    min_coverage_ratio: float = Field(0.5, ge=0, le=1)
    force: bool = False
    keep_versions: int = Field(5, ge=1)
    lock_wait_s: float = Field(0.0, ge=0)
    align_to_previous: bool = False
    drift_k: int = Field(10, ge=1)


class SparkConfig(_Section):
    """`run.engine = "spark"`: where the SparkSession runs and extra Spark settings."""

    master: str = Field("local[2]", min_length=1)
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("master")
    @classmethod
    def _known_master(cls, v: str) -> str:
        if not re.match(r"^(local(\[(\*|\d+)(,\d+)?\])?|yarn|k8s://\S+|spark://\S+|"
                        r"mesos://\S+)$", v):
            raise ValueError(f"{v!r} is not a Spark master URL; use local[N], yarn, "
                             "k8s://https://host:port or spark://host:port")
        return v

    @field_validator("conf")
    @classmethod
    def _spark_keys(cls, v: dict) -> dict:
        bad = [k for k in v if not k.startswith("spark.")]
        if bad:
            raise ValueError(f"keys {bad} are not Spark settings (they start with 'spark.', "
                             'e.g. conf = { "spark.executor.memory" = "4g" })')
        if "spark.master" in v:
            raise ValueError("set the master with spark.master = ..., not in spark.conf")
        return v


class Config(_Section):
    run: RunConfig = Field(default_factory=RunConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    session: SessionConfig = Field(default_factory=SessionConfig)
    bots: BotConfig = Field(default_factory=BotConfig)
    holdout: HoldoutConfig = Field(default_factory=HoldoutConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    calibrate: CalibrateConfig = Field(default_factory=CalibrateConfig)
    graph: GraphConfig = Field(default_factory=GraphConfig)
    walks: WalksConfig = Field(default_factory=WalksConfig)
    sequences: SequencesConfig = Field(default_factory=SequencesConfig)
    line: LineConfig = Field(default_factory=LineConfig)
    svd: SvdConfig = Field(default_factory=SvdConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    cold: ColdConfig = Field(default_factory=ColdConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)

    @model_validator(mode="after")
    def _cross_section(self) -> Config:
        if self.publish.enabled and 20 not in self.evaluate.ks:
            # the publish quality gate compares Recall@20 of the new and the current version
            raise ValueError(
                f"evaluate.ks={self.evaluate.ks} must include 20 when publish.enabled = true "
                "(the quality gate compares Recall@20)")
        if self.index.type != "auto":
            # the index holds the served vectors: LINE changes their dimension, and whiten:R
            # reduces it to R
            _check_index_type(self.index.type,
                              output_dim(self.train.postprocess, exported_dimension(self)),
                              dimension_keys(self))
        return self

    @model_validator(mode="after")
    def _runnable(self) -> Config:
        # combinations of sections, every key of which is valid alone, that no run can execute
        # (those within one section are that section's validators: InputConfig._needs_columns)
        t, ln, sv = self.train, self.line, self.svd
        # vector_size left at its default: the skip-gram search may change it
        searched_dim = ("vector_size" in self.calibrate.sgns and
                        t.vector_size == type(t).model_fields["vector_size"].default)
        bad = [
            (t.negative == 0 and not t.hs,
             "train.negative = 0 with train.hs = false leaves no training objective; set "
             "train.negative > 0 or train.hs = true"),
            (not self.sequences.enabled and not self.walks.enabled and ln.mode != "alone"
             and sv.mode != "alone",
             "sequences.enabled = false and walks.enabled = false leave no training corpus; "
             'enable one (or set line.mode = "alone" or svd.mode = "alone")'),
            (sv.mode == "alone" and True in (self.sequences.enabled, self.walks.enabled),
             'svd.mode = "alone" trains no skip-gram, but sequences.enabled or walks.enabled '
             'is true; leave them at "auto" / false or set svd.mode = "off"'),
            (sv.mode == "alone" and ln.mode in ("alone", "concat"),
             f'svd.mode = "alone" with line.mode = "{ln.mode}": the vectors are either the '
             'factorization or LINE\'s; set one of them to "off"'),
            (sv.mode == "alone" and (t.warm_start or t.mode == "incremental"),
             'svd.mode = "alone" with train.warm_start = true or train.mode = "incremental": '
             "both continue skip-gram vectors; set svd.mode = \"off\" or turn them off"),
            (sv.mode == "alone" and bool(self.input.catalog.path)
             and self.cold.scheme == "context",
             'svd.mode = "alone" with cold.scheme = "context": attribute tokens are trained in '
             'the skip-gram only; use cold.scheme = "pooling" or "knn"'),
            (ln.mode == "alone" and True in (self.sequences.enabled, self.walks.enabled),
             'line.mode = "alone" trains no skip-gram, but sequences.enabled or walks.enabled '
             'is true; set line.mode = "concat" or leave them at "auto" / false'),
            (ln.mode == "concat" and t.negative == 0,
             'line.mode = "concat" needs train.negative > 0: the directional path appends '
             "LINE's context vectors to SGNS's"),
            (ln.mode in ("alone", "concat") and t.warm_start,
             f'line.mode = "{ln.mode}" with train.warm_start = true: warm start continues '
             "skip-gram vectors only; set line.mode = \"off\" or train.warm_start = false"),
            (ln.mode in ("alone", "concat") and bool(self.input.catalog.path)
             and self.cold.scheme == "context",
             f'line.mode = "{ln.mode}" with cold.scheme = "context": attribute tokens are '
             'trained in the skip-gram only; use cold.scheme = "pooling" or "knn"'),
            (ln.mode == "off" and any("line" in c for c in self.calibrate.corpora)
             and self.walks.enabled == "auto" and self.sequences.enabled == "auto",
             f"calibrate.corpora={self.calibrate.corpora} lists a LINE option but "
             'line.mode = "off"; set line.mode = "auto" or drop it from calibrate.corpora'),
            (t.warm_start and t.postprocess not in ("auto", "none"),
             f"train.warm_start = true starts training from the published vectors, which "
             f"train.postprocess = {t.postprocess!r} would have transformed (not a skip-gram "
             "space to continue from); set train.postprocess = \"none\" or \"auto\" (with "
             "warm start, auto means none)"),
            (t.mode == "incremental" and ln.mode in ("alone", "concat"),
             f'train.mode = "incremental" with line.mode = "{ln.mode}": incremental training '
             'continues skip-gram vectors only; set line.mode = "off" or train.mode = "full"'),
            (t.mode == "incremental" and t.postprocess not in ("auto", "none"),
             f'train.mode = "incremental" continues from the published vectors, which '
             f"train.postprocess = {t.postprocess!r} would have transformed (not a skip-gram "
             'space to continue from); set train.postprocess = "none" or "auto" (with '
             "incremental mode, auto means none)"),
            (searched_dim and self.index.type != "auto",
             f"calibrate.sgns lists vector_size but index.type = {self.index.type!r} was "
             "checked against train.vector_size; set train.vector_size, leave index.type at "
             '"auto" or drop vector_size from calibrate.sgns'),
            (searched_dim and t.warm_start,
             "calibrate.sgns lists vector_size with train.warm_start = true (warm start "
             "continues the published vectors, of one dimension); set train.vector_size or "
             "drop vector_size from calibrate.sgns"),
            (self.publish.enabled and not self.evaluate.enabled,
             "publish.enabled = true needs evaluate.enabled = true (the quality gate compares "
             "evaluations)"),
            (self.run.engine == "spark" and not _has_pyspark(),
             'run.engine = "spark" needs pyspark, which is not installed: pip install '
             '"recembed[spark]" (or set run.engine = "local")'),
        ]
        msgs = [m for cond, m in bad if cond]
        msgs += size_problems(self)
        if msgs:
            raise ValueError("; ".join(msgs))
        return self


def exported_dimension(cfg: Config) -> int:
    """Dimension of the published vectors: train.vector_size, line.dimension (line.mode =
    "alone") or their sum ("concat"); "auto" counts as SGNS alone (calibration may still pick
    a LINE option, checked again on the resolved config)."""
    mode = cfg.line.mode
    if mode == "alone":
        return cfg.line.dimension
    if mode == "concat":
        return cfg.train.vector_size + cfg.line.dimension
    return cfg.train.vector_size


def dimension_keys(cfg: Config) -> str:
    """The keys that set `exported_dimension`, for messages."""
    return {"alone": "line.dimension", "concat": "train.vector_size + line.dimension"}.get(
        cfg.line.mode, "train.vector_size")


# A lower bound on the vocabulary when estimating memory at load, before any input is read: a
# log of fewer items is not worth an embedding run.
MIN_ITEMS_ESTIMATE = 1_000
# gensim cuts longer sentences into pieces of this many tokens (MAX_WORDS_IN_BATCH): a longer
# walk only costs memory (walk buffers of walk_length per thread) and never trains as one
MAX_WALK_LENGTH = 10_000
_GIB = 1 << 30


def physical_memory() -> int:
    """This machine's physical memory in bytes (0 when the platform does not say)."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def size_problems(cfg: Config, memory: int | None = None) -> list[str]:
    """Sizes no run can fit, refused at load naming the key: an estimate of the memory each
    needs (a lower bound, from `MIN_ITEMS_ESTIMATE` items) against the machine's memory.

    - `train.vector_size`: 3 float32 matrices of items x vector_size (input and context
      vectors, the unit copy the index is built from).
    - `walks.walk_length`: at most `MAX_WALK_LENGTH` steps (the trainer's sentence limit);
      `walks.walk_length` x `walks.walks_per_node` x items int32 tokens when `walks.max_tokens`
      = 0 (no cap) must fit.

    Parameters
    ----------
    cfg : Config
    memory : int, optional
        Bytes available; default `physical_memory()` (0: no memory check).

    Returns
    -------
    list of str
        One message per key; empty when every size can fit.
    """
    mem = physical_memory() if memory is None else memory
    out = []
    t, w = cfg.train, cfg.walks
    vec = 3 * MIN_ITEMS_ESTIMATE * t.vector_size * 4
    if mem and vec > mem:
        out.append(f"train.vector_size={t.vector_size:,} needs at least {vec / _GIB:,.1f} GiB "
                   f"(3 float32 matrices of {MIN_ITEMS_ESTIMATE:,} items x vector_size, a lower "
                   f"bound), more than this machine's {mem / _GIB:,.1f} GiB; 32-300 is usual")
    if w.enabled is not False and w.walk_length > MAX_WALK_LENGTH:
        out.append(f"walks.walk_length={w.walk_length:,} is above {MAX_WALK_LENGTH:,}: the "
                   "trainer cuts sentences at that many tokens, so longer walks only take "
                   f"memory ({w.walk_length * 24 / _GIB:,.2f} GiB of walk buffers per thread); "
                   "20-80 is usual")
    tokens = MIN_ITEMS_ESTIMATE * w.walks_per_node * min(w.walk_length, MAX_WALK_LENGTH)
    if w.enabled is not False and w.max_tokens == 0 and mem and tokens * 4 > mem:
        out.append(f"walks.walks_per_node={w.walks_per_node:,} x walks.walk_length="
                   f"{w.walk_length:,} x at least {MIN_ITEMS_ESTIMATE:,} items is "
                   f"{tokens:,} tokens ({tokens * 4 / _GIB:,.1f} GiB as int32), more than this "
                   f"machine's {mem / _GIB:,.1f} GiB; lower them or set walks.max_tokens")
    return out


def _has_pyspark() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyspark") is not None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Config from a TOML file (or defaults) with `section.key=value` overrides applied.

    Path rule (one rule for every path key: input.paths, input.test_paths,
    input.categories_path, input.catalog.path, run.runs_dir, publish.dir, also when given by an override): a relative
    path resolves against the config's project root, which is the parent of the file's directory
    when that directory is named `pipelines`, else the file's own directory, and the current
    directory when there is no config file. So a config runs the same from any working directory.

    Includes: a top-level `include = ["tuned.toml", ...]` (paths relative to the including file)
    merges those files' tables under the file's own values: the including file's keys win over
    the included ones (later includes over earlier ones), and overrides win over both. Sections
    merge key by key; a non-section value (a list, `serving.weights`) is replaced whole. Path
    keys in an included file resolve like the including file's (against its project root).
    """
    raw: dict[str, Any] = {}
    base = project_root(path)
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        raw = _read_with_includes(path, ())
    for ov in overrides or []:
        _apply_override(raw, ov)
    _check_keys(raw, Config, "")
    where = path or "config"
    try:
        cfg = Config.model_validate(raw)
        cfg.input.paths = [_resolve(p, base) for p in cfg.input.paths]
        cfg.input.test_paths = [_resolve(p, base) for p in cfg.input.test_paths]
        if cfg.input.categories_path:
            cfg.input.categories_path = _resolve(cfg.input.categories_path, base)
        if cfg.input.catalog.path:
            cfg.input.catalog.path = _resolve(cfg.input.catalog.path, base)
        cfg.run.runs_dir = _resolve(cfg.run.runs_dir, base)
        cfg.publish.dir = _resolve(cfg.publish.dir, base)
    except ValidationError as e:
        raise ConfigError(f"{where}: {'; '.join(_error_text(err) for err in e.errors())}") from e
    return cfg


def _read_with_includes(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The TOML at `path` with its `include` files merged under its own values (see
    load_config); each included file's keys are checked here so an error names that file."""
    if not path.exists():
        via = f" (included from {chain[-1]})" if chain else ""
        raise ConfigError(f"config file {path} does not exist{via}")
    if path.resolve() in chain:
        raise ConfigError(f"{path}: include cycle ({' -> '.join(map(str, [*chain, path]))})")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e
    inc = raw.pop("include", [])
    inc = [inc] if isinstance(inc, str) else inc
    if not isinstance(inc, list) or not all(isinstance(x, str) for x in inc):
        raise ConfigError(f"{path}: include must be a list of file paths, e.g. "
                          f"include = [\"{TUNED.name}\"]")
    merged: dict[str, Any] = {}
    for name in inc:
        sub = path.parent / os.path.expanduser(name)
        part = _read_with_includes(sub, (*chain, path.resolve()))
        try:
            _check_keys(part, Config, "")
        except ConfigError as e:
            raise ConfigError(f"{sub} (included from {path}): {e}") from None
        merged = _merge(merged, part, Config)
    shadowed = [f"{sec}.{k}" for sec, tab in raw.items() if isinstance(tab, dict)
                and isinstance(merged.get(sec), dict)
                for k, v in tab.items() if k in merged[sec] and merged[sec][k] != v]
    if shadowed:  # not an error (that is the rule), but a tuned value silently unused is a trap
        logging.getLogger("recembed").warning(
            "%s sets %s itself: its values win over the included file(s) %s", path,
            ", ".join(shadowed), ", ".join(inc))
    return _merge(merged, raw, Config)


def _merge(base: dict[str, Any], over: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    # sections merge key by key; any other value (lists, serving.weights) is replaced whole
    out = dict(base)
    for key, value in over.items():
        field = model.model_fields.get(key)
        ann = field.annotation if field else None
        if (isinstance(value, dict) and isinstance(out.get(key), dict)
                and isinstance(ann, type) and issubclass(ann, BaseModel)):
            out[key] = _merge(out[key], value, ann)
        else:
            out[key] = value
    return out


def project_root(path: str | Path | None) -> Path:
    """The directory relative paths of the config at `path` resolve against (see load_config)."""
    if path is None:
        return Path.cwd()
    base = Path(path).resolve().parent
    return base.parent if base.name == "pipelines" else base


def dump_config(cfg: Config) -> str:
    """The resolved config as TOML text; `load_config` reads it back to the same config."""
    import tomli_w

    return tomli_w.dumps(_drop_none(cfg.model_dump(mode="json")))


def _error_text(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def _drop_none(d: Any) -> Any:
    # TOML has no null: an absent optional value is written as "", which loads back as None
    if isinstance(d, dict):
        return {k: "" if v is None else _drop_none(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_drop_none(v) for v in d]
    if isinstance(d, float) and math.isinf(d):
        return "inf" if d > 0 else "-inf"
    return d


def _check_index_type(factory: str, dim: int, keys: str = "train.vector_size") -> None:
    # faiss itself is the only complete parser of its factory strings; an empty index of the
    # configured dimension is cheap to build and also catches e.g. PQ16 with vector_size 60
    import faiss

    try:
        faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        text = str(e).strip()
        m = re.search(r"\.(?:cpp|h):\d+: (.*)", text)
        reason = (m.group(1) if m else text.splitlines()[-1]).strip()
        raise ValueError(
            f"index.type={factory!r} is not a faiss factory string usable with "
            f"{keys}={dim} ({reason}); use 'auto' or e.g. 'Flat', 'HNSW32', "
            "'IVF1024,Flat', 'IVF1024,PQ16'") from None


def _resolve(p: str, base: Path) -> str:
    q = Path(os.path.expanduser(p))
    return str(q if q.is_absolute() else (base / q).resolve())


def _apply_override(raw: dict[str, Any], ov: str) -> None:
    if "=" not in ov:
        raise ConfigError(f"override {ov!r} must look like section.key=value")
    key, value = ov.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) < 2:
        raise ConfigError(f"override {ov!r}: the key needs a section, e.g. train.epochs=10")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value  # bare strings need no quotes on the command line
    node = raw
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {ov!r}: {p} is not a section")
    node[parts[-1]] = parsed


# keys that were removed, and what replaced them (a clear error, never a silent change)
REMOVED_KEYS = {
    "calibrate.time_budget_s": "calibration no longer skips candidates when time runs short (its "
    "choice must not depend on how busy the machine is); remove the key, or set "
    "calibrate.max_seconds to stop a run that calibrates for too long",
}


def _check_keys(raw: dict[str, Any], model: type[BaseModel], prefix: str) -> None:
    fields = model.model_fields
    for key, value in raw.items():
        if f"{prefix}{key}" in REMOVED_KEYS:
            raise ConfigError(f"config key '{prefix}{key}' was removed: "
                              f"{REMOVED_KEYS[prefix + key]}")
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            valid = ", ".join(fields)
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint} (valid here: {valid})")
        ann = fields[key].annotation
        if isinstance(value, dict) and isinstance(ann, type) and issubclass(ann, BaseModel):
            _check_keys(value, ann, f"{prefix}{key}.")
