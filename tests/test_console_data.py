"""The console's conversation list and dashboard (/admin/api/v1/conversations, /dashboard) on
SQLite and PostgreSQL: conversations and cases are stored the way the platform stores them, then
placed at known times, and every figure the dashboard shows is checked exactly. Staff, auditors
and admins can read them; nobody else can."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from bot.contract import Channel, Inbound, SafetyAssessment
from bot.store import ConversationInfo, ConversationStore, Deadlines, NewReply
from core import migrate
from core.db import make_async_engine, make_sessionmaker, make_sync_engine
from core.orm import Escalation, Message, utcnow
from core.settings import Settings
from tests.conftest import TEST_POSTGRES_URL, _postgres_admin_dsn, _postgres_reachable
from tests.support import running_app
from webapp.auth import Passwords
from webapp.routes.console_data import percentile
from webapp.users import create_user

ADMIN_TOKEN = "test-admin-token-console-data-0123"
PASSWORD = "correct horse battery staple"
FAST = Passwords(time_cost=1, memory_kib=8192)
FAST_SETTINGS = {"password_hash_time_cost": 1, "password_hash_memory_kib": 8192}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def own_database(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A database of this test's own: the dashboard counts everything, so nothing else may be
    in it."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'console-data.db'}"
        migrate.upgrade(url)
        yield url
        return
    if reason := _postgres_reachable():
        pytest.skip(reason)
    name = f"clinic_console_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_postgres_admin_dsn(), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = make_url(TEST_POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    yield url
    with psycopg.connect(_postgres_admin_dsn(), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Clinic:
    """Stores conversations through the platform's own store, then moves them in time."""

    store: ConversationStore
    database_url: str
    # What the app's orchestrator opens cases with: ESCALATION_SUPERVISOR_S per priority.
    deadlines: Deadlines

    async def conversation(self, channel: Channel) -> ConversationInfo:
        return await self.store.open_conversation(
            channel=channel, address=f"{channel.value}-{uuid.uuid4().hex[:8]}", language="en"
        )

    async def turn(
        self,
        conversation: ConversationInfo,
        at: datetime,
        reply_after_ms: list[int],
        triage: str | None = None,
    ) -> str:
        """A patient message at `at`, answered after each of `reply_after_ms` (none: never)."""
        inbound, _ = await self.store.store_inbound(
            conversation=conversation,
            inbound=Inbound(channel=conversation.channel, sender_address="x", text="my knee hurts"),
            text="my knee hurts",
            language="en",
        )
        audits = [("triage.decided", {"disposition": triage, "rule_ids": []})] if triage else []
        replies = await self.store.complete_turn(
            conversation=conversation,
            inbound_id=inbound.id,
            channel=conversation.channel,
            replies=[NewReply(text=f"answer {n}") for n in range(len(reply_after_ms))],
            status="answered",
            needs_follow_up=False,
            language="en",
            safety=SafetyAssessment(),
            audits=audits,
        )
        self.move(inbound.id, at)
        for reply, after in zip(replies, reply_after_ms, strict=True):
            self.move(reply.id, at + timedelta(milliseconds=after))
        return inbound.id

    def move(self, message_id: str, at: datetime) -> None:
        with Session(make_sync_engine(self.database_url)) as session, session.begin():
            session.execute(update(Message).where(Message.id == message_id).values(created_at=at))

    async def case(
        self,
        priority: str,
        opened: datetime,
        *,
        claimed_after_s: float | None = None,
        handed_back_after_s: float | None = None,
    ) -> None:
        """A case opened by the store (which sets its claim deadline), moved to `opened`."""
        conversation = await self.conversation(Channel.API)
        case_id, _ = await self.store.escalate(
            conversation=conversation,
            priority=priority,
            reason="triage",
            rule_ids=[],
            deadlines=self.deadlines,
        )
        with Session(make_sync_engine(self.database_url)) as session, session.begin():
            case = session.get_one(Escalation, case_id)
            shift = opened - as_utc(case.created_at)
            case.created_at = opened
            assert case.due_at is not None
            case.due_at = as_utc(case.due_at) + shift
            if claimed_after_s is not None:
                case.status = "claimed"
                case.claimed_at = opened + timedelta(seconds=claimed_after_s)
                case.claimed_by_name = "Dana"
            if handed_back_after_s is not None:
                case.status = "handed_back"
                case.handed_back_at = opened + timedelta(seconds=handed_back_after_s)


