"""A small vector store on pgvector, in the spirit of a production backend.

    store = PgVectorStore(dsn, domain_id="acme.example", table="vector_store", dims=384, metric="cosine")
    ids = store.add_vectors(vectors, metadatas=[{"kind": "faq"}, ...])
    hits = store.search(query, k=5, filter={"kind": "faq"})      # [Hit(id, score, distance, metadata)]
    store.get_vectors(ids) / update_metadata(id, {...}) / delete_vectors(ids) / count() / clear()
    store.create_index("hnsw", m=16, ef_construction=64)         # or "ivfflat" (lists=...), or "none"

Metric and score (higher is better):
    cosine         <=>  score = 1 - distance          (1 = same direction)
    euclidean      <->  score = 1 / (1 + distance)    (1 = identical)
    inner_product  <#>  score = inner product          (<#> returns its negative, so score = -distance)

Tenants: every row carries a domain_id, and PostgreSQL Row Level Security shows a session only the rows of
the domain in its setting app.domain_id (set when the store connects). The application role owns the table,
and owners bypass RLS unless the table has FORCE ROW LEVEL SECURITY, which it has. This guards against a
forgotten WHERE clause; it is not a wall against code that can SET app.domain_id itself (for that, give
the application a role that does not own the table). Clients are walled off from each other by having
separate databases.

Several processes may open the same store at once: schema and index changes run under a transaction-level
advisory lock and are idempotent (IF NOT EXISTS, checked before created).

Run:  python vector_store.py        (a demo of all of the above against the .env beside the samples)
"""

from __future__ import annotations

import sys
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import psycopg2
from pgvector.psycopg2 import register_vector
from psycopg2 import sql
from psycopg2.extras import Json, execute_values

import _env

METRICS = {  # name: (operator, operator class, distance -> score)
    "cosine": ("<=>", "vector_cosine_ops", lambda d: 1.0 - d),
    "euclidean": ("<->", "vector_l2_ops", lambda d: 1.0 / (1.0 + d)),
    "inner_product": ("<#>", "vector_ip_ops", lambda d: -d),
}
INDEX_KINDS = ("none", "hnsw", "ivfflat")
IVFFLAT_MIN_ROWS = 1000  # IVFFlat learns its lists from the rows present when it is built


@dataclass
class Hit:
    id: str
    score: float
    distance: float
    metadata: dict


