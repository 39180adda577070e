"""provision.py: the tenant plan from a hand-built State (no server): which steps are pending for which drift, and
the statements each would run. State -> steps tables; the SQL is read from the psycopg2.sql objects, no connection."""

from __future__ import annotations

import pytest
from psycopg2 import sql

from agency_pgvector import scram
from agency_pgvector.errors import UserError
from agency_pgvector.provision import EXTENSION_SCHEMA, STAT_FUNCTIONS, STAT_VIEWS, State, Tenant, TenantPlan, plan
from agency_pgvector.report import CHANGE, CREATE, OK

PASSWORD = "correct-horse"
SHARED = Tenant.for_client("a", True)  # vectoruser_a / vectordb_a on a server other clients share
DEDICATED = Tenant.for_client("a", False)  # vectoruser / vectordb on the client's own server
ROLE = 'ALTER ROLE "vectoruser_a" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 50'
INSIDE = {f"schema {EXTENSION_SCHEMA}", "extension vector", "schema public", "session statistics"}  # in the tenant's db


def _text(part) -> str:
    """A psycopg2.sql object as SQL text without a connection: identifiers double-quoted, literals single-quoted
    (enough to read a statement; psycopg2's own as_string needs a connection)."""
    if isinstance(part, sql.Composed):
        return "".join(_text(p) for p in part.seq)
    if isinstance(part, sql.SQL):
        return part.string
    if isinstance(part, sql.Identifier):
        return ".".join('"' + s.replace('"', '""') + '"' for s in part.strings)
    if isinstance(part, sql.Literal):
        value = part.wrapped
        return "'" + value.replace("'", "''") + "'" if isinstance(value, str) else str(value)
    raise AssertionError(f"unexpected part {part!r}")


def _db(owner: str, **changes) -> dict:
    return {**dict(owner=owner, public_connect=False, public_temp=False, public_create=False,
                   datistemplate=False, datallowconn=True, datconnlimit=-1, tenant_connect=True), **changes}


def _state(tenant: Tenant = SHARED, **overrides) -> State:
    """A tenant exactly as provisioned (nothing to do)."""
    role = {"oid": 10, "rolcanlogin": True, "rolconnlimit": 50, "rolpassword": scram.hash_password(PASSWORD),
            "rolsuper": False, "rolcreatedb": False, "rolcreaterole": False, "rolreplication": False, "rolbypassrls": False}
    state = State(role, dict(tenant.settings),
                  {tenant.database: _db(tenant.role), "postgres": _db("postgres"), "template1": _db("postgres")},
                  extension="0.8.5", extension_schema=EXTENSION_SCHEMA, available="0.8.5",
                  schema=dict(owner="pg_database_owner", public_create=False),
                  ext_schema=dict(owner="postgres", owner_super=True, create=False, usage=True),
                  stats_open=False if tenant.shared else None, version="18.4")
    for key, value in overrides.items():
        setattr(state, key, value)
    return state


def _fresh(version: str = "18.4") -> State:
    """A server that has never seen this tenant: PUBLIC may still connect to postgres and template1."""
    return State(None, {}, {"postgres": _db("postgres", public_connect=True, public_temp=True),
                            "template1": _db("postgres", public_connect=True, public_temp=True)},
                 available="0.8.5", version=version)


def _plan(state: State, tenant: Tenant = SHARED, password: str | None = PASSWORD, force: bool = False) -> TenantPlan:
    return plan(state, tenant, password, force, ".env")


def _pending(state: State, tenant: Tenant = SHARED) -> dict[str, list[str]]:
    """item -> the statements it would run, for every step that is not ok."""
    return {s.item: [_text(statement) for statement, _ in s.statements] for s in _plan(state, tenant).steps if s.action != OK}


def _changed(state: State) -> dict:
    steps = plan(state, Tenant.for_client("a", True), PASSWORD, False, ".env").steps
    return {s.item: s.detail for s in steps if s.action != OK}


def _set(name: str, value) -> str:
    return f'ALTER ROLE "vectoruser_a" SET "{name}" = {value}'


PRIVILEGES = ['REVOKE ALL ON DATABASE "vectordb_a" FROM PUBLIC',
              'GRANT CONNECT, TEMPORARY ON DATABASE "vectordb_a" TO "vectoruser_a"']
