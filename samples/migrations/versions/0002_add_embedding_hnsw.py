"""Add a vector(384) column and an HNSW index for cosine distance.

Revision ID: 0002
Revises: 0001

The vector extension itself is created by the installer (CREATE EXTENSION needs a superuser), so this
migration only uses the type. On a large table, build the index outside the migration's transaction with
CREATE INDEX CONCURRENTLY (op.get_context().autocommit_block()) to keep writes flowing.
"""

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INDEX = "migration_notes_embedding_hnsw"


def upgrade() -> None:
    op.add_column("migration_notes", sa.Column("embedding", Vector(384), nullable=True))
    op.create_index(
        INDEX, "migration_notes", ["embedding"],
        postgresql_using="hnsw",
        postgresql_with={"m": 16, "ef_construction": 64},
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="migration_notes")
    op.drop_column("migration_notes", "embedding")
