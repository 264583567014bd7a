"""`make bench-load`: the whole platform under 1,000 concurrent web consultations plus SMS.

Starts what production runs, on this machine: a real Rasa server and action server, PostgreSQL
(a database created for the run on the local server and dropped afterwards), Redis (a
redis-server of the run's own: socket.io's manager across workers, rate limits, the Celery
broker), one Celery worker answering texts, and a local fake of Twilio's REST API that receives
the outbound SMS. Then, in the same run, once per entry of `--workers` (default 1, 2, 1, 2 web
worker processes: the counts alternate so that both meet the same shared, noisy machine; the
1-worker runs are the baseline, and the runs of one count are reported together):

1. The platform (`uvicorn --workers N`) starts, on the same port each time.
2. Client processes (python-socketio `AsyncClient`, websocket transport; `--clients` processes,
   each with its own event loop, because one loop cannot drive 1,000 sockets and measure them
   fairly) connect every session and hold it. A few warm-up messages per client process are not
   counted.
3. For `--duration` seconds each session behaves like a consultation: it sends the next line of a
   triage conversation (hello, a symptom, answers to the nurse's questions, thanks, bye; one in
   five in Spanish), waits for the bot's reply, and thinks `--think` seconds (0.5x-1.5x, random)
   before the next; its first message falls at a random point of the first think time. Latency
   is from the emit to the first bot reply the session receives (the reply travels through
   Redis, as between workers); the acknowledgement must say ok. Meanwhile signed Twilio
   webhooks arrive at `--sms-rate` per second (open loop, each from a new number), and the
   worker's replies go to the fake Twilio: ack latency and webhook -> outbound create.
4. CPU seconds per process group (web app, Rasa, action server, Celery worker, PostgreSQL's
   backends for this database, Redis, the load generator, everything else) over the window, from
   /proc: what the machine spent where, and so what limits it.

The load generator shares the machine's cores with what it measures; its CPU share and its
event-loop lag are reported. Progress goes to stderr; a summary, then one JSON line last.
`--record` writes the figures into docs/BENCHMARKS.md (the bench-load section).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import queue
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
import psycopg
import redis
import socketio
from psycopg import sql
from socketio.exceptions import TimeoutError as CallTimeout
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.doc_section import write_section  # noqa: E402

# The client processes (multiprocessing's spawn) import this file again as __mp_main__; they
# need none of the platform, whose imports cost seconds of CPU on a machine under load.
if __name__ != "__mp_main__":
    from core import migrate
    from scripts.bench_sms import (
        CLINIC_NUMBER,
        Load,
        OutboxWatcher,
        numbers,
        redis_problem,
        running_rasa,
        running_worker,
        stop_process,
        wait_for,
        warm_up,
    )
    from tests.fakes.twilio_server import FakeTwilio
    from tests.support import free_port, http_ok

BENCH_DOC = ROOT / "docs" / "BENCHMARKS.md"
GOAL_SESSIONS = 1000
GOAL_P95_MS = 200.0
# A triage consultation as patients type it: the symptom starts the nurse's questions (age,
# onset, severity, other symptoms, conditions), answered in turn. No knowledge-base question
# (that is rag/'s benchmark) and nothing the safety layer escalates.
CONSULTATIONS = {
    "en": [
        "hello",
        "I have had a cough for three days",
        "I am 34 years old",
        "it started three days ago",
        "it is mild, about 3 out of 10",
        "no other symptoms",
        "no",
        "thanks",
        "bye",
    ],
    "es": [
        "hola",
        "tengo tos desde hace tres días",
        "tengo 34 años",
        "empezó hace tres días",
        "es leve, 3 de 10",
        "no tengo otros síntomas",
        "no",
        "gracias",
        "adiós",
    ],
}
SMS_TEXTS = ["hello", "thanks", "I have had a cough for three days", "hola", "gracias", "bye"]
WARM_UP_PER_CLIENT = 5


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


def progress(text: str) -> None:
    print(f">> {text}", file=sys.stderr, flush=True)


# --- the client processes ----------------------------------------------------------------------


@dataclass
class ClientJob:
    index: int
    url: str
    first_session: int
    sessions: int
    think_s: float
    duration_s: float
    timeout_s: float
    prefix: str  # client ids start with it, so the phase's messages can be found in the database


@dataclass(eq=False)
class Session:
    number: int
    client: socketio.AsyncClient
    reply: asyncio.Event = field(default_factory=asyncio.Event)
    replied_at: float = 0.0
    waiting: bool = False
    dropped: bool = False
    closing: bool = False

    def on_message(self, data: Any) -> None:
        if self.waiting and isinstance(data, dict) and data.get("direction") == "outbound":
            self.waiting = False
            self.replied_at = time.perf_counter()
            self.reply.set()

    def on_disconnect(self, *_: Any) -> None:
        if not self.closing:
            self.dropped = True


@dataclass
class Outcome:
    ok: bool
    reply_ms: float = 0.0
    ack_ms: float = 0.0
    error: str = ""


async def send(session: Session, client_id: str, text: str, timeout_s: float) -> Outcome:
    """One patient message: emit, the acknowledgement, and the first bot reply."""
    session.reply.clear()
    session.waiting = True
    started = time.perf_counter()
    try:
        ack = await session.client.call(
            "user_message", {"client_id": client_id, "text": text}, timeout=timeout_s
        )
    except CallTimeout:
        return Outcome(False, error="ack_timeout")
    except Exception:
        return Outcome(False, error="disconnected" if not session.client.connected else "error")
    finally:
        acked = time.perf_counter()
    if not (isinstance(ack, dict) and ack.get("ok")):
        session.waiting = False
        code = ack.get("code") if isinstance(ack, dict) else None
        return Outcome(False, error=f"refused:{code}")
    # A reply emitted to the room goes through Redis, so it may land after the ack.
    left = timeout_s - (acked - started)
    try:
        await asyncio.wait_for(session.reply.wait(), max(0.1, left))
    except TimeoutError:
        session.waiting = False
        return Outcome(False, error="no_reply")
    return Outcome(True, (session.replied_at - started) * 1000, (acked - started) * 1000)


async def client_main(job: ClientJob, out: Any, go: Any, start_at: Any) -> None:
    sessions: list[Session] = []
    connect_failed = 0

    async def connect(number: int) -> None:
        nonlocal connect_failed
        client = socketio.AsyncClient(reconnection=False)
        session = Session(number, client)
        client.on("message", session.on_message)
        client.on("disconnect", session.on_disconnect)
        try:
            await client.connect(job.url, transports=["websocket"], wait_timeout=30)
        except Exception:
            connect_failed += 1
            return
        sessions.append(session)

    numbers_ = range(job.first_session, job.first_session + job.sessions)
    for batch in range(0, job.sessions, 20):
        await asyncio.gather(*(connect(n) for n in numbers_[batch : batch + 20]))
        out.put(("connecting", job.index, len(sessions), connect_failed))
    sessions.sort(key=lambda s: s.number)
    # The first messages a fresh process answers pay one-time costs: not counted.
    warm = await asyncio.gather(
        *(
            send(s, f"warm-{job.prefix}-{s.number}", "hello", job.timeout_s)
            for s in sessions[:WARM_UP_PER_CLIENT]
        )
    )
    warmed = {s.number for s in sessions[:WARM_UP_PER_CLIENT]}
    out.put(("connected", job.index, len(sessions), connect_failed, sum(w.ok for w in warm)))
    await asyncio.to_thread(go.wait)
    # The window is agreed in wall-clock time across processes; latencies use perf_counter.
    start = time.perf_counter() + (start_at.value - time.time())
    deadline = start + job.duration_s

    latencies: list[float] = []
    acks: list[float] = []
    by_id: dict[str, float] = {}
    errors: Counter[str] = Counter()
    sent = in_window = 0
    lags: list[float] = []

    async def consultation(session: Session) -> None:
        nonlocal sent, in_window
        rng = random.Random(session.number)
        script = CONSULTATIONS["es" if rng.random() < 0.2 else "en"]
        turn = 1 if session.number in warmed else 0  # its hello was the warm-up
        next_at = start + rng.uniform(0, job.think_s)
        while True:
            await asyncio.sleep(max(0.0, min(next_at, deadline) - time.perf_counter()))
            if time.perf_counter() >= deadline:
                return
            client_id = f"{job.prefix}-{session.number}-{turn}"
            outcome = await send(session, client_id, script[turn % len(script)], job.timeout_s)
            sent += 1
            if outcome.ok:
                latencies.append(outcome.reply_ms)
                acks.append(outcome.ack_ms)
                by_id[client_id] = outcome.reply_ms
                # Throughput counts what was answered inside the window: a platform that falls
                # behind answers late, and late answers are not throughput.
                in_window += session.replied_at <= deadline
            else:
                errors[outcome.error] += 1
            turn += 1
            next_at = time.perf_counter() + rng.uniform(0.5 * job.think_s, 1.5 * job.think_s)

    async def report() -> None:
        reported = 0
        while True:
            await asyncio.sleep(5)
            held = sum(1 for s in sessions if s.client.connected)
            out.put(("tick", job.index, latencies[reported:], dict(errors), sent, held))
            reported = len(latencies)

    async def loop_lag() -> None:
        # How late this process's event loop wakes up: a generator that cannot keep up shows
        # here, and its lateness is in every latency it measures.
        while True:
            expected = time.perf_counter() + 0.05
            await asyncio.sleep(0.05)
            lags.append((time.perf_counter() - expected) * 1000)

    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    reporter = asyncio.create_task(report())
    lagger = asyncio.create_task(loop_lag())
    await asyncio.gather(*(consultation(s) for s in sessions))
    held = sum(1 for s in sessions if s.client.connected and not s.dropped)
    reporter.cancel()
    lagger.cancel()
    out.put(
        (
            "done",
            job.index,
            {
                "latencies": latencies,
                "acks": acks,
                "by_id": by_id,
                "errors": dict(errors),
                "sent": sent,
                "in_window": in_window,
                "held": held,
                "connected": len(sessions),
                "connect_failed": connect_failed,
                "lag_p99_ms": percentiles(lags)["p99_ms"],
            },
        )
    )
    for s in sessions:
        s.closing = True
    await asyncio.gather(*(s.client.disconnect() for s in sessions), return_exceptions=True)


def client_process(job: ClientJob, out: Any, go: Any, start_at: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    asyncio.run(client_main(job, out, go, start_at))


# --- CPU time per process group ----------------------------------------------------------------


class CpuMeter:
    """CPU seconds per process group, from /proc: named roots with their descendants, this
    database's PostgreSQL backends, PostgreSQL's shared processes, Redis, and the machine."""

    def __init__(self, roots: dict[str, list[int]], database: str, alone: dict[str, list[int]]):
        self.roots = roots  # name -> pids, descendants included
        self.alone = alone  # name -> pids, without their descendants (the bench itself)
        self.database = database
        self.tick = os.sysconf("SC_CLK_TCK")

    def read(self) -> dict[str, Any]:
        table: dict[int, tuple[int, str, float]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            comm = raw[raw.index("(") + 1 : raw.rindex(")")]
            fields = raw.rsplit(")", 1)[1].split()
            table[int(entry.name)] = (
                int(fields[1]),
                comm,
                (int(fields[11]) + int(fields[12])) / self.tick,
            )
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        group: dict[int, str] = {}
        for name, pids in self.alone.items():
            for pid in pids:
                group[pid] = name
        for name, pids in self.roots.items():
            stack = list(pids)
            while stack:
                pid = stack.pop()
                group.setdefault(pid, name)
                stack.extend(children.get(pid, []))
        for pid, (_, comm, _) in table.items():
            if pid in group:
                continue
            if comm.startswith("postgres"):
                group[pid] = self._postgres_group(pid)
        seconds: dict[str, dict[int, float]] = {}
        for pid, name in group.items():
            if pid in table and name:
                seconds.setdefault(name, {})[pid] = table[pid][2]
        cpu = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = cpu[:8]
        return {
            "groups": seconds,
            "machine": (user + nice + system + irq + softirq) / self.tick,
            "steal": steal / self.tick,
        }

    def _postgres_group(self, pid: int) -> str:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return ""
        if f" {self.database} " in title:
            return "postgres"
        # Other people's backends are someone else's load; the server's own processes (WAL
        # writer, checkpointer) work for every database, ours included.
        return "" if "(" in title else "postgres-shared"

    @staticmethod
    def cores(before: dict[str, Any], after: dict[str, Any], wall_s: float) -> dict[str, float]:
        used: dict[str, float] = {}
        for name, pids in after["groups"].items():
            earlier = before["groups"].get(name, {})
            used[name] = sum(max(0.0, s - earlier.get(pid, 0.0)) for pid, s in pids.items())
        machine = after["machine"] - before["machine"]
        result = {k: v / wall_s for k, v in sorted(used.items(), key=lambda kv: -kv[1])}
        result["others"] = max(0.0, machine - sum(used.values())) / wall_s
        result["machine"] = machine / wall_s
        result["steal"] = (after["steal"] - before["steal"]) / wall_s
        return {k: round(v, 2) for k, v in result.items()}


# --- the platform ------------------------------------------------------------------------------


def platform_env(
    workdir: Path, database_url: str, redis_url: str, rasa: Any, fake: FakeTwilio, port: int
) -> dict[str, str]:
    """What production sets, pointed at this run's PostgreSQL database, Redis, Rasa and fake
    Twilio. Set explicitly, even empty, so a developer's .env cannot point the bench elsewhere."""
    return {
        **os.environ,
        "DATA_DIR": str(workdir / "data"),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "AUTO_MIGRATE": "false",  # migrated once by the bench, not by each worker
        "RASA_URL": rasa.rasa_url,
        "ACTION_SERVER_URL": rasa.action_url,
        # One patient per session at a human pace never meets the limit; a generous one keeps
        # a retry storm from being refused.
        "RATE_LIMIT_PER_SENDER": "100000/minute",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "TWILIO_ACCOUNT_SID": fake.account_sid,
        "TWILIO_AUTH_TOKEN": fake.auth_token,
        "TWILIO_FROM_NUMBER": CLINIC_NUMBER,
        "TWILIO_API_BASE_URL": fake.base_url,
        "MATTERMOST_URL": "",
        "KB_PRELOAD": "false",
        "HF_HUB_OFFLINE": "1",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }


