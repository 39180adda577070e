"""Agent memory: store what AI agents saw and said, then recall the most similar past contexts.

Each memory is one row: the text, its embedding, and who/when as plain columns (agent_id, session_id,
created_at) plus free-form jsonb metadata. Recall is one query: nearest by cosine distance, filtered to
one agent and a recent time window, so another agent's memories and stale ones never come back.

    remember(cur, embedder, agent, session, text, at)   INSERT one context
    recall(cur, embedder, agent, query, days, k)         the k most similar contexts of that agent, newer than `days`

The memories are generated here, with timestamps relative to now. The checks hold with the real model and
with the hashing stand-in: each query shares words with the memory it should find, and the same words
also appear in another agent's memory and in an old memory of the same agent, which the filters exclude.

Run:  python agent_memory.py       (the real model gives the meaning; see _embed.py)
"""

import json
import sys
from datetime import datetime, timedelta, timezone

from pgvector.psycopg2 import register_vector

import _embed
from _env import connect, describe

TABLE = "agent_memories"
NOW = datetime.now(timezone.utc)

# (agent, session, days ago, text)
MEMORIES = [
    ("support-bot", "s-101", 2, "Customer Dana wants her invoices sent by email instead of paper mail."),
    ("support-bot", "s-101", 2, "Dana confirmed her billing address is in Lyon."),
    ("support-bot", "s-102", 5, "Customer Omar reported the mobile app crashes when uploading photos."),
    ("support-bot", "s-103", 9, "Refund approved for order 5512 after a damaged parcel arrived."),
    ("support-bot", "s-090", 45, "Customer Dana wants her invoices sent by paper mail, not email."),  # stale
    ("sales-bot", "s-201", 1, "Dana asked about invoices by email for the enterprise plan."),  # another agent
    ("sales-bot", "s-202", 3, "Prospect Wei wants a demo of the analytics dashboard next Tuesday."),
    ("sales-bot", "s-203", 6, "Offered a 10% discount for a yearly subscription paid upfront."),
    ("research-bot", "s-301", 4, "Summarised three papers on photo upload compression for mobile apps."),
    ("research-bot", "s-302", 8, "Compared HNSW and IVFFlat recall for nearest neighbour search."),
]

# (agent, query, days, the memory it should recall first)
RECALLS = [
    ("support-bot", "how does Dana want her invoices delivered?", 30, MEMORIES[0][3]),
    ("support-bot", "mobile app crashes uploading photos", 30, MEMORIES[2][3]),
    ("sales-bot", "demo of the analytics dashboard", 30, MEMORIES[6][3]),
]


def remember(cur, embedder, agent: str, session: str, text: str, at: datetime, **metadata) -> int:
    cur.execute(f"INSERT INTO {TABLE} (agent_id, session_id, created_at, content, metadata, embedding)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (agent, session, at, text, json.dumps(metadata), embedder.encode([text])[0]))
    return cur.fetchone()[0]


def recall(cur, embedder, agent: str, query: str, days: float | None = 30, k: int = 3) -> list[tuple]:
    """(content, session_id, created_at, agent_id, similarity) of the agent's k nearest memories, newest `days` only."""
    since = NOW - timedelta(days=days) if days is not None else datetime.min.replace(tzinfo=timezone.utc)
    vec = embedder.encode([query])[0]
    cur.execute(f"""SELECT content, session_id, created_at, agent_id, 1 - (embedding <=> %(vec)s) AS similarity
                    FROM {TABLE}
                    WHERE agent_id = %(agent)s AND created_at >= %(since)s
                    ORDER BY embedding <=> %(vec)s LIMIT %(k)s""",
                {"vec": vec, "agent": agent, "since": since, "k": k})
    return cur.fetchall()


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
            agent_id text NOT NULL,
            session_id text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            content text NOT NULL,
            metadata jsonb NOT NULL DEFAULT '{{}}',
            embedding vector({_embed.DIMS}) NOT NULL)""")
        # The filter columns get a B-tree; the embedding an HNSW index. With a selective filter on a large table,
        # an iterative scan keeps HNSW going until k rows pass the WHERE (strict_order keeps the distance order).
        cur.execute(f"CREATE INDEX ON {TABLE} (agent_id, created_at)")
        cur.execute(f"CREATE INDEX ON {TABLE} USING hnsw (embedding vector_cosine_ops)")
        cur.execute("SET hnsw.iterative_scan = strict_order")
        for agent, session, days_ago, text in MEMORIES:
            remember(cur, embedder, agent, session, text, NOW - timedelta(days=days_ago), source="generated")
        print(f"stored {len(MEMORIES)} memories of {len({m[0] for m in MEMORIES})} agents in {TABLE}\n")

        failures = 0
        for agent, query, days, expected in RECALLS:
            rows = recall(cur, embedder, agent, query, days)
            print(f"{agent} recalls {query!r} (last {days} days):")
            for content, session, created, _, similarity in rows:
                print(f"  {similarity:6.3f}  {session}  {(NOW - created).days:2d}d ago  {content}")
            wrong = [r for r in rows if r[3] != agent or r[2] < NOW - timedelta(days=days)]
            if not rows or rows[0][0] != expected or wrong:
                failures += 1
                print(f"  FAIL: expected first: {expected}" + (f"; rows outside the filter: {wrong}" if wrong else ""))

        # The stale memory shares the words of the first query: only the recency filter keeps it out.
        agent, query, _, _ = RECALLS[0]
        stale = MEMORIES[4][3]
        unfiltered = [r[0] for r in recall(cur, embedder, agent, query, days=None, k=2)]
        days_old = MEMORIES[4][2]
        print(f"\nwithout the time window, {agent}'s 2 nearest include the {days_old}-day-old memory: {stale in unfiltered}")
        if stale not in unfiltered:
            failures += 1
        print("all recalls found the expected memory, inside their filters" if not failures else f"{failures} check(s) failed")
        return 1 if failures else 0
    finally:
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        print(f"dropped table {TABLE}")
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
