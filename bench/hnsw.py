"""HNSW on n x dim vectors: load with binary COPY, build the index, time queries, measure recall@k."""

from __future__ import annotations

import time

import numpy as np

from .bulkload import copy_binary

TABLE = "bench_items"
NOTICE = "hnsw graph no longer fits into maintenance_work_mem"


def dataset(n: int, dim: int, queries: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in clusters (embeddings cluster; uniform noise would be a needlessly hard case)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(1, n // 100), dim)).astype(np.float32)

    def draw(count: int) -> np.ndarray:
        points = centers[rng.integers(0, len(centers), count)] + 0.7 * rng.standard_normal((count, dim)).astype(np.float32)
        return points / np.linalg.norm(points, axis=1, keepdims=True)

    return draw(n), draw(queries)


def exact_neighbours(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The true top-k by cosine distance (the vectors are unit length, so by dot product), ids from 1."""
    scores = queries @ data.T
    return np.argsort(-scores, axis=1)[:, :k] + 1


def load(conn, data: np.ndarray) -> float:
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cur.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, embedding vector({data.shape[1]}))")
    start = time.perf_counter()
    copy_binary(conn, TABLE, np.arange(1, len(data) + 1), data)
    seconds = time.perf_counter() - start
    with conn.cursor() as cur:
        cur.execute(f"VACUUM ANALYZE {TABLE}")
    return seconds


def load_indexed(url: str, data: np.ndarray) -> None:
    """As the tenant (its DATABASE_URL): `data` loaded with binary COPY and the HNSW index built (cosine, default m and
    ef_construction), as an app would; hnsw.build's CHECKPOINT needs more than a tenant has."""
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        load(conn, data)
        with conn.cursor() as cur:
            cur.execute(f"CREATE INDEX {TABLE}_hnsw ON {TABLE} USING hnsw (embedding vector_cosine_ops)")
    finally:
        conn.close()


def build(conn, m: int = 16, ef_construction: int = 64) -> tuple[float, bool]:
    """Seconds to build the HNSW index, and whether pgvector said the graph outgrew maintenance_work_mem.

    A CHECKPOINT first, untimed, so no build pays for writing out what came before it."""
    del conn.notices[:]
    with conn.cursor() as cur:
        cur.execute(f"DROP INDEX IF EXISTS {TABLE}_hnsw")
        cur.execute("CHECKPOINT")
        start = time.perf_counter()
        cur.execute(f"CREATE INDEX {TABLE}_hnsw ON {TABLE} USING hnsw (embedding vector_cosine_ops) "
                    f"WITH (m = {m}, ef_construction = {ef_construction})")
        seconds = time.perf_counter() - start
    return seconds, any(NOTICE in notice for notice in conn.notices)


def search(conn, queries: np.ndarray, k: int, ef_search: int = 40) -> tuple[list[float], np.ndarray]:
    """Per-query latency (after one warm-up pass) and the ids each query returned."""
    texts = ["[" + ",".join(f"{x:.7g}" for x in q) + "]" for q in queries]
    statement = f"SELECT id FROM {TABLE} ORDER BY embedding <=> %s::vector LIMIT {k}"
    found, latencies = [], []
    with conn.cursor() as cur:
        cur.execute(f"SET hnsw.ef_search = {ef_search}")
        for text in texts:  # warm-up: both servers answer from a cache, not from a cold disk
            cur.execute(statement, (text,))
            cur.fetchall()
        for text in texts:
            start = time.perf_counter()
            cur.execute(statement, (text,))
            rows = cur.fetchall()
            latencies.append(time.perf_counter() - start)
            found.append([row[0] for row in rows] + [0] * (k - len(rows)))
        cur.execute(f"EXPLAIN SELECT id FROM {TABLE} ORDER BY embedding <=> %s::vector LIMIT {k}", (texts[0],))
        plan = " ".join(row[0] for row in cur.fetchall())
    if "hnsw" not in plan:
        raise RuntimeError(f"the query did not use the HNSW index: {plan}")
    return latencies, np.array(found)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def table_size(conn) -> tuple[int, int]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT pg_table_size('{TABLE}'), pg_relation_size('{TABLE}_hnsw')")
        return cur.fetchone()
