"""The pins in requirements.txt, requirements.lock and envs/*.yaml agree."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}
CONDA_ONLY = {"python", "git", "cuda-version"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: '{line}' is not an exact pin"
            pins[normalise(name)] = version
    return pins


def conda_pins(path: Path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"], path.name
    pins = {}
    for spec in env["dependencies"]:
        name, _, version = spec.partition("=")
        pins[normalise(CONDA_TO_PIP.get(name.strip(), name.strip()))] = version.strip()
    return pins


def test_requirements_are_exact_and_locked():
    direct, lock = pip_pins(ROOT / "requirements.txt"), pip_pins(ROOT / "requirements.lock")
    for name, version in direct.items():
        locked = lock.get(name)
        assert locked == version, f"{name}: requirements.txt {version}, lock {locked}"


def test_the_lock_holds_only_what_requirements_txt_needs():
    """`make lock` (ci/lock.py) pins requirements.txt's installed closure, not the whole venv.

    A lock written by pip freeze after `make mutation` would pin mutmut and its dependencies
    (requirements-dev.txt) too: each locked package must be one requirements.txt needs, at the
    version installed here.
    """
    printed = subprocess.run(
        [sys.executable, str(ROOT / "ci" / "lock.py"), str(ROOT / "requirements.txt")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    needed = {normalise(n): v for n, _, v in (line.partition("==") for line in printed.split())}
    lock = pip_pins(ROOT / "requirements.lock")
    assert sorted(set(lock) - set(needed)) == []
    assert {name: needed[name] for name in lock} == lock


@pytest.mark.parametrize("env", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_conda_envs_pin_the_same_versions(env):
    direct = pip_pins(ROOT / "requirements.txt")
    for name, version in conda_pins(env).items():
        assert version, f"{env.name}: {name} is not pinned"
        if name not in CONDA_ONLY:
            assert name in direct, f"{env.name}: {name} is not in requirements.txt"
            assert direct[name] == version, f"{env.name}: {name} ={version}, pip {direct[name]}"