GRANT_USAGE = ['REVOKE ALL ON SCHEMA "extensions" FROM PUBLIC', 'GRANT USAGE ON SCHEMA "extensions" TO "vectoruser_a"']
OPTIONS = ['ALTER DATABASE "vectordb_a" WITH IS_TEMPLATE false ALLOW_CONNECTIONS true CONNECTION LIMIT -1']
STATS = [f"REVOKE SELECT ON {', '.join(f'pg_catalog.{chr(34)}{v}{chr(34)}' for v in STAT_VIEWS)} FROM PUBLIC",
         *[f"REVOKE EXECUTE ON FUNCTION pg_catalog.{f} FROM PUBLIC" for f in STAT_FUNCTIONS]]

# (what drifted, the change to a converged state) -> exactly the steps that are not ok, with their statements
DRIFT = [
    *[pytest.param(lambda s, c=column: s.role.update({c: True}), {"role vectoruser_a": [ROLE]}, id=column)
      for column in ("rolsuper", "rolcreatedb", "rolcreaterole", "rolreplication", "rolbypassrls")],
    pytest.param(lambda s: s.role.update(rolcanlogin=False), {"role vectoruser_a": [ROLE]}, id="nologin"),
    pytest.param(lambda s: s.role.update(rolconnlimit=-1), {"role vectoruser_a": [ROLE]}, id="connection-limit"),
    pytest.param(lambda s: s.role_settings.pop("statement_timeout"),
                 {"role settings": [_set("statement_timeout", "'5min'")]}, id="role-setting-missing"),
    pytest.param(lambda s: s.role_settings.update(idle_in_transaction_session_timeout="0"),
                 {"role settings": [_set("idle_in_transaction_session_timeout", "'10min'")]}, id="role-setting-changed"),
    pytest.param(lambda s: s.role_settings.update(search_path="public"),
                 {"role settings": ['ALTER ROLE "vectoruser_a" SET search_path TO "$user", "public", "extensions"']},
                 id="role-search-path"),
    pytest.param(lambda s: s.role_settings.clear(),
                 {"role settings": [_set("statement_timeout", "'5min'"), _set("idle_in_transaction_session_timeout", "'10min'"),
                                    'ALTER ROLE "vectoruser_a" SET search_path TO "$user", "public", "extensions"']},
                 id="role-settings-gone"),
    pytest.param(lambda s: s.role_settings.update(work_mem="1GB"), {}, id="role-setting-not-ours"),
    pytest.param(lambda s: s.databases["vectordb_a"].update(owner="postgres"),
                 {"database vectordb_a": ['ALTER DATABASE "vectordb_a" OWNER TO "vectoruser_a"']}, id="database-owner"),
    pytest.param(lambda s: s.databases["vectordb_a"].update(datistemplate=True), {"database options": OPTIONS}, id="is-template"),
    pytest.param(lambda s: s.databases["vectordb_a"].update(datconnlimit=0), {"database options": OPTIONS}, id="db-conn-limit"),
    pytest.param(lambda s: setattr(s, "db_settings", ["search_path=public, pg_catalog"]),
                 {"database settings": ['ALTER DATABASE "vectordb_a" RESET ALL',
                                        'ALTER ROLE "vectoruser_a" IN DATABASE "vectordb_a" RESET ALL']}, id="database-settings"),
    *[pytest.param(lambda s, k=key, v=value: s.databases["vectordb_a"].update({k: v}),
                   {"database privileges": PRIVILEGES}, id=key)
      for key, value in (("public_connect", True), ("public_temp", True), ("public_create", True), ("tenant_connect", False))],
    pytest.param(lambda s: s.databases["postgres"].update(public_connect=True),
                 {"maintenance databases": ['REVOKE CONNECT, TEMPORARY ON DATABASE "postgres" FROM PUBLIC']}, id="postgres-open"),
    pytest.param(lambda s: [s.databases[name].update(public_connect=True) for name in ("postgres", "template1")],
                 {"maintenance databases": ['REVOKE CONNECT, TEMPORARY ON DATABASE "postgres" FROM PUBLIC',
                                            'REVOKE CONNECT, TEMPORARY ON DATABASE "template1" FROM PUBLIC']}, id="both-open"),
    pytest.param(lambda s: s.databases.pop("template1"), {}, id="no-template1"),
    pytest.param(lambda s: setattr(s, "ext_schema", None),
                 {"schema extensions": ['CREATE SCHEMA "extensions"', *GRANT_USAGE]}, id="ext-schema-missing"),
    pytest.param(lambda s: s.ext_schema.update(create=True),
                 {"schema extensions": ['REVOKE CREATE ON SCHEMA "extensions" FROM PUBLIC',
                                        'REVOKE CREATE ON SCHEMA "extensions" FROM "vectoruser_a"', *GRANT_USAGE]},
                 id="ext-schema-writable"),
    pytest.param(lambda s: s.ext_schema.update(usage=False),
                 {"schema extensions": ['REVOKE CREATE ON SCHEMA "extensions" FROM PUBLIC',
                                        'REVOKE CREATE ON SCHEMA "extensions" FROM "vectoruser_a"', *GRANT_USAGE]},
                 id="ext-schema-no-usage"),
    pytest.param(lambda s: setattr(s, "extension", None),
                 {"extension vector": ['CREATE EXTENSION vector SCHEMA "extensions"']}, id="extension-missing"),
    pytest.param(lambda s: setattr(s, "extension_schema", "public"),
                 {"extension vector": ['ALTER EXTENSION vector SET SCHEMA "extensions"']}, id="extension-in-public"),
    pytest.param(lambda s: setattr(s, "extension", "0.7.0"), {}, id="extension-older"),  # an upgrade is its own command
    pytest.param(lambda s: s.schema.update(owner="postgres"),
                 {"schema public": ['ALTER SCHEMA public OWNER TO "vectoruser_a"', "REVOKE CREATE ON SCHEMA public FROM PUBLIC"]},
                 id="public-owner"),
    pytest.param(lambda s: s.schema.update(public_create=True),
                 {"schema public": ['ALTER SCHEMA public OWNER TO "vectoruser_a"', "REVOKE CREATE ON SCHEMA public FROM PUBLIC"]},
                 id="public-create"),
    pytest.param(lambda s: s.schema.update(owner="vectoruser_a"), {}, id="public-owned-by-tenant"),
    pytest.param(lambda s: setattr(s, "schema", None), {}, id="public-dropped-by-tenant"),
    pytest.param(lambda s: setattr(s, "stats_open", True), {"session statistics": STATS}, id="stats-open"),
    pytest.param(lambda s: setattr(s, "stats_open", None), {"session statistics": STATS}, id="stats-unknown"),
]


