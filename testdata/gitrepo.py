"""Build real git repositories for tests with real git commands (no network).

Dates, names and config are fixed so shas are reproducible and user config cannot leak in.
"""

import os
import subprocess
from pathlib import Path

BASE_TIME = 1_700_000_000


def git_env(when: int) -> dict[str, str]:
    """An environment that pins identity and dates and hides the user's git config."""
    return {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Ada Author",
        "GIT_AUTHOR_EMAIL": "Ada@Example.org",
        "GIT_COMMITTER_NAME": "Carl Committer",
        "GIT_COMMITTER_EMAIL": "carl@example.org",
        "GIT_AUTHOR_DATE": f"{when} +0200",
        "GIT_COMMITTER_DATE": f"{when} -0130",
    }


class GitRepo:
    """A repository in ``path`` with a clock that advances one hour per commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.clock = BASE_TIME
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str, stdin: bytes | None = None) -> str:
        result = subprocess.run(
            ["git", *args],
            cwd=self.path,
            env=git_env(self.clock),
            input=stdin,
            capture_output=True,
            check=True,
        )
        return result.stdout.decode("utf-8", "replace").strip()

    def write(self, name: str, content: str | bytes) -> None:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode("utf-8")
        target.write_bytes(content)

    def commit(self, message: str | bytes, files: dict[str, str | bytes] | None = None) -> str:
        """Write ``files``, stage everything and commit; returns the new sha."""
        for name, content in (files or {}).items():
            self.write(name, content)
        self.git("add", "-A")
        return self.commit_staged(message)

    def commit_staged(self, message: str | bytes, *config: str) -> str:
        """Commit what is staged, with extra ``-c key=value`` options; returns the new sha."""
        self.clock += 3600
        data = message if isinstance(message, bytes) else message.encode("utf-8")
        options = [item for pair in config for item in ("-c", pair)]
        self.git(*options, "commit", "-q", "--allow-empty", "-F", "-", stdin=data)
        return self.head()

    def commit_raw(self, message: bytes) -> str:
        """Commit the index with ``message`` stored byte for byte (``git commit`` would
        re-encode invalid UTF-8), by writing the commit object directly."""
        self.clock += 3600
        tree = self.git("write-tree")
        header = (
            f"tree {tree}\nparent {self.head()}\n"
            f"author Ada Author <Ada@Example.org> {self.clock} +0200\n"
            f"committer Carl Committer <carl@example.org> {self.clock} -0130\n\n"
        )
        sha = self.git(
            "hash-object", "-t", "commit", "-w", "--stdin", stdin=header.encode() + message
        )
        self.git("update-ref", "HEAD", sha)
        return sha

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")


def build_hard_cases(path: Path) -> GitRepo:
    """A history holding every case extraction must handle, one commit each."""
    repo = GitRepo(path)
    repo.commit(
        "Root commit\n\nAdds the first files.", {"app.py": "print('hi')\n", "README": "x\n"}
    )
    repo.commit(
        "Odd file names",
        {
            "dir with space/file name.txt": "spaces\n",
            'quote"d.txt': "quotes\n",
            "naïve-ünïcode.py": "x = 1\n",
        },
    )
    repo.commit("Binary file", {"logo.png": bytes(range(256)) * 4})
    repo.git("mv", "app.py", "main.py")
    repo.commit("Rename app to main")
    repo.write("main_copy.py", (repo.path / "main.py").read_text())
    repo.commit("Copy main", {"main.py": "print('hi')\nprint('more')\n"})
    os.chmod(repo.path / "README", 0o755)
    repo.commit("Make README executable")
    sub_sha = "1" * 40
    repo.git("update-index", "--add", "--cacheinfo", f"160000,{sub_sha},vendor/lib")
    repo.commit_staged("Add submodule pointer")
    repo.git("update-index", "--cacheinfo", f"160000,{'2' * 40},vendor/lib")
    repo.commit_staged("Bump submodule")
    repo.git("rm", "-q", "--cached", "vendor/lib")
    repo.commit_staged("Remove submodule")
    repo.write("latin.txt", "caf\u00e9\n")
    repo.git("add", "latin.txt")
    repo.commit_staged(
        "Caf\u00e9 au lait\n\nna\u00efve body".encode("iso-8859-1"),
        "i18n.commitEncoding=iso-8859-1",
    )
    repo.write("broken.txt", "b\n")
    repo.git("add", "broken.txt")
    repo.commit_raw(b"Broken \xff\xfe bytes\n\nbody \xc3\x28 end\n")
    repo.commit("Huge patch", {"big.txt": "".join(f"line {i}\n" for i in range(20000))})
    (repo.path / "link").symlink_to("main.py")
    repo.commit("Add a symlink")
    (repo.path / "link").unlink()
    repo.commit("Symlink becomes a file", {"link": "now a file\n"})
    repo.git("checkout", "-q", "-b", "side")
    repo.commit("Side work", {"side.py": "side = True\n"})
    repo.git("checkout", "-q", "main")
    repo.commit("Main work", {"main2.py": "m = 2\n"})
    repo.clock += 3600
    repo.git("merge", "-q", "--no-ff", "-m", "Merge branch side", "side")
    repo.commit("An empty commit")
    (repo.path / "README").unlink()
    repo.commit("Remove README")
    return repo
