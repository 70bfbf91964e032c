"""Continue one prompt's token ids: a greedy answer, then seeded samples for more candidates.

Stopping follows evaluation (repotune.evaluate.generation): a continuation ends at EOS or
where a stop string begins (a template marker: the model has started a new document). Decoding
stops there too, with evaluation's criterion: once every sequence of a ``generate`` call holds
a stop string (or EOS), no further step is run, so a commit hook does not wait for the rest of
``max_new_tokens``; what comes before the stop string is the same as with the full budget. And
sampling draws from a torch RNG seeded inside :func:`torch.random.fork_rng`, so the same
prompt, seed and settings give the same candidates.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Decoding:
    """How many candidates, how long, and how the sampled ones are drawn."""

    candidates: int = 1
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0


def _text(tokenizer: Any, new_ids: list[int], stops: Sequence[str]) -> str:
    from repotune.evaluate.generation import find_stop

    eos = tokenizer.eos_token_id
    if eos in new_ids:
        new_ids = new_ids[: new_ids.index(eos)]
    text = tokenizer.decode(new_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    cut = find_stop(text, stops)
    return text if cut is None else text[:cut]


def _stopping(tokenizer: Any, prompt_width: int, stops: Sequence[str], rows: int) -> Any:
    """Stop criterion for ``rows`` sequences after a prompt of ``prompt_width`` tokens.

    The prefix is empty: :func:`_text` finds stop strings in the generated text only.
    """
    from transformers import StoppingCriteriaList

    from repotune.evaluate.generation import StopStrings

    criterion = StopStrings(tokenizer, prompt_width, [tuple(stops)] * rows, [""] * rows)
    return StoppingCriteriaList([criterion])


def continuations(
    model: Any, tokenizer: Any, ids: list[int], stops: Sequence[str], decoding: Decoding
) -> list[str]:
    """``decoding.candidates`` continuations of ``ids``: greedy first, then distinct samples."""
    import torch  # here, not at the top: `repotune --help` must not wait for torch

    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    options: dict[str, Any] = {
        "attention_mask": torch.ones_like(input_ids),
        "max_new_tokens": decoding.max_new_tokens,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    with torch.no_grad():
        outputs = model.generate(
            input_ids=input_ids,
            do_sample=False,
            stopping_criteria=_stopping(tokenizer, len(ids), stops, 1),
            **options,
        )
        rows = outputs[:, len(ids) :].tolist()
        if decoding.candidates > 1:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(decoding.seed)
                sampled = model.generate(
                    input_ids=input_ids,
                    do_sample=True,
                    temperature=decoding.temperature,
                    top_p=decoding.top_p,
                    top_k=0,
                    num_return_sequences=decoding.candidates - 1,
                    stopping_criteria=_stopping(
                        tokenizer, len(ids), stops, decoding.candidates - 1
                    ),
                    **options,
                )
            rows += sampled[:, len(ids) :].tolist()
    texts = [_text(tokenizer, row, stops) for row in rows]
    return list(dict.fromkeys(texts))
