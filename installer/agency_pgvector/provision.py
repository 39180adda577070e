"""A client's tenant as desired state: read what the server has, plan the difference, apply only that.

Every statement is built with psycopg2.sql; the password reaches the server only as a SCRAM verifier
hashed here, so it is in no statement text, argv or server log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg2 import sql

from . import scram
from .errors import UserError
from .report import CHANGE, CREATE, OK, Report
from .runner import Step

ROLE_FLAGS = {  # pg_authid column -> the keyword that sets it the way a tenant needs it
    "rolsuper": "NOSUPERUSER",
    "rolcreatedb": "NOCREATEDB",
    "rolcreaterole": "NOCREATEROLE",
    "rolreplication": "NOREPLICATION",
    "rolbypassrls": "NOBYPASSRLS",
}
LOCK_KEY = "agency-pgvector"  # one advisory lock per server: provisioning runs are short, never interleaved


EXTENSION_SCHEMA = "extensions"  # owned by the superuser: the tenant has USAGE, never CREATE (see read_state)
# What a tenant on a shared server could read of its neighbours' sessions; revoked from PUBLIC in its database.
STAT_VIEWS = ("pg_stat_activity", "pg_stat_database", "pg_stat_database_conflicts", "pg_stat_ssl", "pg_stat_gssapi", "pg_locks")
STAT_FUNCTIONS = ("pg_stat_get_activity(integer)", "pg_stat_get_backend_idset()", "pg_stat_get_backend_userid(integer)",
                  "pg_stat_get_backend_dbid(integer)", "pg_stat_get_db_numbackends(oid)")
DB_FLAGS = {"datistemplate": False, "datallowconn": True, "datconnlimit": -1}  # what a tenant may change on its database


@dataclass(frozen=True)
class Tenant:
    database: str
    role: str
    shared: bool = False  # the server holds other clients' tenants too
    connection_limit: int = 50
    settings: tuple[tuple[str, str], ...] = (
        ("statement_timeout", "5min"), ("idle_in_transaction_session_timeout", "10min"),
        ("search_path", f'"$user", public, {EXTENSION_SCHEMA}'),  # unqualified `vector`, `<=>` keep working
    )

    @classmethod
    def for_client(cls, client_id: str, shared: bool) -> Tenant:
        if not shared:
            return cls("vectordb", "vectoruser")
        suffix = client_id.replace("-", "_")
        return cls(f"vectordb_{suffix}", f"vectoruser_{suffix}", shared=True)


@dataclass
class State:
    """What the server has for this tenant, read over pinned operator sessions (catalogs only)."""

    role: dict | None
    role_settings: dict
    databases: dict  # name -> {owner, public_connect, public_temp, public_create, datistemplate, datallowconn, datconnlimit}
    db_settings: list = field(default_factory=list)  # the tenant's database: its own defaults and its role's in it
    extension: str | None = None  # installed vector version in the tenant database
    extension_schema: str | None = None
    available: str | None = None  # default_version the server offers
    schema: dict | None = None  # public: owner, public_create
    ext_schema: dict | None = None  # extensions: owner, owner_super, create (anyone but superusers may CREATE)
    stats_open: bool | None = None  # PUBLIC may read the session statistics in the tenant database
    version: str = ""
    db_readable: bool = True  # False while the tenant's database refuses connections (ALLOW_CONNECTIONS false)


def terminate(cur, role: str) -> None:
    """End every session of `role` (operator session; REVOKE or NOLOGIN alone leave open sessions running)."""
    cur.execute("SELECT pg_catalog.count(pg_catalog.pg_terminate_backend(pid)) "
                "FROM pg_catalog.pg_stat_activity WHERE usename = %s", (role,))


def lock(conn) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_catalog.pg_advisory_lock(pg_catalog.hashtext(%s))", (LOCK_KEY,))


def read_state(conn, tenant: Tenant, connect_db) -> State:
    """`conn` and `connect_db` give operator sessions (sessions.operator): search_path pinned to pg_catalog."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT oid, rolcanlogin, rolconnlimit, rolpassword, " + ", ".join(ROLE_FLAGS)
            + " FROM pg_catalog.pg_authid WHERE rolname = %s",
            (tenant.role,),
        )
        row = cur.fetchone()
        role = dict(zip(["oid", "rolcanlogin", "rolconnlimit", "rolpassword", *ROLE_FLAGS], row, strict=True)) if row else None
        settings = {}
        if role:
            cur.execute("SELECT pg_catalog.unnest(setconfig) FROM pg_catalog.pg_db_role_setting "
                        "WHERE setdatabase = 0 AND setrole = %s", (role["oid"],))
            settings = dict(entry.split("=", 1) for (entry,) in cur.fetchall())
        cur.execute(
            """SELECT datname, pg_catalog.pg_get_userbyid(datdba),
                      pg_catalog.has_database_privilege('public', oid, 'CONNECT'),
                      pg_catalog.has_database_privilege('public', oid, 'TEMPORARY'),
                      pg_catalog.has_database_privilege('public', oid, 'CREATE'),
                      datistemplate, datallowconn, datconnlimit,
                      EXISTS (SELECT FROM pg_catalog.pg_roles o WHERE o.rolname = %s
                              AND pg_catalog.has_database_privilege(o.oid, d.oid, 'CONNECT')),
                      (SELECT pg_catalog.array_agg(c ORDER BY c)
                       FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) c
                       WHERE s.setdatabase = d.oid AND (s.setrole = 0 OR s.setrole = %s))
               FROM pg_catalog.pg_database d WHERE datname = ANY(%s)""",
            (tenant.role, role["oid"] if role else 0, [tenant.database, "postgres", "template1"]),
        )
        databases, db_settings = {}, []
        for name, owner, c, t, k, template, allow, limit, tenant_connect, configured in cur.fetchall():
            databases[name] = dict(owner=owner, public_connect=c, public_temp=t, public_create=k,
                                   datistemplate=template, datallowconn=allow, datconnlimit=limit, tenant_connect=tenant_connect)
            if name == tenant.database:
                db_settings = list(configured or [])
        cur.execute("SELECT pg_catalog.current_setting('server_version'), "
                    "(SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = 'vector')")
        version, available = cur.fetchone()
    state = State(role, settings, databases, db_settings, available=available, version=version)
    found = databases.get(tenant.database)
    if found is not None and not found["datallowconn"]:
        state.db_readable = False  # nobody may connect until the flag is reset (the plan's first step does)
    elif found is not None:
        same = conn.info.dbname == tenant.database  # shared catalogs are readable from any database
        tconn = conn if same else connect_db(tenant.database)
        try:
            _read_database(tconn, tenant, state)
        finally:
            if not same:
                tconn.close()
    return state


