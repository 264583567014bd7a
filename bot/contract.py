"""The one message contract every channel speaks.

A channel adapter turns a vendor event (socket.io event, Twilio webhook, transcribed speech,
API call) into an `Inbound`, and renders each `Outbound` back for its medium. Vendor formats
never cross this line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

SafetyLevel = Literal["none", "emergency", "crisis"]
Disposition = Literal["emergency", "urgent", "routine", "self_care"]
Mode = Literal["bot", "staff"]
# What a reply is, for channels that must fit it: an `answer` (knowledge base) may be shortened
# for SMS; `safety` instructions are never cut.
ReplyKind = Literal["dialogue", "answer", "safety", "system"]


class Channel(StrEnum):
    WEB = "web"
    SMS = "sms"
    VOICE = "voice"
    API = "api"


@dataclass(frozen=True)
class Button:
    title: str
    payload: str


@dataclass(frozen=True)
class Inbound:
    """One patient message, whatever its channel.

    `sender_address` identifies the patient on that channel (phone number, hashed web session
    token, API sender id). `vendor_message_id` (MessageSid, socket client id, idempotency key)
    makes redelivery idempotent. `payload` is a button payload chosen by the patient.
    """

    channel: Channel
    sender_address: str
    text: str
    language: str | None = None
    vendor_message_id: str | None = None
    vendor_ids: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    payload: str | None = None


@dataclass(frozen=True)
class Outbound:
    """One reply to the patient, before the channel renders it."""

    conversation_id: str
    channel: Channel
    text: str
    buttons: tuple[Button, ...] = ()
    language: str | None = None
    sender: Literal["bot", "staff", "system"] = "bot"
    kind: ReplyKind = "dialogue"


@dataclass(frozen=True)
class SafetyAssessment:
    """The safety layer's decision on one message.

    `level` is the most urgent response owed: `emergency` (call the emergency number now) or
    `crisis` (the crisis protocol). `crisis` is also true with an emergency when both apply, as
    with an overdose already taken. `categories` name what was recognised (cardiac, overdose...).
    """

    level: SafetyLevel = "none"
    rule_ids: tuple[str, ...] = ()
    crisis: bool = False
    categories: tuple[str, ...] = ()
    ruleset_version: str = ""


@dataclass(frozen=True)
class TriageResult:
    disposition: Disposition
    reasons: tuple[str, ...]
    red_flags: tuple[str, ...] = ()
    rule_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConversationState:
    mode: Mode = "bot"
    safety: SafetyAssessment = SafetyAssessment()
    triage: TriageResult | None = None


@dataclass(frozen=True)
class StoredMessage:
    """A message as stored, the shape channels show in transcripts and history."""

    id: str
    seq: int
    conversation_id: str
    direction: Literal["inbound", "outbound"]
    sender: str
    text: str
    buttons: tuple[Button, ...]
    created_at: str
    client_id: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seq": self.seq,
            "direction": self.direction,
            "sender": self.sender,
            "text": self.text,
            "buttons": [{"title": b.title, "payload": b.payload} for b in self.buttons],
            "created_at": self.created_at,
            "client_id": self.client_id,
        }


@dataclass(frozen=True)
class TurnResult:
    """What the orchestrator hands back to the channel for one inbound message."""

    conversation_id: str
    inbound: StoredMessage
    replies: tuple[StoredMessage, ...]
    state: ConversationState
    duplicate: bool = False
    # What the safety layer decided on this message (None for a redelivered one): voice keeps
    # emergency instructions from being interrupted and offers a transfer after them.
    assessed: SafetyAssessment | None = None
