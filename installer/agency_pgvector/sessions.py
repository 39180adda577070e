"""Every database session the installer opens: two kinds on PostgreSQL, and two on a pooler.

operator(engine, dbname)  the server's superuser, for what only a superuser can do (roles, databases,
                          CREATE/ALTER EXTENSION, catalog reads). A tenant owns its database and may
                          `ALTER DATABASE ... SET` any user-settable parameter, `role` included (a superuser's
                          session would then run as the tenant), and owns schema `public`, where a function or
                          operator with looser argument types outranks the catalog's. Connection options outrank
                          every `ALTER DATABASE/ROLE ... SET`, so each operator session starts with the values
                          below pinned: search_path = pg_catalog, pg_temp (nothing in a tenant schema can match
                          a name), no SET ROLE, no timeouts or read-only default of the tenant's, UTF8, and
                          server messages below ERROR dropped (libpq would print a tenant's WARNING raw).
                          It then checks it really is a superuser on the server it meant to reach.
tenant(env, dbname)       the tenant's own login from its .env, for everything that reads or writes the tenant's
                          content (sizes, vector columns, row counts, backup, restore, the self test): code the
                          tenant planted runs with the tenant's rights only. The same pinning keeps the
                          installer's own queries predictable (the tenant's settings cannot stall them).
pooled(...)               the tenant's own login through its pool (a plain SELECT 1: the installer's login check)
pooler_console(...)       root on a PgBouncer console (peer over the pooler's 0700 socket directory)
probe(socket_dir)         root on a throwaway server of new binaries (upgrade.py), trust over its 0700 socket directory

Tools (pg_dump, pg_restore) get the same options through PGOPTIONS in their environment (tool_env).
"""

from __future__ import annotations

import re

CONNECT_TIMEOUT = 10
APPLICATION = "agency-pgvector"

