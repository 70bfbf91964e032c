"""Running generated code for a behavioural python_test, contained.

Running generated code safely. A python_test runs generated code, so it runs in a child
process that is contained on a best-effort basis, against buggy code rather than a determined
attacker:

* ``sys.executable -I -B`` (isolated: no environment variables, no user site, no bytecode
  written), cwd the scratch directory, a minimal environment (``HOME`` and ``TMPDIR`` the
  scratch directory, no proxies), stdin closed;
* in a new user and network namespace (``unshare -rn``) when the machine allows it, so the
  child has no network interface but a down loopback;
* an audit hook (PEP 578) installed before the test runs refuses, with ``PermissionError``:
  connecting, binding, sending and name lookups on sockets; opening a file for writing,
  creating, removing, renaming, truncating or changing the mode of anything outside the
  scratch directory (symlinks resolved); starting processes; signalling other processes;
  looking up or calling C functions through ctypes;
* resource limits set before ``exec``: CPU seconds (just above the timeout), address space
  (1 GiB), size of any file written (16 MiB), no core dumps;
* its own process group, killed whole with SIGKILL at the timeout (reason ``"timeout"``).
"""

import contextlib
import functools
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_TAIL_CHARS = 300
_POLL_S = 0.01
# The program the child runs before the test: a file of its own, so linters and coverage see it.
_GUARD = Path(__file__).with_name("sandbox_guard.py")


@dataclass(frozen=True)
class CheckResult:
    """Whether a generation passed one test, and why not (``"ok"`` when it did)."""

    passed: bool
    reason: str


@dataclass(frozen=True)
class SandboxLimits:
    """Limits on a python_test's child process.

    ``memory_mb`` caps its address space (RLIMIT_AS; allocations beyond raise MemoryError),
    ``file_size_mb`` any file it writes, its output included (RLIMIT_FSIZE).
    ``network_namespace`` runs it under ``unshare -rn`` when the machine supports that; the
    audit hook blocks sockets either way.
    """

    memory_mb: int = 1024
    file_size_mb: int = 16
    network_namespace: bool = True


DEFAULT_LIMITS = SandboxLimits()


@functools.cache
def network_namespace_available() -> bool:
    """Whether ``unshare -rn`` can start Python here (checked once per process).

    Needs Linux with unprivileged user namespaces; containers and hardened kernels often
    forbid them, and then the audit hook is the only network guard.
    """
    unshare = shutil.which("unshare")
    if not sys.platform.startswith("linux") or unshare is None:
        return False
    try:
        completed = subprocess.run(
            [unshare, "-rn", sys.executable, "-I", "-c", "pass"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return completed.returncode == 0


def _rlimits(timeout_s: float, limits: SandboxLimits) -> list[tuple[int, int]]:
    """(resource, value) pairs for the child; soft and hard limits alike, so it cannot raise
    them. CPU time is a backstop two seconds past the wall-clock timeout."""
    megabyte = 1024 * 1024
    return [
        (resource.RLIMIT_CPU, math.ceil(timeout_s) + 2),
        (resource.RLIMIT_AS, limits.memory_mb * megabyte),
        (resource.RLIMIT_FSIZE, limits.file_size_mb * megabyte),
        (resource.RLIMIT_CORE, 0),
    ]


def _apply_rlimits(rlimits: list[tuple[int, int]]) -> None:
    """The preexec_fn: between fork and exec, so only plain system calls, nothing imported."""
    for kind, value in rlimits:
        resource.setrlimit(kind, (value, value))


def _child_env(scratch: Path) -> dict[str, str]:
    """Just enough for Python to start: no proxies, tokens or config of the parent leak in."""
    return {
        "HOME": str(scratch),
        "TMPDIR": str(scratch),
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }


def _exited(pid: int) -> bool:
    """Whether ``pid`` has exited, leaving it unreaped (its process group id stays reserved)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _tail(path: Path) -> str:
    """The last non-blank line of the child's output, shortened: usually the exception."""
    with path.open("rb") as output:
        output.seek(0, os.SEEK_END)
        output.seek(max(0, output.tell() - 4096))
        text = output.read().decode("utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][-_TAIL_CHARS:] if lines else "no output"


def run_python_test(
    code: str, test_source: str, timeout_s: float, limits: SandboxLimits = DEFAULT_LIMITS
) -> CheckResult:
    """Run ``test_source`` against ``code`` (as ``generated.py``) in a contained child.

    Passes when the child exits 0 within ``timeout_s`` seconds of wall-clock time. At the
    timeout, and after any exit, the child's whole process group is killed, so nothing it
    started outlives the check.
    """
    # A test may leave files it made unremovable (chmod 0 inside its directory): clean up what
    # can be, never fail the evaluation over a temporary directory.
    with tempfile.TemporaryDirectory(
        prefix="repotune-behaviour-", ignore_cleanup_errors=True
    ) as holder:
        scratch = Path(holder) / "scratch"
        scratch.mkdir()
        (scratch / "generated.py").write_text(code, encoding="utf-8")
        (scratch / "behaviour_test.py").write_text(test_source, encoding="utf-8")
        # Output goes to a file outside the scratch directory (the child only holds the file
        # descriptor), capped by RLIMIT_FSIZE: a test that prints forever cannot fill memory.
        output_path = Path(holder) / "output.txt"
        prefix: list[str] = []
        if limits.network_namespace and network_namespace_available():
            prefix = [str(shutil.which("unshare")), "-rn"]
        command = [*prefix, sys.executable, "-I", "-B", str(_GUARD), str(scratch)]
        rlimits = _rlimits(timeout_s, limits)
        with output_path.open("wb") as output:
            process = subprocess.Popen(
                command,
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
        return CheckResult(False, f"python_test exited {returncode}: {_tail(output_path)}")
