"""External engine: an existing server given by a superuser URL (ADMIN_URL), shared by many clients.

The installer creates nothing on that host but the tenant itself, so names carry the client id. The
URL is kept for day-2 commands in <root>/pgvector/secrets/<client>.admin-url (0600, root), never in
the client's directory.
"""

from __future__ import annotations

from ..envfile import write_atomic
from ..errors import UserError
from ..report import OK, Report
from ..text import first_line
from .base import Endpoint, Engine


class ExternalEngine(Engine):
    name = "external"
    shared = True

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

    def exists(self) -> bool:
        return True

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

    def ensure_server(self, report: Report, create: bool) -> None:
        conn = self.admin_connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_setting('server_version'), (SELECT default_version "
                            "FROM pg_available_extensions WHERE name = 'vector')")
                version, vector = cur.fetchone()
        finally:
            conn.close()
        point = self.endpoint()
        if vector is None:
            major = version.split(".")[0]
            raise UserError(
                f"The server at {point.host}:{point.port} (PostgreSQL {version}) has no pgvector extension available: "
                f"install it on that server (Debian/Ubuntu: apt-get install postgresql-{major}-pgvector) and re-run, "
                "or use ENGINE=embedded WITH_DEPS=true for a server that ships it."
            )
        report.add("server", OK, f"PostgreSQL {version} at {point.host}:{point.port}, pgvector {vector} available")

    def remember(self) -> bool:
        """Keep the admin URL for day-2 commands (root-only file outside the client's directory)."""
        if not self.spec.admin_url:
            return False
        self.paths.state_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
        return write_atomic(self.url_file, self.spec.admin_url + "\n")
