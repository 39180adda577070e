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

ROLE_FLAGS = {  # pg_authid column -> the keyword that sets it the way a tenant needs it
    "rolsuper": "NOSUPERUSER",
    "rolcreatedb": "NOCREATEDB",
    "rolcreaterole": "NOCREATEROLE",
    "rolreplication": "NOREPLICATION",
    "rolbypassrls": "NOBYPASSRLS",
}
LOCK_KEY = "agency-pgvector"  # one advisory lock per server: provisioning runs are short, never interleaved


@dataclass(frozen=True)
class Tenant:
    database: str
    role: str
    connection_limit: int = 50
    settings: tuple[tuple[str, str], ...] = (("statement_timeout", "5min"), ("idle_in_transaction_session_timeout", "10min"))

    @classmethod
    def for_client(cls, client_id: str, shared: bool) -> "Tenant":
        if not shared:
            return cls("vectordb", "vectoruser")
        suffix = client_id.replace("-", "_")
        return cls(f"vectordb_{suffix}", f"vectoruser_{suffix}")


@dataclass
class Step:
    item: str
    action: str
    detail: str = ""
    statements: list = field(default_factory=list)  # (sql.Composable, params or None)
    database: str = "postgres"  # where the statements run; the tenant's database for the extension


@dataclass
class State:
    """What the server has for this tenant, read in a handful of queries on one connection."""

    role: dict | None
    role_settings: dict
    databases: dict  # name -> {owner, public_connect, public_temp, public_create}
    extension: str | None = None  # installed vector version in the tenant database
    available: str | None = None  # default_version the server offers
    schema: dict | None = None
    version: str = ""


def lock(conn) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(hashtext(%s))", (LOCK_KEY,))


def read_state(conn, tenant: Tenant, connect_db) -> State:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT oid, rolcanlogin, rolconnlimit, rolpassword, " + ", ".join(ROLE_FLAGS) + " FROM pg_authid WHERE rolname = %s",
            (tenant.role,),
        )
        row = cur.fetchone()
        role = dict(zip(["oid", "rolcanlogin", "rolconnlimit", "rolpassword", *ROLE_FLAGS], row)) if row else None
        settings = {}
        if role:
            cur.execute("SELECT unnest(setconfig) FROM pg_db_role_setting WHERE setdatabase = 0 AND setrole = %s", (role["oid"],))
            settings = dict(entry.split("=", 1) for (entry,) in cur.fetchall())
        cur.execute(
            """SELECT datname, pg_get_userbyid(datdba),
                      has_database_privilege('public', oid, 'CONNECT'),
                      has_database_privilege('public', oid, 'TEMPORARY'),
                      has_database_privilege('public', oid, 'CREATE')
               FROM pg_database WHERE datname = ANY(%s)""",
            ([tenant.database, "postgres", "template1"],),
        )
        databases = {name: dict(owner=owner, public_connect=c, public_temp=t, public_create=k) for name, owner, c, t, k in cur.fetchall()}
        cur.execute("SELECT current_setting('server_version'), (SELECT default_version FROM pg_available_extensions WHERE name = 'vector')")
        version, available = cur.fetchone()
    state = State(role, settings, databases, available=available, version=version)
    if tenant.database in databases:
        same = conn.info.dbname == tenant.database  # shared catalogs are readable from any database
        tconn = conn if same else connect_db(tenant.database)
        try:
            with tconn.cursor() as cur:
                cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                found = cur.fetchone()
                state.extension = found[0] if found else None
                cur.execute(
                    """SELECT pg_get_userbyid(nspowner), has_schema_privilege('public', oid, 'CREATE')
                       FROM pg_namespace WHERE nspname = 'public'"""
                )
                found = cur.fetchone()
                state.schema = dict(owner=found[0], public_create=found[1]) if found else None
        finally:
            if not same:
                tconn.close()
    return state