def _read_database(conn, tenant: Tenant, state: State) -> None:
    with conn.cursor() as cur:
        cur.execute("""SELECT e.extversion, n.nspname FROM pg_catalog.pg_extension e
                       JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'""")
        state.extension, state.extension_schema = cur.fetchone() or (None, None)
        cur.execute(
            """SELECT n.nspname, pg_catalog.pg_get_userbyid(n.nspowner), r.rolsuper,
                      pg_catalog.has_schema_privilege('public', n.oid, 'CREATE'),
                      EXISTS (SELECT FROM pg_catalog.pg_roles o WHERE NOT o.rolsuper AND o.rolname !~ '^pg_'
                              AND pg_catalog.has_schema_privilege(o.oid, n.oid, 'CREATE')),
                      EXISTS (SELECT FROM pg_catalog.pg_roles o WHERE o.rolname = %s
                              AND pg_catalog.has_schema_privilege(o.oid, n.oid, 'USAGE'))
               FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
               WHERE n.nspname IN ('public', %s)""", (tenant.role, EXTENSION_SCHEMA))
        for name, owner, owner_super, public_create, anyone_create, usage in cur.fetchall():
            if name == "public":
                state.schema = dict(owner=owner, public_create=public_create)
            else:
                state.ext_schema = dict(owner=owner, owner_super=owner_super, create=public_create or anyone_create, usage=usage)
        if tenant.shared:
            cur.execute("""SELECT pg_catalog.bool_or(pg_catalog.has_table_privilege('public', 'pg_catalog.' || v, 'SELECT'))
                                  OR (SELECT pg_catalog.bool_or(
                                                 pg_catalog.has_function_privilege('public', 'pg_catalog.' || f, 'EXECUTE'))
                                      FROM pg_catalog.unnest(%s::text[]) f)
                           FROM pg_catalog.unnest(%s::text[]) v""", (list(STAT_FUNCTIONS), list(STAT_VIEWS)))
            state.stats_open = cur.fetchone()[0]


