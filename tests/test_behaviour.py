"""Behavioural tests: loading and validating the YAML, regex and Python checks, the sandbox."""

import socket
import textwrap
from pathlib import Path

import pytest

from repotune.config import resolve_config
from repotune.curate.redact import Redactor, RedactSettings
from repotune.errors import InputError
from repotune.evaluate import behaviour_eval, report, sandbox
from repotune.evaluate.behaviour import (
    NOT_ENDED,
    BehaviourTest,
    CheckResult,
    check,
    check_answers,
    cut_at_stop,
    kind_of,
    load_tests,
    pass_rate,
    per_diff,
    sample_of,
)
from repotune.evaluate.behaviour_eval import (
    BEHAVIOUR,
    SINGLE_SAMPLE,
    VARIANTS,
    behaviour_by_kind,
    behaviour_results,
    behaviour_rows,
    random_baselines,
    task_results,
    task_test_entries,
)
from repotune.evaluate.random_text import DRAWS, ended_answer, random_generations
from repotune.evaluate.sandbox import (
    DEFAULT_LIMITS,
    SandboxLimits,
    bubblewrap_available,
    network_namespace_available,
)
from repotune.evaluate.significance import SIGN_TEST
from repotune.evaluate.tasks import COMMIT_MESSAGE
from repotune.inference.budget import Budget
from repotune.inference.decoding import Generation
from repotune.shards.render import PLAIN
from repotune.shards.tokenizer import TextEncoder, train_bpe

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "behaviour_tests.yaml"
NO_BWRAP = "bubblewrap is not installed or cannot start here (make system-deps installs it)"
# Every way of running a python_test: bubblewrap where it works, the guard in a network
# namespace where the machine allows one, and the guard's audit hook alone (the fallback), so
# the fallback is tested on every machine.
SANDBOXES = [
    pytest.param(
        SandboxLimits(isolation="bubblewrap"),
        id="bubblewrap",
        marks=pytest.mark.skipif(not bubblewrap_available(), reason=NO_BWRAP),
    ),
    pytest.param(SandboxLimits(isolation="guard", network_namespace=True), id="namespace"),
    pytest.param(SandboxLimits(isolation="guard", network_namespace=False), id="hook-only"),
]
GUARD = SandboxLimits(isolation="guard")


def run_check(
    test: BehaviourTest, generation: str, limits: SandboxLimits = DEFAULT_LIMITS
) -> CheckResult:
    """``check`` with code execution enabled, as ``allow_code_execution: true`` does."""
    if limits.isolation == "auto" and not bubblewrap_available():
        limits = GUARD
    return check(test, generation, limits, allow_code_execution=True)


def python_check(test_source: str, timeout_s: float = 10.0) -> BehaviourTest:
    """A test with only a python_test, which runs against the generation as generated.py."""
    return BehaviourTest(
        name="t", prompt="", python_test=textwrap.dedent(test_source), timeout_s=timeout_s
    )


# --- the shipped default set -----------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> dict[str, BehaviourTest]:
    return {test.name: test for test in load_tests(SHIPPED)}


MESSAGE_TESTS = [
    "commit-message-has-a-subject",
    "commit-subject-no-trailing-period",
    "commit-subject-at-most-72-characters",
    "commit-message-does-not-echo-the-diff",
]


def test_shipped_file_loads(shipped):
    assert 4 <= len(shipped) <= 8
    assert set(MESSAGE_TESTS) <= set(shipped)
    # The message tests check the commit-message task's answers to many held-out diffs, not
    # one fixed prompt that four tests would share (one sample).
    for name in MESSAGE_TESTS:
        assert shipped[name].task == "commit_message" and shipped[name].prompt is None
        assert sample_of(shipped[name]) == "diffs"
    assert all(sample_of(shipped[name]) == "single" for name in set(shipped) - set(MESSAGE_TESTS))


