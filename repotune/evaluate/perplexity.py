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

Sums are accumulated in float64 (each token's loss summed per document, ``math.fsum`` over
commits), so the result does not depend on the batch size.

Every sum is kept **per commit**: a block packs documents of several commits and a long commit
spans blocks, so the shards' ``document_shas`` column (repotune.shards.table) names each
document's commit in block order, and each token's loss goes to the commit of the document it
belongs to (documents start where ``position_ids`` restart at 0). The evaluation's paired
bootstrap then resamples commits, the independent unit, not blocks
(repotune.evaluate.significance).
"""

import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from repotune.errors import InputError
from repotune.packed import packed_logits
from repotune.shards.table import DOCUMENT_SHAS, IGNORE
from repotune.shards.torch_blocks import ShardBlocks, open_split


@dataclass(frozen=True)
class Perplexity:
    """The model's fit to a split: None everywhere when no token was evaluated."""

    loss: float | None
    perplexity: float | None
    bits_per_token: float | None
    tokens: int
    blocks: int
    commits: int = 0  # commits with a document in the scored blocks

    def as_dict(self) -> dict[str, float | int | None]:
        """The fields as a JSON-ready mapping."""
        return asdict(self)


def from_sums(nll_sum: float, tokens: int, blocks: int, commits: int = 0) -> Perplexity:
    """The metrics of a summed negative log-likelihood over ``tokens`` label tokens."""
    if tokens == 0:
        return Perplexity(None, None, None, 0, blocks, commits)
    loss = nll_sum / tokens
    return Perplexity(
        loss=loss,
        perplexity=math.exp(loss),
        bits_per_token=loss / math.log(2),
        tokens=tokens,
        blocks=blocks,
        commits=commits,
    )


def document_commits(split_dir: str | Path) -> list[list[str]]:
    """Each block's ``document_shas``: the commit of each of its documents, in block order
    (shards written before per-commit evaluation lack it: a one-line error)."""
    return open_split(split_dir, [DOCUMENT_SHAS])[DOCUMENT_SHAS]


@torch.no_grad()
def document_nll(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], lengths: Sequence[int]
) -> list[tuple[list[float], list[int]]]:
    """Per block of one batch, per real document in it (in block order): summed next-token
    negative log-likelihood (nats) and label count.

    ``batch`` is :func:`repotune.shards.torch_blocks.collate`'s output, ``lengths`` the blocks'
    real token counts. A document is the run of tokens from one ``position_ids`` restart (0) to
    the next; the label of position ``t`` (token ``t`` predicted from ``t - 1``) belongs to the
    document of token ``t``. Logits are taken in float32 whatever the model's dtype, one block
    at a time (a 49k vocabulary at 4096 tokens is 800 MB); each token's loss is summed in
    float64.
    """
    device = next(model.parameters()).device
    all_logits = packed_logits(model, batch, device)
    labels = batch["labels"][:, 1:].to(device)
    starts = batch["position_ids"] == 0
    result = []
    for row, length in enumerate(lengths):
        losses = F.cross_entropy(
            all_logits[row, :-1].float(), labels[row], ignore_index=IGNORE, reduction="none"
        ).double()
        counted = labels[row] != IGNORE
        document = (torch.cumsum(starts[row].long(), dim=0) - 1).clamp(min=0)[1:].to(device)
        documents = int(starts[row, :length].sum())
        size = int(document.max()) + 1 if len(document) else 1
        sums = torch.zeros(size, dtype=torch.float64, device=device)
        sums.index_add_(0, document, torch.where(counted, losses, 0.0))
        counts = torch.zeros(size, dtype=torch.int64, device=device)
        counts.index_add_(0, document, counted.long())
        result.append((sums[:documents].tolist(), counts[:documents].tolist()))
    return result


@dataclass(frozen=True)
class CommitScores:
    """Each scored commit's summed negative log-likelihood (nats) and label-token count, over
    every evaluated block its documents lie in (``shas``: the commits, in the order they first
    appear), and how many blocks were scored."""

    nll: list[float]
    tokens: list[int]
    shas: list[str] = field(default_factory=list)
    blocks: int = 0

    def summary(self) -> Perplexity:
        """Loss, perplexity and bits per token over all the commits (sums in float64)."""
        return from_sums(math.fsum(self.nll), sum(self.tokens), self.blocks, len(self.nll))


def block_scores(
    model: torch.nn.Module,
    blocks: ShardBlocks,
    documents: Sequence[Sequence[str]],
    batch_size: int = 4,
    max_blocks: int = 0,
    desc: str = "perplexity",
) -> CommitScores:
    """Per-commit sums over the first ``max_blocks`` blocks (0 = all), in eval mode (no
    dropout); ``documents[b]`` names the commit of each document of block ``b``
    (:func:`document_commits`)."""
    count = len(blocks) if max_blocks <= 0 else min(len(blocks), max_blocks)
    if len(documents) < count:
        raise ValueError(f"{len(documents)} blocks' documents named for {count} blocks")
    model.eval()
    nll: dict[str, list[float]] = {}
    tokens: dict[str, int] = {}
    with tqdm(total=count, desc=desc, file=sys.stderr, mininterval=5, unit="block") as bar:
        for start in range(0, count, batch_size):
            indices = list(range(start, min(start + batch_size, count)))
            lengths = [int(blocks.lengths[index]) for index in indices]
            scored = document_nll(model, blocks.batch(indices), lengths)
            for index, (sums, counts) in zip(indices, scored, strict=True):
                shas = documents[index]
                if len(shas) != len(sums):
                    raise InputError(
                        f"test block {index}",
                        f"has {len(sums)} documents but its document_shas name {len(shas)}",
                        "rerun the tokenize rule",
                    )
                for sha, value, label_count in zip(shas, sums, counts, strict=True):
                    nll.setdefault(sha, []).append(value)
                    tokens[sha] = tokens.get(sha, 0) + label_count
            bar.update(len(indices))
    return CommitScores(
        nll=[math.fsum(values) for values in nll.values()],
        tokens=list(tokens.values()),
        shas=list(nll),
        blocks=count,
    )


def perplexity(
    model: torch.nn.Module,
    blocks: ShardBlocks,
    documents: Sequence[Sequence[str]],
    batch_size: int = 4,
    max_blocks: int = 0,
    desc: str = "perplexity",
) -> Perplexity:
    """The model's loss, perplexity and bits per token on the first ``max_blocks`` blocks (0 =
    all). The model is put in eval mode (no dropout)."""
    return block_scores(model, blocks, documents, batch_size, max_blocks, desc).summary()
