"""Staff escalation on the embedded default: no Mattermost, cases in the staff console.

A web patient talks to the real Rasa; staff use the console's API as the /console page does.
The case opens on the patient's request, staff claim it (the bot goes quiet, the safety layer
does not), answer live on the patient's page, hand back to the bot with a summary, and
resolve with a feedback question. Every staff action is in the audit log with a name.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import make_sync_engine
from core.orm import AuditEvent, Escalation, utcnow
from core.settings import Settings
from escalation.tasks import remind_unclaimed
from tests.support import running_app
from tests.test_web_channel import ChatClient

pytestmark = pytest.mark.rasa

ADMIN_TOKEN = "test-admin-token-console-0123456789"


def staff_headers(name: str, role: str = "RN") -> dict[str, str]:
    return {
        "Authorization": f"Bearer {ADMIN_TOKEN}",
        "X-Staff-Name": name,
        "X-Staff-Role": role,
    }


DANA = staff_headers("Dana Reyes", "Nurse")
LEE = staff_headers("Lee Park", "Front desk")


@dataclass
class Console:
    url: str
    client: httpx.AsyncClient
    database_url: str

    async def cases(self, status: str = "active", who: dict[str, str] = DANA) -> list[Any]:
        response = await self.client.get(
            "/admin/api/v1/cases", params={"status": status}, headers=who
        )
        assert response.status_code == 200, response.text
        return list(response.json()["cases"])

    async def act(
        self, case_id: str, action: str, who: dict[str, str] = DANA, **body: Any
    ) -> httpx.Response:
        return await self.client.post(
            f"/admin/api/v1/cases/{case_id}/{action}", headers=who, json=body or None
        )

    def audit(self, conversation_id: str) -> list[AuditEvent]:
        with Session(make_sync_engine(self.database_url)) as session:
            return list(
                session.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.conversation_id == conversation_id)
                    .order_by(AuditEvent.id)
                )
            )


@pytest.fixture
async def console(
    make_live_settings: Callable[..., Settings], database_url: str
) -> AsyncIterator[Console]:
    settings = make_live_settings(database_url, admin_token=ADMIN_TOKEN)
    async with (
        running_app(settings) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        yield Console(url, client, database_url)


async def ask_for_a_person(tab: ChatClient) -> None:
    await tab.say("I want to talk to a real person")
    offer = tab.messages[-1]
    assert [b["payload"] for b in offer["buttons"]] == ["/affirm", "/deny"], offer
    await tab.say("Yes", payload="/affirm")


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_request_for_a_person_goes_through_the_whole_case_lifecycle(
    console: Console,
) -> None:
    tab = ChatClient()
    await tab.connect(console.url)
    conversation_id = tab.session["conversation_id"]
    await ask_for_a_person(tab)

    cases = [c for c in await console.cases() if c["conversation_id"] == conversation_id]
    assert len(cases) == 1
    case = cases[0]
    assert (case["reason"], case["priority"], case["status"]) == ("request", "normal", "open")
    assert case["channel"] == "web" and case["due_at"] and not case["overdue"]
    assert "asked to talk to a person" in case["summary_patient"]

    # Replying before claiming sends nothing: staff are told why.
    early = await console.act(case["id"], "reply", text="Hello?")
    assert early.status_code == 409 and early.json()["error"]["code"] == "not_claimed"

    claimed = await console.act(case["id"], "claim")
    assert claimed.status_code == 200 and claimed.json()["case"]["claimed_by"] == "Dana Reyes"
    await wait_for(lambda: "joined" in tab.messages[-1]["text"], "the joined notice")
    assert tab.messages[-1]["sender"] == "system"
    assert "Dana (Nurse)" in tab.messages[-1]["text"]

    # Someone else cannot take it over or write in it.
    other = await console.act(case["id"], "claim", who=LEE)
    assert other.status_code == 409 and "Dana Reyes" in other.json()["error"]["message"]
    other_reply = await console.act(case["id"], "reply", who=LEE, text="hi")
    assert other_reply.status_code == 409

    # While staff have it, the bot is quiet: the patient's message is stored for staff only.
    before = len(tab.messages)
    ack = await tab.say("ok, I'm waiting. my knee still hurts")
    assert ack["ok"]
    await asyncio.sleep(0.3)
    assert len(tab.messages) == before

    sent = await console.act(
        case["id"], "reply", text="Hi, this is Dana. Please keep the knee raised. I will call you."
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["delivery"] == "sent"
    await wait_for(lambda: tab.messages[-1]["sender"] == "staff", "the staff reply on the page")
    assert tab.messages[-1]["text"].startswith("Dana (Nurse): Hi, this is Dana.")

    detail = await console.client.get(f"/admin/api/v1/cases/{case['id']}", headers=DANA)
    senders = [m["sender"] for m in detail.json()["messages"]]
    assert senders.count("staff") == 1 and "patient" in senders

    handed = await console.act(case["id"], "handback")
    assert handed.json()["case"]["status"] == "handed_back"
    await wait_for(lambda: "back with the virtual assistant" in tab.messages[-1]["text"], "summary")
    assert "Hi, this is Dana." in tab.messages[-1]["text"]

    # The bot answers again.
    await tab.say("hello")
    assert tab.messages[-1]["sender"] == "bot"

    resolved = await console.act(case["id"], "resolve")
    assert resolved.json()["case"]["status"] == "resolved"
    await wait_for(lambda: bool(tab.messages[-1]["buttons"]), "the feedback question")
    feedback = tab.messages[-1]
    assert [b["payload"] for b in feedback["buttons"]] == [
        "/feedback_good",
        "/feedback_okay",
        "/feedback_poor",
    ]
    await tab.say("Good", payload="/feedback_good")
    assert "Thank you" in tab.messages[-1]["text"]
    assert [c for c in await console.cases() if c["conversation_id"] == conversation_id] == []
    closed = next(c for c in await console.cases("all") if c["id"] == case["id"])
    assert closed["feedback"] == "good"

    trail = [(e.action, e.detail.get("staff_name")) for e in console.audit(conversation_id)]
    for action in ("case.claimed", "case.staff_replied", "case.handed_back", "case.resolved"):
        assert (action, "Dana Reyes") in trail
    assert ("case.transcript_read", "Dana Reyes") in trail
    assert ("case.feedback", None) in trail
    await tab.sio.disconnect()


async def test_the_safety_layer_still_answers_while_staff_have_the_conversation(
    console: Console,
) -> None:
    tab = ChatClient()
    await tab.connect(console.url)
    await ask_for_a_person(tab)
    case = next(
        c for c in await console.cases() if c["conversation_id"] == tab.session["conversation_id"]
    )
    await console.act(case["id"], "claim")
    await tab.say("now I have crushing chest pain and I'm sweating a lot")
    assert "911" in tab.messages[-1]["text"]
    raised = next(c for c in await console.cases() if c["id"] == case["id"])
    # The same case, raised to the top priority, still with Dana.
    assert raised["priority"] == "immediate" and raised["claimed_by"] == "Dana Reyes"
    await tab.sio.disconnect()


async def test_a_new_reason_after_hand_back_opens_a_second_case(console: Console) -> None:
    tab = ChatClient()
    await tab.connect(console.url)
    conversation_id = tab.session["conversation_id"]
    await ask_for_a_person(tab)
    first = next(c for c in await console.cases() if c["conversation_id"] == conversation_id)
    await console.act(first["id"], "claim")
    await console.act(first["id"], "handback")
    await tab.say("I want to kill myself")
    mine = [c for c in await console.cases("all") if c["conversation_id"] == conversation_id]
    assert len(mine) == 2
    second = next(c for c in mine if c["id"] != first["id"])
    assert (second["reason"], second["status"]) == ("crisis", "open")
    assert second["priority"] in ("high", "immediate")
    # The console lists the crisis before the routine request.
    active = await console.cases()
    assert active.index(second) < len(active)
    assert all(c["id"] != first["id"] for c in active)
    # Staff actions on the closed case are refused with a reason.
    again = await console.act(first["id"], "reply", text="hello")
    assert again.status_code == 409 and again.json()["error"]["code"] == "closed"
    await tab.sio.disconnect()


async def test_two_unanswered_questions_in_a_row_open_a_case(console: Console) -> None:
    tab = ChatClient()
    await tab.connect(console.url)
    conversation_id = tab.session["conversation_id"]
    await tab.say("what is the airspeed velocity of an unladen swallow")
    assert not [c for c in await console.cases() if c["conversation_id"] == conversation_id]
    await tab.say("can you tell me the moon's distance to neptune in furlongs")
    mine = [c for c in await console.cases() if c["conversation_id"] == conversation_id]
    assert [(c["reason"], c["priority"]) for c in mine] == [("unanswered", "normal")]
    await tab.sio.disconnect()


async def test_the_console_refuses_without_token_or_name_and_unknown_cases(
    console: Console,
) -> None:
    no_token = await console.client.get("/admin/api/v1/cases")
    assert no_token.status_code == 401
    wrong = await console.client.get(
        "/admin/api/v1/cases", headers={**DANA, "Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    nameless = await console.client.get(
        "/admin/api/v1/cases", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert nameless.status_code == 401
    assert nameless.json()["error"]["code"] == "staff_name_required"
    missing = await console.act("0" * 32, "claim")
    assert missing.status_code == 404
    empty = await console.client.post(
        "/admin/api/v1/cases/x/reply", headers=DANA, content=b"not json"
    )
    assert empty.status_code == 422


async def test_unclaimed_cases_are_reminded_and_raised_to_supervisors_once(
    console: Console,
) -> None:
    tab = ChatClient()
    await tab.connect(console.url)
    conversation_id = tab.session["conversation_id"]
    await ask_for_a_person(tab)
    engine = make_sync_engine(console.database_url)
    with Session(engine) as session:
        case = session.scalars(
            select(Escalation).where(Escalation.conversation_id == conversation_id)
        ).one()
    settings = Settings(_env_file=None, database_url=console.database_url)  # type: ignore[call-arg]
    later = utcnow() + timedelta(hours=2)
    first = await asyncio.to_thread(remind_unclaimed, engine, settings, None, later)
    second = await asyncio.to_thread(remind_unclaimed, engine, settings, None, later)
    assert first["reminded"] >= 1 and first["raised"] >= 1
    assert second == {"reminded": 0, "raised": 0}
    with Session(engine) as session:
        row = session.get(Escalation, case.id)
        assert row is not None
        assert row.notify_count == 1 and row.supervisor_notified_at is not None
        actions = [e.action for e in console.audit(conversation_id)]
    assert actions.count("case.renotified") == 1
    assert actions.count("case.raised_to_supervisor") == 1
    listed = next(c for c in await console.cases() if c["id"] == case.id)
    assert listed["status"] == "open"
    await tab.sio.disconnect()


async def test_a_reply_after_a_phone_call_without_sms_becomes_a_callback_request(
    console: Console,
) -> None:
    from bot.contract import Channel, Inbound
    from bot.store import ConversationStore
    from core.db import make_async_engine, make_sessionmaker

    engine = make_async_engine(console.database_url)
    store = ConversationStore(make_sessionmaker(engine))
    caller = f"+1202555{uuid.uuid4().int % 10000:04d}"
    conversation = await store.open_conversation(
        channel=Channel.VOICE, address=caller, language="en"
    )
    await store.store_inbound(
        conversation=conversation,
        inbound=Inbound(channel=Channel.VOICE, sender_address=caller, text="I need a nurse"),
        text="I need a nurse",
        language="en",
    )
    case_id, _ = await store.escalate(
        conversation=conversation, priority="normal", reason="request", rule_ids=()
    )
    await engine.dispose()

    assert (await console.act(case_id, "claim")).status_code == 200
    sent = await console.act(case_id, "reply", text="I will call you back at 3pm.")
    body = sent.json()
    assert sent.status_code == 200 and body["delivery"] == "not_sent"
    assert "callback" in body["notice"]
    listed = next(c for c in await console.cases() if c["id"] == case_id)
    assert listed["callback_requested"] is True
