"""One phone call's speech pipeline, whatever carries its audio.

    caller audio (8 kHz PCM, 20 ms frames) -> endpointer (VAD) -> speech-to-text -> orchestrator
    -> text-to-speech, sentence by sentence -> 20 ms μ-law frames + a mark per sentence

The transport (Twilio Media Streams, channels/voice/twilio.py) decodes at the edge and gives
frames, keypresses and playback marks to `CallSession`; the session sends audio, marks and
`clear` back through `CallAudio`. Acting on the call itself (a transfer) goes through
`CallActions`, which any process can do through Twilio's REST API.

Timings (call-relative milliseconds) go with each stored message: when the caller's speech
started and ended, how long recognition took; for replies, when the first audio frame left and
how much of the reply was played before the caller interrupted or hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from bot.contract import Channel, Inbound, TurnResult
from bot.orchestrator import InvalidMessage, Orchestrator
from bot.phrases import phrase
from channels.voice.audio import (
    FRAME_SAMPLES,
    TELEPHONE_RATE,
    frames,
    mulaw_decode,
    mulaw_encode,
    resample,
)
from channels.voice.engines import RecognitionStream, SpeechToText, TextToSpeech, Transcript
from channels.voice.vad import EndpointConfig, Endpointer, SpeechStarted, Utterance

log = logging.getLogger(__name__)

# Words that accept a transfer just offered ("connect me", "yes please", "sí").
_ACCEPT = re.compile(
    r"\b(yes|yeah|yep|connect|transfer|please do|s[ií]|comun[ií]queme|con[eé]cteme)\b", re.I
)
# Tasks that outlive their call (recording what was never heard); referenced until done.
_BACKGROUND: set[asyncio.Task[None]] = set()
# After . ! ? ; : (not the "1." of a numbered option), or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?;:])(?<!\b\d\.)\s+|\n+")


def accepts_transfer(text: str) -> bool:
    return bool(_ACCEPT.search(text))


def sentences(text: str) -> list[str]:
    """Reply text in the pieces text-to-speech gets one at a time: the first is heard while
    the next is synthesized. Numbered options (one per line) are pieces of their own."""
    return [piece.strip() for piece in _SENTENCE_END.split(text) if piece.strip()]


class CallAudio(Protocol):
    """Toward the caller's ear."""

    async def send_audio(self, frames: list[bytes]) -> None: ...

    async def send_mark(self, name: str) -> None: ...

    async def clear(self) -> None: ...


class CallActions(Protocol):
    """On the call itself, and on the records kept about it."""

    async def transfer(self, call_sid: str, target: str, language: str) -> bool: ...

    async def staff_requested(self, call_sid: str) -> None: ...

    async def annotate(self, message_id: str, voice: dict[str, Any]) -> None: ...

    async def handled(self, message_id: str, status: str) -> None: ...


@dataclass(frozen=True)
class VoiceConfig:
    clinic_name: str
    emergency_number: str
    staff_digit: str = "0"
    transfer_digit: str = "1"
    oncall_number: str | None = None
    staff_number: str | None = None
    barge_in_ms: int = 200
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)


@dataclass(frozen=True)
class Call:
    call_sid: str
    stream_sid: str
    caller: str  # E.164, or "anonymous:<CallSid>" for a withheld number
    language: str


@dataclass
class TurnTiming:
    """One caller turn, for the transcript and the benchmark."""

    speech_ended_ms: float
    endpointed_ms: float
    stt_ms: float = 0.0
    dialogue_ms: float = 0.0
    tts_first_ms: float = 0.0
    first_audio_ms: float | None = None

    @property
    def first_audio_latency_ms(self) -> float | None:
        if self.first_audio_ms is None:
            return None
        return self.first_audio_ms - self.speech_ended_ms

    @property
    def overhead_ms(self) -> float | None:
        """Time that is neither waiting for the end of speech nor engine or dialogue compute:
        queues, codecs, resampling, thread hops, the database."""
        latency = self.first_audio_latency_ms
        if latency is None:
            return None
        waited = self.endpointed_ms - self.speech_ended_ms
        return latency - waited - self.stt_ms - self.dialogue_ms - self.tts_first_ms


