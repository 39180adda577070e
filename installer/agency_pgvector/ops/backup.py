"""make pgvector-backup / pgvector-restore: per-client pg_dump -Fc, restored beside the live database
and swapped in only once the row counts match, so a bad archive never touches the existing tenant."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from psycopg2 import sql

from .. import envfile, log, scram, sessions
from ..engines import client_tools
from ..errors import InputError, UserError
from ..provision import EXTENSION_SCHEMA, State, apply, database_steps, terminate
from ..report import CHANGE
from ..runner import Step, operation
from .common import Client, first_line

# pg_restore --list lines the installer makes itself as superuser (extensions and their comments, schemas public and
# extensions), matched by their catalog (3079 pg_extension, 2615 pg_namespace) and fields, never by a substring a
# tenant's object name could carry
INSTALLERS = re.compile(r"\d+; (3079 \d+ EXTENSION - \S+|0 0 COMMENT - EXTENSION \S+|2615 \d+ SCHEMA - (public|extensions)) ")
VECTOR_ENTRY = re.compile(r"\d+; 3079 \d+ EXTENSION - vector ")


def tenant_entries(listing: str) -> list[str]:
    """The archive's entries but those the installer makes itself (pgvector, schemas public and extensions)."""
    return [line for line in listing.splitlines() if not INSTALLERS.match(line)]
STAGING, OLD = "agency_restore", "agency_old"  # database name prefixes with a '.': no client's names contain one


def _tool(name: str, args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})}
    return subprocess.run([str(client_tools() / name), *args], env=full, capture_output=True, text=True)


@contextlib.contextmanager
def reader(client: Client):
    """A login for reading ALL of the tenant's rows: a member of the tenant role with BYPASSRLS and nothing else
    (tables with FORCE ROW LEVEL SECURITY hide rows from their owner, and pg_dump refuses to dump them then).
    Made for this one run with a password nobody sees, dropped afterwards; a killed run's leftover is replaced.
    Yields the .env-style parameters to log in with."""
    name = f"{client.tenant.role}.reader"  # a '.': no client's role can have this name
    password = scram.generate()
    role, tenant = sql.Identifier(name), sql.Identifier(client.tenant.role)
    admin = client.engine.admin_connect()
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS CONNECTION "
                                "LIMIT 3 IN ROLE {} PASSWORD %s").format(role, tenant), (scram.hash_password(password),))
        try:
            yield {**client.env, "PGUSER": name, "PGPASSWORD": password}
        finally:
            with admin.cursor() as cur:
                terminate(cur, name)
                cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
    finally:
        admin.close()


