"""Load benchmark of `recembed serve` on loopback: single-session POST /recommend from C
concurrent clients (bounded in requests and seconds), with hot swaps during the run, then batch
/recommend against in-process `Recommender.recommend`.

    python benchmarks/http.py PUBLISHED_ROOT [--clients 16] [--requests 20000] [--seconds 30]
        [--swaps 3] [--batch 256] [--workers 1]

The swaps rewrite LATEST (atomically) between the versions already in the root, so the root
needs at least two versions; it is put back as it was at the end. The server listens on
127.0.0.1 only. The clients are threads of this process (http.client, keep-alive): on a 2-core
machine they share the cores with the server, so the numbers are a lower bound.
"""

from __future__ import annotations

import sys

# this file is named http.py: run as a script, its folder leads sys.path and would shadow the
# standard library's http package
sys.path[:] = [p for p in sys.path if not p.endswith("benchmarks")]

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(conn: http.client.HTTPConnection, body: dict) -> tuple[int, dict]:
    conn.request("POST", "/recommend", body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, json.loads(r.read())


def _point(root: Path, name: str) -> None:
    tmp = root / ".LATEST.bench"
    tmp.write_text(name + "\n")
    os.replace(tmp, root / "LATEST")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=20_000, help="at most, all clients")
    ap.add_argument("--seconds", type=float, default=30.0, help="at most")
    ap.add_argument("--swaps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    root = a.root.resolve()
    versions = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("v")
                      and (p / "manifest.json").exists())
    original = (root / "LATEST").read_text().strip()
    if a.swaps and len(versions) < 2:
        sys.exit("hot swaps need at least two versions in the published root")

    from recembed.serving import Recommender

    rec = Recommender.load(root)
    ids = [str(x) for x in rec.ids]
    rng = np.random.default_rng(0)
    sessions = [[ids[j] for j in rng.integers(0, len(ids), rng.integers(1, 6))]
                for _ in range(2000)]

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
    log = open(root.parent / f"bench-serve-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "recembed.cli", "serve", str(root),
                             "--port", str(port), "--workers", str(a.workers), "--poll", "0.5"],
                            stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    sys.exit("the server did not start")
                time.sleep(0.2)

        lat: list[float] = []
        errors: list[str] = []
        seen_versions: set[str] = set()
        budget = threading.Semaphore(a.requests)
        stop_at = time.monotonic() + a.seconds

        def client(t: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            i = t
            while time.monotonic() < stop_at and budget.acquire(blocking=False):
                s = sessions[i % len(sessions)]
                i += a.clients
                t0 = time.perf_counter()
                try:
                    status, body = _post(conn, {"ids": s, "k": 20})
                except (OSError, http.client.HTTPException) as e:
                    errors.append(repr(e))
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    continue
                lat.append(time.perf_counter() - t0)
                if status == 200:
                    seen_versions.add(body["version"])
                elif status != 404:  # 404: a session of ids the swapped-in version lacks
                    errors.append(f"{status} {body}")

        threads = [threading.Thread(target=client, args=(t,)) for t in range(a.clients)]
        t_start = time.perf_counter()
        for th in threads:
            th.start()
        for s in range(a.swaps):  # spread over the run
            time.sleep(a.seconds / (a.swaps + 1) if a.seconds < 1e9 else 1.0)
            _point(root, versions[(versions.index(original) + s + 1) % len(versions)])
        for th in threads:
            th.join()
        wall = time.perf_counter() - t_start
        lat_ms = np.array(lat) * 1e3
        single = {"requests": len(lat), "seconds": round(wall, 2),
                  "requests_per_s": round(len(lat) / wall, 1),
                  "p50_ms": round(float(np.percentile(lat_ms, 50)), 2) if len(lat) else None,
                  "p99_ms": round(float(np.percentile(lat_ms, 99)), 2) if len(lat) else None,
                  "errors": len(errors), "versions_answering": sorted(seen_versions),
                  "swaps": a.swaps}
        _point(root, original)
        time.sleep(1.5)

        # batch: HTTP vs in-process, same sessions, same k
        batch = sessions[: a.batch]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        _post(conn, {"sessions": batch, "k": 20})
        rounds = 10
        t0 = time.perf_counter()
        for _ in range(rounds):
            status, _body = _post(conn, {"sessions": batch, "k": 20})
            assert status == 200, _body
        http_s = (time.perf_counter() - t0) / rounds
        rec.recommend(batch, k=20)
        t0 = time.perf_counter()
        for _ in range(rounds):
            rec.recommend(batch, k=20)
        local_s = (time.perf_counter() - t0) / rounds
        out = {"machine": f"{platform.node()} {os.cpu_count()} cores, {platform.python_version()}",
               "command": " ".join(sys.argv), "items": len(ids), "clients": a.clients,
               "workers": a.workers, "single": single,
               "batch": {"sessions": len(batch), "http_sessions_per_s": round(len(batch) / http_s),
                         "in_process_sessions_per_s": round(len(batch) / local_s),
                         "ratio": round(local_s / http_s, 3)}}
        print(json.dumps(out, indent=2))
        if errors:
            print("first errors:", errors[:3], file=sys.stderr)
    finally:
        _point(root, original)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
