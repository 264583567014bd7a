"""The platform's Prometheus metrics: every `clinic_*` series is defined here, so a name, its
labels and its meaning are found in one place (docs/OBSERVABILITY.md lists them).

Label values come only from small fixed sets (channel, stage, safety level and rule category,
priority, provider name, error kind): never message text, addresses, ids or anything a patient
typed, so a scrape holds no patient data and the number of series stays bounded.

Several processes (`uvicorn --workers N`, Celery's prefork children) each count in their own
memory unless PROMETHEUS_MULTIPROC_DIR names a folder they share: then every process writes its
values there and one scrape, answered by any of them, sums them all (prometheus_client's
multiprocess mode, chosen when the library is imported). The folder must be emptied before the
processes start, or a restart's counts add to the previous run's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.orm import Message

log = logging.getLogger(__name__)

__all__ = ["CONTENT_TYPE_LATEST"]

# From a safety-layer pass (milliseconds) to a slow model answer (the router's 20 s timeout).
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)
# What a scrape may spend on each queue-depth lookup before it leaves that series out.
QUEUE_DEPTH_TIMEOUT_S = 1.0
# The Celery queue every task goes to (core/tasks.py sets no routes).
CELERY_QUEUE = "celery"
# kombu's Redis transport keeps one list per priority step: "celery", "celery\x06\x163", ...
_KOMBU_PRIORITY_SEP = "\x06\x16"
_KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)

MESSAGES = Counter(
    "clinic_messages",
    "Patient messages stored: direction=in (new inbound, duplicates not counted) or out "
    "(assistant, system and staff replies stored for the patient).",
    ["channel", "direction"],
)
STAGE_SECONDS = Histogram(
    "clinic_stage_duration_seconds",
    "Time spent per stage: safety (safety layer), rasa (dialogue round trip), retrieval "
    "(knowledge-base search), llm (the router, fallbacks included), turn (a whole turn).",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
SAFETY_EVENTS = Counter(
    "clinic_safety_events",
    "Messages the safety layer flagged, one per message: level (emergency, crisis) and the "
    "first rule category recognised.",
    ["level", "category"],
)
TRIAGE_DISPOSITIONS = Counter(
    "clinic_triage_dispositions",
    "Triage decisions by disposition; source=dialogue (the triage form) or api (/api/v1/triage).",
    ["disposition", "source"],
)
ESCALATIONS_OPENED = Counter(
    "clinic_escalations_opened",
    "Cases opened for staff, or raised to a higher priority, by priority and reason.",
    ["priority", "reason"],
)
ESCALATIONS_CLAIMED = Counter(
    "clinic_escalations_claimed",
    "Cases claimed by staff; in_time=false when the claim came after the case's deadline.",
    ["priority", "in_time"],
)
ESCALATION_DEADLINES_MISSED = Counter(
    "clinic_escalation_deadlines_missed",
    "Cases nobody claimed before their deadline, raised to the supervisors (Celery worker).",
    ["priority"],
)
LLM_CALLS = Counter(
    "clinic_llm_calls",
    "Model calls (each attempt) by provider and outcome: ok, timeout, rate_limited, server, "
    "unavailable, bad_request.",
    ["provider", "outcome"],
)
LLM_FALLBACKS = Counter(
    "clinic_llm_fallbacks",
    "A provider passed over (to=next_provider, or to=extractive when it was the last model) "
    "and why: an error kind, cooling_down, out_of_time; ungrounded: a model's answer failed the "
    "grounding check and the extractive answer replaced it.",
    ["to", "reason"],
)
LLM_COOLDOWNS = Counter(
    "clinic_llm_cooldowns",
    "Providers benched for a while after failing, by provider and the error kind.",
    ["provider", "reason"],
)
DEPENDENCY_FAILURES = Counter(
    "clinic_dependency_failures",
    "A dependency failed and what the platform did instead: rasa/fallback_reply, "
    "knowledge_base/declined, mattermost/retry|refused|skipped|reconnect, twilio/retry|failed.",
    ["dependency", "outcome"],
)
TURNS_IN_PROGRESS = Gauge(
    "clinic_turns_in_progress",
    "Turns being answered right now, over all live processes.",
    multiprocess_mode="livesum",
)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


@contextmanager
def timed(stage: str) -> Iterator[None]:
    """Observe the block's duration in `clinic_stage_duration_seconds{stage}`, error or not."""
    started = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(stage).observe(time.perf_counter() - started)


