"""Voice activity detection and end-of-utterance, frame by frame.

WebRTC's VAD (a GMM classifier, microseconds per frame) labels each 20 ms telephone frame
speech or not. Speech starts after a few voiced frames in a short window (a cough or a click is
one frame); it ends after `end_silence_ms` of silence. What the caller said reaches
speech-to-text with a little audio before the onset, so a soft first syllable is not clipped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import webrtcvad

from channels.voice.audio import FRAME_MS, PCM, TELEPHONE_RATE


@dataclass(frozen=True)
class EndpointConfig:
    aggressiveness: int = 2  # 0 (keeps most audio as speech) .. 3 (strictest)
    start_frames: int = 3  # voiced frames among the last `start_window` to call it speech
    start_window: int = 5
    end_silence_ms: int = 500
    pre_roll_ms: int = 200
    max_utterance_ms: int = 20_000


@dataclass(frozen=True)
class SpeechStarted:
    at_ms: float  # call time of the first voiced frame
    audio: PCM  # from `pre_roll_ms` before the onset up to this frame: recognition starts here


@dataclass(frozen=True)
class Utterance:
    pcm: PCM  # 8 kHz, from `pre_roll_ms` before the onset to the end of the trailing silence
    started_ms: float
    # Call time when the last voiced frame arrived: "the end of the caller's speech".
    speech_ended_ms: float
    # Call time when the silence after it was long enough to decide the turn was over.
    endpointed_ms: float


@dataclass
class Endpointer:
    config: EndpointConfig = field(default_factory=EndpointConfig)

    def __post_init__(self) -> None:
        self._vad = webrtcvad.Vad(self.config.aggressiveness)
        pre_roll = max(1, self.config.pre_roll_ms // FRAME_MS)
        self._recent: deque[tuple[PCM, bool]] = deque(
            maxlen=max(pre_roll, self.config.start_window)
        )
        self._speech: list[PCM] = []
        self._in_speech = False
        self._silent_ms = 0.0
        self._started_ms = 0.0
        self._last_voiced_ms = 0.0

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    def voiced(self, frame: PCM) -> bool:
        return bool(self._vad.is_speech(frame.tobytes(), TELEPHONE_RATE))

    def push(self, frame: PCM, now_ms: float) -> SpeechStarted | Utterance | None:
        """One 20 ms frame (160 samples at 8 kHz) received at call time `now_ms`."""
        voiced = self.voiced(frame)
        if not self._in_speech:
            self._recent.append((frame, voiced))
            window = list(self._recent)[-self.config.start_window :]
            if sum(v for _, v in window) < self.config.start_frames:
                return None
            self._in_speech = True
            pre_roll = max(1, self.config.pre_roll_ms // FRAME_MS)
            self._speech = [f for f, _ in list(self._recent)[-pre_roll:]]
            self._recent.clear()
            self._silent_ms = 0.0
            first_voiced = next(i for i, (_, v) in enumerate(window) if v)
            self._started_ms = now_ms - (len(window) - 1 - first_voiced) * FRAME_MS
            self._last_voiced_ms = now_ms
            return SpeechStarted(self._started_ms, np.concatenate(self._speech))
        self._speech.append(frame)
        if voiced:
            self._silent_ms = 0.0
            self._last_voiced_ms = now_ms
        else:
            self._silent_ms += FRAME_MS
        too_long = now_ms - self._started_ms >= self.config.max_utterance_ms
        if self._silent_ms < self.config.end_silence_ms and not too_long:
            return None
        utterance = Utterance(
            pcm=np.concatenate(self._speech),
            started_ms=self._started_ms,
            speech_ended_ms=self._last_voiced_ms,
            endpointed_ms=now_ms,
        )
        self.reset()
        return utterance

    def reset(self) -> None:
        self._in_speech = False
        self._speech = []
        self._recent.clear()
        self._silent_ms = 0.0
