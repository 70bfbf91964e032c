"""The accelerate command for multi-GPU training."""

import pytest

from repotune.train.launch import accelerate_command


def test_accelerate_command_runs_one_ddp_process_per_gpu():
    command = accelerate_command("results/m/train_state/request.json", 4, python="/py")
    assert command[:3] == ["/py", "-m", "accelerate.commands.launch"]
    assert "--multi_gpu" in command
    assert command[command.index("--num_processes") + 1] == "4"
    assert command[command.index("--mixed_precision") + 1] == "no"
    assert command[-3:] == [
        "--module",
        "repotune.train.trainer",
        "results/m/train_state/request.json",
    ]


def test_single_gpu_needs_no_launcher():
    with pytest.raises(ValueError, match="2 or more"):
        accelerate_command("request.json", 1)
