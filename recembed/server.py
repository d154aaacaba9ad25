"""`recembed serve PUBLISHED_ROOT`: the HTTP service (FastAPI on uvicorn) with hot version swaps.

Endpoints (every answer, errors included, names the version that produced it):

- ``GET /similar?id=…&k=…``: `Recommender.similar` of one item.
- ``POST /recommend``: one session ``{"ids": [...], "k": 20, "exclude_seen": false}`` or a batch
  ``{"sessions": [{"ids": [...], "k": …, "exclude_seen": …} | [...], ...], "k": …,
  "exclude_seen": …}`` (a session's own k / exclude_seen override the request's).
- ``GET /items/{id}``: whether an item is served, its origin and category, why not.
- ``GET /health``, ``GET /version`` (the version and its manifest summary), ``GET /metrics``
  (Prometheus text format: requests, latency histogram, errors, swaps, the version).

Errors are JSON ``{"version": …, "error": {"status": …, "field": …, "message": …}}``: 400 for
a body that is not JSON, 404 for unknown ids, 422 for a bad value or a limit exceeded
(`ServeSettings`); never a 500 for anything a client sends.

Hot swap: a background thread (`VersionWatcher`) reads ``LATEST`` every `ServeSettings.poll_s`
seconds; a new version is loaded and verified against its manifest beside the old one, warmed
(the numba kernels run once), then swapped in by one reference assignment. A request takes the
current version once, when it starts, so it finishes on that version; a version that fails to
load is refused, logged and the old one kept. Requests never look at the file system.

With ``--workers N`` uvicorn runs N worker processes behind one listening socket (the kernel
hands each new connection to one of them). They share nothing: each loads, verifies and warms
its own copy of the version and runs its own watcher, so each swaps on its own, within
`poll_s` plus its load time of the others; every answer carries the version that produced it
and an ``X-Recembed-Worker`` header (the worker's pid), and each worker logs its own
``swapped`` event with its pid. A swap is complete once every worker has logged it; from then
on no worker answers from the old version. Memory is N copies of a version (N + 1 during a
swap). The supervisor binds the port before the workers start; a worker accepts connections
only once it is warm, so every answer comes from a warm worker.

Speed (benchmarks/RESULTS.md, "Serving for real", second round): handlers are ``async def``
and run `Recommender` on the event loop (no thread-pool hop: a single-session answer is ~1 ms
of CPU); JSON goes through orjson, HTTP parsing through httptools and the event loop is uvloop
when installed (all three in the serve extra; json, h11 and asyncio otherwise); and the
protocol sends each answer's head and body in one send() instead of two (`CoalescingTransport`).
A new version loads in the watcher thread at nice +10 with a 0.5 ms GIL switch interval, so the
serving loop waits at most that long for the GIL while a swap loads. Once a version is loaded
(at start and after each swap) the heap is frozen (`gc.freeze`): the cyclic collector no longer
walks the version's ~140k long-lived objects, whose full collection took ~70 ms in the middle
of a request. A version holds no reference cycle, so a swapped-out one is still freed by
reference counting (tested).

Logs are one JSON object per line on stderr. The app loads and warms its version in the lifespan
startup, before uvicorn binds the port: once the port answers, the service is warm.
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations at runtime

import gc
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from recembed import artifacts as A
from recembed.serving import ArtifactError, Recommender, resolve_latest

log = logging.getLogger("recembed.server")

ENV_CONFIG = "RECEMBED_SERVE_CONFIG"  # how `recembed serve` hands its settings to the workers

try:  # the serve extra brings orjson: 13x faster encoding of a 256-session answer than json
    import orjson

    def encode_json(obj: Any) -> bytes:
        """`obj` as UTF-8 JSON bytes (orjson; floats in their shortest round-trip form)."""
        return orjson.dumps(obj)

    def decode_json(raw: bytes) -> Any:
        """Parse a request body; raises ValueError (json.JSONDecodeError) on bad JSON."""
        return orjson.loads(raw)

except ImportError:  # the standard library: the same answers, slower
    def encode_json(obj: Any) -> bytes:
        """`obj` as UTF-8 JSON bytes (json; floats in their shortest round-trip form)."""
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()

    def decode_json(raw: bytes) -> Any:
        """Parse a request body; raises ValueError (json.JSONDecodeError) on bad JSON."""
        return json.loads(raw)


@dataclass(frozen=True)
class ServeSettings:
    """Limits and behaviour of the service (`recembed serve` options).

    Parameters
    ----------
    root : str
        The published root (holds LATEST and the version folders).
    max_k : int
        The largest k a request may ask for.
    max_session : int
        The most ids in one session.
    max_batch : int
        The most sessions in one `/recommend` request.
    max_id_length : int
        The longest item id accepted (characters).
    poll_s : float
        Seconds between two reads of LATEST by the watcher thread.
    verify : bool
        Hash every file of a version against its manifest before serving it.
    """

    root: str
    max_k: int = 1000
    max_session: int = 200
    max_batch: int = 1000
    max_id_length: int = 1000
    poll_s: float = 1.0
    verify: bool = True

    def to_env(self) -> str:
        """The settings as the JSON that `from_env` reads."""
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> "ServeSettings":
        """The settings that `recembed serve` put in the environment (`ENV_CONFIG`)."""
        raw = os.environ.get(ENV_CONFIG)
        if not raw:
            raise RuntimeError(f"{ENV_CONFIG} is not set: start the service with `recembed serve`")
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class Served:
    """One loaded, verified and warmed version: what a request reads, all of it at once."""

    version: str
    path: Path
    rec: Recommender
    summary: dict
    loaded_at: str
    origin: dict[str, str]  # id -> origin of the catalogue items ("trained", "side_info", "none")


def log_event(event: str, **fields: Any) -> None:
    """One JSON object on one line: ``{"ts": …, "event": …, "pid": …, **fields}`` (pid: the
    worker process, which tells the workers of ``--workers N`` apart)."""
    log.info(json.dumps({"ts": A.now_iso(), "event": event, "pid": os.getpid(), **fields},
                        default=str, ensure_ascii=False))


class JsonLines(logging.Formatter):
    """A log record as one JSON line (a message that is already JSON passes through)."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if msg.startswith("{") and msg.endswith("}"):
            return msg
        out = {"ts": A.now_iso(), "event": "log", "level": record.levelname.lower(),
               "logger": record.name, "message": msg}
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def log_config() -> dict:
    """logging.config dict for uvicorn and recembed: JSON lines on stderr."""
    handler = {"class": "logging.StreamHandler", "formatter": "json",
               "stream": "ext://sys.stderr"}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"()": "recembed.server.JsonLines"}},
        "handlers": {"stderr": handler},
        "loggers": {name: {"handlers": ["stderr"], "level": "INFO", "propagate": False}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access",
                                 "recembed")},
    }


