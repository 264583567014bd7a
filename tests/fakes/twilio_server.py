"""A local stand-in for Twilio's Programmable Messaging REST API, the Voice Calls resource, and
their webhooks.

It speaks the documented wire format (form-encoded requests, the Message resource JSON, the
`{code, message, more_info, status}` error body, signed status callbacks) closely enough for the
official `twilio` library to drive it, so the SMS channel is tested through the real client
rather than mocks. Like the fakes in `llm_servers.py`, it runs uvicorn on its own thread and
event loop, so it keeps serving (and sending callbacks) whatever the test's loop is doing.

    with FakeTwilio() as fake:
        client = Client(fake.account_sid, fake.auth_token)
        client.api.base_url = fake.base_url
        fake.set_outcome("+15558675310", "undelivered", error_code="30003")
        message = client.messages.create(
            to="+15558675310", from_="+15017122661", body="Hi", status_callback=url
        )
        fake.wait_for_callbacks(2)  # "sent", then "undelivered", each signed
        client.api.v2010.account.messages(message.sid).fetch().status  # "undelivered"

Pointing the official client at the fake. The REST API lives on the `api` domain
(`twilio.rest.api.ApiBase`, a `twilio.base.domain.Domain`); every request for
`client.messages...` and `client.api.v2010.account.messages(sid)...` is built by
`Domain.absolute_url()` from that domain object's `base_url` attribute (set to
"https://api.twilio.com" by its constructor) at request time. Assigning the attribute is
therefore all it takes, before or after the first call, for the sync and the async
(`create_async`/`fetch_async`) paths alike:

    client = Client(fake.account_sid, fake.auth_token)
    client.api.base_url = fake.base_url  # "http://127.0.0.1:PORT", no trailing path

Only the `api` domain moves (Messaging Services on `client.messaging` would need
`client.messaging.base_url` the same way; this fake does not serve them). The one thing that
rewrites hosts afterwards is `ClientBase.get_hostname()`, and only when an edge or region is set
(`edge=`/`region=` or the TWILIO_EDGE/TWILIO_REGION environment variables): leave both unset.

Outcomes are scripted per recipient: `set_outcome(number, "delivered"|"undelivered"|"failed")`.
After a create the fake moves the message along Twilio's lifecycle on its own loop (a "sent" step,
then the final status; a "failed" message is never sent, so it has only the final step), every
`callback_delay_s`, and POSTs a status callback for each step when the create named a
StatusCallback. `callback_order = "reversed"` posts the final status before "sent", as Twilio may
when the carrier's receipt overtakes its own event; the stored resource never goes back from a
final status.

Calls (`.../Calls/{CallSid}.json`, GET and POST) serve the phone channel's mid-call
`client.calls(sid).update(twiml=...|url=..., status="completed")`. The fake knows only calls it
was told of: `inbound_call(...)` returns the incoming-call webhook's fields and registers that
call as in-progress (`add_call` registers one directly); other sids answer 404. Applied updates
land in `call_updates`; after `end_call(sid)` an update answers 400, code 21220, as Twilio does.

`wait_for_callbacks`/`wait_for_status`/`wait_for_call_update` block the calling thread. From an
async test whose app serves the callback URL on that same event loop, call them via
`asyncio.to_thread`, or the app could never answer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hmac
import re
import secrets
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Literal, NamedTuple, Self
from urllib.parse import parse_qsl

import httpx
import phonenumbers
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# twilio ships no py.typed; `unused-ignore` keeps this quiet once mypy is told to skip it.
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped, unused-ignore]

from tests.fakes.threaded import ThreadedServer

API_VERSION = "2010-04-01"
FINAL_STATUSES = ("delivered", "undelivered", "failed")
Outcome = Literal["delivered", "undelivered", "failed"]
CallbackOrder = Literal["in_order", "reversed"]

# Twilio's error codes for the HTTP-level failures a test scripts with `fail_next`, when it
# names no code of its own.
_DEFAULT_CODES = {401: 20003, 403: 20403, 404: 20404, 429: 20429, 500: 20500, 503: 20503}
_MESSAGES = {
    20003: "Authenticate",
    20403: "Forbidden",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    20503: "Service Unavailable",
    21220: "Call is not in-progress. Cannot redirect.",
    30003: "Unreachable destination handset",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
}
# What a final status reports when the test set no error code: the commonest causes.
_DEFAULT_OUTCOME_CODES = {"undelivered": "30003", "failed": "30008"}

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
# A channel address such as whatsapp:+15551234567 carries an E.164 number after the prefix.
_CHANNEL_PREFIX = re.compile(r"^[a-z]+:")

# GSM 03.38: the basic set costs one septet, the extension set two (an escape, then the char).
_GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = set("\f^{}\\[~]|€")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class RecordedRequest(NamedTuple):
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    form: list[tuple[str, str]]  # the form fields in order; repeated names (MediaUrl) repeat
    query: dict[str, str]

    def get(self, name: str) -> str | None:
        """The first value of a form field, or None."""
        return next((value for key, value in self.form if key == name), None)

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.form if key == name]


class Callback(NamedTuple):
    """A status callback the fake sent; `status` is the HTTP status the app answered (0: none)."""

    url: str
    params: dict[str, str]
    status: int


@dataclass(frozen=True)
class _Failure:
    status: int
    code: int
    retry_after: str | None


def sid(prefix: str) -> str:
    """A Twilio SID: two letters, then 32 lower-case hex digits."""
    return prefix + secrets.token_hex(16)


def rfc2822(moment: datetime) -> str:
    """Twilio's timestamp format, e.g. "Thu, 24 Aug 2023 05:01:45 +0000", locale-free."""
    moment = moment.astimezone(UTC)
    return (
        f"{_DAYS[moment.weekday()]}, {moment.day:02d} {_MONTHS[moment.month - 1]} "
        f"{moment.year} {moment:%H:%M:%S} +0000"
    )


