"""The triage form: ask what a triage nurse would ask, then give one disposition.

``triage_form`` starts on ``describe_symptoms``; the message that started it is the main
complaint. ``validate_triage_form`` decides, every turn, which questions are still worth asking
(``required_slots``): it runs the clinical engine (``bot.clinical``) on everything the patient has
said so far and skips what is already known (age, duration, pain score, pregnancy, conditions),
and asks nothing more once the description already reaches *emergency* or *urgent*.
``action_triage_result`` assesses the whole description, tells the patient what to do in plain
words, sends the decision as a custom ``{"triage": {...}}`` payload for the platform and clears
the form's slots so that a new complaint starts a new triage.

Only ``rasa_sdk``, the standard library and ``bot.clinical`` (standard library + PyYAML) are
imported. The engine is loaded once, lazily, on first use.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import TYPE_CHECKING, Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from bot.clinical.text import fold as fold_accents

if TYPE_CHECKING:
    from bot.clinical.engine import ClinicalEngine, Decision

logger = logging.getLogger(__name__)

FORM = "triage_form"
UNKNOWN = "unknown"
NONE = "none"
YES = "yes"
NO = "no"

COMPLAINT = "triage_complaint"
AGE = "triage_age"
ONSET = "triage_onset"
SEVERITY = "triage_severity"
ASSOCIATED = "triage_associated"
PREGNANCY = "triage_pregnancy"
CONDITIONS = "triage_conditions"
DISPOSITION = "triage_disposition"
FORM_SLOTS = (COMPLAINT, AGE, ONSET, SEVERITY, ASSOCIATED, PREGNANCY, CONDITIONS)
STOP_ASKING = frozenset({"emergency", "urgent"})

_engine: ClinicalEngine | None = None
_engine_lock = threading.Lock()


def get_engine() -> ClinicalEngine:
    """The clinical engine, loaded on first use (the rule files are read once).

    Rules only: the description assessed here is the patient's words joined with our own
    templated sentences ("The pain is 4/10."), which the trained second reader has never seen and
    reads badly. It already read each of the patient's messages as they came in, through the
    safety layer, where an emergency it recognises is answered before Rasa sees the message."""
    global _engine
    with _engine_lock:
        if _engine is None:
            from bot.clinical.engine import ClinicalEngine

            _engine = ClinicalEngine(second_reader=False)
        return _engine


# --- reading answers ---------------------------------------------------------------------------


def fold(text: str) -> str:
    """Lower case, no accents, single spaces: for matching answers in English and Spanish."""
    return " ".join(fold_accents(text or "").replace("\u2019", "'").split())


_UNKNOWN_RE = re.compile(
    r"^(?:(?:i|we)\s+)?(?:do\s*n[o']?t|dont|don t|really don't) know\b|^idk\b|^not sure\b|"
    r"^(?:i'?m|i am) not sure\b|^unsure\b|^no idea\b|^(?:i )?(?:have )?no clue\b|"
    r"^(?:i )?can'?t (?:say|remember|tell)\b|^not certain\b|^dunno\b|^(?:yo )?no (?:lo )?se\b|"
    r"^ni idea\b|^no estoy segur[oa]\b|^no tengo idea\b|^quien sabe\b|^no me acuerdo\b|"
    r"^no recuerdo\b|^\?+$|^desconocido\b|^unknown\b"
)
_NONE_RE = re.compile(
    r"^(?:none|no|nope|nothing|nah|no one|none of (?:them|those|these|the above)|neither|"
    r"ninguno|ninguna|nada|no tengo|ninguno de esos|ninguna de esas|nothing else|no others?|"
    r"no,? (?:none|nothing|no tengo|ninguno|ninguna|nada))\b[\s.!,]*"
    r"(?:(?:i )?(?:don'?t|do not) (?:have|take) any(?:thing)?|thanks?|thank you|gracias)?[\s.!]*$"
)
_YES_RE = re.compile(r"^(?:yes|yeah|yep|y|si|i am|i'?m pregnant|estoy embarazada|claro|sure)\b")
_NO_RE = re.compile(r"^(?:no|nope|not pregnant|i'?m not|i am not|no estoy|nah|negative)\b")
_NUMBER_RE = re.compile(r"(\d{1,3}(?:[.,]\d+)?)")
_BARE_AGE_RE = re.compile(
    r"^(?:i'?m |i am |he'?s |she'?s |tengo |tiene |age |edad:? )?(\d{1,3}(?:[.,]\d+)?)"
    r"(?: (?:years?|yrs?|y/?o|anos?)(?: old| de edad)?)?[\s.!]*$"
)


def is_unknown(text: str) -> bool:
    return bool(_UNKNOWN_RE.search(fold(text)))


def is_none(text: str) -> bool:
    return bool(_NONE_RE.match(fold(text)))


def age_years_of(answer: Any) -> float | None:
    """An age answer as years: a bare number ("34", "34 years old"), else what the engine reads
    ("7 weeks old"); None when it cannot tell."""
    if not isinstance(answer, str) or answer == UNKNOWN:
        return None
    match = _BARE_AGE_RE.match(fold(answer))
    if match:
        value = float(match.group(1).replace(",", "."))
        return value if 0 <= value <= 120 else None
    try:
        return get_engine().assess(answer).facts.age_years
    except Exception:
        return None


def severity_of(answer: Any) -> int | None:
    if not isinstance(answer, str) or answer == UNKNOWN:
        return None
    match = _NUMBER_RE.search(fold(answer))
    if not match:
        return None
    value = float(match.group(1).replace(",", "."))
    return round(value) if 0 <= value <= 10 else None


# --- what the complaint is about ---------------------------------------------------------------

_PAIN_RE = re.compile(
    r"\b(?:pain|painful|hurt|hurts|hurting|ache|aches|aching|headache|sore|cramp|cramps|"
    r"cramping|burn|burning|stinging|throbbing|pounding|migraine|dolor|duele|duelen|adolorid|"
    r"molestia|ardor|arde|punzada|colico|jaqueca|migrana)\w*"
)
_PREGNANCY_TOPICS_RE = re.compile(
    r"\b(?:stomach|belly|abdom|tummy|pelvi|lower back|period|cramp|estomago|barriga|panza|vientre|"
    r"abdomen|pelvis|bleed|blood|spotting|hemorrh|sangr|hemorrag|regla|pee|peeing|urin|bladder|"
    r"orin|orinar|vejiga|vomit|throw up|throwing up|threw up|nause|puking|vomit|nausea|mareo|"
    r"headache|head hurts|head is|migraine|cabeza|jaqueca|migrana|medic|pill|tablet|drug|"
    r"prescription|antibiotic|ibuprofen|medicina|medicamento|pastilla|remedio|antibiotico)\w*"
)
_PREGNANCY_FINDING_STEMS = (
    "abdominal",
    "pelvic",
    "bleeding",
    "urinary",
    "dysuria",
    "vomit",
    "headache",
    "medication",
    "overdose",
)
_MALE_RE = re.compile(
    r"\b(?:my (?:son|husband|dad|father|brother|grandpa|grandfather|boyfriend|boy)|"
    r"i'?m a (?:man|guy|male)|i am a (?:man|guy|male)|he|he'?s|his|him|mi (?:hijo|esposo|marido|"
    r"papa|padre|hermano|abuelo|novio)|soy hombre|el nino|mi nino|mi bebe varon)\b"
)
_PREGNANCY_SAID_RE = re.compile(r"\b(?:pregnan\w*|embarazad\w*|expecting a baby)\b")


def involves_pain(text: str, present: frozenset[str]) -> bool:
    return bool(_PAIN_RE.search(fold(text))) or any("pain" in f or "ache" in f for f in present)


def pregnancy_could_matter(text: str, present: frozenset[str], age: float | None) -> bool:
    folded = fold(text)
    if _MALE_RE.search(folded):
        return False
    if age is not None and not 12 <= age <= 55:
        return False
    return bool(_PREGNANCY_TOPICS_RE.search(folded)) or any(
        stem in f for f in present for stem in _PREGNANCY_FINDING_STEMS
    )


# --- the description the engine reads ----------------------------------------------------------

_SENTENCES: dict[str, dict[str, str]] = {
    "en": {
        AGE: "I am {} years old.",
        f"{AGE}_text": "Age: {}.",
        ONSET: "It started {}.",
        SEVERITY: "The pain is {}/10.",
        f"{SEVERITY}_text": "Severity: {}.",
        f"{ASSOCIATED}_none": "None of the warning signs.",
        ASSOCIATED: "Also: {}.",
        f"{PREGNANCY}_yes": "I am pregnant.",
        f"{PREGNANCY}_no": "I am not pregnant.",
        PREGNANCY: "Pregnancy: {}.",
        f"{CONDITIONS}_none": "No other conditions or medicines.",
        CONDITIONS: "Conditions and medicines: {}.",
    },
    "es": {
        AGE: "Tengo {} años.",
        f"{AGE}_text": "Edad: {}.",
        ONSET: "Empezó {}.",
        SEVERITY: "El dolor es {}/10.",
        f"{SEVERITY}_text": "Intensidad: {}.",
        f"{ASSOCIATED}_none": "Ninguna de las señales de alarma.",
        ASSOCIATED: "También: {}.",
        f"{PREGNANCY}_yes": "Estoy embarazada.",
        f"{PREGNANCY}_no": "No estoy embarazada.",
        PREGNANCY: "Embarazo: {}.",
        f"{CONDITIONS}_none": "Sin otras enfermedades ni medicamentos.",
        CONDITIONS: "Enfermedades y medicamentos: {}.",
    },
}


def language_of(tracker: Tracker) -> str:
    value = tracker.get_slot("language")
    return value if value in _SENTENCES else "en"


def complaint_of(tracker: Tracker) -> str:
    """The main complaint: the slot, or (before it is stored) the message that started the form."""
    value = tracker.get_slot(COMPLAINT)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return str((tracker.latest_message or {}).get("text") or "").strip()


def _answer(tracker: Tracker, slot: str) -> str | None:
    value = tracker.get_slot(slot)
    if not isinstance(value, str) or not value.strip() or value == UNKNOWN:
        return None
    return value.strip()


def describe(tracker: Tracker) -> tuple[str, float | None]:
    """The complaint and the answers so far as one text, and the age in years when answered."""
    words = _SENTENCES[language_of(tracker)]
    parts = [complaint_of(tracker)]
    if parts[0] and parts[0][-1] not in ".!?":
        parts[0] += "."
    age_years = None
    age = _answer(tracker, AGE)
    if age:
        age_years = age_years_of(age)
        is_bare = bool(_BARE_AGE_RE.match(fold(age)))
        parts.append(words[AGE].format(age) if is_bare else words[f"{AGE}_text"].format(age))
    onset = _answer(tracker, ONSET)
    if onset:
        parts.append(words[ONSET].format(onset))
    severity = _answer(tracker, SEVERITY)
    if severity:
        score = severity_of(severity)
        parts.append(
            words[SEVERITY].format(score)
            if score is not None
            else words[f"{SEVERITY}_text"].format(severity)
        )
    for slot in (ASSOCIATED, CONDITIONS):
        value = _answer(tracker, slot)
        if value == NONE:
            parts.append(words[f"{slot}_none"])
        elif value:
            parts.append(words[slot].format(value))
    pregnancy = _answer(tracker, PREGNANCY)
    if pregnancy in (YES, NO):
        parts.append(words[f"{PREGNANCY}_{pregnancy}"])
    elif pregnancy:
        parts.append(words[PREGNANCY].format(pregnancy))
    return " ".join(p for p in parts if p), age_years


def assess(tracker: Tracker) -> Decision:
    text, age_years = describe(tracker)
    return get_engine().assess(text, language=language_of(tracker), age_years=age_years)


def questions_to_ask(tracker: Tracker) -> list[str]:
    """The form's questions still worth asking, in order (answered ones included)."""
    slots = [COMPLAINT]
    try:
        decision = assess(tracker)
    except Exception:
        logger.exception("clinical engine unavailable: asking every triage question")
        return [*slots, AGE, ONSET, SEVERITY, ASSOCIATED, PREGNANCY, CONDITIONS]
    if decision.disposition in STOP_ASKING:
        return slots
    facts, present = decision.facts, decision.present
    answered = {s for s in FORM_SLOTS if tracker.get_slot(s) is not None}
    text, _ = describe(tracker)
    complaint = complaint_of(tracker)

    def keep(slot: str, already_said: bool) -> None:
        if slot in answered or not already_said:
            slots.append(slot)

    keep(AGE, facts.age_years is not None)
    keep(ONSET, facts.duration_minutes is not None)
    if involves_pain(complaint, present):
        keep(SEVERITY, facts.severity is not None)
    keep(ASSOCIATED, False)
    said_pregnancy = "pregnancy" in {f.finding_id for f in decision.findings} or bool(
        _PREGNANCY_SAID_RE.search(fold(text))
    )
    if PREGNANCY in answered or pregnancy_could_matter(text, present, facts.age_years):
        keep(PREGNANCY, said_pregnancy)
    findings = get_engine().ruleset.findings
    risks = {f for f in present if f in findings and findings[f].kind == "risk"} - {"pregnancy"}
    keep(CONDITIONS, bool(risks))
    return slots


