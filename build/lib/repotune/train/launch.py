"""Multi-GPU training: the ``accelerate launch`` command that starts one process per GPU.

Each process runs ``python -m repotune.train.trainer REQUEST.json``; the trainer joins the process
group accelerate sets up (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), wraps the model in DDP,
takes every ``world``-th block of each step and lets rank 0 write checkpoints and outputs.
Mixed precision stays ``no`` here because the trainer chooses the compute dtype itself.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from repotune.atomic import write_text
from repotune.train.trainer import TrainRequest

ROOT = Path(__file__).resolve().parent.parent


def accelerate_command(
    request_path: str | Path, num_gpus: int, python: str = sys.executable
) -> list[str]:
    """The argv that trains with ``num_gpus`` DDP processes on this machine."""
    if num_gpus < 2:
        raise ValueError(f"accelerate launch is for 2 or more GPUs, got {num_gpus}")
    return [
        python, "-m", "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes", str(num_gpus),
        "--num_machines", "1",
        "--mixed_precision", "no",
        "--dynamo_backend", "no",
        "--module", "repotune.train.trainer",
        str(request_path),
    ]  # fmt: skip


def run_distributed(request: TrainRequest, num_gpus: int) -> None:
    """Write the request next to the train state and run the accelerate command; output goes
    to this process's stderr (the rule's log). Raises ``RuntimeError`` when training fails."""
    request_path = Path(request.state_dir) / "request.json"
    write_text(request_path, json.dumps(dataclasses.asdict(request), indent=2))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        accelerate_command(request_path, num_gpus),
        cwd=ROOT,
        env=env,
        stdout=sys.stderr,
        stderr=sys.stderr,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"distributed training exited with status {result.returncode}")
