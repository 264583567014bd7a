"""Storage on SQLite and PostgreSQL: conversations, idempotent inbound messages, history, audit,
and migrations that match the ORM."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from bot.contract import Button, Channel, Inbound, SafetyAssessment
from bot.store import ConversationStore, NewReply
from core.db import make_sync_engine
from core.orm import AuditEvent, Base, Message


def _unique(prefix: str) -> str:
    import uuid

    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_first_contact_opens_one_conversation_even_when_messages_race(
    store: ConversationStore,
) -> None:
    address = _unique("+1555")
    opened = await asyncio.gather(
        *(
            store.open_conversation(channel=Channel.API, address=address, language="en")
            for _ in range(5)
        )
    )
    assert len({c.id for c in opened}) == 1
    again = await store.open_conversation(channel=Channel.API, address=address, language="es")
    assert again.id == opened[0].id and again.language == "en"


async def test_same_address_on_another_channel_is_another_identity(
    store: ConversationStore,
) -> None:
    address = _unique("shared")
    api = await store.open_conversation(channel=Channel.API, address=address, language="en")
    web = await store.open_conversation(channel=Channel.WEB, address=address, language="en")
    assert api.id != web.id


async def test_redelivered_message_is_stored_once(store: ConversationStore) -> None:
    conversation = await store.open_conversation(
        channel=Channel.API, address=_unique("p"), language="en"
    )
    inbound = Inbound(Channel.API, "x", "hello", vendor_message_id="SM123")
    first, first_dup = await store.store_inbound(
        conversation=conversation, inbound=inbound, text="hello", language="en"
    )
    racing = await asyncio.gather(
        *(
            store.store_inbound(
                conversation=conversation, inbound=inbound, text="hello", language="en"
            )
            for _ in range(4)
        )
    )
    assert not first_dup
    assert all(dup and m.id == first.id for m, dup in racing)
    assert await store.count_messages(conversation.id) == 1


async def test_a_turn_stores_replies_in_order_and_closes_the_inbound(
    store: ConversationStore, database_url: str
) -> None:
    conversation = await store.open_conversation(
        channel=Channel.WEB, address=_unique("w"), language="en"
    )
    inbound, _ = await store.store_inbound(
        conversation=conversation,
        inbound=Inbound(Channel.WEB, "w", "I'd like to talk to someone"),
        text="I'd like to talk to someone",
        language="en",
    )
    replies = await store.complete_turn(
        conversation=conversation,
        inbound_id=inbound.id,
        channel=Channel.WEB,
        replies=[
            NewReply("One moment."),
            NewReply("Shall we call you?", (Button("Yes", "/affirm"),)),
        ],
        status="processed",
        needs_follow_up=False,
        language="en",
        safety=SafetyAssessment(),
    )
    history = await store.history(conversation.id, limit=10)
    assert [m.text for m in history] == [
        "I'd like to talk to someone",
        "One moment.",
        "Shall we call you?",
    ]
    assert history[2].buttons == (Button("Yes", "/affirm"),)
    assert [r.id for r in await store.replies_to(inbound.id)] == [r.id for r in replies]

    engine = make_sync_engine(database_url)
    with engine.connect() as connection:
        status = connection.scalar(select(Message.status).where(Message.id == inbound.id))
        opened = connection.scalar(
            select(AuditEvent.action).where(AuditEvent.conversation_id == conversation.id)
        )
    engine.dispose()
    assert status == "processed"
    assert opened == "conversation.opened"


def test_migrations_match_the_orm(database_url: str) -> None:
    engine = make_sync_engine(database_url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert diff == []