def test_a_converged_tenant_plans_nothing():
    for tenant in (SHARED, DEDICATED):
        result = _plan(_state(tenant), tenant)
        assert [s.item for s in result.steps if s.action != OK] == []
        assert (result.new_password, result.refusal) == (None, None)
        assert all(s.statements == [] for s in result.steps)


@pytest.mark.parametrize("drift, expected", DRIFT)
def test_each_drift_plans_exactly_its_own_step(drift, expected):
    state = _state()
    drift(state)
    assert _pending(state) == expected
    result = _plan(state)
    assert (result.new_password, result.refusal) == (None, None)


def _well_formed(result: TenantPlan, tenant: Tenant) -> None:
    """A pending step has statements and an ok one none; each statement has as many parameters as placeholders and
    runs where it must (the tenant's database for what is inside it, postgres for the rest)."""
    for step in result.steps:
        assert bool(step.statements) == (step.action != OK), step.item
        assert step.action == OK or step.database == (tenant.database if step.item in INSIDE else "postgres"), step.item
        for statement, params in step.statements:
            assert isinstance(statement, sql.Composable) and (params is None or isinstance(params, tuple)), step.item
            assert _text(statement).count("%s") == len(params or ()), step.item


@pytest.mark.parametrize("drift, expected", DRIFT)
def test_every_planned_statement_is_well_formed(drift, expected):
    state = _state()
    drift(state)
    _well_formed(_plan(state), SHARED)


def test_statements_of_new_tenants_and_new_passwords_are_well_formed():
    for tenant in (SHARED, DEDICATED):
        for version in ("18.4", "14.12"):
            _well_formed(_plan(_fresh(version), tenant), tenant)
        _well_formed(_plan(_state(tenant), tenant, force=True), tenant)
        _well_formed(_plan(_state(tenant), tenant, password=None), tenant)


def test_the_role_detail_names_what_is_wrong():
    state = _state()
    state.role.update(rolcanlogin=False, rolsuper=True, rolconnlimit=3)
    (step,) = [s for s in _plan(state).steps if s.action != OK]
    assert (step.action, step.detail) == (CHANGE, "LOGIN NOSUPERUSER CONNECTION LIMIT 50")


