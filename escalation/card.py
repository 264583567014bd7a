"""What staff read about a case: the two summaries, and the Mattermost case card with its
buttons. Pure functions of a case and its messages, so the console and Mattermost say the same.

Button presses come back to us from the Mattermost server with the `context` we put in the
card; the context carries an HMAC of (case, action) under the server's secret, so a request
that did not come from a card we posted cannot claim or close a case.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from escalation.cases import CaseView

ACTIONS = ("claim", "handback", "resolve")
_REASONS = {
    "emergency": "described a possible medical emergency",
    "crisis": "may be in a suicide or self-harm crisis",
    "triage": "was triaged",
    "request": "asked to talk to a person",
    "unanswered": "asked things the assistant could not answer, twice in a row",
}
_CHANNELS = {"web": "web chat", "sms": "text message", "voice": "phone", "api": "an app"}
_LANGUAGES = {"en": "English", "es": "Spanish"}
_DISPOSITIONS = {
    "emergency": "emergency care now",
    "urgent": "to be seen today",
    "routine": "a routine appointment",
    "self_care": "self-care at home",
}
_PRIORITY_COLORS = {"immediate": "#d0021b", "high": "#f5a623", "normal": "#4a90e2"}
SENDER_LABELS = {"patient": "Patient", "bot": "Assistant", "staff": "Staff", "system": "System"}


@lru_cache(maxsize=1)
def _rule_titles() -> dict[str, str]:
    from bot.clinical.ruleset import load_ruleset

    return {rule.id: rule.title for rule in load_ruleset().rules}


def rule_title(rule_id: str) -> str:
    if rule_id.startswith("ML-"):
        return "second reader (statistical model) recognised the wording"
    if rule_id == "CSSRS-SCREEN":
        return "crisis screening answers showed imminent risk"
    return _rule_titles().get(rule_id, rule_id)


def patient_summary(case: CaseView) -> str:
    """In plain words, for anyone at the clinic: who wrote how, and why staff are needed."""
    reason = _REASONS.get(case.reason, case.reason)
    if case.reason == "triage" and case.triage:
        disposition = str(case.triage.get("disposition", ""))
        reason = f"was triaged as needing {_DISPOSITIONS.get(disposition, disposition)}"
    channel = _CHANNELS.get(case.channel, case.channel)
    language = _LANGUAGES.get(case.language, case.language)
    told = ""
    if case.reason == "emergency" or case.safety_level == "emergency":
        told = " The assistant told them to call the emergency number now."
    elif case.reason == "crisis" or case.safety_level == "crisis":
        told = " The assistant gave them the crisis line and asked screening questions."
    return f"A patient writing by {channel} in {language} {reason}.{told}"


def clinician_summary(case: CaseView) -> str:
    """For the clinician: the decisions with the rules behind them."""
    parts = [f"Priority {case.priority} ({case.reason})."]
    if case.safety_level in ("emergency", "crisis"):
        parts.append(f"Safety layer: {case.safety_level}.")
    if case.rule_ids:
        parts.append("Rules: " + "; ".join(f"{r} {rule_title(r)}" for r in case.rule_ids[:6]) + ".")
    if case.triage:
        disposition = case.triage.get("disposition")
        reasons = "; ".join(str(r) for r in case.triage.get("reasons", [])[:4])
        parts.append(f"Triage: {disposition}" + (f" — {reasons}" if reasons else "") + ".")
        flags = case.triage.get("red_flags") or []
        if flags:
            parts.append("Red flags: " + ", ".join(str(f) for f in flags[:6]) + ".")
    if case.summary:
        parts.append(case.summary)
    return " ".join(parts)


def sign(secret: bytes, case_id: str, action: str) -> str:
    return hmac.new(secret, f"{case_id}:{action}".encode(), hashlib.sha256).hexdigest()


def verify(secret: bytes, context: Any) -> tuple[str, str] | None:
    """(case id, action) when the context is one we signed, else None."""
    if not isinstance(context, dict):
        return None
    case_id, action, signature = context.get("case_id"), context.get("action"), context.get("sig")
    if not (isinstance(case_id, str) and isinstance(action, str) and isinstance(signature, str)):
        return None
    if action not in ACTIONS or not hmac.compare_digest(sign(secret, case_id, action), signature):
        return None
    return case_id, action


def transcript_lines(messages: Sequence[dict[str, Any]], *, limit: int) -> str:
    lines = []
    for message in list(messages)[-limit:]:
        who = SENDER_LABELS.get(str(message.get("sender")), "?")
        text = " ".join(str(message.get("text", "")).split())
        lines.append(f"> **{who}:** {text[:300]}")
    return "\n".join(lines)


def case_card(
    case: CaseView,
    *,
    recent: Sequence[dict[str, Any]],
    mentions: Sequence[str],
    action_url: str | None,
    secret: bytes,
    recent_limit: int,
) -> dict[str, Any]:
    """The Mattermost post (message + props) for a case, for create_post and patch_post."""
    status = {
        "open": "Waiting for someone to claim it",
        "claimed": f"Claimed by {case.claimed_by}",
        "handed_back": "Handed back to the assistant",
        "resolved": "Resolved",
    }.get(case.status, case.status)
    headline = f"#### {case.priority.upper()} · case {case.id[:8]} · {status}"
    body = [headline]
    if mentions and case.status == "open":
        body.append("On call: " + " ".join(mentions))
    body.append(patient_summary(case))
    fields = [
        {"title": "Priority", "value": case.priority, "short": True},
        {"title": "Reason", "value": case.reason, "short": True},
        {"title": "Channel", "value": _CHANNELS.get(case.channel, case.channel), "short": True},
        {"title": "Language", "value": _LANGUAGES.get(case.language, case.language), "short": True},
    ]
    if case.triage:
        fields.append(
            {"title": "Triage", "value": str(case.triage.get("disposition")), "short": True}
        )
    fields.append({"title": "Clinician summary", "value": clinician_summary(case), "short": False})
    if recent:
        fields.append(
            {
                "title": "Recent messages",
                "value": transcript_lines(recent, limit=recent_limit),
                "short": False,
            }
        )
    wanted = {
        "open": ("claim", "resolve"),
        "claimed": ("handback", "resolve"),
    }.get(case.status, ())
    names = {"claim": "Claim", "handback": "Hand back to bot", "resolve": "Resolve"}
    actions = [
        {
            "id": action,
            "name": names[action],
            "type": "button",
            "style": "primary" if action == "claim" else "default",
            "integration": {
                "url": action_url,
                "context": {
                    "action": action,
                    "case_id": case.id,
                    "sig": sign(secret, case.id, action),
                },
            },
        }
        for action in wanted
        if action_url
    ]
    attachment: dict[str, Any] = {
        "fallback": f"{case.priority} case {case.id[:8]}: {status}",
        "color": _PRIORITY_COLORS.get(case.priority, "#999999"),
        "fields": fields,
        "footer": "Reply in this channel to answer the patient once you have claimed the case. "
        "Start a post with // for a note staff only. /case claim | reply TEXT | handback | "
        "resolve | status",
    }
    if actions:
        attachment["actions"] = actions
    return {"message": "\n".join(body), "props": {"attachments": [attachment]}}
