"""make pgvector-status: is this client healthy? Read-only.

Catalog facts (role, database, drift, connections, roles on the server) come over a pinned operator session;
the tenant's content (size, vector columns and their indexes) is read with the tenant's own login, so nothing
the tenant planted runs with more than its rights. A failure reading one client is that client's finding:
it never stops the others (status --all).
"""

from __future__ import annotations

import stat
from dataclasses import asdict, dataclass, field

from .. import scram
from ..errors import UserError
from ..provision import plan, read_state
from ..report import OK
from ..tuning import settings as tuning_settings
from .common import Client, first_line, neighbours, tenant_connect
from .move import moving_roles, unfinished

VECTOR_COLUMNS = """
SELECT n.nspname, c.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
       ARRAY(SELECT i.relname FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
             WHERE x.indrelid = c.oid AND a.attnum = ANY(x.indkey) ORDER BY i.relname),
       ARRAY(SELECT am.amname FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
             JOIN pg_catalog.pg_am am ON am.oid = i.relam
             WHERE x.indrelid = c.oid AND a.attnum = ANY(x.indkey) ORDER BY i.relname)
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE t.typname IN ('vector', 'halfvec', 'sparsevec') AND NOT a.attisdropped AND a.attnum > 0
  AND c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1, 2, 3 LIMIT 100
"""


@dataclass
class Server:
    where: str = ""
    reachable: bool = False
    postgres_version: str | None = None
    host: str | None = None  # from .env
    port: int | None = None
    shared: bool = False  # a server several clients share (embedded SERVER=shared)
    newer_runtime: str | None = None  # binaries make pgvector-upgrade would move the server to (its major)


@dataclass
class Pgvector:
    installed: str | None = None
    available: str | None = None
    update_available: bool = False
    schema: str | None = None


@dataclass
class Database:
    name: str | None = None
    size_bytes: int | None = None


@dataclass
class Role:
    name: str | None = None
    connections: int | None = None
    connection_limit: int | None = None


@dataclass
class Pool:
    """The client's pool on the PgBouncer in front of its server (SHOW POOLS, summed over the client's pool)."""

    port: int | None = None  # from .env
    mode: str | None = None
    size: int | None = None
    max_connections: int | None = None
    running: bool = False  # the pooler answers on its console
    login: bool | None = None  # the tenant logs in through it with its .env (None: not tried)
    clients_active: int | None = None
    clients_waiting: int | None = None
    servers_active: int | None = None
    servers_idle: int | None = None
    max_wait_seconds: int | None = None


@dataclass
class EnvFile:
    path: str
    present: bool = False
    mode: str | None = None  # "0600"
    password_valid: bool | None = None  # None: not checked (the role or the server could not be read)


@dataclass
class Index:
    name: str
    method: str


@dataclass
class VectorColumn:
    table: str  # schema.table
    column: str
    type: str
    indexes: list[Index]


@dataclass
class ClientStatus:
    """Everything status reports for one client; to_json() is the documented shape (docs/json.md)."""

    client_id: str
    engine: str | None
    server: Server
    pgvector: Pgvector
    database: Database
    role: Role
    env_file: EnvFile
    pool: Pool = field(default_factory=Pool)
    vector_columns: list[VectorColumn] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)
    drift: list[str] = field(default_factory=list)
    unexpected_roles: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def shared(self) -> bool | None:
        """On a server shared with other clients (None: the client could not even be loaded)."""
        return None if self.engine is None else self.server.shared

    def to_json(self) -> dict:
        """What could not be read is null, never an empty list that would read as "none": drift, settings and
        unexpected_roles need the server; vector_columns the tenant's own login (read with the size)."""
        out = {**asdict(self), "healthy": self.healthy}
        if not self.server.reachable:
            out.update(drift=None, settings=None, unexpected_roles=None)
        if self.database.size_bytes is None:
            out["vector_columns"] = None
        return out


@dataclass
class Status:
    clients: list[ClientStatus]

    @property
    def healthy(self) -> bool:
        return all(client.healthy for client in self.clients)

    def to_json(self) -> dict:
        return {"healthy": self.healthy, "clients": [client.to_json() for client in self.clients]}


