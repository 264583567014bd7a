"""Twilio, through its official library: signatures on what Twilio sends us, and the Messages
resource for what we send. Nothing outside channels/sms sees a Twilio format."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qsl

import requests
from fastapi import Request
from fastapi.responses import Response
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from bot.linking import CodeNotSent
from channels.body import read_limited
from core.settings import Settings

log = logging.getLogger(__name__)

# Twilio's error codes that mean "this number said STOP" (to us, or to the carrier).
UNSUBSCRIBED_CODES = {21610}
WEBHOOK_PATH = "/channels/sms/twilio"
STATUS_PATH = "/channels/sms/twilio/status"
# The client logs each request at INFO; the destination number is patient data.
logging.getLogger("twilio.http_client").setLevel(logging.WARNING)


class SendError(Exception):
    """Sending failed. `retryable`: the same request may succeed later (429, 5xx, network)."""

    def __init__(self, reason: str, *, retryable: bool, code: int | None = None) -> None:
        super().__init__(reason)
        self.retryable = retryable
        self.code = code


class Unsubscribed(SendError):
    def __init__(self, code: int) -> None:
        super().__init__("recipient unsubscribed", retryable=False, code=code)


@dataclass(frozen=True)
class Sent:
    sid: str
    status: str
    segments: int | None
    body: str = ""


def public_url(settings: Settings, path: str, query: str = "") -> str:
    """The URL Twilio called, as Twilio saw it: the signature covers it, and behind a proxy
    this process sees another host and scheme."""
    base = (settings.public_base_url or "").rstrip("/")
    return f"{base}{path}" + (f"?{query}" if query else "")


def signature_valid(settings: Settings, url: str, params: dict[str, str], signature: str) -> bool:
    if not settings.twilio_auth_token or not signature:
        return False
    validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
    return bool(validator.validate(url, params, signature))


# Twilio's own limit for an incoming message is 1,600 characters; its forms are small.
MAX_FORM_BYTES = 64 * 1024


async def signed_form(
    request: Request, settings: Settings, path: str, *, enabled: bool, what: str
) -> dict[str, str] | Response:
    """The form of a webhook Twilio sent us (SMS or voice), or the refusal to answer with:
    503 while the channel is off, 413 too large, 400 not UTF-8, 403 without a valid
    X-Twilio-Signature for PUBLIC_BASE_URL + path or for another account."""
    if not enabled:
        return _refuse(503, f"{what} is not configured on this server.")
    body = await read_limited(request, MAX_FORM_BYTES)
    if body is None:
        return _refuse(413, "Request body too large.")
    try:
        params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return _refuse(400, "The form must be UTF-8.")
    url = public_url(settings, path, request.url.query)
    signature = request.headers.get("x-twilio-signature", "")
    if not signature_valid(settings, url, params, signature):
        log.warning("refused a %s webhook without a valid Twilio signature", what)
        return _refuse(403, "Invalid or missing X-Twilio-Signature.")
    if params.get("AccountSid") != settings.twilio_account_sid:
        log.warning("refused a %s webhook for another Twilio account", what)
        return _refuse(403, "Unknown account.")
    return params


def _refuse(status: int, reason: str) -> Response:
    return Response(reason, status_code=status, media_type="text/plain")


def make_client(settings: Settings, *, timeout_s: float = 10.0) -> Client:
    if not (settings.twilio_account_sid and settings.twilio_auth_token):
        raise RuntimeError("SMS is not configured: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
    client = Client(
        settings.twilio_account_sid,
        settings.twilio_auth_token.get_secret_value(),
        http_client=TwilioHttpClient(timeout=timeout_s),
    )
    # The REST domain's base URL is a plain attribute of the library's Domain object; staging
    # and tests point it at another host (TWILIO_API_BASE_URL).
    client.api.base_url = settings.twilio_api_base_url.rstrip("/")
    return client


def send_sms(client: Client, settings: Settings, *, to: str, body: str) -> Sent:
    sender: dict[str, str] = (
        {"messaging_service_sid": settings.twilio_messaging_service_sid}
        if settings.twilio_messaging_service_sid
        else {"from_": settings.twilio_from_number or ""}
    )
    try:
        message = client.messages.create(
            to=to,
            body=body,
            status_callback=public_url(settings, STATUS_PATH),
            **sender,
        )
    except TwilioRestException as exc:
        if exc.code in UNSUBSCRIBED_CODES:
            raise Unsubscribed(int(exc.code)) from None
        retryable = exc.status == 429 or exc.status >= 500
        raise SendError(
            f"Twilio answered {exc.status}", retryable=retryable, code=exc.code
        ) from None
    except requests.RequestException as exc:
        raise SendError(type(exc).__name__, retryable=True) from None
    segments = int(message.num_segments) if message.num_segments else None
    return Sent(sid=str(message.sid), status=str(message.status or "queued"), segments=segments)


def recently_sent(client: Client, settings: Settings, *, to: str, since: datetime) -> list[Sent]:
    """Messages Twilio holds to this number created since `since`, oldest first, with their
    bodies: how a sender that died between asking Twilio and recording the answer finds out
    whether Twilio took the message (Twilio has no idempotency key for creates)."""
    sender = {} if settings.twilio_messaging_service_sid else {"from_": settings.twilio_from_number}
    try:
        listed = client.messages.list(to=to, limit=50, **sender)
    except TwilioRestException as exc:
        raise SendError(f"Twilio answered {exc.status}", retryable=True, code=exc.code) from None
    except requests.RequestException as exc:
        raise SendError(type(exc).__name__, retryable=True) from None
    found = [
        Sent(
            sid=str(m.sid),
            status=str(m.status or "queued"),
            segments=int(m.num_segments) if m.num_segments else None,
            body=str(m.body or ""),
        )
        for m in reversed(listed)
        if m.date_created is None or m.date_created >= since
    ]
    return found


def code_sender(settings: Settings) -> Callable[[str, str], Awaitable[None]]:
    """Sends one-time codes at once from the web app (the patient is waiting for it), with a
    few quick retries; the code itself is never stored."""
    client: list[Client] = []

    @retry(
        retry=retry_if_exception(lambda exc: isinstance(exc, SendError) and exc.retryable),
        stop=stop_after_attempt(3),
        wait=wait_exponential(multiplier=0.5, max=4),
        reraise=True,
    )
    def send_now(to: str, body: str) -> Sent:
        if not client:
            client.append(make_client(settings))
        return send_sms(client[0], settings, to=to, body=body)

    async def send(to: str, body: str) -> None:
        try:
            await asyncio.to_thread(send_now, to, body)
        except Unsubscribed:
            raise CodeNotSent(opted_out=True) from None
        except SendError:
            log.warning("could not send a one-time code by SMS")
            raise CodeNotSent() from None

    return send