def row_counts(conn) -> dict[str, int]:
    """Exact row counts of every ordinary table outside the catalogs (run over the tenant's or the reader's login)."""
    with conn.cursor() as cur:
        cur.execute("""SELECT n.nspname, c.relname
                       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                       WHERE c.relkind IN ('r', 'p')
                         AND n.nspname OPERATOR(pg_catalog.<>) ALL (ARRAY['pg_catalog', 'information_schema'])
                         AND n.nspname OPERATOR(pg_catalog.!~) '^pg_(temp|toast)' ORDER BY 1, 2""")
        tables = cur.fetchall()
        counts = {}
        for schema, table in tables:
            cur.execute(sql.SQL("SELECT pg_catalog.count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
            counts[f"{schema}.{table}"] = cur.fetchone()[0]
    return counts


@dataclass
class Backup:
    """to_json() is the documented shape (docs/json.md)."""

    client_id: str
    database: str
    file: Path
    size_bytes: int
    row_counts: dict[str, int]  # schema.table -> rows, as in the manifest
    pruned: list[Path] = field(default_factory=list)  # older dumps removed under BACKUP_KEEP

    @property
    def manifest(self) -> Path:
        return self.file.with_suffix(".json")

    def to_json(self) -> dict:
        return {"client_id": self.client_id, "database": self.database, "file": str(self.file),
                "manifest": str(self.manifest), "size_bytes": self.size_bytes, "row_counts": self.row_counts,
                "pruned": [str(p) for p in self.pruned]}


@dataclass
class Restored:
    """to_json() is the documented shape (docs/json.md)."""

    client_id: str
    database: str
    file: Path
    row_counts: dict[str, int]  # counted in the restored database
    verified: bool = True  # compared with the backup's manifest (False: no manifest beside the archive)

    def to_json(self) -> dict:
        return {"client_id": self.client_id, "database": self.database, "file": str(self.file),
                "row_counts": self.row_counts, "verified": self.verified}


KEEP_DEFAULT = 7  # BACKUP_KEEP: the newest dumps kept per client after a successful backup; 0 keeps every one


def keep_from_env() -> int:
    value = os.environ.get("BACKUP_KEEP", "").strip()
    if not value:
        return KEEP_DEFAULT
    if not value.isdigit() or len(value) > 6:
        raise InputError(f"BACKUP_KEEP must be a whole number of backups to keep (0 keeps every one), not {value!r}: "
                         f"e.g. BACKUP_KEEP={KEEP_DEFAULT}.")
    return int(value)


def backup(client: Client, keep: int = KEEP_DEFAULT) -> Backup:
    """pg_dump -Fc of the tenant's database plus its manifest, under the client's lock; then only the newest
    `keep` dumps (with their manifests) stay (0: all)."""
    import psycopg2

    with operation(client.spec, "backup"):
        try:
            done = _backup(client)
        except psycopg2.OperationalError as exc:  # the server is down or refuses the installer's own session
            raise UserError(f"The server of client {client.id} cannot be reached ({first_line(exc)}): no backup was "
                            f"taken; see make pgvector-status CLIENT_ID={client.id}.") from None
        log.event(f"backup written: {done.file}")
        done.pruned = prune(client, keep)
        for gone in done.pruned:
            log.event(f"old backup removed (BACKUP_KEEP={keep}): {gone}")
    return done


def dumps(client_id: str, folder: Path) -> list[Path]:
    """The dumps backup wrote for the client, oldest first (the name holds the UTC time); nothing else."""
    pattern = re.compile(rf"{re.escape(client_id)}-[0-9]{{8}}T[0-9]{{6}}Z\.dump")
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name) and p.is_file() and not p.is_symlink())


def prune(client: Client, keep: int) -> list[Path]:
    if keep <= 0:
        return []
    old = dumps(client.id, client.spec.paths.backups_dir)[:-keep]
    for path in old:
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)
    return old


def _snapshot_session(client: Client, login: dict):
    """A read-only REPEATABLE READ transaction of the reader whose snapshot pg_dump shares (--snapshot), so the
    manifest's row counts are those of the archive even while the app writes. A cluster's client is read from a
    standby where one answers (the leader keeps its cycles for writes); the reader role, made on the leader, may
    take a moment to reach it, and the leader serves when no standby does."""
    import psycopg2

    tries = [{**login, "PGTARGETSESSIONATTRS": "prefer-standby"}] * 20 if "," in login.get("PGHOST", "") else []
    for attempt in [*tries, login]:
        try:
            conn = sessions.tenant(attempt, client.tenant.database)
        except psycopg2.OperationalError:
            if attempt is login:
                raise
            time.sleep(0.25)
            continue
        conn.autocommit = False
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.host(pg_catalog.inet_server_addr()), "
                        "pg_catalog.inet_server_port()")
            standby, host, port = cur.fetchone()
        if "," in login.get("PGHOST", ""):  # pg_dump goes to the same member
            attempt = {**attempt, "PGHOST": host, "PGPORT": str(port), "PGTARGETSESSIONATTRS": "any"}
        return attempt, conn, f"{'a standby' if standby else 'the primary'} (port {port})"
    raise AssertionError("unreachable")