def count_message(channel: str, direction: str, amount: int = 1) -> None:
    if amount > 0:
        MESSAGES.labels(channel, direction).inc(amount)


def count_safety_event(level: str, categories: Iterable[str]) -> None:
    if level in ("emergency", "crisis"):
        SAFETY_EVENTS.labels(level, next(iter(categories), "other")).inc()


def count_dependency_failure(dependency: str, outcome: str) -> None:
    DEPENDENCY_FAILURES.labels(dependency, outcome).inc()


# --- scrape-time gauges ----------------------------------------------------------------------


class QueueDepth:
    """Backlogs read when Prometheus scrapes, from the web process: the Celery queue's length
    on a Redis broker (every worker's backlog, wherever the workers run) and the outbound
    messages still waiting for their sender. A lookup that fails or is slow is left out of that
    scrape rather than delaying or failing the others."""

    def __init__(self, *, engine: AsyncEngine, broker_url: str) -> None:
        self._engine = engine
        self._broker_url = broker_url if broker_url.startswith(("redis://", "rediss://")) else None
        self._redis: Any | None = None

    async def families(self) -> list[Metric]:
        outcomes = await asyncio.gather(
            _within(self._celery_queue()), _within(self._outbound_pending()), return_exceptions=True
        )
        found: list[Metric] = []
        for source, outcome in zip(("celery_queue", "outbound_pending"), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.warning(
                    "queue depth not read",
                    extra={"source": source, "error": type(outcome).__name__},
                )
            elif outcome is not None:
                found.append(outcome)
        return found

    async def _celery_queue(self) -> Metric | None:
        if self._broker_url is None:
            return None  # the embedded SQLite broker: nothing worth watching
        if self._redis is None:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(
                self._broker_url, socket_timeout=QUEUE_DEPTH_TIMEOUT_S, socket_connect_timeout=1.0
            )
        keys = [
            CELERY_QUEUE + (f"{_KOMBU_PRIORITY_SEP}{step}" if step else "")
            for step in _KOMBU_PRIORITY_STEPS
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.llen(key)
            lengths = await pipe.execute()
        family = GaugeMetricFamily(
            "clinic_queue_depth",
            "Tasks waiting in the Celery queue on the Redis broker (all priorities).",
            labels=["queue"],
        )
        family.add_metric([CELERY_QUEUE], float(sum(int(n) for n in lengths)))
        return family

    async def _outbound_pending(self) -> Metric:
        async with self._engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(Message.channel, func.count())
                    .where(Message.direction == "outbound")
                    .where(Message.status == "queued")
                    .group_by(Message.channel)
                )
            ).all()
        family = GaugeMetricFamily(
            "clinic_outbound_pending",
            "Outbound messages stored and waiting for their sender (SMS replies queued for "
            "Twilio), by channel.",
            labels=["channel"],
        )
        counts = {str(channel): int(count) for channel, count in rows}
        for channel in sorted({"sms", *counts}):
            family.add_metric([channel], float(counts.get(channel, 0)))
        return family

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


async def _within(lookup: Awaitable[Metric | None]) -> Metric | None:
    return await asyncio.wait_for(lookup, timeout=QUEUE_DEPTH_TIMEOUT_S)


class _Fixed:
    """Metric families computed before the scrape, served as a collector."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def exposition(extra: list[Metric] | None = None) -> bytes:
    """The scrape's body in Prometheus text format: this process's metrics, or every process's
    in multiprocess mode, plus `extra` (families computed at scrape time)."""
    registry = CollectorRegistry()
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    if extra:
        scrape = CollectorRegistry()
        scrape.register(_Fixed(extra))
        body += generate_latest(scrape)
    return body


def process_exiting(pid: int | None = None) -> None:
    """Drop an exiting process's live gauges from the shared folder (its counters stay)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]


def serve_worker_metrics(port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 (container)
    """A Celery worker's own /metrics on `port`: the web app cannot read the worker's counts
    when they do not share a host (separate containers each have their own process ids, so a
    shared folder would mix them up)."""
    registry: CollectorRegistry = REGISTRY
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=addr, registry=registry)
    log.info("worker metrics served", extra={"port": port})


QueueDepthSource = Callable[[], Awaitable[list[Metric]]]
