"""Access control for the console and admin API: staff accounts and sign-in, sessions that end
when they should, the role matrix on the real endpoints, an OpenID Connect provider's tokens
(checked against a real JWKS endpoint), security headers, CORS and the accounts CLI.

The app runs behind a real uvicorn server on SQLite and PostgreSQL; no Rasa is needed, since
cases are opened through the conversation store as the orchestrator would.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.contract import Channel, Inbound
from bot.store import ConversationStore
from core.db import make_async_engine, make_sessionmaker, make_sync_engine
from core.orm import AuditEvent, StaffUser
from core.settings import Settings
from tests.support import ROOT, free_port, running_app
from webapp.auth import SESSION_AUDIENCE, SESSION_ISSUER, Passwords, SessionTokens
from webapp.users import create_user, set_active

ADMIN_TOKEN = "test-admin-token-access-0123456789"
PASSWORD = "correct horse battery staple"
# Cheap hashes keep the suite quick; production defaults are argon2id t=3, 64 MiB.
FAST = Passwords(time_cost=1, memory_kib=8192)
FAST_SETTINGS = {"password_hash_time_cost": 1, "password_hash_memory_kib": 8192}


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Lab:
    client: httpx.AsyncClient
    settings: Settings
    database_url: str

    def add(self, role: str, name: str | None = None, password: str = PASSWORD) -> str:
        username = unique(role)
        create_user(self.database_url, username, password, role, name, passwords=FAST)
        return username

    async def login(self, username: str, password: str = PASSWORD) -> httpx.Response:
        return await self.client.post(
            "/admin/api/v1/auth/login", json={"username": username, "password": password}
        )

    async def token(self, username: str, password: str = PASSWORD) -> str:
        response = await self.login(username, password)
        assert response.status_code == 200, response.text
        return str(response.json()["token"])

    async def me(self, token: str) -> httpx.Response:
        return await self.client.get("/admin/api/v1/auth/me", headers=bearer(token))

    def audit(self, username: str) -> list[AuditEvent]:
        """Events about this account, or done by it."""
        engine = make_sync_engine(self.database_url)
        with Session(engine) as session:
            rows = [
                e
                for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))
                if e.detail.get("username") == username
                or e.actor in (f"user:{username}", f"staff:user:{username}")
            ]
        engine.dispose()
        return rows

    def account(self, username: str) -> StaffUser:
        return stored_account(self.database_url, username)


def stored_account(database_url: str, username: str) -> StaffUser:
    engine = make_sync_engine(database_url)
    with Session(engine) as session:
        user = session.scalars(select(StaffUser).where(StaffUser.username == username)).one()
    engine.dispose()
    return user


@pytest.fixture
def lab_settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        # Every request re-reads the account, so a change made outside the app shows at once.
        session_check_cache_s=0,
        **FAST_SETTINGS,
    )


@pytest.fixture
async def lab(lab_settings: Settings) -> AsyncIterator[Lab]:
    async with (
        running_app(lab_settings) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        yield Lab(client, lab_settings, lab_settings.database_url)


async def open_case(database_url: str) -> tuple[str, str]:
    """A patient who asked for a person: (case id, conversation id)."""
    engine = make_async_engine(database_url)
    store = ConversationStore(make_sessionmaker(engine))
    address = unique("web-")
    conversation = await store.open_conversation(
        channel=Channel.WEB, address=address, language="en"
    )
    await store.store_inbound(
        conversation=conversation,
        inbound=Inbound(channel=Channel.WEB, sender_address=address, text="I need a nurse"),
        text="I need a nurse",
        language="en",
    )
    case_id, _ = await store.escalate(
        conversation=conversation, priority="normal", reason="request", rule_ids=()
    )
    await engine.dispose()
    return case_id, conversation.id


# --- sign-in ---------------------------------------------------------------------------------


async def test_a_staff_member_signs_in_and_the_password_is_kept_nowhere(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    username = lab.add("staff", "Dana Reyes")
    # Usernames are case-insensitive.
    response = await lab.login(username.upper())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"] == {"username": username, "display_name": "Dana Reyes", "role": "staff"}
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(hours=7, minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=8)
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert (claims["sub"], claims["role"], claims["iss"], claims["aud"]) == (
        username,
        "staff",
        SESSION_ISSUER,
        SESSION_AUDIENCE,
    )
    me = await lab.me(body["token"])
    assert me.status_code == 200
    assert me.json() == {"username": username, "display_name": "Dana Reyes", "role": "staff"}

    account = lab.account(username)
    assert account.password_hash.startswith("$argon2id$")
    assert account.last_login_at is not None
    await lab.login(username, "not the password at all")
    trail = lab.audit(username)
    assert [e.action for e in trail] == [
        "staff_user.created",
        "auth.login_succeeded",
        "auth.login_failed",
    ]
    everything = json.dumps([[e.actor, e.action, e.detail] for e in trail])
    assert PASSWORD not in everything and "not the password at all" not in everything
    assert PASSWORD not in caplog.text and "not the password at all" not in caplog.text
    signed_in = [r for r in caplog.records if r.getMessage() == "signed in"]
    assert [(r.__dict__["username"], r.__dict__["role"]) for r in signed_in] == [
        (username, "staff")
    ]


async def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(lab: Lab) -> None:
    username = lab.add("staff")
    wrong = await lab.login(username, "a wrong password here")
    nobody = await lab.login(unique("nobody"), PASSWORD)
    assert wrong.status_code == nobody.status_code == 401
    assert wrong.json() == nobody.json()
    assert wrong.json()["error"]["code"] == "invalid_credentials"
    assert "token" not in wrong.text
    failed = [e for e in lab.audit(username) if e.action == "auth.login_failed"]
    assert [e.detail for e in failed] == [{"username": username, "reason": "wrong_password"}]


async def test_repeated_wrong_passwords_lock_the_account_until_it_is_enabled(lab: Lab) -> None:
    username = lab.add("staff")
    answers = [await lab.login(username, f"guess number {n}") for n in range(5)]
    assert [a.status_code for a in answers] == [401, 401, 401, 401, 429]
    # Locked: even the right password is turned away, with how long to wait.
    locked = await lab.login(username)
    assert locked.status_code == 429
    assert locked.json()["error"]["code"] == "too_many_attempts"
    assert 0 < int(locked.headers["Retry-After"]) <= lab.settings.login_lockout_s
    # An administrator lifts the lockout.
    set_active(lab.database_url, username, True)
    assert (await lab.login(username)).status_code == 200
    assert lab.account(username).failed_logins == 0


async def test_a_json_login_sent_as_plain_text_is_refused(lab: Lab) -> None:
    # What a cross-site form or a no-preflight fetch could send: never a session.
    username = lab.add("staff")
    response = await lab.client.post(
        "/admin/api/v1/auth/login",
        content=json.dumps({"username": username, "password": PASSWORD}),
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 422
    assert "token" not in response.json()


async def test_an_old_password_hash_is_upgraded_at_sign_in(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    username = unique("staff")
    create_user(sqlite_url, username, PASSWORD, "staff", passwords=FAST)
    settings = make_settings(
        database_url=sqlite_url, password_hash_time_cost=2, password_hash_memory_kib=8192
    )
    async with (
        running_app(settings) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        response = await client.post(
            "/admin/api/v1/auth/login", json={"username": username, "password": PASSWORD}
        )
    assert response.status_code == 200
    stored = stored_account(sqlite_url, username).password_hash
    assert stored.startswith("$argon2id$") and ",t=2," in stored
    assert Passwords(time_cost=2, memory_kib=8192).verify(stored, PASSWORD)


# --- sessions that end -------------------------------------------------------------------------


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "unauthorized"


async def test_expired_tampered_and_foreign_tokens_are_refused(lab: Lab) -> None:
    username = lab.add("admin")
    good = await lab.token(username)
    assert (await lab.me(good)).status_code == 200
    tokens = SessionTokens(lab.settings.secret(), lab.settings.session_ttl_s)
    account = lab.account(username)
    expired, _ = tokens.issue(account, now=datetime.now(UTC) - timedelta(hours=9))
    claims = jwt.decode(good, options={"verify_signature": False})
    other_audience = tokens.sign({**claims, "aud": "someone-else"})
    other_issuer = tokens.sign({**claims, "iss": "https://elsewhere.example"})
    header, _, signature = good.split(".")
    forged_payload = jwt.utils.base64url_encode(
        json.dumps({**claims, "role": "admin", "sub": "someone-else"}).encode()
    ).decode()
    tampered = f"{header}.{forged_payload}.{signature}"
    other_key = SessionTokens(b"another server's secret", 3600).issue(account)[0]
    unsigned = jwt.encode(claims, "", algorithm="none")
    for token in (expired, other_audience, other_issuer, tampered, other_key, unsigned, "x.y.z"):
        assert_refused(await lab.me(token))
    missing = await lab.client.get("/admin/api/v1/auth/me")
    assert_refused(missing)
    # A token in the query string is not a token.
    assert_refused(await lab.client.get("/admin/api/v1/auth/me", params={"token": good}))


async def test_signing_out_ends_every_session_of_the_account(lab: Lab) -> None:
    username = lab.add("staff")
    laptop, phone = await lab.token(username), await lab.token(username)
    out = await lab.client.post("/admin/api/v1/auth/logout", headers=bearer(laptop))
    assert out.status_code == 204
    assert_refused(await lab.me(laptop))
    assert_refused(await lab.me(phone))
    assert_refused(await lab.client.get("/admin/api/v1/cases", headers=bearer(phone)))
    assert "auth.logout" in [e.action for e in lab.audit(username)]
    # Signing in again gives a working session.
    assert (await lab.me(await lab.token(username))).status_code == 200


async def test_a_disabled_account_is_signed_out_and_cannot_sign_in(lab: Lab) -> None:
    username = lab.add("staff")
    token = await lab.token(username)
    assert (await lab.me(token)).status_code == 200
    set_active(lab.database_url, username, False)
    assert_refused(await lab.me(token))
    again = await lab.login(username)
    assert again.status_code == 401 and again.json()["error"]["code"] == "account_disabled"
    set_active(lab.database_url, username, True)
    # Enabling does not bring old sessions back.
    assert_refused(await lab.me(token))
    assert (await lab.login(username)).status_code == 200


# --- roles on the real endpoints -----------------------------------------------------------------


async def test_the_role_matrix_on_cases_transcripts_and_the_knowledge_base(lab: Lab) -> None:
    staff = await lab.token(lab.add("staff", "Dana Reyes"))
    auditor_name = lab.add("auditor", "Avery Audit")
    auditor = await lab.token(auditor_name)
    admin = await lab.token(lab.add("admin", "Ada Admin"))
    case_id, conversation_id = await open_case(lab.database_url)
    upload = {"file": ("notes.exe", b"MZ", "application/octet-stream")}

    # Everyone reads cases; the auditor cannot act on them.
    for token in (staff, auditor, admin):
        listed = await lab.client.get(
            "/admin/api/v1/cases", params={"status": "all"}, headers=bearer(token)
        )
        assert listed.status_code == 200, listed.text
        assert case_id in [c["id"] for c in listed.json()["cases"]]
        detail = await lab.client.get(f"/admin/api/v1/cases/{case_id}", headers=bearer(token))
        assert detail.status_code == 200
    for action in ("claim", "handback", "resolve"):
        refused = await lab.client.post(
            f"/admin/api/v1/cases/{case_id}/{action}", headers=bearer(auditor)
        )
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    no_reply = await lab.client.post(
        f"/admin/api/v1/cases/{case_id}/reply", headers=bearer(auditor), json={"text": "hi"}
    )
    assert no_reply.status_code == 403

    # Staff claim under their own name, shown to the patient with their role.
    claimed = await lab.client.post(f"/admin/api/v1/cases/{case_id}/claim", headers=bearer(staff))
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["case"]["claimed_by"] == "Dana Reyes"
    engine = make_sync_engine(lab.database_url)
    with Session(engine) as session:
        claim_event = session.scalars(
            select(AuditEvent).where(
                AuditEvent.conversation_id == conversation_id, AuditEvent.action == "case.claimed"
            )
        ).one()
    assert claim_event.actor.startswith("staff:user:staff")
    assert claim_event.detail["shown_as"] == "Dana (Staff)"

    # Transcripts: read by all three roles, each read audited under the reader's name.
    transcript = f"/admin/api/v1/conversations/{conversation_id}/messages"
    for token in (staff, auditor, admin):
        assert (await lab.client.get(transcript, headers=bearer(token))).status_code == 200
    with Session(engine) as session:
        reads = session.scalars(
            select(AuditEvent).where(
                AuditEvent.conversation_id == conversation_id,
                AuditEvent.action == "patient_data.read",
            )
        ).all()
    engine.dispose()
    assert f"user:{auditor_name}" in [r.actor for r in reads] and len(reads) == 3

    # The knowledge base: staff and auditors read jobs, only admins upload.
    for token in (staff, auditor, admin):
        jobs = await lab.client.get("/admin/api/v1/kb/jobs", headers=bearer(token))
        assert jobs.status_code == 200
    for token in (staff, auditor):
        denied = await lab.client.post(
            "/admin/api/v1/kb/documents", headers=bearer(token), files=upload
        )
        assert denied.status_code == 403
    # An admin gets past the door (and is told the file type is wrong).
    allowed = await lab.client.post(
        "/admin/api/v1/kb/documents", headers=bearer(admin), files=upload
    )
    assert allowed.status_code == 415


async def test_the_break_glass_token_still_needs_a_staff_name_on_cases(lab: Lab) -> None:
    me = await lab.client.get("/admin/api/v1/auth/me", headers=bearer(ADMIN_TOKEN))
    assert me.json() == {
        "username": "admin-token",
        "display_name": "Administrator",
        "role": "admin",
    }
    nameless = await lab.client.get("/admin/api/v1/cases", headers=bearer(ADMIN_TOKEN))
    assert nameless.status_code == 401
    assert nameless.json()["error"]["code"] == "staff_name_required"
    named = await lab.client.get(
        "/admin/api/v1/cases", headers={**bearer(ADMIN_TOKEN), "X-Staff-Name": "Joy"}
    )
    assert named.status_code == 200


# --- an OpenID Connect provider ----------------------------------------------------------------


class Jwks:
    """The provider's published keys, served over HTTP as a real provider does."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        body = json.dumps({"keys": keys}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/certs":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/certs"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


