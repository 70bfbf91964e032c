"""The base model: build or locate it, load it quantized or not, in the right dtype.

Two kinds of base:

* **built** (``base: null``, the offline ``tiny`` preset): a GPT-2-shaped model made from the
  preset's ``architecture`` with the vocabulary of our own tokenizer and the shards' context
  length, initialised from the seed and never pretrained. LoRA alone cannot teach a random
  base which tokens exist, so training makes its embeddings and LM head trainable next to the
  adapter (:func:`repotune.train.lora.embedding_modules`); the two are kept untied, because a
  tied pair does not reload correctly through peft's ``modules_to_save``. Its config and
  weights are saved to
  ``results/{model}/base/`` so evaluation loads exactly the model the adapter was trained on
  (rebuilding from the seed would tie evaluation to this code's initialisation order).
* **pretrained** (a hub id or local path): ``results/{model}/base/base.json`` records the id
  and it is loaded from the local Hugging Face cache, or downloaded when the hub is reachable.

Both are then loaded the same way: safetensors only, ``trust_remote_code`` off unless the
config turns it on, 4-bit NF4 with double quantization or 8-bit through bitsandbytes, or
unquantized in the compute dtype.

peft is imported only where an adapter is loaded (:func:`load_adapted`): it pulls in
bitsandbytes and much of torch's compiler, seconds that a command serving the exported merged
model (:func:`load_merged`) does not pay.
"""

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import is_offline_mode, try_to_load_from_cache
from transformers import (
    AutoModelForCausalLM,
    BitsAndBytesConfig,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
)

from repotune.adapter_files import BASE_FILE, SUMMARY_FILE
from repotune.atomic import atomic_path
from repotune.errors import InputError
from repotune.hardware import DTYPES
from repotune.models import ModelSpec, architecture
from repotune.train.memory import ModelShape

if TYPE_CHECKING:
    from peft import PeftModel

log = logging.getLogger(__name__)
QUANTIZATIONS = ("nf4", "int8", "none")


def write_base(
    spec: ModelSpec, base_dir: str | Path, vocab_size: int, seq_len: int, special: dict[str, int]
) -> None:
    """Fill ``base_dir``: the built model's config and weights, or the pretrained id to load.

    ``special`` holds the tokenizer's ``eos_token_id``/``pad_token_id``/``bos_token_id``. A built
    model is initialised from the torch seed in force, so set the seed first.
    """
    with atomic_path(base_dir) as temporary:
        temporary.mkdir()
        if spec.base is None:
            model = build_model(architecture(spec), vocab_size, seq_len, special)
            model.save_pretrained(temporary, safe_serialization=True)
            record = {"source": "built", "name": spec.name, "architecture": architecture(spec)}
        else:
            record = {"source": "pretrained", "name": spec.name, "id": spec.base}
        (temporary / BASE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def build_model(
    arch: dict[str, Any], vocab_size: int, seq_len: int, special: dict[str, int]
) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 with ``arch``'s sizes, our vocabulary and context length.

    Input and output embeddings are separate matrices (``tie_word_embeddings=False``): both are
    trained with the adapter and saved in it, and peft 0.21 reloads an adapter that saved a
    tied embedding by overwriting the base's own copy (the adapter-off model then no longer
    equals the base)."""
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=int(arch.get("n_positions", seq_len)),
        n_layer=int(arch.get("n_layer", 4)),
        n_head=int(arch.get("n_head", 4)),
        n_embd=int(arch.get("n_embd", 256)),
        bos_token_id=special.get("bos_token_id", special["eos_token_id"]),
        eos_token_id=special["eos_token_id"],
        pad_token_id=special.get("pad_token_id"),
        tie_word_embeddings=False,
    )
    return GPT2LMHeadModel(config)


def base_source(base_dir: str | Path) -> str:
    """What to pass to ``from_pretrained``: the base directory itself or the recorded id."""
    base_dir = Path(base_dir)
    record = json.loads((base_dir / BASE_FILE).read_text(encoding="utf-8"))
    return str(base_dir) if record["source"] == "built" else record["id"]


def quantization_config(quantization: str, dtype: torch.dtype) -> BitsAndBytesConfig | None:
    """bitsandbytes settings: NF4 + double quantization, LLM.int8, or None for no quantization."""
    if quantization == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quantization == "none":
        return None
    raise InputError(
        "config train.quantization", f"'{quantization}' is unknown", "use nf4, int8 or none"
    )


def _check_bitsandbytes(quantization: str) -> None:
    """Fail early, in one line, when bitsandbytes cannot run here."""
    if quantization == "none":
        return
    try:
        import bitsandbytes  # noqa: F401
    except Exception as error:  # an import of a native library fails in many ways
        raise InputError(
            f"config train.quantization={quantization}",
            f"bitsandbytes cannot be loaded here ({type(error).__name__}: {error})",
            "install bitsandbytes==0.50.2 (see envs/train.yaml) or set quantization: none",
        ) from None


def load_model(
    source: str,
    *,
    quantization: str,
    dtype: torch.dtype,
    device: torch.device,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """Load a causal LM for training, from a local directory or the hub cache.

    Raises :class:`InputError` when the model is neither local nor downloadable, or when
    bitsandbytes is needed and cannot be loaded.
    """
    _check_bitsandbytes(quantization)
    quantized = quantization_config(quantization, dtype)
    options: dict[str, Any] = {
        "use_safetensors": True,
        "trust_remote_code": trust_remote_code,
        "dtype": dtype,
    }
    if quantized is not None:
        options["quantization_config"] = quantized
        options["device_map"] = {"": device}
    try:
        model = _from_pretrained(source, options)
    except (RuntimeError, ImportError) as error:
        if quantized is None or "bitsandbytes" not in str(error).lower():
            raise
        raise InputError(
            f"config train.quantization={quantization}",
            f"bitsandbytes cannot quantize here ({error})",
            "set quantization: none or install a bitsandbytes build for this device",
        ) from None
    if quantized is None:
        model.to(device)
    elif quantization == "nf4" and device.type == "cpu":
        _check_cpu_4bit(model)
    return model


CPU_4BIT_ROWS = 32
"""Outputs per block of bitsandbytes' AVX512-BF16 4-bit CPU kernel (its ``block_n``)."""


