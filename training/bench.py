"""`make bench-train`: a real fine-tuning run on a small base model built on the spot, timed.

Builds a ~0.1B-parameter llama model (training/tiny_model.py's BENCH_SHAPE, random weights, a
tokenizer trained on the curated dialogues), writes the curated dataset, and runs
`training.lora` through training/launch.py (DeepSpeed ZeRO-2 by default) for a fixed number of
steps. The last line printed is one JSON object: tokens_per_s, peak_memory_gb, seconds, steps,
the device and the launch settings, for docs/BENCHMARKS.md.

    python -m training.bench [--zero 2|3|0] [--gpus N] [--steps 50] [--shape bench|tiny]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.datasets import build_dataset, load_curated, write_dataset
from training.launch import LaunchPlan, command
from training.tiny_model import BENCH_SHAPE, TinyShape, write_tiny_base_model


def _device() -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        return {
            "device": torch.cuda.get_device_name(0),
            "gpus_visible": torch.cuda.device_count(),
        }
    return {"device": "cpu", "gpus_visible": 0}


def run(
    *,
    work: Path,
    zero: int | str,
    gpus: int | None,
    steps: int,
    shape: TinyShape,
    batch_size: int,
    max_length: int,
) -> dict[str, Any]:
    curated = load_curated()
    base = write_tiny_base_model(
        work / "base", [t.content for d in curated for t in d.turns], shape=shape
    )
    write_dataset(build_dataset(curated=curated), work / "data")
    import torch

    on_gpu = torch.cuda.is_available()
    training_args = [
        "--base-model", str(base),
        "--data", str(work / "data"),
        "--output", str(work / "run"),
        "--max-steps", str(steps),
        "--save-steps", str(steps),
        "--logging-steps", str(max(1, steps // 10)),
        "--batch-size", str(batch_size),
        "--max-length", str(max_length),
        "--no-resume",
    ]  # fmt: skip
    if on_gpu:
        training_args.append("--bf16")
    else:
        training_args.append("--use-cpu")
    line = command(LaunchPlan(zero=zero, gpus=gpus, training_args=tuple(training_args)))
    started = time.monotonic()
    subprocess.run(line, check=True)  # noqa: S603  # our own command line, no shell
    wall = time.monotonic() - started
    metrics = json.loads((work / "run" / "metrics.json").read_text(encoding="utf-8"))["result"]
    return {
        "tokens_per_s": metrics["tokens_per_s"],
        "peak_memory_gb": metrics["peak_memory_gb"],
        "seconds": round(wall, 2),
        "steps": metrics["global_step"],
        "train_loss": metrics["train_loss"],
        "zero": zero,
        "gpus": gpus,
        "batch_size": batch_size,
        "max_length": max_length,
        "hidden_size": shape.hidden_size,
        "layers": shape.num_hidden_layers,
        **_device(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.bench", description=__doc__)
    parser.add_argument("--zero", choices=["0", "2", "3", "3-offload"], default="2")
    parser.add_argument("--gpus", type=int)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--shape", choices=["bench", "tiny"], default="bench")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--work", type=Path, help="keep the files here (default: a temp dir)")
    args = parser.parse_args(argv)
    zero: int | str = args.zero if args.zero == "3-offload" else int(args.zero)
    shape = BENCH_SHAPE if args.shape == "bench" else TinyShape()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        result = run(
            work=args.work or Path(scratch),
            zero=zero,
            gpus=args.gpus,
            steps=args.steps,
            shape=shape,
            batch_size=args.batch_size,
            max_length=min(args.max_length, shape.max_position_embeddings),
        )
    sys.stdout.flush()
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
