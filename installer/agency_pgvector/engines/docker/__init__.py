"""The docker engine, by concern: client (the daemon, images), container (create, start, remove), admin (SQL inside
the container, the installer's login), swap (FORCE onto a pgvector image), engine (observe -> plan_server)."""

from .admin import ADMIN_LABEL, ADOPTED_ADMIN
from .container import LABEL
from .engine import DEFAULT_IMAGE, DockerEngine

__all__ = ["ADMIN_LABEL", "ADOPTED_ADMIN", "DEFAULT_IMAGE", "LABEL", "DockerEngine"]
