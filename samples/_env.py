"""Shared by the samples: find the .env beside this directory and connect with it.

The .env (written by the installer, mode 0600) holds the connection details, password included.
Nothing here prints the password: `describe()` shows user@host:port/database only.

Look-up order: $PGVECTOR_ENV_FILE, ../.env (the installer's layout), ./.env.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load() -> dict:
    """Load the .env into os.environ (overriding) and return its values."""
    from dotenv import dotenv_values

    for candidate in (os.environ.get("PGVECTOR_ENV_FILE"), HERE.parent / ".env", HERE / ".env"):
        if candidate and Path(candidate).is_file():
            values = {k: v for k, v in dotenv_values(candidate).items() if v is not None}
            os.environ.update(values)
            return values
    raise SystemExit("No .env found: run the samples from the client's pgvector/samples directory "
                     "(the .env is one level up), or set PGVECTOR_ENV_FILE.")


def database_url() -> str:
    """libpq URL with the password in it: pass it to a driver, never print it."""
    return load()["DATABASE_URL"]


def describe() -> str:
    env = load()
    return f"{env['PGUSER']}@{env['PGHOST']}:{env['PGPORT']}/{env['PGDATABASE']}"


def connect(dsn: str | None = None):
    """psycopg2 connection (application_name shows up in pg_stat_activity)."""
    import psycopg2

    return psycopg2.connect(dsn or database_url(), application_name="pgvector-sample")


def connect3(dsn: str | None = None, **kwargs):
    """psycopg 3 connection (used for binary COPY)."""
    import psycopg

    return psycopg.connect(dsn or database_url(), application_name="pgvector-sample", **kwargs)


def sqlalchemy_url():
    """SQLAlchemy URL object for psycopg2; its str() and repr() hide the password as ***."""
    from sqlalchemy.engine import URL

    env = load()
    return URL.create("postgresql+psycopg2", username=env["PGUSER"], password=env["PGPASSWORD"],
                      host=env["PGHOST"], port=int(env["PGPORT"]), database=env["PGDATABASE"])


def need(module: str, install: str) -> None:
    """Exit with a message naming the missing package instead of an ImportError traceback."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        sys.exit(f"This sample needs the Python package '{module}': {install}")
