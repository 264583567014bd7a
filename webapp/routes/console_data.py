"""What the staff console shows besides cases: the list of conversations (no message text) and
the dashboard's figures (messages per channel and day, case deadlines met or missed, the triage
mix, reply latency).

Every figure is an aggregate query that runs the same on SQLite and PostgreSQL; only the
latency percentiles are computed here, from a bounded sample of the latest turns.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from bot.store import as_utc
from core.orm import AuditEvent, Conversation, Escalation, Message, utcnow
from webapp.auth import Authorizer, Role, error

READERS: frozenset[Role] = frozenset({"admin", "staff", "auditor"})
CHANNELS = ("web", "sms", "voice", "api")
DISPOSITIONS = ("emergency", "urgent", "routine", "self_care")
MAX_LIMIT = 200
MAX_DAYS = 90
# Percentiles come from at most this many of the latest answered messages: enough for a stable
# p95, and the query stays cheap however busy the clinic is.
LATENCY_SAMPLE = 5000


def _iso(moment: datetime | None) -> str | None:
    # PostgreSQL answers in its session's time zone; the API always speaks UTC.
    return as_utc(moment).astimezone(UTC).isoformat() if moment is not None else None


def _parse_before(raw: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    # Stored times are UTC; SQLite compares them as text, so the bound must be UTC too.
    return as_utc(moment).astimezone(UTC)


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile: a value that was actually measured, never an interpolation."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _day(column: Any, dialect: str) -> ColumnElement[str]:
    """The UTC calendar day of a timestamp as 'YYYY-MM-DD'. SQLite keeps UTC text already;
    PostgreSQL's date would follow the session's time zone."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.date(column)


def build_router(*, sessions: async_sessionmaker[AsyncSession], authorize: Authorizer) -> APIRouter:
    router = APIRouter(prefix="/admin/api/v1", tags=["console"])

    @router.get("/conversations")
    async def conversations(
        request: Request, limit: str = "50", before: str | None = None
    ) -> JSONResponse:
        """Newest activity first, a page at a time; `next_before` asks for the next page."""
        who = await authorize(request, READERS)
        if isinstance(who, JSONResponse):
            return who
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
            return error(
                422, "invalid_limit", f"limit must be a whole number from 1 to {MAX_LIMIT}."
            )
        count = int(limit)
        bound = None
        if before is not None:
            bound = _parse_before(before)
            if bound is None:
                return error(
                    422,
                    "invalid_before",
                    "before must be an ISO 8601 time, as next_before gives it.",
                )
        activity = (
            select(
                Message.conversation_id.label("conversation_id"),
                func.max(Message.created_at).label("last_at"),
                func.count().label("messages"),
            )
            .group_by(Message.conversation_id)
            .subquery()
        )
        last_at = func.coalesce(activity.c.last_at, Conversation.created_at)
        query = (
            select(Conversation, last_at.label("last_message_at"), activity.c.messages)
            .outerjoin(activity, activity.c.conversation_id == Conversation.id)
            .order_by(last_at.desc(), Conversation.id.desc())
            .limit(count)
        )
        if bound is not None:
            query = query.where(last_at < bound)
        async with sessions() as session:
            rows = (await session.execute(query)).all()
        items = [
            {
                "id": conversation.id,
                "channel": conversation.channel,
                "language": conversation.language,
                "mode": conversation.mode,
                "safety_level": conversation.safety_level,
                "started_at": _iso(conversation.created_at),
                "last_message_at": _iso(last),
                "message_count": messages or 0,
            }
            for conversation, last, messages in rows
        ]
        next_before = items[-1]["last_message_at"] if len(items) == count else None
        return JSONResponse(content={"conversations": items, "next_before": next_before})

    @router.get("/dashboard")
    async def dashboard(request: Request, days: str = "7") -> JSONResponse:
        """The last `days` calendar days (UTC), today included."""
        who = await authorize(request, READERS)
        if isinstance(who, JSONResponse):
            return who
        if not days.isdigit() or not 1 <= int(days) <= MAX_DAYS:
            return error(422, "invalid_days", f"days must be a whole number from 1 to {MAX_DAYS}.")
        span = int(days)
        now = utcnow()
        since = datetime(now.year, now.month, now.day, tzinfo=UTC) - timedelta(days=span - 1)
        async with sessions() as session:
            figures = await _figures(session, since=since, now=now)
        return JSONResponse(content={"days": span, **figures})

    return router


async def _figures(session: AsyncSession, *, since: datetime, now: datetime) -> dict[str, Any]:
    dialect = session.get_bind().dialect.name
    patient_inbound = and_(
        Message.direction == "inbound",
        Message.sender == "patient",
        Message.created_at >= since,
    )

    day = _day(Message.created_at, dialect)
    per_day = (
        await session.execute(
            select(day.label("day"), Message.channel, func.count())
            .where(patient_inbound)
            .group_by(day, Message.channel)
            .order_by(day, Message.channel)
        )
    ).all()
    per_channel = dict.fromkeys(CHANNELS, 0)
    for _, channel, n in per_day:
        per_channel[channel] = per_channel.get(channel, 0) + n

    # The claim deadline is the case's own due_at: set from ESCALATION_SUPERVISOR_S for its
    # priority and shortened when it grew graver, the same moment supervisors are told.
    # A case closed without a claim missed it if it closed after the deadline.
    claimed_in_time = and_(
        Escalation.claimed_at.is_not(None), Escalation.claimed_at <= Escalation.due_at
    )
    settled_at = func.coalesce(
        Escalation.claimed_at, Escalation.handed_back_at, Escalation.resolved_at, now
    )
    missed = and_(Escalation.due_at.is_not(None), settled_at > Escalation.due_at)

    def tally(condition: ColumnElement[bool]) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    total, still_open, in_time, late = (
        await session.execute(
            select(
                func.count(),
                tally(Escalation.status == "open"),
                tally(claimed_in_time),
                tally(missed),
            ).where(Escalation.created_at >= since)
        )
    ).one()

    disposition = AuditEvent.detail["disposition"].as_string()
    triage_rows = (
        await session.execute(
            select(disposition, func.count())
            .where(AuditEvent.action == "triage.decided")
            .where(AuditEvent.at >= since)
            .where(or_(*(disposition == d for d in DISPOSITIONS)))
            .group_by(disposition)
        )
    ).all()
    triage_mix = dict.fromkeys(DISPOSITIONS, 0)
    for name, n in triage_rows:
        triage_mix[name] = n

    reply = aliased(Message)
    answered = (
        await session.execute(
            select(Message.created_at, func.min(reply.created_at))
            .join(reply, reply.in_reply_to == Message.id)
            .where(patient_inbound)
            .where(reply.direction == "outbound")
            .group_by(Message.seq, Message.created_at)
            .order_by(Message.seq.desc())
            .limit(LATENCY_SAMPLE)
        )
    ).all()
    latencies = sorted(
        max(0.0, (as_utc(first) - as_utc(received)).total_seconds() * 1000)
        for received, first in answered
    )

    def ms(value: float | None) -> float | None:
        return round(value, 1) if value is not None else None

    return {
        "messages_per_channel": per_channel,
        "messages_per_day": [{"day": str(d), "channel": c, "count": n} for d, c, n in per_day],
        "escalations": {
            "total": total,
            "open": int(still_open),
            "claimed_in_time": int(in_time),
            "missed_deadline": int(late),
        },
        "triage_mix": triage_mix,
        "latency_ms": {
            "p50": ms(percentile(latencies, 50)),
            "p95": ms(percentile(latencies, 95)),
            "samples": len(latencies),
        },
    }
