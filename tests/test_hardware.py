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