@contextmanager
def running_platform(
    workdir: Path, env: dict[str, str], port: int, workers: int
) -> Iterator[tuple[str, int]]:
    log = workdir / f"platform-{workers}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(ROOT / ".venv" / "bin" / "uvicorn"),
                "webapp.main:app",
                "--host", "127.0.0.1",
                "--port", str(port),
                "--workers", str(workers),
                "--no-access-log",
                # info: each worker logs "Application startup complete", which tells when all
                # of them (not only the first) are serving.
                "--log-level", "info",
                "--ws-max-size", "262144",
            ],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: (
                log.read_bytes().count(b"Application startup complete") >= workers
                and http_ok(f"{url}/readyz")
            ),
            process=process,
            log=log,
            timeout=180,
            what=f"the platform ({workers} worker{'s' if workers > 1 else ''})",
        )
        yield url, process.pid
    finally:
        stop_process(process, 30)


@contextmanager
def private_redis(workdir: Path) -> Iterator[tuple[str, list[int]]]:
    """A redis-server of this run's own: the other users of the machine's Redis (test suites
    that flush their databases, socket.io managers on the same channel) neither disturb the
    run nor are disturbed by it, and its CPU is this run's."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    log = workdir / "redis.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(
            lambda: redis_problem(url) is None,
            process=process,
            log=log,
            timeout=30,
            what="redis-server",
        )
        yield url, [process.pid]
    finally:
        stop_process(process, 10)


@contextmanager
def postgres_database(admin_url: str) -> Iterator[tuple[str, str]]:
    """A database created for this run on the local server, migrated, dropped afterwards."""
    name = f"bench_load_{uuid.uuid4().hex[:10]}"
    admin = make_url(admin_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
    try:
        yield url.render_as_string(hide_password=False), name
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def postgres_problem(admin_url: str) -> str | None:
    admin = make_url(admin_url).set(drivername="postgresql").render_as_string(False)
    try:
        with psycopg.connect(admin, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return (
            f"PostgreSQL is not reachable at {admin_url} ({type(exc).__name__}). Start it "
            "(e.g. `sudo service postgresql start`) or pass --postgres URL of a server where "
            "this user may create databases."
        )


def dialogue_check(tracker_db: Path) -> dict[str, int]:
    """What Rasa ran for the whole run: consultations should reach triage results and never
    ask the knowledge base (that would load the embedding model into the web app)."""
    names = {
        "triage_form": "triage_form_steps",
        "action_triage_result": "triage_results",
        "action_answer_question": "kb_questions",
    }
    counts = dict.fromkeys(names.values(), 0)
    with contextlib.closing(sqlite3.connect(tracker_db)) as connection:
        for action, count in connection.execute(
            "SELECT action_name, count(*) FROM events WHERE action_name IN (?, ?, ?) "
            "GROUP BY action_name",
            tuple(names),
        ):
            counts[names[action]] = int(count)
        counts["actions"] = int(
            connection.execute("SELECT count(*) FROM events WHERE type_name = 'action'").fetchone()[
                0
            ]
        )
    return counts


def turn_records(database_url: str, prefix: str) -> list[tuple[str, str, float | None]]:
    """(client id, status, Rasa's time) of each web message of a phase, as the platform
    stored them."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(dsn) as connection:
        rows = connection.execute(
            "SELECT vendor_message_id, status, dialogue_ms FROM messages "
            "WHERE direction = 'inbound' AND channel = 'web' AND vendor_message_id LIKE %s",
            (f"{prefix}-%",),
        ).fetchall()
    return [(str(r[0]), str(r[1]), r[2]) for r in rows]


# --- one phase: N web workers under the load ---------------------------------------------------


@dataclass
class Phase:
    workers: int
    prefix: str  # of its client ids, e.g. r1w1: the first run, one worker
    latencies: list[float] = field(default_factory=list)
    acks: list[float] = field(default_factory=list)
    by_id: dict[str, float] = field(default_factory=dict)  # client id -> reply latency
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    in_window: int = 0
    held: int = 0
    connected: int = 0
    connect_failed: int = 0
    lag_p99_ms: list[float | None] = field(default_factory=list)
    cores: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    sms_acks: list[float] = field(default_factory=list)
    sms_e2e: list[float] = field(default_factory=list)
    sms_counts: Counter[str] = field(default_factory=Counter)
    records: list[tuple[str, str, float | None]] = field(default_factory=list)
    runs: int = 1


def merge(phases: list[Phase]) -> Phase:
    """The runs of one worker count (alternating with the other counts) as one."""
    merged = Phase(phases[0].workers, ",".join(p.prefix for p in phases), runs=len(phases))
    merged.held = min(p.held for p in phases)  # every run must hold every session
    merged.connected = min(p.connected for p in phases)
    merged.wall_s = sum(p.wall_s for p in phases)
    for p in phases:
        merged.latencies += p.latencies
        merged.acks += p.acks
        merged.by_id |= p.by_id
        merged.errors.update(p.errors)
        merged.sent += p.sent
        merged.in_window += p.in_window
        merged.connect_failed += p.connect_failed
        merged.lag_p99_ms += p.lag_p99_ms
        merged.sms_acks += p.sms_acks
        merged.sms_e2e += p.sms_e2e
        merged.sms_counts.update(p.sms_counts)
        merged.records += p.records
        for name, cores in p.cores.items():
            merged.cores[name] = merged.cores.get(name, 0.0) + cores * p.wall_s
    merged.cores = {k: round(v / merged.wall_s, 2) for k, v in merged.cores.items()}
    return merged


def collect(
    out: Any, jobs: int, kind: str, timeout_s: float, on_message: Any = None
) -> dict[int, tuple[Any, ...]]:
    """Block until each client process has sent a message of `kind` (others go to on_message)."""
    got: dict[int, tuple[Any, ...]] = {}
    deadline = time.monotonic() + timeout_s
    while len(got) < jobs:
        try:
            message = out.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"client processes: no '{kind}' within {timeout_s:g} s") from None
        if message[0] == kind:
            got[message[1]] = message
        elif on_message is not None:
            on_message(message)
    return got