def as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class Console:
    client: httpx.AsyncClient
    clinic: Clinic
    settings: Settings

    async def token(self, role: str) -> str:
        username = f"{role}{uuid.uuid4().hex[:6]}"
        create_user(self.settings.database_url, username, PASSWORD, role, passwords=FAST)
        response = await self.client.post(
            "/admin/api/v1/auth/login", json={"username": username, "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["token"])

    async def get(self, path: str, token: str = ADMIN_TOKEN, **params: Any) -> httpx.Response:
        return await self.client.get(
            f"/admin/api/v1{path}", params=params, headers={"Authorization": f"Bearer {token}"}
        )


@pytest.fixture
async def console(
    make_settings: Callable[..., Settings], own_database: str
) -> AsyncIterator[Console]:
    settings = make_settings(database_url=own_database, admin_token=ADMIN_TOKEN, **FAST_SETTINGS)
    engine = make_async_engine(own_database)
    deadlines = Deadlines(claim_s=dict(settings.escalation_supervisor_s))
    clinic = Clinic(ConversationStore(make_sessionmaker(engine)), own_database, deadlines)
    async with (
        running_app(settings) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        yield Console(client, clinic, settings)
    await engine.dispose()


def iso(moment: datetime) -> str:
    return moment.date().isoformat()


def midnight_today() -> datetime:
    now = utcnow()
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


async def test_the_dashboard_counts_exactly_what_happened_in_the_period(console: Console) -> None:
    clinic, day = console.clinic, midnight_today()
    first_day = day - timedelta(days=6)
    web, sms = await clinic.conversation(Channel.WEB), await clinic.conversation(Channel.SMS)
    api, voice = await clinic.conversation(Channel.API), await clinic.conversation(Channel.VOICE)
    yesterday = day - timedelta(days=1)
    # Only the first reply to a message counts towards latency.
    await clinic.turn(web, yesterday + timedelta(hours=10), [400, 900], triage="urgent")
    await clinic.turn(web, yesterday + timedelta(hours=11), [1200])
    await clinic.turn(sms, day - timedelta(days=2, hours=-9), [2000], triage="routine")
    await clinic.turn(sms, first_day + timedelta(seconds=30), [600], triage="emergency")
    await clinic.turn(api, yesterday + timedelta(hours=12), [800], triage="routine")
    await clinic.turn(voice, yesterday + timedelta(hours=13), [])  # never answered
    # Before the period: not counted anywhere (the triage audit is still recorded now).
    await clinic.turn(api, first_day - timedelta(seconds=1), [100], triage="self_care")
    await clinic.turn(voice, day - timedelta(days=10), [300])

    # Claim deadlines by priority (ESCALATION_SUPERVISOR_S): immediate 5 min, high 15 min,
    # normal 1 h. Claimed 16 min after opening is in time for a normal case, late for a high one.
    assert clinic.deadlines.claim_s == {"immediate": 300, "high": 900, "normal": 3600}
    now = utcnow()
    opened = [now - timedelta(hours=h) for h in (3, 3, 2, 1 / 6, 5)]
    await clinic.case("immediate", opened[0], claimed_after_s=200)
    await clinic.case("high", opened[1], claimed_after_s=16 * 60)
    await clinic.case("normal", opened[2])  # open, overdue
    await clinic.case("normal", opened[3])  # open, still within its hour
    # Handed back unclaimed a minute in: it neither met nor missed a claim deadline.
    await clinic.case("normal", opened[4], handed_back_after_s=60)
    await clinic.case("high", now - timedelta(days=8), claimed_after_s=60)  # before the period

    response = await console.get("/dashboard", days="7")
    assert response.status_code == 200, response.text
    figures = response.json()
    assert figures == {
        "days": 7,
        "messages_per_channel": {"web": 2, "sms": 2, "voice": 1, "api": 1},
        "messages_per_day": [
            {"day": iso(first_day), "channel": "sms", "count": 1},
            {"day": iso(day - timedelta(days=2)), "channel": "sms", "count": 1},
            {"day": iso(yesterday), "channel": "api", "count": 1},
            {"day": iso(yesterday), "channel": "voice", "count": 1},
            {"day": iso(yesterday), "channel": "web", "count": 2},
        ],
        "escalations": {"total": 5, "open": 2, "claimed_in_time": 1, "missed_deadline": 2},
        "triage_mix": {"emergency": 1, "urgent": 1, "routine": 2, "self_care": 1},
        # Answered in the period: 400, 600, 800, 1200, 2000 ms.
        "latency_ms": {"p50": 800.0, "p95": 2000.0, "samples": 5},
    }

    one_day = (await console.get("/dashboard", days="1")).json()
    assert one_day["messages_per_channel"] == {"web": 0, "sms": 0, "voice": 0, "api": 0}
    assert one_day["latency_ms"] == {"p50": None, "p95": None, "samples": 0}
    assert one_day["escalations"]["total"] == sum(moment >= day for moment in opened)


async def test_conversations_are_listed_newest_first_a_page_at_a_time(console: Console) -> None:
    clinic, day = console.clinic, midnight_today()
    web, sms = await clinic.conversation(Channel.WEB), await clinic.conversation(Channel.SMS)
    quiet = await clinic.conversation(Channel.API)
    await clinic.turn(web, day - timedelta(days=3), [500])
    await clinic.turn(web, day - timedelta(days=1), [500, 700])
    await clinic.turn(sms, day - timedelta(days=2), [500])

    first = await console.get("/conversations", limit="2")
    assert first.status_code == 200, first.text
    page = first.json()
    assert [c["id"] for c in page["conversations"]] == [quiet.id, web.id]
    newest, second = page["conversations"]
    assert newest["message_count"] == 0
    assert newest["last_message_at"] == newest["started_at"]
    assert second == {
        "id": web.id,
        "channel": "web",
        "language": "en",
        "mode": "bot",
        "safety_level": "none",
        "started_at": second["started_at"],
        "last_message_at": second["last_message_at"],
        "message_count": 5,
    }
    last = datetime.fromisoformat(second["last_message_at"])
    assert last == day - timedelta(days=1) + timedelta(milliseconds=700)
    assert last.utcoffset() == timedelta(0)
    assert "knee" not in first.text
    assert page["next_before"] == second["last_message_at"]

    rest = (await console.get("/conversations", limit="2", before=page["next_before"])).json()
    assert [c["id"] for c in rest["conversations"]] == [sms.id]
    assert rest["next_before"] is None


async def test_bad_parameters_get_a_clear_422(console: Console) -> None:
    for path, params, code in [
        ("/conversations", {"limit": "0"}, "invalid_limit"),
        ("/conversations", {"limit": "201"}, "invalid_limit"),
        ("/conversations", {"limit": "ten"}, "invalid_limit"),
        ("/conversations", {"before": "last tuesday"}, "invalid_before"),
        ("/dashboard", {"days": "0"}, "invalid_days"),
        ("/dashboard", {"days": "91"}, "invalid_days"),
        ("/dashboard", {"days": "-1"}, "invalid_days"),
    ]:
        response = await console.get(path, **params)
        assert response.status_code == 422, (path, params)
        assert response.json()["error"]["code"] == code
        assert " must be " in response.json()["error"]["message"]


async def test_staff_auditors_and_admins_can_read_and_nobody_else(console: Console) -> None:
    await console.clinic.turn(await console.clinic.conversation(Channel.WEB), utcnow(), [10])
    for role in ("staff", "auditor", "admin"):
        token = await console.token(role)
        for path in ("/conversations", "/dashboard"):
            response = await console.get(path, token=token)
            assert response.status_code == 200, (role, path, response.text)
        listed = (await console.get("/conversations", token=token)).json()["conversations"]
        assert len(listed) == 1
    for path in ("/conversations", "/dashboard"):
        anonymous = await console.client.get(f"/admin/api/v1{path}")
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "unauthorized"
        forged = await console.get(path, token="not-a-session")
        assert forged.status_code == 401


def test_percentiles_are_values_that_were_measured() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    values = [float(n) for n in range(1, 21)]
    assert (percentile(values, 50), percentile(values, 95)) == (10.0, 19.0)
