"""One run at a time in a working directory, with a lock the kernel releases.

Snakemake's own lock is switched off in the profiles (``nolock``): a killed Snakemake leaves it
behind and the next run refuses to start until someone unlocks by hand. This lock is an
``fcntl.flock`` on ``.snakemake/repotune.lock``, held by the Snakemake process for as long as it
runs: the kernel drops it the moment that process ends, however it ends (SIGKILL, OOM killer,
a closed terminal), so there is never anything to unlock. A second run started meanwhile stops
with one line naming the first (its pid, host and start time, which the holder writes into the
file).

The workflow takes it while Snakemake reads the Snakefile (rules/common.smk), in the main process
of anything but a dry run, before Snakemake looks at a single file: taken any later (``onstart``
comes after the DAG is built), a second run started with the first could build its DAG while the
first was already replacing outputs, and fail on that half-replaced state with a misleading
Snakemake error instead of this line. Dry runs only read and go ahead; the processes Snakemake
starts for jobs (cluster or group jobs) are not main processes and run inside the first's lock.
"""

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path

from repotune.errors import InputError

LOCK_FILE = Path(".snakemake") / "repotune.lock"

_held: dict[str, int] = {}  # lock path -> open descriptor: kept open for the process's life


def hold_run_lock(path: str | Path = LOCK_FILE) -> None:
    """Take the run lock for this process's lifetime; InputError naming the holder if taken.

    Calling it again in the process that holds the lock does nothing.
    """
    path = Path(path).absolute()
    if str(path) in _held:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 4096, 0).decode("utf-8", errors="replace").strip()
        os.close(descriptor)
        raise InputError(
            str(path.parent.parent),
            f"another repotune run is using this directory ({holder or 'just starting'})",
            "wait for it to finish or stop it; its lock goes away by itself when it ends",
        ) from None
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
    note = f"pid {os.getpid()} on {socket.gethostname()}, started {started}"
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, note.encode(), 0)
    _held[str(path)] = descriptor


def release_run_lock(path: str | Path = LOCK_FILE) -> None:
    """Give the lock back early (tests; a run simply exits)."""
    descriptor = _held.pop(str(Path(path).absolute()), None)
    if descriptor is not None:
        with contextlib.suppress(OSError):
            os.close(descriptor)
