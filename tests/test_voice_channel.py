"""Phone calls end to end, with real audio and no phone.

espeak-ng speaks the caller's sentence; it becomes 8 kHz μ-law in 20 ms Twilio media frames
over a real WebSocket into the running app (real Rasa, real database); the app's VAD,
PocketSphinx (constrained by a small grammar, so recognition of espeak's voice is exact),
orchestrator and espeak-ng answer; the audio frames it sends back are decoded and recognized
again. Transfers go through the official twilio client to the local fake of Twilio's REST API.
"""

from __future__ import annotations

import asyncio
import contextlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.voice.audio import TELEPHONE_RATE, mulaw_decode
from channels.voice.engines import Espeak, PocketSphinx
from channels.voice.twilio import GATHER_PATH, STATUS_PATH, VOICE_PATH
from core.db import make_sync_engine
from core.orm import AuditEvent, Escalation, Message, VoiceCall
from core.settings import Settings
from tests.fakes.media_stream import MediaStreamCaller
from tests.fakes.twilio_server import FakeTwilio, call_status_params, sign
from tests.support import free_port, running_app
from tests.test_sms_channel import ADMIN_TOKEN, CLINIC_NUMBER, patient_number, sms_settings

pytestmark = pytest.mark.rasa

HERE = Path(__file__).parent
PATIENT_GRAMMAR = HERE / "voice" / "patient.gram"
ONCALL = "+12025550111"


@pytest.fixture(scope="module")
def tts() -> Espeak:
    return Espeak(voices={"en": "en-us"})


@pytest.fixture(scope="module")
def reply_ear(tmp_path_factory: pytest.TempPathFactory) -> PocketSphinx:
    """Recognizes the bot's first sentences (the test's own ear, not the app's)."""
    grammar = tmp_path_factory.mktemp("ear") / "reply.gram"
    grammar.write_text(
        "#JSGF V1.0;\ngrammar reply;\npublic <reply> = how can i help you today"
        " | hi i'm the clinic's virtual assistant | sorry i did not hear that"
        ";\n"
    )
    return PocketSphinx(grammar=str(grammar), workers=1)


@pytest.fixture(scope="module")
def fake_twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio(service_number=CLINIC_NUMBER) as fake:
        yield fake


AnsweredCall = tuple[dict[str, str], MediaStreamCaller]


@dataclass
class Phone:
    base_url: str
    settings: Settings
    fake: FakeTwilio

    async def ring(self, caller: str, **kwargs: Any) -> tuple[dict[str, str], ET.Element]:
        params = self.fake.inbound_call(from_=caller, to=CLINIC_NUMBER, **kwargs)
        response = await self.post(VOICE_PATH, params)
        assert response.status_code == 200, response.text
        return params, ET.fromstring(response.text)

    async def post(
        self, path: str, params: dict[str, str], *, query: str = "", forged: bool = False
    ) -> httpx.Response:
        url = f"{self.settings.public_base_url}{path}" + (f"?{query}" if query else "")
        signature = sign(self.fake.auth_token, url, params)
        if forged:
            signature = sign("not-the-auth-token", url, params)
        async with httpx.AsyncClient() as client:
            return await client.post(
                f"{self.base_url}{path}" + (f"?{query}" if query else ""),
                data=params,
                headers={"X-Twilio-Signature": signature},
            )

    @contextlib.asynccontextmanager
    async def answered(
        self, number: str | None = None
    ) -> AsyncIterator[tuple[dict[str, str], MediaStreamCaller]]:
        """A call whose stream has started and whose greeting has been heard to the end."""
        params, twiml = await self.ring(number or patient_number())
        async with self.caller(twiml, params["CallSid"]) as caller:
            await caller.start()
            await caller.wait_quiet(after=0)
            await caller.wait_played()
            yield params, caller

    def caller(self, twiml: ET.Element, call_sid: str) -> MediaStreamCaller:
        stream = twiml.find("./Connect/Stream")
        assert stream is not None, ET.tostring(twiml)
        token = stream.find("./Parameter[@name='token']")
        assert token is not None
        return MediaStreamCaller(
            stream.attrib["url"],
            account_sid=self.fake.account_sid,
            call_sid=call_sid,
            token=token.attrib["value"],
        )