async def run_window(
    args: argparse.Namespace,
    phase: Phase,
    url: str,
    fake: FakeTwilio,
    out: Any,
    jobs: int,
    meter: CpuMeter,
    start_at: float,
    broker: redis.Redis,
    sms_first_number: int,
) -> dict[int, tuple[Any, ...]]:
    """The measured window, seen from the parent: the SMS load, progress, CPU, the results."""
    start = time.perf_counter() + (start_at - time.time())
    deadline = start + args.duration
    ticks: dict[int, tuple[list[float], dict[str, int], int, int]] = {}
    running: list[float] = []
    done: dict[int, tuple[Any, ...]] = {}

    def take(message: tuple[Any, ...]) -> None:
        if message[0] == "tick":
            _, index, new, errors, sent, held = message
            running.extend(new)
            ticks[index] = (new, errors, sent, held)
        elif message[0] == "done":
            done[message[1]] = message

    async def drain() -> None:
        while len(done) < jobs:
            try:
                take(out.get_nowait())
            except queue.Empty:
                await asyncio.sleep(0.2)

    async with aiohttp.ClientSession(
        base_url=url,
        connector=aiohttp.TCPConnector(limit=200),
        timeout=aiohttp.ClientTimeout(total=args.timeout),
    ) as http:
        load = Load(url, fake, http)
        count = max(1, round(args.sms_rate * args.duration)) if args.sms_rate > 0 else 0
        senders = numbers(sms_first_number, count)
        plan = [
            load.webhook("sms", i / args.sms_rate, s, SMS_TEXTS[i % len(SMS_TEXTS)])
            for i, s in enumerate(senders)
        ]
        async with OutboxWatcher(fake) as watcher:
            for sender in senders:
                watcher.watch(sender)
            await asyncio.sleep(max(0.0, start - time.perf_counter()))
            before = meter.read()
            draining = asyncio.create_task(drain())
            sms_task = asyncio.create_task(load.run(plan, start=start))

            async def show() -> None:
                while True:
                    await asyncio.sleep(10)
                    elapsed = time.perf_counter() - start
                    if elapsed > args.duration + 1:
                        progress(f"  {phase.prefix}: waiting for the last replies")
                        continue
                    sent = sum(t[2] for t in ticks.values())
                    held = sum(t[3] for t in ticks.values())
                    errors = sum(sum(t[1].values()) for t in ticks.values())
                    p95 = percentiles(running)["p95_ms"] if running else None
                    progress(
                        f"  {phase.prefix} {elapsed:4.0f}/{args.duration:g} s: "
                        f"{len(running)} replies ({len(running) / max(elapsed, 1):.1f}/s), "
                        f"p95 so far {p95} ms, {errors} errors of {sent} sent, "
                        f"{held} sessions held; SMS: {len(watcher.first_seen)} of "
                        f"{min(count, int(elapsed * args.sms_rate))} answered, "
                        f"{broker.llen('celery')} queued"
                    )

            shower = asyncio.create_task(show())
            await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
            after = meter.read()
            phase.wall_s = time.perf_counter() - start
            phase.cores = CpuMeter.cores(before, after, phase.wall_s)
            samples = await sms_task
            await asyncio.wait_for(draining, args.timeout + 60)
            await watcher.wait_all(20)
            shower.cancel()
        # Texts still queued would be answered during the next phase: not this phase's load.
        backlog = int(broker.llen("celery"))
        broker.delete("celery")
    e2e = [
        (watcher.first_seen[s.planned.to] - s.scheduled) * 1000
        for s in samples
        if s.planned.to in watcher.first_seen
    ]
    ok = [s.latency_ms for s in samples if s.ok]
    phase.sms_acks, phase.sms_e2e = ok, e2e
    phase.sms_counts = Counter(
        texts=len(samples),
        ack_errors=len(samples) - len(ok),
        unanswered=len(watcher.missing()),
        backlog_dropped=backlog,
    )
    return done


