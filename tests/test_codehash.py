"""The code hash of a stage: the repotune modules its script imports, found without importing."""

import shutil

from repotune.codehash import CodeHasher
from testdata.workflow import ROOT

FILES = {
    "scripts/stage.py": "from repotune.a.run import go\nimport repotune.util\n",
    "repotune/__init__.py": "",
    "repotune/a/__init__.py": "",
    "repotune/a/run.py": (
        "from pathlib import Path\n"
        "from . import helper\n"
        "GUARD = Path(__file__).with_name('guard.py')\n"
        "def go():\n"
        "    from ..late import x\n"
    ),
    "repotune/a/helper.py": "VALUE = 1\n",
    "repotune/a/guard.py": "print('run by path')\n",
    "repotune/late.py": "x = 1\n",
    "repotune/util.py": "",
    "repotune/unused.py": "import repotune.a.run\n",
}


def write_tree(root, files=FILES):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_closure_follows_absolute_relative_late_and_by_path_imports(tmp_path):
    root = write_tree(tmp_path)
    found = CodeHasher(root).closure("scripts/stage.py")
    assert [path.relative_to(root).as_posix() for path in found] == [
        "repotune/__init__.py",
        "repotune/a/__init__.py",
        "repotune/a/guard.py",
        "repotune/a/helper.py",
        "repotune/a/run.py",
        "repotune/late.py",
        "repotune/util.py",
    ]


def test_hash_changes_with_an_imported_module_only_and_survives_a_copy(tmp_path):
    root = write_tree(tmp_path / "one")
    before = CodeHasher(root).hash("scripts/stage.py")
    copy = tmp_path / "two"
    shutil.copytree(root, copy)
    assert CodeHasher(copy).hash("scripts/stage.py") == before
    (copy / "repotune" / "unused.py").write_text("import repotune.a.run\n# edited\n")
    assert CodeHasher(copy).hash("scripts/stage.py") == before
    for edited in ("repotune/a/helper.py", "repotune/a/guard.py", "repotune/late.py"):
        changed = write_tree(tmp_path / edited.replace("/", "_"))
        (changed / edited).write_text((changed / edited).read_text() + "# edited\n")
        assert CodeHasher(changed).hash("scripts/stage.py") != before, edited


def test_cache_by_content_is_reused_and_never_stale(tmp_path):
    root = write_tree(tmp_path / "work")
    cache = tmp_path / "cache" / "imports.json"
    first = CodeHasher(root, cache).hash("scripts/stage.py")
    assert cache.is_file()
    assert CodeHasher(root, cache).hash("scripts/stage.py") == first
    (root / "repotune" / "a" / "helper.py").write_text("from repotune import util\n")
    second = CodeHasher(root, cache)
    assert second.hash("scripts/stage.py") != first
    assert root / "repotune" / "util.py" in second.closure("repotune/a/helper.py")


def test_every_rule_has_a_script_named_after_it_and_its_stage_imports_are_found():
    """code_of(rule) in rules/common.smk reads scripts/<rule>.py."""
    hasher = CodeHasher(ROOT)
    closures = {
        rule: {path.relative_to(ROOT).as_posix() for path in hasher.closure(f"scripts/{rule}.py")}
        for rule in ("extract_commits", "curate", "tokenize", "train", "evaluate", "manifest")
    }
    assert "repotune/train/trainer.py" in closures["train"]
    assert "repotune/evaluate/sandbox_guard.py" in closures["evaluate"]
    assert not any(path.startswith("repotune/train/trainer") for path in closures["evaluate"])
    assert not any(path.startswith("repotune/evaluate/") for path in closures["train"])
    assert "repotune/manifest/verify.py" not in set().union(*closures.values())
