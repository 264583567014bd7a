"""The DeepSpeed launcher and ZeRO configs, checked without DeepSpeed or a GPU: the command lines
for one GPU, several GPUs and several machines, the hostfile, and the configs themselves."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from training.launch import (
    CONFIGS,
    Host,
    LaunchPlan,
    check_config,
    command,
    main,
    parse_hostfile,
    plan_from_args,
)

ARGS = ("--base-model", "/models/base", "--data", "/data/run1", "--output", "/runs/run1")


@pytest.mark.parametrize("zero", [2, 3, "3-offload"])
def test_every_zero_config_is_valid_and_leaves_batch_sizes_to_the_trainer(
    zero: int | str,
) -> None:
    config = check_config(CONFIGS[zero])
    stage = 2 if zero == 2 else 3
    assert config["zero_optimization"]["stage"] == stage  # type: ignore[index]
    assert config["train_micro_batch_size_per_gpu"] == "auto"


def test_a_zero3_config_that_would_save_an_empty_adapter_is_refused(tmp_path: Path) -> None:
    config = json.loads(CONFIGS[3].read_text())
    config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = False
    path = tmp_path / "zero3.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="stage3_gather_16bit_weights_on_model_save"):
        check_config(path)


def test_one_gpu_without_deepspeed_runs_the_trainer_directly() -> None:
    line = command(LaunchPlan(zero=0, training_args=ARGS), python="py")
    assert line == ["py", "-m", "training.lora", *ARGS]


def test_one_machine_runs_the_deepspeed_launcher_with_the_chosen_config() -> None:
    line = command(LaunchPlan(zero=2, gpus=1, training_args=ARGS), python="py")
    assert line[:3] == ["py", "-m", "deepspeed.launcher.runner"]
    assert line[line.index("--num_gpus") + 1] == "1"
    assert line[line.index("--module") + 1] == "training.lora"
    assert line[-2:] == ["--deepspeed", str(CONFIGS[2])]
    assert "--hostfile" not in line

    several = command(LaunchPlan(zero=3, gpus=8, training_args=ARGS), python="py")
    assert several[several.index("--num_gpus") + 1] == "8"
    assert several[-1] == str(CONFIGS[3])


def test_several_machines_come_from_a_hostfile(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# the cluster\ngpu-a slots=8\ngpu-b slots=4  # smaller\n\n")
    plan = LaunchPlan(zero=3, hostfile=hostfile, master_addr="10.0.0.1", training_args=ARGS)

    line = command(plan, python="py")

    assert parse_hostfile(hostfile) == [Host("gpu-a", 8), Host("gpu-b", 4)]
    assert line[line.index("--hostfile") + 1] == str(hostfile)
    assert line[line.index("--num_nodes") + 1] == "2"
    assert line[line.index("--master_addr") + 1] == "10.0.0.1"
    assert plan.world_size() == 12
    with pytest.raises(ValueError, match="master-addr"):
        command(LaunchPlan(zero=3, hostfile=hostfile, training_args=ARGS))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("gpu-a\n", "slots=N"),
        ("gpu-a slots=0\n", "no GPU slots"),
        ("gpu-a slots=2\ngpu-a slots=2\n", "listed twice"),
        ("# nothing\n", "no machines"),
    ],
)
def test_a_bad_hostfile_is_refused_before_anything_starts(
    tmp_path: Path, content: str, message: str
) -> None:
    hostfile = tmp_path / "hosts"
    hostfile.write_text(content)
    with pytest.raises(ValueError, match=message):
        parse_hostfile(hostfile)


def test_several_gpus_without_deepspeed_are_refused() -> None:
    with pytest.raises(ValueError, match="need DeepSpeed"):
        command(LaunchPlan(zero=0, gpus=2, training_args=ARGS))
    with pytest.raises(ValueError, match="--zero"):
        command(LaunchPlan(zero=2, training_args=(*ARGS, "--deepspeed", "x.json")))


def test_the_command_line_passes_what_follows_the_separator_to_training(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plan, dry_run = plan_from_args(["--zero", "3", "--gpus", "2", "--dry-run", "--", *ARGS])
    assert dry_run
    assert plan.training_args == ARGS
    assert plan.zero == 3

    assert main(["--zero", "2", "--gpus", "2", "--dry-run", "--", *ARGS]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[:3] == [sys.executable, "-m", "deepspeed.launcher.runner"]
    assert printed[printed.index("--output") + 1] == "/runs/run1"
