"""External engine: an existing server given by a superuser URL (ADMIN_URL), shared by many clients.

The installer creates nothing on that host but the tenant itself, so names carry the client id. The URL is kept
for day-2 commands in <root>/pgvector/secrets/<client>.admin-url (0600, root), never in the client's directory.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..envfile import read_nofollow, write_atomic
from ..errors import UserError
from ..report import CHANGE, CREATE, OK
from ..runner import Step
from ..text import first_line
from .base import Capabilities, Endpoint, Engine, ServerPlan

NOT_OURS = "the server is not managed by this installer: do it where that server runs"
NAMED = "inventory/external"  # under the state directory: <name>.admin-url of each server the operator named


def named_servers(state_dir) -> dict[str, str]:
    """name -> superuser URL of each existing server the operator named (make pgvector-servers SERVER= ADMIN_URL=)."""
    folder = state_dir / NAMED
    out = {}
    for path in sorted(folder.glob("*.admin-url")) if folder.is_dir() else []:
        data = read_nofollow(path)
        if isinstance(data, bytes) and data.strip():
            out[path.name[: -len(".admin-url")]] = data.decode().strip()
    return out


def keep_named(state_dir, name: str, url: str) -> None:
    write_atomic(state_dir / NAMED / f"{name}.admin-url", url + "\n")


def forget_named(state_dir, name: str) -> None:
    (state_dir / NAMED / f"{name}.admin-url").unlink(missing_ok=True)


@dataclass
class Observed:
    version: str
    vector: str | None
    url_kept: bool  # the admin URL for day-2 commands is on file and current


class ExternalEngine(Engine):
    name = "external"
    capabilities = Capabilities(owns_server=False, shared=True, logs=False, restart=False, remove=False)
    refusals = {"logs": NOT_OURS, "restart": NOT_OURS, "remove": NOT_OURS, "upgrade": NOT_OURS}

    def __init__(self, spec, server_name: str = ""):
        super().__init__(spec)
        self.server_name = server_name  # the name the inventory gives the server (inventory.py), "" when none

    def recorded_server(self) -> str:
        return self.server_name or super().recorded_server()

    @property
    def url_file(self):
        return self.paths.secrets_dir / f"{self.spec.client_id}.admin-url"

    def _url(self) -> str:
        if self.spec.admin_url:
            return self.spec.admin_url
        if self.url_file.exists():
            return self.url_file.read_text().strip()
        raise UserError(f"No superuser URL is known for client {self.spec.client_id}: "
                        "add ADMIN_URL=postgresql://USER:PASSWORD@HOST:PORT/postgres.")

    def _dsn(self) -> dict:
        from psycopg2.extensions import parse_dsn

        return parse_dsn(self._url())

    def where(self) -> str:
        point = self.endpoint()
        return f"existing server at {point.host}:{point.port}"

    def endpoint(self) -> Endpoint:
        dsn = self._dsn()
        host = dsn.get("host") or "127.0.0.1"
        if host.startswith("/"):
            host = "127.0.0.1"  # the admin talks over a socket; tenants use TCP on the same host
        return Endpoint(host.split(",")[0], int(str(dsn.get("port") or 5432).split(",")[0]))

    def admin_params(self, dbname: str = "postgres") -> dict:
        return {**self._dsn(), "dbname": dbname}

    def admin_connect(self, dbname: str = "postgres"):
        import psycopg2

        try:
            return super().admin_connect(dbname)
        except psycopg2.OperationalError as exc:
            point = self.endpoint()
            raise UserError(f"Cannot connect to the server at {point.host}:{point.port} with "
                            f"ADMIN_URL ({first_line(exc)}): check the URL and that the server runs.") from None

    def server_id(self) -> str:
        dsn = self._dsn()
        return f"{self.name}:{dsn.get('user')}@{dsn.get('host')}:{dsn.get('port')}"

    def observe(self) -> Observed:
        conn = self.admin_connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_catalog.current_setting('server_version'), (SELECT default_version "
                            "FROM pg_catalog.pg_available_extensions WHERE name = 'vector')")
                version, vector = cur.fetchone()
        finally:
            conn.close()
        kept = read_nofollow(self.url_file)
        return Observed(version, vector, isinstance(kept, bytes) and kept.decode().strip() == self._url())

    def plan_server(self, seen: Observed, create: bool) -> ServerPlan:
        point = self.endpoint()
        if seen.vector is None:
            major = seen.version.split(".")[0]
            raise UserError(f"The server at {point.host}:{point.port} (PostgreSQL {seen.version}) has no pgvector "
                            f"extension available: install it on that server (Debian/Ubuntu: apt-get install "
                            f"postgresql-{major}-pgvector) and re-run, or use ENGINE=embedded WITH_DEPS=true for a "
                            "server that ships it.")
        steps = [Step("server", OK, f"PostgreSQL {seen.version} at {point.host}:{point.port}, "
                                    f"pgvector {seen.vector} available")]
        if not seen.url_kept:
            steps.append(Step("admin URL", CHANGE if self.url_file.exists() else CREATE,
                              f"kept for day-2 commands in {self.paths.secrets_dir} (0600)", run=self._remember))
        return ServerPlan(steps, reachable=True)

    def _remember(self) -> None:
        write_atomic(self.url_file, self._url() + "\n")

    def forget(self) -> None:
        self.url_file.unlink(missing_ok=True)
