"""Glue between the config and the stage functions: each `*_stage` reads its inputs from the run
directory, calls plain functions with plain arguments, and writes its outputs to `out`.

The stage modules themselves never see a Config; this is the only place that unpacks it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from recembed.config import Config
from recembed.evaluate import serving_recommend
from recembed.graph import build_item_graph, graph_summary, load_graph, save_graph
from recembed.ingest import ColumnMap, IngestError, ingest, read_categories, write_parquet_atomic
from recembed.pipeline import EXIT_BAD_INPUT, EXIT_GATE, EXIT_LOCKED, PipelineError, Stage
from recembed.sequences import write_session_corpus
from recembed.sessions import DataLossError, sessionize
from recembed.sources import SourceOptions
from recembed.train import EmptyVocabulary, concat_corpora, export_vectors, train_word2vec
from recembed.walks import random_walks

log = logging.getLogger("recembed")


def ingest_stage(cfg: Config, run: Path, out: Path) -> dict:
    """events.parquet, vocabulary.parquet, quarantine.parquet (and categories.parquet)."""
    c, i = cfg.input.columns, cfg.input
    try:
        res = ingest(
            i.paths,
            ColumnMap(item=c.item, ts=c.ts, user=c.user, session=c.session,
                      event_type=c.event_type, ts_offset=c.ts_offset),
            test_paths=i.test_paths, fmt=i.format, delimiter=i.delimiter, ts_unit=i.ts_unit,
            ts_offset_unit=i.ts_offset_unit, event_types=i.event_types, na_values=i.na_values,
            max_bad_fraction=cfg.ingest.max_bad_fraction,
            max_ts_distance_days=cfg.ingest.max_ts_distance_days,
            drop_duplicates=cfg.ingest.drop_duplicates, window_days=cfg.ingest.window_days,
            # the quarantine goes straight into the run dir so it survives a failed run
            quarantine_path=run / "quarantine.parquet",
            source=SourceOptions(encoding=i.encoding, partition_date=i.partition_date,
                                 filters={k: [str(v) for v in vs] for k, vs in i.filters.items()}),
        )
    except IngestError as e:
        raise PipelineError(str(e), EXIT_BAD_INPUT) from e
    write_parquet_atomic(res.events, out / "events.parquet")
    write_parquet_atomic(res.vocabulary, out / "vocabulary.parquet")
    cats = pd.DataFrame({"code": res.vocabulary["code"], "category": -1})
    if i.categories_path:
        item_col, cat_col = i.categories_columns
        try:
            cats["category"] = read_categories(i.categories_path, item_col, cat_col,
                                               res.vocabulary)
        except IngestError as e:
            raise PipelineError(str(e), EXIT_BAD_INPUT) from e
    write_parquet_atomic(cats, out / "categories.parquet")
    if res.stats["quarantined"]:
        log.warning("%d rows quarantined in %s", res.stats["quarantined"],
                    run / "quarantine.parquet")
    stats = dict(res.stats)
    stats.pop("files")
    return stats


def sessionize_stage(cfg: Config, run: Path, out: Path) -> dict:
    """sessions_train.parquet, sessions_test.parquet, session_table.parquet."""
    events = pd.read_parquet(run / "events.parquet")
    s, b, v = cfg.session, cfg.bots, cfg.validation
    try:
        res = sessionize(
            events, gap_minutes=s.gap_minutes, max_length=s.max_length,
            min_length=s.min_length, collapse_repeats=s.collapse_repeats,
            half_life_days=s.half_life_days, holdout_days=cfg.holdout.days, bots=b.enabled,
            max_events_per_day=b.max_events_per_day, min_median_gap_s=b.min_median_gap_s,
            min_events_for_gap_rule=b.min_events_for_gap_rule, bot_outlier_z=b.outlier_z,
            bot_max_share=b.max_share, auto_gap=s.auto_gap, max_short_share=s.max_short_share,
            validation_share=v.share, validation_min_sessions=v.min_sessions,
            validation_max_sessions=v.max_sessions,
        )
    except DataLossError as e:
        raise PipelineError(str(e), EXIT_BAD_INPUT) from e
    for w in res.stats["warnings"]:
        log.warning("sessionize: %s", w)
    if res.stats["train_sessions"] == 0:
        raise PipelineError("no training sessions left after sessionizing "
                            f"({res.stats}); check the column mapping and session settings",
                            EXIT_BAD_INPUT)
    write_parquet_atomic(res.train, out / "sessions_train.parquet")
    write_parquet_atomic(res.test, out / "sessions_test.parquet")
    write_parquet_atomic(res.table, out / "session_table.parquet")
    return res.stats


def graph_stage(cfg: Config, run: Path, out: Path) -> dict:
    """graph.npz: the weighted item graph (CSR) of the training sessions."""
    train = pd.read_parquet(run / "sessions_train.parquet", columns=["session", "item"])
    weights = _weights_by_id(run)
    n_items = len(pd.read_parquet(run / "vocabulary.parquet", columns=["code"]))
    gc = cfg.graph
    g = build_item_graph(train, weights, n_items, window=gc.window,
                         distance_weighting=gc.distance_weighting, directed=gc.directed,
                         min_weight=gc.min_weight, max_out_edges=gc.max_out_edges)
    save_graph(g, out / "graph.npz")
    return graph_summary(g).as_dict()


def walks_stage(cfg: Config, run: Path, out: Path) -> dict:
    """walks.txt: random walks over the item graph, one per line."""
    w = cfg.walks
    g = load_graph(run / "graph.npz")
    pop = None
    if w.start_by_popularity:
        pop = pd.read_parquet(run / "vocabulary.parquet", columns=["count"])["count"].to_numpy()
    st = random_walks(g, out / "walks.txt", method=w.method, walks_per_node=w.walks_per_node,
                      walk_length=w.walk_length, p=w.p, q=w.q, popularity=pop,
                      seed=cfg.run.seed, threads=cfg.run.n_threads(), progress=cfg.run.progress)
    return {"walks": st.walks, "tokens": st.tokens, "seconds": round(st.seconds, 3),
            "steps_per_s": round(st.steps_per_s), "prepare_s": round(st.prepare_s, 3),
            "walk_s": round(st.walk_s, 3), "format_s": round(st.format_s, 3),
            "write_wait_s": round(st.write_wait_s, 3)}


def sequences_stage(cfg: Config, run: Path, out: Path) -> dict:
    """sessions.txt: the item2vec corpus, sessions replicated by their decay weight."""
    train = pd.read_parquet(run / "sessions_train.parquet", columns=["session", "item"])
    st = write_session_corpus(train, _weights_by_id(run), out / "sessions.txt",
                              replication=cfg.sequences.replication, seed=cfg.run.seed,
                              min_copies=cfg.sequences.min_copies)
    return vars(st)


def _weights_by_id(run: Path) -> np.ndarray:
    """Session weights indexed by session id (joined by id, never by table position)."""
    table = pd.read_parquet(run / "session_table.parquet", columns=["session", "weight"])
    sid = table["session"].to_numpy()
    w = np.zeros(int(sid.max()) + 1 if len(sid) else 0)
    w[sid] = table["weight"].to_numpy()
    return w


def calibrate_stage(cfg: Config, run: Path, out: Path) -> dict:
    """calibration.json: corpus, training amount and serving blend chosen on validation."""
    from recembed.calibrate import calibrate_run, calibration_search

    search = calibration_search(cfg)
    if not cfg.calibrate.enabled or not search["any"]:
        rec = {"enabled": False, "reason": "calibrate.enabled = false" if not
               cfg.calibrate.enabled else "every calibrated key is set in the config"}
    else:
        train = pd.read_parquet(run / "sessions_train.parquet", columns=["session", "item", "ts"])
        table = pd.read_parquet(run / "session_table.parquet", columns=["session", "end", "split"])
        n_items = len(pd.read_parquet(run / "vocabulary.parquet", columns=["code"]))
        try:
            rec = calibrate_run(train, table, n_items, out / "work", seed=cfg.run.seed,
                                threads=cfg.run.n_threads(), progress=cfg.run.progress,
                                **search["kw"])
        except EmptyVocabulary as e:
            raise PipelineError(f"train.min_count={cfg.train.min_count} is above the corpus "
                                "count of every item: nothing left to train; lower "
                                "train.min_count", EXIT_BAD_INPUT) from e
    (out / "calibration.json").write_text(json.dumps(rec, indent=2, default=_plain))
    for note in rec.get("notes", []):
        log.warning("calibrate: %s", note)
    v = rec.get("validation", {})
    return {"enabled": rec["enabled"], "corpus": rec.get("corpus"),
            "target_tokens": rec.get("target_tokens"), "validation_recall@20": v.get("recall@20"),
            "validation_mrr@20": v.get("mrr@20"), "seconds": rec.get("seconds")}


def _plain(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(type(o))


def train_stage(cfg: Config, run: Path, out: Path) -> dict:
    """vectors.npy, context_vectors.npy, items.parquet, vectors.bin, vectors.txt, train.json."""
    corpora = [run / f for f, on in (("sessions.txt", cfg.sequences.enabled),
                                     ("walks.txt", cfg.walks.enabled)) if on]
    if not corpora:
        raise PipelineError("nothing to train on: enable [sequences] and/or [walks]")
    corpus = concat_corpora(corpora, out / "corpus.txt")
    t = cfg.train
    res = _train_word2vec(
        corpus, vector_size=t.vector_size, window=t.window, shrink_windows=t.shrink_windows,
        negative=t.negative, ns_exponent=t.ns_exponent, sample=t.sample,
        epochs=1 if t.epochs == "auto" else t.epochs,
        target_tokens=t.target_tokens if t.epochs == "auto" else 0,
        alpha=t.alpha, min_alpha=t.min_alpha, min_count=t.min_count, hs=t.hs,
        workers=t.workers or cfg.run.n_threads(), seed=cfg.run.seed, max_tokens=t.max_tokens,
        init=_warm_start_init(cfg, run) if t.warm_start else None,
        progress=cfg.run.progress,
    )
    (out / "corpus.txt").unlink(missing_ok=True)
    vocab = pd.read_parquet(run / "vocabulary.parquet", columns=["code", "id"])
    cats = pd.read_parquet(run / "categories.parquet")["category"].to_numpy()
    export_vectors(res, vocab, out, context=True, categories=cats)
    (out / "train.json").write_text(json.dumps(res.stats, indent=2))
    log.info("trained %s tokens at %s words/s", f"{res.stats['tokens_trained']:,}",
             f"{res.stats['words_per_s']:,}")
    return {k: v for k, v in res.stats.items() if k != "loss_per_epoch"}


def index_stage(cfg: Config, run: Path, out: Path) -> dict:
    """index.faiss + index.json (tuned to index.target_recall), serving.json."""
    from dataclasses import asdict

    from recembed.calibrate import blend_settings
    from recembed.index import build_index, save_index, set_threads, tune_index
    from recembed.serving import write_settings

    ic = cfg.index
    set_threads(cfg.run.n_threads())
    vectors = np.load(run / "vectors.npy", allow_pickle=False)
    index, meta = build_index(vectors, factory=ic.type, metric=ic.metric,
                              memory_budget_gb=ic.memory_budget_gb, hnsw_m=ic.hnsw_m,
                              ef_construction=ic.ef_construction, seed=cfg.run.seed)
    meta = tune_index(index, vectors, meta, target_recall=ic.target_recall, k=ic.tune_k,
                      n_queries=ic.tune_queries, seed=cfg.run.seed)
    if not meta.reached_target:
        log.warning("index: %s", meta.reason)
    save_index(index, meta, out)
    write_settings(out / "serving.json", blend_settings(cfg))
    _serving_extras(cfg, run, out)
    d = asdict(meta)
    d.pop("tuning")
    return d


def _serving_extras(cfg: Config, run: Path, out: Path) -> None:
    """blend.npz (sequential rules, session-kNN index, popularity in vector-row space) and
    index_context.faiss (inner-product index over the output vectors: the directional score as
    plain ANN, usable without recembed)."""
    import faiss

    from recembed.calibrate import serving_model
    from recembed.index import build_index, tune_index
    from recembed.train import load_vectors

    items, vectors, context = load_vectors(run)
    train = pd.read_parquet(run / "sessions_train.parquet", columns=["session", "item", "ts"])
    n_items = len(pd.read_parquet(run / "vocabulary.parquet", columns=["code"]))
    model, _ = serving_model(train, n_items, items["item"].to_numpy(), vectors, context,
                             rule_steps=cfg.serving.rule_steps)
    arrays = {"rules_indptr": model.rules.indptr, "rules_indices": model.rules.indices,
              "rules_data": model.rules.data,
              "popularity": np.bincount(train["item"].to_numpy(), minlength=n_items)[
                  items["item"].to_numpy()].astype(np.float64),
              **{f"nb_{k}": v for k, v in model.neighbours.to_arrays().items()}}
    with open(out / "blend.npz", "wb") as fh:
        np.savez(fh, **arrays)
    # without output vectors (hs) the file still exists: the same search over input vectors
    ctx = context if context is not None else vectors
    if ctx is not None:
        ic = cfg.index
        index, meta = build_index(ctx, factory=ic.type, metric="ip",
                                  memory_budget_gb=ic.memory_budget_gb, hnsw_m=ic.hnsw_m,
                                  ef_construction=ic.ef_construction, seed=cfg.run.seed)
        meta = tune_index(index, ctx, meta, target_recall=ic.target_recall, k=ic.tune_k,
                          n_queries=ic.tune_queries, seed=cfg.run.seed)
        faiss.write_index(index, str(out / "index_context.faiss"))
        (out / "index_context.json").write_text(meta.to_json())


def evaluate_stage(cfg: Config, run: Path, out: Path) -> dict:
    """metrics.json (every baseline and query strategy, both variants) and report.html."""
    from recembed.evaluate import best_method, embedding_scorer, evaluate_all
    from recembed.report import write_report
    from recembed.train import load_vectors

    e = cfg.evaluate
    train = pd.read_parquet(run / "sessions_train.parquet", columns=["session", "item", "ts"])
    test = pd.read_parquet(run / "sessions_test.parquet", columns=["session", "item"])
    n_items = len(pd.read_parquet(run / "vocabulary.parquet", columns=["code"]))
    items, vectors, context = load_vectors(run)
    pop = np.bincount(train["item"].to_numpy(), minlength=n_items).astype(np.float64)
    name = model_name(cfg)
    embeddings = {
        f"{name}:{s}": embedding_scorer(vectors, items["item"].to_numpy(), n_items, pop,
                                        strategy=s, context=context, decay=e.decay,
                                        history=e.history)
        for s in e.strategies if not (s == "directional" and context is None)
    }
    from recembed.serving import Recommender

    serving = serving_recommend(Recommender.load(run), items["item"].to_numpy(), n_items)
    metrics = evaluate_all(train, test, n_items, ks=e.ks, baselines=e.baselines,
                           embeddings=embeddings, recommenders={f"{name}:serving": serving},
                           max_queries=e.max_queries, seed=cfg.run.seed)
    best, r20 = best_method(metrics, prefix=f"{name}:")
    metrics["headline"] = {"method": best, "recall@20": r20}
    train_stats = json.loads((run / "train.json").read_text())
    metrics["train"] = train_stats
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    cats = pd.read_parquet(run / "categories.parquet")["category"].to_numpy()
    write_report(out / "report.html", metrics, loss_per_epoch=train_stats.get("loss_per_epoch"),
                 vectors=vectors, categories=cats[items["item"].to_numpy()],
                 title=f"recembed: {cfg.run.name}")
    return {"queries": metrics["queries"]["queries"],
            "oov_share": metrics["queries"]["oov_share"], "best": best, "recall@20": r20,
            **{f"{n}_recall@20": m["allow_repeats"].get("recall@20", 0)
               for n, m in metrics["methods"].items() if ":" not in n}}


def publish_stage(cfg: Config, run: Path, out: Path) -> dict:
    """Gate against the current version on this run's holdout, then publish; publish.json."""
    from recembed.publish import (
        GateRefused,
        LockBusy,
        current_version_dir,
        neighbour_drift,
        procrustes_rotation,
        publish_version,
    )
    from recembed.serving import ArtifactError, Recommender

    pc = cfg.publish
    published = Path(pc.dir)
    metrics = json.loads((run / "metrics.json").read_text())
    new = Recommender.load(run, verify=False)
    new_m = _serving_metrics(metrics)
    gate_metric, drift, transform = None, {}, None
    current = current_version_dir(published)
    manifest = run_manifest(cfg, run, metrics)
    if current is not None and _same_run(current, manifest):
        # a rerun after a crash between publishing and recording it: already current
        log.info("%s already holds this run's artifacts; nothing to publish", current.name)
        info = {"version": current.name, "path": str(current), "reason": "already current"}
        (out / "publish.json").write_text(json.dumps(info, indent=2))
        return {"version": current.name, "recall@20": new_m["recall@20"]}
    if current is not None:
        try:
            old = Recommender.load(current)
        except ArtifactError as e:
            raise PipelineError(f"the current version fails verification: {e}") from e
        old_m = evaluate_version_on_run(old, run, cfg)
        gate_metric = (new_m["recall@20"], old_m["recall@20"])
        drift = neighbour_drift(list(new.ids), new.unit, list(old.ids), old.unit, k=pc.drift_k,
                                seed=cfg.run.seed)
        drift["previous_version"] = current.name
        if pc.align_to_previous:
            rot = procrustes_rotation(list(new.ids), new.unit, list(old.ids), old.unit)
            if rot is not None:
                transform = _rotate_version(rot, cfg)
                drift["aligned_to_previous"] = True
    try:
        res = publish_version(
            run, published, manifest=manifest, gate_metric=gate_metric,
            max_recall_drop=pc.max_recall_drop, min_coverage_ratio=pc.min_coverage_ratio,
            keep_versions=pc.keep_versions, lock_wait_s=pc.lock_wait_s, force=pc.force,
            include_context=cfg.train.export_context_vectors, drift=drift, transform=transform,
            coverage_ratio=(new_m["coverage@20"] / old_m["coverage@20"]
                            if current is not None and old_m["coverage@20"] > 0 else None),
        )
    except GateRefused as e:
        raise PipelineError(f"quality gate refused to publish: {e}; the current version "
                            f"({current.name if current else 'none'}) stays. Use --force to "
                            "publish anyway.", EXIT_GATE) from e
    except LockBusy as e:
        raise PipelineError(str(e), EXIT_LOCKED) from e
    info = {"version": res.version, "path": str(res.path), "reason": res.reason,
            "gate": res.gate, "drift": res.drift}
    (out / "publish.json").write_text(json.dumps(info, indent=2, default=str))
    log.info("published %s to %s", res.version, published)
    return {"version": res.version, "recall@20": new_m["recall@20"],
            "previous_recall@20": gate_metric[1] if gate_metric else None,
            **{f"drift_{k}": v for k, v in drift.items() if isinstance(v, float)}}


