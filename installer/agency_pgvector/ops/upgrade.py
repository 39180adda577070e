"""make pgvector-upgrade: ALTER EXTENSION vector UPDATE in each client's database (after new binaries)."""

from __future__ import annotations

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
            cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            found = cur.fetchone()
            if not found:
                out["error"] = "extension vector is not installed: re-run make pgvector"
                return out
            out["old"] = found[0]
            cur.execute("ALTER EXTENSION vector UPDATE")
            cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            out["new"] = cur.fetchone()[0]
    except Exception as exc:  # noqa: BLE001
        out["error"] = first_line(exc)
    finally:
        conn.close()
    return out
