"""`make bench-sms`: the SMS channel under load, beside the app's cheapest endpoint, in one run.

Starts a local fake of Twilio's REST API (tests/fakes/twilio_server.py), a real Rasa server and
action server, the platform (uvicorn, one process) and a Celery worker on Redis, all on a fresh
SQLite database in a temporary folder. Then:

1. Warm-up: a few texts answered end to end (the worker builds its services on the first one).
2. End to end, at the design load (default 3 texts/s for 15 s, open loop): each text comes from a
   new number, and its latency is from the webhook's scheduled send time to the moment the fake
   Twilio receives the worker's create for that number (polled every 10 ms): acknowledgement,
   queue, worker, Rasa, and the official twilio client included.
3. Acknowledgement, at 50 webhooks/s for 20 s (open loop: requests go out on a fixed schedule
   whatever the server does, and latency counts from the scheduled time, so a stalled server or
   a late generator shows in the figures instead of slowing the load). Signed incoming-message
   webhooks, each with a new MessageSid, from 200 patient numbers, while the worker answers what
   it can. The baseline is the same generator at the same rate against `GET /healthz`, in
   alternating slices (2 s webhooks, 2 s baseline, ...) so both see the same machine; the ratio of
   the two p95s is the figure to compare across runs on a noisy machine.

The end-to-end phase runs first so that it meets an idle worker: at 50/s the worker (one process,
Rasa behind it) cannot keep up, and the ack phase leaves a backlog, discarded at the end.

Where the ack time goes: the app's CPU per request (its CPU time in the webhook slices over the
webhooks, the same for the baseline slices) and the cores each process used during the ack
phase, "others" being everything else on the machine, read from /proc. `--worker-paused` stops
the worker taking tasks during the ack phase, to see the webhook without the worker and Rasa
competing for the CPU and the database; `--redis-limits` keeps the rate limits in Redis, as
production does (REDIS_URL). `rate_per_s` counts acknowledged webhooks (200, empty TwiML) per
second of webhook slices; lateness, the server's or the generator's, shows in the latencies.

Needs Redis on 127.0.0.1:6379 (database 7 is flushed). Progress on stderr; a short summary, then
one JSON line last on stdout. Goal: ack p95 under 50 ms at 50 webhooks/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlencode

import aiohttp
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import migrate  # noqa: E402
from tests.fakes.twilio_server import FakeTwilio, inbound_sms_params, sign  # noqa: E402
from tests.support import RasaStack, free_port, http_ok  # noqa: E402

CLINIC_NUMBER = "+15017122661"
WEBHOOK_PATH = "/channels/sms/twilio"
BASELINE_PATH = "/healthz"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
GOAL_ACK_P95_MS = 50.0
GOAL_RATE_PER_S = 50.0
# Texts the dialogue answers itself (no knowledge-base question, no keyword such as STOP/HELP).
TEXTS = [
    "hello",
    "hi there",
    "thanks",
    "I want to talk to a person",
    "I have had a cough for three days",
    "hola",
    "gracias",
    "bye",
]


def progress(text: str) -> None:
    print(f">> {text}", file=sys.stderr, flush=True)


def percentiles(values_ms: list[float]) -> dict[str, float | None]:
    if len(values_ms) < 2:
        only = round(values_ms[0], 1) if values_ms else None
        return {"p50_ms": only, "p95_ms": only, "p99_ms": only}
    cuts = statistics.quantiles(values_ms, n=100, method="inclusive")
    return {
        "p50_ms": round(cuts[49], 1),
        "p95_ms": round(cuts[94], 1),
        "p99_ms": round(cuts[98], 1),
    }


# --- the processes ---------------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], bool],
    *,
    process: subprocess.Popen[bytes],
    log: Path,
    timeout: float,
    what: str,
) -> None:
    """Like tests.support.wait_until, but gives up at once (with the log's tail) if the process
    it waits for has died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{what} exited with status {process.returncode}:\n{tail}")
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (log: {log})")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class CpuMeter:
    """CPU time used by each process of the bench, and by everything else on the machine, from
    /proc (Linux only; elsewhere it reads nothing and the figures are left out)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def read(self) -> dict[str, float]:
        """Seconds of CPU so far: per named process, "machine" (all CPUs busy) and "steal"."""
        seconds: dict[str, float] = {}
        try:
            for name, pid in self.pids.items():
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                seconds[name] = (int(fields[11]) + int(fields[12])) / self.tick
            cpu = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return {}
        user, nice, system, _idle, _iowait, irq, softirq, steal = cpu[:8]
        seconds["machine"] = (user + nice + system + irq + softirq) / self.tick
        seconds["steal"] = steal / self.tick
        return seconds

    @staticmethod
    def cores(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, float]:
        """Average cores each used between two readings; "others" is the rest of the machine
        (other people's work on a shared machine shows there)."""
        if not before or not after or wall_s <= 0:
            return {}
        used = {k: (after[k] - before[k]) / wall_s for k in after if k in before}
        ours = sum(v for k, v in used.items() if k not in ("machine", "steal"))
        used["others"] = max(0.0, used.pop("machine") - ours)
        return {k: round(v, 2) for k, v in used.items()}


def platform_env(
    workdir: Path, stack: RasaStack, fake: FakeTwilio, port: int, broker: str, redis_limits: bool
) -> dict[str, str]:
    """One environment for the app and the worker: what production would set, pointed at the
    fake Twilio, the bench's Rasa, a fresh SQLite file and Redis."""
    return {
        **os.environ,
        "DATA_DIR": str(workdir),
        "DATABASE_URL": f"sqlite:///{workdir / 'clinic.db'}",
        # Set, even empty, so a developer's .env cannot point the bench elsewhere. With
        # --redis-limits the rate limits live in Redis, as in production.
        "REDIS_URL": broker if redis_limits else "",
        "CELERY_BROKER_URL": broker,
        "AUTO_MIGRATE": "false",  # migrated by the bench before anything starts
        "RASA_URL": stack.rasa_url,
        "ACTION_SERVER_URL": stack.action_url,
        "RATE_LIMIT_PER_SENDER": "100000/minute",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "TWILIO_ACCOUNT_SID": fake.account_sid,
        "TWILIO_AUTH_TOKEN": fake.auth_token,
        "TWILIO_FROM_NUMBER": CLINIC_NUMBER,
        "TWILIO_API_BASE_URL": fake.base_url,
        "KB_PRELOAD": "false",
        "HF_HUB_OFFLINE": "1",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }


@contextmanager
def running_platform(workdir: Path, env: dict[str, str], port: int) -> Iterator[tuple[str, int]]:
    log = workdir / "platform.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(ROOT / ".venv" / "bin" / "uvicorn"),
                "webapp.main:app",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: http_ok(f"{url}/readyz"),
            process=process,
            log=log,
            timeout=120,
            what="the platform",
        )
        yield url, process.pid
    finally:
        stop_process(process, 20)


@contextmanager
def running_worker(workdir: Path, env: dict[str, str]) -> Iterator[int]:
    log = workdir / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "core.tasks", "worker", "--pool", "solo",
             "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(
            lambda: b" ready." in log.read_bytes(),
            process=process,
            log=log,
            timeout=120,
            what="the Celery worker",
        )
        yield process.pid
    finally:
        # Warm shutdown: the task in hand finishes (at most one Rasa round trip).
        stop_process(process, 30)


