"""The knowledge-base answerer as the platform runs it: built on first use (loading the
embedding model takes seconds and most conversations never ask a question), from settings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from core.settings import Settings
from models.extractive import ExtractiveProvider
from models.registry import build_router
from rag.answer import KnowledgeAnswer, KnowledgeAnswerer
from rag.index import SentenceTransformerEmbedder, open_index
from rag.policy import default_policy
from rag.scoring import embedding_scorer

log = logging.getLogger(__name__)


class KnowledgeUnavailable(Exception):
    """The models are still loading (or failed to): the question is declined, not kept waiting."""


class KnowledgeService:
    def __init__(
        self, settings: Settings, *, redis: Any | None = None, cold_wait_s: float = 3.0
    ) -> None:
        self._settings = settings
        self._redis = redis
        self._answerer: KnowledgeAnswerer | None = None
        self._loading: asyncio.Task[KnowledgeAnswerer] | None = None
        # How long a question may wait for the models to load before it is declined instead.
        self._cold_wait_s = cold_wait_s

    async def answer(
        self,
        question: str,
        *,
        language: str,
        channel: str,
        on_piece: Callable[[str], Awaitable[None]] | None = None,
        on_reset: Callable[[], Awaitable[None]] | None = None,
    ) -> KnowledgeAnswer:
        answerer = self._answerer
        if answerer is None:
            try:
                answerer = await asyncio.wait_for(
                    asyncio.shield(self._load()), timeout=self._cold_wait_s
                )
            except TimeoutError as exc:
                raise KnowledgeUnavailable("the knowledge base is still loading") from exc
        return await answerer.answer(
            question, language=language, channel=channel, on_piece=on_piece, on_reset=on_reset
        )

    async def preload(self) -> None:
        """Load the models now rather than on the first question (a GGUF model takes a while)."""
        try:
            await self._load()
        except Exception:
            log.exception("the knowledge base could not be loaded; questions will be declined")

    def _load(self) -> asyncio.Task[KnowledgeAnswerer]:
        """The one loading task, started on first need; a failed load is retried next time."""
        failed = (
            self._loading is not None
            and self._loading.done()
            and (self._loading.cancelled() or self._loading.exception() is not None)
        )
        if self._loading is None or failed:
            self._loading = asyncio.create_task(asyncio.to_thread(self._build))
            self._loading.add_done_callback(self._loaded)
        return self._loading

    def _loaded(self, task: asyncio.Task[KnowledgeAnswerer]) -> None:
        if not task.cancelled() and task.exception() is None:
            self._answerer = task.result()

    def _build(self) -> KnowledgeAnswerer:
        settings = self._settings
        embedder = SentenceTransformerEmbedder(settings.embedding_model_path)
        index = open_index(settings.data_dir, settings.chroma_url, embedder)
        if index.count() == 0:
            log.warning(
                "the knowledge base is empty: every question will be declined until documents "
                "are ingested (python -m rag ingest kb, or upload them in the admin API)"
            )
        extractive = ExtractiveProvider(embedding_scorer(embedder))
        router = build_router(settings, extractive, redis=self._redis)
        for provider in router.providers:
            load = getattr(provider, "load", None)  # a local model file: read it once, now
            if callable(load):
                try:
                    load()
                except Exception as exc:
                    # A missing or broken model is that provider down, not the knowledge base:
                    # the router passes over it to the next provider and the extractive answer.
                    log.error(
                        "an LLM provider could not load its model; answering without it",
                        extra={"provider": provider.name, "error": type(exc).__name__},
                    )
        return KnowledgeAnswerer(index, router, extractive, policy=default_policy())
