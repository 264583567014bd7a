"""How our replies are fitted to SMS: GSM-7 friendly characters, segment counts, splitting.

Carriers bill and deliver SMS per segment. One character outside the GSM 03.38 alphabet (a
curly quote pasted from a document, an em dash written by a model) switches the whole message
to UCS-2, which cuts a segment from 160 to 70 characters, so we normalise typography first.
Pure functions, standard library only.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from typing import Final, Literal

Encoding = Literal["GSM-7", "UCS-2"]

# GSM 03.38 default alphabet, one table row per line. ESC (0x1B, between Ξ and Æ) is left
# out: it introduces the extension table and is never a character of its own.
_GSM_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each character is sent as ESC + code, so it costs two septets.
_GSM_EXTENSION: Final = frozenset("\x0c^{}\\[~]|€")
_GSM_CHARS: Final = _GSM_BASIC | _GSM_EXTENSION

# (single message, per part once concatenated): the user-data header of a concatenated
# message takes 6 octets, i.e. 7 septets or 3 UTF-16 code units.
_GSM_PART_SIZE: Final = (160, 153)
_UCS2_PART_SIZE: Final = (70, 67)


def _replacements() -> dict[int, str]:
    table: dict[str, str] = {
        # Typographic quotes and primes: the straight forms are in GSM-7.
        **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032\u2039\u203a\u00b4\u0060\u02bc", "'"),
        **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb", '"'),
        # Hyphens, dashes, minus signs and list bullets all read fine as a hyphen-minus.
        **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2043\ufe63\uff0d", "-"),
        **dict.fromkeys("\u2022\u2023\u25e6\u2219\u00b7", "-"),
        # Unicode spaces (no-break, thin, ideographic...) and tab, which GSM-7 also lacks.
        **dict.fromkeys("\t\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006", " "),
        **dict.fromkeys("\u2007\u2008\u2009\u200a\u202f\u205f\u3000", " "),
        **dict.fromkeys("\u2028\u2029\u0085", "\n"),
        # Invisible characters that would silently force UCS-2. Zero-width (non-)joiners are
        # kept: they hold emoji sequences together.
        **dict.fromkeys("\u200b\u00ad\u2060\ufeff", ""),
        "\u2026": "...",
        "\u2122": "TM",
        "\u00a9": "(C)",
        "\u00ae": "(R)",
        "\u2264": "<=",
        "\u2265": ">=",
        "\u2044": "/",
        "\u2215": "/",
        "\u00d7": "x",
    }
    return {ord(char): replacement for char, replacement in table.items()}


_TO_GSM7: Final = _replacements()


def to_gsm7(text: str) -> str:
    """Replace typography that forces UCS-2 by its GSM-7 look-alike; everything else stays.

    Accented letters are never stripped: "información" keeps its "ó" and goes out as UCS-2,
    because a misspelt reply to a patient costs more than an extra segment. Emoji stay too.
    Text is also composed (NFC), so an "e" followed by a combining accent becomes the GSM-7
    "é" it looks like.
    """
    return unicodedata.normalize("NFC", text.translate(_TO_GSM7))


def encoding(text: str) -> Encoding:
    """The encoding a carrier will use: GSM-7 only if every character is in GSM 03.38."""
    return "GSM-7" if all(char in _GSM_CHARS for char in text) else "UCS-2"


def segments(text: str) -> int:
    """How many SMS segments `text` is billed as (an empty message is still one)."""
    if encoding(text) == "GSM-7":
        sizes = [2 if char in _GSM_EXTENSION else 1 for char in text]
        single, per_part = _GSM_PART_SIZE
    else:
        # UTF-16 code units: characters outside the BMP (most emoji) are surrogate pairs.
        sizes = [2 if ord(char) > 0xFFFF else 1 for char in text]
        single, per_part = _UCS2_PART_SIZE
    return _count_parts(sizes, single, per_part)


def _count_parts(sizes: list[int], single: int, per_part: int) -> int:
    if sum(sizes) <= single:
        return 1
    # Phones never split an escape sequence or a surrogate pair across two parts, so a part
    # may end one unit short; packing character by character reproduces that.
    parts, used = 1, 0
    for size in sizes:
        if used + size > per_part:
            parts, used = parts + 1, 0
        used += size
    return parts


# --- Sentence boundaries -----------------------------------------------------------------

# Terminal punctuation, optional closing quotes/brackets, then whitespace. Requiring the
# whitespace is what keeps "38.5", "e.g.," and "www.clinic.org" in one piece.
_SENTENCE_END: Final = re.compile(r"(?P<stop>[.!?]+)[\"')\]]*(?=\s)")
# Words whose trailing dot is not the end of a sentence (compared lower-case, without it).
_ABBREVIATIONS: Final = frozenset(
    {
        *("dr", "dra", "mr", "mrs", "ms", "mx", "sr", "sra", "srta", "st", "jr", "prof"),
        *("e.g", "i.e", "a.m", "p.m", "vs", "approx", "aprox", "ej", "ud", "uds", "tel"),
    }
)
_OPENERS: Final = "\"'([¿¡"
# Longer than any abbreviation with its openers: looking further back for the word before a
# dot would only make long unbroken strings (URLs, pasted data) quadratic to scan.
_WORD_WINDOW: Final = 16


def _word_before(text: str, end: int, floor: int = 0) -> str:
    """The word ending at `end`, or its last `_WORD_WINDOW` characters if it is longer."""
    window = text[max(floor, end - _WORD_WINDOW) : end]
    if not window or window[-1].isspace():
        return ""
    return window.rsplit(maxsplit=1)[-1]


def _is_abbreviation(word: str) -> bool:
    word = word.lstrip(_OPENERS).lower()
    if word in _ABBREVIATIONS:
        return True
    # A single letter is an initial ("J. Smith", "p. ej."); one or two digits are a numbered
    # option ("1. Yes 2. No"), which must stay with its text.
    return (len(word) == 1 and word.isalpha()) or (len(word) <= 2 and word.isdigit())


def _sentence_cuts(text: str) -> list[int]:
    """Offsets where `text` may be cut between sentences: after a sentence or at a newline."""
    cuts = {index for index, char in enumerate(text) if char == "\n"}
    for match in _SENTENCE_END.finditer(text):
        if not (match["stop"] == "." and _is_abbreviation(_word_before(text, match.start()))):
            cuts.add(match.end())
    return sorted(cuts)


# --- Shortening ----------------------------------------------------------------------------

_ELLIPSIS: Final = "..."
_LAST_SPACE: Final = re.compile(r"\s\S*\Z")
# Left dangling before an ellipsis, these read as a typo: "take it with food,..."
_DANGLING: Final = " \t\r\n,;:-"
_SOURCES_LINE: Final = re.compile(r"\s*(?:sources?|fuentes?)\s*:", re.IGNORECASE)
_MIN_PREFERRED: Final = 20


def _split_sources(text: str) -> tuple[str, str]:
    """(body, sources line) when `text` ends with a knowledge-base "Sources:" line."""
    body, _, last = text.rpartition("\n")
    if _SOURCES_LINE.match(last):
        return body.rstrip(), last.strip()
    return text, ""


def _truncate_words(text: str, budget: int) -> str:
    """`text` cut at a word boundary so that it, plus "...", fits in `budget` characters."""
    if len(text) <= budget:
        return text
    room = budget - len(_ELLIPSIS)
    # Look one character past the room: a space there means the last word ends exactly on it.
    space = _LAST_SPACE.search(text, 0, room + 1)
    kept = text[: space.start()].rstrip(_DANGLING) if space else ""
    return (kept or text[:room]) + _ELLIPSIS


def _keep_sentences(text: str, budget: int) -> str:
    """Whole sentences from the start that fit in `budget`; a word-cut first one otherwise."""
    if len(text) <= budget:
        return text
    cuts = _sentence_cuts(text)
    last_fitting = bisect_right(cuts, budget) - 1
    if last_fitting >= 0 and text[: cuts[last_fitting]].strip():
        return text[: cuts[last_fitting]].rstrip()
    return _truncate_words(text, budget)


def _shorten(text: str, budget: int) -> str:
    body, sources = _split_sources(text)
    if not sources:
        return _keep_sentences(body, budget)
    if not body:
        return _truncate_words(sources, budget)
    # The sources line is always kept (patients and staff check answers against it), but a
    # runaway list may not crowd out the answer: it gets at most half of the budget.
    sources = _truncate_words(sources, budget // 2)
    return f"{_keep_sentences(body, budget - len(sources) - 1)}\n{sources}"


# --- Splitting -----------------------------------------------------------------------------


def _ends_glued(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] ends in a word that belongs with the next one ("Dr." Smith)."""
    word = _word_before(text, end, floor=start)
    return word.endswith(".") and not word.endswith("..") and _is_abbreviation(word[:-1])


