"""Who is calling the admin API, and may they.

Every admin router receives one `Authorizer` and calls it first:

    who = await authorize(request, {"admin", "auditor"})
    if isinstance(who, JSONResponse):
        return who

Roles: `admin` (everything), `staff` (cases, transcripts, the knowledge base), `auditor`
(read-only: transcripts, cases, the audit log, the dashboard). The break-glass `ADMIN_TOKEN`
acts as an admin, for scripts and first set-up.

A caller proves who they are with `Authorization: Bearer <token>` only (never a cookie or a
query string, so a browser never sends it on its own and the API needs no CSRF token). The token
is one of: a session this server signed at sign-in (`SessionTokens`, HS256), an access token from
the clinic's OpenID Connect provider when one is configured (`OidcVerifier`), or `ADMIN_TOKEN`.
A session names the account's `session_version`; sign-out, a new password, a new role and
disabling the account bump it, which ends every session of that account at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, cast

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.orm import StaffUser
from core.settings import Settings

log = logging.getLogger(__name__)

Role = Literal["admin", "staff", "auditor"]
ROLES: tuple[Role, ...] = ("admin", "staff", "auditor")

SESSION_ISSUER = "clinic-assistant"
SESSION_AUDIENCE = "clinic-admin"
REALM = 'Bearer realm="clinic-admin"'


@dataclass(frozen=True)
class Principal:
    username: str
    display_name: str
    role: Role
    via: Literal["session", "admin_token"] = "session"

    @property
    def actor(self) -> str:
        """How the audit log names them."""
        return f"user:{self.username}"[:64]


class Authorizer(Protocol):
    async def __call__(
        self, request: Request, roles: Collection[Role]
    ) -> Principal | JSONResponse: ...


def error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": {"code": code, "message": message}}, headers=headers
    )


def as_role(value: str) -> Role | None:
    return next((role for role in ROLES if role == value), None)


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _unauthorized(message: str, *, invalid: bool = True) -> JSONResponse:
    # RFC 6750: a token that was sent and refused is "invalid_token"; none sent gets the realm.
    challenge = f'{REALM}, error="invalid_token"' if invalid else REALM
    return error(401, "unauthorized", message, **{"WWW-Authenticate": challenge})


def _forbidden() -> JSONResponse:
    return error(403, "forbidden", "Your role cannot do this; ask an administrator.")


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time we store is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def normalize_username(username: str) -> str:
    """Usernames are case-insensitive: stored and compared in lower case."""
    return username.strip().lower()


class Passwords:
    """argon2id hashes. Unknown usernames are checked against a dummy hash so a failed sign-in
    takes as long whether or not the account exists."""

    def __init__(self, *, time_cost: int, memory_kib: int) -> None:
        self.hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
        self._dummy: str | None = None

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self.hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def burn(self, password: str) -> None:
        if self._dummy is None:
            self._dummy = self.hash(secrets.token_urlsafe(16))
        self.verify(self._dummy, password)

    @classmethod
    def from_settings(cls, settings: Settings) -> Passwords:
        return cls(
            time_cost=settings.password_hash_time_cost,
            memory_kib=settings.password_hash_memory_kib,
        )


class InvalidToken(Exception):
    """A token that was sent but does not let its holder in; the message is for them."""


class ProviderUnavailable(Exception):
    """The identity provider's keys could not be fetched: not the caller's fault."""


class SessionTokens:
    """Sessions this server signs at sign-in (HS256, a key derived from SECRET_KEY)."""

    def __init__(self, secret: bytes, ttl_s: int) -> None:
        # A key of its own, so a session token can never be mistaken for another HMAC we make.
        self._key = hmac.new(secret, b"clinic-admin-session-jwt", hashlib.sha256).digest()
        self.ttl_s = ttl_s

    def issue(self, user: StaffUser, now: datetime | None = None) -> tuple[str, datetime]:
        issued = (now or datetime.now(UTC)).replace(microsecond=0)
        expires = issued + timedelta(seconds=self.ttl_s)
        claims = {
            "sub": user.username,
            "name": user.display_name,
            "role": user.role,
            "ver": user.session_version,
            "iat": issued,
            "exp": expires,
            "iss": SESSION_ISSUER,
            "aud": SESSION_AUDIENCE,
        }
        return self.sign(claims), expires

    def sign(self, claims: Mapping[str, Any]) -> str:
        return jwt.encode(dict(claims), self._key, algorithm="HS256")

    def decode(self, token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                audience=SESSION_AUDIENCE,
                issuer=SESSION_ISSUER,
                options={"require": ["sub", "role", "ver", "iat", "exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("Your session has expired; sign in again.") from exc
        except jwt.InvalidTokenError as exc:
            raise InvalidToken("This sign-in is not valid; sign in again.") from exc
        if not isinstance(claims["ver"], int) or not isinstance(claims["sub"], str):
            raise InvalidToken("This sign-in is not valid; sign in again.")
        return claims


class OidcVerifier:
    """Access tokens from the clinic's OpenID Connect provider (Keycloak, Entra ID, Okta...),
    checked against the provider's published keys. The role is the first of admin, staff,
    auditor found in the role claim (a dotted path such as `realm_access.roles` reaches into
    nested claims)."""

    ALGORITHMS = ("RS256", "ES256")

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str,
        role_claim: str = "roles",
        username_claim: str = "preferred_username",
    ) -> None:
        self.issuer, self.audience = issuer, audience
        self.role_claim, self.username_claim = role_claim, username_claim
        self._keys = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=600, timeout=5)

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcVerifier | None:
        parts = (settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url)
        if not any(parts):
            return None
        if not all(parts):
            raise ValueError("Set all of OIDC_ISSUER, OIDC_AUDIENCE and OIDC_JWKS_URL, or none.")
        return cls(
            issuer=cast(str, settings.oidc_issuer),
            audience=cast(str, settings.oidc_audience),
            jwks_url=cast(str, settings.oidc_jwks_url),
            role_claim=settings.oidc_role_claim,
            username_claim=settings.oidc_username_claim,
        )

    def claims_issuer(self, token: str) -> bool:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return False
        return unverified.get("iss") == self.issuer

    async def principal(self, token: str) -> Principal | None:
        """The caller, or None when the token is good but names none of our roles."""
        try:
            # PyJWKClient fetches with urllib (blocking); keys are cached between calls.
            key = await asyncio.to_thread(self._keys.get_signing_key_from_jwt, token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=list(self.ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise ProviderUnavailable from exc
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("Your sign-in has expired; sign in again.") from exc
        except (jwt.InvalidTokenError, jwt.PyJWKClientError) as exc:
            raise InvalidToken("This sign-in is not valid; sign in again.") from exc
        username = _claim(claims, self.username_claim) or claims.get("sub")
        if not isinstance(username, str) or not username.strip():
            raise InvalidToken("The sign-in does not say who you are; ask IT to check it.")
        granted = _claim(claims, self.role_claim)
        granted = [granted] if isinstance(granted, str) else granted
        role = next((r for r in ROLES if isinstance(granted, list) and r in granted), None)
        if role is None:
            return None
        name = claims.get("name")
        username = normalize_username(username)[:64]
        return Principal(username, name if isinstance(name, str) and name else username, role)


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


@dataclass(frozen=True)
class _Account:
    username: str
    display_name: str
    role: str
    active: bool
    session_version: int


class SessionAuthorizer:
    """The admin API's `Authorizer`: a session token, an OIDC access token (when configured),
    or the break-glass admin token; then the role.

    Each session is checked against its account on every request (still active, same
    `session_version`), through a per-process cache of `check_cache_s` seconds: a sign-out in
    this process takes effect at once, one in another process within that time."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        tokens: SessionTokens,
        admin_token: str | None = None,
        oidc: OidcVerifier | None = None,
        check_cache_s: float = 5.0,
    ) -> None:
        self.sessions = sessions
        self.tokens = tokens
        self.oidc = oidc
        self._admin_token = admin_token
        self._check_cache_s = check_cache_s
        self._accounts: dict[str, tuple[float, _Account | None]] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, sessions: async_sessionmaker[AsyncSession]
    ) -> SessionAuthorizer:
        return cls(
            sessions=sessions,
            tokens=SessionTokens(settings.secret(), settings.session_ttl_s),
            admin_token=settings.admin_token.get_secret_value() if settings.admin_token else None,
            oidc=OidcVerifier.from_settings(settings),
            check_cache_s=settings.session_check_cache_s,
        )

    def forget(self, username: str) -> None:
        """Drop what this process remembers of an account (after it changed)."""
        self._accounts.pop(username, None)

    async def __call__(self, request: Request, roles: Collection[Role]) -> Principal | JSONResponse:
        who = await self.identify(request)
        if isinstance(who, JSONResponse):
            return who
        if who.role not in roles:
            log.info("admin api refused", extra={"username": who.username, "role": who.role})
            return _forbidden()
        request.state.principal = who
        return who

    async def identify(self, request: Request) -> Principal | JSONResponse:
        """Who is calling, whatever their role: a Principal or the 401/403 to send."""
        token = bearer_token(request)
        if token is None:
            return _unauthorized("Sign in first.", invalid=False)
        if self._admin_token and secrets.compare_digest(token.encode(), self._admin_token.encode()):
            request.state.auth_via = "admin_token"
            return Principal("admin-token", "Administrator", "admin", via="admin_token")
        try:
            if self.oidc is not None and self.oidc.claims_issuer(token):
                # Principal.via stays "session"; the routes that must tell an OIDC caller from
                # a local account (sign-out) read this.
                request.state.auth_via = "oidc"
                principal = await self.oidc.principal(token)
                if principal is None:
                    log.info("sign-in without a clinic role", extra={"via": "oidc"})
                    return error(
                        403,
                        "no_role",
                        "Your account has no role here (admin, staff or auditor); "
                        "ask IT to grant one.",
                    )
                return principal
            request.state.auth_via = "session"
            return await self._session(token)
        except InvalidToken as exc:
            return _unauthorized(str(exc))
        except ProviderUnavailable:
            log.warning("the identity provider's keys could not be fetched")
            return error(
                503,
                "provider_unavailable",
                "The sign-in provider cannot be reached; try again in a minute.",
            )

    async def _session(self, token: str) -> Principal:
        claims = self.tokens.decode(token)
        account = await self._account(claims["sub"])
        role = as_role(account.role) if account else None
        if (
            account is None
            or role is None
            or not account.active
            or account.session_version != claims["ver"]
        ):
            raise InvalidToken("You have been signed out; sign in again.")
        return Principal(account.username, account.display_name, role)

    async def _account(self, username: str) -> _Account | None:
        now = time.monotonic()
        cached = self._accounts.get(username)
        if cached is not None and now - cached[0] < self._check_cache_s:
            return cached[1]
        async with self.sessions() as session:
            row = await session.scalar(select(StaffUser).where(StaffUser.username == username))
        account = (
            _Account(row.username, row.display_name, row.role, row.active, row.session_version)
            if row is not None
            else None
        )
        if len(self._accounts) > 1000:
            self._accounts.clear()
        self._accounts[username] = (now, account)
        return account
