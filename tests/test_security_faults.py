"""Server faults: stopped, SIGKILLed, port taken, disk full. Clear errors, and no committed row is ever lost."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psycopg2
import pytest

from agency_pgvector.engines.embedded import EmbeddedEngine
from agency_pgvector.spec import Spec

from conftest import DOMAIN, EMAIL, client_paths, tenant_connect

ROWS = 1000


def _seed(env) -> None:
    conn = tenant_connect(env)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS kept (id int PRIMARY KEY, embedding vector(3))")
        cur.execute("INSERT INTO kept SELECT i, ARRAY[i, 1, 2]::vector FROM generate_series(1, %s) i ON CONFLICT DO NOTHING",
                    (ROWS,))
    conn.close()


def _rows(env) -> int:
    conn = tenant_connect(env)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM kept")
        count = cur.fetchone()[0]
    conn.close()
    return count


def _clear(result) -> None:
    assert "Traceback" not in result.stderr and result.stderr.count("\n") <= 1, result.stderr


def _engine(client) -> EmbeddedEngine:
    return EmbeddedEngine(Spec(client_id=client, root=Path(os.environ["AGENCY_STACK_ROOT"])))


def _again(cli, client, *args, **env):
    return cli("install", *args, CLIENT_ID=client, DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL, **env)


def test_server_stopped_then_status_test_and_install(install, cli):
    env = install("fault-stop", ENGINE="embedded")
    _seed(env)
    _engine("fault-stop").stop()
    status = cli("status", CLIENT_ID="fault-stop")
    assert status.returncode == 1 and "Traceback" not in status.stderr + status.stdout
    check = cli("test", CLIENT_ID="fault-stop")
    assert check.returncode != 0
    _clear(check)
    again = _again(cli, "fault-stop")
    assert again.returncode == 0, again.stderr
    assert _rows(env) == ROWS


def test_postmaster_sigkilled_loses_no_committed_row(install, cli):
    env = install("fault-kill", ENGINE="embedded")
    _seed(env)
    session = tenant_connect(env)  # a client in the middle of a transaction when the server dies
    session.cursor().execute("INSERT INTO kept VALUES (-1, '[0,0,0]')")
    pid = int((_engine("fault-kill").data_dir / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    again = _again(cli, "fault-kill")
    _clear(again)
    if again.returncode != 0:  # orphaned backends may still hold the old shared memory for a moment
        time.sleep(2)
        again = _again(cli, "fault-kill")
    assert again.returncode == 0, again.stderr
    assert _rows(env) == ROWS  # committed rows recovered from WAL; the open transaction's row is not there
    with pytest.raises(psycopg2.Error):
        session.cursor().execute("SELECT 1")


def test_port_taken_by_another_process(install, cli):
    env = install("fault-port", ENGINE="embedded")
    _seed(env)
    engine = _engine("fault-port")
    engine.stop()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", int(env["PGPORT"])))
    squatter.listen()
    try:
        blocked = _again(cli, "fault-port")
        assert blocked.returncode == 3 and "another process holds its port" in blocked.stderr, blocked.stderr
        _clear(blocked)
        taken = cli("install", CLIENT_ID="fault-port2", DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL, WITH_DEPS="true", ENGINE="embedded",
                    PORT=env["PGPORT"])
        assert taken.returncode == 3 and "already in use" in taken.stderr, taken.stderr
        assert not client_paths("fault-port2").env_file.exists()
    finally:
        squatter.close()
    again = _again(cli, "fault-port")
    assert again.returncode == 0, again.stderr
    assert _rows(env) == ROWS


@pytest.fixture
def small_disk(stack_root):
    """A 96 MiB tmpfs mounted as one client's directory: its data directory fills up, nothing else does."""
    client = "fault-disk"
    target = client_paths(client).client_dir
    target.mkdir(parents=True, exist_ok=True)
    os.chmod(target.parent, 0o711)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m,mode=0711", "tmpfs", str(target)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): this test needs root with the right to mount "
                    "(CAP_SYS_ADMIN; a container without it cannot run the suite)", pytrace=False)
    yield client
    _engine(client).stop()
    subprocess.run(["umount", "-l", str(target)], check=False)


def test_disk_full_on_the_data_directory(small_disk, install, cli):
    client = small_disk
    env = install(client, ENGINE="embedded")
    _seed(env)
    ballast = client_paths(client).client_dir / "ballast"
    with open(ballast, "wb") as handle:  # fill the file system to the last block
        try:
            while True:
                handle.write(b"\0" * (1 << 20))
                handle.flush()
        except OSError:
            pass
    conn = tenant_connect(env)
    conn.autocommit = True
    with pytest.raises(psycopg2.Error, match="space|could not"):
        with conn.cursor() as cur:
            cur.execute("INSERT INTO kept SELECT i, ARRAY[i, 1, 2]::vector FROM generate_series(%s, %s) i",
                        (ROWS + 1, ROWS + 200_000))
    conn.close()
    during = _again(cli, client)
    _clear(during)
    assert during.returncode in (0, 3), during.stderr
    status = cli("status", CLIENT_ID=client)
    assert "Traceback" not in status.stderr + status.stdout
    ballast.unlink()  # the operator frees space
    after = _again(cli, client)
    assert after.returncode == 0, after.stderr
    assert _rows(env) == ROWS
