"""Patients' data rights and retention: an export holds everything planted for a patient and is
audited; erasure leaves no row, file or tracker event of the patient while the audit chain
still verifies; retention erases only patients silent past the limit; the admin API's audit
and privacy routes answer only the roles the contract names."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from limits import parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from bot.contract import Channel, Inbound
from bot.store import ConversationStore, NewReply
from core import audit, privacy
from core.crypto import blind_index
from core.db import make_async_engine, make_sessionmaker, make_sync_engine
from core.orm import (
    AuditEvent,
    Conversation,
    Escalation,
    Message,
    MessageMedia,
    Patient,
    PhoneLinkCode,
    SmsConsent,
    VoiceCall,
    utcnow,
)
from core.settings import REPO_ROOT, Settings
from core.tasks import RETENTION, celery_app
from tests.conftest import API_TOKEN
from tests.support import running_app
from webapp.auth import Passwords
from webapp.users import create_user

ADMIN_TOKEN = "privacy-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PASSWORD = "correct horse battery staple"
FAST = Passwords(time_cost=1, memory_kib=8192)
FAST_SETTINGS = {"password_hash_time_cost": 1, "password_hash_memory_kib": 8192}
REDIS_URL = "redis://127.0.0.1:6379/7"


@dataclass(frozen=True)
class Planted:
    patient_id: str
    conversation_id: str
    phone: str
    secret: str
    media_path: Path
    call_sid: str
    escalation_id: str


def _phone() -> str:
    return f"+1415{uuid.uuid4().int % 10**7:07d}"


async def plant(database_url: str, data_dir: Path, *, consent: str = "opted_in") -> Planted:
    """A patient with one of everything: messages, a picture on disk, a call, a case, an SMS
    consent and a phone-link code."""
    engine = make_async_engine(database_url)
    sessions = make_sessionmaker(engine)
    store = ConversationStore(sessions)
    phone, secret = _phone(), f"my secret rash {uuid.uuid4().hex}"
    conversation = await store.open_conversation(channel=Channel.SMS, address=phone, language="en")
    inbound = Inbound(
        channel=Channel.SMS,
        sender_address=phone,
        text=secret,
        vendor_message_id=f"SM{uuid.uuid4().hex}",
    )
    message, _ = await store.store_inbound(
        conversation=conversation, inbound=inbound, text=secret, language="en"
    )
    await store.add_replies(
        conversation=conversation,
        channel=Channel.SMS,
        in_reply_to=message.id,
        language="en",
        replies=[NewReply(text=f"About {secret}: a nurse will call.")],
    )
    case_id, _ = await store.escalate(
        conversation=conversation,
        priority="high",
        reason="triage",
        rule_ids=["T1"],
        summary=f"Patient reports {secret}",
    )
    folder = data_dir / "media"
    folder.mkdir(parents=True, exist_ok=True)
    picture = folder / f"{uuid.uuid4().hex}.jpg"
    picture.write_bytes(b"\xff\xd8\xff picture of the rash")
    call_sid = f"CA{uuid.uuid4().hex}"
    async with sessions() as session, session.begin():
        session.add_all(
            [
                MessageMedia(
                    message_id=message.id,
                    conversation_id=conversation.id,
                    content_type="image/jpeg",
                    size_bytes=24,
                    sha256="0" * 64,
                    stored_path=str(picture),
                    status="stored",
                ),
                VoiceCall(
                    call_sid=call_sid,
                    conversation_id=conversation.id,
                    caller=phone,
                    called="+15550001111",
                    via="pstn",
                    mode="gather",
                    status="completed",
                    language="en",
                ),
                SmsConsent(address=phone, status=consent, keyword="START", source="keyword"),
                PhoneLinkCode(
                    patient_id=conversation.patient_id,
                    conversation_id=conversation.id,
                    address=phone,
                    code_hash="1" * 64,
                    expires_at=utcnow() + timedelta(minutes=10),
                ),
            ]
        )
    await engine.dispose()
    return Planted(
        conversation.patient_id, conversation.id, phone, secret, picture, call_sid, case_id
    )


def settings_for(
    make_settings: Callable[..., Settings], database_url: str, **extra: Any
) -> Settings:
    return make_settings(
        database_url=database_url, admin_token=ADMIN_TOKEN, **FAST_SETTINGS, **extra
    )


def remaining_rows(database_url: str, planted: Planted) -> dict[str, int]:
    """Raw SQL, whatever the ORM does: rows that still name the patient, their conversation
    or their phone (through its blind index, since the number itself is encrypted)."""
    checks = {
        "patients": ("SELECT count(*) FROM patients WHERE id = :p", {"p": planted.patient_id}),
        "channel_identities": (
            "SELECT count(*) FROM channel_identities WHERE patient_id = :p",
            {"p": planted.patient_id},
        ),
        "conversations": (
            "SELECT count(*) FROM conversations WHERE patient_id = :p OR id = :c",
            {"p": planted.patient_id, "c": planted.conversation_id},
        ),
        "messages": (
            "SELECT count(*) FROM messages WHERE conversation_id = :c",
            {"c": planted.conversation_id},
        ),
        "message_media": (
            "SELECT count(*) FROM message_media WHERE conversation_id = :c",
            {"c": planted.conversation_id},
        ),
        "voice_calls": (
            "SELECT count(*) FROM voice_calls WHERE call_sid = :s OR conversation_id = :c",
            {"s": planted.call_sid, "c": planted.conversation_id},
        ),
        "escalations": (
            "SELECT count(*) FROM escalations WHERE patient_id = :p OR conversation_id = :c",
            {"p": planted.patient_id, "c": planted.conversation_id},
        ),
        "phone_link_codes": (
            "SELECT count(*) FROM phone_link_codes WHERE patient_id = :p",
            {"p": planted.patient_id},
        ),
        "sms_consent": (
            "SELECT count(*) FROM sms_consent WHERE address_hash = :h",
            {"h": blind_index(planted.phone)},
        ),
    }
    engine = make_sync_engine(database_url)
    try:
        with engine.connect() as connection:
            return {
                table: int(connection.scalar(text(sql), params) or 0)
                for table, (sql, params) in checks.items()
            }
    finally:
        engine.dispose()


def chain_ok(database_url: str) -> bool:
    engine = make_sync_engine(database_url)
    try:
        with engine.connect() as connection:
            return audit.verify(connection).ok
    finally:
        engine.dispose()


def events(database_url: str, action: str, patient_id: str | None = None) -> list[AuditEvent]:
    engine = make_sync_engine(database_url)
    try:
        with Session(engine) as session:
            query = select(AuditEvent).where(AuditEvent.action == action)
            if patient_id:
                query = query.where(AuditEvent.patient_id == patient_id)
            return list(session.scalars(query.order_by(AuditEvent.id)))
    finally:
        engine.dispose()


async def test_an_export_holds_the_patients_data_and_is_audited(
    database_url: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_for(make_settings, database_url)
    planted = await plant(database_url, settings.data_dir)
    other = await plant(database_url, settings.data_dir)
    async with running_app(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        response = await client.get(
            f"/admin/api/v1/patients/{planted.patient_id}/export", headers=ADMIN
        )
        missing = await client.get("/admin/api/v1/patients/nobody/export", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    data = response.json()
    assert data["patient"]["id"] == planted.patient_id
    assert [(i["channel"], i["address"]) for i in data["identities"]] == [("sms", planted.phone)]
    [conversation] = data["conversations"]
    texts = [m["text"] for m in conversation["messages"]]
    assert texts == [planted.secret, f"About {planted.secret}: a nurse will call."]
    assert conversation["messages"][0]["media"][0]["content_type"] == "image/jpeg"
    assert [c["call_sid"] for c in data["calls"]] == [planted.call_sid]
    assert data["calls"][0]["caller"] == planted.phone
    assert [e["summary"] for e in data["escalations"]] == [f"Patient reports {planted.secret}"]
    assert [(c["address"], c["status"]) for c in data["consents"]] == [(planted.phone, "opted_in")]
    assert "conversation.opened" in [e["action"] for e in data["audit_trail"]]
    # Nothing of another patient.
    assert other.secret not in response.text and other.phone not in response.text
    assert missing.status_code == 404

    [exported] = events(database_url, "patient_data.export", planted.patient_id)
    assert exported.actor == "user:admin-token"
    assert exported.detail == {"conversations": 1, "messages": 2, "calls": 1, "escalations": 1}
    assert planted.secret not in json.dumps(exported.detail)


async def test_erasure_leaves_nothing_of_the_patient_and_the_chain_verifies(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable: {exc}")
    settings = settings_for(make_settings, database_url, redis_url=REDIS_URL)
    planted = await plant(database_url, settings.data_dir)
    bystander = await plant(database_url, settings.data_dir)
    # The orchestrator's rate-limit counters for both senders, keyed by their numbers.
    limiter = SlidingWindowCounterRateLimiter(
        RedisStorage(f"async+{REDIS_URL}", implementation="redispy")
    )
    for phone in (planted.phone, bystander.phone):
        await limiter.hit(parse("30/minute"), "sms", phone)
    counters = redis.Redis.from_url(REDIS_URL)
    assert counters.keys(f"*{planted.phone}*")
    assert all(remaining_rows(database_url, planted).values())

    async with running_app(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        path = f"/admin/api/v1/patients/{planted.patient_id}/erase"
        unconfirmed = await client.post(path, headers=ADMIN, json={})
        mismatched = await client.post(path, headers=ADMIN, json={"confirm": bystander.patient_id})
        assert all(remaining_rows(database_url, planted).values())
        erased = await client.post(path, headers=ADMIN, json={"confirm": planted.patient_id})
        again = await client.post(path, headers=ADMIN, json={"confirm": planted.patient_id})
        verified = await client.get("/admin/api/v1/audit/verify", headers=ADMIN)

    assert unconfirmed.status_code == 422 and mismatched.status_code == 422
    assert unconfirmed.json()["error"]["code"] == "confirmation_required"
    assert erased.status_code == 200, erased.text
    counts = erased.json()["erased"]
    assert counts["patients"] == 1 and counts["messages"] == 2 and counts["media_files"] == 1
    assert counts["calls"] == 1 and counts["escalations"] == 1
    assert counts["rate_limit_keys"] >= 1
    assert again.status_code == 404

    assert remaining_rows(database_url, planted) == dict.fromkeys(
        remaining_rows(database_url, planted), 0
    )
    assert not planted.media_path.exists()
    assert not counters.keys(f"*{planted.phone}*")
    # The bystander keeps everything.
    assert all(remaining_rows(database_url, bystander).values())
    assert bystander.media_path.exists() and counters.keys(f"*{bystander.phone}*")

    # The audit log keeps its events about the patient (ids only) and says what was erased.
    assert verified.json() == {
        "ok": True,
        "checked": verified.json()["checked"],
        "first_bad_id": None,
    }
    assert chain_ok(database_url)
    assert events(database_url, "conversation.opened", planted.patient_id)
    [event] = events(database_url, "patient.erased", planted.patient_id)
    assert event.actor == "user:admin-token" and event.detail == counts


async def test_an_opt_out_outlives_erasure(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = settings_for(make_settings, database_url)
    planted = await plant(database_url, settings.data_dir, consent="opted_out")
    engine = make_sync_engine(database_url)
    with Session(engine) as session, session.begin():
        privacy.erase_patient(session, planted.patient_id, actor="test", settings=settings)
    with Session(engine) as session:
        kept = list(
            session.scalars(
                select(SmsConsent).where(SmsConsent.address_hash == blind_index(planted.phone))
            )
        )
    engine.dispose()
    assert [(c.address, c.status) for c in kept] == [(planted.phone, "opted_out")]
    left = {k: v for k, v in remaining_rows(database_url, planted).items() if v}
    assert left == {"sms_consent": 1}


async def make_old(database_url: str, planted: Planted, days: int) -> None:
    """Move a planted patient's activity `days` into the past."""
    then = utcnow() - timedelta(days=days)
    engine = make_async_engine(database_url)
    async with make_sessionmaker(engine)() as session, session.begin():
        await session.execute(
            update(Patient).where(Patient.id == planted.patient_id).values(created_at=then)
        )
        await session.execute(
            update(Conversation)
            .where(Conversation.id == planted.conversation_id)
            .values(created_at=then, updated_at=then)
        )
        await session.execute(
            update(Message)
            .where(Message.conversation_id == planted.conversation_id)
            .values(created_at=then)
        )
        await session.execute(
            update(MessageMedia)
            .where(MessageMedia.conversation_id == planted.conversation_id)
            .values(created_at=then)
        )
        await session.execute(
            update(Escalation)
            .where(Escalation.conversation_id == planted.conversation_id)
            .values(status="resolved", created_at=then, updated_at=then)
        )
    await engine.dispose()


