"""The Twilio fake against the official `twilio` client: if these pass, the SMS channel's tests
exercise the real library's requests, parsing and errors rather than a mock's idea of them."""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from tests.fakes.twilio_server import (
    CallbackOrder,
    FakeTwilio,
    call_status_params,
    dial_action_params,
    inbound_call_params,
    inbound_sms_params,
    num_segments,
    sign,
)

SENDER = "+15017122661"
RECIPIENT = "+15558675310"
SERVICE = "MG" + "0" * 32
RFC2822 = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000$"
)
MESSAGE_KEYS = {
    "account_sid",
    "api_version",
    "body",
    "date_created",
    "date_sent",
    "date_updated",
    "direction",
    "error_code",
    "error_message",
    "from",
    "messaging_service_sid",
    "num_media",
    "num_segments",
    "price",
    "price_unit",
    "sid",
    "status",
    "subresource_uris",
    "to",
    "uri",
}

CALL_KEYS = {
    "account_sid",
    "answered_by",
    "api_version",
    "caller_name",
    "date_created",
    "date_updated",
    "direction",
    "duration",
    "end_time",
    "forwarded_from",
    "from",
    "from_formatted",
    "group_sid",
    "parent_call_sid",
    "phone_number_sid",
    "price",
    "price_unit",
    "queue_time",
    "sid",
    "start_time",
    "status",
    "stir_verstat",
    "subresource_uris",
    "to",
    "to_formatted",
    "trunk_sid",
    "uri",
}
CALLER = "+447700900123"
TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Say>One moment.</Say></Response>'
# The fields of every Voice webhook, and the geographic ones Twilio adds for phone numbers.
STANDARD_CALL_KEYS = {
    "CallSid",
    "AccountSid",
    "From",
    "To",
    "Caller",
    "Called",
    "CallStatus",
    "ApiVersion",
    "Direction",
    "ForwardedFrom",
    "CallerName",
}
GEO_KEYS = {
    prefix + field
    for prefix in ("From", "To", "Caller", "Called")
    for field in ("City", "State", "Zip", "Country")
}