def voice_settings(
    make: Callable[..., Settings], fake: FakeTwilio, port: int, **extra: Any
) -> Settings:
    return sms_settings(
        make,
        fake,
        port,
        voice_stt_grammar=str(PATIENT_GRAMMAR),
        voice_stt_workers=1,
        voice_oncall_number=ONCALL,
        **extra,
    )


@pytest.fixture
async def phone(
    make_live_settings: Callable[..., Settings], fake_twilio: FakeTwilio, tmp_path: Path
) -> AsyncIterator[Phone]:
    port = free_port()
    settings = voice_settings(
        lambda **kw: make_live_settings(f"sqlite:///{tmp_path / 'voice.db'}", **kw),
        fake_twilio,
        port,
    )
    async with running_app(settings, port) as (base_url, _):
        yield Phone(base_url, settings, fake_twilio)


def recognized(ear: PocketSphinx, mulaw: bytes) -> str:
    return ear.transcribe(mulaw_decode(mulaw), TELEPHONE_RATE, "en").text


def first_sentence_audio(caller: MediaStreamCaller, start: int) -> bytes:
    """The bot's audio from event `start` to its first mark: one sentence."""
    chunks = []
    for kind, payload in caller.heard.events[start:]:
        if kind == "mark":
            break
        if kind == "media":
            chunks.append(payload)
    return b"".join(chunks)


def rows(settings: Settings, model: Any, *where: Any) -> list[Any]:
    engine = make_sync_engine(settings.database_url)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(model).where(*where)))
    finally:
        engine.dispose()


async def test_a_call_is_heard_answered_and_transcribed(
    phone: Phone, tts: Espeak, reply_ear: PocketSphinx
) -> None:
    number = patient_number()
    params, twiml = await phone.ring(number)
    say = twiml.find("./Say")
    assert say is not None and "automated assistant" in (say.text or "")
    assert "transcribed" in (say.text or "")
    async with phone.caller(twiml, params["CallSid"]) as caller:
        await caller.start()
        # The greeting, spoken by our TTS and recognized by the test's ear.
        await caller.wait_quiet(after=0)
        assert recognized(reply_ear, first_sentence_audio(caller, 0)) == "how can i help you today"
        await caller.wait_played()
        before = len(caller.heard.events)
        await caller.say("hello", tts)
        await caller.wait_quiet(after=before)
        reply = first_sentence_audio(caller, before)
        assert recognized(reply_ear, reply) == "hi i'm the clinic's virtual assistant"
        # 20 ms frames of μ-law, a mark after each sentence.
        assert all(len(p) == 160 for k, p in caller.heard.events if k == "media")
        assert caller.heard.count("mark") >= 2
        await caller.wait_played()
        await caller.stop()
        await asyncio.wait_for(caller.closed.wait(), 10)

    call = rows(phone.settings, VoiceCall, VoiceCall.call_sid == params["CallSid"])[0]
    assert call.caller == number and call.via == "pstn" and call.stream_sid
    messages = rows(phone.settings, Message, Message.conversation_id == call.conversation_id)
    inbound = [m for m in messages if m.direction == "inbound"]
    outbound = [m for m in messages if m.direction == "outbound"]
    assert [m.text for m in inbound] == ["hello"]
    voice = inbound[0].meta["voice"]
    assert voice["speech_ended_ms"] > voice["speech_started_ms"] > 0
    assert voice["stt_engine"] == "pocketsphinx"
    assert voice["latency_ms"] > 0 and voice["first_audio_ms"] > voice["speech_ended_ms"]
    assert outbound and outbound[0].text.startswith("Hi, I'm the clinic's virtual assistant")
    assert outbound[0].meta["voice"]["playback"] == "played"