async def test_retention_erases_only_patients_silent_past_the_limit(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = settings_for(make_settings, database_url, retention_days=30, retention_media_days=10)
    old = await plant(database_url, settings.data_dir)
    await make_old(database_url, old, days=45)
    recent = await plant(database_url, settings.data_dir)
    # Silent for long, but staff are still working on their case.
    waiting = await plant(database_url, settings.data_dir)
    await make_old(database_url, waiting, days=45)
    engine = make_async_engine(database_url)
    async with make_sessionmaker(engine)() as session, session.begin():
        await session.execute(
            update(Escalation)
            .where(Escalation.conversation_id == waiting.conversation_id)
            .values(status="claimed")
        )
    await engine.dispose()
    # A recent patient whose picture is older than RETENTION_MEDIA_DAYS.
    pictured = await plant(database_url, settings.data_dir)
    sync = make_sync_engine(database_url)
    with Session(sync) as session, session.begin():
        session.execute(
            update(MessageMedia)
            .where(MessageMedia.conversation_id == pictured.conversation_id)
            .values(created_at=utcnow() - timedelta(days=12))
        )

    with Session(sync) as session, session.begin():
        dry = privacy.run_retention(session, settings, dry_run=True)
    assert dry["patients"] >= 1 and dry["media_expired"] >= 2
    assert all(remaining_rows(database_url, old).values()) and old.media_path.exists()

    with Session(sync) as session, session.begin():
        report = privacy.run_retention(session, settings)
    with Session(sync) as session, session.begin():
        second = privacy.run_retention(session, settings)
    with Session(sync) as session:
        picture = session.scalar(
            select(MessageMedia).where(MessageMedia.conversation_id == pictured.conversation_id)
        )
        pictured_messages = session.scalar(
            select(func.count())
            .select_from(Message)
            .where(Message.conversation_id == pictured.conversation_id)
        )
    sync.dispose()

    assert report["patients"] >= 1 and report["messages"] >= 2 and report["media_files"] >= 2
    assert not any(remaining_rows(database_url, old).values()) and not old.media_path.exists()
    assert all(remaining_rows(database_url, recent).values()) and recent.media_path.exists()
    assert all(remaining_rows(database_url, waiting).values())
    # The old picture of a recent patient is gone; the row says so, the messages stay.
    assert picture is not None and picture.status == "expired" and picture.stored_path is None
    assert not pictured.media_path.exists() and pictured_messages == 2
    # Idempotent: the second run finds nothing more.
    assert second["patients"] == 0 and second["messages"] == 0 and second["media_files"] == 0
    runs = events(database_url, "retention.erased")
    assert [e.detail["patients"] for e in runs[-2:]] == [report["patients"], 0]
    assert chain_ok(database_url)


def test_the_command_line_asks_before_erasing_and_counts_a_dry_run(
    database_url: str, tmp_path: Path
) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "DATA_DIR": str(tmp_path)}

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "core.privacy", *args],
            cwd=REPO_ROOT,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )

    refused = cli("erase", "somebody")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    dry = cli("retention", "--dry-run", RETENTION_DAYS="3650")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True and report["retention_days"] == 3650
    assert report["patients"] == 0