@pytest.mark.parametrize("name", MESSAGE_TESTS)
def test_shipped_message_tests_pass_a_good_message(shipped, name):
    good = "Fix typo in README installation instructions\n\nInstalation -> Installation.\n"
    assert check(shipped[name], good) == CheckResult(True, "ok")
    # The same message cut at the token limit is no message.
    assert check(shipped[name], good, ended=False) == CheckResult(False, NOT_ENDED)


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("commit-message-has-a-subject", ""),
        ("commit-message-has-a-subject", " \n ... \n"),
        ("commit-message-has-a-subject", "<|diff|>Fix typo"),
        ("commit-message-has-a-subject", "Typo\n\nfixed"),
        ("commit-subject-no-trailing-period", "Fix typo in README.\n\nBody."),
        ("commit-subject-no-trailing-period", "\n  Fix typo in README. \n"),
        ("commit-subject-at-most-72-characters", "Fix " + "very " * 14 + "long typo\n"),
        ("commit-message-does-not-echo-the-diff", "Fix typo\n\ndiff --git a/README.md b/README.md"),
        ("commit-message-does-not-echo-the-diff", "Fix typo\n@@ -3 +3 @@\n"),
    ],
)
def test_shipped_message_tests_fail_a_bad_message(shipped, name, bad):
    result = check(shipped[name], bad)
    assert not result.passed
    assert result.reason.startswith(("must_match", "must_not_match"))


def test_shipped_subject_limit_is_72_characters(shipped):
    test = shipped["commit-subject-at-most-72-characters"]
    assert check(test, "Fix " + "x" * 68 + "\n\n" + "a long body line " * 20).passed
    assert not check(test, "Fix " + "x" * 69).passed


# What a broken model writes: nothing, one word on a loop (as the untrained tiny model does),
# one token repeated, punctuation. No shipped test may pass any of them.
DEGENERATE = [
    "",
    "readme " * 60,
    "readme readme readme readme",
    "\n".join(["readme"] * 20),
    "a" * 200,
    "the the the the the",
    "." * 40,
    "Fix Fix Fix Fix",
]


def test_every_shipped_negative_check_has_a_positive_partner(shipped):
    for test in shipped.values():
        assert test.must_match or test.python_test, f"{test.name}: only must_not_match"


@pytest.mark.parametrize("name", MESSAGE_TESTS)
@pytest.mark.parametrize("garbage", DEGENERATE, ids=range(len(DEGENERATE)))
def test_a_degenerate_generation_fails_every_shipped_message_test(shipped, name, garbage):
    assert not check(shipped[name], garbage).passed


@pytest.mark.parametrize("garbage", ["", "readme " * 60, "    return\n"])
@pytest.mark.skipif(
    not (sandbox.bubblewrap_available() or sandbox.guard_available()),
    reason="no isolation to run generated code in (make system-deps installs bubblewrap)",
)
def test_a_degenerate_generation_fails_every_shipped_python_test(shipped, garbage):
    python_tests = [test for test in shipped.values() if kind_of(test) == "python"]
    assert python_tests
    for test in python_tests:
        result = check(test, garbage, allow_code_execution=True)
        assert not result.skipped, test.name  # it really ran: a skip would pass trivially
        assert not result.passed, test.name


def test_kind_of_a_test():
    assert kind_of(python_check("assert True")) == "python"
    assert kind_of(BehaviourTest(name="t", prompt="", must_match=("x",))) == "pattern"


PALINDROME_BODY = """\
    cleaned = [c.lower() for c in text if c.isalnum()]
    return cleaned == cleaned[::-1]


if __name__ == "__main__":
    print(is_palindrome("abba"))
"""


def test_shipped_python_test_passes_a_correct_completion(shipped):
    # The stop strings cut the `if __name__` block; the prompt is prepended.
    assert run_check(shipped["python-complete-is-palindrome"], PALINDROME_BODY) == CheckResult(
        True, "ok"
    )
    chunked = "    return [items[i : i + size] for i in range(0, len(items), size)]\n"
    assert run_check(shipped["python-complete-chunked"], chunked).passed


