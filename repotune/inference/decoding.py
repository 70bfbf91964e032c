"""Decoding: batched generation for evaluation, and the candidates ``suggest`` and ``complete``
print, through one function (:func:`generate`).

How a batch is generated:

* prompts come as :class:`repotune.inference.prompts.Prompt` (ids already within their
  budget, :mod:`repotune.inference.budget`; each with its stop strings);
* prompts are sorted by length and cut into batches of ``batch_size``, so a batch holds
  prompts of similar length and little padding; results come back in the caller's order;
* each batch is **left-padded** (the attention mask hides the padding, position ids count
  from each prompt's first real token) and decoded by ``model.generate`` with the KV cache;
* a row stops at EOS or at the first occurrence of one of its stop strings (a stop string
  may begin in the prompt's last characters: :func:`repotune.inference.stops.find_stop`), or
  after ``max_new_tokens``; once every row of a batch has stopped, no further step runs;
* greedy decoding by default. Sampling (``do_sample``) draws from a torch RNG seeded with
  ``seed`` inside :func:`torch.random.fork_rng`, so the same prompts and settings give the
  same text and the caller's RNG state is left alone.

With greedy decoding a row's tokens depend only on its own prompt: padding is masked, and the
stop rules are checked row by row. Batched output therefore equals one-at-a-time output (up to
floating-point ties between two logits, which batching can tip; tests and
``benchmarks/generate.py`` check equality), and :func:`continuations` (one prompt, the
command line's greedy answer and seeded samples) gives evaluation's text for the same prompt.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList

from repotune.errors import InputError
from repotune.inference.budget import context_length
from repotune.inference.prompts import Prompt
from repotune.inference.stops import find_stop
from repotune.progress import Progress

log = logging.getLogger(__name__)
FINISH_REASONS = ("eos", "stop", "length")


@dataclass(frozen=True)
class GenerationSettings:
    """How to decode: the most new tokens per prompt (within the budget,
    :func:`repotune.inference.budget.budget`), batch size, greedy or seeded sampling."""

    max_new_tokens: int = 64
    batch_size: int = 8
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Generation:
    """One prompt's continuation.

    ``text`` is what the model wrote after the prompt, cut before EOS and before the first stop
    string; ``new_tokens`` counts the tokens it generated for it (the EOS or the token that
    completed a stop string included); ``prompt_tokens`` the prompt tokens it saw;
    ``truncated`` whether the prompt was cut to its budget; ``finish`` is ``eos``, ``stop`` or
    ``length``.
    """

    text: str
    new_tokens: int
    prompt_tokens: int
    truncated: bool
    finish: str


class StopStrings(StoppingCriteria):
    """Per-row stop strings for ``model.generate``: a row is done once its text holds one.

    Checked every step, so a row stops at the token that completes a stop string (its real
    generated length, kept in ``stopped_at``). The check is kept off the step's critical path:
    only the last tokens are decoded (enough to hold the longest stop string even at one byte
    per token), so it costs the same at every length; the batch's tails come to the host in one
    copy (one synchronisation a step, not one a row); rows without stop strings or already
    stopped are skipped; the returned mask is rebuilt only when a row stops.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt_width: int,
        stops: Sequence[Sequence[str]],
        prefixes: Sequence[str],
    ) -> None:
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        self.stops = stops
        self.prefixes = prefixes
        longest = max((len(stop.encode()) for row in stops for stop in row), default=0)
        self.window = longest + 2
        self.stopped_at: list[int | None] = [None] * len(stops)
        self.active = [row for row, row_stops in enumerate(stops) if row_stops]
        self.done: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        width = input_ids.shape[1] - self.prompt_width
        stopped = False
        if self.active:
            window = input_ids[:, -min(self.window, width) :]
            if len(self.active) < len(self.stops):
                window = window[self.active]
            tails = window.tolist()
            for row, tail in zip(list(self.active), tails, strict=True):
                text = self.tokenizer.decode(
                    tail, skip_special_tokens=False, clean_up_tokenization_spaces=False
                )
                prefix = self.prefixes[row] if len(tail) == width else ""
                if find_stop(text, self.stops[row], prefix) is not None:
                    self.stopped_at[row] = width
                    self.active.remove(row)
                    stopped = True
        if self.done is None or stopped:
            flags = [at is not None for at in self.stopped_at]
            self.done = torch.tensor(flags, dtype=torch.bool, device=input_ids.device)
        return self.done


def _text_end(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], chars: int) -> str:
    """The last ``chars`` characters of a prompt (a stop string may begin there)."""
    if not chars:
        return ""
    tail = tokenizer.decode(list(ids[-chars:]), skip_special_tokens=False)
    return tail[-chars:]


