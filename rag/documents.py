"""Reading documents of every supported kind into one shape: metadata plus sections of text
under their heading path ("Fever in adults > When to call 911")."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from bs4 import BeautifulSoup
from pypdf import PdfReader

SUPPORTED = {".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html",
             ".pdf": "pdf", ".txt": "text"}  # fmt: skip
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.DOTALL)
# Notes for editors (such as the template banner of the starter FAQ): invisible when Markdown is
# rendered, so never part of what a patient is told.
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


@dataclass(frozen=True)
class Section:
    headings: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class Document:
    source: str
    title: str
    language: str
    audience: str
    kind: str
    sections: tuple[Section, ...]
    content_hash: str
    citations: tuple[dict[str, str], ...] = field(default=())

    def metadata(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "title": self.title,
            "language": self.language,
            "audience": self.audience,
            "kind": self.kind,
            "doc_hash": self.content_hash,
        }


class UnreadableDocument(ValueError):
    pass


def find_documents(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix.lower() in SUPPORTED else []
    return sorted(
        p for p in path.rglob("*")
        if p.is_file() and p.suffix.lower() in SUPPORTED and p.name.lower() != "readme.md"
    )  # fmt: skip


def read_document(
    path: Path, *, source: str | None = None, language: str | None = None
) -> Document:
    """`language` is used when the document does not name its own (front matter); without
    either, the language is detected from the text."""
    raw = path.read_bytes()
    kind = SUPPORTED.get(path.suffix.lower())
    if kind is None:
        raise UnreadableDocument(f"{path}: unsupported file type")
    meta: dict[str, Any] = {}
    if kind == "pdf":
        try:
            reader = PdfReader(path)
            text = "\n\n".join(page.extract_text() or "" for page in reader.pages)
        except Exception as exc:  # pypdf raises many kinds on damaged files
            raise UnreadableDocument(f"{path}: not a readable PDF ({type(exc).__name__})") from exc
        sections = _plain_sections(text)
        title = (reader.metadata.title if reader.metadata and reader.metadata.title else "") or ""
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        if kind == "markdown":
            match = _FRONT_MATTER.match(text)
            if match:
                loaded = yaml.safe_load(match.group(1))
                meta = loaded if isinstance(loaded, dict) else {}
                text = text[match.end() :]
            sections = _markdown_sections(_HTML_COMMENT.sub("", text))
            title = str(meta.get("title") or "")
        elif kind == "html":
            sections, title = _html_sections(text)
        else:
            sections = _plain_sections(text)
            title = ""
    sections = tuple(s for s in sections if s.text.strip())
    if not title:
        title = next((s.headings[0] for s in sections if s.headings), path.stem.replace("-", " "))
    citations = tuple(
        {"title": str(c.get("title", "")), "url": str(c.get("url", ""))}
        for c in meta.get("sources") or []
        if isinstance(c, dict)
    )
    return Document(
        source=source or str(path),
        title=title.strip(),
        language=str(meta.get("language") or language or _detect_language(sections)),
        audience=str(meta.get("audience") or "patients"),
        kind=str(meta.get("kind") or kind),
        sections=sections,
        content_hash=hashlib.sha256(raw).hexdigest(),
        citations=citations,
    )


def _detect_language(sections: tuple[Section, ...]) -> str:
    from bot.language import detect_language

    sample = " ".join(s.text for s in sections)[:2000]
    return detect_language(sample, supported=["en", "es"], fallback="en")


def _markdown_sections(text: str) -> tuple[Section, ...]:
    path: list[str] = []
    sections: list[Section] = []
    buffer: list[str] = []

    def flush() -> None:
        body = "\n".join(buffer).strip()
        if body:
            sections.append(Section(tuple(path), body))
        buffer.clear()

    for line in text.splitlines():
        heading = _HEADING.match(line)
        if heading:
            flush()
            level = len(heading.group(1))
            del path[level - 1 :]
            path.extend([""] * (level - 1 - len(path)))
            path.append(heading.group(2).strip())
        else:
            buffer.append(line)
    flush()
    return tuple(Section(tuple(h for h in s.headings if h), s.text) for s in sections)


def _html_sections(text: str) -> tuple[tuple[Section, ...], str]:
    soup = BeautifulSoup(text, "html.parser")
    for tag in soup(["script", "style", "nav", "footer", "header", "noscript"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    lines: list[str] = []
    for element in soup.find_all(["h1", "h2", "h3", "h4", "p", "li", "td"]):
        words = element.get_text(" ", strip=True)
        if not words:
            continue
        if element.name.startswith("h"):
            lines.append("#" * int(element.name[1]) + " " + words)
        else:
            lines.append(("- " if element.name == "li" else "") + words)
    return _markdown_sections("\n".join(lines)), title


def _plain_sections(text: str) -> tuple[Section, ...]:
    return tuple(Section((), p.strip()) for p in re.split(r"\n\s*\n", text) if p.strip())
