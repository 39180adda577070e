"""The contract every engine fulfils: where a client's PostgreSQL server comes from and how to reach it."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..errors import UserError
from ..report import Report
from ..spec import Spec
from ..text import first_line


@dataclass(frozen=True)
class Endpoint:
    host: str  # what the tenant's .env says
    port: int


class Engine(ABC):
    name: str
    shared = False  # True when one server holds many clients: names then carry the client id

    def __init__(self, spec: Spec):
        self.spec = spec
        self.paths = spec.paths

    @abstractmethod
    def ensure_server(self, report: Report, create: bool) -> None:
        """Make the server exist and run (only when `create`), recording each step; dry-run touches nothing."""

    @abstractmethod
    def exists(self) -> bool:
        """Whether the server is there at all (for dry-run against a host that has none yet)."""

    @abstractmethod
    def endpoint(self) -> Endpoint:
        """Host and port the tenant connects to."""

    @abstractmethod
    def admin_params(self, dbname: str = "postgres") -> dict:
        """libpq keywords for a superuser connection (host, port, user, dbname, maybe password)."""

    def admin_connect(self, dbname: str = "postgres"):
        """A pinned superuser session (sessions.operator): the only way the installer is ever superuser."""
        from ..sessions import operator

        return operator(self, dbname)

    def expected_data_directory(self):
        """The data directory the admin session must find (a socket swapped for another server's is refused);
        None where the installer cannot know it."""
        return None

    def tls_env(self) -> dict:
        """Extra .env entries a client needs for TLS (PGSSLMODE, PGSSLROOTCERT, ...); none by default."""
        return {}

    @abstractmethod
    def where(self) -> str:
        """One line for people: where the server runs."""

    def logs(self, lines: int, follow: bool) -> None:
        raise UserError(f"The {self.name} engine keeps no server log on this host: read it on the server itself.")

    def restart(self) -> None:
        raise UserError(f"The {self.name} engine's server is not managed by this installer: restart it where it runs.")

    def remove_server(self) -> None:
        raise UserError(f"The {self.name} engine's server is not managed by this installer: it is left as it is.")

    def owns_server(self) -> bool:
        return False

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

