"""Hybrid search: full-text (tsvector + GIN) and vector similarity, combined two ways.

    keyword   a generated tsvector column, GIN index, ts_rank_cd; query words OR-ed together
    vector    all-MiniLM-L6-v2 embeddings, cosine distance (<=>)
    blend     ALPHA * cosine similarity + (1 - ALPHA) * ts_rank_cd(..., 32), which scales rank to 0..1
    rrf       reciprocal rank fusion: sum over both lists of 1 / (60 + rank); uses ranks only, so the
              two scores need no common scale, and documents that both searches find rise to the top

Two queries show why to combine them: a fault code, where exact keywords win and embeddings confuse
near-identical codes; and a question phrased in other words, where keywords match the wrong text and
meaning wins. Both hybrids find the right document for both.

Run:  python hybrid_search.py       (the real model gives the meaning; see _embed.py)
"""

import sys

from pgvector.psycopg2 import register_vector

import _embed
from _env import connect, describe

TABLE = "hybrid_docs"
ALPHA = 0.5       # weight of vector similarity in the blend
RRF_K = 60        # the usual constant of reciprocal rank fusion
CANDIDATES = 20   # rows taken from each search before fusing

DOCS = [
    "Fault E4021: the paper feed roller is worn and must be replaced.",
    "Fault E4012: the toner cartridge is empty, install a new one.",
    "Fault E2041: the scanner lid sensor is blocked by dust.",
    "Refunds: the money goes to your original card within 30 days of a return.",
    "Back up your photos before you get a new phone.",
    "Invoices are payable within 14 days by bank transfer.",
    "We accept cash, credit cards and bank transfers.",
    "Gift cards can be used for any purchase in the shop.",
    "Our support line is open from 9 am to 5 pm on weekdays.",
    "Shipping is free for orders over 50 euros.",
]

# query -> (the document it should find, which single method finds it)
QUERIES = {
    "E4021": (DOCS[0], "keyword"),
    "how do I get my money back?": (DOCS[3], "vector"),
}

HYBRID_SQL = f"""
WITH semantic AS (
    SELECT id, distance, row_number() OVER (ORDER BY distance) AS rank
    FROM (SELECT id, embedding <=> %(vec)s AS distance FROM {TABLE} ORDER BY distance LIMIT %(n)s) nearest
), keyword AS (
    SELECT id, score, row_number() OVER (ORDER BY score DESC) AS rank
    FROM (SELECT id, ts_rank_cd(tsv, query, 32) AS score
          FROM {TABLE}, (SELECT replace(plainto_tsquery('english', %(text)s)::text, '&', '|')::tsquery AS query) words
          WHERE tsv @@ query ORDER BY score DESC LIMIT %(n)s) matches
)
SELECT d.body,
       semantic.rank AS vector_rank,
       keyword.rank AS keyword_rank,
       %(alpha)s * coalesce(1 - semantic.distance, 0)
         + (1 - %(alpha)s) * coalesce(keyword.score, 0) AS blend,
       coalesce(1.0 / (%(k)s + semantic.rank), 0) + coalesce(1.0 / (%(k)s + keyword.rank), 0) AS rrf
FROM semantic FULL JOIN keyword USING (id) JOIN {TABLE} d USING (id)
"""


def rankings(cur, embedder, text: str) -> dict[str, list[str]]:
    """Documents in order, per method: keyword, vector, blend, rrf."""
    cur.execute(HYBRID_SQL, {"vec": embedder.encode([text])[0], "text": text, "n": CANDIDATES, "alpha": ALPHA, "k": RRF_K})
    rows = cur.fetchall()
    return {
        "keyword": [r[0] for r in sorted((r for r in rows if r[2]), key=lambda r: r[2])],
        "vector": [r[0] for r in sorted((r for r in rows if r[1]), key=lambda r: r[1])],
        "blend": [r[0] for r in sorted(rows, key=lambda r: -r[3])],
        "rrf": [r[0] for r in sorted(rows, key=lambda r: -r[4])],
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
        cur.execute(f"""CREATE TABLE {TABLE} (
            id bigserial PRIMARY KEY,
            body text NOT NULL,
            tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', body)) STORED,
            embedding vector({_embed.DIMS}) NOT NULL)""")
        cur.execute(f"CREATE INDEX ON {TABLE} USING gin (tsv)")
        cur.execute(f"CREATE INDEX ON {TABLE} USING hnsw (embedding vector_cosine_ops)")
        for body, vec in zip(DOCS, embedder.encode(DOCS), strict=True):
            cur.execute(f"INSERT INTO {TABLE} (body, embedding) VALUES (%s, %s)", (body, vec))
        print(f"stored {len(DOCS)} documents in {TABLE}: generated tsvector + GIN, embedding + HNSW\n")

        failures = 0
        for text, (expected, winner) in QUERIES.items():
            ranked = rankings(cur, embedder, text)
            print(f"query: {text!r}   (expected: {expected})")
            for method, docs in ranked.items():
                top = docs[0] if docs else "(nothing)"
                mark = "ok  " if top == expected else "miss"
                print(f"  {mark} {method:8s} {top}")
            hybrid_ok = ranked["blend"][0] == expected and ranked["rrf"][0] == expected
            if ranked[winner][0] != expected or not hybrid_ok:
                failures += 1
            loser = "vector" if winner == "keyword" else "keyword"
            lost = not ranked[loser] or ranked[loser][0] != expected
            print(f"  -> {winner} wins" + (f", {loser} alone misses it" if lost else "") + "\n")
        if not embedder.semantic:
            print("(hashing stand-in: the 'meaning' query cannot work without the real model; nothing asserted)")
            return 0
        print("both hybrids found the expected document for every query" if not failures else f"{failures} query(ies) failed")
        return 1 if failures else 0
    finally:
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        print(f"dropped table {TABLE}")
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
