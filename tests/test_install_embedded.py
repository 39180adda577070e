"""make pgvector on the embedded engine: fresh install, re-run, FORCE, drift, isolation, dry-run."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import psycopg2
import pytest

from agency_pgvector.engines.embedded.runtime import newest

from conftest import admin, client_paths, tenant_connect

REQUIRED_KEYS = {
    "DATABASE_URL", "PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGVECTOR_DB_NAME", "PGVECTOR_DB_USER",
    "PGVECTOR_DB_PASS", "PGVECTOR_HOST", "PGVECTOR_PORT", "CLIENT_ID", "DOMAIN", "ADMIN_EMAIL", "PGVECTOR_VERSION",
    "POSTGRES_VERSION", "PGVECTOR_ENGINE",
}


def test_fresh_install_writes_a_private_env_that_psql_can_use(install):
    env = install("alpha")
    paths = client_paths("alpha")
    assert REQUIRED_KEYS <= env.keys()
    assert (env["PGVECTOR_DB_NAME"], env["PGVECTOR_DB_USER"], env["PGVECTOR_ENGINE"]) == ("vectordb", "vectoruser", "embedded")
    assert env["PGVECTOR_VERSION"] == newest().pgvector and env["POSTGRES_VERSION"] == newest().postgres
    assert stat.S_IMODE(paths.env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.component_dir.stat().st_mode) == 0o700
    out = subprocess.run(["bash", "-c", "set -a; . ./.env; psql -tAc 'select current_user, current_database()'"],
                         cwd=paths.component_dir, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "vectoruser|vectordb"
    assert (paths.samples_dir / "quickstart.py").exists()


def test_rerun_changes_nothing_and_keeps_the_password(install, cli):
    first = install("bravo")
    result = cli("install", "--json", CLIENT_ID="bravo", DOMAIN="example.com", ADMIN_EMAIL="ops@example.com", WITH_DEPS="true")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["changed"] is False, [i for i in report["items"] if i["status"] != "ok"]
    assert install("bravo")["PGVECTOR_DB_PASS"] == first["PGVECTOR_DB_PASS"]
    human = cli("install", CLIENT_ID="bravo", DOMAIN="example.com", ADMIN_EMAIL="ops@example.com")
    assert "No changes" in human.stdout


def test_force_sets_a_new_password_and_ends_old_sessions(install):
    old = install("charlie")
    session = tenant_connect(old)
    new = install("charlie", FORCE="true")
    assert new["PGVECTOR_DB_PASS"] != old["PGVECTOR_DB_PASS"]
    tenant_connect(new).close()
    with pytest.raises(psycopg2.OperationalError):
        tenant_connect(old)
    with pytest.raises(psycopg2.Error):
        session.cursor().execute("SELECT 1")


def test_password_drift_is_reported_and_fixed_only_with_force(install, cli):
    env = install("delta")
    conn = admin("delta")
    conn.cursor().execute("ALTER ROLE vectoruser PASSWORD 'changed-behind-our-back'")
    conn.close()
    result = cli("install", CLIENT_ID="delta", DOMAIN="example.com", ADMIN_EMAIL="ops@example.com")
    assert result.returncode != 0
    assert "drift" in result.stderr and "FORCE=true" in result.stderr and "Traceback" not in result.stderr
    assert client_paths("delta").env_file.read_text().count(env["PGVECTOR_DB_PASS"]) >= 1
    fixed = install("delta", FORCE="true")
    tenant_connect(fixed).close()


def test_tenant_role_is_not_privileged_and_owns_its_database(install):
    install("echo")
    cur = admin("echo").cursor()
    cur.execute("""SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin, rolconnlimit
                   FROM pg_roles WHERE rolname = 'vectoruser'""")
    assert cur.fetchone() == (False, False, False, False, False, True, 50)
    cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'vectordb'")
    assert cur.fetchone() == ("vectoruser",)
    cur.execute("SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'vectoruser'")
    assert cur.fetchone() == (True,)


def test_tenant_can_create_a_table_an_hnsw_index_and_query_by_distance(install):
    env = install("foxtrot")
    conn = tenant_connect(env)
    cur = conn.cursor()
    cur.execute("CREATE TABLE items (id int PRIMARY KEY, embedding vector(3))")
    cur.execute("INSERT INTO items SELECT i, ARRAY[i, i * 2, 1]::vector FROM generate_series(1, 200) i")
    cur.execute("CREATE INDEX ON items USING hnsw (embedding vector_l2_ops)")
    cur.execute("CREATE INDEX ON items USING ivfflat (embedding vector_cosine_ops) WITH (lists = 2)")
    cur.execute("SET enable_seqscan = off")
    cur.execute("SELECT id FROM items ORDER BY embedding <-> '[10,20,1]' LIMIT 1")
    assert cur.fetchone() == (10,)
    cur.execute("EXPLAIN SELECT id FROM items ORDER BY embedding <-> '[10,20,1]' LIMIT 1")
    assert "items_embedding_idx" in " ".join(row[0] for row in cur.fetchall())
    conn.rollback()
    conn.close()


def test_clients_cannot_reach_each_other_or_the_maintenance_databases(install):
    a, b = install("golf"), install("hotel")
    assert a["PGPORT"] != b["PGPORT"]
    for target in ("postgres", "template1"):
        with pytest.raises(psycopg2.OperationalError, match="permission denied|CONNECT privilege"):
            tenant_connect(a, dbname=target)
    with pytest.raises(psycopg2.OperationalError):  # b's server does not know a's role at all
        tenant_connect(a, port=b["PGPORT"])
    with pytest.raises(psycopg2.OperationalError):
        tenant_connect(b, port=a["PGPORT"], user=a["PGUSER"])


def test_dry_run_shows_the_plan_and_touches_nothing(install, cli, stack_root):
    result = cli("install", "--dry-run", CLIENT_ID="india", DOMAIN="example.com", ADMIN_EMAIL="ops@example.com", WITH_DEPS="true",
                 ENGINE="embedded")
    assert result.returncode == 0, result.stderr
    assert "would create" in result.stdout
    assert not client_paths("india").client_dir.exists()
    install("juliet")
    conn = admin("juliet")
    conn.cursor().execute("ALTER ROLE vectoruser CREATEDB")
    result = cli("install", "--dry-run", "--json", CLIENT_ID="juliet", DOMAIN="example.com", ADMIN_EMAIL="ops@example.com")
    items = {i["item"]: i["status"] for i in json.loads(result.stdout)["items"]}
    assert items["role vectoruser"] == "would change"
    cur = conn.cursor()
    cur.execute("SELECT rolcreatedb FROM pg_roles WHERE rolname = 'vectoruser'")
    assert cur.fetchone() == (True,)  # still drifted: dry-run fixed nothing
    install("juliet")
    cur.execute("SELECT rolcreatedb FROM pg_roles WHERE rolname = 'vectoruser'")
    assert cur.fetchone() == (False,)  # a real run repairs role attribute drift


def test_a_missing_server_without_with_deps_names_the_flag(cli):
    result = cli("install", CLIENT_ID="kilo", DOMAIN="example.com", ADMIN_EMAIL="ops@example.com", ENGINE="embedded")
    assert result.returncode != 0
    assert "WITH_DEPS=true" in result.stderr and "Traceback" not in result.stderr
    assert not client_paths("kilo").client_dir.exists()


def test_port_is_stable_and_the_password_never_reaches_logs_or_stdout(install, cli, stack_root):
    env = install("lima")
    again = install("lima")
    assert again["PGPORT"] == env["PGPORT"]
    secret = env["PGVECTOR_DB_PASS"]
    result = cli("install", "--verbose", CLIENT_ID="lima", DOMAIN="example.com", ADMIN_EMAIL="ops@example.com")
    assert secret not in result.stdout + result.stderr
    log_text = open(os.environ["AGENCY_STACK_LOG"]).read()
    assert "client=lima" in log_text and secret not in log_text
    server_log = (client_paths("lima").server_dir / "log" / "postgresql.log").read_text()
    assert secret not in server_log


def test_shared_server_mode_holds_many_clients_apart(install, cli):
    a, b = install("sierra", SERVER="shared"), install("tango", SERVER="shared")
    assert a["PGPORT"] == b["PGPORT"] and a["PGVECTOR_SERVER"] == "shared"
    assert (a["PGDATABASE"], b["PGUSER"]) == ("vectordb_sierra", "vectoruser_tango")
    tenant_connect(a).close()
    with pytest.raises(psycopg2.OperationalError, match="permission denied|CONNECT privilege"):
        tenant_connect(a, dbname=b["PGDATABASE"])
    again = cli("install", CLIENT_ID="sierra", DOMAIN="example.com", ADMIN_EMAIL="ops@example.com")
    assert "No changes" in again.stdout, again.stdout + again.stderr
    moved = cli("install", CLIENT_ID="sierra", DOMAIN="example.com", ADMIN_EMAIL="ops@example.com", SERVER="dedicated")
    assert moved.returncode == 3 and "make pgvector-move" in moved.stderr


def test_verbose_shows_the_sql_but_masks_the_password(install, cli):
    install("uniform")
    result = cli("install", "--verbose", CLIENT_ID="uniform", DOMAIN="example.com", ADMIN_EMAIL="ops@example.com", FORCE="true")
    assert result.returncode == 0, result.stderr
    secret = client_paths("uniform").env_file.read_text().split("PGVECTOR_DB_PASS=")[1].split()[0]
    flat = " ".join(result.stdout.split())
    assert "ALTER ROLE" in flat and "PASSWORD '***'" in flat.replace("│", "").replace("  ", " ")
    assert secret not in result.stdout and "SCRAM-SHA-256$" not in result.stdout


def test_a_boot_unit_is_rendered_for_the_server(install, stack_root):
    units = stack_root.parent / "systemd"
    install("victor", AGENCY_SYSTEMD_DIR=str(units))
    unit = (units / "agency-pgvector-victor.service").read_text()
    data = client_paths("victor").server_dir / "data"
    assert "User=apg-victor" in unit and f"PIDFile={data}/postmaster.pid" in unit  # the server's own OS user
    conf = client_paths("victor").state_dir / "servers" / "victor" / "postgresql.conf"
    assert f"pg_ctl start -D {data} -o --config-file={conf} " in unit and "WantedBy=multi-user.target" in unit
