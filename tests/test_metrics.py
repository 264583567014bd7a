"""Prometheus /metrics and per-dependency readiness in the running platform: real HTTP server,
real Rasa, real databases and Redis; several uvicorn worker processes summed in one scrape."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from bot.safety import RuleBasedSafety
from bot.text import normalize_for_understanding
from core import metrics, migrate
from core.settings import Settings
from core.tasks import CHECK_UNCLAIMED, make_celery
from models.anthropic_provider import AnthropicProvider
from models.base import Prompt, Source
from models.extractive import ExtractiveProvider
from models.openai_provider import OpenAIProvider
from models.router import Router, RouterConfig
from rag.index import KnowledgeIndex, SentenceTransformerEmbedder, open_client
from tests.conftest import API_TOKEN
from tests.fakes.llm_servers import Fail, FakeAnthropic, FakeOpenAI
from tests.fakes.mattermost_server import FakeMattermost
from tests.processes import RedisServer, redis_or_skip, running, settings_env
from tests.support import ROOT, celery_worker, free_port, http_ok, running_app, wait_until

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
METRICS_TOKEN = "metrics-token-0123456789abcdef"
ADMIN_TOKEN = "test-admin-token-0123456789"
QUESTION = "what are your opening hours on saturday?"
EMERGENCY = "my dad is 70, crushing chest pain going into his jaw and he's sweating"
# Patient data planted in the messages: none of it may reach a scrape.
PLANTED_NAME = "Zebulon Quartermaine"
PLANTED_PHONE = "415-555-0187"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value, 0 when the series does not exist yet (a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Summed over every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def scrape(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> str:
    response = await client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def say(client: httpx.AsyncClient, text: str) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/messages",
        headers=AUTH,
        json={"sender_id": f"patient-{uuid.uuid4().hex[:8]}", "text": text},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def kb_settings(
    make_live_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> Settings:
    """An app on real Rasa whose DATA_DIR holds an index of the clinic-hours FAQ."""
    library = tmp_path / "library"
    for language in ("en", "es"):
        (library / language).mkdir(parents=True)
        shutil.copy(ROOT / "kb" / "faq" / language / "clinic-hours.md", library / language)
    KnowledgeIndex(open_client(tmp_path, None), SentenceTransformerEmbedder()).ingest(library)
    return make_live_settings(database_url, kb_preload=True)


async def _wait_for_knowledge(client: httpx.AsyncClient) -> None:
    """The models load in the background at start-up; until then questions are declined."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if "Sources:" in str(await say(client, QUESTION)):
            return
        await asyncio.sleep(1)
    raise TimeoutError("the knowledge base did not load within 120 s")


