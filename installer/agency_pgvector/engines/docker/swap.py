"""FORCE=true on a container without pgvector: recreate it on a pgvector image of the same PostgreSQL major, with
the same data volume and settings; the original comes back as it was if anything fails."""

from __future__ import annotations

from ...errors import UserError
from ...text import first_line
from . import client as docker_client
from .admin import ADMIN_LABEL, ADOPTED_ADMIN, server_info
from .container import LABEL, start

SUFFIX = "-pre-pgvector"  # the original's name while the new container is made


def swap(engine, container, version: str) -> None:
    major = version.split(".")[0]
    target = engine.image_name(major)
    if container.attrs["HostConfig"].get("AutoRemove"):
        raise UserError(f"Container {engine.container_name} runs with --rm, so stopping it would "
                        "delete it with its data: recreate it without --rm, then re-run.")
    image = docker_client.image(engine.docker(), target)
    image_major = _env(image.attrs["Config"]).get("PG_MAJOR")
    if image_major and image_major != major:
        raise UserError(f"Image {target} has PostgreSQL {image_major} but the data in {engine.container_name} is "
                        f"PostgreSQL {major}: set PGVECTOR_IMAGE to a pgvector image of PostgreSQL {major} "
                        f"(e.g. pgvector/pgvector:pg{major}).")
    errs, _ = docker_client.errors()
    settings = _recreate_settings(engine, container)
    container.stop(timeout=60)
    container.rename(engine.container_name + SUFFIX)
    try:
        new = _create_like(engine, target, settings)
        start(engine, new)
        if not server_info(engine, new)[1]:
            raise UserError(f"Image {target} has no pgvector either: set PGVECTOR_IMAGE "
                            f"to a pgvector image of PostgreSQL {major}.")
    except BaseException as exc:
        _restore(engine, container)
        if isinstance(exc, (UserError, errs.APIError)):
            reason = exc if isinstance(exc, UserError) else first_line(exc.explanation or exc)
            raise UserError(f"Recreating {engine.container_name} failed, so the original "
                            f"container is back as it was: {reason}") from None
        raise
    container.remove()  # its volumes stay (anonymous ones too): the new container uses them


def leftover(engine):
    """The original of a swap that a killed run left renamed, or None."""
    errs, _ = docker_client.errors()
    try:
        return engine.docker().containers.get(engine.container_name + SUFFIX)
    except errs.NotFound:
        return None


def _restore(engine, old) -> None:
    if engine.container is not None and engine.container.id != old.id:
        engine.container.remove(force=True)
    old.rename(engine.container_name)
    old.start()
    engine.container = old
    try:
        server_info(engine, old)  # hand it back running, not still starting
    except UserError:
        pass


def _env(config: dict) -> dict:
    return dict(item.partition("=")[::2] for item in config.get("Env") or [])


def _recreate_settings(engine, container) -> dict:
    """What the old container was given on top of its image (env, command, labels, mounts, ports, networks)."""
    config, host = container.attrs["Config"], dict(container.attrs["HostConfig"])
    base = container.image.attrs["Config"]

    def own(key):
        return config.get(key) if config.get(key) != base.get(key) else None

    labels = {k: v for k, v in (config.get("Labels") or {}).items() if (base.get("Labels") or {}).get(k) != v}
    labels.update({LABEL: engine.spec.client_id, ADMIN_LABEL: labels.get(ADMIN_LABEL, ADOPTED_ADMIN)})
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


def _create_like(engine, image_name: str, settings: dict):
    """Create the container from raw settings with the low-level API, on all the networks the old one had."""
    api = engine.docker().api
    settings = dict(settings)
    networks = settings.pop("networks")
    mode = settings["host_config"].get("NetworkMode") or "default"
    user_nets = {n: a for n, a in networks.items() if n not in ("bridge", "host", "none", "default")}
    first = {mode: api.create_endpoint_config(aliases=user_nets[mode] or None)} if mode in user_nets else None
    created = api.create_container(image_name, name=engine.container_name, detach=True,
                                   networking_config=api.create_networking_config(first) if first else None, **settings)
    new = engine.docker().containers.get(created["Id"])
    engine.container = new
    for name, aliases in user_nets.items():
        if name != mode:
            api.connect_container_to_network(new.id, name, aliases=aliases or None)
    return new