@contextmanager
def running_rasa(workdir: Path) -> Iterator[RasaStack]:
    stack = RasaStack(workdir)
    try:
        stack.start_actions()
        stack.start_rasa()
        yield stack
    finally:
        stack.stop_all()


# --- the load ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    kind: str  # "ack", "baseline", "e2e", "warm-up"
    at: float  # seconds after the phase's start
    method: str
    path: str
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    to: str = ""  # the patient's number, for a webhook
    sid: str = ""  # its MessageSid


@dataclass
class Sample:
    planned: Planned
    scheduled: float  # perf_counter
    sent: float
    done: float
    status: int  # 0: no answer (connection error, timeout)
    ok: bool

    @property
    def latency_ms(self) -> float:
        return (self.done - self.scheduled) * 1000

    @property
    def lag_ms(self) -> float:
        return (self.sent - self.scheduled) * 1000


class Load:
    """Builds signed webhooks and sends planned requests on schedule (open loop)."""

    def __init__(self, url: str, fake: FakeTwilio, client: aiohttp.ClientSession) -> None:
        self.url = url
        self.fake = fake
        self.client = client
        self._sids = itertools.count()

    def webhook(self, kind: str, at: float, sender: str, body: str) -> Planned:
        message_sid = f"SM{next(self._sids):032x}"
        params = inbound_sms_params(
            account_sid=self.fake.account_sid,
            from_=sender,
            to=CLINIC_NUMBER,
            body=body,
            message_sid=message_sid,
        )
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": sign(self.fake.auth_token, self.url + WEBHOOK_PATH, params),
            "User-Agent": "TwilioProxy/1.1",
        }
        content = urlencode(params).encode()
        return Planned(kind, at, "POST", WEBHOOK_PATH, content, headers, sender, message_sid)

    @staticmethod
    def baseline(at: float) -> Planned:
        return Planned("baseline", at, "GET", BASELINE_PATH)

    async def fire(self, planned: Planned, scheduled: float) -> Sample:
        sent = time.perf_counter()
        status = 0
        ok = False
        try:
            async with self.client.request(
                planned.method, planned.path, data=planned.content, headers=planned.headers
            ) as response:
                text = await response.text()
            status = response.status
            ok = status == 200 and (planned.method == "GET" or text == EMPTY_TWIML)
        except (aiohttp.ClientError, TimeoutError):
            pass
        return Sample(planned, scheduled, sent, time.perf_counter(), status, ok)

    async def run(
        self,
        plan: list[Planned],
        on_tick: Callable[[float], None] | None = None,
        start: float | None = None,
    ) -> list[Sample]:
        """Send each planned request at its time, never waiting for earlier answers."""
        start = start if start is not None else time.perf_counter() + 0.05
        tasks: list[asyncio.Task[Sample]] = []
        next_tick = 5.0
        for planned in plan:
            scheduled = start + planned.at
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.fire(planned, scheduled)))
            if on_tick is not None and planned.at >= next_tick:
                on_tick(planned.at)
                next_tick += 5.0
        return list(await asyncio.gather(*tasks))