def run_phase(
    args: argparse.Namespace,
    workers: int,
    prefix: str,
    url: str,
    fake: FakeTwilio,
    roots: dict[str, list[int]],
    database: tuple[str, str],
    broker: redis.Redis,
    sms_first_number: int,
) -> Phase:
    phase = Phase(workers, prefix)
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    go = context.Event()
    start_at = context.Value("d", 0.0)
    per = [args.sessions // args.clients + (i < args.sessions % args.clients)
           for i in range(args.clients)]  # fmt: skip
    jobs = [
        ClientJob(i, url, sum(per[:i]), per[i], args.think, args.duration, args.timeout, prefix)
        for i in range(args.clients)
        if per[i] > 0
    ]
    processes = [
        context.Process(target=client_process, args=(job, out, go, start_at), daemon=True)
        for job in jobs
    ]
    progress(
        f"{prefix}: connecting {args.sessions} socket.io sessions from "
        f"{len(jobs)} client process{'es' if len(jobs) > 1 else ''}"
    )
    for process in processes:
        process.start()
    try:
        connecting: dict[int, tuple[int, int]] = {}
        shown = [time.monotonic()]

        def on_connecting(message: tuple[Any, ...]) -> None:
            connecting[message[1]] = (message[2], message[3])
            if time.monotonic() - shown[0] > 5:
                shown[0] = time.monotonic()
                ok = sum(c[0] for c in connecting.values())
                failed = sum(c[1] for c in connecting.values())
                progress(f"  {prefix}: {ok} connected, {failed} failed")

        connected = collect(out, len(jobs), "connected", 600, on_connecting)
        phase.connected = sum(m[2] for m in connected.values())
        phase.connect_failed = sum(m[3] for m in connected.values())
        warm = sum(m[4] for m in connected.values())
        progress(
            f"{prefix}: {phase.connected} sessions connected ({phase.connect_failed} failed), "
            f"{warm} warm-up messages answered; measuring for {args.duration:g} s, "
            f"about {args.sessions / args.think:.1f} web messages/s and {args.sms_rate:g} SMS/s "
            "offered"
        )
        meter = CpuMeter(
            {**roots, "web clients": [p.pid or 0 for p in processes]},
            database[1],
            # This process sends the SMS load, serves the fake Twilio and reads /proc; the
            # platform's processes are its children but not its work.
            {"bench": [os.getpid()]},
        )
        start_at.value = time.time() + 1.0
        go.set()
        done = asyncio.run(
            run_window(
                args, phase, url, fake, out, len(jobs), meter, start_at.value, broker,
                sms_first_number,
            )
        )  # fmt: skip
        for _, _, result in done.values():
            phase.latencies.extend(result["latencies"])
            phase.acks.extend(result["acks"])
            phase.by_id.update(result["by_id"])
            phase.errors.update(result["errors"])
            phase.sent += result["sent"]
            phase.in_window += result["in_window"]
            phase.held += result["held"]
            phase.lag_p99_ms.append(result["lag_p99_ms"])
        for process in processes:
            process.join(60)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(10)
    phase.records = turn_records(database[0], prefix)
    return phase


