"""The safety layer in the running platform: emergency and crisis replies, priority cases for
staff, the C-SSRS follow-up, audit records, staff takeover, and the single-shot triage API.

Real HTTP server, real Rasa, real SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from core.db import make_sync_engine
from core.orm import AuditEvent, Conversation, Escalation
from core.settings import Settings
from tests.conftest import API_TOKEN
from tests.support import running_app

pytestmark = pytest.mark.rasa
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ADVERSARIAL = Path(__file__).resolve().parents[2] / "shared" / "eval" / "adversarial_dev.jsonl"


@pytest.fixture
def live_settings(make_live_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_live_settings(database_url)


def _sender() -> str:
    return f"patient-{uuid.uuid4().hex[:8]}"


async def _say(client: httpx.AsyncClient, sender: str, text: str, **extra: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/messages", headers=AUTH, json={"sender_id": sender, "text": text, **extra}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _rows(database_url: str, query: Any) -> list[Any]:
    engine = make_sync_engine(database_url)
    with engine.connect() as connection:
        rows = list(connection.execute(query).all())
    engine.dispose()
    return rows


def _audit_details(database_url: str, conversation_id: str, action: str) -> list[Any]:
    """The details of one conversation's audit events of one kind, oldest first."""
    query = (
        select(AuditEvent.detail)
        .where(AuditEvent.conversation_id == conversation_id, AuditEvent.action == action)
        .order_by(AuditEvent.id)
    )
    return [row.detail for row in _rows(database_url, query)]