def numbers(first: int, count: int) -> list[str]:
    # 202-555-xxxx: fiction. Each phase takes its own range of numbers.
    return [f"+1202555{(first + n) % 10000:04d}" for n in range(count)]


class OutboxWatcher:
    """When did the fake Twilio first receive a create for each watched number? Polls the fake's
    request log every 10 ms (a shallow copy; only new entries are read)."""

    def __init__(self, fake: FakeTwilio) -> None:
        self.fake = fake
        self.first_seen: dict[str, float] = {}
        self._watched: set[str] = set()
        self._seen = len(fake.requests)
        self._task: asyncio.Task[None] | None = None
        self._all_seen = asyncio.Event()

    def watch(self, number: str) -> None:
        self._watched.add(number)

    def missing(self) -> set[str]:
        return self._watched - set(self.first_seen)

    async def __aenter__(self) -> OutboxWatcher:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _poll(self) -> None:
        while True:
            requests = self.fake.requests
            now = time.perf_counter()
            for request in requests[self._seen :]:
                if request.method == "POST" and request.path.endswith("/Messages.json"):
                    to = request.get("To") or ""
                    if to in self._watched and to not in self.first_seen:
                        self.first_seen[to] = now
            self._seen = len(requests)
            if not self.missing():
                self._all_seen.set()
            await asyncio.sleep(0.01)

    async def wait_all(self, within_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_seen.wait(), within_s)


async def warm_up(load: Load, count: int, within_s: float) -> None:
    """A few texts answered end to end: the worker builds its services (database pool, safety
    layer, Rasa client) on the first one. Not counted."""
    senders = numbers(9000, count)
    plan = [
        load.webhook("warm-up", i * 0.2, s, TEXTS[i % len(TEXTS)]) for i, s in enumerate(senders)
    ]
    async with OutboxWatcher(load.fake) as watcher:
        for sender in senders:
            watcher.watch(sender)
        samples = await load.run(plan)
        if not all(s.ok for s in samples):
            codes = sorted({s.status for s in samples if not s.ok})
            raise RuntimeError(f"the warm-up webhooks were refused (HTTP {codes})")
        await watcher.wait_all(within_s)
        if watcher.missing():
            raise RuntimeError(
                f"no reply to {len(watcher.missing())} of {count} warm-up texts within "
                f"{within_s:g} s"
            )


