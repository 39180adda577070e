"""sessions.py: the one door to the database. Pure: the pinning string, no other module connecting. Against real
servers: the operator session checks where it landed and what it is, and ignores what a database owner set."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from agency_pgvector import sessions
from agency_pgvector.engines.embedded import EmbeddedEngine
from agency_pgvector.errors import UserError
from agency_pgvector.spec import Spec

PACKAGE = Path(__file__).resolve().parents[1] / "installer" / "agency_pgvector"


def test_only_the_session_module_opens_database_connections():
    """Every session goes through sessions.py, where the pinning is: no other module may connect on its own."""
    offenders = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                 if path.name != "sessions.py" and re.search(r"psycopg2\.connect\(|\bpsycopg\.connect\(", path.read_text())]
    assert offenders == []


def test_operator_options_pin_what_a_database_owner_could_set():
    text = sessions.options(sessions.OPERATOR)
    for pinned in ("search_path=pg_catalog,\\ pg_temp", "role=none", "statement_timeout=0", "default_transaction_read_only=off",
                   "client_min_messages=error", "idle_session_timeout=0", "default_transaction_isolation=read\\ committed"):
        assert f"-c {pinned}" in text, pinned
    assert "-c default_tablespace= " in text  # an empty value stays empty


def test_tenant_options_pin_the_tenants_path_and_a_timeout():
    text = sessions.options(sessions.TENANT)
    assert "-c search_path=public,\\ extensions" in text and "-c statement_timeout=5min" in text and "-c role=none" in text


def test_options_escape_spaces_and_backslashes_as_the_server_parses_them():
    assert sessions.options((("a", "x y\\z"), ("b", ""))) == "-c a=x\\ y\\\\z -c b="


def test_parameters_an_older_server_refused_are_left_out(monkeypatch):
    monkeypatch.setattr(sessions, "_unsupported", {"transaction_timeout"})
    text = sessions.options(sessions.OPERATOR)
    assert "transaction_timeout" not in text and "-c idle_session_timeout=0" in text


def test_tools_get_the_password_and_the_pinning_in_their_environment():
    env = {"PGHOST": "/run/pg", "PGPORT": "5433", "PGUSER": "vectoruser", "PGPASSWORD": "pw", "PGDATABASE": "vectordb"}
    params = sessions.tenant_params(env)
    assert params == dict(host="/run/pg", port="5433", user="vectoruser", password="pw", dbname="vectordb")
    tool = sessions.tool_env({**params, "sslmode": None, "options": "-c role=vectoruser"}, sessions.OPERATOR)
    assert tool == {"PGHOST": "/run/pg", "PGPORT": "5433", "PGUSER": "vectoruser", "PGPASSWORD": "pw", "PGDATABASE": "vectordb",
                    "PGOPTIONS": sessions.options(sessions.OPERATOR), "PGAPPNAME": sessions.APPLICATION,
                    "PGCONNECT_TIMEOUT": str(sessions.CONNECT_TIMEOUT)}
    assert sessions.tenant_params(env, "other")["dbname"] == "other"


class _Elsewhere(EmbeddedEngine):
    """Client a's engine whose socket leads to client b's server (a link a server user could plant)."""

    def __init__(self, spec, other):
        super().__init__(spec)
        self.other = other

    def admin_params(self, dbname: str = "postgres") -> dict:
        return self.other.admin_params(dbname)


def _engine(client_id: str) -> EmbeddedEngine:
    return EmbeddedEngine(Spec(client_id=client_id, root=Path(os.environ["AGENCY_STACK_ROOT"])))


def test_an_operator_session_that_reaches_another_server_is_refused(install):
    install("ses-a")
    install("ses-b")
    conn = sessions.operator(_engine("ses-b"))  # the real one is fine
    conn.close()
    with pytest.raises(UserError, match="another data directory"):
        sessions.operator(_Elsewhere(_engine("ses-a").spec, _engine("ses-b")))


def test_operator_sessions_ignore_what_the_database_owner_set(install):
    env = install("ses-c")
    from conftest import tenant_connect

    with tenant_connect(env) as conn, conn.cursor() as cur:
        conn.autocommit = True
        for setting in ("role = vectoruser", "search_path = public, pg_catalog", "statement_timeout = '1ms'",
                        "default_transaction_read_only = on", "idle_session_timeout = '1ms'"):
            cur.execute(f"ALTER DATABASE vectordb SET {setting}")
    conn = sessions.operator(_engine("ses-c"), "vectordb")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user, current_setting('search_path'), current_setting('statement_timeout'), "
                        "current_setting('transaction_read_only'), pg_sleep(0.05)")
            assert cur.fetchone()[:4] == ("postgres", "pg_catalog, pg_temp", "0", "off")
    finally:
        conn.close()
    with sessions.operator(_engine("ses-c")) as admin_conn, admin_conn.cursor() as cur:
        cur.execute("ALTER DATABASE vectordb RESET ALL")
