"""Problems with the environment or the repository stop the plan in one line saying what to do.

Each case is checked on the function the workflow calls and on a real dry run
(``snakemake -n``), whose output must hold exactly one ``repotune error:`` line and no
traceback.
"""

import os
import subprocess

import pytest
import yaml

from repotune.errors import InputError
from repotune.extract.repository import head_sha, shallow_warning
from repotune.models import require_downloaded, resolve_model
from testdata.gitrepo import GitRepo
from testdata.workflow import BIN, ROOT, data_repository, fast_config


def dry_run(workdir, config, env=None):
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = workdir / "test-config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    command = [
        str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory",
        str(workdir), "--configfile", str(configfile), "--cores", "1", "-n",
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False)


def the_error(result) -> str:
    """The run failed with exactly one repotune error line and no traceback; return it."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("repotune error:")]
    assert len(errors) == 1, output[-3000:]
    return errors[0]


# --- a repository owned by another user ------------------------------------------------------


@pytest.fixture
def foreign_repo(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("giving the repository to another user needs root (chown)")
    repo = data_repository(tmp_path / "data")
    for root, dirs, files in os.walk(repo.path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), 4321, 4321)
    os.chown(repo.path, 4321, 4321)
    # No safe.directory from the machine's own git configuration.
    empty = tmp_path / "empty.gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    return repo


def test_dubious_ownership_is_one_line_with_the_fix(foreign_repo, tmp_path):
    with pytest.raises(InputError) as raised:
        head_sha(foreign_repo.path)
    message = str(raised.value)
    assert "dubious ownership" in message and "\n" not in message
    assert f"git config --global --add safe.directory {foreign_repo.path}" in message
    error = the_error(dry_run(tmp_path / "work", fast_config(foreign_repo)))
    assert "is owned by another user" in error and "safe.directory" in error


# --- git missing from PATH ---------------------------------------------------------------------


def test_git_missing_from_path_is_one_line(tmp_path, monkeypatch):
    repo = data_repository(tmp_path / "data")
    # PATH as it is, less git: every other program stays reachable.
    no_git = tmp_path / "bin"
    no_git.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if os.path.isdir(directory):
            for name in os.listdir(directory):
                if not name.startswith("git") and not (no_git / name).exists():
                    (no_git / name).symlink_to(os.path.join(directory, name))
    monkeypatch.setenv("PATH", str(no_git))
    with pytest.raises(InputError, match=r"^git: is not on PATH .*; install git"):
        head_sha(repo.path)
    error = the_error(dry_run(tmp_path / "work", fast_config(repo), env=dict(os.environ)))
    assert error.startswith("repotune error: git: is not on PATH")


# --- a shallow clone ---------------------------------------------------------------------------


def test_a_shallow_clone_is_announced_with_what_it_holds(tmp_path):
    origin = GitRepo(tmp_path / "origin")
    for number in range(3):
        origin.commit(f"Add module number {number}", {f"m{number}.py": f"x = {number}\n"})
    assert shallow_warning(origin.path) is None
    clone = tmp_path / "clone"
    url = f"file://{origin.path}"
    subprocess.run(["git", "clone", "-q", "--depth", "1", url, str(clone)], check=True)
    warning = shallow_warning(clone)
    assert "is a shallow clone, so only 1 commit of its history" in warning
    assert "git fetch --unshallow" in warning and "\n" not in warning
    result = dry_run(tmp_path / "work", fast_config(GitRepo(clone)))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if "shallow clone" in line]
    assert lines == [f"repotune warning: {warning}"]


# --- a hub model that is not downloaded, offline -----------------------------------------------


HUB_ENTRY = {"name": "hub", "base": "repotune-tests/not-downloaded", "template": "plain"}


def test_an_offline_hub_model_missing_from_the_cache_fails_the_plan(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    spec = resolve_model(HUB_ENTRY)
    with pytest.raises(InputError) as raised:
        require_downloaded(spec)
    message = str(raised.value)
    assert message.startswith("config 'models' entry 'hub': model 'repotune-tests/not-downloaded'")
    assert "HF_HUB_OFFLINE" in message and "hf download" in message
    require_downloaded(resolve_model("tiny"))  # built from config: nothing to download

    repo = data_repository(tmp_path / "data")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    config = fast_config(repo, models=[HUB_ENTRY])
    error = the_error(dry_run(tmp_path / "work", config, env=env))
    assert "not in the local Hugging Face cache" in error