async def end_to_end_phase(
    load: Load, rate: float, seconds: float, within_s: float
) -> tuple[list[float], list[Sample], set[str]]:
    count = max(1, round(rate * seconds))
    senders = numbers(1000, count)
    plan = [load.webhook("e2e", i / rate, s, TEXTS[i % len(TEXTS)]) for i, s in enumerate(senders)]
    progress(f"end to end: {count} texts at {rate}/s, each from a new number")
    async with OutboxWatcher(load.fake) as watcher:
        for sender in senders:
            watcher.watch(sender)
        samples = await load.run(
            plan,
            on_tick=lambda t: progress(
                f"  {t:.0f} s: {len(watcher.first_seen)} of {count} answered so far"
            ),
        )
        await watcher.wait_all(within_s)
    latencies = [
        (watcher.first_seen[s.planned.to] - s.scheduled) * 1000
        for s in samples
        if s.planned.to in watcher.first_seen
    ]
    return latencies, samples, watcher.missing()


@dataclass
class AckRun:
    samples: list[Sample]
    wall_s: float
    cpu: list[dict[str, float]]  # CpuMeter readings at each slice boundary
    answered: int  # texts the worker answered meanwhile


async def ack_phase(
    load: Load,
    rate: float,
    seconds: float,
    slice_s: float,
    broker: redis.Redis,
    meter: CpuMeter,
    database: Path,
) -> AckRun:
    """Webhooks and the baseline in alternating slices of `slice_s`, each at `rate`."""
    senders = numbers(0, 200)
    per_slice = max(1, round(rate * slice_s))
    slices = max(1, round(seconds / slice_s))
    plan: list[Planned] = []
    n = 0
    for index in range(2 * slices):
        for k in range(per_slice):
            at = index * slice_s + k / rate
            if index % 2 == 0:
                plan.append(load.webhook("ack", at, senders[n % 200], TEXTS[n % len(TEXTS)]))
                n += 1
            else:
                plan.append(load.baseline(at))
    # One slice of each first, not counted: connections, the first inserts.
    warm = [
        load.webhook("warm-up", k / rate, senders[k % 200], TEXTS[k % len(TEXTS)])
        for k in range(per_slice)
    ] + [load.baseline(slice_s + k / rate) for k in range(per_slice)]
    await load.run(warm)
    total_s = 2 * slices * slice_s
    progress(
        f"ack: {n} webhooks at {rate}/s from 200 numbers, and {n} GET {BASELINE_PATH} (baseline), "
        f"in alternating {slice_s:g} s slices: {total_s:g} s"
    )
    answered_before = processed_count(database)
    start = time.perf_counter() + 0.05
    readings: list[dict[str, float]] = []

    async def read_cpu_at_slice_boundaries() -> None:
        for index in range(2 * slices + 1):
            await asyncio.sleep(max(0.0, start + index * slice_s - time.perf_counter()))
            readings.append(meter.read())

    sampler = asyncio.create_task(read_cpu_at_slice_boundaries())
    samples = await load.run(
        plan,
        on_tick=lambda t: progress(
            f"  {t:.0f}/{total_s:g} s; worker queue: {broker.llen('celery')} tasks waiting"
        ),
        start=start,
    )
    await sampler
    wall_s = time.perf_counter() - start
    return AckRun(samples, wall_s, readings, processed_count(database) - answered_before)


def app_cpu_ms_per_request(run: AckRun, per_slice: int) -> tuple[float | None, float | None]:
    """The app's CPU per request: its CPU time in the webhook slices over the webhooks sent, and
    the same for the baseline slices (answers spilling past a slice's end blur this a little)."""
    if len(run.cpu) < 3 or not all(run.cpu):
        return None, None
    spent = [after["app"] - before["app"] for before, after in itertools.pairwise(run.cpu)]
    webhook, baseline = sum(spent[0::2]), sum(spent[1::2])
    slices = len(spent) // 2
    return (
        round(webhook * 1000 / (slices * per_slice), 2),
        round(baseline * 1000 / (slices * per_slice), 2),
    )


