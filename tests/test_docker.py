"""ENGINE=docker against a real Docker Engine (no mocks): create, re-run, detect, adopt, swap, logs, restart, errors.

The images are built offline by tests/docker/build_images.sh (cached by tag); .ci/setup.d/docker.sh (make test-setup,
which make test runs first) starts dockerd and builds them. No engine is a failure, never a skip.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from agency_pgvector import envfile, ports
from agency_pgvector.engines.docker import ADOPTED_ADMIN, LABEL, DockerEngine
from agency_pgvector.errors import UserError
from agency_pgvector.spec import Spec
from agency_pgvector.tuning import settings, size_bytes

from conftest import DOMAIN, EMAIL, client_paths, tenant_connect
from servers import free_port

PGVECTOR, PLAIN = "agency-test/pgvector:pg18", "agency-test/postgres:18"
BUILD = Path(__file__).parent / "docker" / "build_images.sh"
CLIENTS = ("dk-new", "dk-name", "dk-adopt", "dk-plain", "dk-noimg", "dk-port", "dk-dies", "dk-cloud", "dk-dry")
OWNER_PASSWORD = "owner-secret-pw"  # the superuser password of containers "someone else" made


@pytest.fixture(scope="module")
def docker_client(stack_root):
    """The real engine, the test images (built once if missing) and no leftovers of an earlier run."""
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable engine: a failure, never a skip
        pytest.fail(f"no Docker engine answers ({str(exc)[:100]}): run make test-setup (installs docker.io, "
                    "starts dockerd, builds the test images)", pytrace=False)
    with open("/tmp/agency-pgvector-docker-tests.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # test sessions running at once share one engine and these names: take turns
        if not all(_has_image(client, tag) for tag in (PGVECTOR, PLAIN)):
            subprocess.run(["bash", str(BUILD)], check=True, env={**os.environ, "PYTHON": sys.executable}, timeout=1200)
        _purge(client)
        yield client
        _purge(client)


def _has_image(client, tag: str) -> bool:
    import docker

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _purge(client) -> None:
    for cid in CLIENTS:
        for name in (f"postgres-{cid}", f"postgres-{cid}-pre-pgvector", f"xpostgres-{cid}", f"postgres-{cid}-old"):
            for found in client.containers.list(all=True, filters={"name": name}):
                if found.name == name:
                    found.remove(force=True, v=True)
        for volume in client.volumes.list(filters={"name": cid}):
            volume.remove(force=True)
        for network in client.networks.list(names=[f"agency-{cid}"]):
            network.remove()


def docker_install(cli, client_id: str, *args: str, **env: str):
    """Tests that create a server pass PORT=free_port(): other test sessions on this host scan from 5433 too."""
    env = {"DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "CLIENT_ID": client_id, "ENGINE": "docker", "PGVECTOR_IMAGE": PGVECTOR, **env}
    return cli("install", *args, **env)


def engine(client_id: str) -> DockerEngine:
    return DockerEngine(Spec(client_id=client_id, root=Path(os.environ["AGENCY_STACK_ROOT"])))


def someone_elses_container(client, name: str, image: str, port: int, **kwargs):
    """A container the installer did not create: its own superuser and password, no installer label."""
    container = client.containers.run(image, name=name, detach=True, ports={"5432/tcp": ("127.0.0.1", port)},
                                      environment={"POSTGRES_USER": "owner", "POSTGRES_PASSWORD": OWNER_PASSWORD, "TZ": "UTC"},
                                      **kwargs)
    if not _wait_owner(port):
        pytest.fail(f"{name} did not start: {container.logs()[-400:]!r}")
    return container


def owner_connect(port: int, dbname: str = "postgres"):
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="owner", password=OWNER_PASSWORD, dbname=dbname, connect_timeout=5)
    conn.autocommit = True
    return conn


def _wait_owner(port: int) -> bool:
    import time

    for _ in range(600):
        try:
            owner_connect(port).close()
            return True
        except psycopg2.OperationalError:
            time.sleep(0.1)
    return False


def assert_nothing_created(client, client_id: str) -> None:
    import docker

    with pytest.raises(docker.errors.NotFound):
        client.containers.get(f"postgres-{client_id}")
    assert not client.volumes.list(filters={"name": f"postgres-{client_id}-data"})
    assert not client.networks.list(names=[f"agency-{client_id}"])
    paths = client_paths(client_id)
    assert not paths.client_dir.exists()
    assert not (paths.secrets_dir / f"{client_id}.postgres-password").exists()
    assert ports.owned(paths.state_dir, client_id) is None


# -- create, re-run -----------------------------------------------------------------------------------

def test_install_creates_the_container_and_the_tenant(cli, docker_client):
    result = docker_install(cli, "dk-new", WITH_DEPS="true", PORT=str(free_port()))
    assert result.returncode == 0, result.stderr + result.stdout
    paths = client_paths("dk-new")
    env = envfile.read(paths.env_file)
    assert (env["PGVECTOR_ENGINE"], env["PGVECTOR_VERSION"], env["PGHOST"]) == ("docker", "0.8.5", "127.0.0.1")
    container = docker_client.containers.get("postgres-dk-new")
    attrs, host = container.attrs, container.attrs["HostConfig"]
    assert container.labels[LABEL] == "dk-new" and attrs["Config"]["Image"] == PGVECTOR
    assert host["PortBindings"] == {"5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": env["PGPORT"]}]}
    assert ports.owned(paths.state_dir, "dk-new") == int(env["PGPORT"])
    assert host["RestartPolicy"]["Name"] == "unless-stopped" and attrs["Config"]["Healthcheck"]["Test"][0] == "CMD"
    assert host["ShmSize"] >= size_bytes(settings()["maintenance_work_mem"])
    assert "agency-dk-new" in attrs["NetworkSettings"]["Networks"]
    assert {"Type": "volume", "Source": "postgres-dk-new-data", "Target": "/var/lib/postgresql/data"} in host["Mounts"]
    with tenant_connect(env) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE items (id int, embedding vector(3)); INSERT INTO items VALUES (1, '[1,2,3]')")
        cur.execute("SELECT embedding <-> '[1,2,4]' FROM items")
        assert cur.fetchone()[0] == 1.0


def test_superuser_password_is_a_private_file_and_nowhere_else(cli, docker_client):
    paths = client_paths("dk-new")
    secret = paths.secrets_dir / "dk-new.postgres-password"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and secret.stat().st_uid == 0
    password = secret.read_text().strip()
    container = docker_client.containers.get("postgres-dk-new")
    env = container.attrs["Config"]["Env"]
    assert "POSTGRES_PASSWORD_FILE=/run/secrets/postgres-password" in env
    assert not any(e.startswith("POSTGRES_PASSWORD=") for e in env)
    assert password not in json.dumps(container.attrs)
    assert {"Type": "bind", "Source": str(secret), "Target": "/run/secrets/postgres-password",
            "ReadOnly": True} in container.attrs["HostConfig"]["Mounts"]
    assert not any(password in p.read_text(errors="replace") for p in paths.component_dir.rglob("*") if p.is_file())
    assert password not in Path(os.environ["AGENCY_STACK_LOG"]).read_text()
    rerun = docker_install(cli, "dk-new", WITH_DEPS="true", VERBOSE="true")
    assert password not in rerun.stdout + rerun.stderr
    conn = engine("dk-new").admin_connect()  # the installer's own superuser login works with it
    conn.close()


def test_rerun_changes_nothing(cli, docker_client):
    before = docker_client.containers.get("postgres-dk-new").id
    result = docker_install(cli, "dk-new", WITH_DEPS="true")
    assert result.returncode == 0, result.stderr
    assert "No changes" in result.stdout
    as_json = docker_install(cli, "dk-new", "--json")
    assert json.loads(as_json.stdout)["changed"] is False, as_json.stdout
    dry = docker_install(cli, "dk-new", DRY_RUN="true")
    assert dry.returncode == 0 and "would" not in dry.stdout, dry.stdout + dry.stderr
    assert docker_client.containers.get("postgres-dk-new").id == before


# -- detect ---------------------------------------------------------------------------------------------

def test_detection_is_by_exact_name(cli, docker_client):
    docker_client.containers.run(PGVECTOR, ["sleep", "600"], name="xpostgres-dk-name", detach=True)
    result = docker_install(cli, "dk-name")
    assert result.returncode == 3 and "has no PostgreSQL server yet: add WITH_DEPS=true" in result.stderr
    assert not client_paths("dk-name").client_dir.exists()


def test_dry_run_plans_the_container_and_creates_nothing(cli, docker_client):
    result = docker_install(cli, "dk-dry", WITH_DEPS="true", DRY_RUN="true")
    assert result.returncode == 0, result.stderr
    assert "would create" in result.stdout and "postgres-dk-dry" in result.stdout
    assert_nothing_created(docker_client, "dk-dry")


def test_existing_container_with_pgvector_is_adopted_through_its_socket(cli, docker_client):
    port = free_port()
    container = someone_elses_container(docker_client, "postgres-dk-adopt", PGVECTOR, port)
    result = docker_install(cli, "dk-adopt")
    assert result.returncode == 0, result.stderr + result.stdout
    assert f"admin login {ADOPTED_ADMIN}" in result.stdout
    env = envfile.read(client_paths("dk-adopt").env_file)
    assert env["PGPORT"] == str(port)
    tenant_connect(env).close()
    container.reload()
    assert LABEL not in container.labels and not engine("dk-adopt").capabilities.owns_server
    with owner_connect(port) as conn, conn.cursor() as cur:
        cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (ADOPTED_ADMIN,))
        assert cur.fetchone() == (True,)
    with pytest.raises(UserError, match="not created by this installer"):
        engine("dk-adopt").remove_server()
    assert docker_install(cli, "dk-adopt").stdout.count("No changes") == 1


# -- swap: an existing container without pgvector ------------------------------------------------------

@pytest.fixture(scope="module")
def plain(docker_client):
    """postgres-dk-plain: no pgvector, data in an anonymous volume, a named one too, its own settings, alias, rows."""
    port = free_port()
    network = docker_client.networks.create("agency-dk-plain-apps")
    container = someone_elses_container(
        docker_client, "postgres-dk-plain", PLAIN, port, command=["postgres", "-c", "shared_buffers=64MB"],
        volumes={"dk-plain-extra": {"bind": "/srv/extra", "mode": "rw"}},
        network="agency-dk-plain-apps", restart_policy={"Name": "on-failure", "MaximumRetryCount": 3})
    network.disconnect(container)
    network.connect(container, aliases=["db"])
    with owner_connect(port) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE notes (id int PRIMARY KEY, body text); "
                    "INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 1000) g")
    yield container, port
    for found in docker_client.containers.list(all=True, filters={"network": network.name}):
        found.remove(force=True)
    network.remove()


def test_container_without_pgvector_is_explained_and_left_alone(cli, docker_client, plain):
    container, port = plain
    result = docker_install(cli, "dk-plain")
    assert result.returncode == 3, result.stdout
    assert "has no pgvector" in result.stderr and "FORCE=true" in result.stderr and "Traceback" not in result.stderr
    assert docker_client.containers.get("postgres-dk-plain").id == container.id
    assert not client_paths("dk-plain").client_dir.exists()
    with owner_connect(port) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (ADOPTED_ADMIN,))
        assert cur.fetchone() == (0,)


def test_failed_swap_puts_the_original_container_back(cli, docker_client, plain):
    container, port = plain
    result = docker_install(cli, "dk-plain", FORCE="true", PGVECTOR_IMAGE=PLAIN)  # a "pgvector image" without pgvector
    assert result.returncode == 3 and "original container is back" in result.stderr, result.stderr
    back = docker_client.containers.get("postgres-dk-plain")
    assert back.id == container.id and back.status == "running"
    with owner_connect(port) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM notes")
        assert cur.fetchone() == (1000,)


def test_force_swaps_to_a_pgvector_image_keeping_data_and_settings(cli, docker_client, plain):
    old, port = plain
    result = docker_install(cli, "dk-plain", FORCE="true")
    assert result.returncode == 0, result.stderr + result.stdout
    new = docker_client.containers.get("postgres-dk-plain")
    assert new.id != old.id and new.attrs["Config"]["Image"] == PGVECTOR
    assert not docker_client.containers.list(all=True, filters={"name": "postgres-dk-plain-pre-pgvector"})
    data = {m["Destination"]: m.get("Name") for m in old.attrs["Mounts"]}["/var/lib/postgresql/data"]
    mounts = {m["Destination"]: m.get("Name") for m in new.attrs["Mounts"]}
    assert mounts == {"/var/lib/postgresql/data": data, "/srv/extra": "dk-plain-extra"}
    assert "TZ=UTC" in new.attrs["Config"]["Env"] and "POSTGRES_USER=owner" in new.attrs["Config"]["Env"]
    assert new.attrs["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert "db" in new.attrs["NetworkSettings"]["Networks"]["agency-dk-plain-apps"]["Aliases"]
    with owner_connect(port) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), max(body) FROM notes")
        assert cur.fetchone() == (1000, "note 999")
        cur.execute("SHOW shared_buffers")
        assert cur.fetchone() == ("64MB",)
    env = envfile.read(client_paths("dk-plain").env_file)
    with tenant_connect(env) as conn, conn.cursor() as cur:
        cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        assert cur.fetchone() == ("0.8.5",)
    engine("dk-plain").remove_server()  # now the installer's container, but volumes it did not make stay
    assert docker_client.volumes.get(data) and docker_client.volumes.get("dk-plain-extra")
    docker_client.volumes.get(data).remove()


def test_an_interrupted_swap_is_put_back(cli, docker_client):
    container = someone_elses_container(docker_client, "postgres-dk-name-pre-pgvector", PGVECTOR, free_port())
    container.stop()  # as a swap leaves it: stopped, renamed
    result = docker_install(cli, "dk-name")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "renamed back" in result.stdout
    assert docker_client.containers.get("postgres-dk-name").id == container.id


# -- logs, restart --------------------------------------------------------------------------------------

def test_logs_show_the_container_log(cli, docker_client):
    result = cli("logs", CLIENT_ID="dk-new", LINES="50")
    assert result.returncode == 0, result.stderr
    assert "database system is ready to accept connections" in result.stdout


def test_restart_waits_until_the_server_is_back(cli, docker_client):
    env = envfile.read(client_paths("dk-new").env_file)
    with tenant_connect(env) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_postmaster_start_time()")
        started = cur.fetchone()[0]
    result = cli("restart", CLIENT_ID="dk-new")
    assert result.returncode == 0, result.stderr
    with tenant_connect(env) as conn, conn.cursor() as cur:  # no retry: restart returned only once it was ready
        cur.execute("SELECT pg_postmaster_start_time()")
        assert cur.fetchone()[0] > started


def test_a_container_is_not_moved_to_another_major_and_says_how(cli, docker_client):
    """A container's PostgreSQL comes with its image: PG_MAJOR on an existing container and a major upgrade are
    refused in one sentence that names the way (backup and restore); a plain upgrade updates the extension only."""
    other = docker_install(cli, "dk-new", PG_MAJOR="16")
    assert other.returncode == 3 and "runs PostgreSQL 18" in other.stderr and "backup" in other.stderr, other.stderr
    refused = cli("upgrade", CLIENT_ID="dk-new", PG_MAJOR="16")
    assert refused.returncode == 3 and "Upgrading the server's PostgreSQL is not available" in refused.stderr
    assert refused.stderr.count("\n") == 1
    plain = cli("upgrade", "--json", CLIENT_ID="dk-new")
    assert plain.returncode == 0 and json.loads(plain.stdout)["servers"] == []


# -- errors: one sentence, exit 3, nothing created ------------------------------------------------------

def test_unreachable_daemon_is_one_clear_sentence(cli, docker_client):
    result = docker_install(cli, "dk-noimg", WITH_DEPS="true", DOCKER_HOST="unix:///tmp/no-docker-here.sock")
    assert result.returncode == 3
    assert "Docker engine at unix:///tmp/no-docker-here.sock is not reachable" in result.stderr
    assert "Traceback" not in result.stderr
    assert_nothing_created(docker_client, "dk-noimg")


def test_image_not_available_offline(cli, docker_client):
    result = docker_install(cli, "dk-noimg", WITH_DEPS="true", PGVECTOR_IMAGE="agency-test/missing:1")
    assert result.returncode == 3
    assert "agency-test/missing:1 is not on this host and could not be pulled" in result.stderr
    assert "Traceback" not in result.stderr
    assert_nothing_created(docker_client, "dk-noimg")


def test_taken_port_is_refused(cli, docker_client):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = docker_install(cli, "dk-port", WITH_DEPS="true", PORT=str(port))
    assert result.returncode == 3 and f"Port {port} is already in use" in result.stderr, result.stderr
    assert_nothing_created(docker_client, "dk-port")


def test_container_that_exits_shows_its_last_log_lines(cli, docker_client):
    result = docker_install(cli, "dk-dies", WITH_DEPS="true", PORT=str(free_port()), PG_SHARED_BUFFERS="999999GB")
    assert result.returncode == 3, result.stdout
    assert "Container postgres-dk-dies exited" in result.stderr and "shared_buffers" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert_nothing_created(docker_client, "dk-dies")


# -- cloud, removal ---------------------------------------------------------------------------------------

def test_enable_cloud_opens_the_pool_never_the_container(cli, docker_client):
    """Published on all interfaces, the image's own pg_hba would decide (plain text allowed): remote access goes
    through the client's pooler (TLS only, tests/test_security_tls.py), the container stays on loopback."""
    result = docker_install(cli, "dk-cloud", WITH_DEPS="true", ENABLE_CLOUD="true", PORT=str(free_port()))
    assert result.returncode == 0, result.stderr + result.stdout
    binding = docker_client.containers.get("postgres-dk-cloud").attrs["HostConfig"]["PortBindings"]["5432/tcp"][0]
    assert binding["HostIp"] == "127.0.0.1"
    paths = client_paths("dk-cloud")
    env = envfile.read(paths.env_file)
    assert env["PGVECTOR_TLS_CA"] and env["PGVECTOR_REMOTE_SSLMODE"] == "verify-full"
    ini = (paths.state_dir / "poolers" / "dk-cloud" / "pgbouncer.ini").read_text()
    assert "listen_addr = *" in ini and "client_tls_sslmode = allow" in ini
    result = docker_install(cli, "dk-cloud", WITH_DEPS="true")  # off again: the pooler back on loopback
    assert result.returncode == 0, result.stderr + result.stdout
    ini = (paths.state_dir / "poolers" / "dk-cloud" / "pgbouncer.ini").read_text()
    assert "listen_addr = 127.0.0.1" in ini and "PGVECTOR_TLS_CA" not in envfile.read(paths.env_file)


def test_remove_server_removes_container_volume_network_secret_and_port(docker_client):
    paths = client_paths("dk-cloud")
    engine("dk-cloud").remove_server()
    assert_gone = [docker_client.containers.list(all=True, filters={"name": "postgres-dk-cloud"}),
                   docker_client.volumes.list(filters={"name": "postgres-dk-cloud-data"}),
                   docker_client.networks.list(names=["agency-dk-cloud"])]
    assert assert_gone == [[], [], []]
    assert not (paths.secrets_dir / "dk-cloud.postgres-password").exists()
    assert ports.owned(paths.state_dir, "dk-cloud") is None
