"""make pgvector-upgrade: ALTER EXTENSION vector UPDATE in each client's database (after new binaries).

It runs as superuser (pgvector is not trusted) over a pinned operator session; the update scripts run with the
extension's schema on their path, which only superusers can write (provision.EXTENSION_SCHEMA)."""

from __future__ import annotations

from ..provision import EXTENSION_SCHEMA
from .common import Client, first_line


def upgrade(client: Client) -> dict:
    """Returns {client_id, database, old, new, error}; an error in one database does not stop the others."""
    out = {"client_id": client.id, "database": client.tenant.database, "old": None, "new": None, "error": None}
    try:
        conn = client.engine.admin_connect(client.tenant.database)
    except Exception as exc:  # noqa: BLE001 - reported per database
        out["error"] = first_line(exc)
        return out
    try:
        with conn.cursor() as cur:
            query = ("SELECT e.extversion, n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n "
                     "ON n.oid = e.extnamespace WHERE e.extname = 'vector'")
            cur.execute(query)
            found = cur.fetchone()
            if not found:
                out["error"] = f"extension vector is not installed: re-run make pgvector CLIENT_ID={client.id}"
                return out
            out["old"] = found[0]
            if found[1] != EXTENSION_SCHEMA:  # the update script would run with the tenant's schema on its path
                out["error"] = (f"extension vector is still in schema {found[1]}: run make pgvector CLIENT_ID={client.id} "
                                f"first (it moves it to {EXTENSION_SCHEMA}, which only superusers can write)")
                return out
            cur.execute("ALTER EXTENSION vector UPDATE")
            cur.execute(query)
            out["new"] = cur.fetchone()[0]
    except Exception as exc:  # noqa: BLE001
        out["error"] = first_line(exc)
    finally:
        conn.close()
    return out
