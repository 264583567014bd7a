"""Mattermost's REST API v4 through the official-community `mattermostdriver`, as the bot account.

Synchronous (the driver uses `requests`): the Celery worker calls it directly, the web app
through `asyncio.to_thread`. Errors come out as `StaffToolError`, with `retryable` set for what
a retry can fix (network, 5xx, rate limits), so callers decide without knowing the driver.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from mattermostdriver import Driver
from mattermostdriver import exceptions as mm_errors

from core.settings import Settings

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "case-"


class StaffToolError(Exception):
    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def gateway_for(settings: Settings) -> MattermostGateway | None:
    """The gateway the settings describe, or None when Mattermost is not configured."""
    if not (settings.mattermost_url and settings.mattermost_bot_token):
        return None
    return MattermostGateway(
        url=settings.mattermost_url,
        token=settings.mattermost_bot_token.get_secret_value(),
        team=settings.mattermost_team,
        oncall_channel=settings.mattermost_oncall_channel,
        supervisor_channel=settings.mattermost_supervisor_channel,
    )


def driver_options(url: str, token: str, *, timeout_s: float = 10.0) -> dict[str, Any]:
    """mattermostdriver wants scheme, host and port apart; clinics configure one URL, such as
    http://mattermost:8065 or https://chat.clinic.example/mm (a path is kept)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            "MATTERMOST_URL must be Mattermost's address with its scheme, e.g. "
            f"http://mattermost:8065 or https://chat.clinic.example (got {url!r})."
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"MATTERMOST_URL has an invalid port: {url!r}.") from None
    return {
        "url": parts.hostname,
        "scheme": parts.scheme,
        "port": port,
        "basepath": parts.path.rstrip("/") + "/api/v4",
        "token": token,
        "verify": True,
        # The HTTP timeout; the driver's `timeout` is the websocket's heartbeat interval.
        "request_timeout": timeout_s,
        "timeout": 30,
        "keepalive": False,
    }


def case_channel_name(case_id: str) -> str:
    # Names and display names are visible to everyone on the team: the case id only.
    return f"{CHANNEL_PREFIX}{case_id[:20]}"


@dataclass(frozen=True)
class StaffUser:
    id: str
    username: str
    first_name: str
    last_name: str
    position: str


