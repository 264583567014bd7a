"""`make eval-safety`: the clinical engine on the triage and crisis case sets.

Reads ../shared/eval (triage_dev, crisis_dev), the project's own cases in tests/cases/ and the
blind cases in tests/cases/blind*/ (written by people who never saw the rules), and
prints, per language and overall: emergency recall, crisis recall, crisis false-positive rate on
hard negatives, triage accuracy, under- and over-triage. `--misses` lists every case the engine got
wrong with its explanation; `--record` writes the figures into docs/EVALUATION.md. The last line is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.clinical.engine import ClinicalEngine  # noqa: E402
from bot.clinical.ruleset import LEVELS  # noqa: E402
from scripts.cases import read_cases  # noqa: E402
from scripts.doc_section import write_section  # noqa: E402

SHARED_EVAL = ROOT.parent / "shared" / "eval"
OWN_CASES = ROOT / "tests" / "cases"
RANK = {level: i for i, level in enumerate(LEVELS)}


def load_sets(sources: Iterable[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    folders = [{"dev": SHARED_EVAL, "own": OWN_CASES}.get(s, OWN_CASES / s) for s in sources]
    return read_cases(folders, "triage*.jsonl"), read_cases(folders, "crisis*.jsonl")


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def score(engine: ClinicalEngine, triage: list[dict[str, Any]], crisis: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    per: dict[str, Counter[str]] = defaultdict(Counter)
    misses: list[dict[str, Any]] = []
    confusion: Counter[tuple[str, str]] = Counter()
    for row in triage:
        decision = engine.assess(row["text"], language=row["language"])
        gold, got = row["disposition"], decision.disposition
        confusion[(gold, got)] += 1
        for key in (row["language"], "overall"):
            c = per[key]
            c["triage"] += 1
            c["triage_correct"] += gold == got
            c["under"] += RANK[got] < RANK[gold]
            c["under_two"] += RANK[got] <= RANK[gold] - 2
            c["over"] += RANK[got] > RANK[gold]
            if gold == "emergency":
                c["emergency"] += 1
                c["emergency_hit"] += got == "emergency"
        if gold != got:
            misses.append({"id": row["id"], "gold": gold, "got": got, "text": row["text"],
                           "why": decision.explanation()})  # fmt: skip
    for row in crisis:
        decision = engine.assess(row["text"], language=row["language"])
        positive = row["label"] == "crisis"
        for key in (row["language"], "overall"):
            c = per[key]
            if positive:
                c["crisis"] += 1
                c["crisis_hit"] += decision.crisis
            else:
                c["negatives"] += 1
                c["false_positive"] += decision.crisis
        if positive != decision.crisis:
            misses.append({"id": row["id"], "gold": row["label"], "got": decision.crisis,
                           "text": row["text"], "why": decision.explanation()})  # fmt: skip
    figures = {}
    for key, c in per.items():
        figures[key] = {
            "emergency_recall": _ratio(c["emergency_hit"], c["emergency"]),
            "crisis_recall": _ratio(c["crisis_hit"], c["crisis"]),
            "crisis_fp_rate": _ratio(c["false_positive"], c["negatives"]),
            "triage_accuracy": _ratio(c["triage_correct"], c["triage"]),
            "under_triage_rate": _ratio(c["under"], c["triage"]),
            "over_triage_rate": _ratio(c["over"], c["triage"]),
            "under_by_two_levels": c["under_two"],
            "cases": c["triage"] + c["crisis"] + c["negatives"],
        }
    return figures, misses, confusion


def _table(figures: dict[str, dict[str, Any]]) -> list[str]:
    keys = ["emergency_recall", "crisis_recall", "crisis_fp_rate", "triage_accuracy",
            "under_triage_rate", "over_triage_rate", "under_by_two_levels", "cases"]  # fmt: skip
    lines = ["| | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for group in ("en", "es", "overall"):
        if group in figures:
            values = [str(figures[group].get(k)) for k in keys]
            lines.append(f"| {group} | " + " | ".join(values) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Clinical engine on the case sets")
    parser.add_argument(
        "--sets",
        default="dev,own,blind,blind2,blind3,blind4,blind5",
        help="dev (../shared/eval), own (tests/cases), or a folder under tests/cases (blind to "
        "blind5: see tests/cases/README.md for which are still held out)",
    )
    parser.add_argument("--misses", action="store_true", help="list every miss with its reasons")
    parser.add_argument("--record", action="store_true", help="write docs/EVALUATION.md")
    args = parser.parse_args(argv)
    sources = [s for s in args.sets.split(",") if s]
    if "dev" in sources and not SHARED_EVAL.exists():
        print(f"note: {SHARED_EVAL} not found; scoring the project's own cases only",
              file=sys.stderr)  # fmt: skip
        sources = [s for s in sources if s != "dev"]
    started = time.perf_counter()
    engine = ClinicalEngine()
    by_source: dict[str, dict[str, dict[str, Any]]] = {}
    record: list[str] = []
    all_misses: list[dict[str, Any]] = []
    for group in [*sources, "all"] if len(sources) > 1 else sources:
        triage, crisis = load_sets(sources if group == "all" else [group])
        print(f"\n== {group}: {len(triage)} triage and {len(crisis)} crisis cases, rules "
              f"{engine.version_tag}")  # fmt: skip
        figures, misses, confusion = score(engine, triage, crisis)
        by_source[group] = figures
        if group == "all" or len(sources) == 1:
            all_misses = misses
        for key in ("en", "es", "overall"):
            if key in figures:
                print(f"{key:8} " + "  ".join(f"{k}={v}" for k, v in figures[key].items()))
        wrong = ", ".join(f"{g}->{p}: {n}" for (g, p), n in sorted(confusion.items()) if g != p)
        print("confusion (gold -> predicted): " + (wrong or "none"))
        record += [f"**{group}** ({len(triage)} triage, {len(crisis)} crisis cases)", "",
                   *_table(figures), "", f"Triage errors (gold -> predicted): {wrong or 'none'}.",
                   ""]  # fmt: skip
    if args.misses:
        for miss in all_misses:
            print(json.dumps(miss, ensure_ascii=False))
    overall = by_source["all" if len(sources) > 1 else sources[0]].get("overall", {})
    headline: dict[str, Any] = {
        k: overall.get(k)
        for k in (
            "emergency_recall",
            "crisis_recall",
            "crisis_fp_rate",
            "triage_accuracy",
            "under_triage_rate",
            "over_triage_rate",
        )
    }
    for source in sources:
        dev_or_own = by_source[source].get("overall", {})
        headline[source] = {k: dev_or_own.get(k) for k in ("emergency_recall", "crisis_recall",
                            "crisis_fp_rate", "triage_accuracy", "under_triage_rate")}  # fmt: skip
    headline.update({"sets": sources, "rules_version": engine.version_tag,
                     "seconds": round(time.perf_counter() - started, 1)})  # fmt: skip
    if args.record:
        write_section(
            ROOT / "docs" / "EVALUATION.md",
            "eval-safety",
            "\n".join(
                [
                    f"Last run: `make eval-safety` ({time.strftime('%Y-%m-%d')}, rules "
                    f"{engine.version_tag}). dev = ../shared/eval development sets; "
                    "own = the project's cases in tests/cases/, written separately from the "
                    "rules as a check against over-fitting.",
                    "",
                    *record,
                ]
            ),
        )
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