class Receiver:
    """The app's status-callback endpoint, reduced to recording what Twilio would send it."""

    def __init__(self, answer: int = 204) -> None:
        self.answer = answer
        self.received: list[tuple[str, dict[str, str], dict[str, str]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                params = dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
                receiver.received.append((self.path, dict(self.headers.items()), params))
                self.send_response(receiver.answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep pytest's output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval: shutdown() waits up to one interval.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        # A query string too: the signature covers the URL exactly as given to Twilio.
        return f"http://127.0.0.1:{self.server.server_port}/sms/status?clinic=north"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as server:
        yield server


@pytest.fixture
def client(fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> Client:
    # An edge or region makes the client rewrite the host, which would miss the fake.
    monkeypatch.delenv("TWILIO_EDGE", raising=False)
    monkeypatch.delenv("TWILIO_REGION", raising=False)
    client = Client(fake.account_sid, fake.auth_token)
    client.api.base_url = fake.base_url
    return client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def test_create_with_from(fake: FakeTwilio, client: Client) -> None:
    message = client.messages.create(to=RECIPIENT, from_=SENDER, body="Your appointment is at 9.")

    assert re.fullmatch(r"SM[0-9a-f]{32}", message.sid)
    assert message.status == "queued"
    assert message.from_ == SENDER
    assert message.to == RECIPIENT
    assert message.body == "Your appointment is at 9."
    assert message.num_segments == "1"
    assert message.direction == "outbound-api"
    assert message.date_created is not None and message.date_sent is None
    assert message.error_code is None and message.messaging_service_sid is None
    (resource,) = fake.messages
    assert set(resource) == MESSAGE_KEYS
    assert resource["sid"] == message.sid
    assert resource["account_sid"] == fake.account_sid
    assert resource["api_version"] == "2010-04-01"
    assert resource["num_media"] == "0"
    assert resource["price"] is None and resource["price_unit"] == "USD"
    assert RFC2822.match(resource["date_created"]) and RFC2822.match(resource["date_updated"])
    uri = f"/2010-04-01/Accounts/{fake.account_sid}/Messages/{message.sid}"
    assert resource["uri"] == f"{uri}.json"
    assert resource["subresource_uris"]["media"] == f"{uri}/Media.json"
    # What went over the wire: the library's own form encoding and basic auth.
    (request,) = fake.requests
    assert request.path == f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["user-agent"].startswith("twilio-python/")
    assert request.get("To") == RECIPIENT and request.get("From") == SENDER


def test_create_with_messaging_service(fake: FakeTwilio, client: Client) -> None:
    message = client.messages.create(to=RECIPIENT, messaging_service_sid=SERVICE, body="Hello")

    assert message.status == "accepted"
    assert message.from_ is None
    assert message.messaging_service_sid == SERVICE
    assert message.num_segments == "0"  # documented: no sender, hence no segmenting, yet
    settled = fake.wait_for_status(message.sid, "delivered")
    assert settled["from"] == fake.service_number and settled["num_segments"] == "1"


def test_media_urls_are_sent_repeated(fake: FakeTwilio, client: Client) -> None:
    urls = ["https://example.org/a.jpg", "https://example.org/b.jpg"]
    message = client.messages.create(to=RECIPIENT, from_=SENDER, media_url=urls)

    assert message.num_media == "2"
    assert message.sid.startswith("MM")
    assert fake.requests[0].get_all("MediaUrl") == urls


def test_fetch_follows_the_lifecycle(fake: FakeTwilio, client: Client) -> None:
    created = client.messages.create(to=RECIPIENT, from_=SENDER, body="Hi")
    fake.wait_for_status(created.sid, "delivered")

    fetched = client.api.v2010.account.messages(created.sid).fetch()
    assert fetched.sid == created.sid
    assert fetched.status == "delivered"
    assert fetched.date_sent is not None
    assert client.messages(created.sid).fetch().status == "delivered"


def test_fetch_unknown_message(client: Client) -> None:
    with pytest.raises(TwilioRestException) as raised:
        client.messages("SM" + "f" * 32).fetch()
    assert (raised.value.status, raised.value.code) == (404, 20404)


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("a" * 160, "1"),
        ("a" * 161, "2"),
        ("a" * 306, "2"),
        ("a" * 307, "3"),
        ("€" * 80, "1"),  # extension characters cost two septets: 160
        ("€" * 81, "2"),
        ("é" * 160, "1"),  # é is in the GSM-7 basic set
        ("ł" * 70, "1"),  # ł is not: UCS-2
        ("ł" * 71, "2"),
        ("ł" * 134, "2"),
        ("ł" * 135, "3"),
        ("😀" * 35, "1"),  # a surrogate pair is two UCS-2 units
        ("😀" * 36, "2"),
    ],
)
def test_num_segments(client: Client, body: str, segments: str) -> None:
    assert client.messages.create(to=RECIPIENT, from_=SENDER, body=body).num_segments == segments


def test_num_segments_never_splits_an_escape() -> None:
    # 306 septets fit two parts of 153 only if the escape pair may straddle them; it may not.
    assert num_segments("a" * 151 + "€" + "a" * 153) == 2
    assert num_segments("a" * 152 + "€" + "a" * 152) == 3


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"to": "", "from_": SENDER, "body": "Hi"}, 21604),
        ({"to": RECIPIENT, "from_": SENDER}, 21602),
        ({"to": RECIPIENT, "body": "Hi"}, 21603),
        ({"to": RECIPIENT, "from_": SENDER, "body": "x" * 1601}, 21617),
        ({"to": "555-0100", "from_": SENDER, "body": "Hi"}, 21211),
        ({"to": "+0123", "from_": SENDER, "body": "Hi"}, 21211),
    ],
)
def test_validation_errors(
    fake: FakeTwilio, client: Client, kwargs: dict[str, Any], code: int
) -> None:
    with pytest.raises(TwilioRestException) as raised:
        client.messages.create(**kwargs)
    assert (raised.value.status, raised.value.code) == (400, code)
    assert fake.messages == []


def test_a_full_1600_character_body_is_accepted(client: Client) -> None:
    assert client.messages.create(to=RECIPIENT, from_=SENDER, body="x" * 1600).status == "queued"


def test_error_body_shape(fake: FakeTwilio, client: Client) -> None:
    response = httpx.post(
        f"{fake.base_url}/2010-04-01/Accounts/{fake.account_sid}/Messages.json",
        data={"From": SENDER, "Body": "Hi"},
        auth=(fake.account_sid, fake.auth_token),
    )
    assert response.status_code == 400
    assert response.json() == {
        "code": 21604,
        "message": "A 'To' phone number is required.",
        "more_info": "https://www.twilio.com/docs/errors/21604",
        "status": 400,
    }


