"""Staff posts in Mattermost case channels, turned into replies to patients.

The web app listens on Mattermost's websocket (mattermostdriver's `Websocket`, with our own
reconnect loop: exponential backoff with jitter, and after every reconnect a catch-up through
REST of the posts made while it was away). An outgoing webhook may deliver the same posts too.
Every path ends in `StaffPosts.handle`, which is idempotent on the post id: a post seen twice
(a duplicate event, the catch-up, the webhook, a second web process) reaches the patient once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from mattermostdriver.websocket import Websocket

from core import metrics
from escalation.cases import CaseError, CaseService, Staff, shown_as
from escalation.mattermost import MattermostGateway, StaffToolError

log = logging.getLogger(__name__)

NOTE_PREFIX = "//"
# After a restart, posts this recent are checked once (a staff reply made while we were down).
FIRST_CATCH_UP_S = 600


class StaffDirectory:
    """Who a Mattermost user is, for the audit log and for the patient."""

    def __init__(self, gateway: MattermostGateway, *, policy: str, clinic_name: str) -> None:
        self._gateway = gateway
        self._policy = policy
        self._clinic = clinic_name

    async def staff(self, user_id: str) -> Staff:
        user = await asyncio.to_thread(self._gateway.user, user_id)
        full = " ".join(p for p in (user.first_name, user.last_name) if p) or user.username
        return Staff(
            id=f"mattermost:{user.id}",
            name=f"{full} (@{user.username})",
            shown_as=shown_as(
                self._policy,
                first_name=user.first_name or user.username,
                role=user.position,
                clinic=self._clinic,
            ),
        )


class StaffPosts:
    def __init__(
        self, gateway: MattermostGateway, cases: CaseService, directory: StaffDirectory
    ) -> None:
        self._gateway = gateway
        self._cases = cases
        self._directory = directory
        self.last_seen_ms = 0
        # Posts already handled by this process: a duplicate event or the catch-up after a
        # reconnect skips them without a database round trip (the database still decides).
        self._recent: OrderedDict[str, None] = OrderedDict()

    async def handle(self, post: dict[str, Any]) -> str:
        """One post from a case channel. Returns what was done (for logs and tests)."""
        post_id = str(post.get("id", ""))
        if post_id in self._recent:
            return "duplicate"
        result = await self._handle(post)
        # Only once handled: a post that failed half-way is tried again by the catch-up.
        if post_id:
            self._recent[post_id] = None
            if len(self._recent) > 10_000:
                self._recent.popitem(last=False)
        return result

    async def _handle(self, post: dict[str, Any]) -> str:
        post_id, user_id = str(post.get("id", "")), str(post.get("user_id", ""))
        channel_id, message = str(post.get("channel_id", "")), str(post.get("message", ""))
        self.last_seen_ms = max(self.last_seen_ms, int(post.get("create_at") or 0))
        if not post_id or not user_id or not channel_id:
            return "ignored:malformed"
        if post.get("type"):
            return "ignored:system"  # joins, header changes...
        if user_id == await asyncio.to_thread(self._gateway.bot_user_id):
            return "ignored:own"
        if message.lstrip().startswith(NOTE_PREFIX):
            return "ignored:note"
        case = await self._cases.by_staff_channel(channel_id)
        if case is None:
            return "ignored:not_a_case"
        staff = await self._directory.staff(user_id)
        links = await self._links(post)
        try:
            outcome = await self._cases.reply(case.id, staff, message, post_id=post_id, links=links)
        except CaseError as exc:
            await self._notice(channel_id, post_id, exc.message)
            return f"refused:{exc.code}"
        return outcome.delivery

    async def _links(self, post: dict[str, Any]) -> list[str]:
        file_ids = [str(f) for f in post.get("file_ids") or []]
        links = []
        for file_id in file_ids:
            link = await asyncio.to_thread(self._gateway.file_link, file_id)
            if link:
                links.append(link)
        if len(links) < len(file_ids):
            await self._notice(
                str(post.get("channel_id")),
                str(post.get("id")),
                "A file could not be shared with the patient: public file links are off on "
                "this Mattermost server.",
            )
        return links

    async def _notice(self, channel_id: str, post_id: str, text: str) -> None:
        try:
            await asyncio.to_thread(
                self._gateway.post, channel_id, f":warning: {text}", root_id=post_id
            )
        except StaffToolError:
            log.warning("could not post a notice in a case channel")

    async def catch_up(self, since_ms: int) -> int:
        """Handle the posts of active case channels made since `since_ms` (after a reconnect)."""
        handled = 0
        for case in await self._cases.list_cases(active_only=True):
            if not case.staff_channel_id:
                continue
            try:
                posts = await asyncio.to_thread(
                    self._gateway.posts_since, case.staff_channel_id, since_ms
                )
            except StaffToolError:
                log.warning("catch-up failed for a case channel")
                continue
            for post in posts:
                await self.handle(post)
                handled += 1
        return handled


class _Socket(Websocket):  # type: ignore[misc]
    """mattermostdriver's websocket protocol (authentication challenge, event loop, pings),
    with our reconnect loop around it instead of its fixed-delay one."""

    async def session(self, url: str, handler: Callable[[str], Awaitable[None]]) -> None:
        import websockets

        # connect() sets this before its loop; the driver's read loop runs while it holds.
        self._alive = True
        async with websockets.connect(url, open_timeout=10) as websocket:
            await self._authenticate_websocket(websocket, handler)
            await self._start_loop(websocket, handler)


class StaffListener:
    def __init__(
        self,
        gateway: MattermostGateway,
        posts: StaffPosts,
        *,
        max_backoff_s: float = 30.0,
        first_backoff_s: float = 0.5,
    ) -> None:
        self._gateway = gateway
        self._posts = posts
        self._max_backoff_s = max_backoff_s
        self._first_backoff_s = first_backoff_s
        self._stopping = False
        self._socket: _Socket | None = None
        self.connections = 0
        self.connected = asyncio.Event()

    def url(self) -> str:
        options = self._gateway.options
        scheme = "wss" if options["scheme"] == "https" else "ws"
        return f"{scheme}://{options['url']}:{options['port']}{options['basepath']}/websocket"

    async def run(self) -> None:
        backoff = self._first_backoff_s
        while not self._stopping:
            socket = self._socket = _Socket(self._gateway.options, self._gateway.options["token"])
            started = time.monotonic()
            try:
                await socket.session(self.url(), self._on_message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("Mattermost websocket closed", extra={"error": type(exc).__name__})
                metrics.count_dependency_failure("mattermost", "reconnect")
            self.connected.clear()
            if self._stopping:
                return
            if time.monotonic() - started > 60:
                backoff = self._first_backoff_s  # it had been up a while: start over
            # Full jitter keeps several web processes from reconnecting in step.
            await asyncio.sleep(random.uniform(0, backoff))
            backoff = min(backoff * 2, self._max_backoff_s)

    def stop(self) -> None:
        self._stopping = True
        if self._socket is not None:
            self._socket.disconnect()

    async def _on_message(self, raw: str) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            log.warning("ignored a Mattermost websocket message that is not JSON")
            return
        if not isinstance(event, dict):
            return
        name = event.get("event")
        if name == "hello":
            self.connections += 1
            since = self._posts.last_seen_ms or int((time.time() - FIRST_CATCH_UP_S) * 1000)
            # In the background: the event loop must keep reading while REST calls run.
            asyncio.get_running_loop().create_task(self._catch_up(since))
        elif name == "posted":
            data = event.get("data") or {}
            try:
                post = json.loads(data.get("post") or "{}")
            except (TypeError, ValueError):
                log.warning("ignored a posted event without a readable post")
                return
            if isinstance(post, dict):
                try:
                    await self._posts.handle(post)
                except Exception:
                    # One bad post must not take the listener down; the catch-up retries it.
                    log.exception("could not relay a staff post")

    async def _catch_up(self, since_ms: int) -> None:
        try:
            handled = await self._posts.catch_up(max(0, since_ms - 1000))
            if handled:
                log.info("caught up on staff posts", extra={"posts": handled})
        except Exception:
            log.exception("catch-up of staff posts failed")
        finally:
            self.connected.set()
