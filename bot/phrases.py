"""What the platform itself says to patients (not Rasa): errors and fallbacks, per language."""

from __future__ import annotations

PHRASES: dict[str, dict[str, str]] = {
    "assistant_unavailable": {
        "en": "Sorry, our virtual assistant is unavailable right now. Your message has been saved "
        "and a staff member will follow up. If this is an emergency, call {emergency_number}.",
        "es": "Lo sentimos, nuestro asistente virtual no está disponible en este momento. Su "
        "mensaje quedó guardado y un miembro del personal le responderá. Si es una emergencia, "
        "llame al {emergency_number}.",
    },
    "rephrase": {
        "en": "I didn't catch that. Could you tell me in a few words what is going on?",
        "es": "No le entendí. ¿Podría contarme en pocas palabras qué está pasando?",
    },
    "empty": {
        "en": "Please type a message before sending.",
        "es": "Escriba un mensaje antes de enviarlo.",
    },
    "too_long": {
        "en": "That message is too long ({max_chars} characters at most). "
        "Please shorten it or send it in parts.",
        "es": "Ese mensaje es demasiado largo (máximo {max_chars} caracteres). "
        "Acórtelo o envíelo en partes.",
    },
    "rate_limited": {
        "en": "You are sending messages faster than we can take them. "
        "Please wait a moment and try again.",
        "es": "Está enviando mensajes demasiado rápido. Espere un momento e inténtelo de nuevo.",
    },
}


def phrase(key: str, language: str, **values: object) -> str:
    variants = PHRASES[key]
    return variants.get(language, variants["en"]).format(**values)
