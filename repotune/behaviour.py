"""Behavioural tests: does the model still do the small things a person expects of it?

Text metrics compare a generation with one real commit; behavioural tests ask yes/no questions
that hold for any repository: is a generated commit message non-empty, is its subject free of a
trailing period, does a completed Python function actually work. An adapter that raises BLEU but
breaks these has learnt the wrong thing, and a base model that passes them and an adapter that
fails them is a regression a single number would hide.

File format (YAML, see config/behaviour_tests.yaml): a list of tests, each a mapping with

* ``name`` (required): unique, short, used in reports;
* ``prompt`` (required): the text the model continues, given to it verbatim;
* ``must_match``: Python regular expressions that must each be found in the generation
  (``re.search``: anywhere; use ``\\A``/``\\Z``, ``(?m)``, ``(?i)`` to anchor or relax);
* ``must_not_match``: regular expressions none of which may be found;
* ``python_test``: Python source run against the generated code. The generation is written to
  ``generated.py`` in a fresh scratch directory, the test source to ``behaviour_test.py`` beside
  it (``from generated import f`` works), and the test passes when that process exits 0;
* ``prepend_prompt`` (default false): write ``prompt + generation`` to ``generated.py``, for
  completions whose prompt is the start of the code (a function signature and docstring);
* ``stop``: strings at whose first occurrence the generation is cut before any check, as
  HumanEval does (``"\\ndef "``: judge the function, not whatever the model writes after it);
* ``timeout_s`` (default 10): wall-clock seconds the python_test may run.

At least one of ``must_match``, ``must_not_match`` and ``python_test`` is required. Checks run in
that order and the first failure is the result's reason.

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
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from repotune.errors import InputError

DEFAULT_TIMEOUT_S = 10.0
_KEYS = (
    "name",
    "prompt",
    "must_match",
    "must_not_match",
    "python_test",
    "prepend_prompt",
    "stop",
    "timeout_s",
)
_CHECKS = ("must_match", "must_not_match", "python_test")
_TAIL_CHARS = 300
_POLL_S = 0.01


@dataclass(frozen=True)
class BehaviourTest:
    """One entry of a behavioural test file (the module docstring describes the fields)."""

    name: str
    prompt: str
    must_match: tuple[str, ...] = ()
    must_not_match: tuple[str, ...] = ()
    python_test: str | None = None
    prepend_prompt: bool = False
    stop: tuple[str, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S


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


# --- loading ------------------------------------------------------------------------------


def load_tests(path: str | Path) -> list[BehaviourTest]:
    """Read and validate a behavioural test file; InputError names the file and the entry."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(
            str(path), f"cannot be read ({error.strerror})", "point the path at a test file"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InputError(
            str(path), f"is not valid YAML ({' '.join(str(error).split())})", "fix its syntax"
        ) from None
    if not isinstance(data, list):
        raise InputError(
            str(path),
            f"must be a YAML list of tests, not {type(data).__name__}",
            "start each test with '- name: ...' (an empty list is [])",
        )
    tests = [_parse_entry(path, index, entry) for index, entry in enumerate(data)]
    seen: set[str] = set()
    for index, test in enumerate(tests):
        if test.name in seen:
            raise InputError(
                _entry_subject(path, index, test.name),
                "repeats the name of an earlier test",
                "give every test its own name",
            )
        seen.add(test.name)
    return tests


def _entry_subject(path: Path, index: int, name: object = None) -> str:
    label = f"{path} test {index + 1}"
    return f"{label} ('{name}')" if isinstance(name, str) else label


def _parse_entry(path: Path, index: int, entry: object) -> BehaviourTest:
    if not isinstance(entry, dict):
        raise InputError(
            _entry_subject(path, index),
            f"is a {type(entry).__name__}, not a mapping",
            "write each test as 'name:', 'prompt:' and its checks",
        )
    subject = _entry_subject(path, index, entry.get("name"))

    def bad(problem: str, remedy: str) -> InputError:
        return InputError(subject, problem, remedy)

    unknown = sorted(str(key) for key in entry if key not in _KEYS)
    if unknown:
        raise bad(f"has unknown keys {unknown}", f"use only {list(_KEYS)}")
    for key in ("name", "prompt"):
        if not isinstance(entry.get(key), str):
            raise bad(f"needs '{key}' as a string", f"add a '{key}:' line")
    if not entry["name"].strip():
        raise bad("has an empty name", "give the test a name")
    if not any(entry.get(key) for key in _CHECKS):
        raise bad("has no check", f"add at least one of {list(_CHECKS)}")
    patterns = {key: _string_list(entry, key, bad) for key in ("must_match", "must_not_match")}
    for key, values in patterns.items():
        for pattern in values:
            try:
                re.compile(pattern)
            except re.error as error:
                raise bad(
                    f"'{key}' pattern {pattern!r} is not a valid regular expression ({error})",
                    "fix the pattern (YAML single quotes keep backslashes as written)",
                ) from None
    python_test = entry.get("python_test")
    if python_test is not None:
        if not isinstance(python_test, str):
            raise bad("has a 'python_test' that is not a string", "write it as a '|' block")
        try:
            compile(python_test, "behaviour_test.py", "exec")
        except SyntaxError as error:
            raise bad(
                f"has a 'python_test' that is not valid Python (line {error.lineno}: {error.msg})",
                "fix the test code",
            ) from None
    stop = _string_list(entry, "stop", bad)
    if any(not value for value in stop):
        raise bad("has an empty 'stop' string", "remove it: it would cut every generation")
    prepend_prompt = entry.get("prepend_prompt", False)
    if not isinstance(prepend_prompt, bool):
        raise bad("has a 'prepend_prompt' that is not true or false", "write true or false")
    timeout_s = entry.get("timeout_s", DEFAULT_TIMEOUT_S)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
        raise bad(f"has timeout_s {timeout_s!r}", "use a positive number of seconds")
    return BehaviourTest(
        name=entry["name"],
        prompt=entry["prompt"],
        must_match=patterns["must_match"],
        must_not_match=patterns["must_not_match"],
        python_test=python_test,
        prepend_prompt=prepend_prompt,
        stop=stop,
        timeout_s=float(timeout_s),
    )


