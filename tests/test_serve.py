"""`repotune serve` on the session's finished run, asked by the official `openai` client.

One server for the module, started as a user starts it (`python -m repotune serve`, any free
port) in the session's private $REPOTUNE_HOME (tests/conftest.py). Its answers are compared
with the commands run in this process with --no-server (`repotune complete`, `repotune
suggest`): one prompt builder and one decoder, so the same text. The hook test starts its own
server the way the hook does, in a home of its own.
"""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from repotune.serve import client
from repotune.serve.protocol import MAX_CHOICES, MAX_TOKENS
from repotune.serve.server import MAX_BODY_BYTES
from repotune.serve.state import ServerFiles, ServerState, ensure_token, token_path
from testdata.gitrepo import GitRepo, git_env
from tests.run_fixtures import MODEL

ROOT = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 300  # imports and loading on a loaded 2-core machine
pytestmark = pytest.mark.slow


@dataclass
class Served:
    process: subprocess.Popen
    connection: client.Connection
    log: Path

    @property
    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.connection.url}/v1",
            api_key=self.connection.token,
            max_retries=0,
            timeout=120,
        )

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1])


def wait_ready(results: Path, process: subprocess.Popen, log: Path) -> client.Connection:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        found = client.find(results, MODEL)
        if found is not None:
            return found
        assert process.poll() is None, f"the server exited:\n{log.read_text()}"
        time.sleep(0.05)
    raise AssertionError(f"no server within {STARTUP_SECONDS} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def served(shared_run, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "repotune", "serve", "--results", str(shared_run.results),
             "--model", MODEL, "--port", "0", "--idle-timeout", "600", "--device", "cpu"],
            stdout=out, stderr=out, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    try:
        yield Served(process, wait_ready(shared_run.results, process, log), log)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log.read_text()
    assert ServerFiles.of(shared_run.results, MODEL).read() is None  # the state went with it
    assert "stopped (asked to stop)" in log.read_text()


@pytest.fixture
def command(capfd, monkeypatch):
    """``repotune ARGS`` in this process, stdin given; (exit status, stdout, stderr)."""
    from repotune.cli.main import main

    def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capfd.readouterr()
        code = main(list(args))
        out, err = capfd.readouterr()
        return code, out, err

    return run


def gap_text(run) -> tuple[str, str]:
    """A prefix and suffix from a file of the run's repository."""
    lines = (run.repo.path / "pkg" / "m3.py").read_text().splitlines(keepends=True)
    return "".join(lines[:3]), "".join(lines[3:])


def requests_logged(served: Served, path: str) -> int:
    return served.log.read_text().count(f'"POST {path} HTTP/1.1" 200')


@pytest.mark.documented("repotune serve")
@pytest.mark.documented("repotune serve --model tiny")
@pytest.mark.documented("repotune serve --port 0 --idle-timeout 0")
def test_models_lists_the_served_model(served):
    assert [model.id for model in served.openai.models.list().data] == [MODEL]


@pytest.mark.parametrize("with_suffix", [False, True], ids=["prompt", "prompt+suffix"])
def test_a_completion_is_what_repotune_complete_prints(served, shared_run, command, with_suffix):
    prefix, suffix = gap_text(shared_run)
    suffix = suffix if with_suffix else ""
    answer = served.openai.completions.create(
        model=MODEL, prompt=prefix, suffix=suffix or None, max_tokens=24,
        extra_body={"path": "pkg/m3.py"},
    )  # fmt: skip
    (choice,) = answer.choices
    assert choice.finish_reason in ("stop", "length") and answer.usage.prompt_tokens > 0
    stdin = prefix + ("<|cursor|>" + suffix if with_suffix else "")
    options = ("--path", "pkg/m3.py", "--max-tokens", "24", "--results", str(shared_run.results))
    code, out, err = command("complete", "--no-server", *options, stdin=stdin)
    assert (code, out) == ((0, choice.text + "\n") if choice.text else (3, "")), err
    # Continue's prompt template: one text, the cursor marked in it.
    marked = served.openai.completions.create(
        model=MODEL, prompt=stdin, max_tokens=24,
        extra_body={"path": "pkg/m3.py", "cursor": "<|cursor|>"},
    )  # fmt: skip
    assert marked.choices[0].text == choice.text
    # The command itself asks the running server, and prints the same.
    before = requests_logged(served, "/v1/completions")
    assert command("complete", *options, stdin=stdin)[:2] == (code, out)
    assert requests_logged(served, "/v1/completions") == before + 1


