"""Each rule's conda env (``--use-conda``) holds every third-party package its script imports,
directly or through the ``repotune`` modules it reaches: a missing one fails only on a
machine that builds the envs, deep inside a job."""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
import yaml

from repotune.codehash import PACKAGE, CodeHasher
from tests.test_pins import CONDA_TO_PIP, normalise

ROOT = Path(__file__).resolve().parents[1]
RULE = re.compile(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)+)", re.MULTILINE)
FIELD = r"^    {}:\n\s+\"([^\"]+)\""


def rule_envs_and_scripts() -> dict[str, tuple[Path, Path]]:
    """Each rule's conda env file and script, read from rules/*.smk."""
    found = {}
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        for name, body in RULE.findall(smk.read_text()):
            conda = re.search(FIELD.format("conda"), body, re.MULTILINE)
            script = re.search(FIELD.format("script"), body, re.MULTILINE)
            assert conda and script, f"{smk.name}: rule {name} lacks conda: or script:"
            found[name] = ((smk.parent / conda[1]).resolve(), (smk.parent / script[1]).resolve())
    return found


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of the modules ``path`` imports that are neither stdlib nor ours."""
    names = set()
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {PACKAGE} - FROM_SNAKEMAKE


def env_packages(env: Path) -> set[str]:
    """The pip names of an env file's conda packages."""
    specs = yaml.safe_load(env.read_text())["dependencies"]
    conda_names = (re.split(r"[ =<>]", spec, maxsplit=1)[0] for spec in specs)
    return {normalise(CONDA_TO_PIP.get(name, name)) for name in conda_names}


RULES = rule_envs_and_scripts()
DISTRIBUTIONS = importlib.metadata.packages_distributions()
# Snakemake's script preamble puts the running snakemake on the job's sys.path in any env.
FROM_SNAKEMAKE = {"snakemake"}


def test_every_rule_is_read() -> None:
    declared = re.findall(
        r"^rule (\w+):",
        "".join(p.read_text() for p in (ROOT / "rules").glob("*.smk")),
        re.MULTILINE,
    )
    assert sorted(declared) == sorted(RULES)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_the_rule_env_holds_every_import_its_script_reaches(rule: str) -> None:
    env, script = RULES[rule]
    files = [script, *CodeHasher(ROOT).closure(script)]
    needed: dict[str, str] = {}
    for path in files:
        for name in third_party_imports(path):
            assert name in DISTRIBUTIONS, f"{path.relative_to(ROOT)}: no distribution has {name}"
            for distribution in DISTRIBUTIONS[name]:
                needed.setdefault(normalise(distribution), str(path.relative_to(ROOT)))
    missing = {name: where for name, where in needed.items() if name not in env_packages(env)}
    assert not missing, f"{env.relative_to(ROOT)} lacks (package: importing file) {missing}"
