"""`repotune serve`'s parts that need no model: the token file, how a client tells a live
server, request checking and the idle timeout (tests/test_serve.py runs the whole server)."""

import os
import threading
import time
import urllib.error
import urllib.request

import pytest

from repotune.errors import InputError
from repotune.serve import client, protocol
from repotune.serve.protocol import ApiError
from repotune.serve.server import ApiServer, serve_until_stopped
from repotune.serve.state import ServerFiles, ServerState, ensure_token, read_token, token_path


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("REPOTUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_the_token_is_made_once_readable_only_by_the_user(home):
    assert read_token() is None
    token = ensure_token()
    assert len(token) >= 40 and ensure_token() == token == read_token()
    assert token_path().stat().st_mode & 0o777 == 0o600
    assert home.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in home.iterdir()) == ["token"]  # no temporary left


def test_a_token_file_others_can_read_is_refused(home):
    ensure_token()
    token_path().chmod(0o644)
    with pytest.raises(InputError, match=r"can be read by other users .*chmod 600"):
        read_token()


def test_a_state_file_counts_only_while_its_server_holds_the_lock(home, tmp_path):
    ensure_token()
    files = ServerFiles.of(tmp_path / "results", "tiny")
    state = ServerState(os.getpid(), 1234, "tiny", str(tmp_path / "results"), "merged")
    with files.hold():
        files.write(state)
        assert files.running() and client.find(tmp_path / "results", "tiny").state == state
        with pytest.raises(InputError, match=r"already runs at http://127\.0\.0\.1:1234"):  # noqa: SIM117
            with files.hold():
                pass
    assert not files.running()  # killed without removing its state: not a server
    assert client.find(tmp_path / "results", "tiny") is None
    assert ServerFiles.of(tmp_path / "results", "other").state != files.state


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ([], 400, "must be a JSON object"),
        ({"max_tokens": 4}, 400, "'prompt' is missing"),
        ({"prompt": [1, 2]}, 400, "token ids are not supported"),
        ({"prompt": "x", "max_tokens": True}, 400, "'max_tokens' must be an integer"),
        ({"prompt": "x", "temperature": 3}, 400, "'temperature' must be between 0 and 2"),
        ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "at most 4"),
        ({"prompt": ["a"] * 5, "n": 4}, 400, "exceeds 16 answers"),
        ({"prompt": "x", "echo": True}, 400, "'echo' is not supported"),
        ({"prompt": "x", "model": "other"}, 404, "this server serves 'tiny'"),
    ],
)
def test_bad_completion_requests_name_the_field(body, status, message):
    with pytest.raises(ApiError, match=message) as error:
        protocol.completion_request(body, "tiny")
    assert error.value.status == status


def test_a_completion_request_defaults_to_the_greedy_answer():
    request = protocol.completion_request({"prompt": "def f():\n", "stop": "\n"}, "tiny")
    assert (request.temperature, request.n, request.max_tokens) == (0.0, 1, 16)
    assert request.stops == ("\n",) and request.gaps == (("def f():\n", ""),)
    assert request.path is None


def test_a_cursor_marker_splits_the_prompt_as_complete_cursor_does():
    """Continue's prompt template sends one text: prefix, marker, suffix."""
    body = {"prompt": ["a = 1\n@@\nb = 2\n", "no marker"], "cursor": "@@"}
    request = protocol.completion_request(body, "tiny")
    assert request.gaps == (("a = 1\n", "\nb = 2\n"), ("no marker", ""))
    with pytest.raises(ApiError, match="comes without 'suffix'"):
        protocol.completion_request(body | {"suffix": "x"}, "tiny")


def test_file_records_are_checked_field_by_field():
    record = {key: types[0]() for key, types in protocol.FILE_FIELDS.items()}
    assert protocol.message_request({"files": [record]}, "tiny").files == (record,)
    with pytest.raises(ApiError, match=r"'files\[0\].patch_bytes' must not be str"):
        protocol.message_request({"files": [record | {"patch_bytes": "9"}]}, "tiny")
    with pytest.raises(ApiError, match="'diff' or 'files' must be given"):
        protocol.message_request({}, "tiny")


def test_the_server_stops_after_its_idle_timeout():
    """Counted from the last request's end: a request in between resets the clock."""
    server = ApiServer(0, "secret")
    result: list[str] = []
    thread = threading.Thread(
        target=lambda: result.append(serve_until_stopped(server, 0.5, threading.Event()))
    )
    thread.start()
    time.sleep(0.3)
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/v1/models", headers={"Authorization": "Bearer secret"}
    )
    with pytest.raises(urllib.error.HTTPError) as loading:  # no model yet
        urllib.request.urlopen(request, timeout=10)
    asked = time.monotonic()
    assert loading.value.code == 503
    thread.join(10)
    server.server_close()
    assert result == ["idle for 0.5 s"] and time.monotonic() - asked >= 0.5
