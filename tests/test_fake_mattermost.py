"""The Mattermost fake, driven through the real `mattermostdriver`: REST calls with `Driver`,
the WebSocket with its `Websocket` class, and the fake's calls to integrations against a small
receiver of our own."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import httpx
import pytest
import requests
import websockets
from mattermostdriver import Driver  # type: ignore[import-untyped, unused-ignore]
from mattermostdriver.endpoints.bots import Bots  # type: ignore[import-untyped, unused-ignore]
from mattermostdriver.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    FeatureDisabled,
    InvalidOrMissingParameters,
    NoAccessTokenProvided,
    NotEnoughPermissions,
    ResourceNotFound,
)
from mattermostdriver.websocket import Websocket  # type: ignore[import-untyped, unused-ignore]
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.mattermost_server import FakeMattermost, IntegrationError, form_fields
from tests.fakes.threaded import ThreadedServer

JSON = dict[str, Any]


@pytest.fixture
def fake() -> Iterator[FakeMattermost]:
    with FakeMattermost(team_name="clinic") as server:
        yield server


def driver_for(fake: FakeMattermost, token: str) -> Any:
    driver = Driver(fake.driver_options(token))
    driver.login()
    return driver


class Receiver:
    """An integration endpoint: records what the fake POSTs and answers what the test says."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], bytes]] = []
        self.answers: dict[str, tuple[int, Any]] = {}
        self._server = ThreadedServer("integration-receiver")

    def __enter__(self) -> Receiver:
        async def endpoint(request: Request) -> Response:
            path = request.url.path
            body = await request.body()
            if request.method == "GET":
                body = request.url.query.encode()
            self.calls.append((path, dict(request.headers), body))
            status, answer = self.answers.get(path, (200, {}))
            if answer is None:
                return Response(status_code=status)
            return JSONResponse(answer, status_code=status)

        self._server.serve(Starlette(routes=[Route("/{name}", endpoint, methods=["GET", "POST"])]))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._server.port}/{name}"

    def json_calls(self, name: str) -> list[JSON]:
        return [json.loads(body) for path, _, body in self.calls if path == f"/{name}"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


class Listener:
    """mattermostdriver's Websocket on the test's loop, its messages parsed into a queue."""

    def __init__(self, fake: FakeMattermost, token: str, **options: Any) -> None:
        self.options = Driver(fake.driver_options(token, **options)).options
        self.socket = Websocket(self.options, token)
        self.messages: asyncio.Queue[JSON] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def _handle(self, raw: str) -> None:
        await self.messages.put(json.loads(raw))

    async def __aenter__(self) -> Listener:
        self._task = asyncio.create_task(self.socket.connect(self._handle))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.socket.disconnect()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def next(self, timeout: float = 5.0) -> JSON:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def event(self, name: str, timeout: float = 5.0) -> JSON:
        while True:
            message = await self.next(timeout)
            if message.get("event") == name:
                return message


def raw_error(fake: FakeMattermost, method: str, path: str, token: str, **kwargs: Any) -> JSON:
    response = httpx.request(
        method,
        f"{fake.base_url}/api/v4{path}",
        headers={"Authorization": f"Bearer {token}"},
        **kwargs,
    )
    assert response.headers["content-type"] == "application/json"
    body: JSON = response.json()
    assert body["status_code"] == response.status_code
    assert body["detailed_error"] == ""
    assert len(body["request_id"]) == 26
    return body


# -- REST --------------------------------------------------------------------------------------


def test_login_with_token_and_bad_token(fake: FakeMattermost) -> None:
    driver = Driver(fake.driver_options(fake.bot_token))
    me = driver.login()
    assert me["id"] == fake.bot_user_id == driver.client.userid
    assert me["is_bot"] is True and me["roles"] == "system_user"

    with pytest.raises(NoAccessTokenProvided) as caught:
        Driver(fake.driver_options("not-a-token")).login()
    assert str(caught.value) == "Invalid or expired session, please login again."
    body = raw_error(fake, "GET", "/users/me", "not-a-token")
    assert body["id"] == "api.context.session_expired.app_error"
    assert fake.requests[0].path == "/users/me"
    assert fake.requests[0].user_id == fake.bot_user_id


def test_private_channel_members_and_errors(fake: FakeMattermost) -> None:
    bot = driver_for(fake, fake.bot_token)
    nurse = fake.add_user("nurse.joy", first_name="Joy", position="Nurse")
    outsider = fake.add_user("dr.who")
    options = {"team_id": fake.team_id, "name": "case-7", "display_name": "Case 7", "type": "P"}
    channel = bot.channels.create_channel(options)
    assert channel["type"] == "P" and channel["creator_id"] == fake.bot_user_id
    assert fake.members_of(channel["id"]) == [fake.bot_user_id]

    with pytest.raises(InvalidOrMissingParameters) as caught:
        bot.channels.create_channel(options)
    assert str(caught.value) == "A channel with that name already exists on the same team."
    body = raw_error(fake, "POST", "/channels", fake.bot_token, json=options)
    assert body["id"] == "store.sql_channel.save_channel.exists.app_error"
    assert body["status_code"] == 400
    with pytest.raises(InvalidOrMissingParameters):
        bot.channels.create_channel({**options, "name": "Case 7!"})

    member = bot.channels.add_user(channel["id"], options={"user_id": nurse["id"]})
    assert member["channel_id"] == channel["id"] and member["roles"] == "channel_user"
    listed = bot.channels.get_channel_members(channel["id"], params={"per_page": 200})
    assert {m["user_id"] for m in listed} == {fake.bot_user_id, nurse["id"]}
    assert bot.channels.get_channel_by_name(fake.team_id, "case-7")["id"] == channel["id"]
    assert bot.teams.get_team_by_name("clinic")["id"] == fake.team_id

    stranger = driver_for(fake, fake.token_for(outsider["id"]))
    with pytest.raises(ResourceNotFound):  # private: its existence stays hidden
        stranger.channels.get_channel_by_name(fake.team_id, "case-7")
    with pytest.raises(NotEnoughPermissions):
        stranger.channels.get_channel(channel["id"])
    with pytest.raises(NotEnoughPermissions):
        stranger.posts.create_post({"channel_id": channel["id"], "message": "hi"})

    patched = bot.channels.patch_channel(channel["id"], options={"header": "Open since 9:00"})
    assert patched["header"] == "Open since 9:00"
    assert bot.channels.remove_channel_member(channel["id"], nurse["id"]) == {"status": "OK"}
    types = [p["type"] for p in fake.posts_in(channel["id"])]
    assert types == ["system_add_to_channel", "system_header_change", "system_remove_from_channel"]


def test_users_and_presence(fake: FakeMattermost) -> None:
    bot = driver_for(fake, fake.bot_token)
    nurse = fake.add_user("nurse.joy", first_name="Joy", last_name="Lee", position="Nurse")
    doctor = fake.add_user("dr.ray")
    fake.set_status(nurse["id"], "online")
    fake.set_status(doctor["id"], "dnd")

    statuses = bot.status.get_user_statuses_by_id([nurse["id"], doctor["id"], fake.admin_user_id])
    assert [(s["user_id"], s["status"]) for s in statuses] == [
        (nurse["id"], "online"),
        (doctor["id"], "dnd"),
        (fake.admin_user_id, "offline"),
    ]
    assert set(statuses[0]) >= {"user_id", "status", "manual", "last_activity_at"}
    users = bot.users.get_users_by_ids([nurse["id"], doctor["id"]])
    assert [u["username"] for u in users] == ["nurse.joy", "dr.ray"]
    assert "notify_props" not in users[0]  # sanitized for other users
    user = bot.users.get_user(nurse["id"])
    assert (user["first_name"], user["last_name"], user["position"]) == ("Joy", "Lee", "Nurse")
    assert bot.users.get_user_by_username("dr.ray")["id"] == doctor["id"]
    with pytest.raises(ResourceNotFound):
        bot.users.get_user_by_username("nobody")
    with pytest.raises(InvalidOrMissingParameters):
        bot.users.get_user("not-an-id")


def test_create_post_strips_integrations_and_deduplicates(fake: FakeMattermost) -> None:
    bot = driver_for(fake, fake.bot_token)
    channel = fake.create_channel("case-1", "P", members=[fake.bot_user_id])
    action = {
        "name": "Claim",
        "type": "button",
        "integration": {"url": "http://app.test/act", "context": {"case": 1}},
    }
    body = {
        "channel_id": channel["id"],
        "message": "New case #urgent",
        "props": {"attachments": [{"text": "Chest pain", "actions": [action]}]},
        "pending_post_id": f"{fake.bot_user_id}:1700000000000",
    }
    post = bot.posts.create_post(body)
    sent = post["props"]["attachments"][0]["actions"][0]
    assert len(sent["id"]) == 26 and "integration" not in sent
    assert post["props"]["from_bot"] == "true"
    assert post["hashtags"] == "#urgent"
    assert post["metadata"] == {"embeds": [{"type": "message_attachment"}]}
    stored = fake.get_post(post["id"])
    assert stored["props"]["attachments"][0]["actions"][0]["integration"]["context"] == {"case": 1}
    assert bot.posts.get_post(post["id"])["props"] == post["props"]

    again = bot.posts.create_post(body)  # a retry after a lost answer
    assert again["id"] == post["id"]
    assert [p["id"] for p in fake.posts_in(channel["id"])] == [post["id"]]
    assert len([e for e in fake.published if e.event == "posted"]) == 1


def test_posts_since_paging_and_patch(fake: FakeMattermost) -> None:
    bot = driver_for(fake, fake.bot_token)
    nurse = fake.add_user("nurse.joy")
    channel = fake.create_channel("case-2", "P", members=[fake.bot_user_id, nurse["id"]])
    first = fake.user_posts(nurse["id"], channel["id"], "one")
    second = fake.user_posts(nurse["id"], channel["id"], "two")
    third = bot.posts.create_post({"channel_id": channel["id"], "message": "three"})

    since = bot.posts.get_posts_for_channel(channel["id"], params={"since": first["create_at"]})
    assert since["order"] == [third["id"], second["id"]]
    assert since["next_post_id"] == since["prev_post_id"] == ""
    assert "has_next" not in since
    assert since["posts"][second["id"]]["message"] == "two"

    page = bot.posts.get_posts_for_channel(channel["id"], params={"per_page": 1, "page": 1})
    assert page["order"] == [second["id"]]
    assert (page["next_post_id"], page["prev_post_id"]) == (third["id"], first["id"])

    edited = bot.posts.patch_post(third["id"], {"message": "three (edited)", "props": {"k": "v"}})
    assert edited["message"] == "three (edited)" and edited["edit_at"] > 0
    assert edited["props"] == {"k": "v"}  # a patch replaces all props, from_bot included
    after_edit = bot.posts.get_posts_for_channel(
        channel["id"], params={"since": third["create_at"]}
    )
    assert after_edit["order"] == [third["id"]]
    with pytest.raises(NotEnoughPermissions):
        bot.posts.patch_post(first["id"], {"message": "not mine"})


def test_files_and_public_links(fake: FakeMattermost) -> None:
    bot = driver_for(fake, fake.bot_token)
    nurse = fake.add_user("nurse.joy")
    channel = fake.create_channel("case-3", "P", members=[fake.bot_user_id, nurse["id"]])
    post = fake.user_posts(nurse["id"], channel["id"], "the scan", file_names=["scan.png"])
    (file_id,) = post["file_ids"]
    info = post["metadata"]["files"][0]
    assert (info["id"], info["name"], info["mime_type"]) == (file_id, "scan.png", "image/png")

    link = bot.files.get_public_file_link(file_id)["link"]
    assert link.startswith(f"{fake.base_url}/files/{file_id}/public?h=")
    assert httpx.get(link).content == b"contents of scan.png\n"
    fake.public_links = False
    with pytest.raises(FeatureDisabled):
        bot.files.get_public_file_link(file_id)


def test_injected_failures_reach_the_client_as_http_errors(fake: FakeMattermost) -> None:
    bot = driver_for(fake, fake.bot_token)
    channel = fake.create_channel("case-4", "O", members=[fake.bot_user_id])
    fake.fail_next("POST", "/posts", status=503)
    # No mattermostdriver exception class for 503: the plain HTTPError, response attached.
    with pytest.raises(requests.HTTPError) as caught:
        bot.posts.create_post({"channel_id": channel["id"], "message": "hi"})
    assert caught.value.response is not None
    assert caught.value.response.status_code == 503
    assert bot.posts.create_post({"channel_id": channel["id"], "message": "hi"})["message"] == "hi"


# -- bootstrap ---------------------------------------------------------------------------------


def test_bootstrap_calls_need_an_admin(fake: FakeMattermost) -> None:
    admin = driver_for(fake, fake.admin_token)
    team = admin.teams.create_team({"name": "north", "display_name": "North", "type": "I"})
    user = admin.users.create_user(
        {"username": "dr.new", "email": "dr.new@clinic.test", "password": "s3cret-pass"}
    )
    member = admin.teams.add_user_to_team(
        team["id"], options={"team_id": team["id"], "user_id": user["id"]}
    )
    assert member["user_id"] == user["id"]
    assert admin.teams.get_team_member(team["id"], user["id"])["team_id"] == team["id"]
    # Driver 7.3.2 has no `bots` property (only the deprecated `driver.api["bots"]`).
    bot = Bots(admin.client).create_bot({"username": "helper", "display_name": "Helper"})
    token = admin.users.create_user_access_token(bot["user_id"], options={"description": "app"})
    assert set(token) >= {"id", "token", "user_id", "description"}
    assert driver_for(fake, token["token"]).client.userid == bot["user_id"]
    listed = admin.client.get(f"/users/{bot['user_id']}/tokens")
    assert [t["id"] for t in listed] == [token["id"]] and "token" not in listed[0]

    command = admin.commands.create_command(
        {"team_id": team["id"], "trigger": "case", "method": "P", "url": "http://app.test/cmd"}
    )
    assert len(command["token"]) == 26 and command["trigger"] == "case"
    public = fake.create_channel("lobby", "O")
    hook = admin.webhooks.create_outgoing_hook(
        {"team_id": fake.team_id, "channel_id": public["id"], "callback_urls": ["http://a.test/"]}
    )
    assert len(hook["token"]) == 26 and hook["content_type"] == "application/x-www-form-urlencoded"
    assert admin.client.get("/config")["ServiceSettings"]["EnableCommands"] is True

    staff = driver_for(fake, fake.token_for(fake.add_user("nurse.joy")["id"]))
    calls: tuple[Callable[[], Any], ...] = (
        lambda: staff.teams.create_team({"name": "south", "display_name": "S", "type": "O"}),
        lambda: staff.users.create_user(
            {"username": "x.y", "email": "x@y.test", "password": "long-enough"}
        ),
        lambda: staff.teams.add_user_to_team(fake.team_id, options={"user_id": user["id"]}),
        lambda: Bots(staff.client).create_bot({"username": "rogue"}),
        lambda: staff.users.create_user_access_token(user["id"], options={"description": "x"}),
        lambda: staff.commands.create_command(
            {"team_id": fake.team_id, "trigger": "x", "method": "P", "url": "http://a.test"}
        ),
        lambda: staff.webhooks.create_outgoing_hook(
            {"team_id": fake.team_id, "channel_id": public["id"], "callback_urls": ["http://a/"]}
        ),
    )
    for call in calls:
        with pytest.raises(NotEnoughPermissions):
            call()


# -- WebSocket ---------------------------------------------------------------------------------


async def test_websocket_hello_then_posted_events_for_members(fake: FakeMattermost) -> None:
    nurse = fake.add_user("nurse.joy")
    outsider = fake.add_user("dr.who")
    private = fake.create_channel("case-5", "P", members=[fake.bot_user_id, nurse["id"]])
    shared = fake.create_channel("ward", "O", members=[fake.bot_user_id, outsider["id"]])

    async with (
        Listener(fake, fake.bot_token) as bot,
        Listener(fake, fake.token_for(outsider["id"])) as other,
    ):
        hello = await bot.next()
        assert (hello["event"], hello["seq"]) == ("hello", 0)
        assert hello["broadcast"]["user_id"] == fake.bot_user_id
        assert set(hello["data"]) >= {"server_version", "connection_id"}
        assert await bot.next() == {"status": "OK", "seq_reply": 1}
        await other.event("hello")

        sent = fake.user_posts(nurse["id"], private["id"], "BP is 180/110 @clinic-bot")
        event = await bot.event("posted")
        assert event["seq"] == 1
        data = event["data"]
        assert data["channel_name"] == "case-5" and data["channel_type"] == "P"
        assert data["channel_display_name"] == "case-5" and data["team_id"] == fake.team_id
        assert data["sender_name"] == "@nurse.joy" and data["set_online"] is True
        assert json.loads(data["mentions"]) == [fake.bot_user_id]
        assert event["broadcast"]["channel_id"] == private["id"]
        post = json.loads(data["post"])
        assert (post["id"], post["channel_id"], post["user_id"]) == (
            sent["id"],
            private["id"],
            nurse["id"],
        )
        assert post["message"] == "BP is 180/110 @clinic-bot"

        fake.user_posts(nurse["id"], shared["id"], "ward round at 10")
        seen_by_other = json.loads((await other.event("posted"))["data"]["post"])
        assert seen_by_other["channel_id"] == shared["id"]  # never the private channel's post
        assert (await bot.event("posted"))["seq"] == 2

        driver = driver_for(fake, fake.token_for(nurse["id"]))
        driver.posts.patch_post(sent["id"], {"message": "BP is 170/100"})
        edited = await bot.event("post_edited")
        assert json.loads(edited["data"]["post"])["message"] == "BP is 170/100"

        fake.broadcast_again(sent["id"])
        assert json.loads((await bot.event("posted"))["data"]["post"])["id"] == sent["id"]


async def test_websocket_reconnects_after_the_server_drops_it(fake: FakeMattermost) -> None:
    nurse = fake.add_user("nurse.joy")
    channel = fake.create_channel("case-6", "P", members=[fake.bot_user_id, nurse["id"]])
    async with Listener(fake, fake.bot_token, keepalive=True, keepalive_delay=0.05) as bot:
        await bot.event("hello")
        assert fake.websocket_connections(fake.bot_user_id) == 1
        assert fake.drop_websockets() == 1
        again = await bot.event("hello")
        assert again["seq"] == 0
        fake.user_posts(nurse["id"], channel["id"], "still there?")
        post = json.loads((await bot.event("posted"))["data"]["post"])
        assert post["message"] == "still there?"


async def test_websocket_bad_token_is_dropped_and_ping_answers(fake: FakeMattermost) -> None:
    url = f"ws://127.0.0.1:{fake.port}/api/v4/websocket"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"seq": 1, "action": "ping"}))
        refused = json.loads(await ws.recv())
        assert refused["status"] == "FAIL" and refused["seq_reply"] == 1
        assert refused["error"]["id"] == "api.web_socket_router.not_authenticated.app_error"
        challenge = {"seq": 2, "action": "authentication_challenge", "data": {"token": "nope"}}
        await ws.send(json.dumps(challenge))
        with pytest.raises(websockets.ConnectionClosedError):
            await asyncio.wait_for(ws.recv(), 5)

    async with websockets.connect(url) as ws:
        challenge["data"] = {"token": fake.bot_token}
        await ws.send(json.dumps(challenge))
        assert json.loads(await ws.recv())["event"] == "hello"
        assert json.loads(await ws.recv()) == {"status": "OK", "seq_reply": 2}
        await ws.send(json.dumps({"seq": 3, "action": "ping"}))
        pong = json.loads(await ws.recv())
        assert pong["seq_reply"] == 3 and pong["data"]["text"] == "pong"


