"""Text hygiene for patient messages: what we store, and what the dialogue layers read."""

from __future__ import annotations

import re
import unicodedata

# Zero-width and bidi-control characters can hide words from matching ("ch\u200dest pain")
# or disguise text on screen; they carry no meaning in a patient message.
_INVISIBLE = re.compile("[\u200b-\u200f\u2060-\u2064\ufeff\u202a-\u202e\u2066-\u2069\u00ad]")
# C0/C1 control characters except tab and newline; NUL also cannot be stored in PostgreSQL.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def clean_for_storage(text: str) -> str:
    """The patient's words verbatim, minus bytes no database or screen should receive."""
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def normalize_for_understanding(text: str) -> str:
    """What safety rules and Rasa read: NFC, no invisible characters, tidy whitespace."""
    text = unicodedata.normalize("NFKC", clean_for_storage(text))
    text = _INVISIBLE.sub("", text)
    return re.sub(r"\s+", " ", text).strip()


def is_blank(text: str) -> bool:
    return not clean_for_storage(text).strip()
