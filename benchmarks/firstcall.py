"""Import, load and first-call times of a fresh serving process: `import recembed.serving`,
`Recommender.load(ROOT)`, the first `recommend` of a 3-item session (numba's on-disk cache
already filled), then a second one.

    python benchmarks/firstcall.py [ROOT] [--runs 5] [--code PATH ...]

ROOT defaults to a 400-item, 16-dim version built by `tests/conftest.py::make_version` in a
temporary folder. Each `--code` is a checkout whose `recembed` the processes import (default:
this one); the runs alternate between them, so that a shared, loaded machine treats each the
same. Prints one line per run and the median per checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import recembed.serving as S
t1 = time.perf_counter()
r = S.Recommender.load(sys.argv[1])
t2 = time.perf_counter()
ids = [str(x) for x in r.ids[:3]]
r.recommend(ids, k=20)
t3 = time.perf_counter()
r.recommend(ids[:2], k=20)
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "first": t3 - t2, "second": t4 - t3}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", type=Path)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--code", type=Path, action="append")
    a = ap.parse_args()
    codes = [c.resolve() for c in (a.code or [ROOT])]
    tmp = None
    root = a.root
    if root is None:
        sys.path.insert(0, str(ROOT))
        from tests.conftest import make_version

        tmp = tempfile.TemporaryDirectory()
        root = Path(tmp.name) / "published"
        make_version(root, "v1", n=400, seed=1, prefix="a")
    times: dict[Path, list[dict]] = {c: [] for c in codes}
    for i in range(a.runs + 1):  # run 0 fills numba's cache of each checkout (not counted)
        for c in codes:
            env = {**os.environ, "PYTHONPATH": str(c), "OMP_WAIT_POLICY": "PASSIVE"}
            out = subprocess.run([sys.executable, "-c", CHILD, str(root)], env=env, cwd=c,
                                 capture_output=True, text=True, check=True).stdout
            t = json.loads(out.strip().splitlines()[-1])
            load = os.getloadavg()[0]
            if i:
                times[c].append({**t, "loadavg": load})
                print(f"{c.name}: import {t['import']:.3f} s, load {t['load']:.3f} s, first "
                      f"{t['first']:.3f} s, second {t['second'] * 1e3:.2f} ms (load average "
                      f"{load:.1f})", flush=True)
    for c, rows in times.items():
        med = {k: sorted(r[k] for r in rows)[len(rows) // 2] for k in rows[0]}
        rng = {k: (min(r[k] for r in rows), max(r[k] for r in rows)) for k in rows[0]}
        print(f"median {c}: " + ", ".join(f"{k} {med[k]:.3f} ({rng[k][0]:.3f}-{rng[k][1]:.3f})"
                                          for k in ("import", "load", "first", "second")))


if __name__ == "__main__":
    main()
