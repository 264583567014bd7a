"""Which questions the knowledge-base assistant declines before looking anything up.

The categories and their patterns live in `rag/policy.yml`, a file the clinic's medical lead and
privacy officer review; this module only reads them. Matching uses the clinical rule language and
tokenizer (accents folded, SMS shorthand expanded), so "¿Puedo dejar de tomar la metformina?"
and "can i stop taking my meds" are read the same way the safety layer reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from bot.clinical.patterns import PatternError, compile_many
from bot.clinical.ruleset import load_ruleset
from bot.clinical.text import tokenize

POLICY_FILE = Path(__file__).with_name("policy.yml")


@dataclass(frozen=True)
class DeclineCategory:
    id: str
    why: str
    source: str
    matcher: re.Pattern[str]


@dataclass(frozen=True)
class PolicyDecision:
    category: str
    why: str


class QuestionPolicy:
    def __init__(self, categories: list[DeclineCategory]) -> None:
        self._categories = categories
        self._shorthand = load_ruleset().shorthand

    @classmethod
    def load(cls, path: Path = POLICY_FILE) -> QuestionPolicy:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        categories = []
        for entry in data["categories"]:
            for key in ("id", "why", "source", "patterns"):
                if not entry.get(key):
                    raise ValueError(f"{path}: category {entry.get('id', '?')} lacks {key!r}")
            try:
                matcher = compile_many(list(entry["patterns"]))
            except PatternError as exc:
                raise ValueError(f"{path}: category {entry['id']}: {exc}") from exc
            categories.append(
                DeclineCategory(
                    id=entry["id"],
                    why=" ".join(entry["why"].split()),
                    source=entry["source"],
                    matcher=matcher,
                )
            )
        return cls(categories)

    def check(self, question: str) -> PolicyDecision | None:
        """The first category whose patterns match the question, or None to go on and answer."""
        joined = tokenize(question, shorthand=self._shorthand).joined
        for category in self._categories:
            if category.matcher.search(joined):
                return PolicyDecision(category.id, category.why)
        return None


@lru_cache(maxsize=1)
def default_policy() -> QuestionPolicy:
    return QuestionPolicy.load()
