"""Engines: where a client's server comes from (base.py is the contract). Pick the engine for a client: the
recorded one on re-runs, else what the host offers."""

from __future__ import annotations

import os
import socket

from ..errors import UserError
from ..spec import Spec
from .base import Engine, require

__all__ = ["Engine", "choose", "client_tools", "docker_answers", "get", "require"]


def docker_answers() -> bool:
    """A Docker engine is there when its API socket answers a ping (no SDK import needed)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(host[len("unix://"):])
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(64)
    except OSError:
        return False


def choose(spec: Spec, recorded: str | None = None) -> str:
    if spec.engine != "auto":
        return spec.engine
    if recorded:
        return recorded
    if spec.admin_url:
        return "external"
    if spec.cluster:
        return "patroni"
    if spec.server:  # SERVER=... only means something for the embedded engine
        return "embedded"
    return "docker" if docker_answers() else "embedded"


def get(spec: Spec, recorded: str | None = None, recorded_server: str | None = None) -> Engine:
    name = choose(spec, recorded)
    if recorded and name != recorded:
        raise UserError(
            f"Client {spec.client_id} was installed with ENGINE={recorded}; it cannot switch to ENGINE={name} in place: "
            f"back it up and uninstall it first (make pgvector-backup, make pgvector-uninstall), or drop ENGINE."
        )
    if spec.server and name not in ("embedded", "external"):  # external: a server the inventory names
        raise UserError(f"SERVER={spec.server} applies to the embedded engine only: drop SERVER, or use ENGINE=embedded.")
    if name == "embedded":
        from .embedded import EmbeddedEngine, SharedEmbeddedEngine

        server = spec.server or recorded_server or "dedicated"
        if recorded_server and server != recorded_server:
            raise UserError(f"Client {spec.client_id} lives on a {recorded_server} server; make pgvector does not "
                            f"move it: make pgvector-move CLIENT_ID={spec.client_id} TO={server} does, while it runs.")
        return SharedEmbeddedEngine(spec) if server == "shared" else EmbeddedEngine(spec)
    if name == "patroni":
        from .patroni import PatroniEngine

        name_ = spec.cluster or recorded_server
        if not name_:
            raise UserError("ENGINE=patroni needs the cluster: add CLUSTER=<name> (make pgvector-cluster CLUSTER=<name> "
                            "WITH_DEPS=true creates one).")
        if recorded_server and spec.cluster and spec.cluster != recorded_server:
            raise UserError(f"Client {spec.client_id} lives on cluster {recorded_server}; make pgvector does not move "
                            f"it: make pgvector-move CLIENT_ID={spec.client_id} TO={spec.cluster} does, while it runs.")
        return PatroniEngine(spec, name_)
    if name == "external":
        from .external import ExternalEngine

        named = spec.server or (recorded_server if recorded_server not in (None, "shared") else "")
        return ExternalEngine(spec, named or "")
    from .docker import DockerEngine

    return DockerEngine(spec)


def client_tools():
    """pg_dump, pg_restore, psql for any engine's server: the embedded runtime's PostgreSQL 18 tools."""
    from .embedded.runtime import tools_dir

    return tools_dir()
