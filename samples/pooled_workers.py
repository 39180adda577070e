"""Many short-lived connections through the pool (DATABASE_POOL_URL), the way web workers and job queues connect.

Each task opens a connection, runs one nearest-neighbour query and closes it. Through PgBouncer the connection is a
cheap TCP handshake with the pooler; the pooler hands the query to a server connection it already holds, so the
server forks no backend and checks no password per task. Direct to PostgreSQL (DATABASE_URL) every task pays both.

When to use which:
    DATABASE_POOL_URL   web apps, workers, serverless functions, anything that opens many connections
    DATABASE_URL        migrations, bulk loads (COPY), index builds, LISTEN/NOTIFY, long sessions

Settings that must stay inside one transaction in transaction pooling (POOL_MODE=transaction) are set with
SET LOCAL, as below: the next transaction may run on another server connection. That works in session mode too.

Run:  python pooled_workers.py [--tasks 200] [--threads 8]     (reads ../.env)
"""

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from pgvector.psycopg2 import register_vector

from _env import connect, load

TABLE = "pooled_items"
DIMS = 384
ROWS = 2000


def setup(url: str) -> None:
    conn = connect(url)
    conn.autocommit = True
    register_vector(conn)
    cur = conn.cursor()
    cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
    cur.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, embedding vector({DIMS}))")
    rng = np.random.default_rng(7)
    rows = [(i, v / np.linalg.norm(v)) for i, v in enumerate(rng.standard_normal((ROWS, DIMS)).astype(np.float32))]
    cur.executemany(f"INSERT INTO {TABLE} (id, embedding) VALUES (%s, %s)", rows)
    cur.execute(f"CREATE INDEX ON {TABLE} USING hnsw (embedding vector_cosine_ops)")
    conn.close()


def task(url: str, seed: int) -> int:
    """One short-lived connection: open, query, close. Returns the nearest row's id."""
    conn = connect(url)
    try:
        register_vector(conn)
        with conn, conn.cursor() as cur:  # one transaction: SET LOCAL lasts until its end, on any pool mode
            cur.execute("SET LOCAL hnsw.ef_search = 64")
            query = np.random.default_rng(seed).standard_normal(DIMS).astype(np.float32)
            cur.execute(f"SELECT id FROM {TABLE} ORDER BY embedding <=> %s LIMIT 1", (query,))
            return cur.fetchone()[0]
    finally:
        conn.close()


def run(url: str, tasks: int, threads: int) -> tuple[float, list[int]]:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        found = list(pool.map(lambda seed: task(url, seed), range(tasks)))
    return tasks / (time.perf_counter() - started), found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    env = load()
    if not env.get("DATABASE_POOL_URL"):
        sys.exit("The .env has no DATABASE_POOL_URL: re-run make pgvector for this client to set up its pool.")
    print(f"pool: {env['PGVECTOR_POOL_MODE']} mode, {env['PGVECTOR_POOL_SIZE']} server connections, "
          f"127.0.0.1:{env['PGVECTOR_POOL_PORT']}")
    setup(env["DATABASE_URL"])  # DDL and loading: direct
    direct, expected = run(env["DATABASE_URL"], args.tasks, args.threads)
    pooled, found = run(env["DATABASE_POOL_URL"], args.tasks, args.threads)
    if found != expected:
        print("the pool returned other neighbours than the direct connection", file=sys.stderr)
        return 1
    print(f"{args.tasks} short-lived connections, {args.threads} at a time: direct {direct:.0f}/s, "
          f"through the pool {pooled:.0f}/s ({pooled / direct:.1f}x); same neighbours both ways")
    conn = connect(env["DATABASE_URL"])
    conn.autocommit = True
    conn.cursor().execute(f"DROP TABLE {TABLE}")
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
