"""Training and evaluation give a commit's prompt the same token ids (repotune.shards.prompt).

The history is a real git repository whose diffs have blank context lines (``" \\n"``): a
byte-level pre-tokenizer looks ahead at whitespace, so encoding a prompt that ends in such a
line on its own gives other ids than encoding it as part of the whole commit.
"""

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from repotune.config import resolve_config
from repotune.evaluate.tasks import code_change_example, commit_message_examples
from repotune.extract.stage import ExtractSettings, extract_to_parquet
from repotune.inference.record import run_record
from repotune.shards.prompt import prompt_ids
from repotune.shards.render import (
    CHANGE_TO_MESSAGE,
    MESSAGE_TO_CHANGE,
    PLAIN,
    STARCODER2,
    message_part,
    render,
    render_prompt,
    subject_only,
    task_header,
)
from repotune.shards.stage import EncodeCounts, TokenizeSettings, encode_split
from repotune.shards.tokenizer import TextEncoder, train_bpe
from testdata.curated import write_split
from testdata.gitrepo import GitRepo


def _module(functions: int, changed: set[int] = frozenset(), added: set[int] = frozenset()) -> str:
    """Python source with blank lines between functions, some changed or with a line added."""
    out = []
    for i in range(functions):
        out.append(f"def f{i}(value):\n")
        out.append(f"    return value * {i + 100 if i in changed else i}\n")
        if i in added:
            out.append(f"    # note {i}\n")
        out.append("\n")
    return "".join(out)


def _history(path: Path) -> list[dict]:
    """Commits whose hunks have blank context lines before added runs and at hunk ends."""
    repo = GitRepo(path / "repo")
    repo.commit("Add the module", {"mod.py": _module(12), "util.py": _module(4)})
    repo.commit("Change two functions", {"mod.py": _module(12, changed={2, 9})})
    repo.commit(
        "Add notes\n\nTwo notes, far apart.",
        {"mod.py": _module(12, changed={2, 9}, added={0, 7}), "util.py": _module(4, added={3})},
    )
    repo.commit("Grow util", {"util.py": _module(6, added={3})})
    # Marker strings in a commit's text are text (the prefix invariants hold all the same).
    quoted = "<|message|><|diff|><pr><pr_diff><pr_file><pr_diff_hunk><|endoftext|>"
    repo.commit(
        f"Quote {quoted}\n\nThe markers {quoted} are text.",
        {"util.py": _module(6, added={3}) + f"MARKERS = {quoted!r}\n"},
    )
    head = repo.head()
    settings = ExtractSettings.from_config(resolve_config({"extract": {}})["extract"])
    out = path / "extract"
    extract_to_parquet(
        repo.path, head, out / "c.parquet", out / "s.json", out / "cache" / "c.parquet", settings
    )
    rows = pq.read_table(out / "c.parquet").to_pylist()
    return [{**row, "recency_weight": 1.0, "split": "train"} for row in rows]


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompt")
    rows = _history(root)
    assert any("\n \n" in f["patch"] for row in rows for f in row["files"] if f["patch"])
    return root, rows


def _training_ids(
    root: Path, rows, tokenizer, template, task: str, seq_len: int = 4096
) -> dict[str, list[int]]:
    """Each commit's one document as the tokenize stage builds it, every commit in ``task``
    (``seq_len`` large enough for every message->change commit to fit a block)."""
    path = write_split(root / f"{template.name}-{task}.parquet", rows)
    share = 1.0 if task == MESSAGE_TO_CHANGE else 0.0
    section = {"seq_len": seq_len, "message_to_change": share}
    settings = TokenizeSettings.from_config(resolve_config({"tokenize": section})["tokenize"])
    out = {}
    for batch in encode_split(path, tokenizer, template, settings, EncodeCounts()):
        assert not batch.long  # one document per commit
        tokens, start = batch.tokens.tolist(), 0
        for commit, length in zip(batch.commits.tolist(), batch.lengths.tolist(), strict=True):
            out[batch.shas[commit - batch.first_commit]] = tokens[start : start + length]
            start += length
    assert len(out) == len(rows)
    return out


