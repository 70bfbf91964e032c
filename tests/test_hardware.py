"""Compute dtype from hardware; loading errors that must be one line, not a traceback."""

import os
import sys

import pytest
import torch

from repotune import modeling
from repotune.errors import InputError
from repotune.hardware import Hardware, compute_dtype, detect

RTX_2060 = Hardware("cuda", "NVIDIA GeForce RTX 2060", 6 * 1024**3, (7, 5), 1)
A100 = Hardware("cuda", "NVIDIA A100", 40 * 1024**3, (8, 0), 1)
CPU = Hardware("cpu", "cpu", 8 * 1024**3)


def test_dtype_follows_compute_capability():
    assert compute_dtype(RTX_2060) == torch.float16
    assert compute_dtype(A100) == torch.bfloat16
    assert compute_dtype(CPU) == torch.float32
    assert compute_dtype(A100, "fp32") == torch.float32
    with pytest.raises(InputError, match="fp16 on a CPU"):
        compute_dtype(CPU, "fp16")


def test_detect_without_gpu_reports_cpu_memory():
    found = detect(use_gpu=False)
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    # In bytes: a reading in kB (or pages) would fall below the bound, one too large above.
    assert found.kind == "cpu" and physical / 1024 < found.memory_bytes <= physical


def test_4bit_without_loadable_bitsandbytes_is_an_input_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import now raises ImportError
    with pytest.raises(InputError, match=r"bitsandbytes cannot be loaded.*quantization: none"):
        modeling.load_model(
            "unused", quantization="nf4", dtype=torch.float32, device=torch.device("cpu")
        )


def test_model_missing_offline_names_the_download_command(monkeypatch):
    monkeypatch.setattr(modeling, "is_offline_mode", lambda: True)
    with pytest.raises(
        InputError, match=r"'repotune-test/absent'.*hf download repotune-test/absent"
    ):
        modeling.load_model(
            "repotune-test/absent", quantization="none", dtype=torch.float32,
            device=torch.device("cpu"),
        )  # fmt: skip


def test_unknown_quantization_is_an_input_error():
    with pytest.raises(InputError, match="nf4, int8 or none"):
        modeling.quantization_config("fp4", torch.float32)


@pytest.mark.parametrize("width", [32, 96])
def test_4bit_on_cpu_with_layers_narrower_than_a_block_is_an_input_error(tmp_path, width):
    """bitsandbytes packs a CPU 4-bit weight in blocks of 64 inputs: a narrower layer (a test
    preset's n_embd 32) failed at the first forward pass with a reshape error from inside
    bitsandbytes; now loading names the layer and what to change."""
    from bitsandbytes.functional import has_avx512bf16
    from transformers import GPT2Config, GPT2LMHeadModel

    if not has_avx512bf16():
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes does not repack 4-bit weights")
    config = GPT2Config(n_layer=1, n_head=2, n_embd=width, vocab_size=64, n_positions=16)
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    with pytest.raises(InputError, match=rf"{width} inputs.*multiple of 64.*quantization: none"):
        modeling.load_model(
            str(tmp_path), quantization="nf4", dtype=torch.float32, device=torch.device("cpu")
        )


def test_4bit_on_cpu_with_layers_a_multiple_of_a_block_wide_runs(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=1, n_head=2, n_embd=64, vocab_size=64, n_positions=16)
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    model = modeling.load_model(
        str(tmp_path), quantization="nf4", dtype=torch.float32, device=torch.device("cpu")
    ).eval()
    with torch.no_grad():  # where the CPU kernel repacks the weights
        assert torch.isfinite(model(input_ids=torch.arange(8)[None]).logits).all()
