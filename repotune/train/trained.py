"""What a training run changes, and how it is checkpointed: an adapter, or the whole model.

Fine-tuning trains a LoRA adapter (with the embeddings of a random base, repotune.train.lora):
its checkpoint holds the adapter's tensors. Pretraining a base here (repotune.pretrain) trains
every parameter of a model built from config (``method: full``): its checkpoint holds them
all. The trainer asks this module instead of asking peft directly, so both go through the same
loop, schedule, validation, checkpoints and resume.
"""

import torch
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict

LORA = "lora"
FULL = "full"
METHODS = (LORA, FULL)


def trained_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint keeps: the adapter's, or every one of a fully trained model."""
    if isinstance(model, PeftModel):
        return get_peft_model_state_dict(model)
    return {name: tensor.detach() for name, tensor in model.state_dict().items()}


def restore(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Put a checkpoint's tensors (:func:`trained_state`) back into ``model``."""
    if isinstance(model, PeftModel):
        set_peft_model_state_dict(model, tensors)
    else:
        model.load_state_dict(tensors)
