"""The client's container, volume and network: created together (and removed again together if that fails)."""

from __future__ import annotations

from ... import envfile, ports, scram
from ...errors import UserError
from ...text import first_line
from ...tuning import settings as tuning_settings, size_bytes
from . import client as docker_client
from .admin import ADMIN_LABEL

LABEL = "agency-pgvector.client"  # on containers, volumes and networks the installer creates
SECRET_TARGET = "/run/secrets/postgres-password"
DATA_TARGET = "/var/lib/postgresql/data"
MB = 1024 * 1024


def create(engine, port: int):
    """Network, volume, secret, container, started: all of this run's new things are removed again if it fails."""
    image = docker_client.image(engine.docker(), engine.image_name())
    port = ports.reserve(engine.paths.state_dir, engine.spec.client_id, port)
    undo = [lambda: ports.release(engine.paths.state_dir, port)]
    try:
        _network(engine, undo)
        new_volume = _volume(engine, undo)
        _secret(engine, undo)
        container = engine.docker().containers.create(engine.image_name(), **run_settings(engine, image, port))
        undo.append(lambda: container.remove(force=True))
        start(engine, container)
        if new_volume:  # first start: wait for the real server (the image's init server listens on no port)
            engine.wait_ready()
    except BaseException:
        for step in reversed(undo):
            step()
        engine.container = None
        raise
    return container


def run_settings(engine, image, port: int) -> dict:
    from docker.types import Mount

    tuning = tuning_settings()
    volumes = list(image.attrs["Config"].get("Volumes") or {})
    return dict(
        name=engine.container_name,
        command=["postgres", *[arg for k, v in tuning.items() for arg in ("-c", f"{k}={v}")]],
        environment={"POSTGRES_USER": "postgres", "POSTGRES_PASSWORD_FILE": SECRET_TARGET},
        labels={LABEL: engine.spec.client_id, ADMIN_LABEL: "postgres"},
        mounts=[Mount(volumes[0] if len(volumes) == 1 else DATA_TARGET, engine.volume_name, type="volume"),
                Mount(SECRET_TARGET, str(engine.password_file), type="bind", read_only=True)],
        ports={"5432/tcp": ("127.0.0.1", port)},
        network=engine.network_name,
        restart_policy={"Name": "unless-stopped"},
        shm_size=size_bytes(tuning["maintenance_work_mem"]) + 256 * MB,  # parallel HNSW builds live in /dev/shm
        healthcheck={"test": ["CMD", "pg_isready", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"],
                     "interval": 10 * 10**9, "timeout": 5 * 10**9, "retries": 5, "start_period": 60 * 10**9},
    )


def _network(engine, undo: list) -> None:
    errs, _ = docker_client.errors()
    try:
        engine.docker().networks.get(engine.network_name)
    except errs.NotFound:
        network = engine.docker().networks.create(engine.network_name, driver="bridge",
                                                  labels={LABEL: engine.spec.client_id})
        undo.append(network.remove)


def _volume(engine, undo: list) -> bool:
    errs, _ = docker_client.errors()
    try:
        engine.docker().volumes.get(engine.volume_name)
        return False
    except errs.NotFound:
        volume = engine.docker().volumes.create(engine.volume_name, labels={LABEL: engine.spec.client_id})
        undo.append(lambda: volume.remove(force=True))
        return True


def _secret(engine, undo: list) -> None:
    if engine.password_file.exists():
        return
    envfile.write_atomic(engine.password_file, scram.generate())
    undo.append(lambda: engine.password_file.unlink(missing_ok=True))


def start(engine, container) -> None:
    errs, _ = docker_client.errors()
    engine.container = container
    try:
        container.start()
    except errs.APIError as exc:
        text = str(exc.explanation or exc)
        if "address already in use" in text or "port is already allocated" in text:
            raise UserError(f"Port {engine.endpoint().port} is already in use on this host: choose another "
                            "with PORT=<port>, or leave PORT unset to pick a free one.") from None
        raise UserError(f"Docker could not start {engine.container_name} ({first_line(text)[:200]}): "
                        "fix that and re-run.") from None


def remove(engine) -> None:
    """Remove the container the installer created, its network and volume (never anything it did not create)."""
    errs, _ = docker_client.errors()
    container = engine.find()
    if container is not None:
        if not engine.owned(container):
            raise UserError(f"Container {engine.container_name} was not created by this installer: it is left as it is.")
        port = engine.endpoint().port
        container.stop(timeout=60)
        container.remove()
        ports.release(engine.paths.state_dir, port)
        engine.container = None
    for kind, name in (("networks", engine.network_name), ("volumes", engine.volume_name)):
        try:
            thing = getattr(engine.docker(), kind).get(name)
            if (thing.attrs.get("Labels") or {}).get(LABEL) == engine.spec.client_id:
                thing.remove()
        except errs.APIError:  # not there, or a network other containers still use: it stays
            pass
    engine.password_file.unlink(missing_ok=True)