def evaluate_version_on_run(rec, run: Path, cfg: Config) -> dict:
    """recall@20 / coverage@20 of a loaded version's `recommend` on this run's holdout."""
    from recembed.evaluate import evaluate_all, serving_recommend

    train = pd.read_parquet(run / "sessions_train.parquet", columns=["session", "item"])
    test = pd.read_parquet(run / "sessions_test.parquet", columns=["session", "item"])
    vocab = pd.read_parquet(run / "vocabulary.parquet", columns=["code", "id"])
    code_of = pd.Series(vocab["code"].to_numpy(), index=vocab["id"].astype(str))
    rows_item = code_of.reindex([str(x) for x in rec.ids]).fillna(-1).to_numpy().astype(np.int64)
    m = evaluate_all(train, test, len(vocab), ks=[20], baselines=[],
                     recommenders={"v:serving": serving_recommend(rec, rows_item, len(vocab))},
                     max_queries=cfg.evaluate.max_queries, seed=cfg.run.seed)
    return _serving_metrics(m)


def run_manifest(cfg: Config, run: Path, metrics: dict) -> dict:
    """Provenance for manifest.json: inputs, event time range, counts per stage, metrics."""
    import platform
    import time

    from recembed import __version__

    done = {p.name.split(".")[0]: json.loads(p.read_text()) for p in run.glob("*.done.json")}
    st = {k: v.get("stats", {}) for k, v in done.items()}
    vocab = pd.read_parquet(run / "vocabulary.parquet", columns=["first_ts", "last_ts"])
    inputs = []
    for p in [*cfg.input.paths, *cfg.input.test_paths]:
        q = Path(p)
        files = sorted(q.rglob("*")) if q.is_dir() else [q]
        inputs += [{"path": str(f), "bytes": f.stat().st_size,
                    "mtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(f.stat().st_mtime))}
                   for f in files if f.is_file()]
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "code_version": __version__, "python": platform.python_version(),
        "run_dir": str(run), "model": model_name(cfg),
        "fingerprints": {k: v.get("fingerprint") for k, v in done.items()},
        "inputs": inputs,
        "time_range": {"first_ts": int(vocab["first_ts"].min()),
                       "last_ts": int(vocab["last_ts"].max())},
        "counts": {
            "rows_read": st.get("ingest", {}).get("rows_read"),
            "quarantined": st.get("ingest", {}).get("quarantined"),
            "duplicates": st.get("ingest", {}).get("duplicates"),
            "events": st.get("ingest", {}).get("events"),
            "bot_events": st.get("sessionize", {}).get("bot_events"),
            "train_sessions": st.get("sessionize", {}).get("train_sessions"),
            "holdout_sessions": st.get("sessionize", {}).get("holdout_sessions"),
            "items": st.get("ingest", {}).get("items"),
            "vectors": st.get("train", {}).get("vocab"),
            "corpus_tokens": st.get("train", {}).get("corpus_tokens"),
        },
        "metrics": {"headline": metrics.get("headline"), "queries": metrics.get("queries"),
                    "serving": _serving_metrics(metrics)},
    }


