"""`make pgvector`: spec -> engine -> plan -> apply -> .env, samples, README. Re-runs are no-ops."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import engines, envfile, inventory, pooler, ports, registry, scram, tls
from .engines.base import ServerPlan
from .errors import UserError
from .provision import EXTENSION_SCHEMA, State, Tenant, apply as apply_sql, lock, plan, read_state, record
from .render import SAMPLES_DIR, render
from .report import CHANGE, CREATE, OK, Report
from .runner import apply, operation
from .spec import Spec
from .system import ensure_dir, require_trusted
from .text import first_line

SAMPLE_SUFFIXES = {".py", ".txt", ".md", ".ini", ".mako"}
PENDING = ".password.pending"  # the new password, written before the role gets it (crash-safe rotation)


@dataclass
class Result:
    report: Report
    env: dict
    engine: str


@dataclass
class Batch:
    """ALL=true: each server is converged once per run and its operator session reused for every client on it
    (opened once, holding the provisioning lock until the batch ends)."""

    servers: dict[str, ServerPlan] = field(default_factory=dict)  # engine.server_id() -> its plan in this run
    sessions: dict[str, Any] = field(default_factory=dict)  # engine.server_id() -> open operator session

    def close(self) -> None:
        for conn in self.sessions.values():
            conn.close()
        self.sessions.clear()


def install(spec: Spec, batch: Batch | None = None) -> Result:
    with operation(spec, "install", dry_run=spec.dry_run):
        return _install(spec, batch)


def _install(spec: Spec, batch: Batch | None = None, existing: dict | None = None, moving: bool = False) -> Result:
    """`existing`, `moving`: the switch of make pgvector-move (ops/move.py), the .env written for the new server."""
    paths = spec.paths
    require_trusted(paths.component_dir)  # the client's tree, as far as it exists, before anything in it is read
    if not moving:
        from .ops.move import unfinished

        if (why := unfinished(spec)) is not None:
            raise UserError(why)
    existing = existing if existing is not None else envfile.read(paths.env_file)
    resuming = False
    if not existing:  # a client suspended by KEEP_DATA=true: its record names its server; the resume sets a new password
        from .ops.common import read_suspended

        existing = read_suspended(paths)
        resuming = bool(existing)
        if resuming:
            spec = replace(spec, force=True)
    placed = ""
    if not existing and inventory.wants_placement(spec):  # a new client: on a server with room (inventory.py)
        spec, placed = inventory.place(spec)
    elif spec.server == "auto":  # a client that is somewhere already stays there
        spec = replace(spec, server="")
    elif spec.server and spec.server == existing.get("PGVECTOR_SERVER") and existing.get("PGVECTOR_ENGINE") == "patroni":
        spec = replace(spec, server="", cluster=spec.server)  # SERVER=<its cluster>, as placement named it
    engine = engines.get(spec, existing.get("PGVECTOR_ENGINE"), existing.get("PGVECTOR_SERVER"))
    tenant = Tenant.for_client(spec.client_id, engine.capabilities.shared)
    settings = pooler.resolve(spec.pool, existing, tenant.connection_limit)
    if engine.capabilities.pool:
        pooler.preflight(spec.with_deps)
    if spec.enable_cloud:  # remote access is the pool's; the CA, the pooler's certificate and their checks are openssl
        engines.require(engine, "pool")
        tls.need_openssl()
    report = Report(dry_run=spec.dry_run)
    if placed:
        report.add("placement", OK, placed)
    key = engine.server_id()
    if batch is not None and key in batch.servers:
        server = batch.servers[key]
        report.add("server", OK, "converged earlier in this run")
    else:
        server = converge_server(engine, spec, report)
        if batch is not None:
            batch.servers[key] = server
    if spec.dry_run and not server.reachable:  # a server that is not there or not running yet
        _preview_tenant(spec, tenant, server.new, report)
        _converge_pool(spec, engine, tenant, "", settings, report)
        return Result(report, {}, engine.name)
    conn = batch.sessions.get(key) if batch is not None else None
    if conn is None:
        conn = engine.admin_connect()
        lock(conn)
        if batch is not None:
            batch.sessions[key] = conn
    try:
        if resuming:
            _require_kept_database(conn, spec, tenant)
        password, new_password, state = _converge(spec, engine, tenant, conn, existing, report)
    finally:
        if batch is None:
            conn.close()
    if spec.enable_cloud and not spec.dry_run:  # the CA's contact is the ADMIN_EMAIL of the install that makes it
        tls.make_ca(spec.paths.state_dir, spec.admin_email)
    pool_port = _converge_pool(spec, engine, tenant, state.role["rolpassword"] if state.role else "", settings, report)
    ca_copy = _ca_copy(spec, report)
    env = env_values(spec, engine, tenant, new_password or password, state, pool_port, settings, ca_copy)
    if spec.dry_run:
        report.add(".env", _file_action(paths.env_file, envfile.render(env, HEADER)), str(paths.env_file))
        return Result(report, env, engine.name)
    _write_env(paths, env, report)
    resumed = paths.component_dir / "suspended.json"
    if resumed.exists():  # after the .env that replaces it: a run killed in between is resumed again
        resumed.unlink()
        report.add("resume", CHANGE, "suspended client resumed: LOGIN, CONNECT/TEMPORARY and a new password")
    _drop_samples(spec, report, env)
    _log_rotation(report)
    registry.client_installed(spec.root, env, report)  # AgencyStack's component registry (registry.py)
    if batch is not None and not report.changed:
        report.add("tenant login", OK, "password matches the role; nothing changed, so the login is as checked before")
    else:
        _check_login(engine, tenant, env["PGVECTOR_DB_PASS"], report, pool_port)
    return Result(report, env, engine.name)


def converge_server(engine, spec: Spec, report: Report) -> ServerPlan:
    """observe -> plan -> apply for the server, again while a step reveals more (a container must run before its
    pgvector can be asked for). A dry run stops after the first plan: its rows are what the real run starts with."""
    with engine.server_lock():
        for round_ in range(4):
            server = engine.plan_server(engine.observe(), create=spec.with_deps)
            if round_ == 0:
                _preflight_ports(engine, spec, server.new)
            apply(server.steps, report, spec.dry_run)
            if spec.dry_run or not server.again:
                return server
    raise UserError(f"The {engine.name} server for {spec.client_id} did not settle after four rounds: "
                    f"check make pgvector-status CLIENT_ID={spec.client_id}, then re-run.")


def _require_kept_database(conn, spec: Spec, tenant: Tenant) -> None:
    """A resume brings back the data KEEP_DATA kept: an empty new database in its place would hide its loss."""
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (tenant.database,))
        if cur.fetchone() is None:
            raise UserError(f"Client {spec.client_id} is suspended, but its database {tenant.database} is no longer on "
                            f"the recorded server: nothing was created. Restore it from the archived backup after a "
                            f"fresh install (remove {spec.paths.component_dir}/suspended.json, make pgvector, "
                            "make pgvector-restore FILE=...).")


def _preflight_ports(engine, spec: Spec, new_server: bool) -> None:
    """Before anything is created: a new server and its pooler each need a port of their own from the range (the
    server's may be PORT=...). Found short only after initdb, a run would leave a server no command lists."""
    state = spec.paths.state_dir
    wanted = 1 if ports.owned(state, f"{engine.pool_key()}/pool") is None else 0
    if new_server and engine.capabilities.owns_server and not spec.port:
        wanted += 1
    if not wanted:
        return
    first, last = ports.port_range()
    free = 0
    for port in range(first, last + 1):
        if port != spec.port and not (ports.registry(state) / str(port)).exists() and ports.port_is_free(port):
            free += 1
            if free == wanted:
                return
    raise UserError(f"{free} free port(s) between {first} and {last} on this host, {wanted} needed (the server and "
                    "its pooler): nothing was created. Free some, or widen PGVECTOR_PORT_RANGE.")


def _preview_tenant(spec: Spec, tenant: Tenant, new_server: bool, report: Report) -> None:
    """Dry run without a running server: a new server holds nothing, so the tenant's plan is the plan from nothing;
    an existing server that is not running is read once it runs."""
    if new_server:
        empty = State(None, {}, {}, available="as shipped")
        for step in plan(empty, tenant, None, False, str(spec.paths.env_file)).steps:
            report.add(step.item, step.action, step.detail)
    else:
        report.add(f"tenant {tenant.database}/{tenant.role}", CHANGE, "planned once the server runs (it does not now)")
    report.add(".env", CREATE if not spec.paths.env_file.exists() else CHANGE, str(spec.paths.env_file))


def _converge_pool(spec: Spec, engine, tenant: Tenant, verifier: str, settings: dict, report: Report) -> int:
    """The client's pool on the pooler in front of its server (pooler.py), with the role's verifier as the server
    has it now. Returns the pool's port (0: the engine has no pool)."""
    if not engine.capabilities.pool:
        return 0
    point = engine.endpoint() if not spec.dry_run or verifier else None
    host = point.host if point else "127.0.0.1"
    if not re.fullmatch(r"[A-Za-z0-9.:-]{1,253}", host):
        raise UserError(f"The server's host {host[:60]!r} cannot be written into PgBouncer's configuration: "
                        "use a host name or an IP address in ADMIN_URL.")
    entry = pooler.Entry(spec.client_id, tenant.database, tenant.role, verifier, host, point.port if point else 0,
                         settings["mode"], settings["size"], settings["max_connections"], spec.enable_cloud, spec.domain)
    pool = pooler.converge(engine, spec.client_id, entry, report, spec.dry_run)
    return pool.port() or ports.preview(spec.paths.state_dir, pool.layout.port_owner)


def _ca_copy(spec: Spec, report: Report) -> str:
    """ENABLE_CLOUD: the installation's CA beside the .env (PGVECTOR_TLS_CA), for verify-full clients to trust."""
    copy = spec.paths.component_dir / "pooler-ca.crt"
    if not spec.enable_cloud:
        if copy.exists() and not spec.dry_run:
            copy.unlink()
            report.add("TLS CA copy", CHANGE, f"{copy} removed (ENABLE_CLOUD off)")
        return ""
    source = tls.ca_cert(spec.paths.state_dir)
    data = source.read_bytes() if source.exists() else b""
    action = (OK if envfile.holds(copy, data, 0o644) else CHANGE if copy.exists() else CREATE) if data else CREATE
    if not spec.dry_run:
        _client_dirs(spec.paths)
        envfile.write_atomic(copy, data, mode=0o644)
    report.add("TLS CA copy", action, f"{copy} (PGVECTOR_TLS_CA in .env)")
    return str(copy)


def _converge(spec: Spec, engine, tenant: Tenant, conn, existing: dict, report: Report):
    paths = spec.paths
    state = read_state(conn, tenant, engine.admin_connect)
    password = existing.get("PGVECTOR_DB_PASS")
    pending_file = paths.component_dir / PENDING
    if pending_file.exists():  # an interrupted run set (or was about to set) this one
        pending = pending_file.read_text().strip()
        if state.role and scram.verify(pending, state.role["rolpassword"]):
            password = pending
    tenant_plan = plan(state, tenant, password, spec.force, str(paths.env_file))
    if tenant_plan.refusal:
        raise UserError(tenant_plan.refusal)
    steps, new_password = tenant_plan.steps, tenant_plan.new_password
    if not spec.dry_run:
        if new_password:
            envfile.write_atomic(pending_file, new_password + "\n")
        apply_sql(steps, engine.admin_connect, conn)
        if any(step.action != OK for step in steps):
            unread = not state.db_readable
            state = read_state(conn, tenant, engine.admin_connect)
            if unread:  # the database refused connections until the first round reset it: now what is inside it
                inside = plan(state, tenant, new_password or password, False, str(paths.env_file)).steps
                inside = [step for step in inside if step.database != "postgres"]
                apply_sql(inside, engine.admin_connect, conn)
                steps += inside
                state = read_state(conn, tenant, engine.admin_connect)
    record(report, steps, conn)
    return password, new_password, state


HEADER = """Managed by agency-pgvector (make pgvector). Mode 0600: it holds the tenant's password.
Use: set -a; . ./.env; set +a   then psql, or any libpq / DATABASE_URL client."""


def env_values(spec: Spec, engine, tenant: Tenant, password: str, state, pool_port: int = 0, settings: dict | None = None,
               ca_copy: str = "") -> dict:
    point = engine.endpoint()
    every = engine.endpoints()
    hosts = ",".join(f"{p.host}:{p.port}" for p in every)
    url = f"postgresql://{tenant.role}:{password}@{hosts}/{tenant.database}"
    pool = settings or pooler.DEFAULTS
    env = {
        "CLIENT_ID": spec.client_id,
        "DOMAIN": spec.domain,
        "ADMIN_EMAIL": spec.admin_email,
        "PGVECTOR_ENGINE": engine.name,
        "PGVECTOR_SERVER": engine.recorded_server(),
        "PGVECTOR_HOST": point.host,
        "PGVECTOR_PORT": str(point.port),
        "PGVECTOR_DB_NAME": tenant.database,
        "PGVECTOR_DB_USER": tenant.role,
        "PGVECTOR_DB_PASS": password,
        "PGVECTOR_VERSION": state.extension or state.available or "",
        "POSTGRES_VERSION": state.version.split()[0],
        "PGHOST": ",".join(p.host for p in every),
        "PGPORT": ",".join(str(p.port) for p in every),
        "PGDATABASE": tenant.database,
        "PGUSER": tenant.role,
        "PGPASSWORD": password,
        "DATABASE_URL": url,
    }
    if len(every) > 1:  # a cluster: libpq tries each member and keeps the one that takes writes
        env.update({
            "PGTARGETSESSIONATTRS": "read-write",
            # A member's port is free while it restarts (switchover, rolling restart, crash) and anyone on the host
            # may bind it: libpq 16+ then refuses any authentication but SCRAM, which never sends the password.
            "PGREQUIREAUTH": "scram-sha-256",
            "DATABASE_URL": f"{url}?target_session_attrs=read-write",
            "DATABASE_READ_URL": f"{url}?target_session_attrs=prefer-standby",  # vector search on a replica
        })
    if not engine.capabilities.pool:
        return env
    env.update({
        # Through PgBouncer (pooler.py): the same database and login, another port.
        "PGVECTOR_POOL_HOST": "127.0.0.1",
        "PGVECTOR_POOL_PORT": str(pool_port),
        "PGVECTOR_POOL_MODE": pool["mode"],
        "PGVECTOR_POOL_SIZE": str(pool["size"]),
        "PGVECTOR_POOL_MAX_CONNECTIONS": str(pool["max_connections"]),
        "DATABASE_POOL_URL": f"postgresql://{tenant.role}:{password}@127.0.0.1:{pool_port}/{tenant.database}",
    })
    if ca_copy:  # ENABLE_CLOUD: the pool from other hosts, TLS verified against the installation's CA
        env.update({
            "PGVECTOR_REMOTE_HOST": spec.domain,
            "PGVECTOR_TLS_CA": ca_copy,
            "PGVECTOR_TLS_SHA256": tls.fingerprint(Path(ca_copy)),
            "PGVECTOR_REMOTE_SSLMODE": "verify-full",  # not in the URL: '?' and '&' have no place in a sourced .env
            "DATABASE_REMOTE_URL": f"postgresql://{tenant.role}:{password}@{spec.domain}:{pool_port}/{tenant.database}",
        })
    return env


def _file_action(path, text: str) -> str:
    if envfile.read_nofollow(path) is None:
        return CREATE
    return OK if envfile.holds(path, text.encode()) else CHANGE


def _write_env(paths, env: dict, report: Report) -> None:
    text = envfile.render(env, HEADER)
    action = _file_action(paths.env_file, text)
    _client_dirs(paths)
    envfile.write_atomic(paths.env_file, text)
    pending = paths.component_dir / PENDING
    for leftover in (pending, *paths.component_dir.glob(f".{PENDING}.*.tmp")):  # and a write of it a kill cut short
        leftover.unlink(missing_ok=True)
    report.add(".env", action, f"{paths.env_file} (0600)")


def _log_rotation(report: Report) -> None:
    """/etc/logrotate.d/agency-pgvector names every server's and pooler's log: a new one joins it here."""
    from .ops.schedule import write_logrotate

    path, changed = write_logrotate()
    report.add("log rotation", CHANGE if changed else OK, str(path))


def _client_dirs(paths) -> None:
    """clients/ and clients/<id>/ are traversable (the server user needs a path to its data);
    clients/<id>/pgvector/ is root's alone."""
    for folder, mode in ((paths.client_dir.parent, 0o711), (paths.client_dir, 0o711)):
        ensure_dir(folder, mode)
    envfile.ensure_private_dir(paths.component_dir)


def _drop_samples(spec: Spec, report: Report, env: dict | None = None) -> None:
    """Each sample written like the .env (temp file + rename, 0600, in trusted 0700 directories): a link planted
    at a sample's path is replaced, never followed."""
    paths = spec.paths
    target = paths.samples_dir
    names = _sample_files()
    changed = 0
    for folder in sorted({folder for name in names for folder in name.parents}, key=lambda f: len(f.parts)):
        envfile.ensure_private_dir(target / folder)  # ".", then "migrations", "migrations/versions": each once
    for name in names:
        data = (SAMPLES_DIR / name).read_bytes()
        if not envfile.holds(target / name, data):  # the common case on a re-run: nothing to write
            changed += envfile.write_atomic(target / name, data)
    report.add("samples", (CREATE if changed == len(names) else CHANGE) if changed else OK, f"{len(names)} files in {target}")
    readme = render("client-README.md.j2", client_id=spec.client_id, domain=spec.domain, paths=paths, env=env or {})
    action = _file_action(paths.component_dir / "README.md", readme)
    envfile.write_atomic(paths.component_dir / "README.md", readme)
    report.add("README.md", action, str(paths.component_dir / "README.md"))


def _sample_files() -> list:
    """The sample sources under samples/ as relative paths, subdirectories included (the Alembic migrations);
    never dot-files, __pycache__ or outputs a sample run may have left there (plots, JSON)."""
    return sorted(
        path.relative_to(SAMPLES_DIR) for path in SAMPLES_DIR.rglob("*")
        if path.is_file() and path.suffix in SAMPLE_SUFFIXES
        and not any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(SAMPLES_DIR).parts)
    )


