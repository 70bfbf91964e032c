"""Running generated code for a behavioural python_test: only when asked, and contained.

Nothing runs model-generated code unless ``evaluate.behaviour.allow_code_execution`` is true
(the default is false: python tests are then reported as skipped, see :func:`skipped`). When it
is true, each python_test runs in a child process isolated in one of two ways:

* **bubblewrap** (``bwrap``), used whenever it is installed and works: new user, pid, network,
  IPC, UTS and cgroup namespaces (``--unshare-all``), killed with its parent
  (``--die-with-parent``), a new session (no terminal to inject input into). Its file system is
  the system's libraries and Python, read-only, a fresh ``/proc`` and ``/dev``, an empty tmpfs
  over the home directory and ``/tmp``; the scratch directory is the only writable place. It
  cannot see the parent's files, environment or processes.
* **the guard** otherwise (Linux, not as root: root ignores ``RLIMIT_NPROC`` and file modes):
  ``sys.executable -I -B`` in a new network namespace where the machine allows one
  (``unshare -rn``), ``RLIMIT_NPROC`` 0 (no new process or thread can start), and an audit hook
  (:mod:`repotune.evaluate.sandbox_guard`) that refuses every way of starting a process that
  Python offers (``_posixsubprocess`` and ``ctypes`` cannot even be imported), sockets, writes
  outside the scratch directory, reads outside it and Python's own library (so not the home
  directory, nor ``/proc/<parent>/environ``), and SQLite or dbm files outside it.

Neither available (no working bubblewrap, and not Linux or running as root) is an
:class:`~repotune.errors.InputError` before any model is loaded. Both ways also get: a cleared
environment (``HOME`` and ``TMPDIR`` the scratch directory), stdin closed, resource limits
(CPU seconds, address space, file size, no core dumps), and a process group killed whole with
SIGKILL at the timeout (reason ``"timeout"``).

A failure's reason names the exception type only (``"python_test exited 1: AssertionError"``),
never its message or the test's output, which generated code controls and which may hold what
it read; the type is checked to be a plain name and then redacted.
"""

import contextlib
import functools
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from repotune.curate.redact import redact
from repotune.errors import InputError

_POLL_S = 0.01
# The program the child runs before the test: a file of its own, so linters and coverage see it.
_GUARD = Path(__file__).with_name("sandbox_guard.py")
# The guard's last line names what ended the test: "<marker> <ExceptionType>[ <audit event>]".
RESULT_MARKER = "repotune-sandbox-result:"
_RESULT = re.compile(
    rf"^{re.escape(RESULT_MARKER)} (?P<type>[A-Za-z_][A-Za-z0-9_.]{{0,80}})"
    r"(?: (?P<event>[a-z_][a-z0-9_./]{0,40}))?$",
    re.MULTILINE,
)
SKIPPED_REASON = "skipped: code execution not enabled"
ENABLE_HINT = "set evaluate.behaviour.allow_code_execution: true to run python tests"

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

    ``memory_mb`` caps its address space (RLIMIT_AS; allocations beyond raise MemoryError),
    ``file_size_mb`` any file it writes, its output included (RLIMIT_FSIZE).
    ``isolation``: ``auto`` (bubblewrap when it works, else the guard, else refuse),
    ``bubblewrap`` or ``guard`` (forced: tests use these to check each way).
    ``network_namespace`` runs the guard under ``unshare -rn`` when the machine supports that;
    the audit hook blocks sockets either way.
    """

    memory_mb: int = 1024
    file_size_mb: int = 16
    network_namespace: bool = True
    isolation: Isolation = "auto"


DEFAULT_LIMITS = SandboxLimits()


def _quiet_run(command: list[str]) -> bool:
    """Whether ``command`` exits 0 (output discarded, 30 s at most)."""
    try:
        completed = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=False,
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
    """Whether bubblewrap is installed and can start Python in its sandbox here (checked once).

    It needs user namespaces, or root: some containers forbid both, and then it is unusable
    even when installed.
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None or not sys.platform.startswith("linux"):
        return False
    with tempfile.TemporaryDirectory(prefix="repotune-bwrap-probe-") as scratch:
        return _quiet_run([*_bubblewrap_prefix(bwrap, Path(scratch)), _python(), "-I", "-c", ""])


