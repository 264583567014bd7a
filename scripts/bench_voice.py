"""`make bench-voice`: how fast a caller hears the bot, and how many calls this machine holds.

Starts a real Rasa server and action server, a local fake of Twilio's REST API, and the platform
(uvicorn, one process, SQLite, the starter knowledge base ingested, so questions get extractive
answers) with the embedded engines: PocketSphinx and espeak-ng. Callers are simulated Twilio
Media Streams (tests/fakes/media_stream.py): signed call webhook, the TwiML's stream URL and
token, espeak-ng speech sent as 8 kHz μ-law 20 ms frames in real time, line silence between.

Figures are the server's own, read from the stored transcript (each caller turn's
`voice` metadata): **first audio** = from the arrival of the caller's last voiced frame to the
first reply frame sent (the end-of-speech silence, recognition, the orchestrator with the safety
layer, Rasa and the knowledge base, text-to-speech of the first sentence, and the pipeline);
**overhead** = that minus the silence wait and the engines' and dialogue's own compute (queues,
codecs, resampling, thread hops, database). Baseline, side by side: the same sentences sent as
text through the API channel (`POST /api/v1/messages`) to the same server, interleaved with the
calls: what the dialogue costs without voice.

Runs (each server first takes a two-turn warm-up call, not counted): (1) the default engines,
one call, sequential turns; (2) the same with a JSGF grammar
(VOICE_STT_GRAMMAR, the phrases the callers say), one call; (3) with the grammar, 1, 2, 4, 8,
... concurrent calls, each taking turns at random offsets; a load is "held" while the first-audio
p95 stays within 2x the single-call p95 and no turn goes unanswered. Goals (issue 6): overhead
p95 <= 100 ms; first audio p50 <= 800 ms. Progress on stderr; the last line is JSON.
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
import xml.etree.ElementTree as ET
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from channels.voice.engines import Espeak  # noqa: E402
from core import migrate  # noqa: E402
from scripts.bench_sms import platform_env, running_platform, running_rasa  # noqa: E402
from scripts.doc_section import write_section  # noqa: E402
from tests.fakes.media_stream import MediaStreamCaller  # noqa: E402
from tests.fakes.twilio_server import FakeTwilio, sign  # noqa: E402
from tests.support import free_port  # noqa: E402

CLINIC_NUMBER = "+15017122661"
GRAMMAR = ROOT / "tests" / "voice" / "patient.gram"
API_TOKEN = "bench-voice-api-token-0123456789abcdef"  # noqa: S105 - a throwaway local server
SENTENCES = [
    "hello",
    "what are your opening hours",
    "i want to book an appointment",
    "i need to see a doctor",
]
GOAL_OVERHEAD_P95_MS = 100.0
GOAL_FIRST_AUDIO_P50_MS = 800.0


def progress(message: str) -> None:
    print(f"[bench-voice] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1], 1)


class CachedVoice(Espeak):
    """The callers' voices, synthesized once per sentence: the load generator's own speech
    synthesis would otherwise take CPU from the server it measures."""

    def __init__(self, inner: Espeak) -> None:
        self._inner = inner
        self._cache: dict[tuple[str, str], Any] = {}

    def synthesize(self, text: str, language: str) -> Any:
        key = (text, language)
        if key not in self._cache:
            self._cache[key] = self._inner.synthesize(text, language)
        return self._cache[key]


class Platform:
    def __init__(self, url: str, fake: FakeTwilio, database: Path) -> None:
        self.url = url
        self.fake = fake
        self.database = database
        self.tts = CachedVoice(Espeak(voices={"en": "en-us"}))

    async def call(self, http: aiohttp.ClientSession) -> MediaStreamCaller:
        caller = f"+1202555{random.randrange(10000):04d}"
        params = self.fake.inbound_call(from_=caller, to=CLINIC_NUMBER)
        path = "/channels/voice/twilio"
        headers = {"X-Twilio-Signature": sign(self.fake.auth_token, self.url + path, params)}
        async with http.post(self.url + path, data=params, headers=headers) as response:
            twiml = ET.fromstring(await response.text())  # noqa: S314 - our own server
        stream = twiml.find("./Connect/Stream")
        if stream is None:
            raise RuntimeError("the platform did not answer with a media stream: " + str(twiml))
        token = stream.find("./Parameter[@name='token']")
        assert token is not None
        return MediaStreamCaller(
            stream.attrib["url"],
            account_sid=self.fake.account_sid,
            call_sid=params["CallSid"],
            token=token.attrib["value"],
        )

    async def text_turn(self, http: aiohttp.ClientSession, sender: str, text: str) -> float:
        started = time.perf_counter()
        async with http.post(
            f"{self.url}/api/v1/messages",
            json={"sender_id": sender, "text": text, "language": "en"},
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        ) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"API channel answered {response.status}")
        return (time.perf_counter() - started) * 1000

    def turn_figures(self, call_sids: list[str]) -> list[dict[str, Any]]:
        marks = ",".join("?" for _ in call_sids)
        with sqlite3.connect(self.database) as db:
            rows = db.execute(
                f"SELECT metadata FROM messages WHERE direction = 'inbound' AND channel = 'voice' "  # noqa: S608
                f"AND json_extract(metadata, '$.call_sid') IN ({marks})",
                call_sids,
            ).fetchall()
        return [json.loads(row[0]).get("voice", {}) for row in rows]


async def one_call(
    platform: Platform,
    http: aiohttp.ClientSession,
    turns: int,
    *,
    baseline: list[float] | None = None,
    offset_s: float = 0.0,
) -> tuple[str, int]:
    """A call of `turns` caller turns; returns (call sid, turns the bot answered)."""
    await asyncio.sleep(offset_s)
    caller = await platform.call(http)
    answered = 0
    async with caller:
        await caller.start()
        await caller.wait_quiet(after=0, quiet_s=0.5)
        await caller.wait_played()
        for turn in range(turns):
            sentence = SENTENCES[turn % len(SENTENCES)]
            before = len(caller.heard.events)
            await caller.say(sentence, platform.tts)
            try:
                await caller.wait_for("media", after=before, timeout=20)
                answered += 1
            except TimeoutError:
                progress(f"a turn went unanswered ({sentence!r})")
            if baseline is not None:
                sender = f"bench-voice-text-{caller.call_sid}"
                baseline.append(await platform.text_turn(http, sender, sentence))
            # People interrupt long answers: the next turn barges in after a second.
            await asyncio.sleep(1.0 + random.random())
        await caller.stop()
        await asyncio.wait_for(caller.closed.wait(), 10)
    return caller.call_sid, answered


def summarize(figures: list[dict[str, Any]]) -> dict[str, Any]:
    latency = [f["latency_ms"] for f in figures if f.get("latency_ms") is not None]
    overhead = [f["overhead_ms"] for f in figures if f.get("overhead_ms") is not None]
    parts = {
        key: percentile([f[key] for f in figures if f.get(key) is not None], 50)
        for key in ("stt_ms", "dialogue_ms", "tts_first_ms")
    }
    waited = [f["endpointed_ms"] - f["speech_ended_ms"] for f in figures if "endpointed_ms" in f]
    return {
        "turns": len(latency),
        "first_audio_p50_ms": percentile(latency, 50),
        "first_audio_p95_ms": percentile(latency, 95),
        "overhead_p50_ms": percentile(overhead, 50),
        "overhead_p95_ms": percentile(overhead, 95),
        "end_silence_p50_ms": percentile(waited, 50),
        **{f"{key}_p50": value for key, value in parts.items()},
    }


async def single(platform: Platform, turns: int) -> dict[str, Any]:
    baseline: list[float] = []
    async with aiohttp.ClientSession() as http:
        # Warm-up, not counted: a fresh server's first turn loads what it loads lazily (Rasa's
        # first request, the knowledge index, the recognizer's calibration): seconds, once.
        await one_call(platform, http, 2, baseline=[])
        call_sid, _ = await one_call(platform, http, turns, baseline=baseline)
    result = summarize(platform.turn_figures([call_sid]))
    result["baseline_text_p50_ms"] = percentile(baseline, 50)
    result["baseline_text_p95_ms"] = percentile(baseline, 95)
    return result


async def concurrency(platform: Platform, levels: list[int], turns: int, bound_ms: float) -> Any:
    steps = []
    held = 0
    async with aiohttp.ClientSession() as http:
        for calls in levels:
            progress(f"{calls} concurrent calls, {turns} turns each")
            outcomes = await asyncio.gather(
                *(
                    one_call(platform, http, turns, offset_s=random.random() * 3)
                    for _ in range(calls)
                )
            )
            figures = platform.turn_figures([sid for sid, _ in outcomes])
            answered = sum(n for _, n in outcomes)
            step = {"calls": calls, **summarize(figures), "unanswered": calls * turns - answered}
            steps.append(step)
            progress(
                f"  first audio p50 {step['first_audio_p50_ms']} ms, "
                f"p95 {step['first_audio_p95_ms']} ms, unanswered {step['unanswered']}"
            )
            p95 = step["first_audio_p95_ms"]
            if step["unanswered"] or p95 is None or p95 > bound_ms:
                break
            held = calls
    return held, steps


def start_platform(
    stack: ExitStack, workdir: Path, rasa: Any, fake: FakeTwilio, extra: dict[str, str]
) -> Platform:
    port = free_port()
    env = platform_env(workdir, rasa, fake, port, f"sqla+sqlite:///{workdir / 'broker.db'}", False)
    env.update({"API_TOKEN": API_TOKEN, "KB_PRELOAD": "true", **extra})
    url, _ = stack.enter_context(running_platform(workdir, env, port))
    return Platform(url, fake, workdir / "clinic.db")


def bench(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-voice-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        progress("migrating a fresh database and ingesting the starter knowledge base")
        migrate.upgrade(f"sqlite:///{workdir / 'clinic.db'}")
        subprocess.run(
            [sys.executable, "-m", "rag", "ingest", "kb"],
            cwd=ROOT,
            env={**os.environ, "DATA_DIR": str(workdir), "HF_HUB_OFFLINE": "1"},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        progress("starting Rasa and the action server (about a minute)")
        rasa = stack.enter_context(running_rasa(workdir))
        fake = stack.enter_context(FakeTwilio(service_number=CLINIC_NUMBER))
        with ExitStack() as default_run:
            progress("default engines (PocketSphinx language model, espeak-ng): one call")
            platform = start_platform(default_run, workdir, rasa, fake, {})
            default = asyncio.run(single(platform, args.turns))
        progress(f"  {default}")
        with ExitStack() as grammar_run:
            progress("PocketSphinx with a grammar: one call, then concurrent calls")
            platform = start_platform(
                grammar_run, workdir, rasa, fake, {"VOICE_STT_GRAMMAR": str(GRAMMAR)}
            )
            grammar = asyncio.run(single(platform, args.turns))
            progress(f"  {grammar}")
            bound = 2 * (grammar["first_audio_p95_ms"] or 0)
            held, steps = asyncio.run(
                concurrency(platform, args.levels, args.concurrent_turns, bound)
            )
    return {
        "first_audio_p50_ms": default["first_audio_p50_ms"],
        "first_audio_p95_ms": default["first_audio_p95_ms"],
        "overhead_p95_ms": default["overhead_p95_ms"],
        "concurrent_calls": held,
        "baseline_text_p50_ms": default["baseline_text_p50_ms"],
        "grammar_first_audio_p50_ms": grammar["first_audio_p50_ms"],
        "grammar_first_audio_p95_ms": grammar["first_audio_p95_ms"],
        "grammar_overhead_p95_ms": grammar["overhead_p95_ms"],
        "overhead_goal_met": (default["overhead_p95_ms"] or 1e9) <= GOAL_OVERHEAD_P95_MS,
        "first_audio_goal_met": (default["first_audio_p50_ms"] or 1e9) <= GOAL_FIRST_AUDIO_P50_MS,
        "default": default,
        "grammar": grammar,
        "concurrency": steps,
        "concurrency_bound_ms": round(bound, 1),
    }


def met(flag: bool) -> str:
    return "met" if flag else "not met"


def record(result: dict[str, Any], args: argparse.Namespace) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = []
    for name, run in (
        ("default engines", result["default"]),
        ("with a grammar", result["grammar"]),
    ):
        ratio = (
            round(run["first_audio_p50_ms"] / run["baseline_text_p50_ms"], 2)
            if run["first_audio_p50_ms"] and run["baseline_text_p50_ms"]
            else None
        )
        rows.append(
            f"| {name} | {run['first_audio_p50_ms']} | {run['first_audio_p95_ms']} | "
            f"{run['overhead_p95_ms']} | {run['end_silence_p50_ms']} | {run['stt_ms_p50']} | "
            f"{run['dialogue_ms_p50']} | {run['tts_first_ms_p50']} | "
            f"{run['baseline_text_p50_ms']} | {ratio} |"
        )
    steps = ", ".join(
        f"{s['calls']}: p95 {s['first_audio_p95_ms']} ms"
        + (f" ({s['unanswered']} unanswered)" if s["unanswered"] else "")
        for s in result["concurrency"]
    )
    body = "\n".join(
        [
            f"Last run: {now}, `make bench-voice` ({args.turns} turns a call; "
            f"{os.cpu_count()} cores).",
            "",
            "| engines | first audio p50 ms | p95 ms | overhead p95 ms | end silence ms | "
            "STT p50 ms | dialogue p50 ms | TTS first sentence p50 ms | baseline text p50 ms "
            "| ratio p50 |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Concurrent calls held (grammar; p95 within {result['concurrency_bound_ms']} ms, "
            f"none unanswered): **{result['concurrent_calls']}**. Steps: {steps}.",
            "",
            f"Goals (default engines): overhead p95 <= 100 ms: {met(result['overhead_goal_met'])}; "
            f"first audio p50 <= 800 ms: {met(result['first_audio_goal_met'])}.",
        ]
    )
    write_section(ROOT / "docs" / "BENCHMARKS.md", "bench-voice", body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--turns", type=int, default=12, help="caller turns in the single call")
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 2, 4, 8, 12, 16], help="concurrent calls to try")  # fmt: skip
    parser.add_argument("--concurrent-turns", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="write docs/BENCHMARKS.md")
    args = parser.parse_args()
    random.seed(7)
    result = bench(args)
    if args.record:
        record(result, args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
