"""The extractive answerer: the best sentences of the retrieved passages, each with its source
number, and no model at all. The embedded default, and the router's last resort.

It cannot say anything the clinic's documents do not say, which is what makes it safe to fall
back to; it can only choose badly, and then the citations show the patient where to read on.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence

from models.base import Prompt

# Scores each candidate sentence against the question (higher is closer). The app passes the
# knowledge base's own embedding model; word overlap is the fallback.
SentenceScorer = Callable[[str, Sequence[str]], Sequence[float]]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(¿¡A-ZÁÉÍÓÚÑ0-9])")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def split_sentences(text: str) -> list[str]:
    """Sentences and list items of a passage, with Markdown markers taken off."""
    sentences: list[str] = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*+]|\d+[.)])\s+", "", line).strip()
        line = re.sub(r"[*_`]{1,3}", "", line)
        if not line or line.startswith("#") or line.startswith("|"):
            continue
        sentences.extend(s.strip() for s in _SENTENCE_END.split(line) if len(s.strip()) > 12)
    return sentences


def word_overlap(question: str, sentences: Sequence[str]) -> list[float]:
    asked = {w for w in _WORD.findall(question.lower()) if len(w) > 2}
    scores = []
    for sentence in sentences:
        words = {w for w in _WORD.findall(sentence.lower()) if len(w) > 2}
        scores.append(len(asked & words) / (1 + len(words)) ** 0.5)
    return scores


class ExtractiveProvider:
    name = "extractive"
    model = "extractive-v1"
    cloud = False

    def __init__(
        self,
        scorer: SentenceScorer = word_overlap,
        *,
        max_sentences: int = 3,
        max_chars: int = 480,
        prefilter: int = 16,
    ) -> None:
        self._scorer = scorer
        self._prefilter = prefilter
        self._max_sentences = max_sentences
        self._max_chars = max_chars

    @property
    def version(self) -> str:
        return f"{self.model}(max_sentences={self._max_sentences})"

    def compose(self, prompt: Prompt) -> str:
        candidates: list[tuple[int, int, str]] = []  # (source number, position, sentence)
        for source in prompt.sources:
            for position, sentence in enumerate(split_sentences(source.text)):
                candidates.append((source.number, position, sentence))
        if not candidates:
            return ""
        # Word overlap first picks the few sentences worth the embedding model's time.
        if len(candidates) > self._prefilter:
            overlap = word_overlap(prompt.question, [c[2] for c in candidates])
            keep = sorted(range(len(candidates)), key=overlap.__getitem__, reverse=True)
            candidates = [candidates[i] for i in sorted(keep[: self._prefilter])]
        scores = self._scorer(prompt.question, [c[2] for c in candidates])
        # The top passage was ranked first by retrieval for a reason: its sentences get a nudge.
        top = prompt.sources[0].number
        ranked = sorted(
            range(len(candidates)),
            key=lambda i: scores[i] + (0.05 if candidates[i][0] == top else 0.0),
            reverse=True,
        )
        chosen: list[int] = []
        length = 0
        for i in ranked:
            sentence = candidates[i][2]
            if chosen and length + len(sentence) > self._max_chars:
                continue
            chosen.append(i)
            length += len(sentence) + 5
            if len(chosen) == self._max_sentences:
                break
        # Read in the documents' own order, so steps and lists stay in sequence.
        chosen.sort(key=lambda i: (candidates[i][0], candidates[i][1]))
        return " ".join(f"{candidates[i][2]} [{candidates[i][0]}]" for i in chosen)

    async def stream(self, prompt: Prompt, *, timeout_s: float) -> AsyncIterator[str]:
        text = self.compose(prompt)
        # One sentence at a time, so the web chat shows the answer arriving like a model's.
        pieces = re.split(r"(?<=\]) ", text)
        for i, piece in enumerate(pieces):
            yield piece if i == len(pieces) - 1 else piece + " "
