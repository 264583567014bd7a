"""`make bench-safety`: what the clinical safety layer adds to every message.

Times `RuleBasedSafety.assess` per message over every case text we have (the shared development
sets and the project's own cases: triage, crisis, adversarial, knowledge-base questions), side by
side in the same run with the baseline every message already pays: text normalisation and
language detection. Reports p50/p95/p99/max per message and the ratio to the baseline, writes
docs/BENCHMARKS.md, and prints one JSON line last (`p95_ms`). The goal: p95 at most 2 ms.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.language import detect_language  # noqa: E402
from bot.safety import RuleBasedSafety  # noqa: E402
from bot.text import normalize_for_understanding  # noqa: E402
from scripts.cases import read_cases  # noqa: E402
from scripts.doc_section import write_section  # noqa: E402

SOURCES = [ROOT.parent / "shared" / "eval", ROOT / "tests" / "cases"]
DOC = ROOT / "docs" / "BENCHMARKS.md"


def corpus() -> list[tuple[str, str]]:
    texts = [
        (row["text"], row.get("language", "en"))
        for row in read_cases(SOURCES)
        if isinstance(row.get("text"), str) and row["text"].strip()
    ]
    if not texts:
        safety = RuleBasedSafety()
        texts = [(e.text, e.language) for r in safety.engine.ruleset.rules for e in r.examples]
    return texts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--passes", type=int, default=20, help="times over the whole corpus")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/BENCHMARKS.md")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    safety = RuleBasedSafety()
    load_s = time.perf_counter() - started
    messages = corpus()
    print(f"{len(messages)} messages x {args.passes} passes; rules loaded in {load_s:.2f} s",
          file=sys.stderr)  # fmt: skip
    for text, language in messages:  # warm-up: compiled patterns, caches
        safety.assess(normalize_for_understanding(text), language=language)
    safety_ms: list[float] = []
    baseline_ms: list[float] = []
    gc.collect()
    gc.freeze()
    for n in range(args.passes):
        for text, language in messages:
            t0 = time.perf_counter()
            understood = normalize_for_understanding(text)
            detect_language(understood, supported=["en", "es"], fallback=language)
            t1 = time.perf_counter()
            safety.assess(understood, language=language)
            t2 = time.perf_counter()
            baseline_ms.append((t1 - t0) * 1000)
            safety_ms.append((t2 - t1) * 1000)
        print(f"  pass {n + 1}/{args.passes}", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    figures = {
        "messages": len(messages),
        "samples": len(safety_ms),
        "p50_ms": round(statistics.median(safety_ms), 3),
        "p95_ms": round(percentile(safety_ms, 95), 3),
        "p99_ms": round(percentile(safety_ms, 99), 3),
        "max_ms": round(max(safety_ms), 3),
        "baseline_p50_ms": round(statistics.median(baseline_ms), 3),
        "baseline_p95_ms": round(percentile(baseline_ms, 95), 3),
    }
    figures["p95_ratio_to_baseline"] = round(figures["p95_ms"] / figures["baseline_p95_ms"], 1)
    figures["goal_p95_ms"] = 2.0
    figures["meets_goal"] = figures["p95_ms"] <= 2.0
    figures["rules_version"] = safety.engine.version_tag
    if not args.no_doc:
        write_section(
            DOC,
            "bench-safety",
            "\n".join(
                [
                    f"Last run: `make bench-safety` ({time.strftime('%Y-%m-%d')}, rules "
                    f"{figures['rules_version']}), {figures['messages']} case texts x "
                    f"{args.passes} passes on this 2-core machine.",
                    "",
                    "| per message | p50 | p95 | p99 | max |",
                    "|---|---|---|---|---|",
                    f"| safety layer (`RuleBasedSafety.assess`) | {figures['p50_ms']} ms | "
                    f"{figures['p95_ms']} ms | {figures['p99_ms']} ms | {figures['max_ms']} ms |",
                    f"| baseline: normalise + detect language | {figures['baseline_p50_ms']} ms | "
                    f"{figures['baseline_p95_ms']} ms | | |",
                    "",
                    f"p95 is {figures['p95_ratio_to_baseline']}x the baseline; goal p95 <= 2 ms: "
                    + ("met." if figures["meets_goal"] else "**not met**."),
                ]
            ),
        )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