def test_opted_out_recipient(fake: FakeTwilio, client: Client) -> None:
    fake.opt_out(RECIPIENT)
    with pytest.raises(TwilioRestException) as raised:
        client.messages.create(to=RECIPIENT, from_=SENDER, body="Hi")
    assert (raised.value.status, raised.value.code) == (400, 21610)
    assert "unsubscribed recipient" in raised.value.msg

    fake.opt_in(RECIPIENT)
    assert client.messages.create(to=RECIPIENT, from_=SENDER, body="Hi").status == "queued"


@pytest.mark.parametrize(
    ("status", "code", "expected_code"),
    [(429, None, 20429), (500, None, 20500), (503, 30001, 30001)],
)
def test_fail_next(
    fake: FakeTwilio, client: Client, status: int, code: int | None, expected_code: int
) -> None:
    fake.fail_next(status, code, times=2, retry_after="3")
    with pytest.raises(TwilioRestException) as raised:
        client.messages.create(to=RECIPIENT, from_=SENDER, body="Hi")
    assert (raised.value.status, raised.value.code) == (status, expected_code)
    # The client keeps no headers on its exception: look at the second failure directly.
    response = httpx.post(
        f"{fake.base_url}/2010-04-01/Accounts/{fake.account_sid}/Messages.json",
        data={"To": RECIPIENT, "From": SENDER, "Body": "Hi"},
        auth=(fake.account_sid, fake.auth_token),
    )
    assert response.status_code == status
    assert response.headers["retry-after"] == "3"
    assert response.json()["code"] == expected_code
    assert fake.messages == []
    assert client.messages.create(to=RECIPIENT, from_=SENDER, body="Hi").status == "queued"


def test_wrong_credentials(fake: FakeTwilio) -> None:
    intruder = Client(fake.account_sid, "not-the-token")
    intruder.api.base_url = fake.base_url
    with pytest.raises(TwilioRestException) as raised:
        intruder.messages.create(to=RECIPIENT, from_=SENDER, body="Hi")
    assert (raised.value.status, raised.value.code) == (401, 20003)
    with pytest.raises(TwilioRestException) as raised:
        intruder.messages("SM" + "0" * 32).fetch()
    assert (raised.value.status, raised.value.code) == (401, 20003)
    assert fake.messages == []


def test_another_accounts_url(fake: FakeTwilio) -> None:
    # Right credentials, but the path names a different account.
    other = Client(fake.account_sid, fake.auth_token, account_sid="AC" + "1" * 32)
    other.api.base_url = fake.base_url
    with pytest.raises(TwilioRestException) as raised:
        other.messages.create(to=RECIPIENT, from_=SENDER, body="Hi")
    assert (raised.value.status, raised.value.code) == (404, 20404)


def _assert_signed(fake: FakeTwilio, receiver: Receiver) -> None:
    validator = RequestValidator(fake.auth_token)
    for path, headers, params in receiver.received:
        assert path == "/sms/status?clinic=north"
        assert validator.validate(receiver.url, params, headers["X-Twilio-Signature"])
        assert headers["Content-Type"] == "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("order", "expected"),
    [("in_order", ["sent", "delivered"]), ("reversed", ["delivered", "sent"])],
)
def test_status_callbacks_delivered(
    fake: FakeTwilio,
    client: Client,
    receiver: Receiver,
    order: CallbackOrder,
    expected: list[str],
) -> None:
    fake.callback_order = order
    message = client.messages.create(
        to=RECIPIENT, from_=SENDER, body="Hi", status_callback=receiver.url
    )

    callbacks = fake.wait_for_callbacks(2)
    assert [c.params["MessageStatus"] for c in callbacks] == expected
    assert [c.status for c in callbacks] == [204, 204]
    assert [params["MessageStatus"] for _, _, params in receiver.received] == expected
    _assert_signed(fake, receiver)
    delivered = next(c.params for c in callbacks if c.params["MessageStatus"] == "delivered")
    assert delivered["MessageSid"] == delivered["SmsSid"] == message.sid
    assert delivered["SmsStatus"] == "delivered"
    assert delivered["AccountSid"] == fake.account_sid
    assert (delivered["From"], delivered["To"]) == (SENDER, RECIPIENT)
    assert delivered["ApiVersion"] == "2010-04-01"
    assert re.fullmatch(r"\d{10}", delivered["RawDlrDoneDate"])
    assert "ErrorCode" not in delivered
    # The resource ends delivered whichever event came last.
    assert client.messages(message.sid).fetch().status == "delivered"


