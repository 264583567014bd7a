"""The seam between the router and the providers.

A provider turns one `Prompt` into a stream of text pieces. It does one attempt: no retries, no
fallback, no cooldown (the SDKs' own retries are switched off). Those belong to the router
(`models.router`), which is the only place that decides what happens when a provider fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

ErrorKind = Literal["timeout", "rate_limited", "server", "unavailable", "bad_request"]


class ProviderError(Exception):
    """One failed attempt, classified so the router can decide what to do next.

    `timeout`, `rate_limited`, `server` and `unavailable` are worth another try (here or at the
    next provider); `bad_request` means the request itself is wrong, so only the next provider
    may help. `retry_after_s` carries the server's Retry-After when it sent one.
    """

    def __init__(
        self, provider: str, kind: ErrorKind, message: str, retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"{provider}: {kind}: {message}")
        self.provider = provider
        self.kind = kind
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        return self.kind != "bad_request"


@dataclass(frozen=True)
class Source:
    """One retrieved passage the answer may use, numbered as the patient will see it."""

    number: int
    title: str
    source: str
    text: str
    url: str | None = None


@dataclass(frozen=True)
class Prompt:
    """Everything a provider may see. `question` is the patient's text and `sources` are
    retrieved passages: both are data, never instructions (see `models.prompting`)."""

    system: str
    question: str
    sources: tuple[Source, ...]
    language: str = "en"
    max_tokens: int = 350
    temperature: float = 0.1
    metadata: dict[str, str] = field(default_factory=dict)

    def user_content(self) -> str:
        """The user turn: numbered sources, then the question, each fenced as quoted data."""
        blocks = [
            f'<source number="{s.number}" title="{_attr(s.title)}">\n{s.text}\n</source>'
            for s in self.sources
        ]
        return (
            "<sources>\n"
            + "\n".join(blocks)
            + "\n</sources>\n<patient_question>\n"
            + self.question
            + "\n</patient_question>"
        )


def _attr(value: str) -> str:
    return value.replace('"', "'").replace("<", "(").replace(">", ")")


class Provider(Protocol):
    """One model behind one API. `cloud` providers are subject to the privacy guard."""

    name: str  # "llamacpp", "openai", "anthropic", "extractive"
    model: str
    cloud: bool

    @property
    def version(self) -> str:
        """What exactly answered (model file hash, API model id and revision...), for the audit."""
        ...

    def stream(self, prompt: Prompt, *, timeout_s: float) -> AsyncIterator[str]:
        """Text pieces as they come; raises ProviderError for any failure of this attempt."""
        ...
