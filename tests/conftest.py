from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from bot.store import ConversationStore
from core import migrate
from core.db import make_async_engine, make_sessionmaker
from core.settings import Settings, get_settings
from tests.support import RASA_BIN, RASA_MODELS, ROOT, RasaStack

# One set of keys for the whole run (core/crypto.py): each test has its own DATA_DIR, where
# keys would otherwise be generated, but all tests share one database. Child processes get
# them through their settings.
os.environ.setdefault("ENCRYPTION_KEYS", "hMl1XQ0mA8a7h3WTo1eJ6ycE3Rrg-2A9C6bI4aZmS0g=")
os.environ.setdefault("BLIND_INDEX_KEY", "test-blind-index-key-0123456789abcdef")
# The imports above read the settings before these keys were in the environment.
get_settings.cache_clear()

TEST_POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
API_TOKEN = "test-api-token-0123456789"


def _postgres_admin_dsn() -> str:
    url = make_url(TEST_POSTGRES_URL).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _postgres_reachable() -> str | None:
    try:
        with psycopg.connect(_postgres_admin_dsn(), connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at {TEST_POSTGRES_URL}: {type(exc).__name__}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    reason = _postgres_reachable()
    if reason:
        pytest.skip(reason)
    name = f"clinic_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_postgres_admin_dsn(), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = make_url(TEST_POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    yield url
    with psycopg.connect(_postgres_admin_dsn(), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'clinic.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def database_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[ConversationStore]:
    engine = make_async_engine(database_url)
    yield ConversationStore(make_sessionmaker(engine))
    await engine.dispose()


def _ensure_rasa_model() -> None:
    """`make test` trains the model before the suite; a bare `pytest` trains it here."""
    if (RASA_MODELS / "clinic.tar.gz").exists():
        return
    subprocess.run(
        [
            str(RASA_BIN),
            "train",
            "--config",
            "bot/config.yml",
            "--domain",
            "bot/domain.yml",
            "--data",
            "bot/data",
            "--out",
            str(RASA_MODELS),
            "--fixed-model-name",
            "clinic",
        ],
        cwd=ROOT,
        env={**os.environ, "RASA_CACHE_DIRECTORY": str(ROOT / "var" / "rasa" / "cache")},
        check=True,
    )


@pytest.fixture(scope="session")
def rasa_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RasaStack]:
    """A real Rasa server (trained model) and action server for the whole session."""
    if not RASA_BIN.exists():
        pytest.fail("the Rasa environment is missing: run `make test`, which creates it")
    _ensure_rasa_model()
    stack = RasaStack(tmp_path_factory.mktemp("rasa"))
    try:
        stack.start_actions()
        stack.start_rasa()
    except TimeoutError:
        stack.stop_all()
        raise
    yield stack
    stack.stop_all()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "environment": "test",
            "data_dir": tmp_path,
            "api_token": API_TOKEN,
            "rasa_url": "http://127.0.0.1:9",
            "action_server_url": "http://127.0.0.1:9",
            "rate_limit_per_sender": "1000/minute",
            "celery_broker_url": f"sqla+sqlite:///{tmp_path / 'broker.db'}",
            # Most tests never ask a question: the knowledge base loads on first use only.
            "kb_preload": False,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return build


@pytest.fixture
def make_live_settings(
    make_settings: Callable[..., Settings], rasa_stack: RasaStack
) -> Callable[..., Settings]:
    """Settings for an app talking to the session's real Rasa and action server."""

    def build(database_url: str, **overrides: Any) -> Settings:
        return make_settings(
            database_url=database_url,
            rasa_url=rasa_stack.rasa_url,
            action_server_url=rasa_stack.action_url,
            **overrides,
        )

    return build
