"""`python -m rag ingest PATH` and `python -m rag search QUERY --k 5 --json` (or `--stdin`).

Honours the app's settings (DATA_DIR, CHROMA_URL, EMBEDDING_MODEL_PATH), so an evaluation can use
an index of its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from core.settings import get_settings
from rag.index import KnowledgeIndex, SentenceTransformerEmbedder, open_client


def _index() -> KnowledgeIndex:
    settings = get_settings()
    client = open_client(settings.data_dir, settings.chroma_url)
    return KnowledgeIndex(client, SentenceTransformerEmbedder(settings.embedding_model_path))


def _progress(files: Iterable[Path]) -> Iterable[Path]:
    from tqdm import tqdm

    items = list(files)
    bar: Iterable[Path] = tqdm(items, desc="ingesting", unit="file", file=sys.stderr)
    return bar


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rag", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    ingest = commands.add_parser("ingest", help="add or update documents from a folder or file")
    ingest.add_argument("path", type=Path)
    search = commands.add_parser("search", help="hybrid search of the knowledge base")
    search.add_argument("query", nargs="?")
    search.add_argument("--k", type=int, default=5)
    search.add_argument("--json", action="store_true", help="one JSON object per hit")
    search.add_argument("--stdin", action="store_true", help="one query per line on stdin")
    search.add_argument("--language")
    search.add_argument("--source")
    search.add_argument("--audience")
    args = parser.parse_args(argv)

    if args.command == "ingest":
        if not args.path.exists():
            print(f"{args.path} does not exist: give a folder or a file to ingest", file=sys.stderr)
            return 2
        report = _index().ingest(args.path, progress=_progress)
        print(
            f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
            f"removed {report.removed}, unreadable {report.failed}; {report.chunks} new chunks"
        )
        return 0

    if not args.stdin and not args.query:
        print("give a QUERY, or --stdin with one query per line", file=sys.stderr)
        return 2
    index = _index()
    filters = {"language": args.language, "source": args.source, "audience": args.audience}
    queries = [line.strip() for line in sys.stdin if line.strip()] if args.stdin else [args.query]
    for query in queries:
        hits = index.search(query, k=args.k, **filters)
        if args.stdin:
            print(json.dumps({"query": query, "hits": [h.as_dict() for h in hits]},
                             ensure_ascii=False))  # fmt: skip
        elif args.json:
            for hit in hits:
                print(json.dumps(hit.as_dict(), ensure_ascii=False))
        else:
            for n, hit in enumerate(hits, 1):
                print(f"{n}. {hit.title} ({hit.source}) score {hit.score:.4f}\n   {hit.text[:160]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
