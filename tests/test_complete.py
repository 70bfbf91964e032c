"""`repotune complete`'s prompts (repotune.inference.infill): the run's fill-in-the-middle format
where it has one (built by the same fim_prompt as training, the path before the markers), a
plain continuation otherwise, each cut to the budget by whole lines."""

import pytest

from repotune.cli.complete import gap_at
from repotune.inference.infill import Gap, infill_prompt
from repotune.inference.record import run_record
from repotune.shards.fim import PLAIN_FIM, STARCODER2_FIM, file_header, fim_prompt
from repotune.shards.render import PLAIN, get_template
from repotune.shards.tokenizer import TextEncoder, train_bpe
from testdata.gitrepo import GitRepo

CODE = [f"def f{i}(x):\n    return x + {i}\n" for i in range(40)]


@pytest.mark.parametrize(
    ("template", "fmt"), [("plain", PLAIN_FIM), ("starcoder2", STARCODER2_FIM)]
)
def test_fim_prompt_is_the_training_prompt_cut_by_lines(template, fmt):
    tokenizer = train_bpe(CODE, 400, fmt.markers)
    record = run_record(get_template(template), tokenizer, 1024, fim_files=True)
    assert record.fim == fmt
    encode = TextEncoder(tokenizer, fmt.markers)
    gap = Gap("".join(CODE[:20]), "".join(CODE[20:]), "pkg/m.py")
    text = fim_prompt(gap.prefix, gap.suffix, fmt, path="pkg/m.py")
    whole = infill_prompt(gap, record, tokenizer, 10_000)
    assert list(whole.ids) == encode([text])[0] and not whole.truncated
    assert fmt.prefix in whole.stops and tokenizer.eos_token in whole.stops
    short = infill_prompt(gap, record, tokenizer, 120)
    assert len(short.ids) <= 120 and short.truncated
    prompt = tokenizer.decode(short.ids)
    head = file_header("pkg/m.py", fmt) + fmt.prefix
    assert prompt.startswith(head)  # the path stays, before the markers
    kept_prefix = prompt.split(fmt.suffix)[0].removeprefix(head)
    kept_suffix = prompt.split(fmt.suffix)[1].removesuffix(fmt.middle)
    assert gap.prefix.endswith(kept_prefix) and kept_prefix.startswith("def f")  # whole lines
    assert gap.suffix.startswith(kept_suffix) and len(kept_suffix) < len(kept_prefix)


def test_plain_continuation_without_fim_tokens():
    tokenizer = train_bpe(CODE, 400, PLAIN.markers)
    record = run_record(PLAIN, tokenizer, 1024, fim_files=False)
    assert record.fim is None
    encode = TextEncoder(tokenizer, PLAIN.markers)
    gap = Gap("".join(CODE), "ignored without FIM", "m.py")
    whole = infill_prompt(gap, record, tokenizer, 10_000)
    assert list(whole.ids) == encode([gap.prefix])[0]
    assert whole.stops == (*PLAIN.markers, tokenizer.eos_token)
    short = infill_prompt(gap, record, tokenizer, 40)
    assert len(short.ids) <= 40 and short.truncated
    assert gap.prefix.endswith(tokenizer.decode(short.ids))
    assert tokenizer.decode(short.ids).startswith(("def", "    return"))
    empty = infill_prompt(Gap("", "x = 1\n"), record, tokenizer, 40)
    assert empty.ids == (tokenizer.eos_token_id,)  # a new file: a document's start


def test_file_line_splits_before_the_line(tmp_path):
    repo = GitRepo(tmp_path / "repo")
    repo.commit("Add", {"pkg/m.py": "a\nb\nc\n"})
    assert gap_at("pkg/m.py:2", str(repo.path)) == Gap("a\n", "b\nc\n", "pkg/m.py")
    assert gap_at("pkg/m.py:4", str(repo.path)) == Gap("a\nb\nc\n", "", "pkg/m.py")