def _same_run(version_dir: Path, manifest: dict) -> bool:
    try:
        prev = json.loads((version_dir / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    keys = ("train", "index", "evaluate")
    return all(prev.get("fingerprints", {}).get(k) == manifest["fingerprints"].get(k)
               and manifest["fingerprints"].get(k) for k in keys)


def _serving_metrics(metrics: dict) -> dict:
    for name, m in metrics["methods"].items():
        if name.endswith(":serving"):
            return m["allow_repeats"]
    raise PipelineError("metrics.json has no serving evaluation; run the evaluate stage")


def _rotate_version(rot: np.ndarray, cfg: Config):
    """A publish transform: rotate vectors (and context vectors) by `rot`, rebuild the index."""
    from recembed.index import IndexMeta, build_index, load_index, save_index
    from recembed.train import write_word2vec

    def transform(d: Path) -> None:
        for name in ("vectors.npy", "context_vectors.npy"):
            if (d / name).exists():
                np.save(d / name, np.load(d / name) @ rot, allow_pickle=False)
        vec = np.load(d / "vectors.npy")
        _, meta = load_index(d)
        index, _ = build_index(vec, factory=meta["factory"], metric=meta["metric"],
                               hnsw_m=cfg.index.hnsw_m, ef_construction=cfg.index.ef_construction,
                               seed=cfg.run.seed)
        save_index(index, IndexMeta(**meta), d)
        ids = pd.read_parquet(d / "items.parquet")["id"].astype(str).tolist()
        write_word2vec(ids, vec, d / "vectors.bin", binary=True)

    return transform


def _resolved(cfg: Config, run: Path) -> Config:
    from recembed.calibrate import resolve_config

    return resolve_config(cfg, json.loads((run / "calibration.json").read_text()))


def _train_word2vec(corpus, **kw):
    """train_word2vec, with gensim's error for an empty vocabulary named as the config key."""
    try:
        return train_word2vec(corpus, **kw)
    except EmptyVocabulary as e:
        raise PipelineError(f"train.min_count={kw['min_count']} is above the corpus count of "
                            "every item: nothing left to train; lower train.min_count",
                            EXIT_BAD_INPUT) from e


def model_name(cfg: Config) -> str:
    """item2vec, deepwalk, node2vec, or a '+' of them: what the vectors were trained on."""
    parts = (["item2vec"] if cfg.sequences.enabled is True else []) + (
        [cfg.walks.method] if cfg.walks.enabled is True else [])
    return "+".join(parts)


def _warm_start_init(cfg: Config, run: Path):
    """(current ingest codes, vectors, context) of the current published version's items."""
    from recembed.publish import current_version_dir

    prev = current_version_dir(Path(cfg.publish.dir))
    if prev is None:
        log.warning("train.warm_start is on but nothing is published yet; training from scratch")
        return None
    items = pd.read_parquet(prev / "items.parquet")
    vecs = np.load(prev / "vectors.npy", allow_pickle=False)
    ctx_p = prev / "context_vectors.npy"
    ctx = np.load(ctx_p, allow_pickle=False) if ctx_p.exists() else None
    vocab = pd.read_parquet(run / "vocabulary.parquet", columns=["code", "id"])
    code_of = pd.Series(vocab["code"].to_numpy(), index=vocab["id"].astype(str))
    codes = code_of.reindex(items["id"].astype(str)).to_numpy()
    ok = ~np.isnan(codes.astype(np.float64))
    return (codes[ok].astype(np.int64), vecs[ok], None if ctx is None else ctx[ok])


STAGES: list[Stage] = [
    Stage("ingest", ingest_stage, ("input", "ingest"), (),
          ("events.parquet", "vocabulary.parquet", "categories.parquet"),
          inputs=lambda cfg: [*cfg.input.paths, *cfg.input.test_paths,
                              *([cfg.input.categories_path] if cfg.input.categories_path else [])]),
    Stage("sessionize", sessionize_stage, ("session", "bots", "holdout"), ("ingest",),
          ("sessions_train.parquet", "sessions_test.parquet", "session_table.parquet")),
    Stage("calibrate", calibrate_stage,
          ("calibrate", "session", "graph", "walks", "sequences", "train", "serving"),
          ("sessionize",), ("calibration.json",), resolve=lambda cfg, run: _resolved(cfg, run)),
    Stage("graph", graph_stage, ("graph",), ("sessionize", "calibrate"), ("graph.npz",),
          enabled=lambda cfg: cfg.walks.enabled is not False),
    Stage("walks", walks_stage, ("walks",), ("graph",), ("walks.txt",),
          enabled=lambda cfg: cfg.walks.enabled is not False),
    Stage("sequences", sequences_stage, ("sequences",), ("sessionize", "calibrate"),
          ("sessions.txt",), enabled=lambda cfg: cfg.sequences.enabled is not False),
    Stage("train", train_stage, ("train", "sequences", "walks"), ("sequences", "walks"),
          ("vectors.npy", "context_vectors.npy", "items.parquet", "vectors.bin", "vectors.txt",
           "train.json")),
    Stage("index", index_stage, ("index", "serving"), ("train", "calibrate"),
          ("index.faiss", "index.json", "serving.json", "blend.npz", "index_context.faiss",
           "index_context.json")),
    Stage("evaluate", evaluate_stage, ("evaluate",), ("train", "index"),
          ("metrics.json", "report.html"), enabled=lambda cfg: cfg.evaluate.enabled),
    Stage("publish", publish_stage, ("publish",), ("evaluate",), ("publish.json",),
          enabled=lambda cfg: cfg.publish.enabled),
]