def test_status_callbacks_undelivered(fake: FakeTwilio, client: Client, receiver: Receiver) -> None:
    fake.set_outcome(RECIPIENT, "undelivered", error_code="30005")
    message = client.messages.create(
        to=RECIPIENT, messaging_service_sid=SERVICE, body="Hi", status_callback=receiver.url
    )

    sent, undelivered = fake.wait_for_callbacks(2)
    assert (sent.params["MessageStatus"], undelivered.params["MessageStatus"]) == (
        "sent",
        "undelivered",
    )
    assert undelivered.params["ErrorCode"] == "30005"
    assert undelivered.params["MessagingServiceSid"] == SERVICE
    assert undelivered.params["From"] == fake.service_number
    _assert_signed(fake, receiver)
    fetched = client.messages(message.sid).fetch()
    assert (fetched.status, fetched.error_code) == ("undelivered", 30005)


def test_failed_message_is_never_sent(fake: FakeTwilio, client: Client, receiver: Receiver) -> None:
    fake.set_outcome(RECIPIENT, "failed")
    message = client.messages.create(
        to=RECIPIENT, from_=SENDER, body="Hi", status_callback=receiver.url
    )

    (failed,) = fake.wait_for_callbacks(1)
    assert failed.params["MessageStatus"] == "failed" and failed.params["ErrorCode"] == "30008"
    fetched = client.messages(message.sid).fetch()
    assert (fetched.status, fetched.date_sent) == ("failed", None)
    assert len(fake.callbacks) == 1


def test_the_apps_answer_is_recorded(fake: FakeTwilio, client: Client) -> None:
    with Receiver(answer=500) as failing:
        client.messages.create(to=RECIPIENT, from_=SENDER, body="Hi", status_callback=failing.url)
        assert [c.status for c in fake.wait_for_callbacks(2)] == [500, 500]


def test_unreachable_callback_is_recorded_as_0(fake: FakeTwilio, client: Client) -> None:
    with Receiver() as gone:
        url = gone.url
    client.messages.create(to=RECIPIENT, from_=SENDER, body="Hi", status_callback=url)
    assert [c.status for c in fake.wait_for_callbacks(2)] == [0, 0]


def test_no_callbacks_without_status_callback(fake: FakeTwilio, client: Client) -> None:
    message = client.messages.create(to=RECIPIENT, from_=SENDER, body="Hi")
    fake.wait_for_status(message.sid, "delivered")
    assert fake.callbacks == []


def test_media_download(fake: FakeTwilio) -> None:
    url = fake.add_media(b"\x89PNG fake image", "image/png")
    assert re.fullmatch(
        re.escape(f"{fake.base_url}/2010-04-01/Accounts/{fake.account_sid}/Messages/")
        + r"MM[0-9a-f]{32}/Media/ME[0-9a-f]{32}",
        url,
    )

    response = httpx.get(url, auth=(fake.account_sid, fake.auth_token))
    assert response.status_code == 200
    assert response.content == b"\x89PNG fake image"
    assert response.headers["content-type"] == "image/png"

    anonymous = httpx.get(url)
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == 20003
    assert httpx.get(url, auth=(fake.account_sid, "wrong")).status_code == 401
    missing = httpx.get(url[:-4] + "0000", auth=(fake.account_sid, fake.auth_token))
    assert missing.status_code == 404


