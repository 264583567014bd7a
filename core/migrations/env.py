from __future__ import annotations

from alembic import context

from core.db import make_sync_engine
from core.orm import Base
from core.settings import get_settings

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    # A URL passed by core.migrate (tests, several databases) wins over the settings.
    return config.attributes.get("database_url") or get_settings().database_url


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_sync_engine(database_url())
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # A batch migration recreates a table (copy, drop, rename): with foreign keys
            # enforced, the drop would cascade-delete every row referencing it. The pragma only
            # takes effect outside a transaction, so it goes before Alembic begins one.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
