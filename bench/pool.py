"""PgBouncer in front of a server (issue 12), through the pool against direct to PostgreSQL, in turns on one server:

- short-lived connections: `pgbench -n -C -S` (a new connection, and so a SCRAM login, per transaction), with the
  pgbench the embedded runtime ships; target >= 3x the transactions per second through the pool;
- persistent connections running HNSW top-10 queries (`ORDER BY embedding <=> $1 LIMIT 10`, the vector sent as a
  bound parameter, psycopg 3, one thread per connection); target <= 10% fewer queries per second through the pool;
- what the pooler adds to one round trip on an open connection (`pgbench -n -S -c 1`), and what a login costs.

One client installed with the CLI, so the pooler and its settings are the ones the installer writes (POOL_MODE
session, POOL_SIZE 10); then the same client re-run with POOL_MODE=transaction, and both measures again. Both paths
use the client's .env: DATABASE_URL's port (PostgreSQL) or DATABASE_POOL_URL's (PgBouncer), TCP on 127.0.0.1,
the tenant's own login. The password reaches pgbench as PGPASSWORD, never in its argv.

CPU per transaction is read from /proc (the server's and the pooler's system users) and getrusage (the client),
to show where a short connection's time goes.
"""

from __future__ import annotations

import os
import pwd
import re
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from agency_pgvector import envfile, pooler

from . import hnsw
from .common import Row, engine_for, install, median, sh

SECTION = "6 pool"
CLIENT = "bench-pool"
QUERY = f"SELECT id FROM {hnsw.TABLE} ORDER BY embedding <=> %s::vector LIMIT 10"
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    rate: float  # transactions (a) or queries (b) per second
    latency_ms: float  # see pgbench_select; for HNSW queries the median latency
    cpu_ms: dict  # CPU per transaction or query: client, server, pooler


@dataclass
class Target:
    """Where the tenant logs in, and whose CPU to count."""

    env: dict  # the client's .env
    server_user: str
    pooler_user: str

    def port(self, pooled: bool) -> int:
        return int(self.env["PGVECTOR_POOL_PORT" if pooled else "PGPORT"])

    def login(self, pooled: bool) -> dict:
        return dict(host="127.0.0.1", port=self.port(pooled), user=self.env["PGUSER"], dbname=self.env["PGDATABASE"],
                    password=self.env["PGVECTOR_DB_PASS"])


def cpu_seconds(user: str) -> float:
    """CPU used by `user`'s live processes and the children they reaped (the postmaster reaps ended backends)."""
    uid, total = pwd.getpwnam(user).pw_uid, 0
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or proc.stat().st_uid != uid:
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return total / TICK


def measured(target: Target, who: int, work) -> tuple[object, dict]:
    """Run `work`; CPU seconds it took the client (`who`: RUSAGE_CHILDREN or RUSAGE_SELF), the server and the pooler."""
    def now():
        use = resource.getrusage(who)
        return use.ru_utime + use.ru_stime, cpu_seconds(target.server_user), cpu_seconds(target.pooler_user)

    before = now()
    result = work()
    after = now()
    return result, dict(zip(("client", "server", "pooler"), (b - a for a, b in zip(before, after, strict=True)), strict=True))


# -- (a) short-lived connections, and one open connection's round trip ------------------------------------------------
def pgbench_select(pgbench: Path, target: Target, pooled: bool, clients: int, seconds: int, reconnect: bool) -> Sample:
    """`pgbench -n -S` (a primary-key SELECT per transaction); `reconnect`: -C, a new connection per transaction.
    Sample.latency_ms: pgbench's average connection time with -C, its average latency without."""
    argv = [str(pgbench), "-n", "-S", *(["-C"] if reconnect else []), "-c", str(clients), "-j", str(min(clients, 2)),
            "-T", str(seconds), "-h", "127.0.0.1", "-p", str(target.port(pooled)), "-U", target.env["PGUSER"],
            target.env["PGDATABASE"]]
    env = {**os.environ, "PGPASSWORD": target.env["PGVECTOR_DB_PASS"]}
    result, cpu = measured(target, resource.RUSAGE_CHILDREN, lambda: sh(argv, env=env))
    out = result.stdout  # type: ignore[attr-defined]
    done = int(_field(out, r"number of transactions actually processed: (\d+)"))
    failed = _field(out, r"number of failed transactions: (\d+)")
    if not done or int(failed):
        raise RuntimeError(f"pgbench through {'the pool' if pooled else 'PostgreSQL'}: {done} done, {failed} failed")
    latency = r"average connection time = ([\d.]+) ms" if reconnect else r"latency average = ([\d.]+) ms"
    return Sample(float(_field(out, r"^tps = ([\d.]+)")), float(_field(out, latency)),
                  {name: value / done * 1000 for name, value in cpu.items()})


