"""The knowledge-base question action.

Rasa decides *that* a message is a question for the clinic's documents (intent
`ask_clinic_question`, or a message it could not place); the platform answers it. The action
hands the question over as a custom payload rather than calling the platform back, because the
answer needs the embedding model, the index and the LLM router, which live in the platform's
environment (not Rasa's), and because it may stream to the web chat for longer than Rasa should
hold the conversation's lock. The safety layer read the message before Rasa did.

Only ``rasa_sdk`` and the standard library are imported (the action server runs in Rasa's env).
"""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher


class ActionAnswerQuestion(Action):
    def name(self) -> str:
        return "action_answer_question"

    async def run(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: dict[str, Any],
    ) -> list[EventType]:
        latest = tracker.latest_message or {}
        dispatcher.utter_message(
            json_message={
                "knowledge_question": {
                    "text": latest.get("text") or "",
                    "language": tracker.get_slot("language") or "en",
                    "intent": (latest.get("intent") or {}).get("name"),
                }
            }
        )
        return []
