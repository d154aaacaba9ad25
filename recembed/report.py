"""A self-contained HTML report of a run: the data funnel, the calibration choices and their
validation numbers, metrics table, Recall@K curves, recall by popularity bucket, training loss
per epoch, a 2D PCA projection of the item vectors coloured by category, the tuning study (when
the run was tuned) and the history of the published versions. Plots are matplotlib PNGs
embedded as base64, so the file opens with no network."""

from __future__ import annotations

import base64
import html
import io
import json
import time
import warnings
from pathlib import Path

import numpy as np

from recembed import artifacts as A
from recembed.artifacts import BUCKETS, VARIANTS, Metrics, write_text

# what `recembed tune` maximises (its study, shown by `tuning_section_html`)
TUNE_OBJECTIVE = "validation recall@20 + mrr@20 of the chosen blend"


def write_report(path: str | Path, metrics: Metrics, *,
                 loss_per_epoch: list[float] | None = None, vectors: np.ndarray | None = None,
                 categories: np.ndarray | None = None, title: str = "recembed report",
                 records: dict[str, dict] | None = None, history: list[dict] | None = None,
                 history_note: str = "", tuning_html: str = "",
                 run_dir: str | Path | None = None) -> None:
    """Write a self-contained report.html.

    Parameters
    ----------
    path : str or Path
        Destination file (written atomically).
    metrics : Metrics
        The evaluation (`recembed.artifacts.Metrics`, as in metrics.json).
    loss_per_epoch : list of float, optional
        Training loss of each epoch.
    vectors : numpy.ndarray, shape (n, dim), optional
        Item vectors for the 2D PCA plot (first 20,000 rows).
    categories : numpy.ndarray of int, optional
        Category of each vector row (-1 = unknown); the 10 largest are coloured.
    title : str
        Page title.
    records : dict, optional
        {stage: done-file record} of the run (`recembed.pipeline.stage_records`): the data
        funnel is built from their statistics.
    history : list of dict, optional
        `version_history(published)`: one entry per published version, oldest first.
    history_note : str
        Shown in the history section instead of plots when `history` is empty (e.g. "publishing
        is off").
    tuning_html : str
        `tuning_section_html(run_dir)` ("" when the run was never tuned).
    run_dir : str or Path, optional
        The run directory, for the header (run id, code version, inputs, the event time range,
        the config's differences from the defaults). Default: the folder above `path` when
        `path` is in a stage's scratch folder (`<run>/.tmp-evaluate/report.html`).
    """
    plt = _Figures()  # no pyplot: a notebook's backend (inline plots) stays as it is

    methods = list(metrics.methods.values())
    ks = metrics.ks
    if run_dir is None and Path(path).parent.name.startswith(".tmp-"):
        run_dir = Path(path).parent.parent
    served = next((m.name for m in methods if m.kind == "serving"), None)
    colours = _method_colours([m.name for m in methods], served)
    parts = [f"<h1>{html.escape(title)}</h1>", _header_html(run_dir, records),
             "<h2>Metrics on the holdout</h2>", _summary(metrics)]
    if records is not None:
        parts += ["<h2>Data funnel</h2>", _funnel_html(funnel(records), plt)]
    parts += ["<h2>Calibration</h2>", _calibration_html(metrics.calibration)]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for variant, ax in zip(VARIANTS, axes, strict=True):
        for m in methods:
            ax.plot(ks, [m.variant(variant).recall(k) for k in ks], marker="o",
                    label=m.name + (" (served)" if m.name == served else ""),
                    color=colours[m.name], lw=3 if m.name == served else 1.2,
                    zorder=3 if m.name == served else 2)
        ax.set(xscale="log", xlabel="K", ylabel="Recall@K", title=variant.replace("_", " "))
        ax.grid(alpha=0.3)
    if methods:  # beside the plots, never over the data
        fig.legend(*axes[0].get_legend_handles_labels(), loc="center left",
                   bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    fig.tight_layout()
    parts += ["<h2>Recall@K</h2>", _img(fig, plt)]

    k = metrics.cutoff
    fig, ax = plt.subplots(figsize=(11, 4))
    for b, bucket in enumerate(BUCKETS):
        vals = [m.allow_repeats.recall_by_bucket(k, bucket) for m in methods]
        ax.bar(np.arange(len(methods)) + (b - 1) * 0.27, vals, width=0.27, label=bucket)
    ax.set_xticks(range(len(methods)), [m.name for m in methods], rotation=30, ha="right",
                  fontsize=8)
    for tick in ax.get_xticklabels():
        if tick.get_text() == served:
            tick.set_fontweight("bold")
    ax.set(ylabel=f"Recall@{k}", title="by target popularity (thirds of training clicks)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    parts += ["<h2>Recall by popularity bucket</h2>", _img(fig, plt)]

    if loss_per_epoch:
        # gensim's loss is a sum over the epoch's tokens: per trained token it is comparable
        # across corpus sizes and runs
        tokens = float(metrics.train.get("tokens_trained") or 0)
        epochs = len(loss_per_epoch)
        per = tokens / epochs if tokens > 0 else 0.0
        y = [v / per for v in loss_per_epoch] if per else list(loss_per_epoch)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(range(1, epochs + 1), y, marker="o")
        ax.set(xlabel="epoch", ylabel="loss per trained token" if per else "loss (gensim units)",
               title="training loss")
        fig.tight_layout()
        parts += ["<h2>Training loss</h2>", _img(fig, plt),
                  "<p>Loss per trained token: gensim's epoch loss divided by the tokens trained "
                  f"per epoch ({per:,.0f}).</p>" if per else
                  "<p>Loss in gensim's units (the run did not record its tokens).</p>"]

    if vectors is not None and len(vectors) > 2:
        xy = _pca2(vectors)
        if categories is not None:
            categories = categories[: len(xy)]
        fig, ax = plt.subplots(figsize=(7, 6))
        if categories is not None and (categories >= 0).any():
            top = np.bincount(categories[categories >= 0]).argsort()[::-1][:10]
            rest = ~np.isin(categories, top)
            ax.scatter(xy[rest, 0], xy[rest, 1], s=2, c="lightgrey", label="other")
            for c in top:
                sel = categories == c
                ax.scatter(xy[sel, 0], xy[sel, 1], s=3, label=f"category {c}")
            ax.legend(fontsize=7, markerscale=3)
        else:
            ax.scatter(xy[:, 0], xy[:, 1], s=2)
        ax.set(title="item vectors, PCA (top 10 categories coloured)")
        parts += ["<h2>Item vectors</h2>", _img(fig, plt)]

    if run_dir is not None:
        parts += _run_data_sections(Path(run_dir), metrics, plt)

    if tuning_html:
        parts.append(tuning_html)
    parts += ["<h2>Published versions</h2>", _history_html(history or [], history_note, plt)]

    page = ("<!doctype html><html><head><meta charset='utf-8'><title>"
            f"{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:2em}}"
            "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
            "padding:3px 8px;text-align:right}th{background:#f4f4f4}"
            "tr.served td{background:#fff3c4;font-weight:bold}"
            "dl.header{display:grid;grid-template-columns:max-content auto;gap:2px 12px}"
            "dl.header dt{font-weight:bold}dl.header dd{margin:0}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    write_text(path, page)


def funnel(records: dict[str, dict]) -> list[dict]:
    """The data funnel of a run, from its stages' statistics: rows read, what each filter
    removed, and what is left at each step.

    Parameters
    ----------
    records : dict
        {stage: done-file record (with "stats")}, as `recembed.pipeline.stage_records` reads
        them; stages that did not run are left out of the funnel.

    Returns
    -------
    list of dict
        Rows ``{"step": str, "count": int, "kind": k}`` in funnel order; `kind` is "input"
        (rows read), "removed" (rows or events a filter dropped), "kept" (what is left after a
        stage) or "sessions" (session counts).

    Examples
    --------
    >>> rows = funnel({"ingest": {"stats": {"rows_read": 10, "quarantined": 1,
    ...                                     "quarantine_reasons": {"empty item id": 1},
    ...                                     "duplicates": 2, "events": 7}}})
    >>> [(r["step"], r["count"]) for r in rows]
    [('rows read', 10), ('quarantined: empty item id', 1), ('duplicates', 2), ('events after ingest', 7)]
    """
    rows: list[dict] = []

    def add(step: str, count, kind: str) -> None:
        if count is not None:
            rows.append({"step": step, "count": int(count), "kind": kind})

    ing = records.get("ingest", {}).get("stats", {})
    if ing:
        add("rows read", ing.get("rows_read"), "input")
        for reason, n in sorted(ing.get("quarantine_reasons", {}).items(), key=lambda x: -x[1]):
            add(f"quarantined: {reason}", n, "removed")
        add("other event types", ing.get("filtered_event_type"), "removed")
        add("outside the window", ing.get("outside_window"), "removed")
        add("duplicates", ing.get("duplicates"), "removed")
        add("events after ingest", ing.get("events"), "kept")
    ses = records.get("sessionize", {}).get("stats", {})
    if ses:
        add("bot events removed", ses.get("bot_events", 0), "removed")
        add("repeats collapsed", ses.get("repeats_collapsed", 0), "removed")
        add("events in too-short sessions", ses.get("events_in_short_sessions", 0), "removed")
        add("events in sessions", ses.get("events_kept"), "kept")
        val = ses.get("validation_sessions", 0)
        # train_sessions counts the whole training window, validation sessions included
        add("sessions: train", ses.get("train_sessions", 0) - val, "sessions")
        add("sessions: validation", val, "sessions")
        add("sessions: holdout", ses.get("holdout_sessions"), "sessions")
    seq = records.get("sequences", {}).get("stats", {})
    if seq:
        add("sessions in the item2vec corpus", seq.get("sessions_in", 0)
            - seq.get("sessions_absent", 0), "sessions")
    return rows


def version_history(published: str | Path) -> list[dict]:
    """One entry per published version up to the current one, oldest first, from each
    version's manifest.json: its name, creation time, serving Recall@20 and coverage@20 on its
    own holdout, drift against the version before it and its counts.

    Versions newer than the current one are left out: a run killed between renaming its version
    into place and switching LATEST leaves such a directory, which was never served.

    Parameters
    ----------
    published : str or Path
        A published/ root.

    Returns
    -------
    list of dict
        Keys "version", "created", "recall@20", "coverage@20", "overlap@k" (None for the
        first version or with too few shared items; k = publish.drift_k), "new_share",
        "dropped_share", "items", "events", "current" (bool); [] when nothing is published.
    """
    root = Path(published)
    current = A.current_version_dir(root)
    if current is None:
        return []
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("v")):
        if d.name > current.name:
            continue
        try:
            man = json.loads((d / A.MANIFEST).read_text())
        except (OSError, json.JSONDecodeError):
            continue  # not a complete version
        serving = man.get("metrics", {}).get("serving", {})
        drift = man.get("drift", {}) or {}
        overlap = next((v for k, v in drift.items() if k.startswith("overlap@")), None)
        counts = man.get("counts", {})
        out.append({"version": d.name, "created": man.get("created", ""),
                    "recall@20": serving.get("recall@20"), "coverage@20": serving.get("coverage@20"),
                    "overlap@k": overlap, "new_share": drift.get("new_share"),
                    "dropped_share": drift.get("dropped_share"),
                    "items": counts.get("vectors"), "events": counts.get("events"),
                    "current": d.name == current.name})
    return out


def tuning_section_html(run_dir: str | Path) -> str:
    """A self-contained HTML fragment on `<run>/tune.db`: the objective per trial (pruned trials
    at their last pruning checkpoint), the pruning curves, and the parameter importances
    (optuna's PED-ANOVA evaluator: no scikit-learn needed). "" when the run was never tuned."""
    db = A.TUNE_DB.path(run_dir)
    if not db.exists():
        return ""
    import optuna

    storage = f"sqlite:///{db}"
    parts = ["<h2>Tuning</h2>"]
    for name in optuna.study.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        parts.append(_study_html(study))
    return "\n".join(parts)


def _summary(metrics: Metrics) -> str:
    q = metrics.queries
    k = metrics.cutoff
    cols = ("recall", "mrr", "ndcg", "coverage")
    cold = "cold_share" in q  # the run had a catalog: cold targets were scored (cold start)
    if cold:
        head = (f"<p>{q.get('queries', 0):,} queries; {q.get('cold_share', 0):.2%} of them have "
                "a cold target (unseen in training, listed in the catalog: scored); "
                f"{q.get('oov_share', 0):.2%} of targets neither trained nor listed (not "
                f"scored). recall@{k} overall / warm / cold targets.</p>")
    else:
        head = (f"<p>{q.get('queries', 0):,} queries; {q.get('oov_share', 0):.2%} of targets "
                "unseen in training (not scored).</p>")
    split = [f"<th>recall@{k} warm</th><th>recall@{k} cold</th>"] if cold else []
    head = head.replace("</p>", " The served method (what <code>recommend</code> answers) is "
                        "highlighted; [lo, hi] is a bootstrap 95% interval over the queries.</p>")
    rows = [head, "<table id='metrics'><tr><th>method</th><th>variant</th>"
            + "".join(f"<th>{c}@{k}</th>" for c in cols)
            + f"<th>recall@{k} 95%</th><th>mrr@{k} 95%</th>" + "".join(split)
            + "<th>seconds</th></tr>"]
    for m in metrics.methods.values():
        for variant in VARIANTS:
            v = m.variant(variant)
            parts = "".join(f"<td>{v.values.get(f'recall@{k}_{w}', 0.0):.4f}</td>"
                            for w in ("warm", "cold")) if cold else ""
            ci = "".join(f"<td>[{iv[0]:.4f}, {iv[1]:.4f}]</td>" if iv else "<td></td>"
                         for iv in (v.interval("recall", k), v.interval("mrr", k)))
            cls = " class='served'" if m.kind == "serving" else ""
            label = html.escape(m.name) + (" (served)" if m.kind == "serving" else "")
            rows.append(f"<tr{cls}><td style='text-align:left'>{label}</td>"
                        f"<td style='text-align:left'>{variant}</td>"
                        + "".join(f"<td>{getattr(v, c)(k):.4f}</td>" for c in cols) + ci + parts
                        + f"<td>{v.seconds:.2f}</td></tr>")
    return "\n".join([*rows, "</table>"])


def _run_data_sections(run_dir: Path, metrics: Metrics, plt) -> list[str]:
    """Sections read from the run directory's own artifacts (items.parquet, vectors.npy,
    sessions_train.parquet: inputs the evaluate stage declares): example neighbour lists, the
    distributions, and the comparison with the previous run of the same config."""
    out: list[str] = []
    items_p, vec_p = A.ITEMS.path(run_dir), A.VECTORS.path(run_dir)
    if items_p.exists() and vec_p.exists():
        import pandas as pd

        items = pd.read_parquet(items_p, columns=["id", "count", "category"])
        vectors = np.load(vec_p, mmap_mode="r")
        if len(items) == len(vectors) and len(items) > 10:
            out += ["<h2>Example neighbours</h2>", _neighbours_html(items, vectors)]
        sess = A.SESSIONS_TRAIN.path(run_dir)
        lengths = (pd.read_parquet(sess, columns=["session"])["session"].value_counts()
                   .to_numpy() if sess.exists() else np.array([]))
        out += ["<h2>Distributions</h2>", _distributions_html(lengths, items["count"].to_numpy(),
                                                              plt)]
    out += ["<h2>Previous run</h2>", _previous_run_html(run_dir, metrics)]
    return out


def _neighbours_html(items, vectors: np.ndarray, per_bucket: int = 3, k: int = 5) -> str:
    """Cosine top-k neighbours of a few head, torso and tail items (thirds of the training
    clicks, as in the recall-by-popularity plot), with their categories and click counts."""
    esc = html.escape
    counts = items["count"].to_numpy()
    order = np.argsort(-counts, kind="stable")
    share = np.cumsum(counts[order]) / max(counts.sum(), 1)
    v = np.asarray(vectors, np.float32)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    ids, cats = items["id"].astype(str).to_numpy(), items["category"].to_numpy()
    rows = ["<table id='neighbours'><tr><th>bucket</th><th>item</th><th>category</th>"
            "<th>clicks</th>" + f"<th>{k} nearest (category)</th></tr>"]
    for bucket, (lo, hi) in zip(BUCKETS, ((0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1.01)),
                                strict=True):
        pos = np.flatnonzero((share > lo) & (share <= hi)) if bucket != BUCKETS[0] else \
            np.flatnonzero(share <= hi)
        if not len(pos):
            pos = np.array([0]) if bucket == BUCKETS[0] else pos
        picks = order[pos[np.linspace(0, len(pos) - 1, min(per_bucket, len(pos))).astype(int)]] \
            if len(pos) else []
        for r in picks:
            sims = v @ v[r]
            sims[r] = -np.inf
            top = np.argsort(-sims, kind="stable")[:k]
            nb = ", ".join(f"{esc(ids[j])} ({cats[j]})" for j in top)
            rows.append(f"<tr><td style='text-align:left'>{bucket}</td>"
                        f"<td style='text-align:left'>{esc(ids[r])}</td><td>{cats[r]}</td>"
                        f"<td>{counts[r]:,}</td><td style='text-align:left'>{nb}</td></tr>")
    return "\n".join([*rows, "</table>"])


def _distributions_html(lengths: np.ndarray, counts: np.ndarray, plt) -> str:
    """Session length (training sessions) and item popularity (clicks per item, by rank)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    if len(lengths):
        top = int(np.percentile(lengths, 99.5)) + 1
        axes[0].hist(np.minimum(lengths, top), bins=np.arange(1, top + 2) - 0.5, color="C0")
        axes[0].set(yscale="log", xlabel=f"events per session (last bin: >= {top})",
                    ylabel="sessions", title=f"session length ({len(lengths):,} training "
                    f"sessions, median {np.median(lengths):.0f})")
    c = np.sort(np.asarray(counts))[::-1]
    if len(c):
        axes[1].loglog(np.arange(1, len(c) + 1), c, color="C1")
        axes[1].set(xlabel="item rank", ylabel="training clicks",
                    title=f"item popularity ({len(c):,} items; top 1% hold "
                    f"{c[:max(1, len(c) // 100)].sum() / max(c.sum(), 1):.0%} of clicks)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _img(fig, plt)


def _previous_run_html(run_dir: Path, metrics: Metrics) -> str:
    """Served and best-baseline Recall@K / MRR@K against the latest other run directory of the
    same run name (`runs/<name>-<hash>`: the same job on earlier inputs or settings)."""
    esc = html.escape
    name = run_dir.name.rsplit("-", 1)[0]
    others = [d for d in run_dir.parent.glob(f"{name}-*")
              if d != run_dir and A.METRICS.path(d).exists()]
    if not others:
        return f"<p>No earlier run of {esc(name)} in {esc(str(run_dir.parent))}.</p>"
    prev_dir = max(others, key=lambda d: A.METRICS.path(d).stat().st_mtime)
    try:
        prev = Metrics.load(A.METRICS.path(prev_dir))
    except Exception as e:  # an older metrics.json format
        return (f"<p>{esc(prev_dir.name)}: {A.METRICS.name} cannot be read "
                f"({esc(str(e))}).</p>")
    k = metrics.cutoff

    def pick(m: Metrics):
        served = next((x for x in m.methods.values() if x.kind == "serving"), None)
        base = max(m.of_kind("baseline"), key=lambda b: b.allow_repeats.recall(k), default=None)
        return served, base

    rows = [f"<p>Against {esc(prev_dir.name)} (the latest other run of {esc(name)}).</p>",
            "<table id='previous'><tr><th>method</th><th>metric</th><th>this run</th>"
            "<th>previous run</th><th>change</th></tr>"]
    for label, now, before in zip(("served", "best baseline"), pick(metrics), pick(prev),
                                  strict=True):
        if now is None or before is None or k not in prev.ks:
            continue
        for metric in ("recall", "mrr"):
            a = getattr(now.allow_repeats, metric)(k)
            b = getattr(before.allow_repeats, metric)(k)
            rows.append(f"<tr><td style='text-align:left'>{label} ({esc(now.name)})</td>"
                        f"<td>{metric}@{k}</td><td>{a:.4f}</td><td>{b:.4f}</td>"
                        f"<td>{a - b:+.4f}</td></tr>")
    return "\n".join([*rows, "</table>"])


def _method_colours(names: list[str], served: str | None) -> dict[str, object]:
    """A distinct colour per method: the ten tab10 hues, then their light tab20 shades, then
    tab20b; the served method black. No two methods share a colour up to 40 methods."""
    import matplotlib

    tab20 = matplotlib.colormaps["tab20"].colors
    palette = [*tab20[0::2], *tab20[1::2], *matplotlib.colormaps["tab20b"].colors]
    out, i = {}, 0
    for n in names:
        if n == served:
            out[n] = "black"
        else:
            out[n] = palette[i % len(palette)]
            i += 1
    return out


def _header_html(run_dir: str | Path | None, records: dict[str, dict] | None) -> str:
    """The run header: run id, date, code version, inputs, event time range and the config
    keys that differ from the defaults."""
    from recembed import __version__

    esc = html.escape
    items: list[tuple[str, str]] = []
    if run_dir is not None:
        run_dir = Path(run_dir)
        items.append(("run", run_dir.name))
    items.append(("written", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())))
    items.append(("code version", __version__))
    diffs: list[str] = []
    if run_dir is not None and A.CONFIG.path(run_dir).exists():
        try:
            from recembed.config import Config, load_config

            cfg = load_config(A.CONFIG.path(run_dir))
            items.append(("inputs", ", ".join([*cfg.input.paths, *cfg.input.test_paths])))
            diffs = _config_diff(Config().model_dump(mode="json"), cfg.model_dump(mode="json"))
        except Exception as e:  # the header must not cost the report
            items.append(("config", f"could not be read: {e}"))
    voc = A.VOCABULARY.path(run_dir) if run_dir is not None else None
    if voc is not None and voc.exists():
        import pyarrow.parquet as pq

        t = pq.read_table(voc, columns=["first_ts", "last_ts"])
        if t.num_rows:
            lo = int(np.min(t.column("first_ts").to_numpy()))
            hi = int(np.max(t.column("last_ts").to_numpy()))
            fmt = "%Y-%m-%d %H:%M"
            items.append(("event time range", f"{time.strftime(fmt, time.gmtime(lo))} to "
                          f"{time.strftime(fmt, time.gmtime(hi))} UTC "
                          f"({(hi - lo) / 86400:.1f} days)"))
    ing = (records or {}).get("ingest", {}).get("stats", {})
    if ing.get("rows_read") is not None:
        items.append(("rows read", f"{ing['rows_read']:,}"))
    items.append(("config differences from the defaults",
                  "; ".join(diffs) if diffs else "none (paths aside)"))
    return ("<dl class='header' id='header'>"
            + "".join(f"<dt>{esc(k)}</dt><dd>{esc(str(v))}</dd>" for k, v in items) + "</dl>")


def _config_diff(default: dict, actual: dict, prefix: str = "") -> list[str]:
    """`key = value` for every leaf that differs from the default (path keys left out: they
    always differ once resolved)."""
    paths = {"input.paths", "input.test_paths", "input.categories_path", "input.catalog.path",
             "run.runs_dir", "publish.dir"}
    out = []
    for k, v in actual.items():
        key = f"{prefix}{k}"
        d = default.get(k) if isinstance(default, dict) else None
        if isinstance(v, dict) and isinstance(d, dict):
            out += _config_diff(d, v, key + ".")
        elif key not in paths and v != d:
            out.append(f"{key} = {json.dumps(v)}")
    return out


class _Figures:
    """The two pyplot calls the report uses, on `matplotlib.figure.Figure` objects: pyplot's
    global state (and `matplotlib.use`) is never touched, so rendering a report inside a
    notebook leaves its inline backend working."""

    @staticmethod
    def subplots(*args, figsize=None, **kwargs):
        """(figure, axes) like `pyplot.subplots`, on a figure no backend manages."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        return fig, fig.subplots(*args, **kwargs)

    @staticmethod
    def close(fig) -> None:
        """Nothing to release: no pyplot figure manager holds the figure."""


def _img(fig, plt) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")  # outside legends, long labels
    plt.close(fig)
    return (f'<img alt="plot" src="data:image/png;base64,'
            f'{base64.b64encode(buf.getvalue()).decode()}">')


def _funnel_html(rows: list[dict], plt) -> str:
    if not rows:
        return "<p>No stage statistics found in the run directory.</p>"
    esc = html.escape
    table = ["<table><tr><th>step</th><th>count</th><th>share of rows read</th></tr>"]
    base = next((r["count"] for r in rows if r["kind"] == "input"), 0)
    for r in rows:
        share = f"{r['count'] / base:.2%}" if base and r["kind"] != "sessions" else ""
        sign = "&minus;" if r["kind"] == "removed" else ""
        table.append(f"<tr><td style='text-align:left' class='{r['kind']}'>{esc(r['step'])}</td>"
                     f"<td>{sign}{r['count']:,}</td><td>{share}</td></tr>")
    table.append("</table>")
    colour = {"input": "C0", "removed": "C3", "kept": "C2", "sessions": "C1"}
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.2))
    y = np.arange(len(rows))[::-1]
    ax.barh(y, [r["count"] for r in rows], color=[colour[r["kind"]] for r in rows])
    ax.set_yticks(y, [r["step"] for r in rows], fontsize=8)
    for yi, r in zip(y, rows, strict=True):
        ax.text(r["count"], yi, f" {r['count']:,}", va="center", fontsize=7)
    ax.set(xlabel="rows / events (red: removed, green: kept) / sessions (orange)",
           title="data funnel")
    fig.tight_layout()
    return "\n".join([*table, _img(fig, plt)])