_COMMON = (
    ("role", "none"),
    ("default_transaction_read_only", "off"),
    ("default_transaction_isolation", "read committed"),
    ("client_encoding", "UTF8"),
    ("client_min_messages", "error"),
    ("standard_conforming_strings", "on"),
    ("exit_on_error", "off"),
    ("local_preload_libraries", ""),
    ("default_tablespace", ""),
    ("temp_tablespaces", ""),
    ("lock_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
    ("idle_session_timeout", "0"),  # PostgreSQL 14+
    ("transaction_timeout", "0"),  # PostgreSQL 17+
)
OPERATOR = (("search_path", "pg_catalog, pg_temp"), ("statement_timeout", "0"), *_COMMON)
TENANT = (("search_path", "public, extensions"), ("statement_timeout", "5min"), *_COMMON)
_UNKNOWN = re.compile(r'unrecognized configuration parameter "([a-z_]+)"')
_unsupported: set[str] = set()  # parameters an older server did not know (dropped for the rest of the process)


def options(pinned: tuple[tuple[str, str], ...]) -> str:
    """The libpq `options` string: -c name=value, spaces and backslashes escaped as the server parses them."""
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace(" ", "\\ ")

    return " ".join(f"-c {name}={escape(value)}" for name, value in pinned if name not in _unsupported)


def _connect(params: dict, pinned):
    import psycopg2

    while True:
        try:
            conn = psycopg2.connect(**{**params, "connect_timeout": CONNECT_TIMEOUT, "application_name": APPLICATION,
                                       "options": options(pinned)})  # ours win over any a URL carried
        except psycopg2.OperationalError as exc:
            found = _UNKNOWN.search(str(exc))
            if found and found.group(1) in dict(pinned) and found.group(1) not in _unsupported:
                _unsupported.add(found.group(1))  # a parameter of a newer major: retry without it
                continue
            raise
        conn.autocommit = True
        return conn


def operator(engine, dbname: str = "postgres"):
    """A pinned superuser session on the engine's server (autocommit)."""
    from .errors import UserError

    conn = _connect(engine.admin_params(dbname), OPERATOR)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_catalog.current_setting('is_superuser'), pg_catalog.current_setting('data_directory')")
            superuser, data_directory = cur.fetchone()
    except BaseException:
        conn.close()
        raise
    expected = engine.expected_data_directory()
    if superuser != "on" or (expected is not None and data_directory != str(expected)):
        conn.close()
        what = ("is not a superuser there (CREATE EXTENSION vector needs one: pgvector is not a trusted extension)"
                if superuser != "on" else f"reached a server with another data directory ({data_directory})")
        raise UserError(f"The installer's admin login to the {engine.name} server of client {engine.spec.client_id} {what}: "
                        "nothing was done; check that server and re-run.")
    return conn


def tenant_params(env: dict, dbname: str | None = None) -> dict:
    """From the .env; a cluster's lists every member (PGHOST, PGPORT) and asks for the one that takes writes."""
    params = dict(host=env["PGHOST"], port=env["PGPORT"], user=env["PGUSER"], password=env["PGPASSWORD"],
                  dbname=dbname or env["PGDATABASE"])
    if env.get("PGTARGETSESSIONATTRS"):
        params["target_session_attrs"] = env["PGTARGETSESSIONATTRS"]
    if env.get("PGREQUIREAUTH"):  # the password only in a SCRAM exchange, never in clear to whoever holds a port
        params["require_auth"] = env["PGREQUIREAUTH"]
    return params


def tenant(env: dict, dbname: str | None = None, password: str | None = None):
    """A session with the tenant's own credentials from its .env (autocommit); never the superuser."""
    params = tenant_params(env, dbname)
    if password is not None:
        params["password"] = password
    return _connect(params, TENANT)


def pooled(role: str, password: str, dbname: str, port: int, host: str = "127.0.0.1", **tls):
    """The tenant's login through its pool (PgBouncer takes no `options`, so nothing is pinned): SELECT 1 and
    SHOW-like reads only, never code of the tenant's."""
    import psycopg2

    conn = psycopg2.connect(host=host, port=port, user=role, password=password, dbname=dbname,
                            connect_timeout=CONNECT_TIMEOUT, application_name=APPLICATION, **tls)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
    return conn


def pooler_console(run_dir, port: int | None):
    """root's session on a PgBouncer console: peer over the pooler's 0700 socket directory, no password exists.
    The console speaks the simple query protocol only and takes no `options`."""
    import psycopg2

    conn = psycopg2.connect(host=str(run_dir), port=port, user="root", dbname="pgbouncer", connect_timeout=3,
                            application_name=APPLICATION)
    conn.autocommit = True
    return conn


def probe(socket_dir) -> tuple[str, str]:
    """CREATE EXTENSION vector on a throwaway server that holds nothing (upgrade.py's check of new binaries):
    (the vector distance it computed, the extension version)."""
    import psycopg2

    conn = psycopg2.connect(host=str(socket_dir), port=5432, user="postgres", dbname="postgres",
                            connect_timeout=CONNECT_TIMEOUT, application_name=APPLICATION)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION vector")
            cur.execute("SELECT ('[1,2,3]'::vector <-> '[1,2,4]'::vector)::text, "
                        "(SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'vector')")
            row = cur.fetchone()
        return (row[0], row[1]) if row else ("", "")
    finally:
        conn.close()


def tool_env(params: dict, pinned=TENANT) -> dict:
    """libpq environment for pg_dump/pg_restore: the password never in argv, the same pinned options."""
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD", "dbname": "PGDATABASE",
             "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT",
             # A cluster's .env lists every member: pg_restore must reach the one that takes writes (the first
             # listed may be a standby after a switchover), and send the password in a SCRAM exchange only.
             "target_session_attrs": "PGTARGETSESSIONATTRS", "require_auth": "PGREQUIREAUTH"}
    env = {names[k]: str(v) for k, v in params.items() if k in names and v is not None}
    env.update(PGOPTIONS=options(pinned), PGAPPNAME=APPLICATION, PGCONNECT_TIMEOUT=str(CONNECT_TIMEOUT))
    return env
