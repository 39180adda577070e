"""The Docker daemon, through the docker SDK: the connection, its error types, images."""

from __future__ import annotations

import os

from ...errors import UserError
from ...text import first_line


def errors():
    """(docker.errors, the exceptions that mean "the daemon or the API failed"), imported on first use."""
    import docker.errors
    import requests.exceptions

    return docker.errors, (docker.errors.DockerException, requests.exceptions.RequestException)


def connect():
    import docker

    _, failures = errors()
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except failures as exc:
        raise UserError(f"The Docker engine at {host} is not reachable ({first_line(exc)[:120]}): start it "
                        "(systemctl start docker, or dockerd) and re-run, or use ENGINE=embedded.") from None


def local_image(client, name: str):
    """The image when this host has it, else None."""
    errs, _ = errors()
    try:
        return client.images.get(name)
    except errs.ImageNotFound:
        return None
    except errs.APIError as exc:
        raise UserError(f"PGVECTOR_IMAGE {name[:80]!r} is not a usable image reference "
                        f"({first_line(exc.explanation)}): use e.g. PGVECTOR_IMAGE=pgvector/pgvector:pg17.") from None


def _unavailable(name: str, exc) -> UserError:
    return UserError(f"Image {name} is not on this host and could not be pulled "
                     f"({first_line(getattr(exc, 'explanation', None) or exc)[:160]}): load it (docker load "
                     "-i <file>) or set PGVECTOR_IMAGE to an image this host has (docker image ls).")


def check_image(client, name: str) -> str:
    """Preflight: the image is here, or its registry has it (a manifest lookup, nothing pulled). Says which."""
    if local_image(client, name) is not None:
        return "on this host"
    _, failures = errors()
    try:
        client.images.get_registry_data(name)
    except failures as exc:
        raise _unavailable(name, exc) from None
    return "to be pulled"


def image(client, name: str):
    """The image from this host, else pulled; one clear sentence when neither works."""
    found = local_image(client, name)
    if found is not None:
        return found
    _, failures = errors()
    try:
        return client.images.pull(name)
    except failures as exc:
        raise _unavailable(name, exc) from None