# ---------------------------------------------------------------- the HTTP protocol


class CoalescingTransport:
    """An asyncio transport proxy whose writes made in one event-loop step leave in one send().

    uvicorn's h11 protocol writes a response's head and its body separately: two send()
    system calls per answer, ~0.2 ms each on loopback on these machines (benchmarks/RESULTS.md,
    "Serving for real", second round). Buffered here and flushed by one `call_soon` callback,
    they leave together; `close` flushes first. Everything else goes to the real transport.
    """

    def __init__(self, transport, loop):
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def writelines(self, lines) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


try:
    from uvicorn.protocols.http.h11_impl import H11Protocol
except ImportError:  # no serve extra: `serve` says so when it imports uvicorn
    H11Protocol = None
else:
    class CoalescingH11Protocol(H11Protocol):
        """uvicorn's h11 protocol over a `CoalescingTransport` (one send() per answer)."""

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(CoalescingTransport(transport, self.loop))

try:
    import httptools  # noqa: F401
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is in the serve extra; h11 (uvicorn's own) otherwise
    CoalescingHttpToolsProtocol = None
else:
    class CoalescingHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol over a `CoalescingTransport` (one send() per answer)."""

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(CoalescingTransport(transport, self.loop))


# ---------------------------------------------------------------- versions


def load_version(root: Path, *, verify: bool = True) -> Served:
    """The version that root/LATEST names, loaded, verified and warmed.

    Raises
    ------
    ArtifactError
        LATEST or the version is unusable (the message says why).
    """
    path = resolve_latest(root)
    rec = Recommender.load(path, verify=verify)
    warm(rec)
    manifest = json.loads((path / A.MANIFEST).read_text())
    summary = {k: manifest[k] for k in ("version", "created", "code_version", "counts", "model")
               if k in manifest}
    metrics = manifest.get("metrics") or {}
    if "headline" in metrics:
        summary["headline"] = metrics["headline"]
    summary["files"] = len(manifest.get("files", {}))
    origin = {str(i): str(o) for i, o in zip(rec.ids, rec.origin, strict=True)} \
        if rec.origin is not None else {}
    origin.update({i: "none" for i in rec.not_served})
    return Served(path.name, path, rec, summary, A.now_iso(), origin)


def warm(rec: Recommender) -> float:
    """Run `similar` and `recommend` once, single session and batch, so that no request pays
    for loading or compiling the kernels; returns the seconds it took."""
    from recembed.topk import PARALLEL_FROM

    t0 = time.perf_counter()
    ids = [str(x) for x in rec.ids[: min(3, len(rec.ids))]]
    if ids:
        rec.similar(ids[0], k=10)
        for exclude in (False, True):
            rec.recommend(ids, k=10, exclude_session_items=exclude)
            rec.recommend([ids] * PARALLEL_FROM, k=10, exclude_session_items=exclude)
    return time.perf_counter() - t0


def freeze_heap() -> None:
    """Move every object alive now into the collector's permanent generation (`gc.freeze`).

    A loaded version is ~140k long-lived tracked objects (the 199k-item catalogue): each full
    collection walked them all, a 73 ms stall of whichever request triggered it, about once per
    50 batch answers of 256 sessions (throughput unchanged; benchmarks/RESULTS.md, "Serving
    for real, fourth round"). Frozen objects are still freed by reference counting, and a
    version holds no reference cycle (`tests/test_server.py`), so a swapped-out version's
    memory is returned as before.
    """
    gc.freeze()


SWAP_SWITCH_INTERVAL_S = 0.0005  # the GIL switch interval while a new version loads


def _lower_priority() -> None:
    """Lower this thread's CPU priority (nice +10, Linux: threads are scheduled one by one):
    a version loading beside the serving loop then takes the cores the answers leave idle."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not permitted: load at normal priority
        pass


class VersionWatcher:
    """Holds the served version and swaps in a new one when LATEST changes.

    Parameters
    ----------
    settings : ServeSettings
    on_swap : callable or None
        Called with (old version name, new version name) after a swap.
    on_refuse : callable or None
        Called with the refused version's name after a failed load.
    """

    def __init__(self, settings: ServeSettings, *,
                 on_swap: Callable[[str, str], None] | None = None,
                 on_refuse: Callable[[str], None] | None = None):
        self.settings = settings
        self.root = Path(settings.root)
        self.on_swap, self.on_refuse = on_swap, on_refuse
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refused: tuple[str, tuple] | None = None  # (name, LATEST stat) last refused
        t0 = time.perf_counter()
        self.current: Served = load_version(self.root, verify=settings.verify)
        freeze_heap()
        log_event("loaded", version=self.current.version, items=len(self.current.rec.ids),
                  seconds=round(time.perf_counter() - t0, 3))

    def _latest(self) -> tuple[str, tuple]:
        p = self.root / A.LATEST
        st = p.stat()
        return p.read_text().strip(), (st.st_ino, st.st_mtime_ns, st.st_size)

    def check(self) -> bool:
        """Read LATEST once; load, verify, warm and swap in the version it names when it is new.
        Returns True when a new version was swapped in."""
        try:
            name, stamp = self._latest()
        except OSError as e:
            if self._refused is None or self._refused[0] != "":
                log_event("latest_unreadable", error=str(e), kept=self.current.version)
                self._refused = ("", ())
            return False
        if name == self.current.version or self._refused == (name, stamp):
            return False
        t0 = time.perf_counter()
        # the load runs beside the event loop: a thread wanting the GIL waits for the holder's
        # switch interval (5 ms by default) each time, so while loading, the event loop's
        # every hand-back of the GIL cost up to 5 ms (p99 139-212 ms during swaps); 0.5 ms
        # bounds that wait (benchmarks/RESULTS.md, "Serving for real, third round")
        interval = sys.getswitchinterval()
        sys.setswitchinterval(min(interval, SWAP_SWITCH_INTERVAL_S))
        try:
            new = load_version(self.root, verify=self.settings.verify)
        except (ArtifactError, OSError, ValueError) as e:
            self._refused = (name, stamp)
            log_event("swap_refused", version=name, kept=self.current.version, error=str(e))
            if self.on_refuse:
                self.on_refuse(name)
            return False
        finally:
            sys.setswitchinterval(interval)
        old, self.current = self.current, new  # the swap: one reference assignment
        self._refused = None
        freeze_heap()
        log_event("swapped", old=old.version, new=new.version,
                  seconds=round(time.perf_counter() - t0, 3))
        if self.on_swap:
            self.on_swap(old.version, new.version)
        return True

    def start(self) -> None:
        """Start the background thread that calls `check` every `poll_s` seconds."""
        def loop() -> None:
            _lower_priority()
            while not self._stop.wait(self.settings.poll_s):
                try:
                    self.check()
                except Exception as e:  # the watcher must outlive any surprise
                    log_event("watcher_error", error=f"{type(e).__name__}: {e}")

        self._thread = threading.Thread(target=loop, name="recembed-version-watcher",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread (waits for a load in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


# ---------------------------------------------------------------- request checking


class ClientError(Exception):
    """A request the service refuses: HTTP status, the field at fault and why."""

    def __init__(self, status: int, field: str, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.field, self.message, self.extra = status, field, message, extra


def _int(value: Any, field: str, lo: int, hi: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ClientError(422, field, f"{field} must be a whole number, got {value!r}") \
                from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClientError(422, field, f"{field} must be a whole number, got {value!r}")
    if not lo <= value <= hi:
        raise ClientError(422, field, f"{field} must be between {lo} and {hi}, got {value}")
    return value


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise ClientError(422, field, f"{field} must be true or false, got {value!r}")
    return value


def _ids(value: Any, field: str, st: ServeSettings) -> list[str]:
    if not isinstance(value, list):
        raise ClientError(422, field, f"{field} must be a list of item ids (strings)")
    if not value:
        raise ClientError(422, field, f"{field} must hold at least one item id")
    if len(value) > st.max_session:
        raise ClientError(422, field, f"{field} holds {len(value)} ids; at most "
                          f"{st.max_session} are accepted (max_session)")
    for j, x in enumerate(value):
        if not isinstance(x, str):
            raise ClientError(422, f"{field}[{j}]", f"{field}[{j}] must be a string item id, "
                              f"got {x!r}")
        if len(x) > st.max_id_length:
            raise ClientError(422, f"{field}[{j}]", f"{field}[{j}] is longer than "
                              f"{st.max_id_length} characters (max_id_length)")
    return value


@dataclass
class SessionQuery:
    """One checked session of a /recommend request."""

    ids: list[str]
    k: int
    exclude_seen: bool
    field: str  # where it sits in the request, for messages


def parse_recommend(body: Any, st: ServeSettings) -> tuple[list[SessionQuery], bool]:
    """The checked sessions of a /recommend body, and whether it was a batch.

    Raises
    ------
    ClientError
        Naming the field at fault.
    """
    if not isinstance(body, dict):
        raise ClientError(422, "body", "the body must be a JSON object with \"ids\" (one "
                          "session) or \"sessions\" (a batch)")
    unknown_keys = sorted(set(body) - {"ids", "sessions", "k", "exclude_seen"})
    if unknown_keys:
        raise ClientError(422, unknown_keys[0], f"unknown field {unknown_keys[0]!r}: expected "
                          "ids or sessions, k, exclude_seen")
    k = _int(body.get("k", 20), "k", 0, st.max_k)
    exclude = _bool(body.get("exclude_seen", False), "exclude_seen")
    if ("ids" in body) == ("sessions" in body):
        raise ClientError(422, "ids", "give either \"ids\" (one session) or \"sessions\" (a "
                          "batch), not both or neither")
    if "ids" in body:
        return [SessionQuery(_ids(body["ids"], "ids", st), k, exclude, "ids")], False
    sessions = body["sessions"]
    if not isinstance(sessions, list) or not sessions:
        raise ClientError(422, "sessions", "sessions must be a non-empty list of sessions")
    if len(sessions) > st.max_batch:
        raise ClientError(422, "sessions", f"sessions holds {len(sessions)} sessions; at most "
                          f"{st.max_batch} are accepted (max_batch)")
    out = []
    for i, s in enumerate(sessions):
        where = f"sessions[{i}]"
        if isinstance(s, list):
            out.append(SessionQuery(_ids(s, where, st), k, exclude, where))
            continue
        if not isinstance(s, dict) or "ids" not in s:
            raise ClientError(422, where, f"{where} must be a list of ids or an object with "
                              "\"ids\"")
        extra = sorted(set(s) - {"ids", "k", "exclude_seen"})
        if extra:
            raise ClientError(422, f"{where}.{extra[0]}", f"unknown field {extra[0]!r} in "
                              f"{where}")
        out.append(SessionQuery(
            _ids(s["ids"], f"{where}.ids", st),
            _int(s.get("k", k), f"{where}.k", 0, st.max_k),
            _bool(s.get("exclude_seen", exclude), f"{where}.exclude_seen"), f"{where}.ids"))
    return out, True


def _items(ids, scores) -> list[dict]:
    # tolist(): Python str / float in one C call each (ids are str already): 30% less than
    # str() / float() per item in a 256-session answer
    return [{"id": i, "score": s} for i, s in zip(ids.tolist(), scores.tolist(), strict=True)]


def recommend_answer(served: Served, queries: list[SessionQuery]) -> list[dict]:
    """Per session: ``{"items": [{"id", "score"}...], "unknown": [...]}``, from one
    `Recommender.recommend` call per distinct (k, exclude_seen) of the batch.

    Raises
    ------
    ClientError
        404 when a session has no id this version serves.
    """
    rec = served.rec
    for q in queries:
        if not any(x in rec.row_of for x in q.ids):
            raise ClientError(404, q.field, f"no id of {q.field} is served by version "
                              f"{served.version}", unknown=sorted(set(q.ids)))
    results: list[dict | None] = [None] * len(queries)
    groups: dict[tuple[int, bool], list[int]] = {}
    for i, q in enumerate(queries):
        groups.setdefault((q.k, q.exclude_seen), []).append(i)
    for (k, exclude), members in groups.items():
        res = rec.recommend([queries[i].ids for i in members], k=k,
                            exclude_session_items=exclude)
        for j, i in enumerate(members):
            unknown = sorted({x for x in queries[i].ids if x not in rec.row_of})
            results[i] = {"items": _items(res.ids[j], res.scores[j]), "unknown": unknown}
    return results  # type: ignore[return-value]


# ---------------------------------------------------------------- the app


def create_app(settings: ServeSettings | None = None):
    """The FastAPI app serving `settings.root` (default: `ServeSettings.from_env`).

    The version is loaded and warmed in the lifespan startup, and the watcher thread stopped
    at shutdown.
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
    )
    from starlette.exceptions import HTTPException as StarletteHTTPException

    st = settings or ServeSettings.from_env()
    registry = CollectorRegistry()
    requests_total = Counter("recembed_requests_total", "HTTP requests answered",
                             ["endpoint", "status"], registry=registry)
    errors_total = Counter("recembed_errors_total", "requests answered with an error",
                           ["endpoint", "status", "field"], registry=registry)
    latency = Histogram("recembed_request_seconds", "time to answer a request",
                        ["endpoint"], registry=registry,
                        buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5))
    version_info = Gauge("recembed_version_info", "the version served (1)", ["version"],
                         registry=registry)
    swaps_total = Counter("recembed_swaps_total", "version changes", ["outcome"],
                          registry=registry)
    holder: dict[str, VersionWatcher] = {}
    worker_header = {"X-Recembed-Worker": str(os.getpid())}  # which worker process answered

    def on_swap(old: str, new: str) -> None:
        version_info.remove(old)
        version_info.labels(new).set(1)
        swaps_total.labels("swapped").inc()

    @asynccontextmanager
    async def lifespan(app):
        watcher = VersionWatcher(st, on_swap=on_swap,
                                 on_refuse=lambda v: swaps_total.labels("refused").inc())
        version_info.labels(watcher.current.version).set(1)
        holder["w"] = watcher
        watcher.start()
        log_event("ready", version=watcher.current.version, root=st.root,
                  limits={k: v for k, v in asdict(st).items() if k.startswith("max_")})
        yield
        watcher.stop()
        log_event("shutdown", version=watcher.current.version)

    app = FastAPI(title="recembed", lifespan=lifespan, docs_url=None, redoc_url=None)

    def current() -> Served:
        return holder["w"].current

    def answer(endpoint: str, t0: float, body: dict, status: int = 200) -> Response:
        requests_total.labels(endpoint, str(status)).inc()
        latency.labels(endpoint).observe(time.perf_counter() - t0)
        return Response(encode_json(body), status_code=status, media_type="application/json",
                        headers=worker_header)

    def error(endpoint: str, t0: float, version: str | None, e: ClientError) -> Response:
        errors_total.labels(endpoint, str(e.status), e.field).inc()
        return answer(endpoint, t0, {"version": version, "error": {
            "status": e.status, "field": e.field, "message": e.message, **e.extra}}, e.status)

    @app.get("/similar")
    async def similar(request: Request) -> Response:
        t0 = time.perf_counter()
        s = current()
        try:
            q = request.query_params
            extra = sorted(set(q) - {"id", "k"})
            if extra:
                raise ClientError(422, extra[0], f"unknown parameter {extra[0]!r}: expected "
                                  "id and k")
            if "id" not in q or q["id"] == "":
                raise ClientError(422, "id", "id is required: GET /similar?id=ITEM&k=20")
            item = q["id"]
            if len(item) > st.max_id_length:
                raise ClientError(422, "id", f"id is longer than {st.max_id_length} "
                                  "characters (max_id_length)")
            k = _int(q.get("k", "20"), "k", 0, st.max_k)
            if item not in s.rec.row_of:
                raise ClientError(404, "id", f"{s.rec.why_not_served(item)} (version "
                                  f"{s.version})", id=item)
            res = s.rec.similar(item, k=k)
        except ClientError as e:
            return error("similar", t0, s.version, e)
        return answer("similar", t0, {"version": s.version, "id": item,
                                      "items": _items(res.ids[0], res.scores[0])})

    @app.post("/recommend")
    async def recommend(request: Request) -> Response:
        t0 = time.perf_counter()
        s = current()
        try:
            raw = await request.body()
            try:
                body = decode_json(raw)
            except ValueError as e:  # json / orjson JSONDecodeError, UnicodeDecodeError
                raise ClientError(400, "body", f"the body is not JSON: {e}") from None
            queries, batch = parse_recommend(body, st)
            results = recommend_answer(s, queries)
        except ClientError as e:
            return error("recommend", t0, s.version, e)
        out = {"version": s.version, "results": results} if batch else \
            {"version": s.version, **results[0]}
        return answer("recommend", t0, out)

    @app.get("/items/{item_id:path}")
    async def item(item_id: str) -> Response:
        t0 = time.perf_counter()
        s = current()
        rec = s.rec
        row = rec.row_of.get(item_id)
        if row is None and item_id not in s.origin:
            return error("items", t0, s.version, ClientError(
                404, "id", f"{item_id!r} is not in version {s.version}", id=item_id))
        category = None
        if row is not None and rec.categories is not None:
            category = int(rec.categories[row])
        return answer("items", t0, {
            "version": s.version, "id": item_id, "served": row is not None,
            "origin": s.origin.get(item_id, "trained"), "category": category,
            "why_not_served": rec.why_not_served(item_id)})

    @app.get("/health")
    async def health() -> Response:
        t0 = time.perf_counter()
        return answer("health", t0, {"status": "ok", "version": current().version})

    @app.get("/version")
    async def version() -> Response:
        t0 = time.perf_counter()
        s = current()
        return answer("version", t0, {
            "version": s.version, "path": str(s.path), "loaded_at": s.loaded_at,
            "items": len(s.rec.ids), "dim": int(s.rec.vectors.shape[1]),
            "manifest": s.summary})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        field = "path" if exc.status_code in (404, 405) else "request"
        return error("other", time.perf_counter(), current().version if holder else None,
                     ClientError(exc.status_code, field, f"{request.method} "
                                 f"{request.url.path}: {exc.detail}"))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = (exc.errors() or [{}])[0]
        field = ".".join(str(x) for x in first.get("loc", ("request",))[1:]) or "request"
        return error("other", time.perf_counter(), current().version if holder else None,
                     ClientError(422, field, str(first.get("msg", "invalid request"))))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"version": current().version if holder else None,
                             "error": {"status": 500, "field": None,
                                       "message": f"{type(exc).__name__}: {exc}"}}, 500)

    return app


def app_from_env():
    """The uvicorn factory `recembed serve` runs (settings from `ENV_CONFIG`)."""
    return create_app(ServeSettings.from_env())


def serve(settings: ServeSettings, *, host: str = "127.0.0.1", port: int = 8000,
          workers: int = 1, access_log: bool = False, graceful_s: float = 10.0) -> None:
    """Run the service until SIGINT / SIGTERM; in-flight requests finish first (at most
    `graceful_s` seconds). Each worker process loads the version and watches LATEST itself."""
    import signal

    import uvicorn

    os.environ[ENV_CONFIG] = settings.to_env()
    # uvicorn shuts down gracefully, then raises the signal again with the handler it found:
    # this one makes a SIGTERM-ended service exit 0 (a scheduler's "stopped", not "killed")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run("recembed.server:app_from_env", factory=True, host=host, port=port,
                workers=workers, log_config=log_config(), access_log=access_log,
                http=CoalescingHttpToolsProtocol or CoalescingH11Protocol, loop="auto",
                timeout_graceful_shutdown=graceful_s, lifespan="on")
