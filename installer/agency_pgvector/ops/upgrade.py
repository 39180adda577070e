"""make pgvector-upgrade: ALTER EXTENSION vector UPDATE in each client's database (after new binaries).

It runs as superuser (pgvector is not trusted) over a pinned operator session; the update scripts run with the
extension's schema on their path, which only superusers can write (provision.EXTENSION_SCHEMA). The new version
goes into .env under the client's lock, so a rotate running at the same time cannot lose its new password."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .. import log
from ..provision import EXTENSION_SCHEMA
from ..runner import operation
from .common import Client, first_line


@dataclass
class Upgraded:
    """One client database; to_json() is the documented shape (docs/json.md)."""

    client_id: str
    database: str
    old: str | None = None  # the version before (None: not installed or not reached)
    new: str | None = None  # the version after (None: nothing was updated)
    error: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Run:
    databases: list[Upgraded]

    @property
    def errors(self) -> list[Upgraded]:
        return [result for result in self.databases if result.error]

    def to_json(self) -> dict:
        return {"ok": not self.errors, "databases": [result.to_json() for result in self.databases]}


def upgrade_all(clients: list[Client]) -> Run:
    """An error in one database does not stop the others."""
    return Run([upgrade(client) for client in clients])


def upgrade(client: Client) -> Upgraded:
    from ..install import update_env

    with operation(client.spec, "upgrade"):
        out = _update(client)
        if out.new:
            update_env(client.spec.paths, {"PGVECTOR_VERSION": out.new})  # re-reads .env under the lock
        log.event(f"upgrade of {out.database} failed: {out.error}" if out.error
                  else f"extension vector in {out.database}: {out.old} -> {out.new}")
    return out


def _update(client: Client) -> Upgraded:
    out = Upgraded(client.id, client.tenant.database)
    try:
        conn = client.engine.admin_connect(client.tenant.database)
    except Exception as exc:  # noqa: BLE001 - reported per database
        out.error = first_line(exc)
        return out
    try:
        with conn.cursor() as cur:
            query = ("SELECT e.extversion, n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n "
                     "ON n.oid = e.extnamespace WHERE e.extname = 'vector'")
            cur.execute(query)
            found = cur.fetchone()
            if not found:
                out.error = f"extension vector is not installed: re-run make pgvector CLIENT_ID={client.id}"
                return out
            out.old = found[0]
            if found[1] != EXTENSION_SCHEMA:  # the update script would run with the tenant's schema on its path
                out.error = (f"extension vector is still in schema {found[1]}: run make pgvector CLIENT_ID={client.id} "
                             f"first (it moves it to {EXTENSION_SCHEMA}, which only superusers can write)")
                return out
            cur.execute("ALTER EXTENSION vector UPDATE")
            cur.execute(query)
            out.new = cur.fetchone()[0]
    except Exception as exc:  # noqa: BLE001
        out.error = first_line(exc)
    finally:
        conn.close()
    return out