def _check_cpu_4bit(model: PreTrainedModel) -> None:
    """Fail at load, in one line, where bitsandbytes' CPU 4-bit kernel cannot take a layer.

    On a CPU with AVX512-BF16, a 4-bit layer run in eval mode without gradients (every
    validation pass) has its weight repacked for that kernel, which needs its inputs a multiple
    of the quantization block (64) and its outputs of 32; a narrower layer (a test preset's
    ``n_embd`` 32) failed there with a reshape error from inside bitsandbytes, mid-training.
    """
    from bitsandbytes.nn import Linear4bit

    for name, layer in model.named_modules():
        if not isinstance(layer, Linear4bit) or not layer.support_avx512bf16_for_cpu:
            continue
        block = layer.weight.quant_state.blocksize
        if layer.in_features % block or layer.out_features % CPU_4BIT_ROWS:
            raise InputError(
                f"model layer '{name}' ({layer.in_features} inputs, {layer.out_features} outputs)",
                f"cannot run 4-bit on this CPU: bitsandbytes' AVX512-BF16 kernel needs inputs a "
                f"multiple of {block} and outputs a multiple of {CPU_4BIT_ROWS}",
                "make the model wider (architecture.n_embd a multiple of 64) or set "
                "quantization: none",
            )


def _from_pretrained(source: str, options: dict[str, Any]) -> PreTrainedModel:
    """``from_pretrained`` from a directory, the local hub cache, or the hub; one line when none
    has the model."""
    if Path(source).is_dir():
        return AutoModelForCausalLM.from_pretrained(source, **options)
    _require_reachable(source)
    try:
        return AutoModelForCausalLM.from_pretrained(
            source, local_files_only=_cached(source), **options
        )
    except OSError as error:
        raise _not_available(source, f"the hub cannot be reached ({error})") from None


def _cached(source: str) -> bool:
    """The model's config is in the local Hugging Face cache (no network asked)."""
    return isinstance(try_to_load_from_cache(source, "config.json"), str)


def _require_reachable(source: str) -> None:
    """Fail at once for a model that is not cached while the hub is off."""
    if not _cached(source) and is_offline_mode():
        raise _not_available(source, "the hub is off (HF_HUB_OFFLINE=1)")


def _not_available(source: str, why: str) -> InputError:
    return InputError(
        f"model '{source}'",
        f"is not in the local Hugging Face cache and {why}",
        f"download it ahead with `hf download {source}` on a connected machine",
    )