async def test_barge_in_clears_playback_and_the_caller_is_answered(
    phone: Phone, tts: Espeak
) -> None:
    async with phone.answered() as (params, caller):
        before = len(caller.heard.events)
        await caller.say("hello", tts)
        await caller.wait_for("media", after=before)
        # The reply takes many seconds to play; the caller talks over its second sentence.
        await caller.wait_for("mark", after=before)
        await asyncio.sleep(3.5)
        cut = len(caller.heard.events)
        await caller.say("what are your opening hours", tts)
        clear = await caller.wait_for("clear", after=cut, timeout=10)
        # After the clear, the new question is answered.
        await caller.wait_for("media", after=clear + 1, timeout=30)
        await caller.stop()
    call = rows(phone.settings, VoiceCall, VoiceCall.call_sid == params["CallSid"])[0]
    messages = rows(phone.settings, Message, Message.conversation_id == call.conversation_id)
    assert [m.text for m in messages if m.direction == "inbound"] == [
        "hello",
        "what are your opening hours",
    ]
    greeting_reply = next(m for m in messages if m.direction == "outbound")
    assert greeting_reply.meta["voice"]["playback"] == "interrupted"
    assert (
        0
        < greeting_reply.meta["voice"]["sentences_played"]
        < greeting_reply.meta["voice"]["sentences"]
    )


async def test_emergency_is_spoken_whole_and_a_transfer_is_offered(
    phone: Phone, tts: Espeak
) -> None:
    async with phone.answered() as (params, caller):
        before = len(caller.heard.events)
        await caller.say("i am having a heart attack", tts)
        await caller.wait_for("media", after=before, timeout=20)
        # Talking over emergency instructions does not cut them off.
        await asyncio.sleep(0.5)
        await caller.say("my father is not breathing", tts)
        await caller.wait_quiet(after=before, quiet_s=1.5)
        assert caller.heard.count("clear") == 0
        await caller.dtmf("1")
        update = await asyncio.to_thread(phone.fake.wait_for_call_update, params["CallSid"])
    dial = ET.fromstring(update["twiml"]).find("./Dial")
    assert dial is not None and (dial.findtext("./Number") or "").strip() == ONCALL
    assert dial.attrib["action"].startswith(f"{phone.settings.public_base_url}/channels/voice/")
    call = rows(phone.settings, VoiceCall, VoiceCall.call_sid == params["CallSid"])[0]
    assert call.transfer_to == "oncall"
    cases = rows(phone.settings, Escalation, Escalation.conversation_id == call.conversation_id)
    assert [c.priority for c in cases] == ["immediate"]
    messages = rows(phone.settings, Message, Message.conversation_id == call.conversation_id)
    safety = next(m for m in messages if m.direction == "outbound")
    assert "911" in safety.text


async def test_forged_and_replayed_requests_are_refused(phone: Phone, tts: Espeak) -> None:
    number = patient_number()
    params = phone.fake.inbound_call(from_=number, to=CLINIC_NUMBER)
    forged = await phone.post(VOICE_PATH, params, forged=True)
    assert forged.status_code == 403
    assert not rows(phone.settings, VoiceCall, VoiceCall.call_sid == params["CallSid"])

    params, twiml = await phone.ring(number)
    # A token for another call, a made-up token, a message before start: the socket closes.
    for start in ({"token": "123.abc"}, {"call_sid": "CA" + "0" * 32}):
        async with phone.caller(twiml, params["CallSid"]) as intruder:
            await intruder.start(**start)
            await asyncio.wait_for(intruder.closed.wait(), 10)
            assert intruder.close_code == 1008
            assert intruder.heard.count("media") == 0
    async with phone.caller(twiml, params["CallSid"]) as early:
        await early.dtmf("0")
        await asyncio.wait_for(early.closed.wait(), 10)
        assert early.close_code == 1008
    # The real stream, then a replay of its start on a second socket.
    async with phone.caller(twiml, params["CallSid"]) as caller:
        await caller.send_raw("not json")
        await caller.send_raw("[]")
        await caller.start()
        await caller.wait_for("media")
        async with phone.caller(twiml, params["CallSid"]) as replay:
            await replay.start()
            await asyncio.wait_for(replay.closed.wait(), 10)
            assert replay.close_code == 1008
        # Garbage on the real stream is ignored, not fatal.
        await caller.send_raw('{"event": "media", "media": {"payload": "%%%"}}')
        await caller.send_raw("x" * 100_000)
        before = len(caller.heard.events)
        await caller.wait_played()
        await caller.say("hello", tts)
        await caller.wait_for("media", after=before, timeout=20)
        await caller.stop()


