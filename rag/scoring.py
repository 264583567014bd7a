"""Sentence scoring for the extractive answerer with the knowledge base's own embedding model."""

from __future__ import annotations

from collections.abc import Sequence

from models.extractive import SentenceScorer
from rag.index import Embedder


def embedding_scorer(embedder: Embedder) -> SentenceScorer:
    """Cosine similarity of each sentence to the question (the vectors are unit length)."""

    def score(question: str, sentences: Sequence[str]) -> list[float]:
        vectors = embedder.embed([question, *sentences])
        asked = vectors[0]
        return [sum(a * b for a, b in zip(asked, v, strict=True)) for v in vectors[1:]]

    return score
