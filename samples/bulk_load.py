"""Bulk loading: batched INSERT vs COPY ... WITH (FORMAT BINARY), with the throughput of each.

Three ways to load the same vectors into an empty table:

    insert_batched        psycopg2 + pgvector: multi-row INSERT (execute_values). Vectors travel as text.
    copy_binary_psycopg3  psycopg 3 + pgvector: COPY FROM STDIN (FORMAT BINARY), copy.set_types(['vector']).
    copy_binary_psycopg2  psycopg2 with a binary COPY stream built by hand with numpy (no psycopg 3 needed).

pgvector-python's psycopg2 adapter is text-only, hence the hand-built stream for binary COPY on psycopg2.
Load first, create indexes afterwards: building an index once is much cheaper than maintaining it per row.

Run:  python bulk_load.py [--rows 20000] [--dims 384]
Use from code:  from bulk_load import load_rates; load_rates(10_000, 384)  ->  {method: vectors per second}
"""

import argparse
import io
import os
import struct
import sys
import time

import numpy as np
from psycopg2 import sql
from psycopg2.extras import execute_values

import _env

TABLE = "bulk_load_items"


def make_vectors(rows: int, dims: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, dims)).astype(np.float32)


def insert_batched(dsn: str, table: str, vectors: np.ndarray, batch_size: int = 1000) -> None:
    from pgvector.psycopg2 import register_vector

    with _env.connect(dsn) as conn, conn.cursor() as cur:  # `with conn` = one transaction, committed at the end
        register_vector(conn)
        query = sql.SQL("INSERT INTO {} (embedding) VALUES %s").format(sql.Identifier(table))
        execute_values(cur, query, [(vec,) for vec in vectors], page_size=batch_size)
    conn.close()


def copy_binary_psycopg3(dsn: str, table: str, vectors: np.ndarray) -> None:
    from pgvector.psycopg import register_vector
    from psycopg import sql as sql3

    with _env.connect3(dsn) as conn:  # commits on leaving the block
        register_vector(conn)
        statement = sql3.SQL("COPY {} (embedding) FROM STDIN WITH (FORMAT BINARY)").format(sql3.Identifier(table))
        with conn.cursor().copy(statement) as copy:
            copy.set_types(["vector"])  # binary COPY has no type information: name each column's type
            for vec in vectors:
                copy.write_row([vec])


def binary_copy_stream(vectors: np.ndarray) -> bytes:
    """PostgreSQL's binary COPY format for one vector column, built with numpy.

    File: signature, flags (int32), header extension length (int32), tuples, trailer (int16 -1).
    Tuple: field count (int16), then per field its byte length (int32) and its binary value.
    vector's binary value (pgvector's vector_send): dim (int16), unused (int16), dim float4, all big-endian.
    """
    rows, dims = vectors.shape
    tuple_type = np.dtype([("fields", ">i2"), ("length", ">i4"), ("dim", ">i2"), ("unused", ">i2"), ("values", ">f4", (dims,))])
    tuples = np.empty(rows, dtype=tuple_type)
    tuples["fields"] = 1
    tuples["length"] = 4 + 4 * dims
    tuples["dim"] = dims
    tuples["unused"] = 0
    tuples["values"] = vectors
    return b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0) + tuples.tobytes() + struct.pack(">h", -1)


def copy_binary_psycopg2(dsn: str, table: str, vectors: np.ndarray) -> None:
    with _env.connect(dsn) as conn, conn.cursor() as cur:
        statement = sql.SQL("COPY {} (embedding) FROM STDIN WITH (FORMAT BINARY)").format(sql.Identifier(table))
        cur.copy_expert(statement, io.BytesIO(binary_copy_stream(vectors)), size=1 << 20)  # 1 MiB reads, not 8 kB
    conn.close()


METHODS = {
    "insert_batched": insert_batched,
    "copy_binary_psycopg3": copy_binary_psycopg3,
    "copy_binary_psycopg2": copy_binary_psycopg2,
}


def _check_loaded(cur, table: str, vectors: np.ndarray) -> None:
    """The rows arrived, and arrived intact (first and last vector compared exactly)."""
    from pgvector.psycopg2 import register_vector

    register_vector(cur.connection)
    cur.execute(sql.SQL("SELECT count(*), min(id), max(id) FROM {}").format(sql.Identifier(table)))
    count, first_id, last_id = cur.fetchone()
    if count != len(vectors):
        raise RuntimeError(f"{table}: loaded {count} rows, expected {len(vectors)}")
    for row_id, expected in ((first_id, vectors[0]), (last_id, vectors[-1])):
        cur.execute(sql.SQL("SELECT embedding FROM {} WHERE id = %s").format(sql.Identifier(table)), (row_id,))
        if not np.array_equal(cur.fetchone()[0].to_numpy(), expected):  # pgvector returns Vector objects
            raise RuntimeError(f"{table}: row {row_id} differs from what was sent")


def load_rates(rows: int = 10_000, dims: int = 384, dsn: str | None = None, table: str = TABLE,
               methods=tuple(METHODS), batch_size: int = 1000, verbose: bool = False) -> dict[str, float]:
    """Load `rows` random vectors of `dims` dimensions with each method into a fresh table `table`;
    return {method: vectors per second}. The table is dropped afterwards."""
    dsn = dsn or _env.database_url()
    vectors = make_vectors(rows, dims)
    ident = sql.Identifier(table)
    rates = {}
    admin = _env.connect(dsn)
    admin.autocommit = True
    cur = admin.cursor()
    try:
        for name in methods:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
            cur.execute(sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, embedding vector({}))").format(
                ident, sql.Literal(dims)))
            kwargs = {"batch_size": batch_size} if name == "insert_batched" else {}
            start = time.perf_counter()
            METHODS[name](dsn, table, vectors, **kwargs)
            elapsed = time.perf_counter() - start
            _check_loaded(cur, table, vectors)
            rates[name] = rows / elapsed
            if verbose:
                print(f"  {name:22s} {rows:>8d} rows in {elapsed:7.2f} s  {rates[name]:>10,.0f} vectors/s")
    finally:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
        admin.close()
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=int(os.environ.get("BULK_ROWS", 20_000)))
    parser.add_argument("--dims", type=int, default=int(os.environ.get("BULK_DIMS", 384)))
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    _env.need("psycopg", "pip install 'psycopg[binary]' (psycopg 3, for binary COPY), or pip install -r requirements.txt")
    print(f"connecting as {_env.describe()}")
    print(f"loading {args.rows} vectors of {args.dims} dims into {TABLE}, each method into a fresh table:")
    rates = load_rates(args.rows, args.dims, batch_size=args.batch_size, verbose=True)
    baseline = rates["insert_batched"]
    print("\nspeed-up over batched INSERT: "
          + ", ".join(f"{name} x{rate / baseline:.1f}" for name, rate in rates.items() if name != "insert_batched"))
    print(f"all rows verified; dropped table {TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
