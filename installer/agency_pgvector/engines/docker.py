"""Docker engine: the client's `postgres-<id>` container, through the Docker Engine API (the docker SDK).

Names per client: container postgres-<id>, volume postgres-<id>-data, network agency-<id>; what the
installer creates carries the label agency-pgvector.client=<id>. The superuser password of a container it
creates lives in <root>/pgvector/secrets/<id>.postgres-password (0600 root) and reaches the container only
as a read-only bind-mounted POSTGRES_PASSWORD_FILE: never in argv, an environment variable, a label or the
client's directory. A container the installer did not create is used as it is: SQL runs inside it as the
postgres OS user over its local socket (psql, statements on stdin) to give the installer its own login.
"""

from __future__ import annotations

import os
import re
import socket
import time

from .. import envfile, ports, scram
from ..errors import UserError
from ..report import CHANGE, CREATE, OK, Report
from ..text import first_line
from ..tuning import settings as tuning_settings, size_bytes
from .base import Endpoint, Engine

LABEL = "agency-pgvector.client"  # on containers, volumes and networks the installer creates
ADMIN_LABEL = "agency-pgvector.admin"  # the superuser the installer logs in as
DEFAULT_IMAGE = "pgvector/pgvector:pg17"
ADOPTED_ADMIN = "agency_admin"  # the installer's own login in a container it did not create
SECRET_TARGET = "/run/secrets/postgres-password"
DATA_TARGET = "/var/lib/postgresql/data"
NOT_READY = ("No such file or directory", "Connection refused", "starting up", "shutting down", "not yet accepting",
             "closed the connection unexpectedly")
MB = 1024 * 1024


def _docker_errors():
    import docker.errors
    import requests.exceptions

    return docker.errors, (docker.errors.DockerException, requests.exceptions.RequestException)