async def test_a_call_dropped_mid_reply_leaves_a_consistent_transcript(
    phone: Phone, tts: Espeak
) -> None:
    async with phone.answered() as (params, caller):
        before = len(caller.heard.events)
        await caller.say("hello", tts)
        await caller.wait_for("mark", after=before, timeout=20)
        await asyncio.sleep(0.3)
        await caller.hang_up()
    call_sid = params["CallSid"]
    status = call_status_params(
        account_sid=phone.fake.account_sid,
        from_=params["From"],
        to=params["To"],
        call_sid=call_sid,
        call_duration=9,
    )
    assert (await phone.post(STATUS_PATH, status)).status_code == 204

    def settled() -> bool:
        call = rows(phone.settings, VoiceCall, VoiceCall.call_sid == call_sid)[0]
        out = rows(phone.settings, Message, Message.conversation_id == call.conversation_id,
                   Message.direction == "outbound")  # fmt: skip
        return bool(out) and "playback" in out[0].meta.get("voice", {})

    for _ in range(100):
        if settled():
            break
        await asyncio.sleep(0.1)
    call = rows(phone.settings, VoiceCall, VoiceCall.call_sid == call_sid)[0]
    assert call.status == "completed" and call.ended_at is not None
    messages = rows(phone.settings, Message, Message.conversation_id == call.conversation_id)
    inbound = [m for m in messages if m.direction == "inbound"]
    outbound = [m for m in messages if m.direction == "outbound"]
    assert [m.text for m in inbound] == ["hello"] and inbound[0].status == "processed"
    assert len(outbound) == 1 and outbound[0].in_reply_to == inbound[0].id
    voice = outbound[0].meta["voice"]
    assert voice["playback"] == "cut_off" and voice["call_ended"] == "disconnected"
    assert voice["sentences_played"] < voice["sentences"]


async def test_keypad_zero_asks_for_staff_and_a_text_follows_the_call(phone: Phone) -> None:
    number = patient_number()
    async with phone.answered(number) as (params, caller):
        before = len(caller.heard.events)
        await caller.dtmf("0")
        await caller.wait_quiet(after=before)
        # "I have asked our staff to contact you...": espeak's voice of it is beyond the test
        # ear's small grammar; its length says a few sentences were spoken.
        assert len(caller.heard.audio_since(before)) > 3 * 8000
        await caller.stop()
        await asyncio.wait_for(caller.closed.wait(), 10)
    call = rows(phone.settings, VoiceCall, VoiceCall.call_sid == params["CallSid"])[0]
    assert call.staff_requested and call.follow_up_sent
    cases = rows(phone.settings, Escalation, Escalation.conversation_id == call.conversation_id)
    assert [(c.reason, c.priority) for c in cases] == [("request", "normal")]
    texts = rows(phone.settings, Message, Message.conversation_id == call.conversation_id,
                 Message.channel == "sms")  # fmt: skip
    assert len(texts) == 1 and texts[0].status == "queued" and texts[0].meta["to"] == number
    assert "thank you for your call" in texts[0].text.lower()
    audits = rows(phone.settings, AuditEvent, AuditEvent.conversation_id == call.conversation_id)
    actions = {a.action for a in audits}
    assert {"call.started", "case.requested_by_patient", "call.follow_up_texted"} <= actions