def dialogue_ms(database: Path, message_sids: list[str]) -> list[float]:
    """Rasa's share of each end-to-end text (the orchestrator stores it per inbound message)."""
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT vendor_message_id, dialogue_ms FROM messages "
            "WHERE direction = 'inbound' AND dialogue_ms IS NOT NULL"
        ).fetchall()
    wanted = set(message_sids)
    return [float(ms) for sid, ms in rows if sid in wanted]


def processed_count(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        row = connection.execute(
            "SELECT count(*) FROM messages WHERE direction = 'inbound' AND channel = 'sms' "
            "AND status = 'processed'"
        ).fetchone()
    return int(row[0])


async def pause_worker(broker_url: str, database: Path) -> None:
    """Tell the worker to stop taking tasks, and wait until the ones it holds are done."""
    from celery import Celery

    control = Celery(broker=broker_url).control
    replies = await asyncio.to_thread(control.cancel_consumer, "celery", reply=True, timeout=5)
    if not replies:
        raise RuntimeError("the worker did not answer the request to pause")
    last, steady_since = processed_count(database), time.monotonic()
    while time.monotonic() - steady_since < 3:
        await asyncio.sleep(0.5)
        now = processed_count(database)
        if now != last:
            last, steady_since = now, time.monotonic()


async def measure(
    args: argparse.Namespace,
    url: str,
    fake: FakeTwilio,
    database: Path,
    broker: redis.Redis,
    pids: dict[str, int],
) -> dict[str, Any]:
    # aiohttp rather than httpx: about a sixth of the CPU per request (0.1 ms against 0.6 ms
    # here), and the generator shares the machine with what it measures.
    async with aiohttp.ClientSession(
        base_url=url,
        connector=aiohttp.TCPConnector(limit=1000),
        timeout=aiohttp.ClientTimeout(total=15),
    ) as client:
        load = Load(url, fake, client)
        progress("warming up: texts answered end to end (the worker's first task builds it)")
        await warm_up(load, 4, within_s=180)
        e2e, e2e_samples, e2e_missing = await end_to_end_phase(
            load, args.e2e_rate, args.e2e_seconds, within_s=60
        )
        e2e_rasa = dialogue_ms(database, [s.planned.sid for s in e2e_samples])
        if args.worker_paused:
            progress("pausing the worker for the ack phase (--worker-paused)")
            await pause_worker(args.redis, database)
        meter = CpuMeter(pids)
        callbacks_before = len(fake.callbacks)
        run = await ack_phase(load, args.rate, args.seconds, args.slice, broker, meter, database)
        samples, ack_wall_s, worker_processed = run.samples, run.wall_s, run.answered
        backlog = int(broker.llen("celery"))
        # Twilio posts a signed status callback per step of each reply (sent, delivered): load
        # on the same app, growing with what the worker sends.
        callbacks = len(fake.callbacks) - callbacks_before

    acks = [s for s in samples if s.planned.kind == "ack"]
    base = [s for s in samples if s.planned.kind == "baseline"]
    ack_ok = [s.latency_ms for s in acks if s.ok]
    base_ok = [s.latency_ms for s in base if s.ok]
    ack_p, base_p, e2e_p = percentiles(ack_ok), percentiles(base_ok), percentiles(e2e)
    ack_errors = len(acks) - len(ack_ok)
    base_errors = len(base) - len(base_ok)
    # Refused, or accepted and never answered.
    e2e_failed = len({s.planned.to for s in e2e_samples if not s.ok} | e2e_missing)
    webhook_seconds = len(acks) / args.rate
    rate = round(len(ack_ok) / webhook_seconds, 1)
    ack_p95, base_p95 = ack_p["p95_ms"], base_p["p95_ms"]
    ratio = round(ack_p95 / base_p95, 2) if ack_p95 is not None and base_p95 else None
    cpu_per_ack, cpu_per_baseline = app_cpu_ms_per_request(run, round(args.rate * args.slice))
    cores = CpuMeter.cores(run.cpu[0], run.cpu[-1], ack_wall_s) if run.cpu else {}
    # Per webhook slice: a tail made of a few stalls shows as one or two high slices.
    by_slice: dict[int, list[float]] = {}
    for s in acks:
        if s.ok:
            by_slice.setdefault(int(s.planned.at // args.slice), []).append(s.latency_ms)
    slice_p95 = [percentiles(by_slice[k])["p95_ms"] for k in sorted(by_slice)]
    statuses: dict[str, int] = {}
    for s in acks + base + e2e_samples:
        if not s.ok:
            statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
    return {
        "ack_p50_ms": ack_p["p50_ms"],
        "ack_p95_ms": ack_p95,
        "ack_p99_ms": ack_p["p99_ms"],
        "ack_max_ms": round(max(ack_ok), 1) if ack_ok else None,
        "rate_per_s": rate,
        "offered_rate_per_s": args.rate,
        "acks": len(acks),
        "baseline_p50_ms": base_p["p50_ms"],
        "baseline_p95_ms": base_p["p95_ms"],
        "baseline_p99_ms": base_p["p99_ms"],
        "ack_vs_baseline_p95": ratio,
        "ack_p95_ms_by_slice": slice_p95,
        "generator_lag_p95_ms": percentiles([s.lag_ms for s in samples])["p95_ms"],
        "end_to_end_p50_ms": e2e_p["p50_ms"],
        "end_to_end_p95_ms": e2e_p["p95_ms"],
        "end_to_end_max_ms": round(max(e2e), 1) if e2e else None,
        "end_to_end_texts": len(e2e_samples),
        "end_to_end_rate_per_s": args.e2e_rate,
        "end_to_end_rasa_p50_ms": percentiles(e2e_rasa)["p50_ms"],
        "end_to_end_ack_p95_ms": percentiles([s.latency_ms for s in e2e_samples if s.ok])["p95_ms"],
        "worker": "paused" if args.worker_paused else "answering",
        "worker_answered_during_ack_phase": worker_processed,
        "worker_answered_per_s_under_ack_load": round(worker_processed / ack_wall_s, 1),
        "worker_backlog_after_ack_phase": backlog,
        "status_callbacks_per_s_during_ack_phase": round(callbacks / ack_wall_s, 1),
        "app_cpu_ms_per_ack": cpu_per_ack,
        "app_cpu_ms_per_baseline": cpu_per_baseline,
        "cores_used_during_ack_phase": cores,
        "ack_errors": ack_errors,
        "baseline_errors": base_errors,
        "end_to_end_failed": e2e_failed,
        "errors": ack_errors + base_errors + e2e_failed,
        "error_statuses": statuses,
        "goal_met": bool(
            ack_p95 is not None
            and ack_p95 < GOAL_ACK_P95_MS
            and rate >= GOAL_RATE_PER_S
            and ack_errors == 0
        ),
    }


def summary(result: dict[str, Any], args: argparse.Namespace) -> str:
    r = result
    return "\n".join(
        [
            f"SMS webhook ack at {r['offered_rate_per_s']}/s offered, {r['rate_per_s']}/s "
            f"acknowledged ({r['acks']} webhooks, {r['ack_errors']} errors): "
            f"p50 {r['ack_p50_ms']} ms, p95 {r['ack_p95_ms']} ms, p99 {r['ack_p99_ms']} ms",
            f"baseline GET {BASELINE_PATH}, same rate, alternating slices: "
            f"p50 {r['baseline_p50_ms']} ms, p95 {r['baseline_p95_ms']} ms, "
            f"p99 {r['baseline_p99_ms']} ms; ack/baseline p95 = {r['ack_vs_baseline_p95']}",
            f"end to end (webhook -> Twilio create) at {args.e2e_rate}/s: "
            f"p50 {r['end_to_end_p50_ms']} ms, p95 {r['end_to_end_p95_ms']} ms "
            f"(Rasa p50 {r['end_to_end_rasa_p50_ms']} ms; {r['end_to_end_failed']} unanswered)",
            f"worker ({r['worker']}) during the ack phase: "
            f"{r['worker_answered_per_s_under_ack_load']} texts/s answered, "
            f"{r['worker_backlog_after_ack_phase']} tasks still queued at the end; "
            f"{r['status_callbacks_per_s_during_ack_phase']} status callbacks/s to the app",
            f"app CPU per request: webhook {r['app_cpu_ms_per_ack']} ms, baseline "
            f"{r['app_cpu_ms_per_baseline']} ms; cores used during the ack phase: "
            + ", ".join(f"{k} {v}" for k, v in r["cores_used_during_ack_phase"].items()),
            f"goal (ack p95 < {GOAL_ACK_P95_MS:g} ms at >= {GOAL_RATE_PER_S:g}/s): "
            + ("met" if r["goal_met"] else "NOT met"),
        ]
    )


def redis_problem(url: str) -> str | None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
    except redis.RedisError as exc:
        return (
            f"Redis is not reachable at {url} ({type(exc).__name__}). The SMS worker's queue "
            "needs it: start Redis (e.g. `sudo service redis-server start`, or "
            "`docker run -d -p 6379:6379 redis:7`) and retry, or pass --redis URL."
        )
    return None


def _terminate(signum: int, _: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Start everything, measure, stop everything (also on failure or interruption)."""
    broker = redis.Redis.from_url(args.redis)
    broker.flushdb()
    with tempfile.TemporaryDirectory(prefix="bench-sms-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        stack.callback(broker.flushdb)  # the ack phase's backlog, and the rate-limit keys
        database = workdir / "clinic.db"
        progress(f"fresh SQLite database in {workdir}: applying migrations")
        migrate.upgrade(f"sqlite:///{database}")
        fake = stack.enter_context(FakeTwilio(service_number=CLINIC_NUMBER))
        progress("starting the action server and Rasa (loading the model takes ~30 s)")
        rasa = stack.enter_context(running_rasa(workdir))
        rasa_pids = {name: p.pid for name, p in rasa._processes.items()}
        port = free_port()
        env = platform_env(workdir, rasa, fake, port, args.redis, args.redis_limits)
        progress(f"starting the Celery worker (broker {args.redis})")
        worker_pid = stack.enter_context(running_worker(workdir, env))
        progress("starting the platform (uvicorn, one process)")
        url, app_pid = stack.enter_context(running_platform(workdir, env, port))
        pids = {
            "app": app_pid,
            "worker": worker_pid,
            "rasa": rasa_pids["rasa"],
            "actions": rasa_pids["actions"],
            "bench": os.getpid(),  # the load generator and the fake Twilio
        }
        try:
            result = asyncio.run(measure(args, url, fake, database, broker, pids))
        except Exception:
            # The logs go with the temporary folder: show their ends first.
            for name in ("platform", "worker"):
                tail = (workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                print(f"--- {name}.log (end) ---\n{tail}", file=sys.stderr)
            raise
        progress("stopping the platform, the worker, Rasa and the fake Twilio")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=50.0, help="webhooks per second (ack)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of webhooks (ack)")
    parser.add_argument(
        "--slice", type=float, default=2.0, help="seconds per alternating webhook/baseline slice"
    )
    parser.add_argument("--e2e-rate", type=float, default=3.0, help="texts per second (e2e)")
    parser.add_argument("--e2e-seconds", type=float, default=15.0)
    parser.add_argument(
        "--redis", default="redis://127.0.0.1:6379/7", help="the worker's broker (flushed)"
    )
    parser.add_argument(
        "--worker-paused",
        action="store_true",
        help="the worker takes no tasks during the ack phase: the webhook's own cost, without\n"
        "the worker (and Rasa) competing for the CPU and the database",
    )
    parser.add_argument(
        "--redis-limits",
        action="store_true",
        help="keep the per-sender rate limits in Redis too (REDIS_URL), as production does",
    )
    args = parser.parse_args()

    problem = redis_problem(args.redis)
    if problem:
        print(f"!! {problem}", file=sys.stderr)
        return 1
    # Ctrl-C arrives as KeyboardInterrupt; a plain `kill` takes the same way out, so every
    # process the bench started is stopped on the way (the ExitStack in `bench`).
    signal.signal(signal.SIGTERM, _terminate)
    try:
        result = bench(args)
    except KeyboardInterrupt:
        print("!! interrupted; everything the bench started has been stopped", file=sys.stderr)
        return 130
    print(summary(result, args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
