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
    "attachment_received": {
        "en": "Thank you, we saved your picture with your conversation for the care team. "
        "Please also tell me in words what is going on.",
        "es": "Gracias, guardamos su imagen en su conversación para el equipo de atención. "
        "Cuénteme también con palabras qué está pasando.",
    },
    "attachment_refused": {
        "en": "We could not keep a file you sent ({reason}). Pictures (JPEG, PNG, GIF, HEIC) "
        "up to {max_mb} MB can be sent.",
        "es": "No pudimos guardar un archivo que envió ({reason}). Se pueden enviar imágenes "
        "(JPEG, PNG, GIF, HEIC) de hasta {max_mb} MB.",
    },
    # Carrier keywords (SMS). HELP must name who is texting and how to stop (CTIA).
    "sms_help": {
        "en": "{clinic} virtual assistant. Text your question any time. Reply STOP to stop "
        "texts. In an emergency call {emergency_number}.",
        "es": "Asistente virtual de {clinic}. Escriba su pregunta cuando quiera. Responda ALTO "
        "para dejar de recibir mensajes. En una emergencia llame al {emergency_number}.",
    },
    "sms_opted_out": {
        "en": "You will no longer receive texts from {clinic}. Reply START to text us again. "
        "In an emergency call {emergency_number}.",
        "es": "Ya no recibirá mensajes de {clinic}. Responda COMENZAR para volver a escribirnos. "
        "En una emergencia llame al {emergency_number}.",
    },
    "sms_opted_in": {
        "en": "You can text {clinic} again. Reply HELP for help, STOP to stop.",
        "es": "Puede volver a escribir a {clinic}. Responda AYUDA para ayuda, ALTO para "
        "dejar de recibir mensajes.",
    },
    "link_sms_unavailable": {
        "en": "Texting is not available right now. Please try again later.",
        "es": "Los mensajes de texto no están disponibles ahora. Inténtelo más tarde.",
    },
    "link_invalid_phone": {
        "en": "That does not look like a mobile number. Please check it, with the area code.",
        "es": "Ese no parece un número de celular. Revíselo, con el código de área.",
    },
    "link_rate_limited": {
        "en": "Too many codes were requested. Please wait an hour and try again.",
        "es": "Se pidieron demasiados códigos. Espere una hora e inténtelo de nuevo.",
    },
    "link_opted_out": {
        "en": "This number asked us not to text it. Text START to our number first, then try "
        "again.",
        "es": "Este número nos pidió no enviarle mensajes. Primero envíe COMENZAR a nuestro "
        "número y vuelva a intentarlo.",
    },
    "link_invalid_code": {
        "en": "That code is not right. You can try {attempts} more time(s).",
        "es": "Ese código no es correcto. Puede intentarlo {attempts} vez/veces más.",
    },
    "link_expired": {
        "en": "That code has expired. Please ask for a new one.",
        "es": "Ese código venció. Pida uno nuevo.",
    },
    "link_locked": {
        "en": "Too many wrong codes. Please ask for a new code.",
        "es": "Demasiados códigos incorrectos. Pida un código nuevo.",
    },
    "link_no_pending_code": {
        "en": "There is no code waiting. Please ask for a new one.",
        "es": "No hay ningún código pendiente. Pida uno nuevo.",
    },
    "link_invalid": {
        "en": "Something was missing. Please try again.",
        "es": "Faltó algo. Inténtelo de nuevo.",
    },
    "phone_code": {
        "en": "{code} is your {clinic} code to continue your chat by text. It expires in "
        "{minutes} minutes. If you did not ask for it, ignore this message.",
        "es": "{code} es su código de {clinic} para continuar su conversación por mensaje de "
        "texto. Vence en {minutes} minutos. Si no lo pidió, ignore este mensaje.",
    },
    # Staff escalation (escalation/cases.py). {staff} is how the clinic shows its staff.
    "staff_joined": {
        "en": "{staff} from {clinic} has joined the conversation and will answer you here.",
        "es": "{staff} de {clinic} se unió a la conversación y le responderá aquí.",
    },
    "staff_handback": {
        "en": "{staff} has finished and you are back with the virtual assistant. "
        "What {staff} told you: {summary}",
        "es": "{staff} terminó y vuelve a hablar con el asistente virtual. "
        "Lo que {staff} le dijo: {summary}",
    },
    "staff_handback_nothing": {
        "en": "You are back with the virtual assistant. How else can I help?",
        "es": "Vuelve a hablar con el asistente virtual. ¿En qué más le puedo ayudar?",
    },
    "case_resolved_feedback": {
        "en": "Our staff have closed your request. If you like, tell us how it went (optional).",
        "es": "Nuestro personal cerró su solicitud. Si quiere, díganos cómo le fue (opcional).",
    },
    "feedback_good": {"en": "Good", "es": "Bien"},
    "feedback_okay": {"en": "Okay", "es": "Regular"},
    "feedback_poor": {"en": "Poor", "es": "Mal"},
    "feedback_thanks": {
        "en": "Thank you for telling us.",
        "es": "Gracias por decírnoslo.",
    },
    # Phone calls (channels/voice/). Spoken: short sentences, numbers as the caller dials them.
    "voice_disclosure": {
        "en": "You have reached {clinic}. You are talking with an automated assistant. "
        "This call is transcribed and kept in your record. At any time, press {staff_digit} "
        "to ask for a member of staff.",
        "es": "Se comunicó con {clinic}. Está hablando con un asistente automático. "
        "Esta llamada se transcribe y se guarda en su expediente. En cualquier momento, "
        "marque {staff_digit} para pedir hablar con el personal.",
    },
    "voice_greeting": {
        "en": "How can I help you today?",
        "es": "¿En qué le puedo ayudar hoy?",
    },
    "voice_offer_transfer": {
        "en": "To be connected now to the clinic's on-call clinician, press {digit} "
        "or say connect me.",
        "es": "Para comunicarse ahora con el médico de guardia de la clínica, marque {digit} "
        "o diga comuníqueme.",
    },
    "voice_connecting": {
        "en": "Connecting you now. Please stay on the line.",
        "es": "Le comunico ahora. Por favor, no cuelgue.",
    },
    "voice_staff_joining": {
        "en": "{staff} from {clinic} will take your call now. Please stay on the line.",
        "es": "{staff} de {clinic} atenderá su llamada ahora. Por favor, no cuelgue.",
    },
    "voice_staff_requested": {
        "en": "I have asked our staff to contact you. They will call or text you back as soon "
        "as they can. You can keep talking with me meanwhile.",
        "es": "Pedí a nuestro personal que se comunique con usted. Le llamarán o le escribirán "
        "lo antes posible. Mientras tanto, puede seguir hablando conmigo.",
    },
    "voice_staff_has_case": {
        "en": "A member of our staff has your request and will call or text you back. "
        "You can hang up, or stay on the line.",
        "es": "Un miembro de nuestro personal tiene su solicitud y le llamará o le escribirá. "
        "Puede colgar o seguir en la línea.",
    },
    "voice_no_one_free": {
        "en": "Sorry, no one could take your call right now. A member of staff will call or "
        "text you back. If this is an emergency, hang up and call {emergency_number}.",
        "es": "Lo sentimos, nadie pudo atender su llamada en este momento. Un miembro del "
        "personal le llamará o le escribirá. Si es una emergencia, cuelgue y llame al "
        "{emergency_number}.",
    },
    "voice_follow_up_sms": {
        "en": "{clinic}: thank you for your call. A member of our staff will get back to you "
        "soon. You can also reply to this text. If this is an emergency, call "
        "{emergency_number}.",
        "es": "{clinic}: gracias por su llamada. Un miembro de nuestro personal se comunicará "
        "con usted pronto. También puede responder a este mensaje. Si es una emergencia, "
        "llame al {emergency_number}.",
    },
    "voice_not_heard": {
        "en": "Sorry, I did not hear that. Could you say it again?",
        "es": "Perdón, no le escuché. ¿Podría repetirlo?",
    },
    "voice_unavailable": {
        "en": "Sorry, our phone assistant is unavailable right now. Please call again later, "
        "or if this is an emergency, hang up and call {emergency_number}.",
        "es": "Lo sentimos, nuestro asistente telefónico no está disponible. Llame más tarde "
        "o, si es una emergencia, cuelgue y llame al {emergency_number}.",
    },
}


def phrase(key: str, language: str, **values: object) -> str:
    variants = PHRASES[key]
    return variants.get(language, variants["en"]).format(**values)
