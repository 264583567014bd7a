"""Patients' data rights and retention: export everything held about a patient, erase it, and
erase patients who have been silent longer than RETENTION_DAYS.

Erasure removes the patient and everything reached from them: channel identities, conversations,
messages, pictures (rows and files under DATA_DIR), calls, cases, phone-link codes, delivery
reports, an opt-in consent record, and the dialogue's copy of each conversation in Rasa's
tracker store (RASA_TRACKER_DB_URL). What stays: the audit log (ids and decisions, never text)
with one event saying what was erased, and a phone number's opt-out, which the clinic must
keep honouring. Rate-limit counters in Redis are keyed by the sender's address and expire
within two rate windows; erasure deletes them where it can find them. Copies outside this
database (Mattermost case channels, backups) are not reached: see docs/ARCHITECTURE.md.

Retention works per patient: a patient with no message, conversation change or patient record
newer than the limit, and no case staff are working on, is erased as above (actor
"retention"), all in one run that writes one audit event with the counts. Running it again
erases nothing more. RETENTION_MEDIA_DAYS deletes pictures sooner, keeping their rows as
`expired` so transcripts say a picture was there.

    python -m core.privacy export PATIENT_ID      # JSON on stdout (audited)
    python -m core.privacy erase PATIENT_ID --yes
    python -m core.privacy retention [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import column, delete, exists, or_, select, table, update
from sqlalchemy.orm import Session

from core.audit import as_utc
from core.crypto import blind_index
from core.db import make_sync_engine
from core.orm import (
    AuditEvent,
    ChannelIdentity,
    Conversation,
    DeliveryEvent,
    Escalation,
    Message,
    MessageMedia,
    Patient,
    PhoneLinkCode,
    SmsConsent,
    VoiceCall,
    utcnow,
)
from core.settings import Settings, get_settings

log = logging.getLogger(__name__)

ACTIVE_CASE = ("open", "claimed")
PHONE_CHANNELS = ("sms", "voice")
CHUNK = 200


class ErasureFailed(RuntimeError):
    """Part of the data could not be reached; nothing was erased in the database."""


def _when(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value else None


# --- export -----------------------------------------------------------------------------------


def export_patient(session: Session, patient_id: str, *, actor: str) -> dict[str, Any] | None:
    """Everything held about one patient, as JSON-ready data; None when there is no such
    patient. The export is audited (`patient_data.export`) in the caller's transaction."""
    patient = session.get(Patient, patient_id)
    if patient is None:
        return None
    identities = list(
        session.scalars(select(ChannelIdentity).where(ChannelIdentity.patient_id == patient_id))
    )
    conversations = list(
        session.scalars(
            select(Conversation)
            .where(_conversations_of([patient_id], [i.id for i in identities]))
            .order_by(Conversation.created_at)
        )
    )
    conversation_ids = [c.id for c in conversations]
    messages = list(
        session.scalars(
            select(Message)
            .where(Message.conversation_id.in_(conversation_ids))
            .order_by(Message.seq)
        )
    )
    media: dict[str, list[dict[str, Any]]] = {}
    for item in session.scalars(
        select(MessageMedia).where(MessageMedia.conversation_id.in_(conversation_ids))
    ):
        media.setdefault(item.message_id, []).append(
            {
                "id": item.id,
                "content_type": item.content_type,
                "size_bytes": item.size_bytes,
                "sha256": item.sha256,
                "status": item.status,
                "created_at": _when(item.created_at),
            }
        )
    calls = list(
        session.scalars(
            select(VoiceCall)
            .where(VoiceCall.conversation_id.in_(conversation_ids))
            .order_by(VoiceCall.started_at)
        )
    )
    cases = list(
        session.scalars(
            select(Escalation)
            .where(
                or_(
                    Escalation.patient_id == patient_id,
                    Escalation.conversation_id.in_(conversation_ids),
                )
            )
            .order_by(Escalation.created_at)
        )
    )
    phones = [i.address for i in identities if i.channel in PHONE_CHANNELS]
    consents = list(
        session.scalars(
            select(SmsConsent).where(SmsConsent.address_hash.in_([blind_index(p) for p in phones]))
        )
    )
    trail = list(
        session.execute(
            select(AuditEvent.at, AuditEvent.actor, AuditEvent.action, AuditEvent.conversation_id)
            .where(AuditEvent.patient_id == patient_id)
            .order_by(AuditEvent.id)
        )
    )
    by_conversation: dict[str, list[Message]] = {}
    for message in messages:
        by_conversation.setdefault(message.conversation_id, []).append(message)
    export = {
        "exported_at": _when(utcnow()),
        "patient": {
            "id": patient.id,
            "preferred_language": patient.preferred_language,
            "created_at": _when(patient.created_at),
        },
        "identities": [
            {
                "id": i.id,
                "channel": i.channel,
                "address": i.address,
                "created_at": _when(i.created_at),
            }
            for i in identities
        ],
        "conversations": [
            {
                "id": c.id,
                "channel": c.channel,
                "language": c.language,
                "mode": c.mode,
                "safety_level": c.safety_level,
                "safety_rule_ids": list(c.safety_rule_ids or []),
                "triage": c.triage,
                "safety_protocol": c.safety_protocol,
                "merged_into": c.merged_into,
                "created_at": _when(c.created_at),
                "updated_at": _when(c.updated_at),
                "messages": [
                    {
                        "id": m.id,
                        "channel": m.channel,
                        "direction": m.direction,
                        "sender": m.sender,
                        "text": m.text,
                        "language": m.language,
                        "buttons": m.buttons,
                        "status": m.status,
                        "created_at": _when(m.created_at),
                        "media": media.get(m.id, []),
                    }
                    for m in by_conversation.get(c.id, [])
                ],
            }
            for c in conversations
        ],
        "calls": [
            {
                "call_sid": call.call_sid,
                "conversation_id": call.conversation_id,
                "caller": call.caller,
                "called": call.called,
                "via": call.via,
                "status": call.status,
                "language": call.language,
                "transfer_to": call.transfer_to,
                "transfer_status": call.transfer_status,
                "started_at": _when(call.started_at),
                "ended_at": _when(call.ended_at),
            }
            for call in calls
        ],
        "escalations": [
            {
                "id": e.id,
                "conversation_id": e.conversation_id,
                "priority": e.priority,
                "reason": e.reason,
                "rule_ids": list(e.rule_ids or []),
                "summary": e.summary,
                "status": e.status,
                "claimed_by": e.claimed_by_name,
                "feedback": e.feedback,
                "created_at": _when(e.created_at),
                "resolved_at": _when(e.resolved_at),
            }
            for e in cases
        ],
        "consents": [
            {
                "address": c.address,
                "status": c.status,
                "keyword": c.keyword,
                "source": c.source,
                "updated_at": _when(c.updated_at),
            }
            for c in consents
        ],
        # Who did what with this patient's data (what the audit log records about them).
        "audit_trail": [
            {"at": _when(at), "actor": who, "action": action, "conversation_id": conversation}
            for at, who, action, conversation in trail
        ],
    }
    session.add(
        AuditEvent(
            actor=actor,
            action="patient_data.export",
            patient_id=patient_id,
            detail={
                "conversations": len(conversations),
                "messages": len(messages),
                "calls": len(calls),
                "escalations": len(cases),
            },
        )
    )
    return export


