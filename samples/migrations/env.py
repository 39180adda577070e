"""Alembic environment for the samples: connects with the .env beside the samples directory.

A caller may pass an open SQLAlchemy connection in config.attributes["connection"] (alembic_migration.py
does); otherwise one is made from the .env. The version table has its own name so that these sample
migrations never touch the alembic_version table of an application using the same database.
"""

import sys
from pathlib import Path

from alembic import context
from pgvector.sqlalchemy import Vector
from sqlalchemy import create_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the samples directory, for _env
import _env

VERSION_TABLE = "samples_alembic_version"
target_metadata = None  # your models' Base.metadata here, for `alembic revision --autogenerate`


def run(connection) -> None:
    connection.dialect.ischema_names["vector"] = Vector  # lets autogenerate read existing vector columns
    context.configure(connection=connection, target_metadata=target_metadata, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():  # alembic upgrade head --sql: print the SQL, connect to nothing
    context.configure(dialect_name="postgresql", literal_binds=True, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()
elif (given := context.config.attributes.get("connection")) is not None:
    run(given)
else:
    engine = create_engine(_env.sqlalchemy_url())
    with engine.connect() as connection:
        run(connection)
    engine.dispose()
