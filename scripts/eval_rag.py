"""`make eval-rag`: retrieval and answer-or-decline quality of the knowledge-base answers.

Retrieval: recall@5 and MRR of the gold document over our question set (tests/rag/questions.jsonl,
written from the starter KB). Answer-or-decline: the full answering path (policy, retrieval,
weak-retrieval threshold, extractive answer) on our set's answerable and must-decline rows and on
../shared/eval/kb_questions_dev.jsonl. The index is built from kb/ in a folder of its own
(var/eval-rag), so the app's own index is never touched. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.extractive import ExtractiveProvider  # noqa: E402
from models.router import Router  # noqa: E402
from rag.answer import AnswerConfig, KnowledgeAnswerer  # noqa: E402
from rag.index import KnowledgeIndex, SentenceTransformerEmbedder, open_client  # noqa: E402
from rag.policy import QuestionPolicy  # noqa: E402
from rag.scoring import embedding_scorer  # noqa: E402
from scripts.doc_section import write_section  # noqa: E402

OWN_SET = ROOT / "tests" / "rag" / "questions.jsonl"
DEV_SET = ROOT.parent / "shared" / "eval" / "kb_questions_dev.jsonl"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "var" / "eval-rag")
    parser.add_argument("--record", action="store_true", help="write docs/EVALUATION.md")
    args = parser.parse_args()

    print(">> building the evaluation index from kb/ (first run: about a minute)", file=sys.stderr)
    embedder = SentenceTransformerEmbedder()
    index = KnowledgeIndex(open_client(args.data_dir, None), embedder)
    report = index.ingest(Path("kb"))
    print(
        f"   {report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
        f"{report.removed} removed; {index.count()} chunks",
        file=sys.stderr,
    )

    own = read_jsonl(OWN_SET)
    dev = read_jsonl(DEV_SET) if DEV_SET.exists() else []
    if not dev:
        print(f"!! {DEV_SET} not found: answer-or-decline uses our own set only", file=sys.stderr)

    # --- retrieval -------------------------------------------------------------------------
    ranks: dict[str, list[int | None]] = defaultdict(list)
    timings = []
    for row in (r for r in own if r["answerable"]):
        started = time.perf_counter()
        hits = index.search(row["text"], k=5, language=row["language"])
        timings.append(time.perf_counter() - started)
        sources = [h.source for h in hits]
        rank = sources.index(row["gold"]) + 1 if row["gold"] in sources else None
        ranks[row["language"]].append(rank)
        ranks["all"].append(rank)
    misses = [
        r["id"]
        for r, rank in zip((r for r in own if r["answerable"]), ranks["all"], strict=True)
        if rank is None
    ]

    def recall(values: list[int | None]) -> float:
        return sum(1 for v in values if v is not None) / len(values)

    def mrr(values: list[int | None]) -> float:
        return sum(1 / v for v in values if v is not None) / len(values)

    # --- answer or decline ------------------------------------------------------------------
    extractive = ExtractiveProvider(embedding_scorer(embedder))
    answerer = KnowledgeAnswerer(
        index,
        Router([], extractive),
        extractive,
        policy=QuestionPolicy.load(),
        config=AnswerConfig(),
    )

    async def decide(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], Any]]:
        out = []
        for row in rows:
            answer = await answerer.answer(row["text"], language=row["language"], channel="web")
            out.append((row, answer))
        return out

    outcomes: dict[str, list[tuple[dict[str, Any], Any]]] = {
        "own": asyncio.run(decide(own)),
        "dev": asyncio.run(decide(dev)),
    }
    decision_rows = []
    wrong = []
    for set_name, results in outcomes.items():
        for row, answer in results:
            correct = (answer.declined is None) == bool(row["answerable"])
            decision_rows.append((set_name, row, answer, correct))
            if not correct:
                wrong.append(
                    f"{row['id']} ({answer.declined or 'answered'}, "
                    f"sim {answer.top_similarity:.2f})"
                )

    def accuracy(selected: list[tuple[str, dict[str, Any], Any, bool]]) -> float:
        return sum(1 for *_, ok in selected if ok) / len(selected) if selected else 0.0

    unanswerable = [d for d in decision_rows if not d[1]["answerable"]]
    answerable = [d for d in decision_rows if d[1]["answerable"]]
    dev_rows = [d for d in decision_rows if d[0] == "dev"]
    dev_unanswerable = [d for d in unanswerable if d[0] == "dev"]
    own_unanswerable = [d for d in unanswerable if d[0] == "own"]
    figures = {
        "recall_at_5": round(recall(ranks["all"]), 4),
        "mrr": round(mrr(ranks["all"]), 4),
        "recall_at_5_en": round(recall(ranks["en"]), 4),
        "recall_at_5_es": round(recall(ranks["es"]), 4),
        # As the issue defines it: the must-decline rows of the shared development set.
        "decline_accuracy": round(accuracy(dev_unanswerable), 4),
        "decline_accuracy_own": round(accuracy(own_unanswerable), 4),
        "decline_accuracy_all": round(accuracy(unanswerable), 4),
        "answer_rate": round(accuracy(answerable), 4),
        "answer_or_decline_accuracy_dev": round(accuracy(dev_rows), 4),
        "answer_or_decline_accuracy": round(accuracy(decision_rows), 4),
        "retrieval_questions": len(ranks["all"]),
        "decision_questions": len(decision_rows),
        "retrieval_p50_ms": round(sorted(timings)[len(timings) // 2] * 1000, 1),
        "min_similarity": AnswerConfig().min_similarity,
    }
    print(f"retrieval misses (gold not in top 5): {', '.join(misses) or 'none'}", file=sys.stderr)
    print(f"wrong answer-or-decline: {', '.join(wrong) or 'none'}", file=sys.stderr)
    if args.record:
        record(figures, misses, wrong)
    print(json.dumps(figures))
    return 0


def record(figures: dict[str, Any], misses: list[str], wrong: list[str]) -> None:
    body = "\n".join(
        [
            "| figure | value |",
            "|---|---|",
            *(f"| {key} | {value} |" for key, value in figures.items()),
            "",
            f"Retrieval misses (gold document not in the top 5): {', '.join(misses) or 'none'}.",
            "",
            f"Wrong answer-or-decline decisions: {', '.join(wrong) or 'none'}.",
        ]
    )
    write_section(ROOT / "docs" / "EVALUATION.md", "eval-rag", body)


if __name__ == "__main__":
    sys.exit(main())
