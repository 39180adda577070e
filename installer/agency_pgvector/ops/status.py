"""make pgvector-status: is this client healthy? Read-only; one connection per tenant database."""

from __future__ import annotations

import stat

from .. import scram
from ..errors import UserError
from ..provision import plan, read_state
from ..report import OK
from ..tuning import settings as tuning_settings
from .common import Client, first_line

VECTOR_COLUMNS = """
SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
       coalesce((SELECT string_agg(i.relname || ':' || am.amname, ',' ORDER BY i.relname)
                 FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_am am ON am.oid = i.relam
                 WHERE x.indrelid = c.oid AND a.attnum = ANY(x.indkey)), '')
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
WHERE t.typname IN ('vector', 'halfvec', 'sparsevec') AND NOT a.attisdropped AND a.attnum > 0
  AND c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1, 2, 3 LIMIT 100
"""


def check(client: Client) -> dict:
    """Everything status reports for one client, as plain data (the JSON shape is stable)."""
    env_file = client.spec.paths.env_file
    mode = stat.S_IMODE(env_file.stat().st_mode) if env_file.exists() else None
    out = {
        "client_id": client.id,
        "engine": client.engine.name,
        "server": {"where": "", "reachable": False, "postgres_version": None, "host": client.env.get("PGHOST"), "port": _int(client.env.get("PGPORT"))},
        "pgvector": {"installed": None, "available": None, "update_available": False},
        "database": {"name": client.tenant.database, "size_bytes": None},
        "role": {"name": client.tenant.role, "connections": None, "connection_limit": None},
        "env_file": {"path": str(env_file), "present": mode is not None, "mode": f"{mode:04o}" if mode is not None else None, "password_valid": None},
        "vector_columns": [],
        "settings": {},
        "drift": [],
        "problems": [],
    }
    problems = out["problems"]
    if mode is not None and mode != 0o600:
        problems.append(f".env is mode {mode:04o}, not 0600: run chmod 600 {env_file}")
    try:
        out["server"]["where"] = client.engine.where()
        conn = _connect(client)
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the finding itself
        problems.append(f"server not reachable ({first_line(exc)}): see make pgvector-logs CLIENT_ID={client.id}, then make pgvector-restart CLIENT_ID={client.id}")
        return _finish(out)
    try:
        _inspect(client, conn, out)
    finally:
        conn.close()
    return _finish(out)


def _inspect(client: Client, conn, out: dict) -> None:
    tenant, problems = client.tenant, out["problems"]
    out["server"]["reachable"] = True
    state = read_state(conn, tenant, client.engine.admin_connect)
    out["server"]["postgres_version"] = state.version.split()[0]
    out["pgvector"].update(installed=state.extension, available=state.available,
                           update_available=bool(state.extension and state.available and state.extension != state.available))
    if state.role is None:
        problems.append(f"role {tenant.role} is missing: re-run make pgvector CLIENT_ID={client.id}")
    else:
        out["env_file"]["password_valid"] = bool(client.password and scram.verify(client.password, state.role["rolpassword"]))
        if not out["env_file"]["password_valid"]:
            problems.append(f"the .env password does not match role {tenant.role}: make pgvector-rotate CLIENT_ID={client.id}")
    try:
        steps, _ = plan(state, tenant, client.password, False, str(client.spec.paths.env_file))
        out["drift"] = [f"{s.item}: {s.detail}" for s in steps if s.action != OK]
    except UserError:
        pass  # the password finding above already says it
    if out["drift"]:
        problems.append(f"drift from what was provisioned ({len(out['drift'])} items): re-run make pgvector CLIENT_ID={client.id}")
    with conn.cursor() as cur:
        cur.execute("SELECT pg_database_size(current_database()), (SELECT count(*) FROM pg_stat_activity WHERE usename = %s), "
                    "(SELECT rolconnlimit FROM pg_roles WHERE rolname = %s)", (tenant.role, tenant.role))
        size, used, limit = cur.fetchone()
        out["database"]["size_bytes"] = size
        out["role"].update(connections=used, connection_limit=limit)
        if limit and limit > 0 and used >= limit:
            problems.append(f"{used} of {limit} connections in use: the app may be leaking connections")
        cur.execute("SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s) ORDER BY name", (list(tuning_settings()),))
        out["settings"] = dict(cur.fetchall())
        if state.extension:
            cur.execute(VECTOR_COLUMNS)
            out["vector_columns"] = [
                {"table": f"{schema}.{table}", "column": column, "type": kind,
                 "indexes": [dict(zip(("name", "method"), item.split(":"))) for item in indexes.split(",") if item]}
                for schema, table, column, kind, indexes in cur.fetchall()
            ]
        else:
            problems.append(f"extension vector is missing in {tenant.database}: re-run make pgvector CLIENT_ID={client.id}")


def _connect(client: Client):
    """The tenant's database if it exists (catalogs of roles and databases are shared), else postgres."""
    import psycopg2

    try:
        return client.engine.admin_connect(client.tenant.database)
    except psycopg2.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise
        return client.engine.admin_connect("postgres")


def _finish(out: dict) -> dict:
    out["healthy"] = not out["problems"]
    return out


def _int(value):
    return int(value) if value and str(value).isdigit() else None