def test_inbound_sms_params() -> None:
    account = "AC" + "a" * 32
    params = inbound_sms_params(
        account_sid=account,
        from_="+447700900123",
        to=SENDER,
        body="Can I move my appointment?",
        media=[("https://api.twilio.com/media/1", "image/jpeg")],
        messaging_service_sid=SERVICE,
    )

    assert set(params) == {
        "MessageSid",
        "SmsSid",
        "SmsMessageSid",
        "AccountSid",
        "MessagingServiceSid",
        "From",
        "To",
        "Body",
        "NumMedia",
        "NumSegments",
        "MediaUrl0",
        "MediaContentType0",
        "SmsStatus",
        "ApiVersion",
        "FromCity",
        "FromState",
        "FromZip",
        "FromCountry",
        "ToCity",
        "ToState",
        "ToZip",
        "ToCountry",
    }
    assert params["MessageSid"] == params["SmsSid"] == params["SmsMessageSid"]
    assert params["MessageSid"].startswith("MM")
    assert (params["NumMedia"], params["NumSegments"], params["SmsStatus"]) == (
        "1",
        "1",
        "received",
    )
    assert (params["FromCountry"], params["ToCountry"]) == ("GB", "US")
    assert params["MediaUrl0"] == "https://api.twilio.com/media/1"

    url = "https://clinic.example.org/sms/inbound"
    token = "0123456789abcdef0123456789abcdef"
    signature = sign(token, url, params)
    assert RequestValidator(token).validate(url, params, signature)
    assert not RequestValidator(token).validate(url, {**params, "Body": "tampered"}, signature)
    assert not RequestValidator("another-token").validate(url, params, signature)


def test_inbound_sms_params_without_extras() -> None:
    params = inbound_sms_params(
        account_sid="AC" + "a" * 32, from_=RECIPIENT, to=SENDER, body="Hi", message_sid="SM1"
    )
    assert params["MessageSid"] == "SM1"
    assert "MessagingServiceSid" not in params and "MediaUrl0" not in params
    assert params["NumMedia"] == "0"


def test_basic_auth_header_is_what_the_library_sends(fake: FakeTwilio, client: Client) -> None:
    client.messages.create(to=RECIPIENT, from_=SENDER, body="Hi")
    expected = base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()
    assert fake.requests[0].headers["authorization"] == f"Basic {expected}"


# -- the Calls resource ------------------------------------------------------------------------


def test_call_update_with_twiml(fake: FakeTwilio, client: Client) -> None:
    params = fake.inbound_call(from_=CALLER, to=SENDER)
    call_sid = params["CallSid"]

    call = client.calls(call_sid).update(twiml=TWIML)

    assert call.sid == call_sid
    assert call.status == "in-progress"
    # The library keeps a Call's `from` as `_from` (a Message's as `from_`).
    assert (call._from, call.to) == (CALLER, SENDER)
    assert (call.from_formatted, call.to_formatted) == (CALLER, "(501) 712-2661")
    assert call.direction == "inbound" and call.api_version == "2010-04-01"
    assert call.account_sid == fake.account_sid
    assert call.phone_number_sid is not None and call.phone_number_sid.startswith("PN")
    assert call.start_time is not None and call.end_time is None and call.duration is None
    (resource,) = fake.calls
    assert set(resource) == CALL_KEYS
    uri = f"/2010-04-01/Accounts/{fake.account_sid}/Calls/{call_sid}"
    assert resource["uri"] == f"{uri}.json"
    assert resource["subresource_uris"]["recordings"] == f"{uri}/Recordings.json"
    assert resource["price"] is None and resource["price_unit"] == "USD"
    for key in ("date_created", "date_updated", "start_time"):
        assert RFC2822.match(resource[key]), key
    # Recorded as applied, and as it went over the wire.
    update = fake.wait_for_call_update(call_sid)
    assert fake.call_updates == [update]
    assert update["twiml"] == TWIML
    assert (update["url"], update["method"], update["status"]) == (None, None, None)
    assert update["time"].tzinfo is not None
    (request,) = fake.requests
    assert request.path == f"{uri}.json"
    assert request.form == [("Twiml", TWIML)]
    # The resource fetches the same.
    fetched = client.calls(call_sid).fetch()
    assert (fetched.sid, fetched.status) == (call_sid, "in-progress")


def test_call_update_with_url(fake: FakeTwilio, client: Client) -> None:
    call_sid = fake.add_call(from_=CALLER, to=SENDER)

    client.calls(call_sid).update(url="https://clinic.example.org/voice/next", method="POST")

    update = fake.wait_for_call_update(call_sid)
    assert (update["url"], update["method"], update["twiml"]) == (
        "https://clinic.example.org/voice/next",
        "POST",
        None,
    )


