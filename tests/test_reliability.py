"""Faults under load, on real processes: kill -9 of a web process or of the Celery worker, a
restart of Redis or of PostgreSQL (private ones, tests/processes.py), and every dependency a
reply can lean on down at once. Nothing a patient sent is lost, nothing is sent twice, no
request ends in a 500 (503 while a dependency is away is the documented answer), and the
platform recovers by itself."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.contract import Channel
from bot.store import ConversationStore, NewReply
from channels.sms.webhook import SEND
from core import migrate
from core.db import make_async_engine, make_sessionmaker, make_sync_engine
from core.orm import AuditEvent, Escalation, Message
from core.settings import Settings
from core.tasks import make_celery
from rag.index import KnowledgeIndex, SentenceTransformerEmbedder, open_client
from tests.conftest import API_TOKEN
from tests.fakes.llm_servers import Fail, FakeOpenAI
from tests.fakes.twilio_server import FakeTwilio
from tests.processes import (
    PostgresCluster,
    RedisServer,
    Service,
    postgres_or_skip,
    redis_or_skip,
    running,
    web_process,
    web_url,
    worker_process,
)
from tests.support import ROOT, free_port, running_app, wait_until
from tests.test_web_channel import ChatClient

pytestmark = pytest.mark.rasa
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
CLINIC_NUMBER = "+15017122661"
# Retrying clients give up after this; far above any outage these tests cause.
GIVE_UP_S = 90


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    redis_or_skip()
    server = RedisServer(tmp_path / "redis")
    with running(server):
        yield server


@dataclass
class Delivery:
    """One message a client got through, and what it met on the way."""

    key: str
    sender: str
    response: httpx.Response
    statuses: list[int] = field(default_factory=list)
    # Connections cut while the request was on its way or being answered (not refused).
    interrupted: int = 0


async def send_until_answered(
    targets: Callable[[], Sequence[str]],
    sender: str,
    text: str,
    *,
    first: int = 0,
    in_flight: Counter[str] | None = None,
) -> Delivery:
    """POST one message as a client behind a load balancer does: on a dropped connection or a
    503 it sends the same message again, with the same Idempotency-Key, to the next process."""
    key = uuid.uuid4().hex
    delivery = Delivery(key, sender, httpx.Response(599))
    deadline = time.monotonic() + GIVE_UP_S
    attempt = first
    in_flight = Counter() if in_flight is None else in_flight
    while time.monotonic() < deadline:
        urls = targets()
        url = urls[attempt % len(urls)]
        attempt += 1
        in_flight[url] += 1
        try:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                response = await client.post(
                    "/api/v1/messages",
                    headers={**AUTH, "Idempotency-Key": key},
                    json={"sender_id": sender, "text": text},
                )
        except httpx.TransportError as exc:
            if not isinstance(exc, httpx.ConnectError):
                delivery.interrupted += 1
            await asyncio.sleep(0.3)
            continue
        finally:
            in_flight[url] -= 1
        delivery.statuses.append(response.status_code)
        if response.status_code == 503:
            await asyncio.sleep(0.3)
            continue
        delivery.response = response
        return delivery
    raise AssertionError(f"no answer within {GIVE_UP_S}s: {delivery.statuses}")


def check_each_stored_once_and_answered_once(
    database_url: str, deliveries: Sequence[Delivery]
) -> None:
    """Every message is in the database once, processed, with the replies of exactly one turn
    (the same text from a fresh sender always gets the same number of replies)."""
    engine = make_sync_engine(database_url)
    keys = [d.key for d in deliveries]
    with Session(engine) as session:
        inbound = session.execute(
            select(Message.id, Message.vendor_message_id, Message.status)
            .where(Message.direction == "inbound")
            .where(Message.vendor_message_id.in_(keys))
        ).all()
        replies = dict(
            session.execute(
                select(Message.in_reply_to, func.count())
                .where(Message.in_reply_to.in_([r.id for r in inbound]))
                .group_by(Message.in_reply_to)
            ).all()
        )
    engine.dispose()
    assert Counter(r.vendor_message_id for r in inbound) == Counter(keys)
    assert {r.status for r in inbound} == {"processed"}
    counts = [replies.get(r.id, 0) for r in inbound]
    assert min(counts) >= 1, "a stored message was never answered"
    assert len(set(counts)) == 1, f"some messages were answered twice: {Counter(counts)}"
    for delivery in deliveries:
        assert delivery.response.status_code == 200, delivery.response.text
        assert len(delivery.response.json()["replies"]) == counts[0]


async def run_load(
    targets: Callable[[], Sequence[str]],
    count: int,
    *,
    concurrency: int,
    text: str = "hello",
    during: Callable[[], Any] | None = None,
    after_answers: int = 0,
    busy: str | None = None,
) -> list[Delivery]:
    """`count` patients (one message each) at `concurrency` at a time; `during` (a blocking
    fault: kill, restart) runs in a thread once `after_answers` of them were answered, while the
    others are in flight (some of them at `busy`, when given)."""
    gate = asyncio.Semaphore(concurrency)
    prefix = uuid.uuid4().hex[:6]
    in_flight: Counter[str] = Counter()

    async def one(i: int) -> Delivery:
        async with gate:
            return await send_until_answered(
                targets, f"load-{prefix}-{i}", text, first=i, in_flight=in_flight
            )

    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    if during is not None:
        while sum(t.done() for t in tasks) < after_answers or (busy and not in_flight[busy]):
            await asyncio.sleep(0.01)
        await asyncio.to_thread(during)
    return list(await asyncio.gather(*tasks))


def no_server_errors(deliveries: Sequence[Delivery]) -> None:
    seen = Counter(s for d in deliveries for s in d.statuses)
    assert set(seen) <= {200, 503}, f"unexpected statuses: {seen}"


# --- kill -9 ----------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_a_web_process_killed_during_load_loses_no_message_and_answers_each_once(
    make_live_settings: Callable[..., Settings],
    postgres_url: str,
    private_redis: RedisServer,
    tmp_path: Path,
) -> None:
    settings = make_live_settings(
        postgres_url, redis_url=private_redis.url, celery_broker_url=private_redis.url
    )
    a, b = web_process(settings, tmp_path), web_process(settings, tmp_path)
    with running(a, b):

        def live() -> list[str]:
            return [web_url(s) for s in (a, b) if s.alive] or [web_url(b)]

        def kill_and_restart(victim: Service = a) -> None:
            victim.kill()
            victim.start()  # the process manager starts it again; it takes load once up

        deliveries = await run_load(
            live, 24, concurrency=6, during=kill_and_restart, after_answers=4, busy=web_url(a)
        )
    # The kill cut requests off mid-way, and their clients retried elsewhere.
    assert sum(d.interrupted for d in deliveries) >= 1
    no_server_errors(deliveries)
    check_each_stored_once_and_answered_once(postgres_url, deliveries)


def sms_worker_settings(
    make_settings: Callable[..., Settings], fake: FakeTwilio, database_url: str, broker: str
) -> Settings:
    return make_settings(
        database_url=database_url,
        celery_broker_url=broker,
        # Tasks of a killed worker come back after this: seconds here, an hour by default.
        celery_visibility_timeout_s=3,
        public_base_url=f"http://127.0.0.1:{free_port()}",  # callbacks go nowhere: not needed
        twilio_account_sid=fake.account_sid,
        twilio_auth_token=fake.auth_token,
        twilio_from_number=CLINIC_NUMBER,
        twilio_api_base_url=fake.base_url,
        sms_retry_base_s=0.2,
    )


async def queue_outbound(settings: Settings, phones: list[str], per_phone: int) -> list[str]:
    """Staff messages stored queued for each phone, one send task per phone (as the orchestrator
    and the console queue them)."""
    engine = make_async_engine(settings.database_url)
    store = ConversationStore(make_sessionmaker(engine))
    celery = make_celery(settings)
    ids: list[str] = []
    try:
        for phone in phones:
            conversation = await store.open_conversation(
                channel=Channel.SMS, address=phone, language="en"
            )
            stored = await store.add_replies(
                conversation=conversation,
                channel=Channel.SMS,
                in_reply_to=None,
                language="en",
                replies=[
                    NewReply(
                        f"Reminder {n} {uuid.uuid4().hex[:8]}: bring your medication list.",
                        sender="staff",
                        status="queued",
                        meta={"to": phone},
                    )
                    for n in range(per_phone)
                ],
            )
            ids += [m.id for m in stored]
            await asyncio.to_thread(celery.send_task, SEND, args=[[m.id for m in stored]])
    finally:
        await engine.dispose()
    return ids


@pytest.mark.postgres
async def test_a_worker_killed_while_sending_sms_sends_each_exactly_once(
    make_settings: Callable[..., Settings],
    postgres_url: str,
    private_redis: RedisServer,
    tmp_path: Path,
) -> None:
    with FakeTwilio(service_number=CLINIC_NUMBER) as fake:
        settings = sms_worker_settings(make_settings, fake, postgres_url, private_redis.url)
        phones = [f"+1202555{uuid.uuid4().int % 10000:04d}" for _ in range(6)]
        first = worker_process(settings, tmp_path / "worker-1.log")
        second = worker_process(settings, tmp_path / "worker-2.log")
        with running(first):
            ids = await queue_outbound(settings, phones, per_phone=8)
            await asyncio.to_thread(
                wait_until, lambda: len(fake.messages) >= 12, timeout=60, what="12 SMS sent"
            )
            first.kill()
        at_kill = len(fake.messages)
        with running(second):

            def all_recorded() -> bool:
                with make_sync_engine(postgres_url).connect() as connection:
                    pending = connection.scalar(
                        select(func.count())
                        .where(Message.id.in_(ids))
                        .where(Message.vendor_message_id.is_(None))
                    )
                return pending == 0

            await asyncio.to_thread(
                wait_until, all_recorded, timeout=90, what="every SMS to be sent and recorded"
            )
            await asyncio.sleep(1)  # a late duplicate would be at the fake by now
        sent = [m for m in fake.messages if m["to"] in phones]
        creates = [r for r in fake.requests if r.method == "POST" and r.get("To") in phones]
    assert at_kill < len(ids), "the worker finished before it was killed; nothing was tested"
    bodies = Counter(m["body"] for m in sent)
    assert len(bodies) == len(ids) and set(bodies.values()) == {1}, bodies.most_common(3)
    assert len(creates) == len(ids)  # nothing sent twice, even refused by Twilio
    with Session(make_sync_engine(postgres_url)) as session:
        rows = session.execute(
            select(Message.text, Message.vendor_message_id).where(Message.id.in_(ids))
        ).all()
    by_body = {m["body"]: m["sid"] for m in sent}
    assert {r.text: r.vendor_message_id for r in rows} == by_body


# --- Redis and PostgreSQL restarted -----------------------------------------------------------


@pytest.mark.postgres
async def test_redis_restarted_during_load_recovers_by_itself(
    make_live_settings: Callable[..., Settings],
    postgres_url: str,
    private_redis: RedisServer,
) -> None:
    settings = make_live_settings(
        postgres_url, redis_url=private_redis.url, celery_broker_url=private_redis.url
    )
    async with running_app(settings) as (url, _):

        def restart() -> None:
            private_redis.stop()
            time.sleep(2)  # requests meet the outage
            private_redis.start()

        deliveries = await run_load(
            lambda: [url], 24, concurrency=4, during=restart, after_answers=6
        )
        after = await send_until_answered(lambda: [url], f"after-{uuid.uuid4().hex[:6]}", "hi")
        # The web chat's rooms live in Redis too: a new page is served and answered.
        tab = await connect_when_up(url)
        ack = await tab.say("hello")
        await tab.sio.disconnect()
    no_server_errors([*deliveries, after])
    assert after.statuses == [200]
    assert ack["ok"] and any(m["direction"] == "outbound" for m in tab.messages)
    check_each_stored_once_and_answered_once(postgres_url, [*deliveries, after])


async def connect_when_up(url: str) -> ChatClient:
    deadline = time.monotonic() + 30
    while True:
        tab = ChatClient()
        try:
            await tab.connect(url)
            return tab
        except Exception:  # refused, or no session event yet: the page tries again
            await tab.sio.disconnect()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


@pytest.fixture
def private_postgres() -> Iterator[PostgresCluster]:
    postgres_or_skip()
    cluster = PostgresCluster()
    try:
        with running(cluster):
            yield cluster
    finally:
        cluster.remove()


@pytest.mark.postgres
async def test_postgres_restarted_during_load_recovers_by_itself(
    make_live_settings: Callable[..., Settings], private_postgres: PostgresCluster
) -> None:
    database_url = private_postgres.create_database("clinic")
    await asyncio.to_thread(migrate.upgrade, database_url)
    settings = make_live_settings(database_url)
    async with running_app(settings) as (url, _):

        def restart() -> None:
            private_postgres.stop()
            time.sleep(2)
            private_postgres.start()

        deliveries = await run_load(
            lambda: [url], 24, concurrency=4, during=restart, after_answers=6
        )
        after = await send_until_answered(lambda: [url], f"after-{uuid.uuid4().hex[:6]}", "hi")
        ready = await httpx.AsyncClient(base_url=url).get("/readyz")
    no_server_errors([*deliveries, after])
    assert after.statuses == [200]
    assert ready.json()["checks"]["database"]["ok"]
    check_each_stored_once_and_answered_once(database_url, [*deliveries, after])


# --- dependencies down --------------------------------------------------------------------------

EMERGENCY = "my father collapsed and is not breathing"
CRISIS = "honestly everyone would be better off without me"
QUESTION = "what are your opening hours on saturday?"


def closed_port_url(path: str = "") -> str:
    return f"http://127.0.0.1:{free_port()}{path}"


def everything_down(tmp_path: Path, openai: FakeOpenAI) -> dict[str, Any]:
    """LLM providers that all fail (a local model that is not there, OpenAI answering 503,
    Anthropic not listening) and Mattermost not listening."""
    return {
        "llm_providers": ["llamacpp", "openai", "anthropic"],
        "llm_phi_allowed_providers": ["openai", "anthropic"],
        "llama_model_path": str(tmp_path / "no-such-model.gguf"),
        "openai_api_key": "sk-test-down",
        "openai_base_url": openai.base_url,
        "anthropic_api_key": "sk-ant-test-down",
        "anthropic_base_url": closed_port_url(),
        "mattermost_url": closed_port_url(),
        "mattermost_bot_token": "mattermost-bot-token-down",
    }


@pytest.fixture
def failing_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        fake.default = Fail(503, message="overloaded")
        yield fake


async def timed_post(client: httpx.AsyncClient, sender: str, text: str) -> tuple[Any, float]:
    started = time.monotonic()
    response = await client.post(
        "/api/v1/messages", headers=AUTH, json={"sender_id": sender, "text": text}, timeout=30
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    return response.json(), elapsed


def reply_text(body: dict[str, Any]) -> str:
    return " ".join(r["text"] for r in body["replies"])


async def test_with_rasa_every_llm_and_mattermost_down_patients_get_safe_replies_in_5_s(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    tmp_path: Path,
    failing_openai: FakeOpenAI,
) -> None:
    settings = make_settings(
        database_url=sqlite_url,
        rasa_url=closed_port_url(),
        action_server_url=closed_port_url(),
        **everything_down(tmp_path, failing_openai),
    )
    tag = uuid.uuid4().hex[:6]
    async with running_app(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        plain, plain_s = await timed_post(client, f"plain-{tag}", "hello, I have a question")
        emergency, emergency_s = await timed_post(client, f"emergency-{tag}", EMERGENCY)
        crisis, crisis_s = await timed_post(client, f"crisis-{tag}", CRISIS)
    assert plain_s < 5 and "unavailable" in reply_text(plain)
    assert emergency_s < 5 and emergency["state"]["safety"]["level"] == "emergency"
    assert "911" in reply_text(emergency)
    assert crisis_s < 5 and crisis["state"]["safety"]["level"] == "crisis"
    assert "988" in reply_text(crisis)
    # Staff still get the cases, from the console, with Mattermost away.
    with Session(make_sync_engine(sqlite_url)) as session:
        priorities = set(
            session.scalars(
                select(Escalation.priority).where(
                    Escalation.conversation_id.in_(
                        [emergency["conversation_id"], crisis["conversation_id"]]
                    )
                )
            )
        )
    assert priorities == {"immediate", "high"}


async def test_with_every_llm_and_mattermost_down_questions_get_the_extractive_answer(
    make_live_settings: Callable[..., Settings],
    sqlite_url: str,
    tmp_path: Path,
    failing_openai: FakeOpenAI,
) -> None:
    library = tmp_path / "library"
    (library / "en").mkdir(parents=True)
    shutil.copy(ROOT / "kb" / "faq" / "en" / "clinic-hours.md", library / "en")
    KnowledgeIndex(open_client(tmp_path, None), SentenceTransformerEmbedder()).ingest(library)
    settings = make_live_settings(
        sqlite_url, kb_preload=True, **everything_down(tmp_path, failing_openai)
    )
    tag = uuid.uuid4().hex[:6]
    async with running_app(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        await wait_for_knowledge(client)
        answer, answer_s = await timed_post(client, f"question-{tag}", QUESTION)
        emergency, emergency_s = await timed_post(client, f"emergency-{tag}", EMERGENCY)
        crisis, crisis_s = await timed_post(client, f"crisis-{tag}", CRISIS)
    assert answer_s < 5 and "Sources:" in reply_text(answer), answer
    assert "Saturday" in reply_text(answer)
    assert emergency_s < 5 and "911" in reply_text(emergency)
    assert crisis_s < 5 and "988" in reply_text(crisis)
    with Session(make_sync_engine(sqlite_url)) as session:
        answered = session.scalars(
            select(AuditEvent.detail)
            .where(AuditEvent.action == "kb.answered")
            .where(AuditEvent.conversation_id == answer["conversation_id"])
        ).all()
    assert [a["provider"] for a in answered] == ["extractive"]
    # The providers were asked (and failed) before the extractive answer stood in.
    assert failing_openai.requests


async def wait_for_knowledge(client: httpx.AsyncClient) -> None:
    """The embedding model loads in the background at start-up; until then questions are
    declined."""
    deadline = time.monotonic() + 120
    response = None
    while time.monotonic() < deadline:
        response = await client.post(
            "/api/v1/messages",
            headers=AUTH,
            json={"sender_id": f"warm-{uuid.uuid4().hex[:6]}", "text": QUESTION},
            timeout=60,
        )
        if "Sources:" in response.text:
            return
        await asyncio.sleep(1)
    raise AssertionError(f"the knowledge base never answered: {response and response.text}")