def _word_end(text: str, start: int, stop: int) -> int | None:
    """The last whitespace in text[start:stop + 1], avoiding "Dr. | Smith" if it can."""
    spaces = [end for end in range(stop, start, -1) if text[end].isspace()]
    unglued = (end for end in spaces if not _ends_glued(text, start, end))
    return next(unglued, spaces[0] if spaces else None)


def _part_end(text: str, start: int, limit: int, cuts: list[int]) -> int:
    """Where the part starting at `start` (a non-space character) should end."""
    stop = start + limit
    last_fitting = bisect_right(cuts, stop) - 1
    if last_fitting >= 0 and cuts[last_fitting] > start:
        return cuts[last_fitting]
    word_end = _word_end(text, start, stop)
    # No space at all: a single "word" longer than the limit (a URL, say) is cut anywhere.
    return stop if word_end is None else word_end


def _split(text: str, limit: int) -> list[str]:
    """`text` (already stripped) in parts of at most `limit` characters, none blank."""
    cuts = _sentence_cuts(text)
    parts: list[str] = []
    start = 0
    while len(text) - start > limit:
        end = _part_end(text, start, limit, cuts)
        parts.append(text[start:end].rstrip())
        start = end
        while text[start].isspace():  # text is stripped: a non-space character follows
            start += 1
    parts.append(text[start:])
    return parts


def fit_for_sms(text: str, *, shorten: bool, preferred: int = 320, limit: int = 1600) -> list[str]:
    """The SMS bodies to send for one reply, in order.

    `shorten` allows dropping trailing sentences to stay within `preferred` characters (two
    GSM-7 segments by default); a trailing "Sources:"/"Fuentes:" line is always kept. Safety
    instructions must be sent with `shorten=False`: they are never cut, only split into
    bodies of at most `limit` characters (Twilio's maximum body length), between sentences
    where possible. A blank reply gives no bodies at all.
    """
    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    if shorten and preferred < _MIN_PREFERRED:
        raise ValueError(f"preferred must be at least {_MIN_PREFERRED}, got {preferred}")
    body = to_gsm7(text).strip()
    if not body:
        return []
    if shorten and len(body) > preferred:
        body = _shorten(body, preferred)
    return _split(body, limit)


# --- Numbered options ----------------------------------------------------------------------

# "2", "2.", "2)", "#2", "option 2", "opción 2": a bare choice and nothing else, so that
# "2 days" or "I have 2 kids" are read as free text, not as picking option 2.
