"""Vector work: HNSW build and queries on the installer-tuned server versus a stock one, and bulk loading.

Both servers run the same binaries on the same machine at the same time; the stock one is initdb's
postgresql.conf untouched (shared_buffers 128MB, maintenance_work_mem 64MB, ...).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from agency_pgvector import envfile
from agency_pgvector.tuning import settings as tuning_settings

from . import hnsw
from .bulkload import copy_binary
from .common import PROJECT, Row, Server, engine_for, install, median

TUNING, BULK = "3 HNSW tuning", "4 bulk loading"
# --explore: the tuned server again with one knob moved (session settings): memory at the tuned worker
# count, then workers with a graph that fits.
GRID = [("64MB", 1), ("256MB", 1), ("1GB", 0), ("1GB", 2)]


def shown(conn) -> dict:
    with conn.cursor() as cur:
        cur.execute("SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s) ORDER BY name",
                    (list(tuning_settings()),))
        return dict(cur.fetchall())


def run(base: Path, quick: bool, floors, servers: list, notes: list[str], explore: bool = False) -> list[Row]:
    n, dim, nq, k = (50_000 if quick else 100_000), 384, (100 if quick else 200), 10
    root = base / "vec"
    install(root, "v-tuned", new_server=True)
    engine = engine_for(root, "v-tuned")
    stock = Server(floors.bin_dir, base / "stock")
    stock.initdb()
    stock.configure()
    stock.start()
    servers.append(stock)
    conns = {"stock": stock.connect(), "tuned": _superuser(engine, "vectordb")}
    conns["stock"].cursor().execute("CREATE EXTENSION vector")
    settings = {name: shown(conn) for name, conn in conns.items()}
    notes.append("Settings, stock -> installer-tuned: " + ", ".join(
        f"{name} {settings['stock'][name]} -> {settings['tuned'][name]}" for name in settings["tuned"]))

    data, queries = hnsw.dataset(n, dim, nq)
    truth = hnsw.exact_neighbours(data, queries, k)
    load = {name: hnsw.load(conn, data) for name, conn in conns.items()}
    build, notice, load_avg = {}, {}, {}
    for name, conn in conns.items():
        for other in conns.values():
            other.cursor().execute("CHECKPOINT")  # neither server still writing out the other's work
        build[name], notice[name] = hnsw.build(conn)
        load_avg[name] = os.getloadavg()[0]
    latency, found = {}, {}
    for name, conn in conns.items():
        latency[name], found[name] = hnsw.search(conn, queries, k)
    sizes = hnsw.table_size(conns["tuned"])
    notes.append(f"HNSW data: {n} x {dim} unit vectors in {n // 100} clusters, cosine, m=16, ef_construction=64, "
                 f"ef_search=40, {nq} queries; table {sizes[0] / 2**20:.0f} MiB, index {sizes[1] / 2**20:.0f} MiB; "
                 f"binary COPY load {n / load['stock']:,.0f} (stock) / {n / load['tuned']:,.0f} (tuned) vectors/s.")
    said = {name: "NOTICE graph no longer fits in maintenance_work_mem" if notice[name] else "no NOTICE" for name in conns}
    p95 = {name: np.percentile(latency[name], 95) * 1000 for name in conns}
    rows = [
        Row(TUNING, f"HNSW build {n // 1000}k x {dim}, tuned", build["tuned"], "s",
            "same build, stock settings", build["stock"], "<= 0.5x", met=build["tuned"] * 2 <= build["stock"],
            note=f"{build['stock'] / build['tuned']:.1f}x faster; tuned: {said['tuned']}; stock: {said['stock']}; "
                 f"1-min load average after each build: {load_avg['tuned']:.1f} tuned, {load_avg['stock']:.1f} stock"),
        Row(TUNING, "query latency p50, tuned", median(latency["tuned"]) * 1000, "ms", "stock p50",
            median(latency["stock"]) * 1000,
            note=f"p95 {p95['tuned']:.2f} ms tuned, {p95['stock']:.2f} ms stock"),
        Row(TUNING, f"recall@{k}, tuned", hnsw.recall(found["tuned"], truth), "", f"stock recall@{k}",
            hnsw.recall(found["stock"], truth)),
    ]
    if explore:
        rows += grid(conns["tuned"], build["stock"])
    for conn in conns.values():
        conn.close()
    rows += bulk(root, "v-tuned", 5_000 if quick else 20_000, dim)
    return rows


def _superuser(engine, dbname: str):
    """A plain superuser session like the stock server's (the builds CHECKPOINT first), with the tenant's path:
    pgvector lives in schema `extensions`. Benchmark data only; no tenant's objects are involved."""
    import psycopg2

    conn = psycopg2.connect(**engine.admin_params(dbname), options="-c search_path=public,extensions")
    conn.autocommit = True
    return conn


def grid(conn, stock_build: float) -> list[Row]:
    """Build again under other maintenance_work_mem / worker counts (session settings): which knob pays."""
    rows = []
    for mwm, workers in GRID:
        with conn.cursor() as cur:
            cur.execute(f"SET maintenance_work_mem = '{mwm}'")
            cur.execute(f"SET max_parallel_maintenance_workers = {workers}")
        seconds, notice = hnsw.build(conn)
        rows.append(Row(TUNING, f"grid: maintenance_work_mem {mwm}, {workers} workers", seconds, "s", "stock build", stock_build,
                        note="NOTICE" if notice else ""))
    with conn.cursor() as cur:
        cur.execute("RESET maintenance_work_mem; RESET max_parallel_maintenance_workers")
    return rows


def bulk(root: Path, client_id: str, count: int, dim: int) -> list[Row]:
    """The samples' loader (samples/bulk_load.py) as the tenant, over TCP with its own .env credentials."""
    sys.path.insert(0, str(PROJECT / "samples"))
    import bulk_load

    dsn = envfile.read(engine_for(root, client_id).paths.env_file)["DATABASE_URL"]  # holds the password: never printed
    methods = [m for m in bulk_load.METHODS if m != "copy_binary_psycopg3" or _has("psycopg")]
    rates = bulk_load.load_rates(count, dim, dsn=dsn, methods=methods)
    rates["copy_binary_psycopg2, chunked (bench/bulkload.py)"] = _chunked_rate(dsn, bulk_load, count, dim)
    base = rates.pop("insert_batched")
    rows = [Row(BULK, "batched INSERT (1000 rows/statement)", base, "vectors/s", note=f"{count} x {dim}, samples/bulk_load.py")]
    for name, rate in rates.items():
        rows.append(Row(BULK, name, rate, "vectors/s", "batched INSERT", base, ">= 10x and >= 50k/s",
                        met=rate >= 10 * base and rate >= 50_000))
    return rows


def _chunked_rate(dsn: str, bulk_load, count: int, dim: int) -> float:
    import time

    import psycopg2

    vectors = bulk_load.make_vectors(count, dim)
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE bench_chunked (id bigint PRIMARY KEY, embedding vector(%s))", (dim,))
        conn.commit()
        start = time.perf_counter()
        copy_binary(conn, "bench_chunked", np.arange(1, count + 1), vectors)
        conn.commit()
        seconds = time.perf_counter() - start
        with conn.cursor() as cur:
            cur.execute("DROP TABLE bench_chunked")
        conn.commit()
    finally:
        conn.close()
    return count / seconds


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