# --- erasure ----------------------------------------------------------------------------------


@dataclass
class Erasure:
    """What an erasure removed (counts for the audit log) and what it still has to remove
    outside the database (files, tracker events, rate-limit keys)."""

    patients: int = 0
    identities: int = 0
    conversations: int = 0
    messages: int = 0
    media_files: int = 0
    calls: int = 0
    escalations: int = 0
    tracker_events: int = 0
    rate_limit_keys: int = 0
    files: list[str] = field(default_factory=list, repr=False)
    conversation_ids: list[str] = field(default_factory=list, repr=False)
    addresses: list[tuple[str, str]] = field(default_factory=list, repr=False)

    def add(self, other: Erasure) -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)

    def counts(self) -> dict[str, int]:
        return {
            k: v
            for k, v in asdict(self).items()
            if k not in ("files", "conversation_ids", "addresses")
        }


def _conversations_of(patient_ids: Sequence[str], identity_ids: Sequence[str]) -> Any:
    return or_(Conversation.patient_id.in_(patient_ids), Conversation.identity_id.in_(identity_ids))


def delete_patients(session: Session, patient_ids: Sequence[str]) -> Erasure:
    """Delete the patients' rows, children first (no reliance on cascades), in the caller's
    transaction; files and other stores are left to `remove_elsewhere`."""
    done = Erasure()
    if not patient_ids:
        return done
    identities = list(
        session.execute(
            select(ChannelIdentity.id, ChannelIdentity.channel, ChannelIdentity.address).where(
                ChannelIdentity.patient_id.in_(patient_ids)
            )
        )
    )
    identity_ids = [i.id for i in identities]
    done.addresses = [(i.channel, i.address) for i in identities]
    conversation_ids = list(
        session.scalars(select(Conversation.id).where(_conversations_of(patient_ids, identity_ids)))
    )
    done.conversation_ids = conversation_ids
    done.files = [
        path
        for path in session.scalars(
            select(MessageMedia.stored_path).where(
                MessageMedia.conversation_id.in_(conversation_ids)
            )
        )
        if path
    ]
    vendor_ids = [
        v
        for v in session.scalars(
            select(Message.vendor_message_id).where(Message.conversation_id.in_(conversation_ids))
        )
        if v
    ]
    phones = [address for channel, address in done.addresses if channel in PHONE_CHANNELS]

    def remove(statement: Any) -> int:
        return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]

    remove(delete(DeliveryEvent).where(DeliveryEvent.vendor_message_id.in_(vendor_ids)))
    remove(delete(MessageMedia).where(MessageMedia.conversation_id.in_(conversation_ids)))
    done.messages = remove(delete(Message).where(Message.conversation_id.in_(conversation_ids)))
    done.calls = remove(delete(VoiceCall).where(VoiceCall.conversation_id.in_(conversation_ids)))
    done.escalations = remove(
        delete(Escalation).where(
            or_(
                Escalation.patient_id.in_(patient_ids),
                Escalation.conversation_id.in_(conversation_ids),
            )
        )
    )
    remove(delete(PhoneLinkCode).where(PhoneLinkCode.patient_id.in_(patient_ids)))
    # An opt-out stays: the number must never be texted again unless its owner says START.
    remove(
        delete(SmsConsent)
        .where(SmsConsent.address_hash.in_([blind_index(p) for p in phones]))
        .where(SmsConsent.status != "opted_out")
    )
    done.conversations = remove(delete(Conversation).where(Conversation.id.in_(conversation_ids)))
    done.identities = remove(delete(ChannelIdentity).where(ChannelIdentity.id.in_(identity_ids)))
    done.patients = remove(delete(Patient).where(Patient.id.in_(patient_ids)))
    return done


