"""Docker engine: the client's `postgres-<id>` container (issue 3)."""

from __future__ import annotations

from ..errors import UserError
from .base import Engine


class DockerEngine(Engine):
    name = "docker"

    def __init__(self, spec):
        raise UserError("ENGINE=docker is not available in this version: use ENGINE=embedded or ENGINE=external.")