def test_shipped_python_test_fails_a_wrong_completion(shipped):
    wrong = "    return text == text[::-1]\n"  # ignores case and punctuation
    result = run_check(shipped["python-complete-is-palindrome"], wrong)
    assert not result.passed
    assert result.reason == "python_test exited with a non-zero status: AssertionError"
    result = run_check(shipped["python-complete-chunked"], "    return [items]\n")
    assert not result.passed


# --- regex checks ---------------------------------------------------------------------------


def test_regex_checks_pass_and_fail():
    test = BehaviourTest(
        name="imperative", prompt="", must_match=(r"(?i)\Afix\b",), must_not_match=(r"\.\s*\Z",)
    )
    assert check(test, "Fix the parser") == CheckResult(True, "ok")
    result = check(test, "Fixed the parser")
    assert result == CheckResult(False, "must_match '(?i)\\\\Afix\\\\b' found nothing")
    result = check(test, "fix the parser.")
    assert not result.passed
    assert result.reason == "must_not_match '\\\\.\\\\s*\\\\Z' matched '.'"


def test_cut_at_stop_uses_the_earliest_marker():
    assert cut_at_stop("a\ndef b\nclass c", ["\nclass", "\ndef"]) == "a"
    assert cut_at_stop("abc", ["x"]) == "abc"
    assert cut_at_stop("abc", []) == "abc"


def test_a_pattern_test_needs_a_generation_that_ended():
    test = BehaviourTest(name="t", prompt="", must_match=(r"\w",))
    assert check(test, "Fix it", ended=False) == CheckResult(False, NOT_ENDED)
    assert check(test, "Fix it", ended=True).passed
    # A python test judges the code it was given, cut at its stop strings.
    code = BehaviourTest(name="c", prompt="", python_test="assert True")
    assert check(code, "x = 1", ended=False).skipped


def test_task_tests_are_checked_per_diff_and_a_diff_passes_when_all_pass():
    subject = BehaviourTest(name="s", task="commit_message", must_match=(r"\A\w+ \w",))
    no_period = BehaviourTest(name="p", task="commit_message", must_not_match=(r"\.\Z",))
    answers = [("Fix typo", True), ("Fix typo.", True), ("Fix typo", False), ("x", True)]
    results = [check_answers(test, answers) for test in (subject, no_period)]
    assert [[r.passed for r in row] for row in results] == [
        [True, True, False, False],
        [True, False, False, True],
    ]
    merged = per_diff(results)
    assert [r.passed for r in merged] == [True, False, False, False]
    assert merged[1].reason.startswith("must_not_match") and merged[2].reason == NOT_ENDED
    assert per_diff([]) == []


def test_pass_rate():
    assert pass_rate([]) is None
    assert pass_rate([CheckResult(True, "ok"), CheckResult(False, "x")]) == 0.5
    assert pass_rate([CheckResult(True, "ok")] * 3) == 1.0


# --- python tests and the sandbox -------------------------------------------------------------


@pytest.mark.parametrize("limits", SANDBOXES)
def test_python_test_passes_and_fails(limits):
    test = python_check(
        """
        from generated import add
        assert add(2, 3) == 5
        """
    )
    assert run_check(test, "def add(a, b):\n    return a + b\n", limits) == CheckResult(True, "ok")
    result = run_check(test, "def add(a, b):\n    return a - b\n", limits)
    assert not result.passed
    assert result.reason == "python_test exited with a non-zero status: AssertionError"
    result = run_check(test, "def add(a, b) return a + b\n", limits)
    assert not result.passed and "SyntaxError" in result.reason


def test_python_test_may_write_inside_its_directory():
    test = python_check(
        """
        import os, pathlib, tempfile
        pathlib.Path("out.txt").write_text("x")
        os.mkdir("sub")
        with open(os.path.join(os.environ["HOME"], "home.txt"), "w") as f:
            f.write("x")
        with tempfile.NamedTemporaryFile() as f:
            f.write(b"x")
        os.remove("out.txt")
        """
    )
    assert run_check(test, "") == CheckResult(True, "ok")


