"""Per-message language detection, restricted to the languages the clinic supports.

Short messages ("ok", "hola") are where statistical identifiers guess; there the conversation's
current language wins unless a word is an unambiguous marker of one language.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from py3langid.langid import _load_identifier

# Short replies that statistical detection cannot place but a person can.
SHORT_MESSAGE_MARKERS: dict[str, frozenset[str]] = {
    "es": frozenset(
        [
            "hola",
            "buenas",
            "buenos",
            "gracias",
            "adios",
            "adiós",
            "sí",
            "vale",
            "ayuda",
            "porfa",
            "favor",
            "días",
            "dias",
            "tardes",
            "noches",
        ]
    ),
    "en": frozenset(
        [
            "hi",
            "hello",
            "hey",
            "yes",
            "yeah",
            "yep",
            "thanks",
            "thank",
            "bye",
            "goodbye",
            "okay",
            "please",
            "help",
        ]
    ),
}
CONFIDENT = 0.9
_WORD = re.compile(r"\w+", re.UNICODE)


@lru_cache(maxsize=8)
def _identifier(languages: tuple[str, ...]) -> Any:
    return _load_identifier(norm_probs=True, langs=list(languages))


def detect_language(text: str, *, supported: list[str], fallback: str) -> str:
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return fallback
    if len(words) <= 3:
        for language in supported:
            if any(w in SHORT_MESSAGE_MARKERS.get(language, ()) for w in words):
                return language
    language, probability = _identifier(tuple(sorted(supported))).classify(text)
    return str(language) if probability >= CONFIDENT else fallback
