"""Quickstart: create a table with a vector(3) column, insert rows, query by cosine distance.

Run:  python quickstart.py     (reads ../.env; needs requirements.txt installed)
"""

import sys

import numpy as np
from pgvector.psycopg2 import register_vector

from _env import connect

TABLE = "quickstart_items"


def main() -> int:
    conn = connect()
    conn.autocommit = True
    register_vector(conn)
    cur = conn.cursor()
    try:
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cur.execute(f"CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, name text, embedding vector(3))")
        rows = [("apple", [1.0, 0.1, 0.0]), ("banana", [0.9, 0.3, 0.1]), ("car", [0.0, 0.1, 1.0])]
        for name, vec in rows:
            cur.execute(f"INSERT INTO {TABLE} (name, embedding) VALUES (%s, %s)", (name, np.array(vec)))
        cur.execute(f"CREATE INDEX ON {TABLE} USING hnsw (embedding vector_cosine_ops)")
        query = np.array([1.0, 0.2, 0.0])
        cur.execute(f"SELECT name, embedding <=> %s AS distance FROM {TABLE} ORDER BY distance LIMIT 3", (query,))
        print("nearest to [1.0, 0.2, 0.0] by cosine distance:")
        results = cur.fetchall()
        for name, distance in results:
            print(f"  {name:8s} {distance:.4f}")
        if results[0][0] != "apple":
            print("unexpected nearest neighbour", file=sys.stderr)
            return 1
        return 0
    finally:
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
