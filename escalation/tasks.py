"""The worker's side of escalation: everything that talks to Mattermost's REST API on behalf of
a case, and the periodic check that reminds on-call staff and raises unclaimed cases to the
supervisors. Without Mattermost (the embedded default) the same tasks keep the routing timers
and the audit log, and the admin console shows the cases.

Every task can run twice (a redelivery, a retry) without posting twice: the case channel is
found by name, the card is created with a dedupe key, each relayed message with its own.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from bot.store import ACTIVE_CASE, as_utc
from core import metrics
from core.orm import AuditEvent, Conversation, Escalation, Message, utcnow
from core.settings import Settings, get_settings
from core.tasks import (
    CASE_EVENT,
    CHECK_UNCLAIMED,
    NOTIFY_STAFF,
    RELAY_TO_STAFF,
    celery_app,
    sync_engine,
)
from escalation.card import SENDER_LABELS, case_card
from escalation.cases import CaseView, case_view
from escalation.mattermost import (
    MattermostGateway,
    StaffToolError,
    case_channel_name,
    gateway_for,
)

log = logging.getLogger(__name__)

ACTION_PATH = "/escalation/mattermost/actions"


@lru_cache(maxsize=1)
def gateway() -> MattermostGateway | None:
    return gateway_for(get_settings())


def _retry(task: Any, exc: StaffToolError) -> None:
    metrics.count_dependency_failure("mattermost", "retry" if exc.retryable else "refused")
    if exc.retryable:
        countdown = min(2.0**task.request.retries, 60.0)
        log.warning("Mattermost unavailable, will retry", extra={"retry_in_s": countdown})
        raise task.retry(countdown=countdown, max_retries=20) from None
    log.error("Mattermost refused a request", extra={"error": str(exc)[:200]})


def _load(session: Session, case_id: str) -> tuple[Escalation, CaseView] | None:
    row = session.execute(
        select(Escalation, Conversation)
        .join(Conversation, Conversation.id == Escalation.conversation_id)
        .where(Escalation.id == case_id)
    ).first()
    return (row[0], case_view(row[0], row[1])) if row else None


def _recent(session: Session, conversation_id: str, limit: int) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(Message)
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.seq.desc())
        .limit(limit)
    )
    return [{"sender": m.sender, "text": m.text} for m in reversed(list(rows))]


def _mentions(gw: MattermostGateway, channel_id: str) -> list[str]:
    """On-call staff, those online first: the first name seen is the likeliest to answer."""
    members = gw.members(channel_id)
    statuses = gw.statuses(members)
    names = gw.usernames(members)
    rank = {"online": 0, "away": 1, "dnd": 2, "offline": 3}
    ordered = sorted(members, key=lambda m: (rank.get(statuses.get(m, "offline"), 3), names[m]))
    return [f"@{names[m]} ({statuses.get(m, 'offline')})" for m in ordered if m in names]


def _mention_line(mentions: list[str]) -> str:
    """The @names alone, for a reminder (the card shows each one's presence too)."""
    return " ".join(m.split(" ")[0] for m in mentions)


def _action_url(settings: Settings) -> str | None:
    base = settings.public_base_url
    return f"{base.rstrip('/')}{ACTION_PATH}" if base else None


def _card(
    session: Session, view: CaseView, mentions: list[str], settings: Settings
) -> dict[str, Any]:
    limit = settings.escalation_recent_messages
    return case_card(
        view,
        recent=_recent(session, view.conversation_id, limit),
        mentions=mentions,
        action_url=_action_url(settings),
        secret=settings.secret(),
        recent_limit=limit,
    )


def _audit(session: Session, view: CaseView, action: str, detail: dict[str, Any]) -> None:
    session.add(
        AuditEvent(
            actor="worker",
            action=action,
            patient_id=view.patient_id,
            conversation_id=view.conversation_id,
            detail={"escalation_id": view.id, **detail},
        )
    )


def open_case_in_staff_tool(
    engine: Engine, settings: Settings, gw: MattermostGateway, case_id: str
) -> str | None:
    """The case channel with the on-call staff in it and the case card posted (once), or the
    card brought up to date when the case already has one. Returns the channel id."""
    with Session(engine) as session, session.begin():
        loaded = _load(session, case_id)
        if loaded is None:
            return None
        case, view = loaded
        channel_id = case.staff_channel_id or gw.open_case_channel(
            case.id,
            display_name=f"Case {case.id[:8]}",
            purpose="Escalated patient conversation: clinical staff only.",
        )
        oncall = gw.oncall_channel_id()
        gw.add_members(channel_id, gw.members(oncall))
        mentions = _mentions(gw, oncall)
        card = _card(session, view, mentions, settings)
        raised = case.staff_card_id is not None
        if raised:
            gw.patch(str(case.staff_card_id), message=card["message"], props=card["props"])
            gw.post(
                channel_id,
                f":rotating_light: Priority is now **{view.priority}** ({view.reason}). "
                + _mention_line(mentions),
            )
            card_id = case.staff_card_id
        else:
            card_id = gw.post(
                channel_id, card["message"], props=card["props"], dedupe_key=f"card-{case.id}"
            )
        case.staff_channel_id, case.staff_card_id = channel_id, card_id
        _audit(
            session,
            view,
            "escalation.posted_to_staff",
            {"tool": "mattermost", "channel": case_channel_name(case.id), "raised": raised},
        )
        return channel_id


@celery_app.task(name=NOTIFY_STAFF, bind=True)  # type: ignore[untyped-decorator]
def notify_staff(self: Any, escalation_id: str, priority: str) -> None:
    """A new case, or one whose priority went up: tell staff where they work."""
    with Session(sync_engine()) as session, session.begin():
        session.add(
            AuditEvent(
                actor="worker",
                action="escalation.notification_dispatched",
                detail={"escalation_id": escalation_id, "priority": priority},
            )
        )
    gw = gateway()
    if gw is None:
        return  # the admin console lists the case
    try:
        open_case_in_staff_tool(sync_engine(), get_settings(), gw, escalation_id)
    except StaffToolError as exc:
        _retry(self, exc)


@celery_app.task(name=RELAY_TO_STAFF, bind=True)  # type: ignore[untyped-decorator]
def relay_to_staff(self: Any, message_ids: list[str]) -> None:
    """Post a turn (the patient's message and what the assistant answered) in the case channel."""
    gw = gateway()
    if gw is None:
        return
    try:
        with Session(sync_engine()) as session:
            messages = list(
                session.scalars(
                    select(Message).where(Message.id.in_(message_ids)).order_by(Message.seq)
                )
            )
            if not messages:
                return
            case = session.scalar(
                select(Escalation)
                .where(Escalation.conversation_id == messages[0].conversation_id)
                .where(Escalation.status.in_(ACTIVE_CASE))
                .order_by(Escalation.created_at.desc())
                .limit(1)
            )
        if case is None:
            return
        if case.staff_channel_id is None:
            # The card is not out yet; it will carry these messages among the recent ones.
            open_case_in_staff_tool(sync_engine(), get_settings(), gw, case.id)
            return
        for message in messages:
            who = SENDER_LABELS.get(message.sender, message.sender)
            suffix = (
                f" _({message.channel}, {message.status})_"
                if message.status
                in (
                    "not_sent",
                    "failed",
                )
                else ""
            )
            gw.post(
                case.staff_channel_id,
                f"**{who}:** {message.text}{suffix}",
                dedupe_key=message.id,
            )
        with Session(sync_engine()) as session, session.begin():
            session.add(
                AuditEvent(
                    actor="worker",
                    action="escalation.relayed_to_staff",
                    patient_id=case.patient_id,
                    conversation_id=case.conversation_id,
                    detail={
                        "escalation_id": case.id,
                        "tool": "mattermost",
                        "message_ids": [m.id for m in messages],
                    },
                )
            )
    except StaffToolError as exc:
        _retry(self, exc)


_EVENT_TEXT = {
    "claimed": ":white_check_mark: Claimed by {by}. Posts by {by} in this channel now go to "
    "the patient; start a post with // for a note only staff see.",
    "handed_back": ":robot_face: {by} handed the conversation back to the assistant.",
    "resolved": ":ballot_box_with_check: Resolved by {by}. The patient was asked for feedback.",
    "not_sent": ":warning: {notice}",
    "console_reply": "**{by}** (staff console) to the patient: {text}",
}


@celery_app.task(name=CASE_EVENT, bind=True)  # type: ignore[untyped-decorator]
def case_event(self: Any, case_id: str, event: str, detail: dict[str, Any]) -> None:
    """A staff action changed the case (from Mattermost or the console): update its card and
    say so in the case channel."""
    gw = gateway()
    if gw is None:
        return
    try:
        with Session(sync_engine()) as session:
            loaded = _load(session, case_id)
            if loaded is None:
                return
            case, view = loaded
            if case.staff_channel_id is None:
                return
            if case.staff_card_id:
                card = _card(session, view, [], get_settings())
                gw.patch(case.staff_card_id, message=card["message"], props=card["props"])
        template = _EVENT_TEXT.get(event)
        if template:
            text = template.format(
                by=detail.get("by", "staff"),
                notice=detail.get("notice", ""),
                text=detail.get("text", ""),
            )
            gw.post(case.staff_channel_id, text, dedupe_key=f"{case_id}-{event}-{self.request.id}")
    except StaffToolError as exc:
        _retry(self, exc)


@celery_app.task(name=CHECK_UNCLAIMED)  # type: ignore[untyped-decorator]
def check_unclaimed() -> dict[str, int]:
    """Runs every ESCALATION_CHECK_INTERVAL_S (Celery beat)."""
    return remind_unclaimed(sync_engine(), get_settings(), gateway(), utcnow())


def remind_unclaimed(
    engine: Engine, settings: Settings, gw: MattermostGateway | None, now: datetime
) -> dict[str, int]:
    """Remind on-call staff of cases nobody claimed, and raise overdue ones to the supervisors.
    Each reminder is taken by one run only, so overlapping runs do not remind twice."""
    reminded = raised = 0
    with Session(engine) as session:
        due = list(
            session.scalars(
                select(Escalation)
                .where(Escalation.status == "open")
                .where(Escalation.next_notify_at <= now)
            )
        )
        overdue = list(
            session.scalars(
                select(Escalation)
                .where(Escalation.status == "open")
                .where(Escalation.due_at <= now)
                .where(Escalation.supervisor_notified_at.is_(None))
            )
        )
    for case in due:
        delay = timedelta(seconds=settings.escalation_renotify_s[case.priority])
        if _take(engine, case, "renotified", case.next_notify_at, now + delay):
            reminded += 1
            _tell_staff(engine, settings, gw, case.id, supervisors=False)
    for case in overdue:
        if _take(engine, case, "raised_to_supervisor", None, now):
            raised += 1
            metrics.ESCALATION_DEADLINES_MISSED.labels(case.priority).inc()
            _tell_staff(engine, settings, gw, case.id, supervisors=True)
    return {"reminded": reminded, "raised": raised}


def _take(engine: Engine, case: Escalation, what: str, seen: Any, value: datetime) -> bool:
    """Move the case's timer from what this run saw; only the run that does posts."""
    if what == "renotified":
        column: Any = Escalation.next_notify_at
        values: dict[str, Any] = {
            "next_notify_at": value,
            "notify_count": Escalation.notify_count + 1,
        }
    else:
        column, values = Escalation.supervisor_notified_at, {"supervisor_notified_at": value}
    condition = column.is_(None) if seen is None else column == seen
    with Session(engine) as session, session.begin():
        done = session.execute(
            update(Escalation)
            .where(Escalation.id == case.id)
            .where(Escalation.status == "open")
            .where(condition)
            .values(**values)
        )
        taken = bool(done.rowcount == 1)  # type: ignore[attr-defined]
        if taken:
            session.add(
                AuditEvent(
                    actor="worker",
                    action=f"case.{what}",
                    patient_id=case.patient_id,
                    conversation_id=case.conversation_id,
                    detail={"escalation_id": case.id, "priority": case.priority},
                )
            )
    return taken


def _tell_staff(
    engine: Engine,
    settings: Settings,
    gw: MattermostGateway | None,
    case_id: str,
    *,
    supervisors: bool,
) -> None:
    if gw is None:
        return
    try:
        with Session(engine) as session:
            loaded = _load(session, case_id)
        if loaded is None:
            return
        case, view = loaded
        channel_id = case.staff_channel_id or open_case_in_staff_tool(engine, settings, gw, case_id)
        if channel_id is None:
            return
        waited = int((utcnow() - as_utc(view.created_at)).total_seconds() // 60)
        if supervisors:
            supervisors_channel = gw.supervisor_channel_id()
            gw.add_members(channel_id, gw.members(supervisors_channel))
            mentions = _mention_line(_mentions(gw, supervisors_channel))
            gw.post(
                supervisors_channel,
                f":rotating_light: {view.priority.upper()} case {view.id[:8]} ({view.reason}) "
                f"has not been claimed after {waited} min. You were added to its channel "
                f"~{case_channel_name(view.id)}. {mentions}",
            )
        else:
            mentions = _mention_line(_mentions(gw, gw.oncall_channel_id()))
            gw.post(
                channel_id,
                f":bell: Still unclaimed after {waited} min ({view.priority}). {mentions}",
            )
    except StaffToolError:
        # The timer moved on; the next run reminds again, and the console shows it overdue.
        metrics.count_dependency_failure("mattermost", "skipped")
        log.warning("could not remind staff in Mattermost", extra={"case_id": case_id})
