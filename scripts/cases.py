"""Reading the JSON-lines case sets (../shared/eval, tests/cases and its folders), shared by the
evaluation, the benchmark and the second reader's training."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def read_cases(folders: Iterable[Path], pattern: str = "*.jsonl") -> list[dict[str, Any]]:
    """Every row of every file matching `pattern` in `folders` (not their subfolders), each with
    the file's stem as "set"."""
    rows: list[dict[str, Any]] = []
    for folder in folders:
        for path in sorted(folder.glob(pattern)):
            with path.open(encoding="utf-8") as f:
                rows += [{**json.loads(line), "set": path.stem} for line in f if line.strip()]
    return rows
