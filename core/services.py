"""The platform's services built from settings: the one place that wires the orchestrator to
its store, safety layer, dialogue engine, knowledge base, channels' reply delivery and task
queue. The web app serves them; the Celery worker uses the same wiring to answer SMS."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.contract import Channel
from bot.orchestrator import (
    EscalationHook,
    FollowUpHook,
    Orchestrator,
    OrchestratorConfig,
    ReplyDelivery,
)
from bot.rasa_client import RasaClient
from bot.safety import RuleBasedSafety
from bot.safety_replies import Resources
from bot.store import ConversationStore, Deadlines
from channels.sms.delivery import sms_delivery
from channels.sms.webhook import SEND as SMS_SEND
from core import crypto
from core.db import make_async_engine, make_sessionmaker
from core.settings import Settings
from core.tasks import (
    CASE_EVENT,
    FLAG_FOR_FOLLOW_UP,
    INGEST_UPLOAD,
    NOTIFY_STAFF,
    RELAY_TO_STAFF,
    make_celery,
)
from escalation.cases import CaseConfig, CaseService
from rag.service import KnowledgeService

log = logging.getLogger(__name__)


@dataclass
class Services:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: ConversationStore
    http: httpx.AsyncClient
    rasa: RasaClient
    safety: RuleBasedSafety
    knowledge: KnowledgeService
    orchestrator: Orchestrator
    cases: CaseService
    redis: Any | None
    enqueue: Callable[..., Awaitable[None]]

    async def aclose(self) -> None:
        await self.http.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()


def resources(settings: Settings) -> Resources:
    return Resources(
        emergency_number=settings.emergency_number,
        crisis_line=settings.crisis_line,
        poison_control=settings.poison_control_number,
        domestic_violence_line=settings.domestic_violence_line,
    )


def build_services(settings: Settings, *, knowledge_cold_wait_s: float = 3.0) -> Services:
    # The database's encrypted columns use these settings' keys from now on in this process.
    crypto.use(settings)
    engine = make_async_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    store = ConversationStore(sessions)
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))
    rasa = RasaClient(
        base_url=settings.rasa_url,
        action_server_url=settings.action_server_url,
        timeout_s=settings.rasa_timeout_s,
        client=http,
    )
    safety = RuleBasedSafety()
    redis = None
    if settings.redis_url:
        import redis.asyncio as aioredis

        redis = aioredis.from_url(settings.redis_url)
    knowledge = KnowledgeService(settings, redis=redis, cold_wait_s=knowledge_cold_wait_s)
    enqueue = task_queue(settings)
    # Channels whose replies are stored fitted and queued for a sender (SMS): the dialogue's
    # replies and staff messages alike.
    deliveries: dict[Channel, ReplyDelivery] = {Channel.SMS: sms_delivery}
    orchestrator = Orchestrator(
        config=OrchestratorConfig(
            supported_languages=settings.supported_languages,
            default_language=settings.default_language,
            max_message_chars=settings.max_message_chars,
            rate_limit_per_sender=settings.rate_limit_per_sender,
            resources=resources(settings),
            deadlines=Deadlines(
                claim_s=dict(settings.escalation_supervisor_s),
                renotify_s=dict(settings.escalation_renotify_s),
            ),
        ),
        store=store,
        safety=safety,
        dialogue=rasa,
        rate_limit_storage=_rate_limit_storage(settings),
        on_follow_up=_follow_up_hook(enqueue),
        on_escalation=_escalation_hook(enqueue),
        knowledge=knowledge,
        delivery=deliveries,
        on_relay=_relay_hook(enqueue) if settings.mattermost_enabled else None,
    )
    cases = CaseService(
        sessions,
        config=CaseConfig(
            clinic_name=settings.clinic_name,
            sms_enabled=settings.sms_enabled,
        ),
        enqueue=enqueue,
        fitters=deliveries,
        sms_send_task=SMS_SEND,
        on_case_event=_case_event_hook(enqueue) if settings.mattermost_enabled else None,
        interrupt_dialogue=lambda conversation_id: rasa.interrupt(conversation_id=conversation_id),
    )
    return Services(
        engine=engine,
        sessions=sessions,
        store=store,
        http=http,
        rasa=rasa,
        safety=safety,
        knowledge=knowledge,
        orchestrator=orchestrator,
        cases=cases,
        redis=redis,
        enqueue=enqueue,
    )


def task_queue(settings: Settings) -> Callable[..., Awaitable[None]]:
    """Queue a Celery task by name without blocking the event loop (the broker client is
    synchronous). Raises when the broker cannot take it; callers decide what that means."""
    producer = make_celery(settings)

    async def enqueue(name: str, *args: Any, priority: int | None = None) -> None:
        options: dict[str, Any] = {} if priority is None else {"priority": priority}
        await asyncio.to_thread(producer.send_task, name, args=list(args), **options)

    return enqueue


def _rate_limit_storage(settings: Settings) -> Storage:
    if settings.redis_url:
        # limits defaults to the coredis client; redis-py is the one we install.
        return RedisStorage(
            settings.redis_url.replace("redis://", "async+redis://", 1), implementation="redispy"
        )
    return MemoryStorage()


def _follow_up_hook(enqueue: Callable[..., Awaitable[None]]) -> FollowUpHook:
    async def queue(conversation_id: str, message_id: str) -> None:
        try:
            await enqueue(FLAG_FOR_FOLLOW_UP, conversation_id, message_id)
        except Exception:
            # The message is already stored and flagged; the queue is a convenience on top.
            log.exception("could not queue the follow-up task")

    return queue


def _escalation_hook(enqueue: Callable[..., Awaitable[None]]) -> EscalationHook:
    async def queue(escalation_id: str, priority: str) -> None:
        try:
            await enqueue(
                NOTIFY_STAFF, escalation_id, priority, priority=9 if priority == "immediate" else 5
            )
        except Exception:
            # The case is stored; staff tools list open cases even if the queue is down.
            log.exception("could not queue the staff notification")

    return queue


def _relay_hook(enqueue: Callable[..., Awaitable[None]]) -> Callable[[list[str]], Awaitable[None]]:
    async def queue(message_ids: list[str]) -> None:
        await enqueue(RELAY_TO_STAFF, message_ids, priority=7)

    return queue


def _case_event_hook(
    enqueue: Callable[..., Awaitable[None]],
) -> Callable[[str, str, dict[str, Any]], Awaitable[None]]:
    async def queue(case_id: str, event: str, detail: dict[str, Any]) -> None:
        await enqueue(CASE_EVENT, case_id, event, detail)

    return queue


def ingest_hook(enqueue: Callable[..., Awaitable[None]]) -> Callable[[str], Awaitable[None]]:
    async def queue(job_id: str) -> None:
        await enqueue(INGEST_UPLOAD, job_id)

    return queue
