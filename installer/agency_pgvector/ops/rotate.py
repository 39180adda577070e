"""make pgvector-rotate: a new password, role and .env together, old sessions ended, the new login checked.

It is install with FORCE=true on the spec the client was installed with (contact details from .env, remote access
kept), inside rotate's own operation: the client's lock is re-entrant, so install runs under the same lock."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..runner import operation
from .common import Client


@dataclass
class Rotated:
    """to_json() is the documented shape (docs/json.md)."""

    client_id: str
    role: str
    env_file: Path

    def to_json(self) -> dict:
        return {"client_id": self.client_id, "rotated": True, "env_file": str(self.env_file)}


def rotate(client: Client) -> Rotated:
    from ..install import install, installed_spec

    with operation(client.spec, "rotate"):
        install(installed_spec(client.id, force=True))
    return Rotated(client.id, client.tenant.role, client.spec.paths.env_file)
