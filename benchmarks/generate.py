"""Generation throughput on CPU: repotune's batched generate vs one model.generate per prompt.

Same model (the tiny preset's architecture, built from config with a fixed seed), same tokenizer
(a byte-level BPE trained here on synthetic commits, with the plain template's markers), same
prompts (commit-message prompts of synthetic held-out commits, as evaluation asks them), same
greedy decoding, budget and stopping rules (EOS and the template's markers). The baseline is
what a plain script does: for each prompt, ``model.generate`` on that prompt alone, with
transformers' own ``stop_strings``. Both outputs are cut the same way and must be equal.
Reported: generated tokens per second of each and their ratio. The goal is >= 3x at batch 8.
Batching speeds up decoding (one forward pass per step for 8 prompts instead of 8), not the
prefill of the prompts, which costs the same either way: the longer the prompts
(``--prompt-tokens``), the larger the prefill's share and the lower the ratio.

The machine is shared, so each side runs ``--rounds`` times, alternating, and the fastest round
of each counts.

Run: .venv/bin/python -m benchmarks.generate [--prompts 32] [--batch 8] [--new-tokens 64]
"""

import sys
from pathlib import Path

# Run as a script, benchmarks/ comes first on sys.path, and its tokenize.py would shadow the
# standard library's tokenize module: take it off.
HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from repotune.inference.decoding import GenerationSettings, generate  # noqa: E402
from repotune.inference.prompts import text_prompt  # noqa: E402
from repotune.inference.stops import find_stop  # noqa: E402
from repotune.modeling import build_model  # noqa: E402
from repotune.models import architecture, resolve_model  # noqa: E402
from repotune.shards.render import CHANGE_TO_MESSAGE, PLAIN, render, render_prompt  # noqa: E402
from repotune.shards.tokenizer import TextEncoder, train_bpe  # noqa: E402
from testdata.curated import synthetic_rows  # noqa: E402

SEQ_LEN = 1024


def setup(prompts: int) -> tuple[torch.nn.Module, object, list[str]]:
    """The tiny model, its tokenizer and the evaluation prompts."""
    training = synthetic_rows(400, seed=1)
    tokenizer = train_bpe(
        (render(row, CHANGE_TO_MESSAGE, PLAIN) for row in training), 4096, PLAIN.markers
    )
    torch.manual_seed(0)
    special = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    model = build_model(architecture(resolve_model("tiny")), len(tokenizer), SEQ_LEN, special)
    held_out = synthetic_rows(prompts, seed=2, split="test")
    texts = [render_prompt(row, CHANGE_TO_MESSAGE, PLAIN) for row in held_out]
    return model.eval(), tokenizer, texts


def ours(
    model, tokenizer, prompts: list[str], settings: GenerationSettings, prompt_tokens: int
) -> tuple[list, float]:
    started = time.perf_counter()
    encoder = TextEncoder(tokenizer, PLAIN.markers)
    asked = [text_prompt(text, encoder, PLAIN.markers, prompt_tokens) for text in prompts]
    results = generate(model, tokenizer, asked, settings)
    seconds = time.perf_counter() - started
    return [(g.text, g.new_tokens) for g in results], seconds


def baseline(
    model, tokenizer, prompts: list[str], settings: GenerationSettings, prompt_tokens: int
):
    """One ``model.generate`` per prompt; the output read the way ours is (EOS, then markers)."""
    longest = max(len(marker) for marker in PLAIN.markers)
    started = time.perf_counter()
    results = []
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"][-prompt_tokens:]
        inputs = torch.tensor([ids])
        with torch.no_grad():
            output = model.generate(
                input_ids=inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=settings.max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                stop_strings=list(PLAIN.markers),
                tokenizer=tokenizer,
            )
        new = output[0, len(ids) :].tolist()
        count = new.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in new else len(new)
        body = new[: count - 1] if count and new[count - 1] == tokenizer.eos_token_id else new
        text = tokenizer.decode(body, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        cut = find_stop(text, PLAIN.markers, prompt[-longest:])
        results.append((text if cut is None else text[:cut], count))
    return results, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model, tokenizer, prompts = setup(args.prompts)
    settings = GenerationSettings(max_new_tokens=args.new_tokens, batch_size=args.batch)
    ours(model, tokenizer, prompts[:2], settings, args.prompt_tokens)  # warm-up allocations
    mine, theirs = [], []
    for _ in range(args.rounds):
        mine.append(ours(model, tokenizer, prompts, settings, args.prompt_tokens))
        theirs.append(baseline(model, tokenizer, prompts, settings, args.prompt_tokens))
    (mine_out, mine_s), (their_out, their_s) = (
        min(mine, key=lambda r: r[1]),
        min(theirs, key=lambda r: r[1]),
    )
    if [text for text, _ in mine_out] != [text for text, _ in their_out]:
        raise AssertionError("batched generation differs from one-at-a-time generate")
    tokens = sum(count for _, count in mine_out)
    if tokens != sum(count for _, count in their_out):
        raise AssertionError("batched generation generated a different number of tokens")
    report = {
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "model": "tiny preset (4 layers, 256 wide), vocab 4096",
        "prompts": len(prompts),
        "batch": args.batch,
        "max_new_tokens": args.new_tokens,
        "max_prompt_tokens": args.prompt_tokens,
        "rounds": args.rounds,
        "generated_tokens": tokens,
        "outputs_equal": True,
        "repotune_batched": {
            "seconds": round(mine_s, 2),
            "tokens_per_s": round(tokens / mine_s, 1),
        },
        "generate_one_at_a_time": {
            "seconds": round(their_s, 2),
            "tokens_per_s": round(tokens / their_s, 1),
        },
        "speedup": round(their_s / mine_s, 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
