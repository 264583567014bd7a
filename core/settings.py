"""The platform's one settings object, read from the environment (and `.env`).

Embedded defaults let `make run` start with no setup: SQLite under `DATA_DIR`, an in-process
rate limiter, Celery on a SQLite broker. Production sets `DATABASE_URL`, `REDIS_URL`, ...
"""

from __future__ import annotations

import contextlib
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = REPO_ROOT / "var"

    database_url: str = ""
    redis_url: str | None = None
    celery_broker_url: str = ""
    auto_migrate: bool = True

    rasa_url: str = "http://127.0.0.1:5005"
    action_server_url: str = "http://127.0.0.1:5055"
    # The whole Rasa round trip must fit in this, so a patient hears back within 5 s
    # even when Rasa hangs instead of refusing the connection.
    rasa_timeout_s: float = 4.0

    api_token: SecretStr | None = None

    supported_languages: list[str] = Field(default_factory=lambda: ["en", "es"])
    default_language: str = "en"
    emergency_number: str = "911"
    # Knowledge base: a Chroma server (e.g. http://chroma:8000) instead of the on-disk client
    # under DATA_DIR/chroma, and a sentence-transformers model folder instead of the packaged
    # all-MiniLM-L6-v2.
    chroma_url: str | None = None
    embedding_model_path: str | None = None
    # Said to patients in crisis; 988 is the US Suicide & Crisis Lifeline (call or text).
    crisis_line: str = "988"
    poison_control_number: str = "1-800-222-1222"
    domestic_violence_line: str = "1-800-799-7233"

    # Knowledge-base answers (rag/) and the LLM router (models/). Providers are tried in this
    # order, each only when configured (a model file, an API key); the extractive answerer,
    # which needs no model, always answers last.
    kb_upload_max_bytes: int = 20 * 1024 * 1024
    # Load the embedding model (and a local LLM) at start-up instead of on the first question.
    kb_preload: bool = True
    admin_token: SecretStr | None = None
    llm_providers: list[str] = Field(default_factory=lambda: ["llamacpp", "openai", "anthropic"])
    llm_timeout_s: float = 20.0
    llm_attempts: int = 2
    llm_cooldown_s: float = 60.0
    # Cloud providers that may receive patient data unredacted (e.g. under a signed BAA).
    llm_phi_allowed_providers: list[str] = Field(default_factory=list)
    llama_model_path: str | None = None
    llama_lora_path: str | None = None
    llama_n_gpu_layers: int | None = None
    openai_api_key: SecretStr | None = None
    openai_model: str = "gpt-4o-mini"
    openai_base_url: str | None = None
    anthropic_api_key: SecretStr | None = None
    anthropic_model: str = "claude-haiku-4-5"
    anthropic_base_url: str | None = None

    # SMS through Twilio (channels/sms/). The channel is off until the account and token are set.
    # PUBLIC_BASE_URL is the address Twilio calls (and signs), e.g. https://clinic.example.org;
    # behind a reverse proxy it differs from what this process sees, so it is configured.
    public_base_url: str | None = None
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_from_number: str | None = None
    twilio_api_base_url: str = "https://api.twilio.com"
    # Region for reading national numbers a patient types ("(415) 555-0100").
    default_phone_region: str = "US"
    # Twilio answers the standard English keywords (STOP, START, HELP) itself unless its
    # Advanced Opt-Out is turned off; we record them either way and reply only when told to.
    sms_reply_to_standard_keywords: bool = False
    sms_extra_opt_out_keywords: list[str] = Field(
        default_factory=lambda: ["ALTO", "PARAR", "BAJA", "CANCELAR", "DETENER"]
    )
    sms_extra_opt_in_keywords: list[str] = Field(
        default_factory=lambda: ["COMENZAR", "INICIAR", "REANUDAR"]
    )
    sms_extra_help_keywords: list[str] = Field(default_factory=lambda: ["AYUDA"])
    # The language of the extra keywords: a patient who texts one is answered in it.
    sms_extra_keywords_language: str = "es"
    sms_media_max_bytes: int = 5 * 1024 * 1024
    sms_media_types: list[str] = Field(
        default_factory=lambda: ["image/jpeg", "image/png", "image/gif", "image/heic", "image/webp"]
    )
    sms_send_attempts: int = 6
    sms_retry_base_s: float = 2.0
    clinic_name: str = "the clinic"
    # Linking a phone to a web conversation with a one-time code sent by SMS.
    phone_code_ttl_s: int = 600
    phone_code_max_attempts: int = 5
    phone_codes_per_hour: int = 3
    # Signs one-time codes (HMAC); the embedded default is generated once under DATA_DIR.
    secret_key: SecretStr | None = None

    # Staff escalation (escalation/). Cases always appear in the admin console (/console);
    # with MATTERMOST_URL and MATTERMOST_BOT_TOKEN each case also gets a private Mattermost
    # channel in MATTERMOST_TEAM (docs/MATTERMOST.md; `python -m escalation.bootstrap` sets it up).
    mattermost_url: str | None = None
    mattermost_bot_token: SecretStr | None = None
    mattermost_team: str = "clinic"
    # The on-call roster is whoever is a member of this channel; supervisors are told about
    # cases nobody claimed in time.
    mattermost_oncall_channel: str = "on-call"
    mattermost_supervisor_channel: str = "supervisors"
    # Token(s) Mattermost sends with the /case slash command and outgoing webhooks.
    mattermost_slash_token: SecretStr | None = None
    mattermost_outgoing_token: SecretStr | None = None
    # Per priority: remind on-call staff every N seconds while a case is unclaimed; tell the
    # supervisors once it has waited this long (its claim deadline).
    escalation_renotify_s: dict[str, int] = Field(
        default_factory=lambda: {"immediate": 120, "high": 300, "normal": 900}
    )
    escalation_supervisor_s: dict[str, int] = Field(
        default_factory=lambda: {"immediate": 300, "high": 900, "normal": 3600}
    )
    escalation_check_interval_s: float = 30.0
    # How staff are shown to patients: "first_name_role" (Dana, Nurse), "role" (Nurse),
    # "clinic" (the clinic's name only).
    staff_display: Literal["first_name_role", "role", "clinic"] = "first_name_role"
    escalation_recent_messages: int = 10

    # Phone calls (channels/voice/, docs/VOICE.md) through Twilio Voice; 3CX reaches the same
    # webhook through a SIP trunk to a Twilio SIP Domain. On with the Twilio account, token and
    # PUBLIC_BASE_URL. "stream": our own speech pipeline over Media Streams; "gather": Twilio's
    # turn-based <Gather input="speech"> (no audio reaches this server).
    voice_mode: Literal["stream", "gather"] = "stream"
    voice_stt_engine: Literal["pocketsphinx", "whisper"] = "pocketsphinx"
    # Whisper: a .pt checkpoint; PocketSphinx: a model folder (default: the one in its wheel).
    voice_stt_model_path: str | None = None
    # PocketSphinx only: a JSGF grammar of the phrases to expect (tests, fixed menus).
    voice_stt_grammar: str | None = None
    voice_stt_device: Literal["auto", "cpu", "cuda"] = "auto"
    voice_stt_workers: int = 2
    voice_tts_engine: Literal["espeak", "coqui"] = "espeak"
    voice_tts_model_path: str | None = None
    voice_tts_config_path: str | None = None
    voice_tts_voices: dict[str, str] = Field(
        default_factory=lambda: {"en": "en-us", "es": "es-419"}
    )
    voice_tts_wpm: int = 165
    # End of the caller's turn: this much silence after speech. Shorter answers sooner and
    # cuts in on people who pause mid-sentence.
    voice_end_silence_ms: int = 500
    voice_vad_aggressiveness: int = 2
    # The caller talking this long over the bot stops the bot (barge-in).
    voice_barge_in_ms: int = 200
    voice_max_utterance_s: float = 20.0
    # Keypad: this digit asks for staff at any time; this one accepts a transfer offered.
    voice_staff_digit: str = "0"
    voice_transfer_digit: str = "1"
    # Numbers calls are transferred to (<Dial>): the on-call clinician after an emergency, the
    # front desk or nurse line when staff take a case over. Unset: no transfer is offered.
    voice_oncall_number: str | None = None
    voice_staff_number: str | None = None
    voice_dial_timeout_s: int = 20
    # A per-call token in the stream's <Parameter> is valid this long after the webhook.
    voice_stream_token_ttl_s: int = 120

    # --- access control (webapp/auth.py) ---

    # --- data protection (encryption at rest) ---

    # --- data protection (audit chain, retention, export, erasure) ---

    # --- observability (metrics, readiness) ---

    max_message_chars: int = 4000
    max_request_bytes: int = 64 * 1024
    rate_limit_per_sender: str = "30/minute"
    history_limit: int = 200
    cors_origins: list[str] = Field(default_factory=list)

    @property
    def sms_enabled(self) -> bool:
        return bool(
            self.twilio_account_sid
            and self.twilio_auth_token
            and (self.twilio_messaging_service_sid or self.twilio_from_number)
            and self.public_base_url
        )

    @property
    def voice_enabled(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token and self.public_base_url)

    @property
    def mattermost_enabled(self) -> bool:
        return bool(self.mattermost_url and self.mattermost_bot_token)

    def secret(self) -> bytes:
        """The server's secret: SECRET_KEY, else one generated once and kept under DATA_DIR."""
        if self.secret_key:
            return self.secret_key.get_secret_value().encode()
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError), path.open("x") as handle:
                handle.write(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip().encode()

    @model_validator(mode="after")
    def _fill_derived_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'clinic.db'}"
        if not self.celery_broker_url:
            self.celery_broker_url = (
                f"{self.redis_url}"
                if self.redis_url
                else f"sqla+sqlite:///{self.data_dir / 'celery-broker.db'}"
            )
        if self.environment == "production" and self.database_url.startswith("sqlite"):
            raise ValueError("DATABASE_URL must point to PostgreSQL in production")
        for name in ("escalation_renotify_s", "escalation_supervisor_s"):
            delays = getattr(self, name)
            if set(delays) != {"immediate", "high", "normal"} or min(delays.values()) <= 0:
                raise ValueError(
                    f"{name.upper()} needs a positive number of seconds for each of "
                    "immediate, high and normal, e.g. "
                    '{"immediate": 120, "high": 300, "normal": 900}'
                )
        if self.default_language not in self.supported_languages:
            raise ValueError("DEFAULT_LANGUAGE must be one of SUPPORTED_LANGUAGES")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
