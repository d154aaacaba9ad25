"""Property-based tests (Hypothesis) of issue 17's promises over generated input: ids survive
ingest and every export byte for byte, timestamps in any unit and type give one event order, and
any valid config survives its own round trip with the same fingerprints.

Kept small for `make test`: few examples of tiny data, no deadline (the first example pays for
imports), derandomized so a run is reproducible."""

from __future__ import annotations

import csv
import re
import types
import typing
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from recembed.config import Config, dump_config, load_config
from recembed.ingest import ColumnMap, ingest
from recembed.pipeline import default_run_dir, stage_fingerprint
from recembed.sessions import sessionize
from recembed.stages import STAGES

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
COLS = ColumnMap(item="item", ts="ts", user="user")
NA_LIKE = ["NA", "N/A", "NaN", "nan", "null", "NULL", "None", "none", "-", "?", "#N/A"]
TEXT = st.characters(exclude_categories=("Cs",))  # any code point UTF-8 can encode
WHITESPACE = " \t\u00a0\u2028\u3000\x0b\x0c\x1f\x85"

# ---------------------------------------------------------------- ids


def _id_strategy(line_breaks: bool) -> st.SearchStrategy[str]:
    chars = TEXT if line_breaks else st.characters(exclude_categories=("Cs",),
                                                   exclude_characters="\r\n")
    return st.one_of(
        st.text(chars, min_size=1, max_size=12),
        st.text(st.sampled_from(WHITESPACE + "ab"), min_size=1, max_size=5),  # incl. all-blank
        st.integers(-10**15, 10**15).map(str),
        st.integers(0, 999).map(lambda i: f"{i:05d}"),  # leading zeros
        st.floats(allow_nan=True, allow_infinity=True).map(repr),  # "1.0", "nan", "inf", "1e+20"
        st.sampled_from(NA_LIKE),
    )


def _check_exports(ids: list[str], out) -> None:
    """ids (code order) -> items.parquet, word2vec text and binary, and the serving loader."""
    from gensim.models import KeyedVectors

    from recembed.index import build_index, save_index
    from recembed.serving import Recommender
    from recembed.train import TrainResult, export_vectors

    n = len(ids)
    rng = np.random.default_rng(n)
    vectors = rng.normal(size=(n, 4)).astype(np.float32)
    res = TrainResult(vectors, None, np.arange(n, dtype=np.int32), np.ones(n, np.int64))
    vocab = pd.DataFrame({"code": np.arange(n, dtype=np.int32), "id": ids})
    export_vectors(res, vocab, out, context=False)
    assert pd.read_parquet(out / "items.parquet")["id"].tolist() == ids
    for name, binary in (("vectors.txt", False), ("vectors.bin", True)):
        kv = KeyedVectors.load_word2vec_format(str(out / name), binary=binary)
        assert [unquote(k) for k in kv.index_to_key] == ids, name
    index, meta = build_index(vectors, factory="Flat")
    save_index(index, meta, out)
    _write_manifest(out)
    rec = Recommender.load(out)
    assert list(rec.ids) == ids
    assert rec.similar(ids, k=1).unknown == []


@SETTINGS
@given(ids=st.lists(_id_strategy(line_breaks=False), min_size=1, max_size=12, unique=True),
       fmt=st.sampled_from(["csv", "parquet"]))
def test_generated_ids_round_trip_after_the_id_rule(tmp_path_factory, ids, fmt):
    # any id, after normalisation (NFC; whitespace-only is missing), round-trips through
    # ingest -> items.parquet -> word2vec exports -> serving; serving finds it by its raw form
    from recembed.sources import normalize_id

    d = tmp_path_factory.mktemp("ids")
    ts = [1_700_000_000 + 60 * k for k in range(len(ids))]
    if fmt == "csv":
        p = d / "log.csv"
        with open(p, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, quoting=csv.QUOTE_ALL)
            w.writerow(["user", "item", "ts"])
            w.writerows(("u", x, t) for x, t in zip(ids, ts, strict=True))
    else:
        p = d / "log.parquet"
        pq.write_table(pa.table({"user": ["u"] * len(ids), "item": pa.array(ids, pa.string()),
                                 "ts": ts}), p)
    norm = [normalize_id(x) for x in ids]
    if all(x is None for x in norm):
        return  # nothing left: ingest refuses it (test_bad_input3)
    # a column of nothing but integral floats ("1.0") is the integers (the id rule, step 3)
    kept = [x for x in norm if x is not None]
    if all(re.fullmatch(r"[+-]?[0-9]+\.0+", x) for x in kept):
        norm = [None if x is None else str(int(float(x))) for x in norm]
    res = ingest([str(p)], COLS, max_bad_fraction=1)
    expected = list(dict.fromkeys(x for x in norm if x is not None))
    assert res.vocabulary["id"].tolist() == expected  # codes in order of first appearance
    assert len(res.quarantine) == sum(x is None for x in norm)
    _check_exports(res.vocabulary["id"].tolist(), d)
    from recembed.serving import Recommender

    rec = Recommender.load(d)
    assert rec.similar([x for x, n in zip(ids, norm, strict=True) if n is not None],
                       k=1).unknown == []


