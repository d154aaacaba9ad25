"""GRU4Rec and SASRec baselines on a finished recembed run's exact splits (issue 24).

Two parts, two interpreters (torch must not become a recembed dependency):

* ``export`` runs in the recembed venv: reads a finished run directory, builds the
  calibration split (`recembed.calibrate.calibration_split`) and the validation and holdout
  queries with `recembed.evaluate.make_queries` (each position of a session with a next item;
  targets unknown to the training side dropped), checks
  them by reproducing the POP baseline's holdout R@20 from metrics.json, and writes npz.
* ``train`` runs in the torch venv: GRU4Rec (embedding + GRU + full softmax; Hidasi et al.
  2016) or SASRec (Kang & McAuley 2018: item + position embeddings, causal self-attention
  blocks, scores = the last position's output . the shared item embeddings; padded keys are
  masked), a small grid tuned on the validation queries (early stopping on validation R@20),
  retrained on all training sessions with the chosen setting, scored on the holdout queries.

Setup (once)::

    python3 -m venv benchmarks/.neural-venv
    benchmarks/.neural-venv/bin/pip install \\
        /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl numpy pandas pyarrow

Run::

    recembed run pipelines/diginetica.toml --run-dir /tmp/neural2/diginetica
    python benchmarks/neural.py RUN_DIR [BUDGET_S [RESULT_JSON]]   # driver, recembed venv
    NEURAL_MODEL=sasrec python benchmarks/neural.py RUN_DIR 300     # SASRec instead

It appends a table to benchmarks/RESULTS.md (recembed's metrics.json rows + the model).
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NEURAL_PY = HERE / ".neural-venv" / "bin" / "python"
K = 20


def _seqs(df) -> list[np.ndarray]:
    sess = df["session"].to_numpy()
    items = df["item"].to_numpy().astype(np.int64)
    cut = np.flatnonzero(np.r_[True, sess[1:] != sess[:-1], True])
    return [items[a:b] for a, b in itertools.pairwise(cut) if b > a]


def queries(df, known: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """(prefixes, targets) of recembed's own query rule (`recembed.evaluate.make_queries`:
    every position with a next item, unknown targets dropped)."""
    from recembed.evaluate import make_queries

    q, _ = make_queries(df, known)
    prefixes = [q.items[a:a + n].astype(np.int64) for a, n in zip(q.start.tolist(),
                                                                  q.length.tolist(), strict=True)]
    return prefixes, q.target.astype(np.int64)


def _pack(prefixes: list[np.ndarray], maxlen: int = 50) -> np.ndarray:
    out = np.zeros((len(prefixes), maxlen), np.int64)  # 0 = padding, items shifted by +1
    for i, p in enumerate(prefixes):
        p = p[-maxlen:]
        out[i, maxlen - len(p):] = p + 1
    return out


def export(run: Path, out: Path) -> dict:
    import pandas as pd

    from recembed.calibrate import calibration_split

    train = pd.read_parquet(run / "sessions_train.parquet", columns=["session", "item", "ts"])
    test = pd.read_parquet(run / "sessions_test.parquet", columns=["session", "item"])
    table = pd.read_parquet(run / "session_table.parquet", columns=["session", "end", "split"])
    n = len(pd.read_parquet(run / "vocabulary.parquet", columns=["code"]))
    split = calibration_split(train, table)
    mpath = run / "metrics.json"
    metrics = json.loads(mpath.read_text()) if mpath.exists() else {"methods": {}}
    known_full = np.bincount(train["item"].to_numpy(), minlength=n) > 0
    known_ct = np.bincount(split.ct["item"].to_numpy(), minlength=n) > 0
    if (run / "catalog.parquet").exists():  # cold-start protocol: listed items are candidates
        listed = np.zeros(n, bool)
        codes = pd.read_parquet(run / "catalog.parquet")
        col = "code" if "code" in codes.columns else codes.columns[0]
        listed[codes[col].to_numpy().astype(np.int64) % max(n, 1)] = True
        known_full, known_ct = known_full | listed, known_ct | listed
    tr_seqs, ct_seqs = _seqs(train), _seqs(split.ct)
    vp, vt = queries(split.val, known_ct)
    hp, ht = queries(test, known_full)
    # reproduction check: POP (train popularity, no exclusion) on our holdout queries
    pop = np.bincount(train["item"].to_numpy(), minlength=n)
    top = np.argsort(-pop, kind="stable")[:K]
    pop_r = float(np.isin(ht, top).mean())
    rep = metrics["methods"].get("pop", {})
    rep_r = {v: rep[v].get(f"recall@{K}") for v in rep if isinstance(rep[v], dict)}
    np.savez(out, n=n, known_full=known_full, known_ct=known_ct,
             tr=np.concatenate(tr_seqs), tr_len=[len(s) for s in tr_seqs],
             ct=np.concatenate(ct_seqs), ct_len=[len(s) for s in ct_seqs],
             val_x=_pack(vp), val_y=vt, test_x=_pack(hp), test_y=ht)
    return {"holdout_queries": len(ht), "validation_queries": len(vt),
            "metrics_json_queries": metrics.get("queries"),
            "pop_R@20_ours": pop_r, "pop_R@20_metrics_json": rep_r}


# ---------------------------------------------------------------- torch side
def _train_main(npz: Path, budget_s: float, out: Path) -> None:
    import torch

    torch.set_num_threads(1)
    d = np.load(npz)
    n = int(d["n"])

    def split_seqs(flat, lens):
        return np.split(flat, np.cumsum(lens)[:-1])

    def examples(seqs, maxlen=50):
        xs, ys = [], []
        for s in seqs:
            if len(s) < 2:
                continue
            s = s[-(maxlen + 1):]
            x = np.zeros(maxlen, np.int64)
            y = np.full(maxlen, -100, np.int64)
            x[maxlen - len(s) + 1:] = s[:-1] + 1
            y[maxlen - len(s) + 1:] = s[1:]
            xs.append(x)
            ys.append(y)
        return torch.tensor(np.array(xs)), torch.tensor(np.array(ys))

    class GRU4Rec(torch.nn.Module):
        def __init__(self, dim, drop):
            super().__init__()
            self.emb = torch.nn.Embedding(n + 1, dim, padding_idx=0)
            self.gru = torch.nn.GRU(dim, dim, batch_first=True)
            self.drop = torch.nn.Dropout(drop)
            self.out = torch.nn.Linear(dim, n)

        def forward(self, x):
            h, _ = self.gru(self.drop(self.emb(x)))
            return self.out(self.drop(h))

    class SASRec(torch.nn.Module):
        def __init__(self, dim, drop, maxlen=50, blocks=2):
            super().__init__()
            self.dim = dim
            self.emb = torch.nn.Embedding(n + 1, dim, padding_idx=0)
            self.pos = torch.nn.Embedding(maxlen, dim)
            layer = torch.nn.TransformerEncoderLayer(dim, 1, dim_feedforward=dim, dropout=drop,
                                                     batch_first=True, norm_first=True)
            self.enc = torch.nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
            self.norm = torch.nn.LayerNorm(dim)
            self.drop = torch.nn.Dropout(drop)

        def forward(self, x):
            length = x.shape[1]
            h = self.emb(x) * self.dim ** 0.5 + self.pos(torch.arange(length))
            # causal, and padded keys masked; a position always sees itself (no empty row)
            eye = torch.eye(length, dtype=torch.bool)
            future = torch.triu(torch.ones(length, length, dtype=torch.bool), 1)
            blocked = (future | (x == 0).unsqueeze(1)) & ~eye
            mask = torch.zeros(blocked.shape).masked_fill(blocked, -torch.inf)
            h = self.norm(self.enc(self.drop(h), mask=mask))
            return h @ self.emb.weight[1:].T

    kind = os.environ.get("NEURAL_MODEL", "gru4rec")
    net = {"gru4rec": GRU4Rec, "sasrec": SASRec}[kind]

    def score(model, x, y, known, exclude):
        model.eval()
        ranks = []
        with torch.no_grad():
            for i in range(0, len(x), 512):
                xb = torch.as_tensor(x[i:i + 512])
                s = model(xb)[:, -1, :]
                s[:, ~torch.as_tensor(known)] = -torch.inf
                if exclude:
                    rows = torch.arange(len(xb)).unsqueeze(1).expand_as(xb)
                    m = xb > 0
                    s[rows[m], xb[m] - 1] = -torch.inf
                tgt = torch.as_tensor(y[i:i + 512])
                ts = s.gather(1, tgt.unsqueeze(1))
                ranks.append(((s > ts).sum(1) + 1).numpy())
        r = np.concatenate(ranks)
        return (r <= K).astype(float), np.where(r <= K, 1.0 / r, 0.0)

    def fit(seqs, dim, lr, drop, epochs, val=None, deadline=None):
        torch.manual_seed(0)
        x, y = examples(seqs)
        model = net(dim, drop)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        best, best_ep, hist = -1.0, 0, []
        g = torch.Generator().manual_seed(0)
        for ep in range(1, epochs + 1):
            model.train()
            perm = torch.randperm(len(x), generator=g)
            for i in range(0, len(x), 128):
                b = perm[i:i + 128]
                loss = torch.nn.functional.cross_entropy(
                    model(x[b]).reshape(-1, n), y[b].reshape(-1), ignore_index=-100)
                opt.zero_grad()
                loss.backward()
                opt.step()
            if val is not None:
                rr, mm = score(model, *val)
                hist.append((ep, rr.mean(), mm.mean()))
                if rr.mean() > best:
                    best, best_ep = rr.mean(), ep
                elif ep - best_ep >= 2:
                    break
                if deadline and time.time() > deadline:
                    break
        return model, best_ep, hist

    exclude = bool(int(os.environ.get("NEURAL_EXCLUDE", "0")))
    ct = split_seqs(d["ct"], d["ct_len"])
    tr = split_seqs(d["tr"], d["tr_len"])
    grid = [(64, 1e-3, 0.1), (64, 3e-3, 0.3), (128, 1e-3, 0.3), (128, 3e-3, 0.1)]
    t0 = time.time()
    deadline = t0 + budget_s
    tried = []
    for dim, lr, drop in grid:
        if time.time() > deadline:
            break
        _, ep, hist = fit(ct, dim, lr, drop, 15,
                          val=(d["val_x"], d["val_y"], d["known_ct"], exclude), deadline=deadline)
        bestv = max(hist, key=lambda h: h[1])
        tried.append({"dim": dim, "lr": lr, "dropout": drop, "epochs": ep,
                      "val_R@20": bestv[1], "val_MRR@20": bestv[2]})
    best = max(tried, key=lambda t: t["val_R@20"])
    t1 = time.time()
    model, _, _ = fit(tr, best["dim"], best["lr"], best["dropout"], best["epochs"])
    train_s = time.time() - t1
    rr, mm = score(model, d["test_x"], d["test_y"], d["known_full"], exclude)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(rr), (1000, len(rr)))
    ci = {k: [float(np.quantile(v[idx].mean(1), 0.025)), float(np.quantile(v[idx].mean(1), 0.975))]
          for k, v in (("r", rr), ("m", mm))}
    out.write_text(json.dumps({"model": kind, "grid": tried, "best": best, "train_s": train_s,
                               "tune_s": t1 - t0, "R@20": rr.mean(), "MRR@20": mm.mean(),
                               "R@20_ci": ci["r"], "MRR@20_ci": ci["m"], "exclude": exclude},
                              default=float))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--train":
        _train_main(Path(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4]))
        return
    run = Path(sys.argv[1])
    budget = float(sys.argv[2]) if len(sys.argv) > 2 else 300.0
    npz = run / "neural_splits.npz"
    check = export(run, npz)
    print("query check:", json.dumps(check))
    # the headline (`recommend`, the serving path) is scored with repeats allowed
    exclude = False
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "NEURAL_EXCLUDE": str(int(exclude))}
    kind = os.environ.get("NEURAL_MODEL", "gru4rec")
    res = Path(sys.argv[3]) if len(sys.argv) > 3 else run / f"neural_{kind}.json"
    if len(sys.argv) <= 3:  # a third argument: an existing result file, no retraining
        subprocess.run(["nice", "-n", "10", str(NEURAL_PY), "-P", __file__, "--train", str(npz),
                        str(budget), str(res)], check=True, env=env)
    table(run, check, json.loads(res.read_text()), " ".join(sys.argv))


def _ci(m: dict, key: str) -> str:
    ci = m.get(f"{key}_ci")
    if ci is None and f"ci95_lo:{key}" in m:
        ci = (m[f"ci95_lo:{key}"], m[f"ci95_hi:{key}"])
    v = m.get(key)
    if v is None:
        return ""
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{v:.3f}"


def table(run: Path, check: dict, gru: dict, command: str) -> None:
    sys.path.insert(0, str(HERE))
    from common import append_results, markdown_table

    metrics = json.loads((run / "metrics.json").read_text())
    variant = "exclude_prefix" if gru["exclude"] else "allow_repeats"
    rows = []
    # `recommend` is the served blend (":serving"), whatever metrics.json's headline names
    head = next((k for k in metrics["methods"] if k.endswith(":serving")),
                metrics.get("headline", {}).get("method", ""))
    sknn = max(("vsknn", "stan", "vstan"), key=lambda k: metrics["methods"].get(k, {}).get(
        variant, {}).get(f"recall@{K}", -1))
    keep = ["pop", "session_pop", "item_knn", sknn, head.replace(":serving", ":ann"), head]
    for name in keep:
        m = metrics["methods"].get(name, {})
        m = m.get(variant, m) if isinstance(m, dict) else {}
        if not isinstance(m, dict) or f"recall@{K}" not in m:
            continue
        rows.append({"method": f"{name} (recommend)" if name == head else name, "val R@20": "", "val MRR@20": "",
                     "holdout R@20 [95%]": _ci(m, f"recall@{K}"),
                     "MRR@20 [95%]": _ci(m, f"mrr@{K}"), "train s": "", "grid points": ""})
    b = gru["best"]
    name = {"gru4rec": "GRU4Rec", "sasrec": "SASRec"}[gru.get("model", "gru4rec")]
    rows.append({"method": name, "val R@20": f"{b['val_R@20']:.3f}",
                 "val MRR@20": f"{b['val_MRR@20']:.3f}",
                 "holdout R@20 [95%]": _ci(gru, "R@20"), "MRR@20 [95%]": _ci(gru, "MRR@20"),
                 "train s": f"{gru['train_s']:.0f}", "grid points": len(gru["grid"])})
    grid = "; ".join(f"dim {g['dim']} lr {g['lr']} drop {g['dropout']} ep {g['epochs']}: "
                     f"val R@20 {g['val_R@20']:.3f}" for g in gru["grid"])
    notes = (f"Query check: {json.dumps(check)}. Variant: {variant}. {name} grid (tune "
             f"{gru['tune_s']:.0f} s): {grid}.")
    append_results(f"{name} on {run.name} (benchmarks/neural.py, issue 24)", command,
                   markdown_table(rows), notes)


if __name__ == "__main__":
    main()
