"""Suspend (KEEP_DATA=true) and resume, REMOVE_SERVER on a shared client, removing the shared server, make
pgvector-list, and what a failed install leaves (checked before, cleaned up after). Real embedded servers."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from agency_pgvector import envfile
from agency_pgvector.spec import Spec

from conftest import admin, client_paths, stop_all, tenant_connect


def _json(result):
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def _listed(cli) -> dict:
    result = cli("list", "--json")
    assert result.returncode == 0, result.stderr
    return {row["client_id"]: row for row in _json(result)["clients"]}


def _rows(env: dict) -> int:
    conn = tenant_connect(env)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM kept")
        count = cur.fetchone()[0]
    conn.close()
    return count


def _fill(env: dict) -> None:
    conn = tenant_connect(env)
    conn.autocommit = True
    conn.cursor().execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (1), (2)")
    conn.close()


def test_keep_data_suspends_and_make_pgvector_resumes_on_the_recorded_server(install, cli):
    env = install("lf-sus")
    _fill(env)
    paths = client_paths("lf-sus")
    done = cli("uninstall", "--json", CLIENT_ID="lf-sus", YES="true", KEEP_DATA="true")
    assert done.returncode == 0, done.stderr
    backup_row = next(item for item in _json(done)["items"] if item["item"] == "backup")
    assert Path(backup_row["detail"]).is_file() and "/archive/" in backup_row["detail"]  # the path that exists afterwards

    record = paths.component_dir / "suspended.json"
    assert not paths.env_file.exists() and stat.S_IMODE(record.stat().st_mode) == 0o600
    kept = json.loads(record.read_text())
    assert kept["PGVECTOR_ENGINE"] == "embedded" and kept["PGVECTOR_SERVER"] == "dedicated"
    assert kept["PGVECTOR_PORT"] == env["PGVECTOR_PORT"] and kept["DOMAIN"] == env["DOMAIN"]
    assert env["PGVECTOR_DB_PASS"] not in record.read_text()

    assert _listed(cli)["lf-sus"] | {"detail": ""} == {
        "client_id": "lf-sus", "state": "suspended", "engine": "embedded", "server": "dedicated",
        "endpoint": f"127.0.0.1:{env['PGVECTOR_PORT']}", "detail": ""}
    status = cli("status", CLIENT_ID="lf-sus")
    assert status.returncode != 0 and "suspended" in status.stderr and "Traceback" not in status.stderr
    everyone = _json(cli("install", "--all", "--json"))
    assert "lf-sus" in everyone["suspended"] and "lf-sus" not in [c["client_id"] for c in everyone["clients"]]

    # the resume: no DOMAIN, ADMIN_EMAIL, ENGINE, WITH_DEPS or FORCE needed
    resumed = cli("install", CLIENT_ID="lf-sus")
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    new = envfile.read(paths.env_file)
    assert new["PGVECTOR_PORT"] == env["PGVECTOR_PORT"] and new["DOMAIN"] == env["DOMAIN"]
    assert new["PGVECTOR_DB_PASS"] != env["PGVECTOR_DB_PASS"] and not record.exists()
    assert _rows(new) == 2
    assert _json(cli("status", "--json", CLIENT_ID="lf-sus"))["healthy"] is True
    assert _listed(cli)["lf-sus"]["state"] == "installed"


def test_status_names_a_revoked_connect_and_a_nologin_role(install, cli):
    install("lf-cn")
    conn = admin("lf-cn")
    conn.autocommit = True
    conn.cursor().execute("REVOKE CONNECT, TEMPORARY ON DATABASE vectordb FROM vectoruser")
    conn.close()
    report = _json(cli("status", "--json", CLIENT_ID="lf-cn"))
    assert report["healthy"] is False
    assert any("no CONNECT on database vectordb" in p for p in report["clients"][0]["problems"])
    install("lf-cn")
    assert _json(cli("status", "--json", CLIENT_ID="lf-cn"))["healthy"] is True


def test_shared_clients_remove_server_refused_and_the_shared_server_removed_when_empty(cli, stack_root):
    # a root of its own: in a full run other files' clients live on the session root's shared server
    base = Path(tempfile.mkdtemp(prefix="agency-lf-", dir="/tmp"))
    os.chmod(base, 0o755)
    root = base / "root"
    here = {"AGENCY_STACK_ROOT": str(root), "AGENCY_STACK_LOG": str(base / "pgvector.log")}
    paths = Spec(client_id="lf-sh1", root=root).paths
    try:
        made = cli("install", CLIENT_ID="lf-sh1", DOMAIN="example.com", ADMIN_EMAIL="ops@example.com",
                   ENGINE="embedded", SERVER="shared", WITH_DEPS="true", **here)
        assert made.returncode == 0, made.stderr + made.stdout
        env = envfile.read(paths.env_file)
        _fill(env)
        refused = cli("uninstall", CLIENT_ID="lf-sh1", YES="true", REMOVE_SERVER="true", NO_BACKUP="true", **here)
        assert refused.returncode != 0 and "remove-shared-server" in refused.stderr and "Traceback" not in refused.stderr
        assert paths.env_file.exists() and _rows(env) == 2  # nothing was touched

        shared = root / "pgvector" / "shared"
        busy = cli("remove-shared-server", YES="true", **here)
        assert busy.returncode != 0 and "lf-sh1" in busy.stderr and shared.exists()

        # suspended on the shared server, then resumed without SERVER=shared (the record says where it lives)
        assert cli("uninstall", CLIENT_ID="lf-sh1", YES="true", KEEP_DATA="true", **here).returncode == 0
        assert _json(cli("list", "--json", **here))["shared_server"]["tenants"] == ["lf-sh1"]
        still = cli("remove-shared-server", YES="true", **here)
        assert still.returncode != 0 and "lf-sh1" in still.stderr and shared.exists()
        resumed = cli("install", CLIENT_ID="lf-sh1", **here)
        assert resumed.returncode == 0, resumed.stderr + resumed.stdout
        assert _rows(envfile.read(paths.env_file)) == 2

        gone = cli("uninstall", CLIENT_ID="lf-sh1", YES="true", NO_BACKUP="true", **here)
        assert gone.returncode == 0, gone.stderr
        assert "REMOVE_SERVER" not in gone.stdout  # not advertised where it cannot apply
        removed = cli("remove-shared-server", YES="true", **here)
        assert removed.returncode == 0, removed.stderr
        assert not shared.exists() and _json(cli("list", "--json", **here))["shared_server"]["exists"] is False
    finally:
        stop_all(root)
        shutil.rmtree(base, ignore_errors=True)


def test_a_short_port_range_refuses_before_anything_is_created(install, cli):
    import socket

    with socket.socket() as probe:  # one free port: a new server and its pooler need two
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = cli("install", CLIENT_ID="lf-short", DOMAIN="example.com", ADMIN_EMAIL="ops@example.com", ENGINE="embedded",
                 WITH_DEPS="true", PGVECTOR_PORT_RANGE=f"{port}-{port}")
    assert result.returncode != 0 and "free port" in result.stderr and "Traceback" not in result.stderr
    paths = client_paths("lf-short")
    assert not paths.server_dir.exists() and "lf-short" not in _listed(cli)


def test_a_half_installed_client_is_listed_and_uninstall_cleans_it_up(install, cli):
    env = install("lf-half")
    paths = client_paths("lf-half")
    paths.env_file.unlink()  # what a run failing after the server was made, before .env, leaves
    row = _listed(cli)["lf-half"]
    assert row["state"] == "half-installed" and row["endpoint"] == f"127.0.0.1:{env['PGVECTOR_PORT']}"
    people = cli("list")
    assert people.returncode == 0 and "half-installed" in people.stdout
    asked = cli("uninstall", CLIENT_ID="lf-half")
    assert asked.returncode != 0 and "YES=true" in asked.stderr and paths.server_dir.exists()
    done = cli("uninstall", CLIENT_ID="lf-half", YES="true")
    assert done.returncode == 0, done.stderr + done.stdout
    assert not paths.server_dir.exists() and not paths.client_dir.exists() and "lf-half" not in _listed(cli)
    registry = Path(os.environ["AGENCY_STACK_ROOT"]) / "pgvector" / "ports"
    assert not any(p.read_text().strip().startswith("lf-half") for p in registry.iterdir())


def test_resuming_a_client_whose_database_was_dropped_names_that_and_creates_nothing(install, cli):
    install("lf-lost")
    assert cli("uninstall", CLIENT_ID="lf-lost", YES="true", KEEP_DATA="true", NO_BACKUP="true").returncode == 0
    conn = admin("lf-lost")
    conn.autocommit = True
    conn.cursor().execute("DROP DATABASE vectordb")
    result = cli("install", CLIENT_ID="lf-lost")
    assert result.returncode != 0 and "database vectordb is no longer on the recorded server" in result.stderr
    assert "Traceback" not in result.stderr and not client_paths("lf-lost").env_file.exists()
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM pg_database WHERE datname = 'vectordb'")
    assert cur.fetchone() == (0,)
    conn.close()
