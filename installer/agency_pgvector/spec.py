"""Validated inputs and the host paths they imply.

Everything the operator types is checked here, before any file, role or server is touched.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

ENGINES = ("auto", "embedded", "external", "docker", "patroni")
SERVERS = ("dedicated", "shared")
DEFAULT_ROOT = "/opt/agency_stack"
DEFAULT_LOG = "/var/log/agency_stack/components/pgvector.log"

_CLIENT_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9._%+-]{1,64}")
_SAFE_TEXT = re.compile(r"[^\x00-\x1f\x7f]*")


def client_id(value: str, name: str = "CLIENT_ID") -> str:
    """`name`: the variable the operator typed it in (TARGET_CLIENT names a client too)."""
    if not _CLIENT_ID.fullmatch(value or ""):
        raise InputError(
            f"{name} {_show(value)} is not valid: use 1-32 lowercase letters, digits and hyphens, "
            f"starting and ending with a letter or digit (e.g. {name}=acme)."
        )
    return value


def domain(value: str) -> str:
    value = value or ""
    labels = value.split(".")
    if not value or len(value) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise InputError(
            f"DOMAIN {_show(value)} is not a valid host name: use ASCII letters, digits, hyphens and dots "
            "(RFC 1123; internationalised names as xn--), e.g. DOMAIN=example.com."
        )
    return value.lower()


def email(value: str) -> str:
    local, at, host = (value or "").rpartition("@")
    if not at or not _EMAIL_LOCAL.fullmatch(local) or len(value) > 254:
        raise InputError(f"ADMIN_EMAIL {_show(value)} is not a valid e-mail address: use e.g. ADMIN_EMAIL=ops@example.com.")
    try:
        domain(host)
    except InputError:
        raise InputError(f"ADMIN_EMAIL {_show(value)} has an invalid domain part: "
                         "use e.g. ADMIN_EMAIL=ops@example.com.") from None
    return value


def port(value: int | str | None) -> int | None:
    if value in (None, ""):
        return None
    text = str(value)
    if len(text) > 5 or not text.isascii() or not text.isdigit() or not 1024 <= int(text) <= 65535:  # 4300+ digits: int() raises
        raise InputError(f"PORT {_show(text)} is not valid: use a TCP port number from 1024 to 65535, e.g. PORT=5433.")
    return int(text)


def engine(value: str) -> str:
    if value not in ENGINES:
        raise InputError(f"ENGINE {_show(value)} is not known: use one of {', '.join(ENGINES)}.")
    return value


def cluster(value: str) -> str:
    """CLUSTER: a Patroni cluster's name (the same shape as a client id: it names system users and directories)."""
    if not _CLIENT_ID.fullmatch(value or ""):
        raise InputError(f"CLUSTER {_show(value)} is not valid: use 1-32 of a-z 0-9 and '-', starting and ending "
                         "with a letter or digit, e.g. CLUSTER=main.")
    return value


def server(value: str) -> str:
    """SERVER: dedicated, shared, auto (placement: inventory.py) or a cluster's name from the inventory."""
    if value not in SERVERS and value != "auto" and not _CLIENT_ID.fullmatch(value or ""):
        raise InputError(f"SERVER {_show(value)} is not known: use SERVER=dedicated (one server per client), "
                         "SERVER=shared, SERVER=auto (the least loaded with room) or a cluster's name.")
    return value


