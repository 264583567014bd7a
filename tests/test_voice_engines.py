"""The speech engines and the audio edge, without the app: G.711 μ-law, resampling, the
endpointer on real speech, espeak-ng, PocketSphinx, and Whisper's real decoding path on a model
built with random weights (no download; the same code loads a real checkpoint)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import whisper
from whisper.model import ModelDimensions

from channels.voice.audio import (
    FRAME_SAMPLES,
    frames,
    mulaw_decode,
    mulaw_encode,
    resample,
)
from channels.voice.engines import EngineUnavailable, Espeak, PocketSphinx, Whisper, read_wav
from channels.voice.vad import EndpointConfig, Endpointer, SpeechStarted, Utterance

GRAMMAR = Path(__file__).parent / "voice" / "patient.gram"


@pytest.fixture(scope="module")
def tts() -> Espeak:
    return Espeak(voices={"en": "en-us", "es": "es-419"})


def test_mulaw_round_trip_is_within_g711_quantization() -> None:
    samples = np.linspace(-32768, 32767, 5001).astype(np.int16)
    decoded = mulaw_decode(mulaw_encode(samples))
    # μ-law keeps about 2-3 % relative error, and a small absolute error near zero.
    error = np.abs(decoded.astype(np.int32) - samples.astype(np.int32))
    assert np.all(error <= np.maximum(np.abs(samples.astype(np.int32)) * 0.035, 16))
    # The code words for silence and full scale are G.711's.
    assert mulaw_encode(np.zeros(1, np.int16)) == b"\xff"
    assert mulaw_decode(b"\xff")[0] == 0 and mulaw_decode(b"\x00")[0] == -32124


def test_frames_are_20_ms_and_the_last_is_padded_with_silence() -> None:
    chunks = frames(b"\x01" * 400)
    assert [len(c) for c in chunks] == [FRAME_SAMPLES] * 3
    assert chunks[-1].endswith(b"\xff" * 80)


def test_resampling_keeps_a_tone_and_its_length() -> None:
    rate = 22050
    t = np.arange(rate) / rate
    tone = (np.sin(2 * np.pi * 440 * t) * 10000).astype(np.int16)
    out = resample(tone, rate, 8000)
    assert len(out) == 8000
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(int(np.argmax(spectrum)) - 440) <= 1


def test_espeak_speaks_each_configured_language(tts: Espeak) -> None:
    english, rate = tts.synthesize("-n Call the clinic", "en")  # a leading dash is text
    spanish, _ = tts.synthesize("Llame a la clínica", "es")
    assert rate == 22050 and len(english) > rate // 2 and len(spanish) > rate // 2
    assert np.abs(english).max() > 1000


def test_the_endpointer_finds_one_utterance_and_its_end(tts: Espeak) -> None:
    pcm, rate = tts.synthesize("what are your opening hours", "en")
    speech = resample(pcm, rate, 8000)
    silence = np.zeros(8000, np.int16)
    audio = np.concatenate([silence, speech, silence])
    endpointer = Endpointer(EndpointConfig(end_silence_ms=500))
    events = []
    for index in range(len(audio) // FRAME_SAMPLES):
        frame = audio[index * FRAME_SAMPLES : (index + 1) * FRAME_SAMPLES]
        event = endpointer.push(frame, now_ms=index * 20.0)
        if event is not None:
            events.append(event)
    assert [type(e) for e in events] == [SpeechStarted, Utterance]
    started, utterance = events
    assert isinstance(started, SpeechStarted) and isinstance(utterance, Utterance)
    # espeak-ng pads its audio with silence: the speech is where the samples are loud.
    loud = np.nonzero(np.abs(speech) > 500)[0]
    speech_start_ms, speech_end_ms = 1000 + loud[0] / 8, 1000 + loud[-1] / 8
    assert abs(started.at_ms - speech_start_ms) <= 120
    assert abs(utterance.speech_ended_ms - speech_end_ms) <= 200
    assert 500 <= utterance.endpointed_ms - utterance.speech_ended_ms <= 540
    # Pre-roll: the utterance starts a little before the detected onset.
    assert len(utterance.pcm) >= (utterance.endpointed_ms - started.at_ms) * 8


def test_pocketsphinx_with_a_grammar_recognizes_telephone_audio(tts: Espeak) -> None:
    stt = PocketSphinx(grammar=str(GRAMMAR), workers=1)
    for sentence in ("i want to book an appointment", "my father is not breathing"):
        pcm, rate = tts.synthesize(sentence, "en")
        telephone = mulaw_decode(mulaw_encode(resample(pcm, rate, 8000)))
        assert stt.transcribe(telephone, 8000, "en").text == sentence


def test_engines_that_cannot_load_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable, match="VOICE_STT_GRAMMAR"):
        PocketSphinx(grammar=str(tmp_path / "missing.gram"))
    with pytest.raises(EngineUnavailable, match="VOICE_STT_MODEL_PATH"):
        PocketSphinx(model_dir=str(tmp_path))
    with pytest.raises(EngineUnavailable, match="never downloads"):
        Whisper.load(str(tmp_path / "small.en.pt"))


def test_wav_reader_takes_espeaks_unknown_length_stream() -> None:
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes(np.array([[1, 2], [3, 4]], np.int16).tobytes())
    samples, rate = read_wav(buffer.getvalue())
    assert rate == 16000 and samples.tolist() == [1, 3]


def test_whisper_decodes_with_random_weights_through_the_real_path(
    tmp_path: Path, tts: Espeak
) -> None:
    """A tiny multilingual model: real mel front end, encoder, tokenizer and greedy decoder,
    saved and loaded as a checkpoint the way a real one is."""
    torch.manual_seed(0)
    dims = ModelDimensions(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=64,
        n_audio_head=2,
        n_audio_layer=1,
        n_vocab=51865,
        n_text_ctx=64,
        n_text_state=64,
        n_text_head=2,
        n_text_layer=1,
    )
    model = whisper.model.Whisper(dims)
    # Whisper allocates its learned text positions uninitialized (a checkpoint fills them).
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    checkpoint = tmp_path / "random.pt"
    torch.save(
        {"dims": dataclasses.asdict(dims), "model_state_dict": model.state_dict()}, checkpoint
    )
    stt = Whisper.load(str(checkpoint), device="cpu")
    pcm, rate = tts.synthesize("what are your opening hours", "en")
    telephone = mulaw_decode(mulaw_encode(resample(pcm, rate, 8000)))
    transcript = stt.transcribe(telephone, 8000, "en")
    assert transcript.engine == "whisper"
    assert isinstance(transcript.text, str)
    assert transcript.confidence is not None and 0 < transcript.confidence <= 1