def _calibration_cost_html(cal: dict) -> list[str]:
    """What calibration cost (tokens trained vs the final model's) and whether it re-used the
    previous version's choice, and why."""
    esc = html.escape
    out = []
    reuse, cost = cal.get("reuse") or {}, cal.get("cost") or {}
    if reuse:
        what = {"kept": "kept the previous version's choice",
                "full": "calibrated fully"}.get(reuse.get("decision"), reuse.get("decision"))
        prev = reuse.get("previous_version")
        out.append(f"<p>Calibration {esc(str(what))}"
                   f"{esc(f' (previous version {prev})') if prev else ''}: "
                   f"{esc(str(reuse.get('reason', '')))}.</p>")
    if cost:
        out.append(f"<p>Tokens trained across {_num(cost.get('candidates'))} candidates: "
                   f"{_num(cost.get('tokens_trained'))}, {_num(cost.get('ratio'))} x the final "
                   f"model's planned {_num(cost.get('final_tokens_planned'))}.</p>")
    return out


def _sgns_html(sg: dict) -> list[str]:
    """The skip-gram search for the exported vectors (calibration.json's ``sgns``): what was
    chosen, and every setting tried with both validation objectives, their standard errors
    and tokens."""
    esc = html.escape
    if not sg:
        return []
    if sg.get("decision") != "searched":
        why = sg.get("reason") or ("kept the previous version's settings "
                                   f"{sg.get('chosen')}" if sg.get("decision") == "kept" else "")
        return [f"<h3>Skip-gram settings for the exported vectors</h3><p>{esc(str(why))}.</p>"]
    out = ["<h3>Skip-gram settings for the exported vectors</h3>",
           f"<p>Searched {esc(', '.join(sg.get('keys') or []))} on "
           f"{esc(str((sg.get('base') or {}).get('corpus')))}: chose "
           f"{esc(str(sg.get('chosen')))} (default {esc(str(sg.get('default')))}); the vectors "
           "alone decide among settings whose blend objective is within one standard error of "
           "the best.</p>"]
    cols = ("settings", "objective", "objective_se", "vectors_objective", "vectors_se",
            "tokens_trained", "postprocess", "chosen")
    out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"
               + "".join("<tr>" + "".join(
                   f"<td>{esc(str(r.get(k)) if k == 'settings' else _num(r.get(k)))}</td>"
                   for k in cols) + "</tr>" for r in sg.get("tried") or []) + "</table>")
    if sg.get("not_tried"):
        out.append("<p>Not tried (token budget): " + esc("; ".join(sg["not_tried"])) + "</p>")
    return out


