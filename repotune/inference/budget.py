"""How many tokens a prompt and its answer may take: one rule for every job and every caller.

A prompt is at most the run's ``max_prompt_tokens`` (a training block less one token: the model
never saw a longer document), and prompt plus answer must fit the model's context. When they
do not, the answer keeps at most half the context and the prompt gets the rest, so a model
trained on short blocks (the tiny preset at ``seq_len`` 256, whose context is the block) still
answers rather than failing. Evaluation, ``suggest`` and ``complete`` all take their budget
from :func:`budget`, so a question is cut the same way wherever it is asked.
"""

from dataclasses import dataclass
from typing import Any

from repotune.errors import InputError
from repotune.inference.record import RunRecord

MIN_PROMPT_TOKENS = 8


@dataclass(frozen=True)
class Budget:
    """The most prompt tokens and new tokens of one question."""

    prompt_tokens: int
    new_tokens: int


def context_length(model: Any) -> int | None:
    """The model's maximum sequence length (positions), or None when its config has none."""
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(text, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def fit(max_prompt_tokens: int, max_new_tokens: int, context: int | None) -> Budget:
    """The budget of a prompt of at most ``max_prompt_tokens`` and an answer of at most
    ``max_new_tokens``, shrunk to fit ``context`` positions (None: no limit)."""
    prompt, new = max_prompt_tokens, max_new_tokens
    if context is None or prompt + new <= context:
        return Budget(prompt, new)
    new = min(new, context // 2)
    prompt = min(prompt, context - new)
    if prompt < MIN_PROMPT_TOKENS:
        raise InputError(
            f"model context of {context} tokens",
            f"leaves {prompt} prompt tokens",
            "use a model with a longer context (tokenize.seq_len)",
        )
    return Budget(prompt, new)


def budget(record: RunRecord, max_new_tokens: int, context: int | None) -> Budget:
    """The budget of a question to the run's model: a prompt within the training block, an
    answer of up to ``max_new_tokens``, both within the model's ``context``."""
    return fit(record.max_prompt_tokens, max_new_tokens, context)