def admin_url(value: str | None) -> str | None:
    """Check the shape of a superuser URL without ever echoing it (it usually holds a password)."""
    if not value:
        return None
    if not _SAFE_TEXT.fullmatch(value) or not value.startswith(("postgresql://", "postgres://")):
        raise InputError("ADMIN_URL is not a PostgreSQL URL: use ADMIN_URL=postgresql://USER:PASSWORD@HOST:PORT/postgres.")
    from psycopg2.extensions import parse_dsn

    try:
        parsed = parse_dsn(value)
    except Exception:  # noqa: BLE001 - whatever libpq's parser raises, the URL is the user's to fix
        raise InputError("ADMIN_URL could not be parsed: use ADMIN_URL=postgresql://USER:PASSWORD@HOST:PORT/postgres.") from None
    # An unencoded '@', '/' or ':' in the password moves part of it into the host, port or database name,
    # where connection errors would print it: refuse such URLs before anything echoes those fields.
    ports_ = (parsed.get("port") or "").split(",") if parsed.get("port") else []
    if (any("@" in (parsed.get(key) or "") for key in ("host", "port", "dbname", "user"))
            or not all(p.isascii() and p.isdigit() for p in ports_)
            or not re.fullmatch(r"[A-Za-z0-9._:/,%-]*", parsed.get("host") or "")):  # the host lands in .env
        raise InputError("ADMIN_URL could not be parsed: percent-encode special characters in the user and password "
                        "(@ as %40, / as %2F, : as %3A), e.g. ADMIN_URL=postgresql://USER:PASSWORD@HOST:PORT/postgres.")
    return value


