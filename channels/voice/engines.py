"""Speech-to-text and text-to-speech engines behind two small interfaces, chosen by settings.

- speech-to-text: PocketSphinx (its wheel carries an English model) by default; Whisper, on
  the GPU when present, in production.
- text-to-speech: espeak-ng (Debian package) by default; a Coqui TTS model in production.

Models are loaded from configured paths only; nothing is fetched at run time. Engine calls block
(they are CPU or GPU work), so the call pipeline runs them in worker threads; each engine keeps
what is not thread-safe (a PocketSphinx decoder, a Whisper model on one device) behind a pool
or a lock.
"""

from __future__ import annotations

import io
import logging
import queue
import shutil
import subprocess
import threading
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from channels.voice.audio import PCM, resample
from core.settings import Settings

log = logging.getLogger(__name__)


class EngineUnavailable(RuntimeError):
    """An engine cannot start: its package, binary or model is missing. Says what to do."""


@dataclass(frozen=True)
class Transcript:
    text: str
    engine: str
    confidence: float | None = None


class RecognitionStream(Protocol):
    """One utterance recognized while it is spoken: audio goes in as it arrives (in order, from
    a worker thread), and the transcript is ready soon after the caller stops."""

    def feed(self, pcm: PCM) -> None: ...

    def finish(self) -> Transcript: ...


class SpeechToText(Protocol):
    name: str

    def transcribe(self, pcm: PCM, rate: int, language: str) -> Transcript: ...

    def stream(self, rate: int, language: str) -> RecognitionStream: ...


class BufferedStream:
    """For engines that only take whole utterances (Whisper): keeps the audio, transcribes it
    at the end."""

    def __init__(self, engine: SpeechToText, rate: int, language: str) -> None:
        self._engine, self._rate, self._language = engine, rate, language
        self._chunks: list[PCM] = []

    def feed(self, pcm: PCM) -> None:
        self._chunks.append(pcm)

    def finish(self) -> Transcript:
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return self._engine.transcribe(audio, self._rate, self._language)


class TextToSpeech(Protocol):
    name: str

    def synthesize(self, text: str, language: str) -> tuple[PCM, int]: ...


# -- speech-to-text ------------------------------------------------------------------------------


class PocketSphinx:
    """CMU PocketSphinx: small, CPU only, English. With a JSGF grammar (a list of phrases a
    deployment expects, or a test's) recognition is constrained to it, fast and repeatable."""

    name = "pocketsphinx"
    RATE = 16000  # the bundled acoustic model's rate; phone audio is upsampled to it

    def __init__(
        self, *, model_dir: str | None = None, grammar: str | None = None, workers: int = 2
    ) -> None:
        try:
            from pocketsphinx import Decoder, get_model_path
        except ImportError as exc:  # pragma: no cover - a dependency of the project
            raise EngineUnavailable("PocketSphinx is not installed: run `make deps`.") from exc
        # The wheel's layout: model/en-us/{en-us/ (acoustic model), cmudict-en-us.dict,
        # en-us.lm.bin}.
        base = Path(model_dir or get_model_path()) / "en-us"
        options: dict[str, Any] = {
            "hmm": str(base / "en-us"),
            "dict": str(base / "cmudict-en-us.dict"),
            "samprate": self.RATE,
            "loglevel": "FATAL",
        }
        if not Path(options["hmm"]).is_dir():
            raise EngineUnavailable(
                f"No PocketSphinx acoustic model under {base}: set VOICE_STT_MODEL_PATH to a "
                "folder laid out like the pocketsphinx wheel's model/ (en-us/en-us/, "
                "en-us/cmudict-en-us.dict, en-us/en-us.lm.bin), or unset it for the bundled one."
            )
        if grammar:
            if not Path(grammar).is_file():
                raise EngineUnavailable(f"VOICE_STT_GRAMMAR: no such JSGF file: {grammar}")
            # A grammar is small: wide beams cost little and keep long phrases from being
            # pruned before their last word.
            options.update(jsgf=grammar, bestpath=False, beam=1e-80, wbeam=1e-60, pbeam=1e-80)
        else:
            options["lm"] = str(base / "en-us.lm.bin")
        self._options = options
        self._make = Decoder
        # Decoders are not thread-safe and a streamed utterance holds one while the caller
        # speaks: a pool that grows when every decoder is busy (each costs ~0.3 s to load).
        self._decoders: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(max(1, workers)):
            self._decoders.put(Decoder(**options))
        # Live decoding normalizes the audio with a running cepstral mean that starts from a
        # generic value, and is poor for the first utterance a decoder hears. So the first
        # utterance this process recognizes is decoded again, whole, by a decoder that has
        # heard nothing yet (the exact mean), and that mean starts every later stream.
        self._calibrator: Any = Decoder(**options)
        self._calibrated_cmn: str | None = None
        self._lock = threading.Lock()

    def _decoder(self) -> Any:
        try:
            return self._decoders.get_nowait()
        except queue.Empty:
            return self._make(**self._options)

    def transcribe(self, pcm: PCM, rate: int, language: str) -> Transcript:
        audio = resample(pcm, rate, self.RATE)
        decoder = self._decoder()
        try:
            decoder.start_utt()
            decoder.process_raw(audio.tobytes(), full_utt=True)
            decoder.end_utt()
            hypothesis = decoder.hyp()
        finally:
            self._release(decoder)
        return Transcript(hypothesis.hypstr.strip() if hypothesis else "", self.name)

    def stream(self, rate: int, language: str) -> _SphinxStream:
        return _SphinxStream(self, self._decoder(), rate)

    def _release(self, decoder: Any) -> None:
        self._decoders.put(decoder)

    def _take_calibrator(self) -> Any:
        with self._lock:
            calibrator, self._calibrator = self._calibrator, None
        return calibrator


