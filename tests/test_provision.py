"""provision.py: the tenant plan from a hand-built State (no server): which steps are pending for which drift."""

from __future__ import annotations

import pytest

from agency_pgvector import scram
from agency_pgvector.errors import UserError
from agency_pgvector.provision import EXTENSION_SCHEMA, State, Tenant, plan
from agency_pgvector.report import OK

PASSWORD = "correct-horse"


def _state(**overrides) -> State:
    role = {"oid": 10, "rolcanlogin": True, "rolconnlimit": 50, "rolpassword": scram.hash_password(PASSWORD),
            "rolsuper": False, "rolcreatedb": False, "rolcreaterole": False, "rolreplication": False, "rolbypassrls": False}
    db = dict(owner="vectoruser_a", public_connect=False, public_temp=False, public_create=False,
              datistemplate=False, datallowconn=True, datconnlimit=-1)
    state = State(role, dict(Tenant.for_client("a", True).settings), {"vectordb_a": db, "postgres": dict(db, owner="postgres"),
                                                                         "template1": dict(db, owner="postgres")},
                  extension="0.8.5", extension_schema=EXTENSION_SCHEMA, available="0.8.5",
                  schema=dict(owner="pg_database_owner", public_create=False),
                  ext_schema=dict(owner="postgres", owner_super=True, create=False, usage=True), stats_open=False, version="18.4")
    for key, value in overrides.items():
        setattr(state, key, value)
    return state


def _changed(state: State) -> dict:
    steps = plan(state, Tenant.for_client("a", True), PASSWORD, False, ".env").steps
    return {s.item: s.detail for s in steps if s.action != OK}


def test_a_converged_tenant_plans_nothing():
    assert _changed(_state()) == {}


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


def test_vector_in_the_tenants_public_schema_is_moved():
    changed = _changed(_state(extension_schema="public"))
    assert changed == {"extension vector": f"moved from schema public to {EXTENSION_SCHEMA}"}


def test_a_schema_extensions_the_tenant_made_is_refused_not_adopted():
    with pytest.raises(UserError, match="not a superuser"):
        _changed(_state(ext_schema=dict(owner="vectoruser_a", owner_super=False, create=True)))


def test_a_run_killed_before_the_grant_gets_it_on_the_next_run():
    changed = _changed(_state(ext_schema=dict(owner="postgres", owner_super=True, create=False, usage=False)))
    assert set(changed) == {f"schema {EXTENSION_SCHEMA}"}


def test_session_statistics_are_hidden_on_shared_servers_only():
    assert "session statistics" in _changed(_state(stats_open=True))
    steps = plan(_state(stats_open=None), Tenant.for_client("a", False), PASSWORD, False, ".env").steps
    assert "session statistics" not in {s.item for s in steps}


def test_the_tenant_search_path_keeps_vector_usable_unqualified():
    changed = _changed(_state(role_settings={"statement_timeout": "5min", "idle_in_transaction_session_timeout": "10min"}))
    assert "role settings" in changed
