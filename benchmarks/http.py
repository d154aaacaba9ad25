"""Load benchmark of `recembed serve` on loopback: single-session POST /recommend from C
concurrent clients (bounded in requests and seconds), with hot swaps during the run, then batch
/recommend against in-process `Recommender.recommend`.

    python benchmarks/http.py PUBLISHED_ROOT [--clients 16] [--requests 20000] [--seconds 30]
        [--swaps 3] [--batch 256] [--workers 1] [--client-procs 1] [--build]

`--build` first writes PUBLISHED_ROOT (when it does not exist) with two versions, v1 and v2, of
the 199,057-item synthetic catalogue of benchmarks/serving.py (its cache under
benchmarks/data/, built on first use: 10M-event log, blend arrays, HNSW32 indexes, candidate
tables, the calibrated clicks run's weights, retrieval = "table").

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

try:  # the serve extra has orjson: a client parses the 231 KB batch answer in 1 ms, not 3
    from orjson import loads as parse_json
except ImportError:
    parse_json = json.loads

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(conn: http.client.HTTPConnection, body: dict) -> tuple[int, dict]:
    conn.request("POST", "/recommend", body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, parse_json(r.read())


def build_root(root: Path, events: int = 10_000_000) -> None:
    """PUBLISHED_ROOT with versions v1 and v2 (the same files) of benchmarks/serving.py's
    synthetic catalogue, each with its manifest, and LATEST naming v1."""
    import importlib.util
    import shutil

    import faiss

    from recembed import artifacts as A
    from recembed.blend import BlendSettings
    from recembed.index import IndexMeta
    from recembed.serving import write_settings

    spec = importlib.util.spec_from_file_location("bench_serving",
                                                  ROOT / "benchmarks" / "serving.py")
    sv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sv)
    cache = sv.DATA / f"serving_cache_{events}"
    if not (cache / "queries.npz").exists():
        sv.build_cache(cache, events)
    rec = sv.load_recommender(cache)
    v1 = root / "v1"
    v1.mkdir(parents=True)
    n, d = rec.vectors.shape
    A.Embeddings(ids=rec.ids, codes=np.arange(n, dtype=np.int32), vectors=rec.vectors,
                 context=rec.context, counts=rec.model.popularity.astype(np.int64)).save(v1)
    for index_file, meta_art, metric, src in (
            (A.INDEX, A.INDEX_META, "cosine", "index.faiss"),
            (A.INDEX_CONTEXT, A.INDEX_CONTEXT_META, "ip", "index_context.faiss")):
        shutil.copyfile(cache / src, index_file.path(v1))
        meta = IndexMeta(factory="HNSW32", metric=metric, n=n, dim=d, reason="benchmark",
                         search_params="efSearch=64")
        A.write_text(meta_art.path(v1), meta.to_json())
    rec.model.save(A.BLEND.path(v1))
    write_settings(A.SERVING.path(v1), BlendSettings(weights=dict(sv.WEIGHTS),
                                                     retrieval="table"))
    files = {}
    for p in sorted(v1.iterdir()):
        files.update(A.file_hashes(p, p.name))
    for name in ("v1", "v2"):
        out = root / name
        if name != "v1":
            shutil.copytree(v1, out)
        A.write_json(out / A.MANIFEST, {"version": name, "created": A.now_iso(),
                                        "code_version": "benchmark", "counts": {"vectors": n},
                                        "files": files})
    _point(root, "v1")
    faiss.omp_set_num_threads(1)


def _point(root: Path, name: str) -> None:
    tmp = root / ".LATEST.bench"
    tmp.write_text(name + "\n")
    os.replace(tmp, root / "LATEST")


class RawClient:
    """A keep-alive HTTP/1.1 client on a plain socket: one send() per request, the response
    read by its Content-Length (what a compiled client does; http.client sends head and body
    separately and parses headers with the email package, ~0.2 ms a request)."""

    def __init__(self, port: int, timeout: float = 30.0):
        self.port, self.timeout = port, timeout
        self._connect()

    def _connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                f"\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        try:
            self.sock.sendall(head + body)
            while b"\r\n\r\n" not in self.buf:
                self._recv()
            h, _, rest = self.buf.partition(b"\r\n\r\n")
            status = int(h[9:12])
            length = 0
            for line in h.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            self.buf = rest
            while len(self.buf) < length:
                self._recv()
            out, self.buf = self.buf[:length], self.buf[length:]
            return status, out
        except OSError:
            self.sock.close()
            self._connect()
            raise

    def _recv(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk


class HttpClient:
    """The same interface on http.client (keep-alive)."""

    def __init__(self, port: int, timeout: float = 30.0):
        self.port, self.timeout = port, timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        try:
            self.conn.request("POST", path, body=body,
                              headers={"Content-Type": "application/json"})
            r = self.conn.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException):
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            raise


CLIENTS = {"raw": RawClient, "http.client": HttpClient}


def run_clients(port: int, bodies: list[bytes], first: int, step: int, threads: int,
                budget: int, seconds: float, kind: str, start=None, out=None) -> dict:
    """`threads` client threads sending bodies[first::step] round robin, at most `budget`
    requests and `seconds` seconds in all; returns (or puts on `out`) the latencies (s), the
    errors, the versions that answered, and the start and end times (time.time())."""
    lat: list[float] = []
    errors: list[str] = []
    versions: set[str] = set()
    left = threading.Semaphore(budget)
    if start is not None:
        start.wait()
    t_start = time.time()
    stop_at = time.monotonic() + seconds

    def client(t: int) -> None:
        c = CLIENTS[kind](port)
        i = first + t * step
        while time.monotonic() < stop_at and left.acquire(blocking=False):
            body = bodies[i % len(bodies)]
            i += step * threads
            t0 = time.perf_counter()
            try:
                status, raw = c.post("/recommend", body)
            except (OSError, http.client.HTTPException) as e:
                errors.append(repr(e))
                continue
            lat.append(time.perf_counter() - t0)
            answer = parse_json(raw)
            if status == 200:
                versions.add(answer["version"])
            elif status != 404:  # 404: a session of ids the swapped-in version lacks
                errors.append(f"{status} {answer}")

    ths = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    res = {"lat": lat, "errors": errors, "versions": sorted(versions), "t_start": t_start,
           "t_end": time.time()}
    if out is not None:
        out.put(res)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--clients", type=int, default=16, help="concurrent connections")
    ap.add_argument("--requests", type=int, default=20_000, help="at most, all clients")
    ap.add_argument("--seconds", type=float, default=30.0, help="at most")
    ap.add_argument("--swaps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--client-procs", type=int, default=1,
                    help="processes the clients run in (0 = threads of this process)")
    ap.add_argument("--client", choices=sorted(CLIENTS), default="raw")
    ap.add_argument("--code", type=Path, default=ROOT,
                    help="the checkout the server runs from (before / after comparisons)")
    ap.add_argument("--build", action="store_true", help="write the 199k-item root first")
    a = ap.parse_args()
    root = a.root.resolve()
    if a.build and not root.exists():
        build_root(root)
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
    bodies = [json.dumps({"ids": s, "k": 20}).encode() for s in sessions]

    port = _free_port()
    code = a.code.resolve()
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_WAIT_POLICY": "PASSIVE"}
    log = open(root.parent / f"bench-serve-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "recembed.cli", "serve", str(root),
                             "--port", str(port), "--workers", str(a.workers), "--poll", "0.5"],
                            stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=code)
    try:
        deadline = time.monotonic() + 300
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
        if a.workers > 1:
            time.sleep(20)  # every worker loads and warms its version: /health answers with one

        load_before = os.getloadavg()
        cpu0 = _cpu_seconds(proc.pid)
        if a.client_procs == 0:
            box: list[dict] = []
            th = threading.Thread(target=lambda: box.append(run_clients(
                port, bodies, 0, 1, a.clients, a.requests, a.seconds, a.client)))
            th.start()
            _swaps(root, versions, original, a.swaps, a.seconds)
            th.join()
            runs = box
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            start, out = ctx.Event(), ctx.Queue()
            per = [a.clients // a.client_procs + (i < a.clients % a.client_procs)
                   for i in range(a.client_procs)]
            procs = [ctx.Process(target=run_clients, args=(
                port, bodies, i, a.client_procs, per[i], a.requests // a.client_procs,
                a.seconds, a.client, start, out)) for i in range(a.client_procs)]
            for p in procs:
                p.start()
            time.sleep(2.0)  # the client processes import and connect
            start.set()
            _swaps(root, versions, original, a.swaps, a.seconds)
            runs = [out.get() for _ in procs]
            for p in procs:
                p.join()
        wall = max(r["t_end"] for r in runs) - min(r["t_start"] for r in runs)
        lat = [x for r in runs for x in r["lat"]]
        errors = [x for r in runs for x in r["errors"]]
        cpu = _cpu_seconds(proc.pid) - cpu0
        lat_ms = np.array(lat) * 1e3
        single = {"requests": len(lat), "seconds": round(wall, 2),
                  "requests_per_s": round(len(lat) / wall, 1),
                  "p50_ms": round(float(np.percentile(lat_ms, 50)), 2) if len(lat) else None,
                  "p99_ms": round(float(np.percentile(lat_ms, 99)), 2) if len(lat) else None,
                  "server_cpu_ms_per_request": round(cpu * 1e3 / max(len(lat), 1), 3),
                  "errors": len(errors),
                  "versions_answering": sorted({v for r in runs for v in r["versions"]}),
                  "swaps": a.swaps}
        _point(root, original)
        time.sleep(1.5 if a.workers == 1 else 5)

        # batch: HTTP vs in-process, same sessions, same k
        batch = sessions[: a.batch]
        body = json.dumps({"sessions": batch, "k": 20}).encode()
        client = CLIENTS[a.client](port, timeout=120)
        client.post("/recommend", body)
        rounds = 10
        t0 = time.perf_counter()
        for _ in range(rounds):
            status, raw = client.post("/recommend", body)
            answer = parse_json(raw)
            assert status == 200 and len(answer["results"]) == len(batch), answer
        http_s = (time.perf_counter() - t0) / rounds
        rec.recommend(batch, k=20)
        t0 = time.perf_counter()
        for _ in range(rounds):
            rec.recommend(batch, k=20)
        local_s = (time.perf_counter() - t0) / rounds
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=code).stdout.strip()
        out = {"machine": f"{platform.node()} {os.cpu_count()} cores, {platform.python_version()}",
               "command": " ".join(sys.argv), "server_code": f"{code} ({commit})",
               "items": len(ids), "clients": a.clients, "client": a.client,
               "client_procs": a.client_procs, "workers": a.workers,
               "load_average": [round(x, 2) for x in load_before], "single": single,
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` and its child processes (uvicorn workers),
    from /proc (Linux); 0.0 elsewhere."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


def _swaps(root: Path, versions: list[str], original: str, swaps: int, seconds: float) -> None:
    """`swaps` rewrites of LATEST, spread over the run."""
    for s in range(swaps):
        time.sleep(seconds / (swaps + 1))
        _point(root, versions[(versions.index(original) + s + 1) % len(versions)])


if __name__ == "__main__":
    main()
