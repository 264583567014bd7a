"""Every log line the platform writes, in the web app and in the Celery worker, while a patient
hands it their name, phone number and date of birth on every channel: none of it may appear.
The worker's lines are JSON and carry the correlation id of the request that queued the work."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from core.db import make_sync_engine
from core.settings import Settings
from tests.conftest import API_TOKEN
from tests.fakes.twilio_server import FakeTwilio
from tests.support import celery_worker, free_port, running_app
from tests.test_sms_channel import (
    ADMIN_TOKEN,
    SmsLab,
    fake_twilio,  # noqa: F401  (fixture)
    patient_number,
    redis_broker,  # noqa: F401  (fixture)
    sms_settings,
    worker_env,
)
from tests.test_web_channel import ChatClient

pytestmark = pytest.mark.rasa

API = {"Authorization": f"Bearer {API_TOKEN}"}


async def test_patient_data_planted_on_every_channel_reaches_no_log_line(
    make_live_settings: Callable[..., Settings],
    sqlite_url: str,
    fake_twilio: FakeTwilio,  # noqa: F811
    redis_broker: str,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tag = uuid.uuid4().hex[:6]
    name = f"Zebulon{tag} Quartermaine"
    phone = patient_number()
    birth = "14/03/1961"
    planted = [f"Zebulon{tag}", "Quartermaine", phone, phone[2:], birth]
    said = f"I am {name}, born {birth}, my number is {phone}"

    port = free_port()
    settings = sms_settings(
        lambda **kw: make_live_settings(sqlite_url, celery_broker_url=redis_broker, **kw),
        fake_twilio,
        port,
    )
    worker_log = tmp_path / "worker.log"
    caplog.set_level(logging.DEBUG)
    env = {**worker_env(settings), "LOG_LEVEL": "DEBUG"}
    with celery_worker(settings, worker_log, env):
        async with (
            running_app(settings, port=port) as (url, _),
            httpx.AsyncClient(base_url=url, timeout=30) as client,
        ):
            lab = SmsLab(url, settings, fake_twilio, make_sync_engine(sqlite_url), client)
            # The API channel: a greeting, an emergency, a question for the knowledge base,
            # and a message that is not UTF-8.
            for text in (
                said,
                f"{name} here, crushing chest pain and I can't breathe",
                f"{name}: what are your opening hours?",
            ):
                reply = await client.post(
                    "/api/v1/messages", headers=API, json={"sender_id": phone, "text": text}
                )
                assert reply.status_code == 200
            await client.post("/api/v1/messages", headers=API, content=said.encode() + b"\xff")

            # The web chat.
            chat = ChatClient()
            await chat.connect(url)
            try:
                assert (await chat.say(said))["ok"]
                await chat.say(f"{name} wants to talk to a real person")
            finally:
                await chat.sio.disconnect()

            # SMS, answered by the worker: the webhook's request id must follow the work.
            sms = await lab.text(phone, said, message_sid="SM" + uuid.uuid4().hex)
            assert sms.status_code == 200
            request_id = sms.headers["x-request-id"]
            await lab.wait_sent(phone, 1)

            # A staff member reads the transcript of the patient's case.
            cases = await client.get(
                "/admin/api/v1/cases?status=all",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Staff-Name": "Dana Lee"},
            )
            assert cases.status_code == 200

    app_lines = [f"{r.getMessage()} {r.__dict__}" for r in caplog.records]
    worker_lines = worker_log.read_text(errors="replace").splitlines()
    assert app_lines and worker_lines
    for line in app_lines + worker_lines:
        for secret in planted:
            assert secret not in line, f"patient data in a log line: {line[:300]}"

    records = [json.loads(line) for line in worker_lines if line.startswith("{")]
    answered = [r for r in records if r.get("message") == "SMS message answered"]
    assert answered, "the worker logged no JSON line for the SMS it answered"
    assert {r["correlation_id"] for r in answered} == {request_id}
