"""Alembic: a migration that adds a vector(384) column and an HNSW index, run up and back down.

    migrations/versions/0001_create_notes.py        CREATE TABLE migration_notes (id, body)
    migrations/versions/0002_add_embedding_hnsw.py  ADD COLUMN embedding vector(384) + HNSW index (cosine)

This script runs upgrade 0001 -> head -> downgrade 0001 -> base through Alembic's API and checks the
schema after each step. By hand, from this directory: alembic upgrade head (alembic.ini, migrations/env.py).
The version table is samples_alembic_version, so an application's own alembic_version is never touched.

Run:  python alembic_migration.py
"""

import sys
from pathlib import Path

import numpy as np
from alembic import command
from alembic.config import Config
from pgvector.sqlalchemy import Vector
from sqlalchemy import bindparam, create_engine, text

from _env import describe, sqlalchemy_url

HERE = Path(__file__).resolve().parent
TABLE, INDEX, VERSION_TABLE = "migration_notes", "migration_notes_embedding_hnsw", "samples_alembic_version"


def migrate(engine, config: Config, action: str, revision: str) -> None:
    """command.upgrade / command.downgrade on one connection, committed when the block ends."""
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


def schema(engine) -> dict:
    """What the database has now: the table, the embedding column's type, the index, the revision."""
    with engine.connect() as conn:
        table = conn.scalar(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": TABLE})
        column = conn.scalar(text("""SELECT format_type(atttypid, atttypmod) FROM pg_attribute
                                     WHERE attrelid = to_regclass(:t) AND attname = 'embedding' AND NOT attisdropped"""),
                             {"t": TABLE})
        index = conn.scalar(text("SELECT indexdef FROM pg_indexes WHERE indexname = :i"), {"i": INDEX})
        revision = None
        if conn.scalar(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": VERSION_TABLE}):
            revision = conn.scalar(text(f"SELECT version_num FROM {VERSION_TABLE}"))
    return {"table": table, "embedding": column, "index": index, "revision": revision}


def expect(state: dict, **wanted) -> bool:
    shown = ", ".join(f"{k}={v}" for k, v in state.items())
    ok = all((state[k] is not None and v in str(state[k])) if isinstance(v, str) else state[k] == v for k, v in wanted.items())
    print(f"  {'ok  ' if ok else 'FAIL'} {shown}")
    return ok


def use_the_column(engine) -> bool:
    """Insert notes with embeddings and find the nearest one through the HNSW index."""
    rng = np.random.default_rng(3)
    vectors = [rng.standard_normal(384).astype(np.float32) for _ in range(3)]
    insert = text(f"INSERT INTO {TABLE} (body, embedding) VALUES (:body, :embedding)").bindparams(
        bindparam("embedding", type_=Vector(384)))
    nearest = text(f"SELECT body FROM {TABLE} ORDER BY embedding <=> :q LIMIT 1").bindparams(bindparam("q", type_=Vector(384)))
    with engine.begin() as conn:
        for i, vec in enumerate(vectors):
            conn.execute(insert, {"body": f"note {i}", "embedding": vec})
        conn.execute(text("SET LOCAL enable_seqscan = off"))  # 3 rows: make the planner show the index
        plan = " ".join(row[0] for row in conn.execute(text(f"EXPLAIN SELECT id FROM {TABLE} ORDER BY embedding <=> :q LIMIT 1")
                                                        .bindparams(bindparam("q", type_=Vector(384))), {"q": vectors[1]}))
        found = conn.scalar(nearest, {"q": vectors[1] + 0.1})
    uses_index = INDEX in plan
    print(f"  nearest to note 1: {found}; plan uses {INDEX}: {uses_index}")
    return found == "note 1" and uses_index


def main() -> int:
    print(f"connecting as {describe()}")
    engine = create_engine(sqlalchemy_url())
    config = Config(str(HERE / "alembic.ini"))
    ok = True
    try:
        with engine.begin() as conn:  # a clean start, should an earlier run have been interrupted
            conn.execute(text(f"DROP TABLE IF EXISTS {TABLE}, {VERSION_TABLE}"))
        print("upgrade -> 0001 (create table)")
        migrate(engine, config, "upgrade", "0001")
        ok &= expect(schema(engine), table=True, embedding=None, index=None, revision="0001")
        print("upgrade -> head (0002: add vector(384) column + HNSW index)")
        migrate(engine, config, "upgrade", "head")
        ok &= expect(schema(engine), table=True, embedding="vector(384)", index="USING hnsw (embedding vector_cosine_ops)",
                     revision="0002")
        ok &= use_the_column(engine)
        print("downgrade -> 0001 (drop index and column)")
        migrate(engine, config, "downgrade", "0001")
        ok &= expect(schema(engine), table=True, embedding=None, index=None, revision="0001")
        print("downgrade -> base (drop table)")
        migrate(engine, config, "downgrade", "base")
        ok &= expect(schema(engine), table=False, embedding=None, index=None, revision=None)
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {TABLE}, {VERSION_TABLE}"))
        print(f"dropped {TABLE} and {VERSION_TABLE}")
        engine.dispose()
    print("migration round trip: " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
