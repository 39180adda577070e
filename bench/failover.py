"""Failover (issue 15): how long a client on a three-member Patroni cluster (synchronous mode, the installer's timing:
ttl 20 s, loop_wait 2 s, retry_timeout 3 s) cannot write, seen from the app: a thread inserts one row per commit
through the client's unchanged DATABASE_URL (every member listed, target_session_attrs=read-write, a 2 s connect
timeout) and the gap is the longest time without a commit returning, from the failure until the writer runs
steadily again.

- leader lost: the leader member's keeper, Patroni and postmaster killed at once (SIGKILL), as when its host dies; a
  standby takes over once the leader key expires; `make pgvector-cluster` then brings the member back as a replica;
- leader's postmaster killed: its Patroni (still holding the key) starts PostgreSQL again;
- leader's Patroni killed: its keeper starts it again and it adopts the running server.
Baseline, same run, same cluster: a planned `make pgvector-cluster-switchover`. Every commit that returned is
checked to be there afterwards (acknowledged writes lost: target 0).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from agency_pgvector import envfile
from agency_pgvector.engines.patroni import cluster, supervise
from agency_pgvector.engines.patroni.layout import ClusterLayout
from agency_pgvector.spec import Spec

from .common import CLI, DOMAIN, EMAIL, Background, Row, median, sh

SECTION = "8 failover"
NAME = "bench"


class Writer(Background):
    """Insert 1, 2, 3, ... through DATABASE_URL, one commit each, reconnecting on any error; when each returned."""

    def __init__(self, url: str):
        super().__init__()
        self.url, self.acked, self.times = url, [], []

    def _run(self) -> None:
        import psycopg2

        conn, n = None, 0
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = psycopg2.connect(self.url, connect_timeout=2)
                    conn.autocommit = True
                n += 1
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO writes (id) VALUES (%s)", (n,))
                self.acked.append(n)
                self.times.append(time.monotonic())
            except psycopg2.Error:
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
            time.sleep(0.01)

    def gap_after(self, moment: float, timeout: float = 120.0) -> float:
        """The longest time without an acknowledged write from just before `moment` until the writer has written
        steadily again (100 writes after the longest pause so far)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            times = list(self.times)
            window = [t for t in times if t >= moment - 1.0]
            if len(window) > 100:
                pauses = [(b - a, i) for i, (a, b) in enumerate(zip(window, window[1:], strict=False))]
                longest, where = max(pauses)
                if len(window) - where > 100:
                    return longest
            time.sleep(0.1)
        raise RuntimeError(f"the writer did not write steadily within {timeout:.0f} s of the failure")


def _env(root: Path) -> dict:
    return {**os.environ, "AGENCY_STACK_ROOT": str(root), "AGENCY_STACK_LOG": str(root.parent / "log" / "failover.log"),
            "PGVECTOR_PORT_RANGE": "21000-21099", "CLUSTER": NAME, "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "YES": "true"}


def _status(root: Path) -> dict:
    return json.loads(sh([str(CLI), "cluster-status", "--json"], env=_env(root), check=False).stdout)


def _healthy(root: Path, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _status(root)
        if found["healthy"] and all(supervise.listener_uid(m["api_port"]) for m in found["members"]):
            return found
        time.sleep(0.5)
    raise RuntimeError(f"cluster {NAME} not healthy within {timeout:.0f} s")


def _pid(path: Path) -> int:
    return int(path.read_text().split()[0])


def _patroni(lay: ClusterLayout, member: str) -> int:
    found = cluster.patroni_pid(lay, member)
    if found is None:
        raise RuntimeError(f"no Patroni process for {member}")
    return found


def _kill(lay: ClusterLayout, what: str) -> None:
    head = _healthy(lay.state_dir.parent)["leader"]
    pids = {"leader lost": [_pid(lay.pid_dir / f"patroni-{NAME}-{head}.pid"), _patroni(lay, head),
                            _pid(lay.data_dir(head) / "postmaster.pid")],
            "postmaster killed": [_pid(lay.data_dir(head) / "postmaster.pid")],
            "Patroni killed": [_patroni(lay, head)]}[what]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def run(base: Path, quick: bool) -> list[Row]:
    root = base / "failover"
    lay = ClusterLayout(NAME, root / "pgvector")
    try:
        return _run(root, lay, quick)
    finally:
        cluster.remove(lay)  # processes, units, ports, files and the two system users


def _run(root: Path, lay: ClusterLayout, quick: bool) -> list[Row]:
    sh([str(CLI), "cluster", "--quiet"], env={**_env(root), "WITH_DEPS": "true"})
    sh([str(CLI), "install", "--quiet"], env={**_env(root), "CLIENT_ID": "bench-ha", "ENGINE": "patroni"})
    url = envfile.read(Spec(client_id="bench-ha", root=root).paths.env_file)["DATABASE_URL"]
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE writes (id int PRIMARY KEY)")
    conn.close()
    repeats = 1 if quick else 3
    gaps: dict[str, list[float]] = {}
    with Writer(url) as writer:
        time.sleep(2)
        for _ in range(repeats):
            found = _healthy(root)
            candidate = next(m["name"] for m in found["members"] if m["role"] == "sync_standby")
            moment = time.monotonic()
            sh([str(CLI), "cluster-switchover"], env={**_env(root), "CANDIDATE": candidate})
            gaps.setdefault("switchover", []).append(writer.gap_after(moment))
            for what in ("leader lost", "postmaster killed", "Patroni killed"):
                _healthy(root)
                time.sleep(2)
                moment = time.monotonic()
                _kill(lay, what)
                gaps.setdefault(what, []).append(writer.gap_after(moment))
                if what == "leader lost":
                    sh([str(CLI), "cluster", "--quiet"], env=_env(root))
        _healthy(root)
        time.sleep(1)
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM writes")
        present = {row[0] for row in cur.fetchall()}
    conn.close()
    lost = len(set(writer.acked) - present)
    base_gap = median(gaps["switchover"])
    note = f"median of {repeats}; each: {', '.join(f'{g:.1f}' for g in gaps['leader lost'])} s"
    return [
        Row(SECTION, "switchover (planned): write gap", base_gap, "s", note=f"median of {repeats}"),
        Row(SECTION, "leader lost (host death): write gap", median(gaps["leader lost"]), "s",
            "switchover", base_gap, "<= 15 s", median(gaps["leader lost"]) <= 15, note),
        Row(SECTION, "leader's postmaster killed: write gap", median(gaps["postmaster killed"]), "s",
            "switchover", base_gap, note=f"median of {repeats}"),
        Row(SECTION, "leader's Patroni killed: write gap", median(gaps["Patroni killed"]), "s",
            "switchover", base_gap, note=f"median of {repeats}"),
        Row(SECTION, "acknowledged writes lost (sync mode)", float(lost), "",
            target="= 0", met=lost == 0, note=f"{len(writer.acked)} acknowledged"),
    ]
