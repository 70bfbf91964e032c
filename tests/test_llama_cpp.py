"""A real client: llama.cpp (through llama-cpp-python) runs our GGUF files, and its greedy
tokens equal transformers' on the same model.

llama-cpp-python compiles llama.cpp from source when installed, which takes long on a small
machine, so it is not a dependency: `make test-export` installs it into `.llama-cpp/` and runs
this file; without it the tests skip. The model is the tiny preset's GPT-2 architecture, built
from config, with weights drawn wide enough that no two next-token logits are near a tie (an
f16 rounding must not be able to flip a greedy choice), our byte-level BPE and a LoRA adapter
with a large update, so the LoRA check would fail if llama.cpp read the adapter wrongly.
"""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from repotune.export.gguf import write_lora, write_model
from repotune.modeling import build_model
from repotune.models import architecture, resolve_model
from repotune.shards.render import CHANGE_TO_MESSAGE, PLAIN, render, render_prompt
from repotune.shards.tokenizer import TextEncoder, train_bpe
from testdata.curated import synthetic_rows

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python: run `make test-export`")
pytestmark = pytest.mark.slow
CONTEXT = 256
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    rows = synthetic_rows(200, seed=1)
    tokenizer = train_bpe((render(r, CHANGE_TO_MESSAGE, PLAIN) for r in rows), 1024, PLAIN.markers)
    torch.manual_seed(0)
    special = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    base = build_model(architecture(resolve_model("tiny")), len(tokenizer), CONTEXT, special)
    with torch.no_grad():
        for name, parameter in base.named_parameters():
            if parameter.ndim == 2:
                parameter.normal_(0, 0.3 if "wte" in name else 0.08)
    base.eval()
    write_model(base, tokenizer, folder / "base-f32.gguf", "tiny-base", "f32")
    lora = LoraConfig(
        r=8, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True
    )
    adapted = get_peft_model(base, lora)
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    adapted.save_pretrained(folder / "adapter")
    write_lora(folder / "adapter", base.config.to_dict(), folder / "lora.gguf", "tiny")
    merged = adapted.merge_and_unload().eval()
    write_model(merged, tokenizer, folder / "merged-f32.gguf", "tiny", "f32")
    write_model(merged, tokenizer, folder / "merged-f16.gguf", "tiny", "f16")
    prompts = [render_prompt(r, CHANGE_TO_MESSAGE, PLAIN) for r in synthetic_rows(3, seed=2)]
    ids = [row[-(CONTEXT - NEW_TOKENS) :] for row in TextEncoder(tokenizer, PLAIN.markers)(prompts)]
    return folder, merged, tokenizer, prompts, ids


def greedy_torch(model: torch.nn.Module, ids: list[int]) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=0,
        )
    return out[0, len(ids) :].tolist()


def greedy_llama(path, ids: list[int], lora=None) -> list[int]:
    options = {"lora_path": str(lora)} if lora else {}
    model = llama_cpp.Llama(
        model_path=str(path), n_ctx=CONTEXT, logits_all=True, verbose=False, seed=0, **options
    )  # logits_all: llama-cpp-python keeps the logits in `scores` only then
    model.reset()
    model.eval(ids)
    tokens = []
    for _ in range(NEW_TOKENS):
        token = int(model.scores[model.n_tokens - 1].argmax())
        tokens.append(token)
        model.eval([token])
    return tokens


def test_llama_cpp_tokenizes_our_prompts_as_training_did(exported):
    folder, _, _, prompts, ids = exported
    model = llama_cpp.Llama(
        model_path=str(folder / "merged-f32.gguf"), vocab_only=True, verbose=False
    )
    for prompt, expected in zip(prompts, ids, strict=True):
        tokens = model.tokenize(prompt.encode(), add_bos=False, special=True)
        assert tokens[-len(expected) :] == expected


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_merged_gguf_greedy_tokens_equal_transformers(exported, dtype):
    folder, merged, _, _, ids = exported
    reference = merged
    if dtype == "f16":  # transformers on the same f16-rounded weights (norms, biases f32)
        reference = type(merged)(merged.config).eval()
        reference.load_state_dict(
            {k: v.half().float() if v.ndim == 2 else v for k, v in merged.state_dict().items()}
        )
    for prompt_ids in ids:
        assert greedy_llama(folder / f"merged-{dtype}.gguf", prompt_ids) == greedy_torch(
            reference, prompt_ids
        )


def test_base_gguf_with_gguf_lora_equals_the_merged_model(exported):
    folder, merged, _, _, ids = exported
    expected = [greedy_torch(merged, prompt_ids) for prompt_ids in ids]
    with_lora = [greedy_llama(folder / "base-f32.gguf", p, lora=folder / "lora.gguf") for p in ids]
    assert with_lora == expected
    without = [greedy_llama(folder / "base-f32.gguf", prompt_ids) for prompt_ids in ids]
    assert without != expected  # the adapter changes the answers: llama.cpp applied it
