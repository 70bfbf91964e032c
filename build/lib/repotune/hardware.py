"""What the training machine has: CPU or CUDA, the GPU's name, memory and compute capability.

The trainer picks its compute dtype and micro-batch from this, so the same config trains on a
laptop CPU, a 6 GB RTX 2060 (fp16, no bf16) and an A100 (bf16) without edits.
"""

import os
from dataclasses import asdict, dataclass
from typing import Any

import torch

from repotune.errors import InputError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Hardware:
    """One training device: ``kind`` is ``cpu`` or ``cuda``; memory in bytes."""

    kind: str
    name: str
    memory_bytes: int
    compute_capability: tuple[int, int] | None = None
    device_count: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description for logs and the training summary."""
        return asdict(self)


def _available_ram() -> int:
    """Memory a new CPU job may use: MemAvailable, else the physical total."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def detect(use_gpu: bool = True, device_index: int = 0) -> Hardware:
    """Describe the device training will run on: CUDA device ``device_index`` when asked for
    and present, else the CPU."""
    if use_gpu and torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(device_index)
        return Hardware(
            kind="cuda",
            name=properties.name,
            memory_bytes=int(properties.total_memory),
            compute_capability=(properties.major, properties.minor),
            device_count=torch.cuda.device_count(),
        )
    return Hardware(kind="cpu", name="cpu", memory_bytes=_available_ram())


def compute_dtype(hardware: Hardware, requested: str = "auto") -> torch.dtype:
    """The dtype matmuls run in: bf16 on CUDA with compute capability >= 8 (Ampere and later),
    fp16 on older GPUs (an RTX 2060 is 7.5: no bf16), fp32 on CPU, unless ``requested`` names one.

    bf16 is preferred where it exists because it needs no loss scaling; fp16 on CPU is slow and
    poorly supported, so it is refused there.
    """
    if requested == "auto":
        if hardware.kind == "cpu":
            return torch.float32
        capability = hardware.compute_capability or (0, 0)
        return torch.bfloat16 if capability >= (8, 0) else torch.float16
    if requested not in DTYPES:
        raise InputError(
            "config train.compute_dtype",
            f"'{requested}' is unknown",
            "use auto, bf16, fp16 or fp32",
        )
    if requested == "fp16" and hardware.kind == "cpu":
        raise InputError(
            "config train.compute_dtype", "fp16 on a CPU is not supported", "use auto, fp32 or bf16"
        )
    return DTYPES[requested]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``bf16``."""
    return {value: key for key, value in DTYPES.items()}[dtype]
