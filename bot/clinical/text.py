"""How the clinical rules read a message: one canonical token stream per message.

Lower case, accents folded, apostrophes dropped ("can't" -> "cant"), numbers split from units
("38.4c" -> "38.4 c"), SMS shorthand expanded ("rn" -> "right now"), single-letter typos in the
rules' own vocabulary corrected ("siezure" -> "seizure"), punctuation kept as tokens so a rule
never reaches across a sentence. Patterns in the rule files are written against this form.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Zero-width and bidi controls can split a word ("ch\u200dest") without changing how it looks.
_INVISIBLE = re.compile(
    "[\ufe0e\ufe0f\u200b-\u200f\u2060-\u2064\ufeff\u202a-\u202e\u2066-\u2069\u00ad]"
)
_APOSTROPHES = re.compile("['\u2019\u2018`\u00b4]")
_NUMBER_UNIT = re.compile(r"(?<=\d)(?=[a-z\u00b0])|(?<=[a-z])(?=\d)")
# Letters, numbers with a decimal point or a slash (38.4, 176/108, 8/10), punctuation that ends
# a clause, and any other symbol (emoji) as a token of its own.
_TOKEN = re.compile(r"\d+(?:[.,/]\d+)*|[a-z]+|[.,;:!?]|[^\sa-z\d]")
_KEEP_PUNCT = frozenset(".,;:!?")
_DROP = frozenset("\"()[]{}<>*_#~^|\\+=-&@$%'\u201c\u201d\u00ab\u00bb\u00bf\u00a1/")


def fold(text: str) -> str:
    """Lower case without accents; "ñ" becomes "n" so "año" and "ano" read alike."""
    text = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in text if not unicodedata.combining(ch))


@dataclass(frozen=True)
class Tokens:
    tokens: tuple[str, ...]
    # Space-joined with a leading and trailing space, the string patterns are matched against.
    joined: str

    def token_index(self, char_offset: int) -> int:
        """The index of the token starting at `char_offset` in `joined`."""
        return self.joined.count(" ", 0, char_offset) - 1


class Speller:
    """Corrects a word one edit away (insert, delete, substitute, swap) from a rule word.

    Only words the rules use can be the correction, only words of five letters or more are
    corrected, and never a word the rules or the common-word list already know, so "never" is
    never read as "fever".
    """

    MIN_LENGTH = 5

    def __init__(self, vocabulary: Iterable[str], known: Iterable[str]) -> None:
        self._known = frozenset(known) | frozenset(vocabulary)
        self._index: dict[str, set[str]] = {}
        for word in vocabulary:
            if len(word) >= self.MIN_LENGTH + 1 and word.isalpha():
                for variant in _deletes(word) | {word}:
                    self._index.setdefault(variant, set()).add(word)

    def correct(self, word: str) -> str:
        if len(word) < self.MIN_LENGTH or word in self._known or not word.isalpha():
            return word
        candidates: set[str] = set()
        for variant in _deletes(word) | {word}:
            candidates |= self._index.get(variant, set())
        candidates = {c for c in candidates if _one_edit(word, c)}
        # Ambiguous corrections are not corrections.
        return candidates.pop() if len(candidates) == 1 else word


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def _one_edit(a: str, b: str) -> bool:
    if a == b:
        return False
    if len(a) == len(b):
        diffs = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diffs) == 1:
            return True
        return (
            len(diffs) == 2
            and diffs[1] == diffs[0] + 1
            and a[diffs[0]] == b[diffs[1]]
            and a[diffs[1]] == b[diffs[0]]
        )
    if abs(len(a) - len(b)) != 1:
        return False
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def tokenize(
    text: str,
    *,
    shorthand: Mapping[str, str],
    speller: Speller | None = None,
) -> Tokens:
    text = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
    text = _APOSTROPHES.sub("", fold(text))
    text = _NUMBER_UNIT.sub(" ", text)
    out: list[str] = []
    for raw in _TOKEN.findall(text):
        if raw in _DROP or (not raw.isalnum() and raw[0] in _DROP):
            continue
        if raw[0].isdigit():
            out.append(raw.replace(",", ".") if re.fullmatch(r"\d+,\d", raw) else raw)
            continue
        if raw in _KEEP_PUNCT or not raw.isalpha():
            out.append(raw)
            continue
        expanded = shorthand.get(raw)
        if expanded is not None:
            out.extend(expanded.split())
            continue
        out.append(speller.correct(raw) if speller else raw)
    tokens = tuple(out)
    return Tokens(tokens=tokens, joined=" " + " ".join(tokens) + " ")
