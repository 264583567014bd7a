"""What the SMS webhooks refuse: no valid Twilio signature for the public URL, another account,
broken or huge forms; and a refused request stores nothing. No worker or Rasa needed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from sqlalchemy import func, select

from core.db import make_sync_engine
from core.orm import DeliveryEvent, Message
from core.settings import Settings
from tests.fakes.twilio_server import inbound_sms_params, sign
from tests.support import free_port, running_app

ACCOUNT = "AC" + "1" * 32
TOKEN = "a" * 32
PATIENT = "+12025550123"


@pytest.fixture
async def app(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    port = free_port()
    settings = make_settings(
        database_url=sqlite_url,
        # Behind a proxy: Twilio signs the public https URL, not what uvicorn sees.
        public_base_url="https://clinic.example.org",
        twilio_account_sid=ACCOUNT,
        twilio_auth_token=TOKEN,
        twilio_from_number="+15017122661",
    )
    async with (
        running_app(settings, port=port) as (url, _),
        httpx.AsyncClient(base_url=url) as client,
    ):
        yield client, settings


def count_messages(settings: Settings) -> int:
    with make_sync_engine(settings.database_url).connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(Message)) or 0)


async def test_only_requests_signed_for_the_public_url_are_accepted(
    app: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, settings = app
    params = inbound_sms_params(account_sid=ACCOUNT, from_=PATIENT, to="+15017122661", body="hi")
    public = "https://clinic.example.org/channels/sms/twilio"
    before = count_messages(settings)

    unsigned = await client.post("/channels/sms/twilio", data=params)
    forged = await client.post(
        "/channels/sms/twilio",
        data=params,
        headers={"X-Twilio-Signature": sign("b" * 32, public, params)},
    )
    # Signed for the address uvicorn sees instead of the public one: what a proxy misconfig gives.
    local = str(client.base_url) + "/channels/sms/twilio"
    wrong_url = await client.post(
        "/channels/sms/twilio",
        data=params,
        headers={"X-Twilio-Signature": sign(TOKEN, local, params)},
    )
    tampered = {**params, "Body": "hi, call me"}
    altered = await client.post(
        "/channels/sms/twilio",
        data=tampered,
        headers={"X-Twilio-Signature": sign(TOKEN, public, params)},
    )
    other = {**params, "AccountSid": "AC" + "2" * 32}
    other_account = await client.post(
        "/channels/sms/twilio",
        data=other,
        headers={"X-Twilio-Signature": sign(TOKEN, public, other)},
    )
    assert [r.status_code for r in (unsigned, forged, wrong_url, altered, other_account)] == [
        403
    ] * 5
    assert count_messages(settings) == before

    good = await client.post(
        "/channels/sms/twilio",
        data=params,
        headers={"X-Twilio-Signature": sign(TOKEN, public, params)},
    )
    assert good.status_code == 200 and good.text.endswith("<Response></Response>")
    assert count_messages(settings) == before + 1
    # Replayed: acknowledged, never stored (or answered) twice.
    replay = await client.post(
        "/channels/sms/twilio",
        data=params,
        headers={"X-Twilio-Signature": sign(TOKEN, public, params)},
    )
    assert replay.status_code == 200 and count_messages(settings) == before + 1


async def test_broken_forms_get_clear_errors_not_500s(
    app: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, _ = app
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"}
    latin1 = await client.post(
        "/channels/sms/twilio", content="Body=caf\xe9".encode("latin-1"), headers=headers
    )
    huge = await client.post(
        "/channels/sms/twilio", content=b"Body=" + b"a" * 70_000, headers=headers
    )
    garbage = await client.post("/channels/sms/twilio", content=b"\x00\xff%%%=&&", headers=headers)
    assert latin1.status_code == 400 and huge.status_code == 413
    assert garbage.status_code in (400, 403)
    # A signed webhook without a sender or MessageSid is acknowledged and ignored.
    public = "https://clinic.example.org/channels/sms/twilio"
    empty = {"AccountSid": ACCOUNT, "Body": "hi"}
    ignored = await client.post(
        "/channels/sms/twilio",
        data=empty,
        headers={"X-Twilio-Signature": sign(TOKEN, public, empty)},
    )
    assert ignored.status_code == 200


async def test_status_callbacks_must_be_signed_and_are_kept_even_before_the_send_is(
    app: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, settings = app
    url = "https://clinic.example.org/channels/sms/twilio/status"
    report = {
        "AccountSid": ACCOUNT,
        "MessageSid": "SM" + "3" * 32,
        "MessageStatus": "delivered",
        "To": PATIENT,
        "ApiVersion": "2010-04-01",
    }
    forged = await client.post(
        "/channels/sms/twilio/status", data=report, headers={"X-Twilio-Signature": "nope"}
    )
    assert forged.status_code == 403
    signed = {"X-Twilio-Signature": sign(TOKEN, url, report)}
    first = await client.post("/channels/sms/twilio/status", data=report, headers=signed)
    again = await client.post("/channels/sms/twilio/status", data=report, headers=signed)
    assert first.status_code == 200 and again.status_code == 200
    with make_sync_engine(settings.database_url).connect() as connection:
        stored = connection.scalars(
            select(DeliveryEvent.status).where(
                DeliveryEvent.vendor_message_id == report["MessageSid"]
            )
        ).all()
    assert stored == ["delivered"]


async def test_sms_is_off_until_configured(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    settings = make_settings(database_url=sqlite_url)
    async with running_app(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/channels/sms/twilio", data={"Body": "hi"})
    assert response.status_code == 503 and "not configured" in response.text


async def test_a_flood_is_stored_and_marked_not_refused(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    """Twilio would not resend a refused text, so one over the rate is kept (for the safety
    layer and for staff) and marked; the worker does not run the dialogue on it."""
    settings = make_settings(
        database_url=sqlite_url,
        public_base_url="https://clinic.example.org",
        twilio_account_sid=ACCOUNT,
        twilio_auth_token=TOKEN,
        twilio_from_number="+15017122661",
        rate_limit_per_sender="2/minute",
    )
    public = "https://clinic.example.org/channels/sms/twilio"
    sender = "+12025550177"
    async with running_app(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        for body in ("one", "two", "three"):
            params = inbound_sms_params(
                account_sid=ACCOUNT, from_=sender, to="+15017122661", body=body
            )
            response = await client.post(
                "/channels/sms/twilio",
                data=params,
                headers={"X-Twilio-Signature": sign(TOKEN, public, params)},
            )
            assert response.status_code == 200
    with make_sync_engine(settings.database_url).connect() as connection:
        rows = connection.execute(
            select(Message.text, Message.meta.label("meta")).order_by(Message.seq)
        ).all()
    # Text and metadata are encrypted: compared here, not in SQL.
    mine = [r for r in rows if r.meta.get("from") == sender and r.text in ("one", "two", "three")]
    assert [r.text for r in mine] == ["one", "two", "three"]
    assert [bool(r.meta.get("over_rate")) for r in mine] == [False, False, True]
