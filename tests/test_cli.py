"""The `repotune` command on a finished run and fixture repositories, run as a user runs it.

Each test that loads the model runs the command once as a user does, in a new interpreter, and
compares it with the same command run in this process (:func:`here`): the same code, without a
second interpreter's seconds of imports (torch, peft), and a check that the output depends on
nothing the process carries (the torch RNG the tests before used, imported state).
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from repotune.cli.diff import filtered_files, parse_diff, staged_files
from repotune.config import resolve_config
from repotune.extract.stage import ExtractSettings, read_commits
from repotune.shards.render import CHANGE_TO_MESSAGE, get_template, render_prompt
from testdata.gitrepo import GitRepo, git_env
from tests.run_fixtures import MODEL, copy_results

ROOT = Path(__file__).resolve().parents[1]
# A hook whose suggestion must arrive: generous, the test machine may be loaded. These tests
# load the model in the hook (tests/test_serve.py has the hook that starts a server).
SLOW_HOOK = ("hook", "install", "--timeout", "600", "--no-serve")
pytestmark = pytest.mark.slow


def repotune(*args: str, cwd: Path, stdin: str | None = None, env: dict | None = None):
    """``python -m repotune ARGS`` from ``cwd``, with this checkout importable."""
    environment = {**(env or git_env(1_700_000_000)), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "repotune", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
    )


def universal_newlines(text: str) -> str:
    """``text`` as a subprocess's text output reads it: ``\\r\\n`` and ``\\r`` become ``\\n``."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