def plan(state: State, tenant: Tenant, password: str | None, force: bool, env_file: str) -> tuple[list[Step], str | None]:
    """Steps that bring the server to the desired tenant, and the new password if one must be set."""
    if state.available is None:
        raise UserError("The server has no pgvector extension available (pg_available_extensions has no 'vector'): install pgvector on it and re-run.")
    role, db = sql.Identifier(tenant.role), sql.Identifier(tenant.database)
    steps: list[Step] = []
    new_password = None

    # role, with the attributes of a tenant and nothing more
    flags = sql.SQL(" ".join(["LOGIN", *ROLE_FLAGS.values(), "CONNECTION LIMIT"]))
    if state.role is None:
        new_password = password or scram.generate()
        steps.append(Step(f"role {tenant.role}", CREATE, "login, no superuser/createdb/createrole/replication/bypassrls", [
            (sql.SQL("CREATE ROLE {} {} {} PASSWORD %s").format(role, flags, sql.Literal(tenant.connection_limit)), (scram.hash_password(new_password),)),
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
                raise UserError(f"{env_file} {why} for role {tenant.role}: re-run with FORCE=true to set a new password and rewrite .env (apps using the old one must be updated).")
            new_password = scram.generate()
            steps.append(Step("password", CHANGE, "new password (FORCE), old sessions terminated", [
                (sql.SQL("ALTER ROLE {} PASSWORD %s").format(role), (scram.hash_password(new_password),)),
                (sql.SQL("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()"), (tenant.role,)),
            ]))
        else:
            steps.append(Step("password", OK, f"matches {env_file}"))

    # per-role defaults that stop one tenant's runaway query from holding the server
    wanted = dict(tenant.settings)
    drift = {k: v for k, v in wanted.items() if state.role_settings.get(k) != v}
    steps.append(Step("role settings", (CREATE if state.role is None else CHANGE) if drift else OK,
                      ", ".join(f"{k}={v}" for k, v in wanted.items()),
                      [(sql.SQL("ALTER ROLE {} SET {} = {}").format(role, sql.Identifier(k), sql.Literal(v)), None) for k, v in drift.items()]))

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

    # nobody but the owner may connect: PUBLIC loses everything on the tenant's and the maintenance databases
    public = found is None or found["public_connect"] or found["public_temp"] or found["public_create"]
    steps.append(Step("database privileges", (CREATE if found is None else CHANGE) if public else OK, "PUBLIC revoked, owner has CONNECT/TEMPORARY", [
        (sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db), None),
        (sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(db, role), None),
    ] if public else []))
    open_dbs = [name for name in ("postgres", "template1") if state.databases.get(name, {}).get("public_connect")]
    steps.append(Step("maintenance databases", CHANGE if open_dbs else OK, "PUBLIC cannot connect to postgres, template1", [
        (sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)), None) for name in open_dbs
    ]))

    # pgvector: created by the superuser (not a trusted extension), in the tenant's own schema public
    if state.extension is None:
        steps.append(Step("extension vector", CREATE, f"pgvector {state.available}", [
            (sql.SQL("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public"), None),
        ], database=tenant.database))
    else:
        note = f" (pgvector {state.available} available: make pgvector-upgrade)" if state.extension != state.available else ""
        steps.append(Step("extension vector", OK, f"pgvector {state.extension}{note}"))

    schema, major = state.schema, int(state.version.split(".")[0])
    old_public = schema is None and found is None and major < 15  # before 15, PUBLIC could CREATE in public
    if old_public or (schema is not None and (schema["owner"] not in (tenant.role, "pg_database_owner") or schema["public_create"])):
        steps.append(Step("schema public", CHANGE, f"owner {tenant.role}, PUBLIC has no CREATE", [
            (sql.SQL("ALTER SCHEMA public OWNER TO {}").format(role), None),
            (sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"), None),
        ], database=tenant.database))
    return steps, new_password


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