# --- the figures -------------------------------------------------------------------------------


def limits(result: dict[str, Any], ncpu: int) -> tuple[str, dict[str, float | None]]:
    """What limits a run, read from the cores each group used and where the reply time went;
    and the rates the CPU spent per message allows: one Rasa process on a whole core, and the
    whole machine given to this load (generator included)."""
    cores, cpu_ms = result["cores"], result["cpu_ms_per_message"]
    busy, others = cores.get("machine", 0.0), cores.get("others", 0.0)
    ours = {k: v for k, v in cores.items() if k not in ("machine", "steal", "others")}
    shares = ", ".join(f"{k} {v:.2f}" for k, v in sorted(ours.items(), key=lambda kv: -kv[1])[:4])
    rasa_ms, total_ms = cpu_ms.get("rasa", 0.0), sum(cpu_ms.values())
    capacity: dict[str, float | None] = {
        "cpu_ms_per_message_total": round(total_ms, 1),
        "rasa_max_msgs_per_s": round(1000 / rasa_ms, 1) if rasa_ms else None,
        "machine_max_msgs_per_s": round(ncpu * 1000 / total_ms, 1) if total_ms else None,
    }
    if cores.get("rasa", 0.0) >= 0.85:
        text = (
            f"Rasa: one process, busy {cores['rasa']:.2f} cores (this run: {shares}; other "
            f"work on the machine {others:.2f}; machine {busy:.2f} of {ncpu})"
        )
    elif busy >= 0.9 * ncpu:
        text = (
            f"CPU: the {ncpu} cores were {busy / ncpu:.0%} busy, this run's processes "
            f"{sum(ours.values()):.2f} cores ({shares}), other work on the machine {others:.2f}"
        )
    else:
        text = (
            f"no resource saturated (machine {busy:.2f} of {ncpu} cores: {shares}); the reply "
            f"time is mostly Rasa's own (p95 {result['rasa_p95_ms']} of {result['p95_ms']} ms: "
            f"one process, busy {cores.get('rasa', 0.0):.2f} cores, whose event loop runs one "
            f"message's models at a time), the platform adds p95 {result['overhead_p95_ms']} ms"
        )
    if total_ms:
        text += (
            f". {total_ms:.0f} ms of CPU per message (Rasa {rasa_ms:.0f}): the whole machine "
            f"would answer about {capacity['machine_max_msgs_per_s']}/s, one Rasa process "
            f"about {capacity['rasa_max_msgs_per_s']}/s"
        )
    return text, capacity


