"""`make bench-train` on CPU in miniature: the tiny shape, no DeepSpeed, two steps; the last
line is the JSON object docs/BENCHMARKS.md records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from training.bench import main


def test_the_benchmark_ends_with_one_json_line_of_figures(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["--zero", "0", "--shape", "tiny", "--steps", "2", "--batch-size", "2",
         "--max-length", "512", "--work", str(tmp_path)]
    )  # fmt: skip

    assert code == 0
    result = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert result["tokens_per_s"] > 0
    assert result["peak_memory_gb"] > 0
    assert result["steps"] == 2
    assert result["device"] == "cpu"
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
