"""Running generated code for a behavioural python_test: only when asked, and contained.

Nothing runs model-generated code unless ``evaluate.behaviour.allow_code_execution`` is true
(the default is false: python tests are then reported as skipped, see :func:`skipped`). When it
is true, each python_test runs in a child process under **bubblewrap** (``bwrap``), as root
and as an ordinary user alike:

* **no privilege**: every capability dropped (``--cap-drop ALL``: a remount of a read-only
  bind fails with EPERM even for root), uid/gid 65534 in a new user namespace (run by root,
  bubblewrap maps it to uid 0 outside, which then holds no capability), new pid, network (only
  its own loopback), IPC, UTS (hostname ``repotune-sandbox``) and cgroup namespaces; the test
  is the namespace's only process (``--as-pid-1``), killed with its parent, in a session of its
  own (no terminal to inject input into);
* **a file system of its own**: a read-only root with ``/usr`` and the ``/lib*`` links, the
  interpreter and the directories it imports from (:func:`python_binds`; never ``/`` nor the
  home directory, wherever Python lives), the guard, a fresh ``/proc`` and ``/dev``; the
  scratch directory is the only writable place. The parent's files, environment and processes
  are not there to read;
* **limits the code cannot lift**: a seccomp filter refuses every new process or thread
  (:mod:`repotune.evaluate.sandbox_seccomp`), so ``RLIMIT_AS`` bounds all the memory it takes;
  CPU seconds, file size and core dumps are limited too, soft and hard alike, and raising a
  hard limit takes a capability it does not have.

None of this relies on the audit hook the child runs first
(:mod:`repotune.evaluate.sandbox_guard`): generated code may switch it off, and the sandbox
holds without it (``tests/test_sandbox_adversarial.py`` attacks each layer with the hook off).

Without a working bubblewrap, code execution is refused (:class:`~repotune.errors.InputError`
before any model is loaded) unless ``evaluate.behaviour.allow_unisolated_execution`` is true:
then the test runs under the **guard** alone, which is not isolation: ``sys.executable -I -B``
in a new network namespace where the machine allows one (``unshare -rn``), ``RLIMIT_NPROC`` 0
(no new process or thread) and the audit hook, which in-process code can get around. It needs
Linux and a user other than root (root ignores ``RLIMIT_NPROC`` and file modes).

Both ways: a cleared environment (``HOME`` and ``TMPDIR`` the scratch directory), stdin closed,
output discarded, and the whole process group killed with SIGKILL at the timeout (reason
``"timeout"``).

A failure's reason holds nothing the code chose freely: ``python_test exited with a non-zero
status: <Type>``, where the type is the name of a built-in exception class (any other becomes
``Exception``) and, for a refusal of the hook, an audit event from a fixed list. The child
reports it on a pipe of its own, never in its output; the exit status, the output and the
exception's message are not reported.
"""

import builtins
import contextlib
import functools
import math
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from repotune.errors import InputError
from repotune.evaluate import sandbox_seccomp
from repotune.evaluate.sandbox_guard import EVENTS

_POLL_S = 0.01
# The program the child runs before the test: a file of its own, so linters and coverage see it.
_GUARD = Path(__file__).with_name("sandbox_guard.py")
SANDBOX_ID = 65534  # uid and gid in the sandbox's user namespace ("nobody")
HOSTNAME = "repotune-sandbox"
SKIPPED_REASON = "skipped: code execution not enabled"
ENABLE_HINT = "set evaluate.behaviour.allow_code_execution: true to run python tests"
FAILED = "python_test exited with a non-zero status"
KILLED = "python_test killed by a signal"
# The only exception names a reason may carry: classes the interpreter itself defines.
BUILTIN_EXCEPTIONS = frozenset(
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
)
_RESULT_BYTES = 256

Isolation = Literal["auto", "bubblewrap", "guard"]


@dataclass(frozen=True)
class CheckResult:
    """Whether a generation passed one test, and why not (``"ok"`` when it did).

    ``skipped``: the test was not run (a python_test while code execution is off); it counts
    neither as a pass nor as a failure.
    """

    passed: bool
    reason: str
    skipped: bool = False


def skipped() -> CheckResult:
    """The result of a python_test that was not run because code execution is not enabled."""
    return CheckResult(False, SKIPPED_REASON, skipped=True)