def _calibration_html(cal: dict) -> str:
    esc = html.escape
    if not cal:
        return "<p>No calibration record in metrics.json.</p>"
    if not cal.get("enabled"):
        return f"<p>Calibration off: {esc(str(cal.get('reason', '')))}.</p>"
    blend = cal.get("blend") or {}
    chosen = [("corpus", cal.get("corpus")), ("training amount (target tokens)",
                                               _num(cal.get("target_tokens"))),
              ("post-processing of the vectors", cal.get("postprocess") or "none"),
              *((("the exported vectors' query decay", _num(cal["vectors_decay"])),)
                if cal.get("vectors_decay") is not None else ()),
              *((f"blend: {k}", ", ".join(f"{a}={_num(b)}" for a, b in v.items())
                 if isinstance(v, dict) else _num(v)) for k, v in blend.items())]
    q = cal.get("validation_queries") or {}
    parts = [f"<p>Chosen on the validation split ({_num(q.get('queries'))} queries) in "
             f"{_num(cal.get('seconds'))} s.</p>",
             *_calibration_cost_html(cal),
             "<table><tr><th>setting</th><th>chosen</th></tr>"
             + "".join(f"<tr><td style='text-align:left'>{esc(k)}</td><td>{esc(str(v))}</td>"
                       "</tr>" for k, v in chosen) + "</table>"]
    rows = [("blend (chosen)", cal.get("validation") or {})]
    rows += [(f"signal alone: {n}", v) for n, v in (cal.get("signals_alone") or {}).items()]
    rows += [(f"baseline: {n}", v) for n, v in (cal.get("baselines") or {}).items()]
    parts.append("<h3>Validation</h3><table><tr><th>method</th><th>recall@20</th>"
                 "<th>mrr@20</th></tr>"
                 + "".join(f"<tr><td style='text-align:left'>{esc(n)}</td>"
                           f"<td>{_num(v.get('recall@20'))}</td><td>{_num(v.get('mrr@20'))}</td>"
                           "</tr>" for n, v in rows) + "</table>")
    parts += _sgns_html(cal.get("sgns") or {})
    cands = cal.get("candidates") or []
    if cands:
        cols = ("corpus", "target_tokens", "epochs", "recall@20", "mrr@20", "postprocess",
                "vectors_objective", "vectors_decay", "seconds", "option_tokens", "tokens_trained", "objective_se",
                "sgns")
        parts.append("<h3>Candidates tried</h3><table><tr>"
                     + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td>{esc(_num(c.get(k)))}</td>" for k in cols)
                               + "</tr>" for c in cands) + "</table>")
    notes = cal.get("notes") or []
    if notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes)
                     + "</ul>")
    return "\n".join(parts)