def _field(text: str, pattern: str) -> str:
    match = re.search(pattern, text, re.M)
    if not match:
        raise RuntimeError(f"pgbench printed no {pattern!r}: {text[-300:]}")
    return match.group(1)


# -- (b) persistent connections, HNSW queries -----------------------------------------------------------------------
def load_vectors(target: Target, rows: int, dim: int) -> None:
    """The tenant's own table and HNSW index (default m, ef_construction), loaded directly (not measured)."""
    import psycopg2

    data, _ = hnsw.dataset(rows, dim, 1)
    conn = psycopg2.connect(**target.login(pooled=False))
    conn.autocommit = True
    try:
        hnsw.load(conn, data)
        with conn.cursor() as cur:
            cur.execute(f"CREATE INDEX {hnsw.TABLE}_hnsw ON {hnsw.TABLE} USING hnsw (embedding vector_cosine_ops)")
            cur.execute(f"EXPLAIN {QUERY}", ("[" + ",".join(["0.1"] * dim) + "]",))
            plan = " ".join(row[0] for row in cur.fetchall())
    finally:
        conn.close()
    if "hnsw" not in plan:
        raise RuntimeError(f"the query does not use the HNSW index: {plan}")


def hnsw_queries(target: Target, pooled: bool, queries: list[str], connections: int, seconds: float) -> Sample:
    """`connections` sessions opened first (not timed), then each runs top-10 queries for `seconds`."""
    import psycopg

    # prepare_threshold=None: no named prepared statements, which PgBouncer 1.18 cannot carry in transaction mode.
    sessions = [psycopg.connect(**target.login(pooled), autocommit=True, prepare_threshold=None)
                for _ in range(connections)]
    latencies: list[list[float]] = [[] for _ in sessions]
    start = threading.Barrier(connections + 1)
    stop_at = [0.0]

    def worker(index: int) -> None:
        with sessions[index].cursor() as cur:
            cur.execute(QUERY, (queries[index],))  # warm-up, untimed
            cur.fetchall()
            start.wait()
            i = index
            while time.perf_counter() < stop_at[0]:
                began = time.perf_counter()
                cur.execute(QUERY, (queries[i % len(queries)],))
                cur.fetchall()
                latencies[index].append(time.perf_counter() - began)
                i += connections

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]

    def work() -> float:
        for thread in threads:
            thread.start()
        stop_at[0] = time.perf_counter() + seconds
        began = time.perf_counter()
        start.wait()
        for thread in threads:
            thread.join()
        return time.perf_counter() - began

    try:
        elapsed, cpu = measured(target, resource.RUSAGE_SELF, work)
    finally:
        for session in sessions:
            session.close()
    done = sum(len(times) for times in latencies)
    return Sample(done / float(elapsed), median([t for times in latencies for t in times]) * 1000,  # type: ignore[arg-type]
                  {name: value / done * 1000 for name, value in cpu.items()})


# -- the section -----------------------------------------------------------------------------------------------------
def in_turns(pairs: int, measure) -> dict[bool, list[Sample]]:
    """`measure(pooled)` direct and through the pool, `pairs` times, the first of each pair alternating. Many short
    pairs rather than a few long runs: on a host other work shares, both sides of a pair see about the same load."""
    out: dict[bool, list[Sample]] = {False: [], True: []}
    for pair in range(pairs):
        for pooled in ((False, True) if pair % 2 == 0 else (True, False)):
            out[pooled].append(measure(pooled))
    return out


def pool_mode(root: Path) -> str:
    """The pool_mode PgBouncer applies to the client's database now (its console), not what a file says."""
    engine = engine_for(root, CLIENT)
    database = envfile.read(engine.paths.env_file)["PGDATABASE"]
    rows = pooler.for_engine(engine).show("DATABASES")
    return next(row["pool_mode"] or "session" for row in rows if row["name"] == database)


