"""The background worker (Celery). Embedded default: a SQLite broker file, no Redis needed;
production: Redis (`REDIS_URL`)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from celery import Celery
from celery.schedules import crontab
from celery.signals import setup_logging, worker_init, worker_process_shutdown
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session

from core import metrics
from core.db import make_sync_engine
from core.logging import configure_logging, propagate_to_celery
from core.orm import AuditEvent, Conversation, KbIngestJob
from core.privacy import run_retention
from core.settings import Settings, get_settings

log = logging.getLogger(__name__)


FLAG_FOR_FOLLOW_UP = "follow_up.flag_conversation"
NOTIFY_STAFF = "escalation.notify_staff"
CHECK_UNCLAIMED = "escalation.check_unclaimed"
RELAY_TO_STAFF = "escalation.relay_to_staff"
CASE_EVENT = "escalation.case_event"
INGEST_UPLOAD = "kb.ingest_upload"
RETENTION = "privacy.retention"


def make_celery(settings: Settings) -> Celery:
    app = Celery("clinic", broker=settings.celery_broker_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # A task is acknowledged only after it ran, so a worker crash re-delivers it.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # After kill -9 nothing acknowledges or rejects: Redis hands the task out again once
        # the visibility timeout has passed, found by a sweep every 10 s (kombu's default
        # throttle makes it every 100 s). The SQLite broker passes its options to SQLAlchemy.
        broker_transport_options=(
            {
                "visibility_timeout": settings.celery_visibility_timeout_s,
                "unacked_restore_throttle": 1,
            }
            if settings.celery_broker_url.startswith(("redis://", "rediss://"))
            else {}
        ),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # Channel and escalation tasks register themselves on this app; the worker imports
        # them at start.
        include=["channels.sms.tasks", "escalation.tasks"],
        beat_schedule={
            # Reminds on-call staff of unclaimed cases and raises overdue ones to supervisors.
            "escalation-check-unclaimed": {
                "task": CHECK_UNCLAIMED,
                "schedule": settings.escalation_check_interval_s,
            },
            # Erases what RETENTION_DAYS says is too old (a no-op while it is 0).
            "privacy-retention": {"task": RETENTION, "schedule": crontab(hour=3, minute=17)},
        },
    )
    return app


celery_app = make_celery(get_settings())
propagate_to_celery()


@setup_logging.connect  # type: ignore[untyped-decorator]
def _json_logs(**_: Any) -> None:
    # The worker logs like the web app: JSON lines with the correlation id, no patient text.
    configure_logging()


@worker_init.connect  # type: ignore[untyped-decorator]
def _serve_metrics(**_: Any) -> None:
    # In the worker's main process, before its pool starts: the children write to
    # PROMETHEUS_MULTIPROC_DIR and this server reads them all.
    port = get_settings().metrics_worker_port
    if port:
        metrics.serve_worker_metrics(port)


@worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _forget_live_metrics(pid: int | None = None, **_: Any) -> None:
    metrics.process_exiting(pid)


@lru_cache(maxsize=1)
def sync_engine() -> Engine:
    return make_sync_engine(get_settings().database_url)


@celery_app.task(name=FLAG_FOR_FOLLOW_UP)  # type: ignore[untyped-decorator]
def flag_conversation_for_follow_up(conversation_id: str, message_id: str) -> None:
    """Put a conversation whose message the assistant could not answer on the staff work list.

    The admin console lists flagged conversations; two unanswered turns in a row open a case."""
    with sync_engine().begin() as connection:
        connection.execute(
            update(Conversation)
            .where(Conversation.id == conversation_id)
            .values(needs_follow_up=True)
        )
        connection.execute(
            insert(AuditEvent).values(
                actor="worker",
                action="follow_up.queued",
                conversation_id=conversation_id,
                detail={"message_id": message_id},
            )
        )
    log.info("conversation flagged for staff follow-up", extra={"conversation_id": conversation_id})


@lru_cache(maxsize=1)
def _knowledge_index() -> Any:
    """One index (and one copy of the embedding model) per worker process."""
    from rag.index import SentenceTransformerEmbedder, open_index

    settings = get_settings()
    embedder = SentenceTransformerEmbedder(settings.embedding_model_path)
    return open_index(settings.data_dir, settings.chroma_url, embedder)


@celery_app.task(name=INGEST_UPLOAD)  # type: ignore[untyped-decorator]
def ingest_uploaded_document(job_id: str) -> None:
    """Ingest a document uploaded through the admin API and record what it did.

    Re-running a job is harmless: ingestion is idempotent by content hash."""
    with sync_engine().begin() as connection:
        job = connection.execute(select(KbIngestJob).where(KbIngestJob.id == job_id)).first()
        if job is None:
            log.warning("ingestion job not found", extra={"job_id": job_id})
            return
        connection.execute(
            update(KbIngestJob).where(KbIngestJob.id == job_id).values(status="running")
        )
    status, report, error = "done", {}, None
    try:
        result = _knowledge_index().ingest(Path(job.stored_path), language=job.language)
        report = dict(vars(result))
        if result.failed:
            status, error = "failed", "the file could not be read (damaged, or not that type)"
    except Exception as exc:
        log.exception("ingestion failed", extra={"job_id": job_id})
        status, error = "failed", f"{type(exc).__name__}: {exc}"[:500]
    with sync_engine().begin() as connection:
        connection.execute(
            update(KbIngestJob)
            .where(KbIngestJob.id == job_id)
            .values(status=status, report=report, error=error, finished_at=datetime.now(UTC))
        )
        connection.execute(
            insert(AuditEvent).values(
                actor="worker",
                action="kb.ingested" if status == "done" else "kb.ingest_failed",
                detail={"job_id": job_id, "report": report},
            )
        )
    log.info("knowledge-base upload ingested", extra={"job_id": job_id, "status": status})


@celery_app.task(name=RETENTION)  # type: ignore[untyped-decorator]
def apply_retention() -> None:
    """Erase conversations past RETENTION_DAYS (core/privacy.py); running it twice erases
    nothing more."""
    settings = get_settings()
    if not (settings.retention_days or settings.retention_media_days):
        return
    with Session(sync_engine()) as session, session.begin():
        report = run_retention(session, settings)
    log.info(
        "retention applied",
        extra={k: report.get(k) for k in ("patients", "conversations", "messages", "media_files")},
    )
