"""make pgvector-upgrade: first each client's server moves to newer PostgreSQL binaries where its engine can
(a newer minor; with PG_MAJOR, a newer major after a backup of every database on it), then ALTER EXTENSION vector
UPDATE in each client's database.

It runs as superuser (pgvector is not trusted) over a pinned operator session; the update scripts run with the
extension's schema on their path, which only superusers can write (provision.EXTENSION_SCHEMA). The new version
goes into .env under the client's lock, so a rotate running at the same time cannot lose its new password."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from .. import log
from ..engines import require
from ..provision import EXTENSION_SCHEMA
from ..runner import operation
from .common import Client, first_line, load


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
class ServerMoved:
    """One server moved to other binaries; to_json() is the documented shape (docs/json.md)."""

    clients: list[str]  # every client on the server (all were backed up first for a major upgrade)
    kind: str  # minor or major
    old: str
    new: str
    resumed: bool  # a killed earlier run's upgrade was finished or rolled back first
    seconds: float  # from the start of the move until every tenant on the server could log in again
    backups: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


@dataclass
class Run:
    databases: list[Upgraded]
    servers: list[ServerMoved] = field(default_factory=list)

    @property
    def errors(self) -> list[Upgraded]:
        return [result for result in self.databases if result.error]

    def to_json(self) -> dict:
        return {"ok": not self.errors, "servers": [moved.to_json() for moved in self.servers],
                "databases": [result.to_json() for result in self.databases]}


def upgrade_all(clients: list[Client], major: str | None = None) -> Run:
    """Servers first (a failure stops the run: one sentence, the server as it was), then every database (an error
    in one does not stop the others)."""
    servers = move_servers(clients, major)
    return Run([upgrade(client) for client in clients], servers)


def on_server(client: Client) -> list[Client]:
    """The client and every other installed client on the same server (a shared one holds many)."""
    from .restart import sharing

    return [client] + [load(name) for name in sharing(client)]


def move_servers(clients: list[Client], major: str | None) -> list[ServerMoved]:
    from ..install import update_env
    from .backup import backup
    from .restart import wait_for_tenant

    done, seen = [], set()
    for client in clients:
        engine = client.engine
        if engine.server_id() in seen:
            continue
        seen.add(engine.server_id())
        if not engine.capabilities.upgrade:
            if major:  # asked for a major upgrade this engine cannot do: say so
                require(engine, "upgrade")
            continue
        everyone = on_server(client)
        backups: list[str] = []

        def before_major(everyone=everyone, backups=backups) -> None:
            for member in everyone:  # keep=0: a backup before an upgrade never prunes an older one
                backups.append(str(backup(member, keep=0).file))

        with operation(client.spec, "server upgrade"):
            started = time.monotonic()
            moved = engine.upgrade_server(major, before_major)
            if moved is None:
                continue
            version = engine.server_version()
            for member in everyone:
                wait_for_tenant(member)
                with operation(member.spec, "server upgrade: .env"):  # that client's lock
                    update_env(member.spec.paths, {"POSTGRES_VERSION": version})
            seconds = time.monotonic() - started
            log.event(f"server {moved['kind']} upgrade {moved['from']} -> {moved['to']}"
                      f"{' (resumed)' if moved['resumed'] else ''}; every tenant logs in after {seconds:.2f} s")
        done.append(ServerMoved([m.id for m in everyone], moved["kind"], moved["from"], moved["to"], moved["resumed"],
                                seconds, backups))
    return done


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
