"""Perplexity and bits per token on packed blocks, computed exactly as training counts its loss.

The test shards hold the held-out commits rendered and packed like the training data. Each block
goes through the same forward pass as in training (:func:`repotune.packed.packed_logits`: its
``position_ids``, no attention mask, no cache), so transformers builds the block-diagonal
causal mask and packed documents do not see each other. The loss counts the same label tokens
training does: real tokens only (positions below ``length``), never a document's first token
nor a block's first token.

With ``N`` label tokens and ``log p(t_i | t_<i)`` the model's natural-log probability of each:

* ``loss = -(1/N) sum_i log p(t_i | t_<i)`` (nats per token, the training loss),
* ``perplexity = exp(loss)``,
* ``bits_per_token = loss / ln 2``.

Sums are accumulated in float64 (``math.fsum`` of per-block sums), so the result does not
depend on the batch size.
"""

import math
import sys
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from repotune.packed import packed_logits
from repotune.shards.table import IGNORE
from repotune.shards.torch_blocks import ShardBlocks


@dataclass(frozen=True)
class Perplexity:
    """The model's fit to a split: None everywhere when no token was evaluated."""

    loss: float | None
    perplexity: float | None
    bits_per_token: float | None
    tokens: int
    blocks: int

    def as_dict(self) -> dict[str, float | int | None]:
        """The fields as a JSON-ready mapping."""
        return asdict(self)


def from_sums(nll_sum: float, tokens: int, blocks: int) -> Perplexity:
    """The metrics of a summed negative log-likelihood over ``tokens`` label tokens."""
    if tokens == 0:
        return Perplexity(None, None, None, 0, blocks)
    loss = nll_sum / tokens
    return Perplexity(
        loss=loss,
        perplexity=math.exp(loss),
        bits_per_token=loss / math.log(2),
        tokens=tokens,
        blocks=blocks,
    )


@torch.no_grad()
def block_nll(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[list[float], list[int]]:
    """Per block of one batch: summed next-token negative log-likelihood (nats) and label count.

    ``batch`` is :func:`repotune.shards.torch_blocks.collate`'s output. Logits are taken in float32
    whatever the model's dtype; each row's cross entropy is computed on its own, so the float32
    copy of the logits is one block at a time (a 49k vocabulary at 4096 tokens is 800 MB).
    Per block, not per batch: the evaluation's paired bootstrap resamples blocks.
    """
    device = next(model.parameters()).device
    all_logits = packed_logits(model, batch, device)
    labels = batch["labels"][:, 1:].to(device)
    sums = []
    for row in range(labels.shape[0]):
        logits = all_logits[row, :-1].float()
        sums.append(
            float(
                F.cross_entropy(logits, labels[row], ignore_index=IGNORE, reduction="sum").double()
            )
        )
    return sums, [int(count) for count in (labels != IGNORE).sum(dim=1).tolist()]


@dataclass(frozen=True)
class BlockScores:
    """Each scored block's summed negative log-likelihood (nats) and label-token count."""

    nll: list[float]
    tokens: list[int]

    def summary(self) -> Perplexity:
        """Loss, perplexity and bits per token over all the blocks (sums in float64)."""
        return from_sums(math.fsum(self.nll), sum(self.tokens), len(self.nll))


def block_scores(
    model: torch.nn.Module,
    blocks: ShardBlocks,
    batch_size: int = 4,
    max_blocks: int = 0,
    desc: str = "perplexity",
) -> BlockScores:
    """Per-block sums of the first ``max_blocks`` blocks (0 = all), in eval mode (no dropout)."""
    count = len(blocks) if max_blocks <= 0 else min(len(blocks), max_blocks)
    model.eval()
    nll: list[float] = []
    tokens: list[int] = []
    with tqdm(total=count, desc=desc, file=sys.stderr, mininterval=5, unit="block") as bar:
        for start in range(0, count, batch_size):
            indices = list(range(start, min(start + batch_size, count)))
            batch_nll, batch_tokens = block_nll(model, blocks.batch(indices))
            nll += batch_nll
            tokens += batch_tokens
            bar.update(len(indices))
    return BlockScores(nll, tokens)


def perplexity(
    model: torch.nn.Module,
    blocks: ShardBlocks,
    batch_size: int = 4,
    max_blocks: int = 0,
    desc: str = "perplexity",
) -> Perplexity:
    """The model's loss, perplexity and bits per token on the first ``max_blocks`` blocks (0 =
    all). The model is put in eval mode (no dropout)."""
    return block_scores(model, blocks, batch_size, max_blocks, desc).summary()