def _backup(client: Client) -> Backup:
    folder = client.spec.paths.backups_dir
    envfile.ensure_private_dir(folder)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = folder / f"{client.id}-{stamp}.dump"
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")  # never shared with an orphaned pg_dump
    with reader(client) as login:
        login, session, where = _snapshot_session(client, login)
        try:
            with session.cursor() as cur:
                cur.execute("SELECT pg_catalog.pg_export_snapshot()")
                (snapshot,) = cur.fetchone()
            counts = row_counts(session)  # in the snapshot pg_dump reads: the manifest matches the archive
            old = os.umask(0o077)
            try:
                result = _tool("pg_dump", ["--format=custom", "--no-owner", "--no-privileges", f"--snapshot={snapshot}",
                                           f"--file={partial}"], sessions.tool_env(sessions.tenant_params(login)))
            finally:
                os.umask(old)
        finally:
            session.close()
        log.event(f"backup read from {where}")
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise UserError(f"pg_dump of {client.tenant.database} failed: {_tail(result)}.")
    os.replace(partial, target)
    manifest = {"client_id": client.id, "database": client.tenant.database, "created": stamp, "row_counts": counts,
                "pgvector": client.env.get("PGVECTOR_VERSION"), "postgres": client.env.get("POSTGRES_VERSION")}
    envfile.write_atomic(target.with_suffix(".json"), json.dumps(manifest, indent=2) + "\n")
    return Backup(client.id, client.tenant.database, target, target.stat().st_size, counts)


def restore(client: Client, archive: Path) -> Restored:
    """Restore `archive` into the client's database, under the client's lock."""
    with operation(client.spec, "restore"):
        counts = _restore(client, archive)
        verified = archive.with_suffix(".json").exists()
        log.event(f"restored {archive} into {client.tenant.database}: {sum(counts.values())} rows in {len(counts)} "
                  f"tables{'' if verified else ' (no manifest: counts not compared)'}")
    return Restored(client.id, client.tenant.database, archive, counts, verified)


def _restore(client: Client, archive: Path) -> dict[str, int]:
    """Restore `archive` into the client's database; returns the verified row counts.

    The archive is restored by the tenant's own login into a staging database the installer made for this
    run (a name no client can have), checked, then swapped in: code in the archive runs with the tenant's
    rights only, and no database the installer did not create is ever dropped."""
    if not archive.is_file():
        raise UserError(f"No backup file at {archive}: list them with ls {client.spec.paths.backups_dir}.")
    listing = _tool("pg_restore", ["--list", str(archive)])
    if listing.returncode != 0:
        raise UserError(f"{archive} is not a readable pg_dump archive "
                        f"({_tail(listing)}): nothing was changed; pick another backup.")
    manifest_file = archive.with_suffix(".json")
    expected = json.loads(manifest_file.read_text())["row_counts"] if manifest_file.exists() else None
    entries = tenant_entries(listing.stdout)
    schema = _extension_schema(archive, listing.stdout)
    stamp = secrets.token_hex(4)
    staging, old = (f"{prefix}.{client.id}.{stamp}" for prefix in (STAGING, OLD))
    admin = client.engine.admin_connect()
    try:
        _recover(admin, client)
        _create_staging(admin, client, staging, schema)
        with tempfile.NamedTemporaryFile("w", suffix=".list", delete=False) as handle:
            handle.write("\n".join(entries) + "\n")
        try:
            result = _tool("pg_restore", ["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
                                          f"--use-list={handle.name}", f"--dbname={staging}", str(archive)],
                           sessions.tool_env(sessions.tenant_params(client.env, staging)))
        finally:
            os.unlink(handle.name)
        if result.returncode != 0:
            raise UserError(f"Restoring {archive.name} failed ({_tail(result)}): the "
                            f"live database {client.tenant.database} was not touched.")
        counts = _verify(client, staging, expected)
        if schema != EXTENSION_SCHEMA:  # a backup from before pgvector moved: catalogs only, no script runs
            conn = client.engine.admin_connect(staging)
            try:
                conn.cursor().execute(sql.SQL("ALTER EXTENSION vector SET SCHEMA {}").format(sql.Identifier(EXTENSION_SCHEMA)))
            finally:
                conn.close()
        _swap(admin, client, staging, old)
    except BaseException:
        _drop(admin, staging)
        raise
    finally:
        admin.close()
    return counts


def _extension_schema(archive: Path, listing: str) -> str:
    """The schema the archive's tables expect `vector` in (backups of the previous release: public)."""
    entry = [line for line in listing.splitlines() if VECTOR_ENTRY.match(line)]
    if not entry:
        return EXTENSION_SCHEMA
    with tempfile.NamedTemporaryFile("w", suffix=".list") as handle:
        handle.write(entry[0] + "\n")
        handle.flush()
        text = _tool("pg_restore", [f"--use-list={handle.name}", "--file=-", str(archive)]).stdout
    found = re.search(r"^CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA ([a-z_][a-z0-9_]*);$", text, re.M)
    return found.group(1) if found else EXTENSION_SCHEMA


