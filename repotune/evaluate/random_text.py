"""Uniform random tokens: what a check or a metric gives an answer that knows nothing.

A behavioural test or a metric is only worth reading beside what chance scores on it: a
pattern test that random text passes half the time cannot tell a model that learnt from one
that did not. This module writes that chance answer the way :func:`generate` ends a real one:
each new token drawn uniformly from the whole vocabulary (special tokens included) up to the
same token budget, ended by the end-of-text token or at the first of the same stop strings,
seeded (numpy PCG64), so the baseline is the same on every rerun.
"""

from collections.abc import Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase

from repotune.inference.decoding import Generation
from repotune.inference.stops import find_stop

# Random answers drawn per baseline: a pass rate of 0.5 is known to about +-0.035.
DRAWS = 200


def ended_answer(
    tokenizer: PreTrainedTokenizerBase,
    ids: Sequence[int],
    max_new_tokens: int,
    stops: Sequence[str],
) -> Generation:
    """The answer a model writing ``ids`` would give, ended as :func:`generate` ends one: at
    the end-of-text token (``eos``), at the first stop string (``stop``, cut before it), after
    ``max_new_tokens`` (``length``), or, written out in fewer, by itself (``eos``)."""
    ids = list(ids)
    eos = tokenizer.eos_token_id
    written = ids.index(eos) if eos in ids[:max_new_tokens] else min(len(ids), max_new_tokens)
    finish = "length" if written == max_new_tokens and eos not in ids[: written + 1] else "eos"
    body = ids[:written]
    text = tokenizer.decode(body, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    cut = find_stop(text, stops)
    if cut is not None:
        text, finish = text[:cut], "stop"
    return Generation(text, len(body) + (finish == "eos"), 0, False, finish)


def random_generations(
    tokenizer: PreTrainedTokenizerBase,
    count: int,
    max_new_tokens: int,
    stops: Sequence[str],
    seed: int,
) -> list[Generation]:
    """``count`` answers of ``max_new_tokens`` uniformly random tokens each, ended as
    :func:`ended_answer` ends them."""
    generator = np.random.Generator(np.random.PCG64(seed))
    ids = generator.integers(0, len(tokenizer), size=(count, max_new_tokens)).tolist()
    return [ended_answer(tokenizer, row, max_new_tokens, stops) for row in ids]
