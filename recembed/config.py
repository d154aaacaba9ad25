"""One typed config for the whole pipeline, read from TOML.

Every knob lives here with its default; `pipelines/nightly.toml` documents each key. Unknown keys
are an error naming the key and the closest valid one.
"""

from __future__ import annotations

import difflib
import math
import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

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

    def n_threads(self) -> int:
        """Threads to use: the configured number, or all cores when 0."""
        return self.threads if self.threads > 0 else (os.cpu_count() or 1)


class ColumnsConfig(_Section):
    """Input column names; "" or unset for an absent optional column."""

    item: str = "item_id"
    ts: str = "timestamp"
    user: str | None = "user_id"
    session: str | None = None
    event_type: str | None = None
    ts_offset: str | None = None

    @field_validator("user", "session", "event_type", "ts_offset")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v or None


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
    categories_columns: list[str] = Field(default_factory=lambda: ["item_id", "category"])


class IngestConfig(_Section):
    max_bad_fraction: float = Field(0.01, ge=0, le=1)
    window_days: float = Field(0.0, ge=0)
    drop_duplicates: bool = True


class SessionConfig(_Section):
    gap_minutes: float = Field(30.0, gt=0)
    max_length: int = Field(200, ge=2)
    min_length: int = Field(2, ge=1)
    collapse_repeats: bool = True
    half_life_days: float = Field(7.0, gt=0)


class BotConfig(_Section):
    enabled: bool = True
    max_events_per_day: int = Field(1000, ge=1)
    min_median_gap_s: float = Field(1.0, ge=0)
    min_events_for_gap_rule: int = Field(20, ge=2)


class HoldoutConfig(_Section):
    days: float = Field(1.0, ge=0)


class GraphConfig(_Section):
    window: int = Field(1, ge=1)
    distance_weighting: bool = False
    directed: bool = False
    min_weight: float = Field(0.0, ge=0)
    max_out_edges: int = Field(0, ge=0)


class WalksConfig(_Section):
    enabled: bool = True
    method: Literal["deepwalk", "node2vec"] = "deepwalk"
    walks_per_node: int = Field(5, ge=1)
    walk_length: int = Field(20, ge=2)
    p: float = Field(1.0, gt=0)
    q: float = Field(1.0, gt=0)
    start_by_popularity: bool = False


class SequencesConfig(_Section):
    enabled: bool = True
    replication: float = Field(1.0, gt=0)


class TrainConfig(_Section):
    vector_size: int = Field(64, ge=2)
    window: int = Field(3, ge=1)
    shrink_windows: bool = True
    negative: int = Field(10, ge=0)
    ns_exponent: float = 0.5
    sample: float = Field(0.0, ge=0)
    epochs: int = Field(5, ge=1)
    max_tokens: int = Field(60_000_000, ge=0)
    alpha: float = Field(0.025, gt=0)
    min_alpha: float = Field(0.0001, ge=0)
    min_count: int = Field(1, ge=1)
    hs: bool = False
    workers: int = Field(0, ge=0)  # 0 = run.threads
    export_context_vectors: bool = True
    warm_start: bool = False


class IndexConfig(_Section):
    type: str = "auto"
    metric: Literal["cosine", "ip"] = "cosine"
    target_recall: float = Field(0.95, gt=0, le=1)
    tune_k: int = Field(100, ge=1)
    tune_queries: int = Field(1000, ge=10)
    memory_budget_gb: float = Field(8.0, gt=0)
    hnsw_m: int = Field(32, ge=4)
    ef_construction: int = Field(200, ge=8)


class ServingConfig(_Section):
    decay: float = Field(0.5, gt=0, le=1)
    history: int = Field(5, ge=1)
    repeat_weight: float = Field(0.5, ge=0)
    repeat_decay: float = Field(0.7, gt=0, le=1)
    candidates: int = Field(200, ge=1)
    directional_weight: float = Field(0.5, ge=0, le=1)


class EvaluateConfig(_Section):
    enabled: bool = True
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10, 20, 50])
    baselines: list[Literal["pop", "session_pop", "item_knn", "sr"]] = Field(
        default_factory=lambda: ["pop", "session_pop", "item_knn", "sr"]
    )
    strategies: list[Literal["last", "decayed", "directional"]] = Field(
        default_factory=lambda: ["last", "decayed", "directional"]
    )
    decay: float = Field(0.5, gt=0, le=1)
    history: int = Field(5, ge=1)
    max_queries: int = Field(10_000, ge=0)
    report: bool = True


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


