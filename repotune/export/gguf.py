"""GGUF files for llama.cpp (and Ollama): the merged model in f16 and the adapter as a GGUF LoRA.

Written with the ``gguf`` package (llama.cpp's own gguf-py, pinned in requirements.txt):
its :class:`gguf.GGUFWriter` lays out the file and :func:`gguf.get_tensor_name_map` maps
Hugging Face tensor names to llama.cpp's (``transformer.h.0.attn.c_attn`` ->
``blk.0.attn_qkv``). What this module decides, after llama.cpp's converters:

* **hyperparameters** per architecture (:data:`ARCHITECTURES`: GPT-2, which the offline tiny
  preset builds, StarCoder2 and Phi-2, the families llama.cpp also takes LoRA adapters for);
* **layout**: GPT-2's ``Conv1D`` stores weights ``[in, out]``; llama.cpp wants ``[out, in]``
  like every ``nn.Linear``, so those are transposed. 1-D tensors (norms, biases) stay f32, as
  llama.cpp expects; matrices are f16 (or f32);
* **tokenizer**: the byte-level BPE vocabulary and merges as ``tokenizer.ggml.model = gpt2``,
  special tokens as CONTROL tokens, EOS/PAD ids, and no BOS added, so llama.cpp tokenizes a
  prompt into the ids training used (the template's markers are special tokens: llama.cpp
  parses them when asked to parse special tokens);
* **LoRA**: each peft ``lora_A``/``lora_B`` pair becomes ``<tensor>.lora_a``/``.lora_b`` with
  ``adapter.lora.alpha``; llama.cpp scales by alpha / rank, as peft does. peft stores A as
  ``[r, in]`` and B as ``[out, r]`` for Conv1D too (it reads the transposed shape), so B @ A is
  already in llama.cpp's ``[out, in]`` layout and nothing is transposed.
"""

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from safetensors.torch import load_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from repotune.errors import InputError
from repotune.export.merged import ADAPTER_WEIGHTS, PEFT_PREFIX, is_lora_tensor
from repotune.shards.tokenizer import special_tokens

FILE_TYPES = {"f16": gguf.LlamaFileType.MOSTLY_F16, "f32": gguf.LlamaFileType.ALL_F32}
NUMPY_TYPES = {"f16": np.float16, "f32": np.float32}


@dataclass(frozen=True)
class Architecture:
    """What llama.cpp needs to know of one Hugging Face ``model_type``."""

    arch: gguf.MODEL_ARCH
    hyperparameters: Callable[[dict[str, Any], gguf.GGUFWriter], None]
    pre_tokenizer: str
    """llama.cpp's name for how the family's tokenizer splits text before BPE (``gpt-2`` is
    GPT-2's regex, which our trained byte-level BPE uses too)."""
    transposed: tuple[str, ...] = ()
    """Module name endings whose 2-D weights Hugging Face stores ``[in, out]`` (Conv1D)."""


def _gpt2(config: dict[str, Any], writer: gguf.GGUFWriter) -> None:
    writer.add_context_length(config["n_positions"])
    writer.add_embedding_length(config["n_embd"])
    writer.add_feed_forward_length(config.get("n_inner") or 4 * config["n_embd"])
    writer.add_block_count(config["n_layer"])
    writer.add_head_count(config["n_head"])
    writer.add_layer_norm_eps(config["layer_norm_epsilon"])


def _rope(config: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings: transformers 5 keeps them in ``rope_parameters``, older configs inline."""
    return {**config, **(config.get("rope_parameters") or {})}


def _starcoder2(config: dict[str, Any], writer: gguf.GGUFWriter) -> None:
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_rope_freq_base(float(_rope(config)["rope_theta"]))
    writer.add_layer_norm_eps(config["norm_epsilon"])


def _phi2(config: dict[str, Any], writer: gguf.GGUFWriter) -> None:
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_layer_norm_eps(config["layer_norm_eps"])
    rope = _rope(config)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_rope_dimension_count(int(rope["partial_rotary_factor"] * hidden) // heads)


ARCHITECTURES: dict[str, Architecture] = {
    "gpt2": Architecture(
        arch=gguf.MODEL_ARCH.GPT2,
        hyperparameters=_gpt2,
        pre_tokenizer="gpt-2",
        transposed=(
            ".attn.c_attn.weight",
            ".attn.c_proj.weight",
            ".mlp.c_fc.weight",
            ".mlp.c_proj.weight",
        ),
    ),
    "starcoder2": Architecture(
        arch=gguf.MODEL_ARCH.STARCODER2, hyperparameters=_starcoder2, pre_tokenizer="starcoder"
    ),
    "phi": Architecture(arch=gguf.MODEL_ARCH.PHI2, hyperparameters=_phi2, pre_tokenizer="phi-2"),
}


def architecture(config: dict[str, Any]) -> Architecture:
    """The llama.cpp description of a model config; a one-line error for one we cannot write."""
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise InputError(
            f"model type '{model_type}'",
            f"has no GGUF export here (supported: {', '.join(sorted(ARCHITECTURES))})",
            "turn export.gguf off; convert export/merged/ with llama.cpp's convert_hf_to_gguf.py",
        )
    return ARCHITECTURES[model_type]


def _arch_name(spec: Architecture) -> str:
    return gguf.MODEL_ARCH_NAMES[spec.arch]


def gguf_tensor_name(name_map: gguf.TensorNameMap, hf_name: str) -> str:
    """llama.cpp's name of a Hugging Face tensor (peft's ``base_model.model.`` prefix ignored)."""
    plain = hf_name.removeprefix("base_model.model.")
    mapped = name_map.get_name(plain, try_suffixes=(".weight", ".bias"))
    if mapped is None:
        raise InputError(
            f"tensor '{hf_name}'", "has no llama.cpp name", "this architecture is not supported"
        )
    return mapped


def add_tokenizer(
    writer: gguf.GGUFWriter, tokenizer: PreTrainedTokenizerBase, vocab_size: int, pre: str
) -> None:
    """Vocabulary, token types, merges and special ids of a byte-level BPE tokenizer."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    model = backend["model"]
    if model["type"] != "BPE" or (backend.get("decoder") or {}).get("type") != "ByteLevel":
        raise InputError(
            "tokenizer", "is not a byte-level BPE", "GGUF export supports GPT-2-style tokenizers"
        )
    specials = special_tokens(tokenizer)
    added = {
        token.content for token in tokenizer.backend_tokenizer.get_added_tokens_decoder().values()
    }
    tokens: list[str] = []
    types: list[int] = []
    for index in range(vocab_size):
        token = tokenizer.convert_ids_to_tokens(index) if index < len(tokenizer) else None
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(token)
        if token in specials:
            types.append(gguf.TokenType.CONTROL)
        elif token in added:
            types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in model["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_bos_token_id(
        tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    )
    if tokenizer.pad_token_id is not None:
        writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _matrix(tensor: torch.Tensor, dtype: str) -> np.ndarray:
    """1-D tensors in f32 (llama.cpp's norms and biases), matrices in the file's dtype."""
    array = tensor.detach().to(torch.float32).contiguous().numpy()
    return array if array.ndim == 1 else array.astype(NUMPY_TYPES[dtype])


