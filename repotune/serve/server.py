"""The HTTP layer of ``repotune serve``: the standard library's threading server, made safe to
leave running.

* it listens on 127.0.0.1 only, and every request must carry the user's bearer token
  (:mod:`repotune.serve.state`; compared in constant time), else 401;
* a body is read only with a ``Content-Length`` of at most :data:`MAX_BODY_BYTES` (else 411 or
  413; an oversized body is read and dropped in small pieces, so the client gets the 413
  instead of a reset connection, and memory stays flat); a client has :data:`READ_TIMEOUT`
  seconds to send a request; at most :data:`MAX_CONNECTIONS` connections are served at once,
  more get a 503 at once;
* a request's failure is its own: a bad one gets a 4xx naming the field, an error inside the
  model a 500 with one line (and the traceback in the server's log); the server goes on;
* questions take the engine's lock one at a time (:mod:`repotune.serve.engine`);
* it stops after ``idle_timeout`` seconds without a request (0: never), on SIGTERM or SIGINT,
  and removes its state file, so no client mistakes it for running.
"""

import contextlib
import errno
import hmac
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socket import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from repotune.cli.run import FinishedRun, load
from repotune.errors import InputError
from repotune.serve import protocol
from repotune.serve.protocol import ApiError
from repotune.serve.state import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_PORT,
    ServerFiles,
    ServerState,
    ensure_token,
    token_path,
)

if TYPE_CHECKING:  # torch: imported by serve(), once the port is bound
    from repotune.serve.engine import Engine

HOST = "127.0.0.1"
MAX_BODY_BYTES = 4 * 1024 * 1024
"""The largest request body (the model sees a prompt of at most its training block anyway)."""
DISCARD_BYTES = 64 * 1024 * 1024
"""An oversized body up to this size is read and dropped so that its client gets the 413."""
MAX_CONNECTIONS = 100
READ_TIMEOUT = 60.0
SMALL_MODEL_PARAMS = 100_000_000
"""Below this many parameters a CPU server decodes on one thread (``--threads`` 0, the default):
one prompt's matrices are too small to share out, and on a busy machine every step would wait
for the slowest of its threads (0.03 s against 0.3-0.6 s for a suggestion of the tiny preset
on 2 loaded cores, BENCHMARKS.md)."""


class Activity:
    """When the server last answered, and how many requests it is answering now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._last = time.monotonic()

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                self._last = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since the last request ended; 0 while one runs."""
        with self._lock:
            return 0.0 if self._in_flight else time.monotonic() - self._last