def _recover(admin, client: Client) -> None:
    """What a killed restore of this client left: its staging copies go; a live database it had renamed away
    (killed between the two renames) is put back."""
    with admin.cursor() as cur:
        cur.execute("SELECT datname FROM pg_catalog.pg_database WHERE "
                    "pg_catalog.starts_with(datname, %s) OR pg_catalog.starts_with(datname, %s)",
                    (f"{STAGING}.{client.id}.", f"{OLD}.{client.id}."))
        leftovers = [name for (name,) in cur.fetchall()
                     if re.fullmatch(rf"({STAGING}|{OLD})\.{re.escape(client.id)}\.[0-9a-f]{{8}}", name)]
        cur.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (client.tenant.database,))
        live = cur.fetchone() is not None
    for name in leftovers:
        if name.startswith(OLD) and not live:
            with admin.cursor() as cur:
                cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(name), sql.Identifier(client.tenant.database)))
                cur.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(
                    sql.Identifier(client.tenant.database)))
            live = True
        else:
            _drop(admin, name)


def _create_staging(admin, client: Client, staging: str, schema: str) -> None:
    """Owned by the superuser while pgvector goes in (the tenant cannot connect yet), then handed to the tenant."""
    db, role = sql.Identifier(staging), sql.Identifier(client.tenant.role)
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(db))
        cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        cur.execute("SELECT pg_catalog.current_setting('server_version'), "
                    "(SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = 'vector')")
        version, available = cur.fetchone()
    steps = database_steps(State(None, {}, {}, available=available, version=version), client.tenant, staging, new=True)
    if schema != EXTENSION_SCHEMA:
        steps.append(Step("extension vector", CHANGE, f"in schema {schema} as the archive expects", [
            (sql.SQL("ALTER EXTENSION vector SET SCHEMA {}").format(sql.Identifier(schema)), None)], database=staging))
    apply(steps, client.engine.admin_connect, admin)
    with admin.cursor() as cur:
        cur.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, role))
        cur.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(db, role))


def _counts(login: dict, dbname: str) -> dict[str, int]:
    import psycopg2

    try:
        conn = sessions.tenant(login, dbname)
        try:
            return row_counts(conn)
        finally:
            conn.close()
    except psycopg2.Error as exc:
        raise UserError(f"Database {dbname} could not be read with the tenant's rights ({first_line(exc)}): "
                        "see make pgvector-status; nothing was written.") from None


def _verify(client: Client, staging: str, expected: dict | None) -> dict[str, int]:
    with reader(client) as login:
        counts = _counts(login, staging)
    if expected is not None and counts != expected:
        wrong = sorted(set(counts.items()) ^ set(expected.items()))[:3]
        raise UserError("The restored row counts differ from the backup's "
                        f"manifest ({wrong}): the live database was not touched.")
    return counts


def _swap(admin, client: Client, staging: str, old: str) -> None:
    """Replace the live database by the restored one: end its sessions, rename, drop the old one."""
    live = client.tenant.database
    with admin.cursor() as cur:
        cur.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(live)))
        cur.execute("SELECT pg_catalog.count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_catalog.pg_backend_pid()", (live,))
        cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(live), sql.Identifier(old)))
        try:
            cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(staging), sql.Identifier(live)))
        except Exception:
            cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(live)))
            cur.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(live)))
            raise
    _drop(admin, old)


def _drop(admin, name: str) -> None:
    """Drop a database this run made (or a killed run of the same client made), whatever its owner set on it."""
    with admin.cursor() as cur:
        cur.execute("SELECT datistemplate FROM pg_catalog.pg_database WHERE datname = %s", (name,))
        found = cur.fetchone()
        if found and found[0]:
            cur.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(sql.Identifier(name)))
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _tail(result: subprocess.CompletedProcess) -> str:
    """The tool's first error line (the cause) and its last line."""
    lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR:" in line or "error:" in line][:1]
    return " / ".join(dict.fromkeys(errors + lines[-1:])) if lines else f"exit {result.returncode}"
