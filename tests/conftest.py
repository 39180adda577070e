"""Fixtures: a throw-away AGENCY_STACK_ROOT, the CLI as a subprocess, real servers (no database mocks)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg2
import pytest

from agency_pgvector import envfile
from agency_pgvector.engines.embedded import EmbeddedEngine
from agency_pgvector.spec import Spec

DOMAIN, EMAIL = "example.com", "ops@example.com"


@pytest.fixture(scope="session")
def stack_root():
    """A root the server user can traverse (pytest's own tmp dirs are 0700, which PostgreSQL cannot reach)."""
    if os.geteuid() != 0:
        pytest.fail("the test suite runs real servers under a dedicated system user: run it as root (make test)")
    base = Path(tempfile.mkdtemp(prefix="agency-test-", dir="/tmp"))
    os.chmod(base, 0o755)
    root = base / "root"
    os.environ["AGENCY_STACK_ROOT"] = str(root)
    os.environ["AGENCY_STACK_LOG"] = str(base / "log" / "pgvector.log")
    os.environ["AGENCY_LOGROTATE_DIR"] = str(base / "etc" / "logrotate.d")  # not the host's: installs write there
    os.environ["AGENCY_CRON_DIR"] = str(base / "etc" / "cron.d")
    # Each session its own port range, so concurrent sessions on one machine (each with its own root and
    # registry) do not hand the same port to two servers.
    first = 10000 + (os.getpid() % 100) * 200
    os.environ["PGVECTOR_PORT_RANGE"] = f"{first}-{first + 199}"
    yield root
    stop_all(root)
    shutil.rmtree(base, ignore_errors=True)


def stop_all(root: Path) -> None:
    """Stop every embedded server under `root` (dedicated ones and the shared one) and every pooler."""
    from agency_pgvector.engines.embedded import SharedEmbeddedEngine

    clients = root / "clients"
    names = [client.name for client in clients.iterdir()] if clients.exists() else []
    engines = [EmbeddedEngine(Spec(client_id=name, root=root)) for name in names]
    engines.append(SharedEmbeddedEngine(Spec(client_id="x", root=root)))
    for engine in engines:
        if engine.exists():
            engine.stop()
    from agency_pgvector.pooler import Pooler

    poolers = root / "pgvector" / "poolers"
    for folder in poolers.iterdir() if poolers.is_dir() else []:
        Pooler(folder.name, root / "pgvector").stop()
    from agency_pgvector.engines.patroni import cluster
    from agency_pgvector.engines.patroni.layout import ClusterLayout

    clusters = root / "pgvector" / "clusters"
    for folder in clusters.iterdir() if clusters.is_dir() else []:
        cluster.stop(ClusterLayout(folder.name, root / "pgvector"))


CLUSTER = "ha"  # the session's Patroni cluster (test_patroni.py, the hostile battery's patroni layout)


@pytest.fixture(scope="session")
def patroni_cluster(stack_root):
    """A three-member Patroni cluster with etcd, made once by the CLI as an operator would (WITH_DEPS installs
    etcd-server and Patroni when absent). Returns its name."""
    result = subprocess.run([sys.executable, "-m", "agency_pgvector", "cluster", "--quiet"], capture_output=True,
                            text=True, env={**os.environ, "CLUSTER": CLUSTER, "WITH_DEPS": "true"}, timeout=900)
    assert result.returncode == 0, result.stderr + result.stdout
    return CLUSTER


@pytest.fixture
def cli(stack_root):
    """Run the CLI the way make does: variables in the environment, a fresh process, exit code kept."""

    def run(*args: str, input: str | None = None, **env: str) -> subprocess.CompletedProcess:
        full = {**os.environ, **{k: str(v) for k, v in env.items()}}
        return subprocess.run([sys.executable, "-m", "agency_pgvector", *args], capture_output=True, text=True, env=full,
                              input=input, timeout=600)

    return run


@pytest.fixture
def install(cli):
    """Install a client on the embedded engine and return its .env; fails the test on any error."""

    def go(client_id: str, *args: str, **env: str) -> dict:
        env = {"DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "CLIENT_ID": client_id, "WITH_DEPS": "true", "ENGINE": "embedded", **env}
        result = cli("install", *args, **env)
        assert result.returncode == 0, result.stderr + result.stdout
        return envfile.read(Spec(client_id=client_id, root=Path(os.environ["AGENCY_STACK_ROOT"])).paths.env_file)

    return go


def client_paths(client_id: str):
    return Spec(client_id=client_id, root=Path(os.environ["AGENCY_STACK_ROOT"])).paths


def admin(client_id: str, dbname: str = "postgres"):
    return EmbeddedEngine(Spec(client_id=client_id, root=Path(os.environ["AGENCY_STACK_ROOT"]))).admin_connect(dbname)


def tenant_connect(env: dict, **overrides):
    from agency_pgvector.sessions import tenant_params

    params = tenant_params(env)  # a cluster's .env: the member that takes writes, SCRAM only
    params.update(overrides)
    return psycopg2.connect(connect_timeout=5, **params)