def guard_available() -> bool:
    """Whether the guard holds here: Linux (audit hook, ``/proc/self/fd``) and not root, for
    whom ``RLIMIT_NPROC`` and file permissions mean nothing."""
    return sys.platform.startswith("linux") and os.geteuid() != 0


def chosen_isolation(limits: SandboxLimits = DEFAULT_LIMITS) -> Literal["bubblewrap", "guard"]:
    """How python tests will run here; InputError (one line) when nothing can contain them."""
    if limits.isolation != "auto":
        return limits.isolation
    if bubblewrap_available():
        return "bubblewrap"
    if guard_available():
        return "guard"
    raise InputError(
        "config evaluate.behaviour.allow_code_execution",
        "is true but nothing here can isolate generated code "
        "(bubblewrap is missing or cannot start, and the fallback guard needs Linux and a "
        "user other than root)",
        "install bubblewrap (apt-get install bubblewrap), run as an ordinary user, "
        "or set it to false",
    )


def _python() -> str:
    """The interpreter itself, not a venv's symlink to it: the sandbox binds only its prefix."""
    return os.path.realpath(sys.executable)


def _bubblewrap_prefix(bwrap: str, scratch: Path) -> list[str]:
    """bwrap's arguments: the system and Python read-only, tmpfs home and /tmp, scratch writable.

    Order matters: later mounts go on top of earlier ones (Python may live in the home).
    """
    command = [bwrap, "--unshare-all", "--die-with-parent", "--new-session"]
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            command += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            command += ["--ro-bind", top, top]
    command += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    command += ["--tmpfs", "/tmp", "--tmpfs", os.path.realpath(Path.home())]
    prefixes = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
    prefixes.add(os.path.dirname(os.path.dirname(_python())))
    for prefix in sorted(prefixes):
        command += ["--ro-bind", prefix, prefix]
    guard = os.path.realpath(_GUARD)
    command += ["--ro-bind", guard, guard]
    command += ["--bind", str(scratch), str(scratch), "--proc", "/proc", "--dev", "/dev"]
    return [*command, "--chdir", str(scratch)]


def _rlimits(timeout_s: float, limits: SandboxLimits, isolation: str) -> list[tuple[int, int]]:
    """(resource, value) pairs for the child; soft and hard limits alike, so it cannot raise
    them. CPU time is a backstop two seconds past the wall-clock timeout. No new processes
    under the guard (bubblewrap must fork its sandbox, whose pid namespace dies with it)."""
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


def _ending(path: Path) -> str:
    """What ended the test, from the guard's last result line: the exception type (and the
    refused audit event), checked to be plain names and redacted; never free text."""
    with path.open("rb") as output:
        output.seek(0, os.SEEK_END)
        output.seek(max(0, output.tell() - 4096))
        text = output.read().decode("utf-8", errors="replace")
    found = list(_RESULT.finditer(text))
    if not found:
        return "no result"
    last = found[-1]
    ending = last["type"] + (f" ({last['event']} refused)" if last["event"] else "")
    return redact(ending)


def _command(scratch: Path, limits: SandboxLimits, isolation: str) -> list[str]:
    if isolation == "bubblewrap":
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise InputError("bubblewrap", "is not installed", "apt-get install bubblewrap")
        prefix = _bubblewrap_prefix(bwrap, scratch)
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
    with tempfile.TemporaryDirectory(
        prefix="repotune-behaviour-", ignore_cleanup_errors=True
    ) as holder:
        scratch = Path(os.path.realpath(holder)) / "scratch"
        scratch.mkdir()
        (scratch / "generated.py").write_text(code, encoding="utf-8")
        (scratch / "behaviour_test.py").write_text(test_source, encoding="utf-8")
        # Output goes to a file outside the scratch directory (the child only holds the file
        # descriptor), capped by RLIMIT_FSIZE: a test that prints forever cannot fill memory.
        output_path = Path(holder) / "output.txt"
        rlimits = _rlimits(timeout_s, limits, isolation)
        with output_path.open("wb") as output:
            process = subprocess.Popen(
                _command(scratch, limits, isolation),
                cwd=scratch,
                env=_child_env(scratch),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=functools.partial(_apply_rlimits, rlimits),
            )
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
            return CheckResult(False, f"python_test killed by {signal.Signals(-returncode).name}")
        return CheckResult(False, f"python_test exited {returncode}: {_ending(output_path)}")
