"""The admin API's audit log and patients' data rights: read and verify the audit log (admin,
auditor), export a patient's data and erase it (admin only). core/audit.py and core/privacy.py
do the work; this module checks who asks and what they sent."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from core import audit, privacy
from core.audit import as_utc
from core.db import make_sync_engine
from core.orm import AuditEvent
from core.settings import Settings
from webapp.auth import Authorizer, error

MAX_ID_CHARS = 32


class EraseRequest(BaseModel):
    confirm: str


def _event(row: AuditEvent) -> dict[str, Any]:
    at: datetime = as_utc(row.at)
    return {
        "id": row.id,
        "at": at.isoformat(),
        "actor": row.actor,
        "action": row.action,
        "patient_id": row.patient_id,
        "conversation_id": row.conversation_id,
        "detail": row.detail,
        "hash": row.hash,
    }


def build_router(
    *,
    sessions: async_sessionmaker[AsyncSession],
    authorize: Authorizer,
    settings: Settings,
) -> APIRouter:
    router = APIRouter(prefix="/admin/api/v1", tags=["privacy"])

    @router.get("/audit")
    async def audit_log(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        before_id: Annotated[int | None, Query(ge=1)] = None,
        action: Annotated[str | None, Query(max_length=64)] = None,
        patient_id: Annotated[str | None, Query(max_length=MAX_ID_CHARS)] = None,
    ) -> JSONResponse:
        """Newest first; `next_before_id` pages back."""
        who = await authorize(request, {"admin", "auditor"})
        if isinstance(who, JSONResponse):
            return who
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit + 1)
        if before_id is not None:
            query = query.where(AuditEvent.id < before_id)
        if action:
            query = query.where(AuditEvent.action == action)
        if patient_id:
            query = query.where(AuditEvent.patient_id == patient_id)
        async with sessions() as session:
            rows = list(await session.scalars(query))
        more = len(rows) > limit
        rows = rows[:limit]
        return JSONResponse(
            content={
                "events": [_event(r) for r in rows],
                "next_before_id": rows[-1].id if more and rows else None,
            }
        )

    @router.get("/audit/verify")
    async def verify_chain(request: Request) -> JSONResponse:
        who = await authorize(request, {"admin", "auditor"})
        if isinstance(who, JSONResponse):
            return who
        async with sessions() as session:
            connection = await session.connection()
            verdict = await connection.run_sync(lambda c: audit.verify(c))
        return JSONResponse(content=verdict.as_dict())

    @router.get("/patients/{patient_id}/export")
    async def export_patient(patient_id: str, request: Request) -> JSONResponse:
        who = await authorize(request, {"admin"})
        if isinstance(who, JSONResponse):
            return who
        if len(patient_id) > MAX_ID_CHARS:
            return error(404, "not_found", "No such patient.")
        actor = who.actor
        async with sessions() as session, session.begin():
            data = await session.run_sync(
                lambda s: privacy.export_patient(s, patient_id, actor=actor)
            )
        if data is None:
            return error(404, "not_found", "No such patient.")
        return JSONResponse(
            content=data,
            headers={
                "Content-Disposition": f'attachment; filename="patient-{patient_id}.json"',
                "Cache-Control": "no-store",
            },
        )

    @router.post("/patients/{patient_id}/erase")
    async def erase_patient(patient_id: str, request: Request) -> JSONResponse:
        who = await authorize(request, {"admin"})
        if isinstance(who, JSONResponse):
            return who
        try:
            body = EraseRequest.model_validate_json(await request.body())
        except ValidationError:
            return error(
                422,
                "confirmation_required",
                'Send {"confirm": "<patient id>"}: erasure cannot be undone.',
            )
        if body.confirm != patient_id:
            return error(
                422,
                "confirmation_mismatch",
                '"confirm" must repeat the patient id of the URL: erasure cannot be undone.',
            )
        if len(patient_id) > MAX_ID_CHARS:
            return error(404, "not_found", "No such patient.")
        actor = who.actor

        def erase() -> dict[str, int] | None:
            # Files, Rasa's tracker store and Redis are blocking work: a thread with its own
            # engine keeps it off the event loop. Erasure is rare, so the engine is not kept.
            engine = make_sync_engine(settings.database_url)
            try:
                with Session(engine) as session, session.begin():
                    return privacy.erase_patient(
                        session, patient_id, actor=actor, settings=settings
                    )
            finally:
                engine.dispose()

        try:
            counts = await asyncio.to_thread(erase)
        except privacy.ErasureFailed as exc:
            return error(503, "erasure_incomplete", str(exc))
        if counts is None:
            return error(404, "not_found", "No such patient.")
        return JSONResponse(content={"patient_id": patient_id, "erased": counts})

    return router
