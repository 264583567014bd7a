"""Encryption at rest (core/crypto.py): what a copy of the database shows, look-ups through the
blind index, key rotation, unknown keys, rows written before encryption, and migration 0009."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.contract import Channel, Inbound
from bot.store import ConversationStore
from channels.sms import records
from core import crypto, migrate
from core.db import make_async_engine, make_sessionmaker, make_sync_engine
from core.orm import (
    AuditEvent,
    ChannelIdentity,
    Escalation,
    Message,
    PhoneLinkCode,
    VoiceCall,
    new_id,
    utcnow,
)
from core.settings import REPO_ROOT, Settings

KEY_A = "Q16uZYB5zC5fdepS-PKE-FLmNRUEb7f9JmAMFzybnWg="
KEY_B = "QoYPB3koyRu-AX95mfCzw8VH--yfjTiE9g9aUiklAxY="
INDEX_KEY = "blind-index-key-for-these-tests-0123456789"


def phone() -> str:
    return f"+1415555{uuid.uuid4().int % 10_000:04d}"


def planted() -> str:
    return f"my rash started after the new pills {uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _restore_keys() -> Iterator[None]:
    # Tests here switch the process's keys; the rest of the suite shares the default ones.
    before = crypto.keyring()
    yield
    crypto.use_keyring(before)


@pytest.fixture
def fresh_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the same kind, for tests that must not leave rows under foreign
    keys in the shared one."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"clinic_enc_{uuid.uuid4().hex[:10]}"
    admin = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def keyed(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """Settings with these keys, made the process's keys."""

    def build(url: str, *keys: str) -> Settings:
        settings = make_settings(
            database_url=url, encryption_keys=",".join(keys), blind_index_key=INDEX_KEY
        )
        crypto.use(settings)
        return settings

    return build