class _SphinxStream:
    # Samples at the end of the resampled audio held back until more arrives: the polyphase
    # filter's output there still depends on input not yet received.
    HOLD = 64

    def __init__(self, engine: PocketSphinx, decoder: Any, rate: int) -> None:
        self._engine, self._decoder, self._rate = engine, decoder, rate
        self._audio: list[PCM] = []
        self._fed = 0
        if engine._calibrated_cmn is not None:
            decoder.set_cmn(engine._calibrated_cmn)
        decoder.start_utt()

    def feed(self, pcm: PCM) -> None:
        self._audio.append(pcm)
        self._process(final=False)

    def finish(self) -> Transcript:
        decoder = self._decoder
        try:
            self._process(final=True)
            decoder.end_utt()
            hypothesis = decoder.hyp()
            calibrator = self._engine._take_calibrator()
            if calibrator is not None:
                whole = resample(np.concatenate(self._audio), self._rate, PocketSphinx.RATE)
                calibrator.start_utt()
                calibrator.process_raw(whole.tobytes(), full_utt=True)
                calibrator.end_utt()
                hypothesis = calibrator.hyp()
                self._engine._calibrated_cmn = calibrator.get_cmn(False)
                self._engine._release(calibrator)
        finally:
            self._engine._release(decoder)
        return Transcript(hypothesis.hypstr.strip() if hypothesis else "", PocketSphinx.name)

    def _process(self, *, final: bool) -> None:
        if not self._audio:
            return
        # Resampling the utterance so far each time keeps the audio exactly what a one-shot
        # resampling gives (milliseconds for a few seconds of speech).
        upsampled = resample(np.concatenate(self._audio), self._rate, PocketSphinx.RATE)
        end = len(upsampled) if final else max(self._fed, len(upsampled) - self.HOLD)
        if end > self._fed:
            self._decoder.process_raw(upsampled[self._fed : end].tobytes(), full_utt=False)
            self._fed = end


class Whisper:
    """OpenAI Whisper (openai-whisper) from a checkpoint file, on CUDA when present."""

    name = "whisper"
    RATE = 16000

    def __init__(self, model: Any, *, device: str) -> None:
        self._model = model
        self._device = device
        # One model on one device decodes one utterance at a time.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, checkpoint: str, *, device: str = "auto") -> Whisper:
        try:
            import torch
            import whisper
        except ImportError as exc:
            raise EngineUnavailable(
                "Whisper is not installed: run `make deps` (openai-whisper)."
            ) from exc
        if not Path(checkpoint).is_file():
            raise EngineUnavailable(
                f"VOICE_STT_MODEL_PATH: no Whisper checkpoint at {checkpoint}. Download one "
                "(e.g. small.en.pt or large-v3-turbo.pt) on a machine with internet access "
                "and copy it there; the server never downloads models."
            )
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(whisper.load_model(checkpoint, device=device), device=device)

    def stream(self, rate: int, language: str) -> RecognitionStream:
        return BufferedStream(self, rate, language)

    def transcribe(self, pcm: PCM, rate: int, language: str) -> Transcript:
        import whisper

        audio = resample(pcm, rate, self.RATE).astype(np.float32) / 32768.0
        model = self._model
        mel = whisper.log_mel_spectrogram(
            whisper.pad_or_trim(audio), n_mels=model.dims.n_mels, device=model.device
        )
        options = whisper.DecodingOptions(
            language=language if model.is_multilingual else "en",
            task="transcribe",
            without_timestamps=True,
            fp16=self._device == "cuda",
            temperature=0.0,
        )
        with self._lock:
            result = whisper.decode(model, mel, options)
        text = "" if result.no_speech_prob > 0.6 else result.text.strip()
        confidence = float(np.exp(result.avg_logprob))
        return Transcript(text, self.name, confidence if np.isfinite(confidence) else None)


