"""The clinical engine: one message (or a whole description) in, one explainable decision out.

Reading a message: the text becomes canonical tokens; every finding's patterns are matched; a
match does not count when it is negated ("no chest pain"), in the past and over ("last month I
had chest pain"), informational ("what are the signs of a stroke?") or, for crisis findings, a
figure of speech ("this commute is killing me"). Then every rule whose conditions hold fires. The
disposition is the most urgent level any fired rule implies; nothing lowers it afterwards.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from bot.clinical.classifier import MODEL_DIR, NaiveBayes
from bot.clinical.facts import Facts, read_facts
from bot.clinical.ruleset import LEVELS, Finding, Rule, RuleSet, load_ruleset
from bot.clinical.text import Tokens, tokenize

_SENTENCE_END = frozenset(".;!?:")
_CLAUSE_END = frozenset(".;!?:,")
NEGATION_WINDOW = 5
POST_NEGATION_WINDOW = 4


@dataclass(frozen=True)
class FindingMatch:
    finding_id: str
    text: str
    status: str  # present | negated | historical | informational | figure_of_speech


@dataclass(frozen=True)
class Decision:
    disposition: str
    safety_level: str  # none | emergency | crisis
    crisis: bool
    crisis_categories: tuple[str, ...]
    rule_ids: tuple[str, ...]
    safety_rule_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    red_flags: tuple[str, ...]
    findings: tuple[FindingMatch, ...]
    facts: Facts
    ruleset_version: str
    fired: tuple[Rule, ...] = field(default=(), repr=False, compare=False)

    @property
    def present(self) -> frozenset[str]:
        return frozenset(f.finding_id for f in self.findings if f.status == "present")

    def explanation(self) -> dict[str, Any]:
        """What an auditor or clinician needs to see why: rules, findings and what was ignored."""
        return {
            "disposition": self.disposition,
            "safety_level": self.safety_level,
            "crisis_categories": list(self.crisis_categories),
            "rule_ids": list(self.rule_ids),
            "safety_rule_ids": list(self.safety_rule_ids),
            "red_flags": list(self.red_flags),
            "findings": {
                status: sorted({f.finding_id for f in self.findings if f.status == status})
                for status in ("present", "negated", "historical", "informational")
            },
            "facts": {k: v for k, v in asdict(self.facts).items() if v is not None},
            "ruleset_version": self.ruleset_version,
        }


SECOND_READER_SOURCE = (
    "Naive Bayes over the project's labelled cases (scripts/train_clinical_classifier.py); "
    "raises only, at a cross-validated precision of at least 0.9"
)
MIN_WORDS_FOR_SECOND_READER = 4


class ClinicalEngine:
    def __init__(self, ruleset: RuleSet | None = None, *, second_reader: bool = True) -> None:
        self.ruleset = ruleset or load_ruleset()
        self.triage_model = NaiveBayes.load(MODEL_DIR / "triage.json") if second_reader else None
        self.crisis_model = NaiveBayes.load(MODEL_DIR / "crisis.json") if second_reader else None
        # What every decision records: the rule files' version and the second reader's weights.
        self.version_tag = self.ruleset.version_tag
        if self.triage_model or self.crisis_model:
            digest = hashlib.sha256()
            for name in ("triage.json", "crisis.json"):
                path = MODEL_DIR / name
                digest.update(path.read_bytes() if path.exists() else b"")
            self.version_tag += f"+nb.{digest.hexdigest()[:8]}"
        # Which findings a message could match, from the words their patterns start with.
        self._by_first_word: dict[str, set[str]] = {}
        self._always: set[str] = set()
        # Which rules could fire, from the findings they need: a rule with `all` needs its first
        # one; a rule with only `any` needs one of those.
        self._rules_by_finding: dict[str, set[int]] = {}
        for index, rule in enumerate(self.ruleset.rules):
            needed = rule.when.get("all") or rule.when.get("any") or []
            for finding_id in needed[:1] if rule.when.get("all") else needed:
                self._rules_by_finding.setdefault(finding_id, set()).add(index)
        for finding in self.ruleset.findings.values():
            if finding.key_words is None:
                self._always.add(finding.id)
            for word in finding.key_words or ():
                self._by_first_word.setdefault(word, set()).add(finding.id)

    def _candidates(self, reading: _Reading) -> set[str]:
        candidates = set(self._always)
        for word in reading.words | reading.prefixes:
            found = self._by_first_word.get(word)
            if found:
                candidates |= found
        return candidates

    def tokens(self, text: str) -> Tokens:
        return tokenize(text, shorthand=self.ruleset.shorthand, speller=self.ruleset.speller)

    def assess(
        self,
        text: str,
        *,
        language: str | None = None,
        age_years: float | None = None,
        sex: str | None = None,
    ) -> Decision:
        rs = self.ruleset
        tokens = self.tokens(text)
        reading = _Reading(tokens, rs)
        matches: list[FindingMatch] = []
        candidates = self._candidates(reading)
        for finding in rs.findings.values():
            if finding.id in candidates:
                matches.extend(reading.match(finding))
        present = {m.finding_id for m in matches if m.status == "present"}
        facts = read_facts(tokens.joined)
        if age_years is not None:
            facts = Facts(**{**asdict(facts), "age_years": float(age_years)})
        if facts.temp_c is not None and facts.temp_c >= rs.thresholds.get("fever_c", 38.0):
            present.add("measured_fever")
        if any(rs.findings[f].kind == "symptom" for f in present if f in rs.findings):
            present.add("any_symptom")

        possible: set[int] = set()
        for finding_id in present:
            possible |= self._rules_by_finding.get(finding_id, set())
        checks = _fact_checks(facts)
        fired = tuple(
            rs.rules[i] for i in sorted(possible) if _holds(rs.rules[i], present, checks, sex)
        )
        fired += self._second_reader(tokens.tokens, fired)
        return _decide(fired, present, matches, facts, rs, language or "en", self.version_tag)

    def _second_reader(self, tokens: tuple[str, ...], fired: tuple[Rule, ...]) -> tuple[Rule, ...]:
        """Raises the rules' decision when the trained model is confident they missed something:
        to emergency, or to the crisis protocol. Never lowers anything."""
        words = [t for t in tokens if t.isalpha()]
        if len(words) < MIN_WORDS_FOR_SECOND_READER:
            return ()
        raised: list[Rule] = []
        # A crisis rule's own floor stands: abuse or ideation is not raised to a medical emergency.
        crisis_fired = any(r.level == "crisis" for r in fired)
        if (
            self.triage_model
            and not crisis_fired
            and not any(_level_of(r) == "emergency" for r in fired)
        ):
            raised += _raise(self.triage_model, tokens, "emergency", "ML-EMERGENCY")
        if self.crisis_model and not crisis_fired:
            raised += _raise(self.crisis_model, tokens, "crisis", "ML-CRISIS")
        return tuple(raised)


class _Reading:
    """Where negations, past events, questions about a topic and figures of speech are."""

    def __init__(self, tokens: Tokens, rs: RuleSet) -> None:
        self.tokens = tokens
        self.joined = tokens.joined
        cues = rs.cues
        # Offsets of each token's first character in `joined`, for span -> token index.
        self._starts: list[int] = []
        offset = 1
        for token in tokens.tokens:
            self._starts.append(offset)
            offset += len(token) + 1
        # Negation reaches to the end of its clause; a past-event cue reaches a little further
        # (possessives end a negation, "no fever my baby is floppy", but not a memory).
        self.clause = self._segments(cues.negation_scope_ends, _CLAUSE_END)
        self.timing_clause = self._segments(cues.timing_scope_ends, _CLAUSE_END)
        self.sentence = self._segments(None, _SENTENCE_END)
        pseudo = [m.span() for m in cues.pseudo_negation.finditer(self.joined)]
        self.negations_before = [
            (self._index(m.start()), self._end_index(m.end()))
            for m in cues.negation_before.finditer(self.joined)
            if not any(s <= m.start() < e for s, e in pseudo)
        ]
        self.negations_after = [
            self._index(m.start()) for m in cues.negation_after.finditer(self.joined)
        ]
        self.historical_clauses = {
            self.timing_clause[self._index(m.start())]
            for m in cues.historical.finditer(self.joined)
        }
        self.current_clauses = {
            self.timing_clause[self._index(m.start())] for m in cues.current.finditer(self.joined)
        }
        self.informational_sentences = {
            self.sentence[self._index(m.start())] for m in cues.informational.finditer(self.joined)
        }
        self.says_currently_safe = bool(cues.current_safety.search(self.joined))
        self.words = frozenset(tokens.tokens)
        self.prefixes = frozenset(t[:k] + "*" for t in self.words for k in range(1, len(t) + 1))
        self.hyperbole = [m.span() for m in cues.hyperbole.finditer(self.joined)]

    def _segments(self, boundary_words: re.Pattern[str] | None, ends: frozenset[str]) -> list[int]:
        starts = (
            {self._index(m.start()) for m in boundary_words.finditer(self.joined)}
            if boundary_words
            else set()
        )
        segments: list[int] = []
        segment = 0
        for i, token in enumerate(self.tokens.tokens):
            if i in starts:
                segment += 1
            segments.append(segment)
            if token in ends:
                segment += 1
        return segments

    def _index(self, char_offset: int) -> int:
        return max(0, bisect.bisect_right(self._starts, char_offset) - 1)

    def _end_index(self, char_offset: int) -> int:
        """Index one past the last token of a match ending at `char_offset` (after its space)."""
        return bisect.bisect_left(self._starts, char_offset)

    def match(self, finding: Finding) -> list[FindingMatch]:
        out: list[FindingMatch] = []
        if not self.tokens.tokens:
            return out
        found = list(finding.pattern.finditer(self.joined))
        if not found:
            return out
        exceptions = (
            [m.span() for m in finding.exceptions.finditer(self.joined)]
            if finding.exceptions
            else []
        )
        for m in found:
            if any(s < m.end() and m.start() < e for s, e in exceptions):
                continue
            out.append(FindingMatch(finding.id, m.group().strip(), self._status(finding, m)))
        return out

    def _status(self, finding: Finding, m: re.Match[str]) -> str:
        start, end = self._index(m.start()), self._end_index(m.end())
        if finding.kind == "crisis" and any(
            s < m.end() and m.start() < e for s, e in self.hyperbole
        ):
            return "figure_of_speech"
        clause = self.clause[start]
        for trigger_start, trigger_end in self.negations_before:
            if (
                trigger_end <= start
                and start - trigger_end <= NEGATION_WINDOW
                and self.clause[trigger_start] == clause
                and self.clause[min(trigger_end, len(self.clause) - 1)] == clause
            ):
                return "negated"
        last = min(end, len(self.clause)) - 1
        for trigger in self.negations_after:
            if (
                end <= trigger
                and trigger - end <= POST_NEGATION_WINDOW
                and self.clause[trigger] == self.clause[last]
            ):
                return "negated"
        if self.sentence[start] in self.informational_sentences:
            return "informational"
        timing = self.timing_clause[start]
        past = timing in self.historical_clauses and timing not in self.current_clauses
        # A crisis in the past counts unless the person also says they are safe now.
        if (
            past
            and finding.timing == "current"
            and (finding.kind != "crisis" or self.says_currently_safe)
        ):
            return "historical"
        return "present"


_SPANISH_LEVEL = {"emergency": "emergencia", "urgent": "atención urgente", "crisis": "crisis"}


def _raise(model: NaiveBayes, tokens: tuple[str, ...], level: str, rule_id: str) -> list[Rule]:
    """The raise, if the model is confident enough; its evidence is worked out only then."""
    if model.probabilities(tokens)[level] < model.thresholds.get(level, 1.01):
        return []
    return [_second_reader_rule(rule_id, level, model.predict(tokens, level).evidence)]


def _second_reader_rule(rule_id: str, level: str, evidence: tuple[str, ...]) -> Rule:
    shown = ", ".join(f"'{e.replace('!', 'no ')}'" for e in evidence[:4])
    return Rule(
        id=rule_id,
        level=level,
        title="Resembles known cases (trained second reader)",
        category="unspecified" if level == "crisis" else "classifier",
        when={},
        reason={
            "en": f"Your description resembles {level} cases we know of ({shown}).",
            "es": f"Su descripción se parece a casos de {_SPANISH_LEVEL[level]} que conocemos "
            f"({shown}).",
        },
        source=SECOND_READER_SOURCE,
        disposition="urgent" if level == "crisis" else None,
        examples=(),
        counter_examples=(),
        source_file="model",
    )


def _fact_checks(facts: Facts) -> dict[str, tuple[float | None, bool]]:
    """Each fact condition's value for this message, and whether it means "at least"."""
    age_days = facts.age_years * 365.25 if facts.age_years is not None else None
    days = facts.duration_minutes / 1440 if facts.duration_minutes is not None else None
    return {
        "age_under_days": (age_days, False),
        "age_under_years": (facts.age_years, False),
        "age_at_least_years": (facts.age_years, True),
        "temp_c_at_least": (facts.temp_c, True),
        "temp_c_under": (facts.temp_c, False),
        "duration_at_least_minutes": (facts.duration_minutes, True),
        "duration_at_least_days": (days, True),
        "duration_under_days": (days, False),
        "severity_at_least": (facts.severity, True),
        "bp_systolic_at_least": (facts.bp_systolic, True),
        "bp_diastolic_at_least": (facts.bp_diastolic, True),
    }


