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

from .common import Client, first_line, tenant_connect

DIMS, ROWS, QUERIES, K = 64, 3000, 25, 10
MIN_RECALL = 0.90


@dataclass
class Result:
    """One client's check; to_json() is the documented shape (docs/json.md)."""

    client_id: str
    steps: list[tuple[str, str]] = field(default_factory=list)  # (what, outcome), in order
    recall: float = 0.0
    ok: bool = False
    samples_ok: bool | None = None  # None: the samples were not run

    def to_json(self) -> dict:
        return {"client_id": self.client_id, "ok": self.ok, "recall_at_10": round(self.recall, 4),
                "steps": dict(self.steps), "samples_ok": self.samples_ok}


@dataclass
class Run:
    clients: list[Result]

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.clients)

    @property
    def failed(self) -> list[str]:
        return [result.client_id for result in self.clients if not result.ok]

    def to_json(self) -> dict:
        return {"ok": self.ok, "clients": [result.to_json() for result in self.clients]}


def run(client: Client, rows: int = ROWS, progress=None) -> Result:
    """The check; a tenant that cannot log in or has no pgvector is a failed check (the step says what to do)."""
    result, rng = Result(client.id), random.Random(42)
    say = progress or (lambda message: None)
    try:
        conn = tenant_connect(client)
    except Exception as exc:  # noqa: BLE001 - the finding itself
        why = f"failed with the .env ({first_line(exc)}): run make pgvector-status CLIENT_ID={client.id}"
        result.steps.append(("login", why))
        return result
    table = sql.Identifier(f"pgvector_selftest_{rng.randrange(16**8):08x}")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            found = cur.fetchone()
            if not found:
                why = f"vector is missing in {client.tenant.database}: re-run make pgvector CLIENT_ID={client.id}"
                result.steps.append(("extension", why))
                return result
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


def run_samples(result: Result, client: Client, quiet: bool) -> None:
    """SAMPLES=true, after a passing check: every sample in the client's samples/ must pass too."""
    from . import samples

    result.samples_ok = samples.run(client, quiet)
    result.ok = result.ok and result.samples_ok
