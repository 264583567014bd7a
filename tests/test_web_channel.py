"""The web chat's socket.io protocol with a real server, real Rasa and python-socketio clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import socketio

from core.settings import Settings
from tests.support import running_app

pytestmark = pytest.mark.rasa


class ChatClient:
    """A patient's browser tab, as the page's socket.io client behaves."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.session: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.typing: list[bool] = []
        self.errors: list[dict[str, Any]] = []
        self._history_event = asyncio.Event()
        self.sio.on("session", self._on_session)
        self.sio.on("history", self._on_history)
        self.sio.on("message", lambda m: self.messages.append(m))
        self.sio.on("typing", lambda t: self.typing.append(t["active"]))
        self.sio.on("error_message", lambda e: self.errors.append(e))

    async def _on_session(self, data: dict[str, Any]) -> None:
        self.session = data

    async def _on_history(self, data: dict[str, Any]) -> None:
        self.history = data["messages"]
        self._history_event.set()

    async def connect(self, url: str, token: str | None = None) -> None:
        await self.sio.connect(
            url, auth={"token": token} if token else {}, transports=["websocket"]
        )
        await asyncio.wait_for(self._history_event.wait(), 10)

    async def say(self, text: str, client_id: str | None = None, **extra: Any) -> dict[str, Any]:
        data = {"client_id": client_id or uuid.uuid4().hex, "text": text, **extra}
        result: dict[str, Any] = await self.sio.call("user_message", data, timeout=15)
        return result


@pytest.fixture
def live_settings(make_live_settings: Callable[..., Settings], sqlite_url: str) -> Settings:
    return make_live_settings(sqlite_url)


@pytest.fixture
async def server(live_settings: Settings) -> AsyncIterator[str]:
    async with running_app(live_settings) as (url, _):
        yield url


async def test_a_new_visitor_gets_a_session_and_rasa_answers(server: str) -> None:
    tab = ChatClient()
    await tab.connect(server)
    assert tab.session["token"] and tab.session["conversation_id"]
    assert tab.history == []
    ack = await tab.say("hello")
    assert ack["ok"] and ack["message"]["text"] == "hello" and ack["message"]["sender"] == "patient"
    replies = [m for m in tab.messages if m["direction"] == "outbound"]
    assert replies and replies[0]["sender"] == "bot"
    assert replies[0]["seq"] > ack["message"]["seq"]
    assert tab.typing == [True, False]
    await tab.sio.disconnect()


async def test_history_is_replayed_after_reload_and_a_resent_message_is_not_duplicated(
    server: str,
) -> None:
    first = ChatClient()
    await first.connect(server)
    client_id = uuid.uuid4().hex
    ack = await first.say("hi, what are your opening hours?", client_id=client_id)
    token = first.session["token"]
    await first.sio.disconnect()

    reloaded = ChatClient()
    await reloaded.connect(server, token=token)
    assert reloaded.session["conversation_id"] == first.session["conversation_id"]
    texts = [m["text"] for m in reloaded.history]
    assert texts[0] == "hi, what are your opening hours?" and len(texts) >= 2
    assert reloaded.history[0]["client_id"] == client_id

    # The page resends a message whose ack it never saw: same client id, same stored message.
    again = await reloaded.say("hi, what are your opening hours?", client_id=client_id)
    assert again["ok"] and again["message"]["id"] == ack["message"]["id"]
    third = ChatClient()
    await third.connect(server, token=token)
    assert [m["id"] for m in third.history] == [m["id"] for m in reloaded.history]
    await reloaded.sio.disconnect()
    await third.sio.disconnect()


async def test_two_tabs_of_one_conversation_see_the_same_messages(server: str) -> None:
    one = ChatClient()
    await one.connect(server)
    two = ChatClient()
    await two.connect(server, token=one.session["token"])
    ack = await one.say("thank you")
    await asyncio.sleep(0.3)
    assert ack["message"]["id"] in [m["id"] for m in two.messages]
    assert any(m["direction"] == "outbound" for m in two.messages)
    stranger = ChatClient()
    await stranger.connect(server)
    await asyncio.sleep(0.2)
    assert stranger.messages == []
    for tab in (one, two, stranger):
        await tab.sio.disconnect()


async def test_an_unknown_or_forged_token_starts_a_fresh_conversation(server: str) -> None:
    tab = ChatClient()
    await tab.connect(server, token="not-a-real-token-at-all-xxxxxxxx")
    assert tab.session["token"] != "not-a-real-token-at-all-xxxxxxxx"
    assert tab.history == []
    await tab.sio.disconnect()


async def test_bad_events_are_refused_clearly_and_the_chat_keeps_working(server: str) -> None:
    tab = ChatClient()
    await tab.connect(server)
    assert (await tab.sio.call("no_such_event", {"x": 1}, timeout=5))["code"] == "unknown_event"
    assert (await tab.sio.call("user_message", "just a string", timeout=5))["code"] == "invalid"
    assert (await tab.sio.call("user_message", {"text": "no id"}, timeout=5))["code"] == "invalid"
    assert (await tab.say("   "))["code"] == "empty"
    too_long = await tab.say("A" * 100_000)
    assert too_long["code"] == "too_long" and "too long" in too_long["message"]
    assert (await tab.say("hello\x00 there"))["ok"]
    assert (await tab.say("hello"))["ok"]
    await tab.sio.disconnect()


async def test_flooding_is_limited_for_that_visitor_only(
    make_live_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    settings = make_live_settings(sqlite_url, rate_limit_per_sender="3/minute")
    async with running_app(settings) as (url, _):
        flooder, bystander = ChatClient(), ChatClient()
        await flooder.connect(url)
        await bystander.connect(url)
        acks = [await flooder.say(f"hi {i}") for i in range(5)]
        assert [a["ok"] for a in acks] == [True, True, True, False, False]
        assert acks[-1]["code"] == "rate_limited"
        assert flooder.errors and flooder.errors[0]["code"] == "rate_limited"
        assert (await bystander.say("hi"))["ok"] and bystander.errors == []
        await flooder.sio.disconnect()
        await bystander.sio.disconnect()