@pytest.mark.rasa
async def test_a_normal_message_an_emergency_and_a_question_are_counted_without_patient_data(
    kb_settings: Settings,
) -> None:
    expected_category = (
        RuleBasedSafety()
        .assess(normalize_for_understanding(EMERGENCY), language="en")
        .categories[0]
    )
    async with running_app(kb_settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        await _wait_for_knowledge(client)
        before = parse(await scrape(client))
        normal = await say(
            client, f"hello, I am {PLANTED_NAME} and my phone number is {PLANTED_PHONE}"
        )
        emergency = await say(client, EMERGENCY)
        question = await say(client, QUESTION)
        text = await scrape(client)
    after = parse(text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    def delta_all(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert emergency["state"]["safety"]["level"] == "emergency"
    assert "Sources:" in question["replies"][0]["text"]
    replies = sum(len(turn["replies"]) for turn in (normal, emergency, question))
    assert delta("clinic_messages_total", channel="api", direction="in") == 3
    assert delta("clinic_messages_total", channel="api", direction="out") == replies
    assert delta_all("clinic_messages_total", channel="web") == 0

    assert delta_all("clinic_safety_events_total") == 1
    assert delta("clinic_safety_events_total", level="emergency", category=expected_category) == 1
    assert delta_all("clinic_escalations_opened_total") == 1
    assert delta("clinic_escalations_opened_total", priority="immediate", reason="emergency") == 1

    # Every turn is timed and passes the safety layer; the emergency never reaches Rasa; only
    # the question searches the knowledge base and goes through the LLM router, where the
    # extractive answerer (no model configured) answers it.
    stages = {"turn": 3, "safety": 3, "rasa": 2, "retrieval": 1, "llm": 1}
    for stage, count in stages.items():
        assert delta("clinic_stage_duration_seconds_count", stage=stage) == count, stage
        assert delta("clinic_stage_duration_seconds_sum", stage=stage) > 0, stage
        assert delta("clinic_stage_duration_seconds_bucket", stage=stage, le="+Inf") == count
    assert delta("clinic_llm_calls_total", provider="extractive", outcome="ok") == 1
    assert delta_all("clinic_llm_fallbacks_total") == 0
    assert delta_all("clinic_dependency_failures_total") == 0
    assert value(after, "clinic_turns_in_progress") == 0
    # Scrape-time gauges: the embedded SQLite broker has no queue to measure.
    assert value(after, "clinic_outbound_pending", channel="sms") == 0
    assert not total(after, "clinic_queue_depth")

    for planted in (PLANTED_NAME, "Zebulon", PLANTED_PHONE, "5550187", "chest pain", "patient-"):
        assert planted not in text


async def test_the_metrics_token_is_required_when_set(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    settings = make_settings(database_url=sqlite_url, metrics_token=METRICS_TOKEN)
    async with running_app(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        missing = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        basic = await client.get("/metrics", headers={"Authorization": f"Basic {METRICS_TOKEN}"})
        right = await scrape(client, {"Authorization": f"Bearer {METRICS_TOKEN}"})
        health = await client.get("/healthz")
    for refused in (missing, wrong, basic):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "METRICS_TOKEN" in refused.json()["error"]["message"]
        assert "clinic_" not in refused.text
    assert "# TYPE clinic_messages_total counter" in right
    assert "# TYPE clinic_stage_duration_seconds histogram" in right
    assert health.status_code == 200  # the token guards /metrics only


async def test_rasa_down_counts_a_dependency_failure_and_the_fallback_reply_still_goes_out(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    settings = make_settings(database_url=sqlite_url)  # Rasa at a closed port
    async with running_app(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        before = parse(await scrape(client))
        turn = await say(client, "can I book an appointment for tuesday?")
        after = parse(await scrape(client))
    failures = "clinic_dependency_failures_total"
    rasa_down = {"dependency": "rasa", "outcome": "fallback_reply"}
    assert value(after, failures, **rasa_down) - value(before, failures, **rasa_down) == 1
    out = {"channel": "api", "direction": "out"}
    assert (
        value(after, "clinic_messages_total", **out) - value(before, "clinic_messages_total", **out)
        == len(turn["replies"])
        > 0
    )
    assert (
        value(after, "clinic_stage_duration_seconds_count", stage="rasa")
        - value(before, "clinic_stage_duration_seconds_count", stage="rasa")
        == 1
    )


async def test_model_failures_fallbacks_and_cooldowns_are_counted_per_provider() -> None:
    """The router against fake OpenAI and Anthropic servers speaking their wire formats."""
    prompt = Prompt(
        system="Answer from the sources only.",
        question="When are flu shots given?",
        sources=(Source(1, "Flu shots", "kb/faq/en/vaccines.md", "Given every autumn."),),
    )
    with (
        FakeOpenAI(default_text="Every autumn [1].") as openai,
        FakeAnthropic(default_text="Autumn [1].") as anthropic,
    ):
        router = Router(
            [
                OpenAIProvider(api_key="sk-test", model="gpt-4o-mini", base_url=openai.base_url),
                AnthropicProvider(
                    api_key="sk-ant-test", model="claude-haiku-4-5", base_url=anthropic.base_url
                ),
            ],
            ExtractiveProvider(),
            config=RouterConfig(timeout_s=5.0, backoff_initial_s=0.01, max_retry_wait_s=0.5),
        )
        before = parse(metrics.exposition().decode())
        # OpenAI fails twice (5xx) and is cooled down; Anthropic answers.
        openai.script(Fail(500), Fail(500))
        first = await router.answer(prompt)
        # OpenAI is cooling down; Anthropic refuses the request; the extractive answer comes.
        anthropic.script(Fail(400))
        second = await router.answer(prompt)
        after = parse(metrics.exposition().decode())
    assert (first.provider, second.provider) == ("anthropic", "extractive")

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    calls = "clinic_llm_calls_total"
    assert delta(calls, provider="openai", outcome="server") == 2
    assert delta(calls, provider="anthropic", outcome="ok") == 1
    assert delta(calls, provider="anthropic", outcome="bad_request") == 1
    assert delta(calls, provider="extractive", outcome="ok") == 1
    assert total(after, calls) - total(before, calls) == 5
    fallbacks = "clinic_llm_fallbacks_total"
    assert delta(fallbacks, to="next_provider", reason="server") == 1
    assert delta(fallbacks, to="next_provider", reason="cooling_down") == 1
    assert delta(fallbacks, to="extractive", reason="bad_request") == 1
    assert total(after, fallbacks) - total(before, fallbacks) == 3
    cooldowns = "clinic_llm_cooldowns_total"
    assert delta(cooldowns, provider="openai", reason="server") == 1
    assert delta(cooldowns, provider="anthropic", reason="bad_request") == 1
    assert delta("clinic_stage_duration_seconds_count", stage="llm") == 2


# --- several worker processes ------------------------------------------------------------


def _per_process(folder: Path, name: str, **labels: str) -> dict[int, float]:
    """Each worker process's own count, read from its file alone."""
    counts: dict[int, float] = {}
    for path in folder.glob("counter_*.db"):
        alone = folder.parent / f"alone-{path.stem}"
        alone.mkdir(exist_ok=True)
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        samples: Samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in registry.collect()
            for s in family.samples
        }
        counts[int(path.stem.split("_")[-1])] = value(samples, name, **labels)
        shutil.rmtree(alone)
    return counts


@pytest.fixture
def two_workers(
    make_live_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    """`uvicorn --workers 2` sharing PROMETHEUS_MULTIPROC_DIR: (base URL, metrics folder)."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    port = free_port()
    settings = make_live_settings(database_url, auto_migrate=False)
    env = {
        **settings_env(settings),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "HF_HUB_OFFLINE": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
    }
    log_path = tmp_path / "web.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "webapp.main:app", "--workers", "2", "--host",
             "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        # Each worker creates its live-gauge file when it imports the app.
        wait_until(
            lambda: (
                len(list(folder.glob("gauge_livesum_*.db"))) == 2
                and http_ok(f"http://127.0.0.1:{port}/healthz")
            ),
            timeout=180,
            what=f"two web workers (log: {log_path})",
        )
        yield f"http://127.0.0.1:{port}", folder
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.rasa
async def test_two_worker_processes_are_summed_in_one_scrape(
    two_workers: tuple[str, Path],
) -> None:
    url, folder = two_workers
    sent = replies = 0
    # Fresh connections let the kernel hand requests to either worker; send until both served.
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=fresh, timeout=60) as client:
        for _ in range(10):
            turns = await asyncio.gather(*(say(client, "hello there") for _ in range(6)))
            sent += len(turns)
            replies += sum(len(t["replies"]) for t in turns)
            served = _per_process(folder, "clinic_messages_total", channel="api", direction="in")
            if sum(1 for n in served.values() if n > 0) >= 2:
                break
        scrapes = [parse(await scrape(client)) for _ in range(6)]
    assert len([n for n in served.values() if n > 0]) == 2, served
    assert sum(served.values()) == sent
    # Whichever worker answers the scrape, it reports both workers' counts.
    for samples in scrapes:
        assert value(samples, "clinic_messages_total", channel="api", direction="in") == sent
        assert value(samples, "clinic_messages_total", channel="api", direction="out") == replies
        assert value(samples, "clinic_stage_duration_seconds_count", stage="turn") == sent
        assert value(samples, "clinic_turns_in_progress") == 0


# --- escalations: the web app opens and claims cases, the worker raises missed deadlines ---


@pytest.mark.rasa
async def test_a_missed_deadline_is_counted_by_the_worker_and_the_late_claim_by_the_web_app(
    make_live_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # A database of its own: cases other tests left open would be overdue too.
    database_url = f"sqlite:///{tmp_path / 'clinic.db'}"
    migrate.upgrade(database_url)
    settings = make_live_settings(
        database_url,
        admin_token=ADMIN_TOKEN,
        escalation_supervisor_s={"immediate": 1, "high": 1, "normal": 1},
    )
    port = free_port()
    worker_metrics = f"http://127.0.0.1:{port}/metrics"
    extra_env = {"METRICS_WORKER_PORT": str(port)}
    staff = {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Staff-Name": "Dana Reyes"}
    with celery_worker(settings, tmp_path / "worker.log", extra_env=extra_env):
        wait_until(lambda: http_ok(worker_metrics), timeout=120, what="the worker's /metrics")
        async with running_app(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
            before = parse(await scrape(client))
            turn = await say(client, EMERGENCY)
            await asyncio.sleep(1.5)  # past the case's 1 s claim deadline
            make_celery(settings).send_task(CHECK_UNCLAIMED)

            def raised() -> bool:
                samples = parse(httpx.get(worker_metrics, timeout=5).text)
                return bool(total(samples, "clinic_escalation_deadlines_missed_total"))

            wait_until(raised, timeout=60, what="the worker to raise the case to supervisors")
            worker = parse(httpx.get(worker_metrics, timeout=5).text)
            listed = (await client.get("/admin/api/v1/cases", headers=staff)).json()["cases"]
            (case,) = [c for c in listed if c["conversation_id"] == turn["conversation_id"]]
            claim = await client.post(f"/admin/api/v1/cases/{case['id']}/claim", headers=staff)
            after = parse(await scrape(client))
    assert claim.status_code == 200, claim.text
    assert value(worker, "clinic_escalation_deadlines_missed_total", priority="immediate") == 1
    assert total(worker, "clinic_escalation_deadlines_missed_total") == 1
    claimed = "clinic_escalations_claimed_total"
    assert (
        value(after, claimed, priority="immediate", in_time="false")
        - value(before, claimed, priority="immediate", in_time="false")
        == 1
    )
    assert total(after, claimed) - total(before, claimed) == 1


# --- readiness ---------------------------------------------------------------------------


@pytest.fixture
def real_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own: the queue it measures is nobody else's."""
    redis_or_skip()
    server = RedisServer(tmp_path / "redis")
    with running(server):
        yield server.url


async def _ready(url: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/readyz", timeout=10)
    checks: dict[str, Any] = response.json()["checks"]
    for name, check in checks.items():
        assert check["latency_ms"] >= 0, name
    return response.status_code, checks


@pytest.mark.rasa
async def test_redis_down_makes_the_app_not_ready_and_says_which_dependency(
    make_live_settings: Callable[..., Settings], database_url: str
) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_live_settings(database_url, redis_url=closed)
    async with running_app(settings) as (url, _):
        status, checks = await _ready(url)
    assert status == 503
    assert {name: check["ok"] for name, check in checks.items()} == {
        "database": True,
        "rasa": True,
        "action_server": True,
        "celery_broker": True,
        "redis": False,
    }
    assert checks["redis"]["error"]


@pytest.mark.rasa
async def test_every_configured_dependency_is_checked_and_the_celery_queue_measured(
    make_live_settings: Callable[..., Settings], database_url: str, real_redis: str
) -> None:
    settings = make_live_settings(database_url, redis_url=real_redis, celery_broker_url=real_redis)
    # Three tasks nobody consumes, two of them at the priorities the platform uses: kombu keeps
    # each priority in a list of its own, and the depth is their sum.
    producer = make_celery(settings)
    for priority in (None, 9, 5):
        producer.send_task("metrics.test.unconsumed", args=[], priority=priority)
    with FakeMattermost(team_name="clinic") as mattermost:
        live = make_live_settings(
            database_url,
            redis_url=real_redis,
            celery_broker_url=real_redis,
            mattermost_url=mattermost.base_url,
            mattermost_bot_token=mattermost.bot_token,
        )
        async with running_app(live) as (url, _):
            status, checks = await _ready(url)
            mattermost.__exit__(None, None, None)
            down_status, down_checks = await _ready(url)
            async with httpx.AsyncClient(base_url=url) as client:
                samples = parse(await scrape(client))
    assert status == 200, checks
    assert {name: check["ok"] for name, check in checks.items()} == {
        "database": True,
        "rasa": True,
        "action_server": True,
        "celery_broker": True,
        "redis": True,
        "mattermost": True,
    }
    assert checks["celery_broker"]["transport"] == "redis"
    assert down_status == 503
    assert {n for n, c in down_checks.items() if not c["ok"]} == {"mattermost"}
    assert value(samples, "clinic_queue_depth", queue="celery") == 3
