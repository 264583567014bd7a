"""`make bench-rag`: knowledge-base ingestion and retrieval speed.

1. Ingestion: the real pipeline (read, chunk, embed with all-MiniLM-L6-v2 on the CPU, write to
   Chroma) over the starter KB, in chunks per second.
2. Retrieval at 10k and 100k chunks of a synthetic corpus: our hybrid search (query embedding,
   Chroma vectors, BM25 words, rank fusion, fetching the texts) side by side, query by query in
   the same run, with a plain Chroma query (query embedding and nearest neighbours only), the
   baseline. The corpus is built from the starter KB's sentences, 3 to 6 per chunk in random
   order, under synthetic titles. Embedding 100k chunks would take about 25 minutes of CPU here,
   so each synthetic chunk's vector is the normalised mean of its sentences' real embeddings:
   the index holds 100k distinct, realistic 384-dimension vectors and real text, which is what
   search time depends on; the queries are embedded for real on every call, as in the app.
3. Extractive answers end to end (policy, retrieval, sentence scoring, citations) on the real
   starter KB.

Writes docs/BENCHMARKS.md with --record; last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.extractive import ExtractiveProvider, split_sentences  # noqa: E402
from models.router import Router  # noqa: E402
from rag.answer import KnowledgeAnswerer  # noqa: E402
from rag.documents import find_documents, read_document  # noqa: E402
from rag.index import KnowledgeIndex, SentenceTransformerEmbedder, open_client  # noqa: E402
from rag.policy import QuestionPolicy  # noqa: E402
from rag.scoring import embedding_scorer  # noqa: E402
from scripts.doc_section import write_section  # noqa: E402

QUESTIONS = ROOT / "tests" / "rag" / "questions.jsonl"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def synthetic_corpus(
    sentences: list[str], vectors: np.ndarray[Any, Any], count: int, start: int, rng: random.Random
) -> tuple[list[str], list[str], np.ndarray[Any, Any], list[dict[str, Any]]]:
    ids, texts, chunk_vectors, metadatas = [], [], [], []
    for n in range(start, start + count):
        picks = [rng.randrange(len(sentences)) for _ in range(rng.randint(3, 6))]
        vector = vectors[picks].mean(axis=0)
        chunk_vectors.append(vector / np.linalg.norm(vector))
        ids.append(f"synthetic-{n}")
        texts.append(" ".join(sentences[i] for i in picks))
        document = n // 8  # eight chunks per synthetic document
        metadatas.append(
            {
                "source": f"synthetic/doc-{document}.md",
                "title": f"Synthetic document {document}",
                "language": "en",
                "audience": "patients",
                "kind": "article",
                "headings": f"Section {n % 8}",
                "citations": "",
                "doc_hash": f"{document:064x}",
            }
        )
    return ids, texts, np.array(chunk_vectors), metadatas


def time_queries(
    index: KnowledgeIndex, embedder: SentenceTransformerEmbedder, queries: list[str]
) -> tuple[list[float], list[float]]:
    ours, chroma = [], []
    collection = index._collection
    for i, query in enumerate(queries):
        # Alternate which goes first, so neither always runs on a warmer cache.
        runs = [
            ("ours", lambda q=query: index.search(q, k=5)),
            (
                "chroma",
                lambda q=query: collection.query(query_embeddings=embedder.embed([q]), n_results=5),
            ),
        ]
        for name, run in runs if i % 2 == 0 else reversed(runs):
            started = time.perf_counter()
            run()
            (ours if name == "ours" else chroma).append((time.perf_counter() - started) * 1000)
    return ours, chroma


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--record", action="store_true", help="write docs/BENCHMARKS.md")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = random.Random(7)
    embedder = SentenceTransformerEmbedder()
    questions = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line]
    queries = [q["text"] for q in questions if q["language"] == "en"]
    queries = [rng.choice(queries) for _ in range(args.queries)]
    figures: dict[str, Any] = {}

    with tempfile.TemporaryDirectory() as scratch:
        # --- 1. ingestion, the real pipeline --------------------------------------------------
        log(">> ingestion: the starter KB through read, chunk, embed, write")
        kb_index = KnowledgeIndex(open_client(Path(scratch) / "kb", None), embedder)
        started = time.perf_counter()
        report = kb_index.ingest(ROOT / "kb")
        seconds = time.perf_counter() - started
        figures["ingest_chunks_per_s"] = round(report.chunks / seconds, 1)
        figures["ingest_chunks"] = report.chunks
        log(f"   {report.chunks} chunks in {seconds:.1f} s")

        # --- 3. extractive answers end to end on the real KB ------------------------------------
        log(">> extractive answers end to end")
        extractive = ExtractiveProvider(embedding_scorer(embedder))
        answerer = KnowledgeAnswerer(
            kb_index, Router([], extractive), extractive, policy=QuestionPolicy.load()
        )
        answer_ms = []
        for question in questions[:100]:
            started = time.perf_counter()
            asyncio.run(
                answerer.answer(question["text"], language=question["language"], channel="web")
            )
            answer_ms.append((time.perf_counter() - started) * 1000)
        figures["extractive_answer_p50_ms"] = round(percentile(answer_ms, 50), 1)
        figures["extractive_answer_p95_ms"] = round(percentile(answer_ms, 95), 1)

        # --- 2. retrieval at scale ----------------------------------------------------------------
        sentences = sorted(
            {
                s
                for path in find_documents(ROOT / "kb")
                for section in read_document(path).sections
                for s in split_sentences(section.text)
            }
        )
        log(f">> embedding {len(sentences)} KB sentences for the synthetic corpus")
        vectors = np.array(embedder.embed(sentences))
        index = KnowledgeIndex(open_client(Path(scratch) / "synthetic", None), embedder)
        loaded = 0
        for size in sizes:
            log(f">> loading the synthetic corpus up to {size} chunks")
            while loaded < size:
                batch = min(10_000, size - loaded)
                ids, texts, chunk_vectors, metadatas = synthetic_corpus(
                    sentences, vectors, batch, loaded, rng
                )
                index.add_precomputed(ids, texts, chunk_vectors.tolist(), metadatas)
                loaded += batch
                log(f"   {loaded} chunks")
            started = time.perf_counter()
            index.search("warm up the word index", k=5)  # rebuilds BM25 for the new corpus
            build_ms = (time.perf_counter() - started) * 1000
            log(
                f">> {len(queries)} queries at {size} chunks (hybrid and plain Chroma, alternating)"
            )
            ours, chroma = time_queries(index, embedder, queries)
            label = f"{size // 1000}k"
            figures[f"retrieval_p50_ms_{label}"] = round(percentile(ours, 50), 1)
            figures[f"retrieval_p95_ms_{label}"] = round(percentile(ours, 95), 1)
            figures[f"chroma_p50_ms_{label}"] = round(percentile(chroma, 50), 1)
            figures[f"chroma_p95_ms_{label}"] = round(percentile(chroma, 95), 1)
            figures[f"retrieval_vs_chroma_p95_{label}"] = round(
                percentile(ours, 95) / percentile(chroma, 95), 2
            )
            figures[f"word_index_build_ms_{label}"] = round(build_ms)
            log(
                f"   ours p50 {statistics.median(ours):.1f} ms, chroma p50 "
                f"{statistics.median(chroma):.1f} ms"
            )

    if args.record:
        record(figures, args)
    print(json.dumps(figures))
    return 0


def record(figures: dict[str, Any], args: argparse.Namespace) -> None:
    body = "\n".join(
        [
            f"`make bench-rag` ({args.queries} queries per size; sizes {args.sizes}):",
            "",
            "| figure | value |",
            "|---|---|",
            *(f"| {key} | {value} |" for key, value in figures.items()),
        ]
    )
    write_section(ROOT / "docs" / "BENCHMARKS.md", "bench-rag", body)


if __name__ == "__main__":
    sys.exit(main())
