"""The privacy guard: patient data is taken out of text bound for a cloud model.

Runs on every prompt the router sends to a cloud provider that settings do not list in
`LLM_PHI_ALLOWED_PROVIDERS` (a provider with a signed BAA, say). It replaces what identifies a
person with a bracketed label: names (introduced, titled, or known from the conversation),
phone numbers (libphonenumber's matcher), e-mail addresses, dates (of birth or otherwise), street
addresses, and record, member, patient or social security numbers.

It errs towards removing too much: a redacted date costs a little answer quality, a leaked one
cannot be taken back. Local providers (llama.cpp, the extractive answerer) see the text as is.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import phonenumbers

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
_MONTHS = (
    "jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|jun(?:e)?|jul(?:y)?|aug(?:ust)?|"
    "sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?|"
    "enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|setiembre|octubre|"
    "noviembre|diciembre"
)
_DATE = re.compile(
    r"\b(?:\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{4}-\d{1,2}-\d{1,2}"
    rf"|(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:de\s+)?(?:{_MONTHS})\.?,?\s+(?:de\s+|del\s+)?\d{{4}})\b",
    re.IGNORECASE,
)
_STREET_TYPES = (
    "street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|"
    "terrace|circle|highway|hwy|parkway|pkwy"
)
_ADDRESS = re.compile(
    rf"\b\d{{1,6}}\s+(?:[A-Za-z0-9.'-]+\s+){{0,4}}(?:{_STREET_TYPES})\b\.?"
    r"(?:,?\s*(?:apt|apartment|unit|suite|#)\s*\w+)?"
    r"|\b(?:calle|avenida|av\.|camino|carrera|paseo)\s+[\w .'-]{1,40}?\s+#?\d{1,6}\b",
    re.IGNORECASE,
)
_SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
_RECORD = re.compile(
    r"\b(?:mrn|medical record(?: number)?|record(?: number| no\.?| #)?"
    r"|patient(?: id| number| no\.?| #)?"
    r"|member(?: id| number)?|id(?: number)?|policy(?: number)?|account(?: number)?"
    r"|expediente|n[uú]mero de (?:paciente|expediente|afiliado))"
    r"\s*(?:is|es|:|#|no\.?)?\s*([A-Z]{0,3}-?\d[\d-]{3,})",
    re.IGNORECASE,
)
_LONG_NUMBER = re.compile(r"\b\d{6,}\b")
# What libphonenumber does not take for a number of the clinic's region (a foreign number written
# without its country code): seven or more digits in groups.
_DIGIT_GROUPS = re.compile(r"(?<![\w/])\+?\d[\d ().-]{5,}\d(?![\w/])")
_NAME_WORD = r"[A-ZÁÉÍÓÚÑ][a-záéíóúñ'-]+"
_INTRODUCED_NAME = re.compile(
    r"\b(?i:my name is|name's|i am|i'm|this is|me llamo|mi nombre es|soy|patient|paciente"
    r"|my (?:son|daughter|wife|husband|mother|father|mom|dad|child|partner)(?:'s name is)?"
    r"|mi (?:hijo|hija|esposa|esposo|madre|padre|mamá|papá))"
    rf"\s+({_NAME_WORD}(?:\s+{_NAME_WORD}){{0,2}})",
)
# After "my name is" the next words are a name whatever their case ("my name is maria lopez").
_DECLARED_NAME = re.compile(
    r"\b(?:my name is|my name's|me llamo|mi nombre es)\s+([\w'-]+(?:\s+[\w'-]+)?)",
    re.IGNORECASE | re.UNICODE,
)
_TITLED_NAME = re.compile(
    rf"\b(?:mr|mrs|ms|miss|dr|sr|sra|srta|don|doña)\.?\s+({_NAME_WORD}(?:\s+{_NAME_WORD})?)",
    re.IGNORECASE,
)
# Capitalised words that follow "I'm"/"soy" but are not names ("I'm Diabetic", "Soy Alérgico").
_NOT_NAMES = frozenset(
    [
        "A",
        "An",
        "The",
        "Not",
        "Sure",
        "Sorry",
        "Worried",
        "Pregnant",
        "Diabetic",
        "Allergic",
        "Asthmatic",
        "New",
        "Here",
        "Calling",
        "Looking",
        "Having",
        "Feeling",
        "Still",
        "Also",
        "Just",
        "So",
        "Very",
        "Really",
        "Okay",
        "Ok",
        "Fine",
        "Good",
        "Back",
        "Trying",
        "Alérgico",
        "Alérgica",
        "Diabético",
        "Diabética",
        "Nuevo",
        "Nueva",
        "Paciente",
    ]
)


@dataclass(frozen=True)
class Redaction:
    text: str
    counts: dict[str, int]

    @property
    def changed(self) -> bool:
        return bool(self.counts)


def redact(text: str, *, known_names: Iterable[str] = (), region: str = "US") -> Redaction:
    """`text` with patient data replaced by [EMAIL], [PHONE], [DATE], [ADDRESS], [ID], [NAME]."""
    counts: Counter[str] = Counter()

    def sub(pattern: re.Pattern[str], label: str, value: str, group: int = 0) -> str:
        def replace(match: re.Match[str]) -> str:
            if group and match.group(group) is None:
                return match.group(0)
            if group and match.group(group).split()[0] in _NOT_NAMES:
                return match.group(0)
            counts[label] += 1
            whole = match.group(0)
            if not group:
                return f"[{label}]"
            start, end = match.span(group)
            offset = match.start(0)
            return whole[: start - offset] + f"[{label}]" + whole[end - offset :]

        return pattern.sub(replace, value)

    text = sub(_EMAIL, "EMAIL", text)
    text = sub(_SSN, "ID", text)
    text = sub(_RECORD, "ID", text, group=1)
    # Dates before phone numbers: libphonenumber would otherwise read 03/14/1980 as digits.
    text = sub(_DATE, "DATE", text)
    text = _redact_phones(text, region, counts)

    def seven_digits(match: re.Match[str]) -> str:
        if sum(ch.isdigit() for ch in match.group(0)) < 7:
            return match.group(0)  # a reading such as "38.5 - 39", not a number to call
        counts["PHONE"] += 1
        return "[PHONE]"

    text = _DIGIT_GROUPS.sub(seven_digits, text)
    text = sub(_ADDRESS, "ADDRESS", text)
    text = sub(_LONG_NUMBER, "ID", text)
    for name in sorted(
        {n.strip() for n in known_names if len(n.strip()) > 1}, key=len, reverse=True
    ):
        text = sub(re.compile(rf"\b{re.escape(name)}\b", re.IGNORECASE), "NAME", text)
    text = sub(_DECLARED_NAME, "NAME", text, group=1)
    text = sub(_INTRODUCED_NAME, "NAME", text, group=1)
    text = sub(_TITLED_NAME, "NAME", text, group=1)
    return Redaction(text=text, counts=dict(counts))


def _redact_phones(text: str, region: str, counts: Counter[str]) -> str:
    pieces: list[str] = []
    last = 0
    for match in phonenumbers.PhoneNumberMatcher(
        text, region, leniency=phonenumbers.Leniency.POSSIBLE
    ):
        pieces.append(text[last : match.start])
        pieces.append("[PHONE]")
        counts["PHONE"] += 1
        last = match.end
    pieces.append(text[last:])
    return "".join(pieces)