class PgVectorStore:
    def __init__(self, dsn: str, domain_id: str, table: str = "vector_store", dims: int = 384, metric: str = "cosine"):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
        if not domain_id:
            raise ValueError("domain_id must not be empty")
        self.domain_id, self.table, self.dims, self.metric = domain_id, table, int(dims), metric
        self._op, self._opclass, self._score = METRICS[metric]
        self._t = sql.Identifier(table)
        self.conn = psycopg2.connect(dsn, application_name="pgvector-sample-store")
        with self.conn, self.conn.cursor() as cur:  # session-wide: every later statement is scoped to this domain
            cur.execute("SELECT set_config('app.domain_id', %s, false)", (domain_id,))
        self.ensure_schema()
        register_vector(self.conn)

    # -- schema -----------------------------------------------------------------------------------
    def _lock(self, cur) -> None:
        """Serialise schema changes on this table across processes until the transaction ends."""
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"pgvector-store:{self.table}",))

    def ensure_schema(self) -> None:
        q = lambda text: sql.SQL(text).format(t=self._t, dims=sql.Literal(self.dims),  # noqa: E731
                                              meta_idx=sql.Identifier(f"{self.table}_metadata_idx"))
        with self.conn, self.conn.cursor() as cur:
            self._lock(cur)
            cur.execute(q("""CREATE TABLE IF NOT EXISTS {t} (
                domain_id text NOT NULL DEFAULT current_setting('app.domain_id') CHECK (domain_id <> ''),
                id text NOT NULL,
                embedding vector({dims}) NOT NULL,
                metadata jsonb NOT NULL DEFAULT '{{}}',
                created_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (domain_id, id))"""))
            cur.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                        "WHERE attrelid = to_regclass(%s) AND attname = 'embedding'",
                        (self.table,))
            found = cur.fetchone()[0]
            if found != f"vector({self.dims})":
                raise ValueError(f"table {self.table} stores {found}, but this store was opened with dims={self.dims}")
            cur.execute(q("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY"))
            cur.execute(q("ALTER TABLE {t} FORCE ROW LEVEL SECURITY"))  # the owner (our role) obeys the policy too
            cur.execute("SELECT 1 FROM pg_policies WHERE schemaname = current_schema() AND tablename = %s "
                        "AND policyname = 'domain_isolation'", (self.table,))
            if cur.fetchone() is None:
                cur.execute(q("""CREATE POLICY domain_isolation ON {t}
                    USING (domain_id = current_setting('app.domain_id', true))
                    WITH CHECK (domain_id = current_setting('app.domain_id', true))"""))
            cur.execute(q("CREATE INDEX IF NOT EXISTS {meta_idx} ON {t} USING gin (metadata jsonb_path_ops)"))

    def create_index(self, kind: str = "hnsw", *, m: int = 16, ef_construction: int = 64, lists: int | None = None,
                     min_rows: int = IVFFLAT_MIN_ROWS) -> str:
        """Make `kind` the table's one vector index (for this store's metric). Returns created / ok / dropped.
        An existing index with other parameters is rebuilt. Build after bulk loads: it is much faster."""
        if kind not in INDEX_KINDS:
            raise ValueError(f"index kind must be one of {', '.join(INDEX_KINDS)}, not {kind!r}")
        names = {k: f"{self.table}_embedding_{k}_idx" for k in ("hnsw", "ivfflat")}
        with self.conn, self.conn.cursor() as cur:
            self._lock(cur)
            if kind == "ivfflat":
                cur.execute(sql.SQL("ANALYZE {}").format(self._t))  # row count over all domains (RLS hides the rest)
                cur.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", (self.table,))
                rows = max(cur.fetchone()[0], 0)
                if rows < min_rows:
                    raise ValueError(f"IVFFlat learns its lists from existing rows: {self.table} has {rows}, needs at least "
                                     f"{min_rows}. Load the data first, or use create_index('hnsw').")
                lists = lists or max(1, rows // 1000 if rows <= 1_000_000 else int(rows ** 0.5))
            options = {"hnsw": {"m": m, "ef_construction": ef_construction}, "ivfflat": {"lists": lists}}.get(kind, {})
            wanted = sorted(f"{k}={v}" for k, v in options.items())
            cur.execute("SELECT c.relname, am.amname, c.reloptions FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                        "JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = to_regclass(%s) AND c.relname = ANY(%s)",
                        (self.table, list(names.values())))
            existing = {name: (am, sorted(opts or [])) for name, am, opts in cur.fetchall()}
            if kind != "none" and existing.get(names[kind], (None, None))[1] == wanted and len(existing) == 1:
                return "ok"
            for name in existing:
                cur.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(name)))
            if kind == "none":
                return "dropped" if existing else "ok"
            cur.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {name} ON {t} USING {am} "
                                "(embedding {opclass}) WITH ({options})").format(
                name=sql.Identifier(names[kind]), t=self._t, am=sql.SQL(kind), opclass=sql.SQL(self._opclass),
                options=sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.SQL(k), sql.Literal(v)) for k, v in options.items())))
            return "created"

    def drop_table(self) -> None:
        """Remove the table with every domain's rows (the demo's cleanup)."""
        with self.conn, self.conn.cursor() as cur:
            self._lock(cur)
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._t))

    # -- rows ---------------------------------------------------------------------------------------
    def _vectors(self, vectors) -> np.ndarray:
        array = np.asarray(vectors, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != self.dims:
            raise ValueError(f"expected vectors of {self.dims} dimensions, got shape {array.shape}")
        return array

    def add_vectors(self, vectors, metadatas: list[dict] | None = None, ids: list[str] | None = None) -> list[str]:
        """Insert (or replace, by id) vectors with JSONB metadata; returns their ids."""
        array = self._vectors(vectors)
        ids = [str(i) for i in ids] if ids is not None else [str(uuid.uuid4()) for _ in range(len(array))]
        metadatas = metadatas or [{} for _ in range(len(array))]
        if not len(ids) == len(metadatas) == len(array):
            raise ValueError("vectors, metadatas and ids must have the same length")
        with self.conn, self.conn.cursor() as cur:
            execute_values(cur, sql.SQL("""INSERT INTO {} (id, embedding, metadata) VALUES %s
                ON CONFLICT (domain_id, id) DO UPDATE
                SET embedding = EXCLUDED.embedding, metadata = EXCLUDED.metadata""").format(self._t),
                [(i, vec, Json(meta)) for i, vec, meta in zip(ids, array, metadatas, strict=True)], page_size=500)
        return ids

    def search(self, query, k: int = 10, filter: dict | None = None, *, ef_search: int | None = None,
               probes: int | None = None) -> list[Hit]:
        """The k nearest rows of this domain, optionally only those whose metadata contains `filter`."""
        vector = self._vectors([query])[0]
        where = sql.SQL("WHERE metadata @> %(filter)s") if filter else sql.SQL("")
        with self.conn, self.conn.cursor() as cur:
            settings = {"hnsw.ef_search": ef_search, "ivfflat.probes": probes}
            if filter:  # pgvector 0.8: keep scanning the index until k rows pass the filter
                settings.update({"hnsw.iterative_scan": "relaxed_order", "ivfflat.iterative_scan": "relaxed_order"})
            for name, value in settings.items():
                if value is not None:
                    cur.execute("SELECT set_config(%s, %s, true)", (name, str(value)))
            # relaxed_order may return rows slightly out of order: re-sort the materialised result
            cur.execute(sql.SQL("""WITH hits AS MATERIALIZED (
                    SELECT id, metadata, embedding {op} %(q)s AS distance FROM {t} {where} ORDER BY distance LIMIT %(k)s)
                SELECT id, metadata, distance FROM hits ORDER BY distance""").format(
                    op=sql.SQL(self._op), t=self._t, where=where),
                {"q": vector, "k": int(k), "filter": Json(filter or {})})
            return [Hit(i, float(self._score(d)), float(d), meta) for i, meta, d in cur.fetchall()]

    def get_vectors(self, ids: list[str]) -> list[dict]:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT id, embedding, metadata FROM {} WHERE id = ANY(%s) ORDER BY id").format(self._t),
                        (list(ids),))
            return [{"id": i, "embedding": emb.to_numpy(), "metadata": meta} for i, emb, meta in cur.fetchall()]

    def update_metadata(self, id: str, metadata: dict, replace: bool = False) -> bool:
        """Merge `metadata` into the row's (or replace it); False when this domain has no such id."""
        expression = sql.SQL("%s") if replace else sql.SQL("metadata || %s")
        with self.conn, self.conn.cursor() as cur:
            cur.execute(sql.SQL("UPDATE {} SET metadata = {} WHERE id = %s").format(self._t, expression), (Json(metadata), id))
            return cur.rowcount == 1

    def delete_vectors(self, ids: list[str]) -> int:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(self._t), (list(ids),))
            return cur.rowcount

    def count(self, filter: dict | None = None) -> int:
        with self.conn, self.conn.cursor() as cur:
            where = sql.SQL("WHERE metadata @> %s") if filter else sql.SQL("")
            cur.execute(sql.SQL("SELECT count(*) FROM {} {}").format(self._t, where), (Json(filter),) if filter else ())
            return cur.fetchone()[0]

    def clear(self) -> int:
        """Delete this domain's rows. No WHERE clause: Row Level Security limits it to the domain."""
        with self.conn, self.conn.cursor() as cur:
            cur.execute(sql.SQL("DELETE FROM {}").format(self._t))
            return cur.rowcount

    def close(self) -> None:
        self.conn.close()


