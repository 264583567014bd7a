"""The admin API: knowledge-base uploads for now (the console builds on it).

An upload is stored under DATA_DIR/kb-uploads, recorded as a job, and ingested by the Celery
worker; the response says where to watch the job. Uploads are for admins; staff and auditors
read jobs, transcripts and pictures, and every read of patient data is audited with their name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.orm import (
    AuditEvent,
    Conversation,
    DeliveryEvent,
    KbIngestJob,
    Message,
    MessageMedia,
)
from rag.documents import SUPPORTED
from webapp.auth import Authorizer, Role, error

READERS: frozenset[Role] = frozenset({"admin", "staff", "auditor"})

READ_CHUNK = 1024 * 1024


def _job(job: KbIngestJob) -> dict[str, Any]:
    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": job.id,
        "filename": job.filename,
        "size_bytes": job.size_bytes,
        "sha256": job.sha256,
        "language": job.language,
        "status": job.status,
        "report": job.report,
        "error": job.error,
        "created_at": when(job.created_at),
        "finished_at": when(job.finished_at),
        "url": f"/admin/api/v1/kb/jobs/{job.id}",
    }


def safe_filename(name: str) -> str:
    """The uploaded name without folders or odd characters, so it can never leave its folder."""
    base = Path(name.replace("\\", "/")).name
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip(".-")
    return cleaned[:120] or "document"


def build_router(
    *,
    sessions: async_sessionmaker[AsyncSession],
    authorize: Authorizer,
    upload_dir: Path,
    max_bytes: int,
    enqueue: Callable[[str], Awaitable[None]],
) -> APIRouter:
    router = APIRouter(prefix="/admin/api/v1", tags=["admin"])

    @router.post("/kb/documents", status_code=202)
    async def upload_document(
        request: Request,
        file: Annotated[UploadFile, File()],
        language: Annotated[str | None, Form()] = None,
    ) -> JSONResponse:
        who = await authorize(request, {"admin"})
        if isinstance(who, JSONResponse):
            return who
        filename = safe_filename(file.filename or "")
        if Path(filename).suffix.lower() not in SUPPORTED:
            kinds = ", ".join(sorted(SUPPORTED))
            return error(415, "unsupported_type", f"Upload one of these file types: {kinds}.")
        if language is not None and language not in ("en", "es"):
            return error(422, "invalid_language", "language must be 'en' or 'es' (or left out).")
        digest = hashlib.sha256()
        chunks: list[bytes] = []
        size = 0
        while chunk := await file.read(READ_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                return error(413, "too_large", f"The file is over {max_bytes // 1024 // 1024} MB.")
            digest.update(chunk)
            chunks.append(chunk)
        if size == 0:
            return error(422, "empty_file", "The file is empty.")
        sha = digest.hexdigest()
        folder = upload_dir / sha[:16]
        folder.mkdir(parents=True, exist_ok=True)
        stored = folder / filename
        stored.write_bytes(b"".join(chunks))
        async with sessions() as session, session.begin():
            job = KbIngestJob(
                filename=filename,
                stored_path=str(stored),
                size_bytes=size,
                sha256=sha,
                language=language,
                status="queued",
                report={},
            )
            session.add(job)
            session.add(
                AuditEvent(
                    actor=who.actor,
                    action="kb.upload_received",
                    detail={"job_id": job.id, "filename": filename, "sha256": sha},
                )
            )
        try:
            await enqueue(job.id)
        except Exception:
            async with sessions() as session, session.begin():
                stored_job = await session.get(KbIngestJob, job.id)
                if stored_job is not None:
                    stored_job.status, stored_job.error = "failed", "the task queue is unreachable"
            return error(
                503,
                "queue_unavailable",
                "The document is saved but could not be queued; upload it again.",
            )
        return JSONResponse(status_code=202, content=_job(job))

    @router.get("/kb/jobs/{job_id}")
    async def job_status(job_id: str, request: Request) -> JSONResponse:
        who = await authorize(request, READERS)
        if isinstance(who, JSONResponse):
            return who
        async with sessions() as session:
            job = await session.get(KbIngestJob, job_id[:32])
        if job is None:
            return error(404, "not_found", "No such ingestion job.")
        return JSONResponse(content=_job(job))

    @router.get("/kb/jobs")
    async def recent_jobs(request: Request) -> JSONResponse:
        who = await authorize(request, READERS)
        if isinstance(who, JSONResponse):
            return who
        async with sessions() as session:
            rows = await session.scalars(
                select(KbIngestJob).order_by(KbIngestJob.created_at.desc()).limit(50)
            )
            return JSONResponse(content={"jobs": [_job(j) for j in rows]})

    @router.get("/conversations/{conversation_id}/messages")
    async def transcript(conversation_id: str, request: Request) -> JSONResponse:
        """A conversation as staff read it: every message on every channel, each reply's
        delivery status and reports, and the pictures the patient sent. The read is audited."""
        who = await authorize(request, READERS)
        if isinstance(who, JSONResponse):
            return who
        async with sessions() as session:
            conversation = await session.get(Conversation, conversation_id[:32])
            if conversation is None:
                return error(404, "not_found", "No such conversation.")
            messages = list(
                await session.scalars(
                    select(Message)
                    .where(Message.conversation_id == conversation.id)
                    .order_by(Message.seq)
                )
            )
            vendor_ids = [m.vendor_message_id for m in messages if m.direction == "outbound"]
            reports: dict[str, list[dict[str, Any]]] = {}
            for event in await session.scalars(
                select(DeliveryEvent)
                .where(DeliveryEvent.vendor_message_id.in_([v for v in vendor_ids if v]))
                .order_by(DeliveryEvent.id)
            ):
                reports.setdefault(event.vendor_message_id, []).append(
                    {
                        "status": event.status,
                        "error_code": event.error_code,
                        "at": event.received_at.isoformat(),
                    }
                )
            media: dict[str, list[dict[str, Any]]] = {}
            for item in await session.scalars(
                select(MessageMedia).where(MessageMedia.conversation_id == conversation.id)
            ):
                media.setdefault(item.message_id, []).append(
                    {
                        "id": item.id,
                        "content_type": item.content_type,
                        "size_bytes": item.size_bytes,
                        "status": item.status,
                        "reason": item.reason,
                    }
                )
            session.add(
                AuditEvent(
                    actor=who.actor,
                    action="patient_data.read",
                    patient_id=conversation.patient_id,
                    conversation_id=conversation.id,
                    detail={"what": "transcript", "messages": len(messages)},
                )
            )
            await session.commit()
        return JSONResponse(
            content={
                "conversation_id": conversation.id,
                "needs_follow_up": conversation.needs_follow_up,
                "messages": [
                    {
                        "id": m.id,
                        "seq": m.seq,
                        "channel": m.channel,
                        "direction": m.direction,
                        "sender": m.sender,
                        "text": m.text,
                        "status": m.status,
                        "needs_follow_up": m.needs_follow_up,
                        "segments": (m.meta or {}).get("segments"),
                        "delivery": reports.get(m.vendor_message_id or "", []),
                        "media": media.get(m.id, []),
                        "created_at": m.created_at.isoformat(),
                    }
                    for m in messages
                ],
            }
        )

    @router.get("/media/{media_id}")
    async def media_file(media_id: str, request: Request) -> Response:
        """A picture a patient sent, for staff. Served as an attachment so a browser never
        renders it in our origin. The read is audited."""
        who = await authorize(request, READERS)
        if isinstance(who, JSONResponse):
            return who
        async with sessions() as session:
            item = await session.get(MessageMedia, media_id[:32])
            if item is None or item.status != "stored" or not item.stored_path:
                return error(404, "not_found", "No such picture.")
            conversation = await session.get(Conversation, item.conversation_id)
            session.add(
                AuditEvent(
                    actor=who.actor,
                    action="patient_data.read",
                    patient_id=conversation.patient_id if conversation else None,
                    conversation_id=item.conversation_id,
                    detail={"what": "media", "media_id": item.id},
                )
            )
            await session.commit()
        return FileResponse(
            item.stored_path,
            media_type=item.content_type,
            filename=Path(item.stored_path).name,
            content_disposition_type="attachment",
        )

    return router
