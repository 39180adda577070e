"""Stand-alone PostgreSQL servers for tests that need an "existing server" the installer did not create."""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agency_pgvector.engines.embedded import runtime
from agency_pgvector.system import run, server_user

TEST_SERVER_USER = "agencypg"  # the "existing server" of the external-engine tests (the name of an earlier release's user)

DEBIAN_PG15 = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    bin_dir: Path
    data_dir: Path
    port: int
    password: str

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        user = server_user(create=False, name=TEST_SERVER_USER)
        run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"], user, check=False)

    def start(self) -> None:
        user = server_user(create=False, name=TEST_SERVER_USER)
        run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.data_dir.parent / "server.log"),
             "-w", "-t", "60", "start"], user)


def start_server(bin_dir: Path, base: Path, password: str = "admin-secret-pw") -> Server:
    """initdb + start as the test servers' own system user, superuser password set, scram on loopback."""
    user = server_user(create=True, name=TEST_SERVER_USER)
    base.mkdir(parents=True, exist_ok=True)
    os.chown(base, user.pw_uid, user.pw_gid)
    os.chmod(base, 0o700)
    data = base / "data"
    fd, pwfile = tempfile.mkstemp(dir=base)
    os.write(fd, password.encode() + b"\n")
    os.close(fd)
    os.chown(pwfile, user.pw_uid, user.pw_gid)
    run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--pwfile", pwfile, "--auth=scram-sha-256",
         "-E", "UTF8", "--locale=C.UTF-8"], user)
    os.unlink(pwfile)
    port = free_port()
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(f"\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{base}'\n")
    server = Server(bin_dir, data, port, password)
    server.start()
    return server


def wheel_bin_dir(root: Path) -> Path:
    """The embedded runtime's binaries under `root` (copied once), to start servers the installer did not create."""
    state_dir = root / "pgvector"
    rt = runtime.newest()
    runtime.install(rt, state_dir, root)
    return rt.bin_dir(state_dir)


def docker_with_image(image: str):
    """The real Docker engine, with the test image built once if it is missing. No engine is a failure
    (.ci/setup.d/docker.sh starts one), never a skip."""
    import subprocess
    import sys

    import pytest

    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable engine
        pytest.fail(f"no Docker engine answers ({str(exc)[:100]}): run .ci/setup.d/docker.sh", pytrace=False)
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        subprocess.run(["bash", str(Path(__file__).parent / "docker" / "build_images.sh")], check=True,
                       env={**os.environ, "PYTHON": sys.executable}, timeout=1200)
    return client