class _Listening:
    """Recognition while the caller speaks: frames go to the engine's stream in batches, in
    order, off the event loop; at the end of the utterance only the last batch is left."""

    BATCH_FRAMES = 5  # 100 ms: what is left to decode when the caller stops

    def __init__(self, stream: RecognitionStream) -> None:
        self._stream = stream
        self._pending: list[np.ndarray[Any, Any]] = []
        self._chain: asyncio.Task[None] | None = None

    def add(self, pcm: np.ndarray[Any, Any]) -> None:
        self._pending.append(pcm)
        if len(self._pending) >= self.BATCH_FRAMES:
            self._flush()

    def _flush(self) -> None:
        chunk, self._pending = np.concatenate(self._pending), []
        previous, stream = self._chain, self._stream

        async def feed() -> None:
            if previous is not None:
                await previous
            await asyncio.to_thread(stream.feed, chunk)

        self._chain = asyncio.create_task(feed())

    async def finish(self) -> Transcript:
        if self._pending:
            self._flush()
        if self._chain is not None:
            await self._chain
        return await asyncio.to_thread(self._stream.finish)

    def abandon(self) -> None:
        """The call ended mid-utterance: finish in the background (the engine gets its
        decoder back); nothing is done with the words."""

        async def drop() -> None:
            with contextlib.suppress(Exception):
                await self.finish()

        task = asyncio.create_task(drop())
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)


@dataclass
class _Playback:
    message_id: str
    sentences: int
    interruptible: bool
    # A stored reply (its transcript row records what was heard), or a system prompt.
    stored: bool
    sent: int = 0
    played: int = 0
    first_audio_ms: float | None = None
    outcome: str = "playing"


