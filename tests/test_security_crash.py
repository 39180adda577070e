"""Crash consistency: SIGKILL the CLI at every step, then run it again; it must converge.

Kill points, each on a fresh client (real servers, real processes, nothing mocked):
  * every SQL statement of a run: the shared server logs each statement (log_statement=all, set here for
    this test's own server), and the CLI is killed as soon as the k-th one shows up, for k = 1, 2, ...
    until a run finishes before its kill point;
  * every line of the component log (one line per action: server created, config, started, .env, ...);
  * time offsets through a dedicated server's creation (runtime copy, initdb, first start).
After each kill a plain re-run must exit 0 and leave a working tenant whose .env password is the role's
password, no orphaned role/database/port/pending file/temp file. rotate and uninstall get the same
treatment. The number of kill points tried is printed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

from agency_pgvector import envfile, scram
from agency_pgvector.engines.embedded import EmbeddedEngine, SharedEmbeddedEngine
from agency_pgvector.spec import Spec

from conftest import DOMAIN, EMAIL, stop_all

KILLS: dict[str, int] = {}


@pytest.fixture(scope="module")
def crash_root(stack_root):
    """A root of its own (its shared server logs every statement, which the rest of the suite must not see)."""
    base = stack_root.parent / "crash"
    base.mkdir(mode=0o755)
    root = base / "root"
    yield root
    stop_all(root)


class Runner:
    def __init__(self, root: Path):
        self.root, self.logs = root, root.parent / "logs"
        self.logs.mkdir(exist_ok=True, mode=0o700)

    def env(self, client: str, log: Path, **extra) -> dict:
        return {**os.environ, "AGENCY_STACK_ROOT": str(self.root), "AGENCY_STACK_LOG": str(log), "CLIENT_ID": client,
                "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "WITH_DEPS": "true", "ENGINE": "embedded", "YES": "true", **extra}

    def run(self, command: str, client: str, **extra) -> subprocess.CompletedProcess:
        log = self.logs / f"{client}.log"
        return subprocess.run([sys.executable, "-m", "agency_pgvector", command], env=self.env(client, log, **extra),
                              capture_output=True, text=True, timeout=300)

    def run_killed(self, command: str, client: str, trigger, **extra) -> bool:
        """Start the CLI and SIGKILL it when `trigger()` first says so; True if it was killed before it finished."""
        log = self.logs / f"{client}.log"
        proc = subprocess.Popen([sys.executable, "-m", "agency_pgvector", command], env=self.env(client, log, **extra),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        started = time.monotonic()
        try:
            while proc.poll() is None:
                if trigger(started, log):
                    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and whatever it runs (initdb, pg_ctl, pg_dump)
                    proc.wait()
                    return True
                time.sleep(0.001)
            return False
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def after_log_lines(k: int):
    def trigger(started, log: Path) -> bool:
        return log.exists() and log.read_text().count("\n") >= k
    return trigger


def after_log_line_with(text: str):
    def trigger(started, log: Path) -> bool:
        return log.exists() and text in log.read_text()
    return trigger


def after_seconds(t: float):
    return lambda started, log: time.monotonic() - started >= t


STEP = re.compile(rb"statement: (CREATE|ALTER|REVOKE|GRANT|DROP|"
                  rb"SELECT pg_advisory_lock|SELECT count\(pg_terminate|SELECT '\[1,2,3\]')")


class StatementWatch:
    """Counts the statements that change something (and the lock, and the tenant's login check) in a server
    log from now on (log_statement=all); the read-only queries between two of them are the same kill point."""

    def __init__(self, server_log: Path):
        self.path = server_log
        self.offset = server_log.stat().st_size

    def after(self, k: int):
        def trigger(started, log) -> bool:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                return len(STEP.findall(handle.read())) >= k
        return trigger


@pytest.fixture(scope="module")
def shared(crash_root):
    """The module's shared server, logging every statement so the test can kill between any two."""
    runner = Runner(crash_root)
    result = runner.run("install", "crash-seed", SERVER="shared")
    assert result.returncode == 0, result.stderr
    engine = SharedEmbeddedEngine(Spec(client_id="crash-seed", root=crash_root))
    conn = engine.admin_connect()
    conn.cursor().execute("ALTER SYSTEM SET log_statement = 'all'")
    conn.cursor().execute("SELECT pg_reload_conf()")
    conn.close()
    time.sleep(0.2)
    return runner, engine


def _admin_rows(engine, query, *args):
    conn = engine.admin_connect()
    with conn.cursor() as cur:
        cur.execute(query, args)
        rows = cur.fetchall()
    conn.close()
    return rows


def assert_converged(runner: Runner, engine, client: str, shared: bool) -> None:
    """A working tenant, .env == role password, and nothing orphaned or half-written anywhere."""
    paths = Spec(client_id=client, root=runner.root).paths
    env = envfile.read(paths.env_file)
    assert env, f"{client}: no .env after the re-run"
    [(stored,)] = _admin_rows(engine, "SELECT rolpassword FROM pg_authid WHERE rolname = %s", env["PGUSER"])
    assert scram.verify(env["PGVECTOR_DB_PASS"], stored), f"{client}: .env password is not the role's"
    conn = psycopg2.connect(host=env["PGHOST"], port=env["PGPORT"], user=env["PGUSER"], password=env["PGPASSWORD"],
                            dbname=env["PGDATABASE"], connect_timeout=5)
    with conn.cursor() as cur:
        cur.execute("SELECT '[1,2,3]'::vector <-> '[1,2,4]'")
        assert cur.fetchone() == (1.0,)
    conn.close()
    assert_no_debris(runner, engine, shared)


def installed(root: Path) -> set[str]:
    clients = root / "clients"
    return {d.name for d in clients.iterdir() if (d / "pgvector" / ".env").exists()} if clients.exists() else set()


def assert_no_debris(runner: Runner, engine, shared: bool) -> None:
    root = runner.root
    debris = [str(p) for p in root.rglob("*") if p.name.endswith((".tmp", ".mkdir")) or ".tmp" in p.name and "runtime" in str(p)
              or p.name in (".password.pending", "data.initdb")]
    assert not debris, debris
    ports = {p.name: p.read_text().strip() for p in (root / "pgvector" / "ports").iterdir()}
    assert len(set(ports.values())) == len(ports), ports  # one port per owner
    owners = {owner.removesuffix("/pool") for owner in ports.values()}  # a server's and its pooler's
    assert owners <= installed(root) | {"_shared"}, f"ports of clients that are not installed: {ports}"
    if shared:
        names = {n for n in installed(root)
                 if envfile.read(root / "clients" / n / "pgvector" / ".env").get("PGVECTOR_SERVER") == "shared"}
        with_dirs = {d.name for d in (root / "clients").iterdir()}
        roles = {r for (r,) in _admin_rows(engine, "SELECT rolname FROM pg_roles WHERE rolname LIKE 'vectoruser%%'")}
        dbs = {d for (d,) in _admin_rows(engine, "SELECT datname FROM pg_database WHERE datname LIKE 'vectordb%%'")}
        expected = {n.replace("-", "_") for n in names if n in with_dirs}
        assert {r.removeprefix("vectoruser_") for r in roles} == expected, (roles, names)
        assert {d.removeprefix("vectordb_") for d in dbs} == expected, (dbs, names)


def _count(kind: str, killed: bool) -> None:
    if killed:
        KILLS[kind] = KILLS.get(kind, 0) + 1


def test_install_killed_at_every_statement_and_log_line_converges(shared):
    runner, engine = shared
    server_log = engine.layout.log_file
    k, client_no = 1, 0
    while True:  # SQL statements
        client_no += 1
        client = f"crash-sql{client_no}"
        watch = StatementWatch(server_log)
        killed = runner.run_killed("install", client, watch.after(k), SERVER="shared")
        _count("install: after SQL statement k", killed)
        again = runner.run("install", client, SERVER="shared")
        assert again.returncode == 0, (k, again.stderr)
        assert_converged(runner, engine, client, shared=True)
        if not killed:
            break
        k += 1
    assert k > 6, "a fresh tenant takes more statements than that: is log_statement on?"
    # the file phase (after the last statement that changes the server): right after each file is written
    for line in ("install start", "created .env", "created samples", "created README.md"):
        client_no += 1
        client = f"crash-log{client_no}"
        killed = runner.run_killed("install", client, after_log_line_with(line), SERVER="shared")
        _count("install: after a component log line", killed)
        again = runner.run("install", client, SERVER="shared")
        assert again.returncode == 0, (line, again.stderr)
        assert_converged(runner, engine, client, shared=True)


def test_force_rotation_killed_at_every_statement_keeps_env_and_role_in_step(shared):
    runner, engine = shared
    client = "crash-rotate"
    assert runner.run("install", client, SERVER="shared").returncode == 0
    k = 1
    while True:
        watch = StatementWatch(engine.layout.log_file)
        killed = runner.run_killed("rotate", client, watch.after(k))
        _count("rotate: after SQL statement k", killed)
        assert_env_matches_role_or_pending(runner, engine, client)
        again = runner.run("install", client)  # a plain re-run must finish what the killed rotation started
        assert again.returncode == 0, (k, again.stderr)
        assert_converged(runner, engine, client, shared=True)
        if not killed:
            break
        k += 1
    for t in (0.05, 0.15, 0.3, 0.45):  # and at time offsets (file writes, the login check)
        killed = runner.run_killed("install", client, after_seconds(t), FORCE="true")
        _count("FORCE install: at a time offset", killed)
        assert runner.run("install", client).returncode == 0
        assert_converged(runner, engine, client, shared=True)


def assert_env_matches_role_or_pending(runner, engine, client) -> None:
    """Right after a kill: the role's password is in .env or in the pending file (never lost)."""
    paths = Spec(client_id=client, root=runner.root).paths
    env = envfile.read(paths.env_file)
    [(stored,)] = _admin_rows(engine, "SELECT rolpassword FROM pg_authid WHERE rolname = %s", env["PGUSER"])
    pending = paths.component_dir / ".password.pending"
    candidates = [env["PGVECTOR_DB_PASS"]] + ([pending.read_text().strip()] if pending.exists() else [])
    assert any(scram.verify(p, stored) for p in candidates), "the role's password is neither in .env nor pending"


def test_uninstall_killed_at_every_step_finishes_on_the_next_run(shared):
    runner, engine = shared
    k, n, tried = 1, 0, []
    triggers = [("after SQL statement k", None)] + [("at a time offset", t) for t in (0.2, 0.5, 0.8)]
    for kind, offset in triggers:
        k = 1
        while True:
            n += 1
            client = f"crash-un{n}"
            assert runner.run("install", client, SERVER="shared").returncode == 0
            trigger = after_seconds(offset) if offset is not None else StatementWatch(engine.layout.log_file).after(k)
            quick = {"NO_BACKUP": "true"} if offset is None else {}  # the backup's own time is covered by the offsets
            killed = runner.run_killed("uninstall", client, trigger, REMOVE_SERVER="false", **quick)
            _count(f"uninstall: {kind}", killed)
            again = runner.run("uninstall", client, REMOVE_SERVER="false")
            paths = Spec(client_id=client, root=runner.root).paths
            assert again.returncode == 0 or not killed or "not installed" in again.stderr, again.stderr
            assert not paths.component_dir.exists(), (
                f"{kind} {k}: {sorted(p.name for p in paths.component_dir.iterdir())} left behind")
            assert not _admin_rows(engine, "SELECT 1 FROM pg_roles WHERE rolname = %s", f"vectoruser_{client.replace('-', '_')}")
            assert not _admin_rows(engine, "SELECT 1 FROM pg_database WHERE datname = %s", f"vectordb_{client.replace('-', '_')}")
            assert_no_debris(runner, engine, shared=True)
            tried.append(killed)
            if offset is not None or not killed:
                break
            k += 1


def test_dedicated_server_creation_killed_anywhere_converges(crash_root):
    """Kills while the server itself is made: runtime copy, initdb, config, first start."""
    runner = Runner(crash_root)
    n = 0
    points = [("after component log line k", after_log_lines(k)) for k in (1, 2, 3)]
    points += [("at a time offset", after_seconds(t)) for t in (0.5, 1.2)]
    for kind, trigger in points:
        n += 1
        client = f"crash-de{n}"
        killed = runner.run_killed("install", client, trigger)
        _count(f"dedicated install: {kind}", killed)
        again = runner.run("install", client)
        engine = EmbeddedEngine(Spec(client_id=client, root=crash_root))
        server_log = engine.layout.log_file.read_text()[-1500:] if engine.layout.log_file.exists() else "no server log"
        assert again.returncode == 0, (kind, again.stderr, server_log)
        assert_converged(runner, engine, client, shared=False)
        engine.stop()


def test_report_kill_points(capsys):
    with capsys.disabled():
        print("\nSIGKILL points tried (each followed by a converging re-run):")
        for kind, count in sorted(KILLS.items()):
            print(f"  {kind:<45} {count}")
        print(f"  {'total':<45} {sum(KILLS.values())}")
    # Kills at a time offset land only when the run is still going (a fast host can finish first), so the
    # floor is on the statement- and log-line-driven points, which always land while there is work left.
    driven = ["install: after SQL statement k", "rotate: after SQL statement k", "uninstall: after SQL statement k",
              "dedicated install: after component log line k"]
    assert all(KILLS.get(kind, 0) >= 1 for kind in driven), KILLS
    assert sum(KILLS[kind] for kind in driven) >= 16, KILLS
