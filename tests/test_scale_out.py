"""Scale-out: two web app processes (separate uvicorn processes, as behind a load balancer) on
one PostgreSQL database and a real Redis, with the real Rasa. A patient's two tabs, each on
another process, see every message of their conversation exactly once; a staff reply sent
through one process reaches the page on the other; the per-sender rate limit counts across
both."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from core.db import make_sync_engine
from core.orm import Message
from core.settings import Settings
from tests.conftest import API_TOKEN
from tests.processes import RedisServer, redis_or_skip, running, web_process, web_url
from tests.support import RasaStack
from tests.test_web_channel import ChatClient

pytestmark = [pytest.mark.rasa, pytest.mark.postgres]

ADMIN_TOKEN = "test-admin-token-scale-out-0123456789"
STAFF = {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Staff-Name": "Dana Reyes"}
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
RATE_LIMIT = 6


@dataclass
class Cluster:
    a: str
    b: str
    database_url: str


@pytest.fixture(scope="module")
def cluster(
    rasa_stack: RasaStack, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Two web processes sharing the database, Redis (socket.io rooms, rate limits, the queue)
    and the data folder, as two containers of the same service do."""
    redis_or_skip()
    workdir = tmp_path_factory.mktemp("scale-out")
    redis = RedisServer(workdir / "redis")
    settings = Settings(
        _env_file=None,
        environment="test",
        data_dir=workdir,
        database_url=postgres_url,
        redis_url=redis.url,
        celery_broker_url=redis.url,
        rasa_url=rasa_stack.rasa_url,
        action_server_url=rasa_stack.action_url,
        api_token=API_TOKEN,
        admin_token=ADMIN_TOKEN,
        rate_limit_per_sender=f"{RATE_LIMIT}/minute",
        kb_preload=False,
    )
    a, b = web_process(settings, workdir), web_process(settings, workdir)
    with running(redis, a, b):
        yield Cluster(web_url(a), web_url(b), postgres_url)


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def outbound_ids(database_url: str, conversation_id: str) -> set[str]:
    engine = make_sync_engine(database_url)
    with engine.connect() as connection:
        ids = connection.scalars(
            select(Message.id)
            .where(Message.conversation_id == conversation_id)
            .where(Message.direction == "outbound")
        ).all()
    engine.dispose()
    return set(ids)


def ids(tab: ChatClient) -> Counter[str]:
    return Counter(m["id"] for m in tab.messages)


async def test_two_tabs_on_two_processes_see_every_message_once_and_staff_reach_both(
    cluster: Cluster,
) -> None:
    on_a, on_b = ChatClient(), ChatClient()
    await on_a.connect(cluster.a)
    await on_b.connect(cluster.b, token=on_a.session["token"])
    conversation_id = on_a.session["conversation_id"]
    assert on_b.session["conversation_id"] == conversation_id

    from_a = await on_a.say("hello")
    from_b = await on_b.say("what are your opening hours?")
    assert from_a["ok"] and from_b["ok"]
    replies = outbound_ids(cluster.database_url, conversation_id)
    assert len(replies) >= 2
    # Each tab gets every reply, whichever process answered, and the other tab's message.
    await wait_for(lambda: set(ids(on_a)) >= replies | {from_b["message"]["id"]}, "tab on A")
    await wait_for(lambda: set(ids(on_b)) >= replies | {from_a["message"]["id"]}, "tab on B")

    # The patient asks for a person on A; staff answer through A's console API.
    seen = len(on_a.messages)
    await on_a.say("I want to talk to a real person")
    # Replies travel through Redis: they may arrive just after the acknowledgement.
    await wait_for(lambda: any(m["buttons"] for m in on_a.messages[seen:]), "the offer")
    offer = next(m for m in on_a.messages[seen:] if m["buttons"])
    assert [b["payload"] for b in offer["buttons"]] == ["/affirm", "/deny"], offer
    await on_a.say("Yes", payload="/affirm")
    async with httpx.AsyncClient(base_url=cluster.a, timeout=30) as console:
        listed = await console.get(
            "/admin/api/v1/cases", params={"status": "active"}, headers=STAFF
        )
        assert listed.status_code == 200, listed.text
        [case] = [c for c in listed.json()["cases"] if c["conversation_id"] == conversation_id]
        claimed = await console.post(f"/admin/api/v1/cases/{case['id']}/claim", headers=STAFF)
        assert claimed.status_code == 200, claimed.text
        sent = await console.post(
            f"/admin/api/v1/cases/{case['id']}/reply",
            headers=STAFF,
            json={"text": "Hi, this is Dana from the clinic."},
        )
        assert sent.status_code == 200, sent.text

    def staff_messages(tab: ChatClient) -> list[dict[str, Any]]:
        return [m for m in tab.messages if m["sender"] == "staff"]

    await wait_for(lambda: bool(staff_messages(on_b)), "the staff reply on the page on B")
    await wait_for(lambda: bool(staff_messages(on_a)), "the staff reply on the page on A")
    await asyncio.sleep(1)  # a second copy, if any, has arrived by now
    everything = outbound_ids(cluster.database_url, conversation_id)
    for tab in (on_a, on_b):
        received = ids(tab)
        assert set(received.values()) == {1}, received.most_common(3)
        assert {i for i in received if i in everything} == everything
        assert "Dana" in staff_messages(tab)[0]["text"]
    for tab in (on_a, on_b):
        await tab.sio.disconnect()


async def test_the_rate_limit_per_sender_counts_across_processes(cluster: Cluster) -> None:
    sender = f"flood-{uuid.uuid4().hex[:8]}"
    statuses = []
    for i in range(RATE_LIMIT + 2):
        async with httpx.AsyncClient(base_url=(cluster.a, cluster.b)[i % 2], timeout=30) as c:
            response = await c.post(
                "/api/v1/messages", headers=AUTH, json={"sender_id": sender, "text": f"hi {i}"}
            )
        statuses.append(response.status_code)
    # Each process alone would have allowed RATE_LIMIT: together they allow it once.
    assert statuses == [200] * RATE_LIMIT + [429, 429]
    assert int(response.headers["Retry-After"]) >= 1
    async with httpx.AsyncClient(base_url=cluster.b, timeout=30) as c:
        other = await c.post(
            "/api/v1/messages", headers=AUTH, json={"sender_id": f"{sender}-2", "text": "hi"}
        )
    assert other.status_code == 200
