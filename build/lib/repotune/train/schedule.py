"""How long to train and how the learning rate moves.

**Epochs from data.** A small repository should be seen several times, a large one perhaps
once: ``epochs = clamp(ceil(target_tokens / train_tokens), min_epochs, max_epochs)``, where
``train_tokens`` counts the real (non-padding) tokens of the training split. Then
``total_steps = ceil(epochs * blocks / effective_batch)``, capped by ``max_steps`` when it is
set (> 0).

**Warmup.** ``warmup = clamp(round(warmup_ratio * total_steps), warmup_steps_min,
warmup_steps_max)``, and never more than ``total_steps``: a ratio suits long runs, the bounds
keep a 20-step run from warming for 0 steps or a 100k-step run for thousands.

**Schedule.** Linear warmup from 0 to the peak, then ``cosine`` decay to 0 at
``total_steps`` or ``constant``.
"""

import math
from collections.abc import Callable


def epochs_for(train_tokens: int, target_tokens: int, min_epochs: int, max_epochs: int) -> int:
    """Epochs so that about ``target_tokens`` tokens are seen, within the bounds."""
    wanted = math.ceil(target_tokens / max(train_tokens, 1))
    return max(min_epochs, min(max_epochs, wanted))


def total_steps(epochs: int, blocks: int, effective_batch: int, max_steps: int) -> int:
    """Optimizer steps of the whole run."""
    steps = max(1, math.ceil(epochs * blocks / effective_batch))
    return min(steps, max_steps) if max_steps > 0 else steps


def warmup_steps(total: int, ratio: float, minimum: int, maximum: int) -> int:
    """Warmup length: the ratio of the run, clamped, at most the whole run."""
    return min(total, max(minimum, min(maximum, round(ratio * total))))


def lr_factor(kind: str, warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at step ``step`` (for ``LambdaLR``)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor
