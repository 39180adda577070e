"""make pgvector-uninstall: back up, end sessions, drop the tenant (or only its access), archive its files.

Every step tolerates having run before, so an interrupted uninstall is finished by running it again.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field

from psycopg2 import sql

from .. import pooler, registry, spec as specs
from ..engines import require
from ..provision import lock, terminate
from ..report import CHANGE, OK, Report
from ..runner import operation
from ..system import ensure_dir, require_trusted
from .backup import backup
from .common import Client


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
    if remove_server and not keep_data:
        require(client.engine, "remove")
    owned = client.engine.capabilities.remove
    remove_server = remove_server and not keep_data
    with operation(client.spec, "uninstall"):
        report = _uninstall(client, keep_data=keep_data, no_backup=no_backup, remove_server=remove_server)
    return Uninstalled(client.id, report, keep_data, remove_server, owned and not remove_server)


def _uninstall(client: Client, *, keep_data: bool, no_backup: bool, remove_server: bool) -> Report:
    report = Report()
    tenant = client.tenant
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
            report.add("backup", CHANGE, str(backup(client).file))
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
    pooler.converge(client.engine, client.id, None, report)  # the client's pool goes (the pooler too, if it was the last)
    if remove_server:
        client.engine.remove_server()
        report.add("server", CHANGE, "removed with its data")
    registry.client_removed(client.spec.root, client.id, report)  # AgencyStack's registry; before .env goes (registry.py)
    _archive(client, report)
    return report


def _database_exists(admin, name: str) -> bool:
    with admin.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (name,))
        return cur.fetchone() is not None


def _archive(client: Client, report: Report) -> None:
    """Keep backups (and the README) under <root>/archive/; the .env and its password go."""
    paths = client.spec.paths
    component = paths.component_dir
    if not component.exists():
        return
    # .env goes last: it marks the client as installed, so a run killed anywhere in here is finished by the
    # next `uninstall` instead of leaving files (or the superuser URL) that no command would ever remove.
    require_trusted(component)  # renames below are safe only where nobody else can swap a directory
    target = paths.root / "archive" / f"{client.id}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    ensure_dir(target.parent, 0o700)
    ensure_dir(target, 0o700)
    for item in component.iterdir():
        if item.name not in (".env", ".password.pending") and not item.name.endswith(".tmp"):
            shutil.move(str(item), str(target / item.name))
    client.engine.forget()  # what the engine keeps outside the client's directory (the external engine's URL)
    (component / ".env").unlink(missing_ok=True)
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