def test_hang_up_then_update(fake: FakeTwilio, client: Client) -> None:
    call_sid = fake.add_call(from_=CALLER, to=SENDER)

    call = client.calls(call_sid).update(status="completed")

    assert call.status == "completed"
    assert call.end_time is not None and call.duration is not None
    assert int(call.duration) >= 0
    assert fake.wait_for_call_update(call_sid)["status"] == "completed"
    assert client.calls(call_sid).fetch().status == "completed"
    # A completed call is no longer in progress: nothing more can be done to it.
    with pytest.raises(TwilioRestException) as raised:
        client.calls(call_sid).update(twiml=TWIML)
    assert (raised.value.status, raised.value.code) == (400, 21220)
    assert len(fake.call_updates) == 1


def test_canceled_leaves_an_answered_call_alone(fake: FakeTwilio, client: Client) -> None:
    answered = fake.add_call(from_=CALLER, to=SENDER)
    ringing = fake.add_call(from_=CALLER, to=SENDER, status="ringing")

    assert client.calls(answered).update(status="canceled").status == "in-progress"
    assert client.calls(ringing).update(status="canceled").status == "canceled"


def test_update_of_an_ended_call(fake: FakeTwilio, client: Client) -> None:
    call_sid = fake.inbound_call(from_=CALLER, to=SENDER)["CallSid"]
    fake.end_call(call_sid)

    with pytest.raises(TwilioRestException) as raised:
        client.calls(call_sid).update(twiml=TWIML)
    assert (raised.value.status, raised.value.code) == (400, 21220)
    # The library prefixes the body's message ("Unable to update record: ...").
    assert raised.value.msg.endswith("Call is not in-progress. Cannot redirect.")
    with pytest.raises(TwilioRestException) as raised:
        client.calls(call_sid).update(status="completed")
    assert raised.value.code == 21220
    assert fake.call_updates == []
    # The error body, as the client does not keep all of it.
    response = httpx.post(
        f"{fake.base_url}/2010-04-01/Accounts/{fake.account_sid}/Calls/{call_sid}.json",
        data={"Twiml": TWIML},
        auth=(fake.account_sid, fake.auth_token),
    )
    assert response.status_code == 400
    assert response.json() == {
        "code": 21220,
        "message": "Call is not in-progress. Cannot redirect.",
        "more_info": "https://www.twilio.com/docs/errors/21220",
        "status": 400,
    }
    (resource,) = fake.calls
    assert resource["status"] == "completed" and resource["end_time"] is not None


def test_end_call_with_another_status(fake: FakeTwilio, client: Client) -> None:
    call_sid = fake.add_call(from_=CALLER, to=SENDER, status="ringing")
    fake.end_call(call_sid, "no-answer")
    fetched = client.calls(call_sid).fetch()
    assert (fetched.status, fetched.duration) == ("no-answer", None)
    with pytest.raises(ValueError):
        fake.end_call(call_sid, "in-progress")
    with pytest.raises(KeyError):
        fake.end_call("CA" + "0" * 32)


def test_unknown_call(client: Client) -> None:
    with pytest.raises(TwilioRestException) as raised:
        client.calls("CA" + "f" * 32).update(twiml=TWIML)
    assert (raised.value.status, raised.value.code) == (404, 20404)
    with pytest.raises(TwilioRestException) as raised:
        client.calls("CA" + "f" * 32).fetch()
    assert (raised.value.status, raised.value.code) == (404, 20404)


def test_call_update_wrong_credentials(fake: FakeTwilio) -> None:
    call_sid = fake.add_call(from_=CALLER, to=SENDER)
    intruder = Client(fake.account_sid, "not-the-token")
    intruder.api.base_url = fake.base_url
    with pytest.raises(TwilioRestException) as raised:
        intruder.calls(call_sid).update(twiml=TWIML)
    assert (raised.value.status, raised.value.code) == (401, 20003)
    with pytest.raises(TwilioRestException) as raised:
        intruder.calls(call_sid).fetch()
    assert (raised.value.status, raised.value.code) == (401, 20003)
    anonymous = httpx.post(
        f"{fake.base_url}/2010-04-01/Accounts/{fake.account_sid}/Calls/{call_sid}.json",
        data={"Twiml": TWIML},
    )
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Basic realm="Twilio API"'
    assert fake.call_updates == []