@pytest.fixture
def sync_engine(database_url: str) -> Iterator[Engine]:
    engine = make_sync_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_async_engine(database_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def open_store() -> AsyncIterator[Callable[[str], ConversationStore]]:
    """A store on a database, with the process's keys at the time."""
    engines: list[AsyncEngine] = []

    def build(url: str) -> ConversationStore:
        engines.append(make_async_engine(url))
        return ConversationStore(make_sessionmaker(engines[-1]))

    yield build
    for engine in engines:
        await engine.dispose()


async def text_from(store: ConversationStore, number: str, body: str) -> tuple[str, str]:
    """An SMS as the webhook stores it: (conversation id, message id)."""
    conversation = await store.open_conversation(channel=Channel.SMS, address=number, language="en")
    message, _ = await store.store_inbound(
        conversation=conversation,
        inbound=Inbound(
            channel=Channel.SMS,
            sender_address=number,
            text=body,
            vendor_message_id=new_id(),
            metadata={"from": number, "to": "+14155550000"},
        ),
        text=body,
        language="en",
    )
    return conversation.id, message.id


def raw_rows(engine: Engine, sql: str, **params: Any) -> str:
    with engine.connect() as connection:
        return repr(connection.execute(text(sql), params).all())


async def test_a_copy_of_the_database_shows_no_message_text_or_phone_number(
    store: ConversationStore,
    sessions: async_sessionmaker[AsyncSession],
    sync_engine: Engine,
) -> None:
    number, body = phone(), planted()
    conversation_id, message_id = await text_from(store, number, body)
    conversation = await store.get_conversation(conversation_id)
    assert conversation is not None
    case_id, _ = await store.escalate(
        conversation=conversation,
        priority="normal",
        reason="request",
        rule_ids=[],
        summary=f"Patient at {number} says: {body}",
    )
    async with sessions() as session, session.begin():
        session.add(
            VoiceCall(
                call_sid=f"CA{new_id()}",
                conversation_id=conversation_id,
                caller=number,
                called="+14155550000",
                via="pstn",
                mode="gather",
                status="completed",
                language="en",
            )
        )
        session.add(
            PhoneLinkCode(
                patient_id=conversation.patient_id,
                conversation_id=conversation_id,
                address=number,
                code_hash="0" * 64,
                expires_at=utcnow() + timedelta(minutes=10),
            )
        )
    with sync_engine.begin() as connection:
        records.record_consent(
            connection,
            address=number,
            status="opted_out",
            keyword="STOP",
            source="keyword",
            message_id=message_id,
        )

    dump = "".join(
        [
            raw_rows(sync_engine, "SELECT * FROM messages WHERE id = :id", id=message_id),
            raw_rows(sync_engine, "SELECT * FROM escalations WHERE id = :id", id=case_id),
            raw_rows(
                sync_engine,
                "SELECT * FROM channel_identities WHERE patient_id = :p",
                p=conversation.patient_id,
            ),
            raw_rows(
                sync_engine,
                "SELECT * FROM voice_calls WHERE conversation_id = :c",
                c=conversation_id,
            ),
            raw_rows(
                sync_engine,
                "SELECT * FROM phone_link_codes WHERE conversation_id = :c",
                c=conversation_id,
            ),
            raw_rows(sync_engine, "SELECT * FROM sms_consent WHERE message_id = :m", m=message_id),
        ]
    )
    assert "enc1:" in dump
    for secret in (body, number, number[1:], "rash"):
        assert secret not in dump

    # The application still sees plain values.
    history = await store.history(conversation_id, limit=10)
    assert [m.text for m in history] == [body]
    async with sessions() as session:
        message = await session.scalar(select(Message).where(Message.id == message_id))
        case = await session.get(Escalation, case_id)
        call = await session.scalar(
            select(VoiceCall).where(VoiceCall.conversation_id == conversation_id)
        )
    assert message is not None and message.meta["from"] == number
    assert case is not None and case.summary == f"Patient at {number} says: {body}"
    assert call is not None and call.caller == number


async def test_the_same_number_twice_is_one_patient_found_through_the_blind_index(
    store: ConversationStore, sync_engine: Engine
) -> None:
    number = phone()
    first, _ = await text_from(store, number, planted())
    second, _ = await text_from(store, number, planted())
    assert first == second
    found = await store.find_conversation(channel=Channel.SMS, address=number)
    assert found is not None and found.id == first
    # Another channel with the same address is someone else.
    assert await store.find_conversation(channel=Channel.VOICE, address=number) is None
    with sync_engine.connect() as connection:
        identities = connection.scalar(
            select(func.count())
            .select_from(ChannelIdentity)
            .where(ChannelIdentity.address_hash == crypto.blind_index(number))
        )
    assert identities == 1
    assert len(await store.history(first, limit=10)) == 2


async def test_sms_consent_is_found_by_number_through_the_blind_index(
    sync_engine: Engine,
) -> None:
    number = phone()
    with sync_engine.begin() as connection:
        for status in ("opted_out", "opted_in", "opted_out"):
            records.record_consent(
                connection,
                address=number,
                status=status,
                keyword=None,
                source="keyword",
                message_id=None,
            )
    with sync_engine.connect() as connection:
        assert connection.scalar(records.opted_out_query(number)) == "opted_out"
        assert connection.scalar(records.opted_out_query(phone())) is None
        rows = connection.execute(
            text("SELECT address, address_hash FROM sms_consent WHERE address_hash = :h"),
            {"h": crypto.blind_index(number)},
        ).all()
    assert len(rows) == 1 and number not in repr(rows)


def test_comparing_an_encrypted_column_is_refused_rather_than_finding_nothing() -> None:
    with pytest.raises(TypeError, match="address_hash"):
        select(ChannelIdentity).where(ChannelIdentity.address == "+14155550100")
    with pytest.raises(TypeError, match="encrypted"):
        select(Message).where(Message.text.like("%rash%"))
    # NULL checks still work.
    select(Escalation).where(Escalation.summary.is_(None))


async def test_rotation_moves_everything_to_the_new_key_and_the_old_key_can_go(
    fresh_url: str,
    keyed: Callable[..., Settings],
    open_store: Callable[[str], ConversationStore],
) -> None:
    keyed(fresh_url, KEY_A)
    migrate.upgrade(fresh_url)
    store = open_store(fresh_url)
    number, body = phone(), planted()
    conversation_id, _ = await text_from(store, number, body)
    engine = make_sync_engine(fresh_url)
    before = raw_rows(engine, "SELECT text FROM messages")

    both = keyed(fresh_url, KEY_B, KEY_A)
    out = io.StringIO()
    counts = crypto.rotate(both, batch_size=1, out=out)
    assert counts.reencrypted >= 3  # text, metadata, the identity's address
    assert counts.encrypted == 0
    assert "messages" in out.getvalue() and "done" in out.getvalue()
    assert raw_rows(engine, "SELECT text FROM messages") != before
    # Idempotent: a second run finds nothing to do.
    again = crypto.rotate(both, out=io.StringIO())
    assert (again.reencrypted, again.encrypted, again.reindexed) == (0, 0, 0)

    keyed(fresh_url, KEY_B)
    store = open_store(fresh_url)
    assert [m.text for m in await store.history(conversation_id, limit=10)] == [body]
    found = await store.find_conversation(channel=Channel.SMS, address=number)
    assert found is not None and found.id == conversation_id

    with engine.connect() as connection:
        audits = connection.execute(
            select(AuditEvent.actor, AuditEvent.detail).where(
                AuditEvent.action == "encryption.rotated"
            )
        ).all()
    engine.dispose()
    assert [actor for actor, _ in audits] == ["cli", "cli"]
    assert audits[0].detail["reencrypted"] == counts.reencrypted
    assert body not in repr(audits) and number not in repr(audits)


async def test_a_database_encrypted_with_an_unknown_key_says_which_setting_to_fix(
    fresh_url: str,
    keyed: Callable[..., Settings],
    open_store: Callable[[str], ConversationStore],
) -> None:
    keyed(fresh_url, KEY_A)
    migrate.upgrade(fresh_url)
    conversation_id, _ = await text_from(open_store(fresh_url), phone(), planted())

    keyed(fresh_url, KEY_B)
    with pytest.raises(crypto.UnreadableValue) as failure:
        await open_store(fresh_url).history(conversation_id, limit=10)
    message = str(failure.value)
    assert "ENCRYPTION_KEYS" in message and "rotate" in message
    assert KEY_A not in message and KEY_B not in message
    # Rotation cannot re-encrypt what it cannot read either, and says the same.
    with pytest.raises(crypto.UnreadableValue):
        crypto.rotate(keyed(fresh_url, KEY_B), out=io.StringIO())


async def test_rows_written_before_encryption_still_read_and_rotate_encrypts_them(
    fresh_url: str,
    keyed: Callable[..., Settings],
    open_store: Callable[[str], ConversationStore],
) -> None:
    settings = keyed(fresh_url, KEY_A)
    migrate.upgrade(fresh_url)
    store = open_store(fresh_url)
    number, body = phone(), planted()
    conversation_id, message_id = await text_from(store, number, planted())
    engine = make_sync_engine(fresh_url)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE messages SET text = :t, metadata = :m WHERE id = :id"),
            {"t": body, "m": f'{{"from": "{number}"}}', "id": message_id},
        )
        connection.execute(
            text("UPDATE channel_identities SET address = :a WHERE address_hash = :h"),
            {"a": number, "h": crypto.blind_index(number)},
        )

    assert [m.text for m in await store.history(conversation_id, limit=10)] == [body]
    assert await store.find_conversation(channel=Channel.SMS, address=number) is not None

    counts = crypto.rotate(settings, out=io.StringIO())
    assert counts.encrypted == 3
    dump = raw_rows(engine, "SELECT * FROM messages") + raw_rows(
        engine, "SELECT * FROM channel_identities"
    )
    engine.dispose()
    assert body not in dump and number not in dump
    assert [m.text for m in await store.history(conversation_id, limit=10)] == [body]


