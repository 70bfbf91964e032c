"""Per-step cost of decoding: repotune's generate against plain ``model.generate``, same batch.

Where generate's time goes once the model is cheap: a small GPT-2 (``--layers`` x ``--width``,
random weights, built with a fixed seed) so that per-step overhead (Python, the stopping
rules, synchronisation), not arithmetic, dominates. Same tokenizer (a byte-level BPE trained
here on synthetic commits, with the plain template's markers as special tokens), same
commit-message prompts, same left-padded batch, same greedy decoding and budget:

* **repotune**: ``repotune.inference.decoding.generate`` with stop strings as long as the
  template's markers (its stopping criterion decodes and searches every row every step, as in
  evaluation), made of characters the model does not write, so that every side decodes the same
  number of steps;
* **baseline**: plain ``model.generate(input_ids, attention_mask, max_new_tokens, do_sample=False)``
  with the KV cache on the same padded batch, no stopping criterion of ours;
* **manual**: a greedy loop over the model with the KV cache, ``argmax`` each step, until every
  row has written EOS or the budget is spent: the floor that transformers' generate adds its
  own overhead to.

Each side is timed over all prompts, batch by batch; a step is one forward pass of a batch, so
ms per step = seconds / (steps of every batch), the prompts' prefill included. The machine is
shared, so each side runs ``--rounds`` times, alternating, and the fastest round counts. The
baseline's tokens up to EOS must give repotune's texts, and every side the same step count.

Run: .venv/bin/python -m benchmarks.decode_step [--layers 2] [--width 128] [--batch 1,8]
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
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402

from repotune.inference.decoding import GenerationSettings, _pad_left, generate  # noqa: E402
from repotune.inference.prompts import Prompt  # noqa: E402
from repotune.modeling import build_model  # noqa: E402
from repotune.shards.render import CHANGE_TO_MESSAGE, PLAIN, render, render_prompt  # noqa: E402
from repotune.shards.tokenizer import train_bpe  # noqa: E402
from testdata.curated import synthetic_rows  # noqa: E402

Batches = list[tuple[torch.Tensor, torch.Tensor]]
# As long as the plain template's markers (11 and 8 bytes), never written by the model.
DECODE = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
STOPS = ("\u2603" * 4, "\u2604" * 3)


def setup(args: argparse.Namespace) -> tuple[torch.nn.Module, object, list[list[int]]]:
    """The model, its tokenizer and the prompts' ids (at most ``--prompt-tokens`` each)."""
    training = synthetic_rows(400, seed=1)
    tokenizer = train_bpe(
        (render(row, CHANGE_TO_MESSAGE, PLAIN) for row in training), 4096, PLAIN.markers
    )
    torch.manual_seed(0)
    special = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    arch = {"n_layer": args.layers, "n_head": max(1, args.width // 64), "n_embd": args.width}
    model = build_model(arch, len(tokenizer), 1024, special).eval()
    rows = synthetic_rows(args.prompts, seed=2, split="test")
    texts = [render_prompt(row, CHANGE_TO_MESSAGE, PLAIN) for row in rows]
    ids = [
        tokenizer(t, add_special_tokens=False)["input_ids"][-args.prompt_tokens :] for t in texts
    ]
    # Longest first, as generate orders them, so every side decodes the same batches.
    return model, tokenizer, sorted(ids, key=len, reverse=True)


def ours(model, tokenizer, prompts: list[list[int]], batch: int, new: int) -> tuple[list, int]:
    """repotune's generate: texts and the number of decoding steps it ran."""
    settings = GenerationSettings(max_new_tokens=new, batch_size=batch)
    results = generate(model, tokenizer, [Prompt(tuple(ids), STOPS) for ids in prompts], settings)
    steps = sum(
        max(g.new_tokens for g in results[start : start + batch])
        for start in range(0, len(results), batch)
    )
    return [g.text for g in results], steps


def padded(tokenizer, prompts: list[list[int]], batch: int) -> Batches:
    return [
        _pad_left(prompts[start : start + batch], tokenizer.pad_token_id)
        for start in range(0, len(prompts), batch)
    ]


def baseline(model, tokenizer, prompts: list[list[int]], batch: int, new: int) -> tuple[list, int]:
    """Plain ``model.generate`` per batch; the texts cut at EOS, as repotune cuts them."""
    eos, texts, steps = tokenizer.eos_token_id, [], 0
    for input_ids, mask in padded(tokenizer, prompts, batch):
        with torch.no_grad():
            output = model.generate(
                input_ids=input_ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
                eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
            )  # fmt: skip
        steps += output.shape[1] - input_ids.shape[1]
        for row in output[:, input_ids.shape[1] :].tolist():
            body = row[: row.index(eos)] if eos in row else row
            texts.append(
                tokenizer.decode(
                    body, skip_special_tokens=False, clean_up_tokenization_spaces=False
                )
            )
    return texts, steps


def manual(model, tokenizer, prompts: list[list[int]], batch: int, new: int) -> tuple[list, int]:
    """A greedy loop with the KV cache, until every row wrote EOS; no texts (not compared)."""
    steps = 0
    for input_ids, mask in padded(tokenizer, prompts, batch):
        with torch.no_grad():
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions)
            done = torch.zeros(len(input_ids), dtype=torch.bool)
            for step in range(1, new + 1):
                token = out.logits[:, -1].argmax(-1, keepdim=True)
                done |= token[:, 0] == tokenizer.eos_token_id
                if step == new or bool(done.all()):
                    break
                mask = torch.cat([mask, torch.ones_like(token)], dim=1)
                positions = positions[:, -1:] + 1
                out = model(
                    input_ids=token, attention_mask=mask, position_ids=positions,
                    past_key_values=out.past_key_values,
                )  # fmt: skip
        steps += step
    return [], steps


def timed(side: Callable, *args) -> tuple[list, int, float]:
    started = time.perf_counter()
    texts, steps = side(*args)
    return texts, steps, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer, prompts = setup(args)
    report: dict[str, object] = {
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "model": f"GPT-2 {args.layers} layers x {args.width}, vocab {len(tokenizer)}",
        "prompts": len(prompts),
        "max_new_tokens": args.new_tokens,
        "rounds": args.rounds,
    }
    sides = {"repotune": ours, "baseline": baseline, "manual": manual}
    for batch in (int(b) for b in args.batch.split(",")):
        best: dict[str, tuple[list, int, float]] = {}
        for side in sides.values():  # warm-up: first-call allocations
            side(model, tokenizer, prompts[:batch], batch, 4)
        for _ in range(args.rounds):
            for name, side in sides.items():
                run = timed(side, model, tokenizer, prompts, batch, args.new_tokens)
                if name not in best or run[2] < best[name][2]:
                    best[name] = run
        if best["repotune"][0] != best["baseline"][0]:
            raise AssertionError(f"batch {batch}: repotune's texts differ from model.generate's")
        if len({steps for _, steps, _ in best.values()}) != 1:
            raise AssertionError(f"batch {batch}: the sides decoded different numbers of steps")
        ms = {name: 1000 * seconds / steps for name, (_, steps, seconds) in best.items()}
        report[f"batch_{batch}"] = {
            **{f"{name}_ms_per_step": round(value, 3) for name, value in ms.items()},
            "steps": best["repotune"][1],
            "texts_equal": True,
            "ratio_repotune_to_baseline": round(ms["repotune"] / ms["baseline"], 3),
            "ratio_baseline_to_manual": round(ms["baseline"] / ms["manual"], 3),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
