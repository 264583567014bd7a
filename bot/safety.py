"""The clinical safety layer's seam. It runs on every inbound message, before the dialogue core
and before any language model, also while staff have taken over a conversation.

Until the clinical-safety rules land, `PassThroughSafety` assesses every message as no risk.
"""

from __future__ import annotations

from typing import Protocol

from bot.contract import SafetyAssessment


class SafetyLayer(Protocol):
    def assess(self, text: str, *, language: str) -> SafetyAssessment: ...


class PassThroughSafety:
    def assess(self, text: str, *, language: str) -> SafetyAssessment:
        return SafetyAssessment()
