"""The small pattern language of the rule files, compiled to regular expressions.

A pattern is a sequence of tokens, matched against the canonical token stream (see `text.py`):

    chest (pain|hurt*|pressure)      a word, a word prefix (`hurt*`), alternatives in (...)
    (left|right)? arm                 `?` after a group or word makes it optional
    crushing .. chest                 `..` up to 3 words in between, never across punctuation
    took ... pills                    `...` up to 8 words in between, never across . ! ? ;
    #n pills                          `#n` any number

Words are written as `text.py` leaves them: lower case, no accents, no apostrophes.
"""

from __future__ import annotations

import re

_SHORT_GAP = r"(?:[^ .,;:!?]+ ){0,3}"
_LONG_GAP = r"(?:[^ .;!?]+ ){0,8}"
_NUMBER = r"\d+(?:[./]\d+)* "


class PatternError(ValueError):
    pass


def compile_pattern(pattern: str) -> re.Pattern[str]:
    body, rest = _sequence(_lex(pattern), 0)
    if rest != len(_lex(pattern)):
        raise PatternError(f"unbalanced ')' in {pattern!r}")
    return re.compile("(?<= )" + body)


def compile_many(patterns: list[str]) -> re.Pattern[str]:
    """One alternation for all of a finding's patterns: a single scan per finding."""
    bodies = []
    for pattern in patterns:
        lexed = _lex(pattern)
        body, end = _sequence(lexed, 0)
        if end != len(lexed):
            raise PatternError(f"unbalanced ')' in {pattern!r}")
        if re.fullmatch(body, ""):
            raise PatternError(
                f"{pattern!r} can match nothing at all: not every word may be optional"
            )
        bodies.append(body)
    return re.compile("(?<= )(?:" + "|".join(bodies) + ")")


def _lex(pattern: str) -> list[str]:
    tokens = re.findall(r"\.\.\.|\.\.|\(|\)\??|\||[^\s()|]+", pattern.strip())
    if not tokens:
        raise PatternError("empty pattern")
    return tokens


def _sequence(tokens: list[str], i: int) -> tuple[str, int]:
    """Compile tokens from i until an unmatched ')' or '|'; returns (regex, next index)."""
    parts: list[str] = []
    while i < len(tokens):
        item = tokens[i]
        if item in ("|",) or item.startswith(")"):
            break
        if item == "(":
            alternatives: list[str] = []
            i += 1
            while True:
                alternative, i = _sequence(tokens, i)
                if not alternative:
                    raise PatternError("empty alternative")
                alternatives.append(alternative)
                if i >= len(tokens):
                    raise PatternError("missing ')'")
                if tokens[i] == "|":
                    i += 1
                    continue
                break
            optional = tokens[i] == ")?"
            parts.append("(?:" + "|".join(alternatives) + ")" + ("?" if optional else ""))
            i += 1
            continue
        parts.append(_atom(item))
        i += 1
    if any(p in (_SHORT_GAP, _LONG_GAP) for p in parts[:1] + parts[-1:]):
        raise PatternError("a pattern cannot start or end with a gap")
    return "".join(parts), i


def _atom(atom: str) -> str:
    if atom == "..":
        return _SHORT_GAP
    if atom == "...":
        return _LONG_GAP
    if atom == "#n":
        return _NUMBER
    optional = atom.endswith("?") and len(atom) > 1
    word = atom[:-1] if optional else atom
    prefix = word.endswith("*") and len(word) > 1
    word = word[:-1] if prefix else word
    if not re.fullmatch(r"[a-z0-9]+|[^\sa-z0-9.,;:!?()|*]", word):
        raise PatternError(
            f"{atom!r}: words are lower case letters or digits, without accents or apostrophes"
        )
    regex = re.escape(word) + ("[^ ]*" if prefix else "") + " "
    return f"(?:{regex})?" if optional else regex


def first_words(pattern: str) -> set[str] | None:
    """The words one of which must start any match ("hurt*" for a prefix), or None when a
    pattern may start with anything (a number). The engine only scans a finding whose first
    words are in the message, which keeps hundreds of findings cheap."""
    tokens = _lex(pattern)
    return _first_of_sequence(tokens, 0, len(tokens))


def _first_of_sequence(tokens: list[str], i: int, end: int) -> set[str] | None:
    words: set[str] = set()
    while i < end:
        first, optional, i = _first_of_atom(tokens, i)
        if first is None:
            return None
        words |= first
        if not optional:
            return words
    return None  # everything optional: the sequence can start anywhere


def _first_of_atom(tokens: list[str], i: int) -> tuple[set[str] | None, bool, int]:
    """(first words, whether the atom is optional, index after the atom)."""
    item = tokens[i]
    if item != "(":
        if item in ("..", "...", "#n"):
            return None, False, i + 1
        optional = item.endswith("?") and len(item) > 1
        return {item[:-1] if optional else item}, optional, i + 1
    depth, j, start = 0, i, i + 1
    words: set[str] | None = set()
    while j < len(tokens):
        t = tokens[j]
        if t == "(":
            depth += 1
        elif t.startswith(")") or (t == "|" and depth == 1):
            if depth == 1:
                alternative = _first_of_sequence(tokens, start, j)
                words = None if words is None or alternative is None else words | alternative
                start = j + 1
            if t.startswith(")"):
                depth -= 1
                if depth == 0:
                    return words, t == ")?", j + 1
        j += 1
    return None, False, j


def key_words(pattern: str) -> set[str] | None:
    """Like `first_words`, but prefers one word every match must contain anywhere (the longest
    one outside any group), which is usually rarer than the first word ("chest" in "my chest")."""
    tokens = _lex(pattern)
    depth = 0
    required: list[str] = []
    for item in tokens:
        if item == "(":
            depth += 1
        elif item.startswith(")"):
            depth -= 1
        elif depth == 0 and item not in ("..", "...", "#n", "|") and not item.endswith("?"):
            required.append(item)
    if required:
        return {max(required, key=lambda w: len(w.rstrip("*")))}
    return first_words(pattern)