def test_a_newer_pgvector_is_shown_not_applied():
    (step,) = [s for s in _plan(_state(extension="0.7.0")).steps if s.item == "extension vector"]
    assert (step.action, step.detail) == (OK, "pgvector 0.7.0 (pgvector 0.8.5 available: make pgvector-upgrade)")


def test_session_statistics_are_hidden_on_shared_servers_only():
    assert "session statistics" in _changed(_state(stats_open=True))
    for stats_open in (None, True):
        steps = _plan(_state(DEDICATED, stats_open=stats_open), DEDICATED).steps
        assert "session statistics" not in {s.item for s in steps}


def test_what_the_owner_set_on_its_database_is_drift():
    state = _state(db_settings=["role=vectoruser_a", "statement_timeout=1ms"])
    state.databases["vectordb_a"].update(datistemplate=True, datconnlimit=0)
    changed = _changed(state)
    assert set(changed) == {"database options", "database settings"}
    assert "datistemplate True -> False" in changed["database options"] and "role" in changed["database settings"]


def test_a_database_that_refuses_connections_is_reopened_before_anything_inside_it_is_planned():
    state = _state(db_readable=False, extension=None, ext_schema=None)
    state.databases["vectordb_a"]["datallowconn"] = False
    changed = _changed(state)
    assert "database options" in changed and "extension vector" not in changed  # read again after the first round


def test_nothing_inside_an_unreadable_database_is_planned_not_even_as_ok():
    state = _state(db_readable=False, extension=None, extension_schema=None, ext_schema=None, schema=None, stats_open=None)
    state.databases["vectordb_a"]["datallowconn"] = False
    result = _plan(state)
    assert not INSIDE & {s.item for s in result.steps}
    assert _pending(state) == {"database options": OPTIONS}


def test_vector_in_the_tenants_public_schema_is_moved():
    changed = _changed(_state(extension_schema="public"))
    assert changed == {"extension vector": f"moved from schema public to {EXTENSION_SCHEMA}"}


def test_a_schema_extensions_the_tenant_made_is_refused_not_adopted():
    with pytest.raises(UserError, match="not a superuser"):
        _changed(_state(ext_schema=dict(owner="vectoruser_a", owner_super=False, create=True)))


def test_a_schema_extensions_owned_by_any_other_non_superuser_is_refused():
    with pytest.raises(UserError, match="belongs to someone, not a superuser") as err:
        _plan(_state(ext_schema=dict(owner="someone", owner_super=False, create=False, usage=True)))
    assert err.value.exit_code == 3


def test_a_server_without_pgvector_is_the_operators_to_fix():
    with pytest.raises(UserError, match="no pgvector extension available") as err:
        _plan(_state(available=None))
    assert err.value.exit_code == 3


def test_a_run_killed_before_the_grant_gets_it_on_the_next_run():
    changed = _changed(_state(ext_schema=dict(owner="postgres", owner_super=True, create=False, usage=False)))
    assert set(changed) == {f"schema {EXTENSION_SCHEMA}"}


def test_the_tenant_search_path_keeps_vector_usable_unqualified():
    changed = _changed(_state(role_settings={"statement_timeout": "5min", "idle_in_transaction_session_timeout": "10min"}))
    assert "role settings" in changed


# -- the password: drift is a step like the others, FORCE decides --------------------------------------------------

def _password_step(result: TenantPlan):
    (step,) = [s for s in result.steps if s.item == "password"]
    return step


@pytest.mark.parametrize("password, stored, why", [
    (None, scram.hash_password(PASSWORD), "has no password recorded"),
    ("not-" + PASSWORD, scram.hash_password(PASSWORD), "holds a password the role does not have"),
    (PASSWORD, None, "holds a password the role does not have"),  # the role has no password at all
    (PASSWORD, "md5" + "0" * 32, "holds a password the role does not have"),  # an MD5 hash is not ours
])
def test_a_password_that_does_not_match_needs_force(password, stored, why):
    state = _state()
    state.role["rolpassword"] = stored
    result = _plan(state, password=password)
    assert result.refusal is not None and why in result.refusal and "FORCE=true" in result.refusal
    assert result.refusal.startswith(".env ") and "vectoruser_a" in result.refusal
    step = _password_step(result)
    assert (step.action, step.detail) == (CHANGE, ".env does not match the role: needs FORCE")
    assert [s.item for s in result.steps if s.action != OK] == ["password"]


