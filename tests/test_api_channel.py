"""The JSON API channel end to end: real HTTP server, real Rasa, real database."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select

from core.db import make_sync_engine
from core.orm import Message
from core.settings import Settings
from tests.conftest import API_TOKEN
from tests.support import running_app

pytestmark = pytest.mark.rasa
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval" / "adversarial_dev.jsonl"


def _sender() -> str:
    return f"patient-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def live_settings(make_live_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_live_settings(database_url)


def _messages(database_url: str, conversation_id: str) -> list[tuple[str, str, str]]:
    engine = make_sync_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            select(Message.direction, Message.text, Message.status)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.seq)
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]  # type: ignore[misc]


async def test_a_patient_is_answered_by_rasa_in_their_language_and_everything_is_stored(
    live_settings: Settings, database_url: str
) -> None:
    sender = _sender()
    async with running_app(live_settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        english = await client.post(
            "/api/v1/messages", headers=AUTH, json={"sender_id": sender, "text": "hello there"}
        )
        spanish = await client.post(
            "/api/v1/messages",
            headers=AUTH,
            json={"sender_id": sender, "text": "hola, buenos días", "language": "es"},
        )
    assert english.status_code == 200, english.text
    body = english.json()
    assert set(body) == {"conversation_id", "replies", "state"}
    assert body["state"] == {
        "mode": "bot",
        "safety": {"level": "none", "rule_ids": []},
        "triage": None,
    }
    assert body["replies"] and all(set(r) == {"text", "buttons"} for r in body["replies"])
    assert "assistant" in body["replies"][0]["text"].lower()

    assert spanish.json()["conversation_id"] == body["conversation_id"]
    spanish_text = " ".join(r["text"] for r in spanish.json()["replies"]).lower()
    assert "asistente" in spanish_text

    stored = _messages(database_url, body["conversation_id"])
    assert [d for d, _, _ in stored][:1] == ["inbound"]
    assert stored[0][1] == "hello there" and stored[0][2] == "processed"
    assert sum(1 for d, _, _ in stored if d == "inbound") == 2
    assert sum(1 for d, _, _ in stored if d == "outbound") == len(body["replies"]) + len(
        spanish.json()["replies"]
    )


async def test_buttons_come_back_and_their_payload_continues_the_dialogue(
    live_settings: Settings,
) -> None:
    sender = _sender()
    async with running_app(live_settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        offer = await client.post(
            "/api/v1/messages",
            headers=AUTH,
            json={"sender_id": sender, "text": "can I talk to a real person please"},
        )
        buttons = [b for r in offer.json()["replies"] for b in r["buttons"]]
        assert {b["payload"] for b in buttons} == {"/affirm", "/deny"}
        yes = await client.post(
            "/api/v1/messages", headers=AUTH, json={"sender_id": sender, "text": "yes please"}
        )
    assert yes.status_code == 200
    assert "staff" in " ".join(r["text"] for r in yes.json()["replies"]).lower()


async def test_an_idempotency_key_makes_a_retried_request_answer_once(
    live_settings: Settings, database_url: str
) -> None:
    sender, key = _sender(), uuid.uuid4().hex
    headers = {**AUTH, "Idempotency-Key": key}
    async with running_app(live_settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        first, second = [
            await client.post(
                "/api/v1/messages", headers=headers, json={"sender_id": sender, "text": "thanks!"}
            )
            for _ in range(2)
        ]
    assert first.json() == second.json()
    stored = _messages(database_url, first.json()["conversation_id"])
    assert sum(1 for d, _, _ in stored if d == "inbound") == 1


async def test_the_api_needs_its_token(make_settings: Callable[..., Settings]) -> None:
    async with (
        running_app(make_settings(api_token=None)) as (url, _),
        httpx.AsyncClient(base_url=url) as client,
    ):
        disabled = await client.post("/api/v1/messages", json={"sender_id": "a", "text": "hi"})
    async with running_app(make_settings()) as (url, _), httpx.AsyncClient(base_url=url) as client:
        missing = await client.post("/api/v1/messages", json={"sender_id": "a", "text": "hi"})
        wrong = await client.post(
            "/api/v1/messages",
            headers={"Authorization": "Bearer nope"},
            json={"sender_id": "a", "text": "hi"},
        )
    assert disabled.status_code == 503 and "API_TOKEN" in disabled.json()["error"]["message"]
    assert missing.status_code == 401 and wrong.status_code == 401


def _adversarial_payload(row: dict[str, Any]) -> str | bytes:
    if "text" in row:
        return str(row["text"])
    g = row["generate"]
    pre, suf = g.get("prefix", ""), g.get("suffix", "")
    if "bytes_hex" in g:
        return pre.encode() + bytes.fromhex(g["bytes_hex"]) + suf.encode()
    return pre + g["repeat"] * g["times"] + suf


def _body(sender: str, payload: str | bytes) -> bytes:
    if isinstance(payload, bytes):
        return b'{"sender_id": "' + sender.encode() + b'", "text": "' + payload + b'"}'
    return json.dumps({"sender_id": sender, "text": payload}).encode()


BAD_BODIES: list[tuple[str, bytes]] = [
    ("empty", b'{"sender_id": "s", "text": ""}'),
    ("whitespace", b'{"sender_id": "s", "text": "   \\t\\n  "}'),
    ("100 KB", _body("s", "A" * 100_000)),
    ("invalid utf-8", b'{"sender_id": "s", "text": "rash \xc3\x28 arm"}'),
    ("raw NUL", b'{"sender_id": "s", "text": "hello\x00world"}'),
    ("malformed JSON", b'{"sender_id": "s", "text": '),
    ("not an object", b'["hello"]'),
    ("wrong types", b'{"sender_id": 5, "text": ["x"]}'),
    ("missing text", b'{"sender_id": "s"}'),
]


async def test_bad_input_gets_a_clear_4xx_and_the_next_message_still_works(
    live_settings: Settings,
) -> None:
    async with running_app(live_settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        for name, body in BAD_BODIES:
            response = await client.post("/api/v1/messages", headers=AUTH, content=body)
            assert 400 <= response.status_code < 500, name
            assert response.json()["error"]["message"], name
        after = await client.post(
            "/api/v1/messages", headers=AUTH, json={"sender_id": "s", "text": "hello"}
        )
    assert after.status_code == 200 and after.json()["replies"]


async def test_adversarial_dev_set_never_gets_a_5xx_and_always_a_reply_or_a_clear_error(
    live_settings: Settings, database_url: str
) -> None:
    if not EVAL.exists():
        pytest.skip(f"the shared adversarial set is not at {EVAL}")
    rows = [json.loads(line) for line in EVAL.read_text(encoding="utf-8").splitlines()]
    sender = _sender()
    conversations: set[str] = set()
    async with (
        running_app(live_settings) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=15) as client,
    ):
        for row in rows:
            started = time.monotonic()
            response = await client.post(
                "/api/v1/messages",
                headers=AUTH,
                content=_body(sender, _adversarial_payload(row)),
            )
            assert time.monotonic() - started < 10, row["id"]
            assert response.status_code < 500, row["id"]
            if response.status_code == 200:
                assert response.json()["replies"], row["id"]
                conversations.add(response.json()["conversation_id"])
            else:
                assert response.json()["error"]["message"], row["id"]
    engine = make_sync_engine(database_url)
    with engine.connect() as connection:
        failed = connection.scalar(
            select(func.count())
            .select_from(Message)
            # This test's own messages: other tests store some on purpose and never answer them.
            .where(Message.conversation_id.in_(conversations))
            .where(Message.status == "received")
        )
    engine.dispose()
    assert failed == 0  # every accepted message was processed, none left half-way


async def test_a_flooding_sender_is_rate_limited_alone(
    make_live_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_live_settings(database_url, rate_limit_per_sender="5/minute")
    flooder, other = _sender(), _sender()
    async with running_app(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        statuses = [
            (
                await client.post(
                    "/api/v1/messages", headers=AUTH, json={"sender_id": flooder, "text": "hi"}
                )
            )
            for _ in range(8)
        ]
        bystander = await client.post(
            "/api/v1/messages", headers=AUTH, json={"sender_id": other, "text": "hi"}
        )
    codes = [r.status_code for r in statuses]
    assert codes[:5] == [200] * 5 and codes[5:] == [429] * 3
    assert "wait" in statuses[-1].json()["error"]["message"].lower()
    assert int(statuses[-1].headers["Retry-After"]) >= 1
    assert bystander.status_code == 200


async def test_concurrent_senders_are_each_answered(live_settings: Settings) -> None:
    async with running_app(live_settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    "/api/v1/messages", headers=AUTH, json={"sender_id": _sender(), "text": "hi"}
                )
                for _ in range(20)
            )
        )
    assert all(r.status_code == 200 and r.json()["replies"] for r in responses)


async def test_with_redis_the_rate_limit_is_shared_through_it(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    """Production sets REDIS_URL: the app must start with it and count senders there, so
    several web processes share one limit."""
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/6").ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable: {type(exc).__name__}")
    redis.Redis.from_url("redis://127.0.0.1:6379/6").flushdb()
    settings = make_settings(
        database_url=sqlite_url,
        redis_url="redis://127.0.0.1:6379/6",
        rate_limit_per_sender="2/minute",
    )
    sender = f"redis-{uuid.uuid4().hex[:8]}"
    async with running_app(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        statuses = [
            (
                await client.post(
                    "/api/v1/messages", headers=AUTH, json={"sender_id": sender, "text": "hi"}
                )
            ).status_code
            for _ in range(3)
        ]
    assert statuses == [200, 200, 429]
    assert redis.Redis.from_url("redis://127.0.0.1:6379/6").keys("LIMITS*")