class Config(_Section):
    run: RunConfig = Field(default_factory=RunConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    session: SessionConfig = Field(default_factory=SessionConfig)
    bots: BotConfig = Field(default_factory=BotConfig)
    holdout: HoldoutConfig = Field(default_factory=HoldoutConfig)
    graph: GraphConfig = Field(default_factory=GraphConfig)
    walks: WalksConfig = Field(default_factory=WalksConfig)
    sequences: SequencesConfig = Field(default_factory=SequencesConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)

    @field_validator("evaluate")
    @classmethod
    def _sorted_ks(cls, v: EvaluateConfig) -> EvaluateConfig:
        v.ks = sorted(set(v.ks))
        return v

    @model_validator(mode="after")
    def _runnable(self) -> Config:
        # combinations every key of which is valid alone, but that no run can execute
        c, t = self.input.columns, self.train
        bad = [
            (t.negative == 0 and not t.hs,
             "train.negative = 0 with train.hs = false leaves no training objective; set "
             "train.negative > 0 or train.hs = true"),
            (not self.sequences.enabled and not self.walks.enabled,
             "sequences.enabled = false and walks.enabled = false leave no training corpus; "
             "enable one"),
            (self.publish.enabled and not self.evaluate.enabled,
             "publish.enabled = true needs evaluate.enabled = true (the quality gate compares "
             "evaluations)"),
            (bool(self.input.event_types) and not c.event_type,
             "input.event_types needs input.columns.event_type (the column to filter on)"),
            (not c.user and not c.session,
             "input.columns.user and input.columns.session are both empty: sessions need one"),
            (len(self.input.categories_columns) != 2,
             "input.categories_columns must be [item column, category column]"),
        ]
        msgs = [m for cond, m in bad if cond]
        if msgs:
            raise ValueError("; ".join(msgs))
        return self

    def section(self, name: str) -> dict[str, Any]:
        """One section as a plain dict (used for stage fingerprints)."""
        return getattr(self, name).model_dump(mode="json")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Config from a TOML file (or defaults) with `section.key=value` overrides applied.

    Relative input paths are resolved against the config file's directory's parent when the file
    lives in `pipelines/`, else against the file's directory, so configs run from any cwd.
    """
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: invalid TOML: {e}") from e
        base = path.resolve().parent
        if base.name == "pipelines":
            base = base.parent
    for ov in overrides or []:
        _apply_override(raw, ov)
    _check_keys(raw, Config, "")
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        where = path or "config"
        msgs = "; ".join(
            (f"{'.'.join(str(p) for p in err['loc'])}: " if err["loc"] else "")
            + err["msg"].removeprefix("Value error, ") for err in e.errors()
        )
        raise ConfigError(f"{where}: {msgs}") from e
    cfg.input.paths = [_resolve(p, base) for p in cfg.input.paths]
    cfg.input.test_paths = [_resolve(p, base) for p in cfg.input.test_paths]
    cfg.input.categories_path = cfg.input.categories_path or None
    if cfg.input.categories_path:
        cfg.input.categories_path = _resolve(cfg.input.categories_path, base)
    return cfg


def dump_config(cfg: Config) -> str:
    """The resolved config as TOML text; `load_config` reads it back to the same config."""
    import tomli_w

    return tomli_w.dumps(_drop_none(cfg.model_dump(mode="json")))


def _drop_none(d: Any) -> Any:
    # TOML has no null: an absent optional value is written as "", which loads back as None
    if isinstance(d, dict):
        return {k: "" if v is None else _drop_none(v) for k, v in d.items()}
    if isinstance(d, float) and math.isinf(d):
        return "inf"
    return d


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


def _check_keys(raw: dict[str, Any], model: type[BaseModel], prefix: str) -> None:
    fields = model.model_fields
    for key, value in raw.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            valid = ", ".join(fields)
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint} (valid here: {valid})")
        ann = fields[key].annotation
        if isinstance(value, dict) and isinstance(ann, type) and issubclass(ann, BaseModel):
            _check_keys(value, ann, f"{prefix}{key}.")
