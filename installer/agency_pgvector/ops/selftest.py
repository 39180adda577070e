"""make pgvector-test: an end-to-end check with the tenant's own credentials, safe on production tenants.

Everything happens in a TEMPORARY table: PostgreSQL drops it when the session ends, so nothing is left
behind even if the check is interrupted or killed.
"""

from __future__ import annotations

import io
import random
import time
from dataclasses import dataclass, field

from psycopg2 import sql

from ..errors import UserError
from .common import Client, first_line, tenant_connect

DIMS, ROWS, QUERIES, K = 64, 3000, 25, 10
MIN_RECALL = 0.90


@dataclass
class Result:
    steps: list[tuple[str, str]] = field(default_factory=list)  # (what, outcome)
    recall: float = 0.0
    ok: bool = False


def run(client: Client, rows: int = ROWS, progress=None) -> Result:
    result, rng = Result(), random.Random(42)
    say = progress or (lambda message: None)
    try:
        conn = tenant_connect(client)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"The tenant cannot log in with its .env ({first_line(exc)}): "
                        f"run make pgvector-status CLIENT_ID={client.id}.") from None
    table = sql.Identifier(f"pgvector_selftest_{rng.randrange(16**8):08x}")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            found = cur.fetchone()
            if not found:
                raise UserError(f"Extension vector is missing in {client.tenant.database}: "
                                f"re-run make pgvector CLIENT_ID={client.id}.")
            result.steps.append(("extension", f"vector {found[0]}"))
            cur.execute(sql.SQL("CREATE TEMPORARY TABLE {} (id int PRIMARY KEY, category int, "
                                "embedding vector({}))").format(table, sql.Literal(DIMS)))
            say(f"loading {rows} random {DIMS}-d vectors")
            vectors = [[rng.gauss(0, 1) for _ in range(DIMS)] for _ in range(rows)]
            data = io.StringIO("".join(f"{i}\t{i % 10}\t[{','.join(f'{x:.6f}' for x in v)}]\n" for i, v in enumerate(vectors)))
            cur.copy_expert(sql.SQL("COPY {} FROM STDIN").format(table).as_string(conn), data)
            result.steps.append(("load", f"{rows} vectors via COPY"))
            say("building HNSW index")
            started = time.monotonic()
            cur.execute(sql.SQL("CREATE INDEX ON {} USING hnsw (embedding vector_l2_ops)").format(table))
            result.steps.append(("hnsw index", f"built in {time.monotonic() - started:.2f} s"))
            result.recall = _recall(cur, table, vectors, rng)
            result.steps.append(("recall@10", f"{result.recall:.3f} (HNSW vs exact, {QUERIES} queries; minimum {MIN_RECALL})"))
            cur.execute("SET hnsw.iterative_scan = relaxed_order")
            cur.execute(sql.SQL("SELECT id, category FROM {} WHERE category = 3 ORDER BY embedding <-> %s::vector LIMIT {}")
                        .format(table, sql.Literal(K)), (_text(vectors[3]),))
            hits = cur.fetchall()
            filtered_ok = len(hits) == K and all(category == 3 for _, category in hits) and hits[0][0] == 3
            result.steps.append(("filtered query", f"{len(hits)} rows, all category 3, nearest is the query row"
                                 if filtered_ok else f"wrong result: {hits[:3]}"))
            cur.execute(sql.SQL("DROP TABLE {}").format(table))
            result.steps.append(("clean up", "scratch table dropped"))
        result.ok = result.recall >= MIN_RECALL and filtered_ok
        return result
    finally:
        conn.close()  # a TEMPORARY table dies with the session in every case


def _recall(cur, table, vectors, rng) -> float:
    hits = 0
    for _ in range(QUERIES):
        query = _text(vectors[rng.randrange(len(vectors))])
        statement = sql.SQL("SELECT id FROM {} ORDER BY embedding <-> %s::vector LIMIT {}").format(table, sql.Literal(K))
        cur.execute("SET enable_indexscan = off")
        cur.execute(statement, (query,))
        exact = {row[0] for row in cur.fetchall()}
        cur.execute("SET enable_indexscan = on")
        cur.execute(statement, (query,))
        hits += len(exact & {row[0] for row in cur.fetchall()})
    return hits / (QUERIES * K)


def _text(vector) -> str:
    return "[" + ",".join(f"{x:.6f}" for x in vector) + "]"
