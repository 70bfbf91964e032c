"""Which prepare-commit-msg hook is repotune's: exactly what ``install`` writes, nothing else.

A hook that only mentions repotune's marker, or repotune's own hook edited by hand, belongs to
somebody else: install refuses to replace it without --force (and then keeps it as a backup
that uninstall restores), and uninstall never removes it. No model is needed: only the files.
"""

import pytest

from repotune.cli.hook import (
    BACKUP_SUFFIX,
    HOOK_NAME,
    MARKER,
    HookSettings,
    hook_script,
    installed_settings,
    is_ours,
)
from repotune.cli.main import main
from testdata.gitrepo import GitRepo

FOREIGN = f'#!/bin/sh\n# the team\'s hook; it replaced the {MARKER} once\nexec lint-msg "$1"\n'


@pytest.fixture
def repo(tmp_path):
    return GitRepo(tmp_path / "repo")


def hook_file(repo):
    return repo.path / ".git" / "hooks" / HOOK_NAME


def install(repo, tmp_path, *options):
    return main(["hook", "install", "--repo", str(repo.path), "--results", str(tmp_path), *options])


def uninstall(repo):
    return main(["hook", "uninstall", "--repo", str(repo.path)])


def test_the_installed_hook_is_read_back_exactly(repo, tmp_path):
    assert install(repo, tmp_path, "--model", "my model", "--timeout", "7.5") == 0
    text = hook_file(repo).read_text()
    settings = installed_settings(text)
    assert settings is not None
    assert (settings.results, settings.model, settings.timeout) == (str(tmp_path), "my model", 7.5)
    assert settings.serve_idle == 1800.0  # starts a server on first use, by default
    assert hook_script(settings) == text and is_ours(hook_file(repo))
    assert install(repo, tmp_path, "--no-serve", "--idle-timeout", "60") == 0
    assert installed_settings(hook_file(repo).read_text()).serve_idle == 0.0
    assert install(repo, tmp_path, "--idle-timeout", "60") == 0
    assert installed_settings(hook_file(repo).read_text()).serve_idle == 60.0
    # A hook written before hooks could start a server is still repotune's own.
    older = HookSettings("/usr/bin/python3", "/opt/rt", "/r", 30.0, "auto")
    assert "--serve-idle" not in hook_script(older)
    assert installed_settings(hook_script(older)) == older


@pytest.mark.parametrize(
    "hook",
    [
        FOREIGN,
        f"#!/bin/sh\n{MARKER}\nexit 0\n",
        "MINE\n" + hook_script(HookSettings("/usr/bin/python3", "/opt/rt", "/r", 30.0, "auto")),
    ],
    ids=["mentions the marker", "marker only", "a line added"],
)
def test_a_hook_that_is_not_exactly_repotunes_is_kept(repo, tmp_path, capsys, hook):
    path = hook_file(repo)
    path.write_text(hook)
    assert not is_ours(path)
    assert install(repo, tmp_path) == 1
    assert "was not written by repotune" in capsys.readouterr().err
    assert path.read_text() == hook
    assert uninstall(repo) == 1 and path.read_text() == hook  # never removed either
    assert install(repo, tmp_path, "--force") == 0
    assert path.with_name(HOOK_NAME + BACKUP_SUFFIX).read_text() == hook
    assert is_ours(path)
    assert uninstall(repo) == 0 and path.read_text() == hook  # restored


def test_repotunes_own_hook_edited_by_hand_is_no_longer_its_own(repo, tmp_path):
    assert install(repo, tmp_path) == 0
    path = hook_file(repo)
    edited = path.read_text().replace("exit 0\n", './scripts/check-message "$1"\nexit 0\n')
    path.write_text(edited)
    assert not is_ours(path)
    assert install(repo, tmp_path) == 1 and path.read_text() == edited


def test_reinstalling_replaces_repotunes_hook_without_a_backup(repo, tmp_path):
    assert install(repo, tmp_path, "--timeout", "5") == 0
    assert install(repo, tmp_path / "other", "--timeout", "9") == 0  # other settings: still ours
    path = hook_file(repo)
    assert "--timeout 9.0" in path.read_text()
    assert not path.with_name(HOOK_NAME + BACKUP_SUFFIX).exists()
    assert uninstall(repo) == 0 and not path.exists()
