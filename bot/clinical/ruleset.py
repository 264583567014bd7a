"""Loading the rule files: findings (what a message can say) and rules (what it implies).

The files under `bot/clinical/rules/` are the clinical content; see `rules/README.md` for their
format. Loading validates them (the linter reports the same errors), compiles the patterns once,
and fingerprints the content so every decision can name the exact rules that made it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from bot.clinical.patterns import PatternError, compile_many, key_words
from bot.clinical.text import Speller

RULES_DIR = Path(__file__).parent / "rules"
LEVELS = ("self_care", "routine", "urgent", "emergency")
RULE_LEVELS = (*LEVELS, "crisis")
CRISIS_CATEGORIES = ("suicidal_ideation", "self_harm", "overdose", "third_party", "abuse")
CONDITION_KEYS = frozenset(
    {
        "all",
        "any",
        "none",
        "age_under_days",
        "age_under_years",
        "age_at_least_years",
        "temp_c_at_least",
        "temp_c_under",
        "duration_at_least_minutes",
        "duration_at_least_days",
        "duration_under_days",
        "severity_at_least",
        "bp_systolic_at_least",
        "bp_diastolic_at_least",
        "sex",
    }
)
# Findings the engine derives from numbers in the text rather than from words.
DERIVED_FINDINGS = frozenset({"measured_fever", "any_symptom"})
_RULE_ID = re.compile(r"^[A-Z]{2,5}(-[A-Z0-9]{2,12})+$")
_FINDING_ID = re.compile(r"^[a-z][a-z0-9_]*$")


class RuleFileError(ValueError):
    pass


@dataclass(frozen=True)
class Finding:
    id: str
    label: Mapping[str, str]
    pattern: re.Pattern[str]
    exceptions: re.Pattern[str] | None
    # "current": ignored when negated, historical or informational. "any": a risk factor that
    # counts even in the past ("had a kidney stone before"), still not when negated.
    timing: str
    kind: str
    source_file: str
    # Words (a trailing "*" marks a prefix) one of which every match contains; None: any.
    key_words: frozenset[str] | None = None


@dataclass(frozen=True)
class Example:
    text: str
    language: str
    age: int | None = None
    sex: str | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    level: str
    title: str
    category: str
    when: Mapping[str, Any]
    reason: Mapping[str, str]
    source: str
    # A crisis rule's triage floor (urgent for passive ideation, emergency for imminent danger).
    disposition: str | None
    examples: tuple[Example, ...]
    counter_examples: tuple[Example, ...]
    source_file: str


@dataclass(frozen=True)
class Cues:
    negation_before: re.Pattern[str]
    negation_after: re.Pattern[str]
    pseudo_negation: re.Pattern[str]
    negation_scope_ends: re.Pattern[str]
    timing_scope_ends: re.Pattern[str]
    historical: re.Pattern[str]
    current: re.Pattern[str]
    informational: re.Pattern[str]
    current_safety: re.Pattern[str]
    # Figures of speech ("this commute is killing me") that crisis findings never match inside.
    hyperbole: re.Pattern[str]


@dataclass(frozen=True)
class RuleSet:
    version: str
    fingerprint: str
    shorthand: Mapping[str, str]
    speller: Speller
    cues: Cues
    thresholds: Mapping[str, float]
    findings: Mapping[str, Finding]
    rules: tuple[Rule, ...]

    @property
    def version_tag(self) -> str:
        return f"{self.version}+{self.fingerprint[:12]}"


def load_ruleset(directory: Path = RULES_DIR) -> RuleSet:
    files = sorted(directory.glob("*.yml"))
    if not files:
        raise RuleFileError(f"no rule files in {directory}")
    digest = hashlib.sha256()
    documents: dict[str, dict[str, Any]] = {}
    for path in files:
        raw = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + raw)
        loaded = yaml.safe_load(raw) or {}
        if not isinstance(loaded, dict):
            raise RuleFileError(f"{path.name}: expected a mapping at the top level")
        documents[path.name] = loaded
    lexicon = documents.get("lexicon.yml")
    if lexicon is None:
        raise RuleFileError("lexicon.yml is missing")

    words: set[str] = set()
    findings: dict[str, Finding] = {}
    rules: list[Rule] = []
    for name, document in documents.items():
        unknown = set(document) - {"version", "lexicon", "findings", "rules"}
        if unknown:
            raise RuleFileError(f"{name}: unknown top-level keys {sorted(unknown)}")
        for entry in document.get("findings") or []:
            finding = _finding(entry, name, words)
            if finding.id in findings:
                raise RuleFileError(f"{name}: finding {finding.id!r} defined twice")
            findings[finding.id] = finding
        for entry in document.get("rules") or []:
            rule, inline = _rule(entry, name, words)
            if inline is not None:
                if inline.id in findings:
                    raise RuleFileError(f"{name}: {inline.id!r} clashes with a finding")
                findings[inline.id] = inline
            rules.append(rule)

    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise RuleFileError(f"{rule.source_file}: rule id {rule.id} used twice")
        seen.add(rule.id)
        for key in ("all", "any", "none"):
            for finding_id in rule.when.get(key, []):
                if finding_id not in findings and finding_id not in DERIVED_FINDINGS:
                    raise RuleFileError(
                        f"{rule.source_file}: rule {rule.id} names unknown finding {finding_id!r}"
                    )

    lex = lexicon["lexicon"]
    shorthand = {str(k): str(v) for k, v in (lex.get("shorthand") or {}).items()}
    cues = Cues(
        **{
            key: _compile_cue(lex, key, words)
            for key in (
                "negation_before",
                "negation_after",
                "pseudo_negation",
                "negation_scope_ends",
                "timing_scope_ends",
                "historical",
                "current",
                "informational",
                "current_safety",
                "hyperbole",
            )
        }
    )
    known = {str(w) for w in lex.get("common_words") or []} | set(shorthand.values())
    vocabulary = {w for w in words if len(w) >= 7}
    # A finding a crisis rule relies on is read as a crisis finding: figures of speech never
    # count, and a past mention counts unless the person says they are safe now.
    crisis_inputs = {
        f
        for rule in rules
        if rule.level == "crisis"
        for key in ("all", "any")
        for f in rule.when.get(key, [])
    }
    findings = {
        fid: replace(finding, kind="crisis") if fid in crisis_inputs else finding
        for fid, finding in findings.items()
    }
    return RuleSet(
        version=str(lexicon.get("version", "0")),
        fingerprint=digest.hexdigest(),
        shorthand=shorthand,
        speller=Speller(vocabulary, known | words),
        cues=cues,
        thresholds={str(k): float(v) for k, v in (lex.get("thresholds") or {}).items()},
        findings=findings,
        rules=tuple(rules),
    )


def _languages(value: Any, what: str) -> dict[str, list[str]]:
    if not isinstance(value, dict) or not value:
        raise RuleFileError(
            f"{what}: expected patterns per language, e.g. {{en: [...], es: [...]}}"
        )
    out: dict[str, list[str]] = {}
    for language, patterns in value.items():
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise RuleFileError(f"{what}: {language} must be a list of strings")
        out[str(language)] = patterns
    return out


def _compile_languages(value: Any, what: str, words: set[str]) -> re.Pattern[str]:
    patterns = [p for ps in _languages(value, what).values() for p in ps]
    try:
        compiled = compile_many(patterns)
    except PatternError as exc:
        raise RuleFileError(f"{what}: {exc}") from exc
    for pattern in patterns:
        words.update(re.findall(r"[a-z][a-z0-9]*", pattern.replace("*", " ")))
    return compiled


def _compile_cue(lexicon: Mapping[str, Any], key: str, words: set[str]) -> re.Pattern[str]:
    if key not in lexicon:
        raise RuleFileError(f"lexicon.yml: missing {key}")
    return _compile_languages(lexicon[key], f"lexicon {key}", words)


def _localized(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise RuleFileError(f"{what}: expected text per language, e.g. {{en: ..., es: ...}}")
    return {str(k): v for k, v in value.items()}


def _finding(entry: Any, file: str, words: set[str]) -> Finding:
    if not isinstance(entry, dict) or "id" not in entry:
        raise RuleFileError(f"{file}: every finding needs an id")
    finding_id = str(entry["id"])
    what = f"{file}: finding {finding_id}"
    if not _FINDING_ID.match(finding_id) or finding_id in DERIVED_FINDINGS:
        raise RuleFileError(f"{what}: ids are snake_case and not one of {sorted(DERIVED_FINDINGS)}")
    unknown = set(entry) - {"id", "label", "patterns", "except", "timing", "kind", "notes"}
    if unknown:
        raise RuleFileError(f"{what}: unknown keys {sorted(unknown)}")
    timing = entry.get("timing", "current")
    if timing not in ("current", "any"):
        raise RuleFileError(f"{what}: timing is 'current' or 'any'")
    kind = entry.get("kind", "symptom")
    if kind not in ("symptom", "risk", "context", "crisis"):
        raise RuleFileError(f"{what}: kind is symptom, risk, context or crisis")
    return Finding(
        id=finding_id,
        label=_localized(entry.get("label"), f"{what} label"),
        pattern=_compile_languages(entry.get("patterns"), what, words),
        exceptions=_compile_languages(entry["except"], f"{what} except", words)
        if entry.get("except")
        else None,
        timing=timing,
        kind=kind,
        source_file=file,
        key_words=_key_words(entry.get("patterns")),
    )


def _key_words(value: Any) -> frozenset[str] | None:
    words: set[str] = set()
    for patterns in (value or {}).values():
        for pattern in patterns:
            first = key_words(pattern)
            if first is None:
                return None
            words |= first
    return frozenset(words)


def _examples(value: Any, what: str) -> tuple[Example, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise RuleFileError(f"{what}: expected examples per language")
    out: list[Example] = []
    for language, items in value.items():
        for item in items or []:
            if isinstance(item, str):
                out.append(Example(text=item, language=str(language)))
            elif isinstance(item, dict) and isinstance(item.get("text"), str):
                out.append(
                    Example(
                        text=item["text"],
                        language=str(language),
                        age=item.get("age"),
                        sex=item.get("sex"),
                    )
                )
            else:
                raise RuleFileError(f"{what}: an example is a string or {{text, age, sex}}")
    return tuple(out)


def _rule(entry: Any, file: str, words: set[str]) -> tuple[Rule, Finding | None]:
    if not isinstance(entry, dict) or "id" not in entry:
        raise RuleFileError(f"{file}: every rule needs an id")
    rule_id = str(entry["id"])
    what = f"{file}: rule {rule_id}"
    if not _RULE_ID.match(rule_id):
        raise RuleFileError(f"{what}: ids look like EM-CARD-01 (upper case, dashes)")
    allowed = {
        "id", "level", "title", "category", "when", "match", "except", "reason", "source",
        "disposition", "examples", "counter_examples", "notes", "timing",
    }  # fmt: skip
    unknown = set(entry) - allowed
    if unknown:
        raise RuleFileError(f"{what}: unknown keys {sorted(unknown)}")
    level = entry.get("level")
    if level not in RULE_LEVELS:
        raise RuleFileError(f"{what}: level must be one of {RULE_LEVELS}")
    category = str(entry.get("category", ""))
    if level == "crisis" and category not in CRISIS_CATEGORIES:
        raise RuleFileError(f"{what}: a crisis rule's category is one of {CRISIS_CATEGORIES}")
    disposition = entry.get("disposition")
    if disposition is not None and disposition not in LEVELS:
        raise RuleFileError(f"{what}: disposition must be one of {LEVELS}")
    source = entry.get("source")
    if not isinstance(source, str) or len(source.strip()) < 10:
        raise RuleFileError(f"{what}: every rule names its source (guideline, URL)")
    when = dict(entry.get("when") or {})
    inline: Finding | None = None
    if "match" in entry:
        inline = _finding(
            {
                "id": "rule_" + rule_id.lower().replace("-", "_"),
                "label": entry.get("label") or {"en": entry.get("title", rule_id)},
                "patterns": entry["match"],
                "except": entry.get("except"),
                "timing": entry.get("timing", "current"),
                "kind": "crisis" if level == "crisis" else "symptom",
            },
            file,
            words,
        )
        when["all"] = [inline.id, *when.get("all", [])]
    if not when:
        raise RuleFileError(f"{what}: needs `when` conditions or `match` patterns")
    unknown_conditions = set(when) - CONDITION_KEYS
    if unknown_conditions:
        raise RuleFileError(f"{what}: unknown conditions {sorted(unknown_conditions)}")
    if not (when.get("all") or when.get("any")):
        raise RuleFileError(f"{what}: needs at least one finding in `all` or `any`")
    examples = _examples(entry.get("examples"), f"{what} examples")
    if not examples:
        raise RuleFileError(f"{what}: needs at least one example")
    return (
        Rule(
            id=rule_id,
            level=level,
            title=str(entry.get("title", rule_id)),
            category=category,
            when=when,
            reason=_localized(entry.get("reason"), f"{what} reason"),
            source=source.strip(),
            disposition=disposition,
            examples=examples,
            counter_examples=_examples(entry.get("counter_examples"), f"{what} counter_examples"),
            source_file=file,
        ),
        inline,
    )
