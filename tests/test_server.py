"""`recembed serve`: the real service started as a subprocess on 127.0.0.1 (a free port), called
over HTTP: every endpoint, every error case, hot swaps while requests run, graceful shutdown."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

from recembed import artifacts as A
from recembed.serving import Recommender
from tests.conftest import ROOT, make_version

pytest.importorskip("fastapi", reason="the serve extra is part of the dev install")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`recembed serve ROOT` in a subprocess; `call` answers (status, JSON body)."""

    def __init__(self, root: Path, *args: str):
        self.port = _free_port()
        self.log = root.parent / f"serve-{self.port}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recembed.cli", "serve", str(root), "--port", str(self.port),
             "--poll", "0.2", *args], stdout=subprocess.DEVNULL,
            stderr=open(self.log, "w"), env=env, cwd=ROOT)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited {self.proc.returncode}: "
                                     f"{self.log.read_text()}")
            try:
                if self.call("GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"no answer in 120 s: {self.log.read_text()}")
            time.sleep(0.1)

    def call(self, method: str, path: str, body=None, conn=None):
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
            conn.request(method, path, body=data,
                         headers={"Content-Type": "application/json"} if data else {})
            r = conn.getresponse()
            raw = r.read()
            ctype = r.getheader("Content-Type", "")
            return r.status, json.loads(raw) if "json" in ctype else raw.decode()
        finally:
            if own:
                conn.close()

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("pub") / "published"
    make_version(root, "v1", n=300, seed=1, prefix="a")
    srv = Server(root, "--max-k", "50", "--max-session", "8", "--max-batch", "4")
    yield root, srv
    srv.stop()


def test_every_endpoint_answers_with_its_version(served):
    root, srv = served
    rec = Recommender.load(root / "v1")
    status, body = srv.call("GET", "/similar?id=a5&k=7")
    assert status == 200 and body["version"] == "v1" and body["id"] == "a5"
    exp = rec.similar("a5", k=7)
    assert [x["id"] for x in body["items"]] == list(exp.ids[0])
    assert [x["score"] for x in body["items"]] == [float(s) for s in exp.scores[0]]

    # one session: bit-identical to the in-process Recommender (ids and float32 scores)
    status, body = srv.call("POST", "/recommend", {"ids": ["a1", "a2", "zz"], "k": 9})
    exp = rec.recommend(["a1", "a2", "zz"], k=9)
    assert status == 200 and body["version"] == "v1" and body["unknown"] == ["zz"]
    assert [x["id"] for x in body["items"]] == list(exp.ids[0])
    assert np.array_equal(np.float32([x["score"] for x in body["items"]]), exp.scores[0])

    # a batch, with per-session k / exclude_seen
    sessions = [["a3", "a4"], {"ids": ["a7", "a8", "a7"], "k": 3, "exclude_seen": True}]
    status, body = srv.call("POST", "/recommend", {"sessions": sessions, "k": 5})
    assert status == 200 and body["version"] == "v1" and len(body["results"]) == 2
    assert [x["id"] for x in body["results"][0]["items"]] == \
        list(rec.recommend(["a3", "a4"], k=5).ids[0])
    second = [x["id"] for x in body["results"][1]["items"]]
    assert second == list(rec.recommend(["a7", "a8", "a7"], k=3,
                                        exclude_session_items=True).ids[0])
    assert len(second) == 3 and not {"a7", "a8"} & set(second)

    status, body = srv.call("GET", "/items/a10")
    assert status == 200 and body == {"version": "v1", "id": "a10", "served": True,
                                      "origin": "trained", "category": 10 % 7,
                                      "why_not_served": ""}
    status, body = srv.call("GET", "/items/a299")
    assert body["origin"] == "side_info" and body["served"]
    status, body = srv.call("GET", "/items/" + quote("cold one"))
    assert status == 200 and body["served"] is False and body["origin"] == "none"
    assert "no vector" in body["why_not_served"]

    status, body = srv.call("GET", "/health")
    assert status == 200 and body == {"status": "ok", "version": "v1"}
    status, body = srv.call("GET", "/version")
    assert status == 200 and body["version"] == "v1" and body["items"] == 300
    assert body["manifest"]["version"] == "v1" and body["manifest"]["files"] >= 10
    assert body["dim"] == 16

    status, text = srv.call("GET", "/metrics")
    assert status == 200 and 'recembed_version_info{version="v1"} 1.0' in text
    assert 'recembed_requests_total{endpoint="similar",status="200"}' in text
    assert "recembed_request_seconds_bucket" in text


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), [
    ("GET", "/similar?id=nope", None, 404, "id"),
    ("GET", "/similar", None, 422, "id"),
    ("GET", "/similar?id=a1&k=-1", None, 422, "k"),
    ("GET", "/similar?id=a1&k=x", None, 422, "k"),
    ("GET", "/similar?id=a1&k=51", None, 422, "k"),  # max_k = 50
    ("GET", "/similar?id=a1&n=3", None, 422, "n"),
    ("GET", "/items/nope", None, 404, "id"),
    ("POST", "/recommend", b"{not json", 400, "body"),
    ("POST", "/recommend", [1, 2], 422, "body"),
    ("POST", "/recommend", {}, 422, "ids"),
    ("POST", "/recommend", {"ids": []}, 422, "ids"),
    ("POST", "/recommend", {"ids": "a1"}, 422, "ids"),
    ("POST", "/recommend", {"ids": ["a1", 3]}, 422, "ids[1]"),
    ("POST", "/recommend", {"ids": ["nope", "nada"]}, 404, "ids"),
    ("POST", "/recommend", {"ids": ["a1"] * 9}, 422, "ids"),  # max_session = 8
    ("POST", "/recommend", {"ids": ["a1"], "k": 2.5}, 422, "k"),
    ("POST", "/recommend", {"ids": ["a1"], "k": True}, 422, "k"),
    ("POST", "/recommend", {"ids": ["a1"], "k": 51}, 422, "k"),
    ("POST", "/recommend", {"ids": ["a1"], "exclude_seen": "yes"}, 422, "exclude_seen"),
    ("POST", "/recommend", {"ids": ["a1"], "top": 3}, 422, "top"),
    ("POST", "/recommend", {"ids": ["a1"], "sessions": [["a1"]]}, 422, "ids"),
    ("POST", "/recommend", {"sessions": []}, 422, "sessions"),
    ("POST", "/recommend", {"sessions": [["a1"]] * 5}, 422, "sessions"),  # max_batch = 4
    ("POST", "/recommend", {"sessions": [["a1"], "a2"]}, 422, "sessions[1]"),
    ("POST", "/recommend", {"sessions": [["a1"], {"ids": ["a2"], "k": -2}]}, 422,
     "sessions[1].k"),
    ("POST", "/recommend", {"sessions": [["a1"], ["nope"]]}, 404, "sessions[1]"),
    ("GET", "/nowhere", None, 404, "path"),
    ("GET", "/recommend", None, 405, "path"),
])
def test_errors_are_json_naming_the_field(served, method, path, body, status, field):
    _, srv = served
    got, answer = srv.call(method, path, body)
    assert got == status, answer
    assert answer["version"] == "v1"
    assert answer["error"]["status"] == status and answer["error"]["field"] == field
    assert answer["error"]["message"]


