"""`repotune complete`'s prompts: StarCoder's fill-in-the-middle where the tokenizer has its
tokens, a plain continuation otherwise, each cut to the budget from the right side."""

from repotune.cli.complete import FIM_TOKENS, Gap, gap_at, prompt_for
from repotune.shards.render import PLAIN
from repotune.shards.tokenizer import TextEncoder, train_bpe

CODE = [f"def f{i}(x):\n    return x + {i}\n" for i in range(40)]


def test_fim_prompt_keeps_the_prefix_end_and_the_suffix_start():
    tokenizer = train_bpe(CODE, 400, FIM_TOKENS)
    encode = TextEncoder(tokenizer, FIM_TOKENS)
    start, hole, middle = tokenizer.convert_tokens_to_ids(list(FIM_TOKENS))
    gap = Gap("".join(CODE[:20]), "".join(CODE[20:]))
    prefix_ids, suffix_ids = encode([gap.prefix, gap.suffix])
    ids, stops = prompt_for(tokenizer, PLAIN.markers, gap, 10_000)
    assert ids == [start, *prefix_ids, hole, *suffix_ids, middle]
    assert "<fim_prefix>" in stops and "<|message|>" in stops
    short, _ = prompt_for(tokenizer, PLAIN.markers, gap, 43)
    room = 43 - 3
    assert len(short) == 43 and short[0] == start and short[-1] == middle
    cut = short.index(hole)
    assert short[1:cut] == prefix_ids[-(room - room // 4) :]
    assert short[cut + 1 : -1] == suffix_ids[: room // 4]


def test_plain_continuation_without_fim_tokens():
    tokenizer = train_bpe(CODE, 400, PLAIN.markers)
    gap = Gap("".join(CODE), "ignored without FIM")
    ids, stops = prompt_for(tokenizer, PLAIN.markers, gap, 16)
    assert ids == TextEncoder(tokenizer, PLAIN.markers)([gap.prefix])[0][-16:]
    assert stops == PLAIN.markers


def test_file_line_splits_before_the_line(tmp_path):
    (tmp_path / "m.py").write_text("a\nb\nc\n")
    assert gap_at("m.py:2", str(tmp_path)) == Gap("a\n", "b\nc\n")
    assert gap_at("m.py:4", str(tmp_path)) == Gap("a\nb\nc\n", "")
