"""Packed documents are kept apart in training's forward pass and loss, for each preset family:
document B packed after document A gets the logits and loss it gets alone."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from repotune.packed import packed_logits
from repotune.shards.torch_blocks import collate
from repotune.train.bookkeeping import loss_sum
from repotune.train.lora import FAMILY_TARGETS
from testdata.models import gpt2, phi, starcoder2

SEQ_LEN = 24
CPU = torch.device("cpu")


def adapted(build, family: str) -> torch.nn.Module:
    """The family's base with a LoRA adapter whose B is random (so it changes the outputs)."""
    torch.manual_seed(0)
    model = build()
    config = LoraConfig(
        r=4,
        target_modules=FAMILY_TARGETS[family],
        fan_in_fan_out=family == "gpt2",
        init_lora_weights=False,
    )
    return get_peft_model(model, config).eval()


def block(*documents: list[int]) -> dict[str, torch.Tensor]:
    """One padded block holding ``documents`` back to back, as the shards store it."""
    ids = [token for document in documents for token in document]
    positions = [p for document in documents for p in range(len(document))]
    length = len(ids)
    input_ids = torch.tensor([ids + [0] * (SEQ_LEN - length)])
    position_ids = torch.tensor([positions + [0] * (SEQ_LEN - length)])
    return collate(input_ids, position_ids, torch.tensor([length]))


@pytest.mark.parametrize(
    ("build", "family"), [(gpt2, "gpt2"), (starcoder2, "starcoder2"), (phi, "phi")]
)
def test_document_b_alone_equals_b_packed_after_a(build, family):
    model = adapted(build, family)
    generator = torch.Generator().manual_seed(1)
    a = torch.randint(1, 128, (7,), generator=generator).tolist()
    b = torch.randint(1, 128, (9,), generator=generator).tolist()
    packed, alone = block(a, b), block(b)
    # Every label after the first token of each document counts; the first token of B has no
    # label, since nothing of B precedes it.
    assert int((packed["labels"] != -100).sum()) == (len(a) - 1) + (len(b) - 1)
    with torch.no_grad():
        together = packed_logits(model, packed, CPU)[0, len(a) : len(a) + len(b)]
        by_itself = packed_logits(model, alone, CPU)[0, : len(b)]
        torch.testing.assert_close(together, by_itself, rtol=1e-4, atol=1e-4)
        # The training loss of the packed block is A's loss plus B's, each computed alone.
        both = loss_sum(model, packed, CPU, torch.float32)
        apart = loss_sum(model, block(a), CPU, torch.float32) + loss_sum(
            model, alone, CPU, torch.float32
        )
        torch.testing.assert_close(both, apart, rtol=1e-5, atol=1e-4)