def num_segments(body: str) -> int:
    """How many SMS parts Twilio bills for `body`.

    GSM-7 when every character is in GSM 03.38: 160 septets in one part, else 153 per part (the
    rest is the concatenation header), and an escaped extension character is never split. Any
    other character makes it UCS-2: 70 UTF-16 units in one part, else 67, with surrogate pairs
    kept whole.
    """
    if not body:
        return 1
    if all(char in _GSM7_BASIC or char in _GSM7_EXTENSION for char in body):
        costs = [2 if char in _GSM7_EXTENSION else 1 for char in body]
        single, multi = 160, 153
    else:
        costs = [2 if ord(char) > 0xFFFF else 1 for char in body]
        single, multi = 70, 67
    if sum(costs) <= single:
        return 1
    parts, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            parts, used = parts + 1, 0
        used += cost
    return parts


def sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    """The X-Twilio-Signature Twilio sends with a webhook POST of `params` to `url`."""
    return str(RequestValidator(auth_token).compute_signature(url, params))


def _country(number: str) -> str:
    try:
        parsed = phonenumbers.parse(_CHANNEL_PREFIX.sub("", number))
    except phonenumbers.NumberParseException:
        return ""
    # Fictional numbers (555-01xx, Ofcom's drama ranges) have no region of their own; their
    # calling code still names the country Twilio would report.
    region = phonenumbers.region_code_for_number(parsed) or (
        phonenumbers.region_code_for_country_code(parsed.country_code or 0)
    )
    return "" if region in (None, "ZZ") else str(region)


def inbound_sms_params(
    *,
    account_sid: str,
    from_: str,
    to: str,
    body: str,
    media: Sequence[tuple[str, str]] = (),
    message_sid: str | None = None,
    messaging_service_sid: str | None = None,
) -> dict[str, str]:
    """The form fields Twilio POSTs to a number's incoming-message webhook.

    `media` is (url, content type) per attachment. Twilio fills the geographic fields from its
    number data and sends them empty when it has none; the fake knows only the country.
    """
    message_sid = message_sid or sid("MM" if media else "SM")
    params = {
        "ToCountry": _country(to),
        "ToState": "",
        "SmsMessageSid": message_sid,
        "NumMedia": str(len(media)),
        "ToCity": "",
        "FromZip": "",
        "SmsSid": message_sid,
        "FromState": "",
        "SmsStatus": "received",
        "FromCity": "",
        "Body": body,
        "FromCountry": _country(from_),
        "To": to,
        "ToZip": "",
        "NumSegments": str(num_segments(body)),
        "MessageSid": message_sid,
        "AccountSid": account_sid,
        "From": from_,
        "ApiVersion": API_VERSION,
    }
    if messaging_service_sid:
        params["MessagingServiceSid"] = messaging_service_sid
    for index, (url, content_type) in enumerate(media):
        params[f"MediaContentType{index}"] = content_type
        params[f"MediaUrl{index}"] = url
    return params