def _pad_left(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        if row:
            input_ids[index, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
            mask[index, width - len(row) :] = 1
    return input_ids, mask


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _decoding_options(settings: GenerationSettings) -> dict[str, Any]:
    if not settings.do_sample:
        return {"do_sample": False}
    return {
        "do_sample": True,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "top_k": 0,
    }


def _finish(
    tokenizer: PreTrainedTokenizerBase,
    new_ids: list[int],
    stops: Sequence[str],
    prefix: str,
    stopped_at: int | None,
    eos_id: int,
) -> tuple[str, int, str]:
    """A row's text, generated token count and finish reason, from its raw new tokens."""
    finish, count = "length", len(new_ids)
    if eos_id in new_ids:
        finish, count = "eos", new_ids.index(eos_id) + 1
    if stopped_at is not None and stopped_at < count:
        finish, count = "stop", stopped_at
    body = new_ids[: count - 1] if finish == "eos" else new_ids[:count]
    text = tokenizer.decode(body, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    cut = find_stop(text, stops, prefix)
    if cut is not None:
        text = text[:cut]
        if finish == "length":
            finish = "stop"
    return text, count, finish


def _check_fits(model: torch.nn.Module, prompts: Sequence[Prompt], max_new: int) -> None:
    """Prompts come cut to their budget; one that is not is a caller's bug, not bad input."""
    context = context_length(model)
    longest = max(len(prompt.ids) for prompt in prompts)
    if context is not None and longest + max_new > context:
        raise ValueError(
            f"a prompt of {longest} tokens and {max_new} new tokens exceed the model's context "
            f"of {context}: build prompts within repotune.inference.budget.budget"
        )


def generate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    settings: GenerationSettings,
    desc: str = "generate",
) -> list[Generation]:
    """Continue every prompt; the i-th result belongs to the i-th prompt. The model is put in
    eval mode."""
    if not prompts:
        return []
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise InputError("tokenizer", "has no end-of-sequence token", "rerun the tokenize rule")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    _check_fits(model, prompts, settings.max_new_tokens)
    longest_stop = max((len(s) for prompt in prompts for s in prompt.stops), default=0)
    prefixes = [_text_end(tokenizer, prompt.ids, longest_stop) for prompt in prompts]
    order = sorted(range(len(prompts)), key=lambda index: (-len(prompts[index].ids), index))
    results: list[Generation | None] = [None] * len(prompts)
    device = _device(model)
    model.eval()
    progress = Progress(log, desc, len(prompts), "prompts")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(settings.seed)
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            input_ids, mask = _pad_left([prompts[index].ids for index in batch], pad_id)
            criterion = StopStrings(
                tokenizer,
                input_ids.shape[1],
                [prompts[index].stops for index in batch],
                [prefixes[index] for index in batch],
            )
            with torch.no_grad():
                output = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=settings.max_new_tokens,
                    eos_token_id=eos_id,
                    pad_token_id=pad_id,
                    stopping_criteria=StoppingCriteriaList([criterion]),
                    **_decoding_options(settings),
                )
            new = output[:, input_ids.shape[1] :].tolist()
            for row, index in enumerate(batch):
                prompt = prompts[index]
                text, count, finish = _finish(
                    tokenizer, new[row], prompt.stops, prefixes[index],
                    criterion.stopped_at[row], eos_id,
                )  # fmt: skip
                results[index] = Generation(
                    text=text,
                    new_tokens=count,
                    prompt_tokens=len(prompt.ids),
                    truncated=prompt.truncated,
                    finish=finish,
                )
            progress.advance(len(batch), new_tokens=sum(len(n) for n in new))
    progress.finish()
    return [result for result in results if result is not None]


@dataclass(frozen=True)
class Decoding:
    """The command line's decoding: how many candidates, how long, and how the candidates
    after the first (greedy) one are sampled."""

    candidates: int = 1
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0


def greedy(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: Prompt, max_new_tokens: int
) -> Generation:
    """The greedy continuation of one prompt: evaluation's generation of it."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=1)
    return generate(model, tokenizer, [prompt], settings, desc="greedy")[0]


def samples(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompt: Prompt,
    count: int,
    decoding: Decoding,
) -> list[Generation]:
    """``count`` continuations of ``prompt`` sampled at ``decoding``'s temperature and top-p,
    in one batch from ``decoding.seed`` (the same seed gives the same samples)."""
    settings = GenerationSettings(
        max_new_tokens=decoding.max_new_tokens,
        batch_size=count,
        do_sample=True,
        temperature=decoding.temperature,
        top_p=decoding.top_p,
        seed=decoding.seed,
    )
    return generate(model, tokenizer, [prompt] * count, settings, desc="samples")


def continuations(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: Prompt, decoding: Decoding
) -> list[str]:
    """Up to ``decoding.candidates`` distinct continuations of ``prompt``: the greedy one
    first (evaluation's generation of the same prompt), then seeded samples."""
    found = [greedy(model, tokenizer, prompt, decoding.max_new_tokens)]
    if decoding.candidates > 1:
        found += samples(model, tokenizer, prompt, decoding.candidates - 1, decoding)
    return list(dict.fromkeys(generation.text for generation in found))