ISSUER = "https://idp.clinic.example/realms/clinic"
AUDIENCE = "clinic-console"


@pytest.fixture
def provider_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks(provider_key: rsa.RSAPrivateKey) -> Iterator[Jwks]:
    public = json.loads(RSAAlgorithm.to_jwk(provider_key.public_key()))
    server = Jwks([{**public, "kid": "clinic-1", "use": "sig", "alg": "RS256"}])
    yield server
    server.close()


def provider_token(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    now = datetime.now(UTC)
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "f3a1c9",
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "preferred_username": "Joy.Park",
        "name": "Joy Park",
        **claims,
    }
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "clinic-1"})


async def test_tokens_from_the_clinics_identity_provider_are_accepted_and_mapped(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    jwks: Jwks,
    provider_key: rsa.RSAPrivateKey,
) -> None:
    settings = make_settings(
        database_url=sqlite_url,
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        oidc_jwks_url=jwks.url,
        oidc_role_claim="realm_access.roles",
    )
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with (
        running_app(settings) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):

        async def me(token: str) -> httpx.Response:
            return await client.get("/admin/api/v1/auth/me", headers=bearer(token))

        nurse = provider_token(provider_key, realm_access={"roles": ["offline_access", "staff"]})
        answer = await me(nurse)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "username": "joy.park",
            "display_name": "Joy Park",
            "role": "staff",
        }
        cases = await client.get("/admin/api/v1/cases", headers=bearer(nurse))
        assert cases.status_code == 200
        # The highest of the clinic's roles wins.
        both = provider_token(provider_key, realm_access={"roles": ["auditor", "admin"]})
        assert (await me(both)).json()["role"] == "admin"
        reader = provider_token(provider_key, realm_access={"roles": ["auditor"]})
        upload = await client.post(
            "/admin/api/v1/kb/documents",
            headers=bearer(reader),
            files={"file": ("a.md", b"# A", "text/markdown")},
        )
        assert upload.status_code == 403
        # Signed in at the provider but given no role here.
        none = await me(provider_token(provider_key, realm_access={"roles": ["offline_access"]}))
        assert none.status_code == 403 and none.json()["error"]["code"] == "no_role"
        # Signed by someone else's key with the provider's key id, for another audience,
        # expired: all refused.
        for token in (
            provider_token(impostor, realm_access={"roles": ["admin"]}),
            provider_token(provider_key, aud="another-app", realm_access={"roles": ["admin"]}),
            provider_token(
                provider_key,
                exp=datetime.now(UTC) - timedelta(minutes=1),
                realm_access={"roles": ["admin"]},
            ),
        ):
            assert_refused(await me(token))