class MattermostGateway:
    def __init__(
        self,
        *,
        url: str,
        token: str,
        team: str,
        oncall_channel: str,
        supervisor_channel: str,
        timeout_s: float = 10.0,
    ) -> None:
        self.driver = Driver(driver_options(url, token, timeout_s=timeout_s))
        # The driver's own copy, with its defaults filled in: its websocket class reads them.
        self.options: dict[str, Any] = self.driver.options
        # What driver.login() would do for a token, without its request: the first real call
        # reports a bad token, and a Mattermost that is down at start-up stops nothing.
        self.driver.client.token = token
        self._team_name = team
        self._oncall_name = oncall_channel
        self._supervisor_name = supervisor_channel
        self._lock = threading.Lock()
        self._cache: dict[str, str] = {}
        self._users: dict[str, tuple[float, StaffUser]] = {}

    # -- ids that do not change ------------------------------------------------------------

    def bot_user_id(self) -> str:
        return self._cached("bot", lambda: self._call(self.driver.users.get_user, "me")["id"])

    def team_id(self) -> str:
        return self._cached(
            "team", lambda: self._call(self.driver.teams.get_team_by_name, self._team_name)["id"]
        )

    def oncall_channel_id(self) -> str:
        return self._channel_id(self._oncall_name)

    def supervisor_channel_id(self) -> str:
        return self._channel_id(self._supervisor_name)

    def _channel_id(self, name: str) -> str:
        return self._cached(
            f"channel:{name}",
            lambda: self._call(self.driver.channels.get_channel_by_name, self.team_id(), name)[
                "id"
            ],
        )

    # -- case channels ---------------------------------------------------------------------

    def open_case_channel(self, case_id: str, *, display_name: str, purpose: str) -> str:
        """The case's private channel, created once: a retried task finds it by name."""
        name = case_channel_name(case_id)
        try:
            channel = self._call(
                self.driver.channels.create_channel,
                {
                    "team_id": self.team_id(),
                    "name": name,
                    "display_name": display_name,
                    "purpose": purpose,
                    "type": "P",
                },
            )
        except StaffToolError as exc:
            if exc.retryable:
                raise
            channel = self._call(self.driver.channels.get_channel_by_name, self.team_id(), name)
        return str(channel["id"])

    def members(self, channel_id: str) -> list[str]:
        rows = self._call(
            self.driver.channels.get_channel_members, channel_id, params={"per_page": 200}
        )
        bot = self.bot_user_id()
        return [str(r["user_id"]) for r in rows if r.get("user_id") != bot]

    def add_members(self, channel_id: str, user_ids: list[str]) -> None:
        for user_id in user_ids:
            try:
                self._call(self.driver.channels.add_user, channel_id, options={"user_id": user_id})
            except StaffToolError as exc:
                if exc.retryable:
                    raise
                # A deactivated user or one no longer on the team: the others still get it.
                log.warning("could not add a staff member to a case channel")

    def statuses(self, user_ids: list[str]) -> dict[str, str]:
        if not user_ids:
            return {}
        rows = self._call(self.driver.status.get_user_statuses_by_id, options=user_ids)
        return {str(r["user_id"]): str(r.get("status", "offline")) for r in rows}

    def usernames(self, user_ids: list[str]) -> dict[str, str]:
        if not user_ids:
            return {}
        rows = self._call(self.driver.users.get_users_by_ids, options=user_ids)
        return {str(r["id"]): str(r["username"]) for r in rows}

    def user(self, user_id: str, *, max_age_s: float = 300.0) -> StaffUser:
        cached = self._users.get(user_id)
        if cached and time.monotonic() - cached[0] < max_age_s:
            return cached[1]
        row = self._call(self.driver.users.get_user, user_id)
        user = StaffUser(
            id=str(row["id"]),
            username=str(row.get("username", "")),
            first_name=str(row.get("first_name", "")),
            last_name=str(row.get("last_name", "")),
            position=str(row.get("position", "")),
        )
        self._users[user_id] = (time.monotonic(), user)
        return user

    # -- posts -----------------------------------------------------------------------------

    def post(
        self,
        channel_id: str,
        message: str,
        *,
        props: dict[str, Any] | None = None,
        root_id: str | None = None,
        dedupe_key: str | None = None,
    ) -> str:
        body: dict[str, Any] = {"channel_id": channel_id, "message": message}
        if props:
            body["props"] = props
        if root_id:
            body["root_id"] = root_id
        if dedupe_key:
            # Mattermost answers a repeated create with the same pending_post_id with the
            # first post instead of a second one, which makes a retried relay harmless.
            body["pending_post_id"] = f"{self.bot_user_id()}:{dedupe_key}"
        return str(self._call(self.driver.posts.create_post, body)["id"])

    def patch(self, post_id: str, *, message: str, props: dict[str, Any]) -> None:
        self._call(self.driver.posts.patch_post, post_id, {"message": message, "props": props})

    def posts_since(self, channel_id: str, since_ms: int) -> list[dict[str, Any]]:
        listing = self._call(
            self.driver.posts.get_posts_for_channel, channel_id, params={"since": since_ms}
        )
        posts = listing.get("posts") or {}
        return sorted(posts.values(), key=lambda p: int(p.get("create_at", 0)))

    def file_link(self, file_id: str) -> str | None:
        try:
            return str(self._call(self.driver.files.get_public_file_link, file_id)["link"])
        except StaffToolError as exc:
            if exc.retryable:
                raise
            # Public links are off on this server: staff are told the file did not go.
            return None

    # -- plumbing --------------------------------------------------------------------------

    def _cached(self, key: str, load: Any) -> str:
        with self._lock:
            value = self._cache.get(key)
        if value is None:
            value = str(load())
            with self._lock:
                self._cache[key] = value
        return value

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (
            mm_errors.InvalidOrMissingParameters,
            mm_errors.NoAccessTokenProvided,
            mm_errors.NotEnoughPermissions,
            mm_errors.ResourceNotFound,
            mm_errors.MethodNotAllowed,
            mm_errors.ContentTooLarge,
            mm_errors.FeatureDisabled,
        ) as exc:
            raise StaffToolError(f"{type(exc).__name__}: {exc}", retryable=False) from None
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            retryable = status >= 500 or status == 429
            raise StaffToolError(f"HTTP {status}", retryable=retryable) from None
        except requests.RequestException as exc:
            raise StaffToolError(f"{type(exc).__name__}", retryable=True) from None