# --- the form's validation action ---------------------------------------------------------------


class ValidateTriageForm(FormValidationAction):
    def name(self) -> str:
        return "validate_triage_form"

    async def required_slots(
        self,
        domain_slots: list[str],
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> list[str]:
        return questions_to_ask(tracker)

    async def extract_triage_complaint(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if tracker.get_slot(COMPLAINT):
            return {}
        text = str((tracker.latest_message or {}).get("text") or "").strip()
        return {COMPLAINT: text} if text else {}

    @staticmethod
    def _free_text(slot: str, value: Any, *, none_allowed: bool = False) -> dict[str, Any]:
        text = str(value or "").strip()
        if not text or is_unknown(text):
            return {slot: UNKNOWN}
        if none_allowed and is_none(text):
            return {slot: NONE}
        return {slot: text}

    def validate_triage_complaint(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        text = str(value or "").strip()
        return {COMPLAINT: text or UNKNOWN}

    def validate_triage_age(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        return self._free_text(AGE, value)

    def validate_triage_onset(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        return self._free_text(ONSET, value)

    def validate_triage_severity(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        return self._free_text(SEVERITY, value)

    def validate_triage_associated(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        return self._free_text(ASSOCIATED, value, none_allowed=True)

    def validate_triage_pregnancy(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        text = str(value or "").strip()
        folded = fold(text)
        if not text or is_unknown(text):
            return {PREGNANCY: UNKNOWN}
        if _NO_RE.match(folded):
            return {PREGNANCY: NO}
        if _YES_RE.match(folded):
            return {PREGNANCY: YES}
        return {PREGNANCY: text}

    def validate_triage_conditions(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        return self._free_text(CONDITIONS, value, none_allowed=True)


# --- the result ---------------------------------------------------------------------------------

_ADVICE: dict[str, dict[str, str]] = {
    "en": {
        "emergency": "This could be an emergency. Call {number} or go to the nearest emergency "
        "room now. Don't drive yourself if you feel faint or have chest pain.",
        "urgent": "You should be seen by a doctor within 24 hours. Ask me to have our staff "
        "contact you to book an urgent appointment, or go to an urgent care clinic today. If "
        "you get worse, call {number}.",
        "routine": "Please book an appointment with the clinic in the next few days. If you "
        "get worse or notice a warning sign, get help sooner, and call {number} in an emergency.",
        "self_care": "This can usually be cared for at home: rest, drink plenty of fluids and "
        "use over-the-counter remedies as the label says. Book an appointment if you are not "
        "better in a few days or you get worse, and call {number} if you have trouble "
        "breathing, chest pain, confusion or fainting.",
        "unavailable": "I couldn't assess your symptoms right now. A member of our care team "
        "will review your message. If your symptoms are severe, call {number} now.",
        "why": "Why: {}",
        "flags": "Warning signs noted: {}.",
        "note": "This is not a diagnosis.",
    },
    "es": {
        "emergency": "Esto podría ser una emergencia. Llame al {number} o vaya a la sala de "
        "emergencias más cercana ahora. No maneje usted mismo si se siente débil o tiene dolor "
        "de pecho.",
        "urgent": "Debe verle un médico en las próximas 24 horas. Pídame que nuestro personal "
        "se comunique con usted para darle una cita urgente, o vaya hoy a una clínica de "
        "atención urgente. Si empeora, llame al {number}.",
        "routine": "Por favor, haga una cita con la clínica en los próximos días. Si empeora o "
        "nota una señal de alarma, busque ayuda antes, y llame al {number} en una emergencia.",
        "self_care": "Normalmente esto se puede cuidar en casa: descanse, tome muchos líquidos "
        "y use medicamentos de venta libre como indica la etiqueta. Haga una cita si no mejora "
        "en unos días o empeora, y llame al {number} si tiene dificultad para respirar, dolor "
        "de pecho, confusión o desmayos.",
        "unavailable": "No pude evaluar sus síntomas en este momento. Un miembro de nuestro "
        "equipo de atención revisará su mensaje. Si sus síntomas son graves, llame al {number} "
        "ahora.",
        "why": "Motivo: {}",
        "flags": "Señales de alarma: {}.",
        "note": "Esto no es un diagnóstico.",
    },
}


def emergency_number() -> str:
    return os.environ.get("EMERGENCY_NUMBER", "").strip() or "911"


def _finding_label(finding_id: str, language: str) -> str:
    finding = get_engine().ruleset.findings.get(finding_id)
    labels = getattr(finding, "label", None) or {}
    return str(labels.get(language) or labels.get("en") or finding_id.replace("_", " "))


def _shown(value: Any) -> str:
    return str(value) if value not in (None, "") else "not asked"


def clinician_summary(tracker: Tracker, decision: Decision, flags_en: list[str]) -> str:
    facts = decision.facts
    age = tracker.get_slot(AGE)
    if age is None and facts.age_years is not None:
        age = f"{facts.age_years:g} years (from the description)"
    onset = tracker.get_slot(ONSET)
    if onset is None and facts.duration_minutes is not None:
        onset = f"about {facts.duration_minutes / 60:g} hours (from the description)"
    severity = tracker.get_slot(SEVERITY)
    if severity is None and facts.severity is not None:
        severity = f"{facts.severity}/10 (from the description)"
    parts = [
        f"Complaint: {complaint_of(tracker)!r}",
        f"age: {_shown(age)}",
        f"onset/duration: {_shown(onset)}",
        f"severity: {_shown(severity)}",
        f"associated warning signs: {_shown(tracker.get_slot(ASSOCIATED))}",
        f"pregnancy: {_shown(tracker.get_slot(PREGNANCY))}",
        f"conditions/medicines: {_shown(tracker.get_slot(CONDITIONS))}",
        f"red flags: {', '.join(flags_en) or 'none'}",
        f"disposition: {decision.disposition.upper()}",
        f"rules: {', '.join(decision.rule_ids) or 'none'}",
        f"ruleset {decision.ruleset_version}",
    ]
    return "; ".join(parts) + "."


class ActionTriageResult(Action):
    """Tell the patient what to do, send the decision to the platform, clear the form."""

    def name(self) -> str:
        return "action_triage_result"

    async def run(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> list[EventType]:
        language = language_of(tracker)
        words = _ADVICE[language]
        number = emergency_number()
        reset: list[EventType] = [SlotSet(slot, None) for slot in FORM_SLOTS]
        reset.append(SlotSet("requested_slot", None))
        try:
            decision = assess(tracker)
        except Exception:
            logger.exception("clinical engine failed: triage result unavailable")
            dispatcher.utter_message(text=words["unavailable"].format(number=number))
            return [*reset, SlotSet(DISPOSITION, UNKNOWN)]

        flags = [_finding_label(f, language) for f in decision.red_flags]
        flags_en = [_finding_label(f, "en") for f in decision.red_flags]
        lines = [words[decision.disposition].format(number=number)]
        if decision.reasons:
            lines.append(words["why"].format(" ".join(decision.reasons)))
        if flags:
            lines.append(words["flags"].format(", ".join(flags)))
        lines.append(words["note"])
        dispatcher.utter_message(text="\n".join(lines))
        dispatcher.utter_message(
            json_message={
                "triage": {
                    "disposition": decision.disposition,
                    "reasons": list(decision.reasons),
                    "red_flags": list(decision.red_flags),
                    "rule_ids": list(decision.rule_ids),
                    "safety_rule_ids": list(decision.safety_rule_ids),
                    "ruleset_version": decision.ruleset_version,
                    "summary": clinician_summary(tracker, decision, flags_en),
                }
            }
        )
        return [*reset, SlotSet(DISPOSITION, decision.disposition)]
