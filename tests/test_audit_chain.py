"""The audit log is append-only and hash-chained: every way of writing an event extends one
unbroken chain, even with many concurrent writers, and any edit, deletion or reordering is
found by `python -m core.audit verify` at the right row."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, delete, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from bot.contract import Channel, Inbound, SafetyAssessment
from bot.store import ConversationStore, NewReply
from channels.sms import records
from core import audit
from core.db import make_async_engine, make_sessionmaker, make_sync_engine
from core.orm import AuditEvent, Conversation
from core.settings import REPO_ROOT
from models.anthropic_provider import AnthropicProvider
from models.base import Prompt, Source
from models.extractive import ExtractiveProvider
from models.openai_provider import OpenAIProvider
from models.router import Router, RouterConfig
from tests.conftest import TEST_POSTGRES_URL
from tests.fakes.llm_servers import Fail, FakeAnthropic, FakeOpenAI

TABLE = audit.TABLE


def migrate_to(url: str, revision: str) -> None:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    command.upgrade(config, revision)


def _admin_dsn() -> str:
    return make_url(TEST_POSTGRES_URL).set(drivername="postgresql").render_as_string(False)


@contextlib.contextmanager
def fresh_database(like: str, folder: Path, revision: str = "head") -> Iterator[str]:
    """A new, empty database of the same kind as `like`, migrated to `revision`: tampering
    tests break the chain for good, so they never touch the session's database."""
    name = f"audit_{uuid.uuid4().hex[:10]}"
    if like.startswith("sqlite"):
        url = f"sqlite:///{folder / f'{name}.db'}"
        migrate_to(url, revision)
        yield url
        return
    with psycopg.connect(_admin_dsn(), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = make_url(like).set(database=name).render_as_string(hide_password=False)
    try:
        migrate_to(url, revision)
        yield url
    finally:
        with psycopg.connect(_admin_dsn(), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def verify(url: str) -> audit.Verdict:
    engine = make_sync_engine(url)
    try:
        with engine.connect() as connection:
            return audit.verify(connection, batch=7)
    finally:
        engine.dispose()


def count_events(url: str) -> int:
    engine = make_sync_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(TABLE)) or 0)
    finally:
        engine.dispose()


def write_events(url: str, n: int) -> list[int]:
    engine = make_sync_engine(url)
    try:
        with Session(engine) as session, session.begin():
            for i in range(n):
                session.add(
                    AuditEvent(
                        actor="test",
                        action="test.event",
                        conversation_id=f"c{i}",
                        detail={"i": i, "tags": ("a", "b")},
                    )
                )
        with engine.connect() as connection:
            return list(connection.scalars(select(TABLE.c.id).order_by(TABLE.c.id)))
    finally:
        engine.dispose()