def model_shape(model: PreTrainedModel) -> ModelShape:
    """The estimator's view of a loaded model (counts from the model, sizes and the facts that
    decide what autograd saves from its config)."""
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = int(getattr(text, "hidden_size", 0) or getattr(text, "n_embd", 0))
    intermediate = getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None)
    output = model.get_output_embeddings()
    head_ids = {id(parameter) for parameter in output.parameters()} if output is not None else set()
    projections = [
        module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"
        if id(module.weight) not in head_ids and ".lora_" not in name
    ]
    quantizable = sum(_logical_numel(module.weight) for module in projections)
    params = sum(_logical_numel(parameter) for parameter in model.parameters())
    layers = int(getattr(text, "num_hidden_layers", 0) or getattr(text, "n_layer", 0))
    heads = int(getattr(text, "num_attention_heads", 0) or getattr(text, "n_head", 0))
    lora_inputs, lora_dropout_inputs = _lora_inputs(model)
    return ModelShape(
        params=params,
        quantizable_params=quantizable,
        layers=layers,
        hidden=hidden,
        intermediate=int(intermediate or 4 * hidden),
        heads=heads,
        vocab=int(text.vocab_size),
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        activation=str(
            getattr(text, "activation_function", None) or getattr(text, "hidden_act", "gelu")
        ),
        residual_dropout=_first(text, ("resid_pdrop", "residual_dropout", "hidden_dropout")),
        attention_dropout=_first(text, ("attn_pdrop", "attention_dropout")),
        projection_inputs=sum(_in_features(module) for module in projections) // max(layers, 1),
        lora_inputs=lora_inputs // max(layers, 1),
        lora_dropout_inputs=lora_dropout_inputs // max(layers, 1),
    )


def _in_features(module: torch.nn.Module) -> int:
    """Input width of a linear layer (GPT-2's Conv1D calls it ``nx``)."""
    return int(getattr(module, "in_features", None) or module.nx)


def _first(config: Any, names: tuple[str, ...]) -> float:
    """The first of ``names`` the config sets (families name their dropouts differently)."""
    return float(next((getattr(config, n) for n in names if getattr(config, n, None)), 0.0))


def _lora_inputs(model: torch.nn.Module) -> tuple[int, int]:
    """Summed input width of the LoRA-adapted layers, and of those with a LoRA dropout: each
    saves its input for ``lora_A``'s gradient, and a dropout mask over it."""
    adapted = [module for module in model.modules() if hasattr(module, "lora_dropout")]
    widths = [int(module.in_features) for module in adapted]
    dropped = [
        int(module.in_features)
        for module in adapted
        if any(isinstance(drop, torch.nn.Dropout) for drop in module.lora_dropout.values())
    ]
    return sum(widths), sum(dropped)


def _logical_numel(parameter: torch.Tensor) -> int:
    """Element count before 4-bit packing (bitsandbytes stores two values per byte)."""
    quant_state = getattr(parameter, "quant_state", None)
    if quant_state is not None:
        return int(torch.Size(quant_state.shape).numel())
    return parameter.numel()


def load_adapted(adapter_dir: str | Path, device: str = "cpu") -> "PeftModel":
    """The trained model: the base recorded in the adapter's summary, with the adapter on top.

    Lives here, not in the trainer, so that evaluation and inference load a model without
    importing the training loop."""
    adapter_dir = Path(adapter_dir)
    summary = json.loads((adapter_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    base = load_model(
        summary["base_model"],
        quantization=summary["quantization"],
        dtype=torch.float32 if device == "cpu" else DTYPES[summary["dtype"]],
        device=torch.device(device),
        trust_remote_code=summary["settings"]["trust_remote_code"],
    )
    from peft import PeftModel  # seconds of imports: only where an adapter is loaded

    return PeftModel.from_pretrained(base, str(adapter_dir))


def load_merged(merged_dir: str | Path, adapter_dir: str | Path, device: str = "cpu") -> Any:
    """The exported merged model (export.merged) on ``device``, without peft: in float32 on
    the CPU (as :func:`load_adapted` loads the base there), else in training's compute dtype;
    ``trust_remote_code`` as training had it."""
    summary = json.loads((Path(adapter_dir) / SUMMARY_FILE).read_text(encoding="utf-8"))
    return load_model(
        str(merged_dir),
        quantization="none",
        dtype=torch.float32 if device == "cpu" else DTYPES[summary["dtype"]],
        device=torch.device(device),
        trust_remote_code=summary["settings"]["trust_remote_code"],
    )