class CallSession:
    def __init__(
        self,
        call: Call,
        *,
        audio: CallAudio,
        actions: CallActions,
        orchestrator: Orchestrator,
        stt: SpeechToText,
        tts: TextToSpeech,
        config: VoiceConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.call = call
        self.language = call.language
        self._audio = audio
        self._actions = actions
        self._orchestrator = orchestrator
        self._stt = stt
        self._tts = tts
        self._config = config
        self._clock = clock
        self._t0 = clock()
        self._endpointer = Endpointer(config.endpoint)
        self._pending = b""
        self._utterances: asyncio.Queue[tuple[Utterance, _Listening] | str] = asyncio.Queue()
        self._listening: _Listening | None = None
        self._worker: asyncio.Task[None] | None = None
        self._speaking: asyncio.Task[None] | None = None
        self._playbacks: dict[str, _Playback] = {}
        self._marks: dict[str, str] = {}  # mark name -> message id, until Twilio plays it
        self._speech_started: float | None = None
        self._offer: str | None = None  # a transfer offered and not yet taken
        self._turn = 0
        self._closed = False

    def now_ms(self) -> float:
        return (self._clock() - self._t0) * 1000

    # -- events from the transport ----------------------------------------------------------

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._work())
        await self._utterances.put("greeting")

    async def media(self, mulaw: bytes) -> None:
        """Caller audio: any number of μ-law bytes (Twilio sends 20 ms, 160 bytes)."""
        data = self._pending + mulaw
        whole = len(data) - len(data) % FRAME_SAMPLES
        self._pending = data[whole:]
        for start in range(0, whole, FRAME_SAMPLES):
            await self._frame(mulaw_decode(data[start : start + FRAME_SAMPLES]))

    async def dtmf(self, digit: str) -> None:
        if digit == self._config.transfer_digit and self._offer:
            await self._transfer(self._offer, reason=f"dtmf:{digit}")
        elif digit == self._config.staff_digit:
            await self._stop_playback("keypress")
            await self._utterances.put("staff")

    async def mark(self, name: str) -> None:
        """Twilio played the audio up to this mark (or dropped it on `clear`)."""
        message_id = self._marks.pop(name, None)
        playback = self._playbacks.get(message_id or "")
        if playback is None:
            return
        playback.played += 1
        if playback.played >= playback.sentences and playback.outcome == "playing":
            playback.outcome = "played"
            self._playbacks.pop(playback.message_id, None)
            await self._record(playback)

    async def close(self, reason: str) -> None:
        """The call or its stream ended: stop work, and leave a transcript that says what the
        caller heard. A turn already with the orchestrator finishes (its messages are stored),
        but nothing more is spoken."""
        if self._closed:
            return
        self._closed = True
        if self._listening is not None:
            self._listening.abandon()
            self._listening = None
        if self._speaking is not None:
            self._speaking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._speaking
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while not self._utterances.empty():
            item = self._utterances.get_nowait()
            if isinstance(item, tuple):
                item[1].abandon()
        for playback in self._playbacks.values():
            if playback.outcome == "playing":
                playback.outcome = "cut_off" if playback.played or playback.sent else "not_played"
            await self._record(playback, ended=reason)
        self._playbacks.clear()

    # -- the pipeline --------------------------------------------------------------------------

    async def _frame(self, pcm: np.ndarray[Any, Any]) -> None:
        now = self.now_ms()
        event = self._endpointer.push(pcm, now)
        if isinstance(event, SpeechStarted):
            self._speech_started = event.at_ms
            self._listening = _Listening(self._stt.stream(TELEPHONE_RATE, self.language))
            self._listening.add(event.audio)
        elif self._listening is not None:
            self._listening.add(pcm)
            if isinstance(event, Utterance):
                self._speech_started = None
                await self._utterances.put((event, self._listening))
                self._listening = None
        if (
            self._speech_started is not None
            and self._endpointer.in_speech
            and now - self._speech_started >= self._config.barge_in_ms
        ):
            await self._barge_in()

    async def _barge_in(self) -> None:
        current = [p for p in self._playbacks.values() if p.outcome == "playing"]
        if not current and (self._speaking is None or self._speaking.done()):
            return
        await self._stop_playback("barge_in")

    async def _stop_playback(self, why: str) -> None:
        speaking = self._speaking
        playing = [p for p in self._playbacks.values() if p.outcome == "playing"]
        if (speaking is None or speaking.done()) and not playing:
            return
        if any(not p.interruptible for p in playing):
            # Emergency and crisis instructions are heard to the end, whatever the caller says
            # or presses meanwhile; that is answered after them.
            return
        if speaking is not None and not speaking.done():
            speaking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await speaking
        await self._audio.clear()
        for playback in playing:
            playback.outcome = "interrupted" if why == "barge_in" else why
            await self._record(playback)
            self._playbacks.pop(playback.message_id, None)
        self._marks.clear()

    async def _work(self) -> None:
        while True:
            item = await self._utterances.get()
            try:
                if item == "greeting":
                    await self._say_system(phrase("voice_greeting", self.language))
                elif item == "staff":
                    await self._staff_requested()
                elif isinstance(item, tuple):
                    await self._answer(*item)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("a call turn failed")
                with contextlib.suppress(Exception):
                    await self._say_system(
                        phrase(
                            "voice_unavailable",
                            self.language,
                            emergency_number=self._config.emergency_number,
                        )
                    )

    async def _answer(self, utterance: Utterance, listening: _Listening) -> None:
        timing = TurnTiming(utterance.speech_ended_ms, utterance.endpointed_ms)
        started = time.perf_counter()
        # What recognition still had to do once the caller stopped (most of it ran while they
        # spoke).
        transcript = await listening.finish()
        timing.stt_ms = (time.perf_counter() - started) * 1000
        if not transcript.text:
            log.info("call turn: nothing recognized")
            await self._say_system(phrase("voice_not_heard", self.language), timing=timing)
            return
        self._turn += 1
        inbound = Inbound(
            channel=Channel.VOICE,
            sender_address=self.call.caller,
            text=transcript.text,
            language=self.language,
            vendor_message_id=f"{self.call.call_sid}:{self._turn}",
            vendor_ids={"call_sid": self.call.call_sid},
            metadata={
                "call_sid": self.call.call_sid,
                "voice": {
                    "speech_started_ms": round(utterance.started_ms),
                    "speech_ended_ms": round(utterance.speech_ended_ms),
                    "stt_ms": round(timing.stt_ms, 1),
                    "stt_engine": transcript.engine,
                    "confidence": transcript.confidence,
                },
            },
        )
        if self._offer and accepts_transfer(transcript.text):
            # Stored like every message, then acted on: the caller accepted the transfer.
            accepted = await self._orchestrator.accept(inbound)
            await self._actions.handled(accepted.message.id, "transfer_accepted")
            await self._transfer(self._offer, reason="spoken")
            return
        # An offer is for the next thing the caller says or presses; a "yes" later on is an
        # answer to something else.
        self._offer = None
        started = time.perf_counter()
        turn = asyncio.ensure_future(self._orchestrator.handle(inbound))
        try:
            # Shielded: a hang-up mid-turn still completes the stored turn.
            result = await asyncio.shield(turn)
        except asyncio.CancelledError:
            self._unheard(turn)
            raise
        except InvalidMessage as exc:
            log.info("call turn refused: %s", exc.code)
            return
        timing.dialogue_ms = (time.perf_counter() - started) * 1000
        await self._speak_turn(result, timing)

    def _unheard(self, turn: asyncio.Future[TurnResult]) -> None:
        """The call ended while the orchestrator answered: its replies are stored, and the
        transcript says the caller never heard them."""

        async def record() -> None:
            with contextlib.suppress(Exception):
                result = await turn
                for reply in result.replies:
                    await self._actions.annotate(
                        reply.id, {"playback": "not_played", "call_ended": "before_reply"}
                    )

        task = asyncio.create_task(record())
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

    async def _speak_turn(self, result: TurnResult, timing: TurnTiming) -> None:
        assessed = result.assessed
        safety = assessed is not None and assessed.level in ("emergency", "crisis")
        items: list[tuple[str | None, str, bool]] = [
            (reply.id, reply.text, not safety) for reply in result.replies
        ]
        if not items and result.state.mode == "staff":
            # Staff have the case and answer in writing; the caller is not left in silence.
            items.append((None, phrase("voice_staff_has_case", self.language), True))
        if assessed is not None and assessed.level == "emergency" and self._config.oncall_number:
            self._offer = "oncall"
            items.append(
                (
                    None,
                    phrase(
                        "voice_offer_transfer", self.language, digit=self._config.transfer_digit
                    ),
                    False,
                )
            )
        await self._play(items, timing)
        if timing.first_audio_ms is not None:
            with contextlib.suppress(Exception):
                await self._actions.annotate(result.inbound.id, _turn_figures(timing))

    async def _staff_requested(self) -> None:
        await self._actions.staff_requested(self.call.call_sid)
        if self._config.staff_number:
            await self._transfer("staff", reason=f"dtmf:{self._config.staff_digit}")
            return
        await self._say_system(phrase("voice_staff_requested", self.language))

    async def _transfer(self, target: str, *, reason: str) -> None:
        self._offer = None
        log.info("call transfer requested (%s, %s)", target, reason)
        await self._actions.transfer(self.call.call_sid, target, self.language)

    async def _say_system(self, text: str, *, timing: TurnTiming | None = None) -> None:
        await self._play([(None, text, True)], timing)

    async def _play(
        self, items: list[tuple[str | None, str, bool]], timing: TurnTiming | None
    ) -> None:
        if self._closed:
            return
        self._speaking = asyncio.create_task(self._speak(items, timing))
        with contextlib.suppress(asyncio.CancelledError):
            await self._speaking

    async def _speak(
        self, items: list[tuple[str | None, str, bool]], timing: TurnTiming | None
    ) -> None:
        pieces: list[tuple[_Playback, str, int]] = []
        for index, (message_id, text, interruptible) in enumerate(items):
            key = message_id or f"say-{self.call.call_sid}-{self.now_ms():.0f}-{index}"
            parts = sentences(text)
            playback = _Playback(key, len(parts), interruptible, stored=message_id is not None)
            # System prompts are not stored messages, but barge-in treats them alike.
            self._playbacks[key] = playback
            pieces.extend((playback, part, i) for i, part in enumerate(parts))
        if not pieces:
            return
        # Text-to-speech for the next sentence runs while the current one is sent and heard.
        upcoming = asyncio.create_task(self._synthesize(pieces[0][1]))
        for position, (playback, _, index) in enumerate(pieces):
            started = time.perf_counter()
            audio = await upcoming
            if timing is not None and position == 0:
                timing.tts_first_ms = (time.perf_counter() - started) * 1000
            if position + 1 < len(pieces):
                upcoming = asyncio.create_task(self._synthesize(pieces[position + 1][1]))
            await self._audio.send_audio(audio)
            if playback.first_audio_ms is None:
                playback.first_audio_ms = self.now_ms()
                if timing is not None and timing.first_audio_ms is None:
                    timing.first_audio_ms = playback.first_audio_ms
            name = f"{playback.message_id}:{index}"
            self._marks[name] = playback.message_id
            playback.sent += 1
            await self._audio.send_mark(name)

    async def _synthesize(self, text: str) -> list[bytes]:
        pcm, rate = await asyncio.to_thread(self._tts.synthesize, text, self.language)
        return frames(mulaw_encode(resample(pcm, rate, TELEPHONE_RATE)))

    async def _record(self, playback: _Playback, *, ended: str | None = None) -> None:
        if not playback.stored:
            return
        voice: dict[str, Any] = {
            "playback": playback.outcome,
            "sentences": playback.sentences,
            "sentences_played": playback.played,
            "first_audio_ms": None
            if playback.first_audio_ms is None
            else round(playback.first_audio_ms),
        }
        if ended:
            voice["call_ended"] = ended
        try:
            await self._actions.annotate(playback.message_id, voice)
        except Exception:
            log.warning("could not record a reply's playback", exc_info=True)


def _turn_figures(timing: TurnTiming) -> dict[str, Any]:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    return {
        "endpointed_ms": round(timing.endpointed_ms),
        "first_audio_ms": rounded(timing.first_audio_ms),
        "latency_ms": rounded(timing.first_audio_latency_ms),
        "overhead_ms": rounded(timing.overhead_ms),
        "dialogue_ms": rounded(timing.dialogue_ms),
        "tts_first_ms": rounded(timing.tts_first_ms),
    }