def unlock(connection: Connection) -> None:
    """What an attacker with database access does first."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
    else:
        connection.execute(text("DROP TRIGGER audit_events_no_update"))
        connection.execute(text("DROP TRIGGER audit_events_no_delete"))


def run_cli(url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core.audit", "verify"],
        cwd=REPO_ROOT,
        env={**os.environ, "DATABASE_URL": url, "DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_the_chain_holds_after_real_traffic(database_url: str) -> None:
    engine = make_async_engine(database_url)
    store = ConversationStore(make_sessionmaker(engine))
    before = count_events(database_url)
    conversation = await store.open_conversation(
        channel=Channel.SMS, address=f"+1555{uuid.uuid4().int % 10**7:07d}", language="en"
    )
    inbound = Inbound(
        channel=Channel.SMS,
        sender_address="+15550000000",
        text="my chest hurts",
        vendor_message_id=f"SM{uuid.uuid4().hex}",
    )
    message, _ = await store.store_inbound(
        conversation=conversation, inbound=inbound, text=inbound.text, language="en"
    )
    await store.complete_turn(
        conversation=conversation,
        inbound_id=message.id,
        channel=Channel.SMS,
        replies=[NewReply(text="Call 911 now.")],
        status="processed",
        needs_follow_up=False,
        language="en",
        safety=SafetyAssessment(level="emergency", rule_ids=("EMERG-CHEST",)),
        audits=[("safety.assessed", {"level": "emergency"}), ("triage.decided", {"d": "e"})],
    )
    await store.escalate(
        conversation=conversation, priority="immediate", reason="emergency", rule_ids=["X"]
    )
    await store.audit(actor="test", action="test.direct", conversation=conversation)
    # A Core insert, as the SMS worker writes it.
    async with engine.begin() as connection:
        for statement in records.surface_undelivered(
            message.id, conversation.id, "failed", "30003", actor="worker"
        ):
            await connection.execute(statement)
    await engine.dispose()

    verdict = verify(database_url)
    assert verdict.ok, verdict
    assert verdict.checked == count_events(database_url) == before + 6
    sync = make_sync_engine(database_url)
    with sync.connect() as connection:
        actions = list(
            connection.scalars(
                select(TABLE.c.action)
                .where(TABLE.c.conversation_id == conversation.id)
                .order_by(TABLE.c.id)
            )
        )
    sync.dispose()
    assert actions == [
        "conversation.opened",
        "safety.assessed",
        "triage.decided",
        "escalation.opened",
        "test.direct",
        "sms.undelivered",
    ]


async def test_concurrent_writers_make_one_unbroken_chain(database_url: str) -> None:
    """8 concurrent writers x 25 transactions, each its own connection: ORM and Core inserts,
    some after taking a row lock on the same conversation (as real turns and workers do)."""
    engine = make_async_engine(database_url)
    sessions = make_sessionmaker(engine)
    store = ConversationStore(sessions)
    conversation = await store.open_conversation(
        channel=Channel.API, address=f"load-{uuid.uuid4().hex}", language="en"
    )
    before = count_events(database_url)
    bump = (
        update(Conversation)
        .where(Conversation.id == conversation.id)
        .values(unanswered_streak=Conversation.unanswered_streak + 1)
    )

    async def writer(kind: int) -> None:
        for j in range(25):
            detail = {"writer": kind, "j": j}
            if kind % 2:
                async with sessions() as session, session.begin():
                    if kind % 4 == 3:
                        await session.execute(bump)
                    session.add(AuditEvent(actor=f"w{kind}", action="load.orm", detail=detail))
                    await session.flush()
                    session.add(AuditEvent(actor=f"w{kind}", action="load.orm2", detail=detail))
            else:
                async with engine.begin() as connection:
                    if kind % 4 == 2:
                        await connection.execute(bump)
                    await connection.execute(
                        insert(AuditEvent).values(
                            actor=f"w{kind}", action="load.core", detail=detail
                        )
                    )

    await asyncio.gather(*(writer(k) for k in range(8)))
    async with sessions() as session:
        streak = await session.scalar(
            select(Conversation.unanswered_streak).where(Conversation.id == conversation.id)
        )
    await engine.dispose()

    verdict = verify(database_url)
    assert verdict.ok, verdict
    # 4 ORM writers add two events a transaction, 4 Core writers one.
    assert count_events(database_url) == before + 4 * 25 * 2 + 4 * 25
    assert streak == 4 * 25  # writers 2, 3, 6 and 7 also update the conversation


def test_audit_events_cannot_be_changed_or_deleted(database_url: str) -> None:
    write_events(database_url, 1)
    engine = make_sync_engine(database_url)
    try:
        for statement in (
            update(TABLE).where(TABLE.c.action == "test.event").values(actor="someone-else"),
            delete(TABLE).where(TABLE.c.action == "test.event"),
            text("UPDATE audit_events SET detail = detail"),
            text("DELETE FROM audit_events"),
        ):
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
                connection.execute(statement)
        if engine.dialect.name == "postgresql":
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
                connection.execute(text("TRUNCATE audit_events"))
    finally:
        engine.dispose()
    assert verify(database_url).ok


def _swap_ids(connection: Connection, a: int, b: int) -> None:
    parked = 10**9
    for old, new in ((a, parked), (b, a), (parked, b)):
        connection.execute(update(TABLE).where(TABLE.c.id == old).values(id=new))


def _forge(connection: Connection, row_id: int) -> None:
    """Rewrite a row and its own hash: the next row still points at the old hash."""
    row = dict(connection.execute(select(TABLE).where(TABLE.c.id == row_id)).mappings().one())
    row["actor"] = "mallory"
    forged = audit.link(row["prev_hash"], row)
    connection.execute(
        update(TABLE).where(TABLE.c.id == row_id).values(actor="mallory", hash=forged)
    )


TAMPERING: dict[str, tuple[Any, int]] = {
    # what is done to the 10-event chain, and where verify must say it breaks
    "detail changed": (
        lambda c, ids: c.execute(
            update(TABLE).where(TABLE.c.id == ids[3]).values(detail={"i": 99})
        ),
        3,
    ),
    "actor changed, hash recomputed": (lambda c, ids: _forge(c, ids[4]), 5),
    "middle row deleted": (lambda c, ids: c.execute(delete(TABLE).where(TABLE.c.id == ids[4])), 5),
    "first row deleted": (lambda c, ids: c.execute(delete(TABLE).where(TABLE.c.id == ids[0])), 1),
    "rows reordered": (lambda c, ids: _swap_ids(c, ids[2], ids[6]), 2),
}


@pytest.mark.parametrize("tampering", list(TAMPERING))
def test_verify_finds_tampering_at_the_right_row(
    database_url: str, tmp_path: Path, tampering: str
) -> None:
    change, bad_index = TAMPERING[tampering]
    with fresh_database(database_url, tmp_path) as url:
        ids = write_events(url, 10)
        assert verify(url) == audit.Verdict(True, 10, None)
        engine = make_sync_engine(url)
        with engine.begin() as connection:
            unlock(connection)
            change(connection, ids)
        engine.dispose()
        verdict = verify(url)
        assert not verdict.ok
        assert verdict.first_bad_id == ids[bad_index]
        if tampering == "detail changed":
            result = run_cli(url, tmp_path)
            assert result.returncode == 1, result.stderr
            assert json.loads(result.stdout.strip().splitlines()[-1]) == {
                "ok": False,
                "checked": 4,
                "first_bad_id": ids[3],
            }
            assert f"broken at event {ids[3]}" in result.stderr


def test_the_migration_chains_existing_events(database_url: str, tmp_path: Path) -> None:
    with fresh_database(database_url, tmp_path, revision="0007") as url:
        engine = make_sync_engine(url)
        with engine.begin() as connection:
            for i in range(12):
                connection.execute(
                    text(
                        "INSERT INTO audit_events (at, actor, action, patient_id, "
                        "conversation_id, detail) VALUES (:at, 'old', 'old.event', NULL, :c, :d)"
                    ),
                    {
                        "at": f"2026-01-0{1 + i % 9} 10:00:00",
                        "c": f"c{i}",
                        "d": json.dumps({"i": i}),
                    },
                )
        engine.dispose()
        migrate_to(url, "head")
        assert verify(url) == audit.Verdict(True, 12, None)
        ids = write_events(url, 3)
        assert verify(url) == audit.Verdict(True, 15, None)
        result = run_cli(url, tmp_path)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout.strip().splitlines()[-1]) == {
            "ok": True,
            "checked": 15,
            "first_bad_id": None,
        }
        assert len(ids) == 15


async def test_an_llm_call_is_audited_with_where_patient_data_went_never_the_text() -> None:
    """What the orchestrator records as `kb.answered`: each cloud provider the question went
    to and whether the privacy guard redacted it first, without the question itself."""
    question = "I am Maria Lopez, MRN 4471123: when are flu shots given?"
    prompt = Prompt(
        system="Answer from the sources only.",
        question=question,
        sources=(Source(1, "Flu shots", "kb/faq/en/vaccines.md", "Given every autumn."),),
    )
    with (
        FakeOpenAI(default_text="Every autumn [1].") as openai_server,
        FakeAnthropic(default_text="In autumn [1].") as anthropic_server,
    ):
        openai_server.script(Fail(500), Fail(500))
        router = Router(
            [
                OpenAIProvider(
                    api_key="sk-test", model="gpt-4o-mini", base_url=openai_server.base_url
                ),
                AnthropicProvider(
                    api_key="sk-ant-test",
                    model="claude-haiku-4-5",
                    base_url=anthropic_server.base_url,
                ),
            ],
            ExtractiveProvider(),
            config=RouterConfig(
                timeout_s=1.5, backoff_initial_s=0.01, phi_allowed=frozenset({"anthropic"})
            ),
        )
        answer = await router.answer(prompt, known_names=["Maria", "Lopez"])
    record = answer.audit()
    assert record["provider"] == "anthropic"
    assert record["patient_data_sent"] == {"openai": "redacted", "anthropic": "unredacted"}
    assert [a["outcome"] for a in record["attempts"]] == ["server", "server", "ok"]
    written = json.dumps(record)
    assert "Maria" not in written and "4471123" not in written and "flu" not in written.lower()