def _history_html(history: list[dict], note: str, plt) -> str:
    esc = html.escape
    if not history:
        return f"<p>{esc(note or 'Nothing is published yet.')}</p>"
    cols = ("version", "created", "recall@20", "coverage@20", "overlap@k", "new_share",
            "dropped_share", "items", "events")
    table = ("<p>Each version's serving Recall@20 and coverage@20 are measured on the holdout "
             "of the run that published it; drift is against the version before it.</p>"
             "<table><tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"
             + "".join("<tr>" + "".join(f"<td>{esc(_num(h.get(c)))}"
                                        + (" (current)" if c == "version" and h["current"]
                                           else "") + "</td>" for c in cols) + "</tr>"
                       for h in history) + "</table>")
    x = np.arange(len(history))
    names = [h["version"] for h in history]
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), sharex=True)
    panels = [("recall@20", "serving Recall@20"), ("coverage@20", "coverage@20"),
              ("overlap@k", "neighbour overlap with the previous version"),
              ("items", "items (vectors)")]
    for ax, (key, label) in zip(axes.flat, panels, strict=True):
        ys = [np.nan if h.get(key) is None else float(h[key]) for h in history]
        ax.plot(x, ys, marker="o")
        ax.set(title=label)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
    fig.tight_layout()
    return table + _img(fig, plt)


