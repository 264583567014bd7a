"""How the orchestrator stores a reply for SMS: fitted to the medium and queued for the worker
that sends it (channels/sms/tasks.py)."""

from __future__ import annotations

from bot.contract import Outbound
from bot.render import numbered_options
from bot.store import NewReply
from channels.sms.text import encoding, fit_for_sms, segments


def sms_delivery(outbound: Outbound, address: str) -> list[NewReply]:
    # Only knowledge-base answers may lose sentences; safety instructions are sent whole,
    # in as many messages as they need.
    parts = fit_for_sms(outbound.text, shorten=outbound.kind == "answer")
    if not parts:
        return []
    if outbound.buttons:
        # Options follow the (possibly shortened) text, so they are never cut off.
        parts[-1] = f"{parts[-1]}\n{numbered_options(outbound.buttons)}"
    replies = []
    for index, body in enumerate(parts):
        last = index == len(parts) - 1
        replies.append(
            NewReply(
                text=body,
                # The numbered options are in the text; the buttons are kept so that a
                # reply "2" can be read as the second choice.
                buttons=outbound.buttons if last else (),
                sender=outbound.sender,
                status="queued",
                meta={"to": address, "segments": segments(body), "encoding": encoding(body)},
            )
        )
    return replies