# -- the demo -------------------------------------------------------------------------------------
DIMS = 384


def _random(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIMS)).astype(np.float32)


def demo_basics(dsn: str, table: str) -> bool:
    store = PgVectorStore(dsn, "acme.example", table=table)
    vectors = _random(300, 1)
    metas = [{"kind": "faq" if i % 10 == 0 else "doc", "n": i} for i in range(len(vectors))]
    ids = store.add_vectors(vectors, metas, ids=[f"doc-{i}" for i in range(len(vectors))])
    print(f"add_vectors: {len(ids)} rows for acme.example; count() = "
          f"{store.count()}, count(kind=faq) = {store.count({'kind': 'faq'})}")
    hits = store.search(vectors[42] + 0.05, k=3)
    print("search(k=3): " + ", ".join(f"{h.id} score {h.score:.3f}" for h in hits))
    faq = store.search(vectors[42], k=5, filter={"kind": "faq"})
    print(f"search(k=5, filter kind=faq): {[h.id for h in faq]}")
    got = store.get_vectors(["doc-42"])[0]
    updated = store.update_metadata("doc-42", {"reviewed": True})
    print(f"get_vectors: doc-42 has {len(got['embedding'])} dims; update_metadata "
          f"merged -> {store.get_vectors(['doc-42'])[0]['metadata']}")
    deleted = store.delete_vectors(["doc-1", "doc-2", "no-such-id"])
    print(f"delete_vectors: {deleted} deleted, count() = {store.count()}")
    ok = (hits[0].id == "doc-42" and len(faq) == 5 and all(h.metadata["kind"] == "faq" for h in faq) and updated
          and np.array_equal(got["embedding"], vectors[42]) and deleted == 2 and store.count() == 298)
    store.close()
    return ok