def _alembic(url: str) -> Config:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    return config


async def test_migration_0009_encrypts_an_existing_database_and_fills_the_blind_index(
    fresh_url: str,
    keyed: Callable[..., Settings],
    open_store: Callable[[str], ConversationStore],
) -> None:
    keyed(fresh_url, KEY_A)
    command.upgrade(_alembic(fresh_url), "0008")
    number, body, now = phone(), planted(), utcnow()
    patient, identity, conversation = new_id(), new_id(), new_id()
    engine = make_sync_engine(fresh_url)
    statements: list[tuple[str, dict[str, Any]]] = [
        ("INSERT INTO patients (id, created_at) VALUES (:p, :now)", {}),
        (
            "INSERT INTO channel_identities (id, patient_id, channel, address, created_at) "
            "VALUES (:i, :p, 'sms', :number, :now)",
            {},
        ),
        (
            "INSERT INTO conversations (id, patient_id, identity_id, channel, mode, language, "
            "safety_level, safety_rule_ids, triage, needs_follow_up, unanswered_streak, "
            "created_at, updated_at) VALUES (:c, :p, :i, 'sms', 'bot', 'en', 'none', '[]', "
            ":triage, false, 0, :now, :now)",
            {"triage": '{"complaint": "rash"}'},
        ),
        (
            "INSERT INTO messages (id, conversation_id, channel, direction, sender, text, "
            "buttons, vendor_ids, metadata, status, needs_follow_up, created_at) VALUES "
            "(:m, :c, 'sms', 'inbound', 'patient', :body, '[]', '{}', :meta, 'processed', "
            "false, :now)",
            {"m": new_id(), "meta": f'{{"from": "{number}"}}'},
        ),
        (
            "INSERT INTO escalations (id, conversation_id, patient_id, priority, reason, "
            "rule_ids, summary, status, created_at, updated_at, notify_count, "
            "callback_requested) VALUES (:e, :c, :p, 'normal', 'request', '[]', :body, 'open', "
            ":now, :now, 0, false)",
            {"e": new_id()},
        ),
        (
            "INSERT INTO sms_consent (address, status, source, updated_at) "
            "VALUES (:number, 'opted_out', 'keyword', :now)",
            {},
        ),
        (
            "INSERT INTO voice_calls (call_sid, conversation_id, caller, called, via, mode, "
            "status, language, staff_requested, follow_up_sent, started_at) VALUES "
            "(:sid, :c, :number, '+14155550000', 'pstn', 'gather', 'completed', 'en', false, "
            "false, :now)",
            {"sid": f"CA{new_id()}"},
        ),
        (
            "INSERT INTO phone_link_codes (id, patient_id, conversation_id, address, code_hash, "
            "attempts, status, created_at, expires_at) VALUES (:l, :p, :c, :number, :hash, 0, "
            "'used', :now, :now)",
            {"l": new_id(), "hash": "0" * 64},
        ),
    ]
    shared = {"p": patient, "i": identity, "c": conversation, "number": number, "body": body}
    with engine.begin() as connection:
        for sql, params in statements:
            connection.execute(text(sql), {**shared, "now": now, **params})

    migrate.upgrade(fresh_url)

    tables = ("messages", "conversations", "escalations", "channel_identities", "sms_consent")
    dump = "".join(raw_rows(engine, f"SELECT * FROM {t}") for t in tables)
    dump += raw_rows(engine, "SELECT * FROM voice_calls") + raw_rows(
        engine, "SELECT * FROM phone_link_codes"
    )
    for secret in (body, number, "rash"):
        assert secret not in dump
    with engine.connect() as connection:
        # Rebuilding a table must not have cascaded to the rows referencing it.
        for table_name in (*tables, "voice_calls", "phone_link_codes"):
            assert connection.scalar(text(f"SELECT count(*) FROM {table_name}")) == 1
        assert connection.scalar(records.opted_out_query(number)) == "opted_out"
        hashed = connection.scalar(
            select(func.count())
            .select_from(PhoneLinkCode)
            .where(PhoneLinkCode.address_hash == crypto.blind_index(number))
        )
    engine.dispose()
    assert hashed == 1

    store = open_store(fresh_url)
    found = await store.find_conversation(channel=Channel.SMS, address=number)
    assert found is not None and found.id == conversation
    assert found.triage == {"complaint": "rash"}
    assert [m.text for m in await store.history(conversation, limit=10)] == [body]
    # A new message from that number joins the same patient.
    again, _ = await text_from(store, number, planted())
    assert again == conversation

    # Downgrading decrypts: the schema of 0008 holds plaintext again.
    command.downgrade(_alembic(fresh_url), "0008")
    engine = make_sync_engine(fresh_url)
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT address FROM sms_consent")) == number
        texts = connection.execute(text("SELECT text FROM messages ORDER BY seq")).scalars().all()
        assert connection.scalar(text("SELECT count(*) FROM conversations")) == 1
    engine.dispose()
    assert texts[0] == body and len(texts) == 2


