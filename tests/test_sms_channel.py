"""SMS through Twilio, end to end: signed webhooks into the real app, a real Celery worker on
real Redis answering through the real Rasa, and the official twilio client sending to a local
fake of Twilio's REST API, whose signed status callbacks come back to the app."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bot.contract import Channel
from bot.store import ConversationStore, NewReply
from channels.sms.webhook import EMPTY_TWIML, SEND
from core.crypto import blind_index
from core.db import make_async_engine, make_sessionmaker, make_sync_engine
from core.orm import AuditEvent, Conversation, Escalation, Message, MessageMedia, SmsConsent
from core.settings import Settings
from core.tasks import make_celery
from tests.fakes.twilio_server import FakeTwilio, inbound_sms_params, sign
from tests.support import celery_worker, free_port, running_app, wait_until
from tests.test_web_channel import ChatClient

pytestmark = pytest.mark.rasa

CLINIC_NUMBER = "+15017122661"
REDIS_URL = "redis://127.0.0.1:6379/5"
ADMIN_TOKEN = "test-admin-token-sms-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00"
    b"\x00\x00\x00IEND\xaeB`\x82"
)


def patient_number() -> str:
    # 555-01xx numbers are reserved for fiction; a random tail keeps tests apart.
    return f"+1202555{uuid.uuid4().int % 10000:04d}"


@pytest.fixture(scope="module")
def fake_twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio(service_number=CLINIC_NUMBER) as fake:
        yield fake


@pytest.fixture(scope="module")
def redis_broker() -> str:
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {type(exc).__name__}")
    redis.Redis.from_url(REDIS_URL).flushdb()
    return REDIS_URL


def sms_settings(
    make: Callable[..., Settings], fake: FakeTwilio, port: int, **extra: Any
) -> Settings:
    return make(
        public_base_url=f"http://127.0.0.1:{port}",
        twilio_account_sid=fake.account_sid,
        twilio_auth_token=fake.auth_token,
        twilio_from_number=CLINIC_NUMBER,
        twilio_api_base_url=fake.base_url,
        sms_retry_base_s=0.2,
        admin_token=ADMIN_TOKEN,
        **extra,
    )


def worker_env(settings: Settings) -> dict[str, str]:
    assert settings.twilio_auth_token is not None
    return {
        "PUBLIC_BASE_URL": str(settings.public_base_url),
        "TWILIO_ACCOUNT_SID": str(settings.twilio_account_sid),
        "TWILIO_AUTH_TOKEN": settings.twilio_auth_token.get_secret_value(),
        "TWILIO_FROM_NUMBER": str(settings.twilio_from_number),
        "TWILIO_API_BASE_URL": settings.twilio_api_base_url,
        "SMS_RETRY_BASE_S": str(settings.sms_retry_base_s),
        "RASA_URL": settings.rasa_url,
        "ACTION_SERVER_URL": settings.action_server_url,
        "RATE_LIMIT_PER_SENDER": settings.rate_limit_per_sender,
        "KB_PRELOAD": "false",
        "ENVIRONMENT": "test",
    }


@dataclass
class SmsLab:
    """The app, its worker and the fake Twilio, and a phone to text from."""

    url: str
    settings: Settings
    fake: FakeTwilio
    engine: Engine
    client: httpx.AsyncClient

    async def text(
        self,
        sender: str,
        body: str,
        *,
        media: list[tuple[str, str]] | None = None,
        message_sid: str | None = None,
    ) -> httpx.Response:
        params = inbound_sms_params(
            account_sid=self.fake.account_sid,
            from_=sender,
            to=CLINIC_NUMBER,
            body=body,
            media=media or [],
            message_sid=message_sid,
        )
        return await self.post("/channels/sms/twilio", params)

    async def post(
        self, path: str, params: dict[str, str], *, signature: str | None = None
    ) -> httpx.Response:
        url = f"{self.settings.public_base_url}{path}"
        headers = {"X-Twilio-Signature": sign(self.fake.auth_token, url, params)}
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        return await self.client.post(path, data=params, headers=headers)

    def sent_to(self, number: str) -> list[dict[str, Any]]:
        return [m for m in self.fake.messages if m["to"] == number]

    async def wait_sent(self, number: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        await asyncio.to_thread(
            wait_until,
            lambda: len(self.sent_to(number)) >= count,
            timeout=timeout,
            what=f"{count} SMS to the patient",
        )
        return self.sent_to(number)

    def outbound(self, number: str) -> list[Message]:
        with Session(self.engine) as session:
            rows = session.scalars(
                select(Message).where(Message.direction == "outbound").order_by(Message.seq)
            ).all()
        return [r for r in rows if (r.meta or {}).get("to") == number]

    async def wait_status(self, vendor_sid: str, status: str) -> Any:
        def reached() -> bool:
            with self.engine.connect() as connection:
                return (
                    connection.scalar(
                        select(Message.status).where(Message.vendor_message_id == vendor_sid)
                    )
                    == status
                )

        await asyncio.to_thread(wait_until, reached, timeout=30, what=f"status {status}")


@pytest.fixture
async def lab(
    make_live_settings: Callable[..., Settings],
    sqlite_url: str,
    fake_twilio: FakeTwilio,
    redis_broker: str,
    tmp_path: Path,
) -> AsyncIterator[SmsLab]:
    port = free_port()
    settings = sms_settings(
        lambda **kw: make_live_settings(sqlite_url, celery_broker_url=redis_broker, **kw),
        fake_twilio,
        port,
    )
    with celery_worker(settings, tmp_path / "worker.log", worker_env(settings)):
        async with (
            running_app(settings, port=port) as (url, _),
            httpx.AsyncClient(base_url=url, timeout=30) as client,
        ):
            yield SmsLab(url, settings, fake_twilio, make_sync_engine(sqlite_url), client)
    print((tmp_path / "worker.log").read_text(errors="replace")[-3000:])


async def test_a_text_is_acknowledged_at_once_and_answered_by_the_worker(lab: SmsLab) -> None:
    phone = patient_number()
    ack = await lab.text(phone, "hello", message_sid="SM" + uuid.uuid4().hex)
    assert ack.status_code == 200
    assert ack.headers["content-type"].startswith("text/xml")
    assert ack.text == EMPTY_TWIML

    sent = await lab.wait_sent(phone, 1)
    assert sent[0]["body"] and sent[0]["from"] == CLINIC_NUMBER
    # Twilio's status callbacks come back signed and move the stored reply to delivered.
    await lab.wait_status(sent[0]["sid"], "delivered")
    with lab.engine.connect() as connection:
        # Text and metadata are encrypted: compared here, not in SQL.
        statuses = connection.execute(
            select(Message.status, Message.text, Message.meta.label("meta")).where(
                Message.direction == "inbound"
            )
        ).all()
    mine = [m.status for m in statuses if m.text == "hello" and m.meta.get("from") == phone]
    assert mine == ["processed"]


async def test_twilio_retries_never_produce_a_second_reply(lab: SmsLab) -> None:
    phone = patient_number()
    sid = "SM" + uuid.uuid4().hex
    first = await lab.text(phone, "hello there", message_sid=sid)
    again = await asyncio.gather(
        *(lab.text(phone, "hello there", message_sid=sid) for _ in range(3))
    )
    assert first.status_code == 200 and all(r.status_code == 200 for r in again)
    sent = await lab.wait_sent(phone, 1)
    # Another message afterwards is answered; the retried one never was a second time.
    await lab.text(phone, "thanks")
    await lab.wait_sent(phone, len(sent) + 1)
    with lab.engine.connect() as connection:
        stored = connection.scalars(
            select(Message.id).where(Message.vendor_message_id == sid)
        ).all()
    assert len(stored) == 1
    replies = [m for m in lab.outbound(phone)]
    in_reply_to = [m.in_reply_to for m in replies]
    assert in_reply_to.count(stored[0]) == len(sent)


async def test_buttons_become_numbered_options_answered_with_a_digit(lab: SmsLab) -> None:
    phone = patient_number()
    await lab.text(phone, "I want to talk to a person")
    offer = (await lab.wait_sent(phone, 1))[-1]["body"]
    assert "1. Yes" in offer and "2. No" in offer, offer
    await lab.text(phone, "1")
    answer = (await lab.wait_sent(phone, 2))[-1]["body"]
    assert "staff will follow up" in answer, answer


async def test_an_emergency_by_text_gets_the_instructions_whole_and_a_case(lab: SmsLab) -> None:
    phone = patient_number()
    await lab.text(phone, "my dad collapsed and is not breathing")
    sent = await lab.wait_sent(phone, 1)
    assert "911" in sent[0]["body"], sent[0]["body"]
    rows = lab.outbound(phone)
    assert rows[0].meta.get("consent_exempt") is None and rows[0].sender == "bot"
    with lab.engine.connect() as connection:
        priority = connection.scalar(
            select(Escalation.priority).where(Escalation.conversation_id == rows[0].conversation_id)
        )
    assert priority == "immediate"


async def test_unicode_and_emoji_are_kept_and_replies_fit_sms(lab: SmsLab) -> None:
    phone = patient_number()
    text = "Hola, ¿qué horario tiene la clínica? 😊"
    await lab.text(phone, text)
    sent = await lab.wait_sent(phone, 1)
    with lab.engine.connect() as connection:
        stored = connection.scalars(select(Message.text).where(Message.direction == "inbound"))
        assert text in stored.all()
    for message in sent:
        assert len(message["body"]) <= 1600
        assert "\u2019" not in message["body"] and "\u2014" not in message["body"]
    rows = lab.outbound(phone)
    assert all(r.meta["segments"] >= 1 and r.meta["encoding"] in ("GSM-7", "UCS-2") for r in rows)


async def test_delivery_reports_out_of_order_and_failures_reach_staff(lab: SmsLab) -> None:
    late = patient_number()
    lab.fake.callback_order = "reversed"
    try:
        await lab.text(late, "hello")
        sent = await lab.wait_sent(late, 1)
        await asyncio.to_thread(lab.fake.wait_for_status, sent[0]["sid"], "delivered")
        await asyncio.sleep(1)  # the late "sent" report arrives after "delivered"
        await lab.wait_status(sent[0]["sid"], "delivered")
    finally:
        lab.fake.callback_order = "in_order"

    lost = patient_number()
    lab.fake.set_outcome(lost, "undelivered", error_code="30003")
    await lab.text(lost, "hello")
    sent = await lab.wait_sent(lost, 1)
    await lab.wait_status(sent[0]["sid"], "undelivered")
    with lab.engine.connect() as connection:
        reply = connection.execute(
            select(Message.conversation_id, Message.needs_follow_up).where(
                Message.vendor_message_id == sent[0]["sid"]
            )
        ).one()
        flagged = connection.scalar(
            select(Conversation.needs_follow_up).where(Conversation.id == reply.conversation_id)
        )
        audit = connection.execute(
            select(AuditEvent.detail).where(AuditEvent.action == "sms.undelivered")
            .where(AuditEvent.conversation_id == reply.conversation_id)
        ).all()  # fmt: skip
    assert reply.needs_follow_up and flagged
    assert audit and audit[0].detail["error_code"] == "30003"
    # Staff see it in the transcript, with the delivery reports.
    transcript = await lab.client.get(
        f"/admin/api/v1/conversations/{reply.conversation_id}/messages", headers=ADMIN
    )
    assert transcript.status_code == 200 and transcript.json()["needs_follow_up"]
    shown = [m for m in transcript.json()["messages"] if m["status"] == "undelivered"]
    assert shown and [d["status"] for d in shown[0]["delivery"]][-1] == "undelivered"
    assert shown[0]["delivery"][-1]["error_code"] == "30003"


async def test_sending_is_retried_with_backoff_when_twilio_is_unavailable(lab: SmsLab) -> None:
    phone = patient_number()
    lab.fake.fail_next(503, times=2)
    await lab.text(phone, "hello")
    sent = await lab.wait_sent(phone, 1)
    await lab.wait_status(sent[0]["sid"], "delivered")
    creates = [r for r in lab.fake.requests if r.method == "POST" and r.get("To") == phone]
    assert len(creates) == 3  # two refused with 503, the third accepted


async def test_stop_start_and_help_are_recorded_and_honoured_for_every_sender(lab: SmsLab) -> None:
    phone = patient_number()
    await lab.text(phone, "hello")
    await lab.wait_sent(phone, 1)

    assert (await lab.text(phone, "Stop")).status_code == 200
    await asyncio.to_thread(
        wait_until, lambda: consent(lab, phone) == "opted_out", timeout=10, what="the opt-out"
    )
    # A staff reply (or any other sender) goes through the same outbox, and is held back.
    message_id = await queue_staff_reply(lab, phone, "Your results are ready.")
    await asyncio.to_thread(
        wait_until,
        lambda: status_of(lab, message_id) == "suppressed",
        timeout=30,
        what="the staff reply to be suppressed",
    )
    await lab.text(phone, "hello again")  # answered by the bot, but not sent
    await asyncio.sleep(3)
    assert len(lab.sent_to(phone)) == 1
    # Twilio answers the standard keywords itself unless told otherwise: no reply from us.
    await lab.text(phone, "HELP")
    await lab.text(phone, "START")
    await asyncio.to_thread(
        wait_until, lambda: consent(lab, phone) == "opted_in", timeout=10, what="the opt-in"
    )
    await lab.text(phone, "hello")
    sent = await lab.wait_sent(phone, 2)
    assert "STOP" not in sent[-1]["body"]

    # Words Twilio does not know (Spanish) are confirmed by us, the opt-out included.
    spanish = patient_number()
    await lab.text(spanish, "AYUDA")
    help_reply = (await lab.wait_sent(spanish, 1))[-1]["body"]
    assert "ALTO" in help_reply
    await lab.text(spanish, "alto")
    confirmation = (await lab.wait_sent(spanish, 2))[-1]["body"]
    assert "Ya no recibirá" in confirmation
    assert consent(lab, spanish) == "opted_out"


async def test_pictures_are_kept_for_staff_and_other_files_are_refused(lab: SmsLab) -> None:
    phone = patient_number()
    picture = lab.fake.add_media(PNG, "image/png")
    video = lab.fake.add_media(b"\x00" * 64, "video/mp4")
    await lab.text(phone, "", media=[(picture, "image/png"), (video, "video/mp4")])
    sent = await lab.wait_sent(phone, 2)
    bodies = " ".join(m["body"] for m in sent)
    assert "saved your picture" in bodies and "could not keep" in bodies
    with lab.engine.connect() as connection:
        media = connection.execute(
            select(
                MessageMedia.content_type,
                MessageMedia.status,
                MessageMedia.stored_path,
                MessageMedia.size_bytes,
                MessageMedia.reason,
            ).order_by(MessageMedia.created_at)
        ).all()
    mine = [m for m in media if m.content_type in ("image/png", "video/mp4")][-2:]
    stored = next(m for m in mine if m.status == "stored")
    refused = next(m for m in mine if m.status == "refused")
    assert Path(stored.stored_path).read_bytes() == PNG and stored.size_bytes == len(PNG)
    assert refused.reason == "type_not_accepted" and refused.stored_path is None
    # Staff open the picture from the transcript.
    with lab.engine.connect() as connection:
        media_id, conversation_id = connection.execute(
            select(MessageMedia.id, MessageMedia.conversation_id).where(
                MessageMedia.stored_path == stored.stored_path
            )
        ).first()  # type: ignore[misc]
    transcript = await lab.client.get(
        f"/admin/api/v1/conversations/{conversation_id}/messages", headers=ADMIN
    )
    listed = [item for m in transcript.json()["messages"] for item in m["media"]]
    assert {item["status"] for item in listed} >= {"stored", "refused"}
    picture_file = await lab.client.get(f"/admin/api/v1/media/{media_id}", headers=ADMIN)
    assert picture_file.content == PNG and picture_file.headers["content-type"] == "image/png"
    assert (await lab.client.get(f"/admin/api/v1/media/{media_id}")).status_code == 401


def consent(lab: SmsLab, phone: str) -> str | None:
    with lab.engine.connect() as connection:
        return connection.scalar(
            select(SmsConsent.status).where(SmsConsent.address_hash == blind_index(phone))
        )


def status_of(lab: SmsLab, message_id: str) -> str | None:
    with lab.engine.connect() as connection:
        return connection.scalar(select(Message.status).where(Message.id == message_id))


async def queue_staff_reply(lab: SmsLab, phone: str, text: str) -> str:
    engine = make_async_engine(lab.settings.database_url)
    try:
        store = ConversationStore(make_sessionmaker(engine))
        conversation = await store.find_conversation(channel=Channel.SMS, address=phone)
        assert conversation is not None
        [message] = await store.add_replies(
            conversation=conversation,
            channel=Channel.SMS,
            in_reply_to=None,
            language="en",
            replies=[NewReply(text, sender="staff", status="queued", meta={"to": phone})],
        )
    finally:
        await engine.dispose()
    make_celery(lab.settings).send_task(SEND, args=[[message.id]])
    return message.id


async def test_a_web_patient_links_a_phone_and_the_conversation_goes_on_by_text(
    lab: SmsLab,
) -> None:
    tab = ChatClient()
    await tab.connect(lab.url)
    assert tab.session["linked_phone"] is None
    phone = patient_number()
    first = await tab.sio.call("link_phone", {"phone": phone[2:]}, timeout=30)
    assert first["ok"] and first["masked"].endswith(phone[-4:]), first
    code = re.search(r"\b(\d{6})\b", (await lab.wait_sent(phone, 1))[-1]["body"])
    assert code is not None
    wrong = "000000" if code.group(1) != "000000" else "111111"
    refused = await tab.sio.call("verify_phone", {"code": wrong}, timeout=30)
    assert not refused["ok"] and refused["code"] == "invalid_code" and refused["attempts_left"]
    linked = await tab.sio.call("verify_phone", {"code": code.group(1)}, timeout=30)
    assert linked["ok"], linked

    # The triage starts on the web ...
    await tab.say("my stomach hurts")
    asked_web = [m["text"] for m in tab.messages if m["direction"] == "outbound"][-1]
    assert "how old" in asked_web.lower(), asked_web
    # ... and the next answer, by text, is the answer to that question.
    await lab.text(phone, "34")
    asked_sms = (await lab.wait_sent(phone, 2))[-1]["body"]
    assert "when did it start" in asked_sms.lower(), asked_sms
    with lab.engine.connect() as connection:
        inbound = connection.execute(
            select(Message.conversation_id, Message.text)
            .where(Message.channel == "sms")
            .where(Message.direction == "inbound")
            .order_by(Message.seq.desc())
        ).all()
        conversation_of_text = next(r.conversation_id for r in inbound if r.text == "34")
    assert conversation_of_text == tab.session["conversation_id"]
    await tab.sio.disconnect()
