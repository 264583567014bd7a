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