def summarise(phase: Phase, args: argparse.Namespace) -> dict[str, Any]:
    by_id = {cid: (status, ms) for cid, status, ms in phase.records}
    # Rasa answered, but too late or not at all: the patient got the "assistant unavailable"
    # reply, a safe answer and a failure of the service all the same.
    degraded = sum(1 for status, _ in by_id.values() if status == "failed")
    rasa_ms = [ms for _, ms in by_id.values() if ms is not None]
    # What the platform adds to a turn: each reply's latency minus that message's own Rasa time.
    overhead = [
        phase.by_id[cid] - ms
        for cid, (_, ms) in by_id.items()
        if ms is not None and cid in phase.by_id
    ]
    failed = sum(phase.errors.values()) + degraded
    attempted = phase.sent
    p = percentiles(phase.latencies)
    lags = [v for v in phase.lag_p99_ms if v is not None]
    # Per message answered, web and SMS: what each part of the platform costs.
    answered = max(1, phase.in_window + phase.sms_counts["texts"])
    cpu_ms = {
        k: round(v * phase.wall_s * 1000 / answered, 1)
        for k, v in phase.cores.items()
        if k not in ("machine", "steal", "others")
    }
    result: dict[str, Any] = {
        "workers": phase.workers,
        "runs": phase.runs,
        "measured_s": round(args.duration * phase.runs),
        "sessions": args.sessions,
        "sessions_connected": phase.connected,
        "sessions_held": phase.held,
        "messages": attempted,
        "replies": len(phase.latencies),
        "offered_msgs_per_s": round(args.sessions / args.think, 1),
        "msgs_per_s": round(phase.in_window / (args.duration * phase.runs), 1),
        **p,
        "ack_p95_ms": percentiles(phase.acks)["p95_ms"],
        "rasa_p50_ms": percentiles(rasa_ms)["p50_ms"],
        "rasa_p95_ms": percentiles(rasa_ms)["p95_ms"],
        "overhead_p50_ms": percentiles(overhead)["p50_ms"],
        "overhead_p95_ms": percentiles(overhead)["p95_ms"],
        "errors": dict(phase.errors) | ({"assistant_unavailable": degraded} if degraded else {}),
        "error_rate": round(failed / attempted, 4) if attempted else None,
        "sms": {
            **phase.sms_counts,
            **{f"ack_{k}": v for k, v in percentiles(phase.sms_acks).items()},
            "end_to_end_p50_ms": percentiles(phase.sms_e2e)["p50_ms"],
            "end_to_end_p95_ms": percentiles(phase.sms_e2e)["p95_ms"],
        },
        "cores": phase.cores,
        "cpu_ms_per_message": cpu_ms,
        "generator_lag_p99_ms": max(lags) if lags else None,
    }
    result["limited_by"], capacity = limits(result, os.cpu_count() or 1)
    result |= capacity
    result["goal_met"] = bool(
        args.sessions >= GOAL_SESSIONS
        and p["p95_ms"] is not None
        and p["p95_ms"] < GOAL_P95_MS
        and failed == 0
        and phase.held == args.sessions
    )
    return result


