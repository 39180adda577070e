"""Day-2 commands against real embedded servers: status, logs, restart, test, backup/restore, rotate,
upgrade, uninstall — including their failure paths."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import psycopg2
import pytest

from agency_pgvector import envfile
from agency_pgvector.engines.embedded.runtime import newest

from conftest import admin, client_paths, tenant_connect


def _json(result):
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def test_status_reports_a_healthy_client_as_stable_json(install, cli):
    env = install("st-ok")
    conn = tenant_connect(env)
    conn.autocommit = True
    conn.cursor().execute("CREATE TABLE docs (id int, embedding vector(3)); "
                          "CREATE INDEX ON docs USING hnsw (embedding vector_cosine_ops)")
    result = cli("status", "--json", CLIENT_ID="st-ok")
    assert result.returncode == 0, result.stdout + result.stderr
    report = _json(result)
    assert report["healthy"] is True
    (client,) = report["clients"]
    assert client["server"]["reachable"] and client["server"]["postgres_version"].startswith("18.")
    vector = newest().pgvector
    assert client["pgvector"] == {"installed": vector, "available": vector, "update_available": False, "schema": "extensions"}
    assert client["env_file"]["mode"] == "0600" and client["env_file"]["password_valid"] is True
    assert client["role"]["connection_limit"] == 50 and client["role"]["connections"] >= 1
    assert client["vector_columns"] == [{"table": "public.docs", "column": "embedding", "type": "vector(3)",
                                         "indexes": [{"name": "docs_embedding_idx", "method": "hnsw"}]}]
    assert "maintenance_work_mem" in client["settings"]
    conn.close()
    people = cli("status", CLIENT_ID="st-ok")
    assert "healthy" in people.stdout and "docs.embedding" in people.stdout


def test_status_finds_drift_a_loose_env_and_a_stopped_server(install, cli):
    env = install("st-bad")
    paths = client_paths("st-bad")
    conn = admin("st-bad")
    conn.cursor().execute("ALTER ROLE vectoruser CREATEDB; GRANT CONNECT ON DATABASE vectordb TO PUBLIC")
    conn.close()
    os.chmod(paths.env_file, 0o644)
    report = _json(cli("status", "--json", CLIENT_ID="st-bad"))
    client = report["clients"][0]
    assert report["healthy"] is False
    assert any("CREATEDB" in d or "NOCREATEDB" in d for d in client["drift"]) and any("privileges" in d for d in client["drift"])
    assert any("0644" in p for p in client["problems"])
    assert install("st-bad") and not _json(cli("status", "--json", CLIENT_ID="st-bad"))["clients"][0]["drift"]
    from agency_pgvector.engines.embedded import EmbeddedEngine
    from agency_pgvector.spec import Spec

    EmbeddedEngine(Spec(client_id="st-bad", root=paths.root)).stop()
    result = cli("status", CLIENT_ID="st-bad")
    assert result.returncode == 1 and "not reachable" in result.stdout
    assert "Traceback" not in result.stderr
    down = _json(cli("status", "--json", CLIENT_ID="st-bad"))["clients"][0]
    assert down["server"]["reachable"] is False and down["healthy"] is False
    restarted = cli("restart", CLIENT_ID="st-bad")
    assert restarted.returncode == 0 and "can log in again after" in restarted.stdout
    tenant_connect(env).close()


def test_status_all_covers_every_client_with_one_document(install, cli):
    install("all-a")
    install("all-b")
    report = _json(cli("status", "--all", "--json"))
    names = {c["client_id"] for c in report["clients"]}
    assert {"all-a", "all-b"} <= names
    people = cli("status", ALL="true")
    assert "all-a" in people.stdout and "all-b" in people.stdout


def test_unknown_client_is_one_clear_line(cli):
    result = cli("status", CLIENT_ID="nobody-here")
    assert result.returncode == 3 and "not installed" in result.stderr and "make pgvector" in result.stderr


def test_logs_show_the_server_log_and_the_component_log(install, cli):
    install("logs-a")
    result = cli("logs", "--lines", "50", CLIENT_ID="logs-a")
    assert result.returncode == 0, result.stderr
    assert "component log" in result.stdout and "client=logs-a" in result.stdout
    assert "database system is ready to accept connections" in result.stdout


def test_restart_keeps_data_and_the_tenant_logs_in_again(install, cli):
    env = install("rs-a")
    conn = tenant_connect(env)
    conn.autocommit = True
    conn.cursor().execute("CREATE TABLE kept (id int); INSERT INTO kept SELECT generate_series(1, 42)")
    conn.close()
    result = cli("restart", CLIENT_ID="rs-a")
    assert result.returncode == 0, result.stderr
    cur = tenant_connect(env).cursor()
    cur.execute("SELECT count(*) FROM kept")
    assert cur.fetchone() == (42,)


def _leftovers(client_id):
    cur = admin(client_id, "vectordb").cursor()
    cur.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'pgvector_selftest%'")
    return cur.fetchone()[0]


def test_end_to_end_check_passes_and_leaves_nothing_behind(install, cli):
    install("e2e-a")
    result = cli("test", "--json", CLIENT_ID="e2e-a")
    assert result.returncode == 0, result.stdout + result.stderr
    report = _json(result)
    assert report["ok"] and report["clients"][0]["recall_at_10"] >= 0.9
    assert _leftovers("e2e-a") == 0
    again = cli("test", CLIENT_ID="e2e-a")
    assert again.returncode == 0 and "PASS" in again.stdout


def test_end_to_end_check_killed_midway_leaves_nothing_behind(install, stack_root):
    install("e2e-kill")
    proc = subprocess.Popen([sys.executable, "-m", "agency_pgvector", "test"], env={**os.environ, "CLIENT_ID": "e2e-kill"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while _leftovers("e2e-kill") == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _leftovers("e2e-kill") >= 1  # the scratch table exists: we are killing mid-check
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while _leftovers("e2e-kill") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _leftovers("e2e-kill") == 0


def test_backup_then_restore_brings_back_the_rows_and_a_corrupt_file_changes_nothing(install, cli):
    env = install("bk-a")
    conn = tenant_connect(env)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("CREATE TABLE items (id int PRIMARY KEY, embedding vector(3))")
    cur.execute("INSERT INTO items SELECT i, ARRAY[i, 1, 1]::vector FROM generate_series(1, 500) i")
    cur.execute("CREATE INDEX ON items USING hnsw (embedding vector_l2_ops)")
    conn.close()
    result = cli("backup", CLIENT_ID="bk-a")
    assert result.returncode == 0, result.stderr
    dumps = sorted(client_paths("bk-a").backups_dir.glob("*.dump"))
    assert len(dumps) == 1 and stat.S_IMODE(dumps[0].stat().st_mode) == 0o600
    assert json.loads(dumps[0].with_suffix(".json").read_text())["row_counts"] == {"public.items": 500}
    conn = tenant_connect(env)
    conn.autocommit = True
    conn.cursor().execute("DELETE FROM items WHERE id > 100")
    conn.close()

    corrupt = dumps[0].with_name("corrupt.dump")
    corrupt.write_bytes(b"PGDMP" + os.urandom(2000))
    bad = cli("restore", FILE=str(corrupt), CLIENT_ID="bk-a", YES="true")
    assert bad.returncode == 3 and "not a readable pg_dump archive" in bad.stderr and "Traceback" not in bad.stderr
    cur = tenant_connect(env).cursor()
    cur.execute("SELECT count(*) FROM items")
    assert cur.fetchone() == (100,)  # untouched by the failed restore

    no_yes = cli("restore", FILE=str(dumps[0]), CLIENT_ID="bk-a")
    assert no_yes.returncode == 3 and "YES=true" in no_yes.stderr
    good = cli("restore", FILE=str(dumps[0]), CLIENT_ID="bk-a", YES="true")
    assert good.returncode == 0, good.stderr
    conn = tenant_connect(env)
    cur = conn.cursor()
    cur.execute("SELECT count(*), pg_get_userbyid((SELECT relowner FROM pg_class WHERE relname = 'items')) FROM items")
    assert cur.fetchone() == (500, "vectoruser")  # rows back, still owned by the tenant
    cur.execute("SELECT id FROM items ORDER BY embedding <-> '[7,1,1]' LIMIT 1")
    assert cur.fetchone() == (7,)
    conn.close()

    install("bk-b")  # restore into a fresh tenant of another client
    into = cli("restore", FILE=str(dumps[0]), CLIENT_ID="bk-a", TARGET_CLIENT="bk-b", YES="true")
    assert into.returncode == 0, into.stderr
    cur = tenant_connect(envfile.read(client_paths("bk-b").env_file)).cursor()
    cur.execute("SELECT count(*) FROM items")
    assert cur.fetchone() == (500,)


def test_rotate_changes_role_and_env_together_and_ends_old_sessions(install, cli):
    old = install("rot-a")
    session = tenant_connect(old)
    result = cli("rotate", CLIENT_ID="rot-a")
    assert result.returncode == 0, result.stderr
    new = envfile.read(client_paths("rot-a").env_file)
    assert new["PGVECTOR_DB_PASS"] != old["PGVECTOR_DB_PASS"] and new["PGPASSWORD"] == new["PGVECTOR_DB_PASS"]
    assert new["PGVECTOR_DB_PASS"] in new["DATABASE_URL"]
    assert new["PGVECTOR_DB_PASS"] not in result.stdout + result.stderr
    tenant_connect(new).close()
    with pytest.raises(psycopg2.OperationalError):
        tenant_connect(old)
    with pytest.raises(psycopg2.Error):
        session.cursor().execute("SELECT 1")


def test_upgrade_reports_old_and_new_versions(install, cli):
    install("up-a")
    conn = admin("up-a", "vectordb")
    # What a database looks like after the binaries were upgraded under it: the catalog still says 0.8.0
    # (the 0.8.0 -> 0.8.6 update scripts are empty, so marking it is faithful).
    conn.cursor().execute("UPDATE pg_extension SET extversion = '0.8.0' WHERE extname = 'vector'")
    conn.close()
    status = _json(cli("status", "--json", CLIENT_ID="up-a"))["clients"][0]
    assert status["pgvector"]["update_available"] is True
    result = cli("upgrade", "--json", CLIENT_ID="up-a")
    assert result.returncode == 0, result.stderr
    assert _json(result)["databases"] == [{"client_id": "up-a", "database": "vectordb", "old": "0.8.0", "new": newest().pgvector,
                                           "error": None}]
    assert envfile.read(client_paths("up-a").env_file)["PGVECTOR_VERSION"] == newest().pgvector


def test_uninstall_backs_up_drops_and_archives(install, cli, stack_root):
    env = install("un-a")
    no_yes = cli("uninstall", CLIENT_ID="un-a")
    assert no_yes.returncode == 3 and "YES=true" in no_yes.stderr
    tenant_connect(env).close()  # nothing happened without confirmation
    result = cli("uninstall", CLIENT_ID="un-a", YES="true")
    assert result.returncode == 0, result.stderr
    assert "REMOVE_SERVER=true" in result.stdout
    assert not client_paths("un-a").env_file.exists()
    archived = list((stack_root / "archive").glob("un-a-*"))
    assert len(archived) == 1 and list((archived[0] / "backups").glob("*.dump"))
    cur = admin("un-a").cursor()
    cur.execute("SELECT (SELECT count(*) FROM pg_roles WHERE rolname = 'vectoruser'), "
                "(SELECT count(*) FROM pg_database WHERE datname = 'vectordb')")
    assert cur.fetchone() == (0, 0)


def test_uninstall_keep_data_removes_only_access(install, cli):
    env = install("un-b")
    conn = tenant_connect(env)
    conn.autocommit = True
    conn.cursor().execute("CREATE TABLE precious (id int); INSERT INTO precious VALUES (1)")
    conn.close()
    assert cli("uninstall", CLIENT_ID="un-b", YES="true", KEEP_DATA="true", NO_BACKUP="true").returncode == 0
    with pytest.raises(psycopg2.OperationalError):
        tenant_connect(env)
    cur = admin("un-b", "vectordb").cursor()
    cur.execute("SELECT count(*) FROM public.precious")  # operator sessions see pg_catalog only, unqualified
    assert cur.fetchone() == (1,)


def test_uninstall_remove_server_frees_the_port(install, cli, stack_root):
    env = install("un-c")
    result = cli("uninstall", CLIENT_ID="un-c", YES="true", REMOVE_SERVER="true", NO_BACKUP="true")
    assert result.returncode == 0, result.stderr
    assert not client_paths("un-c").server_dir.exists()
    assert not (stack_root / "pgvector" / "ports" / env["PGPORT"]).exists()
    reinstalled = install("un-c")  # a clean slate: installs again from scratch
    tenant_connect(reinstalled).close()


def test_restart_names_the_process_that_took_the_port(install, cli):
    import socket

    env = install("port-squat")
    from agency_pgvector.engines.embedded import EmbeddedEngine
    from agency_pgvector.spec import Spec

    EmbeddedEngine(Spec(client_id="port-squat", root=client_paths("port-squat").root)).stop()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", int(env["PGPORT"])))
        squatter.listen()
        result = cli("restart", CLIENT_ID="port-squat")
    assert result.returncode == 3
    assert f"another process holds its port {env['PGPORT']}" in result.stderr and "Traceback" not in result.stderr
    assert cli("restart", CLIENT_ID="port-squat").returncode == 0
    tenant_connect(env).close()


def test_uninstall_killed_after_removing_env_is_finished_by_the_next_run(install, cli):
    install("un-half")
    paths = client_paths("un-half")
    assert cli("uninstall", CLIENT_ID="un-half", YES="true", NO_BACKUP="true").returncode == 0
    paths.component_dir.mkdir(mode=0o700)  # what a kill between `.env` removal and the last rmtree leaves
    (paths.component_dir / ".password.pending").write_text("x\n")
    result = cli("uninstall", CLIENT_ID="un-half", YES="true")
    assert result.returncode == 0 and "interrupted uninstall" in result.stdout, result.stderr
    assert not paths.component_dir.exists()


def test_status_all_reports_a_client_whose_tree_fails_the_trust_check_and_goes_on(install, cli):
    install("st-tree-a")
    install("st-tree-b")
    weak = client_paths("st-tree-a").component_dir
    os.chmod(weak, 0o777)  # a local user could now swap files root reads
    try:
        result = cli("status", ALL="true", JSON="true")
    finally:
        os.chmod(weak, 0o700)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    clients = {c["client_id"]: c for c in json.loads(result.stdout)["clients"]}
    assert not clients["st-tree-a"]["healthy"] and str(weak) in " ".join(clients["st-tree-a"]["problems"])
    assert clients["st-tree-b"]["healthy"], clients["st-tree-b"]["problems"]