@pytest.fixture
def here(capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """``repotune ARGS`` in this process (``repotune.cli.main.main``), from ``cwd`` with the
    environment ``repotune`` gives its subprocess; returns what a subprocess run returns."""
    from repotune.cli.main import main

    def command(*args: str, cwd: Path, stdin: str = "", env: dict | None = None):
        for key, value in (env or git_env(1_700_000_000)).items():
            monkeypatch.setenv(key, value)
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capfd.readouterr()
        code = main(list(args))
        out, err = (universal_newlines(text) for text in capfd.readouterr())
        return subprocess.CompletedProcess(args, code, out, err)

    return command


@pytest.fixture
def run(shared_run):
    """The session's finished run (tests/conftest.py), read as a user's results/ is read."""
    return shared_run


@pytest.fixture
def work(tmp_path, run):
    """A fresh clone of the run's repository with a change staged."""
    clone = GitRepo.__new__(GitRepo)
    clone.path, clone.clock = tmp_path / "clone", run.repo.clock
    subprocess.run(["git", "clone", "-q", str(run.repo.path), str(clone.path)], check=True)
    clone.write("pkg/m9.py", "def f0():\n    return 9\n")
    clone.git("add", "-A")
    return clone


def extracted_files(repo: GitRepo, sha: str) -> list[dict]:
    settings = ExtractSettings.from_config(resolve_config({})["extract"])
    (commit,) = read_commits(repo.path, [sha], settings)
    return [change._asdict() for change in commit.files]


def test_staged_diff_reads_as_the_extract_stage_reads_the_commit(tmp_path):
    repo = GitRepo(tmp_path / "repo")
    repo.commit(
        "Start", {"a.py": "x = 1\n" * 20, "old.py": "keep = True\n" * 30, "gone.txt": "g\n"}
    )
    repo.write("a.py", "x = 2\n" + "x = 1\n" * 19)
    repo.git("mv", "old.py", "new name.py")
    repo.git("rm", "-q", "gone.txt")
    repo.write("tool.sh", "#!/bin/sh\necho hi\n")
    repo.write("logo.png", bytes(range(256)))
    repo.git("add", "-A")
    repo.git("update-index", "--chmod=+x", "tool.sh")
    staged = staged_files(repo.path)
    piped = parse_diff(repo.git("diff", "--cached") + "\n")
    sha = repo.commit_staged("Change everything")
    extracted = extracted_files(repo, sha)
    assert staged == extracted
    assert [c["path"] for c in piped] == [c["path"] for c in extracted]
    for ours, theirs in zip(piped, extracted, strict=True):
        for field in ("path", "old_path", "change_type", "similarity", "is_binary", "patch"):
            assert ours[field] == theirs[field], (ours["path"], field)
    for name in ("plain", "starcoder2"):
        template = get_template(name)
        as_trained = render_prompt({"files": extracted}, CHANGE_TO_MESSAGE, template)
        assert render_prompt({"files": piped}, CHANGE_TO_MESSAGE, template) == as_trained
    assert "rename from old.py\nrename to new name.py" in as_trained
    assert "old mode 100644\nnew mode 100755" not in as_trained  # tool.sh is new: its mode
    assert "new file mode 100755" in as_trained


def test_curate_filters_drop_lock_files_from_the_diff(tmp_path):
    repo = GitRepo(tmp_path / "repo")
    repo.commit("Start", {"app.py": "a = 1\n"})
    repo.write("app.py", "a = 2\n")
    repo.write("package-lock.json", "{}\n")
    repo.git("add", "-A")
    kept, dropped = filtered_files(staged_files(repo.path), None)
    assert [c["path"] for c in kept] == ["app.py"] and dropped == ["package-lock.json"]


@pytest.mark.documented("repotune suggest -n 3 --seed 7")
def test_suggest_gives_evaluations_greedy_generation_on_the_training_prompt(run, work, here):
    """The same prompt, built by the inference layer as evaluation builds its questions and
    cut to the same budget, gives evaluation's greedy generation."""
    from repotune.cli.run import find_run, load
    from repotune.cli.suggest import change_commit, suggestions
    from repotune.inference.budget import budget, context_length
    from repotune.inference.decoding import Decoding, GenerationSettings, generate
    from repotune.inference.prompts import commit_message_prompt, prompt_encoder

    command = ("suggest", "--results", str(run.results), "-n", "3", "--seed", "7")
    result = repotune(*command, cwd=work.path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("--- candidate 1\n")
    again = here(*command, cwd=work.path)
    assert again.stdout == result.stdout  # seeded, whatever the process's RNG went through

    finished = find_run(run.results, None)
    loaded = load(finished, "cpu")
    commit = change_commit(staged_files(work.path), finished, "staged")
    ours = suggestions(loaded, commit, Decoding(max_new_tokens=16))
    record = loaded.record
    limits = budget(record, 16, context_length(loaded.model))
    encoder = prompt_encoder(loaded.tokenizer, record)
    prompt = commit_message_prompt(commit, record, encoder, limits.prompt_tokens)
    settings = GenerationSettings(max_new_tokens=limits.new_tokens)
    (theirs,) = generate(loaded.model, loaded.tokenizer, [prompt], settings)
    assert ours == [theirs.text.strip()]


def evaluation_rows(run) -> dict[str, dict]:
    """The first row of each task of the run's generations.jsonl: what evaluation asked and the
    adapted model answered, as the stage wrote it."""
    report = json.loads((run.results / MODEL / "eval" / "report.json").read_text())
    assert report["redactions"] == {}, "generations.jsonl holds redacted texts"
    lines = (run.results / MODEL / "eval" / "generations.jsonl").read_text().splitlines()
    rows: dict[str, dict] = {}
    for row in map(json.loads, lines):
        rows.setdefault(row["task"], row)
    return rows


def printed_as_evaluation_answered(result: subprocess.CompletedProcess, answer: str) -> None:
    """``answer`` on stdout, or, when it is empty, nothing there and one line on stderr."""
    from repotune.cli.run import EMPTY_EXIT

    if answer:
        assert result.returncode == 0, result.stderr
        assert result.stdout == universal_newlines(answer) + "\n"
    else:
        assert result.returncode == EMPTY_EXIT and result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1 and "no " in result.stderr


def test_suggest_and_complete_answer_as_the_evaluation_did(run, work):
    """The run's evaluation asked its test commit's message and a fill-in-the-middle question
    of it; `suggest` given that commit's change and `complete` given that gap print the
    adapted model's answers in generations.jsonl: one prompt builder, one budget, one
    decoder."""
    from repotune.evaluate.fim_questions import read_fim_questions

    settings = resolve_config({})["evaluate"]
    rows = evaluation_rows(run)
    message = rows["commit_message"]
    diff = run.repo.git("show", "--format=", message["sha"]) + "\n"
    suggested = repotune(
        "suggest", "--stdin", "--results", str(run.results),
        "--max-tokens", str(settings["commit_messages"]["max_new_tokens"]),
        cwd=work.path, stdin=diff,
    )  # fmt: skip
    printed_as_evaluation_answered(suggested, message["adapted"].strip())

    fim = rows["fim"]
    [gap] = [
        task
        for task in read_fim_questions(run.results / "fim" / "questions.parquet")
        if (task.sha, task.path) == (fim["sha"], fim["path"])
    ]
    # The gap in the file: the post-image with the asked lines taken out, cursor at line N.
    line = gap.prefix.count("\n") + 1
    work.write(gap.path, gap.prefix + gap.suffix)
    completed = repotune(
        "complete", f"{gap.path}:{line}", "--results", str(run.results),
        "--max-tokens", str(settings["fim"]["max_new_tokens"]), cwd=work.path,
    )  # fmt: skip
    printed_as_evaluation_answered(completed, fim["adapted"])


@pytest.mark.parametrize(
    ("command", "what"),
    [(("suggest",), "commit message"), (("complete", "pkg/m1.py:2"), "completion")],
)
def test_an_empty_answer_is_one_line_on_stderr_and_exit_3(
    run, work, here, monkeypatch, command, what
):
    """A model that answers with nothing (its first token EOS or a marker): no empty line on
    stdout with exit 0, which a script or editor would take for an answer."""
    from repotune.inference import decoding

    def nothing(model, tokenizer, prompts, settings, desc=""):
        return [decoding.Generation("", 1, len(prompt.ids), False, "eos") for prompt in prompts]

    monkeypatch.setattr(decoding, "generate", nothing)
    result = here(*command, "--results", str(run.results), cwd=work.path)
    assert result.returncode == 3 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"repotune: the model produced no {what} (its answer was empty); write it yourself, "
        "or retrain (see the run's eval/report.md)"
    ]


def test_complete_gives_evaluations_batched_fim_generations(run, here):
    """Gaps with code on both sides, asked through the evaluate stage's own functions (its
    budgets, prompts and batched generation, on base + adapter as it loads them) and through
    `complete` one at a time (on the run's merged export, no peft)."""
    from repotune.cli.run import find_run, load
    from repotune.evaluate.fim import FIM
    from repotune.evaluate.fim_tasks import FimTask
    from repotune.evaluate.stage import Questions, run_generation, task_budgets, task_prompts
    from repotune.evaluate.stage import task_settings as decoding_of
    from repotune.inference.budget import context_length
    from repotune.modeling import load_adapted

    source = (run.repo.path / "pkg" / "m4.py").read_text().splitlines(keepends=True)
    cuts = [(2, 4), (1, 2), (3, 6)]
    tasks = [
        FimTask("0" * 40, "pkg/m4.py", "python", "".join(source[:a]), "".join(source[a:b]),
                "".join(source[b:]))
        for a, b in cuts
    ]  # fmt: skip
    settings = resolve_config({"evaluate": {"generation": {"batch_size": 2}}})["evaluate"]
    finished = find_run(run.results, None)
    loaded = load(finished, "cpu")  # the merged export `complete` answers with
    with contextlib.chdir(run.workdir):
        adapted = load_adapted(finished.adapter, "cpu")  # evaluation's base + adapter
    budgets = task_budgets(settings, loaded.record, context_length(adapted), [FIM])
    asked = Questions([], [], [], test_commits=0, fim=tasks)
    prompts = task_prompts(asked, loaded.record, loaded.tokenizer, budgets)
    generations, _ = run_generation(
        adapted, loaded.tokenizer, prompts, decoding_of(settings, budgets)
    )
    for task, generation in zip(tasks, generations["adapted"][FIM], strict=True):
        text = f"{task.prefix}<|cursor|>{task.suffix}"
        max_tokens = str(settings["fim"]["max_new_tokens"])
        result = here(
            "complete", "--path", task.path, "--max-tokens", max_tokens,
            "--results", str(run.results), cwd=run.repo.path, stdin=text,
        )  # fmt: skip
        printed_as_evaluation_answered(result, generation.text)


@pytest.mark.documented(
    "git add -p && repotune suggest", "git diff HEAD~1 | repotune suggest --stdin"
)
def test_suggest_reads_a_diff_on_stdin_and_the_environment_variable(run, work, here):
    diff = work.git("diff", "--cached")
    env = {**git_env(1_700_000_000), "REPOTUNE_RESULTS": str(run.results)}
    piped = repotune("suggest", "--stdin", cwd=work.path, stdin=diff + "\n", env=env)
    staged = here("suggest", cwd=work.path, env=env)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == staged.stdout


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no run", "holds no finished run"),
        ("no results", "does not exist"),
        ("unknown model", "model 'nope': has no finished run"),
        ("not a repository", "is not inside a git work tree"),
        ("nothing staged", "has no changes"),
        ("an empty diff on stdin", "the diff on standard input: has no changes"),
        ("only a lock file", "changes only files the curate filters leave out (yarn.lock)"),
    ],
)
def test_errors_are_one_line(run, work, tmp_path, case, expected):
    results, cwd, extra, stdin = str(run.results), work.path, [], None
    if case == "no run":
        results = str(tmp_path)
    elif case == "no results":
        results = str(tmp_path / "missing")
    elif case == "unknown model":
        extra = ["--model", "nope"]
    elif case == "not a repository":
        cwd = tmp_path
    elif case == "nothing staged":
        work.git("reset", "-q")
    elif case == "an empty diff on stdin":  # `git show <merge> --format=` prints nothing
        extra, stdin = ["--stdin"], ""
    else:
        work.git("reset", "-q")
        work.write("yarn.lock", "lock\n")
        work.git("add", "yarn.lock")
    result = repotune("suggest", "--results", results, *extra, cwd=cwd, stdin=stdin)
    assert result.returncode == 1
    assert result.stderr.startswith("repotune: error: ") and expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def commit_env(editor_line: str | None = None) -> dict[str, str]:
    """git's environment for a commit; the editor appends ``editor_line`` (or changes nothing)."""
    editor = "true" if editor_line is None else f'sh -c \'echo "{editor_line}" >> "$1"\' -'
    return {**git_env(1_700_000_000), "GIT_EDITOR": editor, "PYTHONPATH": str(ROOT)}


