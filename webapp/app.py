"""Composition root: builds the platform from settings and serves it as one ASGI app
(FastAPI for HTTP, python-socketio beside it for the web chat)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import socketio
from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response
from starlette.types import ASGIApp

from bot.linking import LinkPolicy, PhoneLinking
from bot.phrases import phrase
from channels.api.routes import build_router as api_router
from channels.sms.twilio_api import code_sender
from channels.sms.webhook import SEND as SMS_SEND
from channels.sms.webhook import build_router as sms_router
from channels.voice.twilio import VoiceCalls, load_engines
from channels.voice.twilio import build_router as voice_router
from channels.web.socket import WebChat
from core import metrics, migrate
from core.logging import configure_logging
from core.services import build_services, ingest_hook
from core.settings import Settings, get_settings
from escalation.listener import StaffDirectory, StaffListener, StaffPosts
from escalation.mattermost import gateway_for
from escalation.routes import build_router as mattermost_router
from webapp.auth import Passwords, SessionAuthorizer
from webapp.routes.admin import build_router as admin_router
from webapp.routes.auth import build_router as auth_router
from webapp.routes.cases import build_router as cases_router
from webapp.routes.console_data import build_router as console_data_router
from webapp.routes.health import Check, celery_broker_check, http_check, redis_check
from webapp.routes.health import build_router as health_router
from webapp.routes.metrics import build_router as metrics_router
from webapp.routes.privacy import build_router as privacy_router

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"


class SecurityHeaders(BaseHTTPMiddleware):
    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        super().__init__(app)
        # Only in production: HSTS sent over a development http:// origin would pin it to https.
        self.hsts = hsts

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if self.hsts:
            response.headers.setdefault(
                "Strict-Transport-Security", "max-age=31536000; includeSubDomains"
            )
        return response


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value else None


def create_app(settings: Settings | None = None) -> Any:
    settings = settings or get_settings()
    configure_logging()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    services = build_services(settings)
    queue_depth = metrics.QueueDepth(engine=services.engine, broker_url=settings.celery_broker_url)
    engine, sessions, store = services.engine, services.sessions, services.store
    orchestrator, knowledge, rasa = services.orchestrator, services.knowledge, services.rasa
    linking = None
    if settings.sms_enabled:
        linking = PhoneLinking(
            sessions,
            secret=settings.secret(),
            policy=LinkPolicy(
                ttl_s=settings.phone_code_ttl_s,
                max_attempts=settings.phone_code_max_attempts,
                codes_per_hour=settings.phone_codes_per_hour,
                region=settings.default_phone_region,
            ),
            send=code_sender(settings),
            text=lambda code, language, minutes: phrase(
                "phone_code", language, code=code, clinic=settings.clinic_name, minutes=minutes
            ),
        )
    web_chat = WebChat(
        orchestrator=orchestrator,
        store=store,
        supported_languages=settings.supported_languages,
        default_language=settings.default_language,
        history_limit=settings.history_limit,
        cors_origins=settings.cors_origins,
        redis_url=settings.redis_url,
        linking=linking,
    )
    services.cases.live = web_chat.push
    voice_calls = VoiceCalls(
        settings=settings,
        sessions=sessions,
        store=store,
        orchestrator=orchestrator,
        enqueue=services.enqueue,
        sms_send_task=SMS_SEND,
    )
    engines = None
    if settings.voice_enabled and settings.voice_mode == "stream":
        engines = load_engines(settings)
    if settings.voice_enabled:
        services.cases.on_call_claimed = voice_calls.staff_claimed
    listener = None
    gateway = gateway_for(settings)
    if gateway is not None:
        directory = StaffDirectory(
            gateway, policy=settings.staff_display, clinic_name=settings.clinic_name
        )
        staff_posts = StaffPosts(gateway, services.cases, directory)
        listener = StaffListener(gateway, staff_posts)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.auto_migrate:
            await asyncio.to_thread(migrate.upgrade, settings.database_url)
        # What start-up built lives as long as the process: keep it out of every later full
        # garbage collection, which otherwise rescans it and stalls requests for milliseconds.
        gc.freeze()
        preload = asyncio.create_task(knowledge.preload()) if settings.kb_preload else None
        # Staff posts in Mattermost case channels reach patients through this process.
        listening = asyncio.create_task(listener.run()) if listener else None
        yield
        if listener is not None and listening is not None:
            listener.stop()
            listening.cancel()
        if preload is not None:
            preload.cancel()
        await services.aclose()
        await queue_depth.aclose()
        metrics.process_exiting()

    api = FastAPI(title="Clinic assistant", version="0.1.0", lifespan=lifespan)
    api.add_middleware(SecurityHeaders, hsts=settings.environment == "production")
    # X-Request-ID in, or a new one: on every log line of the request and in the response.
    api.add_middleware(CorrelationIdMiddleware, header_name="X-Request-ID")
    if settings.cors_origins:
        # No credentials (cookies) cross origins: the admin API reads its Bearer header only.
        api.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "X-Staff-Name",
                "X-Staff-Role",
            ],
        )

    async def database_check() -> dict[str, Any]:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return {"dialect": engine.dialect.name}

    checks: dict[str, Check] = {
        "database": database_check,
        "rasa": rasa.ready,
        "action_server": rasa.action_server_ready,
        "celery_broker": celery_broker_check(settings.celery_broker_url),
    }
    # Optional dependencies are checked where configured only.
    if services.redis is not None:
        checks["redis"] = redis_check(services.redis)
    if settings.chroma_url:
        chroma = settings.chroma_url.rstrip("/")
        checks["chroma"] = http_check(
            services.http, f"{chroma}/api/v2/heartbeat", f"{chroma}/api/v1/heartbeat"
        )
    if gateway is not None and settings.mattermost_url:
        mattermost = settings.mattermost_url.rstrip("/")
        checks["mattermost"] = http_check(services.http, f"{mattermost}/api/v4/system/ping")
    api.include_router(health_router(checks))
    api.include_router(
        metrics_router(token=_secret(settings.metrics_token), queue_depth=queue_depth.families)
    )
    api.include_router(
        api_router(
            orchestrator=orchestrator,
            engine=services.safety.engine,
            store=store,
            api_token=settings.api_token.get_secret_value() if settings.api_token else None,
            max_bytes=settings.max_request_bytes,
            max_chars=settings.max_message_chars,
            supported_languages=settings.supported_languages,
            default_language=settings.default_language,
        )
    )

    api.include_router(
        sms_router(
            settings=settings,
            orchestrator=orchestrator,
            store=store,
            engine=engine,
            enqueue=services.enqueue,
        )
    )
    api.include_router(
        voice_router(
            settings=settings, orchestrator=orchestrator, calls=voice_calls, engines=engines
        )
    )
    # One authorizer for every admin router: sessions, OIDC tokens, the break-glass ADMIN_TOKEN.
    authorize = SessionAuthorizer.from_settings(settings, sessions)
    api.include_router(
        auth_router(
            sessions=sessions,
            authorize=authorize,
            passwords=Passwords.from_settings(settings),
            max_failures=settings.login_max_failures,
            lockout_s=settings.login_lockout_s,
        )
    )
    api.include_router(
        admin_router(
            sessions=sessions,
            authorize=authorize,
            upload_dir=settings.data_dir / "kb-uploads",
            max_bytes=settings.kb_upload_max_bytes,
            enqueue=ingest_hook(services.enqueue),
        )
    )

    api.include_router(privacy_router(sessions=sessions, authorize=authorize, settings=settings))
    api.include_router(console_data_router(sessions=sessions, authorize=authorize))
    api.include_router(
        cases_router(
            cases=services.cases,
            authorize=authorize,
            staff_display=settings.staff_display,
            clinic_name=settings.clinic_name,
        )
    )
    if gateway is not None:
        api.include_router(
            mattermost_router(
                cases=services.cases,
                directory=directory,
                posts=staff_posts,
                secret=settings.secret(),
                slash_token=_secret(settings.mattermost_slash_token),
                outgoing_token=_secret(settings.mattermost_outgoing_token),
            )
        )

    @api.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            status_code=422,
            content={"error": {"code": "invalid_request", "message": "Invalid request."}},
        )

    @api.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Anything unforeseen (the database went away) is a temporary outage to the caller.
        log.exception("request failed")
        return JSONResponse(
            status_code=503,
            content={
                "error": {"code": "unavailable", "message": "Temporarily unavailable, try again."}
            },
        )

    if (STATIC_DIR / "index.html").exists():
        api.mount("/assets", StaticFiles(directory=STATIC_DIR / "assets"), name="assets")

        @api.get("/", include_in_schema=False)
        async def chat_page() -> FileResponse:
            return FileResponse(STATIC_DIR / "index.html")

        @api.get("/console", include_in_schema=False)
        async def console_page() -> Response:
            page = STATIC_DIR / "console.html"
            if not page.exists():
                return PlainTextResponse("The console is not built: run `make frontend`.", 503)
            return FileResponse(page)
    else:

        @api.get("/", include_in_schema=False)
        async def chat_page_missing() -> PlainTextResponse:
            return PlainTextResponse(
                "The chat page is not built: run `make run` (or `make frontend`).", status_code=503
            )

    api.state.orchestrator = orchestrator
    api.state.cases = services.cases
    api.state.staff_listener = listener
    api.state.store = store
    api.state.web_chat = web_chat
    return socketio.ASGIApp(web_chat.sio, other_asgi_app=api, socketio_path="socket.io")
