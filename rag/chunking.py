"""Heading-aware chunks: each chunk is at most ~`max_chars` of one section, cut at sentence or
paragraph ends, and carries its heading path so "When to call 911" keeps "Fever in adults"."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from rag.documents import Document

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    source: str
    title: str
    headings: tuple[str, ...]
    text: str

    @property
    def context(self) -> str:
        """What is embedded and indexed: the title and heading path, then the text."""
        path = " > ".join(h for h in (self.title, *self.headings) if h)
        return f"{path}\n{self.text}" if path else self.text


def chunk_document(document: Document, *, max_chars: int = 900) -> list[Chunk]:
    chunks: list[Chunk] = []
    for section in document.sections:
        headings = tuple(h for h in section.headings if h != document.title)
        for piece in _pieces(section.text, max_chars):
            digest = hashlib.sha1(
                f"{document.source}\0{len(chunks)}\0{piece}".encode(), usedforsecurity=False
            ).hexdigest()[:16]
            chunks.append(Chunk(digest, document.source, document.title, headings, piece))
    return chunks


def _pieces(text: str, max_chars: int) -> list[str]:
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]
    pieces: list[str] = []
    current = ""
    for sentence in sentences:
        if current and len(current) + 1 + len(sentence) > max_chars:
            pieces.append(current)
            current = ""
        current = f"{current} {sentence}".strip() if current else sentence
        while len(current) > max_chars * 1.5:  # one endless sentence: cut at a space
            cut = current.rfind(" ", 0, max_chars) or max_chars
            pieces.append(current[:cut].strip())
            current = current[cut:].strip()
    if current:
        pieces.append(current)
    return pieces
