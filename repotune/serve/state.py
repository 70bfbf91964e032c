"""Where a user's servers are found: the token file and one state file per served model.

Everything lives in one directory of the user's (``$REPOTUNE_HOME``, else
``$XDG_CONFIG_HOME/repotune``, else ``~/.config/repotune``), made 0700:

* ``token``: the bearer token every request must carry, made on a server's first start, 0600,
  never rewritten. The model knows a private repository: another local user must not be able
  to ask it, so a token file another user could read (or own) is refused, as ssh refuses a
  readable key;
* ``servers/KEY.json``: a running server's address (port, pid, model), written once it
  listens and its model is loaded, removed when it stops. KEY names the results directory
  and model, so the hook and the command line find the server of the run they were given;
* ``servers/KEY.lock``: held (``flock``) by the server for its whole life, from before loading:
  a second server of the same model refuses to start, and a client tells a live server from the
  state file of one that was killed;
* ``servers/KEY.log``: what a server started in the background (by the hook) wrote.

Standard library only: the hook reads these before deciding to import anything heavy.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from repotune.errors import InputError

DEFAULT_PORT = 8231
DEFAULT_IDLE_TIMEOUT = 1800.0
"""A server stops after this many seconds without a request."""
HOME_ENV = "REPOTUNE_HOME"
TOKEN_FILE = "token"
SERVERS = "servers"


def home() -> Path:
    """The user's repotune directory (not created)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config).expanduser() / "repotune"


def private_dir(path: Path) -> Path:
    """``path`` as a directory of this user's, created 0700 when missing."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    owner = path.stat().st_uid
    if owner != os.getuid():
        raise InputError(
            f"directory '{path}'",
            f"belongs to another user (uid {owner})",
            f"set {HOME_ENV} to a directory of your own",
        )
    return path


def _check_private(path: Path) -> None:
    """Refuse a token file another user owns or can read."""
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise InputError(
            f"token file '{path}'",
            f"can be read by other users (mode {stat.filemode(info.st_mode)})",
            f"run `chmod 600 {path}` (or delete it: the next server start makes a new one)",
        )


def token_path() -> Path:
    return home() / TOKEN_FILE


def read_token() -> str | None:
    """The user's token, None before any server made one."""
    path = token_path()
    if not path.is_file():
        return None
    _check_private(path)
    return path.read_text(encoding="ascii").strip() or None


def ensure_token() -> str:
    """The user's token, made (0600, complete or not at all) when there is none yet."""
    existing = read_token()
    if existing is not None:
        return existing
    directory = private_dir(home())
    descriptor, temporary = tempfile.mkstemp(prefix=".token-", dir=directory)  # mode 0600
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # a server starting beside us made one
            os.link(temporary, token_path())
    finally:
        os.unlink(temporary)
    token = read_token()
    assert token is not None
    return token


def server_key(results: Path, model: str) -> str:
    """The name of a served model's state files: its results directory and model name."""
    return hashlib.sha256(f"{results.resolve()}\0{model}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ServerState:
    """What a running server tells its clients."""

    pid: int
    port: int
    model: str
    results: str
    source: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class ServerFiles:
    """The state, lock and log files of one served model."""

    state: Path
    lock: Path
    log: Path

    @classmethod
    def of(cls, results: Path, model: str) -> "ServerFiles":
        base = home() / SERVERS / server_key(results, model)
        return cls(base.with_suffix(".json"), base.with_suffix(".lock"), base.with_suffix(".log"))

    def make_dir(self) -> None:
        private_dir(home())
        private_dir(self.state.parent)

    def write(self, state: ServerState) -> None:
        """Publish the state (whole or not at all: a client may read it at any moment)."""
        descriptor, temporary = tempfile.mkstemp(prefix=".state-", dir=self.state.parent)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(asdict(state), handle)
        os.replace(temporary, self.state)

    def read(self) -> ServerState | None:
        """The published state, None when there is none (or it is unreadable)."""
        try:
            return ServerState(**json.loads(self.state.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.state.unlink()

    def running(self) -> bool:
        """Whether a server holds the lock: alive, loading or serving."""
        try:
            handle = open(self.lock, "a")  # noqa: SIM115 (closed below, whatever happens)
        except OSError:
            return False
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    @contextlib.contextmanager
    def hold(self) -> Iterator[IO[str]]:
        """Hold the lock for a server's life; a one-line error when another server has it."""
        self.make_dir()
        with open(self.lock, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                state = self.read()
                where = f" at {state.url} (pid {state.pid})" if state else " (still loading)"
                raise InputError(
                    "repotune serve",
                    f"a server of this model already runs{where}",
                    "use it, or stop it first",
                ) from None
            try:
                yield handle
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