@SETTINGS
@given(ints=st.lists(st.integers(-10**12, 10**12), min_size=1, max_size=10, unique=True),
       kinds=st.lists(st.sampled_from(["int64", "float64", "decimal", "text", "float_text"]),
                      min_size=2, max_size=2))
def test_two_files_of_one_id_set_in_different_column_types_give_one_vocabulary(
        tmp_path_factory, ints, kinds):
    import decimal

    d = tmp_path_factory.mktemp("types")
    n = len(ints)
    paths = []
    for j, kind in enumerate(kinds):
        col = {"int64": lambda: pa.array(ints, pa.int64()),
               "float64": lambda: pa.array([float(x) for x in ints], pa.float64()),
               "decimal": lambda: pa.array([decimal.Decimal(x).quantize(decimal.Decimal("0.01"))
                                            for x in ints], pa.decimal128(18, 2)),
               "text": lambda: pa.array([str(x) for x in ints]),
               "float_text": lambda: pa.array([f"{x}.0" for x in ints])}[kind]()
        p = d / f"{j}_{kind}.parquet"
        pq.write_table(pa.table({"user": [f"u{j}"] * n, "item": col,
                                 "ts": [1_700_000_000 + k for k in range(n)]}), p)
        paths.append(str(p))
    res = ingest(paths, COLS)
    assert res.vocabulary["id"].tolist() == [str(x) for x in ints]
    assert res.vocabulary["count"].tolist() == [2] * n
    assert res.stats["warnings"] == []


@SETTINGS
@given(ids=st.lists(_id_strategy(line_breaks=True), min_size=1, max_size=8, unique=True))
def test_any_id_round_trips_through_every_export(tmp_path_factory, ids):
    # ids from Parquet can hold line breaks too: the word2vec escaping must cover them
    _check_exports(ids, tmp_path_factory.mktemp("exp"))


@SETTINGS
@given(ints=st.lists(st.integers(-2**53, 2**53), min_size=1, max_size=10, unique=True),
       nan_at=st.integers(0, 10))
def test_integral_float_ids_are_the_integer_ids(tmp_path_factory, ints, nan_at):
    d = tmp_path_factory.mktemp("fl")
    n = len(ints)
    ts = [1_700_000_000 + k for k in range(n)]
    floats = [float(x) for x in ints]
    if nan_at < n:  # a NaN (missing id) is what makes pandas store integer ids as floats
        floats[nan_at] = float("nan")
    pq.write_table(pa.table({"user": ["u"] * n, "item": pa.array(ints, pa.int64()), "ts": ts}),
                   d / "int.parquet")
    pq.write_table(pa.table({"user": ["v"] * n, "item": pa.array(floats, pa.float64()),
                             "ts": ts}), d / "float.parquet")
    res = ingest([str(d / "int.parquet"), str(d / "float.parquet")], COLS, max_bad_fraction=1)
    assert res.vocabulary["id"].tolist() == [str(x) for x in ints]
    assert len(res.quarantine) == (nan_at < n)


# ---------------------------------------------------------------- timestamps

_MS_LO, _MS_HI = 946_684_800_000, 1_893_456_000_000  # 2000-01-01 .. 2030-01-01, in ms


def _write_ts(d, ms: np.ndarray, kind: str):
    n = len(ms)
    users, items = ["u"] * n, [f"e{k}" for k in range(n)]
    if kind.startswith("csv_"):
        unit = kind[4:]
        text = {"s": [f"{m / 1000:.3f}" for m in ms], "ms": [str(m) for m in ms],
                "us": [str(m * 1000) for m in ms], "ns": [str(m * 1_000_000) for m in ms],
                "iso": [pd.Timestamp(int(m), unit="ms").isoformat() for m in ms]}[unit]
        p = d / f"{kind}.csv"
        p.write_text("user,item,ts\n" + "".join(f"u,{i},{t}\n" for i, t in zip(
            items, text, strict=True)))
        return p
    col = {"pq_int_ms": pa.array(ms, pa.int64()),
           "pq_float_s": pa.array(ms / 1000, pa.float64()),
           "pq_ts_ms": pa.array(ms, pa.timestamp("ms")),
           "pq_ts_us": pa.array(ms * 1000, pa.timestamp("us", tz="UTC")),
           "pq_ts_ns": pa.array(ms * 1_000_000, pa.timestamp("ns", tz="Europe/Paris"))}[kind]
    p = d / f"{kind}.parquet"
    pq.write_table(pa.table({"user": users, "item": items, "ts": col}), p)
    return p