def _holds(
    rule: Rule,
    present: set[str],
    checks: dict[str, tuple[float | None, bool]],
    sex: str | None,
) -> bool:
    when = rule.when
    if not all(f in present for f in when.get("all", [])):
        return False
    if when.get("any") and not any(f in present for f in when["any"]):
        return False
    if any(f in present for f in when.get("none", [])):
        return False
    for key, (value, at_least) in checks.items():
        if key not in when:
            continue
        if value is None:
            return False
        threshold = float(when[key])
        if (value < threshold) if at_least else (value >= threshold):
            return False
    return not ("sex" in when and (sex or "").lower()[:1] != str(when["sex"]).lower()[:1])


def _level_of(rule: Rule) -> str:
    return rule.disposition or ("urgent" if rule.level == "crisis" else rule.level)


def _decide(
    fired: tuple[Rule, ...],
    present: set[str],
    matches: list[FindingMatch],
    facts: Facts,
    rs: RuleSet,
    language: str,
    version_tag: str,
) -> Decision:
    triage_rules = [r for r in fired if r.level != "crisis"]
    crisis_rules = [r for r in fired if r.level == "crisis"]
    # A complaint no rule recognises is for a clinician to see, not for home care: self-care is
    # only ever decided by a self-care rule that fired.
    disposition = "routine" if not fired and "any_symptom" in present else "self_care"
    for rule in fired:
        level = _level_of(rule)
        if LEVELS.index(level) > LEVELS.index(disposition):
            disposition = level
    deciding = [r for r in fired if _level_of(r) == disposition] if fired else []
    # Imminent danger is an emergency whichever rule saw it: a crisis rule with an emergency
    # floor (an overdose taken, a plan for tonight) gets the emergency response and the crisis one.
    emergency_rules = [r for r in fired if _level_of(r) == "emergency"]
    if emergency_rules:
        safety_level = "emergency"
    elif crisis_rules:
        safety_level = "crisis"
    else:
        safety_level = "none"
    safety_rules = emergency_rules + [r for r in crisis_rules if r not in emergency_rules]

    reasons = [r.reason.get(language) or r.reason.get("en", r.title) for r in deciding]
    for rule in crisis_rules:
        text = rule.reason.get(language) or rule.reason.get("en", rule.title)
        if text not in reasons:
            reasons.append(text)
    if not fired:
        reasons.append(
            "No warning signs found in what you described."
            if language != "es"
            else "No encontramos señales de alarma en lo que describió."
        )
    flagged: list[str] = []
    # Red flags push acuity above self-care: what a self-care rule matched is not one.
    for rule in [r for r in [*deciding, *crisis_rules] if _level_of(r) != "self_care"]:
        when = rule.when
        for finding_id in [*when.get("all", []), *when.get("any", [])]:
            if finding_id in present and finding_id in rs.findings and finding_id not in flagged:
                flagged.append(finding_id)
    red_flags = tuple(
        f for f in flagged if not f.startswith("rule_") and rs.findings[f].kind != "context"
    )
    return Decision(
        disposition=disposition,
        safety_level=safety_level,
        crisis=bool(crisis_rules),
        crisis_categories=tuple(dict.fromkeys(r.category for r in crisis_rules)),
        rule_ids=tuple(r.id for r in [*triage_rules, *crisis_rules]),
        safety_rule_ids=tuple(r.id for r in safety_rules),
        reasons=tuple(reasons),
        red_flags=red_flags,
        findings=tuple(matches),
        facts=facts,
        ruleset_version=version_tag,
        fired=fired,
    )
