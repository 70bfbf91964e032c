"""Commit rendering: templates, prompt/target split, pieces, template choice, task mix."""

import pytest

from repotune.shards.render import (
    CHANGE_TO_MESSAGE,
    MESSAGE_TO_CHANGE,
    PLAIN,
    STARCODER,
    STARCODER2,
    TEMPLATES,
    choose_template,
    render,
    render_pieces,
    render_prompt,
    render_target,
    task_for,
)
from testdata.curated import commit_row, file_change

HUNK_1 = "@@ -1,2 +1,2 @@\n import os\n-x = 1\n+x = 2\n"
HUNK_2 = "@@ -10,2 +10,3 @@ def f():\n     pass\n+    return 1\n"


def _commit() -> dict:
    return commit_row(
        "c1",
        "Fix x",
        [
            file_change("a.py", HUNK_1 + HUNK_2),
            file_change("new.py", "@@ -0,0 +1 @@\n+y = 1\n", change_type="A"),
            file_change("logo.png", None, is_binary=True),
            file_change("b.py", "", change_type="R", old_path="old_b.py"),
        ],
        body="Because x must be 2.",
    )


def test_plain_message_to_change_is_the_documented_layout() -> None:
    expected = (
        "<|message|>Fix x\n\nBecause x must be 2.\n<|diff|>"
        "diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n"
        + HUNK_1
        + HUNK_2
        + "diff --git a/new.py b/new.py\nnew file mode 100644\n"
        "--- /dev/null\n+++ b/new.py\n@@ -0,0 +1 @@\n+y = 1\n"
        "diff --git a/logo.png b/logo.png\nBinary files a/logo.png and b/logo.png differ\n"
        "diff --git a/old_b.py b/b.py\nsimilarity index 90%\n"
        "rename from old_b.py\nrename to b.py\n"
    )
    assert render(_commit(), MESSAGE_TO_CHANGE, PLAIN) == expected


def test_change_to_message_puts_the_message_last() -> None:
    commit = _commit()
    text = render(commit, CHANGE_TO_MESSAGE, PLAIN)
    assert text.startswith("<|diff|>diff --git a/a.py b/a.py\n")
    assert text.endswith("<|message|>Fix x\n\nBecause x must be 2.\n")
    assert render_target(commit, CHANGE_TO_MESSAGE, PLAIN) == "Fix x\n\nBecause x must be 2.\n"


@pytest.mark.parametrize("template", TEMPLATES.values(), ids=TEMPLATES.keys())
@pytest.mark.parametrize("task", [MESSAGE_TO_CHANGE, CHANGE_TO_MESSAGE])
def test_prompt_target_and_pieces_compose_the_rendering(template, task) -> None:
    commit = _commit()
    full = render(commit, task, template)
    assert render_prompt(commit, task, template) + render_target(commit, task, template) == full
    assert "".join(render_pieces(commit, task, template)) == full
    assert render_prompt(commit, task, template).endswith(
        template.m2c_sep if task == MESSAGE_TO_CHANGE else template.c2m_sep
    )


def test_pieces_start_at_file_or_hunk_boundaries() -> None:
    pieces = render_pieces(_commit(), MESSAGE_TO_CHANGE, PLAIN)
    assert pieces[0].startswith("<|message|>")
    assert all(p.startswith(("diff --git ", "@@ ")) for p in pieces[1:])
    assert [p.startswith("@@ ") for p in pieces[1:]] == [False, True, False, False, False]
    sc2 = render_pieces(_commit(), CHANGE_TO_MESSAGE, STARCODER2)
    assert sc2[0] == "<pr_diff>" and sc2[-1].startswith("<pr>Fix x")
    assert all(p.startswith(("<pr_file>", "<pr_diff_hunk>@@ ")) for p in sc2[1:-1])


def test_native_templates_use_their_special_tokens() -> None:
    sc2 = render(_commit(), MESSAGE_TO_CHANGE, STARCODER2)
    assert sc2.startswith("<pr>Fix x\n\nBecause x must be 2.\n<pr_diff><pr_file>a.py\n")
    assert "<pr_diff_hunk>" + HUNK_2 in sc2 and "--- a/a.py" not in sc2
    assert "<pr_file>b.py\nsimilarity index 90%\nrename from old_b.py\n" in sc2
    sc1 = render(_commit(), CHANGE_TO_MESSAGE, STARCODER)
    assert sc1.startswith("<commit_before>diff --git") and "<commit_msg>Fix x\n" in sc1


def test_template_falls_back_to_plain_without_its_special_tokens() -> None:
    sc2_tokens = {"<|endoftext|>", "<repo_name>", "<file_sep>", *STARCODER2.markers}
    assert choose_template("starcoder2", sc2_tokens) is STARCODER2
    assert choose_template("starcoder2", sc2_tokens - {"<pr_diff_hunk>"}) is PLAIN
    assert choose_template("starcoder", sc2_tokens) is PLAIN
    assert choose_template("plain", set()) is PLAIN


def test_task_mix_follows_the_ratio_and_is_deterministic_per_sha() -> None:
    shas = [f"{i:040x}" for i in range(4000)]
    tasks = [task_for(sha, 0.3, seed=7) for sha in shas]
    share = tasks.count(MESSAGE_TO_CHANGE) / len(tasks)
    assert abs(share - 0.3) < 0.03
    assert [task_for(sha, 0.3, seed=7) for sha in reversed(shas)] == tasks[::-1]
    assert [task_for(sha, 0.3, seed=8) for sha in shas] != tasks
    assert {task_for(sha, 0.0, seed=7) for sha in shas} == {CHANGE_TO_MESSAGE}
    assert {task_for(sha, 1.0, seed=7) for sha in shas} == {MESSAGE_TO_CHANGE}


@pytest.mark.parametrize("template", TEMPLATES.values(), ids=TEMPLATES.keys())
def test_what_a_marker_announces_starts_right_after_it(template) -> None:
    """The token before a message's first token is the message marker: with a newline between
    (the plain template's layout until 2026-12-08), a small model read the newline, which in a
    diff starts a diff line, and answered every commit-message question of the default run with
    diff lines (BENCHMARKS.md, the plain template's markers). The change starts right after the
    diff marker too."""
    for opening in (template.m2c_open, template.m2c_sep, template.c2m_open, template.c2m_sep):
        assert opening.endswith(template.markers), opening
    commit = _commit()
    prompt = render_prompt(commit, CHANGE_TO_MESSAGE, template)
    message = render_target(commit, CHANGE_TO_MESSAGE, template)
    assert message.startswith(commit["subject"])
    assert prompt.endswith(template.c2m_sep) and template.c2m_sep in template.markers
    first_file = template.file_header(commit["files"][0])
    assert prompt.startswith(template.c2m_open + first_file)
    opening = render_prompt(commit, MESSAGE_TO_CHANGE, template)
    assert opening.startswith(template.m2c_open + commit["subject"])
    change = render_target(commit, MESSAGE_TO_CHANGE, template)
    assert change.startswith(first_file)
