"""Numbers a triage nurse listens for: age, temperature, duration, pain score, blood pressure.

Read from the canonical token stream (see `text.py`); words are English and Spanish, without
accents. Each reader returns None when the text does not say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUM = r"(\d+(?:\.\d+)?)"
_WORD_NUMBERS = {
    "a": 1, "an": 1, "one": 1, "un": 1, "una": 1, "uno": 1, "two": 2, "dos": 2, "couple": 2,
    "three": 3, "tres": 3, "few": 3, "four": 4, "cuatro": 4, "five": 5, "cinco": 5, "six": 6,
    "seis": 6, "several": 4, "varios": 4, "varias": 4, "unos": 3, "unas": 3,
}  # fmt: skip
_COUNT = r"(\d+(?:\.\d+)?|" + "|".join(_WORD_NUMBERS) + ")"
_MINUTES = {
    "min": 1, "mins": 1, "minute": 1, "minutes": 1, "minuto": 1, "minutos": 1,
    "hour": 60, "hours": 60, "hr": 60, "hrs": 60, "h": 60, "hora": 60, "horas": 60,
    "day": 1440, "days": 1440, "dia": 1440, "dias": 1440, "night": 1440, "nights": 1440,
    "noche": 1440, "noches": 1440,
    "week": 10080, "weeks": 10080, "wk": 10080, "wks": 10080, "semana": 10080, "semanas": 10080,
    "month": 43200, "months": 43200, "mes": 43200, "meses": 43200,
    "year": 525600, "years": 525600, "yr": 525600, "yrs": 525600, "ano": 525600, "anos": 525600,
}  # fmt: skip
_UNIT = "(" + "|".join(sorted(_MINUTES, key=len, reverse=True)) + ")"
_DURATION = re.compile(rf" {_COUNT} (?:more |mas )?{_UNIT} (?!old |pregnant |de embarazo )")
_VAGUE_DURATION = [
    (re.compile(r" (?:for|past|last|over) (?:the )?(?:past |last )?(?:few |couple of )?months "), 60.0),  # noqa: E501
    (re.compile(r" (?:for|past|last|over) (?:the )?(?:past |last )?(?:few |couple of )?weeks "), 14.0),  # noqa: E501
    (re.compile(r" (?:for|past|over) (?:the )?(?:past |last )?years "), 365.0),
    (re.compile(r" (?:hace|desde hace|por|durante) (?:unos |varios |muchos )?meses "), 60.0),
    (re.compile(r" (?:hace|desde hace|por|durante) (?:unas |varias |muchas )?semanas "), 14.0),
    (re.compile(r" (?:hace|desde hace|por|durante) (?:unos |varios |muchos )?anos "), 365.0),
    (re.compile(r" (?:since|from) (?:yesterday|last night) | desde (?:ayer|anoche) "), 1.0),
    (re.compile(r" (?:since|from) this (?:morning|afternoon) | desde (?:esta|hoy en la) (?:manana|tarde) "), 0.3),  # noqa: E501
]  # fmt: skip
_PERSON = (
    r"(?:i am|im|i m|he is|she is|hes|shes|they are|dad is|mom is|father is|mother is|"
    r"husband is|wife is|son is|daughter is|grandma is|grandpa is|grandmother is|"
    r"grandfather is|partner is|aged?|edad|tengo|tiene|tienes)"
)
_AGE_YEARS = [
    re.compile(r" (\d{1,3}) (?:years? old|yrs? old|yr old|y o|yo|yrs|years|anos|ano|anitos)(?! ago| hace)"),  # noqa: E501
    re.compile(rf" {_PERSON} (\d{{1,3}})(?= [.,;!?]| and | y | but | pero | $)"),
]  # fmt: skip
_AGE_YOUNG = re.compile(
    r" (\d{1,2}) (day|days|week|weeks|wk|month|months|mo|dia|dias|semana|semanas|mes|meses)"
    r"(?= old| de nacid| de vida)"
    r"| (?:baby|bebe|nena|nene|hijo|hija|son|daughter|nieto|nieta|newborn|recien nacid[oa])"
    r" (?:is |de |tiene |has )?(\d{1,2}) (day|days|week|weeks|month|months|dia|dias|semana|semanas|mes|meses)"  # noqa: E501
)
_UNIT_DAYS = {
    "day": 1,
    "dia": 1,
    "week": 7,
    "wk": 7,
    "semana": 7,
    "month": 30.4,
    "mo": 30.4,
    "mes": 30.4,
}
_TEMP_CONTEXT = re.compile(
    r"(fever|temp|temperature|thermometer|fiebre|temperatura|termometro|calentura|read|reading|"
    r"degrees|grados|of|de)$"
)
_TEMP = re.compile(r" (\d{2,3}(?:\.\d+)?) (c |f |degrees |grados |celsius |fahrenheit |°)?")
_SEVERITY = re.compile(r" (\d{1,2})(?:/10 | out of 10 | de 10 | sobre 10 )")
_BP = re.compile(r" (\d{2,3})/(\d{2,3}) ")


@dataclass(frozen=True)
class Facts:
    age_years: float | None = None
    temp_c: float | None = None
    duration_minutes: float | None = None
    severity: int | None = None
    bp_systolic: int | None = None
    bp_diastolic: int | None = None


def read_facts(joined: str) -> Facts:
    systolic, diastolic = _blood_pressure(joined)
    age, age_span = _age(joined)
    return Facts(
        age_years=age,
        temp_c=_temperature(joined),
        duration_minutes=_duration(joined, skip=age_span),
        severity=_severity(joined),
        bp_systolic=systolic,
        bp_diastolic=diastolic,
    )


def _count(word: str) -> float:
    return _WORD_NUMBERS.get(word) or float(word)


def _age(joined: str) -> tuple[float | None, tuple[int, int]]:
    """The patient's age in years (infants as fractions) and where the text says it."""
    young = _AGE_YOUNG.search(joined)
    if young:
        number, unit = (young.group(1), young.group(2)) if young.group(1) else young.group(3, 4)
        key = "mes" if unit in ("mes", "meses") else unit.rstrip("s")
        days = float(number) * _UNIT_DAYS.get(key, 30.4)
        return round(days / 365.25, 3), young.span()
    for pattern in _AGE_YEARS:
        match = pattern.search(joined)
        if match and 0 < int(match.group(1)) < 120:
            return float(match.group(1)), match.span()
    return None, (0, 0)


