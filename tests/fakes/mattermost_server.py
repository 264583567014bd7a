"""A local stand-in for a Mattermost server: the REST API v4, the WebSocket, and the calls the
server makes to integrations (interactive message buttons, slash commands, outgoing webhooks).

It reproduces the documented wire format closely enough for the official `mattermostdriver`
(7.3.2) to drive it unmodified, so the staff channel is tested through the real client rather
than mocks: the JSON shapes of Post, PostList, Channel, ChannelMember, User, Team, Status, Bot,
Command and OutgoingWebhook, the AppError body of every error
(`{id, message, detailed_error, request_id, status_code}`), and the WebSocket events as the
server's hub sends them. Like the other fakes it runs uvicorn on its own thread and event loop
(`ThreadedServer`), so it keeps serving whatever the test's loop is doing.

    with FakeMattermost(team_name="clinic") as fake:
        driver = Driver(fake.driver_options(fake.bot_token))
        driver.login()                                   # GET /api/v4/users/me
        nurse = fake.add_user("nurse.joy", first_name="Joy", position="Nurse")
        channel = driver.channels.create_channel(
            {"team_id": fake.team_id, "name": "case-42", "display_name": "Case 42", "type": "P"}
        )
        driver.channels.add_user(channel["id"], options={"user_id": nurse["id"]})
        post = driver.posts.create_post({"channel_id": channel["id"], "message": "New case"})
        fake.user_posts(nurse["id"], channel["id"], "On it")  # broadcasts `posted`

Pointing the official client at it. `Driver(options)` builds every REST URL as
`{scheme}://{url}:{port}{basepath}` and `Websocket(options, token)` connects to
`ws://{url}:{port}{basepath}/websocket`, so the dict `fake.driver_options(token)` returns
(`url` 127.0.0.1, the port, scheme "http", basepath "/api/v4", the token) is all it takes. A token
login (`driver.login()`) is one GET /users/me. For the WebSocket, pass the merged options the
driver holds, not the bare dict: `Websocket(driver.options, token)` (it reads `debug`, `verify`,
`keepalive`, `keepalive_delay`, `timeout` and `websocket_kw_args`, which only the driver fills in).

What the fake holds from the start: a system admin (`admin_user_id`, `admin_token`), the team
`team_name` (`team_id`) with the admin in it, and a bot user (`bot_user_id`, `bot_token`, owned
by the admin, a member of the team) whose token behaves as a bot's personal access token.
`add_user` creates staff (team members, tokens from `token_for`); `create_channel` makes a
channel with exactly the members named, without the system posts the API would make.

Routes served (below /api/v4, `Authorization: Bearer <token>`; a missing or unknown token is a
401 AppError, and the admin-only ones answer 403 to anyone without system_admin):
users/me, users/{id}, users/username/{name}, POST users/ids, POST users/status/ids;
teams/name/{name}, teams/{id}/members/{user_id}; POST channels, channels/{id},
teams/{id}/channels/name/{name} (`include_deleted`), PUT channels/{id}/patch,
channels/{id}/members (GET, POST), channels/{id}/members/{user_id} (GET, DELETE),
channels/{id}/posts; POST posts, posts/{id}, PUT posts/{id}/patch; files/{id}/link (the link
itself, /files/{id}/public?h=..., serves the bytes); system/ping. Admin only: GET config, POST
users, POST users/{id}/tokens, GET users/{id}/tokens, POST teams, POST teams/{id}/members,
POST channels/{id}/restore, POST bots, bots/{id}, POST bots/{id}/enable, GET/POST commands,
PUT commands/{id}, POST hooks/outgoing. Anything else is the 404 AppError
`api.context.404.app_error`. `mattermostdriver` method names do not always match: the file link
is `driver.files.get_public_file_link`, and `Driver` has no `bots` property (use
`mattermostdriver.endpoints.bots.Bots(driver.client)`).

Controls beyond the ones above: `set_status`, `upload_file`, `user_posts`, `broadcast_again`,
`drop_websockets`, `websocket_connections`/`wait_for_websocket_connections`, `posts_in`,
`get_post`, `members_of`, `channel_by_name`, `user`, `archive_channel`, `deactivate_user`,
`fail_next(method, path, status)` (the next such call answers that status), `register_command`,
`register_outgoing_hook`; `public_links = False` turns public file links off (501) and `config`
is what GET /config answers. For assertions: `requests` (every REST call: method, path, json,
query, user_id), `published` (every WebSocket event published), `hook_deliveries` and
`ephemeral_posts`.

Behaviours reproduced on purpose, because an app has to cope with them on a real server:

- Posts leave the server without their actions' `integration` (url and context): REST answers
  and WebSocket events carry the stripped copy (`Post.StripActionIntegrations`), while
  `posts_in` and `click_button` see the stored one. Action ids are generated for actions sent
  without one, and attachments are normalised to the MessageAttachment field set.
- `create_post` with a `pending_post_id` seen in the last `PENDING_POST_ID_TTL_S` seconds
  returns the post first created under it (201, no second post, no second `posted` event),
  as `App.deduplicateCreatePost` does; a create that fails forgets the id again.
- Posting needs the create_post permission on the channel: members, or any team member in a
  public ("O") channel, as `userCreatePostPermissionCheck` allows; otherwise 403.
- Adding, removing and a member leaving post the system messages (`system_add_to_channel`,
  `system_join_channel`, `system_remove_from_channel`, `system_leave_channel`), and patching the
  header, purpose or display name posts `system_header_change` and the like; each is a post with
  a `type` and arrives as a `posted` event like any other, which an app must skip.
- `patch_post` with `props` replaces all props; an integration's `update` replaces message and
  props of the post (a missing message empties it), keeping `from_webhook`,
  `override_username` and `override_icon_url` as `DoPostActionWithCookie` does.
- `get_posts_for_channel` with `since` returns posts whose update_at is after it (edits
  included), newest first, with empty `next_post_id`/`prev_post_id`; without `since` the list
  is paged (`page`, `per_page` up to 200, `before`, `after`) with the cursor ids filled in as
  `AddCursorIdsForPostList` does. Like the real endpoint it has no `has_next`.
- Outgoing webhooks fire for posts in public channels only, also for posts the app creates
  through the API (the server creates API posts with TriggerWebhooks), asynchronously after the
  create has answered; `hook_deliveries` records them.

WebSocket. After `authentication_challenge` with a good token the server sends the `hello`
event (seq 0) and only then the `{"status": "OK", "seq_reply": 1}` response, in the order the
hub queues them; a bad token gets no reply at all: the server drops the connection, as
`WebSocketRouter.ServeWebSocket` does. A bearer token on the upgrade request authenticates too.
Every event carries the connection's next `seq`; responses carry `seq_reply`, not `seq`. Events
go to the connections the broadcast names: `posted`/`post_edited` to members of the channel
(the poster included), `ephemeral_message` and `status_change` to one user. The `ping` action
answers `{"text": "pong", ...}`; protocol-level pings are answered by the websocket library.
`drop_websockets()` aborts the TCP connections without a close frame, as a crashed or restarted
server (or a dropped network) does.

What the fake does not do: direct/group messages, threads beyond root_id, reactions, file
uploads over the API (a test attaches files with `upload_file`/`user_posts(file_names=...)`),
action cookies, mention keys other than @username/@channel/@all/@here, and the user mention
maps slash commands add. Statuses change only through `set_status`. Timestamps (ms) are unique
and increasing, where a real server may give two posts the same create_at.

Integrations. `click_button`, `slash_command` and `outgoing_webhook` make the HTTP call the
server would make (from the fake's own loop, with httpx), apply the answer as the server does
(update the post and broadcast `post_edited`, send an `ephemeral_message`, create the response
post) and return the integration's parsed JSON answer. They block the calling thread until the
integration answers: from an async test whose app serves the integration URL on the test's own
loop, call them via `asyncio.to_thread`, or the app could never answer. The other controls only
touch the fake and are fine to call directly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import json
import mimetypes
import os
import re
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, NamedTuple, ParamSpec, Self, TypeVar
from urllib.parse import parse_qsl, urlencode

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from tests.fakes.threaded import ThreadedServer

JSON = dict[str, Any]
P = ParamSpec("P")
T = TypeVar("T")

SERVER_VERSION = "9.11.0"
# `X-Version-Id` and the hello event's server_version: version, build number, config hash, licensed.
VERSION_ID = f"{SERVER_VERSION}.{SERVER_VERSION}.fakeconfighash.false"
Presence = Literal["online", "away", "dnd", "offline"]

# Mattermost ids: 16 random bytes in base32 with this alphabet, 26 characters.
_ID_ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"
_B32_TO_MM = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ID_ALPHABET)
_ID_RE = re.compile(r"^[a-z0-9]{26}$")
_CHANNEL_NAME_RE = re.compile(r"^[a-z0-9]+([a-z\-_0-9]+|(__)?)[a-z0-9]*$")
_TEAM_NAME_RE = re.compile(r"^[a-z0-9]+([a-z\-0-9]+|(__)?)[a-z0-9]+$")
_USERNAME_RE = re.compile(r"^[a-z][a-z0-9.\-_]{2,21}$")
_RESERVED_USERNAMES = {"all", "channel", "here", "matterbot", "system"}
_MENTION_RE = re.compile(r"@([a-z0-9.\-_]+)", re.IGNORECASE)
_HASHTAG_RE = re.compile(r"^#[A-Za-z]+[A-Za-z0-9_\-]*[A-Za-z0-9]$")
_SLACK_LINK_RE = re.compile(r"<([^<|]+)\|([^>]+)>")
_MAX_POST_RUNES = 16383

# The MessageAttachment struct: these keys, always present after the server re-encodes them.
_ATTACHMENT_DEFAULTS: JSON = {
    "id": 0,
    "fallback": "",
    "color": "",
    "pretext": "",
    "author_name": "",
    "author_link": "",
    "author_icon": "",
    "title": "",
    "title_link": "",
    "text": "",
    "fields": None,
    "image_url": "",
    "thumb_url": "",
    "footer": "",
    "footer_icon": "",
    "ts": None,
}
# PostAction's keys, all `omitempty`: empty values vanish when the server re-encodes an action.
_ACTION_KEYS = (
    "id",
    "type",
    "name",
    "disabled",
    "style",
    "data_source",
    "options",
    "default_option",
    "integration",
    "cookie",
)
# Props the server drops from anything a client posts.
_SANITIZED_PROPS = ("add_channel_member", "force_notification")
# Props `DoPostActionWithCookie` carries over from the original post into an integration's update.
_RETAIN_PROP_KEYS = ("from_webhook", "override_username", "override_icon_url")

_NOTIFY_PROPS = {
    "channel": "true",
    "comments": "never",
    "desktop": "mention",
    "desktop_sound": "true",
    "email": "true",
    "first_name": "false",
    "mention_keys": "",
    "push": "mention",
    "push_status": "away",
}
_CHANNEL_NOTIFY_PROPS = {
    "desktop": "default",
    "email": "default",
    "ignore_channel_mentions": "default",
    "mark_unread": "all",
    "push": "default",
}


def new_id() -> str:
    """A Mattermost id (26 characters of Mattermost's base32)."""
    encoded = base64.b32encode(os.urandom(16)).decode().rstrip("=")
    return encoded.translate(_B32_TO_MM)[:26]


class AppError(Exception):
    """A Mattermost AppError: raised inside the fake, sent as its JSON body."""

    def __init__(self, status: int, error_id: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.message = message

    def body(self, request_id: str) -> JSON:
        # `detailed_error` is wiped unless the server runs in developer mode.
        return {
            "id": self.error_id,
            "message": self.message,
            "detailed_error": "",
            "request_id": request_id,
            "status_code": self.status,
        }


class IntegrationError(RuntimeError):
    """What the server would answer the user whose click/command reached a failing integration.

    `error` is the AppError body (`id`, `message`, `status_code`, ...)."""

    def __init__(self, error: JSON) -> None:
        super().__init__(f"{error['status_code']} {error['id']}: {error['message']}")
        self.error = error


class RecordedRequest(NamedTuple):
    """A REST call the fake received; `json` is the parsed body (None when empty)."""

    method: str
    path: str  # below /api/v4, e.g. "/posts"
    json: Any
    query: dict[str, str]
    user_id: str  # "" when the token was missing or unknown


class PublishedEvent(NamedTuple):
    """A WebSocket event the server published, whether or not any connection received it."""

    event: str
    data: JSON
    broadcast: JSON


class HookDelivery(NamedTuple):
    """One outgoing-webhook POST; `status` is the HTTP status answered (0: no answer)."""

    hook_id: str
    url: str
    content_type: str
    payload: JSON
    status: int
    response: Any


class EphemeralPost(NamedTuple):
    user_id: str
    post: JSON


@dataclass
class _File:
    info: JSON
    content: bytes


@dataclass(eq=False)
class _Conn:
    ws: WebSocket
    raw_send: Any  # uvicorn's own send callable, whose protocol holds the TCP transport
    connection_id: str
    user_id: str = ""
    seq: int = 0
    closed: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class _Ctx:
    request: Request
    user: JSON
    body: Any
    params: dict[str, str]
    query: dict[str, str]

    def object_body(self, name: str) -> JSON:
        if not isinstance(self.body, dict):
            raise _invalid_body(name)
        return self.body

    def list_body(self, name: str) -> list[Any]:
        if not isinstance(self.body, list):
            raise _invalid_body(name)
        return self.body


_Handler = Callable[[_Ctx], Coroutine[Any, Any, tuple[int, Any]]]
_NO_BODY = object()


def _invalid_body(name: str) -> AppError:
    return AppError(
        400,
        "api.context.invalid_body_param.app_error",
        f"Invalid or missing {name} in request body.",
    )


def _invalid_url(name: str) -> AppError:
    return AppError(400, "api.context.invalid_url_param.app_error", f"Invalid {name} parameter.")


def _permission_error() -> AppError:
    return AppError(
        403, "api.context.permissions.app_error", "You do not have the appropriate permissions."
    )


def _session_error() -> AppError:
    return AppError(
        401,
        "api.context.session_expired.app_error",
        "Invalid or expired session, please login again.",
    )


def _channel_missing() -> AppError:
    return AppError(
        404, "app.channel.get.existing.app_error", "Unable to find the existing channel."
    )


def _user_missing() -> AppError:
    return AppError(404, "app.user.missing_account.const", "Unable to find the user.")


def _post_missing() -> AppError:
    return AppError(404, "app.post.get.app_error", "Unable to get the post.")


def _int_param(query: dict[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise _invalid_url(name) from None


def _hashtags(message: str) -> str:
    tags: list[str] = []
    for word in message.split():
        word = word.strip(".,()&$!?[]{}\"':;")
        if _HASHTAG_RE.match(word) and word not in tags:
            tags.append(word)
    return " ".join(tags)


def _slack_links_to_markdown(text: str) -> str:
    return _SLACK_LINK_RE.sub(r"[\2](\1)", text)


def _normalize_action(action: JSON) -> JSON:
    normalized = {
        key: action[key] for key in _ACTION_KEYS if action.get(key) not in (None, "", False, [], {})
    }
    if not normalized.get("id"):
        normalized["id"] = new_id()
    return normalized


def _normalize_attachments(attachments: Any) -> list[JSON]:
    normalized: list[JSON] = []
    if not isinstance(attachments, list):
        return normalized
    for attachment in attachments:
        if not isinstance(attachment, dict):
            continue
        item = {key: attachment.get(key, default) for key, default in _ATTACHMENT_DEFAULTS.items()}
        actions = [a for a in attachment.get("actions") or [] if isinstance(a, dict)]
        if actions:
            item["actions"] = [_normalize_action(a) for a in actions]
        normalized.append(item)
    return normalized


def _normalize_props(props: Any) -> JSON:
    result: JSON = dict(props) if isinstance(props, dict) else {}
    if result.get("attachments") is not None:
        result["attachments"] = _normalize_attachments(result["attachments"])
    return result


def _strip_integrations(post: JSON) -> JSON:
    for attachment in post["props"].get("attachments") or []:
        for action in attachment.get("actions") or []:
            action.pop("integration", None)
    return post


class _App(Starlette):
    """Starlette that remembers its event loop and hands WebSocket endpoints uvicorn's `send`.

    The raw `send` is a bound method of uvicorn's protocol object, whose transport is what
    `drop_websockets` aborts; Starlette itself only ever wraps it."""

    def __init__(self, owner: FakeMattermost, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.owner._loop = asyncio.get_running_loop()
        if scope["type"] == "websocket":
            scope["fake_mattermost.raw_send"] = send
        await super().__call__(scope, receive, send)


class FakeMattermost:
    PENDING_POST_ID_TTL_S = 30.0  # pendingPostIDsCacheTTL

    def __init__(self, team_name: str = "clinic", team_display_name: str | None = None) -> None:
        self.team_name = team_name
        self._team_display_name = team_display_name or team_name.title()
        self.integration_timeout_s = 10.0
        self.call_timeout_s = 30.0
        self.public_links = True  # FileSettings.EnablePublicLink; False makes /files/{id}/link 501
        # What GET /config answers (admins only); SiteURL and EnablePublicLink are filled in.
        self.config: JSON = {
            "ServiceSettings": {
                "EnableCommands": True,
                "EnableOutgoingWebhooks": True,
                "EnablePostUsernameOverride": False,
                "EnablePostIconOverride": False,
                "EnableUserAccessTokens": True,
                "EnableBotAccountCreation": True,
                "AllowedUntrustedInternalConnections": "",
                "OutgoingIntegrationRequestsTimeout": 30,
            },
            "TeamSettings": {"EnableUserCreation": True},
            "FileSettings": {},
        }
        self.requests: list[RecordedRequest] = []
        self.published: list[PublishedEvent] = []
        self.hook_deliveries: list[HookDelivery] = []
        self.ephemeral_posts: list[EphemeralPost] = []

        self._server = ThreadedServer("fake-mattermost")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_millis = 0
        self._users: dict[str, JSON] = {}
        self._tokens: dict[str, str] = {}  # token -> user id
        self._token_records: dict[str, JSON] = {}  # token id -> UserAccessToken (with token)
        self._personal_tokens: dict[str, str] = {}  # user id -> the token `token_for` hands out
        self._bots: dict[str, JSON] = {}
        self._teams: dict[str, JSON] = {}
        self._team_members: dict[str, dict[str, JSON]] = {}
        self._channels: dict[str, JSON] = {}
        self._channel_members: dict[str, dict[str, JSON]] = {}
        self._posts: dict[str, JSON] = {}
        self._channel_posts: dict[str, list[str]] = {}
        self._files: dict[str, _File] = {}
        self._statuses: dict[str, JSON] = {}
        self._commands: dict[str, JSON] = {}
        self._command_hooks: dict[str, JSON] = {}
        self._outgoing_hooks: dict[str, JSON] = {}
        self._pending_post_ids: dict[str, tuple[str, float]] = {}
        self._failures: list[tuple[str, str, int]] = []
        self._conns: set[_Conn] = set()
        self._background: set[asyncio.Task[Any]] = set()

        admin = self._create_user("sysadmin", roles="system_admin system_user", first_name="System")
        self.admin_user_id: str = admin["id"]
        self.admin_token = self._issue_token(admin["id"], "fake admin session")
        team = self._create_team(self.team_name, self._team_display_name, creator_id=admin["id"])
        self.team_id: str = team["id"]
        bot = self._create_bot("clinic-bot", "Clinic Assistant", "", owner_id=admin["id"])
        self.bot_user_id: str = bot["user_id"]
        self._add_team_member(self.team_id, self.bot_user_id)
        self.bot_token = self._issue_token(self.bot_user_id, "clinic assistant")

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self._server.serve(self._build_app())
        # The first request tells the fake which loop uvicorn runs on; every control runs there.
        httpx.get(f"{self.base_url}/api/v4/system/ping", timeout=10).raise_for_status()
        self.requests.clear()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._loop.is_running():
            with contextlib.suppress(RuntimeError, TimeoutError):
                self._call(self._abort_all())
        self._server.shutdown()

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def base_url(self) -> str:
        """The site URL, "http://127.0.0.1:PORT"; the API lives below /api/v4."""
        return f"http://127.0.0.1:{self.port}"

    def driver_options(self, token: str, **overrides: Any) -> JSON:
        """The options for `mattermostdriver.Driver(...)` to talk to this fake with `token`."""
        options: JSON = {
            "url": "127.0.0.1",
            "port": self.port,
            "scheme": "http",
            "basepath": "/api/v4",
            "token": token,
            "verify": False,
            "timeout": 30,
            "request_timeout": 10,
            "keepalive": False,
        }
        options.update(overrides)
        return options

    # -- controls ----------------------------------------------------------------------------

    def add_user(
        self,
        username: str,
        first_name: str = "",
        last_name: str = "",
        position: str = "",
        roles: str = "system_user",
        email: str | None = None,
    ) -> JSON:
        """Create a user (a member of the team) and return the User object."""

        def add() -> JSON:
            user = self._create_user(
                username,
                roles=roles,
                first_name=first_name,
                last_name=last_name,
                position=position,
                email=email,
            )
            self._add_team_member(self.team_id, user["id"])
            return self._user_json(user, user["id"])

        return self._on_loop(add)

    def token_for(self, user_id: str) -> str:
        """A personal access token for the user, the same one on every call."""

        def token() -> str:
            self._require_user(user_id)
            if user_id not in self._personal_tokens:
                self._personal_tokens[user_id] = self._issue_token(user_id, "test token")
            return self._personal_tokens[user_id]

        return self._on_loop(token)

    def set_status(self, user_id: str, status: Presence, manual: bool = True) -> JSON:
        """Set a user's presence and send the `status_change` event to that user's connections."""
        if status not in ("online", "away", "dnd", "offline"):
            raise ValueError(f"unknown status {status!r}")
        return self._call(self._set_status(user_id, status, manual))

    def create_channel(
        self,
        name: str,
        type: Literal["O", "P"] = "O",
        members: Iterable[str] = (),
        display_name: str | None = None,
        header: str = "",
        purpose: str = "",
    ) -> JSON:
        """A channel in the team whose members are exactly `members` (no system posts)."""
        member_ids = list(members)

        def create() -> JSON:
            creator = member_ids[0] if member_ids else self.admin_user_id
            channel = self._create_channel_record(
                self.team_id, name, display_name or name, type, header, purpose, creator
            )
            for user_id in member_ids:
                self._add_channel_member(channel, user_id, admin=user_id == creator)
            return copy.deepcopy(channel)

        return self._on_loop(create)

    def upload_file(
        self, user_id: str, channel_id: str, name: str, content: bytes | None = None
    ) -> JSON:
        """Store a file as an upload by `user_id` not yet attached to a post; returns FileInfo."""
        return self._on_loop(self._store_file, user_id, channel_id, name, content)

    def user_posts(
        self,
        user_id: str,
        channel_id: str,
        message: str,
        file_names: Sequence[str] | None = None,
        root_id: str = "",
        props: JSON | None = None,
    ) -> JSON:
        """The user posts as from their own client: stored, `posted` broadcast, outgoing webhooks
        fired (asynchronously). With `file_names`, uploads those files first and attaches them.
        Returns the post as the API would answer it."""

        async def post() -> JSON:
            channel = self._require_channel(channel_id)
            self._check_can_post(user_id, channel)
            file_ids = [
                self._store_file(user_id, channel_id, name, None)["id"] for name in file_names or ()
            ]
            stored = self._save_post(
                user_id, channel, message, props=props, root_id=root_id, file_ids=file_ids
            )
            await self._after_post(stored, channel, trigger_webhooks=True)
            return self._client_post(stored)

        return self._call(post())

    def broadcast_again(self, post_id: str) -> None:
        """Send the `posted` event of an existing post once more (a duplicate delivery)."""

        async def again() -> None:
            post = self._require_post(post_id)
            await self._publish_posted(post, self._channels[post["channel_id"]])

        self._call(again())

    def drop_websockets(self) -> int:
        """Abort every WebSocket connection (no close frame); returns how many there were."""
        return self._call(self._abort_all())

    def websocket_connections(self, user_id: str | None = None) -> int:
        """How many authenticated WebSocket connections are open (for one user, if given)."""
        return self._on_loop(
            lambda: sum(
                1
                for conn in self._conns
                if conn.user_id and not conn.closed and (user_id is None or conn.user_id == user_id)
            )
        )

    def wait_for_websocket_connections(
        self, count: int, user_id: str | None = None, timeout: float = 5.0
    ) -> None:
        deadline = time.monotonic() + timeout
        while self.websocket_connections(user_id) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} websocket connections after {timeout}s")
            time.sleep(0.01)

    def posts_in(self, channel_id: str, include_system: bool = True) -> list[JSON]:
        """The channel's posts as stored (integrations included), oldest first."""

        def posts() -> list[JSON]:
            ids = self._channel_posts.get(channel_id, [])
            found = [copy.deepcopy(self._posts[i]) for i in ids]
            if not include_system:
                found = [p for p in found if not p["type"].startswith("system_")]
            return found

        return self._on_loop(posts)

    def get_post(self, post_id: str) -> JSON:
        """The post as stored (integrations included)."""
        return self._on_loop(lambda: copy.deepcopy(self._require_post(post_id)))

    def members_of(self, channel_id: str) -> list[str]:
        return self._on_loop(lambda: list(self._channel_members.get(channel_id, {})))

    def channel_by_name(self, name: str) -> JSON | None:
        def find() -> JSON | None:
            channel = self._find_channel(self.team_id, name)
            return copy.deepcopy(channel) if channel else None

        return self._on_loop(find)

    def user(self, user_id: str) -> JSON:
        return self._on_loop(lambda: copy.deepcopy(self._require_user(user_id)))

    def archive_channel(self, channel_id: str) -> None:
        """Archive the channel: gone from lookups by name unless include_deleted=true."""

        def archive() -> None:
            self._require_channel(channel_id)["delete_at"] = self._millis()

        self._on_loop(archive)

    def deactivate_user(self, user_id: str) -> None:
        """Deactivate the user (and disable the bot, for a bot); their tokens stop working."""

        def deactivate() -> None:
            now = self._millis()
            self._require_user(user_id)["delete_at"] = now
            if user_id in self._bots:
                self._bots[user_id]["delete_at"] = now

        self._on_loop(deactivate)

    def fail_next(self, method: str, path: str, status: int = 500, times: int = 1) -> None:
        """The next `times` calls of `method` on `path` (below /api/v4, e.g. "/posts") answer
        `status` with an AppError, before doing anything."""

        def add() -> None:
            for _ in range(times):
                self._failures.append((method.upper(), path, status))

        self._on_loop(add)

    def register_command(
        self, trigger: str, url: str, token: str | None = None, method: Literal["P", "G"] = "P"
    ) -> JSON:
        """A custom slash command of the team, as create_command makes it; returns the Command."""

        def register() -> JSON:
            command = self._create_command(
                {"team_id": self.team_id, "trigger": trigger, "url": url, "method": method},
                creator_id=self.admin_user_id,
            )
            if token is not None:
                command["token"] = token
            return copy.deepcopy(command)

        return self._on_loop(register)

    def register_outgoing_hook(
        self,
        channel_id: str,
        callback_url: str,
        token: str | None = None,
        content_type: str = "application/json",
        trigger_words: Sequence[str] = (),
        trigger_when: int = 0,
    ) -> JSON:
        """An outgoing webhook on a public channel, as create_outgoing_hook makes it."""

        def register() -> JSON:
            hook = self._create_outgoing_hook(
                {
                    "team_id": self.team_id,
                    "channel_id": channel_id,
                    "callback_urls": [callback_url],
                    "content_type": content_type,
                    "trigger_words": list(trigger_words),
                    "trigger_when": trigger_when,
                    "display_name": "test hook",
                },
                creator_id=self.admin_user_id,
            )
            if token is not None:
                hook["token"] = token
            return copy.deepcopy(hook)

        return self._on_loop(register)

    def click_button(
        self, user_id: str, post_id: str, action_id: str, selected_option: str = ""
    ) -> JSON:
        """The user clicks an action of the post: POSTs the PostActionIntegrationRequest to the
        action's integration URL, applies `update`/`ephemeral_text` from the answer, and returns
        the answer. Raises IntegrationError where the server would answer the user an error."""
        return self._call(self._do_post_action(user_id, post_id, action_id, selected_option))

    def slash_command(self, user_id: str, channel_id: str, text: str, root_id: str = "") -> JSON:
        """The user runs `text` ("/trigger args") in the channel: calls the command's URL with the
        form fields a custom command gets, applies the CommandResponse and returns it."""
        return self._call(self._execute_command(user_id, channel_id, text, root_id))

    def outgoing_webhook(self, user_id: str, channel_id: str, message: str) -> list[Any]:
        """The user posts `message`; every outgoing webhook it triggers is called (and its answer
        applied) before this returns. Returns the parsed answers, one per callback URL called."""

        async def run() -> list[Any]:
            channel = self._require_channel(channel_id)
            self._check_can_post(user_id, channel)
            post = self._save_post(user_id, channel, message)
            await self._after_post(post, channel, trigger_webhooks=False)
            deliveries = await self._fire_outgoing_hooks(post, channel)
            return [d.response for d in deliveries]

        return self._call(run())

    def wait_for_hook_deliveries(self, count: int, timeout: float = 5.0) -> list[HookDelivery]:
        deadline = time.monotonic() + timeout
        while len(self.hook_deliveries) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.hook_deliveries)} hook deliveries, not {count}")
            time.sleep(0.01)
        return list(self.hook_deliveries)

    # -- running on the fake's loop ----------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("FakeMattermost is not running: use it as a context manager")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            coro.close()
            raise RuntimeError("FakeMattermost controls cannot be called from its own loop")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=self.call_timeout_s)

    def _on_loop(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        # All state lives on the server's loop, so no locks: controls run their work there too.
        async def run() -> T:
            return fn(*args, **kwargs)

        return self._call(run())

    def _millis(self) -> int:
        now = int(time.time() * 1000)
        self._last_millis = max(now, self._last_millis + 1)
        return self._last_millis

    # -- the app -----------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        api = "/api/v4"
        routes = [
            self._route("GET", f"{api}/system/ping", self._system_ping, auth=False),
            self._route("GET", f"{api}/users/me", self._get_me),
            self._route("POST", f"{api}/users/ids", self._get_users_by_ids),
            self._route("POST", f"{api}/users/status/ids", self._get_statuses_by_ids),
            self._route("GET", f"{api}/users/username/{{username}}", self._get_user_by_username),
            self._route("POST", f"{api}/users", self._create_user_api, admin=True),
            self._route("GET", f"{api}/users/{{user_id}}", self._get_user),
            self._route(
                "POST", f"{api}/users/{{user_id}}/tokens", self._create_token_api, admin=True
            ),
            self._route("POST", f"{api}/bots", self._create_bot_api, admin=True),
            self._route("POST", f"{api}/teams", self._create_team_api, admin=True),
            self._route("GET", f"{api}/teams/name/{{name}}", self._get_team_by_name),
            self._route(
                "POST", f"{api}/teams/{{team_id}}/members", self._add_team_member_api, admin=True
            ),
            self._route(
                "GET", f"{api}/teams/{{team_id}}/channels/name/{{name}}", self._get_channel_by_name
            ),
            self._route("POST", f"{api}/channels", self._create_channel_api),
            self._route("GET", f"{api}/channels/{{channel_id}}", self._get_channel),
            self._route("PUT", f"{api}/channels/{{channel_id}}/patch", self._patch_channel),
            self._route("GET", f"{api}/channels/{{channel_id}}/members", self._get_members),
            self._route("POST", f"{api}/channels/{{channel_id}}/members", self._add_member_api),
            self._route(
                "DELETE", f"{api}/channels/{{channel_id}}/members/{{user_id}}", self._remove_member
            ),
            self._route("GET", f"{api}/channels/{{channel_id}}/posts", self._get_posts_for_channel),
            self._route("POST", f"{api}/posts", self._create_post_api),
            self._route("GET", f"{api}/posts/{{post_id}}", self._get_post_api),
            self._route("PUT", f"{api}/posts/{{post_id}}/patch", self._patch_post_api),
            self._route("GET", f"{api}/files/{{file_id}}/link", self._get_file_link),
            self._route("GET", f"{api}/config", self._get_config, admin=True),
            self._route(
                "GET", f"{api}/teams/{{team_id}}/members/{{user_id}}", self._get_team_member
            ),
            self._route(
                "GET", f"{api}/channels/{{channel_id}}/members/{{user_id}}", self._get_member
            ),
            self._route(
                "POST", f"{api}/channels/{{channel_id}}/restore", self._restore_channel, admin=True
            ),
            self._route("GET", f"{api}/bots/{{bot_id}}", self._get_bot_api, admin=True),
            self._route("POST", f"{api}/bots/{{bot_id}}/enable", self._enable_bot_api, admin=True),
            self._route("GET", f"{api}/users/{{user_id}}/tokens", self._get_tokens_api, admin=True),
            self._route("GET", f"{api}/commands", self._list_commands_api, admin=True),
            self._route(
                "PUT", f"{api}/commands/{{command_id}}", self._update_command_api, admin=True
            ),
            self._route("POST", f"{api}/commands", self._create_command_api, admin=True),
            self._route(
                "POST", f"{api}/hooks/outgoing", self._create_outgoing_hook_api, admin=True
            ),
            Route("/files/{file_id}/public", self._public_file, methods=["GET"]),
            Route("/hooks/commands/{hook_id}", self._command_response_url, methods=["POST"]),
            WebSocketRoute(f"{api}/websocket", self._websocket),
        ]

        async def http_error(request: Request, exc: Exception) -> Response:
            status = exc.status_code if isinstance(exc, HTTPException) else 500
            if status == 404:
                error = AppError(
                    404, "api.context.404.app_error", "Sorry, we could not find the page."
                )
            elif status == 405:
                error = AppError(405, "api.context.405.app_error", "Method not allowed.")
            else:
                error = AppError(status, "api.context.unknown.app_error", "An error occurred.")
            return self._error_response(error)

        return _App(self, routes=routes, exception_handlers={HTTPException: http_error})

    def _route(
        self, method: str, path: str, handler: _Handler, *, auth: bool = True, admin: bool = False
    ) -> Route:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            body: Any = None
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = _NO_BODY
            api_path = request.url.path.removeprefix("/api/v4")
            query = dict(request.query_params)
            user = self._user_for_token(request.headers, request.query_params)
            recorded = None if body is _NO_BODY else body
            self.requests.append(
                RecordedRequest(
                    request.method, api_path, recorded, query, user["id"] if user else ""
                )
            )
            try:
                self._take_failure(request.method, api_path)
                if auth and user is None:
                    raise _session_error()
                if admin and not self._is_admin(user):
                    raise _permission_error()
                ctx = _Ctx(request, user or {}, body, dict(request.path_params), query)
                status, payload = await handler(ctx)
            except AppError as error:
                return self._error_response(error)
            return JSONResponse(payload, status_code=status, headers=self._headers())

        return Route(path, endpoint, methods=[method])

    def _headers(self) -> dict[str, str]:
        return {"X-Request-Id": new_id(), "X-Version-Id": VERSION_ID}

    def _error_response(self, error: AppError) -> Response:
        headers = self._headers()
        return JSONResponse(
            error.body(headers["X-Request-Id"]), status_code=error.status, headers=headers
        )

    def _take_failure(self, method: str, path: str) -> None:
        for index, (f_method, f_path, status) in enumerate(self._failures):
            if f_method == method and f_path == path:
                del self._failures[index]
                raise AppError(status, "fake.injected_failure.app_error", "Injected failure.")

    def _user_for_token(self, headers: Mapping[str, str], query: Mapping[str, str]) -> JSON | None:
        # Like the server: "Authorization: Bearer|Token <token>", else ?access_token=.
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token") or not token:
            token = query.get("access_token", "")
        user = self._users.get(self._tokens.get(token.strip(), ""))
        return user if user is not None and not user["delete_at"] else None

    # -- records -----------------------------------------------------------------------------

    def _create_user(
        self,
        username: str,
        *,
        roles: str = "system_user",
        first_name: str = "",
        last_name: str = "",
        position: str = "",
        nickname: str = "",
        email: str | None = None,
        is_bot: bool = False,
        bot_description: str = "",
    ) -> JSON:
        username = username.lower()
        if not _USERNAME_RE.match(username) or username in _RESERVED_USERNAMES:
            raise AppError(
                400,
                "model.user.is_valid.username.app_error",
                "Username must begin with a letter, and contain between 3 to 22 lowercase "
                'characters made up of numbers, letters, and the symbols ".", "-", and "_".',
            )
        if any(u["username"] == username for u in self._users.values()):
            raise AppError(
                400,
                "app.user.save.username_exists.app_error",
                "An account with that username already exists.",
            )
        email = (email or f"{username}@clinic.test").lower()
        if any(u["email"] == email for u in self._users.values()):
            raise AppError(
                400,
                "app.user.save.email_exists.app_error",
                "An account with that email already exists.",
            )
        now = self._millis()
        user: JSON = {
            "id": new_id(),
            "create_at": now,
            "update_at": now,
            "delete_at": 0,
            "username": username,
            "auth_data": "",
            "auth_service": "",
            "email": email,
            "email_verified": True,
            "nickname": nickname,
            "first_name": first_name,
            "last_name": last_name,
            "position": position,
            "roles": roles,
            "notify_props": dict(_NOTIFY_PROPS),
            "last_password_update": now,
            "locale": "en",
            "timezone": {
                "automaticTimezone": "",
                "manualTimezone": "",
                "useAutomaticTimezone": "true",
            },
            "disable_welcome_email": False,
        }
        if is_bot:
            user["is_bot"] = True
            user["bot_description"] = bot_description
        self._users[user["id"]] = user
        return user

    def _issue_token(self, user_id: str, description: str) -> str:
        token = new_id()
        record: JSON = {
            "id": new_id(),
            "token": token,
            "user_id": user_id,
            "description": description,
            "is_active": True,
        }
        self._tokens[token] = user_id
        self._token_records[record["id"]] = record
        return token

    def _create_bot(
        self, username: str, display_name: str, description: str, owner_id: str
    ) -> JSON:
        user = self._create_user(
            username, first_name=display_name, is_bot=True, bot_description=description
        )
        bot = {
            "user_id": user["id"],
            "username": user["username"],
            "display_name": display_name,
            "description": description,
            "owner_id": owner_id,
            "create_at": user["create_at"],
            "update_at": user["update_at"],
            "delete_at": 0,
        }
        self._bots[user["id"]] = bot
        return bot

    def _create_team(
        self, name: str, display_name: str, creator_id: str, team_type: str = "O"
    ) -> JSON:
        if len(name) < 2 or len(name) > 64 or not _TEAM_NAME_RE.match(name):
            raise AppError(400, "model.team.is_valid.url.app_error", "Invalid URL Identifier")
        if team_type not in ("O", "I"):
            raise AppError(400, "model.team.is_valid.type.app_error", "Invalid type.")
        if any(t["name"] == name for t in self._teams.values()):
            raise AppError(
                400, "app.team.save.existing.app_error", "A team with that name already exists"
            )
        now = self._millis()
        team: JSON = {
            "id": new_id(),
            "create_at": now,
            "update_at": now,
            "delete_at": 0,
            "display_name": display_name,
            "name": name,
            "description": "",
            "email": "",
            "type": team_type,
            "company_name": "",
            "allowed_domains": "",
            "invite_id": new_id(),
            "allow_open_invite": False,
            "scheme_id": None,
            "group_constrained": None,
            "policy_id": None,
            "cloud_limits_archived": False,
        }
        self._teams[team["id"]] = team
        self._team_members[team["id"]] = {}
        self._add_team_member(team["id"], creator_id, admin=True)
        return team

    def _add_team_member(self, team_id: str, user_id: str, admin: bool = False) -> JSON:
        members = self._team_members[team_id]
        if user_id not in members:
            members[user_id] = {
                "team_id": team_id,
                "user_id": user_id,
                "roles": "team_user team_admin" if admin else "team_user",
                "delete_at": 0,
                "scheme_guest": False,
                "scheme_user": True,
                "scheme_admin": admin,
                "explicit_roles": "",
                "create_at": self._millis(),
            }
        return members[user_id]

    def _create_channel_record(
        self,
        team_id: str,
        name: str,
        display_name: str,
        channel_type: str,
        header: str,
        purpose: str,
        creator_id: str,
    ) -> JSON:
        self._validate_channel_name(name)
        if channel_type not in ("O", "P"):
            raise AppError(400, "model.channel.is_valid.type.app_error", "Invalid type.")
        if len(display_name) > 64:
            raise AppError(
                400, "model.channel.is_valid.display_name.app_error", "Invalid display name."
            )
        if self._find_channel(team_id, name) is not None:
            raise AppError(
                400,
                "store.sql_channel.save_channel.exists.app_error",
                "A channel with that name already exists on the same team.",
            )
        now = self._millis()
        channel: JSON = {
            "id": new_id(),
            "create_at": now,
            "update_at": now,
            "delete_at": 0,
            "team_id": team_id,
            "type": channel_type,
            "display_name": display_name,
            "name": name,
            "header": header,
            "purpose": purpose,
            "last_post_at": 0,
            "total_msg_count": 0,
            "extra_update_at": 0,
            "creator_id": creator_id,
            "scheme_id": None,
            "props": None,
            "group_constrained": None,
            "shared": None,
            "total_msg_count_root": 0,
            "policy_id": None,
            "last_root_post_at": 0,
        }
        self._channels[channel["id"]] = channel
        self._channel_members[channel["id"]] = {}
        self._channel_posts[channel["id"]] = []
        return channel

    def _validate_channel_name(self, name: str) -> None:
        if not name or len(name) > 64 or not _CHANNEL_NAME_RE.match(name):
            raise AppError(
                400,
                "model.channel.is_valid.1_or_more.app_error",
                "Name must be 1 or more lowercase alphanumeric characters.",
            )

    def _add_channel_member(self, channel: JSON, user_id: str, admin: bool = False) -> JSON:
        members = self._channel_members[channel["id"]]
        if user_id not in members:
            members[user_id] = {
                "channel_id": channel["id"],
                "user_id": user_id,
                "roles": "channel_user channel_admin" if admin else "channel_user",
                "last_viewed_at": 0,
                "msg_count": 0,
                "mention_count": 0,
                "mention_count_root": 0,
                "urgent_mention_count": 0,
                "msg_count_root": 0,
                "notify_props": dict(_CHANNEL_NOTIFY_PROPS),
                "last_update_at": self._millis(),
                "scheme_guest": False,
                "scheme_user": True,
                "scheme_admin": admin,
                "explicit_roles": "",
            }
        return members[user_id]

    def _store_file(self, user_id: str, channel_id: str, name: str, content: bytes | None) -> JSON:
        self._require_user(user_id)
        self._require_channel(channel_id)
        data = content if content is not None else f"contents of {name}\n".encode()
        extension = name.rsplit(".", 1)[1].lower() if "." in name else ""
        now = self._millis()
        info: JSON = {
            "id": new_id(),
            "user_id": user_id,
            "post_id": "",
            "channel_id": channel_id,
            "create_at": now,
            "update_at": now,
            "delete_at": 0,
            "name": name,
            "extension": extension,
            "size": len(data),
            "mime_type": mimetypes.guess_type(name)[0] or "application/octet-stream",
            "has_preview_image": False,
            "mini_preview": None,
            "remote_id": "",
            "archived": False,
        }
        self._files[info["id"]] = _File(info, data)
        return copy.deepcopy(info)

    def _create_command(self, body: JSON, creator_id: str) -> JSON:
        team_id = str(body.get("team_id") or "")
        if team_id not in self._teams:
            raise AppError(404, "app.team.get.find.app_error", "Unable to find the existing team.")
        trigger = str(body.get("trigger") or "")
        if not trigger or len(trigger) > 128 or trigger.startswith("/") or " " in trigger:
            raise AppError(400, "model.command.is_valid.trigger.app_error", "Invalid trigger.")
        url = str(body.get("url") or "")
        if not url.startswith(("http://", "https://")):
            raise AppError(
                400,
                "model.command.is_valid.url_http.app_error",
                "Invalid URL. Must be a valid URL and start with http:// or https://.",
            )
        method = str(body.get("method") or "")
        if method not in ("P", "G"):
            raise AppError(400, "model.command.is_valid.method.app_error", "Invalid Method.")
        if any(
            c["team_id"] == team_id and c["trigger"] == trigger for c in self._commands.values()
        ):
            raise AppError(
                400,
                "api.command.duplicate_trigger.app_error",
                "This trigger word is already in use. Please choose another word.",
            )
        now = self._millis()
        command: JSON = {
            "id": new_id(),
            "token": new_id(),
            "create_at": now,
            "update_at": now,
            "delete_at": 0,
            "creator_id": creator_id,
            "team_id": team_id,
            "trigger": trigger,
            "method": method,
            "username": str(body.get("username") or ""),
            "icon_url": str(body.get("icon_url") or ""),
            "auto_complete": bool(body.get("auto_complete", False)),
            "auto_complete_desc": str(body.get("auto_complete_desc") or ""),
            "auto_complete_hint": str(body.get("auto_complete_hint") or ""),
            "display_name": str(body.get("display_name") or ""),
            "description": str(body.get("description") or ""),
            "url": url,
            "plugin_id": "",
        }
        self._commands[command["id"]] = command
        return command

    def _create_outgoing_hook(self, body: JSON, creator_id: str) -> JSON:
        team_id = str(body.get("team_id") or "")
        if team_id not in self._teams:
            raise AppError(404, "app.team.get.find.app_error", "Unable to find the existing team.")
        channel_id = str(body.get("channel_id") or "")
        trigger_words = [str(w) for w in body.get("trigger_words") or []]
        if channel_id:
            channel = self._channels.get(channel_id)
            if channel is None:
                raise AppError(
                    400, "api.webhook.create_outgoing.intersect.app_error", "Invalid channel_id."
                )
            if channel["type"] != "O":
                raise AppError(
                    403,
                    "api.webhook.create_outgoing.not_open.app_error",
                    "Outgoing webhooks can only be created for public channels.",
                )
        elif not trigger_words:
            raise AppError(
                400,
                "api.webhook.create_outgoing.triggers.app_error",
                "Either trigger_words or channel_id must be set",
            )
        callback_urls = [str(u) for u in body.get("callback_urls") or []]
        if not callback_urls or not all(
            u.startswith(("http://", "https://")) for u in callback_urls
        ):
            raise AppError(
                400, "model.outgoing_hook.is_valid.callback.app_error", "Invalid callback urls."
            )
        trigger_when = int(body.get("trigger_when") or 0)
        if trigger_when not in (0, 1):
            raise AppError(
                400, "model.outgoing_hook.is_valid.content_type.app_error", "Invalid trigger_when."
            )
        now = self._millis()
        hook: JSON = {
            "id": new_id(),
            "token": new_id(),
            "create_at": now,
            "update_at": now,
            "delete_at": 0,
            "creator_id": creator_id,
            "channel_id": channel_id,
            "team_id": team_id,
            "trigger_words": trigger_words,
            "trigger_when": trigger_when,
            "callback_urls": callback_urls,
            "display_name": str(body.get("display_name") or ""),
            "description": str(body.get("description") or ""),
            "content_type": str(body.get("content_type") or "application/x-www-form-urlencoded"),
            "username": str(body.get("username") or ""),
            "icon_url": str(body.get("icon_url") or ""),
        }
        self._outgoing_hooks[hook["id"]] = hook
        return hook

    # -- lookups and permissions -------------------------------------------------------------

    def _is_admin(self, user: JSON | None) -> bool:
        return user is not None and "system_admin" in str(user["roles"]).split()

    def _require_user(self, user_id: str) -> JSON:
        user = self._users.get(user_id)
        if user is None:
            raise _user_missing()
        return user

    def _require_channel(self, channel_id: str) -> JSON:
        channel = self._channels.get(channel_id)
        if channel is None:
            raise _channel_missing()
        return channel

    def _require_post(self, post_id: str) -> JSON:
        post = self._posts.get(post_id)
        if post is None or post["delete_at"]:
            raise _post_missing()
        return post

    def _find_channel(self, team_id: str, name: str) -> JSON | None:
        for channel in self._channels.values():
            if channel["team_id"] == team_id and channel["name"] == name:
                return channel
        return None

    def _is_member(self, user_id: str, channel_id: str) -> bool:
        return user_id in self._channel_members.get(channel_id, {})

    def _is_team_member(self, user_id: str, team_id: str) -> bool:
        return user_id in self._team_members.get(team_id, {})

    def _can_read(self, user: JSON, channel: JSON) -> bool:
        if self._is_admin(user) or self._is_member(user["id"], channel["id"]):
            return True
        return channel["type"] == "O" and self._is_team_member(user["id"], channel["team_id"])

    def _check_can_post(self, user_id: str, channel: JSON) -> None:
        user = self._require_user(user_id)
        if self._is_admin(user) or self._is_member(user_id, channel["id"]):
            return
        if channel["type"] == "O" and self._is_team_member(user_id, channel["team_id"]):
            return
        raise _permission_error()

    def _check_id(self, value: str, name: str) -> str:
        if not _ID_RE.match(value):
            raise _invalid_url(name)
        return value

    # -- JSON out ----------------------------------------------------------------------------

    def _user_json(self, user: JSON, viewer_id: str) -> JSON:
        result = copy.deepcopy(user)
        viewer = self._users.get(viewer_id)
        if viewer_id != user["id"] and not self._is_admin(viewer):
            # User.SanitizeProfile: what other users may not see drops out (all omitempty).
            for key in ("notify_props", "last_password_update", "auth_data"):
                result.pop(key, None)
        return result

    def _client_post(self, post: JSON) -> JSON:
        """The post as the server sends it to clients."""
        result = _strip_integrations(copy.deepcopy(post))
        root_id = post["root_id"] or post["id"]
        replies = [
            p
            for p in self._posts.values()
            if p["root_id"] == root_id
            and not p["delete_at"]
            and p["channel_id"] == post["channel_id"]
        ]
        result["reply_count"] = len(replies)
        result["last_reply_at"] = max((p["create_at"] for p in replies), default=0)
        metadata: JSON = {}
        if result["props"].get("attachments"):
            metadata["embeds"] = [{"type": "message_attachment"}]
        files = [copy.deepcopy(self._files[f].info) for f in post["file_ids"] if f in self._files]
        if files:
            metadata["files"] = files
        result["metadata"] = metadata
        return result

    # -- posts -------------------------------------------------------------------------------

    def _save_post(
        self,
        user_id: str,
        channel: JSON,
        message: str,
        *,
        props: Any = None,
        root_id: str = "",
        file_ids: Sequence[str] = (),
        pending_post_id: str = "",
        post_type: str = "",
    ) -> JSON:
        user = self._require_user(user_id)
        if channel["delete_at"]:
            raise AppError(
                400,
                "api.post.create_post.can_not_post_to_deleted.error",
                "Can not post to deleted channel.",
            )
        if len(message) > _MAX_POST_RUNES:
            raise AppError(
                400,
                "model.post.is_valid.message_length.app_error",
                f"Message length is {len(message)} characters, which exceeds the maximum "
                f"limit of {_MAX_POST_RUNES} characters.",
            )
        if root_id:
            root = self._posts.get(root_id)
            if root is None or root["delete_at"] or root["channel_id"] != channel["id"]:
                raise AppError(
                    400, "api.post.create_post.root_id.app_error", "Invalid RootId parameter."
                )
            if root["root_id"]:
                raise AppError(
                    400, "api.post.create_post.root_id.app_error", "Invalid RootId parameter."
                )
        clean_props = _normalize_props(props)
        for key in _SANITIZED_PROPS:
            clean_props.pop(key, None)
        if user.get("is_bot"):
            clean_props["from_bot"] = "true"
        attached: list[str] = []
        for file_id in dict.fromkeys(file_ids):
            # attachFileIDsToPost: only the poster's own, still unattached uploads stick.
            stored = self._files.get(file_id)
            if stored and stored.info["user_id"] == user_id and not stored.info["post_id"]:
                attached.append(file_id)
        now = self._millis()
        post: JSON = {
            "id": new_id(),
            "create_at": now,
            "update_at": now,
            "edit_at": 0,
            "delete_at": 0,
            "is_pinned": False,
            "user_id": user_id,
            "channel_id": channel["id"],
            "root_id": root_id,
            "original_id": "",
            "message": message,
            "type": post_type,
            "props": clean_props,
            "hashtags": _hashtags(message),
            "file_ids": attached,
            "pending_post_id": pending_post_id,
            "reply_count": 0,
            "last_reply_at": 0,
            "participants": None,
            "metadata": {},
        }
        for file_id in attached:
            self._files[file_id].info["post_id"] = post["id"]
        self._posts[post["id"]] = post
        self._channel_posts[channel["id"]].append(post["id"])
        channel["last_post_at"] = now
        channel["total_msg_count"] += 1
        if not root_id:
            channel["last_root_post_at"] = now
            channel["total_msg_count_root"] += 1
        return post

    async def _after_post(
        self, post: JSON, channel: JSON, *, trigger_webhooks: bool, set_online: bool = True
    ) -> None:
        await self._publish_posted(post, channel, set_online=set_online)
        if trigger_webhooks and channel["type"] == "O" and self._outgoing_hooks:
            task = asyncio.get_running_loop().create_task(self._fire_outgoing_hooks(post, channel))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _mentions(self, post: JSON, channel: JSON) -> list[str]:
        members = self._channel_members[channel["id"]]
        mentioned: list[str] = []
        for match in _MENTION_RE.finditer(post["message"]):
            name = match.group(1).lower().rstrip(".-_")
            if name in ("channel", "all", "here"):
                ids = list(members)
            else:
                ids = [uid for uid in members if self._users[uid]["username"] == name]
            mentioned.extend(uid for uid in ids if uid != post["user_id"] and uid not in mentioned)
        return mentioned

    async def _publish_posted(self, post: JSON, channel: JSON, set_online: bool = True) -> None:
        sender = self._users[post["user_id"]]
        data: JSON = {
            "channel_display_name": channel["display_name"],
            "channel_name": channel["name"],
            "channel_type": channel["type"],
            "post": json.dumps(self._client_post(post), separators=(",", ":")),
            "sender_name": f"@{sender['username']}",
            "set_online": set_online,
            "team_id": channel["team_id"],
        }
        if post["file_ids"]:
            data["otherFile"] = "true"
            if any(
                self._files[f].info["mime_type"].startswith("image/")
                for f in post["file_ids"]
                if f in self._files
            ):
                data["image"] = "true"
        mentions = self._mentions(post, channel)
        if mentions:
            # ArrayToJSON: the list arrives as a JSON string inside the data.
            data["mentions"] = json.dumps(mentions)
        await self._publish("posted", data, channel_id=channel["id"])

    async def _publish_edited(self, post: JSON) -> None:
        data = {"post": json.dumps(self._client_post(post), separators=(",", ":"))}
        await self._publish("post_edited", data, channel_id=post["channel_id"])

    async def _send_ephemeral(self, user_id: str, post: JSON) -> JSON:
        ephemeral: JSON = {
            "id": new_id(),
            "create_at": self._millis(),
            "update_at": 0,
            "edit_at": 0,
            "delete_at": 0,
            "is_pinned": False,
            "user_id": post.get("user_id", user_id),
            "channel_id": post["channel_id"],
            "root_id": post.get("root_id", ""),
            "original_id": "",
            "message": post.get("message", ""),
            "type": "system_ephemeral",
            "props": _normalize_props(post.get("props")),
            "hashtags": "",
            "file_ids": [],
            "pending_post_id": "",
            "reply_count": 0,
            "last_reply_at": 0,
            "participants": None,
            "metadata": {},
        }
        self.ephemeral_posts.append(EphemeralPost(user_id, copy.deepcopy(ephemeral)))
        data = {
            "post": json.dumps(_strip_integrations(copy.deepcopy(ephemeral)), separators=(",", ":"))
        }
        await self._publish(
            "ephemeral_message", data, channel_id=post["channel_id"], user_id=user_id
        )
        return ephemeral

    async def _system_post(
        self, channel: JSON, user_id: str, post_type: str, message: str, props: JSON
    ) -> None:
        post = self._save_post(user_id, channel, message, props=props, post_type=post_type)
        await self._after_post(post, channel, trigger_webhooks=False)

    def _update_post(self, post: JSON, message: str, props: Any) -> None:
        """App.UpdatePost without SafeUpdate: message and props replaced wholesale."""
        now = self._millis()
        old_attachments = post["props"].get("attachments")
        if message != post["message"]:
            post["message"] = message
            post["hashtags"] = _hashtags(message)
            post["edit_at"] = now
        post["props"] = _normalize_props(props)
        if post["edit_at"] != now and _attachments_differ(
            old_attachments, post["props"].get("attachments")
        ):
            post["edit_at"] = now
        post["update_at"] = now

    # -- websocket ---------------------------------------------------------------------------

    async def _websocket(self, ws: WebSocket) -> None:
        await ws.accept()
        conn = _Conn(ws, ws.scope.get("fake_mattermost.raw_send"), new_id())
        self._conns.add(conn)
        try:
            header_user = self._user_for_token(ws.headers, ws.query_params)
            if header_user is not None:
                await self._register(conn, header_user["id"])
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None:
                    text = (message.get("bytes") or b"").decode(errors="replace")
                if not await self._handle_ws_request(conn, text):
                    break
        except Exception:  # a broken peer must not take the fake down
            conn.closed = True
        finally:
            conn.closed = True
            self._conns.discard(conn)

    async def _handle_ws_request(self, conn: _Conn, text: str) -> bool:
        """Answer one client message; False closes the connection."""
        try:
            request = json.loads(text)
        except ValueError:
            # ReadJSON failing ends the connection's read pump.
            await self._abort(conn)
            return False
        if not isinstance(request, dict):
            await self._abort(conn)
            return False
        action = request.get("action")
        seq = request.get("seq")
        seq_reply = seq if isinstance(seq, int) else 0
        if not action:
            await self._ws_error(
                conn,
                seq_reply,
                400,
                "api.web_socket_router.no_action.app_error",
                "No websocket action.",
            )
            return True
        if not isinstance(seq, int) or seq <= 0:
            await self._ws_error(
                conn,
                seq_reply,
                400,
                "api.web_socket_router.bad_seq.app_error",
                "Invalid sequence for WebSocket message.",
            )
            return True
        if action == "authentication_challenge":
            if conn.user_id:
                return True
            data = request.get("data")
            token = data.get("token") if isinstance(data, dict) else None
            user = self._user_for_token({"authorization": f"Bearer {token}"}, {})
            if not isinstance(token, str) or user is None:
                # The real server closes the socket without a word (no close frame either).
                await self._abort(conn)
                return False
            await self._register(conn, user["id"])
            await self._ws_respond(conn, {"status": "OK", "seq_reply": seq})
            return True
        if not conn.user_id:
            await self._ws_error(
                conn,
                seq,
                401,
                "api.web_socket_router.not_authenticated.app_error",
                "Not authenticated. Please log in.",
            )
            return True
        if action == "ping":
            data = {
                "text": "pong",
                "version": SERVER_VERSION,
                "server_time": int(time.time() * 1000),
                "node_id": "",
            }
            await self._ws_respond(conn, {"status": "OK", "seq_reply": seq, "data": data})
        elif action == "user_typing":
            await self._ws_respond(conn, {"status": "OK", "seq_reply": seq})
        else:
            await self._ws_error(
                conn,
                seq,
                500,
                "api.web_socket_router.bad_action.app_error",
                "Unknown WebSocket action.",
            )
        return True

    async def _register(self, conn: _Conn, user_id: str) -> None:
        conn.user_id = user_id
        hello = {
            "server_version": VERSION_ID,
            "connection_id": conn.connection_id,
            "server_hostname": "fake-mattermost",
        }
        await self._send_event(conn, "hello", hello, self._broadcast(user_id=user_id))

    async def _ws_respond(self, conn: _Conn, response: JSON) -> None:
        async with conn.lock:
            await self._send_text(conn, json.dumps(response, separators=(",", ":")))

    async def _ws_error(
        self, conn: _Conn, seq_reply: int, status: int, error_id: str, message: str
    ) -> None:
        error = AppError(status, error_id, message).body("")
        error.pop("request_id")
        await self._ws_respond(conn, {"status": "FAIL", "seq_reply": seq_reply, "error": error})

    def _broadcast(
        self,
        *,
        user_id: str = "",
        channel_id: str = "",
        team_id: str = "",
        omit_users: dict[str, bool] | None = None,
    ) -> JSON:
        return {
            "omit_users": omit_users,
            "user_id": user_id,
            "channel_id": channel_id,
            "team_id": team_id,
            "connection_id": "",
            "omit_connection_id": "",
        }

    async def _publish(
        self,
        event: str,
        data: JSON,
        *,
        user_id: str = "",
        channel_id: str = "",
        team_id: str = "",
        omit_users: dict[str, bool] | None = None,
    ) -> None:
        broadcast = self._broadcast(
            user_id=user_id, channel_id=channel_id, team_id=team_id, omit_users=omit_users
        )
        self.published.append(PublishedEvent(event, copy.deepcopy(data), copy.deepcopy(broadcast)))
        targets = [c for c in list(self._conns) if c.user_id and self._should_send(c, broadcast)]
        await asyncio.gather(*(self._send_event(c, event, data, broadcast) for c in targets))

    def _should_send(self, conn: _Conn, broadcast: JSON) -> bool:
        # WebConn.shouldSendEvent: a named user wins; then omissions, channel, team.
        if broadcast["user_id"]:
            return bool(conn.user_id == broadcast["user_id"])
        if broadcast["omit_users"] and conn.user_id in broadcast["omit_users"]:
            return False
        if broadcast["channel_id"]:
            return self._is_member(conn.user_id, broadcast["channel_id"])
        if broadcast["team_id"]:
            return self._is_team_member(conn.user_id, broadcast["team_id"])
        return True

    async def _send_event(self, conn: _Conn, event: str, data: JSON, broadcast: JSON) -> None:
        async with conn.lock:
            payload = {"event": event, "data": data, "broadcast": broadcast, "seq": conn.seq}
            conn.seq += 1
            await self._send_text(conn, json.dumps(payload, separators=(",", ":")))

    async def _send_text(self, conn: _Conn, text: str) -> None:
        if conn.closed:
            return
        try:
            await conn.ws.send_text(text)
        except Exception:  # the peer went away; its receive loop cleans up
            conn.closed = True

    async def _abort(self, conn: _Conn) -> None:
        conn.closed = True
        protocol = getattr(conn.raw_send, "__self__", None)
        transport = getattr(protocol, "transport", None)
        if isinstance(transport, asyncio.Transport):
            transport.abort()
            return
        # Without uvicorn's transport at hand, a close frame with "service restart" is next best.
        with contextlib.suppress(Exception):
            await conn.ws.close(code=1012)

    async def _abort_all(self) -> int:
        conns = list(self._conns)
        for conn in conns:
            await self._abort(conn)
        deadline = time.monotonic() + 2
        while self._conns and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return len(conns)

    async def _set_status(self, user_id: str, status: str, manual: bool) -> JSON:
        self._require_user(user_id)
        record = {
            "user_id": user_id,
            "status": status,
            "manual": manual,
            "last_activity_at": self._millis(),
            "dnd_end_time": 0,
        }
        self._statuses[user_id] = record
        await self._publish(
            "status_change", {"status": status, "user_id": user_id}, user_id=user_id
        )
        return dict(record)

    # -- integrations ------------------------------------------------------------------------

    async def _do_post_action(
        self, user_id: str, post_id: str, action_id: str, selected_option: str
    ) -> JSON:
        user = self._require_user(user_id)
        post = self._posts.get(post_id)
        if post is None or post["delete_at"]:
            raise IntegrationError(_post_missing().body(new_id()))
        channel = self._channels[post["channel_id"]]
        if not self._can_read(user, channel):
            raise IntegrationError(_permission_error().body(new_id()))
        action = next(
            (
                a
                for attachment in post["props"].get("attachments") or []
                for a in attachment.get("actions") or []
                if a.get("id") == action_id
            ),
            None,
        )
        if action is None or not action.get("integration"):
            raise IntegrationError(
                AppError(
                    404,
                    "api.post.do_action.action_id.app_error",
                    "Invalid action id.",
                ).body(new_id())
            )
        integration = action["integration"]
        context = copy.deepcopy(integration.get("context")) or None
        request: JSON = {
            "user_id": user_id,
            "user_name": user["username"],
            "channel_id": channel["id"],
            "channel_name": channel["name"],
            "team_id": channel["team_id"],
            "team_domain": self._teams[channel["team_id"]]["name"],
            "post_id": post_id,
            "trigger_id": self._trigger_id(user_id),
            "type": action.get("type", ""),
            "data_source": "",
        }
        if action.get("type") == "select" and selected_option:
            context = context or {}
            context["selected_option"] = selected_option
            request["data_source"] = action.get("data_source", "")
        if context:
            request["context"] = context
        retain = {k: post["props"][k] for k in _RETAIN_PROP_KEYS if k in post["props"]}
        status, answer = await self._post_json(str(integration.get("url", "")), request)
        if status != 200:
            raise IntegrationError(
                AppError(
                    400,
                    "api.post.do_action.action_integration.app_error",
                    "Action integration error.",
                ).body(new_id())
            )
        if not isinstance(answer, dict):
            answer = {}
        update = answer.get("update")
        if isinstance(update, dict):
            props = update.get("props")
            if props is None:
                props = post["props"]
            else:
                props = {
                    **{k: v for k, v in props.items() if k not in _RETAIN_PROP_KEYS},
                    **retain,
                }
            self._update_post(post, str(update.get("message") or ""), props)
            await self._publish_edited(post)
        ephemeral_text = answer.get("ephemeral_text")
        if isinstance(ephemeral_text, str) and ephemeral_text:
            if not answer.get("skip_slack_parsing"):
                ephemeral_text = _slack_links_to_markdown(ephemeral_text)
            await self._send_ephemeral(
                user_id,
                {
                    "user_id": user_id,
                    "channel_id": channel["id"],
                    "root_id": post["root_id"] or post["id"],
                    "message": ephemeral_text,
                    "props": dict(retain),
                },
            )
        return answer

    def _trigger_id(self, user_id: str) -> str:
        # GenerateTriggerId: base64("clientTriggerId:userId:millis:" + base64(signature)).
        signature = base64.b64encode(os.urandom(64)).decode()
        raw = f"{new_id()}:{user_id}:{int(time.time() * 1000)}:{signature}"
        return base64.b64encode(raw.encode()).decode()

    async def _post_json(self, url: str, body: JSON) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        try:
            async with httpx.AsyncClient(timeout=self.integration_timeout_s) as client:
                response = await client.post(url, content=json.dumps(body), headers=headers)
        except httpx.HTTPError:
            return 0, None
        return response.status_code, _parse_json(response.content)

    async def _execute_command(
        self, user_id: str, channel_id: str, text: str, root_id: str
    ) -> JSON:
        user = self._require_user(user_id)
        channel = self._require_channel(channel_id)
        if not self._can_read(user, channel):
            raise IntegrationError(_permission_error().body(new_id()))
        head, _, message = text.strip().partition(" ")
        trigger = head.lower().removeprefix("/")
        command = next(
            (
                c
                for c in self._commands.values()
                if c["team_id"] == channel["team_id"] and c["trigger"] == trigger
            ),
            None,
        )
        if not head.startswith("/") or command is None:
            raise IntegrationError(
                AppError(
                    404,
                    "api.command.execute_command.not_found.app_error",
                    f"Command with a trigger of '{head}' not found.",
                ).body(new_id())
            )
        hook_id = new_id()
        self._command_hooks[hook_id] = {
            "command_id": command["id"],
            "user_id": user_id,
            "channel_id": channel_id,
            "root_id": root_id,
        }
        form = [
            ("channel_id", channel_id),
            ("channel_name", channel["name"]),
            ("command", f"/{trigger}"),
            ("response_url", f"{self.base_url}/hooks/commands/{hook_id}"),
            ("team_domain", self._teams[channel["team_id"]]["name"]),
            ("team_id", command["team_id"]),
            ("text", message),
            ("token", command["token"]),
            ("trigger_id", self._trigger_id(user_id)),
            ("user_id", user_id),
            ("user_name", user["username"]),
        ]
        headers = {"Accept": "application/json", "Authorization": f"Token {command['token']}"}
        try:
            async with httpx.AsyncClient(timeout=self.integration_timeout_s) as client:
                if command["method"] == "G":
                    response = await client.get(command["url"], params=form, headers=headers)
                else:
                    headers["Content-Type"] = "application/x-www-form-urlencoded"
                    response = await client.post(
                        command["url"], content=urlencode(form), headers=headers
                    )
        except httpx.HTTPError as exc:
            raise IntegrationError(
                AppError(
                    500,
                    "api.command.execute_command.failed.app_error",
                    f"Command with a trigger of '{trigger}' failed: {exc}.",
                ).body(new_id())
            ) from None
        if response.status_code != 200:
            raise IntegrationError(
                AppError(
                    500,
                    "api.command.execute_command.failed_resp.app_error",
                    f"Command with a trigger of '{trigger}' returned response "
                    f"{response.status_code}.",
                ).body(new_id())
            )
        answer = _parse_json(response.content)
        if not isinstance(answer, dict):
            if response.content.strip():
                # A text/plain answer becomes the text of an ephemeral response.
                answer = {"text": response.text}
            else:
                raise IntegrationError(
                    AppError(
                        500,
                        "api.command.execute_command.failed_empty.app_error",
                        f"Command with a trigger of '{trigger}' returned an empty response.",
                    ).body(new_id())
                )
        await self._apply_command_response(answer, user_id, channel, root_id)
        return answer

    async def _apply_command_response(
        self, answer: JSON, user_id: str, channel: JSON, root_id: str
    ) -> None:
        """App.HandleCommandResponsePost for a custom (not built-in) command."""
        props = _normalize_props(answer.get("props"))
        props["from_webhook"] = "true"
        attachments = answer.get("attachments")
        post_type = str(answer.get("type") or "")
        if attachments is not None:
            props["attachments"] = _normalize_attachments(attachments)
            post_type = post_type or "slack_attachment"
        message = _slack_links_to_markdown(str(answer.get("text") or ""))
        response_type = answer.get("response_type") or "ephemeral"
        if response_type == "in_channel":
            post = self._save_post(
                user_id, channel, message, props=props, root_id=root_id, post_type=post_type
            )
            await self._after_post(post, channel, trigger_webhooks=True)
        elif message or attachments is not None:
            await self._send_ephemeral(
                user_id,
                {
                    "user_id": user_id,
                    "channel_id": channel["id"],
                    "root_id": root_id,
                    "message": message,
                    "props": props,
                },
            )

    async def _fire_outgoing_hooks(self, post: JSON, channel: JSON) -> list[HookDelivery]:
        if channel["type"] != "O":
            return []
        words = post["message"].split()
        first_word = words[0] if words else ""
        deliveries: list[HookDelivery] = []
        for hook in list(self._outgoing_hooks.values()):
            if hook["team_id"] != channel["team_id"]:
                continue
            if hook["channel_id"] not in (channel["id"], ""):
                continue
            if hook["channel_id"] == channel["id"] and not hook["trigger_words"]:
                trigger_word = ""
            elif hook["trigger_when"] == 0 and first_word in hook["trigger_words"]:
                trigger_word = first_word
            elif (
                hook["trigger_when"] == 1
                and first_word
                and any(first_word.startswith(w) for w in hook["trigger_words"])
            ):
                trigger_word = next(w for w in hook["trigger_words"] if first_word.startswith(w))
            else:
                continue
            payload: JSON = {
                "token": hook["token"],
                "team_id": hook["team_id"],
                "team_domain": self._teams[hook["team_id"]]["name"],
                "channel_id": post["channel_id"],
                "channel_name": channel["name"],
                "timestamp": post["create_at"],
                "user_id": post["user_id"],
                "user_name": self._users[post["user_id"]]["username"],
                "post_id": post["id"],
                "text": post["message"],
                "trigger_word": trigger_word,
                "file_ids": ",".join(post["file_ids"]),
            }
            for url in hook["callback_urls"]:
                delivery = await self._deliver_hook(hook, url, payload)
                deliveries.append(delivery)
                self.hook_deliveries.append(delivery)
                if isinstance(delivery.response, dict):
                    await self._apply_hook_response(hook, post, channel, delivery.response)
        return deliveries

    async def _deliver_hook(self, hook: JSON, url: str, payload: JSON) -> HookDelivery:
        json_body = hook["content_type"] == "application/json"
        if json_body:
            content_type = "application/json"
            body = json.dumps(payload)
        else:
            content_type = "application/x-www-form-urlencoded"
            # ToFormValues: url.Values.Encode() sorts the keys, and the timestamp is in seconds
            # (the JSON payload has milliseconds).
            form = {**payload, "timestamp": str(payload["timestamp"] // 1000)}
            body = urlencode(sorted(form.items()))
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        try:
            async with httpx.AsyncClient(timeout=self.integration_timeout_s) as client:
                response = await client.post(url, content=body, headers=headers)
        except httpx.HTTPError:
            return HookDelivery(hook["id"], url, content_type, payload, 0, None)
        return HookDelivery(
            hook["id"],
            url,
            content_type,
            payload,
            response.status_code,
            _parse_json(response.content),
        )

    async def _apply_hook_response(
        self, hook: JSON, post: JSON, channel: JSON, answer: JSON
    ) -> None:
        """TriggerWebhook's answer handling: text or attachments become a webhook post."""
        text = answer.get("text")
        attachments = answer.get("attachments")
        if text is None and not attachments:
            return
        props = _normalize_props(answer.get("props"))
        props["webhook_display_name"] = hook["display_name"]
        post_type = str(answer.get("type") or "")
        if attachments:
            props["attachments"] = _normalize_attachments(attachments)
            post_type = post_type or "slack_attachment"
        props["from_webhook"] = "true"
        props["override_username"] = str(answer.get("username") or hook["username"] or "webhook")
        icon = answer.get("icon_url") or hook["icon_url"]
        if icon:
            props["override_icon_url"] = icon
        root_id = post["id"] if answer.get("response_type") == "comment" else ""
        reply = self._save_post(
            hook["creator_id"],
            channel,
            _slack_links_to_markdown(str(text or "")),
            props=props,
            root_id=root_id if not post["root_id"] else post["root_id"],
            post_type=post_type,
        )
        await self._after_post(reply, channel, trigger_webhooks=False)

    async def _command_response_url(self, request: Request) -> Response:
        hook = self._command_hooks.get(request.path_params["hook_id"])
        if hook is None:
            return self._error_response(
                AppError(404, "app.command_webhook.get.missing", "Unable to find the webhook.")
            )
        answer = _parse_json(await request.body())
        if not isinstance(answer, dict):
            return self._error_response(_invalid_body("response"))
        channel = self._channels[hook["channel_id"]]
        await self._apply_command_response(answer, hook["user_id"], channel, hook["root_id"])
        return PlainTextResponse("ok")

    # -- REST handlers -----------------------------------------------------------------------

    async def _system_ping(self, ctx: _Ctx) -> tuple[int, Any]:
        return 200, {"status": "OK", "ActiveSearchBackend": "database"}

    async def _get_me(self, ctx: _Ctx) -> tuple[int, Any]:
        return 200, self._user_json(ctx.user, ctx.user["id"])

    async def _get_user(self, ctx: _Ctx) -> tuple[int, Any]:
        user_id = self._check_id(ctx.params["user_id"], "user_id")
        return 200, self._user_json(self._require_user(user_id), ctx.user["id"])

    async def _get_user_by_username(self, ctx: _Ctx) -> tuple[int, Any]:
        username = ctx.params["username"].lower()
        for user in self._users.values():
            if user["username"] == username:
                return 200, self._user_json(user, ctx.user["id"])
        raise AppError(
            404,
            "app.user.get_by_username.app_error",
            "Unable to find an existing account matching your username for this team. "
            "This team may require an invite from the team owner to join.",
        )

    async def _get_users_by_ids(self, ctx: _Ctx) -> tuple[int, Any]:
        ids = ctx.list_body("user_ids")
        if not ids:
            raise _invalid_body("user_ids")
        users = [
            self._user_json(self._users[i], ctx.user["id"])
            for i in dict.fromkeys(ids)
            if isinstance(i, str) and i in self._users
        ]
        return 200, users

    async def _get_statuses_by_ids(self, ctx: _Ctx) -> tuple[int, Any]:
        ids = ctx.list_body("user_ids")
        if not ids or not all(isinstance(i, str) and _ID_RE.match(i) for i in ids):
            raise _invalid_body("user_ids")
        statuses = []
        for user_id in dict.fromkeys(ids):
            record = self._statuses.get(user_id)
            if record is None:
                # Users the server has no status for come back offline.
                record = {
                    "user_id": user_id,
                    "status": "offline",
                    "manual": False,
                    "last_activity_at": 0,
                    "dnd_end_time": 0,
                }
            statuses.append(dict(record))
        return 200, statuses

    async def _create_user_api(self, ctx: _Ctx) -> tuple[int, Any]:
        body = ctx.object_body("user")
        if not isinstance(body.get("email"), str) or "@" not in body["email"]:
            raise AppError(400, "model.user.is_valid.email.app_error", "Invalid email.")
        if len(str(body.get("password") or "")) < 8:
            raise AppError(
                400,
                "model.user.is_valid.pwd.app_error",
                "Your password must contain at least 8 characters.",
            )
        user = self._create_user(
            str(body.get("username") or ""),
            first_name=str(body.get("first_name") or ""),
            last_name=str(body.get("last_name") or ""),
            nickname=str(body.get("nickname") or ""),
            position=str(body.get("position") or ""),
            email=body["email"],
        )
        return 201, self._user_json(user, ctx.user["id"])

    async def _create_token_api(self, ctx: _Ctx) -> tuple[int, Any]:
        user_id = self._check_id(ctx.params["user_id"], "user_id")
        self._require_user(user_id)
        description = ctx.object_body("token").get("description")
        if not isinstance(description, str) or not description:
            raise _invalid_body("description")
        token = self._issue_token(user_id, description)
        record = next(r for r in self._token_records.values() if r["token"] == token)
        return 200, dict(record)

    async def _create_bot_api(self, ctx: _Ctx) -> tuple[int, Any]:
        body = ctx.object_body("bot")
        bot = self._create_bot(
            str(body.get("username") or ""),
            str(body.get("display_name") or ""),
            str(body.get("description") or ""),
            owner_id=ctx.user["id"],
        )
        return 201, dict(bot)

    async def _create_team_api(self, ctx: _Ctx) -> tuple[int, Any]:
        body = ctx.object_body("team")
        team = self._create_team(
            str(body.get("name") or ""),
            str(body.get("display_name") or ""),
            creator_id=ctx.user["id"],
            team_type=str(body.get("type") or "O"),
        )
        return 201, copy.deepcopy(team)

    async def _get_team_by_name(self, ctx: _Ctx) -> tuple[int, Any]:
        for team in self._teams.values():
            if team["name"] == ctx.params["name"]:
                if not (
                    self._is_admin(ctx.user) or self._is_team_member(ctx.user["id"], team["id"])
                ):
                    raise _permission_error()
                return 200, copy.deepcopy(team)
        raise AppError(
            404, "app.team.get_by_name.missing.app_error", "Unable to find the existing team."
        )

    async def _add_team_member_api(self, ctx: _Ctx) -> tuple[int, Any]:
        team_id = self._check_id(ctx.params["team_id"], "team_id")
        body = ctx.object_body("team_member")
        if team_id not in self._teams:
            raise AppError(404, "app.team.get.find.app_error", "Unable to find the existing team.")
        if body.get("team_id", team_id) != team_id:
            raise _invalid_body("team_id")
        user_id = str(body.get("user_id") or "")
        self._require_user(user_id)
        return 201, dict(self._add_team_member(team_id, user_id))

    async def _create_channel_api(self, ctx: _Ctx) -> tuple[int, Any]:
        body = ctx.object_body("channel")
        team_id = str(body.get("team_id") or "")
        if not (self._is_admin(ctx.user) or self._is_team_member(ctx.user["id"], team_id)):
            raise _permission_error()
        if team_id not in self._teams:
            raise AppError(404, "app.team.get.find.app_error", "Unable to find the existing team.")
        channel = self._create_channel_record(
            team_id,
            str(body.get("name") or ""),
            str(body.get("display_name") or ""),
            str(body.get("type") or ""),
            str(body.get("header") or ""),
            str(body.get("purpose") or ""),
            ctx.user["id"],
        )
        self._add_channel_member(channel, ctx.user["id"], admin=True)
        return 201, copy.deepcopy(channel)

    async def _get_channel(self, ctx: _Ctx) -> tuple[int, Any]:
        channel = self._require_channel(self._check_id(ctx.params["channel_id"], "channel_id"))
        if not self._can_read(ctx.user, channel):
            raise _permission_error()
        return 200, copy.deepcopy(channel)

    async def _get_channel_by_name(self, ctx: _Ctx) -> tuple[int, Any]:
        team_id = self._check_id(ctx.params["team_id"], "team_id")
        channel = self._find_channel(team_id, ctx.params["name"])
        missing = AppError(
            404, "app.channel.get_by_name.missing.app_error", "Unable to find the existing channel."
        )
        if channel is None:
            raise missing
        if channel["delete_at"] and ctx.query.get("include_deleted", "").lower() != "true":
            raise missing
        if not self._can_read(ctx.user, channel):
            # A private channel's existence stays hidden from those who cannot read it.
            if channel["type"] == "P":
                raise missing
            raise _permission_error()
        return 200, copy.deepcopy(channel)

    async def _patch_channel(self, ctx: _Ctx) -> tuple[int, Any]:
        channel = self._require_channel(self._check_id(ctx.params["channel_id"], "channel_id"))
        body = ctx.object_body("channel")
        if not (self._is_admin(ctx.user) or self._is_member(ctx.user["id"], channel["id"])):
            raise _permission_error()
        old = dict(channel)
        if "name" in body and body["name"] is not None and body["name"] != channel["name"]:
            name = str(body["name"])
            self._validate_channel_name(name)
            if self._find_channel(channel["team_id"], name) is not None:
                raise AppError(
                    400,
                    "store.sql_channel.update.exists.app_error",
                    "A channel with that name already exists on the same team.",
                )
            channel["name"] = name
        for key in ("display_name", "header", "purpose"):
            if body.get(key) is not None:
                channel[key] = str(body[key])
        channel["update_at"] = self._millis()
        username = ctx.user["username"]
        changes = (
            ("header", "system_header_change", "channel header"),
            ("purpose", "system_purpose_change", "channel purpose"),
            ("display_name", "system_displayname_change", "channel display name"),
        )
        for key, post_type, label in changes:
            before, after = old[key], channel[key]
            if before == after:
                continue
            if not before:
                message = f"{username} updated the {label} to: {after}"
            elif not after:
                message = f"{username} removed the {label} (was: {before})"
            else:
                message = f"{username} updated the {label} from: {before} to: {after}"
            prop = "displayname" if key == "display_name" else key
            props = {"username": username, f"old_{prop}": before, f"new_{prop}": after}
            await self._system_post(channel, ctx.user["id"], post_type, message, props)
        await self._publish(
            "channel_updated",
            {"channel": json.dumps(channel, separators=(",", ":"))},
            channel_id=channel["id"],
        )
        return 200, copy.deepcopy(channel)

    async def _get_members(self, ctx: _Ctx) -> tuple[int, Any]:
        channel = self._require_channel(self._check_id(ctx.params["channel_id"], "channel_id"))
        if not self._can_read(ctx.user, channel):
            raise _permission_error()
        page = _int_param(ctx.query, "page", 0)
        per_page = min(_int_param(ctx.query, "per_page", 60), 200)
        members = list(self._channel_members[channel["id"]].values())
        return 200, [dict(m) for m in members[page * per_page : (page + 1) * per_page]]

    async def _add_member_api(self, ctx: _Ctx) -> tuple[int, Any]:
        channel = self._require_channel(self._check_id(ctx.params["channel_id"], "channel_id"))
        body = ctx.object_body("user_id")
        user_id = body.get("user_id")
        if not isinstance(user_id, str) or not _ID_RE.match(user_id):
            raise _invalid_body("user_id")
        target = self._require_user(user_id)
        actor = ctx.user
        is_self = user_id == actor["id"]
        allowed = self._is_admin(actor) or self._is_member(actor["id"], channel["id"])
        if (
            is_self
            and channel["type"] == "O"
            and self._is_team_member(actor["id"], channel["team_id"])
        ):
            allowed = True
        if not allowed:
            raise _permission_error()
        if not self._is_team_member(user_id, channel["team_id"]):
            raise AppError(
                404,
                "app.team.get_member.missing.app_error",
                "No team member found for that user ID and team ID.",
            )
        if self._is_member(user_id, channel["id"]):
            return 201, dict(self._channel_members[channel["id"]][user_id])
        member = dict(self._add_channel_member(channel, user_id))
        await self._publish(
            "user_added",
            {"team_id": channel["team_id"], "user_id": user_id},
            channel_id=channel["id"],
        )
        if is_self:
            await self._system_post(
                channel,
                user_id,
                "system_join_channel",
                f"{target['username']} joined the channel.",
                {"username": target["username"]},
            )
        else:
            await self._system_post(
                channel,
                actor["id"],
                "system_add_to_channel",
                f"{target['username']} added to the channel by {actor['username']}.",
                {
                    "userId": actor["id"],
                    "username": actor["username"],
                    "addedUserId": user_id,
                    "addedUsername": target["username"],
                },
            )
        return 201, member

    async def _remove_member(self, ctx: _Ctx) -> tuple[int, Any]:
        channel = self._require_channel(self._check_id(ctx.params["channel_id"], "channel_id"))
        user_id = self._check_id(ctx.params["user_id"], "user_id")
        target = self._require_user(user_id)
        actor = ctx.user
        is_self = user_id == actor["id"]
        if not (is_self or self._is_admin(actor) or self._is_member(actor["id"], channel["id"])):
            raise _permission_error()
        if not self._is_member(user_id, channel["id"]):
            raise AppError(
                404,
                "app.channel.get_member.missing.app_error",
                "No channel member found for that user ID and channel ID.",
            )
        del self._channel_members[channel["id"]][user_id]
        await self._publish(
            "user_removed",
            {"channel_id": channel["id"], "remover_id": actor["id"]},
            user_id=user_id,
        )
        await self._publish(
            "user_removed",
            {"user_id": user_id, "remover_id": actor["id"]},
            channel_id=channel["id"],
        )
        if is_self:
            await self._system_post(
                channel,
                user_id,
                "system_leave_channel",
                f"@{target['username']} has left the channel.",
                {"username": target["username"]},
            )
        else:
            await self._system_post(
                channel,
                actor["id"],
                "system_remove_from_channel",
                f"@{target['username']} removed from the channel.",
                {"removedUserId": user_id, "removedUsername": target["username"]},
            )
        return 200, {"status": "OK"}

    async def _get_posts_for_channel(self, ctx: _Ctx) -> tuple[int, Any]:
        channel = self._require_channel(self._check_id(ctx.params["channel_id"], "channel_id"))
        if not self._can_read(ctx.user, channel):
            raise _permission_error()
        page = _int_param(ctx.query, "page", 0)
        per_page = min(_int_param(ctx.query, "per_page", 60), 200)
        since = _int_param(ctx.query, "since", 0)
        before = ctx.query.get("before", "")
        after = ctx.query.get("after", "")
        posts = [self._posts[i] for i in self._channel_posts[channel["id"]]]
        if since > 0:
            chosen = [p for p in posts if p["update_at"] > since]
            chosen.sort(key=lambda p: p["create_at"], reverse=True)
        else:
            live = [p for p in posts if not p["delete_at"]]
            if after:
                anchor = self._posts.get(after)
                if anchor is None:
                    raise _invalid_url("after")
                newer = [p for p in live if p["create_at"] > anchor["create_at"]]
                newer.sort(key=lambda p: p["create_at"])
                chosen = newer[page * per_page : (page + 1) * per_page]
                chosen.reverse()
            else:
                if before:
                    anchor = self._posts.get(before)
                    if anchor is None:
                        raise _invalid_url("before")
                    live = [p for p in live if p["create_at"] < anchor["create_at"]]
                live.sort(key=lambda p: p["create_at"], reverse=True)
                chosen = live[page * per_page : (page + 1) * per_page]
        order = [p["id"] for p in chosen]
        listing: JSON = {
            "order": order,
            "posts": {p["id"]: self._client_post(p) for p in chosen},
            "next_post_id": "",
            "prev_post_id": "",
            "first_inaccessible_post_time": 0,
        }
        if since <= 0:
            listing["next_post_id"], listing["prev_post_id"] = self._cursor_ids(
                channel["id"], chosen, before, after, page, per_page
            )
        return 200, listing

    def _cursor_ids(
        self, channel_id: str, chosen: list[JSON], before: str, after: str, page: int, per_page: int
    ) -> tuple[str, str]:
        """AddCursorIdsForPostList."""
        next_id: str | None = None
        prev_id: str | None = None
        if after:
            if page == 0:
                prev_id = after
            if len(chosen) < per_page:
                next_id = ""
        elif before:
            if page == 0:
                next_id = before
            if len(chosen) < per_page:
                prev_id = ""
        live = sorted(
            (
                self._posts[i]
                for i in self._channel_posts[channel_id]
                if not self._posts[i]["delete_at"]
            ),
            key=lambda p: p["create_at"],
        )
        if next_id is None:
            next_id = ""
            if chosen:
                newest = chosen[0]["create_at"]
                next_id = next((p["id"] for p in live if p["create_at"] > newest), "")
        if prev_id is None:
            prev_id = ""
            if chosen:
                oldest = chosen[-1]["create_at"]
                prev_id = next((p["id"] for p in reversed(live) if p["create_at"] < oldest), "")
        return next_id, prev_id

    async def _create_post_api(self, ctx: _Ctx) -> tuple[int, Any]:
        body = ctx.object_body("post")
        channel_id = body.get("channel_id")
        channel = self._channels.get(channel_id) if isinstance(channel_id, str) else None
        if channel is None:
            raise _permission_error()
        self._check_can_post(ctx.user["id"], channel)
        post_type = str(body.get("type") or "")
        if post_type.startswith("system_"):
            raise AppError(
                400, "api.context.invalid_param.app_error", "Invalid post.type parameter."
            )
        pending_post_id = str(body.get("pending_post_id") or "")
        if pending_post_id:
            found = self._dedup_pending(pending_post_id, ctx.user)
            if found is not None:
                return 201, self._client_post(found)
        try:
            post = self._save_post(
                ctx.user["id"],
                channel,
                str(body.get("message") or ""),
                props=body.get("props"),
                root_id=str(body.get("root_id") or ""),
                file_ids=[str(f) for f in body.get("file_ids") or []],
                pending_post_id=pending_post_id,
                post_type=post_type,
            )
        except AppError:
            self._pending_post_ids.pop(pending_post_id, None)
            raise
        if pending_post_id:
            self._pending_post_ids[pending_post_id] = (
                post["id"],
                time.monotonic() + self.PENDING_POST_ID_TTL_S,
            )
        set_online = ctx.query.get("set_online", "true").lower() not in ("false", "0")
        await self._after_post(post, channel, trigger_webhooks=True, set_online=set_online)
        return 201, self._client_post(post)

    def _dedup_pending(self, pending_post_id: str, user: JSON) -> JSON | None:
        entry = self._pending_post_ids.get(pending_post_id)
        if entry is None or entry[1] < time.monotonic():
            # Seen now: a concurrent retry until this create finishes gets the "pending" error.
            self._pending_post_ids[pending_post_id] = (
                "",
                time.monotonic() + self.PENDING_POST_ID_TTL_S,
            )
            return None
        post_id = entry[0]
        if not post_id:
            raise AppError(
                500,
                "api.post.deduplicate_create_post.pending",
                "Rejected post since another client is making the same request.",
            )
        post = self._posts.get(post_id)
        if post is None or not self._can_read(user, self._channels[post["channel_id"]]):
            return None
        return post

    async def _get_post_api(self, ctx: _Ctx) -> tuple[int, Any]:
        post = self._require_post(self._check_id(ctx.params["post_id"], "post_id"))
        if not self._can_read(ctx.user, self._channels[post["channel_id"]]):
            raise _permission_error()
        return 200, self._client_post(post)

    async def _patch_post_api(self, ctx: _Ctx) -> tuple[int, Any]:
        post = self._require_post(self._check_id(ctx.params["post_id"], "post_id"))
        patch = ctx.object_body("post")
        if post["user_id"] != ctx.user["id"] and not self._is_admin(ctx.user):
            raise _permission_error()
        if post["type"].startswith("system_"):
            raise AppError(
                400,
                "api.post.update_post.system_message.app_error",
                "Unable to update system message.",
            )
        message = patch["message"] if isinstance(patch.get("message"), str) else post["message"]
        props = patch["props"] if isinstance(patch.get("props"), dict) else post["props"]
        if isinstance(patch.get("is_pinned"), bool):
            post["is_pinned"] = patch["is_pinned"]
        self._update_post(post, message, props)
        await self._publish_edited(post)
        return 200, self._client_post(post)

    async def _get_file_link(self, ctx: _Ctx) -> tuple[int, Any]:
        if not self.public_links:
            raise AppError(
                501,
                "api.file.get_public_link.disabled.app_error",
                "Public links have been disabled.",
            )
        file_id = self._check_id(ctx.params["file_id"], "file_id")
        stored = self._files.get(file_id)
        if stored is None:
            raise AppError(404, "app.file_info.get.app_error", "Unable to get the file info.")
        if not stored.info["post_id"]:
            raise AppError(
                400,
                "api.file.get_public_link.no_post.app_error",
                "Unable to get public link for file. File must be attached to a post that can "
                "be read by the current user.",
            )
        if not self._can_read(ctx.user, self._channels[stored.info["channel_id"]]):
            raise _permission_error()
        return 200, {"link": f"{self.base_url}/files/{file_id}/public?h={self._file_hash(file_id)}"}

    def _file_hash(self, file_id: str) -> str:
        digest = hashlib.sha256(f"{file_id}:fake-public-link-salt".encode()).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    async def _public_file(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        stored = self._files.get(file_id)
        if stored is None or not self.public_links:
            return self._error_response(
                AppError(
                    404,
                    "api.file.get_file.public_disabled.app_error",
                    "Public links have been disabled.",
                )
            )
        if request.query_params.get("h") != self._file_hash(file_id):
            return self._error_response(
                AppError(
                    400,
                    "api.file.get_file.public_invalid.app_error",
                    "The public link does not appear to be valid.",
                )
            )
        return Response(stored.content, media_type=stored.info["mime_type"])

    async def _create_command_api(self, ctx: _Ctx) -> tuple[int, Any]:
        command = self._create_command(ctx.object_body("command"), ctx.user["id"])
        return 201, copy.deepcopy(command)

    async def _create_outgoing_hook_api(self, ctx: _Ctx) -> tuple[int, Any]:
        hook = self._create_outgoing_hook(ctx.object_body("outgoing_webhook"), ctx.user["id"])
        return 201, copy.deepcopy(hook)

    async def _get_config(self, ctx: _Ctx) -> tuple[int, Any]:
        config = copy.deepcopy(self.config)
        config.setdefault("ServiceSettings", {})["SiteURL"] = self.base_url
        config.setdefault("FileSettings", {})["EnablePublicLink"] = self.public_links
        return 200, config

    async def _get_team_member(self, ctx: _Ctx) -> tuple[int, Any]:
        team_id = self._check_id(ctx.params["team_id"], "team_id")
        user_id = self._check_id(ctx.params["user_id"], "user_id")
        if not (self._is_admin(ctx.user) or self._is_team_member(ctx.user["id"], team_id)):
            raise _permission_error()
        member = self._team_members.get(team_id, {}).get(user_id)
        if member is None:
            raise AppError(
                404,
                "app.team.get_member.missing.app_error",
                "No team member found for that user ID and team ID.",
            )
        return 200, dict(member)

    async def _get_member(self, ctx: _Ctx) -> tuple[int, Any]:
        channel = self._require_channel(self._check_id(ctx.params["channel_id"], "channel_id"))
        user_id = self._check_id(ctx.params["user_id"], "user_id")
        if not self._can_read(ctx.user, channel):
            raise _permission_error()
        member = self._channel_members[channel["id"]].get(user_id)
        if member is None:
            raise AppError(
                404,
                "app.channel.get_member.missing.app_error",
                "No channel member found for that user ID and channel ID.",
            )
        return 200, dict(member)

    async def _restore_channel(self, ctx: _Ctx) -> tuple[int, Any]:
        channel = self._require_channel(self._check_id(ctx.params["channel_id"], "channel_id"))
        if not channel["delete_at"]:
            raise AppError(
                400,
                "api.channel.restore_channel.restored.app_error",
                "Unable to unarchive channel. The channel is not archived.",
            )
        channel["delete_at"] = 0
        channel["update_at"] = self._millis()
        return 200, copy.deepcopy(channel)

    def _bot_for(self, ctx: _Ctx) -> JSON:
        bot = self._bots.get(self._check_id(ctx.params["bot_id"], "bot_id"))
        include_deleted = ctx.query.get("include_deleted", "").lower() == "true"
        if bot is None or (bot["delete_at"] and not include_deleted):
            raise AppError(404, "store.sql_bot.get.missing.app_error", "Bot not found.")
        return bot

    async def _get_bot_api(self, ctx: _Ctx) -> tuple[int, Any]:
        return 200, dict(self._bot_for(ctx))

    async def _enable_bot_api(self, ctx: _Ctx) -> tuple[int, Any]:
        ctx.query["include_deleted"] = "true"
        bot = self._bot_for(ctx)
        bot["delete_at"] = 0
        bot["update_at"] = self._millis()
        self._users[bot["user_id"]]["delete_at"] = 0
        return 200, dict(bot)

    async def _get_tokens_api(self, ctx: _Ctx) -> tuple[int, Any]:
        user_id = self._check_id(ctx.params["user_id"], "user_id")
        self._require_user(user_id)
        page = _int_param(ctx.query, "page", 0)
        per_page = min(_int_param(ctx.query, "per_page", 60), 200)
        # The token itself is shown once, when it is made; listings leave it out.
        tokens = [
            {k: v for k, v in r.items() if k != "token"}
            for r in self._token_records.values()
            if r["user_id"] == user_id
        ]
        return 200, tokens[page * per_page : (page + 1) * per_page]

    async def _list_commands_api(self, ctx: _Ctx) -> tuple[int, Any]:
        team_id = ctx.query.get("team_id", "")
        if team_id not in self._teams:
            raise _invalid_url("team_id")
        commands = [
            copy.deepcopy(c)
            for c in self._commands.values()
            if c["team_id"] == team_id and not c["delete_at"]
        ]
        return 200, commands

    async def _update_command_api(self, ctx: _Ctx) -> tuple[int, Any]:
        command_id = self._check_id(ctx.params["command_id"], "command_id")
        command = self._commands.get(command_id)
        if command is None or command["delete_at"]:
            raise AppError(404, "app.command.getcommand.app_error", "Unable to get the command.")
        body = ctx.object_body("command")
        if body.get("team_id", command["team_id"]) != command["team_id"]:
            raise AppError(
                400,
                "api.command.team_mismatch.app_error",
                "Unable to update commands across teams.",
            )
        updated = {**command, **{k: v for k, v in body.items() if k in command}}
        for key in ("id", "token", "create_at", "creator_id", "team_id", "delete_at", "plugin_id"):
            updated[key] = command[key]
        del self._commands[command_id]
        try:
            checked = self._create_command(updated, command["creator_id"])
        finally:
            self._commands[command_id] = command
        del self._commands[checked["id"]]
        for key in ("id", "token", "create_at"):
            checked[key] = command[key]
        self._commands[command_id] = checked
        return 200, copy.deepcopy(checked)


def _parse_json(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _attachments_differ(old: Any, new: Any) -> bool:
    return json.dumps(old, sort_keys=True) != json.dumps(new, sort_keys=True)


def form_fields(raw: bytes | str) -> dict[str, str]:
    """Decode a form body the fake sent (slash commands, form-encoded outgoing webhooks)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    return dict(parse_qsl(text, keep_blank_values=True))