@pytest.mark.parametrize("limits", SANDBOXES)
def test_a_hanging_test_is_killed_at_the_timeout(limits):
    # Finite, so an unenforced timeout shows as a pass (not a hung suite); a test that ends
    # within its timeout is not cut short (a timeout measured in the wrong unit would).
    slow = python_check("import time\ntime.sleep(20)\n", timeout_s=1)
    assert run_check(slow, "", limits) == CheckResult(False, "timeout")
    quick = python_check("import time\ntime.sleep(0.3)\n", timeout_s=5)
    assert run_check(quick, "", limits) == CheckResult(True, "ok")


@pytest.mark.parametrize("limits", SANDBOXES)
def test_network_is_blocked(limits):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        test = python_check(
            f"""
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.connect(("127.0.0.1", {port}))
            s.sendall(b"leak")
            """
        )
        result = run_check(test, "", limits)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    assert not result.passed
    assert "PermissionError" in result.reason and "socket.connect" in result.reason


def test_name_lookups_are_blocked():
    test = python_check(
        """
        import socket
        socket.create_connection(("localhost", 9), timeout=1)
        """
    )
    result = run_check(test, "")
    assert not result.passed and "socket.getaddrinfo" in result.reason


ESCAPES = {
    "open": "open(TARGET, 'w').write('x')",
    "append": "open(TARGET, 'a').write('x')",
    "pathlib": "import pathlib; pathlib.Path(TARGET).write_text('x')",
    "os.open": "import os; os.close(os.open(TARGET, os.O_CREAT | os.O_WRONLY))",
    "relative": "import os; open(os.path.relpath(TARGET), 'w').write('x')",
    "symlink": "import os; os.symlink(TARGET, 'link'); open('link', 'w').write('x')",
    "chdir": "import os; os.chdir(os.path.dirname(TARGET)); open('outside.txt', 'w')",
    "subprocess": "import subprocess; subprocess.run(['touch', TARGET])",
    "os.system": "import os; os.system('touch ' + TARGET)",
    "ctypes": "import ctypes; ctypes.CDLL(None).system(('touch ' + TARGET).encode())",
}


@pytest.mark.parametrize("limits", SANDBOXES)
@pytest.mark.parametrize("escape", sorted(ESCAPES))
def test_writing_outside_the_directory_is_blocked(tmp_path, limits, escape):
    target = tmp_path / "outside.txt"
    test = python_check(f"TARGET = {str(target)!r}\n" + ESCAPES[escape])
    result = run_check(test, "", limits)
    assert not target.exists()
    assert not result.passed
    # Under bubblewrap the outside directory does not even exist in the sandbox.
    assert "PermissionError" in result.reason or limits.isolation == "bubblewrap"


@pytest.mark.parametrize(
    "attack",
    [
        "import os; os.remove(KEEP)",
        "import os; os.rename(KEEP, 'stolen.txt')",
        "import os; os.chmod(KEEP, 0)",
        "import os; os.truncate(KEEP, 0)",
        "import shutil, os; shutil.rmtree(os.path.dirname(KEEP))",
    ],
)
def test_changing_files_outside_the_directory_is_blocked(tmp_path, attack):
    keep = tmp_path / "keep.txt"
    keep.write_text("precious")
    test = python_check(f"KEEP = {str(keep)!r}\n" + attack)
    result = run_check(test, "")
    assert keep.read_text() == "precious"
    assert not result.passed and "PermissionError" in result.reason


def test_memory_is_limited():
    test = python_check("data = bytearray(4 * 1024 ** 3)\n")
    result = run_check(test, "", SandboxLimits(memory_mb=512))
    assert result == CheckResult(False, "python_test exited with a non-zero status: MemoryError")