def test_call_update_another_accounts_url(fake: FakeTwilio) -> None:
    call_sid = fake.add_call(from_=CALLER, to=SENDER)
    other = Client(fake.account_sid, fake.auth_token, account_sid="AC" + "1" * 32)
    other.api.base_url = fake.base_url
    with pytest.raises(TwilioRestException) as raised:
        other.calls(call_sid).update(twiml=TWIML)
    assert (raised.value.status, raised.value.code) == (404, 20404)
    assert fake.call_updates == []


def test_fail_next_applies_to_call_updates(fake: FakeTwilio, client: Client) -> None:
    call_sid = fake.add_call(from_=CALLER, to=SENDER)
    fake.fail_next(503, retry_after="1")

    with pytest.raises(TwilioRestException) as raised:
        client.calls(call_sid).update(twiml=TWIML)
    assert (raised.value.status, raised.value.code) == (503, 20503)
    assert fake.call_updates == []
    assert client.calls(call_sid).update(twiml=TWIML).status == "in-progress"
    assert len(fake.call_updates) == 1


def test_wait_for_call_update(fake: FakeTwilio, client: Client) -> None:
    call_sid = fake.add_call(from_=CALLER, to=SENDER)
    other_sid = fake.add_call(from_=RECIPIENT, to=SENDER)
    with pytest.raises(TimeoutError):
        fake.wait_for_call_update(call_sid, timeout=0.1)

    # From another thread, as the app under test would.
    def redirect_then_hang_up() -> None:
        client.calls(other_sid).update(twiml=TWIML)
        client.calls(call_sid).update(twiml=TWIML)
        client.calls(call_sid).update(status="completed")

    worker = threading.Thread(target=redirect_then_hang_up)
    worker.start()
    try:
        assert fake.wait_for_call_update(call_sid, n=2)["status"] == "completed"
        assert fake.wait_for_call_update(call_sid)["twiml"] == TWIML
    finally:
        worker.join()
    assert [u["call_sid"] for u in fake.call_updates] == [other_sid, call_sid, call_sid]


def test_sip_call_resource(fake: FakeTwilio, client: Client) -> None:
    params = fake.inbound_call(from_=CALLER, to=SENDER, sip=True)

    call = client.calls(params["CallSid"]).update(twiml=TWIML)
    assert (call._from, call.to) == (params["From"], params["To"])
    assert call.from_formatted == params["From"]
    assert call.phone_number_sid is None  # a SIP Domain took it, not a number


# -- the Voice webhooks' parameters -------------------------------------------------------------


def test_inbound_call_params() -> None:
    account = "AC" + "a" * 32
    params = inbound_call_params(account_sid=account, from_=CALLER, to=SENDER)

    assert set(params) == STANDARD_CALL_KEYS | GEO_KEYS
    assert re.fullmatch(r"CA[0-9a-f]{32}", params["CallSid"])
    assert params["AccountSid"] == account
    assert (params["From"], params["To"]) == (CALLER, SENDER)
    assert (params["Caller"], params["Called"]) == (CALLER, SENDER)
    assert (params["CallStatus"], params["Direction"]) == ("ringing", "inbound")
    assert params["ApiVersion"] == "2010-04-01"
    assert params["ForwardedFrom"] == params["CallerName"] == ""
    assert (params["FromCountry"], params["ToCountry"]) == ("GB", "US")
    assert (params["CallerCountry"], params["CalledCountry"]) == ("GB", "US")
    assert params["FromCity"] == params["ToZip"] == ""

    again = inbound_call_params(
        account_sid=account,
        from_=CALLER,
        to=SENDER,
        call_sid="CA1",
        call_status="in-progress",
        extra={"CallerName": "JANE DOE", "StirVerstat": "TN-Validation-Passed-A"},
    )
    assert again["CallSid"] == "CA1" and again["CallStatus"] == "in-progress"
    assert again["CallerName"] == "JANE DOE"
    assert again["StirVerstat"] == "TN-Validation-Passed-A"
    with pytest.raises(ValueError):
        inbound_call_params(account_sid=account, from_=CALLER, to=SENDER, call_status="answered")


