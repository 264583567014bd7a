"""The patient accepted a staff follow-up: say so, and ask the platform to open a case.

The case itself (priority, deadline, the staff channel) is the platform's business, like the
triage result's escalation: the action only hands over a custom payload the orchestrator reads.
Only ``rasa_sdk`` and the standard library are imported (the action server runs in Rasa's env).
"""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher


class ActionRequestStaff(Action):
    def name(self) -> str:
        return "action_request_staff"

    async def run(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: dict[str, Any],
    ) -> list[EventType]:
        dispatcher.utter_message(response="utter_staff_will_follow_up")
        dispatcher.utter_message(json_message={"escalate": {"reason": "request"}})
        return []
