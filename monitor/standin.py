"""A local stand-in for the ClinicalTrials.gov API v2, served on 127.0.0.1.

The offline demo, the test suite and the benchmark need a registry that answers like the real
one (same paths, paging, plain-text error bodies) but that we control: which version of a record
is served, and which request fails in which way. Everything here runs in one process, on
loopback only, on an ephemeral port.

    with StandIn() as api:
        api.load_history(path)
        api.fail_with(429, headers={"Retry-After": "3"})
        ...  # point a Fetcher at api.base_url

Bodies are kept as pre-serialized bytes and a list page is built by joining them, so serving
1,000 studies out of 10,000 costs a join, not a JSON encode.
"""

from __future__ import annotations

import base64
import binascii
import re
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from monitor.errors import FetchError
from monitor.normalize import record_ids

PathKind = Literal["list", "single", "version"]
FaultAction = Literal["respond", "truncate", "drop", "delay"]

API_VERSION = "2.0.5"
#: ``dataTimestamp`` of a recorded ``/api/v2/version`` answer; tests move it with the setter.
DEFAULT_DATA_TIMESTAMP = "2026-08-19T09:00:06"
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 1000

_NCT_ID = re.compile(r"NCT\d{8}")
_ID_SEPARATORS = re.compile(r"[,|]")
_TEXT = "text/plain; charset=UTF-8"
_JSON = "application/json"


@dataclass
class Fault:
    """One injected misbehaviour, applied to the next ``times`` matching requests.

    ``respond`` answers ``status`` with ``body`` and ``headers`` instead of the real answer;
    ``truncate`` cuts the real body in half, with a Content-Length that is either honest (the
    short length) or not (the full length, then the connection closes); ``drop`` closes the
    socket without a byte; ``delay`` sleeps ``delay`` seconds and then answers normally.
    ``kind`` limits the fault to one endpoint (``None`` matches every request).
    """

    action: FaultAction
    status: int = 500
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    honest_length: bool = True
    delay: float = 0.0
    kind: PathKind | None = None
    times: int = 1


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the stand-in received it, for assertions on what a cycle sent."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    time: float


@dataclass
class _Trial:
    """Every recorded version of one trial (compact JSON bytes) and which one is served."""

    versions: list[bytes]
    aliases: list[list[str]]
    current: int = 0


@dataclass
class _Answer:
    """What the handler writes back when no fault intervenes."""

    status: int
    content_type: str
    body: bytes


class _Server(ThreadingHTTPServer):
    """The HTTP server, holding a reference back to its StandIn for the handler."""

    daemon_threads = True
    # Keep-alive connections park a handler thread in readline(); closing must not wait for them.
    block_on_close = False
    request_queue_size = 128

    def __init__(self, standin: StandIn) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.standin = standin

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that vanished mid-answer (a killed daemon) is routine, not a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to the StandIn; keeps HTTP/1.1 keep-alive so benchmarks reuse sockets."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without this, Nagle + delayed ACK adds ~40 ms.
    disable_nagle_algorithm = True
    timeout = 60

    def do_GET(self) -> None:
        standin = self.server.standin if isinstance(self.server, _Server) else None
        if standin is not None:
            standin._handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request line on stderr; the StandIn keeps its own log."""


def _study_ids(study: Mapping[str, Any]) -> tuple[str, list[str]]:
    """A record's nctId and nctIdAliases; a record without an nctId cannot be served."""
    try:
        return record_ids(study)
    except FetchError as exc:
        raise ValueError(str(exc)) from None


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o{offset}".encode()).decode().rstrip("=")


def _decode_token(token: str) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not raw.startswith("o") or not raw[1:].isdigit():
        return None
    return int(raw[1:])


