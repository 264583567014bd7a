"""Builds the router from settings: which providers exist, in which order, with which limits."""

from __future__ import annotations

import logging
from typing import Any

from core.settings import Settings
from models.base import Provider
from models.extractive import ExtractiveProvider
from models.router import Cooldowns, MemoryCooldowns, RedisCooldowns, Router, RouterConfig

log = logging.getLogger(__name__)

KNOWN_PROVIDERS = ("llamacpp", "openai", "anthropic")


def configured_providers(settings: Settings) -> list[Provider]:
    """The providers named in LLM_PROVIDERS that have what they need, in that order."""
    providers: list[Provider] = []
    for name in settings.llm_providers:
        if name not in KNOWN_PROVIDERS:
            raise ValueError(
                f"LLM_PROVIDERS names {name!r}; known providers are {', '.join(KNOWN_PROVIDERS)}"
            )
        if name == "llamacpp" and settings.llama_model_path:
            from models.llamacpp_provider import LlamaCppProvider

            providers.append(
                LlamaCppProvider(
                    model_path=settings.llama_model_path,
                    lora_path=settings.llama_lora_path,
                    n_gpu_layers=settings.llama_n_gpu_layers,
                )
            )
        elif name == "openai" and settings.openai_api_key:
            from models.openai_provider import OpenAIProvider

            providers.append(
                OpenAIProvider(
                    api_key=settings.openai_api_key.get_secret_value(),
                    model=settings.openai_model,
                    base_url=settings.openai_base_url,
                )
            )
        elif name == "anthropic" and settings.anthropic_api_key:
            from models.anthropic_provider import AnthropicProvider

            providers.append(
                AnthropicProvider(
                    api_key=settings.anthropic_api_key.get_secret_value(),
                    model=settings.anthropic_model,
                    base_url=settings.anthropic_base_url,
                )
            )
    return providers


def build_router(
    settings: Settings, extractive: ExtractiveProvider, *, redis: Any | None = None
) -> Router:
    cooldowns: Cooldowns = RedisCooldowns(redis) if redis is not None else MemoryCooldowns()
    providers = configured_providers(settings)
    router = Router(
        providers,
        extractive,
        config=RouterConfig(
            attempts_per_provider=settings.llm_attempts,
            timeout_s=settings.llm_timeout_s,
            cooldown_s=settings.llm_cooldown_s,
            phi_allowed=frozenset(settings.llm_phi_allowed_providers),
        ),
        cooldowns=cooldowns,
    )
    log.info("LLM router ready", extra={"order": router.order})
    return router
