"""Carrier keywords (CTIA guidance, Twilio's defaults): opt-out, opt-in and help.

Twilio acts on these itself on long codes and toll-free numbers (it blocks further messages
after STOP and answers HELP), then still forwards the message to us. We must recognise the
same words so that we record the opt-out and do not answer "STOP" as if it were a question.
Like Twilio, only a message that is exactly one keyword counts: "stop texting me about my
appointment" is a sentence for the assistant and staff to read, not an opt-out.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

Category = Literal["opt_out", "opt_in", "help"]

# Twilio's default opt-out keywords. CANCEL is among them, so a bare "cancel" opts the
# patient out of all texts even if they meant their appointment: the carrier has already
# blocked the number by the time we see it, and we must not pretend otherwise. Appointment
# flows should therefore ask for a different reply word (e.g. "reply 2 to cancel").
OPT_OUT: Final = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
# Twilio's default opt-in keywords. YES only means "subscribe again" to someone who opted
# out; to anyone else it is an ordinary answer, which callers must keep in mind.
OPT_IN: Final = frozenset({"START", "YES", "UNSTOP"})
HELP: Final = frozenset({"HELP", "INFO"})

# Spanish keywords a clinic can configure; the same words belong in the Twilio Messaging
# Service's Advanced Opt-Out so that Twilio blocks the number too. Tuples so that the shared
# defaults cannot be changed in place.
DEFAULT_EXTRA_ES: Final[Mapping[Category, tuple[str, ...]]] = {
    "opt_out": ("ALTO", "PARAR", "BAJA", "CANCELAR", "DETENER"),
    "opt_in": ("COMENZAR", "INICIAR", "REANUDAR"),
    "help": ("AYUDA",),
}

# Patients often write "Stop." or "¡Alto!"; that punctuation does not change the request.
_TRAILING_PUNCTUATION: Final = ".!"
_LEADING_PUNCTUATION: Final = "¡"


@dataclass(frozen=True)
class KeywordSet:
    """Keywords in folded form (upper case, no accents, single spaces); see `keyword_set`."""

    opt_out: frozenset[str]
    opt_in: frozenset[str]
    help: frozenset[str]


def _fold(text: str) -> str:
    """Upper case without accents or invisible characters: "Ayúda" and "AYUDA" compare equal."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(char for char in decomposed if unicodedata.category(char) not in ("Mn", "Cf"))
    return " ".join(kept.split()).upper()


def _folded(words: Iterable[str], category: str) -> frozenset[str]:
    folded = frozenset(_fold(word) for word in words)
    if "" in folded:
        raise ValueError(f"blank {category} keyword")
    return folded


def keyword_set(
    extra_opt_out: Iterable[str] = (),
    extra_opt_in: Iterable[str] = (),
    extra_help: Iterable[str] = (),
) -> KeywordSet:
    """Twilio's default keywords plus configured ones, e.g. `DEFAULT_EXTRA_ES`."""
    keywords = KeywordSet(
        opt_out=OPT_OUT | _folded(extra_opt_out, "opt-out"),
        opt_in=OPT_IN | _folded(extra_opt_in, "opt-in"),
        help=HELP | _folded(extra_help, "help"),
    )
    # A word in two categories would make the answer depend on the order we check them in.
    clashes = (
        (keywords.opt_out & keywords.opt_in)
        | (keywords.opt_out & keywords.help)
        | (keywords.opt_in & keywords.help)
    )
    if clashes:
        raise ValueError(f"keywords in more than one category: {sorted(clashes)}")
    return keywords


def classify(text: str, keywords: KeywordSet) -> Category | None:
    """The carrier keyword that the whole message is, if it is one."""
    word = text.strip().rstrip(_TRAILING_PUNCTUATION).lstrip(_LEADING_PUNCTUATION)
    folded = _fold(word)
    if folded in keywords.opt_out:
        return "opt_out"
    if folded in keywords.opt_in:
        return "opt_in"
    if folded in keywords.help:
        return "help"
    return None