@dataclass(frozen=True)
class SandboxLimits:
    """Limits on a python_test's child process and how it is isolated.

    ``memory_mb`` caps its address space (RLIMIT_AS; allocations beyond raise MemoryError):
    all it can take, since it can start no other process or thread. ``file_size_mb`` caps any
    file it writes (RLIMIT_FSIZE).
    ``isolation``: ``auto`` (bubblewrap; the guard only with ``allow_unisolated``; else
    refuse), ``bubblewrap`` or ``guard`` (forced: tests use these to check each way).
    ``allow_unisolated``: the user's opt-in to the guard when bubblewrap does not work
    (``evaluate.behaviour.allow_unisolated_execution``).
    ``network_namespace`` runs the guard under ``unshare -rn`` when the machine supports that;
    the audit hook blocks sockets either way.
    """

    memory_mb: int = 1024
    file_size_mb: int = 16
    network_namespace: bool = True
    isolation: Isolation = "auto"
    allow_unisolated: bool = False

    @classmethod
    def from_config(cls, behaviour: Mapping[str, Any]) -> "SandboxLimits":
        """The limits for the ``evaluate.behaviour`` config section."""
        return cls(allow_unisolated=bool(behaviour.get("allow_unisolated_execution", False)))


DEFAULT_LIMITS = SandboxLimits()


def _quiet_run(command: list[str], pass_fds: tuple[int, ...] = ()) -> bool:
    """Whether ``command`` exits 0 (output discarded, 30 s at most)."""
    try:
        completed = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=False,
            pass_fds=pass_fds,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return completed.returncode == 0


@functools.cache
def network_namespace_available() -> bool:
    """Whether ``unshare -rn`` can start Python here (checked once per process).

    Needs Linux with unprivileged user namespaces; containers and hardened kernels often
    forbid them, and then the audit hook is the only network guard.
    """
    unshare = shutil.which("unshare")
    if not sys.platform.startswith("linux") or unshare is None:
        return False
    return _quiet_run([unshare, "-rn", sys.executable, "-I", "-c", "pass"])


@functools.cache
def bubblewrap_available() -> bool:
    """Whether bubblewrap is installed and starts Python here with every protection the
    sandbox uses (checked once per process).

    It needs user namespaces (unprivileged ones, unless run by root) and an architecture the
    seccomp filter knows; some containers forbid namespaces, and then it is unusable even
    when installed.
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None or not sys.platform.startswith("linux"):
        return False
    if sandbox_seccomp.program() is None:
        return False
    with (
        tempfile.TemporaryDirectory(prefix="repotune-bwrap-probe-") as scratch,
        _seccomp_fd() as seccomp,
    ):
        command = _bubblewrap_prefix(bwrap, Path(scratch), seccomp)
        return _quiet_run([*command, _python(), "-I", "-c", ""], pass_fds=(seccomp,))


def guard_available() -> bool:
    """Whether the guard can run here: Linux (audit hook, ``/proc/self/fd``) and not root, for
    whom ``RLIMIT_NPROC`` and file permissions mean nothing."""
    return sys.platform.startswith("linux") and os.geteuid() != 0


def chosen_isolation(limits: SandboxLimits = DEFAULT_LIMITS) -> Literal["bubblewrap", "guard"]:
    """How python tests will run here; InputError (one line) when nothing may run them."""
    if limits.isolation != "auto":
        return limits.isolation
    if bubblewrap_available():
        return "bubblewrap"
    if limits.allow_unisolated and guard_available():
        return "guard"
    if limits.allow_unisolated:
        raise InputError(
            "config evaluate.behaviour.allow_unisolated_execution",
            "is true but bubblewrap cannot start here and the guard needs Linux and a user "
            "other than root",
            "install bubblewrap (apt-get install bubblewrap), or set "
            "evaluate.behaviour.allow_code_execution to false",
        )
    raise InputError(
        "config evaluate.behaviour.allow_code_execution",
        "is true but bubblewrap is missing or cannot start here, and nothing else isolates "
        "generated code",
        "install bubblewrap (apt-get install bubblewrap), set it to false, or accept the "
        "in-process guard, which is not isolation, with "
        "evaluate.behaviour.allow_unisolated_execution: true",
    )


def _python() -> str:
    """The interpreter itself, not a venv's symlink to it: the sandbox binds only its files."""
    return os.path.realpath(sys.executable)