def test_errors_are_counted_and_logged_as_json_lines(served):
    _, srv = served
    srv.call("GET", "/similar?id=a1&k=-1")
    _, text = srv.call("GET", "/metrics")
    assert 'recembed_errors_total{endpoint="similar",field="k",status="422"}' in text
    events = srv.events()  # every line is a JSON object
    assert {"loaded", "ready"} <= {e["event"] for e in events}
    assert srv.proc.poll() is None


def _publish(root: Path, name: str, **kw) -> None:
    """A new version beside the served one, then LATEST moved to it (as publish does)."""
    make_version(root, name, point=True, **kw)


def test_hot_swap_while_requests_run(tmp_path):
    root = tmp_path / "published"
    make_version(root, "v1", n=300, seed=1, prefix="a")
    srv = Server(root)
    prefix = {"v1": "a", "v2": "b", "v3": "c"}
    stop = threading.Event()
    seen: list[tuple[str, list[str], int]] = []
    failures: list[str] = []

    def client(t: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        i = 0
        while not stop.is_set() and i < 3000:
            i += 1
            try:
                # ids of every version: some are unknown to the one that answers
                status, body = srv.call("POST", "/recommend",
                                        {"ids": ["a1", "b2", "c3", f"a{t}"], "k": 10}, conn)
            except OSError as e:
                failures.append(repr(e))
                conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
                continue
            if status != 200:
                failures.append(f"{status} {body}")
                continue
            seen.append((body["version"], [x["id"] for x in body["items"]], status))

    try:
        threads = [threading.Thread(target=client, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        time.sleep(1.0)
        _publish(root, "v2", n=250, seed=2, prefix="b")
        deadline = time.monotonic() + 60
        while srv.call("GET", "/version")[1]["version"] != "v2":
            assert time.monotonic() < deadline, srv.log.read_text()
            time.sleep(0.1)
        time.sleep(0.5)
        # a broken version: refused, logged, the old one kept
        bad = root / "v3"
        make_version(root, "v3", n=200, seed=3, prefix="c", point=False)
        p = bad / "vectors.npy"
        p.write_bytes(p.read_bytes()[:-8])
        (root / A.LATEST).write_text("v3\n")
        deadline = time.monotonic() + 30
        while not any(e["event"] == "swap_refused" for e in srv.events()):
            assert time.monotonic() < deadline, srv.log.read_text()
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        for th in threads:
            th.join()
        assert srv.call("GET", "/version")[1]["version"] == "v2"
    finally:
        stop.set()
        code = srv.stop()
    assert not failures, failures[:5]
    versions = [v for v, _, _ in seen]
    assert {"v1", "v2"} <= set(versions) and "v3" not in versions
    first_v2 = versions.index("v2")
    assert "v1" not in versions[first_v2 + len(seen) // 50:]  # switched, not flapping
    for v, ids, _ in seen:  # each answer complete, from one version only
        assert len(ids) == 10 and all(x.startswith(prefix[v]) for x in ids), (v, ids)
    events = {e["event"]: e for e in srv.events()}
    assert events["swapped"]["old"] == "v1" and events["swapped"]["new"] == "v2"
    assert events["swap_refused"]["version"] == "v3" and \
        "sha256" in events["swap_refused"]["error"] and events["swap_refused"]["kept"] == "v2"
    assert "shutdown" in events and code == 0  # graceful: SIGTERM ends with 0


def test_graceful_shutdown_finishes_an_in_flight_request(tmp_path):
    root = tmp_path / "published"
    make_version(root, "v1", n=200, seed=1, prefix="a")
    srv = Server(root)
    # a batch big enough to still run when SIGTERM arrives, sent before the signal
    body = {"sessions": [["a1", "a2", f"a{i % 200}"] for i in range(1000)], "k": 200}
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    conn.request("POST", "/recommend", body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json"})
    time.sleep(0.05)
    srv.proc.send_signal(signal.SIGTERM)
    r = conn.getresponse()
    answer = json.loads(r.read())
    assert r.status == 200 and len(answer["results"]) == 1000
    assert srv.proc.wait(30) == 0
    assert any(e["event"] == "shutdown" for e in srv.events())


def test_serve_refuses_a_root_without_latest(tmp_path):
    r = subprocess.run([sys.executable, "-m", "recembed.cli", "serve", str(tmp_path), "--port",
                        str(_free_port())], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert r.returncode == 3 and "LATEST" in r.stderr


def _call_fresh(srv: Server, method: str, path: str, body=None) -> tuple[int, dict, str]:
    """One request on a new connection (the kernel hands each new connection to one of the
    workers): status, JSON body, the pid of the worker that answered."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data,
                     headers={"Content-Type": "application/json"} if data else {})
        r = conn.getresponse()
        return r.status, json.loads(r.read()), r.getheader("X-Recembed-Worker", "")
    finally:
        conn.close()


def _pids_of(srv: Server, event: str, **match) -> set[int]:
    return {e["pid"] for e in srv.events()
            if e["event"] == event and all(e.get(k) == v for k, v in match.items())}


def test_two_workers_each_swap_and_none_answers_the_old_version_after(tmp_path):
    """`serve --workers 2`: both worker processes answer; a new version reaches each (each logs
    its own swap); once both have, no answer comes from the old version, on either worker."""
    root = tmp_path / "published"
    make_version(root, "v1", n=200, seed=1, prefix="a")
    srv = Server(root, "--workers", "2")
    try:
        deadline = time.monotonic() + 120
        while len(_pids_of(srv, "ready")) < 2:  # /health answers once the first is ready
            assert time.monotonic() < deadline and srv.proc.poll() is None, srv.log.read_text()
            time.sleep(0.2)
        workers = _pids_of(srv, "ready")
        answered: dict[str, set[str]] = {}
        for i in range(400):
            status, body, pid = _call_fresh(srv, "POST", "/recommend",
                                            {"ids": ["a1", f"a{i % 200}"], "k": 5})
            assert status == 200 and body["version"] == "v1", body
            answered.setdefault(pid, set()).add(body["version"])
            if len(answered) == 2 and i >= 20:
                break
        assert {int(p) for p in answered} == workers  # both workers serve

        _publish(root, "v2", n=150, seed=2, prefix="b")
        deadline = time.monotonic() + 120
        during: list[str] = []
        while _pids_of(srv, "swapped", new="v2") != workers:  # the swap reported by each
            assert time.monotonic() < deadline, srv.log.read_text()
            status, body, _ = _call_fresh(srv, "GET", "/health")
            assert status == 200
            during.append(body["version"])
        assert set(during) <= {"v1", "v2"}
        after: dict[str, set[str]] = {}
        for i in range(400):
            status, body, pid = _call_fresh(srv, "POST", "/recommend",
                                            {"ids": ["b1", f"b{i % 150}"], "k": 5})
            assert status == 200, body
            assert body["version"] == "v2" and all(x["id"].startswith("b")
                                                   for x in body["items"]), (pid, body)
            after.setdefault(pid, set()).add(body["version"])
            if len(after) == 2 and i >= 20:
                break
        assert {int(p) for p in after} == workers and all(v == {"v2"} for v in after.values())
    finally:
        srv.stop()
    assert srv.proc.returncode is not None


def test_coalescing_transport_sends_one_buffer_per_loop_step_and_flushes_on_close():
    import asyncio

    from recembed.server import CoalescingTransport

    class Fake:
        def __init__(self):
            self.writes: list[bytes] = []
            self.closed = False

        def write(self, data):
            self.writes.append(data)

        def is_closing(self):
            return self.closed

        def close(self):
            self.closed = True

        def get_extra_info(self, name):
            return f"info:{name}"

    async def scenario():
        fake = Fake()
        t = CoalescingTransport(fake, asyncio.get_running_loop())
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(bytearray(b'{"a":1}'))
        t.write(b"")
        assert fake.writes == []  # nothing leaves before the loop step ends
        await asyncio.sleep(0)
        assert fake.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"a":1}']
        t.write(b"tail")
        t.close()  # close sends what is pending first
        assert fake.writes[-1] == b"tail" and fake.closed
        await asyncio.sleep(0)
        assert len(fake.writes) == 2  # the scheduled flush finds nothing left
        assert t.get_extra_info("peername") == "info:peername"

    asyncio.run(scenario())


def test_a_swap_loads_with_a_short_gil_switch_interval_and_restores_it(tmp_path, monkeypatch):
    import recembed.server as server

    root = tmp_path / "published"
    make_version(root, "v1", n=60, seed=1, prefix="a")
    watcher = server.VersionWatcher(server.ServeSettings(root=str(root), verify=True))
    make_version(root, "v2", n=60, seed=2, prefix="b")
    during: list[float] = []
    real = server.load_version

    def recording(*args, **kwargs):
        during.append(sys.getswitchinterval())
        return real(*args, **kwargs)

    monkeypatch.setattr(server, "load_version", recording)
    before = sys.getswitchinterval()
    assert before > 0.001  # the interpreter's default is 5 ms
    assert watcher.check() is True and watcher.current.version == "v2"
    assert during == [0.0005]
    assert sys.getswitchinterval() == before
    # a refused version restores it too
    (root / "v3").mkdir()
    (root / A.LATEST).write_text("v3\n")  # a version without a manifest
    assert watcher.check() is False and watcher.current.version == "v2"
    assert during[-1] == 0.0005 and sys.getswitchinterval() == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_the_watcher_thread_loads_at_lower_priority_than_the_serving_threads():
    from recembed.server import _lower_priority

    seen: dict[str, int] = {}

    def thread() -> None:
        tid = threading.get_native_id()
        seen["before"] = os.getpriority(os.PRIO_PROCESS, tid)
        _lower_priority()
        seen["after"] = os.getpriority(os.PRIO_PROCESS, tid)

    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=thread)
    t.start()
    t.join()
    assert seen["after"] == min(seen["before"] + 10, 19)
    # only that thread: this one keeps its priority
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before


def test_loaded_versions_are_frozen_and_a_swapped_out_one_is_freed_without_the_collector(tmp_path):
    import gc
    import weakref

    import recembed.server as server

    root = tmp_path / "published"
    make_version(root, "v1", n=60, seed=1, prefix="a")
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    was_enabled = gc.isenabled()
    gc.disable()  # only reference counting frees anything below
    try:
        watcher = server.VersionWatcher(server.ServeSettings(root=str(root), verify=True))
        after_load = gc.get_freeze_count()
        assert after_load > 0  # the first version is out of the collector's walks
        old = weakref.ref(watcher.current.rec), weakref.ref(watcher.current.rec.model)
        make_version(root, "v2", n=60, seed=2, prefix="b")
        assert watcher.check() is True and watcher.current.version == "v2"
        assert gc.get_freeze_count() > after_load  # the new version frozen too
        # no reference cycle keeps the old version: frozen objects are out of the collector's
        # reach, so a cycle would leak a whole version on every swap
        assert old[0]() is None and old[1]() is None
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()