def _string_list(entry: dict[str, Any], key: str, bad: Any) -> tuple[str, ...]:
    values = entry.get(key, [])
    if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
        raise bad(f"'{key}' must be a list of strings", f"write '{key}: [...]' or a '- ' list")
    return tuple(values)


# --- checking -----------------------------------------------------------------------------


def cut_at_stop(generation: str, stop: Iterable[str]) -> str:
    """``generation`` up to (not including) the earliest occurrence of any ``stop`` string."""
    end = len(generation)
    for marker in stop:
        found = generation.find(marker)
        if found != -1:
            end = min(end, found)
    return generation[:end]


def check(
    test: BehaviourTest, generation: str, limits: SandboxLimits = SandboxLimits()
) -> CheckResult:
    """Run ``test``'s checks on the model's ``generation`` (the text after the prompt)."""
    text = cut_at_stop(generation, test.stop)
    for pattern in test.must_match:
        if re.search(pattern, text) is None:
            return CheckResult(False, f"must_match {pattern!r} found nothing")
    for pattern in test.must_not_match:
        found = re.search(pattern, text)
        if found is not None:
            matched = found.group(0)[:80]
            return CheckResult(False, f"must_not_match {pattern!r} matched {matched!r}")
    if test.python_test is not None:
        code = test.prompt + text if test.prepend_prompt else text
        return run_python_test(code, test.python_test, test.timeout_s, limits)
    return CheckResult(True, "ok")


def pass_rate(results: Sequence[CheckResult]) -> float | None:
    """The fraction of ``results`` that passed; None (never NaN) when there are none."""
    if not results:
        return None
    return sum(result.passed for result in results) / len(results)


# --- the sandboxed child --------------------------------------------------------------------

# Runs in the child as `python -I -B -c _GUARD <scratch dir>`: installs the audit hook, then runs
# behaviour_test.py as __main__. It lives here, not in the scratch directory, so nothing the test
# writes can change it. Hooks cannot be removed once added (PEP 578).
_GUARD = r"""
import os
import runpy
import sys


def _install(root):
    realpath, join, isabs, isdir = os.path.realpath, os.path.join, os.path.isabs, os.path.isdir
    getcwd, fsdecode, fspath, getpid = os.getcwd, os.fsdecode, os.fspath, os.getpid
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    processes = {
        "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
        "os.forkpty", "pty.spawn", "os.killpg",
        "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.call_function", "ctypes.cdata",
    }
    # event -> (positions of path arguments, position of the dir_fd argument or None)
    paths = {
        "os.chmod": ((0,), 2), "os.chown": ((0,), 3), "os.link": ((0, 1), 2),
        "os.mkdir": ((0,), 2), "os.remove": ((0,), 1), "os.rename": ((0, 1), 2),
        "os.rmdir": ((0,), 1), "os.symlink": ((1,), 2), "os.truncate": ((0,), None),
        "os.utime": ((0,), 3), "os.setxattr": ((0,), None), "os.removexattr": ((0,), None),
        "os.chflags": ((0,), None), "shutil.rmtree": ((0,), 1),
    }
    def inside(path, dir_fd=None):
        if isinstance(path, int):
            return True
        path = fsdecode(fspath(path))
        if isabs(path):
            base = ""
        elif dir_fd is not None and dir_fd != -1:
            base = realpath("/proc/self/fd/%d" % dir_fd)
        else:
            base = getcwd()
        resolved = realpath(join(base, path))
        return resolved == root or resolved.startswith(root + os.sep)

    def refuse(event, args):
        raise PermissionError("behaviour test sandbox: %s%r is not allowed" % (event, args))

    # The hook calls nothing that raises audit events itself (realpath, getcwd and isdir
    # only stat and readlink), so it needs no re-entrancy guard, which threads could race.
    def hook(event, args):
        if event.startswith("socket.") and event != "socket.__new__":
            refuse(event, args)
        elif event in processes:
            refuse(event, args)
        elif event == "os.kill":
            if args[0] != getpid():
                refuse(event, args)
        elif event == "open":
            path, mode, flags = args
            if not inside(path):
                # Writing outside, or opening a directory outside as an fd that later
                # dir_fd-relative calls (whose open event omits the dir_fd) could write into.
                if flags & writing or (mode is None and isdir(path)):
                    refuse(event, args)
        elif event in paths:
            positions, dir_fd_at = paths[event]
            dir_fd = args[dir_fd_at] if dir_fd_at is not None else None
            for position in positions:
                if not inside(args[position], dir_fd):
                    refuse(event, args)

    sys.addaudithook(hook)


_root = os.path.realpath(sys.argv[1])
sys.path.insert(0, _root)
sys.argv = ["behaviour_test.py"]
_install(_root)
del _install
runpy.run_path(os.path.join(_root, "behaviour_test.py"), run_name="__main__")
"""


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
    code: str, test_source: str, timeout_s: float, limits: SandboxLimits = SandboxLimits()
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
        command = [*prefix, sys.executable, "-I", "-B", "-c", _GUARD, str(scratch)]
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
