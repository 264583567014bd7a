"""`make eval-nlu`: k-fold cross-validation of the Rasa NLU model (intents, English and Spanish).

Runs `rasa test nlu --cross-validation` in the Rasa environment, writes the figures into
docs/EVALUATION.md and prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.doc_section import write_section  # noqa: E402

DOC = ROOT / "docs" / "EVALUATION.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="eval-nlu-") as tmp:
        print(f">> rasa test nlu, {args.folds}-fold cross-validation (a few minutes)", flush=True)
        subprocess.run(
            [
                str(ROOT / ".venv-rasa" / "bin" / "rasa"),
                "test",
                "nlu",
                "--nlu",
                "bot/data/nlu.yml",
                "--config",
                "bot/config.yml",
                "--cross-validation",
                "--folds",
                str(args.folds),
                "--out",
                tmp,
            ],
            cwd=ROOT,
            env={
                **os.environ,
                "RASA_TELEMETRY_ENABLED": "false",
                "RASA_CACHE_DIRECTORY": str(ROOT / "var" / "rasa" / "cache"),
            },
            check=True,
        )
        report = json.loads((Path(tmp) / "intent_report.json").read_text())
    intents = {
        name: round(values["f1-score"], 3)
        for name, values in report.items()
        if isinstance(values, dict) and "f1-score" in values and "avg" not in name
    }
    result = {
        "evaluation": "nlu_intents",
        "folds": args.folds,
        "accuracy": round(report["accuracy"], 3),
        "macro_f1": round(report["macro avg"]["f1-score"], 3),
        "weighted_f1": round(report["weighted avg"]["f1-score"], 3),
        "examples": int(report["macro avg"]["support"]),
        "per_intent_f1": intents,
    }
    if not args.no_doc:
        rows = "\n".join(f"| {name} | {f1} |" for name, f1 in sorted(intents.items()))
        section = (
            f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}, `make eval-nlu`\n\n"
            f"Intent accuracy **{result['accuracy']}**, macro F1 {result['macro_f1']}, "
            f"weighted F1 {result['weighted_f1']} ({result['examples']} examples, "
            f"{args.folds} folds).\n\n| intent | F1 |\n|---|---|\n{rows}"
        )
        write_section(DOC, "eval-nlu", section)
    print(json.dumps({k: v for k, v in result.items() if k != "per_intent_f1"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