def run(base: Path, quick: bool, servers: list) -> list[Row]:
    """The rows; the client's server and pooler under base/pool are left running, the caller stops them (stop_all)."""
    pairs, seconds = (4, 2) if quick else (10, 3)
    clients, connections, rows_n, dim = 8, 4, (20_000 if quick else 50_000), 384
    root = base / "pool"
    install(root, CLIENT, new_server=True)
    engine = engine_for(root, CLIENT)
    env = envfile.read(engine.paths.env_file)
    target = Target(env, engine.layout.os_user, pooler.for_engine(engine).layout.os_user)
    pgbench = engine.bin_dir() / "pgbench"
    sh([str(pgbench), "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", env["PGPORT"], "-U", env["PGUSER"], env["PGDATABASE"]],
       env={**os.environ, "PGPASSWORD": env["PGVECTOR_DB_PASS"]})
    load_vectors(target, rows_n, dim)
    _, queries = hnsw.dataset(rows_n, dim, 200)
    texts = ["[" + ",".join(f"{x:.7g}" for x in q) + "]" for q in queries]

    rows: list[Row] = []
    load_before = os.getloadavg()[0]
    for mode in ("session", "transaction"):
        if mode != "session":
            install(root, CLIENT, POOL_MODE=mode)  # the installer rewrites the pool's line and reloads PgBouncer
        if pool_mode(root) != mode:
            raise RuntimeError(f"PgBouncer does not run {CLIENT}'s pool in {mode} mode")
        short = in_turns(pairs, lambda pooled: pgbench_select(pgbench, target, pooled, clients, seconds, reconnect=True))
        trip = in_turns(pairs // 2, lambda pooled: pgbench_select(pgbench, target, pooled, 1, seconds, reconnect=False))
        persistent = in_turns(pairs, lambda pooled: hnsw_queries(target, pooled, texts, connections, seconds))
        how = f"{pairs} pairs of {seconds} s runs, direct and pooled in turns"
        rows += [short_row(mode, short, clients, how), host_row(mode, short), trip_row(mode, trip, short),
                 hnsw_row(mode, persistent, connections, f"{rows_n // 1000}k x {dim}", how)]
    rows[0].note += f"; 1-min load average {load_before:.1f} before the section, {os.getloadavg()[0]:.1f} after"
    return rows


def med(samples: list[Sample], pick) -> float:
    return median([pick(sample) for sample in samples])


def pairs_note(samples: dict[bool, list[Sample]]) -> str:
    ratios = sorted(pooled.rate / direct.rate for pooled, direct in zip(samples[True], samples[False], strict=True))
    quarter = len(ratios) // 4
    return (f"pooled/direct within a pair: median {median(ratios):.2f}x, "
            f"middle half {ratios[quarter]:.2f}-{ratios[-1 - quarter]:.2f}x")


def cpu_note(samples: dict[bool, list[Sample]]) -> str:
    def each(pooled: bool) -> str:
        return ", ".join(f"{name} {med(samples[pooled], lambda s, n=name: s.cpu_ms[n]):.3f}"
                         for name in ("client", "server", "pooler"))

    return f"pooled: {each(True)}; direct: {each(False)}"


def short_row(mode: str, short: dict, clients: int, how: str) -> Row:
    pooled, direct = med(short[True], lambda s: s.rate), med(short[False], lambda s: s.rate)
    return Row(SECTION, f"new connection per transaction (pgbench -C -S, {clients} clients), {mode} pool", pooled, "tps",
               "direct", direct, ">= 3x", met=pooled >= 3 * direct,
               note=f"medians of {how}; {pairs_note(short)}; connection time "
                    f"{med(short[True], lambda s: s.latency_ms):.1f} ms pooled, {med(short[False], lambda s: s.latency_ms):.1f} "
                    f"ms direct; CPU ms per transaction {cpu_note(short)}")


def host_row(mode: str, short: dict) -> Row:
    """What a new connection costs the database host (server + pooler), the client's own CPU (its SCRAM proof) left out."""
    cost = {pooled: med(short[pooled], lambda s: s.cpu_ms["server"] + s.cpu_ms["pooler"]) for pooled in (False, True)}
    return Row(SECTION, f"database host CPU per new connection (server + pooler), {mode} pool", cost[True], "ms",
               "direct (server)", cost[False], note="without the client's CPU (its SCRAM proof): clients on other hosts")


def trip_row(mode: str, trip: dict, short: dict) -> Row:
    """One open connection's round trip: what the pooler adds to every query, and what a login costs the client."""
    pooled, direct = med(trip[True], lambda s: s.latency_ms), med(trip[False], lambda s: s.latency_ms)
    login = med(short[False] + short[True], lambda s: s.cpu_ms["client"])
    return Row(SECTION, f"round trip on one open connection (pgbench -S, 1 client), {mode} pool", pooled, "ms",
               "direct", direct, note=f"{len(trip[True])} pairs; the pooler adds {pooled - direct:.3f} ms; CPU ms per "
                                      f"transaction {cpu_note(trip)} (with -C the client's is {login:.2f}: the login)")


def hnsw_row(mode: str, persistent: dict, connections: int, data: str, how: str) -> Row:
    pooled, direct = med(persistent[True], lambda s: s.rate), med(persistent[False], lambda s: s.rate)
    return Row(SECTION, f"HNSW top-10, {connections} persistent connections, {data}, {mode} pool", pooled, "queries/s",
               "direct", direct, ">= 0.9x (<= 10% slower)", met=pooled >= 0.9 * direct,
               note=f"medians of {how}; {pairs_note(persistent)}; p50 {med(persistent[True], lambda s: s.latency_ms):.2f} ms "
                    f"pooled, {med(persistent[False], lambda s: s.latency_ms):.2f} ms direct; CPU ms per query "
                    f"{cpu_note(persistent)}")