# What the clinic's SIP set-up looks like from Twilio: a SIP Domain, and a 3CX PBX that sends its
# INVITEs over a SIP trunk from one address (TEST-NET-3, so it can never be a real host).
SIP_DOMAIN = "clinic.sip.twilio.com"
PBX_HOST = "203.0.113.10"
CALL_FINAL_STATUSES = ("completed", "busy", "no-answer", "failed", "canceled")
_CALL_STATUSES = ("queued", "initiated", "ringing", "in-progress", *CALL_FINAL_STATUSES)
_DIAL_CALL_STATUSES = ("completed", "answered", "busy", "no-answer", "failed", "canceled")


def _call_params(
    *, account_sid: str, call_sid: str, from_: str, to: str, call_status: str, direction: str
) -> dict[str, str]:
    """The parameters Twilio sends with every Voice webhook of a call (the "standard" set).

    The geographic fields come only for phone numbers (empty where Twilio has no data; the fake
    knows only the country). A SIP URI or a client identifier has no number data at all.
    """
    if call_status not in _CALL_STATUSES:
        raise ValueError(f"not a call status: {call_status!r}")
    params = {
        "CallSid": call_sid,
        "AccountSid": account_sid,
        "From": from_,
        "To": to,
        "CallStatus": call_status,
        "ApiVersion": API_VERSION,
        "Direction": direction,
        "ForwardedFrom": "",
        "CallerName": "",
        # The older names for From and To, which Twilio still sends alongside them.
        "Caller": from_,
        "Called": to,
    }
    for party, number, legacy in (("From", from_, "Caller"), ("To", to, "Called")):
        if "@" in number or not _E164.match(number):
            continue
        for field in ("City", "State", "Zip"):
            params[party + field] = params[legacy + field] = ""
        params[party + "Country"] = params[legacy + "Country"] = _country(number)
    return params


