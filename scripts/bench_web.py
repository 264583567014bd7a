"""`make bench-web`: the web channel under load, against Rasa alone, in the same run.

Starts a real Rasa server and action server, and the platform (uvicorn, one worker) in its own
process on a fresh SQLite database. Then, twice with the same load shape:

1. platform: N socket.io sessions connected at once; each sends M messages, waiting for the
   acknowledgement (which comes after the reply was stored and emitted) and a think time between
   messages. Latency is emit -> acknowledgement: the whole path.
2. rasa: the same N sessions and M messages posted straight to Rasa's REST webhook.

Reports messages/s and p50/p95/p99 for both, and the platform's overhead (p95 platform - p95
Rasa). Writes the figures into docs/BENCHMARKS.md and prints one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import socketio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.doc_section import write_section  # noqa: E402
from tests.support import RasaStack, free_port, http_ok, wait_until  # noqa: E402

BENCH_DOC = ROOT / "docs" / "BENCHMARKS.md"
PHRASES = [
    "hello",
    "what are your opening hours?",
    "can I book an appointment for next week",
    "I have had a cough for three days",
    "thanks",
    "hola",
    "¿cuál es el horario?",
    "tengo tos desde hace tres días",
    "I need a refill of my prescription",
    "bye",
]


@dataclass
class PhaseResult:
    latencies_ms: list[float]
    errors: int
    wall_s: float
    by_client_id: dict[str, float] | None = None

    def summary(self) -> dict[str, float]:
        return {
            "msgs_per_s": round(len(self.latencies_ms) / self.wall_s, 1),
            **percentiles(self.latencies_ms),
            "errors": self.errors,
            "messages": len(self.latencies_ms),
        }


def percentiles(values_ms: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values_ms, n=100, method="inclusive")
    return {
        "p50_ms": round(cuts[49], 1),
        "p95_ms": round(cuts[94], 1),
        "p99_ms": round(cuts[98], 1),
    }


def progress(text: str) -> None:
    print(f">> {text}", file=sys.stderr, flush=True)


async def platform_phase(url: str, sessions: int, messages: int, think_s: float) -> PhaseResult:
    clients = [socketio.AsyncClient(reconnection=False) for _ in range(sessions)]
    progress(f"connecting {sessions} socket.io sessions")
    for batch in range(0, sessions, 50):
        outcomes = await asyncio.gather(
            *(
                c.connect(url, transports=["websocket"], wait_timeout=15)
                for c in clients[batch : batch + 50]
            ),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                progress(f"a session could not connect: {outcome!r}")
    connected = sum(1 for c in clients if c.connected)
    progress(f"{connected} sessions connected; sending {messages} messages each")
    clients = [c for c in clients if c.connected]
    latencies: list[float] = []
    by_client_id: dict[str, float] = {}
    errors = 0

    async def session(client: socketio.AsyncClient, index: int) -> None:
        nonlocal errors
        rng = random.Random(index)
        await asyncio.sleep(rng.uniform(0, think_s))
        for turn in range(messages + 1):
            data = {"client_id": uuid.uuid4().hex, "text": rng.choice(PHRASES)}
            started = time.perf_counter()
            try:
                ack = await client.call("user_message", data, timeout=60)
                ok = bool(ack.get("ok"))
            except Exception:
                ok = False
            elapsed = (time.perf_counter() - started) * 1000
            if turn > 0:  # the first turn warms caches and is not measured
                if ok:
                    latencies.append(elapsed)
                    by_client_id[data["client_id"]] = elapsed
                else:
                    errors += 1
            if turn < messages:
                await asyncio.sleep(rng.uniform(0.5 * think_s, 1.5 * think_s))

    started = time.perf_counter()
    await asyncio.gather(*(session(c, i) for i, c in enumerate(clients)))
    wall = time.perf_counter() - started
    held = sum(1 for c in clients if c.connected)
    await asyncio.gather(*(c.disconnect() for c in clients))
    # A session that could not connect, or dropped on the way, is an error of the platform.
    errors += sessions - held
    return PhaseResult(latencies, errors, wall, by_client_id)


async def rasa_phase(rasa_url: str, sessions: int, messages: int, think_s: float) -> PhaseResult:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=sessions, max_keepalive_connections=sessions)
    async with httpx.AsyncClient(base_url=rasa_url, limits=limits, timeout=60) as client:

        async def session(index: int) -> None:
            nonlocal errors
            rng = random.Random(index)
            sender = uuid.uuid4().hex
            await asyncio.sleep(rng.uniform(0, think_s))
            for turn in range(messages + 1):
                text = rng.choice(PHRASES)
                body = {"sender": sender, "message": text, "metadata": {"language": "en"}}
                started = time.perf_counter()
                try:
                    response = await client.post("/webhooks/rest/webhook", json=body)
                    ok = response.status_code == 200 and bool(response.json())
                except httpx.HTTPError:
                    ok = False
                elapsed = (time.perf_counter() - started) * 1000
                if turn > 0:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors += 1
                if turn < messages:
                    await asyncio.sleep(rng.uniform(0.5 * think_s, 1.5 * think_s))

        progress(f"{sessions} sessions straight to Rasa; {messages} messages each")
        started = time.perf_counter()
        await asyncio.gather(*(session(i) for i in range(sessions)))
        wall = time.perf_counter() - started
    return PhaseResult(latencies, errors, wall)


def per_message_overhead(database: Path, by_client_id: dict[str, float]) -> list[float]:
    """Each message's client-observed latency minus the time Rasa took for that same message
    (the platform stores it per inbound message): what the platform adds to one turn."""
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT vendor_message_id, dialogue_ms FROM messages "
            "WHERE direction = 'inbound' AND dialogue_ms IS NOT NULL"
        ).fetchall()
    return [by_client_id[cid] - ms for cid, ms in rows if cid in by_client_id]


def start_platform(workdir: Path, stack: RasaStack) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(workdir),
        "RASA_URL": stack.rasa_url,
        "ACTION_SERVER_URL": stack.action_url,
        "RATE_LIMIT_PER_SENDER": "10000/minute",
        "LOG_LEVEL": "WARNING",
    }
    log = (workdir / "platform.log").open("wb")
    process = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "uvicorn"),
            "webapp.main:app",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--ws-max-size",
            "262144",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{url}/readyz"), timeout=60, what="the platform")
    return process, url


def write_doc(result: dict[str, Any], command: str) -> None:
    section = "\n".join(
        [
            f"Last run: {result['date']} on this machine ({os.cpu_count()} cores), `{command}`",
            "",
            "| path | sessions | messages | msgs/s | p50 ms | p95 ms | p99 ms | errors |",
            "|---|---|---|---|---|---|---|---|",
            *(
                f"| {name} | {result['sessions']} | {r['messages']} | {r['msgs_per_s']} | "
                f"{r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['errors']} |"
                for name, r in (
                    ("platform (socket.io → Rasa)", result["platform"]),
                    ("Rasa REST alone (baseline)", result["rasa"]),
                )
            ),
            "",
            "Platform overhead per message (client latency minus that message's own Rasa time): "
            f"p50 {result['overhead_p50_ms']} ms, **p95 {result['overhead_p95_ms']} ms**, "
            f"p99 {result['overhead_p99_ms']} ms. Difference of the two runs' p95: "
            f"{result['p95_difference_ms']} ms.",
        ]
    )
    write_section(BENCH_DOC, "bench-web", section)


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--messages", type=int, default=2, help="measured messages per session")
    parser.add_argument(
        "--think", type=float, default=90.0, help="mean seconds between a session's messages"
    )
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/BENCHMARKS.md")
    args = parser.parse_args()
    command = "make bench-web" + (
        f" BENCH_ARGS='--sessions {args.sessions} --messages {args.messages} --think {args.think}'"
        if (args.sessions, args.messages, args.think) != (500, 2, 90.0)
        else ""
    )
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        workdir = Path(tmp)
        stack = RasaStack(workdir)
        platform = None
        try:
            progress("starting the action server and Rasa (loading the model takes ~30 s)")
            stack.start_actions()
            stack.start_rasa()
            progress("starting the platform")
            platform, url = start_platform(workdir, stack)
            platform_result = await platform_phase(url, args.sessions, args.messages, args.think)
            overheads = per_message_overhead(
                workdir / "clinic.db", platform_result.by_client_id or {}
            )
            rasa_result = await rasa_phase(stack.rasa_url, args.sessions, args.messages, args.think)
        finally:
            if platform:
                platform.terminate()
                platform.wait(20)
            stack.stop_all()
    p, r = platform_result.summary(), rasa_result.summary()
    overhead = percentiles(overheads)
    result = {
        "benchmark": "web",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "sessions": args.sessions,
        "messages_per_session": args.messages,
        "think_s": args.think,
        "platform": p,
        "rasa": r,
        "overhead_p50_ms": overhead["p50_ms"],
        "overhead_p95_ms": overhead["p95_ms"],
        "overhead_p99_ms": overhead["p99_ms"],
        "p95_difference_ms": round(p["p95_ms"] - r["p95_ms"], 1),
    }
    if not args.no_doc:
        write_doc(result, command)
    print(
        json.dumps(
            {
                "sessions": args.sessions,
                "msgs_per_s": p["msgs_per_s"],
                "p50_ms": p["p50_ms"],
                "p95_ms": p["p95_ms"],
                "p99_ms": p["p99_ms"],
                "rasa_msgs_per_s": r["msgs_per_s"],
                "rasa_p95_ms": r["p95_ms"],
                "overhead_p95_ms": result["overhead_p95_ms"],
                "p95_difference_ms": result["p95_difference_ms"],
                "errors": p["errors"] + r["errors"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
