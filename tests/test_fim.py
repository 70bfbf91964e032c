"""Fill-in-the-middle documents: formats per family, line spans, and the token ids."""

import random

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from repotune.shards.fim import (
    FIM_FORMATS,
    PLAIN_FIM,
    PSM,
    SPM,
    STARCODER2_FIM,
    STARCODER_FIM,
    choose_fim_format,
    fim_example,
    fim_prompt,
    is_fim,
    line_spans,
    whole_file,
)
from repotune.shards.tokenizer import TextEncoder

CODE = "import os\n\n\ndef home():\n    return os.environ['HOME']\n\n\nprint(home())\n"

# The first added tokens of each family's published tokenizer (tokenizer.json "added_tokens",
# ids 0..n in this order): the FIM tokens must map to these ids, as the model was pre-trained.
FAMILY_SPECIAL_TOKENS = {
    "starcoder": [
        "<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>",
        "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>",
        "<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>",
        "<empty_output>", "<commit_before>", "<commit_msg>", "<commit_after>", "<reponame>",
    ],
    "starcoder2": [
        "<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>",
        "<repo_name>", "<file_sep>", "<issue_start>", "<issue_comment>", "<issue_closed>",
    ],
}  # fmt: skip
EXPECTED_IDS = {  # (prefix, suffix, middle, file) ids in the published vocabularies
    "starcoder": (1, 3, 2, 5),
    "starcoder2": (1, 3, 2, 6),
}


def family_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer whose special tokens sit at the family's published ids."""
    specials = FAMILY_SPECIAL_TOKENS[family]
    vocab = {token: index for index, token in enumerate(specials)}
    for byte in range(256):
        vocab[f"b{byte}"] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def test_psm_and_spm_layouts_follow_the_fim_paper():
    fmt = STARCODER_FIM
    assert fim_prompt("A", "C", fmt, PSM) == "<fim_prefix>A<fim_suffix>C<fim_middle>"
    assert fim_prompt("A", "C", fmt, SPM) == "<fim_prefix><fim_suffix>C<fim_middle>A"
    # the file's header comes first, outside the FIM markers, in both orders
    assert (
        fim_prompt("A", "C", fmt, PSM, "p.py")
        == "<filename>p.py\n<fim_prefix>A<fim_suffix>C<fim_middle>"
    )
    assert (
        fim_prompt("A", "C", fmt, SPM, "p.py")
        == "<filename>p.py\n<fim_prefix><fim_suffix>C<fim_middle>A"
    )
    with pytest.raises(ValueError, match="not one of"):
        fim_prompt("A", "C", fmt, "msp")


def test_line_spans_cut_whole_lines_and_rejoin_to_the_file():
    for seed in range(50):
        prefix, middle, suffix = line_spans(CODE, random.Random(seed))
        assert prefix + middle + suffix == CODE
        assert middle  # at least one line
        assert not prefix or prefix.endswith("\n")
        assert middle.endswith("\n")


def test_a_fim_example_is_the_file_with_its_middle_moved_to_the_end():
    header = "<|file|>src/a.py\n"
    for seed in range(20):
        example = fim_example("src/a.py", CODE, PLAIN_FIM, seed, spm_rate=0.5, key="src/a.py")
        assert example.prompt.startswith(header + "<|fim_prefix|>")
        body = example.prompt.removeprefix(header + "<|fim_prefix|>")
        if example.mode == SPM:
            assert body.startswith("<|fim_suffix|>")
            suffix, prefix = body.removeprefix("<|fim_suffix|>").split("<|fim_middle|>")
        else:
            prefix, rest = body.split("<|fim_suffix|>")
            suffix = rest.removesuffix("<|fim_middle|>")
        assert prefix + example.middle + suffix == CODE
        # what follows the middle marker is code, never a marker (the header is not in it)
        after = example.prompt.split("<|fim_middle|>")[1] + example.middle
        assert after and not any(after.startswith(m) for m in PLAIN_FIM.markers)
    modes = {fim_example("a.py", CODE, PLAIN_FIM, 0, 0.5, f"k{i}").mode for i in range(40)}
    assert modes == {PSM, SPM}  # both orders occur at spm_rate 0.5
    assert fim_example("a.py", CODE, PLAIN_FIM, 3, 0.5, "k") == fim_example(
        "a.py", CODE, PLAIN_FIM, 3, 0.5, "k"
    )


def test_fim_rate_is_the_share_of_fim_documents():
    draws = [is_fim(0, f"file{i}.py", 0.9) for i in range(2000)]
    assert 0.87 < sum(draws) / len(draws) < 0.93
    assert not any(is_fim(0, f"file{i}.py", 0.0) for i in range(100))


@pytest.mark.parametrize("family", ["starcoder", "starcoder2"])
def test_native_fim_tokens_encode_to_the_family_ids(family):
    tokenizer = family_tokenizer(family)
    specials = set(FAMILY_SPECIAL_TOKENS[family])
    fmt = choose_fim_format(family, specials)
    assert fmt is FIM_FORMATS[family]
    prefix_id, suffix_id, middle_id, file_id = EXPECTED_IDS[family]
    encoder = TextEncoder(tokenizer, fmt.markers)
    ids = encoder([fim_prompt("x = 1\n", "y = 2\n", fmt, PSM, "a.py")])[0]
    assert ids[0] == file_id and prefix_id in ids
    assert ids[-1] == middle_id
    assert suffix_id in ids
    assert whole_file("a.py", "x", fmt).startswith(fmt.file)


def test_a_tokenizer_without_the_native_tokens_gets_the_plain_format():
    assert choose_fim_format("starcoder2", {"<fim_prefix>", "<fim_suffix>"}) is PLAIN_FIM
    assert choose_fim_format("plain", set(STARCODER2_FIM.markers)) is PLAIN_FIM
