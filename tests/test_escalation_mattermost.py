"""Staff escalation through Mattermost, end to end: the real app and a real Celery worker (on
real Redis) talk to a local fake of the Mattermost server through the real mattermostdriver,
patients talk to the real Rasa on the web and by SMS (through the fake Twilio).

The staff side is played the way Mattermost plays it: a nurse's post is stored by the fake and
broadcast on its websocket, a button press is the server's POST to the card's integration URL,
a slash command is the server's form POST with the command's token.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import make_sync_engine
from core.orm import AuditEvent, Escalation, Message
from core.settings import Settings
from escalation.card import sign
from escalation.mattermost import case_channel_name
from escalation.routes import ACTIONS_PATH, COMMAND_PATH, OUTGOING_PATH
from tests.fakes.mattermost_server import FakeMattermost
from tests.fakes.twilio_server import FakeTwilio
from tests.support import RasaStack, celery_worker, free_port, running_app
from tests.test_sms_channel import (  # noqa: F401 (fixtures)
    CLINIC_NUMBER,
    SmsLab,
    fake_twilio,
    patient_number,
    redis_broker,
    worker_env,
)
from tests.test_web_channel import ChatClient

pytestmark = pytest.mark.rasa

SLASH_TOKEN = "slash-token-0123456789abcdef"
OUTGOING_TOKEN = "outgoing-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-mattermost-lab-0123456789"


@dataclass
class Staff:
    nurse: dict[str, Any]
    doctor: dict[str, Any]
    supervisor: dict[str, Any]
    oncall: dict[str, Any]
    supervisors: dict[str, Any]


@pytest.fixture(scope="module")
def fake_mm() -> Iterator[FakeMattermost]:
    with FakeMattermost(team_name="clinic") as fake:
        yield fake


@pytest.fixture(scope="module")
def staff(fake_mm: FakeMattermost) -> Staff:
    nurse = fake_mm.add_user("joy.nurse", first_name="Joy", last_name="Ng", position="Nurse")
    doctor = fake_mm.add_user("sam.md", first_name="Sam", last_name="Ortiz", position="Physician")
    boss = fake_mm.add_user("pat.lead", first_name="Pat", position="Nurse manager")
    fake_mm.set_status(nurse["id"], "offline")
    fake_mm.set_status(doctor["id"], "online")
    oncall = fake_mm.create_channel(
        "on-call", type="P", members=[fake_mm.bot_user_id, nurse["id"], doctor["id"]]
    )
    supervisors = fake_mm.create_channel(
        "supervisors", type="P", members=[fake_mm.bot_user_id, boss["id"]]
    )
    return Staff(nurse, doctor, boss, oncall, supervisors)


@dataclass
class Lab:
    url: str
    settings: Settings
    mm: FakeMattermost
    staff: Staff
    client: httpx.AsyncClient
    app: Any
    twilio: FakeTwilio

    def engine(self) -> Any:
        return make_sync_engine(self.settings.database_url)

    def case_of(self, conversation_id: str) -> Escalation | None:
        with Session(self.engine()) as session:
            return session.scalars(
                select(Escalation)
                .where(Escalation.conversation_id == conversation_id)
                .order_by(Escalation.created_at.desc())
            ).first()

    async def case_channel(self, conversation_id: str) -> tuple[Escalation, str]:
        def ready() -> bool:
            case = self.case_of(conversation_id)
            return bool(case and case.staff_channel_id and case.staff_card_id)

        await until(ready, "the case channel and card", timeout=30)
        case = self.case_of(conversation_id)
        assert case is not None and case.staff_channel_id
        return case, case.staff_channel_id

    def posts(self, channel_id: str) -> list[dict[str, Any]]:
        return [p for p in self.mm.posts_in(channel_id) if not p.get("type")]

    def messages(self, conversation_id: str, sender: str | None = None) -> list[Message]:
        with Session(self.engine()) as session:
            query = select(Message).where(Message.conversation_id == conversation_id)
            if sender:
                query = query.where(Message.sender == sender)
            return list(session.scalars(query.order_by(Message.seq)))

    def audit(self, conversation_id: str) -> list[AuditEvent]:
        with Session(self.engine()) as session:
            return list(
                session.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.conversation_id == conversation_id)
                    .order_by(AuditEvent.id)
                )
            )

    async def staff_post(self, user: dict[str, Any], channel_id: str, text: str, **kw: Any) -> Any:
        return await asyncio.to_thread(self.mm.user_posts, user["id"], channel_id, text, **kw)

    async def click(self, user: dict[str, Any], post_id: str, action: str) -> Any:
        return await asyncio.to_thread(self.mm.click_button, user["id"], post_id, action)

    async def command(self, user: dict[str, Any], channel_id: str, text: str) -> Any:
        return await asyncio.to_thread(self.mm.slash_command, user["id"], channel_id, text)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def mm_env(settings: Settings) -> dict[str, str]:
    assert settings.mattermost_bot_token is not None
    return {
        **worker_env(settings),
        "MATTERMOST_URL": str(settings.mattermost_url),
        "MATTERMOST_BOT_TOKEN": settings.mattermost_bot_token.get_secret_value(),
    }


@pytest.fixture(scope="module")
async def lab(
    rasa_stack: RasaStack,
    sqlite_url: str,
    fake_mm: FakeMattermost,
    staff: Staff,
    fake_twilio: FakeTwilio,  # noqa: F811
    redis_broker: str,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Lab]:
    """One app, one worker and the fakes for the whole module, as a clinic runs them."""
    port = free_port()
    data_dir = tmp_path_factory.mktemp("mattermost-lab")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        data_dir=data_dir,
        database_url=sqlite_url,
        celery_broker_url=redis_broker,
        rasa_url=rasa_stack.rasa_url,
        action_server_url=rasa_stack.action_url,
        rate_limit_per_sender="1000/minute",
        kb_preload=False,
        public_base_url=f"http://127.0.0.1:{port}",
        twilio_account_sid=fake_twilio.account_sid,
        twilio_auth_token=fake_twilio.auth_token,
        twilio_from_number=CLINIC_NUMBER,
        twilio_api_base_url=fake_twilio.base_url,
        sms_retry_base_s=0.2,
        mattermost_url=fake_mm.base_url,
        mattermost_bot_token=fake_mm.bot_token,
        mattermost_slash_token=SLASH_TOKEN,
        mattermost_outgoing_token=OUTGOING_TOKEN,
        admin_token=ADMIN_TOKEN,
    )
    fake_mm.register_command("case", f"http://127.0.0.1:{port}{COMMAND_PATH}", token=SLASH_TOKEN)
    with celery_worker(settings, data_dir / "worker.log", mm_env(settings)):
        async with (
            running_app(settings, port=port) as (url, app),
            httpx.AsyncClient(base_url=url, timeout=30) as client,
        ):
            listener = app.other_asgi_app.state.staff_listener
            await asyncio.wait_for(listener.connected.wait(), 10)
            yield Lab(url, settings, fake_mm, staff, client, app, fake_twilio)
    print((data_dir / "worker.log").read_text(errors="replace")[-3000:])


async def ask_for_a_person(tab: ChatClient) -> None:
    await tab.say("I want to talk to a real person")
    await tab.say("Yes", payload="/affirm")


async def claimed_case(lab: Lab) -> tuple[ChatClient, str, Escalation, str]:
    """A web patient who asked for a person, and the nurse who claimed the case."""
    tab = ChatClient()
    await tab.connect(lab.url)
    conversation_id = tab.session["conversation_id"]
    await ask_for_a_person(tab)
    case, channel_id = await lab.case_channel(conversation_id)
    await lab.click(lab.staff.nurse, str(case.staff_card_id), "claim")
    return tab, conversation_id, case, channel_id


async def test_a_web_patient_is_answered_by_a_nurse_from_mattermost_and_handed_back(
    lab: Lab,
) -> None:
    tab = ChatClient()
    await tab.connect(lab.url)
    conversation_id = tab.session["conversation_id"]
    await ask_for_a_person(tab)
    case, channel_id = await lab.case_channel(conversation_id)

    # A private channel named from the case id only, with the on-call staff in it.
    channel = lab.mm.channel_by_name(case_channel_name(case.id))
    assert channel is not None and channel["type"] == "P" and channel["id"] == channel_id
    assert "patient" not in channel["display_name"].lower()
    members = set(lab.mm.members_of(channel_id))
    assert {lab.staff.nurse["id"], lab.staff.doctor["id"]} <= members
    card = lab.mm.get_post(str(case.staff_card_id))
    # Online staff are mentioned first.
    assert card["message"].index("@sam.md") < card["message"].index("@joy.nurse")
    fields = {f["title"]: f["value"] for f in card["props"]["attachments"][0]["fields"]}
    assert fields["Reason"] == "request" and fields["Channel"] == "web chat"
    assert "real person" in fields["Recent messages"]
    actions = [a["id"] for a in card["props"]["attachments"][0]["actions"]]
    assert actions == ["claim", "resolve"]

    # Patient messages are posted into the case channel.
    await tab.say("my knee is swollen since yesterday")
    await until(
        lambda: any("knee is swollen" in p["message"] for p in lab.posts(channel_id)),
        "the patient's message in the case channel",
    )

    answer = await lab.click(lab.staff.nurse, str(case.staff_card_id), "claim")
    assert "You have case" in answer["ephemeral_text"]
    await until(lambda: "joined" in tab.messages[-1]["text"], "the joined notice on the page")
    assert "Joy (Nurse)" in tab.messages[-1]["text"]

    def card_actions() -> list[str]:
        attachment = lab.mm.get_post(str(case.staff_card_id))["props"]["attachments"][0]
        return [a["id"] for a in attachment.get("actions", [])]

    await until(lambda: card_actions() == ["handback", "resolve"], "the card after the claim")

    await lab.staff_post(lab.staff.nurse, channel_id, "Hi, I'm Joy. Rest it and keep it raised.")
    await until(lambda: tab.messages[-1]["sender"] == "staff", "the nurse's reply on the page")
    assert tab.messages[-1]["text"] == "Joy (Nurse): Hi, I'm Joy. Rest it and keep it raised."

    # A note for colleagues, and a colleague's post, never reach the patient.
    await lab.staff_post(lab.staff.nurse, channel_id, "// probably a sprain, will call later")
    await lab.staff_post(lab.staff.doctor, channel_id, "Agree, ice it.")
    await until(
        lambda: any("Joy Ng" in p["message"] and p.get("root_id") for p in lab.posts(channel_id)),
        "the notice that a colleague's post was not sent",
    )
    assert [m.text for m in lab.messages(conversation_id, "staff")] == [
        "Joy (Nurse): Hi, I'm Joy. Rest it and keep it raised."
    ]

    # The bot is quiet while staff have the conversation; the message goes to the channel.
    before = len(tab.messages)
    await tab.say("thanks, will do")
    await until(
        lambda: any("will do" in p["message"] for p in lab.posts(channel_id)), "relayed reply"
    )
    assert len(tab.messages) == before

    handback = await lab.command(lab.staff.nurse, channel_id, "/case handback")
    assert "assistant has the conversation" in handback["text"]
    await until(lambda: "back with the virtual assistant" in tab.messages[-1]["text"], "summary")
    assert "Rest it and keep it raised." in tab.messages[-1]["text"]
    await tab.say("hello")
    assert tab.messages[-1]["sender"] == "bot"

    status = await lab.command(lab.staff.nurse, channel_id, "/case status")
    assert "handed_back" in status["text"]
    trail = [(e.action, e.detail.get("staff_name")) for e in lab.audit(conversation_id)]
    assert ("case.claimed", "Joy Ng (@joy.nurse)") in trail
    assert ("case.staff_replied", "Joy Ng (@joy.nurse)") in trail
    assert ("case.handed_back", "Joy Ng (@joy.nurse)") in trail
    await tab.sio.disconnect()


async def test_staff_posts_survive_a_dropped_websocket_and_duplicates_arrive_once(
    lab: Lab,
) -> None:
    tab, conversation_id, _case, channel_id = await claimed_case(lab)

    listener = lab.app.other_asgi_app.state.staff_listener
    connections = listener.connections
    assert lab.mm.drop_websockets() >= 1
    # Written while the app's websocket is down: the catch-up after reconnecting finds it.
    post = await lab.staff_post(lab.staff.nurse, channel_id, "Posted while you were away.")
    await until(lambda: listener.connections > connections, "the listener to reconnect")
    await until(
        lambda: any("while you were away" in m["text"] for m in tab.messages), "caught-up post"
    )
    # The same event delivered twice more, and once more through an outgoing webhook.
    await asyncio.to_thread(lab.mm.broadcast_again, post["id"])
    await asyncio.to_thread(lab.mm.broadcast_again, post["id"])
    hook = await lab.client.post(
        OUTGOING_PATH,
        json={
            "token": OUTGOING_TOKEN,
            "post_id": post["id"],
            "channel_id": channel_id,
            "user_id": lab.staff.nurse["id"],
            "text": post["message"],
            "timestamp": post["create_at"],
        },
    )
    assert hook.status_code == 200
    await asyncio.sleep(0.5)
    staff_texts = [m.text for m in lab.messages(conversation_id, "staff")]
    assert staff_texts == ["Joy (Nurse): Posted while you were away."]
    assert sum("while you were away" in m["text"] for m in tab.messages) == 1
    await tab.sio.disconnect()


async def test_forged_buttons_commands_and_webhooks_change_nothing(lab: Lab) -> None:
    tab = ChatClient()
    await tab.connect(lab.url)
    conversation_id = tab.session["conversation_id"]
    await ask_for_a_person(tab)
    case, channel_id = await lab.case_channel(conversation_id)
    nurse = lab.staff.nurse["id"]

    forged = [
        await lab.client.post(
            ACTIONS_PATH,
            json={
                "user_id": nurse,
                "context": {"action": "claim", "case_id": case.id, "sig": "0" * 64},
            },
        ),
        await lab.client.post(
            ACTIONS_PATH,
            # Signed for another case: the signature covers the case id.
            json={
                "user_id": nurse,
                "context": {
                    "action": "resolve",
                    "case_id": case.id,
                    "sig": sign(lab.settings.secret(), "another-case", "resolve"),
                },
            },
        ),
        await lab.client.post(ACTIONS_PATH, json={"user_id": nurse, "context": {}}),
        await lab.client.post(
            COMMAND_PATH,
            data={"token": "wrong", "channel_id": channel_id, "user_id": nurse, "text": "claim"},
        ),
        await lab.client.post(
            COMMAND_PATH, data={"channel_id": channel_id, "user_id": nurse, "text": "claim"}
        ),
        await lab.client.post(
            OUTGOING_PATH,
            json={
                "token": "wrong",
                "post_id": uuid.uuid4().hex,
                "channel_id": channel_id,
                "user_id": nurse,
                "text": "hello",
            },
        ),
    ]
    assert [r.status_code for r in forged] == [403] * 6
    malformed = await lab.client.post(ACTIONS_PATH, content=b"\xff\xfe not json")
    assert malformed.status_code == 400
    still = lab.case_of(conversation_id)
    assert still is not None and still.status == "open" and still.claimed_by_id is None
    # The real thing works.
    answer = await lab.click(lab.staff.nurse, str(case.staff_card_id), "claim")
    assert "You have case" in answer["ephemeral_text"]
    late = await lab.click(lab.staff.doctor, str(case.staff_card_id), "resolve")
    assert "Resolved" in late["ephemeral_text"]  # a colleague may close it; it is audited
    await tab.sio.disconnect()


async def test_an_sms_patient_gets_staff_replies_by_text_unless_they_opted_out(
    lab: Lab,
) -> None:
    sms = SmsLab(lab.url, lab.settings, lab.twilio, lab.engine(), lab.client)
    phone = patient_number()
    await sms.text(phone, "I want to talk to a person", message_sid="SM" + uuid.uuid4().hex)
    await sms.wait_sent(phone, 1)
    await sms.text(phone, "yes", message_sid="SM" + uuid.uuid4().hex)
    await sms.wait_sent(phone, 2)
    with Session(lab.engine()) as session:
        # Metadata is encrypted: the sender is compared here, not in SQL.
        inbound = session.scalars(select(Message).where(Message.direction == "inbound")).all()
        conversation_id = next(
            (m.conversation_id for m in inbound if (m.meta or {}).get("from") == phone), None
        )
    assert conversation_id
    case, channel_id = await lab.case_channel(conversation_id)
    fields = lab.mm.get_post(str(case.staff_card_id))["props"]["attachments"][0]["fields"]
    assert {"title": "Channel", "value": "text message", "short": True} in fields

    await lab.click(lab.staff.nurse, str(case.staff_card_id), "claim")
    await sms.wait_sent(phone, 3)  # "Joy (Nurse) from the clinic has joined..."
    await lab.staff_post(lab.staff.nurse, channel_id, "Hi, this is Joy. Can you come at 3pm?")
    sent = await sms.wait_sent(phone, 4)
    assert sent[-1]["body"] == "Joy (Nurse): Hi, this is Joy. Can you come at 3pm?"
    assert sent[-1]["from"] == CLINIC_NUMBER

    # The patient texts STOP: the next staff reply is not sent, and staff are told why.
    await sms.text(phone, "STOP", message_sid="SM" + uuid.uuid4().hex)
    await until(lambda: bool(_opted_out(lab, phone)), "the opt-out recorded", timeout=30)
    await lab.staff_post(lab.staff.nurse, channel_id, "Are you still there?")
    await until(
        lambda: any("opted out" in p["message"] for p in lab.posts(channel_id)),
        "the not-sent notice in the case channel",
        timeout=30,
    )
    await asyncio.sleep(0.5)
    assert len(sms.sent_to(phone)) == 4
    not_sent = [m for m in lab.messages(conversation_id, "staff") if m.status == "not_sent"]
    assert [m.text for m in not_sent] == ["Joy (Nurse): Are you still there?"]


def _opted_out(lab: Lab, phone: str) -> str | None:
    from core.crypto import blind_index
    from core.orm import SmsConsent

    with Session(lab.engine()) as session:
        status = session.scalar(
            select(SmsConsent.status).where(SmsConsent.address_hash == blind_index(phone))
        )
    return status if status == "opted_out" else None


async def test_a_second_case_for_the_same_patient_gets_its_own_channel(lab: Lab) -> None:
    tab = ChatClient()
    await tab.connect(lab.url)
    conversation_id = tab.session["conversation_id"]
    await ask_for_a_person(tab)
    first, first_channel = await lab.case_channel(conversation_id)
    await lab.click(lab.staff.nurse, str(first.staff_card_id), "claim")
    await lab.click(lab.staff.nurse, str(first.staff_card_id), "resolve")
    await tab.say("I took all my pills, I want to die")
    assert "911" in tab.messages[-2]["text"] or "911" in tab.messages[-1]["text"]

    def second_ready() -> bool:
        case = lab.case_of(conversation_id)
        return bool(case and case.id != first.id and case.staff_card_id)

    await until(second_ready, "the second case's channel", timeout=30)
    second = lab.case_of(conversation_id)
    assert second is not None and second.priority == "immediate"
    assert second.staff_channel_id != first_channel
    card = lab.mm.get_post(str(second.staff_card_id))
    assert card["message"].startswith("#### IMMEDIATE")
    # A post in the old, resolved case's channel goes nowhere, and staff are told.
    await lab.staff_post(lab.staff.nurse, first_channel, "Hello again?")
    await until(
        lambda: any("closed" in p["message"] for p in lab.posts(first_channel)),
        "the closed-case notice",
    )
    assert lab.messages(conversation_id, "staff") == []
    await tab.sio.disconnect()


async def test_unclaimed_cases_remind_on_call_staff_then_supervisors(lab: Lab) -> None:
    from datetime import timedelta

    from core.orm import utcnow
    from escalation.mattermost import MattermostGateway
    from escalation.tasks import remind_unclaimed

    tab = ChatClient()
    await tab.connect(lab.url)
    conversation_id = tab.session["conversation_id"]
    await ask_for_a_person(tab)
    case, channel_id = await lab.case_channel(conversation_id)
    assert lab.settings.mattermost_bot_token is not None
    gateway = MattermostGateway(
        url=lab.mm.base_url,
        token=lab.settings.mattermost_bot_token.get_secret_value(),
        team="clinic",
        oncall_channel="on-call",
        supervisor_channel="supervisors",
    )
    later = utcnow() + timedelta(hours=3)
    done = await asyncio.to_thread(remind_unclaimed, lab.engine(), lab.settings, gateway, later)
    assert done["reminded"] >= 1 and done["raised"] >= 1
    assert any("Still unclaimed" in p["message"] for p in lab.posts(channel_id))
    alert = [p for p in lab.posts(lab.staff.supervisors["id"]) if case.id[:8] in p["message"]]
    assert len(alert) == 1 and "@pat.lead" in alert[0]["message"]
    assert lab.staff.supervisor["id"] in lab.mm.members_of(channel_id)
    await tab.sio.disconnect()


def test_the_card_buttons_carry_a_signature_for_their_own_case_only() -> None:
    from escalation.card import verify

    secret = b"s" * 32
    context = {"action": "claim", "case_id": "abc", "sig": sign(secret, "abc", "claim")}
    assert verify(secret, context) == ("abc", "claim")
    assert verify(secret, {**context, "action": "resolve"}) is None
    assert verify(secret, {**context, "case_id": "abd"}) is None
    assert verify(b"t" * 32, context) is None
    assert verify(secret, json.dumps(context)) is None


async def test_a_staff_attachment_reaches_the_patient_as_a_link(lab: Lab) -> None:
    tab, _conversation_id, _case, channel_id = await claimed_case(lab)

    await lab.staff_post(
        lab.staff.nurse, channel_id, "Here is the leaflet.", file_names=["knee-care.pdf"]
    )
    await until(lambda: tab.messages[-1]["sender"] == "staff", "the reply with its link")
    text = tab.messages[-1]["text"]
    assert text.startswith("Joy (Nurse): Here is the leaflet.")
    assert f"{lab.mm.base_url}/files/" in text

    # With public links off on the server, the text still goes and staff are told the file did
    # not.
    lab.mm.public_links = False
    try:
        await lab.staff_post(
            lab.staff.nurse, channel_id, "And the exercises.", file_names=["exercises.pdf"]
        )
        await until(
            lambda: any("public file links are off" in p["message"] for p in lab.posts(channel_id)),
            "the notice about the file",
        )
    finally:
        lab.mm.public_links = True
    await until(lambda: "exercises" in tab.messages[-1]["text"], "the text without the file")
    assert "/files/" not in tab.messages[-1]["text"]
    await tab.sio.disconnect()


async def test_a_case_worked_from_the_console_shows_in_mattermost_too(lab: Lab) -> None:
    tab = ChatClient()
    await tab.connect(lab.url)
    conversation_id = tab.session["conversation_id"]
    await ask_for_a_person(tab)
    case, channel_id = await lab.case_channel(conversation_id)
    console = {
        "Authorization": f"Bearer {ADMIN_TOKEN}",
        "X-Staff-Name": "Dana Reyes",
        "X-Staff-Role": "Nurse",
    }
    claimed = await lab.client.post(f"/admin/api/v1/cases/{case.id}/claim", headers=console)
    assert claimed.status_code == 200
    sent = await lab.client.post(
        f"/admin/api/v1/cases/{case.id}/reply", headers=console, json={"text": "Hello from Dana."}
    )
    assert sent.json()["delivery"] == "sent"
    await until(
        lambda: any(
            "Dana Reyes** (staff console) to the patient: Hello from Dana." in p["message"]
            for p in lab.posts(channel_id)
        ),
        "the console reply in the case channel",
    )
    await until(
        lambda: "Claimed by Dana Reyes" in lab.mm.get_post(str(case.staff_card_id))["message"],
        "the card showing who has the case",
    )
    # In Mattermost, the nurse who did not claim it is told so and nothing reaches the patient.
    await lab.staff_post(lab.staff.nurse, channel_id, "I can take this one.")
    await until(
        lambda: any("Dana Reyes has this case" in p["message"] for p in lab.posts(channel_id)),
        "the notice to the other nurse",
    )
    assert [m.text for m in lab.messages(conversation_id, "staff")] == [
        "Dana (Nurse): Hello from Dana."
    ]
    await tab.sio.disconnect()