@dataclass
class TenantPlan:
    steps: list[Step]
    new_password: str | None = None  # set when a step gives the role a new password
    refusal: str | None = None  # why this plan must not be applied as it is (the operator decides: FORCE)


def plan(state: State, tenant: Tenant, password: str | None, force: bool, env_file: str) -> TenantPlan:
    """The steps that bring the server to the desired tenant: a pure diff, it never refuses by raising. The .env's
    password not matching the role is a step like the others; `refusal` says it needs FORCE to be applied."""
    if state.available is None:
        raise UserError("The server has no pgvector extension available (pg_available_extensions "
                        "has no 'vector'): install pgvector on it and re-run.")
    role, db = sql.Identifier(tenant.role), sql.Identifier(tenant.database)
    steps: list[Step] = []
    new_password = refusal = None

    # role, with the attributes of a tenant and nothing more
    flags = sql.SQL(" ".join(["LOGIN", *ROLE_FLAGS.values(), "CONNECTION LIMIT"]))
    if state.role is None:
        new_password = password or scram.generate()
        steps.append(Step(f"role {tenant.role}", CREATE, "login, no superuser/createdb/createrole/replication/bypassrls", [
            (sql.SQL("CREATE ROLE {} {} {} PASSWORD %s").format(role, flags, sql.Literal(tenant.connection_limit)),
             (scram.hash_password(new_password),)),
        ]))
    else:
        wrong = [kw for col, kw in ROLE_FLAGS.items() if state.role[col]]
        if not state.role["rolcanlogin"]:
            wrong.insert(0, "LOGIN")
        if state.role["rolconnlimit"] != tenant.connection_limit:
            wrong.append(f"CONNECTION LIMIT {tenant.connection_limit}")
        steps.append(Step(f"role {tenant.role}", CHANGE if wrong else OK, " ".join(wrong) or "attributes as provisioned", [
            (sql.SQL("ALTER ROLE {} {} {}").format(role, flags, sql.Literal(tenant.connection_limit)), None),
        ] if wrong else []))
        matches = password is not None and scram.verify(password, state.role["rolpassword"])
        if force or not matches:
            if not force:
                why = "has no password recorded" if password is None else "holds a password the role does not have (drift)"
                refusal = (f"{env_file} {why} for role {tenant.role}: re-run with FORCE=true to set a "
                           "new password and rewrite .env (apps using the old one must be updated).")
            new_password = scram.generate()
            steps.append(Step("password", CHANGE, "new password (FORCE), old sessions terminated" if force
                              else f"{env_file} does not match the role: needs FORCE", statements=[
                (sql.SQL("ALTER ROLE {} PASSWORD %s").format(role), (scram.hash_password(new_password),)),
                (sql.SQL("SELECT pg_catalog.count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity "
                         "WHERE usename = %s AND pid <> pg_catalog.pg_backend_pid()"), (tenant.role,)),
            ]))
        else:
            steps.append(Step("password", OK, f"matches {env_file}"))

    # per-role defaults: a runaway query cannot hold the server, and the extension's schema is on the path
    wanted = dict(tenant.settings)
    drift = {k: v for k, v in wanted.items() if state.role_settings.get(k) != v}
    steps.append(Step("role settings", (CREATE if state.role is None else CHANGE) if drift else OK,
                      ", ".join(f"{k}={v}" for k, v in wanted.items() if k != "search_path")
                      + f", search_path with {EXTENSION_SCHEMA}",
                      [(_set_role(role, k, v), None) for k, v in drift.items()]))

    # the tenant's database, owned by the tenant (PostgreSQL 15+: the owner owns schema public)
    found = state.databases.get(tenant.database)
    if found is None:
        steps.append(Step(f"database {tenant.database}", CREATE, f"owner {tenant.role}, template0, UTF8", [
            (sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING 'UTF8'").format(db, role), None),
        ]))
    elif found["owner"] != tenant.role:
        steps.append(Step(f"database {tenant.database}", CHANGE, f"owner {found['owner']} -> {tenant.role}", [
            (sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, role), None),
        ]))
    else:
        steps.append(Step(f"database {tenant.database}", OK, f"owner {tenant.role}"))
    if found is not None:
        steps.extend(_owner_controlled(found, state.db_settings, tenant))

    # nobody but the owner may connect: PUBLIC loses everything on the tenant's and the maintenance databases
    public = (found is None or found["public_connect"] or found["public_temp"] or found["public_create"]
              or not found.get("tenant_connect", True))  # an uninstall with KEEP_DATA revoked it
    steps.append(Step("database privileges", (CREATE if found is None else CHANGE) if public else OK,
                      "PUBLIC revoked, owner has CONNECT/TEMPORARY", [
        (sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db), None),
        (sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(db, role), None),
    ] if public else []))
    open_dbs = [name for name in ("postgres", "template1") if state.databases.get(name, {}).get("public_connect")]
    steps.append(Step("maintenance databases", CHANGE if open_dbs else OK, "PUBLIC cannot connect to postgres, template1", [
        (sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)), None) for name in open_dbs
    ]))
    if found is None:
        steps.extend(database_steps(State(None, {}, {}, available=state.available, version=state.version), tenant,
                                    tenant.database, new=True))
    elif state.db_readable:
        steps.extend(database_steps(state, tenant, tenant.database))
    return TenantPlan(steps, new_password, refusal)