def _temperature(joined: str) -> float | None:
    best: float | None = None
    for match in _TEMP.finditer(joined):
        value = float(match.group(1))
        unit = (match.group(2) or "").strip()
        before = joined[: match.start()].split()[-3:]
        after = joined[match.end() :].split()[:2]
        in_context = (
            bool(unit)
            or any(_TEMP_CONTEXT.search(w) for w in before)
            or any(w in ("fever", "fiebre", "temp", "temperature", "temperatura") for w in after)
        )
        celsius: float | None = None
        if 35.0 <= value <= 43.0 and (in_context or "." in match.group(1)):
            celsius = value
        elif 95.0 <= value <= 110.0 and (in_context or unit == "f"):
            celsius = round((value - 32) * 5 / 9, 1)
        if celsius is not None and (best is None or celsius > best):
            best = celsius
    return best


def _duration(joined: str, *, skip: tuple[int, int]) -> float | None:
    longest: float | None = None
    for match in _DURATION.finditer(joined):
        if match.start() < skip[1] and skip[0] < match.end():
            continue  # "de 5 semanas" said the baby's age, not how long it has lasted
        before = joined[: match.start()].split()[-2:]
        after = joined[match.end() :].split()[:2]
        if {"embarazada", "embarazo", "gestacion", "pregnancy"} & set(before) or (
            after[:1] in (["along"], ["gestation"]) or after[:2] == ["de", "embarazo"]
        ):
            continue  # weeks of pregnancy, not how long a symptom has lasted
        minutes = _count(match.group(1)) * _MINUTES[match.group(2)]
        longest = minutes if longest is None else max(longest, minutes)
    for pattern, days in _VAGUE_DURATION:
        if pattern.search(joined):
            minutes = days * 1440
            longest = minutes if longest is None else max(longest, minutes)
    return longest


def _severity(joined: str) -> int | None:
    scores = [int(m.group(1)) for m in _SEVERITY.finditer(joined) if int(m.group(1)) <= 10]
    return max(scores) if scores else None


def _blood_pressure(joined: str) -> tuple[int | None, int | None]:
    for match in _BP.finditer(joined):
        systolic, diastolic = int(match.group(1)), int(match.group(2))
        if 70 <= systolic <= 300 and 40 <= diastolic <= 200 and systolic > diastolic:
            return systolic, diastolic
    return None, None