def remove_elsewhere(done: Erasure, settings: Settings) -> None:
    """Delete the erased conversations' copies outside the database: Rasa's tracker events
    first (an unreachable tracker store fails the erasure before anything is lost), then the
    pictures' files, then rate-limit counters. Safe to repeat."""
    if done.conversation_ids and settings.rasa_tracker_db_url:
        done.tracker_events = _delete_tracker_events(
            settings.rasa_tracker_db_url, done.conversation_ids
        )
    root = settings.data_dir.resolve()
    for stored in done.files:
        path = Path(stored).resolve()
        if not path.is_relative_to(root):
            log.warning("picture outside DATA_DIR left in place")
            continue
        try:
            path.unlink()
            done.media_files += 1
        except FileNotFoundError:
            pass
    if done.addresses and settings.redis_url:
        done.rate_limit_keys = _delete_rate_limit_keys(settings.redis_url, done.addresses)


def _delete_tracker_events(url: str, conversation_ids: Sequence[str]) -> int:
    # Rasa's SQLTrackerStore keeps every event of a conversation (the patient's words among
    # them) as a row of `events` keyed by sender_id, our conversation id.
    events = table("events", column("sender_id"))
    engine = make_sync_engine(url)
    try:
        removed = 0
        with engine.begin() as connection:
            for start in range(0, len(conversation_ids), CHUNK):
                chunk = conversation_ids[start : start + CHUNK]
                result = connection.execute(delete(events).where(events.c.sender_id.in_(chunk)))
                removed += int(result.rowcount)
        return removed
    except Exception as exc:
        raise ErasureFailed(
            "Rasa's tracker store (RASA_TRACKER_DB_URL) could not be reached "
            f"({type(exc).__name__}); nothing was erased. Check that its database is up and "
            "try again."
        ) from exc
    finally:
        engine.dispose()


def _delete_rate_limit_keys(redis_url: str, addresses: Iterable[tuple[str, str]]) -> int:
    removed = 0
    try:
        client = redis.Redis.from_url(redis_url)
        # The limits library keys a sender's counters "LIMITS:LIMITER/<channel>/<address>/...".
        for channel, address in addresses:
            pattern = f"*LIMITER/{_glob_escape(channel)}/{_glob_escape(address)}/*"
            keys = list(client.scan_iter(match=pattern, count=500))
            if keys:
                removed += int(client.delete(*keys))
        client.close()
    except redis.RedisError:
        # They expire within two rate windows anyway; the erasure does not wait for Redis.
        log.warning("rate-limit counters not deleted: Redis unreachable")
    return removed


def _glob_escape(value: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in value)


def erase_patient(
    session: Session, patient_id: str, *, actor: str, settings: Settings
) -> dict[str, int] | None:
    """Erase one patient in the caller's transaction (commit it to finish); None when there is
    no such patient. Adds one `patient.erased` audit event with the counts."""
    if session.get(Patient, patient_id) is None:
        return None
    done = delete_patients(session, [patient_id])
    remove_elsewhere(done, settings)
    counts = done.counts()
    session.add(
        AuditEvent(actor=actor, action="patient.erased", patient_id=patient_id, detail=counts)
    )
    return counts