def test_password_drift_hides_no_other_drift():
    state = _state(stats_open=True, extension_schema="public")
    state.role.update(rolpassword=scram.hash_password("other"), rolcreatedb=True)
    result = _plan(state)
    assert result.refusal is not None
    assert [s.item for s in result.steps if s.action != OK] == [
        "role vectoruser_a", "password", "extension vector", "session statistics"]


@pytest.mark.parametrize("password", [PASSWORD, "not-" + PASSWORD, None])
def test_force_sets_a_new_password_and_ends_the_old_sessions(password):
    result = _plan(_state(), password=password, force=True)
    assert result.refusal is None
    assert result.new_password and result.new_password not in (PASSWORD, password)
    step = _password_step(result)
    assert (step.action, step.detail) == (CHANGE, "new password (FORCE), old sessions terminated")
    (alter, verifier), (terminate, role) = step.statements
    assert _text(alter) == 'ALTER ROLE "vectoruser_a" PASSWORD %s'
    assert scram.verify(result.new_password, verifier[0]) and not scram.verify(PASSWORD, verifier[0])
    assert "pg_terminate_backend" in _text(terminate) and role == ("vectoruser_a",)


def test_a_matching_password_is_left_alone():
    result = _plan(_state())
    step = _password_step(result)
    assert (step.action, step.detail, step.statements) == (OK, "matches .env", [])


@pytest.mark.parametrize("force", [False, True])
def test_no_password_is_in_a_statement_a_detail_or_a_refusal(force):
    state = _state()
    state.role["rolpassword"] = scram.hash_password("old")
    result = _plan(state, force=force)
    secrets = {PASSWORD, result.new_password}
    texts = [result.refusal or ""] + [s.detail for s in result.steps]
    texts += [_text(statement) + repr(params) for s in result.steps for statement, params in s.statements]
    assert not [text for text in texts for secret in secrets if secret in text]


# -- a tenant the server has never seen ---------------------------------------------------------------------------

FULL = [("role vectoruser_a", CREATE), ("role settings", CREATE), ("database vectordb_a", CREATE),
        ("database privileges", CREATE), ("maintenance databases", CHANGE), (f"schema {EXTENSION_SCHEMA}", CREATE),
        ("extension vector", CREATE), ("session statistics", CREATE)]


def test_a_new_tenant_plans_the_full_creation_in_order():
    result = _plan(_fresh())
    assert [(s.item, s.action) for s in result.steps] == FULL
    assert _pending(_fresh())["database vectordb_a"] == [
        'CREATE DATABASE "vectordb_a" OWNER "vectoruser_a" TEMPLATE template0 ENCODING \'UTF8\'']
    assert result.refusal is None


def test_a_new_dedicated_tenant_has_no_statistics_step():
    result = _plan(_fresh(), DEDICATED)
    assert [(s.item, s.action) for s in result.steps] == [
        ("role vectoruser", CREATE), *FULL[1:2], ("database vectordb", CREATE), *FULL[3:-1]]


def test_a_new_database_on_a_server_before_15_gets_public_locked_down():
    result = _plan(_fresh("14.12"))
    assert [(s.item, s.action) for s in result.steps] == [*FULL[:-1], ("schema public", CHANGE), FULL[-1]]


@pytest.mark.parametrize("password", [PASSWORD, None])
def test_a_new_role_gets_the_env_password_or_a_generated_one(password):
    result = _plan(_fresh(), password=password)
    ((create, verifier),) = result.steps[0].statements
    assert _text(create) == ('CREATE ROLE "vectoruser_a" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
                             "NOBYPASSRLS CONNECTION LIMIT 50 PASSWORD %s")
    assert result.new_password is not None and scram.verify(result.new_password, verifier[0])
    assert result.new_password == password if password else len(result.new_password) >= 40


def test_a_role_without_its_database_gets_the_database_and_everything_inside():
    state = _state()
    del state.databases["vectordb_a"]
    result = _plan(state)
    assert [(s.item, s.action) for s in result.steps if s.action != OK] == [
        ("database vectordb_a", CREATE), ("database privileges", CREATE), *FULL[5:]]
    assert "database options" not in {s.item for s in result.steps}
