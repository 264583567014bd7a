"""The safety layer's replies and the C-SSRS follow-up, as plain functions."""

from __future__ import annotations

import pytest

from bot.contract import SafetyAssessment
from bot.safety_replies import (
    Resources,
    advance_protocol,
    guard_reply,
    protocol_question,
    read_answer,
    safety_replies,
    start_protocol,
)

LOCAL = Resources(emergency_number="112", crisis_line="024", poison_control="0800-POISON")


def test_an_emergency_reply_carries_the_configured_number_and_poison_help_for_ingestions() -> None:
    cardiac = safety_replies(
        SafetyAssessment(level="emergency", categories=("cardiac",)), "en", LOCAL
    )
    overdose = SafetyAssessment(level="emergency", crisis=True, categories=("overdose",))
    both = safety_replies(overdose, "es", LOCAL)
    assert len(cardiac) == 1 and "112" in cardiac[0] and "911" not in cardiac[0]
    assert "0800-POISON" in both[0] and "112" in both[0]
    assert "024" in both[1] and "Gracias" in both[1]  # the crisis reply too, in Spanish


def test_a_phrased_reply_may_not_drop_what_the_decision_requires() -> None:
    emergency = SafetyAssessment(level="emergency")
    crisis = SafetyAssessment(level="crisis", crisis=True)
    assert guard_reply("Please call 112 now.", emergency, LOCAL)
    assert not guard_reply("Try to rest and drink water.", emergency, LOCAL)
    assert not guard_reply("Call 112.", crisis, LOCAL)
    assert guard_reply("You can call or text 024 any time.", crisis, LOCAL)


@pytest.mark.parametrize(
    ("text", "answer"),
    [("yes", "yes"), ("Sí, a veces", "yes"), ("yeah kinda", "yes"), ("no", "no"),
     ("nope", "no"), ("nunca", "no"), ("I don't know", "unclear"), ("what?", "unclear")],
)  # fmt: skip
def test_answers_are_read_as_yes_no_or_unclear(text: str, answer: str) -> None:
    assert read_answer(text) == answer


def _run(categories: tuple[str, ...], answers: list[str]) -> tuple[list[int], bool]:
    state = start_protocol(SafetyAssessment(level="crisis", crisis=True, categories=categories))
    assert state is not None
    asked = [state["step"]]
    imminent = False
    for answer in answers:
        step = advance_protocol(state, answer, "en", LOCAL)
        imminent = step.imminent
        if step.state is None:
            break
        state = step.state
        asked.append(state["step"])
    return asked, imminent


def test_the_c_ssrs_screener_follows_its_skip_logic() -> None:
    # "No" to question 2 goes straight to question 6.
    assert _run(("suicidal_ideation",), ["yes", "no", "no"]) == ([1, 2, 6], False)
    # "Yes" to 2 asks about method, intent and plan; "yes" to intent is imminent.
    assert _run(("self_harm",), ["yes", "yes", "yes", "yes"]) == ([1, 2, 3, 4], True)
    # Recent preparatory behaviour (question 6) is imminent too.
    assert _run(("suicidal_ideation",), ["no", "no", "yes"]) == ([1, 2, 6], True)


def test_abuse_and_reports_about_someone_else_ask_whether_the_person_is_safe() -> None:
    abuse = start_protocol(SafetyAssessment(level="crisis", crisis=True, categories=("abuse",)))
    other = start_protocol(
        SafetyAssessment(level="crisis", crisis=True, categories=("third_party",))
    )
    assert abuse and other
    assert "Are you safe" in protocol_question(abuse, "en")
    assert "Is the person safe" in protocol_question(other, "en")
    unsure = advance_protocol(abuse, "I don't know", "en", LOCAL)
    assert unsure.imminent and unsure.state is None and "112" in unsure.replies[0]
    safe = advance_protocol(abuse, "yes", "en", LOCAL)
    assert not safe.imminent and "024" in safe.replies[0]


def test_no_follow_up_without_a_crisis() -> None:
    assert start_protocol(SafetyAssessment(level="emergency", categories=("cardiac",))) is None