_IMAGE_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
# docker: a registry has a dot, a port or is localhost
_IMAGE_DOMAIN = rf"(?:(?:localhost|{_IMAGE_LABEL}(?:\.{_IMAGE_LABEL})+)(?::[0-9]{{1,5}})?/|{_IMAGE_LABEL}:[0-9]{{1,5}}/)?"
_IMAGE_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
_IMAGE = re.compile(_IMAGE_DOMAIN + _IMAGE_PATH + r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?")


def image(value: str | None) -> str | None:
    """A Docker image reference (PGVECTOR_IMAGE): registry/path:tag@digest, nothing a shell or API could misread."""
    if not value:
        return None
    if len(value) > 255 or not _IMAGE.fullmatch(value):
        raise InputError(f"PGVECTOR_IMAGE {_show(value)} is not a Docker image "
                        "reference: use e.g. PGVECTOR_IMAGE=pgvector/pgvector:pg17.")
    return value


PG_MAJORS = ("16", "18")  # the majors the embedded runtimes carry (engines/embedded/runtime.py checks it matches)


def pg_major(value: str | None) -> str | None:
    """PG_MAJOR: the PostgreSQL major of a new server, or the one make pgvector-upgrade moves a server to."""
    if not value:
        return None
    if value not in PG_MAJORS:
        raise InputError(f"PG_MAJOR {_show(value)} is not a PostgreSQL major the installer runs: use "
                        f"{' or '.join(f'PG_MAJOR={m}' for m in PG_MAJORS)}.")
    return value


def _show(value: object) -> str:
    """Quote a rejected value for an error message, without letting it break the line."""
    text = repr(str(value) if value is not None else "")
    return text if len(text) <= 60 else text[:57] + "...'"


@dataclass(frozen=True)
class Paths:
    """Where one client's files live. Only `server_dir` is reachable by the server's system user."""

    root: Path
    client_id: str

    @property
    def client_dir(self) -> Path:
        return self.root / "clients" / self.client_id

    @property
    def component_dir(self) -> Path:  # 0700 root: .env, samples, backups
        return self.client_dir / "pgvector"

    @property
    def env_file(self) -> Path:
        return self.component_dir / ".env"

    @property
    def samples_dir(self) -> Path:
        return self.component_dir / "samples"

    @property
    def backups_dir(self) -> Path:
        return self.component_dir / "backups"

    @property
    def server_dir(self) -> Path:  # 0700 server user: data, socket, log (embedded engine)
        return self.client_dir / "postgres"

    @property
    def state_dir(self) -> Path:  # installer-wide, root only
        return self.root / "pgvector"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "locks" / f"{self.client_id}.lock"

    @property
    def secrets_dir(self) -> Path:  # superuser credentials: never inside a client's directory
        return self.state_dir / "secrets"


POOL_MODES = ("session", "transaction")


@dataclass(frozen=True)
class PoolSettings:
    """POOL_MODE, POOL_SIZE, POOL_MAX_CONNECTIONS as given (None: as recorded for the client, else the default)."""

    mode: str | None = None
    size: int | None = None
    max_connections: int | None = None

    @classmethod
    def from_env(cls) -> PoolSettings:
        mode = os.environ.get("POOL_MODE") or None
        if mode and mode not in POOL_MODES:
            raise InputError(f"POOL_MODE {_show(mode)} is not valid: use session (the default) or transaction.")
        return cls(mode, _count("POOL_SIZE"), _count("POOL_MAX_CONNECTIONS"))


def _count(name: str) -> int | None:
    text = os.environ.get(name) or ""
    if not text:
        return None
    if len(text) > 4 or not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 1000:
        raise InputError(f"{name} {_show(text)} is not valid: use a whole number from 1 to 1000.")
    return int(text)


@dataclass(frozen=True)
class Spec:
    client_id: str
    domain: str = ""
    admin_email: str = ""
    engine: str = "auto"
    server: str = ""  # embedded engine: "dedicated" (one server per client) or "shared"; "" = as recorded, else dedicated
    cluster: str = ""  # ENGINE=patroni: the cluster's name ("" = as recorded)
    force: bool = False
    with_deps: bool = False
    enable_cloud: bool = False
    dry_run: bool = False
    admin_url: str | None = field(default=None, repr=False)
    port: int | None = None
    image: str | None = None  # PGVECTOR_IMAGE (docker engine), checked here
    pg_major: str | None = None  # PG_MAJOR: a new server's PostgreSQL major; pgvector-upgrade's target major
    pool: PoolSettings = PoolSettings()
    root: Path = Path(DEFAULT_ROOT)
    log_file: Path = Path(DEFAULT_LOG)

    @property
    def paths(self) -> Paths:
        return Paths(self.root, self.client_id)


def root_from_env() -> Path:
    return _abs_path(os.environ.get("AGENCY_STACK_ROOT") or DEFAULT_ROOT, "AGENCY_STACK_ROOT")


def log_from_env() -> Path:
    return _abs_path(os.environ.get("AGENCY_STACK_LOG") or DEFAULT_LOG, "AGENCY_STACK_LOG")


_PATH = re.compile(r"/[A-Za-z0-9_./@+,-]*")  # it lands in server config files and messages: nothing to quote


def _abs_path(value: str, name: str) -> Path:
    if not _PATH.fullmatch(value) or ".." in Path(value).parts:
        raise InputError(f"{name} {_show(value)} must be an absolute path of letters, digits "
                        f"and _ . / @ + , - without '..', e.g. {name}=/opt/agency_stack.")
    return Path(value)


def build(
    client: str,
    domain_: str = "",
    admin_email: str = "",
    *,
    require_contact: bool = True,
    engine_: str = "auto",
    server_: str = "",
    cluster_: str = "",
    admin_url_: str | None = None,
    port_: int | str | None = None,
    **flags: bool,
) -> Spec:
    """Validate everything, in the order the operator reads the error messages."""
    cid = client_id(client)
    if require_contact:
        if not domain_:
            raise InputError("DOMAIN is required: add DOMAIN=example.com (the client's domain).")
        if not admin_email:
            raise InputError("ADMIN_EMAIL is required: add ADMIN_EMAIL=ops@example.com.")
    dom = domain(domain_) if domain_ else ""
    mail = email(admin_email) if admin_email else ""
    eng = engine(engine_ or "auto")
    srv = server(server_) if server_ else ""
    clu = cluster(cluster_) if cluster_ else ""
    if clu and eng not in ("auto", "patroni"):
        raise InputError(f"CLUSTER={clu} applies to ENGINE=patroni only: drop CLUSTER, or use ENGINE=patroni.")
    url = admin_url(admin_url_)
    if eng == "external" and not url:
        raise InputError("ENGINE=external needs the superuser URL of the server: add "
                        "ADMIN_URL=postgresql://USER:PASSWORD@HOST:PORT/postgres.")
    return Spec(
        client_id=cid, domain=dom, admin_email=mail, engine=eng, server=srv, cluster=clu, admin_url=url, port=port(port_),
        image=image(os.environ.get("PGVECTOR_IMAGE")), pg_major=pg_major(os.environ.get("PG_MAJOR")),
        pool=PoolSettings.from_env(), root=root_from_env(), log_file=log_from_env(), **flags,
    )
