"""What the assistant says when the safety layer fires, and the crisis follow-up that comes after.

The texts are fixed templates, reviewed like the rules: an emergency reply always carries the
local emergency number, a crisis reply always carries the crisis line. `guard_reply` is the check
any generated phrasing must pass before it may replace a template.

The crisis follow-up asks the six screening questions of the Columbia Suicide Severity Rating
Scale (C-SSRS) screener, in its order and skip logic (question 2 "no" goes to question 6), instead
of small talk. https://cssrs.columbia.edu/the-columbia-scale-c-ssrs/cssrs-for-communities-and-healthcare/
A "yes" to intent (4), a plan (5) or recent preparatory behaviour (6) makes the case imminent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot.contract import SafetyAssessment


@dataclass(frozen=True)
class Resources:
    emergency_number: str = "911"
    crisis_line: str = "988"
    poison_control: str = "1-800-222-1222"
    domestic_violence_line: str = "1-800-799-7233"


_EMERGENCY = {
    "en": "This could be a medical emergency. Call {emergency} now, or go to the nearest "
    "emergency department. If you can't call, ask someone near you to call for you. Don't wait "
    "for a reply here: I have alerted our clinic staff as a priority.",
    "es": "Esto podría ser una emergencia médica. Llame ahora al {emergency} o vaya a la sala de "
    "emergencias más cercana. Si no puede llamar, pida a alguien que esté con usted que llame. "
    "No espere una respuesta aquí: ya avisé con prioridad al personal de la clínica.",
}
CRISIS_CATEGORIES = ("suicidal_ideation", "self_harm", "overdose", "third_party", "abuse")
_IMMINENT_FIRST = {
    "en": "Your safety comes first. If you or someone else is in danger right now, call "
    "{emergency} now. If you can, stay with someone and move away from anything that could be "
    "used to cause harm. I have alerted our clinic staff as a priority.",
    "es": "Su seguridad es lo primero. Si usted u otra persona está en peligro ahora mismo, llame "
    "ya al {emergency}. Si puede, quédese con alguien y aléjese de cualquier cosa con la que se "
    "pueda hacer daño. Ya avisé con prioridad al personal de la clínica.",
}
_POISON = {
    "en": "For a swallowed medicine or poison, Poison Control is at {poison} (free, 24/7), but "
    "if the person is very drowsy, hard to wake or struggling to breathe, call {emergency} first.",
    "es": "Si se tragó un medicamento o veneno, Control de Envenenamientos atiende en el "
    "{poison} (gratis, 24 horas), pero si la persona está muy somnolienta, no despierta bien o le "
    "cuesta respirar, llame primero al {emergency}.",
}
_CRISIS = {
    "en": "Thank you for telling me. I'm really glad you reached out, and you don't have to go "
    "through this alone. You can call or text {crisis} (Suicide & Crisis Lifeline) any time, day "
    "or night, to talk with a trained counselor. If you or someone else is in immediate danger, "
    "call {emergency}. I've let our clinic team know, and someone will reach out to you.",
    "es": "Gracias por contármelo. Me alegra mucho que haya escrito, y no tiene que pasar por "
    "esto solo/a. Puede llamar o enviar un mensaje de texto al {crisis} (Línea de Prevención del "
    "Suicidio y Crisis, con atención en español) a cualquier hora para hablar con un consejero. "
    "Si usted u otra persona está en peligro inmediato, llame al {emergency}. Ya avisé al equipo "
    "de la clínica y alguien se comunicará con usted.",
}
_ABUSE = {
    "en": "You can also call the National Domestic Violence Hotline at {dv} or text START to "
    "88788, free and confidential, 24/7.",
    "es": "También puede llamar a la Línea Nacional contra la Violencia Doméstica al {dv} "
    "(atienden en español) o enviar START al 88788, gratis y confidencial, las 24 horas.",
}

# C-SSRS screener, past month (questions 1-5) and past three months (question 6).
CSSRS_QUESTIONS = {
    1: {
        "en": "May I ask you a few questions so we can help you best? In the past month, have you "
        "wished you were dead or wished you could go to sleep and not wake up?",
        "es": "¿Puedo hacerle unas preguntas para ayudarle mejor? En el último mes, ¿ha deseado "
        "estar muerto/a o poder dormirse y no despertar?",
    },
    2: {
        "en": "In the past month, have you actually had any thoughts of killing yourself?",
        "es": "En el último mes, ¿ha tenido realmente pensamientos de quitarse la vida?",
    },
    3: {
        "en": "Have you been thinking about how you might do this?",
        "es": "¿Ha estado pensando en cómo podría hacerlo?",
    },
    4: {
        "en": "Have you had these thoughts and had some intention of acting on them?",
        "es": "¿Ha tenido estos pensamientos con alguna intención de llevarlos a cabo?",
    },
    5: {
        "en": "Have you started to work out, or worked out, the details of how to kill yourself? "
        "Do you intend to carry out this plan?",
        "es": "¿Ha empezado a planear, o ya planeó, los detalles de cómo quitarse la vida? "
        "¿Tiene la intención de llevar a cabo ese plan?",
    },
    6: {
        "en": "In the past three months, have you done anything, started to do anything, or "
        "prepared to do anything to end your life?",
        "es": "En los últimos tres meses, ¿ha hecho algo, empezado a hacer algo o se ha "
        "preparado para hacer algo para terminar con su vida?",
    },
}
_SAFE_NOW = {
    "en": "Are you safe where you are right now? You can answer yes or no.",
    "es": "¿Está a salvo donde se encuentra ahora? Puede responder sí o no.",
}
_OTHER_SAFE_NOW = {
    "en": "Is the person safe right now, and is someone with them? You can answer yes or no.",
    "es": "¿La persona está a salvo ahora y hay alguien con ella? Puede responder sí o no.",
}
_IMMINENT = {
    "en": "Thank you for your honesty. Your safety comes first: please call {emergency} or "
    "{crisis} now, or go to the nearest emergency department. If you can, stay with someone and "
    "move away from anything you could use to hurt yourself. Our team has been told this is "
    "urgent.",
    "es": "Gracias por su sinceridad. Su seguridad es lo primero: llame ahora al {emergency} o al "
    "{crisis}, o vaya a la sala de emergencias más cercana. Si puede, quédese con alguien y "
    "aléjese de cualquier cosa con la que pueda hacerse daño. Avisamos al equipo que es urgente.",
}
_CLOSING = {
    "en": "Thank you for answering. A member of our clinic team will contact you soon. You can "
    "call or text {crisis} any time, and call {emergency} if you are in danger.",
    "es": "Gracias por responder. Alguien del equipo de la clínica se comunicará con usted "
    "pronto. Puede llamar o escribir al {crisis} a cualquier hora, y llamar al {emergency} si "
    "está en peligro.",
}
_UNSAFE = {
    "en": "Please call {emergency} now, or get to a safe place and call when you can. Our team "
    "has been told this is urgent.",
    "es": "Llame ahora al {emergency}, o vaya a un lugar seguro y llame en cuanto pueda. "
    "Avisamos al equipo que es urgente.",
}

_YES = re.compile(
    r"^\W*(yes|yeah|yep|yup|si|sí|claro|a veces|sometimes|i have|i did|i do|correct|true|"
    r"kind of|kinda|sort of|maybe|tal vez|quizas|quizás|creo que si|creo que sí)\b",
    re.IGNORECASE,
)
_NO = re.compile(
    r"^\W*(no|nope|nah|never|nunca|not really|n|negative|i have not|i haven't|i havent|none)\b",
    re.IGNORECASE,
)


def _text(templates: dict[str, str], language: str, resources: Resources) -> str:
    return templates.get(language, templates["en"]).format(
        emergency=resources.emergency_number,
        crisis=resources.crisis_line,
        poison=resources.poison_control,
        dv=resources.domestic_violence_line,
    )


def safety_replies(assessment: SafetyAssessment, language: str, resources: Resources) -> list[str]:
    """The first replies to a message the safety layer flagged, most urgent first."""
    replies: list[str] = []
    categories = set(assessment.categories)
    crisis_only = bool(categories) and categories <= set(CRISIS_CATEGORIES) - {"overdose"}
    if assessment.level == "emergency" and crisis_only:
        # Imminent danger to life without a medical emergency (a plan for tonight, a weapon).
        replies.append(_text(_IMMINENT_FIRST, language, resources))
    elif assessment.level == "emergency":
        text = _text(_EMERGENCY, language, resources)
        if {"poisoning", "overdose", "ingestion", "toxic"} & categories:
            text += " " + _text(_POISON, language, resources)
        replies.append(text)
    if assessment.crisis or assessment.level == "crisis":
        text = _text(_CRISIS, language, resources)
        if "abuse" in assessment.categories:
            text += " " + _text(_ABUSE, language, resources)
        replies.append(text)
    return replies


def guard_reply(text: str, assessment: SafetyAssessment, resources: Resources) -> bool:
    """Whether a phrased reply keeps what the decision requires; a language model's wording may
    replace a template only when this holds, so it can never drop the number to call."""
    if assessment.level == "emergency" and resources.emergency_number not in text:
        return False
    crisis = assessment.crisis or assessment.level == "crisis"
    return not (crisis and resources.crisis_line not in text)


def start_protocol(assessment: SafetyAssessment) -> dict[str, Any] | None:
    """The follow-up a crisis opens: the C-SSRS screener for the person themselves, one safety
    question for abuse or a report about someone else."""
    if not (assessment.crisis or assessment.level == "crisis"):
        return None
    categories = set(assessment.categories)
    if categories & {"suicidal_ideation", "self_harm", "overdose"}:
        return {"protocol": "cssrs", "step": 1, "answers": {}}
    if "third_party" in categories:
        return {"protocol": "other_safe_now", "step": 1, "answers": {}}
    return {"protocol": "safe_now", "step": 1, "answers": {}}


def protocol_question(state: dict[str, Any], language: str) -> str:
    if state["protocol"] == "cssrs":
        return CSSRS_QUESTIONS[state["step"]].get(language, CSSRS_QUESTIONS[state["step"]]["en"])
    templates = _OTHER_SAFE_NOW if state["protocol"] == "other_safe_now" else _SAFE_NOW
    return templates.get(language, templates["en"])


def read_answer(text: str) -> str:
    if _NO.match(text.strip()):
        return "no"
    if _YES.match(text.strip()):
        return "yes"
    return "unclear"


@dataclass(frozen=True)
class ProtocolStep:
    replies: list[str]
    state: dict[str, Any] | None  # None: the follow-up is over
    imminent: bool
    answers: dict[str, str]


def advance_protocol(
    state: dict[str, Any], text: str, language: str, resources: Resources
) -> ProtocolStep:
    """Record the answer to the current question and say what comes next."""
    answer = read_answer(text)
    step = int(state["step"])
    answers = {**state.get("answers", {}), str(step): answer}
    if state["protocol"] != "cssrs":
        # "Are you safe?": anything but a clear yes is treated as not safe.
        if answer == "yes":
            return ProtocolStep([_text(_CLOSING, language, resources)], None, False, answers)
        return ProtocolStep([_text(_UNSAFE, language, resources)], None, True, answers)
    # Unclear answers count as yes for the risk questions: a screener errs toward asking more.
    said_yes = answer != "no"
    if step in (4, 5, 6) and answer == "yes":
        return ProtocolStep([_text(_IMMINENT, language, resources)], None, True, answers)
    if step == 2 and not said_yes:
        next_step = 6
    elif step >= 6:
        return ProtocolStep([_text(_CLOSING, language, resources)], None, False, answers)
    else:
        next_step = step + 1
    next_state = {**state, "step": next_step, "answers": answers}
    return ProtocolStep([protocol_question(next_state, language)], next_state, False, answers)
