"""Twilio's side of a Media Stream, for tests: the phone network's end of our WebSocket.

It speaks the documented message format (`connected`, `start` with the <Parameter>s of the
TwiML, `media` with base64 8 kHz μ-law in 20 ms frames, `dtmf`, `mark`, `stop`), paces caller
audio in real time, and plays what the app sends the way Twilio does: audio is queued and heard
in real time; a `mark` comes back when the audio before it has been played; `clear` drops what is
queued and returns every pending mark at once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets

from channels.voice.audio import FRAME_MS, frames, mulaw_decode, mulaw_encode, resample
from channels.voice.engines import Espeak

SILENCE = b"\xff" * 160  # one 20 ms frame of μ-law silence


@dataclass
class Heard:
    """What the app sent, in order: ("media", bytes) / ("mark", name) / ("clear", "")."""

    events: list[tuple[str, Any]] = field(default_factory=list)
    marks_returned: list[str] = field(default_factory=list)

    def audio_since(self, index: int) -> bytes:
        return b"".join(p for kind, p in self.events[index:] if kind == "media")

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.events if k == kind)


class MediaStreamCaller:
    def __init__(self, url: str, *, account_sid: str, call_sid: str, token: str) -> None:
        self.url = url
        self.account_sid = account_sid
        self.call_sid = call_sid
        self.stream_sid = "MZ" + call_sid[2:]
        self.token = token
        self.heard = Heard()
        self.closed: asyncio.Event = asyncio.Event()
        self.close_code: int | None = None
        self._ws: Any = None
        self._sequence = 0
        self._chunk = 0
        self._playhead = 0.0  # monotonic time when the queued bot audio ends
        self._pending_marks: list[tuple[float, str]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._talking = False

    async def __aenter__(self) -> MediaStreamCaller:
        self._ws = await websockets.connect(self.url, max_size=2**20)
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self._tasks = [
            asyncio.create_task(self._receive()),
            asyncio.create_task(self._play()),
            asyncio.create_task(self._line_noise()),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await self._ws.close()

    async def start(self, *, token: str | None = None, call_sid: str | None = None) -> None:
        await self._send(
            {
                "event": "start",
                "sequenceNumber": self._next(),
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": call_sid or self.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": {"token": self.token if token is None else token},
                },
                "streamSid": self.stream_sid,
            }
        )

    async def say(self, text: str, tts: Espeak, *, trailing_silence_s: float = 0.0) -> float:
        """Speak in real time, 20 ms a frame; returns the monotonic time the speech ended."""
        pcm, rate = await asyncio.to_thread(tts.synthesize, text, "en")
        self._talking = True
        try:
            for frame in frames(mulaw_encode(resample(pcm, rate, 8000))):
                await self.media(frame)
                await asyncio.sleep(FRAME_MS / 1000)
        finally:
            self._talking = False
        ended = time.monotonic()
        if trailing_silence_s:
            await asyncio.sleep(trailing_silence_s)
        return ended

    async def media(self, payload: bytes) -> None:
        self._chunk += 1
        await self._send(
            {
                "event": "media",
                "sequenceNumber": self._next(),
                "media": {
                    "track": "inbound",
                    "chunk": str(self._chunk),
                    "timestamp": str(self._chunk * FRAME_MS),
                    "payload": base64.b64encode(payload).decode(),
                },
                "streamSid": self.stream_sid,
            }
        )

    async def dtmf(self, digit: str) -> None:
        await self._send(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": self._next(),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    async def stop(self) -> None:
        await self._send(
            {
                "event": "stop",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            }
        )

    async def send_raw(self, text: str) -> None:
        await self._ws.send(text)

    async def hang_up(self) -> None:
        """The line drops: the socket closes without a `stop`."""
        for task in self._tasks:
            task.cancel()
        await self._ws.close()

    async def wait_for(self, kind: str, *, after: int = 0, timeout: float = 20) -> int:
        """Index of the first event of `kind` at or after `after`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index in range(after, len(self.heard.events)):
                if self.heard.events[index][0] == kind:
                    return index
            if self.closed.is_set():
                break
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no {kind!r} after event {after} in {timeout}s")

    async def wait_quiet(self, *, after: int, quiet_s: float = 1.0, timeout: float = 30) -> None:
        """Until the app has sent something after `after` and then nothing for `quiet_s`."""
        await self.wait_for("media", after=after, timeout=timeout)
        last, since = len(self.heard.events), time.monotonic()
        while time.monotonic() - since < quiet_s:
            await asyncio.sleep(0.05)
            if len(self.heard.events) != last:
                last, since = len(self.heard.events), time.monotonic()

    async def wait_played(self, timeout: float = 60) -> None:
        """Until everything queued has been played and its marks returned."""
        deadline = time.monotonic() + timeout
        while self._pending_marks or time.monotonic() < self._playhead:
            if time.monotonic() > deadline:
                raise TimeoutError("playback did not finish")
            await asyncio.sleep(0.05)

    # -- Twilio's behaviour ------------------------------------------------------------------

    async def _receive(self) -> None:
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                kind = message.get("event")
                now = time.monotonic()
                if kind == "media":
                    self._playhead = max(self._playhead, now) + FRAME_MS / 1000
                    self.heard.events.append(
                        ("media", base64.b64decode(message["media"]["payload"]))
                    )
                elif kind == "mark":
                    name = message["mark"]["name"]
                    self.heard.events.append(("mark", name))
                    self._pending_marks.append((max(self._playhead, now), name))
                elif kind == "clear":
                    self.heard.events.append(("clear", ""))
                    self._playhead = now
                    pending, self._pending_marks = self._pending_marks, []
                    for _, name in pending:
                        await self._return_mark(name)
        except websockets.ConnectionClosed as closed:
            self.close_code = closed.rcvd.code if closed.rcvd else None
        finally:
            self.closed.set()

    async def _play(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            due = [m for m in self._pending_marks if m[0] <= now]
            self._pending_marks = [m for m in self._pending_marks if m[0] > now]
            for _, name in due:
                await self._return_mark(name)

    async def _line_noise(self) -> None:
        # A phone line is never silent on the wire: Twilio sends a frame every 20 ms.
        while True:
            if not self._talking:
                with contextlib.suppress(websockets.ConnectionClosed):
                    await self.media(SILENCE)
            await asyncio.sleep(FRAME_MS / 1000)

    async def _return_mark(self, name: str) -> None:
        self.heard.marks_returned.append(name)
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._send(
                {
                    "event": "mark",
                    "sequenceNumber": self._next(),
                    "streamSid": self.stream_sid,
                    "mark": {"name": name},
                }
            )

    async def _send(self, message: dict[str, Any]) -> None:
        await self._ws.send(json.dumps(message))

    def _next(self) -> str:
        self._sequence += 1
        return str(self._sequence)


def pcm_of(mulaw: bytes) -> np.ndarray[Any, Any]:
    return mulaw_decode(mulaw)
