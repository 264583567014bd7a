"""`python -m core.migrate`: bring the database at DATABASE_URL to the latest schema."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from core.settings import REPO_ROOT, get_settings


def upgrade(database_url: str | None = None) -> None:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url or get_settings().database_url
    command.upgrade(config, "head")


if __name__ == "__main__":
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade()
    print("database schema is up to date")