def speech_to_text(settings: Settings) -> SpeechToText:
    if settings.voice_stt_engine == "whisper":
        if not settings.voice_stt_model_path:
            raise EngineUnavailable(
                "VOICE_STT_ENGINE=whisper needs VOICE_STT_MODEL_PATH (a Whisper .pt checkpoint)."
            )
        return Whisper.load(settings.voice_stt_model_path, device=settings.voice_stt_device)
    return PocketSphinx(
        model_dir=settings.voice_stt_model_path,
        grammar=settings.voice_stt_grammar,
        workers=settings.voice_stt_workers,
    )


# -- text-to-speech ------------------------------------------------------------------------------


class Espeak:
    """espeak-ng, the Debian package: formant synthesis, a few milliseconds a sentence."""

    name = "espeak-ng"

    def __init__(self, *, voices: dict[str, str], words_per_minute: int = 165) -> None:
        binary = shutil.which("espeak-ng")
        if binary is None:
            raise EngineUnavailable(
                "espeak-ng is not installed: run `make deps` (it installs the Debian package), "
                "or `apt-get install espeak-ng`."
            )
        self._binary = binary
        self._voices = voices
        self._wpm = words_per_minute

    def synthesize(self, text: str, language: str) -> tuple[PCM, int]:
        voice = self._voices.get(language) or self._voices.get("en") or "en-us"
        # The text goes in on stdin: a reply that starts with "-" is never read as an option.
        result = subprocess.run(  # noqa: S603 - fixed binary, no shell
            [self._binary, "-v", voice, "-s", str(self._wpm), "--stdout"],
            input=text.encode("utf-8"),
            capture_output=True,
            check=True,
            timeout=30,
        )
        return read_wav(result.stdout)


class Coqui:
    """A Coqui TTS model (package `coqui-tts`, installed separately: it pins its own versions of
    several libraries) from a checkpoint and its config.json."""

    name = "coqui"

    def __init__(self, synthesizer: Any) -> None:
        self._synthesizer = synthesizer
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model_path: str, config_path: str | None, *, device: str = "auto") -> Coqui:
        try:
            import torch
            from TTS.utils.synthesizer import Synthesizer
        except ImportError as exc:
            raise EngineUnavailable(
                "VOICE_TTS_ENGINE=coqui needs the coqui-tts package: "
                "`.venv/bin/pip install coqui-tts` (docs/VOICE.md)."
            ) from exc
        config = config_path or str(Path(model_path).with_name("config.json"))
        for path in (model_path, config):
            if not Path(path).is_file():
                raise EngineUnavailable(f"Coqui TTS: no such file {path} (VOICE_TTS_MODEL_PATH).")
        use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
        return cls(
            Synthesizer(tts_checkpoint=model_path, tts_config_path=config, use_cuda=use_cuda)
        )

    def synthesize(self, text: str, language: str) -> tuple[PCM, int]:
        with self._lock:
            wav = self._synthesizer.tts(text)
            rate = int(self._synthesizer.output_sample_rate)
        samples = np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0) * 32767
        return samples.astype(np.int16), rate


def text_to_speech(settings: Settings) -> TextToSpeech:
    if settings.voice_tts_engine == "coqui":
        if not settings.voice_tts_model_path:
            raise EngineUnavailable(
                "VOICE_TTS_ENGINE=coqui needs VOICE_TTS_MODEL_PATH (model file) "
                "and VOICE_TTS_CONFIG_PATH."
            )
        return Coqui.load(settings.voice_tts_model_path, settings.voice_tts_config_path)
    return Espeak(voices=settings.voice_tts_voices, words_per_minute=settings.voice_tts_wpm)


def read_wav(data: bytes) -> tuple[PCM, int]:
    """Mono 16-bit PCM out of a WAV file. espeak-ng writes its stream's length as unknown
    (0x7fffffff), so the frames are read to the end rather than by the header's count."""
    with wave.open(io.BytesIO(data)) as reader:
        if reader.getsampwidth() != 2:
            raise ValueError("expected 16-bit PCM audio")
        rate, channels = reader.getframerate(), reader.getnchannels()
        raw = reader.readframes(2**31 - 1)
    samples = np.frombuffer(raw[: len(raw) // 2 * 2], dtype=np.int16)
    if channels > 1:
        samples = samples.reshape(-1, channels)[:, 0].copy()
    return samples, rate