def _set_role(role, name: str, value: str):
    if name == "search_path":  # a list: each element its own identifier, or the whole string becomes one schema name
        items = sql.SQL(", ").join(sql.Identifier(part.strip().strip('"')) for part in value.split(","))
        return sql.SQL("ALTER ROLE {} SET search_path TO {}").format(role, items)
    return sql.SQL("ALTER ROLE {} SET {} = {}").format(role, sql.Identifier(name), sql.Literal(value))


def _owner_controlled(found: dict, db_settings: list, tenant: Tenant) -> list[Step]:
    """What the owner may set on its own database and what would then reach every session in it, ours included
    (IS_TEMPLATE, ALLOW_CONNECTIONS, CONNECTION LIMIT, ALTER DATABASE/ROLE IN DATABASE ... SET): back to none."""
    db, role = sql.Identifier(tenant.database), sql.Identifier(tenant.role)
    wrong = {k: v for k, v in DB_FLAGS.items() if found[k] != v}
    steps = [Step("database options", CHANGE if wrong else OK,
                  ", ".join(f"{k} {found[k]} -> {v}" for k, v in wrong.items())
                  or "not a template, allows connections, no limit", [
                      (sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false ALLOW_CONNECTIONS "
                               "true CONNECTION LIMIT -1").format(db), None),
                  ] if wrong else [])]
    steps.append(Step("database settings", CHANGE if db_settings else OK,
                      ("reset " + ", ".join(s.split("=", 1)[0] for s in db_settings))
                      if db_settings else "none set on the database", [
                          (sql.SQL("ALTER DATABASE {} RESET ALL").format(db), None),
                          (sql.SQL("ALTER ROLE {} IN DATABASE {} RESET ALL").format(role, db), None),
                      ] if db_settings else []))
    return steps