def _json_bytes(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


_BUSY = ApiError(503, "the server is answering too many connections; retry", kind="server_error")


class ApiServer(ThreadingHTTPServer):
    """One model's API on 127.0.0.1:``port`` (0: any free port)."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, port: int, token: str, max_connections: int = MAX_CONNECTIONS) -> None:
        self.token = token
        self.engine: Engine | None = None
        self.activity = Activity()
        self.created = int(time.time())
        self.slots = threading.BoundedSemaphore(max_connections)
        super().__init__((HOST, port), Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self._refuse_busy(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def _refuse_busy(self, request: socket) -> None:
        body = _json_bytes(_BUSY.body())
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(OSError):
            request.settimeout(1.0)
            request.sendall(head.encode("ascii") + body)
        self.shutdown_request(request)


class Handler(BaseHTTPRequestHandler):
    """One connection: requests in turn (HTTP/1.1 keep-alive), each answered with JSON."""

    protocol_version = "HTTP/1.1"
    server_version = "repotune"
    sys_version = ""
    timeout = READ_TIMEOUT
    server: ApiServer

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def handle_expect_100(self) -> bool:
        """Refuse an oversized body before the client sends it (curl asks first)."""
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            self._send_error(self._too_large(int(length)), close=True)
            return False
        return super().handle_expect_100()

    def _answer(self, method: str) -> None:
        self._body_pending = self.headers.get("Content-Length", "0").strip() not in ("", "0")
        with self.server.activity.request():
            try:
                self._authorize()
                route = ROUTES.get(urlsplit(self.path).path.rstrip("/"))
                if route is None:
                    raise ApiError(404, f"no such endpoint: {self.path}", code="not_found")
                if route[0] != method:
                    raise ApiError(405, f"{self.path} takes {route[0]}, not {method}")
                route[1](self)
            except ApiError as error:
                self._send_error(error, close=self._body_pending)
            except Exception as error:  # a request's failure must not take the server down
                traceback.print_exc(file=sys.stderr)
                line = " ".join(f"{type(error).__name__}: {error}".split())
                failed = ApiError(500, f"the server failed: {line}", kind="server_error")
                self._send_error(failed, close=True)

    def _authorize(self) -> None:
        scheme, _, given = self.headers.get("Authorization", "").partition(" ")
        expected = self.server.token.encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise ApiError(
                401,
                f"missing or wrong bearer token: send 'Authorization: Bearer TOKEN' with the "
                f"token in {token_path()}",
                code="invalid_api_key",
            )

    def _too_large(self, length: int) -> ApiError:
        return ApiError(
            413,
            f"the request body of {length} bytes exceeds the limit of {MAX_BODY_BYTES} bytes; "
            "send less context (the model reads only its prompt budget of it)",
            code="request_too_large",
        )

    def _discard(self, length: int) -> None:
        """Read and drop an oversized body, so the client is still reading when the 413 comes."""
        if length > DISCARD_BYTES:
            return
        left = length
        with contextlib.suppress(OSError):
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)

    def read_json(self) -> Any:
        """The request's JSON body, within the size limit."""
        if self.headers.get("Transfer-Encoding"):
            raise ApiError(411, "send the body with a Content-Length (no chunked encoding)")
        text = self.headers.get("Content-Length")
        if text is None:
            raise ApiError(411, "a request body needs a Content-Length header")
        if not text.isdigit():
            raise ApiError(400, f"Content-Length '{text}' is not a byte count")
        length = int(text)
        if length > MAX_BODY_BYTES:
            self._discard(length)
            raise self._too_large(length)
        try:
            data = self.rfile.read(length)
        except OSError as error:
            raise ApiError(408, f"the request body did not arrive ({error})") from None
        if len(data) < length:
            raise ApiError(400, f"the request body ended after {len(data)} of {length} bytes")
        self._body_pending = False
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as error:
            raise ApiError(400, f"the request body is not valid JSON ({error})") from None

    def _engine(self) -> "Engine":
        if self.server.engine is None:
            raise ApiError(503, "the model is still loading; retry", kind="server_error")
        return self.server.engine

    def models(self) -> None:
        name = self._engine().name
        self.send_json(200, protocol.models_body(name, self.server.created))

    def completions(self) -> None:
        engine = self._engine()
        request = protocol.completion_request(self.read_json(), engine.name)
        choices, prompt_tokens = engine.complete(request)
        body = protocol.completion_body(engine.name, choices, prompt_tokens)
        if not request.stream:
            self.send_json(200, body)
            return
        events = [f"data: {json.dumps(event)}\n\n" for event in protocol.stream_events(body)]
        self._send(200, "text/event-stream", "".join([*events, "data: [DONE]\n\n"]).encode())

    def commit_message(self) -> None:
        engine = self._engine()
        request = protocol.message_request(self.read_json(), engine.name)
        self.send_json(200, protocol.message_body(engine.name, engine.commit_messages(request)))

    def send_json(self, status: int, body: Any) -> None:
        self._send(status, "application/json", _json_bytes(body))

    def _send_error(self, error: ApiError, close: bool) -> None:
        self._send(error.status, "application/json", _json_bytes(error.body()), close=close)

    def _send(self, status: int, content_type: str, data: bytes, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """One line per request on stderr (the request line and status; never a body)."""
        sys.stderr.write(f"repotune serve: {self.log_date_time_string()} {format % args}\n")


ROUTES: dict[str, tuple[str, Callable[[Handler], None]]] = {
    "/v1/models": ("GET", Handler.models),
    "/v1/completions": ("POST", Handler.completions),
    "/repotune/commit-message": ("POST", Handler.commit_message),
}


@dataclass(frozen=True)
class ServeSettings:
    """``repotune serve``'s options."""

    port: int = DEFAULT_PORT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    device: str = "auto"
    threads: int = 0
    """torch's CPU threads; 0: one for a small model, else torch's default (every core)."""


def set_threads(model: Any, threads: int) -> int:
    """Set torch's CPU threads for ``model`` (see :data:`SMALL_MODEL_PARAMS`); how many."""
    import torch

    if threads == 0:
        if next(model.parameters()).device.type != "cpu":
            return torch.get_num_threads()
        small = sum(parameter.numel() for parameter in model.parameters()) < SMALL_MODEL_PARAMS
        threads = 1 if small else torch.get_num_threads()
    torch.set_num_threads(threads)
    return threads


def bind(port: int, token: str) -> ApiServer:
    """The server's socket on 127.0.0.1 (before loading: a taken port fails at once)."""
    try:
        return ApiServer(port, token)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        raise InputError(
            f"port {port} on {HOST}",
            "is in use (another server?)",
            "pass --port N, or --port 0 for any free port",
        ) from None


def serve_until_stopped(server: ApiServer, idle_timeout: float, stop: threading.Event) -> str:
    """Serve until ``stop`` is set or the server has been idle ``idle_timeout`` seconds (0:
    never); why it stopped."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    check = min(1.0, idle_timeout / 4) if idle_timeout > 0 else 1.0
    try:
        while not stop.wait(check):
            if idle_timeout > 0 and server.activity.idle_for() >= idle_timeout:
                return f"idle for {idle_timeout:g} s"
        return "asked to stop"
    finally:
        server.shutdown()
        thread.join()


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` while the server runs (where signals can be caught:
    the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(
    run: FinishedRun,
    settings: ServeSettings,
    stop: threading.Event | None = None,
    say: Callable[[str], None] = lambda line: print(f"repotune serve: {line}", file=sys.stderr),
) -> str:
    """Serve ``run``'s model until stopped; why it stopped. The lock is taken before anything
    else and the state file written only once the model is loaded and the socket listens, so a
    client that finds the state finds a server ready to answer."""
    stop = stop or threading.Event()
    files = ServerFiles.of(run.results, run.model)
    with files.hold(), _stop_on_signals(stop):
        server = bind(settings.port, ensure_token())
        try:
            from repotune.serve.engine import Engine

            loaded = load(run, settings.device, merge=True)
            threads = set_threads(loaded.model, settings.threads)
            server.engine = Engine(run, loaded)
            files.write(
                ServerState(os.getpid(), server.port, run.model, str(run.results), loaded.source)
            )
            idle = f"stops after {settings.idle_timeout:g} s idle" if settings.idle_timeout else ""
            say(
                f"serving '{run.model}' ({loaded.source}, {threads} thread"
                f"{'s' if threads > 1 else ''}) at http://{HOST}:{server.port}/v1; "
                f"token in {token_path()}" + (f"; {idle}" if idle else "")
            )
            reason = serve_until_stopped(server, settings.idle_timeout, stop)
        finally:
            files.remove()
            server.server_close()
    say(f"stopped ({reason})")
    return reason
