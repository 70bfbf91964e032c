"""How the hook and the command line reach a running ``repotune serve``: standard library only.

A server of a run's model is found through its state file, and counts as running only while
it holds its lock (:mod:`repotune.serve.state`): a state file left by a killed server is
ignored. :func:`ensure` starts one in the background when none runs (the hook's first use),
detached from the caller (its own session, output to its log file, no inherited pipe), and
waits until it is ready or a deadline passes. Requests go straight to 127.0.0.1, never
through an HTTP proxy the environment names.

Failures are exceptions with one-line messages: :class:`ServerDown` (no answer: refused,
reset, timed out) and :class:`ServerFailed` (an HTTP error status and the server's message).
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import repotune
from repotune.errors import InputError
from repotune.serve.state import ServerFiles, ServerState, read_token

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
POLL_SECONDS = 0.05
T = TypeVar("T")


class ServerError(Exception):
    """The server could not answer; the message is one line."""


class ServerDown(ServerError):
    """No answer from the server."""


class ServerFailed(ServerError):
    """The server answered with an error status."""

    def __init__(self, url: str, status: int, message: str) -> None:
        super().__init__(f"the model server at {url} answered {status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Connection:
    """A running server and the token to ask it with."""

    state: ServerState
    token: str

    @property
    def url(self) -> str:
        return self.state.url

    def post(self, path: str, body: dict[str, Any], timeout: float) -> Any:
        """POST ``body`` as JSON; the JSON answer."""
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode("utf-8"),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with _OPENER.open(request, timeout=max(timeout, 0.001)) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise ServerFailed(self.url, error.code, _error_message(error)) from None
        except TimeoutError:
            raise ServerDown(f"the model server at {self.url} gave no answer within "
                             f"{timeout:.3g} s") from None  # fmt: skip
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise ServerDown(f"the model server at {self.url} is down ({reason})") from None


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read())["error"]["message"])
    except (OSError, ValueError, KeyError, TypeError):
        return str(error.reason)


def find(results: Path, model: str) -> Connection | None:
    """The running server of ``model`` in ``results``, None when none is ready."""
    files = ServerFiles.of(results, model)
    state = files.read()
    if state is None or not files.running():
        return None
    token = read_token()
    return Connection(state, token) if token else None


def start(results: Path, model: str, device: str, idle_timeout: float) -> subprocess.Popen:
    """``repotune serve`` of ``model`` in the background, on any free port, with this
    interpreter and this checkout of repotune; its output goes to its log file."""
    files = ServerFiles.of(results, model)
    files.make_dir()
    root = str(Path(repotune.__file__).resolve().parent.parent)
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    command = [
        sys.executable, "-m", "repotune", "serve", "--results", str(results), "--model", model,
        "--port", "0", "--idle-timeout", f"{idle_timeout:g}", "--device", device,
    ]  # fmt: skip
    with open(files.log, "ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=results.parent,
            env={**os.environ, "PYTHONPATH": path},
            start_new_session=True,  # not the hook's: it outlives the commit
        )


def ensure(
    results: Path, model: str, device: str, idle_timeout: float, deadline: float
) -> Connection | None:
    """A running server of ``model``: the one there is, else one started now, once it is
    ready; None when it did not get ready before ``deadline`` (``time.monotonic()``) or
    exited (its log says why)."""
    found = find(results, model)
    if found is not None:
        return found
    files = ServerFiles.of(results, model)
    try:
        process = None if files.running() else start(results, model, device, idle_timeout)
    except OSError:  # no state directory or no interpreter to start: the caller loads the model
        return None
    while time.monotonic() < deadline:
        found = find(results, model)
        if found is not None:
            return found
        if process is not None and process.poll() is not None:
            return None
        time.sleep(POLL_SECONDS)
    return None


def commit_messages(
    connection: Connection,
    files: list[dict[str, Any]],
    options: dict[str, Any],
    timeout: float,
) -> list[str]:
    """``repotune suggest``'s candidates for the staged change's file records, from the
    server; ``options``: ``n``, ``max_tokens``, ``temperature``, ``seed``."""
    body = {"model": connection.state.model, "files": files, **options}
    return list(connection.post("/repotune/commit-message", body, timeout)["messages"])


def completion(
    connection: Connection,
    prefix: str,
    suffix: str,
    path: str | None,
    max_tokens: int,
    timeout: float,
) -> str:
    """``repotune complete``'s greedy completion of the gap, from the server."""
    body = {
        "model": connection.state.model,
        "prompt": prefix,
        "suffix": suffix,
        "path": path,
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    answer = connection.post("/v1/completions", body, timeout)
    return str(answer["choices"][0]["text"])


CLI_TIMEOUT = 600.0
"""How long the command line waits for the server's answer (the hook has its own timeout)."""


def ask_running(results: Path, model: str, question: Callable[[Connection], T]) -> T | None:
    """``question`` asked of the running server of ``model``; None when none runs, or when it
    could not answer (said in one line on stderr: the caller then loads the model itself). A
    request the server refuses (4xx) is the caller's bad input."""
    try:
        connection = find(results, model)
    except InputError as error:  # a token file others can read: not used, and said
        print(f"repotune: {error}; loading the model here instead", file=sys.stderr)
        return None
    if connection is None:
        return None
    try:
        return question(connection)
    except ServerFailed as error:
        if 400 <= error.status < 500:
            raise InputError(
                f"the model server at {connection.url}",
                f"refused the request ({error.message})",
                "fix it, or pass --no-server to load the model in this process",
            ) from None
        print(f"repotune: {error}; loading the model here instead", file=sys.stderr)
    except ServerDown as error:
        print(f"repotune: {error}; loading the model here instead", file=sys.stderr)
    return None
