"""The docker engine: the client's `postgres-<id>` container, through the Docker Engine API.

Names per client: container postgres-<id>, volume postgres-<id>-data, network agency-<id>; what the installer
creates carries the label agency-pgvector.client=<id>. The superuser password of a container it creates lives in
<root>/pgvector/secrets/<id>.postgres-password (0600 root) and reaches the container only as a read-only
bind-mounted POSTGRES_PASSWORD_FILE: never in argv, an environment variable, a label or the client's directory.
A container the installer did not create is used as it is: SQL runs inside it as the postgres OS user over its
local socket (psql, statements on stdin) to give the installer its own login (admin.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import ports
from ...errors import UserError
from ...report import CHANGE, CREATE, OK
from ...runner import Step
from ...system import require_free_space
from ..base import Capabilities, Endpoint, Engine, ServerPlan
from . import admin, client as docker_client, container as containers, swap
from .container import LABEL

DEFAULT_IMAGE = "pgvector/pgvector:pg18"  # PG_MAJOR=16 picks pgvector/pgvector:pg16
NEW_CONTAINER_MB = 512


@dataclass
class Observed:
    container: Any  # docker Container or None
    leftover: Any  # the original of an interrupted swap, or None
    running: bool
    version: str = ""  # PostgreSQL version, asked inside a running container
    vector: str = ""  # the pgvector version it offers ('' when none)
    admin_ok: bool = False  # the installer's superuser login works


class DockerEngine(Engine):
    name = "docker"
    logical_fix = ("Recreate the container with -c wal_level=logical, or back up and restore into a client on the "
                   "target (make pgvector-backup, make pgvector-restore TARGET_CLIENT=...).")
    refusals = {
        "remove": "the container was not created by this installer and is left as it is",
        "upgrade": "a container's PostgreSQL comes with its image: a newer minor is a new image of the same major "
                   "(PGVECTOR_IMAGE=... FORCE=true recreates the container on it with the same volume); a new major "
                   "is a backup and a restore into a client on a new server (docs/docker.md)",
    }

    def __init__(self, spec):
        super().__init__(spec)
        self._client = None
        self.container = None

    # -- names --------------------------------------------------------------------------------------
    container_name = property(lambda self: f"postgres-{self.spec.client_id}")
    volume_name = property(lambda self: f"postgres-{self.spec.client_id}-data")
    network_name = property(lambda self: f"agency-{self.spec.client_id}")
    password_file = property(lambda self: self.paths.secrets_dir / f"{self.spec.client_id}.postgres-password")

    def image_name(self, major: str | None = None) -> str:
        major = major or self.spec.pg_major
        return self.spec.image or (f"pgvector/pgvector:pg{major}" if major else DEFAULT_IMAGE)

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        found = self.find()
        owned = found is not None and self.owned(found)
        return Capabilities(owns_server=owned, shared=False, logs=True, restart=True, remove=owned)

    def owned(self, container) -> bool:
        return container.labels.get(LABEL) == self.spec.client_id

    # -- the daemon and the container ---------------------------------------------------------------
    def docker(self):
        if self._client is None:
            self._client = docker_client.connect()
        return self._client

    def find(self):
        errs, _ = docker_client.errors()
        try:
            found = self.docker().containers.get(self.container_name)
        except errs.NotFound:
            found = None
        self.container = found if found is not None and found.name == self.container_name else None
        return self.container

    def _require(self):
        found = self.container or self.find()
        if found is None:
            raise UserError(f"Client {self.spec.client_id} has no container {self.container_name}: run make "
                            f"pgvector CLIENT_ID={self.spec.client_id} WITH_DEPS=true ... to create it.")
        return found

    def where(self) -> str:
        found, point = self._require(), self.endpoint()
        return f"Docker container {self.container_name} ({found.attrs['Config']['Image']}) on {point.host}:{point.port}"

    def endpoint(self) -> Endpoint:
        found = self._require()
        published = (found.attrs["HostConfig"].get("PortBindings") or {}).get("5432/tcp") or []
        published = ([b for b in published if b.get("HostPort")]
                     or (found.attrs["NetworkSettings"].get("Ports") or {}).get("5432/tcp") or [])
        if not published:
            raise UserError(f"Container {self.container_name} publishes no host port for 5432/tcp, so nothing "
                            "on this host can reach it: recreate it with -p 127.0.0.1:<port>:5432 and re-run.")
        ip = published[0].get("HostIp") or ""
        return Endpoint(ip if ip not in ("", "0.0.0.0", "::") else "127.0.0.1", int(published[0]["HostPort"]))

    def admin_params(self, dbname: str = "postgres") -> dict:
        point = self.endpoint()
        if not self.password_file.exists():
            raise UserError(f"The installer's admin password for {self.container_name} is missing ({self.password_file}): "
                            f"run make pgvector CLIENT_ID={self.spec.client_id} ... to set a new one through the container.")
        return dict(host=point.host, port=point.port, user=admin.role(self._require()),
                    password=self.password_file.read_text().strip(), dbname=dbname)

    # -- observe and plan ----------------------------------------------------------------------------
    def observe(self) -> Observed:
        found = self.find()
        seen = Observed(found, swap.leftover(self) if found is None else None,
                        found is not None and found.status == "running")
        if seen.running:
            seen.version, seen.vector = admin.server_info(self, found)
            seen.admin_ok = admin.login_works(self)
        return seen

    def plan_server(self, seen: Observed, create: bool) -> ServerPlan:
        name = f"container {self.container_name}"
        if seen.container is None and seen.leftover is not None:
            old = seen.leftover
            return ServerPlan([Step(name, CHANGE, f"renamed back from {old.name} (an interrupted swap)",
                                    run=lambda: old.rename(self.container_name))], False, again=True)
        if seen.container is None:
            if not create:
                raise UserError(f"Client {self.spec.client_id} has no PostgreSQL server yet: add WITH_DEPS=true "
                                f"to create the container {self.container_name} from {self.image_name()}, or "
                                "use ENGINE=external ADMIN_URL=... for an existing server.")
            where = docker_client.check_image(self.docker(), self.image_name())
            port = ports.preview(self.paths.state_dir, self.spec.client_id, self.spec.port)
            root = Path(self.docker().info().get("DockerRootDir") or "/var/lib/docker")
            if root.exists():
                require_free_space(root, NEW_CONTAINER_MB, "A new container's volume")
            return ServerPlan([Step(name, CREATE, f"from {self.image_name()} ({where}), volume {self.volume_name}, "
                                    f"network {self.network_name}, 127.0.0.1:{port}->5432, restart unless-stopped",
                                    run=lambda: containers.create(self, port))], False, again=True, new=True)
        if not seen.running:
            return ServerPlan([Step(name, CHANGE, "started", run=lambda: containers.start(self, seen.container))],
                              False, again=True)
        if self.spec.pg_major and seen.version.split(".")[0] != self.spec.pg_major:
            raise UserError(f"Container {self.container_name} runs PostgreSQL {seen.version}, not PG_MAJOR="
                            f"{self.spec.pg_major}: leave PG_MAJOR out (a container moves to another major by a backup "
                            "and a restore into a new client, docs/docker.md).")
        if not seen.vector:
            target = self.image_name(seen.version.split(".")[0])
            if not self.spec.force:
                raise UserError(f"Container {self.container_name} ({seen.container.attrs['Config']['Image']}, PostgreSQL "
                                f"{seen.version}) has no pgvector, and the installer never compiles inside a running "
                                f"container: re-run with FORCE=true to recreate it on {target} with the same data volume "
                                "and settings (the data is kept), or give it an image with pgvector yourself.")
            return ServerPlan([Step(name, CHANGE, f"recreated on {target} (was {seen.container.attrs['Config']['Image']}); "
                                    "data volume and settings kept",
                                    run=lambda: swap.swap(self, seen.container, seen.version))], False, again=True)
        point = self._check_binding(seen.container)
        steps = []
        if ports.owned(self.paths.state_dir, self.spec.client_id) != point.port:
            steps.append(Step("port registry", CHANGE, f"{point.port} recorded for {self.spec.client_id}",
                              run=lambda: ports.record(self.paths.state_dir, self.spec.client_id, point.port)))
        if not seen.admin_ok:
            role = admin.role(seen.container)
            steps.append(Step(f"admin login {role}", CHANGE if self.password_file.exists() else CREATE,
                              f"superuser for the installer, password in {self.password_file} (0600), set through "
                              "the container's local socket", run=lambda: admin.ensure(self, seen.container)))
        steps.append(Step("server", OK, f"{seen.container.attrs['Config']['Image']}: PostgreSQL {seen.version}, "
                          f"pgvector {seen.vector} available, {point.host}:{point.port}"))
        return ServerPlan(steps, reachable=seen.admin_ok)

    def _check_binding(self, found) -> Endpoint:
        """The published port is the client's for good, on loopback for a container the installer made."""
        point = self.endpoint()
        if self.spec.port and self.spec.port != point.port:
            raise UserError(f"Container {self.container_name} already publishes port "
                            f"{point.port}: leave PORT unset (ports are stable across runs).")
        bound = found.attrs["HostConfig"]["PortBindings"]["5432/tcp"][0].get("HostIp") or "0.0.0.0"
        if self.owned(found) and bound != "127.0.0.1":
            raise UserError(f"Container {self.container_name} publishes port {point.port} on {bound}, not on "
                            f"127.0.0.1: remove the container (docker rm -f {self.container_name}; its volume and data "
                            "stay) and re-run with WITH_DEPS=true to recreate it.")
        return point

    # -- lifecycle ------------------------------------------------------------------------------------
    def check_alive(self) -> None:
        """Stop waiting as soon as the container has exited, with its last log lines."""
        found = self.container
        if found is None:
            return
        found.reload()
        state = found.attrs["State"]
        if state["Status"] in ("exited", "dead") or state.get("Restarting"):
            tail = [line for line in found.logs(tail=10).decode(errors="replace").splitlines() if line.strip()][-4:]
            raise UserError(f"Container {self.container_name} exited (code {state['ExitCode']}); "
                            f"its last log lines: {' | '.join(tail) or 'none'} -- fix that and "
                            f"re-run (the whole log: docker logs {self.container_name}).")

    def logs(self, lines: int, follow: bool) -> None:
        found = self._require()
        if lines:
            print(found.logs(tail=lines).decode(errors="replace"), end="", flush=True)
        if follow:
            for chunk in found.logs(stream=True, follow=True, tail=0):
                print(chunk.decode(errors="replace"), end="", flush=True)

    def restart(self) -> None:
        self._require().restart(timeout=60)
        self.wait_ready()

    def remove_server(self) -> None:
        containers.remove(self)



