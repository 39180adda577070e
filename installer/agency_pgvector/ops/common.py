"""Load an installed client: its validated spec, recorded engine, .env and tenant names."""

from __future__ import annotations

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


def load(client_id: str, **flags) -> Client:
    spec = specs.build(client_id, require_contact=False, **flags)
    env = envfile.read(spec.paths.env_file)
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
        same = (env.get("PGVECTOR_ENGINE"), env.get("PGVECTOR_SERVER")) == (client.env.get("PGVECTOR_ENGINE"), "shared")
        if name != client.id and same:
            out.append(Tenant.for_client(name, True))
    return out
