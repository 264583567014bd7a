"""Rich replies degrade to what a channel can show, in this one place.

Buttons stay buttons where the channel has them (web, API); elsewhere they become numbered
options the patient answers with a digit (SMS) or spoken choices (voice).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace

from bot.contract import Button, Channel, Outbound


@dataclass(frozen=True)
class ChannelProfile:
    buttons: bool


PROFILES: dict[Channel, ChannelProfile] = {
    Channel.WEB: ChannelProfile(buttons=True),
    Channel.API: ChannelProfile(buttons=True),
    Channel.SMS: ChannelProfile(buttons=False),
    Channel.VOICE: ChannelProfile(buttons=False),
}


def numbered_options(buttons: tuple[Button, ...]) -> str:
    return "\n".join(f"{i}. {b.title}" for i, b in enumerate(buttons, start=1))


def render(outbound: Outbound) -> Outbound:
    if PROFILES[outbound.channel].buttons or not outbound.buttons:
        return outbound
    return replace(outbound, text=f"{outbound.text}\n{numbered_options(outbound.buttons)}")


# "2", "2.", "#2", "option 2", "opción 2", "2)": a choice; "2 days" is an answer in words.
# Matched against the lower-cased, stripped message as a whole.
_CHOICE = re.compile(r"(?:(?:option|opci[oó]n|n[uú]mero|number)\s*)?#?\s*(\d{1,2})\s*[.)]?")


def option_choice(text: str, count: int) -> int | None:
    """The 1-based option a patient chose by typing (or pressing) its number, if any."""
    match = _CHOICE.fullmatch(unicodedata.normalize("NFC", text).strip().lower())
    if not match:
        return None
    number = int(match.group(1))
    return number if 1 <= number <= count else None