def demo_isolation(dsn: str, table: str) -> bool:
    acme, globex = PgVectorStore(dsn, "acme.example", table=table), PgVectorStore(dsn, "globex.example", table=table)
    globex.add_vectors(_random(20, 2), [{"kind": "doc"}] * 20, ids=[f"doc-{i}" for i in range(20)])  # same ids as acme's
    print(f"acme.example sees {acme.count()} rows, globex.example sees {globex.count()}")
    with acme.conn, acme.conn.cursor() as cur:  # no WHERE clause at all: RLS still scopes it
        cur.execute(sql.SQL("SELECT DISTINCT domain_id FROM {}").format(sql.Identifier(table)))
        seen = [row[0] for row in cur.fetchall()]
    print(f"  raw SELECT DISTINCT domain_id from acme's session: {seen}")
    try:
        with acme.conn, acme.conn.cursor() as cur:
            cur.execute(sql.SQL("INSERT INTO {} (domain_id, id, embedding) VALUES ('globex.example', 'planted', %s)").format(
                sql.Identifier(table)), (_random(1, 3)[0],))
        blocked = False
    except psycopg2.errors.InsufficientPrivilege as exc:
        blocked = True
        print(f"  acme writing a globex row: refused ({str(exc).splitlines()[0]})")
    other = _env.connect(dsn)  # a session that never set app.domain_id sees nothing
    with other, other.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        unscoped = cur.fetchone()[0]
    other.close()
    print(f"  a session without app.domain_id sees {unscoped} rows")
    cleared = globex.clear()
    print(f"  globex.clear() deleted {cleared}; acme still has {acme.count()}")
    ok = seen == ["acme.example"] and blocked and unscoped == 0 and cleared == 20 and acme.count() == 298
    acme.close(), globex.close()
    return ok