TS_KINDS = ["csv_s", "csv_ms", "csv_us", "csv_ns", "csv_iso", "pq_int_ms", "pq_float_s",
            "pq_ts_ms", "pq_ts_us", "pq_ts_ns"]


@SETTINGS
@given(base=st.integers(_MS_LO, _MS_HI - 10 * 86_400_000),
       offsets=st.lists(st.one_of(st.integers(0, 2_500), st.integers(0, 5 * 86_400_000)),
                        min_size=2, max_size=25))
def test_generated_timestamps_give_the_same_event_order_in_every_unit_and_type(
        tmp_path_factory, base, offsets):
    d = tmp_path_factory.mktemp("ts")
    ms = base + np.array(offsets, dtype=np.int64)
    expect = [f"e{k}" for k in np.argsort(ms, kind="stable")]  # ties keep their row order
    for kind in TS_KINDS:
        res = ingest([str(_write_ts(d, ms, kind))], COLS)
        assert len(res.quarantine) == 0, kind
        assert sorted(res.events["ts"]) == sorted(ms // 1000), kind
        s = sessionize(res.events, gap_minutes=1e9, max_length=100, min_length=1,
                       collapse_repeats=False, holdout_days=0, bots=False)
        order = s.train.sort_values(["session", "pos"])["item"].to_numpy()
        assert res.vocabulary["id"].to_numpy()[order].tolist() == expect, kind


# ---------------------------------------------------------------- config round trip

PATH_KEYS = {"run.runs_dir", "input.paths", "input.test_paths", "input.categories_path",
             "input.catalog.path", "publish.dir"}
# relative names under the test's own directory: "/" or "." would make the input stamps walk
# the whole file system (measured: one such draw took 300 s)
PATH_TEXT = st.from_regex(r"[abz09_é][abz09_\-. é]{0,8}", fullmatch=True)


def leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every config key, dotted: 'section.key' (and 'input.columns.key')."""
    out = []
    for name, f in model.model_fields.items():
        if _is_model(f.annotation):
            out += leaf_keys(f.annotation, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def changed_config_raw() -> dict:
    """A raw config in which every key differs from its default (and the whole is valid)."""
    special = {"input.event_types": ["click"], "evaluate.ks": [3, 20], "index.type": "Flat",
               "input.categories_columns": ["itemid", "cat"], "input.delimiter": ";",
               "input.na_values": ["NA"], "publish.enabled": True,
               "input.catalog.attributes": ["category", "price"],
               "input.catalog.numeric": ["price"], "input.catalog.category": "category",
               # publishing needs an evaluation: evaluate.enabled=false is the second config
               # of the round-trip test
               "evaluate.enabled": True,
               # warm start (on here) continues from unprocessed vectors: "none" or "auto"
               "train.postprocess": "none"}
    raw: dict = {}
    for key, f, model in _leaves(Config):
        value = special[key] if key in special else _other_value(f, model, key)
        _put(raw, key, value)
    return raw


@st.composite
def config_raw(draw) -> dict:
    """A raw config: each key kept at its default or drawn from its type and bounds."""
    raw: dict = {}
    for key, f, _ in _leaves(Config):
        if draw(st.booleans()):
            _put(raw, key, draw(_strategy(key, f)))
    inp, cols = raw.setdefault("input", {}), raw.setdefault("input", {}).setdefault("columns", {})
    if inp.get("event_types") and not cols.get("event_type"):
        cols["event_type"] = "kind"  # a valid config needs both (item 6)
    if cols.get("user", "user_id") in ("", None) and not cols.get("session"):
        cols["session"] = "sid"
    cat = inp.get("catalog", {})
    if cat.get("path") or cat.get("numeric") or cat.get("category"):
        cat["attributes"] = ["category", "price"]  # what numeric and category must be among
    if raw.get("publish", {}).get("enabled"):
        ev = raw.setdefault("evaluate", {})
        ev["ks"] = [*ev.get("ks", []), 20]
        ev["enabled"] = True  # the gate compares evaluations
    tr = raw.get("train", {})
    if tr.get("negative") == 0:
        tr["hs"] = True  # a training objective is needed
    continues = tr.get("warm_start") or tr.get("mode") == "incremental"
    if continues and tr.get("postprocess", "auto") not in ("auto", "none"):
        tr["postprocess"] = "none"  # warm start / incremental continue unprocessed vectors
    # sizes that fit a machine (refused at load otherwise: issue 25, item 9)
    if "vector_size" in tr:
        tr["vector_size"] = min(tr["vector_size"], 4096)
    wk = raw.get("walks", {})
    if "walk_length" in wk:
        wk["walk_length"] = min(wk["walk_length"], 10_000)
    if "walks_per_node" in wk:
        wk["walks_per_node"] = min(wk["walks_per_node"], 100)
    if raw.get("walks", {}).get("enabled") is False and \
            raw.get("sequences", {}).get("enabled") is False:
        raw["sequences"]["enabled"] = True  # something to train on
    ln = raw.get("line", {})
    if "dimension" in ln:
        ln["dimension"] = min(ln["dimension"], 4096)
    if ln.get("order") == "both" and ln.get("dimension", 64) % 2:
        ln["dimension"] -= 1 if ln["dimension"] > 2 else -1  # half per order
    mode = ln.get("mode")
    # LINE's refusals (config._runnable): alone beside a skip-gram switched on, concat without
    # negatives, either with warm start / incremental training or the "context" cold scheme of
    # a catalog run
    if mode in ("alone", "concat") and (
            (mode == "alone" and True in (raw.get("walks", {}).get("enabled"),
                                          raw.get("sequences", {}).get("enabled")))
            or (mode == "concat" and tr.get("negative") == 0) or continues
            or (cat.get("path") and raw.get("cold", {}).get("scheme") == "context")):
        ln["mode"] = "auto"
    # svd.mode = "alone" is refused beside a skip-gram switched on, LINE, warm start /
    # incremental training or the "context" cold scheme of a catalog run
    sv = raw.get("svd", {})
    if sv.get("mode") == "alone" and (
            True in (raw.get("walks", {}).get("enabled"), raw.get("sequences", {}).get("enabled"))
            or ln.get("mode") in ("alone", "concat") or continues
            or (cat.get("path") and raw.get("cold", {}).get("scheme") == "context")):
        sv["mode"] = "auto"
    # calibrate.sgns refuses to search vector_size beside warm start or an explicit index.type
    cal = raw.get("calibrate", {})
    if "vector_size" in cal.get("sgns", []) and tr.get("vector_size", 64) == 64 and (
            tr.get("warm_start") or raw.get("index", {}).get("type", "auto") != "auto"):
        cal["sgns"] = [k for k in cal["sgns"] if k != "vector_size"]
    return raw


@settings(SETTINGS, max_examples=25)
@given(raw=config_raw())
def test_a_generated_config_round_trips_to_the_same_fingerprints(tmp_path_factory, raw):
    d = tmp_path_factory.mktemp("cfg")
    cfg0 = Config.model_validate(raw)
    p = d / "c.toml"
    p.write_text(dump_config(cfg0))
    cfg1 = load_config(p)  # resolves relative paths against d
    p.write_text(dump_config(cfg1))
    cfg2 = load_config(p)
    assert cfg2 == cfg1
    for key in leaf_keys(Config):
        if key not in PATH_KEYS:
            assert _get(cfg1, key) == _get(cfg0, key), key
    assert default_run_dir(cfg2) == default_run_dir(cfg1)
    fp1, fp2 = {}, {}
    for stage in STAGES:
        fp1[stage.name] = stage_fingerprint(cfg1, stage, fp1)
        fp2[stage.name] = stage_fingerprint(cfg2, stage, fp2)
    assert fp1 == fp2


def _is_model(ann) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _leaves(model, prefix=""):
    for name, f in model.model_fields.items():
        if _is_model(f.annotation):
            yield from _leaves(f.annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", f, model


def _write_manifest(d) -> None:
    """A manifest listing every file with its sha256 (what publish writes), so serving loads d."""
    import hashlib
    import json

    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir()
             if p.is_file() and p.name != "manifest.json"}
    (d / "manifest.json").write_text(json.dumps({"files": files}))


def _put(raw: dict, key: str, value) -> None:
    *sections, name = key.split(".")
    for s in sections:
        raw = raw.setdefault(s, {})
    raw[name] = value


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _bounds(f) -> dict:
    """A field's bounds: {'ge': 0, 'le': 1, 'min_length': 2, ...} from its annotated_types."""
    return {attr: getattr(m, attr) for m in f.metadata
            for attr in ("ge", "gt", "le", "lt", "min_length", "max_length") if hasattr(m, attr)}


# keys whose type is a choice ("auto" or a value) or a mapping: their valid values by hand
CHOICES = {
    "train.postprocess": ["auto", "none", "center", "abtt:1", "whiten", "zca"],
    "walks.enabled": ["auto", True, False], "sequences.enabled": ["auto", True, False],
    "train.epochs": ["auto", 1, 7], "train.target_tokens": ["auto", 5000, 2_000_000],
    "serving.weights": ["auto", {"directional": 1.0}, {"rules": 0.5, "repeat": 2.0}],
    "serving.decay": ["auto", 0.5, 1.0], "serving.vectors_decay": ["auto", 0.15, 1.0],
    "serving.temperature": ["auto", 0.25, 2.0],
    "serving.candidates": ["auto", 1, 200], "serving.neighbour_sample": ["auto", 0, 700],
    "input.filters": [{}, {"region": ["eu"]}, {"dt": ["2026-11-21", 3]}],
    "input.encoding": ["utf-8", "cp1252", "latin-1"],
    "calibrate.target_tokens": [[1_000_000, 3_000_000, 10_000_000], [50_000], [2000, 9000]],
    "calibrate.corpora": [["both", "sessions", "walks"], ["walks"], ["sessions", "both"]],
    "line.samples": ["auto", 5000, 2_000_000],
    "spark.master": ["local[2]", "local[*]", "yarn", "k8s://https://k8s.example:443"],
    "spark.conf": [{}, {"spark.sql.shuffle.partitions": 8}, {"spark.executor.memory": "4g"}],
    # the catalog's columns must agree with each other (numeric and category among attributes)
    "input.catalog.attributes": [["category", "price"]], "input.catalog.numeric": [[], ["price"]],
    "input.catalog.category": ["", "category"], "input.catalog.id": ["item_id", "sku"],
}


def _strategy(key: str, f) -> st.SearchStrategy:
    ann, b = f.annotation, _bounds(f)
    if key in CHOICES:
        return st.sampled_from(CHOICES[key])
    if key == "index.type":
        return st.sampled_from(["auto", "Flat", "HNSW16", "IVF8,Flat", "IVF16_HNSW8,Flat"])
    if key in PATH_KEYS:
        return st.lists(PATH_TEXT, max_size=2) if typing.get_origin(ann) is list else PATH_TEXT
    if key == "input.categories_columns":
        return st.lists(st.text(TEXT, min_size=1, max_size=6), min_size=2, max_size=2)
    return _by_type(ann, b)


def _by_type(ann, b: dict) -> st.SearchStrategy:
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if ann is bool:
        return st.booleans()
    if ann is int:
        lo = b.get("ge", b["gt"] + 1 if "gt" in b else -10**9)
        return st.integers(lo, b.get("le", lo + 10**9))
    if ann is float:
        hi = b.get("le")
        return st.floats(min_value=b.get("ge", b.get("gt")), max_value=hi,
                         exclude_min="gt" in b, allow_nan=False, allow_infinity=hi is None)
    if ann is str:
        return st.text(TEXT, min_size=b.get("min_length", 0), max_size=8)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):  # str | None
        return st.one_of(st.none(), st.text(TEXT, max_size=8))
    if origin is list:
        if args[0] is int:
            return st.lists(st.integers(1, 500), min_size=1, max_size=5)
        # a list of choices names each at most once (calibrate.sgns refuses repeats)
        return st.lists(_by_type(args[0], {}), max_size=3,
                        unique=typing.get_origin(args[0]) is typing.Literal)
    raise TypeError(f"no strategy for {ann}: extend tests/test_properties.py")


def _other_value(f, model, key):
    """A valid value of a key that differs from its default."""
    default, ann = f.get_default(call_default_factory=True), f.annotation
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if key in CHOICES:
        return next(v for v in CHOICES[key] if v != default)
    if ann is bool:
        return not default
    if origin is typing.Literal:
        return next(a for a in args if a != default)
    if origin is list:
        if typing.get_origin(args[0]) is typing.Literal:
            return [a for a in typing.get_args(args[0]) if a not in default][:1] or default[:1]
        return ["x y", "z"]
    if ann is str or origin in (typing.Union, types.UnionType):
        return f"{default or 'col'}_x"
    for cand in (default * 2 + 1, default / 2, 0.5):
        value = int(cand) if ann is int else float(cand)
        if value == default:
            continue
        try:
            model.model_validate({key.rsplit(".", 1)[1]: value})
            return value
        except ValueError:
            continue
    raise AssertionError(f"no other valid value for {key}")
