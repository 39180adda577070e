"""Quickstart: a vector(384) column, a few rows, nearest neighbours by three distance operators.

    <=>  cosine distance      1 - cos(a, b)            (0 = same direction, 2 = opposite)
    <->  Euclidean (L2)       |a - b|
    <#>  negative inner product  -(a . b)              (negated so that ORDER BY ... ASC puts the best first)

Run:  python quickstart.py        (reads ../.env; pip install -r requirements.txt first)
"""

import sys

import numpy as np
from pgvector.psycopg2 import register_vector

from _env import connect, describe

TABLE = "quickstart_items"
DIMS = 384  # the size of all-MiniLM-L6-v2 embeddings (see semantic_search.py)
NAMES = ["apple", "banana", "cherry", "grape", "lemon", "mango", "orange", "pear"]


def fake_embedding(rng: np.random.Generator) -> np.ndarray:
    """A random unit vector standing in for a real embedding."""
    vec = rng.standard_normal(DIMS).astype(np.float32)
    return vec / np.linalg.norm(vec)


def main() -> int:
    print(f"connecting as {describe()}")
    conn = connect()
    conn.autocommit = True
    register_vector(conn)  # numpy arrays <-> vector; fails if the extension is missing from the database
    cur = conn.cursor()
    try:
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cur.execute(f"CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, name text NOT NULL, embedding vector({DIMS}))")
        print(f"created table {TABLE} (embedding vector({DIMS}))")

        rng = np.random.default_rng(42)
        vectors = {name: fake_embedding(rng) for name in NAMES}
        for name, vec in vectors.items():
            cur.execute(f"INSERT INTO {TABLE} (name, embedding) VALUES (%s, %s)", (name, vec))
        print(f"inserted {len(vectors)} rows")

        # An index speeds up large tables; it is optional here. Use the opclass of the operator you query with.
        cur.execute(f"CREATE INDEX ON {TABLE} USING hnsw (embedding vector_cosine_ops)")

        query = vectors["banana"] + 0.3 * fake_embedding(rng)  # "something close to banana"
        print("query: the 'banana' vector plus noise\n")
        failures = 0
        for label, op in (("cosine distance", "<=>"), ("L2 distance", "<->"), ("inner product", "<#>")):
            cur.execute(f"SELECT name, embedding {op} %s AS distance FROM {TABLE} ORDER BY distance LIMIT 3", (query,))
            rows = cur.fetchall()
            print(f"{label} ({op}):")
            for name, distance in rows:
                shown = f"{distance:.4f}" if op != "<#>" else f"{distance:.4f}  (inner product {-distance:.4f})"
                print(f"  {name:8s} {shown}")
            if rows[0][0] != "banana":
                print(f"  unexpected nearest neighbour {rows[0][0]!r}, expected 'banana'", file=sys.stderr)
                failures += 1
        if failures:
            return 1
        print("\nnearest neighbour: banana by all three operators")
        return 0
    finally:
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        print(f"dropped table {TABLE}")
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