def inbound_call_params(
    *,
    account_sid: str,
    from_: str,
    to: str,
    call_sid: str | None = None,
    call_status: str = "ringing",
    direction: str = "inbound",
    sip: bool = False,
    extra: Mapping[str, str] | None = None,
    sip_domain: str = SIP_DOMAIN,
    pbx_host: str = PBX_HOST,
    sip_headers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The form fields Twilio POSTs to a number's (or a SIP Domain's) incoming-call webhook.

    With `sip`, the call reaches a Twilio SIP Domain from the clinic's PBX (3CX over a SIP
    trunk): From is `sip:<from_>@<pbx_host>`, To is `sip:<to>@<sip_domain>`, and Twilio adds
    SipDomain, SipDomainSid, SipCallId (the INVITE's Call-ID) and SipSourceIp, plus one
    `SipHeader_<name>` per X- header of the INVITE (`sip_headers`). `extra` is applied last.
    """
    if sip:
        from_, to = f"sip:{from_}@{pbx_host}", f"sip:{to}@{sip_domain}"
    params = _call_params(
        account_sid=account_sid,
        call_sid=call_sid or sid("CA"),
        from_=from_,
        to=to,
        call_status=call_status,
        direction=direction,
    )
    if sip:
        params["SipDomain"] = sip_domain
        params["SipDomainSid"] = sid("SD")
        params["SipCallId"] = f"{secrets.token_hex(16)}@{pbx_host}"
        params["SipSourceIp"] = pbx_host
        for name, value in (sip_headers or {}).items():
            if not name.lower().startswith("x-"):
                raise ValueError(f"Twilio passes on only X- headers, not {name!r}")
            params[f"SipHeader_{name}"] = value
    elif sip_headers:
        raise ValueError("sip_headers needs sip=True")
    params.update(extra or {})
    return params


def call_status_params(
    *,
    account_sid: str,
    from_: str,
    to: str,
    call_sid: str,
    call_status: str = "completed",
    call_duration: int = 0,
    sequence_number: int = 0,
    timestamp: datetime | None = None,
    direction: str = "inbound",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The form fields of a call's status callback (`StatusCallback`/`statusCallbackEvent`).

    The standard call parameters plus Timestamp (RFC 2822), CallbackSource (always
    "call-progress-events") and SequenceNumber (from 0, in the order Twilio sent them). A final
    status (completed, busy, no-answer, failed, canceled) also carries CallDuration, in seconds:
    0 for a call nobody answered. `from_`/`to` go in as given, SIP URIs included.
    """
    params = _call_params(
        account_sid=account_sid,
        call_sid=call_sid,
        from_=from_,
        to=to,
        call_status=call_status,
        direction=direction,
    )
    params["Timestamp"] = rfc2822(timestamp or datetime.now(UTC))
    params["CallbackSource"] = "call-progress-events"
    params["SequenceNumber"] = str(sequence_number)
    if call_status in CALL_FINAL_STATUSES:
        params["CallDuration"] = str(call_duration if call_status == "completed" else 0)
    params.update(extra or {})
    return params


def dial_action_params(
    *,
    account_sid: str,
    from_: str,
    to: str,
    call_sid: str,
    dial_call_status: str = "completed",
    dial_call_sid: str | None = None,
    dial_call_duration: int = 0,
    call_status: str = "in-progress",
    direction: str = "inbound",
    sip_response_code: int | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The form fields Twilio sends to a `<Dial action>` URL when the dialled leg ends.

    The standard parameters of the original (parent) call, whose CallStatus is "in-progress"
    while the caller is still on the line and "completed" once they hung up, plus DialCallStatus
    (completed, answered, busy, no-answer, failed, canceled), DialCallSid (the child leg),
    DialBridged ("true" when the two were connected) and, for a connected leg, DialCallDuration
    in seconds. With `sip_response_code` the leg was a `<Dial><Sip>` (to the PBX, say): Twilio
    adds DialSipResponseCode (the INVITE's final response: 200, 486, ...) and DialSipCallId.
    """
    if dial_call_status not in _DIAL_CALL_STATUSES:
        raise ValueError(f"not a DialCallStatus: {dial_call_status!r}")
    params = _call_params(
        account_sid=account_sid,
        call_sid=call_sid,
        from_=from_,
        to=to,
        call_status=call_status,
        direction=direction,
    )
    bridged = dial_call_status in ("completed", "answered")
    params["DialCallStatus"] = dial_call_status
    params["DialCallSid"] = dial_call_sid or sid("CA")
    params["DialBridged"] = "true" if bridged else "false"
    if bridged:
        params["DialCallDuration"] = str(dial_call_duration)
    if sip_response_code is not None:
        params["DialSipResponseCode"] = str(sip_response_code)
        params["DialSipCallId"] = f"{secrets.token_hex(16)}@0.0.0.0"
    params.update(extra or {})
    return params


class FakeTwilio:
    """`/2010-04-01/Accounts/{AccountSid}/Messages.json` and friends; see the module docstring."""

    def __init__(
        self,
        account_sid: str | None = None,
        auth_token: str | None = None,
        *,
        service_number: str = "+15017122661",
    ) -> None:
        self.account_sid = account_sid or sid("AC")
        self.auth_token = auth_token or secrets.token_hex(16)
        # The number a messaging service "picks" when it sends: Twilio fills `from` then.
        self.service_number = service_number
        self.callback_order: CallbackOrder = "in_order"
        self.callback_delay_s = 0.05
        self.port = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._messages: list[dict[str, Any]] = []
        self._by_sid: dict[str, dict[str, Any]] = {}
        self._requests: list[RecordedRequest] = []
        self._callbacks: list[Callback] = []
        self._failures: deque[_Failure] = deque()
        self._opted_out: set[str] = set()
        self._outcomes: dict[str, tuple[Outcome, str | None]] = {}
        self._media: dict[str, tuple[bytes, str]] = {}
        self._calls: dict[str, dict[str, Any]] = {}
        self._call_updates: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._http = ThreadedServer("FakeTwilio")

    # -- control, from the test's side ---------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The created Message resources as last served, oldest first (copies)."""
        with self._lock:
            return copy.deepcopy(self._messages)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def callbacks(self) -> list[Callback]:
        with self._lock:
            return list(self._callbacks)

    @property
    def calls(self) -> list[dict[str, Any]]:
        """The known Call resources as they would be served now, oldest first (copies)."""
        with self._lock:
            return copy.deepcopy(list(self._calls.values()))

    @property
    def call_updates(self) -> list[dict[str, Any]]:
        """The call updates the fake applied, oldest first: call_sid, twiml, url, method, status
        (each None when not sent) and time (an aware UTC datetime). Refused ones are not here."""
        with self._lock:
            return copy.deepcopy(self._call_updates)

    def fail_next(
        self, status: int, code: int | None = None, times: int = 1, retry_after: str | None = None
    ) -> None:
        """Answer the next `times` message creates or call updates (one queue, in the order they
        arrive) with this error, creating or changing nothing."""
        code = code if code is not None else _DEFAULT_CODES.get(status, status)
        with self._lock:
            self._failures.extend(_Failure(status, code, retry_after) for _ in range(times))

    def opt_out(self, number: str) -> None:
        """The recipient texted STOP: creates to it fail with 21610."""
        with self._lock:
            self._opted_out.add(number)

    def opt_in(self, number: str) -> None:
        with self._lock:
            self._opted_out.discard(number)

    def set_outcome(
        self, number: str, status: Outcome = "delivered", error_code: str | None = None
    ) -> None:
        """The final status of later messages to `number` (default: delivered)."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"not a final status: {status!r}")
        if status != "delivered" and error_code is None:
            error_code = _DEFAULT_OUTCOME_CODES[status]
        with self._lock:
            self._outcomes[number] = (status, error_code)

    def add_media(self, content: bytes, content_type: str) -> str:
        """Serve `content` at a Twilio-shaped media URL (basic auth required) and return it."""
        path = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid('MM')}/Media/{sid('ME')}"
        with self._lock:
            self._media[path] = (content, content_type)
        return self.base_url + path

    def add_call(
        self,
        call_sid: str | None = None,
        *,
        from_: str,
        to: str,
        direction: str = "inbound",
        status: str = "in-progress",
    ) -> str:
        """Make a live call known to the fake (Twilio answers 404 for a call sid it never had).

        `from_`/`to` as the webhook gave them (E.164 numbers or SIP URIs). Returns the call sid.
        """
        if status not in ("queued", "ringing", "in-progress"):
            raise ValueError(f"a live call is queued, ringing or in-progress, not {status!r}")
        call_sid = call_sid or sid("CA")
        now = rfc2822(datetime.now(UTC))
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{call_sid}"
        phone_number = "@" not in to and _E164.match(to) is not None
        resource: dict[str, Any] = {
            "account_sid": self.account_sid,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": now,
            "date_updated": now,
            "direction": direction,
            "duration": None,
            "end_time": None,
            "forwarded_from": None,
            "from": from_,
            "from_formatted": _formatted(from_),
            "group_sid": None,
            "parent_call_sid": None,
            # The IncomingPhoneNumber that took an inbound call; none for a SIP Domain's call.
            "phone_number_sid": sid("PN") if direction == "inbound" and phone_number else None,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": call_sid,
            "start_time": now if status == "in-progress" else None,
            "status": status,
            "stir_verstat": None,
            "subresource_uris": {
                name: f"{uri}/{path}.json"
                for name, path in (
                    ("notifications", "Notifications"),
                    ("recordings", "Recordings"),
                    ("payments", "Payments"),
                    ("events", "Events"),
                    ("siprec", "Siprec"),
                    ("streams", "Streams"),
                    ("transcriptions", "Transcriptions"),
                    ("user_defined_message_subscriptions", "UserDefinedMessageSubscriptions"),
                    ("user_defined_messages", "UserDefinedMessages"),
                )
            },
            "to": to,
            "to_formatted": _formatted(to),
            "trunk_sid": None,
            "uri": f"{uri}.json",
        }
        with self._changed:
            self._calls[call_sid] = resource
            self._changed.notify_all()
        return call_sid

    def inbound_call(self, *, from_: str, to: str, **kwargs: Any) -> dict[str, str]:
        """`inbound_call_params` for this account, with the call made known to the fake.

        The webhook says "ringing" (Twilio asks for TwiML before it answers); the resource is
        "in-progress", as it is once the app's TwiML has answered.
        """
        params = inbound_call_params(account_sid=self.account_sid, from_=from_, to=to, **kwargs)
        self.add_call(
            params["CallSid"],
            from_=params["From"],
            to=params["To"],
            direction=params["Direction"],
        )
        return params

    def end_call(self, call_sid: str, status: str = "completed") -> None:
        """The call is over (the caller hung up, say): later updates answer 400, code 21220."""
        if status not in CALL_FINAL_STATUSES:
            raise ValueError(f"not a final call status: {status!r}")
        with self._changed:
            if call_sid not in self._calls:
                raise KeyError(f"{call_sid} is not a call the fake knows; add_call() it first")
            self._finish(self._calls[call_sid], status, datetime.now(UTC))
            self._changed.notify_all()

    def wait_for_call_update(
        self, call_sid: str, timeout: float = 10, n: int = 1
    ) -> dict[str, Any]:
        """Block until the fake has applied `n` updates to `call_sid`; return the n-th (a copy)."""

        def updates() -> list[dict[str, Any]]:
            return [u for u in self._call_updates if u["call_sid"] == call_sid]

        with self._changed:
            if not self._changed.wait_for(lambda: len(updates()) >= n, timeout):
                raise TimeoutError(
                    f"{len(updates())} of {n} updates to {call_sid} after {timeout}s: "
                    f"{self._call_updates}"
                )
            return copy.deepcopy(updates()[n - 1])

    def wait_for_callbacks(self, n: int, timeout: float = 10) -> list[Callback]:
        """Block until at least `n` status callbacks have been sent (answered or not)."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._callbacks) >= n, timeout):
                raise TimeoutError(
                    f"{len(self._callbacks)} of {n} status callbacks after {timeout}s: "
                    f"{self._callbacks}"
                )
            return list(self._callbacks)

    def wait_for_status(self, message_sid: str, status: str, timeout: float = 10) -> dict[str, Any]:
        """Block until the stored message reaches `status`; return a copy of the resource."""
        with self._changed:
            if not self._changed.wait_for(
                lambda: self._by_sid[message_sid]["status"] == status, timeout
            ):
                raise TimeoutError(
                    f"{message_sid} is {self._by_sid[message_sid]['status']}, not {status}"
                )
            return copy.deepcopy(self._by_sid[message_sid])

    def start(self) -> Self:
        prefix = f"/{API_VERSION}/Accounts/{{account_sid}}"
        app = Starlette(
            routes=[
                Route(f"{prefix}/Messages.json", self._create, methods=["POST"]),
                Route(f"{prefix}/Messages.json", self._list, methods=["GET"]),
                Route(f"{prefix}/Messages/{{message_sid}}.json", self._fetch, methods=["GET"]),
                Route(
                    f"{prefix}/Messages/{{message_sid}}/Media/{{media_sid}}",
                    self._media_content,
                    methods=["GET"],
                ),
                Route(f"{prefix}/Calls/{{call_sid}}.json", self._fetch_call, methods=["GET"]),
                Route(f"{prefix}/Calls/{{call_sid}}.json", self._update_call, methods=["POST"]),
                Route("/{path:path}", self._unknown, methods=["GET", "POST", "DELETE"]),
            ]
        )
        self._http.serve(app)
        self.port = self._http.port
        return self

    def stop(self) -> None:
        # Pending lifecycles are cancelled with the loop when uvicorn's asyncio.run returns.
        self._http.shutdown()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- serving, on the server's thread ------------------------------------------------------

    async def _record(self, request: Request) -> RecordedRequest:
        raw = await request.body()
        # parse_qsl rather than request.form(): it keeps repeated fields (MediaUrl) in order.
        form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
        recorded = RecordedRequest(
            request.method,
            request.url.path,
            dict(request.headers),
            form,
            dict(request.query_params),
        )
        with self._lock:
            self._requests.append(recorded)
        return recorded

    def _authenticated(self, request: Request) -> bool:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user, self.account_sid) and hmac.compare_digest(
            password, self.auth_token
        )

    def _refusal(self, request: Request) -> Response | None:
        """401 without the account's credentials; 404 for another account's URL."""
        if not self._authenticated(request):
            return _error(
                401,
                20003,
                "Authenticate",
                headers={"WWW-Authenticate": 'Basic realm="Twilio API"'},
            )
        if request.path_params.get("account_sid") != self.account_sid:
            return _not_found(request)
        return None

    def _scripted_failure(self) -> Response | None:
        """The next failure queued by `fail_next`, for whichever create or update comes first."""
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is None:
            return None
        headers = {"Retry-After": failure.retry_after} if failure.retry_after else None
        message = _MESSAGES.get(failure.code, "Scripted failure")
        return _error(failure.status, failure.code, message, headers=headers)

    async def _create(self, request: Request) -> Response:
        recorded = await self._record(request)
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        failed = self._scripted_failure()
        if failed is not None:
            return failed

        to = recorded.get("To") or ""
        sender = recorded.get("From") or None
        service = recorded.get("MessagingServiceSid") or None
        body = recorded.get("Body") or ""
        media_urls = recorded.get_all("MediaUrl")
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not _E164.match(_CHANNEL_PREFIX.sub("", to)):
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if sender is None and service is None:
            return _error(400, 21603, "A 'From' phone number is required.")
        if not body and not media_urls:
            return _error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return _error(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        with self._lock:
            opted_out = to in self._opted_out
            outcome, error_code = self._outcomes.get(to, ("delivered", None))
        if opted_out:
            return _error(400, 21610, "Attempt to send to unsubscribed recipient")

        message_sid = sid("MM" if media_urls else "SM")
        now = rfc2822(datetime.now(UTC))
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{message_sid}"
        resource: dict[str, Any] = {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            # With only a messaging service the sender is chosen when the message goes out, so
            # `from` is null and, as documented, `num_segments` is "0" until then. Given both,
            # Twilio sends from `From` and files the message under the service.
            "from": sender,
            "messaging_service_sid": service,
            "num_media": str(len(media_urls)),
            "num_segments": str(num_segments(body)) if sender is not None else "0",
            "price": None,
            "price_unit": "USD",
            "sid": message_sid,
            "status": "queued" if sender is not None else "accepted",
            "subresource_uris": {"media": f"{uri}/Media.json", "feedback": f"{uri}/Feedback.json"},
            "to": to,
            "uri": f"{uri}.json",
        }
        with self._changed:
            self._messages.append(resource)
            self._by_sid[message_sid] = resource
            answer = copy.deepcopy(resource)
            self._changed.notify_all()
        steps: list[Outcome | Literal["sent"]] = (
            [outcome] if outcome == "failed" else ["sent", outcome]
        )
        if self.callback_order == "reversed":
            steps.reverse()
        task = asyncio.create_task(
            self._lifecycle(
                message_sid,
                steps,
                error_code,
                recorded.get("StatusCallback") or None,
                self.callback_delay_s,
            )
        )
        # The loop holds tasks weakly; keep a reference until it is done.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return JSONResponse(answer, status_code=201, headers=_headers())

    async def _fetch(self, request: Request) -> Response:
        await self._record(request)
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        with self._lock:
            resource = self._by_sid.get(request.path_params["message_sid"])
            answer = copy.deepcopy(resource)
        if answer is None:
            return _not_found(request)
        return JSONResponse(answer, headers=_headers())

    async def _list(self, request: Request) -> Response:
        """Read multiple Message resources: `To`/`From` filters, newest first, one page (a
        sender reconciling an interrupted send asks for the recent messages to a number)."""
        await self._record(request)
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        to, sender = request.query_params.get("To"), request.query_params.get("From")
        page_size = int(request.query_params.get("PageSize", "50"))
        with self._lock:
            found = [
                copy.deepcopy(m)
                for m in reversed(self._messages)
                if (to is None or m["to"] == to) and (sender is None or m["from"] == sender)
            ][:page_size]
        uri = request.url.path
        return JSONResponse(
            {
                "messages": found,
                "first_page_uri": f"{uri}?PageSize={page_size}&Page=0",
                "next_page_uri": None,
                "previous_page_uri": None,
                "page": 0,
                "page_size": page_size,
                "start": 0,
                "end": max(len(found) - 1, 0),
                "uri": f"{uri}?PageSize={page_size}&Page=0",
            },
            headers=_headers(),
        )

    async def _media_content(self, request: Request) -> Response:
        await self._record(request)
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        with self._lock:
            media = self._media.get(request.url.path)
        if media is None:
            return _not_found(request)
        content, content_type = media
        return Response(content, media_type=content_type, headers=_headers())

    async def _fetch_call(self, request: Request) -> Response:
        await self._record(request)
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        with self._lock:
            answer = copy.deepcopy(self._calls.get(request.path_params["call_sid"]))
        if answer is None:
            return _not_found(request)
        return JSONResponse(answer, headers=_headers())

    async def _update_call(self, request: Request) -> Response:
        recorded = await self._record(request)
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        failed = self._scripted_failure()
        if failed is not None:
            return failed

        call_sid = request.path_params["call_sid"]
        status = recorded.get("Status") or None
        now = datetime.now(UTC)
        with self._changed:
            resource = self._calls.get(call_sid)
            if resource is None:
                return _not_found(request)
            if resource["status"] in CALL_FINAL_STATUSES:
                return _error(400, 21220, _MESSAGES[21220])
            if status == "completed" or (
                # As documented, "canceled" hangs up only a call not yet answered.
                status == "canceled" and resource["status"] in ("queued", "ringing")
            ):
                self._finish(resource, status, now)
            resource["date_updated"] = rfc2822(now)
            self._call_updates.append(
                {
                    "call_sid": call_sid,
                    "twiml": recorded.get("Twiml"),
                    "url": recorded.get("Url"),
                    "method": recorded.get("Method"),
                    "status": status,
                    "time": now,
                }
            )
            answer = copy.deepcopy(resource)
            self._changed.notify_all()
        return JSONResponse(answer, headers=_headers())

    @staticmethod
    def _finish(resource: dict[str, Any], status: str, now: datetime) -> None:
        """End a stored call (the caller holds the lock)."""
        resource["status"] = status
        resource["end_time"] = rfc2822(now)
        resource["date_updated"] = rfc2822(now)
        # Documented: `duration` stays empty for busy, failed, unanswered (or ongoing) calls.
        if status == "completed" and resource["start_time"] is not None:
            started = parsedate_to_datetime(resource["start_time"])
            resource["duration"] = str(max(0, int((now - started).total_seconds())))

    async def _unknown(self, request: Request) -> Response:
        await self._record(request)
        return _not_found(request)

    # -- the message's life after the 201 -------------------------------------------------------

    async def _lifecycle(
        self,
        message_sid: str,
        steps: Iterable[str],
        error_code: str | None,
        callback_url: str | None,
        delay_s: float,
    ) -> None:
        # One task per message, steps in sequence: each callback is answered (or given up on)
        # before the next is sent, so "reversed" really arrives final-status first.
        for status in steps:
            await asyncio.sleep(delay_s)
            params = self._advance(message_sid, status, error_code)
            if callback_url:
                await self._send_callback(callback_url, params)

    def _advance(self, message_sid: str, status: str, error_code: str | None) -> dict[str, str]:
        """Apply one lifecycle step to the stored resource; return its callback's parameters."""
        now = datetime.now(UTC)
        with self._changed:
            resource = self._by_sid[message_sid]
            if resource["from"] is None:
                resource["from"] = self.service_number
                resource["num_segments"] = str(num_segments(resource["body"]))
            # Anything but "failed" has left Twilio, even when its "sent" event is still due.
            if status != "failed" and resource["date_sent"] is None:
                resource["date_sent"] = rfc2822(now)
            # A late "sent" does not undo a final status that overtook it.
            if resource["status"] not in FINAL_STATUSES:
                resource["status"] = status
                if status in ("undelivered", "failed") and error_code is not None:
                    resource["error_code"] = int(error_code)
                    resource["error_message"] = _MESSAGES.get(int(error_code))
            resource["date_updated"] = rfc2822(now)
            self._changed.notify_all()
            params = {
                "ApiVersion": API_VERSION,
                "AccountSid": self.account_sid,
                "MessageSid": message_sid,
                "SmsSid": message_sid,
                "MessageStatus": status,
                "SmsStatus": status,
                "From": resource["from"] or "",
                "To": resource["to"],
            }
            if resource["messaging_service_sid"]:
                params["MessagingServiceSid"] = resource["messaging_service_sid"]
        if status in ("undelivered", "failed") and error_code is not None:
            params["ErrorCode"] = error_code
        if status == "delivered":
            # The carrier's delivery-receipt time, YYMMDDhhmm as carriers report it.
            params["RawDlrDoneDate"] = f"{now:%y%m%d%H%M}"
        return params

    async def _send_callback(self, url: str, params: dict[str, str]) -> None:
        headers = {
            "X-Twilio-Signature": sign(self.auth_token, url, params),
            "User-Agent": "TwilioProxy/1.1",
            # Twilio retries a webhook with the same token; apps may use it to deduplicate.
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
            "Accept": "*/*",
        }
        try:
            async with httpx.AsyncClient(timeout=15) as client:
                response = await client.post(url, data=params, headers=headers)
            status = response.status_code
        except httpx.HTTPError:
            # Unreachable or hung app: Twilio just logs it (error 11200) and moves on.
            status = 0
        with self._changed:
            self._callbacks.append(Callback(url, params, status))
            self._changed.notify_all()


def _headers() -> dict[str, str]:
    return {"Twilio-Request-Id": sid("RQ")}


def _error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status_code=status,
        headers={**_headers(), **(headers or {})},
    )


def _formatted(address: str) -> str:
    """A Call's `from_formatted`/`to_formatted`: North American numbers as (415) 867-5309, other
    numbers in E.164, anything else (a SIP URI, client:name) as it is."""
    if "@" in address or not _E164.match(address):
        return address
    number = phonenumbers.parse(address)
    if number.country_code == 1:
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    return address


def _not_found(request: Request) -> JSONResponse:
    return _error(404, 20404, f"The requested resource {request.url.path} was not found")