def model_tensors(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """The weights llama.cpp reads: the state dict without a tied output head or buffers."""
    state = model.state_dict()
    tied = model.config.tie_word_embeddings
    output = model.get_output_embeddings()
    head = {f"{name}.weight" for name, module in model.named_modules() if module is output}
    return {
        name: tensor
        for name, tensor in state.items()
        if not (tied and name in head) and not name.endswith((".attn.bias", ".attn.masked_bias"))
    }


def write_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: str | Path,
    name: str,
    dtype: str = "f16",
) -> None:
    """``model`` (merged, or a plain base) as one GGUF file at ``path``."""
    config = model.config.to_dict()
    spec = architecture(config)
    writer = gguf.GGUFWriter(str(path), _arch_name(spec))
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    spec.hyperparameters(config, writer)
    writer.add_file_type(FILE_TYPES[dtype])
    add_tokenizer(writer, tokenizer, config["vocab_size"], spec.pre_tokenizer)
    name_map = gguf.get_tensor_name_map(spec.arch, _block_count(config))
    for hf_name, tensor in model_tensors(model).items():
        if hf_name.endswith(spec.transposed):
            tensor = tensor.T
        writer.add_tensor(gguf_tensor_name(name_map, hf_name), _matrix(tensor, dtype))
    _finish(writer)


def _block_count(config: dict[str, Any]) -> int:
    return int(config.get("n_layer") or config["num_hidden_layers"])


def lora_pairs(adapter_dir: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Base weight name -> (lora_A, lora_B) of a peft adapter. Layers trained in full
    (``modules_to_save``) are not pairs: :func:`repotune.export.merged.lora_base` puts them
    into the base GGUF the LoRA applies to."""
    tensors = load_file(str(Path(adapter_dir) / ADAPTER_WEIGHTS))
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if not is_lora_tensor(key):
            continue
        part = "lora_A" if ".lora_A." in key else "lora_B"
        base = key.removesuffix(f".{part}.weight").removeprefix(PEFT_PREFIX) + ".weight"
        pairs.setdefault(base, {})[part] = tensor
    return {base: (pair["lora_A"], pair["lora_B"]) for base, pair in sorted(pairs.items())}


def lora_alpha(adapter_config: dict[str, Any]) -> float:
    """The alpha that makes llama.cpp's alpha / rank equal peft's scaling (rsLoRA included)."""
    alpha, rank = float(adapter_config["lora_alpha"]), int(adapter_config["r"])
    if adapter_config.get("use_rslora"):
        return alpha * math.sqrt(rank)
    return alpha


def write_lora(
    adapter_dir: str | Path, base_config: dict[str, Any], path: str | Path, name: str
) -> None:
    """The peft adapter in ``adapter_dir`` as a GGUF LoRA for the base described by
    ``base_config`` (use it with the base model's GGUF: ``llama-server -m base --lora this``)."""
    spec = architecture(base_config)
    adapter_config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text("utf-8"))
    if (
        adapter_config.get("use_dora")
        or adapter_config.get("rank_pattern")
        or adapter_config.get("alpha_pattern")
    ):
        raise InputError(
            f"adapter '{adapter_dir}'",
            "uses DoRA or per-module ranks, which GGUF LoRA cannot express",
            "use export.merged or the merged GGUF instead",
        )
    writer = gguf.GGUFWriter(str(path), _arch_name(spec))
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, lora_alpha(adapter_config))
    name_map = gguf.get_tensor_name_map(spec.arch, _block_count(base_config))
    for base, (lora_a, lora_b) in lora_pairs(adapter_dir).items():
        target = gguf_tensor_name(name_map, base)
        writer.add_tensor(f"{target}.lora_a", _matrix(lora_a, "f32"))
        writer.add_tensor(f"{target}.lora_b", _matrix(lora_b, "f32"))
    _finish(writer)
