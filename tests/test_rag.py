"""Knowledge-base ingestion and retrieval: real documents of every kind, the real embedding model
(offline), a real Chroma persistent client on disk, and the `python -m rag` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag.index import KnowledgeIndex, SentenceTransformerEmbedder, open_client

ROOT = Path(__file__).resolve().parents[1]

FEVER = """---
title: Fever in adults
language: en
audience: patients
kind: article
sources:
  - title: "MedlinePlus: Fever"
    url: https://medlineplus.gov/fever.html
---
# Fever in adults
## What you can do at home
Drink plenty of fluids and rest. A fever medicine from the pharmacy can help; follow the label.
## When to call 911
Call 911 for a fever with a stiff neck, confusion or a rash that does not fade under a glass.
"""
HOURS_ES = """---
title: Horario de la clínica
language: es
---
## Horario
Abrimos de lunes a viernes de 8 a 18 horas y los sábados de 9 a 13 horas.
"""
HTML = """<html><head><title>Parking and directions</title><script>alert(1)</script></head>
<body><h1>Parking</h1><p>Free parking is behind the building, with two accessible spaces.</p>
</body></html>"""


def _pdf(text: str) -> bytes:
    """A minimal one-page PDF with one line of text, built by hand (no PDF library needed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder()


@pytest.fixture
def library(tmp_path: Path) -> Path:
    folder = tmp_path / "kb"
    (folder / "en").mkdir(parents=True)
    (folder / "es").mkdir()
    (folder / "en" / "fever.md").write_text(FEVER)
    (folder / "es" / "horario.md").write_text(HOURS_ES)
    (folder / "en" / "parking.html").write_text(HTML)
    (folder / "en" / "refills.txt").write_text(
        "Prescription refills\n\nAsk your pharmacy to send a refill request; allow two days."
    )
    (folder / "en" / "flu-shots.pdf").write_bytes(_pdf("Flu shots are given every autumn."))
    (folder / "en" / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    return folder


def test_every_kind_is_ingested_and_found_with_its_headings(
    library: Path, tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    index = KnowledgeIndex(open_client(tmp_path / "data", None), embedder)
    report = index.ingest(library)
    assert (report.added, report.failed) == (5, 1)  # the damaged PDF is reported, not fatal
    fever = index.search("my temperature is high and my neck is stiff, when is it an emergency?")
    assert fever[0].title == "Fever in adults"
    assert "When to call 911" in fever[0].metadata["headings"]
    assert "medlineplus.gov/fever.html" in fever[0].metadata["citations"]
    assert index.search("where can I park my car")[0].title == "Parking and directions"
    assert "alert(1)" not in json.dumps([h.text for h in index.search("parking", k=10)])
    assert "Flu shots" in index.search("when are flu shots given", k=3)[0].text
    assert index.search("refill request pharmacy")[0].source.endswith("refills.txt")
    spanish = index.search("¿a qué hora abren los sábados?", language="es")
    assert spanish and all(h.metadata["language"] == "es" for h in spanish)


def test_re_ingestion_is_idempotent_and_leaves_no_stale_chunks(
    library: Path, tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    index = KnowledgeIndex(open_client(tmp_path / "data", None), embedder)
    index.ingest(library)
    before = index.count()
    again = index.ingest(library)
    assert (again.added, again.updated, again.unchanged, again.removed) == (0, 0, 5, 0)
    assert index.count() == before
    (library / "en" / "fever.md").write_text(FEVER.replace("stiff neck", "purple rash"))
    (library / "en" / "refills.txt").unlink()
    changed = index.ingest(library)
    assert (changed.updated, changed.removed, changed.unchanged) == (1, 1, 3)
    texts = " ".join(h.text for h in index.search("fever stiff neck", k=20))
    assert "stiff neck" not in texts and "purple rash" in texts
    assert not [h for h in index.search("refill", k=20) if h.source.endswith("refills.txt")]


def test_the_command_line_prints_json_hits_and_honours_data_dir(
    library: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "DATA_DIR": str(tmp_path / "cli-data"), "HF_HUB_OFFLINE": "1"}

    def rag(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rag", *args],
            cwd=ROOT,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )

    ingested = rag("ingest", str(library))
    assert ingested.returncode == 0, ingested.stderr
    assert "added 5" in ingested.stdout and "unreadable 1" in ingested.stdout
    one = rag("search", "fever at home", "--k", "2", "--json")
    hits = [json.loads(line) for line in one.stdout.splitlines()]
    assert len(hits) == 2
    assert set(hits[0]) == {"source", "title", "chunk_id", "score", "text"}
    many = rag("search", "--stdin", "--k", "1", "--json", stdin="parking\nrefills\n")
    lines = [json.loads(line) for line in many.stdout.splitlines()]
    assert [line["query"] for line in lines] == ["parking", "refills"]
    assert lines[0]["hits"][0]["title"] == "Parking and directions"
    missing = rag("ingest", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_reading_the_whole_index_pages_through_it(
    library: Path, tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    """A single get() of a large collection exceeds SQLite's variable limit (seen at 100k)."""
    from rag.index import _get_all

    index = KnowledgeIndex(open_client(tmp_path / "data", None), embedder)
    index.ingest(library)
    everything = _get_all(index._collection, ["metadatas"], page=2)
    assert len(everything["ids"]) == len(set(everything["ids"])) == index.count() > 2
    assert len(everything["metadatas"]) == index.count()
