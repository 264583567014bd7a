"""Custom actions for the clinic patient assistant.

Why this module exists
----------------------
The platform (not Rasa) decides which language a patient is using and sends it
with every message to the REST webhook as message metadata::

    {"sender": "...", "message": "...", "metadata": {"language": "es"}}

Rasa cannot map message metadata to a slot with a built-in slot mapping, so the
``language`` slot uses a *custom* slot mapping that points to
``action_set_language``. Rasa runs that action (through ``action_extract_slots``)
after every user message, before the next bot action is predicted, so the
conditional response variations in ``domain.yml`` always see the language of
the current message.

Unsupported or missing values never overwrite the slot: the previous value
(initially ``en``) is kept.

Only ``rasa_sdk`` and the standard library are imported, so the action server
can run in the Rasa virtual environment without any platform dependencies.
"""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

LANGUAGE_SLOT = "language"
SUPPORTED_LANGUAGES = frozenset({"en", "es"})


def normalise_language(value: Any) -> str | None:
    """Return a supported language code for ``value``, or ``None``.

    Accepts things like ``"es"``, ``"ES"``, ``" es "`` or ``"es-MX"``.
    """
    if not isinstance(value, str):
        return None
    code = value.strip().lower().replace("_", "-").split("-", 1)[0]
    return code if code in SUPPORTED_LANGUAGES else None


def language_from_metadata(latest_message: dict[str, Any] | None) -> str | None:
    """Read ``metadata.language`` from a tracker's ``latest_message``."""
    if not isinstance(latest_message, dict):
        return None
    metadata = latest_message.get("metadata")
    if not isinstance(metadata, dict):
        return None
    return normalise_language(metadata.get(LANGUAGE_SLOT))


class ActionSetLanguage(Action):
    """Fill the ``language`` slot from the latest user message's metadata."""

    def name(self) -> str:
        return "action_set_language"

    async def run(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: dict[str, Any],
    ) -> list[EventType]:
        language = language_from_metadata(tracker.latest_message)
        if language is None or language == tracker.get_slot(LANGUAGE_SLOT):
            return []
        return [SlotSet(LANGUAGE_SLOT, language)]
