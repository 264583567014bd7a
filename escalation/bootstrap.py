"""Set up a Mattermost server for staff escalation: `python -m escalation.bootstrap`.

Run once by the clinic's IT with a system admin's personal access token, against the compose
Mattermost or their own. It creates (or finds) the team, the private channels `on-call` (whose
members are the on-call roster the app reads) and `supervisors` (told about cases nobody
claimed), puts the named staff in them, creates the bot account `clinic-assistant` with a token,
adds the bot to the team and both channels, and registers the `/case` slash command. It then
prints the lines for `.env` (on stdout; progress goes to stderr). Running it again changes only
what is missing: nothing is created twice. See docs/MATTERMOST.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

import requests
from mattermostdriver import Driver  # type: ignore[import-untyped, unused-ignore]
from mattermostdriver.endpoints.bots import Bots  # type: ignore[import-untyped, unused-ignore]
from mattermostdriver.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    FeatureDisabled,
    NoAccessTokenProvided,
    NotEnoughPermissions,
    ResourceNotFound,
)

from escalation import mattermost

ONCALL_CHANNEL = "on-call"
SUPERVISOR_CHANNEL = "supervisors"
BOT_USERNAME = "clinic-assistant"
COMMAND_TRIGGER = "case"
COMMAND_PATH = "/escalation/mattermost/command"
COMMAND_HINT = "claim | resolve | handback | reply TEXT | status"
BOT_ACCESS_LABEL = "clinic assistant: staff escalation (escalation.bootstrap)"
EXIT_ACTION_NEEDED = 2

ADMIN_ACCESS_HELP = (
    "The bootstrap needs a system admin's personal access token (System Console → "
    "Integrations → Integration Management → Enable Personal Access Tokens; then, signed in as "
    "a system admin, Profile → Security → Personal Access Tokens → Create Token), passed as "
    "--admin-token or MATTERMOST_ADMIN_TOKEN."
)
BOT_CREATION_HELP = (
    "Bot account creation is disabled on this Mattermost. Enable it in System Console → "
    "Integrations → Bot Accounts → Enable Bot Account Creation (or set "
    "MM_SERVICESETTINGS_ENABLEBOTACCOUNTCREATION=true for the Mattermost server), then run "
    "the bootstrap again."
)
BOT_ACCESS_HELP = (
    "Mattermost refused to create a token for the bot: personal access tokens are disabled. "
    "Enable them in System Console → Integrations → Integration Management → Enable Personal "
    "Access Tokens (or MM_SERVICESETTINGS_ENABLEUSERACCESSTOKENS=true), then run the bootstrap "
    "again."
)
COMMANDS_HELP = (
    "Mattermost refused to register the /case slash command: custom slash commands are "
    "disabled. Enable them in System Console → Integrations → Integration Management → Enable "
    "Custom Slash Commands (or MM_SERVICESETTINGS_ENABLECOMMANDS=true), then run the bootstrap "
    "again."
)

# Team names: lower-case letters, digits and hyphens, starting with a letter (Mattermost's rule
# is a little looser; this keeps the URL and the setting simple).
TEAM_NAME = re.compile(r"^[a-z][a-z0-9-]{1,63}$")
# Mattermost's own limit for usernames.
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class BootstrapError(Exception):
    """Something the person running the bootstrap must fix; the message says what and how."""


@dataclass(frozen=True)
class Options:
    url: str
    admin_token: str
    team: str
    public_base_url: str
    on_call: tuple[str, ...]
    supervisors: tuple[str, ...]
    bot_username: str
    new_token: bool


@dataclass(frozen=True)
class Result:
    """What the app needs in `.env`; `bot_token` is None when the bot already had one."""

    url: str
    team: str
    bot_token: str | None
    slash_token: str
    created: tuple[str, ...]

    def env_lines(self) -> list[str]:
        if self.bot_token:
            bot = f"MATTERMOST_BOT_TOKEN={self.bot_token}"
        else:
            bot = "# MATTERMOST_BOT_TOKEN=  (unchanged: keep the token you saved the first time)"
        return [
            f"MATTERMOST_URL={self.url}",
            bot,
            f"MATTERMOST_TEAM={self.team}",
            f"MATTERMOST_ONCALL_CHANNEL={ONCALL_CHANNEL}",
            f"MATTERMOST_SUPERVISOR_CHANNEL={SUPERVISOR_CHANNEL}",
            f"MATTERMOST_SLASH_TOKEN={self.slash_token}",
        ]


def driver_options(url: str, token: str) -> dict[str, Any]:
    """mattermostdriver's connection options from a URL like http://mattermost:8065."""
    try:
        return mattermost.driver_options(url, token, timeout_s=30)
    except ValueError as exc:
        raise BootstrapError(str(exc).replace("MATTERMOST_URL", "--url (MATTERMOST_URL)")) from None


