"""Starts `training.lora` under DeepSpeed on one GPU, several GPUs of one machine, or several
machines listed in a hostfile, with a ZeRO config from training/deepspeed/.

    python -m training.launch --zero 2 -- --base-model PATH --data DIR --output DIR
    python -m training.launch --zero 3 --gpus 4 -- ...
    python -m training.launch --zero 3 --hostfile hosts --master-addr gpu-node-1 -- ...
    python -m training.launch --dry-run ...   # print the command instead of running it

Everything after `--` goes to `python -m training.lora` on every process. A hostfile has one
line per machine, `name slots=GPUS` (training/deepspeed/hostfile.example); DeepSpeed's launcher
reaches the machines over ssh (pdsh when installed), so each needs the same checkout, virtual
environment and data paths. Without DeepSpeed (`--zero 0`) one process runs on one device.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "deepspeed"
CONFIGS = {
    2: CONFIG_DIR / "zero2.json",
    3: CONFIG_DIR / "zero3.json",
    "3-offload": CONFIG_DIR / "zero3_offload.json",
}
DEFAULT_MASTER_PORT = 29500
_HOST_LINE = re.compile(r"^(?P<name>[A-Za-z0-9_.:-]+)\s+slots=(?P<slots>\d+)$")


@dataclass(frozen=True)
class Host:
    name: str
    slots: int


def parse_hostfile(path: Path) -> list[Host]:
    """The machines of a DeepSpeed hostfile; '#' starts a comment. Refuses what DeepSpeed's own
    parser would misread: a line without `slots=`, zero slots, a machine listed twice."""
    hosts: list[Host] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _HOST_LINE.match(line)
        if match is None:
            raise ValueError(f"{path}:{number}: expected 'hostname slots=N', got {raw.strip()!r}")
        host = Host(match["name"], int(match["slots"]))
        if host.slots < 1:
            raise ValueError(f"{path}:{number}: {host.name} has no GPU slots")
        if any(h.name == host.name for h in hosts):
            raise ValueError(f"{path}:{number}: {host.name} is listed twice")
        hosts.append(host)
    if not hosts:
        raise ValueError(f"{path}: no machines listed")
    return hosts


@dataclass(frozen=True)
class LaunchPlan:
    zero: int | str  # 0 (no DeepSpeed), 2, 3 or "3-offload"
    gpus: int | None = None  # GPUs per machine; None: all the launcher finds
    hostfile: Path | None = None
    master_addr: str | None = None
    master_port: int = DEFAULT_MASTER_PORT
    training_args: tuple[str, ...] = ()

    @property
    def config(self) -> Path | None:
        return CONFIGS[self.zero] if self.zero else None

    def world_size(self, available_gpus: int | None = None) -> int | None:
        """How many training processes this plan starts (None when the launcher decides)."""
        if self.hostfile is not None:
            hosts = parse_hostfile(self.hostfile)
            return sum(min(h.slots, self.gpus) if self.gpus else h.slots for h in hosts)
        return self.gpus or available_gpus


def command(plan: LaunchPlan, *, python: str = sys.executable) -> list[str]:
    """The command line that runs the plan."""
    if "--deepspeed" in plan.training_args:
        raise ValueError("pass the ZeRO stage with --zero, not --deepspeed after '--'")
    if not plan.zero:
        if plan.hostfile is not None or (plan.gpus or 1) > 1:
            raise ValueError("several GPUs or machines need DeepSpeed: choose --zero 2 or 3")
        return [python, "-m", "training.lora", *plan.training_args]
    assert plan.config is not None
    launcher = [python, "-m", "deepspeed.launcher.runner"]
    if plan.hostfile is not None:
        hosts = parse_hostfile(plan.hostfile)
        if not plan.master_addr:
            raise ValueError("several machines need --master-addr (the first machine's address)")
        launcher += [
            "--hostfile",
            str(plan.hostfile),
            "--num_nodes",
            str(len(hosts)),
            "--master_addr",
            plan.master_addr,
        ]
    if plan.gpus:
        launcher += ["--num_gpus", str(plan.gpus)]
    launcher += ["--master_port", str(plan.master_port), "--module", "training.lora"]
    return [*launcher, *plan.training_args, "--deepspeed", str(plan.config)]


def check_config(path: Path) -> dict[str, object]:
    """A ZeRO config as DeepSpeed and the Trainer read it, with the checks that catch a bad
    edit before a multi-machine job starts."""
    config = json.loads(path.read_text(encoding="utf-8"))
    stage = config.get("zero_optimization", {}).get("stage")
    if stage not in (2, 3):
        raise ValueError(f"{path}: zero_optimization.stage must be 2 or 3, not {stage!r}")
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        # "auto": the Trainer fills them from its own arguments, so they never disagree.
        if config.get(key) != "auto":
            raise ValueError(f'{path}: {key} should be "auto" (the Trainer sets it)')
    if stage == 3 and not config["zero_optimization"].get(
        "stage3_gather_16bit_weights_on_model_save"
    ):
        raise ValueError(
            f"{path}: ZeRO-3 needs stage3_gather_16bit_weights_on_model_save, or the saved "
            "adapter is empty"
        )
    return dict(config)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.launch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--zero", choices=["0", "2", "3", "3-offload"], default="2")
    parser.add_argument("--gpus", type=int, help="GPUs per machine (default: all)")
    parser.add_argument("--hostfile", type=Path)
    parser.add_argument("--master-addr")
    parser.add_argument("--master-port", type=int, default=DEFAULT_MASTER_PORT)
    parser.add_argument("--dry-run", action="store_true", help="print the command only")
    parser.add_argument("training_args", nargs=argparse.REMAINDER)
    return parser


def plan_from_args(argv: Sequence[str]) -> tuple[LaunchPlan, bool]:
    args = _parser().parse_args(argv)
    rest = list(args.training_args)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    zero: int | str = args.zero if args.zero == "3-offload" else int(args.zero)
    plan = LaunchPlan(
        zero=zero,
        gpus=args.gpus,
        hostfile=args.hostfile,
        master_addr=args.master_addr,
        master_port=args.master_port,
        training_args=tuple(rest),
    )
    return plan, bool(args.dry_run)


def main(argv: Sequence[str] | None = None) -> int:
    plan, dry_run = plan_from_args(sys.argv[1:] if argv is None else argv)
    if plan.config is not None:
        check_config(plan.config)
    line = command(plan)
    if dry_run:
        print(" ".join(line))
        return 0
    if plan.zero and not _importable("deepspeed"):
        print(
            "DeepSpeed is not installed: install requirements/train-gpu.txt on the GPU machines",
            file=sys.stderr,
        )
        return 2
    os.execv(line[0], line)  # noqa: S606  # the launcher replaces this process


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    raise SystemExit(main())