async def test_an_emergency_gets_instructions_a_priority_case_and_an_audited_decision(
    live_settings: Settings, database_url: str
) -> None:
    sender = _sender()
    async with running_app(live_settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        turn = await _say(
            client, sender, "my dad is 70, crushing chest pain going into his jaw and he's sweating"
        )
        after = await _say(client, sender, "ok, what should I do while I wait?")
    assert "911" in turn["replies"][0]["text"]
    assert turn["state"]["safety"]["level"] == "emergency"
    rule_ids = turn["state"]["safety"]["rule_ids"]
    assert rule_ids and all(isinstance(r, str) for r in rule_ids)
    # The conversation stays open: the next message is answered, and the state is kept.
    assert after["replies"] and after["state"]["safety"]["level"] == "emergency"
    conversation_id = turn["conversation_id"]
    cases = _rows(
        database_url,
        select(Escalation.priority, Escalation.reason, Escalation.rule_ids).where(
            Escalation.conversation_id == conversation_id
        ),
    )
    assert [(c.priority, c.reason) for c in cases] == [("immediate", "emergency")]
    audits = _rows(
        database_url,
        select(AuditEvent.action, AuditEvent.detail).where(
            AuditEvent.conversation_id == conversation_id
        ),
    )
    assessed = [a.detail for a in audits if a.action == "safety.assessed"]
    assert assessed[0]["level"] == "emergency" and assessed[0]["rule_ids"] == rule_ids
    assert assessed[0]["ruleset_version"]
    assert len(assessed) == 2  # every message's safety decision is audited, "none" included
    assert "crushing" not in json.dumps([a.detail for a in audits])  # no patient words


async def test_a_crisis_gets_988_and_the_c_ssrs_follow_up_instead_of_small_talk(
    live_settings: Settings, database_url: str
) -> None:
    sender = _sender()
    async with running_app(live_settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        first = await _say(client, sender, "honestly everyone would be better off without me")
        q2 = await _say(client, sender, "yes")
        q3 = await _say(client, sender, "yeah")
        q4 = await _say(client, sender, "not really")
        q5 = await _say(client, sender, "yes")
    texts = [r["text"] for r in first["replies"]]
    assert first["state"]["safety"]["level"] == "crisis"
    assert "988" in texts[0] and "911" in texts[0]
    assert "wished you were dead" in texts[-1]
    assert "thoughts of killing yourself" in q2["replies"][0]["text"]
    assert "how you might do this" in q3["replies"][0]["text"]
    assert "intention of acting" in q4["replies"][0]["text"]
    assert "911" in q5["replies"][0]["text"]  # a plan: imminent
    cases = _rows(
        database_url,
        select(Escalation.priority).where(Escalation.conversation_id == first["conversation_id"]),
    )
    assert [c.priority for c in cases] == ["immediate"]  # raised from high, not a second case
    answers = _audit_details(database_url, first["conversation_id"], "safety.protocol_answer")
    assert answers[-1]["answers"] == {
        "1": "yes",
        "2": "yes",
        "3": "no",
        "4": "yes",
    }
    assert answers[-1]["imminent"] and answers[-1]["finished"]


async def test_spanish_crisis_and_abuse_get_spanish_replies_with_the_hotline(
    live_settings: Settings,
) -> None:
    async with running_app(live_settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        crisis = await _say(client, _sender(), "ya no quiero vivir, quiero matarme")
        abuse = await _say(client, _sender(), "mi esposo me pega y tengo miedo de volver a casa")
    assert "988" in crisis["replies"][0]["text"] and "Gracias" in crisis["replies"][0]["text"]
    assert "¿" in crisis["replies"][-1]["text"]
    assert "1-800-799-7233" in abuse["replies"][0]["text"]
    assert abuse["state"]["safety"]["level"] == "crisis"


async def test_the_safety_layer_still_answers_while_staff_have_the_conversation(
    live_settings: Settings, database_url: str
) -> None:
    sender = _sender()
    async with running_app(live_settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        first = await _say(client, sender, "hello")
        engine = make_sync_engine(database_url)
        with engine.begin() as connection:
            connection.execute(
                update(Conversation)
                .where(Conversation.id == first["conversation_id"])
                .values(mode="staff")
            )
        engine.dispose()
        ordinary = await _say(client, sender, "when is my appointment?")
        emergency = await _say(client, sender, "my baby is 5 weeks old and has a fever of 38.6")
    assert ordinary["replies"] == []  # relayed to staff, the bot stays quiet
    assert "911" in emergency["replies"][0]["text"]
    assert emergency["state"]["mode"] == "staff"


async def test_the_adversarial_emergencies_and_crisis_get_the_right_first_reply(
    live_settings: Settings,
) -> None:
    if not ADVERSARIAL.exists():
        pytest.skip("../shared/eval not present")
    rows = [json.loads(line) for line in ADVERSARIAL.read_text("utf-8").splitlines() if line]
    rows = [r for r in rows if r["expected"] in ("emergency_response", "crisis_response")]
    assert rows
    async with running_app(live_settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        for row in rows:
            g = row.get("generate")
            text = row["text"] if "text" in row else g["repeat"] * g["times"] + g.get("suffix", "")
            turn = await _say(client, _sender(), text)
            first = turn["replies"][0]["text"]
            if row["expected"] == "emergency_response":
                assert "911" in first, row["id"]
                assert turn["state"]["safety"]["level"] == "emergency", row["id"]
            else:
                assert "988" in first, row["id"]


async def test_single_shot_triage_api(live_settings: Settings, database_url: str) -> None:
    async with running_app(live_settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        infant = await client.post(
            "/api/v1/triage",
            headers=AUTH,
            json={"text": "fever of 38.5 since this morning, feeding less", "age": 0},
        )
        cold = await client.post(
            "/api/v1/triage",
            headers=AUTH,
            json={"text": "tengo gripa desde ayer, mocos y estornudos, sin fiebre"},
        )
        unauthorized = await client.post("/api/v1/triage", json={"text": "x"})
        empty = await client.post("/api/v1/triage", headers=AUTH, json={"text": "\u200b"})
        bad_age = await client.post("/api/v1/triage", headers=AUTH, json={"text": "x", "age": -1})
    body = infant.json()
    assert infant.status_code == 200
    assert set(body) >= {"disposition", "reasons", "red_flags", "rule_ids", "safety"}
    assert body["disposition"] == "emergency" and body["rule_ids"] and body["reasons"]
    assert body["safety"]["level"] == "emergency"
    assert cold.json()["disposition"] == "self_care" and cold.json()["language"] == "es"
    assert cold.json()["safety"] == {"level": "none", "rule_ids": []}
    assert unauthorized.status_code == 401
    assert empty.status_code == 422 and bad_age.status_code == 422
    audits = _rows(
        database_url,
        select(AuditEvent.detail).where(AuditEvent.action == "triage.assessed"),
    )
    assert any(a.detail["rule_ids"] == body["rule_ids"] for a in audits)


async def test_a_triage_in_the_dialogue_reaches_the_conversation_state_and_the_audit_log(
    live_settings: Settings, database_url: str
) -> None:
    sender = _sender()
    async with running_app(live_settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        turn = await _say(client, sender, "I've had a sore throat since yesterday")
        questions = 0
        while turn["state"]["triage"] is None and questions < 8:
            questions += 1
            turn = await _say(client, sender, "I don't know")
    triage = turn["state"]["triage"]
    assert triage is not None, "the triage form never ended"
    assert triage["disposition"] in ("self_care", "routine", "urgent")
    assert triage["reasons"]
    assert any("{" not in r["text"] for r in turn["replies"])  # the payload is not shown as text
    decided = _audit_details(database_url, turn["conversation_id"], "triage.decided")
    assert decided and decided[-1]["ruleset_version"]
    stored = _rows(
        database_url,
        select(Conversation.triage).where(Conversation.id == turn["conversation_id"]),
    )
    assert stored[0].triage["disposition"] == triage["disposition"]
    assert stored[0].triage["summary"]  # the clinician-facing summary for escalation