# -- integrations ------------------------------------------------------------------------------


def test_click_button_round_trip(fake: FakeMattermost, receiver: Receiver) -> None:
    bot = driver_for(fake, fake.bot_token)
    nurse = fake.add_user("nurse.joy")
    channel = fake.create_channel("case-8", "P", members=[fake.bot_user_id, nurse["id"]])
    action = {
        "id": "claim",
        "name": "Claim",
        "integration": {"url": receiver.url("action"), "context": {"case_id": 8}},
    }
    post = bot.posts.create_post(
        {
            "channel_id": channel["id"],
            "message": "New case",
            "props": {"attachments": [{"text": "Case 8", "actions": [action]}]},
        }
    )
    receiver.answers["/action"] = (
        200,
        {
            "update": {"message": "Claimed by @nurse.joy", "props": {"attachments": []}},
            "ephemeral_text": "You claimed case 8",
        },
    )

    answer = fake.click_button(nurse["id"], post["id"], "claim")
    assert answer["ephemeral_text"] == "You claimed case 8"
    (request,) = receiver.json_calls("action")
    assert request == {
        "user_id": nurse["id"],
        "user_name": "nurse.joy",
        "channel_id": channel["id"],
        "channel_name": "case-8",
        "team_id": fake.team_id,
        "team_domain": "clinic",
        "post_id": post["id"],
        "trigger_id": request["trigger_id"],
        "type": "",
        "data_source": "",
        "context": {"case_id": 8},
    }
    headers = receiver.calls[0][1]
    assert headers["content-type"] == "application/json"

    updated = bot.posts.get_post(post["id"])
    assert updated["message"] == "Claimed by @nurse.joy" and updated["edit_at"] > 0
    assert updated["props"] == {"attachments": []}  # from_bot is not kept, props are replaced
    edited = [e for e in fake.published if e.event == "post_edited"]
    assert json.loads(edited[-1].data["post"])["id"] == post["id"]
    (ephemeral,) = fake.ephemeral_posts
    assert ephemeral.user_id == nurse["id"]
    assert ephemeral.post["message"] == "You claimed case 8"
    assert ephemeral.post["type"] == "system_ephemeral"

    receiver.answers["/action"] = (500, {"error": "boom"})
    action["id"] = "again"
    second = bot.posts.create_post(
        {"channel_id": channel["id"], "props": {"attachments": [{"actions": [action]}]}}
    )
    with pytest.raises(IntegrationError) as caught:
        fake.click_button(nurse["id"], second["id"], "again")
    assert caught.value.error["id"] == "api.post.do_action.action_integration.app_error"


