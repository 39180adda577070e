"""The contract every engine fulfils: where a client's PostgreSQL server comes from and how to reach it.

    capabilities          what the installer can do with this engine's server (checked before anything is touched)
    observe()             read the server's real state (no change)
    plan_server(seen, create)  the steps that bring it to what the spec wants: pure, raises only to refuse
    endpoint()            host and port the tenant connects to
    admin_params(db)      libpq keywords of the superuser session (sessions.operator pins it)
    server_lock()         held while the server is observed, planned and changed (a shared server: host-wide)
    where(), pool_key(), expected_data_directory(), forget()
    lifecycle, where capabilities say so: logs(), restart(), stop(), remove_server(), upgrade_server()
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields

from ..errors import UserError
from ..runner import Step
from ..spec import Spec
from ..text import first_line


@dataclass(frozen=True)
class Endpoint:
    host: str  # what the tenant's .env says
    port: int


@dataclass(frozen=True)
class Capabilities:
    owns_server: bool  # the installer made this server and vouches for everything on it
    shared: bool  # one server holds many clients: names then carry the client id
    logs: bool  # the server's log is readable on this host
    restart: bool  # the installer can restart the server
    remove: bool  # the installer can remove the server with its client (REMOVE_SERVER)
    upgrade: bool = False  # the installer can move the server to newer PostgreSQL binaries (make pgvector-upgrade)
    pool: bool = True  # the client gets a PgBouncer pool in front of the server (pooler.py)


WHAT = {  # how a capability reads in a refusal
    "logs": "Reading the server's log",
    "restart": "Restarting the server",
    "remove": "REMOVE_SERVER=true",
    "upgrade": "Upgrading the server's PostgreSQL",
    "pool": "A PgBouncer pool (and ENABLE_CLOUD, whose remote access is the pool's)",
}


@dataclass
class ServerPlan:
    steps: list[Step]
    reachable: bool  # a superuser session works before any step runs (a dry run can read the tenant's state)
    again: bool = False  # what comes next can only be seen once these steps ran (observe and plan again)
    new: bool = False  # the steps create the server: it holds no tenant yet


class Engine(ABC):
    name: str
    capabilities: Capabilities
    refusals: dict[str, str] = {}  # capability -> why this engine lacks it (and what to do instead)
    service_roles: tuple[str, ...] = ()  # logins the engine's own machinery keeps on the server (status expects them)
    # how the server gets wal_level=logical, which a move from it needs ({client}: the client's id)
    logical_fix = "Set wal_level = logical on that server and restart it, then move again."

    def __init__(self, spec: Spec):
        self.spec = spec
        self.paths = spec.paths

    # -- converge -----------------------------------------------------------------------------------
    @abstractmethod
    def observe(self):
        """The server's real state, as the engine's own dataclass."""

    @abstractmethod
    def plan_server(self, seen, create: bool) -> ServerPlan:
        """Steps from `seen` to the spec (create the server only when `create`); raises UserError to refuse."""

    def server_lock(self):
        return contextlib.nullcontext()

    def server_id(self) -> str:
        """Which server this is, for a run converging many clients: clients with the same id share it."""
        return f"{self.name}:{self.spec.client_id}"

    # -- reach --------------------------------------------------------------------------------------
    @abstractmethod
    def endpoint(self) -> Endpoint: ...

    def endpoints(self) -> list[Endpoint]:
        """Every address the tenant may reach the server at, the leader's first where there are several (a cluster's
        members): the .env lists them all, and libpq picks the one that takes writes."""
        return [self.endpoint()]

    @abstractmethod
    def admin_params(self, dbname: str = "postgres") -> dict: ...

    @abstractmethod
    def where(self) -> str:
        """One line for people: where the server runs."""

    @property
    def label(self) -> str:
        return f"{'a shared' if self.capabilities.shared else 'its'} {self.name} server"

    def admin_connect(self, dbname: str = "postgres"):
        """A pinned superuser session (sessions.operator): the only way the installer is ever superuser."""
        from ..sessions import operator

        return operator(self, dbname)

    def server_version(self) -> str:
        """The running server's PostgreSQL version (18.6), asked over the superuser session."""
        conn = self.admin_connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_catalog.current_setting('server_version')")
                return cur.fetchone()[0].split()[0]
        finally:
            conn.close()

    def recorded_server(self) -> str:
        """What the .env's PGVECTOR_SERVER says: the server a re-run must find the client on."""
        return "shared" if self.capabilities.shared else "dedicated"

    def expected_data_directory(self):
        """The data directory the admin session must find (a socket swapped for another server's is refused);
        None where the installer cannot know it."""
        return None

    def pool_key(self) -> str:
        """Which pooler fronts this server (pooler.py): one per server, so the shared server's clients share one."""
        return self.spec.client_id

    def forget(self) -> None:  # noqa: B027 - most engines keep nothing outside the client's directory
        """Remove what the engine keeps for this client outside the client's directory (uninstall)."""

    # -- lifecycle (only where `capabilities` says so: callers check with require()) ---------------------
    def logs(self, lines: int, follow: bool) -> None:
        raise NotImplementedError

    def log_members(self) -> list[str]:
        """The members whose log make pgvector-logs MEMBER=... can show ([]: one server, no members)."""
        return []

    def member_logs(self, member: str, lines: int, follow: bool) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def remove_server(self) -> None:
        raise NotImplementedError

    def upgrade_server(self, major: str | None, before_major) -> dict | None:
        """Move the server to the newest runtime of `major` (None: of its own major); `before_major()` runs before a
        major upgrade touches anything (the backups). Returns what was done ({kind, from, to, resumed}), None when
        the server runs the newest already."""
        raise NotImplementedError

    def newer_runtime(self) -> str | None:
        """The binaries make pgvector-upgrade would move the server to within its major, None when current."""
        return None

    def check_alive(self) -> None:  # noqa: B027 - an optional hook: engines without a process of their own keep it
        """Raise UserError when the server has died for good, so wait_ready stops early (default: nothing to check)."""

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll until the superuser can run a query: the one readiness check every engine shares."""
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                conn = self.admin_connect()
                conn.cursor().execute("SELECT 1")
                conn.close()
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last = exc
                time.sleep(0.1)
        raise UserError(f"The {self.name} server did not accept connections within {timeout:.0f} s "
                        f"({first_line(last)}): check `make pgvector-logs CLIENT_ID={self.spec.client_id}`.")


def require(engine: Engine, capability: str) -> None:
    """The one refusal of an unsupported capability, the same sentence shape for every engine."""
    assert capability in {f.name for f in fields(Capabilities)}, capability
    if not getattr(engine.capabilities, capability):
        why = engine.refusals.get(capability, "the installer does not manage this server")
        raise UserError(f"{WHAT[capability]} is not available for client {engine.spec.client_id} "
                        f"({engine.label}): {why}.")