def _check_login(engine, tenant: Tenant, password: str, report: Report, pool_port: int = 0) -> None:
    """Prove the .env works the way apps use it: a TCP login with the tenant's own password, direct and pooled."""
    import psycopg2

    from . import sessions

    point = engine.endpoint()
    try:
        conn = sessions.tenant(dict(PGHOST=point.host, PGPORT=point.port, PGUSER=tenant.role, PGPASSWORD=password,
                                    PGDATABASE=tenant.database))
        with conn.cursor() as cur:
            # qualified: a tenant's own type or operator named vector / <=> in public must not fail the check
            cur.execute(f"SELECT '[1,2,3]'::{EXTENSION_SCHEMA}.vector OPERATOR({EXTENSION_SCHEMA}.<=>) "
                        f"'[1,2,4]'::{EXTENSION_SCHEMA}.vector")
        conn.close()
    except psycopg2.Error as exc:
        raise UserError(f"The tenant could not log in with its .env ({first_line(exc)}): check the server's "
                        f"pg_hba.conf allows {tenant.role} from {point.host} with scram-sha-256.") from None
    pooled = ""
    if pool_port:
        try:
            sessions.pooled(tenant.role, password, tenant.database, pool_port).close()
        except psycopg2.Error as exc:
            raise UserError(f"The tenant could not log in through the pool with its .env ({first_line(exc)}): check "
                            f"make pgvector-logs POOLER=true CLIENT_ID={engine.spec.client_id}.") from None
        pooled = f", and through the pool on port {pool_port}"
    report.add("tenant login", OK, f"{tenant.role}@{point.host}:{point.port}/{tenant.database}, vector type usable{pooled}")