def test_slash_command_request_and_response(fake: FakeMattermost, receiver: Receiver) -> None:
    nurse = fake.add_user("nurse.joy")
    channel = fake.create_channel("case-9", "P", members=[fake.bot_user_id, nurse["id"]])
    fake.register_command("case", receiver.url("command"), token="command-token-0123456789ab")
    receiver.answers["/command"] = (200, {"response_type": "in_channel", "text": "Case closed"})

    answer = fake.slash_command(nurse["id"], channel["id"], "/case resolve now")
    assert answer == {"response_type": "in_channel", "text": "Case closed"}
    _, headers, body = receiver.calls[0]
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert headers["authorization"] == "Token command-token-0123456789ab"
    fields = form_fields(body)
    assert fields == {
        "channel_id": channel["id"],
        "channel_name": "case-9",
        "command": "/case",
        "response_url": fields["response_url"],
        "team_domain": "clinic",
        "team_id": fake.team_id,
        "text": "resolve now",
        "token": "command-token-0123456789ab",
        "trigger_id": fields["trigger_id"],
        "user_id": nurse["id"],
        "user_name": "nurse.joy",
    }
    last = fake.posts_in(channel["id"])[-1]
    assert (last["message"], last["user_id"]) == ("Case closed", nurse["id"])
    assert last["props"]["from_webhook"] == "true"

    receiver.answers["/command"] = (200, {"text": "Only you can see this"})
    fake.slash_command(nurse["id"], channel["id"], "/case help")
    assert fake.ephemeral_posts[-1].post["message"] == "Only you can see this"
    delayed = httpx.post(
        fields["response_url"], json={"response_type": "in_channel", "text": "Later"}
    )
    assert delayed.status_code == 200
    assert fake.posts_in(channel["id"])[-1]["message"] == "Later"
    with pytest.raises(IntegrationError) as caught:
        fake.slash_command(nurse["id"], channel["id"], "/unknown")
    assert caught.value.error["status_code"] == 404


