"""`python -m bot.clinical.lint`: check the rule files a clinician edits.

Schema and patterns (loading fails with the file and rule at fault), examples in every supported
language, and behaviour: every rule fires on each of its examples and on none of its
counter-examples. Exit status 1 lists every problem.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from bot.clinical.engine import ClinicalEngine
from bot.clinical.ruleset import RULES_DIR, RuleFileError, RuleSet, load_ruleset

LANGUAGES = ("en", "es")


def problems(ruleset: RuleSet, languages: Iterable[str] = LANGUAGES) -> list[str]:
    engine = ClinicalEngine(ruleset)
    found: list[str] = []
    for rule in ruleset.rules:
        where = f"{rule.source_file}: {rule.id}"
        for language in languages:
            if not any(e.language == language for e in rule.examples):
                found.append(f"{where}: no example in {language!r}")
            if language not in rule.reason:
                found.append(f"{where}: no reason in {language!r}")
        for example in rule.examples:
            decision = engine.assess(
                example.text, language=example.language, age_years=example.age, sex=example.sex
            )
            if rule.id not in decision.rule_ids:
                found.append(f"{where}: does not fire on its example {example.text!r}")
        for example in rule.counter_examples:
            decision = engine.assess(
                example.text, language=example.language, age_years=example.age, sex=example.sex
            )
            if rule.id in decision.rule_ids:
                found.append(f"{where}: fires on its counter-example {example.text!r}")
    for finding in ruleset.findings.values():
        for language in languages:
            if not finding.id.startswith("rule_") and language not in finding.label:
                found.append(f"{finding.source_file}: finding {finding.id}: no {language} label")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rules", type=Path, default=RULES_DIR, help="rule folder")
    args = parser.parse_args(argv)
    try:
        ruleset = load_ruleset(args.rules)
    except RuleFileError as exc:
        print(f"rule files do not load: {exc}", file=sys.stderr)
        return 1
    found = problems(ruleset)
    for problem in found:
        print(problem, file=sys.stderr)
    examples = sum(len(r.examples) + len(r.counter_examples) for r in ruleset.rules)
    print(
        f"{len(ruleset.rules)} rules, {len(ruleset.findings)} findings, {examples} examples, "
        f"version {ruleset.version_tag}: "
        + ("ok" if not found else f"{len(found)} problem(s); fix them and run again")
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