def test_stop_cuts_the_answer_before_the_stop(served, shared_run):
    prefix, _ = gap_text(shared_run)
    ask = served.openai.completions.create
    whole = ask(model=MODEL, prompt=prefix, max_tokens=32).choices[0].text
    assert len(whole) >= 2, "the model's answer is too short to cut"
    stop = whole[len(whole) // 2]
    cut = ask(model=MODEL, prompt=prefix, max_tokens=32, stop=[stop]).choices[0]
    assert cut.text == whole[: whole.index(stop)] and cut.finish_reason == "stop"


def test_n_answers_greedy_copies_or_seeded_samples(served, shared_run):
    prefix, _ = gap_text(shared_run)
    ask = served.openai.completions.create
    one = ask(model=MODEL, prompt=prefix, max_tokens=12).choices[0].text
    greedy = ask(model=MODEL, prompt=prefix, max_tokens=12, n=3)
    assert [c.text for c in greedy.choices] == [one] * 3
    assert [c.index for c in greedy.choices] == [0, 1, 2]
    sampled = ask(model=MODEL, prompt=prefix, max_tokens=12, n=3, temperature=1.0, seed=5)
    again = ask(model=MODEL, prompt=prefix, max_tokens=12, n=3, temperature=1.0, seed=5)
    assert len(sampled.choices) == 3
    assert [c.text for c in sampled.choices] == [c.text for c in again.choices]  # seeded
    assert sampled.usage.completion_tokens <= 3 * 12
    streamed = ask(model=MODEL, prompt=prefix, max_tokens=12, stream=True)
    assert "".join(chunk.choices[0].text for chunk in streamed) == one


def printed(messages: list[str]) -> tuple[int, str]:
    """What `repotune suggest` prints for these candidates (and its exit status)."""
    if not messages:
        return 3, ""
    if len(messages) == 1:
        return 0, messages[0] + "\n"
    return 0, "".join(f"--- candidate {n}\n{text}\n" for n, text in enumerate(messages, 1))


def test_the_commit_message_endpoint_is_repotune_suggest(served, shared_run, command):
    diff = shared_run.repo.git("show", "--format=", "HEAD") + "\n"
    options = ("--stdin", "-n", "2", "--max-tokens", "24", "--results", str(shared_run.results))
    expected = command("suggest", "--no-server", *options, stdin=diff)
    body = {"diff": diff, "n": 2, "max_tokens": 24}
    answer = served.connection.post("/repotune/commit-message", body, 120)
    assert printed(answer["messages"]) == expected[:2], expected[2]
    before = requests_logged(served, "/repotune/commit-message")
    assert command("suggest", *options, stdin=diff)[:2] == expected[:2]
    assert requests_logged(served, "/repotune/commit-message") == before + 1


def test_a_wrong_or_missing_token_is_401(served):
    wrong = openai.OpenAI(base_url=f"{served.connection.url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="wrong bearer token"):
        wrong.models.list()
    request = urllib.request.Request(f"{served.connection.url}/v1/models")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(request, timeout=30)
    assert missing.value.code == 401
    assert token_path().stat().st_mode & 0o777 == 0o600
    assert token_path().parent.stat().st_mode & 0o777 == 0o700


def test_bad_requests_are_clear_4xx_and_the_server_goes_on(served, shared_run):
    ask = served.openai.completions.create
    with pytest.raises(openai.APIStatusError, match="exceeds the limit") as large:
        ask(model=MODEL, prompt="x" * (MAX_BODY_BYTES + 1), max_tokens=4)
    assert large.value.status_code == 413
    with pytest.raises(openai.BadRequestError, match="'max_tokens' must be between"):
        ask(model=MODEL, prompt="x", max_tokens=MAX_TOKENS + 1)
    with pytest.raises(openai.BadRequestError, match="'n' must be between"):
        ask(model=MODEL, prompt="x", max_tokens=4, n=MAX_CHOICES + 1)
    with pytest.raises(openai.NotFoundError, match="this server serves 'tiny'"):
        ask(model="gpt-4", prompt="x", max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="not valid JSON"):
        served.openai.post("/completions", cast_to=object, content=b"{not json")
    with pytest.raises(openai.BadRequestError, match="is empty and has no path"):
        ask(model=MODEL, prompt="", max_tokens=4)
    prefix, _ = gap_text(shared_run)
    assert ask(model=MODEL, prompt=prefix, max_tokens=4).choices  # still answering
    assert served.process.poll() is None


def test_fifty_concurrent_requests_all_answered_memory_flat(served, shared_run):
    """A bounded load test: 50 clients at once, twice; every request answered, each with the
    text it gets alone (questions run one at a time), and the server's resident memory after
    the second burst where the first left it."""
    prefix, _ = gap_text(shared_run)
    ask = served.openai.completions.create
    prompts = [prefix + f"def g{i}():\n" for i in range(5)]
    alone = [ask(model=MODEL, prompt=p, max_tokens=8).choices[0].text for p in prompts]

    def burst() -> list[str]:
        with ThreadPoolExecutor(50) as pool:
            futures = [
                pool.submit(ask, model=MODEL, prompt=prompts[i % 5], max_tokens=8)
                for i in range(50)
            ]
            return [future.result().choices[0].text for future in futures]

    assert burst() == [alone[i % 5] for i in range(50)]
    settled = served.rss_kib()
    assert burst() == [alone[i % 5] for i in range(50)]
    grown = served.rss_kib() - settled
    assert grown < 16 * 1024, f"resident memory grew {grown} KiB over 50 requests"
    log = served.log.read_text()
    assert '" 500 ' not in log and '" 503 ' not in log and "Traceback" not in log


def commit_env(home: Path, editor: str = "true") -> dict[str, str]:
    return {
        **git_env(1_700_000_000), "GIT_EDITOR": editor, "PYTHONPATH": str(ROOT),
        "REPOTUNE_HOME": str(home),
    }  # fmt: skip


def commit(repo: GitRepo, home: Path, name: str, typed: bool = False):
    """``git commit`` of a new file; ``typed``: the user's editor adds a line to the message
    (else it leaves the message as the hook wrote it)."""
    repo.write(name, f"def {name.split('/')[-1][:-3]}():\n    return 1\n")
    repo.git("add", "-A")
    editor = 'sh -c \'echo "Typed by the user" >> "$1"\' -' if typed else "true"
    return subprocess.run(
        ["git", "commit"], cwd=repo.path, capture_output=True, text=True,
        env=commit_env(home, editor),
    )  # fmt: skip


@pytest.fixture
def clone(shared_run, tmp_path):
    repo = GitRepo.__new__(GitRepo)
    repo.path, repo.clock = tmp_path / "clone", shared_run.repo.clock
    subprocess.run(["git", "clone", "-q", str(shared_run.repo.path), str(repo.path)], check=True)
    return repo


def test_the_hook_starts_a_server_and_the_next_commit_uses_it(shared_run, clone, tmp_path):
    home = tmp_path / "home"
    install = subprocess.run(
        [sys.executable, "-m", "repotune", "hook", "install", "--results",
         str(shared_run.results), "--timeout", str(STARTUP_SECONDS), "--idle-timeout", "600"],
        cwd=clone.path, capture_output=True, text=True, env=commit_env(home),
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    first = commit(clone, home, "pkg/first.py")
    assert first.returncode == 0 and "repotune hook" not in first.stderr, first.stderr
    previous = os.environ["REPOTUNE_HOME"]
    os.environ["REPOTUNE_HOME"] = str(home)
    files = ServerFiles.of(shared_run.results, MODEL)
    state = files.read()
    try:
        assert state is not None and files.running()  # left running for the next commit
        started = time.monotonic()
        second = commit(clone, home, "pkg/second.py")
        seconds = time.monotonic() - started
        assert second.returncode == 0 and "repotune hook" not in second.stderr, second.stderr
        assert files.log.read_text().count('"POST /repotune/commit-message HTTP/1.1" 200') == 2
        assert seconds < STARTUP_SECONDS
    finally:
        os.environ["REPOTUNE_HOME"] = previous
        if state is not None:
            os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while files.state.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not files.state.exists()


def hook_lines(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [line for line in result.stderr.splitlines() if "repotune hook" in line]


def test_a_server_that_refuses_or_is_down_is_one_line_and_the_commit_goes_on(
    served, shared_run, clone, tmp_path, monkeypatch
):
    home = Path(os.environ["REPOTUNE_HOME"])  # the module's server's
    install = subprocess.run(
        [sys.executable, "-m", "repotune", "hook", "install", "--no-serve", "--results",
         str(shared_run.results)],
        cwd=clone.path, capture_output=True, text=True, env=commit_env(home),
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    token = token_path().read_text()
    token_path().write_text("a token from another server\n")  # the server refuses it: 401
    try:
        (refused,) = hook_lines(commit(clone, home, "pkg/refused.py", typed=True))
    finally:
        token_path().write_text(token)
    assert "answered 401: missing or wrong bearer token" in refused
    assert refused.endswith("committing without a suggestion")

    monkeypatch.setenv("REPOTUNE_HOME", str(tmp_path / "home"))
    files = ServerFiles.of(shared_run.results, MODEL)
    ensure_token()
    with files.hold():  # a live server's lock, but nothing listens on its port: it is down
        files.write(ServerState(os.getpid(), 9, MODEL, str(shared_run.results), "x"))
        (down,) = hook_lines(commit(clone, tmp_path / "home", "pkg/down.py", typed=True))
        files.remove()
    assert "is down" in down and down.endswith("committing without a suggestion")
    assert clone.git("log", "-2", "--format=%s").splitlines() == ["Typed by the user"] * 2


README_CURL = (
    """curl -s http://127.0.0.1:8231/v1/completions -H "Authorization: Bearer $(cat """
    """~/.config/repotune/token)" -H 'Content-Type: application/json' -d '{"prompt": "def """
    """add(a, b):\\n", "max_tokens": 32}'"""
)
TOKEN = "TOKEN=$(cat ~/.config/repotune/token)"
DOCS_CURL = (
    """curl -s http://127.0.0.1:8231/v1/completions -H "Authorization: Bearer $TOKEN" -H """
    """'Content-Type: application/json' -d '{"prompt": "def add(a, b):\\n", "suffix": """
    """"\\n\\nprint(add(1, 2))\\n", "max_tokens": 32}'"""
)
DOCS_MESSAGE = (
    """git diff --cached | jq -Rs '{diff: ., n: 1}' | curl -s """
    """http://127.0.0.1:8231/repotune/commit-message -H "Authorization: Bearer $TOKEN" -H """
    """'Content-Type: application/json' -d @- | jq -r '.messages[0]'"""
)


@pytest.mark.documented(README_CURL)
@pytest.mark.documented(TOKEN)
@pytest.mark.documented(DOCS_CURL)
@pytest.mark.documented(DOCS_MESSAGE)
def test_the_documented_curl_lines_get_answers(served, tmp_path):
    """README's and docs/serving.md's lines, as shown but for the test server's port and token
    file: real curl and jq against the server."""
    if not (shutil.which("curl") and shutil.which("jq")):
        pytest.skip("curl or jq is not installed")

    def shell(line: str) -> str:
        line = line.replace("127.0.0.1:8231", served.connection.url.removeprefix("http://"))
        line = line.replace("~/.config/repotune/token", str(token_path()))
        result = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=repo.path)
        assert result.returncode == 0, result.stderr
        return result.stdout

    repo = GitRepo(tmp_path / "repo")
    repo.commit("Add a module", {"pkg/a.py": "def a():\n    return 1\n"})
    (repo.path / "pkg" / "a.py").write_text("def a():\n    return 2\n")
    repo.git("add", "-A")
    for line in (README_CURL, f"{TOKEN}; {DOCS_CURL}"):
        answer = json.loads(shell(line))
        assert answer["object"] == "text_completion" and len(answer["choices"]) == 1, answer
    message = shell(f"{TOKEN}; {DOCS_MESSAGE}")
    assert message.strip() and message.strip() != "null", message
