"""The SMS worker: answers stored incoming messages and sends queued replies through Twilio.

`sms.process_inbound` runs the same orchestrator as the web chat (the platform's services,
built once per worker process, on an event loop of their own), after fetching any pictures.
`sms.send` sends a conversation's queued replies in order, checking consent before each one,
and retries what Twilio could not take yet (429, 5xx, network) with exponential backoff.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mimetypes
import threading
from collections.abc import Coroutine
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import httpx
from celery.signals import worker_ready
from sqlalchemy import Engine, insert, or_, select, update
from sqlalchemy.orm import Session

from bot.contract import Channel, Outbound
from bot.phrases import phrase
from bot.store import STAFF_POST_PREFIX, ConversationStore
from channels.sms import records
from channels.sms.delivery import sms_delivery
from channels.sms.twilio_api import (
    SendError,
    Sent,
    Unsubscribed,
    make_client,
    recently_sent,
    send_sms,
)
from channels.sms.webhook import PROCESS_INBOUND, SEND
from core import metrics
from core.orm import AuditEvent, DeliveryEvent, Message, MessageMedia, utcnow
from core.settings import get_settings
from core.tasks import celery_app, sync_engine

log = logging.getLogger(__name__)
T = TypeVar("T")
# A reply claimed for sending: Twilio may or may not have it until the answer is recorded.
DISPATCHING = "dispatching"


class _AsyncRuntime:
    """One event loop per worker process, on its own thread, holding the platform's services
    (database pool, HTTP clients, models) across tasks."""

    def __init__(self) -> None:
        from core.services import build_services

        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="sms-services", daemon=True).start()
        # A question by SMS can wait for the knowledge base to load; nobody watches a spinner.
        self.services = build_services(get_settings(), knowledge_cold_wait_s=120.0)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 300.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)


@lru_cache(maxsize=1)
def _runtime() -> _AsyncRuntime:
    return _AsyncRuntime()


@lru_cache(maxsize=1)
def _twilio() -> Any:
    return make_client(get_settings())


@celery_app.task(name=PROCESS_INBOUND)  # type: ignore[untyped-decorator]
def process_inbound(message_id: str) -> None:
    engine = sync_engine()
    _store_media(engine, message_id)
    runtime = _runtime()
    result = runtime.run(runtime.services.orchestrator.process_stored(message_id))
    if result is None or result.duplicate:
        log.info("SMS message already processed", extra={"message_id": message_id})
        return
    queued = [r.id for r in result.replies]
    notice = _refusal_notice(engine, message_id)
    if notice is not None:
        queued += runtime.run(_store_notice(runtime.services.store, message_id, *notice))
    if queued:
        celery_app.send_task(SEND, args=[queued])
    log.info("SMS message answered", extra={"message_id": message_id, "replies": len(queued)})


@celery_app.task(name=SEND, bind=True)  # type: ignore[untyped-decorator]
def send_messages(self: Any, message_ids: list[str]) -> None:
    """Send queued SMS replies in order. A retry starts again at the first one not yet sent."""
    settings = get_settings()
    engine = sync_engine()
    for message_id in message_ids:
        try:
            _send_one(engine, message_id)
        except SendError as exc:
            attempt = self.request.retries + 1
            if exc.retryable and attempt < settings.sms_send_attempts:
                metrics.count_dependency_failure("twilio", "retry")
                countdown = min(settings.sms_retry_base_s * 2**self.request.retries, 300.0)
                log.warning(
                    "SMS send failed, will retry",
                    extra={"attempt": attempt, "code": exc.code, "retry_in_s": countdown},
                )
                raise self.retry(countdown=countdown, max_retries=None) from None
            metrics.count_dependency_failure("twilio", "failed")
            _mark_failed(engine, message_id, str(exc.code or exc))


def _send_one(engine: Engine, message_id: str) -> None:
    settings = get_settings()
    message = _load(engine, message_id)
    if message is None or message.status not in ("queued", DISPATCHING):
        return  # sent by an earlier attempt, or suppressed
    if _at_twilio(message.vendor_message_id):
        return  # Twilio took it; "queued" is then Twilio's own status, until its reports come
    meta = dict(message.meta or {})
    to = str(meta.get("to", ""))
    with engine.connect() as connection:
        consent = connection.scalar(records.opted_out_query(to))
    if consent == "opted_out" and not meta.get("consent_exempt"):
        _suppress(engine, message, "opted_out")
        return
    sent = None
    if message.status == DISPATCHING:
        # An earlier attempt claimed it and died (kill -9) or failed: Twilio may have it.
        sent = _taken_by_twilio(engine, message, meta, to)
    else:
        # Claimed before asking Twilio, so a redelivered task knows to check first.
        meta["dispatch_at"] = utcnow().isoformat()
        with engine.begin() as connection:
            claimed = connection.execute(
                update(Message)
                .where(Message.id == message.id)
                .where(Message.status == "queued")
                .where(
                    or_(
                        Message.vendor_message_id.is_(None),
                        Message.vendor_message_id.startswith(STAFF_POST_PREFIX),
                    )
                )
                .values(status=DISPATCHING, meta=meta)
            )
        if claimed.rowcount != 1:
            return  # another attempt has it
    try:
        if sent is None:
            sent = send_sms(_twilio(), settings, to=to, body=message.text)
    except Unsubscribed as exc:
        # Twilio (or the carrier) holds a STOP we had not seen: remember it as ours.
        with engine.begin() as connection:
            records.record_consent(
                connection,
                address=to,
                status="opted_out",
                keyword=None,
                source="carrier",
                message_id=message.id,
            )
        _suppress(engine, message, f"twilio_{exc.code}")
        return
    with engine.begin() as connection:
        # Reports that arrived before this point (a fast carrier) are applied now.
        reports = connection.execute(
            select(DeliveryEvent.status, DeliveryEvent.error_code).where(
                DeliveryEvent.vendor_message_id == sent.sid
            )
        ).all()
        status, error_code = sent.status, None
        for report in reports:
            if records.moves_forward(status, report.status):
                status, error_code = report.status, report.error_code
        if sent.segments:
            meta["segments_billed"] = sent.segments
        connection.execute(
            update(Message)
            .where(Message.id == message.id)
            .values(
                vendor_message_id=sent.sid,
                status=status,
                meta=meta,
                processed_at=utcnow(),
            )
        )
        if status in records.UNDELIVERED:
            for statement in records.surface_undelivered(
                message.id, message.conversation_id, status, error_code, actor="worker"
            ):
                connection.execute(statement)


def _at_twilio(vendor_message_id: str | None) -> bool:
    return vendor_message_id is not None and not vendor_message_id.startswith(STAFF_POST_PREFIX)


def _taken_by_twilio(
    engine: Engine, message: Message, meta: dict[str, Any], to: str
) -> Sent | None:
    """The message Twilio created for an interrupted attempt: same number and text, created
    since the claim (less a margin for clock skew), and not recorded for another message."""
    claimed_at = datetime.fromisoformat(str(meta.get("dispatch_at") or utcnow().isoformat()))
    since = claimed_at - timedelta(minutes=2)
    candidates = [
        s
        for s in recently_sent(_twilio(), get_settings(), to=to, since=since)
        if s.body == message.text
    ]
    if not candidates:
        return None
    with engine.connect() as connection:
        known = set(
            connection.scalars(
                select(Message.vendor_message_id).where(
                    Message.vendor_message_id.in_([s.sid for s in candidates])
                )
            )
        )
    found = next((s for s in candidates if s.sid not in known), None)
    if found is not None:
        log.info("interrupted SMS send found at Twilio", extra={"message_id": message.id})
    return found


def _load(engine: Engine, message_id: str) -> Message | None:
    # Detached ORM objects: plain attribute access after the session closes.
    with Session(engine, expire_on_commit=False) as session:
        return session.scalar(select(Message).where(Message.id == message_id))


def _suppress(engine: Engine, message: Any, reason: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(Message)
            .where(Message.id == message.id)
            .values(status="suppressed", meta={**(message.meta or {}), "suppressed": reason})
        )
        connection.execute(
            insert(AuditEvent).values(
                actor="worker",
                action="sms.suppressed",
                conversation_id=message.conversation_id,
                detail={"message_id": message.id, "reason": reason},
            )
        )
    log.info("SMS not sent: recipient opted out", extra={"message_id": message.id})


def _mark_failed(engine: Engine, message_id: str, error: str) -> None:
    message = _load(engine, message_id)
    if message is None:
        return
    with engine.begin() as connection:
        connection.execute(
            update(Message)
            .where(Message.id == message_id)
            .values(status="failed", meta={**(message.meta or {}), "error": error[:64]})
        )
        for statement in records.surface_undelivered(
            message_id, message.conversation_id, "failed", error[:16], actor="worker"
        ):
            connection.execute(statement)
    log.warning("SMS could not be sent; flagged for staff", extra={"message_id": message_id})


# --- pictures (MMS) ------------------------------------------------------------------------


def _store_media(engine: Engine, message_id: str) -> None:
    """Fetch the pictures of an incoming MMS from Twilio and keep them with the conversation.
    Only Twilio's own media URLs are fetched (the webhook is signed, but a URL elsewhere
    would make us fetch from anywhere)."""
    settings = get_settings()
    message = _load(engine, message_id)
    if message is None or message.status != "received":
        return
    with engine.connect() as connection:
        done = connection.scalar(
            select(MessageMedia.id).where(MessageMedia.message_id == message_id)
        )
    media = (message.meta or {}).get("media") or []
    if not media or done:
        return
    folder = settings.data_dir / "media"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for item in media:
        rows.append(
            _fetch_one(
                settings, folder, str(item.get("url", "")), str(item.get("content_type", ""))
            )
        )
    with engine.begin() as connection:
        for row in rows:
            connection.execute(
                insert(MessageMedia).values(
                    message_id=message_id, conversation_id=message.conversation_id, **row
                )
            )
        connection.execute(
            insert(AuditEvent).values(
                actor="worker",
                action="sms.media_received",
                conversation_id=message.conversation_id,
                detail={
                    "message_id": message_id,
                    "stored": sum(r["status"] == "stored" for r in rows),
                    "refused": [r["reason"] for r in rows if r["status"] != "stored"],
                },
            )
        )


def _fetch_one(settings: Any, folder: Path, url: str, content_type: str) -> dict[str, Any]:
    declared = content_type.split(";")[0].strip().lower()
    row: dict[str, Any] = {"content_type": declared or "unknown", "status": "refused"}
    if declared not in settings.sms_media_types:
        return {**row, "reason": "type_not_accepted"}
    if not url.startswith(settings.twilio_api_base_url.rstrip("/") + "/"):
        return {**row, "reason": "unexpected_source"}
    auth = (settings.twilio_account_sid or "", settings.twilio_auth_token.get_secret_value())
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    size = 0
    try:
        with httpx.stream("GET", url, auth=auth, follow_redirects=True, timeout=30.0) as response:
            if response.status_code != 200:
                return {**row, "status": "failed", "reason": f"http_{response.status_code}"}
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > settings.sms_media_max_bytes:
                    return {**row, "reason": "too_large", "size_bytes": size}
                digest.update(chunk)
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        return {**row, "status": "failed", "reason": type(exc).__name__[:64]}
    sha = digest.hexdigest()
    extension = mimetypes.guess_extension(declared) or ".bin"
    path = folder / f"{sha}{extension}"
    if not path.exists():
        path.write_bytes(b"".join(chunks))
    return {**row, "status": "stored", "size_bytes": size, "sha256": sha, "stored_path": str(path)}


def _refusal_notice(engine: Engine, message_id: str) -> tuple[Outbound, str] | None:
    """What to tell the patient, once, when a file they sent could not be kept, and where."""
    with engine.connect() as connection:
        reason = connection.scalar(
            select(MessageMedia.reason)
            .where(MessageMedia.message_id == message_id)
            .where(MessageMedia.status == "refused")
            .limit(1)
        )
    message = _load(engine, message_id)
    if reason is None or message is None:
        return None
    language = message.language or "en"  # the turn just set it
    text = phrase(
        "attachment_refused",
        language,
        reason={"too_large": "too large", "type_not_accepted": "file type not accepted"}.get(
            str(reason), "not accepted"
        ),
        max_mb=get_settings().sms_media_max_bytes // (1024 * 1024),
    )
    notice = Outbound(
        conversation_id=message.conversation_id,
        channel=Channel.SMS,
        text=text,
        language=language,
        sender="system",
        kind="system",
    )
    return notice, str((message.meta or {}).get("from", ""))


async def _store_notice(
    store: ConversationStore, in_reply_to: str, notice: Outbound, address: str
) -> list[str]:
    conversation = await store.get_conversation(notice.conversation_id)
    assert conversation is not None
    stored = await store.add_replies(
        conversation=conversation,
        channel=Channel.SMS,
        in_reply_to=in_reply_to,
        language=notice.language or conversation.language,
        replies=sms_delivery(notice, address),
    )
    return [m.id for m in stored]


@worker_ready.connect  # type: ignore[untyped-decorator]
def _recover_unqueued(**_: Any) -> None:
    """Messages stored while the queue was unreachable are still `received`: queue them now."""
    try:
        engine = sync_engine()
        with engine.connect() as connection:
            stranded = connection.execute(
                select(Message.id)
                .where(Message.channel == "sms")
                .where(Message.direction == "inbound")
                .where(Message.status == "received")
            ).all()
    except Exception:
        log.exception("could not look for stranded SMS messages")
        return
    for row in stranded:
        celery_app.send_task(PROCESS_INBOUND, args=[row.id])
    if stranded:
        log.info("queued stranded SMS messages", extra={"count": len(stranded)})