async def test_a_3cx_call_over_a_sip_trunk_keeps_the_callers_number(phone: Phone) -> None:
    number = patient_number()
    params, twiml = await phone.ring(number, sip=True)
    assert params["From"].startswith("sip:")
    assert twiml.find("./Connect/Stream") is not None
    call = rows(phone.settings, VoiceCall, VoiceCall.call_sid == params["CallSid"])[0]
    assert call.caller == number and call.via == "sip"
    # The same patient calling again from the PSTN continues the same conversation.
    params2, _ = await phone.ring(number)
    again = rows(phone.settings, VoiceCall, VoiceCall.call_sid == params2["CallSid"])[0]
    assert again.conversation_id == call.conversation_id and again.via == "pstn"
    # A withheld number gets a conversation of its own.
    params3, _ = await phone.ring("anonymous")
    anonymous = rows(phone.settings, VoiceCall, VoiceCall.call_sid == params3["CallSid"])[0]
    assert anonymous.caller == f"anonymous:{params3['CallSid']}"


@pytest.fixture
async def gather_phone(
    make_live_settings: Callable[..., Settings], fake_twilio: FakeTwilio, tmp_path: Path
) -> AsyncIterator[Phone]:
    port = free_port()
    settings = voice_settings(
        lambda **kw: make_live_settings(f"sqlite:///{tmp_path / 'gather.db'}", **kw),
        fake_twilio,
        port,
        voice_mode="gather",
    )
    async with running_app(settings, port) as (base_url, _):
        yield Phone(base_url, settings, fake_twilio)


async def test_gather_mode_answers_turn_by_turn(gather_phone: Phone) -> None:
    phone = gather_phone
    params, twiml = await phone.ring(patient_number())
    gather = twiml.find("./Gather")
    assert gather is not None and gather.attrib["input"] == "speech dtmf"
    action = gather.attrib["action"]
    query = action.split("?", 1)[1]
    turn = {**params, "CallStatus": "in-progress", "SpeechResult": "hello", "Confidence": "0.93"}
    answer = ET.fromstring((await phone.post(GATHER_PATH, turn, query=query)).text)
    assert "virtual assistant" in " ".join(s.text or "" for s in answer.iter("Say"))
    # Twilio retries a slow webhook: the same turn is not answered twice.
    again = await phone.post(GATHER_PATH, turn, query=query)
    assert again.status_code == 200
    next_query = answer.find("./Gather").attrib["action"].split("?", 1)[1]  # type: ignore[union-attr]
    emergency = {**turn, "SpeechResult": "my chest hurts and I can't breathe"}
    spoken = ET.fromstring((await phone.post(GATHER_PATH, emergency, query=next_query)).text)
    text = " ".join(s.text or "" for s in spoken.iter("Say"))
    assert "911" in text and "press 1" in text
    offer_query = spoken.find("./Gather").attrib["action"].split("?", 1)[1]  # type: ignore[union-attr]
    assert "offer=oncall" in offer_query
    press = {**turn, "SpeechResult": "", "Digits": "1"}
    dialed = ET.fromstring((await phone.post(GATHER_PATH, press, query=offer_query)).text)
    assert (dialed.findtext("./Dial/Number") or "").strip() == ONCALL
    call = rows(phone.settings, VoiceCall, VoiceCall.call_sid == params["CallSid"])[0]
    inbound = rows(phone.settings, Message, Message.conversation_id == call.conversation_id,
                   Message.direction == "inbound")  # fmt: skip
    assert [m.text for m in inbound] == ["hello", "my chest hurts and I can't breathe"]
    forged = await phone.post(GATHER_PATH, turn, query=query, forged=True)
    assert forged.status_code == 403


def test_random_text_is_not_a_transfer_acceptance() -> None:
    from channels.voice.session import accepts_transfer, sentences

    assert accepts_transfer("yes connect me") and accepts_transfer("sí, comuníqueme")
    assert not accepts_transfer("my father is not breathing")
    assert sentences("Call 911 now. Then wait.\n1. Yes\n2. No") == [
        "Call 911 now.",
        "Then wait.",
        "1. Yes",
        "2. No",
    ]


STAFF_LINE = "+12025550122"