def summary_lines(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        lines.append(
            f"{r['workers']} web worker(s): {r['sessions_held']}/{r['sessions']} sessions held, "
            f"{r['msgs_per_s']} msgs/s ({r['offered_msgs_per_s']} offered), reply p50 "
            f"{r['p50_ms']} / p95 {r['p95_ms']} / p99 {r['p99_ms']} ms (Rasa p50 "
            f"{r['rasa_p50_ms']} / p95 {r['rasa_p95_ms']} ms; platform overhead p50 "
            f"{r['overhead_p50_ms']} / p95 {r['overhead_p95_ms']} ms), "
            f"error rate {r['error_rate']} "
            f"{r['errors'] or ''}; SMS ack p95 {r['sms']['ack_p95_ms']} ms, webhook -> "
            f"outbound p95 {r['sms']['end_to_end_p95_ms']} ms; cores: "
            + ", ".join(f"{k} {v}" for k, v in r["cores"].items())
            + f"; limited by {r['limited_by']}"
        )
    return "\n".join(lines)


def change(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    def ratio(key: str) -> float | None:
        return round(other[key] / base[key], 2) if base.get(key) and other.get(key) else None

    def delta(key: str) -> float | None:
        if base.get(key) is None or other.get(key) is None:
            return None
        return round(float(other[key]) - float(base[key]), 1)

    return {
        "from_workers": base["workers"],
        "to_workers": other["workers"],
        "msgs_per_s_ratio": ratio("msgs_per_s"),
        "p50_ms_delta": delta("p50_ms"),
        "p95_ms_delta": delta("p95_ms"),
        "p99_ms_delta": delta("p99_ms"),
        "p95_ratio": ratio("p95_ms"),
        "error_rate_delta": (
            round(other["error_rate"] - base["error_rate"], 4)
            if base["error_rate"] is not None and other["error_rate"] is not None
            else None
        ),
    }


def write_doc(
    results: list[dict[str, Any]],
    dialogue: dict[str, int],
    command: str,
    date: str,
    args: argparse.Namespace,
) -> None:
    ncpu = os.cpu_count()
    rows, cores = [], []
    for r in results:
        errors = ", ".join(f"{k} {v}" for k, v in r["errors"].items())
        rows.append(
            f"| {r['workers']} | {r['sessions_held']}/{r['sessions']} | {r['msgs_per_s']} "
            f"({r['offered_msgs_per_s']} offered) | {r['p50_ms']} | **{r['p95_ms']}** | "
            f"{r['p99_ms']} | {r['error_rate']}{f' ({errors})' if errors else ''} | "
            f"{r['rasa_p50_ms']} / {r['rasa_p95_ms']} | "
            f"{r['overhead_p50_ms']} / {r['overhead_p95_ms']} | {r['sms']['ack_p95_ms']} | "
            f"{r['sms']['end_to_end_p95_ms']} |"
        )
        cores.append(
            f"- {r['workers']} worker(s): cores used "
            + ", ".join(f"{k} {v}" for k, v in r["cores"].items())
            + "; CPU ms per message answered "
            + ", ".join(f"{k} {v}" for k, v in r["cpu_ms_per_message"].items() if v)
            + f"; load-generator loop lag p99 {r['generator_lag_p99_ms']} ms. "
            f"**Limited by** {r['limited_by']}."
        )
    lines = [
        f"Last run: {date} on this machine ({ncpu} cores, shared), `{command}`: "
        f"{args.sessions} sessions, runs of {args.duration:g} s in the order {args.workers} "
        "(web workers; each run a fresh platform and all sessions connected afresh), think time "
        f"{args.think:g} s (0.5x-1.5x), {args.sms_rate:g} SMS/s, {args.clients} client processes.",
        "",
        "| web workers | sessions held | msgs/s | p50 ms | p95 ms | p99 ms | error rate | "
        "Rasa p50 / p95 ms | platform overhead p50 / p95 ms | SMS ack p95 ms | "
        "SMS → outbound p95 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    if len(results) > 1:
        c = change(results[0], results[-1])

        def signed(value: float | None) -> str:
            return "n/a" if value is None else f"{value:+}"

        lines += [
            f"Change from {c['from_workers']} to {c['to_workers']} workers: throughput x"
            f"{c['msgs_per_s_ratio']}, p95 {signed(c['p95_ms_delta'])} ms (x{c['p95_ratio']}), "
            f"error rate {signed(c['error_rate_delta'])}. Other work on the machine: "
            + ", ".join(
                f"{r['cores']['others']} cores during the {r['workers']}-worker run"
                for r in results
            )
            + " (compare the runs only when these are close).",
            "",
        ]
    met = [r["workers"] for r in results if r["goal_met"]]
    lines += [
        "Where the CPU went during the measured window (from /proc; `others` is everything "
        "else on the machine, other people's work included):",
        "",
        *cores,
        "",
        f"Over the run Rasa ran {dialogue['actions']} actions: {dialogue['triage_form_steps']} "
        f"triage-form steps, {dialogue['triage_results']} triage results, "
        f"{dialogue['kb_questions']} knowledge-base questions.",
        "",
        f"Design target ({GOAL_SESSIONS} concurrent consultations, p95 < {GOAL_P95_MS:g} ms, no "
        "errors, every session held): "
        + (f"met with {', '.join(map(str, met))} worker(s)." if met else "**not met**."),
    ]
    write_section(BENCH_DOC, "bench-load", "\n".join(lines))


# --- main --------------------------------------------------------------------------------------


def _terminate(signum: int, _: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def bench(
    args: argparse.Namespace, worker_counts: list[int]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        try:
            return bench_in(args, worker_counts, workdir, stack)
        except Exception:
            # The logs go with the temporary folder: show their ends first.
            for log in sorted(workdir.glob("*.log")):
                tail = log.read_text(errors="replace")[-2000:]
                print(f"--- {log.name} (end) ---\n{tail}", file=sys.stderr)
            raise
        finally:
            progress(
                "stopping the platform, the worker, Rasa and the fake Twilio; dropping the database"
            )


def bench_in(
    args: argparse.Namespace,
    worker_counts: list[int],
    workdir: Path,
    stack: ExitStack,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    roots: dict[str, list[int]] = {}
    if args.redis:
        redis_url = args.redis
    else:
        redis_url, roots["redis"] = stack.enter_context(private_redis(workdir))
        progress(f"redis-server of this run at {redis_url}")
    broker = redis.Redis.from_url(redis_url)
    broker.flushdb()
    stack.callback(broker.flushdb)
    database = stack.enter_context(postgres_database(args.postgres))
    progress(f"PostgreSQL database {database[1]} created: applying migrations")
    migrate.upgrade(database[0])
    fake = stack.enter_context(FakeTwilio(service_number=CLINIC_NUMBER))
    progress("starting the action server and Rasa (loading the model takes ~30 s)")
    rasa = stack.enter_context(running_rasa(workdir))
    # One port for every phase: the worker, started once, tells Twilio where to post delivery
    # reports.
    port = free_port()
    env = platform_env(workdir, database[0], redis_url, rasa, fake, port)
    progress("starting the Celery worker (SMS replies)")
    # INFO: the worker's "ready." line is how running_worker knows it is up.
    worker_pid = stack.enter_context(running_worker(workdir, {**env, "LOG_LEVEL": "INFO"}))
    roots |= {
        "rasa": [rasa._processes["rasa"].pid],
        "actions": [rasa._processes["actions"].pid],
        "celery": [worker_pid],
    }
    phases: dict[int, list[Phase]] = {}
    for index, workers in enumerate(worker_counts):
        progress(
            f"run {index + 1}/{len(worker_counts)}: starting the platform, uvicorn with {workers} "
            "worker process(es)"
        )
        with running_platform(workdir, env, port, workers) as (url, app_pid):
            if index == 0 and args.sms_rate > 0:
                progress("SMS warm-up: a few texts answered end to end (not counted)")

                async def sms_warm_up(url: str = url) -> None:
                    async with aiohttp.ClientSession(base_url=url) as http:
                        await warm_up(Load(url, fake, http), 4, within_s=180)

                asyncio.run(sms_warm_up())
            phase = run_phase(
                args, workers, f"r{index + 1}w{workers}", url, fake,
                {**roots, "platform": [app_pid]}, database, broker, 1000 + index * 2000,
            )  # fmt: skip
        phases.setdefault(workers, []).append(phase)
        progress(summary_lines([summarise(phase, args)]))
    results = [summarise(merge(runs), args) for runs in phases.values()]
    check = dialogue_check(rasa.tracker_db)
    progress(
        f"Rasa ran {check['actions']} actions: {check['triage_form_steps']} triage-form steps, "
        f"{check['triage_results']} triage results, {check['kb_questions']} KB questions"
    )
    return results, check


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=1000, help="concurrent web sessions")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured per run")
    parser.add_argument(
        "--think", type=float, default=90.0, help="mean seconds between a session's messages"
    )
    parser.add_argument("--sms-rate", type=float, default=1.0, help="SMS webhooks per second")
    parser.add_argument(
        "--workers",
        default="1,2,1,2",
        help="web worker count of each run, in order; the first count is the baseline. The\n"
        "counts alternate so that both meet the same machine (it is shared and noisy)",
    )
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds a message may wait for its reply"
    )
    parser.add_argument(
        "--redis",
        help="use this Redis database (flushed) instead of a redis-server of the run's own",
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL server where this user may create the run's database",
    )
    parser.add_argument("--record", action="store_true", help="write docs/BENCHMARKS.md")
    args = parser.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    problem = (redis_problem(args.redis) if args.redis else None) or postgres_problem(args.postgres)
    if problem:
        print(f"!! {problem}", file=sys.stderr)
        return 1
    defaults = {"sessions": 1000, "duration": 60.0, "think": 90.0, "sms_rate": 1.0,
                "workers": "1,2,1,2", "clients": 2, "timeout": 30.0}  # fmt: skip
    extra = " ".join(
        f"--{k.replace('_', '-')} {getattr(args, k)}"
        for k, v in defaults.items()
        if getattr(args, k) != v
    )
    command = "make bench-load" + (f" BENCH_ARGS='{extra}'" if extra else "")
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    try:
        results, dialogue = bench(args, worker_counts)
    except KeyboardInterrupt:
        print("!! interrupted; everything the bench started has been stopped", file=sys.stderr)
        return 130
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if args.record:
        write_doc(results, dialogue, command, date, args)
    print(summary_lines(results))
    base = results[0]
    line: dict[str, Any] = {
        "sessions": args.sessions,
        "workers": base["workers"],
        **{k: base[k] for k in ("sessions_held", "msgs_per_s", "p50_ms", "p95_ms", "p99_ms")},
        "error_rate": base["error_rate"],
        "goal_met": base["goal_met"],
        "limited_by": base["limited_by"],
        **{f"workers_{r['workers']}": r for r in results},
        "dialogue": dialogue,
        "wall_s": round(time.monotonic() - started),
    }
    if len(results) > 1:
        line["change"] = change(results[0], results[-1])
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
