"""One run at a time in a working directory, with a lock the kernel releases, held by its jobs.

Snakemake's own lock is switched off in the profiles (``nolock``): a killed Snakemake leaves it
behind and the next run refuses to start until someone unlocks by hand. This lock is an
``fcntl.flock`` on ``.snakemake/repotune.lock`` that every process of a run holds shared:

* the Snakemake process takes it exclusively first (a second run started meanwhile stops with
  one line naming the first: its pid, host and start time, which it writes into the file),
  then holds it shared for as long as it runs;
* every job's shell opens the file and holds it shared too, before its command starts
  (:func:`job_lock_prefix`, Snakemake's shell prefix); the command inherits the descriptor, so
  the job holds the lock until its last process ends.

The kernel drops each holder's share the moment that process ends, however it ends (SIGKILL,
OOM killer, a closed terminal), so there is never anything to unlock. And a job that outlives
a killed Snakemake (reparented to pid 1, still writing its outputs) keeps the lock: a new run
refuses to start until it has ended, instead of rerunning its stage over the same outputs.

The workflow takes it while Snakemake reads the Snakefile (rules/common.smk, :func:`lock_run`),
in the main process of anything but a dry run, before Snakemake looks at a single file: taken
any later (``onstart`` comes after the DAG is built), a second run started with the first could
build its DAG while the first was already replacing outputs, and fail on that half-replaced
state with a misleading Snakemake error instead of this line. Dry runs only read and go ahead.
The job prefix needs ``flock`` (util-linux); without it, or where the file is missing (a
cluster node without the working directory), a job runs without holding the lock.
"""

import contextlib
import fcntl
import os
import shlex
import socket
import time
from pathlib import Path
from typing import Any

from repotune.errors import InputError

LOCK_FILE = Path(".snakemake") / "repotune.lock"
# The descriptor a job's shell holds the lock on (inherited by its command).
JOB_DESCRIPTOR = 9

_held: dict[str, int] = {}  # lock path -> open descriptor: kept open for the process's life


def _refuse(path: Path, holder: str) -> InputError:
    return InputError(
        str(path.parent.parent),
        "another repotune run, or a job it started, is using this directory "
        f"({holder or 'just starting'})",
        "wait for it to finish or stop it and its jobs; the lock goes away by itself when they end",
    )


def hold_run_lock(path: str | Path = LOCK_FILE) -> None:
    """Take the run lock for this process's lifetime; InputError naming the holder if a run
    or one of its jobs holds it.

    Exclusive while it writes who holds it, then shared, so that the run's jobs can hold it
    too. Calling it again in the process that holds the lock does nothing.
    """
    path = Path(path).absolute()
    if str(path) in _held:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
        note = f"pid {os.getpid()} on {socket.gethostname()}, started {started}"
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, note.encode(), 0)
        # Not atomic: another run may take it exclusively in between. Then that run goes on
        # and this one stops here (never both: this one does not wait).
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 4096, 0).decode("utf-8", errors="replace").strip()
        os.close(descriptor)
        raise _refuse(path, holder) from None
    _held[str(path)] = descriptor


def release_run_lock(path: str | Path = LOCK_FILE) -> None:
    """Give the lock back early (tests; a run simply exits)."""
    descriptor = _held.pop(str(Path(path).absolute()), None)
    if descriptor is not None:
        with contextlib.suppress(OSError):
            os.close(descriptor)


def job_lock_prefix(path: str | Path = LOCK_FILE) -> str:
    """Shell code that makes the shell hold the lock shared on :data:`JOB_DESCRIPTOR`, for
    every command after it; nothing when the file or ``flock`` is missing."""
    quoted = shlex.quote(str(Path(path).absolute()))
    return (
        f"if [ -f {quoted} ] && command -v flock >/dev/null 2>&1; then "
        f"exec {JOB_DESCRIPTOR}<>{quoted} && flock -s {JOB_DESCRIPTOR}; fi; "
    )


def lock_run(main_process: bool, shell: Any, path: str | Path = LOCK_FILE) -> None:
    """What the workflow does while its Snakefile is read (not for dry runs): the main
    process takes the lock (:func:`hold_run_lock`), and every job's shell holds it too.

    ``shell`` is Snakemake's: its prefix goes before every job's command (``script:`` jobs
    run through it too). Bash keeps Snakemake's own strict prefix first. Braces are doubled:
    Snakemake formats the prefix like a command.
    """
    if main_process:
        hold_run_lock(path)
    executable = shell.get_executable() or ""
    strict = "set -euo pipefail; " if os.path.basename(executable) == "bash" else ""
    prefix = strict + job_lock_prefix(path)
    shell.prefix(prefix.replace("{", "{{").replace("}", "}}"))