def test_inbound_call_params_sip() -> None:
    account = "AC" + "a" * 32
    params = inbound_call_params(
        account_sid=account,
        from_=CALLER,
        to=SENDER,
        sip=True,
        sip_headers={"X-3CX-Extension": "100"},
    )

    assert params["From"] == params["Caller"] == f"sip:{CALLER}@203.0.113.10"
    assert params["To"] == params["Called"] == f"sip:{SENDER}@clinic.sip.twilio.com"
    assert params["SipDomain"] == "clinic.sip.twilio.com"
    assert re.fullmatch(r"SD[0-9a-f]{32}", params["SipDomainSid"])
    assert params["SipSourceIp"] == "203.0.113.10"
    assert params["SipCallId"].endswith("@203.0.113.10")
    assert params["SipHeader_X-3CX-Extension"] == "100"
    # A SIP URI carries no number data, so there are no geographic fields.
    assert set(params) == STANDARD_CALL_KEYS | {
        "SipDomain",
        "SipDomainSid",
        "SipCallId",
        "SipSourceIp",
        "SipHeader_X-3CX-Extension",
    }
    with pytest.raises(ValueError):
        inbound_call_params(
            account_sid=account, from_=CALLER, to=SENDER, sip=True, sip_headers={"Via": "x"}
        )

    # The library's own signature and the fake's `sign` agree, so the app's validation of a
    # webhook the fake signs is the validation Twilio's requests go through.
    url = "https://clinic.example.org/voice/inbound?clinic=north"
    token = "0123456789abcdef0123456789abcdef"
    validator = RequestValidator(token)
    signature = validator.compute_signature(url, params)
    assert signature == sign(token, url, params)
    assert validator.validate(url, params, sign(token, url, params))
    assert not validator.validate(url, {**params, "From": "sip:evil@198.51.100.1"}, signature)
    assert not RequestValidator("another-token").validate(url, params, signature)


def test_fake_inbound_call_uses_its_account(fake: FakeTwilio) -> None:
    params = fake.inbound_call(from_=CALLER, to=SENDER, call_status="ringing")
    assert params["AccountSid"] == fake.account_sid
    assert [c["sid"] for c in fake.calls] == [params["CallSid"]]


@pytest.mark.parametrize(
    ("status", "duration"),
    [("completed", "42"), ("busy", "0"), ("no-answer", "0"), ("failed", "0"), ("ringing", None)],
)
def test_call_status_params(status: str, duration: str | None) -> None:
    params = call_status_params(
        account_sid="AC" + "a" * 32,
        from_=CALLER,
        to=SENDER,
        call_sid="CA" + "b" * 32,
        call_status=status,
        call_duration=42,
        sequence_number=3,
    )

    callback_keys = {"Timestamp", "CallbackSource", "SequenceNumber"}
    if duration is not None:
        callback_keys.add("CallDuration")
    assert set(params) == STANDARD_CALL_KEYS | GEO_KEYS | callback_keys
    assert params["CallStatus"] == status
    assert params["CallbackSource"] == "call-progress-events"
    assert params["SequenceNumber"] == "3"
    assert RFC2822.match(params["Timestamp"])
    assert params.get("CallDuration") == duration


def test_dial_action_params() -> None:
    common: dict[str, Any] = {
        "account_sid": "AC" + "a" * 32,
        "from_": CALLER,
        "to": SENDER,
        "call_sid": "CA" + "b" * 32,
    }
    connected = dial_action_params(**common, dial_call_duration=95, sip_response_code=200)
    assert set(connected) == STANDARD_CALL_KEYS | GEO_KEYS | {
        "DialCallStatus",
        "DialCallSid",
        "DialCallDuration",
        "DialBridged",
        "DialSipResponseCode",
        "DialSipCallId",
    }
    assert connected["CallSid"] == "CA" + "b" * 32
    assert connected["CallStatus"] == "in-progress"
    assert connected["DialCallStatus"] == "completed"
    assert re.fullmatch(r"CA[0-9a-f]{32}", connected["DialCallSid"])
    assert connected["DialCallSid"] != connected["CallSid"]
    assert (connected["DialCallDuration"], connected["DialBridged"]) == ("95", "true")
    assert connected["DialSipResponseCode"] == "200" and connected["DialSipCallId"]

    busy = dial_action_params(**common, dial_call_status="busy", dial_call_sid="CA2")
    assert (busy["DialCallStatus"], busy["DialCallSid"], busy["DialBridged"]) == (
        "busy",
        "CA2",
        "false",
    )
    assert "DialCallDuration" not in busy and "DialSipResponseCode" not in busy
    with pytest.raises(ValueError):
        dial_action_params(**common, dial_call_status="ringing")