class Bootstrap:
    """The setup steps, each one finding what exists before creating anything."""

    def __init__(self, options: Options, *, out: TextIO) -> None:
        self.options = options
        self.out = out
        self.created: list[str] = []
        # What is being done, for an error message that says where it stopped.
        self.step = "signing in"
        self.driver = Driver(driver_options(options.url, options.admin_token))
        self.client: Any = self.driver.client
        # mattermostdriver 7.3.2 builds the bots endpoint but has no property for it.
        self.bots: Any = Bots(self.client)

    def say(self, line: str) -> None:
        print(line, file=self.out)

    def made(self, what: str) -> None:
        self.created.append(what)
        self.say(f"  created {what}")

    # --- steps ---------------------------------------------------------------------------

    def run(self) -> Result:
        admin = self.sign_in()
        self.check_server_settings()
        staff = self.find_staff()
        team = self.ensure_team()
        oncall, oncall_new = self.ensure_channel(
            team,
            ONCALL_CHANNEL,
            "On call",
            "Members of this channel are the on-call roster: they are told about every new case.",
        )
        supervisors, supervisors_new = self.ensure_channel(
            team,
            SUPERVISOR_CHANNEL,
            "Supervisors",
            "Told about cases that nobody claimed in time.",
        )
        for username in self.options.on_call:
            self.ensure_member(team, oncall, staff[username])
        for username in self.options.supervisors:
            self.ensure_member(team, supervisors, staff[username])

        bot = self.ensure_bot()
        for channel in (oncall, supervisors):
            self.ensure_member(team, channel, bot)
        # The admin who creates a private channel becomes its first member. The roster is the
        # on-call channel's membership, so take them out again unless they were named; only the
        # channels made just now, so a later run never undoes what the clinic chose.
        for channel, new, named in (
            (oncall, oncall_new, self.options.on_call),
            (supervisors, supervisors_new, self.options.supervisors),
        ):
            if new and admin["username"] not in named:
                self.remove_member(channel, admin)

        slash_token = self.ensure_command(team)
        # Last: a token is shown only once, so nothing after it may fail and lose it.
        bot_token = self.ensure_bot_token(bot)
        return Result(
            url=self.options.url.rstrip("/"),
            team=team["name"],
            bot_token=bot_token,
            slash_token=slash_token,
            created=tuple(self.created),
        )

    def sign_in(self) -> dict[str, Any]:
        try:
            me: dict[str, Any] = self.driver.login()
        except NoAccessTokenProvided as exc:
            raise BootstrapError(
                f"Mattermost did not accept the admin token. {ADMIN_ACCESS_HELP}"
            ) from exc
        except requests.ConnectionError as exc:
            raise BootstrapError(
                f"Cannot reach Mattermost at {self.options.url}: is it running, and is the address "
                f"right from where this runs? (with compose, from inside: http://mattermost:8065)"
            ) from exc
        roles = str(me.get("roles", "")).split()
        if "system_admin" not in roles:
            raise BootstrapError(
                f"The token belongs to {me.get('username')!r}, who is not a system admin. "
                f"{ADMIN_ACCESS_HELP}"
            )
        self.say(f"Signed in to {self.options.url} as {me.get('username')} (system admin).")
        return me

    def check_server_settings(self) -> None:
        """Warn about server settings that would stop the integration at run time."""
        self.step = "reading the server's settings"
        try:
            config: dict[str, Any] = self.client.get("/config")
        except requests.HTTPError:
            self.say("  (could not read the server's settings; skipping that check)")
            return
        if not isinstance(config, dict):
            return
        service = config.get("ServiceSettings") or {}
        if service.get("EnableCommands") is False:
            self.say(f"  warning: {COMMANDS_HELP}")
        host = urlsplit(self.options.public_base_url).hostname or ""
        allowed = re.split(r"[\s,]+", str(service.get("AllowedUntrustedInternalConnections") or ""))
        if looks_internal(host) and host not in allowed:
            self.say(
                f"  warning: {host!r} looks like an internal address. Mattermost refuses to call "
                f"internal addresses for slash commands and buttons unless they are listed in "
                f"System Console → Environment → Developer → Allow untrusted internal "
                f"connections to (MM_SERVICESETTINGS_ALLOWEDUNTRUSTEDINTERNALCONNECTIONS); add "
                f"{host!r} there."
            )

    def find_staff(self) -> dict[str, dict[str, Any]]:
        self.step = "looking up the staff accounts"
        wanted = dict.fromkeys((*self.options.on_call, *self.options.supervisors))
        found: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        inactive: list[str] = []
        for username in wanted:
            user = self.find_user(username)
            if user is None:
                missing.append(username)
            elif user.get("delete_at"):
                inactive.append(username)
            else:
                found[username] = user
        problems = []
        if missing:
            problems.append(
                f"no Mattermost account for {', '.join(missing)}: create the accounts (or have "
                f"those staff sign up) first"
            )
        if inactive:
            problems.append(f"{', '.join(inactive)} deactivated: reactivate them first")
        if problems:
            raise BootstrapError(
                "Cannot add the staff you named: " + "; ".join(problems) + ". Then run the "
                "bootstrap again; nothing was changed."
            )
        return found

    def ensure_team(self) -> dict[str, Any]:
        name = self.options.team
        self.step = f"setting up the team {name}"
        try:
            team: dict[str, Any] = self.driver.teams.get_team_by_name(name)
        except ResourceNotFound:
            team = self.driver.teams.create_team(
                options={"name": name, "display_name": display_name(name), "type": "I"}
            )
            self.made(f"team {name}")
            return team
        if team.get("delete_at"):
            raise BootstrapError(
                f"The team {name!r} exists but is archived: restore it (System Console → User "
                f"Management → Teams) or choose another name with --team."
            )
        self.say(f"  team {name} exists")
        return team

    def ensure_channel(
        self, team: dict[str, Any], name: str, shown: str, purpose: str
    ) -> tuple[dict[str, Any], bool]:
        """The channel, and whether it was created just now."""
        self.step = f"setting up the channel {name}"
        try:
            channel: dict[str, Any] = self.client.get(
                f"/teams/{team['id']}/channels/name/{name}", params={"include_deleted": "true"}
            )
        except ResourceNotFound:
            channel = self.driver.channels.create_channel(
                options={
                    "team_id": team["id"],
                    "name": name,
                    "display_name": shown,
                    "purpose": purpose,
                    "type": "P",
                }
            )
            self.made(f"private channel {name}")
            return channel, True
        if channel.get("delete_at"):
            self.driver.channels.restore_channel(channel["id"])
            self.say(f"  channel {name} was archived: restored it")
        else:
            self.say(f"  channel {name} exists")
        if channel.get("type") != "P":
            self.say(
                f"  warning: channel {name} is public, so anyone in the team can join it"
                + (" and be paged for cases" if name == ONCALL_CHANNEL else "")
                + ". Convert it to a private channel in its channel settings."
            )
        return channel, False

    def ensure_member(
        self, team: dict[str, Any], channel: dict[str, Any], user: dict[str, Any]
    ) -> None:
        self.step = f"adding {user['username']} to the team and {channel['name']}"
        try:
            self.driver.teams.get_team_member(team["id"], user["id"])
        except ResourceNotFound:
            self.driver.teams.add_user_to_team(
                team["id"], options={"team_id": team["id"], "user_id": user["id"]}
            )
            self.made(f"team membership for {user['username']}")
        try:
            self.driver.channels.get_channel_member(channel["id"], user["id"])
        except ResourceNotFound:
            self.driver.channels.add_user(channel["id"], options={"user_id": user["id"]})
            self.made(f"{channel['name']} membership for {user['username']}")

    def remove_member(self, channel: dict[str, Any], user: dict[str, Any]) -> None:
        try:
            self.driver.channels.remove_channel_member(channel["id"], user["id"])
        except requests.HTTPError as exc:
            self.say(
                f"  note: could not take {user['username']} out of {channel['name']} ({exc}); "
                f"remove them there by hand unless they should be on the roster"
            )
            return
        self.say(f"  took {user['username']} (who ran this) out of {channel['name']}")

    def ensure_bot(self) -> dict[str, Any]:
        name = self.options.bot_username
        self.step = f"setting up the bot {name}"
        user = self.find_user(name)
        if user is not None and not user.get("is_bot"):
            raise BootstrapError(
                f"A user named {name!r} exists and is not a bot. Rename that account, or choose "
                f"another bot name with --bot-username."
            )
        if user is None:
            try:
                bot: dict[str, Any] = self.bots.create_bot(
                    options={
                        "username": name,
                        "display_name": "Clinic assistant",
                        "description": "Opens case channels for patients who need staff.",
                    }
                )
            except NotEnoughPermissions as exc:
                raise BootstrapError(f"{BOT_CREATION_HELP} (Mattermost said: {exc})") from exc
            self.made(f"bot account {name}")
            user = self.find_user(name)
            if user is None:  # pragma: no cover - the server just created it
                user = {"id": bot["user_id"], "username": name}
        else:
            bot = self.bots.get_bot(user["id"], params={"include_deleted": "true"})
            if bot.get("delete_at"):
                self.bots.enable_bot(user["id"])
                self.say(f"  bot {name} was disabled: enabled it")
            else:
                self.say(f"  bot {name} exists")
        return user

    def ensure_bot_token(self, bot: dict[str, Any]) -> str | None:
        self.step = f"making a token for {bot['username']}"
        tokens = self.client.get(f"/users/{bot['id']}/tokens", params={"per_page": 200})
        active = [token for token in tokens if token.get("is_active", True)]
        if active and not self.options.new_token:
            self.say(
                f"  the bot already has {len(active)} active token(s). Mattermost shows a token "
                f"only once, when it is made, so the existing one cannot be printed: keep the "
                f"MATTERMOST_BOT_TOKEN you saved, or run again with --new-token to make another "
                f"(then revoke the old one under System Console → Integrations → Bot Accounts)."
            )
            return None
        try:
            token: dict[str, Any] = self.driver.users.create_user_access_token(
                bot["id"], options={"description": BOT_ACCESS_LABEL}
            )
        except FeatureDisabled as exc:
            raise BootstrapError(BOT_ACCESS_HELP) from exc
        self.made(f"token for {bot['username']}")
        return str(token["token"])

    def ensure_command(self, team: dict[str, Any]) -> str:
        url = self.options.public_base_url.rstrip("/") + COMMAND_PATH
        self.step = f"registering the /{COMMAND_TRIGGER} slash command"
        wanted = {
            "trigger": COMMAND_TRIGGER,
            "method": "P",
            "url": url,
            "display_name": "Case",
            "description": "Work on the patient case of this channel",
            "auto_complete": True,
            "auto_complete_desc": "Claim, answer, hand back or resolve this channel's case",
            "auto_complete_hint": COMMAND_HINT,
        }
        commands = self.client.get(
            "/commands", params={"team_id": team["id"], "custom_only": "true"}
        )
        existing = next(
            (c for c in commands if c.get("trigger") == COMMAND_TRIGGER and not c.get("delete_at")),
            None,
        )
        try:
            if existing is None:
                created: dict[str, Any] = self.driver.commands.create_command(
                    options={"team_id": team["id"], **wanted}
                )
                self.made(f"slash command /{COMMAND_TRIGGER} → {url}")
                return str(created["token"])
            if any(existing.get(key) != value for key, value in wanted.items()):
                # mattermostdriver 7.3.2 builds "/commands<id>" here; call the route itself.
                updated: dict[str, Any] = self.client.put(
                    f"/commands/{existing['id']}", options={**existing, **wanted}
                )
                self.say(f"  slash command /{COMMAND_TRIGGER} updated → {url}")
                return str(updated.get("token") or existing["token"])
        except FeatureDisabled as exc:
            raise BootstrapError(COMMANDS_HELP) from exc
        self.say(f"  slash command /{COMMAND_TRIGGER} exists → {url}")
        return str(existing["token"])

    # --- helpers -------------------------------------------------------------------------

    def find_user(self, username: str) -> dict[str, Any] | None:
        try:
            user: dict[str, Any] = self.driver.users.get_user_by_username(username)
        except ResourceNotFound:
            return None
        return user