@pytest.fixture
async def staffed_phone(
    make_live_settings: Callable[..., Settings], fake_twilio: FakeTwilio, tmp_path: Path
) -> AsyncIterator[Phone]:
    port = free_port()
    settings = voice_settings(
        lambda **kw: make_live_settings(f"sqlite:///{tmp_path / 'staffed.db'}", **kw),
        fake_twilio,
        port,
        voice_staff_number=STAFF_LINE,
    )
    async with running_app(settings, port) as (base_url, _):
        yield Phone(base_url, settings, fake_twilio)


async def test_keypad_zero_transfers_and_nobody_answering_is_followed_by_a_text(
    staffed_phone: Phone,
) -> None:
    phone = staffed_phone
    number = patient_number()
    params, twiml = await phone.ring(number)
    async with phone.caller(twiml, params["CallSid"]) as caller:
        await caller.start()
        await caller.wait_for("media")
        await caller.dtmf("0")
        update = await asyncio.to_thread(phone.fake.wait_for_call_update, params["CallSid"])
        # Twilio ends the stream when the call's TwiML is replaced.
        await caller.stop()
    transfer = ET.fromstring(update["twiml"])
    assert (transfer.findtext("./Dial/Number") or "").strip() == STAFF_LINE
    action = transfer.find("./Dial").attrib["action"]  # type: ignore[union-attr]
    call = rows(phone.settings, VoiceCall, VoiceCall.call_sid == params["CallSid"])[0]
    assert call.transfer_to == "staff" and not call.follow_up_sent
    # Nobody picked up: the caller is told, and a text follows.
    from tests.fakes.twilio_server import dial_action_params

    outcome = dial_action_params(
        account_sid=phone.fake.account_sid,
        from_=params["From"],
        to=params["To"],
        call_sid=params["CallSid"],
        dial_call_status="no-answer",
    )
    path, _, query = action.removeprefix(phone.settings.public_base_url or "").partition("?")
    said = ET.fromstring((await phone.post(path, outcome, query=query)).text)
    assert "no one could take your call" in (said.findtext("./Say") or "")
    assert said.find("./Hangup") is not None
    call = rows(phone.settings, VoiceCall, VoiceCall.call_sid == params["CallSid"])[0]
    assert call.transfer_status == "no-answer" and call.follow_up_sent
    texts = rows(phone.settings, Message, Message.conversation_id == call.conversation_id,
                 Message.channel == "sms")  # fmt: skip
    assert len(texts) == 1 and texts[0].meta["to"] == number
    cases = rows(phone.settings, Escalation, Escalation.conversation_id == call.conversation_id)
    assert [c.reason for c in cases] == ["request"]


async def test_staff_claiming_the_case_during_the_call_takes_the_call(
    staffed_phone: Phone, tts: Espeak
) -> None:
    phone = staffed_phone
    async with phone.answered() as (params, caller):
        before = len(caller.heard.events)
        await caller.say("i want to kill myself", tts)
        await caller.wait_for("media", after=before, timeout=20)
        call = rows(phone.settings, VoiceCall, VoiceCall.call_sid == params["CallSid"])[0]
        cases = rows(phone.settings, Escalation, Escalation.conversation_id == call.conversation_id)
        assert len(cases) == 1 and cases[0].priority in ("high", "immediate")
        async with httpx.AsyncClient(base_url=phone.base_url) as console:
            claimed = await console.post(
                f"/admin/api/v1/cases/{cases[0].id}/claim",
                headers={
                    "Authorization": f"Bearer {ADMIN_TOKEN}",
                    "X-Staff-Name": "Joy",
                    "X-Staff-Role": "Nurse",
                },
            )
        assert claimed.status_code == 200, claimed.text
        update = await asyncio.to_thread(phone.fake.wait_for_call_update, params["CallSid"])
        await caller.stop()
    transfer = ET.fromstring(update["twiml"])
    assert "Joy (Nurse)" in (transfer.findtext("./Say") or "")
    assert (transfer.findtext("./Dial/Number") or "").strip() == STAFF_LINE
    audits = rows(phone.settings, AuditEvent, AuditEvent.conversation_id == call.conversation_id)
    assert {"case.claimed", "call.transferred"} <= {a.action for a in audits}