class DockerEngine(Engine):
    name = "docker"

    def __init__(self, spec):
        super().__init__(spec)
        self._client = None
        self._container = None
        self._dry_pending = False  # a dry run found work that must happen before the server can take a tenant

    # -- names ------------------------------------------------------------------------------------
    container_name = property(lambda self: f"postgres-{self.spec.client_id}")
    volume_name = property(lambda self: f"postgres-{self.spec.client_id}-data")
    network_name = property(lambda self: f"agency-{self.spec.client_id}")
    password_file = property(lambda self: self.paths.secrets_dir / f"{self.spec.client_id}.postgres-password")

    def image_name(self, major: str | None = None) -> str:
        return self.spec.image or (f"pgvector/pgvector:pg{major}" if major else DEFAULT_IMAGE)

    # -- the daemon and the container -------------------------------------------------------------
    def docker(self):
        if self._client is None:
            import docker

            errors, failures = _docker_errors()
            host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
            try:
                self._client = docker.from_env(timeout=120)
                self._client.ping()
            except failures as exc:
                self._client = None
                raise UserError(f"The Docker engine at {host} is not reachable ({first_line(exc)[:120]}): start it "
                                "(systemctl start docker, or dockerd) and re-run, or use ENGINE=embedded.") from None
        return self._client

    def _find(self):
        errors, _ = _docker_errors()
        try:
            found = self.docker().containers.get(self.container_name)
        except errors.NotFound:
            found = None
        self._container = found if found is not None and found.name == self.container_name else None
        return self._container

    def _require(self):
        container = self._container or self._find()
        if container is None:
            raise UserError(f"Client {self.spec.client_id} has no container {self.container_name}: run make "
                            f"pgvector CLIENT_ID={self.spec.client_id} WITH_DEPS=true ... to create it.")
        return container

    def exists(self) -> bool:
        return not self._dry_pending and self._find() is not None

    def owns_server(self) -> bool:
        container = self._find()
        return container is not None and container.labels.get(LABEL) == self.spec.client_id

    def where(self) -> str:
        container, point = self._require(), self.endpoint()
        return f"Docker container {self.container_name} ({container.attrs['Config']['Image']}) on {point.host}:{point.port}"

    def endpoint(self) -> Endpoint:
        container = self._require()
        published = (container.attrs["HostConfig"].get("PortBindings") or {}).get("5432/tcp") or []
        published = ([b for b in published if b.get("HostPort")]
                     or (container.attrs["NetworkSettings"].get("Ports") or {}).get("5432/tcp") or [])
        if not published:
            raise UserError(f"Container {self.container_name} publishes no host port for 5432/tcp, so nothing "
                            "on this host can reach it: recreate it with -p 127.0.0.1:<port>:5432 and re-run.")
        ip = published[0].get("HostIp") or ""
        return Endpoint(ip if ip not in ("", "0.0.0.0", "::") else "127.0.0.1", int(published[0]["HostPort"]))

    def admin_params(self, dbname: str = "postgres") -> dict:
        point = self.endpoint()
        return dict(host=point.host, port=point.port, user=self._admin_role(), password=self._password(), dbname=dbname)

    def _admin_role(self) -> str:
        return self._require().labels.get(ADMIN_LABEL, ADOPTED_ADMIN)

    def _password(self) -> str:
        if not self.password_file.exists():
            raise UserError(f"The installer's admin password for {self.container_name} is missing ({self.password_file}): "
                            f"run make pgvector CLIENT_ID={self.spec.client_id} ... to set a new one through the container.")
        return self.password_file.read_text().strip()

    # -- converge ---------------------------------------------------------------------------------
    def ensure_server(self, report: Report, create: bool) -> None:
        if self.spec.enable_cloud:  # publishing the port would let the image's own pg_hba decide: not TLS-only
            raise UserError("ENABLE_CLOUD=true is refused on the docker engine because the installer cannot make the container "
                            "accept remote logins only over TLS: use ENGINE=embedded ENABLE_CLOUD=true (TLS only), or keep "
                            "ENABLE_CLOUD off and reach the container over an SSH tunnel.")
        container = self._find() or self._interrupted_swap(report)
        if container is None:
            if not create:
                raise UserError(f"Client {self.spec.client_id} has no PostgreSQL server yet: add WITH_DEPS=true "
                                f"to create the container {self.container_name} from {self.image_name()}, or "
                                "use ENGINE=external ADMIN_URL=... for an existing server.")
            if report.dry_run:
                report.add(f"container {self.container_name}", CREATE,
                           f"from {self.image_name()}, volume {self.volume_name}, network {self.network_name}")
                return
            container = self._create(report)
        elif container.status != "running":
            if report.dry_run:
                self._dry_pending = True
                return report.add(f"container {self.container_name}", CHANGE, "would be started")
            self._start(container)
            report.add(f"container {self.container_name}", CHANGE, "started")
        version, vector = self._server_info(container)
        if not vector:
            container = self._swap(container, version, report)
            if container is None:
                return
            version, vector = self._server_info(container)
        self._check_binding(report)
        self._ensure_admin(container, report)
        self.wait_ready()
        point = self.endpoint()
        report.add("server", OK,
                   f"{container.attrs['Config']['Image']}: PostgreSQL {version}, "
                   f"pgvector {vector} available, {point.host}:{point.port}")

    def _check_binding(self, report: Report) -> None:
        """The published port is the client's for good; ENABLE_CLOUD must match how it is published."""
        port = self.endpoint().port
        if self.spec.port and self.spec.port != port:
            raise UserError(f"Container {self.container_name} already publishes port "
                            f"{port}: leave PORT unset (ports are stable across runs).")
        bound = self._require().attrs["HostConfig"]["PortBindings"]["5432/tcp"][0].get("HostIp") or "0.0.0.0"
        wanted = "0.0.0.0" if self.spec.enable_cloud else "127.0.0.1"
        if self.owns_server() and bound != wanted:
            raise UserError(f"Container {self.container_name} publishes port {port} on {bound}, but "
                            f"ENABLE_CLOUD={str(self.spec.enable_cloud).lower()} wants {wanted}: remove the container (docker rm "
                            f"-f {self.container_name}; its volume and data stay) and re-run with WITH_DEPS=true to recreate it.")
        if not report.dry_run:
            ports.record(self.paths.state_dir, self.spec.client_id, port)

    def _server_info(self, container) -> tuple[str, str]:
        """Server version and the pgvector version it offers ('' when none), asked inside the container."""
        out = self._psql(container, "SELECT current_setting('server_version') || '|' || coalesce("
                                    "(SELECT default_version FROM pg_available_extensions WHERE name = 'vector'), '');\n")
        version, _, vector = out.strip().splitlines()[-1].partition("|")
        return version.split()[0], vector

    # -- create -----------------------------------------------------------------------------------
    def _create(self, report: Report):
        """Network, volume, secret, container: all of this run's new things are removed again if it fails."""
        image = self._image(self.image_name())
        port = ports.reserve(self.paths.state_dir, self.spec.client_id, self.spec.port)
        undo = [lambda: ports.release(self.paths.state_dir, port)]
        try:
            self._network(report, undo)
            new_volume = self._volume(report, undo)
            self._secret(report, undo)
            container = self.docker().containers.create(self.image_name(), **self._run_settings(image, port))
            undo.append(lambda: container.remove(force=True))
            self._container = container
            self._start(container)
            if new_volume:  # first start: wait for the real server (the image's init server listens on no port)
                self.wait_ready()
        except BaseException:
            for step in reversed(undo):
                step()
            self._container = None
            raise
        report.add(f"container {self.container_name}", CREATE,
                   f"from {self.image_name()}, "
                   f"{'0.0.0.0' if self.spec.enable_cloud else '127.0.0.1'}:{port}->5432, restart unless-stopped")
        return container

    def _run_settings(self, image, port: int) -> dict:
        tuning = tuning_settings()
        volumes = list(image.attrs["Config"].get("Volumes") or {})
        from docker.types import Mount

        return dict(
            name=self.container_name,
            command=["postgres", *[arg for k, v in tuning.items() for arg in ("-c", f"{k}={v}")]],
            environment={"POSTGRES_USER": "postgres", "POSTGRES_PASSWORD_FILE": SECRET_TARGET},
            labels={LABEL: self.spec.client_id, ADMIN_LABEL: "postgres"},
            mounts=[Mount(volumes[0] if len(volumes) == 1 else DATA_TARGET, self.volume_name, type="volume"),
                    Mount(SECRET_TARGET, str(self.password_file), type="bind", read_only=True)],
            ports={"5432/tcp": ("0.0.0.0" if self.spec.enable_cloud else "127.0.0.1", port)},
            network=self.network_name,
            restart_policy={"Name": "unless-stopped"},
            shm_size=size_bytes(tuning["maintenance_work_mem"]) + 256 * MB,  # parallel HNSW builds live in /dev/shm
            healthcheck={"test": ["CMD", "pg_isready", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"],
                         "interval": 10 * 10**9, "timeout": 5 * 10**9, "retries": 5, "start_period": 60 * 10**9},
        )

    def _image(self, name: str):
        """The image from this host, else pulled; one clear sentence when neither works."""
        errors, failures = _docker_errors()
        client = self.docker()
        try:
            return client.images.get(name)
        except errors.ImageNotFound:
            pass
        except errors.APIError as exc:
            raise UserError(f"PGVECTOR_IMAGE {name[:80]!r} is not a usable image reference "
                            f"({first_line(exc.explanation)}): use e.g. PGVECTOR_IMAGE=pgvector/pgvector:pg17.") from None
        try:
            return client.images.pull(name)
        except failures as exc:
            raise UserError(f"Image {name} is not on this host and could not be pulled "
                            f"({first_line(getattr(exc, 'explanation', None) or exc)[:160]}): load it (docker load "
                            "-i <file>) or set PGVECTOR_IMAGE to an image this host has (docker image ls).") from None

    def _network(self, report: Report, undo: list) -> None:
        errors, _ = _docker_errors()
        try:
            self.docker().networks.get(self.network_name)
        except errors.NotFound:
            network = self.docker().networks.create(self.network_name, driver="bridge", labels={LABEL: self.spec.client_id})
            undo.append(network.remove)
            report.add(f"network {self.network_name}", CREATE, "bridge, for the client's containers")

    def _volume(self, report: Report, undo: list) -> bool:
        errors, _ = _docker_errors()
        try:
            self.docker().volumes.get(self.volume_name)
            report.add(f"volume {self.volume_name}", OK, "exists: its data is used as it is")
            return False
        except errors.NotFound:
            volume = self.docker().volumes.create(self.volume_name, labels={LABEL: self.spec.client_id})
            undo.append(lambda: volume.remove(force=True))
            report.add(f"volume {self.volume_name}", CREATE, "the server's data directory")
            return True

    def _secret(self, report: Report, undo: list) -> None:
        if self.password_file.exists():
            return
        envfile.write_atomic(self.password_file, scram.generate())
        undo.append(lambda: self.password_file.unlink(missing_ok=True))
        report.add("superuser password", CREATE, f"{self.password_file} (0600), mounted as POSTGRES_PASSWORD_FILE")

    def _start(self, container) -> None:
        errors, _ = _docker_errors()
        self._container = container
        try:
            container.start()
        except errors.APIError as exc:
            text = str(exc.explanation or exc)
            if "address already in use" in text or "port is already allocated" in text:
                raise UserError(f"Port {self.endpoint().port} is already in use on this host: choose another "
                                "with PORT=<port>, or leave PORT unset to pick a free one.") from None
            raise UserError(f"Docker could not start {self.container_name} "
                            f"({first_line(text)[:200]}): fix that and re-run.") from None

    # -- readiness, logs, restart, removal ----------------------------------------------------------
    def check_alive(self) -> None:
        """Stop waiting as soon as the container has exited, with its last log lines."""
        container = self._container
        if container is None:
            return
        container.reload()
        state = container.attrs["State"]
        if state["Status"] in ("exited", "dead") or state.get("Restarting"):
            tail = [line for line in container.logs(tail=10).decode(errors="replace").splitlines() if line.strip()][-4:]
            raise UserError(f"Container {self.container_name} exited (code {state['ExitCode']}); "
                            f"its last log lines: {' | '.join(tail) or 'none'} -- fix that and "
                            f"re-run (the whole log: docker logs {self.container_name}).")

    def logs(self, lines: int, follow: bool) -> None:
        container = self._require()
        if lines:
            print(container.logs(tail=lines).decode(errors="replace"), end="", flush=True)
        if follow:
            for chunk in container.logs(stream=True, follow=True, tail=0):
                print(chunk.decode(errors="replace"), end="", flush=True)

    def restart(self) -> None:
        container = self._require()
        container.restart(timeout=60)
        self.wait_ready()

    def remove_server(self, keep_volume: bool = False) -> None:
        """Remove the container the installer created; its volume too unless kept (never a volume it did not create)."""
        errors, _ = _docker_errors()
        container = self._find()
        if container is not None:
            if not self.owns_server():
                raise UserError(f"Container {self.container_name} was not created by this installer: it is left as it is.")
            port = self.endpoint().port
            container.stop(timeout=60)
            container.remove()
            ports.release(self.paths.state_dir, port)
            self._container = None
        for kind, name in (("networks", self.network_name), ("volumes", self.volume_name)):
            if kind == "volumes" and keep_volume:
                continue
            try:
                thing = getattr(self.docker(), kind).get(name)
                if (thing.attrs.get("Labels") or {}).get(LABEL) == self.spec.client_id:
                    thing.remove()
            except errors.APIError:  # not there, or a network other containers still use: it stays
                pass
        if not keep_volume:
            self.password_file.unlink(missing_ok=True)

    # -- SQL inside the container, the installer's admin login --------------------------------------
    def _exec(self, container, argv: list[str], stdin: bytes) -> tuple[int, str, str]:
        """Run argv in the container as the postgres OS user, `stdin` fed through the API socket (never argv)."""
        from docker.utils.socket import frames_iter

        api = container.client.api
        exec_id = api.exec_create(container.id, argv, stdin=True, user="postgres")["Id"]
        sock = api.exec_start(exec_id, socket=True)
        raw = getattr(sock, "_sock", sock)
        raw.sendall(stdin)
        raw.shutdown(socket.SHUT_WR)
        out = {1: b"", 2: b""}
        for stream, data in frames_iter(sock, tty=False):
            out[stream] = out.get(stream, b"") + data
        sock.close()
        raw.close()
        return api.exec_inspect(exec_id)["ExitCode"], out[1].decode(errors="replace"), out[2].decode(errors="replace")

    def _psql(self, container, script: str, timeout: float = 60.0) -> str:
        """psql inside the container over its local socket, as the image's superuser; waits while it starts."""
        errors, _ = _docker_errors()
        env = dict(item.partition("=")[::2] for item in container.attrs["Config"].get("Env") or [])
        argv = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-U", env.get("POSTGRES_USER") or "postgres", "-d", "postgres"]
        deadline = time.monotonic() + timeout
        self._container = container
        while True:
            self.check_alive()
            try:
                code, out, err = self._exec(container, argv, script.encode())
            except errors.APIError as exc:  # e.g. not running (yet)
                code, out, err = -1, "", str(exc.explanation or exc)
            if code == 0:
                return out
            if not any(mark in err for mark in NOT_READY + ("is not running",)) or time.monotonic() > deadline:
                raise UserError(f"Running SQL inside {self.container_name} (psql as the postgres "
                                f"OS user) failed: {first_line(err)[:200]}: check that the "
                                "container runs a PostgreSQL image with psql and a postgres user.")
            time.sleep(0.2)

    def _login_works(self) -> bool:
        try:
            self.admin_connect().close()
            return True
        except Exception:  # noqa: BLE001 - wrong or missing password, role missing: set it up again
            return False

    def _ensure_admin(self, container, report: Report) -> None:
        """A superuser login for the installer; (re)set through the container's socket when it does not work."""
        if self.password_file.exists() and self._login_works():
            return
        role = self._admin_role()
        if report.dry_run:
            self._dry_pending = True
            return report.add(f"admin login {role}", CHANGE, "would be set through the container's local socket")
        new = not self.password_file.exists()
        if new:
            envfile.write_atomic(self.password_file, scram.generate())
        verifier = scram.hash_password(self._password())
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", role) or not re.fullmatch(r"[A-Za-z0-9$:+/=-]+", verifier):
            raise UserError(f"Container {self.container_name} has an unusable "
                            f"{ADMIN_LABEL} label {role[:40]!r}: recreate the container.")
        # psql quotes :"role" as an identifier and :'verifier' as a literal; the verifier travels on stdin only
        self._psql(container, f"\\set role '{role}'\n\\set verifier '{verifier}'\n"
                              "SELECT format('CREATE ROLE %I', :'role')"
                              " WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \\gexec\n"
                              "ALTER ROLE :\"role\" WITH SUPERUSER LOGIN PASSWORD :'verifier';\n")
        if not self._login_works():
            point = self.endpoint()
            raise UserError(f"The installer's login {role} cannot connect to {self.container_name} at {point.host}:{point.port}: "
                            f"allow it in the container's pg_hba.conf (host all {role} all scram-sha-256) and re-run.")
        report.add(f"admin login {role}", CREATE if new else CHANGE,
                   f"superuser for the installer, password in {self.password_file} (0600)")

    # -- swap an existing container without pgvector for one with it --------------------------------
    def _swap(self, container, version: str, report: Report):
        major, current = version.split(".")[0], container.attrs["Config"]["Image"]
        target = self.image_name(major)
        if not self.spec.force:
            raise UserError(f"Container {self.container_name} ({current}, PostgreSQL {version}) has no "
                            "pgvector, and the installer never compiles inside a running container: "
                            f"re-run with FORCE=true to recreate it on {target} with the same data volume "
                            "and settings (the data is kept), or give it an image with pgvector yourself.")
        if report.dry_run:
            self._dry_pending = True
            report.add(f"container {self.container_name}", CHANGE,
                       f"would be recreated on {target}, data volume and settings kept")
            return None
        if container.attrs["HostConfig"].get("AutoRemove"):
            raise UserError(f"Container {self.container_name} runs with --rm, so stopping it would "
                            "delete it with its data: recreate it without --rm, then re-run.")
        image = self._image(target)
        image_major = self._env(image.attrs["Config"]).get("PG_MAJOR")
        if image_major and image_major != major:
            raise UserError(f"Image {target} has PostgreSQL {image_major} but the data in "
                            f"{self.container_name} is PostgreSQL {major}: set PGVECTOR_IMAGE to a "
                            f"pgvector image of PostgreSQL {major} (e.g. pgvector/pgvector:pg{major}).")
        errors, _ = _docker_errors()
        settings = self._recreate_settings(container)
        container.stop(timeout=60)
        container.rename(f"{self.container_name}-pre-pgvector")
        try:
            new = self._create_like(target, settings)
            self._start(new)
            if not self._server_info(new)[1]:
                raise UserError(f"Image {target} has no pgvector either: set PGVECTOR_IMAGE "
                                f"to a pgvector image of PostgreSQL {major}.")
        except BaseException as exc:
            self._restore(container)
            if isinstance(exc, (UserError, errors.APIError)):
                reason = exc if isinstance(exc, UserError) else first_line(exc.explanation or exc)
                raise UserError(f"Recreating {self.container_name} failed, so the original "
                                f"container is back as it was: {reason}") from None
            raise
        container.remove()  # its volumes stay (anonymous ones too): the new container uses them
        report.add(f"container {self.container_name}", CHANGE,
                   f"recreated on {target} (was {current}); data volume and settings kept")
        return new

    def _interrupted_swap(self, report: Report):
        """A run killed in the middle of a swap leaves the original renamed: put it back before anything else."""
        errors, _ = _docker_errors()
        try:
            old = self.docker().containers.get(f"{self.container_name}-pre-pgvector")
        except errors.NotFound:
            return None
        if not report.dry_run:
            old.rename(self.container_name)
        report.add(f"container {self.container_name}", CHANGE, f"renamed back from {old.name} (an interrupted swap)")
        return None if report.dry_run else self._find()

    def _restore(self, old) -> None:
        if self._container is not None and self._container.id != old.id:
            self._container.remove(force=True)
        old.rename(self.container_name)
        old.start()
        self._container = old
        try:
            self._psql(old, "SELECT 1;\n")  # hand it back running, not still starting
        except UserError:
            pass

    @staticmethod
    def _env(config: dict) -> dict:
        return dict(item.partition("=")[::2] for item in config.get("Env") or [])

    def _recreate_settings(self, container) -> dict:
        """What the old container was given on top of its image (env, command, labels, mounts, ports, networks)."""
        config, host = container.attrs["Config"], dict(container.attrs["HostConfig"])
        base = container.image.attrs["Config"]
        own = lambda key: config.get(key) if config.get(key) != base.get(key) else None  # noqa: E731
        labels = {k: v for k, v in (config.get("Labels") or {}).items() if (base.get("Labels") or {}).get(k) != v}
        labels.update({LABEL: self.spec.client_id, ADMIN_LABEL: labels.get(ADMIN_LABEL, ADOPTED_ADMIN)})
        listed = {b.split(":")[1] for b in host.get("Binds") or []} | {m["Target"] for m in host.get("Mounts") or []}
        host["Mounts"] = (host.get("Mounts") or []) + [  # anonymous volumes are in neither list: keep them by name
            {"Type": "volume", "Source": m["Name"], "Target": m["Destination"]}
            for m in container.attrs["Mounts"] if m["Type"] == "volume" and m["Destination"] not in listed]
        networks = {name: [a for a in (ep.get("Aliases") or []) if not container.id.startswith(a)]
                    for name, ep in container.attrs["NetworkSettings"]["Networks"].items()}
        return dict(
            environment=[e for e in config.get("Env") or [] if e not in (base.get("Env") or [])],
            command=own("Cmd"), entrypoint=own("Entrypoint"), user=own("User"), healthcheck=own("Healthcheck"),
            hostname=config["Hostname"] if not container.id.startswith(config.get("Hostname") or "-") else None,
            labels=labels, host_config=host, networks=networks,
            ports=[(int(p.split("/")[0]), p.split("/")[1]) for p in host.get("PortBindings") or {}],
        )

    def _create_like(self, image_name: str, settings: dict):
        """Create the container from raw settings with the low-level API, on all the networks the old one had."""
        api = self.docker().api
        settings = dict(settings)
        networks = settings.pop("networks")
        mode = settings["host_config"].get("NetworkMode") or "default"
        user_nets = {n: a for n, a in networks.items() if n not in ("bridge", "host", "none", "default")}
        first = {mode: api.create_endpoint_config(aliases=user_nets[mode] or None)} if mode in user_nets else None
        created = api.create_container(image_name, name=self.container_name, detach=True,
                                       networking_config=api.create_networking_config(first) if first else None, **settings)
        new = self.docker().containers.get(created["Id"])
        self._container = new
        for name, aliases in user_nets.items():
            if name != mode:
                api.connect_container_to_network(new.id, name, aliases=aliases or None)
        return new