def display_name(name: str) -> str:
    return name.replace("-", " ").strip().capitalize() or name


def looks_internal(host: str) -> bool:
    """A host Mattermost treats as internal: a private, loopback or link-local address, or a
    name without a dot (a compose service such as `web`)."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." not in host or host.endswith((".local", ".internal", ".lan", ".localhost"))
    return address.is_private or address.is_loopback or address.is_link_local


def _names(values: Sequence[str] | None, env: str) -> tuple[str, ...]:
    """Usernames from the command line, else from a space- or comma-separated variable."""
    raw = list(values) if values else re.split(r"[\s,]+", os.environ.get(env, ""))
    names = [name.strip().lstrip("@").lower() for name in raw if name.strip()]
    return tuple(dict.fromkeys(names))


def parse_args(argv: Sequence[str] | None) -> Options:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="python -m escalation.bootstrap",
        description=(
            "Set up Mattermost for staff escalation: team, private channels on-call and "
            "supervisors, the clinic-assistant bot and its token, and the /case slash command. "
            "Safe to run again. Prints the lines for .env."
        ),
    )
    parser.add_argument(
        "--url",
        default=env("MATTERMOST_URL"),
        help="Mattermost's address as the app reaches it, e.g. http://mattermost:8065 "
        "(MATTERMOST_URL)",
    )
    parser.add_argument(
        "--admin-token",
        default=env("MATTERMOST_ADMIN_TOKEN"),
        help="a system admin's personal access token (MATTERMOST_ADMIN_TOKEN; the variable "
        "keeps it out of the shell history). Used only for this setup, never printed.",
    )
    parser.add_argument(
        "--team",
        default=env("MATTERMOST_TEAM") or "clinic",
        help="team name (MATTERMOST_TEAM, default clinic)",
    )
    parser.add_argument(
        "--public-base-url",
        default=env("PUBLIC_BASE_URL"),
        help="where Mattermost reaches this app, e.g. https://clinic.example.org or "
        "http://web:8000 inside compose (PUBLIC_BASE_URL)",
    )
    parser.add_argument(
        "--on-call",
        nargs="+",
        metavar="USERNAME",
        help="staff to put in the on-call channel (MATTERMOST_ONCALL_USERS)",
    )
    parser.add_argument(
        "--supervisors",
        nargs="+",
        metavar="USERNAME",
        help="staff to put in the supervisors channel (MATTERMOST_SUPERVISOR_USERS)",
    )
    parser.add_argument(
        "--bot-username",
        default=env("MATTERMOST_BOT_USERNAME") or BOT_USERNAME,
        help=f"the bot account's username (default {BOT_USERNAME})",
    )
    parser.add_argument(
        "--new-token",
        action="store_true",
        help="make another token for the bot even though it has one (to replace a lost token)",
    )
    args = parser.parse_args(argv)
    missing = [
        flag
        for flag, value in (
            ("--url (or MATTERMOST_URL)", args.url),
            ("--admin-token (or MATTERMOST_ADMIN_TOKEN)", args.admin_token),
            ("--public-base-url (or PUBLIC_BASE_URL)", args.public_base_url),
        )
        if not value
    ]
    if missing:
        parser.error("missing " + ", ".join(missing))
    team = args.team.strip().lower()
    if not TEAM_NAME.match(team):
        parser.error(
            f"--team {args.team!r}: use 2-64 lower-case letters, digits and hyphens, starting "
            f"with a letter"
        )
    public = urlsplit(args.public_base_url)
    if public.scheme not in ("http", "https") or not public.hostname:
        parser.error(
            f"--public-base-url must be a full URL such as https://clinic.example.org "
            f"(got {args.public_base_url!r})"
        )
    on_call = _names(args.on_call, "MATTERMOST_ONCALL_USERS")
    supervisors = _names(args.supervisors, "MATTERMOST_SUPERVISOR_USERS")
    bad = [name for name in (*on_call, *supervisors) if not USERNAME.match(name)]
    if bad:
        parser.error(f"not Mattermost usernames: {', '.join(bad)}")
    return Options(
        url=args.url.strip(),
        admin_token=args.admin_token.strip(),
        team=team,
        public_base_url=args.public_base_url.strip(),
        on_call=on_call,
        supervisors=supervisors,
        bot_username=args.bot_username.strip().lower(),
        new_token=args.new_token,
    )


@contextmanager
def _quiet_driver_log() -> Iterator[None]:
    # mattermostdriver logs every error answer at ERROR, including the 404s this script
    # expects while looking things up; our own messages say what matters.
    logger = logging.getLogger("mattermostdriver")
    children = [logging.getLogger(f"mattermostdriver.{name}") for name in ("websocket", "api")]
    saved = [(each, each.level) for each in (logger, *children)]
    for each, _ in saved:
        each.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for each, level in saved:
            each.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    err = sys.stderr
    runner: Bootstrap | None = None
    try:
        with _quiet_driver_log():
            runner = Bootstrap(options, out=err)
            result = runner.run()
    except BootstrapError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_ACTION_NEEDED
    except NotEnoughPermissions as exc:
        where = runner.step if runner else "signing in"
        print(f"error: Mattermost refused {where}: {exc}. {ADMIN_ACCESS_HELP}", file=err)
        return EXIT_ACTION_NEEDED
    except requests.RequestException as exc:
        where = runner.step if runner else "signing in"
        print(f"error: Mattermost answered an error while {where}: {exc}", file=err)
        print("What was done so far stays; run the bootstrap again once fixed.", file=err)
        return 1
    if result.created:
        print(f"Done: {len(result.created)} thing(s) created.", file=err)
    else:
        print("Done: nothing new, everything was in place.", file=err)
    print("\nPut these lines in .env, then restart web, worker and beat:", file=err)
    print("\n".join(result.env_lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
