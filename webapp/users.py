"""`python -m webapp.users`: staff accounts for the console and admin API.

    python -m webapp.users add dana --role staff --name "Dana Reyes"   # asks for the password
    echo "$PASSWORD" | python -m webapp.users add dana --role staff --password-stdin
    python -m webapp.users set-password dana
    python -m webapp.users set-role dana auditor
    python -m webapp.users disable dana      # ends every session of the account at once
    python -m webapp.users enable dana       # also lifts a lockout
    python -m webapp.users list

It works on DATABASE_URL (migrated first, as the app does). Every change is in the audit log
(actor "cli"), never the password. The same operations are plain functions for scripts and
tests: `create_user(database_url, username, password, role, display_name)` and the others below.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core import migrate
from core.db import make_sync_engine
from core.orm import AuditEvent, StaffUser, utcnow
from core.settings import get_settings
from webapp.auth import ROLES, Passwords, aware, normalize_username

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
# The break-glass token's principal is called this: no account may take its name.
RESERVED = {"admin-token"}
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024


class UserError(Exception):
    """A change that cannot be made; the message says what to do instead."""


@dataclass(frozen=True)
class UserInfo:
    username: str
    display_name: str
    role: str
    active: bool
    created_at: datetime
    last_login_at: datetime | None
    locked_until: datetime | None


def _info(user: StaffUser) -> UserInfo:
    return UserInfo(
        user.username,
        user.display_name,
        user.role,
        user.active,
        user.created_at,
        user.last_login_at,
        user.locked_until,
    )


def check_username(username: str) -> str:
    """The username as stored (lower case), or UserError."""
    name = normalize_username(username)
    if not USERNAME.match(name) or name in RESERVED:
        raise UserError(
            "The username may have letters, digits and . _ @ - (up to 64), starting with a "
            "letter or digit."
        )
    return name


def check_password(password: str, username: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"The password needs at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"The password may have at most {MAX_PASSWORD_LENGTH} characters.")
    if password.strip().lower() == username:
        raise UserError("The password must not be the username.")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UserError(f"The role must be one of {', '.join(ROLES)}.")


def _passwords(passwords: Passwords | None) -> Passwords:
    return passwords or Passwords.from_settings(get_settings())


def _audit(session: Session, actor: str, action: str, **detail: str) -> None:
    session.add(AuditEvent(actor=actor[:64], action=action, detail=detail))


def _find(session: Session, username: str) -> StaffUser:
    name = normalize_username(username)
    user = session.scalar(select(StaffUser).where(StaffUser.username == name))
    if user is None:
        raise UserError(f"No account named {name!r}; `list` shows the accounts.")
    return user


def create_user(
    database_url: str,
    username: str,
    password: str,
    role: str,
    display_name: str | None = None,
    *,
    actor: str = "cli",
    passwords: Passwords | None = None,
) -> UserInfo:
    """A new active account. The database must be migrated (the app and the CLI do it)."""
    name = check_username(username)
    _check_role(role)
    check_password(password, name)
    shown = " ".join((display_name or name).split())
    if not 0 < len(shown) <= 128:
        raise UserError("The display name may have at most 128 characters.")
    password_hash = _passwords(passwords).hash(password)
    engine = make_sync_engine(database_url)
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            if session.scalar(select(StaffUser.id).where(StaffUser.username == name)):
                raise UserError(f"There is already an account named {name!r}.")
            user = StaffUser(
                username=name,
                display_name=shown,
                role=role,
                password_hash=password_hash,
                active=True,
                session_version=1,
                failed_logins=0,
            )
            session.add(user)
            _audit(session, actor, "staff_user.created", username=name, role=role)
        return _info(user)
    finally:
        engine.dispose()


def set_password(
    database_url: str,
    username: str,
    password: str,
    *,
    actor: str = "cli",
    passwords: Passwords | None = None,
) -> UserInfo:
    """A new password; every session of the account ends."""
    engine = make_sync_engine(database_url)
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            user = _find(session, username)
            check_password(password, user.username)
            user.password_hash = _passwords(passwords).hash(password)
            user.session_version += 1
            user.failed_logins, user.locked_until = 0, None
            _audit(session, actor, "staff_user.password_changed", username=user.username)
        return _info(user)
    finally:
        engine.dispose()


def set_role(database_url: str, username: str, role: str, *, actor: str = "cli") -> UserInfo:
    """A new role; sessions end so nobody keeps a token naming the old one."""
    _check_role(role)
    engine = make_sync_engine(database_url)
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            user = _find(session, username)
            if user.role != role:
                previous, user.role = user.role, role
                user.session_version += 1
                _audit(
                    session,
                    actor,
                    "staff_user.role_changed",
                    username=user.username,
                    previous=previous,
                    role=role,
                )
        return _info(user)
    finally:
        engine.dispose()


def set_active(database_url: str, username: str, active: bool, *, actor: str = "cli") -> UserInfo:
    """Disable (ends every session at once) or enable (also lifts a lockout) an account."""
    engine = make_sync_engine(database_url)
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            user = _find(session, username)
            if active:
                user.active, user.failed_logins, user.locked_until = True, 0, None
            elif user.active:
                user.active = False
                user.session_version += 1
            action = "staff_user.enabled" if active else "staff_user.disabled"
            _audit(session, actor, action, username=user.username)
        return _info(user)
    finally:
        engine.dispose()


def list_users(database_url: str) -> list[UserInfo]:
    engine = make_sync_engine(database_url)
    try:
        with Session(engine) as session:
            rows = session.scalars(select(StaffUser).order_by(StaffUser.username))
            return [_info(u) for u in rows]
    finally:
        engine.dispose()


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UserError("No terminal to ask for the password: pass it with --password-stdin.")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat the password: ") != first:
        raise UserError("The two passwords differ; run the command again.")
    return first


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m webapp.users", description="Staff accounts for the console."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="create an account (asks for its password)")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--name", help="how the person is shown (default: the username)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    password = commands.add_parser("set-password", help="a new password (ends its sessions)")
    password.add_argument("username")
    password.add_argument("--password-stdin", action="store_true")
    role = commands.add_parser("set-role", help="a new role (ends its sessions)")
    role.add_argument("username")
    role.add_argument("role", choices=ROLES)
    for name, text in (
        ("disable", "stop the account signing in (ends its sessions)"),
        ("enable", "let the account sign in again (also lifts a lockout)"),
    ):
        commands.add_parser(name, help=text).add_argument("username")
    commands.add_parser("list", help="every account, its role and state")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = get_settings()
    url = settings.database_url
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if settings.auto_migrate:
            migrate.upgrade(url)
        if args.command == "add":
            check_username(args.username)  # before asking for a password
            user = create_user(
                url, args.username, _read_password(args.password_stdin), args.role, args.name
            )
            print(f"created {user.username} ({user.role}, shown as {user.display_name!r})")
        elif args.command == "set-password":
            user = set_password(url, args.username, _read_password(args.password_stdin))
            print(f"new password for {user.username}; their sessions have ended")
        elif args.command == "set-role":
            user = set_role(url, args.username, args.role)
            print(f"{user.username} is now {user.role}")
        elif args.command in ("disable", "enable"):
            user = set_active(url, args.username, args.command == "enable")
            print(f"{user.username} is {'enabled' if user.active else 'disabled'}")
        else:
            users = list_users(url)
            if not users:
                print("no accounts yet: add one with `python -m webapp.users add`")
            for u in users:
                state = "active" if u.active else "disabled"
                if u.active and u.locked_until and aware(u.locked_until) > utcnow():
                    state = "locked"
                print(
                    f"{u.username:<24} {u.role:<8} {state:<9} "
                    f"last sign-in {_when(u.last_login_at):<16}  {u.display_name}"
                )
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        where = make_url(url).render_as_string(hide_password=True)
        print(
            f"error: the database at {where} failed ({type(exc).__name__}); check DATABASE_URL "
            "and that the database is running.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