class StandIn:
    """A controllable ClinicalTrials.gov API v2 on loopback; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trials: dict[str, _Trial] = {}
        self._alias_to_id: dict[str, str] = {}
        self._faults: list[Fault] = []
        self._log: list[LoggedRequest] = []
        self._data_timestamp = DEFAULT_DATA_TIMESTAMP
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> StandIn:
        """Bind an ephemeral port on 127.0.0.1 and serve from a daemon thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(self)
        # A short poll interval keeps close() (and so every test teardown) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="ctgov-standin",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port; delayed responses are woken up."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        """The ephemeral port the server listens on."""
        if self._server is None:
            raise RuntimeError("StandIn is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What a Fetcher takes as ``base_url``, e.g. ``http://127.0.0.1:PORT/api/v2``."""
        return f"http://127.0.0.1:{self.port}/api/v2"

    # -- data control ------------------------------------------------------------------------

    def put(self, study: Mapping[str, Any]) -> str:
        """Serve ``study`` under its nctId from now on (forgetting recorded versions); return it."""
        nct_id, aliases = _study_ids(study)
        body = orjson.dumps(study)
        with self._lock:
            self._set_trial(nct_id, _Trial(versions=[body], aliases=[aliases]))
        return nct_id

    def remove(self, nct_id: str) -> bool:
        """Stop serving a trial (it then answers 404 and vanishes from lists)."""
        with self._lock:
            trial = self._trials.pop(nct_id, None)
            if trial is None:
                return False
            self._drop_aliases(nct_id, trial)
            return True

    def load_history(self, path: str | Path) -> list[str]:
        """Load every ``<dir>/NCT*/*.json`` as successive versions (by file name); serve the first.

        Returns the loaded nctIds. Files that are not JSON records are an error, not skipped:
        a broken demo data set should fail loudly.
        """
        loaded: list[str] = []
        for folder in sorted(p for p in Path(path).iterdir() if p.is_dir()):
            files = sorted(folder.glob("*.json"))
            if not files:
                continue
            bodies: list[bytes] = []
            aliases: list[list[str]] = []
            nct_id = ""
            for file in files:
                study = orjson.loads(file.read_bytes())
                version_id, version_aliases = _study_ids(study)
                if nct_id and version_id != nct_id:
                    raise ValueError(f"{file}: nctId {version_id} differs from {nct_id}")
                nct_id = version_id
                bodies.append(orjson.dumps(study))
                aliases.append(version_aliases)
            with self._lock:
                self._set_trial(nct_id, _Trial(versions=bodies, aliases=aliases))
            loaded.append(nct_id)
        return loaded

    def advance(self, nct_id: str) -> bool:
        """Serve the trial's next recorded version; False when it is unknown or at its last one."""
        with self._lock:
            trial = self._trials.get(nct_id)
            if trial is None or trial.current + 1 >= len(trial.versions):
                return False
            self._drop_aliases(nct_id, trial)
            trial.current += 1
            self._add_aliases(nct_id, trial)
            return True

    def advance_all(self) -> list[str]:
        """Advance every trial that has a next version (one "day" of the demo); return them."""
        with self._lock:
            ids = list(self._trials)
        return [nct_id for nct_id in ids if self.advance(nct_id)]

    def versions(self, nct_id: str) -> list[dict[str, Any]]:
        """Every recorded version of a trial, oldest first (fresh copies; empty when unknown)."""
        with self._lock:
            trial = self._trials.get(nct_id)
            bodies = list(trial.versions) if trial else []
        return [orjson.loads(body) for body in bodies]

    def current(self, nct_id: str) -> dict[str, Any] | None:
        """The record served now for a trial (a fresh copy), or None."""
        with self._lock:
            trial = self._trials.get(nct_id)
            body = trial.versions[trial.current] if trial else None
        return None if body is None else dict(orjson.loads(body))

    def ids(self) -> list[str]:
        """Every served nctId, in insertion order."""
        with self._lock:
            return list(self._trials)

    @property
    def data_timestamp(self) -> str:
        """The ``dataTimestamp`` that ``/version`` reports (the registry's daily refresh)."""
        return self._data_timestamp

    @data_timestamp.setter
    def data_timestamp(self, value: str) -> None:
        self._data_timestamp = value

    def _set_trial(self, nct_id: str, trial: _Trial) -> None:
        old = self._trials.get(nct_id)
        if old is not None:
            self._drop_aliases(nct_id, old)
        self._trials[nct_id] = trial
        self._add_aliases(nct_id, trial)

    def _add_aliases(self, nct_id: str, trial: _Trial) -> None:
        for alias in trial.aliases[trial.current]:
            self._alias_to_id[alias] = nct_id

    def _drop_aliases(self, nct_id: str, trial: _Trial) -> None:
        for alias in trial.aliases[trial.current]:
            if self._alias_to_id.get(alias) == nct_id:
                del self._alias_to_id[alias]

    # -- fault injection ---------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Queue a fault; queued faults apply in order, each to the next matching request(s)."""
        if fault.times < 1:
            raise ValueError("a fault must apply at least once")
        with self._lock:
            self._faults.append(fault)

    def fail_with(
        self,
        status: int,
        body: bytes | str = b"",
        headers: Mapping[str, str] | None = None,
        *,
        kind: PathKind | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next matching request(s) with this status, body and headers."""
        raw = body.encode() if isinstance(body, str) else body
        all_headers = {"Content-Type": _TEXT, **(headers or {})}
        self.inject(
            Fault("respond", status=status, body=raw, headers=all_headers, kind=kind, times=times)
        )

    def truncate(
        self, *, honest_length: bool = True, kind: PathKind | None = None, times: int = 1
    ) -> None:
        """Cut the next matching answer(s) in half (see :class:`Fault`)."""
        self.inject(Fault("truncate", honest_length=honest_length, kind=kind, times=times))

    def drop(self, *, kind: PathKind | None = None, times: int = 1) -> None:
        """Close the connection of the next matching request(s) without answering."""
        self.inject(Fault("drop", kind=kind, times=times))

    def delay(self, seconds: float, *, kind: PathKind | None = None, times: int = 1) -> None:
        """Hold the next matching answer(s) for ``seconds`` (keep it short: it is a real sleep)."""
        self.inject(Fault("delay", delay=seconds, kind=kind, times=times))

    def clear_faults(self) -> None:
        """Forget every queued fault."""
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        """How many fault applications are still queued."""
        with self._lock:
            return sum(f.times for f in self._faults)

    def _take_fault(self, kind: PathKind | None) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.kind is None or fault.kind == kind:
                    fault.times -= 1
                    if fault.times <= 0:
                        del self._faults[index]
                    return fault
        return None

    # -- request log -------------------------------------------------------------------------

    @property
    def requests(self) -> list[LoggedRequest]:
        """A copy of every request received so far, oldest first."""
        with self._lock:
            return list(self._log)

    @property
    def request_count(self) -> int:
        """How many requests were received (faulted ones included)."""
        with self._lock:
            return len(self._log)

    def clear_log(self) -> None:
        """Forget the request log, e.g. between two cycles of a test."""
        with self._lock:
            self._log.clear()

    # -- serving -----------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        path = unquote(split.path)
        query = parse_qs(split.query, keep_blank_values=True)
        with self._lock:
            self._log.append(
                LoggedRequest(
                    method=handler.command,
                    path=path,
                    query=query,
                    headers=dict(handler.headers.items()),
                    time=time.time(),
                )
            )
        kind = self._kind(path)
        fault = self._take_fault(kind)
        if fault is not None and fault.action == "drop":
            handler.close_connection = True
            return
        if fault is not None and fault.action == "respond":
            self._write(handler, fault.status, fault.body, dict(fault.headers))
            return
        if fault is not None and fault.action == "delay":
            # Wakes early when the StandIn closes, so a slow fault never delays shutdown.
            self._stopping.wait(fault.delay)
        answer = self._answer(kind, path, query)
        headers = {"Content-Type": answer.content_type}
        if fault is not None and fault.action == "truncate":
            full = len(answer.body)
            body = answer.body[: full // 2]
            if not fault.honest_length:
                headers["Content-Length"] = str(full)
            self._write(handler, answer.status, body, headers)
            if not fault.honest_length:
                handler.close_connection = True
            return
        self._write(handler, answer.status, answer.body, headers)

    @staticmethod
    def _kind(path: str) -> PathKind | None:
        if path == "/api/v2/studies":
            return "list"
        if path.startswith("/api/v2/studies/") and path.count("/") == 4:
            return "single"
        if path == "/api/v2/version":
            return "version"
        return None

    @staticmethod
    def _write(
        handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]
    ) -> None:
        handler.send_response(status)
        if not any(name.lower() == "content-length" for name in headers):
            headers["Content-Length"] = str(len(body))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    def _answer(self, kind: PathKind | None, path: str, query: dict[str, list[str]]) -> _Answer:
        if kind == "list":
            return self._list(query)
        if kind == "single":
            return self._single(path.rsplit("/", 1)[1])
        if kind == "version":
            body = orjson.dumps({"apiVersion": API_VERSION, "dataTimestamp": self._data_timestamp})
            return _Answer(200, _JSON, body)
        return _Answer(404, _TEXT, f"No endpoint at {path}".encode())

    def _resolve(self, nct_id: str) -> tuple[str, bytes] | None:
        """The canonical nctId and served body for an id or alias (caller holds the lock)."""
        canonical = nct_id if nct_id in self._trials else self._alias_to_id.get(nct_id)
        trial = self._trials.get(canonical) if canonical else None
        if canonical is None or trial is None:
            return None
        return canonical, trial.versions[trial.current]

    def _single(self, nct_id: str) -> _Answer:
        if not _NCT_ID.fullmatch(nct_id):
            return _Answer(400, _TEXT, b"Parameter `nctId` has incorrect format")
        with self._lock:
            found = self._resolve(nct_id)
        if found is None:
            return _Answer(404, _TEXT, f"NCT number {nct_id} not found".encode())
        return _Answer(200, _JSON, found[1])

    def _list(self, query: dict[str, list[str]]) -> _Answer:
        """Serve ``filter.ids`` paging like the real endpoint; other filters are not modelled."""
        raw_ids = ",".join(query.get("filter.ids", []))
        ids = [i.strip() for i in _ID_SEPARATORS.split(raw_ids) if i.strip()]
        for position, nct_id in enumerate(ids, start=1):
            if not _NCT_ID.fullmatch(nct_id):
                message = f"Item {position} in parameter `filter.ids` has incorrect format"
                return _Answer(400, _TEXT, message.encode())
        size_text = query.get("pageSize", [str(DEFAULT_PAGE_SIZE)])[-1]
        if not size_text.isdigit() or not 1 <= int(size_text) <= MAX_PAGE_SIZE:
            return _Answer(400, _TEXT, b"Parameter `pageSize` has incorrect format")
        page_size = int(size_text)
        offset = 0
        if "pageToken" in query:
            decoded = _decode_token(query["pageToken"][-1])
            if decoded is None:
                return _Answer(400, _TEXT, b"Parameter `pageToken` has incorrect format")
            offset = decoded
        # An id asked twice, or with its alias, still gives the study once.
        matched: dict[str, bytes] = {}
        with self._lock:
            for nct_id in ids:
                found = self._resolve(nct_id)
                if found is not None:
                    matched.setdefault(*found)
        bodies = list(matched.values())
        page = bodies[offset : offset + page_size]
        parts = [b'{"studies":[', b",".join(page), b"]"]
        if offset + page_size < len(bodies):
            parts.append(b',"nextPageToken":"' + _encode_token(offset + page_size).encode() + b'"')
        if offset == 0 and query.get("countTotal", [""])[-1].lower() == "true":
            parts.append(b',"totalCount":' + str(len(bodies)).encode())
        parts.append(b"}")
        return _Answer(200, _JSON, b"".join(parts))
