"""A self-contained HTML report of a run: metrics table, Recall@K curves, recall by popularity
bucket, training loss per epoch, and a 2D PCA projection of the item vectors coloured by
category. Plots are matplotlib PNGs embedded as base64, so the file opens with no network."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from recembed.artifacts import BUCKETS, VARIANTS, Metrics, write_text


def write_report(path: str | Path, metrics: Metrics, *,
                 loss_per_epoch: list[float] | None = None, vectors: np.ndarray | None = None,
                 categories: np.ndarray | None = None, title: str = "recembed report") -> None:
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
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(metrics.methods.values())
    ks = metrics.ks
    parts = [f"<h1>{html.escape(title)}</h1>", _summary(metrics)]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for variant, ax in zip(VARIANTS, axes, strict=True):
        for m in methods:
            ax.plot(ks, [m.variant(variant).recall(k) for k in ks], marker="o", label=m.name)
        ax.set(xscale="log", xlabel="K", ylabel="Recall@K", title=variant.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    parts += ["<h2>Recall@K</h2>", _img(fig, plt)]

    k = metrics.cutoff
    fig, ax = plt.subplots(figsize=(11, 4))
    for b, bucket in enumerate(BUCKETS):
        vals = [m.allow_repeats.recall_by_bucket(k, bucket) for m in methods]
        ax.bar(np.arange(len(methods)) + (b - 1) * 0.27, vals, width=0.27, label=bucket)
    ax.set_xticks(range(len(methods)), [m.name for m in methods], rotation=30, ha="right",
                  fontsize=8)
    ax.set(ylabel=f"Recall@{k}", title="by target popularity (thirds of training clicks)")
    ax.legend()
    fig.tight_layout()
    parts += ["<h2>Recall by popularity bucket</h2>", _img(fig, plt)]

    if loss_per_epoch:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(range(1, len(loss_per_epoch) + 1), loss_per_epoch, marker="o")
        ax.set(xlabel="epoch", ylabel="loss (per epoch)", title="training loss")
        parts += ["<h2>Training loss</h2>", _img(fig, plt)]

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

    page = ("<!doctype html><html><head><meta charset='utf-8'><title>"
            f"{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:2em}}"
            "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
            "padding:3px 8px;text-align:right}th{background:#f4f4f4}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    write_text(path, page)


def _summary(metrics: Metrics) -> str:
    q = metrics.queries
    k = metrics.cutoff
    cols = ("recall", "mrr", "ndcg", "coverage")
    rows = [f"<p>{q.get('queries', 0):,} queries; {q.get('oov_share', 0):.2%} of targets unseen "
            "in training (not scored).</p>",
            "<table><tr><th>method</th><th>variant</th>"
            + "".join(f"<th>{c}@{k}</th>" for c in cols) + "<th>seconds</th></tr>"]
    for m in metrics.methods.values():
        for variant in VARIANTS:
            v = m.variant(variant)
            rows.append(f"<tr><td style='text-align:left'>{html.escape(m.name)}</td>"
                        f"<td style='text-align:left'>{variant}</td>"
                        + "".join(f"<td>{getattr(v, c)(k):.4f}</td>" for c in cols)
                        + f"<td>{v.seconds:.2f}</td></tr>")
    return "\n".join([*rows, "</table>"])


def _img(fig, plt) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return f"<img src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'/>"


def _pca2(x: np.ndarray, max_points: int = 20_000) -> np.ndarray:
    x = x[:max_points] - x[:max_points].mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T