def test_child_sees_a_minimal_environment(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("REPOTUNE_SECRET", "s3cret")
    test = python_check(
        """
        import os, sys
        assert "HTTPS_PROXY" not in os.environ and "REPOTUNE_SECRET" not in os.environ
        assert os.environ["HOME"] == os.getcwd()
        assert sys.flags.isolated == 1
        """
    )
    assert run_check(test, "") == CheckResult(True, "ok")


@pytest.mark.parametrize(("fake", "expected"), [('exec "$@"', True), ("exit 1", False)])
def test_namespace_probe_runs_unshare_and_reads_its_status(tmp_path, monkeypatch, fake, expected):
    # A stand-in `unshare` that drops its -rn flags and runs the rest, or always fails.
    unshare = tmp_path / "unshare"
    unshare.write_text(f'#!/bin/sh\n[ "$1" = -rn ] || exit 3\nshift\n{fake}\n')
    unshare.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    network_namespace_available.cache_clear()
    try:
        assert network_namespace_available() is expected
        unshare.unlink()
        network_namespace_available.cache_clear()
        assert network_namespace_available() is False
    finally:
        network_namespace_available.cache_clear()


# --- loading errors ----------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tests.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- name: a\n  prompt: [unclosed\n", "is not valid YAML"),
        ("name: a\nprompt: b\n", "must be a YAML list of tests, not dict"),
        ("- just a string\n", r"test 1: is a str, not a mapping"),
        ("- name: a\n  prompt: p\n  must_matches: ['x']\n", r"test 1 \('a'\): has unknown keys"),
        ("- prompt: p\n  must_match: ['x']\n", "test 1: needs 'name' as a string"),
        ("- name: a\n  must_match: ['x']\n", r"needs 'prompt' as a string"),
        ("- name: a\n  task: readme\n  must_match: ['x']\n", "has task 'readme'"),
        ("- name: a\n  task: commit_message\n  prompt: p\n  must_match: ['x']\n", "both"),
        ("- name: a\n  task: commit_message\n  python_test: 'assert 1'\n", "with code"),
        ("- name: a\n  prompt: p\n", "has no check"),
        ("- name: a\n  prompt: p\n  must_match: 'x'\n", "'must_match' must be a list of strings"),
        ("- name: a\n  prompt: p\n  must_not_match: ['(']\n", "not a valid regular expression"),
        ("- name: a\n  prompt: p\n  python_test: 'def'\n", "'python_test' that is not valid Py"),
        ("- name: a\n  prompt: p\n  must_match: ['x']\n  timeout_s: 0\n", "has timeout_s 0"),
        ("- name: a\n  prompt: p\n  must_match: ['x']\n  timeout_s: true\n", "has timeout_s"),
        ("- name: a\n  prompt: p\n  must_match: ['x']\n  stop: ['']\n", "empty 'stop' string"),
        ("- name: a\n  prompt: p\n  must_match: ['x']\n  prepend_prompt: 1\n", "prepend_prompt"),
        (
            "- name: a\n  prompt: p\n  must_match: ['x']\n"
            "- name: a\n  prompt: q\n  must_match: ['y']\n",
            r"test 2 \('a'\): repeats the name",
        ),
    ],
)
def test_bad_files_are_input_errors_naming_file_and_entry(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(InputError, match=message) as raised:
        load_tests(path)
    assert str(raised.value).startswith(str(path))


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot be read"):
        load_tests(tmp_path / "absent.yaml")


def test_a_valid_file_round_trips(tmp_path):
    path = write(
        tmp_path,
        """
        - name: regex
          prompt: "x"
          must_match: ['\\w']
        - name: code
          prompt: "def f():\\n"
          prepend_prompt: true
          stop: ["\\ndef"]
          timeout_s: 3
          python_test: |
            from generated import f
            assert f() == 1
        """,
    )
    regex, code = load_tests(path)
    assert regex == BehaviourTest(name="regex", prompt="x", must_match=(r"\w",))
    assert code.prompt == "def f():\n" and code.stop == ("\ndef",) and code.timeout_s == 3.0
    assert code.prepend_prompt and code.python_test == "from generated import f\nassert f() == 1\n"
    assert run_check(code, "    return 1\ndef g(): pass\n").passed
    assert load_tests(write(tmp_path, "[]\n")) == []


# --- in an evaluation: task tests, random text, report rows ----------------------------------


@pytest.fixture(scope="module")
def code_tokenizer():
    """A byte-level BPE of the tiny preset's size (4096) trained on this package's code, with
    the plain template's markers."""
    root = Path(__file__).resolve().parent.parent / "repotune"
    return train_bpe([path.read_text() for path in sorted(root.rglob("*.py"))], 4096, PLAIN.markers)


def test_an_answer_ends_as_generation_ends_one(code_tokenizer):
    eos = code_tokenizer.eos_token_id
    ids = TextEncoder(code_tokenizer, PLAIN.markers)(["Fix the parser<|diff|>more"])[0]
    stopped = ended_answer(code_tokenizer, ids, 64, PLAIN.markers)
    assert (stopped.text, stopped.finish) == ("Fix the parser", "stop")
    words = TextEncoder(code_tokenizer, PLAIN.markers)(["Fix the parser"])[0]
    assert ended_answer(code_tokenizer, [*words, eos, *words], 64, ()).finish == "eos"
    assert ended_answer(code_tokenizer, [*words, eos], 64, ()).text == "Fix the parser"
    assert ended_answer(code_tokenizer, words, len(words), ()).finish == "length"
    cut = ended_answer(code_tokenizer, words, 1, ())
    assert cut.finish == "length" and cut.new_tokens == 1
    assert ended_answer(code_tokenizer, words, 64, ()).finish == "eos"  # wrote it all, stopped
    assert ended_answer(code_tokenizer, [], 64, ()) == Generation("", 1, 0, False, "eos")
    first = random_generations(code_tokenizer, 20, 64, PLAIN.markers, seed=3)
    assert first == random_generations(code_tokenizer, 20, 64, PLAIN.markers, seed=3)
    assert first != random_generations(code_tokenizer, 20, 64, PLAIN.markers, seed=4)


def test_random_text_rarely_passes_a_shipped_message_test_because_it_rarely_ends(
    shipped, code_tokenizer, monkeypatch
):
    """Before a message had to end, uniform random tokens passed three of the four message
    tests about 80% of the time (issue 22); the report prints this rate beside each test."""
    section = resolve_config({})["evaluate"]
    budgets = {  # the default new-token budgets, prompts within a 1024-token block
        task: Budget(1023, section[key]["max_new_tokens"])
        for task, key in ((COMMIT_MESSAGE, "commit_messages"), (BEHAVIOUR, "behaviour"))
    }
    tests = list(shipped.values())
    rates = random_baselines(tests, code_tokenizer, PLAIN.markers, budgets, seed=0)
    assert set(rates) == set(MESSAGE_TESTS)  # pattern tests only
    assert all(rate <= 0.1 for rate in rates.values()), rates
    monkeypatch.setattr(behaviour_eval, "ended", lambda answers: [(a.text, True) for a in answers])
    unended = random_baselines(tests, code_tokenizer, PLAIN.markers, budgets, seed=0)
    assert sum(rate >= 0.5 for rate in unended.values()) == 3, unended


def _answered(*texts: str, finish: str = "eos") -> list[Generation]:
    return [Generation(text, 1, 1, False, finish) for text in texts]


def test_task_tests_check_the_commit_messages_and_fixed_tests_their_own_prompt():
    subject = BehaviourTest(name="subject", task="commit_message", must_match=(r"\A\w+ \w",))
    fixed = BehaviourTest(name="fixed", prompt="p", must_match=(r"ok",))
    code = BehaviourTest(name="code", prompt="def f():\n", python_test="assert True")
    tests = [subject, fixed, code]
    messages = ["Fix typo", "typo", "Add tests"] * 10
    generations = {
        "base": {COMMIT_MESSAGE: _answered(*messages[:29], "x"), BEHAVIOUR: _answered("no", "")},
        "adapted": {COMMIT_MESSAGE: _answered(*messages), BEHAVIOUR: _answered("ok", "")},
    }
    checks = behaviour_results(tests, generations)
    assert [r.passed for r in checks["adapted"]] == [True, False] and checks["base"][1].skipped
    on_diffs = task_results(tests, generations)
    assert [len(on_diffs[name]) for name in VARIANTS] == [1, 1]
    assert sum(r.passed for r in on_diffs["adapted"][0]) == 20
    entries = task_test_entries(tests, on_diffs, seed=0, test_commits=40)
    entry = entries["subject"]
    assert (entry["base"], entry["adapted"], entry["count"]) == (19 / 30, 20 / 30, 30)
    # A check of form: exploratory (another commit's message passes it), p shown, no verdict.
    assert (entry["role"], entry["verdict"], entry["test"]) == (
        report.EXPLORATORY,
        report.NOT_JUDGED,
        SIGN_TEST,
    )
    assert entry["p"] == 1.0 and entry["unit"] == "diffs"
    shas = [f"{index % 15:040x}" for index in range(30)]  # two diffs a commit: resampled together
    grouped = task_test_entries(tests, on_diffs, 0, 40, shas)["subject"]
    assert grouped["interval"]["n"] == 15 and grouped["unit"] == "commits"
    rows = behaviour_rows(
        tests, checks, Redactor(RedactSettings(True, 4.5, 20)), on_diffs, entries, {"subject": 0.25}
    )
    assert [(row["name"], row["sample"], row["random_text"]) for row in rows] == [
        ("subject", "diffs", 0.25), ("fixed", "single", None), ("code", "single", None),
    ]  # fmt: skip
    assert rows[0]["adapted"] == {
        "passed": 20, "n": 30, "rate": 20 / 30,
        "first_failure": "must_match '\\\\A\\\\w+ \\\\w' found nothing",
    }  # fmt: skip
    assert rows[0]["verdict"] == entry["verdict"] and rows[0]["random_draws"] == DRAWS
    assert rows[1]["verdict"] == SINGLE_SAMPLE and rows[1]["adapted"]["passed"] is True
    by_kind = behaviour_by_kind(tests, checks, on_diffs)
    assert by_kind == {
        "pattern": {"count": 1, "base": 0.0, "adapted": 1.0},
        "python": {"count": 1, "base": None, "adapted": None},  # skipped: ran nowhere
        "pattern on diffs": {"count": 1, "base": 19 / 30, "adapted": 20 / 30},
    }
    cut = {**generations["adapted"], COMMIT_MESSAGE: _answered(*messages, finish="length")}
    assert not any(r.passed for r in task_results(tests, {"base": cut, "adapted": cut})["base"][0])


def test_report_prints_random_text_n_and_verdict_beside_each_test():
    rows = [
        {"name": "subject", "kind": "pattern", "sample": "diffs", "random_text": 0.06,
         "base": {"passed": 19, "n": 30, "rate": 19 / 30}, "adapted": {"passed": 20, "n": 30,
         "rate": 20 / 30}, "verdict": "no clear difference"},
        {"name": "fixed", "kind": "pattern", "sample": "single", "random_text": 0.5,
         "base": {"passed": False, "reason": "must_match 'ok' found nothing"},
         "adapted": {"passed": True, "reason": "ok"}, "verdict": SINGLE_SAMPLE},
    ]  # fmt: skip
    text = "\n".join(report._behaviour_section(rows, {}))
    assert "| subject | 19 of 30 (0.633) | 20 of 30 (0.667) | 0.060 | 30 diffs | no clear" in text
    assert (
        "| fixed | fail: must_match 'ok' found nothing | pass | 0.500 | 1 prompt | single" in text
    )
