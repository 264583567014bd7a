"""The platform's only door into Rasa: its REST channel and HTTP API.

Rasa runs as its own server (its own Python 3.10 environment, as in production); the platform
never imports it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from bot.contract import Button

log = logging.getLogger(__name__)


class DialogueUnavailable(Exception):
    """Rasa (or the action server behind it) could not produce a reply."""


@dataclass(frozen=True)
class BotReply:
    """A message for the patient, or (with empty text) a structured result for the platform,
    such as the triage decision a custom action sends as `{"triage": {...}}`."""

    text: str
    buttons: tuple[Button, ...] = ()
    custom: dict[str, Any] | None = None


class DialogueEngine(Protocol):
    async def respond(
        self, *, conversation_id: str, text: str, metadata: dict[str, Any]
    ) -> list[BotReply]: ...

    async def interrupt(self, *, conversation_id: str) -> None:
        """Stop any form in progress: the safety layer has taken over this turn."""


class RasaClient:
    """Rasa's REST webhook, guarded by the action server's health.

    Rasa answers even when the action server is down, silently skipping custom actions, so a
    patient would get replies that ignore what only actions know. The client checks the action
    server beside each call (a healthy answer is trusted for a moment, a failure re-checked every
    time) and discards Rasa's answer when the action server is down.
    """

    HEALTHY_FOR_S = 5.0

    def __init__(
        self,
        *,
        base_url: str,
        action_server_url: str,
        timeout_s: float,
        client: httpx.AsyncClient,
    ) -> None:
        self._url = base_url.rstrip("/")
        self._actions_url = action_server_url.rstrip("/")
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0))
        self._client = client
        self._actions_healthy_until = 0.0

    async def respond(
        self, *, conversation_id: str, text: str, metadata: dict[str, Any]
    ) -> list[BotReply]:
        body = {"sender": conversation_id, "message": text, "metadata": metadata}
        # The health check runs beside the Rasa call, not before it, to stay off the latency path.
        health, answer = await asyncio.gather(
            self._require_action_server(),
            self._client.post(
                f"{self._url}/webhooks/rest/webhook", json=body, timeout=self._timeout
            ),
            return_exceptions=True,
        )
        if isinstance(health, BaseException):
            raise DialogueUnavailable(f"action server: {type(health).__name__}") from health
        try:
            if isinstance(answer, BaseException):
                raise answer
            answer.raise_for_status()
            events = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise DialogueUnavailable(type(exc).__name__) from exc
        parsed = (parse_reply(e) for e in events if isinstance(e, dict))
        replies = [r for r in parsed if r is not None]
        if not any(r.text or r.custom for r in replies):
            # Rasa answers [] when a custom action failed (e.g. the action server is down);
            # to the patient that is the same as no assistant at all.
            raise DialogueUnavailable("empty reply")
        return replies

    async def interrupt(self, *, conversation_id: str) -> None:
        events = [
            {"event": "active_loop", "name": None},
            {"event": "slot", "name": "requested_slot", "value": None},
        ]
        try:
            response = await self._client.post(
                f"{self._url}/conversations/{conversation_id}/tracker/events",
                json=events,
                timeout=self._timeout,
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            # The safety reply has gone out already; a form left open only asks its question.
            log.warning("could not stop the dialogue's form", extra={"error": type(exc).__name__})

    async def _require_action_server(self) -> None:
        if time.monotonic() < self._actions_healthy_until:
            return
        await self.action_server_ready()
        self._actions_healthy_until = time.monotonic() + self.HEALTHY_FOR_S

    async def action_server_ready(self) -> dict[str, Any]:
        response = await self._client.get(f"{self._actions_url}/health", timeout=1.0)
        response.raise_for_status()
        return {}

    async def ready(self) -> dict[str, Any]:
        response = await self._client.get(f"{self._url}/status", timeout=2.0)
        response.raise_for_status()
        status: dict[str, Any] = response.json()
        if not status.get("model_file"):
            raise DialogueUnavailable("no model loaded")
        return {"model": status.get("model_id") or status.get("model_file")}


def parse_reply(event: dict[str, Any]) -> BotReply | None:
    custom = event.get("custom")
    if isinstance(custom, dict) and not event.get("text"):
        return BotReply(text="", custom=custom)
    text = event.get("text")
    raw_buttons = event.get("buttons") or []
    buttons = tuple(
        Button(title=str(b.get("title", "")), payload=str(b.get("payload", "")))
        for b in raw_buttons
        if isinstance(b, dict) and b.get("title")
    )
    if not isinstance(text, str) or not text.strip():
        return None
    return BotReply(text=text, buttons=buttons)
