"""Binary COPY of (id, vector) rows with psycopg2 and numpy, streamed in chunks (loads the HNSW data).

psycopg2 has no binary COPY adapter for pgvector, so the rows are laid out here with a numpy record
array: per row the field count, the bigint id and the vector (int16 dim, int16 unused, float4[dim]),
all big-endian (PostgreSQL's binary COPY format, and pgvector's vector_recv). Chunks of a few MB keep
copy_expert from calling read() per 8 kB and let the server ingest one chunk while the next is built;
the bulk-loading section compares this with samples/bulk_load.py.
"""

from __future__ import annotations

import numpy as np

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
TRAILER = b"\xff\xff"


def _chunks(ids: np.ndarray, vectors: np.ndarray, rows_per_chunk: int):
    dim = vectors.shape[1]
    row = np.dtype([("fields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("vec_len", ">i4"),
                    ("dim", ">i2"), ("unused", ">i2"), ("vec", ">f4", (dim,))])
    yield HEADER
    for start in range(0, len(ids), rows_per_chunk):
        part = slice(start, start + rows_per_chunk)
        rows = np.empty(len(ids[part]), dtype=row)
        rows["fields"], rows["id_len"], rows["id"] = 2, 8, ids[part]
        rows["vec_len"], rows["dim"], rows["unused"], rows["vec"] = 4 + 4 * dim, dim, 0, vectors[part]
        yield rows.tobytes()
    yield TRAILER


class _Reader:
    """The file-like object copy_expert reads from: one chunk per read() call."""

    def __init__(self, chunks):
        self.chunks = chunks

    def read(self, size=-1) -> bytes:
        return next(self.chunks, b"")


def copy_binary(conn, table: str, ids: np.ndarray, vectors: np.ndarray, rows_per_chunk: int = 4096) -> None:
    """COPY (id, embedding) rows in binary; `table` is a trusted identifier chosen by the caller."""
    with conn.cursor() as cur:
        cur.copy_expert(f"COPY {table} (id, embedding) FROM STDIN WITH (FORMAT BINARY)",
                        _Reader(_chunks(ids, vectors, rows_per_chunk)))

