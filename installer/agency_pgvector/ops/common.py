"""Load an installed client: its validated spec, recorded engine, .env and tenant names."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import engines, envfile, spec as specs
from ..engines.base import Engine
from ..errors import UserError
from ..provision import Tenant
from ..text import first_line  # noqa: F401 - the ops import it from here


@dataclass
class Client:
    spec: specs.Spec
    engine: Engine
    env: dict
    tenant: Tenant

    @property
    def id(self) -> str:
        return self.spec.client_id

    @property
    def password(self) -> str | None:
        return self.env.get("PGVECTOR_DB_PASS")


SUSPENDED = "suspended.json"  # <component_dir>/suspended.json: what outlives .env after KEEP_DATA=true (docs/runbook.md)
SECRET_KEYS = ("PGVECTOR_DB_PASS", "PGPASSWORD", "DATABASE_URL", "DATABASE_READ_URL", "DATABASE_POOL_URL", "DATABASE_REMOTE_URL")


def suspended_file(paths: specs.Paths) -> Path:
    return paths.component_dir / SUSPENDED


def write_suspended(paths: specs.Paths, env: dict) -> None:
    """The .env without its password: engine, server kind, endpoint, database, role, pool, domain, contact.
    Root's, 0600, written atomically (temp file + rename) like the .env."""
    kept = {k: v for k, v in env.items() if k not in SECRET_KEYS}
    envfile.write_atomic(suspended_file(paths), json.dumps(kept, indent=2, sort_keys=True) + "\n")


def read_suspended(paths: specs.Paths) -> dict:
    """The record of a suspended client ({} when there is none)."""
    record = envfile.read_json(suspended_file(paths), "restore it from the archive or remove it.")
    return {str(k): str(v) for k, v in record.items()}


def load(client_id: str, **flags) -> Client:
    spec = specs.build(client_id, require_contact=False, **flags)
    env = envfile.read(spec.paths.env_file)
    if not env.get("PGVECTOR_ENGINE") and suspended_file(spec.paths).exists():
        raise UserError(f"Client {client_id} is suspended (uninstalled with KEEP_DATA=true; its database is kept, "
                        f"nobody can log in): make pgvector CLIENT_ID={client_id} resumes it.")
    if not env.get("PGVECTOR_ENGINE"):
        raise UserError(
            f"Client {client_id} is not installed here ({spec.paths.env_file} is missing): "
            f"run make pgvector CLIENT_ID={client_id} DOMAIN=... ADMIN_EMAIL=... first."
        )
    engine = engines.get(spec, env["PGVECTOR_ENGINE"], env.get("PGVECTOR_SERVER"))
    return Client(spec, engine, env, Tenant.for_client(spec.client_id, engine.capabilities.shared))


def load_many(client_id: str, everyone: bool) -> list[Client]:
    """One client, or with ALL=true every installed one."""
    if not everyone:
        return [load(client_id)]
    names = installed_clients()
    if not names:
        raise UserError("No client is installed under AGENCY_STACK_ROOT: run make pgvector CLIENT_ID=... first.")
    return [load(name) for name in names]


def installed_clients(root: Path | None = None) -> list[str]:
    root = root or specs.root_from_env()
    clients = root / "clients"
    if not clients.is_dir():
        return []
    return sorted(d.name for d in clients.iterdir() if (d / "pgvector" / ".env").exists())


def suspended_clients(root: Path | None = None) -> list[str]:
    """Clients uninstalled with KEEP_DATA=true: a record and no .env (ALL=true skips them; make pgvector-list shows them)."""
    root = root or specs.root_from_env()
    clients = root / "clients"
    if not clients.is_dir():
        return []
    return sorted(d.name for d in clients.iterdir()
                  if (d / "pgvector" / SUSPENDED).exists() and not (d / "pgvector" / ".env").exists())


def tenant_connect(client: Client, dbname: str | None = None, password: str | None = None):
    """A session with the tenant's own credentials from .env (never the superuser): sessions.tenant."""
    from ..sessions import tenant

    return tenant(client.env, dbname, password)


def neighbours(client: Client) -> list[Tenant]:
    """The tenants of the other installed clients on the same server, where the installer owns a shared one."""
    if not (client.engine.capabilities.shared and client.engine.capabilities.owns_server):
        return []
    out = []
    for name in installed_clients(client.spec.root):
        try:
            env = envfile.read(specs.Paths(client.spec.root, name).env_file)
        except UserError:  # that client's own status says what is wrong with its tree
            continue
        same = (env.get("PGVECTOR_ENGINE"), env.get("PGVECTOR_SERVER")) == (client.env.get("PGVECTOR_ENGINE"),
                                                                            client.engine.recorded_server())
        if name != client.id and same:
            out.append(Tenant.for_client(name, True))
    return out
