"""Code execution is opt-in, refused without bubblewrap unless the weaker guard is accepted,
and each escape a security review found is contained.

Every probe is first run without any sandbox, to show that it really does what the review
found (so a probe that silently broke could not pass as "contained"), then under each way the
sandbox can run a python_test: bubblewrap where it works, and the guard. The attacks that get
around the guard's audit hook are in tests/test_sandbox_adversarial.py.
"""

import os
import secrets
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from repotune.errors import InputError
from repotune.evaluate import sandbox
from repotune.evaluate.behaviour import BehaviourTest, check, pass_rate
from repotune.evaluate.report import markdown
from repotune.evaluate.sandbox import FAILED, CheckResult, SandboxLimits, run_python_test
from tests.test_report import sample_report

ROOT = Path(__file__).resolve().parent.parent
NO_BWRAP = "bubblewrap is not installed or cannot start here (make system-deps installs it)"
ISOLATIONS = [
    pytest.param(
        SandboxLimits(isolation="bubblewrap"),
        id="bubblewrap",
        marks=pytest.mark.skipif(not sandbox.bubblewrap_available(), reason=NO_BWRAP),
    ),
    pytest.param(SandboxLimits(isolation="guard"), id="guard"),
    pytest.param(SandboxLimits(isolation="guard", network_namespace=False), id="guard-no-netns"),
]

# _posixsubprocess.fork_exec raises no audit event; these are Python 3.11's arguments.
FORK_EXEC = """
import os, _posixsubprocess
r, w = os.pipe()
_posixsubprocess.fork_exec(
    [b"/bin/sh", b"-c", COMMAND.encode()], [b"/bin/sh"], True, (w,), None, None,
    -1, -1, -1, -1, -1, -1, r, w, False, SETSID, -1, None, None, None, -1, None, False,
)
"""


def probe(source: str, **names: object) -> str:
    """A probe's source with its constants (paths, commands) defined first."""
    header = "".join(f"{name} = {value!r}\n" for name, value in names.items())
    return header + textwrap.dedent(source)


def run_unsandboxed(source: str, cwd: Path) -> subprocess.CompletedProcess:
    """The probe as plain Python: what it does when nothing contains it."""
    return subprocess.run(
        [sys.executable, "-I", "-c", source], cwd=cwd, capture_output=True, timeout=60, check=False
    )


PY311 = pytest.mark.skipif(
    sys.version_info[:2] != (3, 11), reason="the fork_exec probe spells out Python 3.11's arguments"
)


# --- opt-in ------------------------------------------------------------------------------


def test_python_tests_are_skipped_unless_code_execution_is_enabled(tmp_path):
    marker = tmp_path / "ran.txt"
    test = BehaviourTest(
        name="t", prompt="", python_test=f"open({str(marker)!r}, 'w')\n", must_match=(r"\w",)
    )
    result = check(test, "def f(): pass\n")
    assert result == CheckResult(False, "skipped: code execution not enabled", skipped=True)
    assert not marker.exists()
    assert check(test, "").reason.startswith("must_match")  # regex checks still run first
    # Skipped tests count neither as passes nor failures.
    assert pass_rate([result, CheckResult(True, "ok")]) == 1.0
    assert pass_rate([result]) is None


def test_report_says_python_tests_were_skipped():
    report = sample_report()
    report["behaviour"] = [
        {"name": "palindrome", "base": vars(sandbox.skipped()), "adapted": vars(sandbox.skipped())}
    ]
    text = markdown(report, "loss.png", "metrics.png")
    assert "| palindrome | skipped: code execution not enabled |" in text
    assert "allow_code_execution: true" in text


def test_no_bubblewrap_refuses_code_execution_in_one_line(monkeypatch):
    monkeypatch.setattr(sandbox, "bubblewrap_available", lambda: False)
    monkeypatch.setattr(sandbox, "guard_available", lambda: True)  # it could run: not enough
    for limits in (SandboxLimits(), SandboxLimits.from_config({"allow_code_execution": True})):
        with pytest.raises(InputError) as raised:
            run_python_test("", "pass\n", 5.0, limits)
        message = str(raised.value)
        assert "\n" not in message
        assert message.startswith("config evaluate.behaviour.allow_code_execution: ")
        assert "apt-get install bubblewrap" in message
        assert "allow_unisolated_execution: true" in message