def status(client_id: str, everyone: bool) -> Status:
    """One client, or with ALL=true every installed one (read in parallel: psycopg2 waits without the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    from .common import installed_clients, load

    if not everyone:
        return Status([check(load(client_id))])
    names = installed_clients()
    if not names:
        raise UserError("No client is installed under AGENCY_STACK_ROOT: run make pgvector CLIENT_ID=... first.")
    with ThreadPoolExecutor(max_workers=8) as pool:
        return Status(list(pool.map(check_installed, names)))


def _blank(client_id: str, engine: str | None, database: str | None, role: str | None, env: dict, env_file,
           mode: int | None) -> ClientStatus:
    return ClientStatus(
        client_id=client_id, engine=engine,
        server=Server(host=env.get("PGHOST"), port=_int(env.get("PGPORT"))),
        pgvector=Pgvector(), database=Database(database), role=Role(role),
        env_file=EnvFile(str(env_file), mode is not None, f"{mode:04o}" if mode is not None else None),
    )


def check_installed(client_id: str) -> ClientStatus:
    """status --all: a client that cannot even be loaded (a client tree that fails the trust check, a broken .env)
    is that client's finding; the others are still checked."""
    from .. import spec as specs
    from .common import load

    try:
        client = load(client_id)
    except UserError as exc:
        out = _blank(client_id, None, None, None, {}, specs.Paths(specs.root_from_env(), client_id).env_file, None)
        out.problems.append(str(exc))
        return out
    return check(client)


def check(client: Client) -> ClientStatus:
    """Everything status reports for one client."""
    env_file = client.spec.paths.env_file
    mode = stat.S_IMODE(env_file.lstat().st_mode) if env_file.exists() else None
    out = _blank(client.id, client.engine.name, client.tenant.database, client.tenant.role, client.env, env_file, mode)
    out.server.shared = client.engine.capabilities.shared
    problems = out.problems
    if mode is not None and mode != 0o600:
        problems.append(f".env is mode {mode:04o}, not 0600: run chmod 600 {env_file}")
    if (moving := unfinished(client.spec)) is not None:
        problems.append(moving)
    try:
        out.server.where = client.engine.where()
        if "," in (client.env.get("PGHOST") or ""):  # a cluster's .env lists every member: show the leader
            point = client.engine.endpoint()
            out.server.host, out.server.port = point.host, point.port
        out.server.newer_runtime = client.engine.newer_runtime()
        conn = client.engine.admin_connect("postgres")
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the finding itself
        problems.append(f"server not reachable ({first_line(exc)}): see make pgvector-logs "
                        f"CLIENT_ID={client.id}, then make pgvector-restart CLIENT_ID={client.id}")
        return out
    try:
        state = _inspect(client, conn, out)
    except Exception as exc:  # noqa: BLE001 - this client's finding; the others are still checked
        problems.append(f"status could not be read ({first_line(exc)}): re-run make pgvector CLIENT_ID={client.id}")
        state = None
    finally:
        conn.close()
    if state is not None and client.tenant.database in state.databases:
        _content(client, out, state)
    _pool(client, out, state)
    return out


def _pool(client: Client, out: ClientStatus, state) -> None:
    """The pooler's health and the client's pool: registered with the role's current verifier, answering, a login."""
    from .. import pooler
    from ..sessions import pooled

    if not client.engine.capabilities.pool:  # a cluster's clients reach its members directly
        return
    env, pool = client.env, out.pool
    pool.port, pool.mode = _int(env.get("PGVECTOR_POOL_PORT")), env.get("PGVECTOR_POOL_MODE")
    pool.size, pool.max_connections = _int(env.get("PGVECTOR_POOL_SIZE")), _int(env.get("PGVECTOR_POOL_MAX_CONNECTIONS"))
    fix = f"re-run make pgvector CLIENT_ID={client.id}"
    if not pool.port:
        out.problems.append(f"no connection pool yet (the .env has no PGVECTOR_POOL_PORT): {fix}")
        return
    pooler_ = pooler.for_engine(client.engine)
    seen = pooler_.observe()
    entry = seen.entries.get(client.id)
    if entry is None or seen.port != pool.port:
        out.problems.append(f"the pooler has no pool for {client.tenant.database} on port {pool.port}: {fix}")
    elif state is not None and state.role and entry.verifier != state.role["rolpassword"]:
        out.drift.append("pool: the pooler's verifier is not the role's password")
        out.problems.append(f"the pooler would refuse the .env password (its verifier is an old one): {fix}")
    pool.running = seen.running
    if not seen.running:
        out.problems.append(f"the pooler on port {pool.port} is not running: make pgvector-restart CLIENT_ID={client.id}")
        return
    figures = pooler_.pools(client.tenant.database) or {}
    pool.clients_active, pool.clients_waiting = figures.get("cl_active"), figures.get("cl_waiting")
    pool.servers_active, pool.servers_idle = figures.get("sv_active"), figures.get("sv_idle")
    pool.max_wait_seconds = figures.get("maxwait")
    if client.password and entry is not None:
        try:
            pooled(client.tenant.role, client.password, client.tenant.database, pool.port).close()
            pool.login = True
        except Exception as exc:  # noqa: BLE001 - the finding itself
            pool.login = False
            out.problems.append(f"the tenant cannot log in through the pool ({first_line(exc)}): see make pgvector-logs "
                                f"POOLER=true CLIENT_ID={client.id}")


