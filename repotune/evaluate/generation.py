"""Batched text generation: the one function every generated metric of evaluation goes through.

Commit messages, code changes and behavioural tests all ask a model to continue prompts. They
share :func:`generate`, so every metric sees the same decoding, the same stopping rules and the
same prompt truncation, for the base model and for the adapted one alike.

How a batch is generated:

* a prompt is given as token ids (evaluation's commit questions: the ids the training shards
  hold, from repotune.shards.prompt.prompt_ids) or as text, tokenized as training tokenized
  documents (no special tokens added, only the template's markers special); a prompt longer
  than its budget keeps its **last** tokens: the end of a prompt (the marker
  that asks for the target, the code just before the gap) matters most;
* prompts are sorted by length and cut into batches of ``batch_size``, so a batch holds
  prompts of similar length and little padding; results come back in the caller's order;
* each batch is **left-padded** (the attention mask hides the padding, position ids count
  from each prompt's first real token) and decoded by ``model.generate`` with the KV cache;
* a row stops at EOS or at the first occurrence of one of its stop strings (the template's
  markers: the model has begun a new document), or after ``max_new_tokens``;
* greedy decoding by default. Sampling (``do_sample``) draws from a torch RNG seeded with
  ``seed`` inside :func:`torch.random.fork_rng`, so the same prompts and settings give the
  same text and the caller's RNG state is left alone.

With greedy decoding a row's tokens depend only on its own prompt: padding is masked, and the
stop rules are checked row by row. Batched output therefore equals one-at-a-time output (up to
floating-point ties between two logits, which batching can tip; tests and
``benchmarks/generate.py`` check equality).
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList

from repotune.errors import InputError
from repotune.progress import Progress
from repotune.shards.tokenizer import TextEncoder

log = logging.getLogger(__name__)
FINISH_REASONS = ("eos", "stop", "length")
_MIN_PROMPT_TOKENS = 8


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings (the ``evaluate.generation`` config section plus a task's budget).

    ``max_new_tokens`` bounds each generation; ``max_prompt_tokens`` bounds each prompt (its
    beginning is dropped). Both also have to fit the model's context: see :func:`budgets`.
    """

    max_new_tokens: int = 64
    max_prompt_tokens: int = 1024
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
    completed a stop string included); ``prompt_tokens`` the prompt tokens it saw, after
    ``truncated`` dropped the prompt's beginning; ``finish`` is ``eos``, ``stop`` or ``length``.
    """

    text: str
    new_tokens: int
    prompt_tokens: int
    truncated: bool
    finish: str


def context_length(model: torch.nn.Module) -> int | None:
    """The model's maximum sequence length (positions), or None when its config has none."""
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(text, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def budgets(settings: GenerationSettings, context: int | None) -> tuple[int, int]:
    """``(max_prompt_tokens, max_new_tokens)`` that fit a model of ``context`` positions.

    A prompt plus its generation must fit the context. When the settings ask for more, the
    generation keeps at most half the context and the prompt gets the rest, so a model trained
    on short blocks (the tiny preset at seq_len 64) is still evaluated rather than failing.
    """
    prompt, new = settings.max_prompt_tokens, settings.max_new_tokens
    if context is None or prompt + new <= context:
        return prompt, new
    new = min(new, context // 2)
    prompt = min(prompt, context - new)
    if prompt < _MIN_PROMPT_TOKENS:
        raise InputError(
            f"model context of {context} tokens",
            f"leaves {prompt} prompt tokens",
            "evaluate a model with a longer context (tokenize.seq_len)",
        )
    return prompt, new


def find_stop(text: str, stops: Sequence[str], prefix: str = "") -> int | None:
    """Where ``text`` should be cut: the start of the earliest stop string, or None.

    A stop string may begin in ``prefix`` (the end of the prompt) and end in ``text``: a code
    prompt ends in a newline, and a generation that starts with a context line completes the
    stop ``"\\n "`` at once; the cut is then at 0. Occurrences wholly inside ``prefix`` do not
    count.
    """
    joined = prefix + text
    best: int | None = None
    for stop in stops:
        start = joined.find(stop, max(0, len(prefix) - len(stop) + 1))
        if start != -1:
            cut = max(0, start - len(prefix))
            best = cut if best is None else min(best, cut)
    return best


class StopStrings(StoppingCriteria):
    """Per-row stop strings for ``model.generate``: a row is done once its text holds one.

    Checked every step, so a row stops at the token that completes a stop string (its real
    generated length, kept in ``stopped_at``). The check is kept off the step's critical path:
    only the last tokens are decoded (enough to hold the longest stop string even at one byte
    per token), so it costs the same at every length; the batch's tails come to the host in one
    copy (one synchronisation a step, not one a row); rows without stop strings or already
    stopped are skipped; the returned mask is rebuilt only when a row stops. Public because
    repotune.cli.decode (``suggest``, ``complete``) stops its decoding with it too.
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


def _encode(
    encode: TextEncoder, prompts: Sequence[str | Sequence[int]], max_prompt_tokens: int
) -> tuple[list[list[int]], list[bool]]:
    """Token ids of each prompt (text is encoded, ids are kept), its beginning dropped beyond
    the budget; which were cut."""
    texts = iter(encode([p for p in prompts if isinstance(p, str)]))
    ids = [next(texts) if isinstance(p, str) else list(p) for p in prompts]
    return [row[-max_prompt_tokens:] for row in ids], [len(row) > max_prompt_tokens for row in ids]


def _text_end(
    tokenizer: PreTrainedTokenizerBase, prompt: str | Sequence[int], ids: list[int], chars: int
) -> str:
    """The last ``chars`` characters of a prompt (a stop string may begin there)."""
    if not chars:
        return ""
    if isinstance(prompt, str):
        return prompt[-chars:]
    tail = tokenizer.decode(ids[-chars:], skip_special_tokens=False)
    return tail[-chars:]


def _pad_left(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        if row:
            input_ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
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


def generate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | Sequence[int]],
    settings: GenerationSettings,
    stop: Sequence[str] = (),
    per_prompt_stop: Sequence[Sequence[str]] | None = None,
    desc: str = "generate",
) -> list[Generation]:
    """Continue every prompt (text or token ids); the i-th result belongs to the i-th prompt.

    ``stop`` applies to every prompt (the template's markers, which are also the only special
    tokens recognised in a prompt, as in the training shards), ``per_prompt_stop`` adds a list
    per prompt (a behavioural test's own stop strings). The model is put in eval mode.
    """
    if per_prompt_stop is not None and len(per_prompt_stop) != len(prompts):
        raise ValueError("per_prompt_stop needs one list per prompt")
    if not prompts:
        return []
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise InputError("tokenizer", "has no end-of-sequence token", "rerun the tokenize rule")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    max_prompt, max_new = budgets(settings, context_length(model))
    if max_new < settings.max_new_tokens:
        log.warning(
            "%s: the model's context of %s tokens allows %d new tokens, not %d, after a prompt "
            "of at most %d",
            desc, context_length(model), max_new, settings.max_new_tokens, max_prompt,
        )  # fmt: skip
    encoded, truncated = _encode(TextEncoder(tokenizer, stop), prompts, max_prompt)
    row_stops = [
        tuple(stop) + tuple(per_prompt_stop[index] if per_prompt_stop else ())
        for index in range(len(prompts))
    ]
    longest_stop = max((len(s) for row in row_stops for s in row), default=0)
    prefixes = [
        _text_end(tokenizer, prompt, ids, longest_stop)
        for prompt, ids in zip(prompts, encoded, strict=True)
    ]
    order = sorted(range(len(prompts)), key=lambda index: (-len(encoded[index]), index))
    results: list[Generation | None] = [None] * len(prompts)
    device = _device(model)
    model.eval()
    progress = Progress(log, desc, len(prompts), "prompts")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(settings.seed)
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            input_ids, mask = _pad_left([encoded[index] for index in batch], pad_id)
            criterion = StopStrings(
                tokenizer,
                input_ids.shape[1],
                [row_stops[index] for index in batch],
                [prefixes[index] for index in batch],
            )
            with torch.no_grad():
                output = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=max_new,
                    eos_token_id=eos_id,
                    pad_token_id=pad_id,
                    stopping_criteria=StoppingCriteriaList([criterion]),
                    **_decoding_options(settings),
                )
            new = output[:, input_ids.shape[1] :].tolist()
            for row, index in enumerate(batch):
                text, count, finish = _finish(
                    tokenizer, new[row], row_stops[index], prefixes[index],
                    criterion.stopped_at[row], eos_id,
                )  # fmt: skip
                results[index] = Generation(
                    text=text,
                    new_tokens=count,
                    prompt_tokens=len(encoded[index]),
                    truncated=truncated[index],
                    finish=finish,
                )
            progress.advance(len(batch), new_tokens=sum(len(n) for n in new))
    progress.finish()
    return [result for result in results if result is not None]