def test_the_guard_runs_only_when_the_user_opts_in(monkeypatch):
    monkeypatch.setattr(sandbox, "bubblewrap_available", lambda: True)
    opted_in = SandboxLimits.from_config({"allow_unisolated_execution": True})
    assert sandbox.chosen_isolation(opted_in) == "bubblewrap"  # bubblewrap first, always
    monkeypatch.setattr(sandbox, "bubblewrap_available", lambda: False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert sandbox.chosen_isolation(opted_in) == "guard"
    with pytest.raises(InputError, match="allow_unisolated_execution"):
        sandbox.chosen_isolation(SandboxLimits())
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # root: the guard cannot even hold
    with pytest.raises(InputError, match="other than root"):
        sandbox.chosen_isolation(opted_in)


def test_the_opt_in_is_documented_in_the_schema_and_config():
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    behaviour = schema["properties"]["evaluate"]["properties"]["behaviour"]["properties"]
    key = behaviour["allow_unisolated_execution"]
    assert key["default"] is False and key["type"] == "boolean"
    assert "not isolation" in key["description"]
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    assert config["evaluate"]["behaviour"]["allow_unisolated_execution"] is False


def test_python_is_bound_without_the_home_directory(monkeypatch):
    """Python under the home directory: only its own directories there are bound, never the
    home itself; a home that the interpreter needs whole is refused."""
    python = os.path.realpath(sys.executable)
    monkeypatch.setenv("HOME", os.path.dirname(os.path.dirname(python)))
    sandbox.python_binds.cache_clear()
    try:
        binds = sandbox.python_binds()
        assert os.environ["HOME"] not in binds and "/" not in binds
        assert all(not path.startswith("/usr/") for path in binds)
        library = sandbox.sysconfig.get_config_var("LIBDIR")
        if not library.startswith("/usr/"):
            monkeypatch.setenv("HOME", library)  # the interpreter's library dir is the home
            sandbox.python_binds.cache_clear()
            with pytest.raises(InputError, match="never shows to generated code"):
                sandbox.python_binds()
    finally:
        sandbox.python_binds.cache_clear()


# --- the review's probes -----------------------------------------------------------------


@PY311
@pytest.mark.parametrize("limits", ISOLATIONS)
def test_fork_exec_cannot_run_a_shell_that_writes_outside(tmp_path, limits):
    target = tmp_path / "outside" / "made-by-sh.txt"
    target.parent.mkdir()
    source = probe(FORK_EXEC + "import time; time.sleep(0.5)\n",
                   COMMAND=f"touch {target}", SETSID=False)  # fmt: skip
    assert run_unsandboxed(source, tmp_path).returncode == 0 and target.exists()
    target.unlink()
    result = run_python_test("", source, 10.0, limits)
    time.sleep(0.5)
    assert not result.passed and not target.exists()
    assert result.reason == f"{FAILED}: PermissionError (import refused)"


CHILD_DELAY = 0.3
"""How long a setsid child waits before it writes: its parent, the test, has ended by then."""
SETSID_CHILDREN = {
    "fork_exec": FORK_EXEC,
    "os.fork": """
        import os, time
        if os.fork() == 0:
            os.setsid()
            time.sleep(CHILD_DELAY)
            open(TARGET, "w").close()
            os._exit(0)
        """,
}


@PY311
@pytest.mark.parametrize("limits", ISOLATIONS)
@pytest.mark.parametrize("how", sorted(SETSID_CHILDREN))
def test_a_setsid_child_does_not_outlive_the_test(tmp_path, limits, how):
    target = tmp_path / "late.txt"
    source = probe(SETSID_CHILDREN[how], TARGET=str(target), SETSID=True, CHILD_DELAY=CHILD_DELAY,
                   COMMAND=f"sleep {CHILD_DELAY}; touch {target}")  # fmt: skip
    assert run_unsandboxed(source, tmp_path).returncode == 0
    waited = time.monotonic()
    while not target.exists() and time.monotonic() - waited < 10:
        time.sleep(0.05)
    assert target.exists()  # the probe works: its child wrote after the parent had ended
    target.unlink()
    result = run_python_test("", source, 10.0, limits)
    time.sleep(CHILD_DELAY + 1)  # an escaped child would have written by now
    assert not result.passed and not target.exists()
    assert "PermissionError" in result.reason


# SQLite opens files in C with no audit event: ATTACH and VACUUM INTO create them anywhere.
SQLITE = {
    "connect": "sqlite3.connect(f'file:{TARGET}?mode=rwc', uri=True).execute('create table t(x)')",
    "attach": "sqlite3.connect(':memory:').execute('attach database ? as a', (TARGET,))",
    "vacuum into": "sqlite3.connect(':memory:').execute('vacuum into ?', (TARGET,))",
}
# os.mknod and os.mkfifo raise no audit event either.
NODES = {
    "mkfifo": "os.mkfifo(TARGET)",
    "mknod": "os.mknod(TARGET, stat.S_IFREG | 0o600)",
    "mkfifo dir_fd": "os.mkfifo('made', dir_fd=os.open(os.path.dirname(TARGET), os.O_RDONLY))",
}


@pytest.mark.parametrize("limits", ISOLATIONS)
@pytest.mark.parametrize("how", [*SQLITE, *NODES])
def test_sqlite_and_special_files_cannot_create_a_file_outside(tmp_path, limits, how):
    target = tmp_path / "outside" / "made"
    target.parent.mkdir()
    imports = "import sqlite3\n" if how in SQLITE else "import os, stat\n"
    source = probe(imports + {**SQLITE, **NODES}[how] + "\n", TARGET=str(target))
    assert run_unsandboxed(source, tmp_path).returncode == 0 and target.exists()
    target.unlink()
    result = run_python_test("", source, 10.0, limits)
    assert not result.passed and not target.exists()
    if limits.isolation == "guard":  # bubblewrap: the directory is not even there
        # A directory outside cannot even be opened as a dir_fd.
        events = {**dict.fromkeys(SQLITE, "import"), "mkfifo dir_fd": "open"}
        event = events.get(how, f"os.{how}")
        assert result.reason == f"{FAILED}: PermissionError ({event} refused)"


@pytest.mark.parametrize("limits", ISOLATIONS)
def test_special_files_may_be_made_inside(limits):
    inside = "import os\nos.mkfifo('fifo')\nos.mknod('node', 0o600 | 0o100000)\n"
    assert run_python_test("", inside, 10.0, limits) == CheckResult(True, "ok")


@pytest.mark.parametrize("limits", ISOLATIONS)
def test_a_token_in_the_home_neither_read_nor_reported(tmp_path, monkeypatch, limits):
    home = tmp_path / "home"
    token_file = home / ".cache" / "huggingface" / "token"
    token_file.parent.mkdir(parents=True)
    token = "hf_" + secrets.token_hex(17)  # generated here: never a real token
    token_file.write_text(token)
    monkeypatch.setenv("HOME", str(home))
    leak = probe("raise SystemExit(open(TOKEN_FILE).read())\n", TOKEN_FILE=str(token_file))
    assert token in run_unsandboxed(leak, tmp_path).stderr.decode()
    result = run_python_test("", leak, 10.0, limits)
    assert not result.passed and token not in result.reason
    # Reading itself fails, not only the report of it.
    read = probe("import sys\nsys.exit(0 if open(TOKEN_FILE).read() else 3)\n",
                 TOKEN_FILE=str(token_file))  # fmt: skip
    assert run_unsandboxed(read, tmp_path).returncode == 0
    assert not run_python_test("", read, 10.0, limits).passed


@pytest.mark.parametrize("limits", ISOLATIONS)
def test_a_failure_reason_is_a_builtin_exception_type_only(limits):
    token = "ghp_" + secrets.token_hex(18)
    source = probe("raise ValueError(TOKEN)\n", TOKEN=token)
    assert run_python_test("", source, 10.0, limits) == CheckResult(False, f"{FAILED}: ValueError")
    # Neither what it printed nor the status it chose.
    printed = probe("print(TOKEN)\nraise SystemExit(TOKEN.count('a') + 2)\n", TOKEN=token)
    assert run_python_test("", printed, 10.0, limits) == CheckResult(False, f"{FAILED}: SystemExit")
    # A class of its own is just an Exception.
    own = "class ParserFailure(Exception):\n    pass\nraise ParserFailure()\n"
    assert run_python_test("", own, 10.0, limits) == CheckResult(False, f"{FAILED}: Exception")


def test_the_ending_holds_nothing_but_names_from_closed_lists():
    ending = sandbox.ending
    assert ending(b"") == "no result"
    assert ending(b"KeyError\n") == "KeyError"
    assert ending(b"PermissionError open\n") == "PermissionError (open refused)"
    for forged in (b"ghp_abc\n", b"KeyError ghp_abc\n", b"KeyError\nKeyError\n", b"KeyError"):
        assert ending(forged) == "Exception", forged


@pytest.mark.parametrize("limits", ISOLATIONS)
def test_another_processs_environment_cannot_be_read(tmp_path, limits):
    # A live process of ours with a known secret in its environment: /proc shows a process's
    # environment as it started, so the test's own (under pytest-xdist, a worker's) may not
    # hold a given variable.
    neighbour = subprocess.Popen(["sleep", "60"], env={"REPOTUNE_NEIGHBOUR": "s3cret"})
    try:
        source = probe(
            "import sys\ndata = open(f'/proc/{PID}/environ', 'rb').read()\n"
            "sys.exit(0 if b'REPOTUNE_NEIGHBOUR=s3cret' in data else 3)\n",
            PID=neighbour.pid,
        )
        assert run_unsandboxed(source, tmp_path).returncode == 0
        assert not run_python_test("", source, 10.0, limits).passed
    finally:
        neighbour.kill()
        neighbour.wait()


@pytest.mark.parametrize("limits", ISOLATIONS)
def test_the_environment_is_cleared(monkeypatch, limits):
    monkeypatch.setenv("REPOTUNE_SECRET", "s3cret")
    expected = {"HOME", "LANG", "LC_ALL", "TMPDIR"}
    if limits.isolation == "bubblewrap":
        expected.add("PWD")  # bubblewrap sets it to the scratch directory after --chdir
    source = probe("import os, sys\nsys.exit(0 if set(os.environ) == EXPECTED else 3)\n",
                   EXPECTED=expected)  # fmt: skip
    assert run_python_test("", source, 10.0, limits) == CheckResult(True, "ok")