def _inspect(client: Client, conn, out: ClientStatus):
    tenant, problems = client.tenant, out.problems
    out.server.reachable = True
    state = read_state(conn, tenant, client.engine.admin_connect)
    out.server.postgres_version = state.version.split()[0]
    out.pgvector = Pgvector(installed=state.extension, available=state.available, schema=state.extension_schema,
                            update_available=bool(state.extension and state.available and state.extension != state.available))
    valid = False
    if state.role is None:
        problems.append(f"role {tenant.role} is missing: re-run make pgvector CLIENT_ID={client.id}")
    else:
        valid = bool(client.password and scram.verify(client.password, state.role["rolpassword"]))
        out.env_file.password_valid = valid
        if not valid:
            problems.append(f"the .env password does not match role {tenant.role}: make pgvector-rotate CLIENT_ID={client.id}")
    try:  # the password has its own finding above: every other difference is drift
        steps = plan(state, tenant, client.password, False, str(client.spec.paths.env_file)).steps
        out.drift = [f"{s.item}: {s.detail}" for s in steps if s.action != OK and s.item != "password"]
    except UserError as exc:
        problems.append(str(exc))
    found = state.databases.get(tenant.database)
    if state.role and not state.role["rolcanlogin"]:  # named apart from the drift: the tenant cannot log in at all
        problems.append(f"role {tenant.role} cannot log in (NOLOGIN): re-run make pgvector CLIENT_ID={client.id}")
    if state.role and found is not None and not found["tenant_connect"]:
        problems.append(f"role {tenant.role} has no CONNECT on database {tenant.database}, so the tenant cannot log in: "
                        f"re-run make pgvector CLIENT_ID={client.id}")
    if out.drift:
        problems.append(f"drift from what was provisioned ({len(out.drift)} "
                        f"items): re-run make pgvector CLIENT_ID={client.id}")
    if state.db_readable and state.databases.get(tenant.database) and not state.extension:
        problems.append(f"extension vector is missing in {tenant.database}: re-run make pgvector CLIENT_ID={client.id}")
    with conn.cursor() as cur:
        cur.execute("SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity WHERE usename = %s), "
                    "(SELECT rolconnlimit FROM pg_catalog.pg_roles WHERE rolname = %s)", (tenant.role, tenant.role))
        used, limit = cur.fetchone()
        out.role.connections, out.role.connection_limit = used, limit
        if limit is not None and limit >= 0 and used >= limit:
            problems.append(f"{used} of {limit} connections in use: the app may be leaking connections")
        cur.execute("SELECT name, pg_catalog.current_setting(name) FROM "
                    "pg_catalog.pg_settings WHERE name = ANY(%s) ORDER BY name",
                    (list(tuning_settings()),))
        out.settings = dict(cur.fetchall())
        if client.engine.capabilities.owns_server:
            _roles(client, cur, out)
    return state


def _roles(client: Client, cur, out: ClientStatus) -> None:
    """On a server the installer owns, a login is the admin's or a tenant's, and only the admin is superuser.
    (A NOLOGIN role that is no superuser is left alone: an uninstall with KEEP_DATA leaves one.)"""
    admin = cur.connection.info.user
    expected = ({admin, client.tenant.role, *client.engine.service_roles}
                | {tenant.role for tenant in neighbours(client)} | moving_roles(client.spec.root))
    cur.execute("SELECT rolname, rolsuper, rolcanlogin FROM pg_catalog.pg_roles WHERE rolname !~ '^pg_' ORDER BY 1")
    for name, superuser, login in cur.fetchall():
        if (superuser and name != admin) or (login and name not in expected):
            kind = "superuser" if superuser else "role"
            out.unexpected_roles.append(name)
            out.problems.append(f"unexpected {kind} {name} on the server: nobody but the installer creates roles there; "
                                   "find out who made it, then DROP ROLE it")


def _content(client: Client, out: ClientStatus, state) -> None:
    """Size and vector columns, read with the tenant's own login."""
    try:
        conn = tenant_connect(client)
    except Exception as exc:  # noqa: BLE001
        out.problems.append(f"the tenant cannot log in with its .env ({first_line(exc)}): "
                               f"make pgvector-test CLIENT_ID={client.id} says more")
        return
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_catalog.pg_database_size(pg_catalog.current_database())")
            out.database.size_bytes = cur.fetchone()[0]
            if state.extension:
                cur.execute(VECTOR_COLUMNS)
                out.vector_columns = [
                    VectorColumn(f"{schema}.{table}", column, kind,
                                 [Index(name, method) for name, method in zip(names, methods, strict=True)])
                    for schema, table, column, kind, names, methods in cur.fetchall()
                ]
    except Exception as exc:  # noqa: BLE001 - the tenant's own settings or objects broke its reads
        out.problems.append(f"the tenant's database could not be read with its own login ({first_line(exc)})")
    finally:
        conn.close()


def _int(value):
    return int(value) if value and str(value).isdigit() else None