# --- retention --------------------------------------------------------------------------------


def expired_patients(session: Session, cutoff: datetime) -> list[str]:
    """Patients with nothing newer than `cutoff` (no message, no conversation change, no new
    record) and no case staff are working on."""
    recent_message = (
        select(Message.seq)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Conversation.patient_id == Patient.id)
        .where(Message.created_at >= cutoff)
    )
    recent_change = (
        select(Conversation.id)
        .where(Conversation.patient_id == Patient.id)
        .where(Conversation.updated_at >= cutoff)
    )
    working_case = (
        select(Escalation.id)
        .where(Escalation.patient_id == Patient.id)
        .where(Escalation.status.in_(ACTIVE_CASE))
    )
    return list(
        session.scalars(
            select(Patient.id)
            .where(Patient.created_at < cutoff)
            .where(~exists(recent_message))
            .where(~exists(recent_change))
            .where(~exists(working_case))
            .order_by(Patient.created_at)
        )
    )


def expire_media(session: Session, cutoff: datetime) -> list[str]:
    """Mark pictures older than `cutoff` expired; returns their files to delete."""
    rows = list(
        session.execute(
            select(MessageMedia.id, MessageMedia.stored_path)
            .where(MessageMedia.status == "stored")
            .where(MessageMedia.created_at < cutoff)
        )
    )
    if rows:
        session.execute(
            update(MessageMedia)
            .where(MessageMedia.id.in_([r.id for r in rows]))
            .values(status="expired", stored_path=None, reason="retention")
        )
    return [r.stored_path for r in rows if r.stored_path]


def run_retention(
    session: Session, settings: Settings, *, now: datetime | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Erase what RETENTION_DAYS and RETENTION_MEDIA_DAYS say is too old, in the caller's
    transaction. A dry run counts what would go and changes nothing."""
    now = now or utcnow()
    report: dict[str, Any] = {"dry_run": dry_run, "retention_days": settings.retention_days}
    done = Erasure()
    expired_files: list[str] = []
    if settings.retention_days:
        cutoff = now - timedelta(days=settings.retention_days)
        patients = expired_patients(session, cutoff)
        report["cutoff"] = cutoff.isoformat()
        if dry_run:
            done.patients = len(patients)
        else:
            # Chunks keep each statement under the databases' bound-parameter limits.
            for start in range(0, len(patients), CHUNK):
                done.add(delete_patients(session, patients[start : start + CHUNK]))
    if settings.retention_media_days:
        media_cutoff = now - timedelta(days=settings.retention_media_days)
        report["media_cutoff"] = media_cutoff.isoformat()
        if dry_run:
            report["media_expired"] = len(
                list(
                    session.scalars(
                        select(MessageMedia.id)
                        .where(MessageMedia.status == "stored")
                        .where(MessageMedia.created_at < media_cutoff)
                    )
                )
            )
        else:
            expired_files = expire_media(session, media_cutoff)
            report["media_expired"] = len(expired_files)
            done.files.extend(expired_files)
    if not dry_run:
        remove_elsewhere(done, settings)
    report.update(done.counts())
    if not dry_run and (settings.retention_days or settings.retention_media_days):
        session.add(AuditEvent(actor="retention", action="retention.erased", detail=report))
    return report


# --- command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.privacy")
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="print everything held about a patient (JSON)")
    export.add_argument("patient_id")
    erase = commands.add_parser("erase", help="erase a patient's data")
    erase.add_argument("patient_id")
    erase.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")
    retention = commands.add_parser("retention", help="erase what RETENTION_DAYS says is old")
    retention.add_argument("--dry-run", action="store_true", help="count only, change nothing")
    args = parser.parse_args(argv)
    settings = get_settings()
    engine = make_sync_engine(settings.database_url)
    try:
        with Session(engine) as session, session.begin():
            if args.command == "export":
                data = export_patient(session, args.patient_id, actor="cli")
                if data is None:
                    print(f"No patient {args.patient_id}.", file=sys.stderr)
                    return 1
                print(json.dumps(data, indent=2, ensure_ascii=False))
            elif args.command == "erase":
                if not args.yes:
                    print("Erasure cannot be undone: add --yes to confirm.", file=sys.stderr)
                    return 2
                counts = erase_patient(session, args.patient_id, actor="cli", settings=settings)
                if counts is None:
                    print(f"No patient {args.patient_id}.", file=sys.stderr)
                    return 1
                print(json.dumps(counts))
            else:
                print(json.dumps(run_retention(session, settings, dry_run=args.dry_run)))
    except ErasureFailed as exc:
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