def test_the_worker_runs_retention_daily(database_url: str, tmp_path: Path) -> None:
    assert celery_app.conf.beat_schedule["privacy-retention"]["task"] == RETENTION
    assert RETENTION in celery_app.tasks
    runs_before = len(events(database_url, "retention.erased"))
    # The task body as the worker runs it, configured from the environment like the worker.
    task = subprocess.run(
        [sys.executable, "-c", "from core.tasks import apply_retention; apply_retention()"],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "DATABASE_URL": database_url,
            "DATA_DIR": str(tmp_path),
            "RETENTION_DAYS": "3650",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert task.returncode == 0, task.stderr
    runs = events(database_url, "retention.erased")
    assert len(runs) == runs_before + 1
    assert runs[-1].actor == "retention" and runs[-1].detail["retention_days"] == 3650


async def test_the_audit_and_privacy_routes_answer_only_the_right_roles(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = settings_for(make_settings, database_url)
    planted = await plant(database_url, settings.data_dir)
    auditor, staff = f"aud{uuid.uuid4().hex[:8]}", f"staff{uuid.uuid4().hex[:8]}"
    create_user(database_url, auditor, PASSWORD, "auditor", passwords=FAST)
    create_user(database_url, staff, PASSWORD, "staff", passwords=FAST)
    export = f"/admin/api/v1/patients/{planted.patient_id}/export"
    erase = f"/admin/api/v1/patients/{planted.patient_id}/erase"
    confirm = {"confirm": planted.patient_id}
    async with running_app(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:

        async def token(username: str) -> dict[str, str]:
            response = await client.post(
                "/admin/api/v1/auth/login", json={"username": username, "password": PASSWORD}
            )
            assert response.status_code == 200, response.text
            return {"Authorization": f"Bearer {response.json()['token']}"}

        as_auditor, as_staff = await token(auditor), await token(staff)
        nobody = [
            await client.get("/admin/api/v1/audit"),
            await client.get("/admin/api/v1/audit/verify"),
            await client.get(export),
            await client.post(erase, json=confirm),
            await client.get("/admin/api/v1/audit", headers={"Authorization": "Bearer wrong"}),
        ]
        auditor_reads = [
            await client.get("/admin/api/v1/audit", headers=as_auditor),
            await client.get("/admin/api/v1/audit/verify", headers=as_auditor),
        ]
        forbidden = [
            await client.get(export, headers=as_auditor),
            await client.post(erase, headers=as_auditor, json=confirm),
            await client.get("/admin/api/v1/audit", headers=as_staff),
            await client.get(export, headers=as_staff),
        ]
        bad_query = await client.get("/admin/api/v1/audit?limit=0", headers=ADMIN)
        page = await client.get(
            f"/admin/api/v1/audit?limit=1&patient_id={planted.patient_id}", headers=ADMIN
        )
        next_page = await client.get(
            f"/admin/api/v1/audit?limit=1&patient_id={planted.patient_id}"
            f"&before_id={page.json()['next_before_id']}",
            headers=ADMIN,
        )
        opened = await client.get(
            f"/admin/api/v1/audit?action=conversation.opened&patient_id={planted.patient_id}",
            headers=as_auditor,
        )

    assert [r.status_code for r in nobody] == [401] * 5
    assert all(r.json()["error"]["code"] == "unauthorized" for r in nobody)
    assert [r.status_code for r in auditor_reads] == [200, 200]
    assert auditor_reads[1].json()["ok"] is True
    assert [r.status_code for r in forbidden] == [403] * 4
    assert all(remaining_rows(database_url, planted).values())
    assert bad_query.status_code == 422

    first, second = page.json()["events"], next_page.json()["events"]
    assert len(first) == 1 and second and first[-1]["id"] > second[0]["id"]
    assert set(first[0]) == {
        "id",
        "at",
        "actor",
        "action",
        "patient_id",
        "conversation_id",
        "detail",
        "hash",
    }
    assert all(e["patient_id"] == planted.patient_id for e in first + second)
    [event] = opened.json()["events"]
    assert event["conversation_id"] == planted.conversation_id and len(event["hash"]) == 64
    assert opened.json()["next_before_id"] is None


@pytest.mark.rasa
async def test_a_live_conversation_is_erased_from_rasa_too(
    database_url: str, make_live_settings: Callable[..., Settings], rasa_stack: Any
) -> None:
    """Real traffic through the API channel and real Rasa: the chain holds, and erasure
    reaches the dialogue's tracker store."""
    settings = make_live_settings(
        database_url,
        admin_token=ADMIN_TOKEN,
        rasa_tracker_db_url=f"sqlite:///{rasa_stack.tracker_db}",
    )
    sender = f"patient-{uuid.uuid4().hex[:8]}"

    def tracker_events(conversation_id: str) -> int:
        with sqlite3.connect(rasa_stack.tracker_db) as connection:
            row = connection.execute(
                "SELECT count(*) FROM events WHERE sender_id = ?", (conversation_id,)
            ).fetchone()
        return int(row[0])

    api = {"Authorization": f"Bearer {API_TOKEN}"}
    async with (
        running_app(settings) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=60) as client,
    ):
        first = await client.post(
            "/api/v1/messages", headers=api, json={"sender_id": sender, "text": "hello there"}
        )
        assert first.status_code == 200, first.text
        await client.post(
            "/api/v1/messages",
            headers=api,
            json={"sender_id": sender, "text": "what are your opening hours"},
        )
        conversation_id = first.json()["conversation_id"]
        assert tracker_events(conversation_id) > 0
        verified = await client.get("/admin/api/v1/audit/verify", headers=ADMIN)
        assert verified.json()["ok"] is True

        engine = make_sync_engine(database_url)
        with engine.connect() as connection:
            patient_id = connection.scalar(
                select(Conversation.patient_id).where(Conversation.id == conversation_id)
            )
        engine.dispose()
        erased = await client.post(
            f"/admin/api/v1/patients/{patient_id}/erase",
            headers=ADMIN,
            json={"confirm": patient_id},
        )
        after = await client.get("/admin/api/v1/audit/verify", headers=ADMIN)
    assert erased.status_code == 200, erased.text
    assert erased.json()["erased"]["tracker_events"] > 0
    assert tracker_events(conversation_id) == 0
    assert after.json()["ok"] is True
