"""Audio at the telephone edge: G.711 μ-law, resampling and 20 ms frames.

Twilio Media Streams carry 8 kHz mono μ-law in both directions. Inside the pipeline audio is
one format only, 16-bit signed PCM (numpy int16) at a stated rate; codecs and rate changes
happen here and nowhere else.
"""

from __future__ import annotations

from math import gcd

import numpy as np
from numpy.typing import NDArray
from scipy.signal import resample_poly

PCM = NDArray[np.int16]

TELEPHONE_RATE = 8000
FRAME_MS = 20
# One 20 ms frame at 8 kHz: 160 samples, 160 μ-law bytes (what Twilio sends per media message).
FRAME_SAMPLES = TELEPHONE_RATE * FRAME_MS // 1000

_BIAS = 0x84
_CLIP = 32635


def _decode_table() -> NDArray[np.int16]:
    # ITU-T G.711 μ-law expansion for all 256 code words.
    codes = ~np.arange(256, dtype=np.uint8)
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = ((mantissa.astype(np.int32) << 3) + _BIAS) << exponent
    values = np.where(sign != 0, _BIAS - magnitude, magnitude - _BIAS)
    return values.astype(np.int16)


_DECODE = _decode_table()


def _encode_table() -> NDArray[np.uint8]:
    # μ-law compression for every 16-bit sample value, indexed by sample + 32768.
    samples = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(samples < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(samples), _CLIP) + _BIAS
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    encoded: NDArray[np.uint8] = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)
    return encoded


_ENCODE = _encode_table()


def mulaw_decode(data: bytes) -> PCM:
    return _DECODE[np.frombuffer(data, dtype=np.uint8)]


def mulaw_encode(pcm: PCM) -> bytes:
    return _ENCODE[pcm.astype(np.int32) + 32768].tobytes()


def resample(pcm: PCM, from_rate: int, to_rate: int) -> PCM:
    """Polyphase resampling (anti-aliased), e.g. a TTS engine's 22.05 kHz to the phone's 8 kHz."""
    if from_rate == to_rate or pcm.size == 0:
        return pcm
    common = gcd(from_rate, to_rate)
    out = resample_poly(pcm.astype(np.float32), to_rate // common, from_rate // common)
    resampled: PCM = np.clip(np.rint(out), -32768, 32767).astype(np.int16)
    return resampled


def frames(mulaw: bytes) -> list[bytes]:
    """20 ms frames for the media stream, the last one padded with μ-law silence."""
    size = FRAME_SAMPLES
    padded = mulaw + b"\xff" * (-len(mulaw) % size)
    return [padded[i : i + size] for i in range(0, len(padded), size)]
