"""Training throughput on CPU: repotune's loop on packed blocks vs transformers.Trainer + peft.

Same tiny GPT-2 base (built from config, saved once), same LoRA settings, same seq_len and
batch of sequences per step. The baseline gets the same documents without packing: one
padded example per document with an attention mask, as a plain Trainer recipe would. The
fixture commits are 20 to 50 tokens, so at the default seq_len 128 packing puts 3 to 4 in a
block where the baseline pads one to 128: the usual situation, as most commits are far shorter
than a training context.
Reported: raw tokens/s (all positions, padding included: the speed of the step itself) and
useful tokens/s (real tokens only: what training actually learns from), and their ratios.

The machine is shared, so each side runs ``--rounds`` times, alternating, and the fastest round
of each counts.

Run: .venv/bin/python -m benchmarks.train [--steps 120] [--docs 600] [--rounds 2]
"""

import sys
from pathlib import Path

# Run as a script, benchmarks/ comes first on sys.path, and its tokenize.py would shadow the
# standard library's tokenize module (imported by logging, inspect, ...): take it off.
HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import datasets  # noqa: E402
import torch  # noqa: E402
from peft import get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from repotune.config import resolve_config  # noqa: E402
from repotune.train.lora import lora_config, targets_are_conv1d  # noqa: E402
from repotune.train.trainer import TrainRequest, train  # noqa: E402
from testdata.training import documents, write_inputs  # noqa: E402

ARCH = {"n_layer": 2, "n_head": 2, "n_embd": 64}
BATCH = 8


class StepTimer(TrainerCallback):
    """Seconds spent inside training steps (no setup), like repotune's own tokens/s."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds += time.perf_counter() - self.started


def ours(work: Path, steps: int, docs: int, seq_len: int) -> dict[str, float]:
    inputs = write_inputs(work / "results", seq_len=seq_len, train_docs=docs, validation_docs=8)
    settings = resolve_config(
        {"train": {"max_steps": steps, "batch_size": BATCH, "micro_batch_size": BATCH,
                   "eval_interval": 0, "max_epochs": 1000, "target_tokens": 10**12,
                   "checkpoint_interval": 0, "logging_steps": steps,
                   "lora_dropout": 0.0, "weighted_sampling": False}}
    )["train"]  # fmt: skip
    summary = train(
        TrainRequest(
            model={"preset": "tiny", "architecture": ARCH},
            shards_dir=str(inputs.shards),
            tokenizer_dir=str(inputs.tokenizer),
            adapter_dir=str(work / "adapter"),
            base_dir=str(work / "base"),
            state_dir=str(work / "train_state"),
            settings=settings,
        )
    )
    seconds = summary["train_seconds"]
    if summary["steps"] != steps:
        raise RuntimeError(f"repotune ran {summary['steps']} steps, not {steps}")
    return {
        "seconds": seconds,
        "useful_tokens_per_s": summary["tokens"] / seconds,
        "raw_tokens_per_s": summary["steps"] * BATCH * seq_len / seconds,
        "steps": summary["steps"],
        "lora": summary["settings"]["lora_r"],
        "alpha": summary["settings"]["lora_alpha"],
        "targets": summary["resolved_targets"],
        "trained_in_full": summary["trained_in_full"],
    }


def baseline(work: Path, steps: int, docs: int, seq_len: int, lora: dict) -> dict[str, float]:
    tokenizer_dir = work / "results" / "tiny" / "tokenizer"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = []
    for text in documents(docs, seed=1):
        ids = [*tokenizer(text)["input_ids"][: seq_len - 1], tokenizer.eos_token_id]
        pad = seq_len - len(ids)
        rows.append(
            {
                "input_ids": ids + [tokenizer.pad_token_id] * pad,
                "attention_mask": [1] * len(ids) + [0] * pad,
                "labels": ids + [-100] * pad,
            }
        )
    dataset = datasets.Dataset.from_list(rows)
    model = AutoModelForCausalLM.from_pretrained(work / "base")
    config = lora_config(
        lora["targets"],
        lora["lora"],
        lora["alpha"],
        0.0,
        targets_are_conv1d(model, lora["targets"]),
        # The random base's embeddings and LM head, trained in full by repotune too.
        modules_to_save=lora["trained_in_full"] or None,
    )
    model = get_peft_model(model, config)
    timer = StepTimer()
    real = {"tokens": 0}

    def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
        tensors = {key: torch.tensor([row[key] for row in batch]) for key in batch[0]}
        real["tokens"] += int(tensors["attention_mask"].sum())
        return tensors

    args = TrainingArguments(
        output_dir=str(work / "hf"), per_device_train_batch_size=BATCH, max_steps=steps,
        learning_rate=2e-4, lr_scheduler_type="cosine", save_strategy="no", report_to=[],
        logging_steps=steps, use_cpu=True, dataloader_num_workers=0, seed=42,
        disable_tqdm=True,
    )  # fmt: skip
    Trainer(
        model=model, args=args, train_dataset=dataset, data_collator=collate, callbacks=[timer]
    ).train()
    return {
        "seconds": timer.seconds,
        "useful_tokens_per_s": real["tokens"] / timer.seconds,
        "raw_tokens_per_s": steps * BATCH * seq_len / timer.seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()
    mine_rounds, their_rounds = [], []
    for _ in range(args.rounds):
        work = Path(tempfile.mkdtemp(prefix="repotune-bench-train-"))
        try:
            mine_rounds.append(ours(work, args.steps, args.docs, args.seq_len))
            their_rounds.append(
                baseline(work, args.steps, args.docs, args.seq_len, mine_rounds[-1])
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    mine = min(mine_rounds, key=lambda result: result["seconds"])
    theirs = min(their_rounds, key=lambda result: result["seconds"])
    report = {
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "steps": args.steps,
        "rounds": args.rounds,
        "batch": BATCH,
        "seq_len": args.seq_len,
        "repotune": {
            key: round(mine[key], 1)
            for key in ("seconds", "raw_tokens_per_s", "useful_tokens_per_s")
        },
        "trainer_baseline": {key: round(value, 1) for key, value in theirs.items()},
        "raw_speed_ratio": round(mine["raw_tokens_per_s"] / theirs["raw_tokens_per_s"], 2),
        "useful_tokens_ratio": round(
            mine["useful_tokens_per_s"] / theirs["useful_tokens_per_s"], 2
        ),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