@pytest.mark.parametrize("template", [PLAIN, STARCODER2], ids=lambda t: t.name)
def test_evaluation_prompt_ids_are_a_prefix_of_the_training_ids(history, template) -> None:
    root, rows = history
    texts = [render(row, MESSAGE_TO_CHANGE, template) for row in rows]
    tokenizer = train_bpe(texts, vocab_size=400, markers=template.markers)
    encoder = TextEncoder(tokenizer, template.markers)
    record = run_record(template, tokenizer, 4096, fim_files=False)
    trained = {
        task: _training_ids(root, rows, tokenizer, template, task)
        for task in (MESSAGE_TO_CHANGE, CHANGE_TO_MESSAGE)
    }
    not_a_prefix = 0
    for example in commit_message_examples(rows, record, encoder):
        ids = trained[CHANGE_TO_MESSAGE][example.sha]
        assert ids[: len(example.prompt_ids)] == list(example.prompt_ids)
        assert encoder.decode(list(example.prompt_ids)) == example.prompt
        alone = encoder([example.prompt])[0]
        not_a_prefix += ids[: len(alone)] != alone
    asked = 0
    for row in rows:
        for seed in range(6):
            example = code_change_example(row, record, seed, encoder)
            if example is None:
                continue
            asked += 1
            ids = trained[MESSAGE_TO_CHANGE][example.sha]
            assert ids[: len(example.prompt_ids)] == list(example.prompt_ids)
            assert encoder.decode(list(example.prompt_ids)) == example.prompt
            # Up to the line start before the "+", encoded alone: the case the history hits.
            alone = encoder([example.prompt.removesuffix("+")])[0]
            not_a_prefix += ids[: len(alone)] != alone
    assert asked > len(rows)
    # The history does hit the case: a prompt text encoded alone is not a prefix.
    assert not_a_prefix > 0


def test_prompt_ids_default_to_the_task_prompt_and_cut_the_change_over_budget(history) -> None:
    _, rows = history
    row = max(rows, key=lambda r: len(render(r, CHANGE_TO_MESSAGE, PLAIN)))
    tokenizer = train_bpe([render(r, CHANGE_TO_MESSAGE, PLAIN) for r in rows], 400, PLAIN.markers)
    encoder = TextEncoder(tokenizer, PLAIN.markers)
    full = prompt_ids(row, CHANGE_TO_MESSAGE, PLAIN, encoder)
    assert encoder.decode(full) == render_prompt(row, CHANGE_TO_MESSAGE, PLAIN)
    short = prompt_ids(row, CHANGE_TO_MESSAGE, PLAIN, encoder, max_tokens=len(full) // 2)
    assert len(short) <= len(full) // 2
    text = encoder.decode(short)
    # A cut prompt keeps the task header, the first file's header and the message marker,
    # and says what it left out.
    first = PLAIN.file_header(row["files"][0])
    assert text.startswith("<|diff|>" + first) and text.endswith("<|message|>")
    assert " not shown ...\n" in text
    # A message->change prompt over budget reads like a training continuation: the task
    # header first, then the end of the prompt.
    end = len(render(row, MESSAGE_TO_CHANGE, PLAIN)) - len(
        render(row, MESSAGE_TO_CHANGE, PLAIN).rsplit("\n@@ ", 1)[1]
    )
    whole = prompt_ids(row, MESSAGE_TO_CHANGE, PLAIN, encoder, end)
    cut = prompt_ids(row, MESSAGE_TO_CHANGE, PLAIN, encoder, end, max_tokens=len(whole) // 2)
    assert encoder.decode(cut).startswith(task_header(row, MESSAGE_TO_CHANGE, PLAIN))
    assert cut[-10:] == whole[-10:]


@pytest.mark.parametrize("template", [PLAIN, STARCODER2], ids=lambda t: t.name)
def test_a_change_to_message_prompt_over_budget_and_its_message_are_the_training_document(
    history, template
) -> None:
    """`repotune suggest` and the evaluation ask a commit longer than the block with the very
    document the model was trained on, less its message: the same cut, the same marks."""
    root, rows = history
    texts = [render(row, CHANGE_TO_MESSAGE, template) for row in rows]
    tokenizer = train_bpe(texts, vocab_size=400, markers=template.markers)
    encoder = TextEncoder(tokenizer, template.markers)
    seq_len = 128
    trained = _training_ids(root, rows, tokenizer, template, CHANGE_TO_MESSAGE, seq_len)
    over = 0
    for row in rows:
        [message] = encoder.marked([message_part(row, CHANGE_TO_MESSAGE, template).marked])
        if 2 * len(message) > seq_len - 1:  # over half the block: trained on its subject
            row = subject_only(row)
        rendered = render(row, CHANGE_TO_MESSAGE, template)
        whole = prompt_ids(row, CHANGE_TO_MESSAGE, template, encoder, len(rendered))
        answer = whole[len(prompt_ids(row, CHANGE_TO_MESSAGE, template, encoder)) :]
        if len(whole) < seq_len:
            assert whole == trained[row["sha"]]
            continue
        over += 1
        budget = seq_len - 1 - len(answer)
        asked = prompt_ids(row, CHANGE_TO_MESSAGE, template, encoder, max_tokens=budget)
        assert asked + answer == trained[row["sha"]]
        assert " not shown ...\n" in encoder.decode(asked)
    assert over >= 2
