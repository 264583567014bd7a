"""The platform's one settings object, read from the environment (and `.env`).

Embedded defaults let `make run` start with no setup: SQLite under `DATA_DIR`, an in-process
rate limiter, Celery on a SQLite broker. Production sets `DATABASE_URL`, `REDIS_URL`, ...
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
from collections.abc import Callable
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
    # Redis broker: a task a worker took and never acknowledged (the worker was killed) goes to
    # another worker after this long. Sending and answering are safe to run twice.
    celery_visibility_timeout_s: int = 3600
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
    # Staff sign-in sessions (JWT signed with a key derived from SECRET_KEY) last this long.
    session_ttl_s: int = 8 * 3600
    # Each process re-reads an account (active, signed out?) at most this often; a sign-out
    # handled by another process takes effect within this time.
    session_check_cache_s: float = 5.0
    # This many wrong passwords in a row lock the account for LOGIN_LOCKOUT_S.
    login_max_failures: int = 5
    login_lockout_s: int = 15 * 60
    # argon2id cost for new passwords; older hashes are upgraded at the next sign-in.
    password_hash_time_cost: int = 3
    password_hash_memory_kib: int = 64 * 1024
    # An OpenID Connect provider whose access tokens also open the admin API (all three set:
    # issuer, audience, JWKS URL). Roles come from OIDC_ROLE_CLAIM (a list or a string; a
    # dotted path such as realm_access.roles reaches nested claims).
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_role_claim: str = "roles"
    oidc_username_claim: str = "preferred_username"

    # --- data protection (encryption at rest) ---
    # Fernet keys for message text and patient fields, comma-separated: the first encrypts,
    # all decrypt. Rotation: put a new key first, run `python -m core.crypto rotate`, then drop
    # the old one. Unset outside production: one key generated once under DATA_DIR.
    encryption_keys: SecretStr | None = None
    # Keys the blind indexes (HMACs phone numbers and addresses are looked up by). Unset
    # outside production: generated once under DATA_DIR.
    blind_index_key: SecretStr | None = None

    # --- data protection (audit chain, retention, export, erasure) ---
    # Conversations (messages, pictures, calls, cases) of patients silent this many days are
    # erased by a daily task; 0 keeps them forever. Pictures can go sooner (0: with the rest).
    retention_days: int = Field(default=0, ge=0)
    retention_media_days: int = Field(default=0, ge=0)
    # Rasa's tracker store (the SQLAlchemy URL of its database, e.g. sqlite:///var/rasa/
    # tracker.db): erasure and retention delete the dialogue's copy of a conversation there too.
    rasa_tracker_db_url: str | None = None

    # --- observability (metrics, readiness) ---
    # /metrics asks for `Authorization: Bearer <METRICS_TOKEN>` when set (docs/OBSERVABILITY.md).
    metrics_token: SecretStr | None = None
    # A Celery worker serves its own /metrics on this port when set (a worker that does not
    # share PROMETHEUS_MULTIPROC_DIR with the web app on one host, as in docker compose).
    metrics_worker_port: int | None = None

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

    def encryption_key_list(self) -> list[bytes]:
        """ENCRYPTION_KEYS, else one Fernet key generated once and kept under DATA_DIR."""
        if self.encryption_keys:
            return [key.encode() for key in _split_keys(self.encryption_keys)]
        return [_kept_under(self.data_dir / "encryption_key", _new_fernet_key)]

    def blind_index_secret(self) -> bytes:
        """BLIND_INDEX_KEY, else one generated once and kept under DATA_DIR."""
        if self.blind_index_key:
            return self.blind_index_key.get_secret_value().encode()
        return _kept_under(self.data_dir / "blind_index_key", lambda: secrets.token_hex(32))

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
        _check_encryption_keys(self)
        if self.environment == "production" and not self.secret_key:
            # Every web replica and worker must sign and check sessions and codes alike; a key
            # generated per container would not.
            raise ValueError(
                "SECRET_KEY must be set in production: generate one with "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`"
            )
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


def _split_keys(keys: SecretStr) -> list[str]:
    return [key.strip() for key in keys.get_secret_value().split(",") if key.strip()]


def _new_fernet_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


def _kept_under(path: Path, make: Callable[[], str]) -> bytes:
    # Written whole, readable by this user only, then linked into place: processes starting
    # together agree on the first one and never read a half-written key.
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        with draft.open("x") as handle:
            draft.chmod(0o600)
            handle.write(make())
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
        draft.unlink()
    return path.read_text().strip().encode()


def _check_encryption_keys(settings: Settings) -> None:
    """Keys are checked at start-up, so a typo is not found by the first patient message."""
    advice = "generate one with `python -m core.crypto generate-key`"
    keys = _split_keys(settings.encryption_keys) if settings.encryption_keys else []
    if settings.environment == "production":
        if not keys:
            raise ValueError(f"ENCRYPTION_KEYS must be set in production: {advice}")
        if not settings.blind_index_key:
            raise ValueError(f"BLIND_INDEX_KEY must be set in production: {advice}")
    if settings.encryption_keys and not keys:
        raise ValueError(f"ENCRYPTION_KEYS is set but holds no key: {advice}")
    for position, key in enumerate(keys, start=1):
        try:
            valid = len(base64.urlsafe_b64decode(key.encode())) == 32
        except (ValueError, binascii.Error):
            valid = False
        if not valid:
            raise ValueError(
                f"Key {position} of ENCRYPTION_KEYS is not a Fernet key (32 url-safe base64 "
                f"bytes): {advice}"
            )
    if settings.blind_index_key and len(settings.blind_index_key.get_secret_value()) < 32:
        raise ValueError(f"BLIND_INDEX_KEY must be at least 32 characters: {advice}")


@lru_cache
def get_settings() -> Settings:
    return Settings()