def database_steps(state: State, tenant: Tenant, dbname: str, new: bool = False) -> list[Step]:
    """Inside the tenant's database (or a restore's staging copy): pgvector in a schema the tenant cannot write,
    public owned by the tenant, session statistics hidden on shared servers."""
    role, ext = sql.Identifier(tenant.role), sql.Identifier(EXTENSION_SCHEMA)
    steps: list[Step] = []
    schema = state.ext_schema
    if schema is not None and not schema["owner_super"]:
        # Created by the tenant before the installer (the owner of a database may create schemas in it): its objects
        # would be on the path of pgvector's scripts, which run as superuser. Never adopted.
        raise UserError(f"Schema {EXTENSION_SCHEMA} in database {dbname} belongs to {schema['owner']}, not "
                        "a superuser: pgvector must live in a schema only superusers can write. Rename it "
                        f"as its owner (ALTER SCHEMA {EXTENSION_SCHEMA} RENAME TO ...) and re-run.")
    grant = [(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(ext), None),
             (sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ext, role), None)]
    if schema is None:
        steps.append(Step(f"schema {EXTENSION_SCHEMA}", CREATE, f"owned by the superuser, USAGE for {tenant.role}",
                          [(sql.SQL("CREATE SCHEMA {}").format(ext), None), *grant], database=dbname))
    elif schema["create"] or not schema.get("usage", True):
        steps.append(Step(f"schema {EXTENSION_SCHEMA}", CHANGE, f"only superusers may create in it, USAGE for {tenant.role}", [
            (sql.SQL("REVOKE CREATE ON SCHEMA {} FROM PUBLIC").format(ext), None),
            (sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(ext, role), None), *grant], database=dbname))
    else:
        steps.append(Step(f"schema {EXTENSION_SCHEMA}", OK, f"owned by {schema['owner']}, USAGE for {tenant.role}"))

    # pgvector: created by the superuser (not a trusted extension), its scripts see no schema the tenant can write
    if state.extension is None:
        steps.append(Step("extension vector", CREATE, f"pgvector {state.available} in schema {EXTENSION_SCHEMA}", [
            (sql.SQL("CREATE EXTENSION vector SCHEMA {}").format(ext), None),
        ], database=dbname))
    elif state.extension_schema != EXTENSION_SCHEMA:
        steps.append(Step("extension vector", CHANGE, f"moved from schema {state.extension_schema} to {EXTENSION_SCHEMA}", [
            (sql.SQL("ALTER EXTENSION vector SET SCHEMA {}").format(ext), None),
        ], database=dbname))
    else:
        note = f" (pgvector {state.available} available: make pgvector-upgrade)" if state.extension != state.available else ""
        steps.append(Step("extension vector", OK, f"pgvector {state.extension}{note}"))

    public, major = state.schema, int(state.version.split(".")[0]) if state.version else 15
    old_public = public is None and new and major < 15  # before 15, PUBLIC could CREATE in public
    if old_public or (public is not None
                      and (public["owner"] not in (tenant.role, "pg_database_owner") or public["public_create"])):
        steps.append(Step("schema public", CHANGE, f"owner {tenant.role}, PUBLIC has no CREATE", [
            (sql.SQL("ALTER SCHEMA public OWNER TO {}").format(role), None),
            (sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"), None),
        ], database=dbname))

    if tenant.shared and state.stats_open is not False:
        steps.append(Step("session statistics", CREATE if state.stats_open is None else CHANGE,
                          "other tenants' sessions and databases hidden (pg_stat_activity, pg_stat_database, ...)", [
                              (sql.SQL("REVOKE SELECT ON {} FROM PUBLIC").format(sql.SQL(", ").join(
                                  sql.SQL("pg_catalog.{}").format(sql.Identifier(v)) for v in STAT_VIEWS)), None),
                              *[(sql.SQL("REVOKE EXECUTE ON FUNCTION pg_catalog.{} FROM PUBLIC").format(sql.SQL(f)), None)
                                for f in STAT_FUNCTIONS],
                          ], database=dbname))
    return steps


def apply(steps: list[Step], connect_db, admin_conn) -> None:
    """Run the statements of every step that is not ok, each on the database it names."""
    conns = {"postgres": admin_conn}
    try:
        for step in steps:
            if step.action == OK or not step.statements:
                continue
            if step.database not in conns:
                conns[step.database] = connect_db(step.database)
            with conns[step.database].cursor() as cur:
                for statement, params in step.statements:
                    cur.execute(statement, params)
    finally:
        for name, conn in conns.items():
            if name != "postgres":
                conn.close()


def shown(step: Step, conn) -> list[str]:
    """The statements as text for --dry-run and VERBOSE; a password verifier shows as '***'."""
    lines = []
    with conn.cursor() as cur:
        for statement, params in step.statements:
            text = statement.as_string(conn)
            if "PASSWORD" in text:
                lines.append(text.replace("%s", "'***'"))
            else:
                lines.append(cur.mogrify(text, params).decode() if params else text)
    return lines


def record(report: Report, steps: list[Step], conn=None) -> None:
    for step in steps:
        report.add(step.item, step.action, step.detail, shown(step, conn) if conn is not None else [])