def _num(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _study_html(study) -> str:
    from optuna.trial import TrialState

    plt = _Figures()

    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    esc = html.escape
    parts = [f"<h3>Study {esc(study.study_name)}</h3>",
             f"<p>{len(trials)} trials: {len(done)} complete, {len(pruned)} pruned, "
             f"{len(trials) - len(done) - len(pruned)} failed or running. Objective: "
             f"{esc(TUNE_OBJECTIVE)}.</p>"]
    if not trials:
        return "\n".join(parts)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    if done:
        x = [t.number for t in done]
        y = [t.value for t in done]
        ax.scatter(x, y, label="complete", color="C0")
        best = np.maximum.accumulate(y)
        ax.step(x, best, where="post", color="C1", label="best so far")
    ax.set(xlabel="trial", ylabel="validation recall@20 + mrr@20", title="objective per trial")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    for t in [*done, *pruned]:
        iv = sorted(t.intermediate_values.items())
        if iv:
            ax.plot([s for s, _ in iv], [v for _, v in iv], marker="x" if t in pruned else "o",
                    color="C3" if t in pruned else "C0", alpha=0.6)
    ax.set(xlabel="percent of the epoch schedule", ylabel="directional recall@20 + mrr@20",
           title="pruning checkpoints (red: pruned)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    parts.append(_img(fig, plt))
    if done:
        b = study.best_trial
        rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(_num(v))}</td></tr>"
                       for k, v in b.params.items())
        parts.append(f"<p>Best: trial #{b.number}, {b.value:.4f} (recall@20 "
                     f"{b.user_attrs.get('recall@20', 0):.4f}, mrr@20 "
                     f"{b.user_attrs.get('mrr@20', 0):.4f}).</p>"
                     f"<table><tr><th>parameter</th><th>value</th></tr>{rows}</table>")
    parts.append(_importance_html(study, plt))
    return "\n".join(parts)


def _importance_html(study, plt) -> str:
    import optuna

    try:
        with warnings.catch_warnings():  # "few trials in a regime": the table says how many
            warnings.simplefilter("ignore", UserWarning)
            imp = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    except (ValueError, RuntimeError) as e:  # too few complete trials, nothing varied, ...
        return f"<p>Parameter importances: not available ({html.escape(str(e))}).</p>"
    if not imp:
        return "<p>Parameter importances: not available (no parameter varied).</p>"
    names = list(imp)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    ax.barh(names, [imp[n] for n in names])
    ax.set(xlabel="importance (PED-ANOVA)", title="parameter importances")
    fig.tight_layout()
    rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{v:.3f}</td></tr>" for n, v in imp.items())
    return ("<h4>Parameter importances</h4>" + _img(fig, plt)
            + f"<table><tr><th>parameter</th><th>importance</th></tr>{rows}</table>")


def _pca2(x: np.ndarray, max_points: int = 20_000) -> np.ndarray:
    x = x[:max_points] - x[:max_points].mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T
