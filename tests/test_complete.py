"""`repotune complete`'s prompts: the model's fill-in-the-middle format where its tokenizer has
the tokens (built by the same fim_prompt as training), a plain continuation otherwise, each
cut to the budget by whole lines."""

import pytest

from repotune.cli.complete import Gap, gap_at, prompt_for
from repotune.shards.fim import PLAIN_FIM, STARCODER2_FIM, file_header, fim_prompt
from repotune.shards.render import PLAIN
from repotune.shards.tokenizer import TextEncoder, train_bpe
from testdata.gitrepo import GitRepo

CODE = [f"def f{i}(x):\n    return x + {i}\n" for i in range(40)]


@pytest.mark.parametrize(
    ("template", "fmt"), [("plain", PLAIN_FIM), ("starcoder2", STARCODER2_FIM)]
)
def test_fim_prompt_is_the_training_prompt_cut_by_lines(template, fmt):
    tokenizer = train_bpe(CODE, 400, fmt.markers)
    encode = TextEncoder(tokenizer, fmt.markers)
    gap = Gap("".join(CODE[:20]), "".join(CODE[20:]), "pkg/m.py")
    text = fim_prompt(file_header("pkg/m.py", fmt) + gap.prefix, gap.suffix, fmt)
    ids, stops = prompt_for(tokenizer, template, PLAIN.markers, gap, 10_000)
    assert ids == encode([text])[0]
    assert fmt.prefix in stops and tokenizer.eos_token in stops
    short, _ = prompt_for(tokenizer, template, PLAIN.markers, gap, 120)
    assert len(short) <= 120
    prompt = tokenizer.decode(short)
    assert prompt.startswith(fmt.prefix + file_header("pkg/m.py", fmt))
    kept_prefix = prompt.split(fmt.suffix)[0].removeprefix(
        fmt.prefix + file_header("pkg/m.py", fmt)
    )
    kept_suffix = prompt.split(fmt.suffix)[1].removesuffix(fmt.middle)
    assert gap.prefix.endswith(kept_prefix) and kept_prefix.startswith("def f")  # whole lines
    assert gap.suffix.startswith(kept_suffix) and len(kept_suffix) < len(kept_prefix)


def test_plain_continuation_without_fim_tokens():
    tokenizer = train_bpe(CODE, 400, PLAIN.markers)
    encode = TextEncoder(tokenizer, PLAIN.markers)
    gap = Gap("".join(CODE), "ignored without FIM", "m.py")
    ids, stops = prompt_for(tokenizer, "plain", PLAIN.markers, gap, 10_000)
    assert ids == encode([gap.prefix])[0] and stops == PLAIN.markers
    short, _ = prompt_for(tokenizer, "plain", PLAIN.markers, gap, 40)
    assert len(short) <= 40 and gap.prefix.endswith(tokenizer.decode(short))
    assert tokenizer.decode(short).startswith(("def", "    return"))


def test_file_line_splits_before_the_line(tmp_path):
    repo = GitRepo(tmp_path / "repo")
    repo.commit("Add", {"pkg/m.py": "a\nb\nc\n"})
    assert gap_at("pkg/m.py:2", str(repo.path)) == Gap("a\n", "b\nc\n", "pkg/m.py")
    assert gap_at("pkg/m.py:4", str(repo.path)) == Gap("a\nb\nc\n", "", "pkg/m.py")