def test_keys_come_from_settings_and_production_requires_them(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    default = make_settings(encryption_keys=None, blind_index_key=None)
    keys, index_key = default.encryption_key_list(), default.blind_index_secret()
    # Generated once under DATA_DIR, readable by this user only, then kept.
    assert (keys, index_key) == (default.encryption_key_list(), default.blind_index_secret())
    for name in ("encryption_key", "blind_index_key"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    ring = crypto.Keyring(keys, index_key)
    assert ring.decrypt(ring.encrypt("works")) == "works"
    configured = make_settings(encryption_keys=f"{KEY_B}, {KEY_A}", blind_index_key=INDEX_KEY)
    assert configured.encryption_key_list() == [KEY_B.encode(), KEY_A.encode()]

    with pytest.raises(ValueError, match="ENCRYPTION_KEYS must be set in production") as failure:
        make_settings(
            environment="production",
            database_url="postgresql+psycopg://clinic@db/clinic",
            encryption_keys=None,
            blind_index_key=INDEX_KEY,
        )
    assert "python -m core.crypto generate-key" in str(failure.value)
    with pytest.raises(ValueError, match="not a Fernet key") as failure:
        make_settings(encryption_keys=f"{KEY_A},not-a-key")
    assert "not-a-key" not in str(failure.value)


async def test_the_rotate_command_reports_progress_and_fails_clearly_on_a_missing_key(
    fresh_url: str,
    keyed: Callable[..., Settings],
    open_store: Callable[[str], ConversationStore],
    tmp_path: Path,
) -> None:
    keyed(fresh_url, KEY_A)
    migrate.upgrade(fresh_url)
    await text_from(open_store(fresh_url), phone(), planted())

    def run(*keys: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "DATABASE_URL": fresh_url,
            "DATA_DIR": str(tmp_path),
            "ENCRYPTION_KEYS": ",".join(keys),
            "BLIND_INDEX_KEY": INDEX_KEY,
        }
        return subprocess.run(
            [sys.executable, "-m", "core.crypto", "rotate", "--batch-size", "1"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    rotated = run(KEY_B, KEY_A)
    assert rotated.returncode == 0, rotated.stderr
    assert "messages: 1 rows" in rotated.stdout and "2 re-encrypted" in rotated.stdout
    assert run(KEY_B).returncode == 0
    refused = run(KEY_A)
    assert refused.returncode == 1
    assert "ENCRYPTION_KEYS" in refused.stderr and "Traceback" not in refused.stderr
    assert KEY_A not in refused.stderr + refused.stdout


def test_generate_key_prints_a_usable_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert crypto.main(["generate-key"]) == 0
    key = capsys.readouterr().out.strip()
    ring = crypto.Keyring([key.encode()], INDEX_KEY.encode())
    assert ring.decrypt(ring.encrypt("hello")) == "hello"