@functools.cache
def python_binds() -> tuple[str, ...]:
    """What the interpreter needs besides ``/usr``: itself, its library directory (a shared
    libpython, the libraries its extension modules link) and the directories it imports from
    under ``-I``, as it reports them; each path outside ``/usr``, none inside another.

    Never ``/`` nor the home directory or one above it: with Python under the home directory,
    only its own directories there are bound. InputError when the interpreter needs one.
    """
    report = subprocess.run(
        [_python(), "-I", "-c", "import sys\nfor entry in sys.path: print(entry)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    library = sysconfig.get_config_var("LIBDIR")
    candidates = {_python(), *([library] if library else []), *report}
    paths = sorted(
        {os.path.realpath(path) for path in candidates if os.path.isabs(path)} - {_python()}
    )
    home = os.path.realpath(Path.home())
    kept = [] if _under(_python(), "/usr") else [_python()]
    for path in paths:
        if not os.path.exists(path) or _under(path, "/usr") or _under(path, *kept):
            continue
        if path == "/" or _under(home, path):
            raise InputError(
                f"interpreter '{_python()}'",
                f"needs '{path}', which the sandbox never shows to generated code (it is / or "
                "the home directory)",
                "use a Python installed elsewhere (a system or pyenv Python, or a venv's base)",
            )
        kept.append(path)
    return tuple(kept)


def _under(path: str, *tops: str) -> bool:
    return any(path == top or path.startswith(top.rstrip("/") + "/") for top in tops)


@contextlib.contextmanager
def _seccomp_fd():
    """A pipe's read end holding the seccomp filter, for ``bwrap --seccomp``."""
    program = sandbox_seccomp.program()
    if program is None:
        raise InputError(
            "this machine",
            f"is a {platform.machine()}, for which the sandbox has no seccomp filter",
            "run on x86_64 or aarch64, or set evaluate.behaviour.allow_code_execution to false",
        )
    read, write = os.pipe()
    try:
        os.write(write, program)  # a few hundred bytes: far below a pipe's buffer
        os.close(write)
        write = -1
        yield read
    finally:
        for descriptor in (read, write):
            if descriptor != -1:
                with contextlib.suppress(OSError):
                    os.close(descriptor)


def _bubblewrap_prefix(bwrap: str, scratch: Path, seccomp_fd: int) -> list[str]:
    """bwrap's arguments: no capability, its own namespaces and user, the system and Python
    read-only, the scratch directory writable, the root read-only."""
    command = [
        bwrap,
        *("--unshare-all", "--unshare-user", "--uid", str(SANDBOX_ID), "--gid", str(SANDBOX_ID)),
        *("--hostname", HOSTNAME, "--cap-drop", "ALL", "--seccomp", str(seccomp_fd)),
        *("--die-with-parent", "--new-session", "--as-pid-1"),
    ]
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            command += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            command += ["--ro-bind", top, top]
    command += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for path in (*python_binds(), os.path.realpath(_GUARD)):
        command += ["--ro-bind", path, path]
    command += ["--bind", str(scratch), str(scratch), "--proc", "/proc", "--dev", "/dev"]
    return [*command, "--remount-ro", "/", "--chdir", str(scratch)]


def _rlimits(timeout_s: float, limits: SandboxLimits, isolation: str) -> list[tuple[int, int]]:
    """(resource, value) pairs for the child; soft and hard limits alike, so it cannot raise
    them. CPU time is a backstop two seconds past the wall-clock timeout. No new processes
    under the guard (under bubblewrap, the seccomp filter refuses them: bwrap itself must
    fork, and root is exempt from RLIMIT_NPROC)."""
    megabyte = 1024 * 1024
    pairs = [
        (resource.RLIMIT_CPU, math.ceil(timeout_s) + 2),
        (resource.RLIMIT_AS, limits.memory_mb * megabyte),
        (resource.RLIMIT_FSIZE, limits.file_size_mb * megabyte),
        (resource.RLIMIT_CORE, 0),
    ]
    if isolation == "guard":
        pairs.append((resource.RLIMIT_NPROC, 0))
    return pairs


def _apply_rlimits(rlimits: list[tuple[int, int]]) -> None:
    """The preexec_fn: between fork and exec, so only plain system calls, nothing imported."""
    for kind, value in rlimits:
        resource.setrlimit(kind, (value, value))


def _child_env(scratch: Path) -> dict[str, str]:
    """Just enough for Python to start: nothing of the parent's environment leaks in."""
    return {"HOME": str(scratch), "TMPDIR": str(scratch), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def _exited(pid: int) -> bool:
    """Whether ``pid`` has exited, leaving it unreaped (its process group id stays reserved)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def ending(result: bytes) -> str:
    """What ended a failed test, from what the child wrote on its result pipe: a built-in
    exception's name and, for a refusal, the audit event, one the guard may refuse; anything
    else (another name, another event, more than one line) is ``Exception``. Generated code can
    write to the pipe too: this is all it can make it say."""
    lines = result.decode("ascii", errors="replace").split("\n")
    if not result:
        return "no result"
    if len(lines) != 2 or lines[1]:
        return "Exception"
    name, _, event = lines[0].partition(" ")
    if name not in BUILTIN_EXCEPTIONS or (event and event not in EVENTS):
        return "Exception"
    return f"{name} ({event} refused)" if event else name


def _read_result(descriptor: int) -> bytes:
    """Up to :data:`_RESULT_BYTES` bytes the child wrote (it has exited: no writer is left
    unless it passed the pipe on, which it cannot, so reading never blocks for long)."""
    os.set_blocking(descriptor, False)
    try:
        return os.read(descriptor, _RESULT_BYTES + 1)
    except BlockingIOError:
        return b""


def _command(scratch: Path, limits: SandboxLimits, isolation: str, seccomp_fd: int) -> list[str]:
    if isolation == "bubblewrap":
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise InputError("bubblewrap", "is not installed", "apt-get install bubblewrap")
        prefix = _bubblewrap_prefix(bwrap, scratch, seccomp_fd)
        python = _python()
    else:
        prefix = []
        if limits.network_namespace and network_namespace_available():
            prefix = [str(shutil.which("unshare")), "-rn"]
        python = sys.executable
    return [*prefix, python, "-I", "-B", os.path.realpath(_GUARD), str(scratch)]


def run_python_test(
    code: str, test_source: str, timeout_s: float, limits: SandboxLimits = DEFAULT_LIMITS
) -> CheckResult:
    """Run ``test_source`` against ``code`` (as ``generated.py``) in an isolated child.

    Only call this when the user enabled code execution. Passes when the child exits 0 within
    ``timeout_s`` seconds of wall-clock time. At the timeout, and after any exit, the child's
    whole process group is killed, so nothing it started outlives the check.
    """
    isolation = chosen_isolation(limits)
    # A test may leave files it made unremovable (chmod 0 inside its directory): clean up what
    # can be, never fail the evaluation over a temporary directory.
    with (
        tempfile.TemporaryDirectory(
            prefix="repotune-behaviour-", ignore_cleanup_errors=True
        ) as holder,
        contextlib.ExitStack() as descriptors,
    ):
        scratch = Path(os.path.realpath(holder)) / "scratch"
        scratch.mkdir()
        (scratch / "generated.py").write_text(code, encoding="utf-8")
        (scratch / "behaviour_test.py").write_text(test_source, encoding="utf-8")
        seccomp = descriptors.enter_context(_seccomp_fd()) if isolation == "bubblewrap" else -1
        result_read, result_write = os.pipe()
        descriptors.callback(os.close, result_read)
        command = [*_command(scratch, limits, isolation, seccomp), str(result_write)]
        try:
            process = subprocess.Popen(
                command,
                cwd=scratch,
                env=_child_env(scratch),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=(result_write,) if seccomp == -1 else (result_write, seccomp),
                preexec_fn=functools.partial(
                    _apply_rlimits, _rlimits(timeout_s, limits, isolation)
                ),
            )
        finally:
            os.close(result_write)  # the child's copy is the only writer left
        timed_out = False
        try:
            deadline = time.monotonic() + timeout_s
            while not _exited(process.pid):
                if time.monotonic() >= deadline:
                    timed_out = True
                    break
                time.sleep(_POLL_S)
        finally:
            # The leader is alive or an unreaped zombie here, so its pid still names our
            # process group (also when we are interrupted: nothing is left running).
            _kill_group(process.pid)
            returncode = process.wait()
        if timed_out:
            return CheckResult(False, "timeout")
        if returncode == 0:
            return CheckResult(True, "ok")
        if returncode < 0:
            return CheckResult(False, KILLED)
        return CheckResult(False, f"{FAILED}: {ending(_read_result(result_read))}")