async def test_an_unreachable_identity_provider_is_an_outage_not_a_bad_sign_in(
    make_settings: Callable[..., Settings], sqlite_url: str, provider_key: rsa.RSAPrivateKey
) -> None:
    # Nothing listens there: the provider's keys cannot be fetched.
    settings = make_settings(
        database_url=sqlite_url,
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        oidc_jwks_url=f"http://127.0.0.1:{free_port()}/certs",
    )
    async with (
        running_app(settings) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        token = provider_token(provider_key, roles=["staff"])
        answer = await client.get("/admin/api/v1/auth/me", headers=bearer(token))
    # Not a 401, which would send the person to sign in again for nothing.
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "provider_unavailable"


# --- headers, CORS -----------------------------------------------------------------------------


async def test_security_headers_on_pages_and_api_responses(lab: Lab) -> None:
    for path in ("/", "/console", "/admin/api/v1/auth/me"):
        response = await lab.client.get(path)
        headers = response.headers
        assert "default-src 'self'" in headers["Content-Security-Policy"], path
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert "camera=()" in headers["Permissions-Policy"]
        assert headers["Referrer-Policy"] == "no-referrer"
        # Not in development: it would pin a plain-http origin to https.
        assert "Strict-Transport-Security" not in headers


@pytest.mark.postgres
async def test_production_adds_strict_transport_security(
    make_settings: Callable[..., Settings], postgres_url: str
) -> None:
    # Production refuses to start without its own keys.
    settings = make_settings(
        database_url=postgres_url,
        environment="production",
        secret_key=secrets.token_hex(32),
        encryption_keys=Fernet.generate_key().decode(),
        blind_index_key=secrets.token_hex(32),
    )
    async with (
        running_app(settings) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        response = await client.get("/admin/api/v1/auth/me")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")


async def test_cors_preflight_is_answered_for_allowed_origins_only(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    allowed = "https://console.clinic.example"
    settings = make_settings(database_url=sqlite_url, cors_origins=[allowed])
    async with (
        running_app(settings) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):

        async def preflight(origin: str) -> httpx.Response:
            return await client.options(
                "/admin/api/v1/auth/login",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization, content-type",
                },
            )

        ok = await preflight(allowed)
        assert ok.status_code == 200
        assert ok.headers["Access-Control-Allow-Origin"] == allowed
        allowed_headers = ok.headers["Access-Control-Allow-Headers"].lower()
        assert "authorization" in allowed_headers and "content-type" in allowed_headers
        assert "POST" in ok.headers["Access-Control-Allow-Methods"]
        # No cookies cross origins.
        assert "Access-Control-Allow-Credentials" not in ok.headers
        other = await preflight("https://evil.example")
        assert other.status_code == 400
        assert "Access-Control-Allow-Origin" not in other.headers


# --- the accounts CLI --------------------------------------------------------------------------


def run_cli(tmp_path: Path, database_url: str, *args: str, stdin: str = "") -> Any:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path),
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "8192",
    }
    return subprocess.run(
        [sys.executable, "-m", "webapp.users", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_cli_adds_lists_and_disables_accounts(tmp_path: Path) -> None:
    # A fresh database: the CLI migrates it first, as the app does.
    database_url = f"sqlite:///{tmp_path / 'cli.db'}"
    username = unique("Clerk.")
    added = run_cli(
        tmp_path,
        database_url,
        "add",
        username,
        "--role",
        "auditor",
        "--name",
        "Cleo Clerk",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert added.returncode == 0, added.stderr
    name = username.lower()
    assert f"created {name} (auditor" in added.stdout

    listed = run_cli(tmp_path, database_url, "list")
    line = next(row for row in listed.stdout.splitlines() if row.startswith(name))
    assert "auditor" in line and "active" in line and "Cleo Clerk" in line

    again = run_cli(
        tmp_path, database_url, "add", name, "--role", "staff", "--password-stdin", stdin="x" * 20
    )
    assert again.returncode == 1 and "already an account" in again.stderr
    short = run_cli(
        tmp_path, database_url, "set-password", name, "--password-stdin", stdin="short\n"
    )
    assert short.returncode == 1 and "at least 12 characters" in short.stderr
    bad_role = run_cli(tmp_path, database_url, "set-role", name, "superuser")
    assert bad_role.returncode == 2
    missing = run_cli(tmp_path, database_url, "disable", "nobody-here")
    assert missing.returncode == 1 and "No account named" in missing.stderr

    assert run_cli(tmp_path, database_url, "disable", name).returncode == 0
    listed = run_cli(tmp_path, database_url, "list")
    line = next(row for row in listed.stdout.splitlines() if row.startswith(name))
    assert "disabled" in line

    engine = make_sync_engine(database_url)
    with Session(engine) as session:
        user = session.scalars(select(StaffUser).where(StaffUser.username == name)).one()
        events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    engine.dispose()
    assert user.password_hash.startswith("$argon2id$") and not user.active
    assert [(e.actor, e.action) for e in events] == [
        ("cli", "staff_user.created"),
        ("cli", "staff_user.disabled"),
    ]
    outputs = json.dumps([e.detail for e in events]) + added.stdout + added.stderr
    assert PASSWORD not in outputs
