"""Random-walk speed and memory: recembed vs PecanPy on the same graphs, in one run.

Graphs: the item graph of a 10M-event synthetic log (`recembed synth`), and a power-law graph of
100k nodes / 2M undirected edges. Settings: 10 walks per node, length 40, (p, q) in
{(1,1), (0.5,2), (2,0.5)}. Each measurement runs in a fresh process (peak RSS is its own) and
includes everything from reading the CSR file to having the walks: PecanPy's setup and numba
compile, our CSR preparation and writing the corpus file. PecanPy needs numpy < 2, so it gets its
own venv (benchmarks/.venv-pecanpy, created here with uv or pip). PecanPy runs in the mode its
docs recommend for the setting: PreCompFirstOrder for p = q = 1 (weighted first order), SparseOTF
otherwise (PreComp's second-order tables need sum(degree^2) memory: billions of entries with a
26k-neighbour hub). Peak RSS is sampled from /proc while a run goes, so a run killed at the time
limit still reports its peak so far.

    python benchmarks/walks.py                # the full comparison, appended to RESULTS.md
    python benchmarks/walks.py --no-pecanpy   # ours only
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from common import DATA, HERE, append_results, markdown_table

PECANPY_VENV = HERE / ".venv-pecanpy"

OURS = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from recembed.graph import load_graph
from recembed.walks import random_walks
g = load_graph(sys.argv[1])
method, p, q = sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
st = random_walks(g, sys.argv[2], method=method, walks_per_node=10, walk_length=40, p=p, q=q,
                  seed=0, threads=2)
dt = time.perf_counter() - t0
print(json.dumps({"steps": st.tokens, "seconds": dt, "inner": st.seconds,
                  "prepare_s": st.prepare_s, "walk_s": st.walk_s, "format_s": st.format_s,
                  "wait_s": st.write_wait_s,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

PECANPY = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from pecanpy import pecanpy as node2vec
p, q = float(sys.argv[2]), float(sys.argv[3])
mode = node2vec.PreCompFirstOrder if p == q == 1 else node2vec.SparseOTF
g = mode(p=p, q=q, workers=2, verbose=False, random_state=0)
g.read_npz(sys.argv[1], weighted=True, implicit_ids=True)
walks = g.simulate_walks(num_walks=10, walk_length=40)
dt = time.perf_counter() - t0
print(json.dumps({"steps": sum(len(w) for w in walks), "seconds": dt,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def ensure_pecanpy() -> Path:
    """The PecanPy venv's python (numpy < 2), created on first use."""
    py = PECANPY_VENV / "bin" / "python"
    if py.exists():
        return py
    if shutil.which("uv"):
        subprocess.run(["uv", "venv", "-q", str(PECANPY_VENV)], check=True)
        subprocess.run(["uv", "pip", "install", "-q", "--compile-bytecode", "--python", str(py),
                        "numpy<2", "pecanpy"], check=True)
    else:
        subprocess.run([sys.executable, "-m", "venv", str(PECANPY_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "numpy<2", "pecanpy"], check=True)
    return py


def item_graph(n_events: int) -> Path:
    """CSR npz of the item graph of an n-event synthetic log (built once, cached)."""
    out = DATA / f"item_graph_{n_events}.npz"
    if out.exists():
        return out
    from recembed.graph import build_item_graph, graph_summary, save_graph
    from recembed.ingest import ColumnMap, ingest
    from recembed.sessions import sessionize
    from recembed.synth import synth_clicks, write_synth

    log = DATA / f"synth_{n_events}.parquet"
    if not log.exists():
        write_synth(synth_clicks(n_events, seed=0), log)
    res = ingest([str(log)], ColumnMap(item="item_id", ts="timestamp", user="user_id"))
    s = sessionize(res.events)
    g = build_item_graph(s.train, s.table["weight"].to_numpy(), len(res.vocabulary))
    print("item graph:", graph_summary(g), file=sys.stderr)
    save_graph(_pecanpy_compatible(g), out)
    return out


def power_law_graph(n: int = 100_000, m: int = 2_000_000, seed: int = 0) -> Path:
    """CSR npz of an undirected Chung-Lu power-law graph with ~m distinct edges."""
    out = DATA / f"powerlaw_{n}_{m}.npz"
    if out.exists():
        return out
    rng = np.random.default_rng(seed)
    w = (np.arange(1, n + 1) ** -0.7)
    w /= w.sum()
    src = rng.choice(n, int(m * 1.15), p=w)
    dst = rng.choice(n, int(m * 1.15), p=w)
    keep = src != dst
    a, b = np.minimum(src[keep], dst[keep]), np.maximum(src[keep], dst[keep])
    pairs = np.unique(a.astype(np.int64) * n + b)[:m]
    a, b = pairs // n, pairs % n
    wt = rng.uniform(0.1, 1.0, len(a)).astype(np.float32)
    g = sp.csr_matrix((np.r_[wt, wt], (np.r_[a, b], np.r_[b, a])), shape=(n, n))
    g.sort_indices()
    print(f"power-law graph: {n:,} nodes, {len(a):,} undirected edges, max degree "
          f"{np.diff(g.indptr).max():,}", file=sys.stderr)
    sp.save_npz(out, _pecanpy_compatible(g), compressed=False)
    return out


def _pecanpy_compatible(g: sp.csr_matrix) -> sp.csr_matrix:
    # PecanPy's read_npz expects uint32 indices; scipy reads them back fine too
    g = g.tocsr().astype(np.float32)
    g.sort_indices()
    return g


def measure(cmd: list[str], timeout: float) -> dict:
    """The JSON line a run prints, or its error; peak RSS sampled from /proc while it runs."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _vm_hwm_mb(proc.pid))
        if time.perf_counter() - t0 > timeout:
            proc.kill()
            proc.wait()
            return {"error": f"not finished after {timeout:.0f} s (killed)", "peak_rss_mb": peak}
        time.sleep(0.2)
    out, err = proc.communicate()
    if proc.returncode != 0:
        return {"error": err.strip().splitlines()[-1] if err.strip() else "failed"}
    return json.loads(out.strip().splitlines()[-1])


def _vm_hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--no-pecanpy", action="store_true")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--pecanpy-timeout", type=float, default=900)
    args = ap.parse_args()
    DATA.mkdir(exist_ok=True)
    graphs = {f"item graph ({args.events // 1_000_000}M events)": item_graph(args.events),
              "power-law 100k / 2M": power_law_graph()}
    pec = None if args.no_pecanpy else ensure_pecanpy()
    rows = []
    for gname, path in graphs.items():
        for p, q in ((1.0, 1.0), (0.5, 2.0), (2.0, 0.5)):
            methods = [("node2vec", p, q)] + ([("deepwalk", 1.0, 1.0)] if p == q == 1 else [])
            for method, pp, qq in methods:
                r = measure([sys.executable, "-c", OURS, str(path), str(DATA / "walks.txt"),
                             method, str(pp), str(qq)], timeout=600)
                rows.append(_row(gname, f"recembed {method}", p, q, r))
            if pec is not None:
                r = measure([str(pec), "-c", PECANPY, str(path), str(p), str(q)],
                            timeout=args.pecanpy_timeout)
                mode = "PreCompFirstOrder" if p == q == 1 else "SparseOTF"
                rows.append(_row(gname, f"PecanPy {mode}", p, q, r))
    (DATA / "walks.txt").unlink(missing_ok=True)
    table = markdown_table(rows)
    print(table)
    if not args.no_record:
        append_results("random walks: recembed vs PecanPy", "python benchmarks/walks.py", table,
                       "10 walks/node, length 40, 2 threads. seconds = end to end in a fresh "
                       "process (imports, reading the CSR, setup, numba compile or cache load, "
                       "walks; ours also writes the corpus file and fsyncs it, PecanPy returns "
                       "Python lists). M steps/s = walk tokens / seconds. 'in random_walks' = "
                       "steps/s from the graph in memory to the corpus on disk (alias tables "
                       "included, interpreter start and imports not), then where its seconds "
                       "went: prepare (alias tables + numba runtime start), walk, format, and "
                       "waiting on the disk. Peak RSS sampled from /proc every 0.2 s.")


def _row(graph: str, impl: str, p: float, q: float, r: dict) -> dict:
    if "error" in r:
        return {"graph": graph, "impl": impl, "p,q": f"{p:g},{q:g}", "steps": 0,
                "seconds": 0.0, "M steps/s": 0.0, "peak RSS MB": int(r.get("peak_rss_mb", 0)),
                "note": r["error"][:60]}
    row = {"graph": graph, "impl": impl, "p,q": f"{p:g},{q:g}", "steps": r["steps"],
           "seconds": round(r["seconds"], 2),
           "M steps/s": round(r["steps"] / r["seconds"] / 1e6, 2),
           "peak RSS MB": int(r["peak_rss_mb"]), "note": ""}
    if "inner" in r:
        row["note"] = (f"{r['steps'] / r['inner'] / 1e6:.1f}M/s in random_walks; "
                       f"prepare {r['prepare_s']:.2f} s, walk {r['walk_s']:.2f}, "
                       f"format {r['format_s']:.2f}, disk wait {r['wait_s']:.2f}")
    print(row, flush=True)
    return row


if __name__ == "__main__":
    main()
