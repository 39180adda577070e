"""Shared by the samples: connect with the .env that sits next to this directory."""

import os
from pathlib import Path

from dotenv import load_dotenv


def load() -> None:
    here = Path(__file__).resolve().parent
    for candidate in (os.environ.get("PGVECTOR_ENV_FILE"), here.parent / ".env", here / ".env"):
        if candidate and Path(candidate).exists():
            load_dotenv(candidate, override=True)
            return
    raise SystemExit("No .env found next to the samples: run them from the client's pgvector directory, or set PGVECTOR_ENV_FILE.")


def connect():
    import psycopg2

    load()
    return psycopg2.connect(os.environ["DATABASE_URL"], application_name="pgvector-sample")
