"""Knowledge-base answers in the running platform: a question goes through the safety layer and
real Rasa to action_answer_question and is answered from the index with citations and an audit
record; a document uploaded through the admin API is ingested by a real Celery worker process and
answers the next question, in the same web process."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from core.db import make_sync_engine
from core.orm import AuditEvent
from core.settings import Settings
from rag.index import KnowledgeIndex, SentenceTransformerEmbedder, open_client
from tests.conftest import API_TOKEN
from tests.support import celery_worker, running_app

pytestmark = pytest.mark.rasa
ROOT = Path(__file__).resolve().parents[1]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

PARKING_POLICY = """---
title: Bicycle parking
language: en
audience: patients
kind: clinic_faq
---
## Where can I leave my bicycle?

Bicycle racks stand by the east entrance, under the green canopy, next to the pharmacy window.
"""


def _audits(database_url: str, action: str) -> list[dict[str, Any]]:
    engine = make_sync_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            select(AuditEvent.detail).where(AuditEvent.action == action).order_by(AuditEvent.id)
        ).all()
    engine.dispose()
    return [row.detail for row in rows]


@pytest.fixture
def kb_settings(
    make_live_settings: Callable[..., Settings], sqlite_url: str, tmp_path: Path
) -> Settings:
    """An app whose DATA_DIR holds an index of the clinic-hours FAQ (both languages)."""
    library = tmp_path / "library"
    for language in ("en", "es"):
        (library / language).mkdir(parents=True)
        shutil.copy(ROOT / "kb" / "faq" / language / "clinic-hours.md", library / language)
    index = KnowledgeIndex(open_client(tmp_path, None), SentenceTransformerEmbedder())
    index.ingest(library)
    return make_live_settings(sqlite_url, admin_token=ADMIN_TOKEN, kb_preload=True)


async def _wait_for_knowledge(client: httpx.AsyncClient) -> None:
    """The models load in the background at start-up; until then questions are declined."""
    deadline = time.monotonic() + 120
    while True:
        response = await client.post(
            "/api/v1/messages",
            headers=AUTH,
            json={"sender_id": f"warm-{uuid.uuid4().hex[:6]}", "text": "what are your hours?"},
            timeout=60,
        )
        if "Sources:" in response.text or time.monotonic() > deadline:
            return
        await asyncio.sleep(1)


async def test_a_clinic_question_is_answered_with_sources_and_audited(
    kb_settings: Settings, sqlite_url: str
) -> None:
    sender = f"patient-{uuid.uuid4().hex[:8]}"
    async with running_app(kb_settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        await _wait_for_knowledge(client)
        response = await client.post(
            "/api/v1/messages",
            headers=AUTH,
            json={"sender_id": sender, "text": "what are your opening hours on saturday?"},
            timeout=60,
        )
        declined = await client.post(
            "/api/v1/messages",
            headers=AUTH,
            json={"sender_id": sender, "text": "who won the world cup in 2010?"},
            timeout=60,
        )
    assert response.status_code == 200, response.text
    reply = response.json()["replies"][0]
    assert "Saturday" in reply["text"] and "Sources:" in reply["text"]
    assert "Opening hours and holidays" in reply["text"] and not reply["buttons"]
    decline = declined.json()["replies"][0]
    assert decline["buttons"][0]["payload"] == "/request_human", declined.json()["replies"]
    audits = _audits(sqlite_url, "kb.answered")
    answered = [a for a in audits if a["declined"] is None][-1]
    assert answered["provider"] == "extractive" and answered["version"]
    assert answered["sources"] == ["library/en/clinic-hours.md"] or answered["sources"][0].endswith(
        "en/clinic-hours.md"
    )
    assert any(a["declined"] == "weak_retrieval" for a in audits)
    assert "opening hours" not in json.dumps(audits).lower()  # no patient words in the audit


async def test_an_uploaded_document_is_ingested_by_the_worker_and_answers_questions(
    kb_settings: Settings, sqlite_url: str, tmp_path: Path
) -> None:
    with celery_worker(kb_settings, tmp_path / "worker.log"):
        async with running_app(kb_settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
            # The web process answers first, so its index is open before the worker writes.
            await _wait_for_knowledge(client)
            question = "is there bicycle parking at the clinic?"
            before = await client.post(
                "/api/v1/messages",
                headers=AUTH,
                json={"sender_id": f"patient-{uuid.uuid4().hex[:8]}", "text": question},
                timeout=60,
            )
            assert "bicycle racks" not in before.text.lower()

            refused = await client.post(
                "/admin/api/v1/kb/documents",
                files={"file": ("bikes.md", PARKING_POLICY.encode(), "text/markdown")},
            )
            assert refused.status_code == 401
            wrong_type = await client.post(
                "/admin/api/v1/kb/documents",
                headers=ADMIN,
                files={"file": ("tool.exe", b"MZ", "application/octet-stream")},
            )
            assert wrong_type.status_code == 415
            uploaded = await client.post(
                "/admin/api/v1/kb/documents",
                headers=ADMIN,
                files={"file": ("../../bikes.md", PARKING_POLICY.encode(), "text/markdown")},
            )
            assert uploaded.status_code == 202, uploaded.text
            job = uploaded.json()
            assert job["status"] == "queued" and job["filename"] == "bikes.md"
            deadline = time.monotonic() + 180
            while job["status"] in ("queued", "running"):
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
                await asyncio.sleep(1)
                job = (await client.get(job["url"], headers=ADMIN)).json()
            assert job["status"] == "done", job
            assert job["report"]["added"] == 1 and job["report"]["chunks"] >= 1

            after = await client.post(
                "/api/v1/messages",
                headers=AUTH,
                json={"sender_id": f"patient-{uuid.uuid4().hex[:8]}", "text": question},
                timeout=60,
            )
        reply = after.json()["replies"][0]["text"]
        assert "Bicycle racks" in reply and "Bicycle parking" in reply
        assert [a["job_id"] for a in _audits(sqlite_url, "kb.ingested")] == [job["id"]]


async def test_the_web_chat_sees_the_answer_written_as_drafts_then_the_stored_reply(
    kb_settings: Settings,
) -> None:
    from tests.test_web_channel import ChatClient

    async with running_app(kb_settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        await _wait_for_knowledge(client)
        tab = ChatClient()
        drafts: list[dict[str, Any]] = []
        tab.sio.on("draft", lambda d: drafts.append(d))
        await tab.connect(url)
        ack = await tab.say("what time do you open on saturdays?", client_id="question-1")
        await asyncio.sleep(0.5)
        await tab.sio.disconnect()
    assert ack["ok"]
    pieces = [d["delta"] for d in drafts if d["reply_to"] == "question-1" and "delta" in d]
    reply = [m for m in tab.messages if m["sender"] == "bot"][-1]
    assert pieces and "Sources:" in reply["text"]
    assert reply["text"].startswith("".join(pieces).strip())  # the draft was the answer's body