def demo_indexes(dsn: str, table: str) -> bool:
    store = PgVectorStore(dsn, "acme.example", table=table)
    try:
        store.create_index("ivfflat")
        refused = False
    except ValueError as exc:
        refused = True
        print(f"create_index('ivfflat') at {store.count()} rows: refused: {exc}")
    store.add_vectors(_random(1200, 4))  # load before indexing: one build beats 1200 index insertions
    steps = [("ivfflat", store.create_index("ivfflat", lists=10))]
    probed = store.search(_random(1, 5)[0], k=5, probes=10)
    steps += [("hnsw", store.create_index("hnsw", m=16, ef_construction=64)),
              ("hnsw again", store.create_index("hnsw", m=16, ef_construction=64))]
    searched = store.search(_random(1, 5)[0], k=5, ef_search=100)
    steps.append(("none", store.create_index("none")))
    print("create_index: " + ", ".join(f"{kind} -> {result}" for kind, result in steps))
    ok = [r for _, r in steps] == ["created", "created", "ok", "dropped"] and refused and len(probed) == len(searched) == 5
    store.close()
    return ok


def demo_metrics(dsn: str, table: str) -> bool:
    base = _random(3, 6)
    query = base[0] * 0.9 + 0.1 * base[1]
    ok = True
    for metric in METRICS:
        store = PgVectorStore(dsn, "acme.example", table=f"{table}_{metric}", metric=metric)
        store.add_vectors(base, ids=["a", "b", "c"])
        hit = store.search(query, k=1)[0]
        expected = {"cosine": 1 - hit.distance, "euclidean": 1 / (1 + hit.distance),
                    "inner_product": float(np.dot(query, base[0]))}[metric]
        print(f"metric {metric:13s} nearest {hit.id}: distance {hit.distance:9.4f} -> score {hit.score:9.4f}")
        ok &= hit.id == "a" and abs(hit.score - expected) < 1e-3
        store.drop_table()
        store.close()
    return ok


def _open_and_index(dsn: str, table: str) -> str:
    store = PgVectorStore(dsn, "acme.example", table=table)
    result = store.create_index("hnsw")
    store.close()
    return result


def demo_concurrent_start(dsn: str, table: str, workers: int = 4) -> bool:
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(_open_and_index, [dsn] * workers, [table] * workers))
    conn = _env.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_indexes WHERE tablename = %s AND indexdef LIKE '%%USING hnsw%%'", (table,))
        indexes = cur.fetchone()[0]
    conn.close()
    print(f"{workers} processes opened a new store and created its index at once: {sorted(results)}; hnsw indexes: {indexes}")
    return sorted(results) == ["created"] + ["ok"] * (workers - 1) and indexes == 1


def drop_tables(dsn: str, tables: list[str]) -> None:
    conn = _env.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.SQL(", ").join(map(sql.Identifier, tables))))
    conn.close()


def main() -> int:
    print(f"connecting as {_env.describe()}")
    dsn = _env.database_url()
    table = "vector_store_demo"
    tables = [table, f"{table}_race"] + [f"{table}_{m}" for m in METRICS]
    results = {}
    drop_tables(dsn, tables)  # a clean start, should an earlier run have been interrupted
    try:
        for title, demo, target in (("basics", demo_basics, table), ("tenant isolation (RLS)", demo_isolation, table),
                                    ("indexes", demo_indexes, table), ("metrics and scores", demo_metrics, table),
                                    ("concurrent start", demo_concurrent_start, f"{table}_race")):
            print(f"\n== {title}")
            results[title] = demo(dsn, target)
    finally:
        drop_tables(dsn, tables)
        print(f"\ndropped tables {', '.join(tables)}")
    failed = [title for title, ok in results.items() if not ok]
    print("all checks passed" if not failed else f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