def update_env(paths, changes: dict) -> None:
    """Change some keys of an existing .env (same atomic 0600 write)."""
    env = envfile.read(paths.env_file)
    if env and any(env.get(k) != v for k, v in changes.items()):
        env.update(changes)
        envfile.write_atomic(paths.env_file, envfile.render(env, HEADER))


def installed_spec(client_id: str, **flags) -> Spec:
    """The spec a client was installed with, from its .env (contact, remote access), for re-converging it."""
    from . import spec as specs

    env = envfile.read(specs.Paths(specs.root_from_env(), client_id).env_file)
    spec = specs.build(client_id, env.get("DOMAIN", ""), env.get("ADMIN_EMAIL", ""), require_contact=False,
                       enable_cloud="PGVECTOR_TLS_SHA256" in env, **flags)
    return replace(spec, pool=specs.PoolSettings())  # as recorded in the .env


def install_all(*, dry_run: bool, with_deps: bool) -> list[tuple[str, Result | None, str]]:
    """`make pgvector ALL=true`: converge every installed client in this one process (an upgrade of the installer
    applies to existing clients this way). One client's failure is reported and the others go on."""
    from .ops.common import installed_clients

    outcomes: list[tuple[str, Result | None, str]] = []
    batch = Batch()
    try:
        for client_id in installed_clients():
            try:
                result = install(installed_spec(client_id, dry_run=dry_run, with_deps=with_deps), batch)
                outcomes.append((client_id, result, ""))
            except UserError as exc:  # logged by its operation; the others go on, on fresh sessions
                outcomes.append((client_id, None, str(exc)))
                batch.close()
    finally:
        batch.close()
    return outcomes
