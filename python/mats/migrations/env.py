"""Alembic environment of the MATS SQL store, run by :func:`mats.store.migrate`.

There is no ``alembic.ini``: ``migrate`` configures the script location in code and hands over
an open connection (``config.attributes["connection"]``). Run by the ``alembic`` command
instead, the URL comes from ``sqlalchemy.url`` or ``MATS_DB_URL``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from mats.store import Base, db_url

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or db_url()


def _run(connection: Connection) -> None:
    # SQLite alters tables by copying them: batch mode lets later migrations do that
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url())
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
