"""make pgvector-uninstall: back up, end sessions, drop the tenant (or only its access), archive its files.

Every step tolerates having run before, so an interrupted uninstall is finished by running it again.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field

from psycopg2 import sql

from .. import pooler, ports, registry, spec as specs
from ..engines import require
from ..errors import UserError
from ..provision import lock, terminate
from ..report import CHANGE, OK, Report
from ..runner import operation
from ..system import ensure_dir, require_trusted
from .backup import backup
from .common import SUSPENDED, Client, suspended_file, write_suspended


@dataclass
class Uninstalled:
    """to_json() is the documented shape (docs/json.md)."""

    client_id: str
    report: Report = field(default_factory=Report)
    keep_data: bool = False
    server_removed: bool = False
    server_kept: bool = False  # a server the installer created for this client is still there
    interrupted: bool = False  # only the leftovers of an interrupted uninstall were removed

    def to_json(self) -> dict:
        return {"client_id": self.client_id, "interrupted": self.interrupted, "keep_data": self.keep_data,
                "server_removed": self.server_removed, "server_kept": self.server_kept,
                "items": [{"item": row.item, "status": self.report.status(row), "detail": row.detail}
                          for row in self.report.rows]}


def uninstall(client: Client, *, keep_data: bool, no_backup: bool, remove_server: bool) -> Uninstalled:
    """Under the client's lock; REMOVE_SERVER=true only where the engine can remove the server (refused before
    anything is touched, like every unsupported capability) and without KEEP_DATA."""
    if remove_server and client.engine.capabilities.shared:  # before anything is touched: the tenant stays as it is
        raise UserError(f"REMOVE_SERVER=true does not apply to client {client.id}: it lives on the shared server, which "
                        "other clients may use. Uninstall without REMOVE_SERVER; once no client is left on it (make "
                        "pgvector-list), make pgvector-remove-shared-server removes it.")
    if remove_server and not keep_data:
        require(client.engine, "remove")
    from .move import read_journal, unfinished

    if (why := unfinished(client.spec)) is not None:
        raise UserError(why)
    if read_journal(client.spec):  # a switched move's old copy: only move-finish knows where it is
        raise UserError(f"Client {client.id} keeps an old copy from a move: make pgvector-move-finish CLIENT_ID={client.id} "
                        "YES=true removes it; then uninstall.")
    owned = client.engine.capabilities.remove
    remove_server = remove_server and not keep_data
    with operation(client.spec, "uninstall"):
        report = _uninstall(client, keep_data=keep_data, no_backup=no_backup, remove_server=remove_server)
    return Uninstalled(client.id, report, keep_data, remove_server, owned and not remove_server)


def _uninstall(client: Client, *, keep_data: bool, no_backup: bool, remove_server: bool) -> Report:
    report = Report()
    tenant = client.tenant
    archive = _archive_dir(client)
    role, db = sql.Identifier(tenant.role), sql.Identifier(tenant.database)
    admin = client.engine.admin_connect()
    try:
        # The server-wide advisory lock install takes too: a killed run's DROP may still be running on the
        # server, and its session holds the lock until that statement ends, so we look only afterwards.
        lock(admin)
        exists = _database_exists(admin, tenant.database)
        with admin.cursor() as cur:
            # Lock the tenant out first (no writes after the final backup), then undo what the owner may have set
            # on its database (a template cannot be dropped; a closed or zero-limit database stops the backup).
            cur.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (tenant.role,))
            role_exists = cur.fetchone() is not None
            if role_exists:
                cur.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(role))
                terminate(cur, tenant.role)
            if exists:
                cur.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false "
                                    "ALLOW_CONNECTIONS true CONNECTION LIMIT -1").format(db))
        if exists and role_exists and not no_backup:
            taken = backup(client).file
            # named where _archive moves it, so the report's path is the one that exists afterwards
            report.add("backup", CHANGE, str(archive / taken.relative_to(client.spec.paths.component_dir)))
        with admin.cursor() as cur:
            if keep_data:
                if role_exists and exists:
                    cur.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM {}").format(db, role))
                terminate(cur, tenant.role)
                report.add(f"role {tenant.role}", CHANGE, "NOLOGIN, CONNECT revoked; database and data kept")
            else:
                terminate(cur, tenant.role)
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(db))
                report.add(f"database {tenant.database}", CHANGE if exists else OK, "dropped" if exists else "already gone")
                cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(f"{tenant.role}.reader")))
                cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
                report.add(f"role {tenant.role}", CHANGE, "dropped")
    finally:
        admin.close()
    if client.engine.capabilities.pool:
        pooler.converge(client.engine, client.id, None, report)  # the client's pool goes (the pooler too, if it was the last)
    if remove_server:
        client.engine.remove_server()
        report.add("server", CHANGE, "removed with its data")
    registry.client_removed(client.spec.root, client.id, report)  # AgencyStack's registry; before .env goes (registry.py)
    if keep_data:  # before .env goes: what a resume needs, without the password
        write_suspended(client.spec.paths, client.env)
        report.add("record", CHANGE, f"{suspended_file(client.spec.paths)}: make pgvector CLIENT_ID={client.id} resumes")
    _archive(client, report, archive, keep_data)
    return report


def _archive_dir(client: Client):
    return client.spec.paths.root / "archive" / f"{client.id}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


def _database_exists(admin, name: str) -> bool:
    with admin.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (name,))
        return cur.fetchone() is not None


def _archive(client: Client, report: Report, target, keep_data: bool) -> None:
    """Keep backups (and the README) under <root>/archive/; the .env and its password go. KEEP_DATA keeps the
    component directory with its suspended.json (and the engine's record of its server) for the resume."""
    paths = client.spec.paths
    component = paths.component_dir
    if not component.exists():
        return
    # .env goes last: it marks the client as installed, so a run killed anywhere in here is finished by the
    # next `uninstall` instead of leaving files (or the superuser URL) that no command would ever remove.
    require_trusted(component)  # renames below are safe only where nobody else can swap a directory
    ensure_dir(target.parent, 0o700)
    ensure_dir(target, 0o700)
    for item in component.iterdir():
        if item.name not in (".env", ".password.pending", SUSPENDED) and not item.name.endswith(".tmp"):
            shutil.move(str(item), str(target / item.name))
    if not keep_data:
        client.engine.forget()  # what the engine keeps outside the client's directory (the external engine's URL)
    (component / ".env").unlink(missing_ok=True)
    if keep_data:
        for leftover in component.iterdir():
            if leftover.name != SUSPENDED:
                leftover.unlink()  # the pending password and temp files of killed writes
        report.add("files", CHANGE, f".env removed; backups and samples archived in {target}")
        return
    shutil.rmtree(component)  # what is left: the pending password and temp files of killed writes
    report.add("files", CHANGE, f".env removed; backups and samples archived in {target}")
    if paths.client_dir.exists() and not any(paths.client_dir.iterdir()):
        paths.client_dir.rmdir()


def finish_interrupted(client_id: str) -> Uninstalled | None:
    """A run killed after removing .env (the last thing that names the client) leaves only the pending
    password or temp files in the client's directory: remove them (under the client's lock). None when that
    was not the case."""
    spec = specs.build(client_id, require_contact=False)
    if not _interrupted(spec.paths):
        return None
    report = Report()
    with operation(spec, "uninstall"):
        if not _interrupted(spec.paths):  # another run finished it meanwhile
            return None
        shutil.rmtree(spec.paths.component_dir)
        if spec.paths.client_dir.exists() and not any(spec.paths.client_dir.iterdir()):
            spec.paths.client_dir.rmdir()
        report.add("files", CHANGE, f"the leftovers of an interrupted uninstall in {spec.paths.component_dir} removed")
    return Uninstalled(spec.client_id, report, interrupted=True)


def _interrupted(paths: specs.Paths) -> bool:
    component = paths.component_dir
    require_trusted(component)
    if not component.is_dir() or (component / ".env").exists():
        return False
    leftovers = [p.name for p in component.iterdir()]
    return all(name == ".password.pending" or name.endswith(".tmp") for name in leftovers)  # else: not ours


def remove_half_installed(client_id: str) -> Uninstalled | None:
    """A run that failed before writing .env (make pgvector-list: half-installed): stop and remove the embedded
    server it created, its port registrations and pool, and archive its directory. None when that is not the case."""
    from ..engines.embedded import EmbeddedEngine
    from .listing import listing

    spec = specs.build(client_id, require_contact=False)
    rows = [row for row in listing(spec.root) if row.client_id == client_id and row.state == "half-installed"]
    if not rows:
        return None
    report = Report()
    paths = spec.paths
    with operation(spec, "uninstall"):
        require_trusted(paths.component_dir)
        engine = EmbeddedEngine(spec)
        pooler.converge(engine, client_id, None, report)  # a pool registered before the failure, if any
        if paths.server_dir.exists() or ports.owned(paths.state_dir, client_id):
            engine.remove_server()
            report.add("server", CHANGE, f"the embedded server a failed run left in {paths.server_dir} removed")
        for owner in (client_id, f"{client_id}/pool"):
            port = ports.owned(paths.state_dir, owner)
            if port:
                ports.release(paths.state_dir, port)
                report.add(f"port {port}", CHANGE, f"registration of {owner} released")
        if paths.component_dir.exists():
            target = _archive_dir_for(spec)
            ensure_dir(target.parent, 0o700)
            shutil.move(str(paths.component_dir), str(target))
            report.add("files", CHANGE, f"{paths.component_dir} archived in {target}")
        if paths.client_dir.exists() and not any(paths.client_dir.iterdir()):
            paths.client_dir.rmdir()
    return Uninstalled(client_id, report, interrupted=True)


def _archive_dir_for(spec: specs.Spec):
    return spec.paths.root / "archive" / f"{spec.client_id}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


def remove_shared_server() -> Report:
    """make pgvector-remove-shared-server: the shared embedded server with its data, only once no client (installed,
    suspended or half-installed) is on it, and no database but the built-in ones is left in it."""
    from ..engines.embedded import SharedEmbeddedEngine
    from .listing import listing

    spec = specs.build("default", require_contact=False)
    engine = SharedEmbeddedEngine(spec)
    report = Report()
    with engine.server_lock():
        if not engine.exists():
            raise UserError(f"There is no shared embedded server under {spec.root}: nothing to remove.")
        tenants = [row.client_id for row in listing(spec.root) if row.server == "shared"]
        if tenants:
            raise UserError(f"The shared server still holds {', '.join(tenants)}: uninstall them first "
                            "(make pgvector-uninstall CLIENT_ID=...; a suspended one is resumed first). Nothing was removed.")
        try:
            admin = engine.admin_connect()
        except Exception:  # noqa: BLE001 - a stopped server: the files above are what we know
            admin = None
        if admin is not None:
            try:
                with admin.cursor() as cur:
                    cur.execute("SELECT datname FROM pg_catalog.pg_database "
                                "WHERE datname NOT IN ('postgres', 'template0', 'template1') ORDER BY 1")
                    left = [name for (name,) in cur.fetchall()]
            finally:
                admin.close()
            if left:
                raise UserError(f"The shared server still has the database(s) {', '.join(left)} that no client "
                                "records: back them up and drop them first. Nothing was removed.")
        where = engine.where()
        engine.remove_server()
    report.add("server", CHANGE, f"shared embedded server ({where}) removed with its data")
    return report