def test_outgoing_webhooks(fake: FakeMattermost, receiver: Receiver) -> None:
    bot = driver_for(fake, fake.bot_token)
    nurse = fake.add_user("nurse.joy")
    lobby = fake.create_channel("lobby", "O", members=[fake.bot_user_id, nurse["id"]])
    fake.register_outgoing_hook(lobby["id"], receiver.url("hook"), token="hook-token")
    fake.register_outgoing_hook(
        lobby["id"], receiver.url("form"), token="form-token", content_type="", trigger_words=["!"]
    )
    receiver.answers["/hook"] = (200, {"text": "noted", "response_type": "comment"})

    answers = fake.outgoing_webhook(nurse["id"], lobby["id"], "patient in room 3")
    assert answers == [{"text": "noted", "response_type": "comment"}]
    (payload,) = receiver.json_calls("hook")
    post = next(p for p in fake.posts_in(lobby["id"]) if p["message"] == "patient in room 3")
    assert payload == {
        "token": "hook-token",
        "team_id": fake.team_id,
        "team_domain": "clinic",
        "channel_id": lobby["id"],
        "channel_name": "lobby",
        "timestamp": post["create_at"],
        "user_id": nurse["id"],
        "user_name": "nurse.joy",
        "post_id": post["id"],
        "text": "patient in room 3",
        "trigger_word": "",
        "file_ids": "",
    }
    reply = fake.posts_in(lobby["id"])[-1]
    assert (reply["message"], reply["root_id"]) == ("noted", post["id"])
    assert reply["props"]["from_webhook"] == "true"

    fake.outgoing_webhook(nurse["id"], lobby["id"], "! urgent")
    form = form_fields(receiver.calls[-1][2])
    assert receiver.calls[-1][1]["content-type"] == "application/x-www-form-urlencoded"
    assert (form["token"], form["trigger_word"]) == ("form-token", "!")
    assert form["timestamp"] == str(fake.posts_in(lobby["id"])[-2]["create_at"] // 1000)

    private = fake.create_channel("case-10", "P", members=[nurse["id"]])
    assert fake.outgoing_webhook(nurse["id"], private["id"], "not for hooks") == []

    # Posts the app makes through the API trigger them too, after the create has answered.
    before = len(fake.hook_deliveries)
    bot.posts.create_post({"channel_id": lobby["id"], "message": "from the bot"})
    deliveries = fake.wait_for_hook_deliveries(before + 1)
    assert deliveries[-1].payload["user_id"] == fake.bot_user_id
