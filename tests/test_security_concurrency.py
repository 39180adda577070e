"""Concurrency: runs started at the same moment (real processes) never create anything twice, never corrupt.

  * the same client installed by 4 processes at once (on a fresh root: the server is created then too);
  * 4 different clients on one shared server at once (the shared server itself created by the race);
  * 3 dedicated clients at once on a fresh root (the runtime copy and port allocation race);
  * "two hosts": two roots (two host locks) provisioning the same client on one external server at once:
    the server's advisory lock serialises them; the loser stops with one clear sentence.
Each outcome is exit 0, or exit 75 (busy) / 3 with one clear sentence; the component log shows every
object created exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from agency_pgvector import envfile, scram
from agency_pgvector.engines.embedded import EmbeddedEngine, SharedEmbeddedEngine
from agency_pgvector.spec import Spec

from conftest import DOMAIN, EMAIL, stop_all
from servers import start_server, wheel_bin_dir

RUNS: dict[str, int] = {}


@pytest.fixture
def fresh_root(stack_root, request):
    base = stack_root.parent / f"c{len(list(stack_root.parent.glob('c[0-9]*')))}"  # short: sockets live under it
    base.mkdir(mode=0o755)
    root = base / "root"
    yield root
    stop_all(root)


def launch(root: Path, client: str, log: Path, **extra) -> subprocess.Popen:
    env = {**os.environ, "AGENCY_STACK_ROOT": str(root), "AGENCY_STACK_LOG": str(log), "CLIENT_ID": client, "DOMAIN": DOMAIN,
           "ADMIN_EMAIL": EMAIL, "WITH_DEPS": "true", "ENGINE": "embedded", **extra}
    return subprocess.Popen([sys.executable, "-m", "agency_pgvector", "install", "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(procs) -> list[tuple[int, str]]:
    return [(p.wait(timeout=300), p.stderr.read()) for p in procs]


def _ok_or_clear(outcomes) -> None:
    for code, err in outcomes:
        assert code in (0, 75, 3), err
        assert "Traceback" not in err and err.count("\n") <= 1, err
        if code == 75:
            assert "Another run" in err


def _env_matches_role(root: Path, client: str, engine) -> None:
    env = envfile.read(Spec(client_id=client, root=root).paths.env_file)
    conn = engine.admin_connect()
    with conn.cursor() as cur:
        cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (env["PGUSER"],))
        assert scram.verify(env["PGVECTOR_DB_PASS"], cur.fetchone()[0])
    conn.close()
    psycopg2.connect(host=env["PGHOST"], port=env["PGPORT"], user=env["PGUSER"], password=env["PGPASSWORD"],
                     dbname=env["PGDATABASE"], connect_timeout=5).close()


def test_same_client_four_times_at_once(fresh_root):
    log = fresh_root.parent / "log"
    outcomes = finish([launch(fresh_root, "conc-same", log) for _ in range(4)])
    RUNS["same client, 4 at once (fresh host)"] = 4
    _ok_or_clear(outcomes)
    assert any(code == 0 for code, _ in outcomes), outcomes
    text = log.read_text()
    assert text.count("created server: ") == 1 and text.count("created role vectoruser") == 1
    assert text.count("created database vectordb") == 1 and text.count("created extension vector") == 1
    ports = sorted(p.read_text().strip() for p in (fresh_root / "pgvector" / "ports").iterdir())
    assert ports == ["conc-same", "conc-same/pool"]  # one server, one pooler
    _env_matches_role(fresh_root, "conc-same", EmbeddedEngine(Spec(client_id="conc-same", root=fresh_root)))


def test_four_clients_on_one_shared_server_at_once(fresh_root):
    log = fresh_root.parent / "log"
    clients = [f"conc-sh{i}" for i in range(4)]
    outcomes = finish([launch(fresh_root, c, log, SERVER="shared") for c in clients])
    RUNS["different clients, 4 at once on one shared server (created by the race)"] = 4
    assert all(code == 0 for code, _ in outcomes), outcomes
    text = log.read_text()
    assert text.count("created server: ") == 1
    engine = SharedEmbeddedEngine(Spec(client_id=clients[0], root=fresh_root))
    for client in clients:
        assert text.count(f"created role vectoruser_{client.replace('-', '_')}:") == 1
        _env_matches_role(fresh_root, client, engine)
    ports = sorted(p.read_text().strip() for p in (fresh_root / "pgvector" / "ports").iterdir())
    assert ports == ["_shared", "_shared/pool"]  # one shared server, one pooler for its clients


def test_three_dedicated_clients_at_once_on_a_fresh_host(fresh_root):
    log = fresh_root.parent / "log"
    clients = [f"conc-de{i}" for i in range(3)]
    outcomes = finish([launch(fresh_root, c, log) for c in clients])
    RUNS["different clients, 3 dedicated servers at once (fresh host)"] = 3
    assert all(code == 0 for code, _ in outcomes), outcomes
    runtime = fresh_root / "pgvector" / "runtime"
    assert [p.name for p in runtime.iterdir() if ".tmp" in p.name] == []
    ports = {p.read_text().strip(): p.name for p in (fresh_root / "pgvector" / "ports").iterdir()}
    assert sorted(ports) == sorted(clients + [f"{c}/pool" for c in clients]) and len(set(ports.values())) == 6
    for client in clients:
        _env_matches_role(fresh_root, client, EmbeddedEngine(Spec(client_id=client, root=fresh_root)))


def test_two_hosts_one_external_server_same_client(stack_root):
    """Two roots stand for two hosts: no shared host lock, only the server's advisory lock."""
    bin_dir = wheel_bin_dir(stack_root)  # world-readable copy of the wheel's binaries
    server = start_server(bin_dir, stack_root.parent / "conc-external", password="conc-admin-pw")
    try:
        roots = [stack_root.parent / "conc-host-a" / "root", stack_root.parent / "conc-host-b" / "root"]
        procs = [launch(root, "conc-two", root.parent / "log", ENGINE="external", ADMIN_URL=server.admin_url)
                 for root in roots for _ in range(2)]
        outcomes = finish(procs)
        RUNS["same client from two hosts (external server), 2 + 2 at once"] = 4
        _ok_or_clear(outcomes)
        conn = psycopg2.connect(server.admin_url)
        cur = conn.cursor()
        cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'vectoruser_conc_two'")
        [(stored,)] = cur.fetchall()
        cur.execute("SELECT count(*) FROM pg_database WHERE datname = 'vectordb_conc_two'")
        assert cur.fetchone() == (1,)
        conn.close()
        winners = [root for root in roots if scram.verify(envfile.read(root / "clients" / "conc-two" / "pgvector" / ".env")
                                                          .get("PGVECTOR_DB_PASS", ""), stored)]
        assert len(winners) == 1  # one host owns the tenant; the other was told so and wrote no .env
        loser = [r for r in roots if r not in winners][0]
        assert not (loser / "clients" / "conc-two" / "pgvector" / ".env").exists()
        assert any(code == 3 and "no password recorded" in err for code, err in outcomes), outcomes
        assert sum(1 for root in roots for line in (root.parent / "log").read_text().splitlines()
                   if "created role vectoruser_conc_two" in line) == 1
    finally:
        server.stop()


def test_report_concurrent_runs(capsys):
    with capsys.disabled():
        print("\nconcurrent runs:")
        for what, n in RUNS.items():
            print(f"  {what}: {n}")
        print(f"  total: {sum(RUNS.values())}")
    assert sum(RUNS.values()) >= 15