def git_commit(repo: GitRepo, *args: str, editor_line: str | None = None):
    return subprocess.run(
        ["git", "commit", *args],
        cwd=repo.path,
        capture_output=True,
        text=True,
        env=commit_env(editor_line),
    )


def last_message(repo: GitRepo) -> str:
    return repo.git("log", "-1", "--format=%B").strip()


@pytest.mark.documented("repotune hook install", "repotune hook uninstall")
def test_hook_prefills_the_message_in_a_real_commit(run, work, here):
    expected = here("suggest", "--results", str(run.results), cwd=work.path)
    assert expected.returncode == 0, expected.stderr
    installed = repotune(*SLOW_HOOK, "--results", str(run.results), cwd=work.path)
    assert installed.returncode == 0, installed.stderr
    assert (work.path / ".git" / "hooks" / "prepare-commit-msg").exists()
    commit = git_commit(work)
    assert commit.returncode == 0, commit.stderr
    cleaned = subprocess.run(
        ["git", "stripspace", "--strip-comments"], input=expected.stdout, capture_output=True,
        text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert last_message(work) == cleaned

    work.write("pkg/m10.py", "X = 10\n")
    work.git("add", "-A")
    given = git_commit(work, "-m", "My own words")
    assert given.returncode == 0 and last_message(work) == "My own words"
    amended = git_commit(work, "--amend", "--no-edit")
    assert amended.returncode == 0 and last_message(work) == "My own words"
    removed = repotune("hook", "uninstall", cwd=work.path)
    assert removed.returncode == 0
    assert not (work.path / ".git" / "hooks" / "prepare-commit-msg").exists()


def test_a_broken_model_never_blocks_the_commit(run, work, tmp_path):
    results = copy_results(run, tmp_path / "broken")
    (results / MODEL / "adapter" / "adapter_model.safetensors").write_bytes(b"not a model")
    installed = repotune("hook", "install", "--no-serve", "--results", str(results), cwd=work.path)
    assert installed.returncode == 0
    commit = git_commit(work, editor_line="Typed by the user")
    assert commit.returncode == 0, commit.stderr
    assert last_message(work) == "Typed by the user"
    hook_lines = [line for line in commit.stderr.splitlines() if "repotune hook" in line]
    assert len(hook_lines) == 1 and "committing without a suggestion" in hook_lines[0]


def test_the_timeout_lets_the_commit_through(run, work):
    repotune(
        "hook", "install", "--no-serve", "--results", str(run.results), "--timeout", "0.01",
        cwd=work.path,
    )  # fmt: skip
    commit = git_commit(work, editor_line="Typed by the user")
    assert commit.returncode == 0 and last_message(work) == "Typed by the user"
    assert "no suggestion within 0.01 s" in commit.stderr


def test_hooks_path_is_honoured_and_foreign_hooks_are_kept(run, work):
    work.git("config", "core.hooksPath", "githooks")
    foreign = work.path / "githooks" / "prepare-commit-msg"
    foreign.parent.mkdir()
    foreign.write_text("#!/bin/sh\necho team hook\n")
    refused = repotune("hook", "install", "--results", str(run.results), cwd=work.path)
    assert refused.returncode == 1 and "was not written by repotune" in refused.stderr
    assert foreign.read_text() == "#!/bin/sh\necho team hook\n"
    forced = repotune(*SLOW_HOOK, "--force", "--results", str(run.results), cwd=work.path)
    assert forced.returncode == 0
    assert (foreign.parent / "prepare-commit-msg.repotune-backup").exists()
    commit = git_commit(work)
    assert commit.returncode == 0, commit.stderr
    assert last_message(work)  # the suggestion, from the hook under core.hooksPath
    assert repotune("hook", "uninstall", cwd=work.path).returncode == 0
    assert foreign.read_text() == "#!/bin/sh\necho team hook\n"  # restored


@pytest.mark.documented(
    "repotune complete src/app.py:42",
    "printf 'def parse(line):\\n' | repotune complete --path src/parse.py",
)
def test_complete_at_a_file_line_and_from_stdin(run, work, here):
    at_line = repotune("complete", "pkg/m1.py:3", "--results", str(run.results), cwd=work.path)
    assert at_line.returncode == 0, at_line.stderr
    lines = (work.path / "pkg/m1.py").read_text().splitlines(keepends=True)
    text = "".join(lines[:2]) + "<|cursor|>" + "".join(lines[2:])  # the same gap, same path
    piped = here(
        "complete", "--path", "pkg/m1.py", "--results", str(run.results), cwd=work.path, stdin=text
    )
    assert piped.returncode == 0 and piped.stdout == at_line.stdout
    prefix, results = "".join(lines[:2]), str(run.results)
    # No cursor: all of the text is the prefix, as with the cursor at its end.
    ended = here(
        "complete", "--path", "pkg/m1.py", "--results", results, cwd=work.path, stdin=prefix
    )
    cursor_last = here(
        "complete", "--path", "pkg/m1.py", "--results", results, cwd=work.path,
        stdin=prefix + "<|cursor|>",
    )  # fmt: skip
    assert ended.returncode in (0, 3) and (ended.returncode, ended.stdout) == (
        cursor_last.returncode,
        cursor_last.stdout,
    )
    bad = repotune("complete", "pkg/m1.py:x", "--results", str(run.results), cwd=work.path)
    assert bad.returncode == 1 and "is not FILE:LINE" in bad.stderr


@pytest.mark.documented("repotune inspect | less")
def test_inspect_prints_what_the_model_is_trained_on(run, here, tmp_path):
    """The finished run's preview, as tokenize wrote it; one line for a run without it."""
    shown = here("inspect", "--results", str(run.results), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    preview = run.results / MODEL / "shards" / "preview.md"
    assert shown.stdout == preview.read_text(encoding="utf-8")
    assert "| change→message |" in shown.stdout and "«<|diff|>»" in shown.stdout
    missing = here("inspect", "--results", str(run.results), "--model", "nope", cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "model 'nope': has no shards/preview.md" in missing.stderr


def test_help_has_an_example_for_each_subcommand(tmp_path):
    top = repotune("--help", cwd=tmp_path)
    assert top.returncode == 0
    for command in ("suggest", "hook install", "complete", "inspect"):
        assert f"repotune {command}" in top.stdout
        sub = repotune(*command.split()[:1], "--help", cwd=tmp_path)
        assert "examples:" in sub.stdout and f"repotune {command.split()[0]}" in sub.stdout


def test_console_script_is_installed_by_pip(tmp_path):
    source = tmp_path / "source"  # pip builds in the source tree: a copy, not the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "repotune", source / "repotune", ignore=shutil.ignore_patterns("__pycache__")
    )
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    result = subprocess.run(
        [str(target / "bin" / "repotune"), "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(target)},
    )
    assert result.returncode == 0, result.stderr
    assert "usage: repotune" in result.stdout


def test_merges_and_squashes_keep_git_s_message(run, work):
    repotune(*SLOW_HOOK, "--results", str(run.results), cwd=work.path)
    work.git("commit", "-q", "-m", "Add m9")
    work.git("checkout", "-q", "-b", "side", "HEAD~1")
    work.write("pkg/side.py", "S = 1\n")
    work.git("add", "-A")
    work.git("commit", "-q", "-m", "Side work")
    work.git("checkout", "-q", "-")
    merge = subprocess.run(
        ["git", "merge", "--no-ff", "--no-edit", "side"],
        cwd=work.path, capture_output=True, text=True, env=commit_env(),
    )  # fmt: skip
    assert merge.returncode == 0, merge.stderr
    assert last_message(work) == "Merge branch 'side'"
    work.git("reset", "-q", "--hard", "HEAD~1")
    work.git("merge", "-q", "--squash", "side")
    squash = git_commit(work)
    assert squash.returncode == 0, squash.stderr
    assert last_message(work).startswith("Squashed commit of the following:")
