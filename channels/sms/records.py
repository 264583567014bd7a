"""What the SMS channel keeps in the database beside the conversation: consent (carrier
keywords), delivery reports, and the delivery status of each outbound message.

Written with SQLAlchemy Core statements that both the web app (async) and the worker (sync)
execute, so the rules live once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from core.crypto import blind_index
from core.orm import AuditEvent, Conversation, DeliveryEvent, Message, SmsConsent, utcnow

# Delivery reports can arrive in any order (Twilio sends them from different systems); a
# message's status only moves forward. Terminal outcomes share the top rank, first one wins.
STATUS_RANK = {
    "queued": 0,
    "accepted": 0,
    "scheduled": 0,
    "sending": 1,
    "sent": 2,
    "delivered": 3,
    "undelivered": 3,
    "failed": 3,
    "canceled": 3,
    "suppressed": 3,
    "read": 4,
}
UNDELIVERED = {"undelivered", "failed"}


def moves_forward(current: str | None, new: str) -> bool:
    return STATUS_RANK.get(new, -1) > STATUS_RANK.get(current or "", -1)


# --- consent -------------------------------------------------------------------------------


def consent_upsert(
    address: str, status: str, keyword: str | None, source: str, message_id: str | None
) -> tuple[Any, Any]:
    """(insert, update) statements; the caller tries the insert, then the update."""
    values = {
        "status": status,
        "keyword": keyword,
        "source": source,
        "message_id": message_id,
        "updated_at": utcnow(),
    }
    return (
        insert(SmsConsent).values(address=address, **values),
        update(SmsConsent).where(SmsConsent.address_hash == blind_index(address)).values(**values),
    )


def record_consent(
    connection: Connection,
    *,
    address: str,
    status: str,
    keyword: str | None,
    source: str,
    message_id: str | None,
) -> None:
    create, change = consent_upsert(address, status, keyword, source, message_id)
    """Record a number's consent. The web app calls it through `AsyncConnection.run_sync`."""
    exists = connection.scalar(
        select(SmsConsent.address_hash).where(SmsConsent.address_hash == blind_index(address))
    )
    try:
        with connection.begin_nested():
            connection.execute(change if exists else create)
    except IntegrityError:
        # Another STOP for the same number landed first.
        connection.execute(change)


def opted_out_query(address: str) -> Any:
    return select(SmsConsent.status).where(SmsConsent.address_hash == blind_index(address))


# --- delivery ------------------------------------------------------------------------------


def surface_undelivered(
    message_id: str, conversation_id: str, status: str, error_code: str | None, *, actor: str
) -> list[Any]:
    """Statements that put a reply the patient did not get in front of staff: the message and
    its conversation are flagged for follow-up, and the audit log says why."""
    return [
        update(Message).where(Message.id == message_id).values(needs_follow_up=True),
        update(Conversation).where(Conversation.id == conversation_id).values(needs_follow_up=True),
        insert(AuditEvent).values(
            actor=actor,
            action="sms.undelivered",
            conversation_id=conversation_id,
            detail={"message_id": message_id, "status": status, "error_code": error_code},
        ),
    ]


async def record_delivery_report(
    connection: AsyncConnection, *, vendor_id: str, status: str, error_code: str | None
) -> str | None:
    """Store one delivery report and move its message's status forward. Returns the message's
    status afterwards, None when the report is for a message not recorded yet (the worker
    applies it when it records the send)."""
    try:
        async with connection.begin_nested():
            await connection.execute(
                insert(DeliveryEvent).values(
                    vendor_message_id=vendor_id, status=status, error_code=error_code
                )
            )
    except IntegrityError:
        pass  # the same report again (Twilio retries callbacks)
    message = (
        await connection.execute(
            select(Message.id, Message.conversation_id, Message.status, Message.meta.label("meta"))
            .where(Message.vendor_message_id == vendor_id)
            .where(Message.direction == "outbound")
        )
    ).first()
    if message is None:
        return None
    if not moves_forward(message.status, status):
        return str(message.status)
    await connection.execute(
        update(Message)
        .where(Message.id == message.id)
        .values(
            status=status,
            meta={**(message.meta or {}), **({"error_code": error_code} if error_code else {})},
        )
    )
    if status in UNDELIVERED:
        flagged = surface_undelivered(
            message.id, message.conversation_id, status, error_code, actor="twilio"
        )
        for statement in flagged:
            await connection.execute(statement)
    return status
