"""The clinical safety layer's seam. It runs on every inbound message, before the dialogue core
and before any language model, also while staff have taken over a conversation.

`RuleBasedSafety` answers from the clinician-reviewed rules in `bot/clinical/rules/`;
`PassThroughSafety` (no risk, ever) exists for tests of the plumbing around it.
"""

from __future__ import annotations

from typing import Protocol

from bot.clinical.engine import ClinicalEngine
from bot.contract import SafetyAssessment


class SafetyLayer(Protocol):
    def assess(self, text: str, *, language: str) -> SafetyAssessment: ...


class PassThroughSafety:
    def assess(self, text: str, *, language: str) -> SafetyAssessment:
        return SafetyAssessment()


class RuleBasedSafety:
    def __init__(self, engine: ClinicalEngine | None = None) -> None:
        self.engine = engine or ClinicalEngine()

    def assess(self, text: str, *, language: str) -> SafetyAssessment:
        decision = self.engine.assess(text, language=language)
        if decision.safety_level == "none":
            return SafetyAssessment(ruleset_version=decision.ruleset_version)
        fired = {rule.id: rule for rule in decision.fired}
        categories = tuple(
            dict.fromkeys(fired[i].category for i in decision.safety_rule_ids if i in fired)
        )
        return SafetyAssessment(
            level="emergency" if decision.safety_level == "emergency" else "crisis",
            rule_ids=decision.safety_rule_ids,
            crisis=decision.crisis,
            categories=categories,
            ruleset_version=decision.ruleset_version,
        )
