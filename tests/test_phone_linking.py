"""Linking a phone to a web patient with a one-time code, on SQLite and PostgreSQL: codes are
stored hashed, expire, are rate-limited and locked after wrong tries; nothing is linked before
the code comes back; a phone that had texted before joins the web patient's conversation."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select, update

from bot.contract import Channel
from bot.linking import CodeNotSent, LinkError, LinkPolicy, PhoneLinking, normalize_phone
from bot.store import ConversationStore
from core.db import make_async_engine, make_sessionmaker
from core.orm import Conversation, PhoneLinkCode, utcnow


class Outbox:
    """Where the codes would have gone by SMS (the real sender is tested with fake Twilio)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.opted_out: set[str] = set()

    async def send(self, to: str, text: str) -> None:
        if to in self.opted_out:
            raise CodeNotSent(opted_out=True)
        self.sent.append((to, text))

    def last_code(self) -> str:
        match = re.search(r"\b(\d{6})\b", self.sent[-1][1])
        assert match
        return match.group(1)


@pytest.fixture
async def setup(
    database_url: str,
) -> AsyncIterator[tuple[ConversationStore, PhoneLinking, Outbox, str]]:
    engine = make_async_engine(database_url)
    sessions = make_sessionmaker(engine)
    outbox = Outbox()
    linking = PhoneLinking(
        sessions,
        secret=b"k" * 32,
        policy=LinkPolicy(ttl_s=600, max_attempts=3, codes_per_hour=3),
        send=outbox.send,
        text=lambda code, language, minutes: f"{code} is your code ({minutes} min)",
    )
    yield ConversationStore(sessions), linking, outbox, database_url
    await engine.dispose()


def phone() -> str:
    return f"+1202555{uuid.uuid4().int % 10000:04d}"


async def web_patient(store: ConversationStore) -> object:
    return await store.open_conversation(
        channel=Channel.WEB, address=uuid.uuid4().hex, language="en"
    )


def test_numbers_are_normalised_to_e164_and_non_mobiles_refused() -> None:
    assert normalize_phone("(202) 555-0123", "US") == "+12025550123"
    assert normalize_phone("+1 202-555-0123", "US") == "+12025550123"
    assert normalize_phone("+34 612 34 56 78", "US") == "+34612345678"
    assert normalize_phone("911", "US") is None
    assert normalize_phone("not a number", "US") is None
    assert normalize_phone("+34 912 34 56 78", "US") is None  # a Spanish landline


async def test_a_right_code_links_the_phone_to_this_patient_only_then(setup: tuple) -> None:
    store, linking, outbox, database_url = setup
    conversation = await web_patient(store)
    number = phone()
    masked = await linking.start(conversation, number.replace("+1", ""), "en")
    assert masked.endswith(number[-4:]) and outbox.sent[-1][0] == number
    # Claimed, not proven: the phone is nobody's yet.
    assert await store.find_conversation(channel=Channel.SMS, address=number) is None
    engine = make_async_engine(database_url)
    async with engine.connect() as connection:
        stored = (await connection.execute(select(PhoneLinkCode.code_hash))).scalars().all()
    await engine.dispose()
    assert outbox.last_code() not in " ".join(stored)  # only the HMAC is kept

    with pytest.raises(LinkError) as wrong:
        await linking.verify(conversation, "000000" if outbox.last_code() != "000000" else "111111")
    assert wrong.value.code == "invalid_code" and wrong.value.attempts_left == 2
    assert await linking.verify(conversation, outbox.last_code()) == masked
    found = await store.find_conversation(channel=Channel.SMS, address=number)
    assert found is not None and found.id == conversation.id
    assert await linking.linked_phone(conversation.patient_id) == masked
    with pytest.raises(LinkError) as used:
        await linking.verify(conversation, outbox.last_code())
    assert used.value.code == "no_pending_code"


async def test_wrong_codes_lock_the_code(setup: tuple) -> None:
    store, linking, outbox, _ = setup
    conversation = await web_patient(store)
    await linking.start(conversation, phone(), "en")
    right = outbox.last_code()
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    codes = []
    for _ in range(3):
        with pytest.raises(LinkError) as failure:
            await linking.verify(conversation, wrong)
        codes.append(failure.value.code)
    assert codes == ["invalid_code", "invalid_code", "locked"]
    with pytest.raises(LinkError) as after:
        await linking.verify(conversation, right)  # even the right code is dead now
    assert after.value.code == "no_pending_code"


async def test_codes_expire(setup: tuple, database_url: str) -> None:
    store, linking, outbox, _ = setup
    conversation = await web_patient(store)
    await linking.start(conversation, phone(), "en")
    engine = make_async_engine(database_url)
    async with engine.begin() as connection:
        await connection.execute(
            update(PhoneLinkCode)
            .where(PhoneLinkCode.patient_id == conversation.patient_id)
            .values(expires_at=utcnow())
        )
    await engine.dispose()
    with pytest.raises(LinkError) as expired:
        await linking.verify(conversation, outbox.last_code())
    assert expired.value.code == "expired"


async def test_sending_is_rate_limited_and_respects_opt_out(setup: tuple) -> None:
    store, linking, outbox, _ = setup
    conversation = await web_patient(store)
    number = phone()
    for _ in range(3):
        await linking.start(conversation, number, "en")
    with pytest.raises(LinkError) as limited:
        await linking.start(conversation, number, "en")
    assert limited.value.code == "rate_limited"
    # Each new code replaces the last: only the newest works.
    other = await web_patient(store)
    blocked = phone()
    outbox.opted_out.add(blocked)
    with pytest.raises(LinkError) as opted_out:
        await linking.start(other, blocked, "en")
    assert opted_out.value.code == "opted_out"


async def test_a_phone_that_texted_before_joins_the_web_conversation(setup: tuple) -> None:
    store, linking, outbox, database_url = setup
    number = phone()
    texted = await store.open_conversation(channel=Channel.SMS, address=number, language="en")
    conversation = await web_patient(store)
    await linking.start(conversation, number, "en")
    await linking.verify(conversation, outbox.last_code())
    found = await store.find_conversation(channel=Channel.SMS, address=number)
    assert found is not None and found.id == conversation.id
    engine = make_async_engine(database_url)
    async with engine.connect() as connection:
        merged_into = await connection.scalar(
            select(Conversation.merged_into).where(Conversation.id == texted.id)
        )
    await engine.dispose()
    assert merged_into == conversation.id
