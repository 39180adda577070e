"""ENABLE_CLOUD=true: remote logins reach the client's PgBouncer pool only, over TLS from the system's OpenSSL, with a
server certificate the installation's CA signed (verify-full). Tested for real from a network namespace this module
creates (veth pair: addresses that exist only on this machine), created before the install so its address is in
the certificate:
  * verify-full with PGVECTOR_TLS_CA logs in, by the host's address and by the client's domain; plain text, a
    foreign CA, TLS 1.1, a wrong password, the superuser and another database are refused; PostgreSQL's own port
    is closed from outside;
  * a re-run changes nothing; a new host address reissues the server certificate under the same CA; rotate keeps
    remote access with the new password only; ENABLE_CLOUD off closes it, on again reuses the CA;
  * the docker engine gets the same remote access through its pooler;
  * without the openssl command: one sentence, exit 3, nothing created.
Who may NOT log in remotely (clients without ENABLE_CLOUD, on their own pooler or a shared one) and the
convergence of the old server-side TLS layout: test_security_remote.py.
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

from agency_pgvector import envfile, sessions, tls
from agency_pgvector.pooler import Layout as PoolLayout

from conftest import DOMAIN, EMAIL, client_paths
from netns import from_ns, tls_handshake, veth_namespace
from servers import free_port

CLIENT = "tls-cloud"
TLS_KEYS = ("PGVECTOR_REMOTE_HOST", "PGVECTOR_TLS_CA", "PGVECTOR_TLS_SHA256", "PGVECTOR_REMOTE_SSLMODE",
            "DATABASE_REMOTE_URL")


@pytest.fixture(scope="module")
def netns(stack_root):  # stack_root first: every install below goes to the test root, never the default
    with veth_namespace("agtls") as found:
        yield found


@pytest.fixture(scope="module")
def cloud(stack_root, netns):
    """The client installed with ENABLE_CLOUD=true (the veth exists first, so its address is in the SAN)."""
    started = time.monotonic()
    result = install(CLIENT, ENABLE_CLOUD="true", WITH_DEPS="true")
    print(f"\n[tls] first install with ENABLE_CLOUD=true (server, tenant, pooler, CA, certificate): "
          f"{time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stderr + result.stdout
    return envfile.read(client_paths(CLIENT).env_file)


def install(client_id: str, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "CLIENT_ID": client_id, "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "ENGINE": "embedded", **env}
    return subprocess.run([sys.executable, "-m", "agency_pgvector", "install", "--json"], capture_output=True, text=True,
                          env=full, timeout=600, stdin=subprocess.DEVNULL)


def remote(env: dict, host: str, **overrides) -> dict:
    """The login a remote app makes from the .env: the pool's port, verify-full against the copied CA."""
    return {**dict(host=host, port=int(env["PGVECTOR_POOL_PORT"]), user=env["PGUSER"], password=env["PGPASSWORD"],
                   dbname=env["PGDATABASE"], sslmode=env["PGVECTOR_REMOTE_SSLMODE"], sslrootcert=env["PGVECTOR_TLS_CA"]),
            **overrides}


def pooler_dir(key: str) -> Path:
    return PoolLayout(key, client_paths(key).state_dir).directory


def san(cert: Path) -> str:
    return subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"], capture_output=True,
                          text=True, check=True).stdout


def foreign_ca(tmp_path: Path) -> str:
    """A CA that signed nothing of ours."""
    cert = tmp_path / "foreign.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "1", "-subj", "/CN=foreign", "-keyout", str(tmp_path / "foreign.key"), "-out", str(cert)],
                   capture_output=True, check=True)
    return str(cert)


def test_ca_certificate_and_env(cloud, netns):
    _, host_ip, _ = netns
    paths = client_paths(CLIENT)
    ca_dir = paths.state_dir / "tls"
    ca_key = ca_dir / "ca.key"
    assert (stat.S_IMODE(ca_dir.stat().st_mode), ca_key.stat().st_uid, stat.S_IMODE(ca_key.stat().st_mode)) == (0o700, 0, 0o600)
    tls_dir = pooler_dir(CLIENT) / "tls"
    key, cert = tls_dir / "server.key", tls_dir / "server.crt"
    group = pwd.getpwnam(f"apgb-{CLIENT}").pw_gid
    assert (key.stat().st_uid, key.stat().st_gid, stat.S_IMODE(key.stat().st_mode)) == (0, group, 0o640)
    assert not list(pooler_dir(CLIENT).rglob("ca.key"))  # the CA's key never reaches the pooler's files
    # .env: verify-full against a copy of the installation's CA; the fingerprint is the CA's
    copy = Path(cloud["PGVECTOR_TLS_CA"])
    assert copy == paths.component_dir / "pooler-ca.crt" and copy.read_bytes() == (ca_dir / "ca.crt").read_bytes()
    assert (cloud["PGVECTOR_REMOTE_SSLMODE"], cloud["PGVECTOR_REMOTE_HOST"]) == ("verify-full", DOMAIN)
    assert cloud["DATABASE_REMOTE_URL"].endswith(f"@{DOMAIN}:{cloud['PGVECTOR_POOL_PORT']}/{cloud['PGDATABASE']}")
    assert "PGSSLMODE" not in cloud and "PGSSLROOTCERT" not in cloud  # local logins stay as they were
    printed = subprocess.run(["openssl", "x509", "-in", str(copy), "-noout", "-fingerprint", "-sha256"],
                             capture_output=True, text=True, check=True).stdout
    assert printed.strip().endswith(f"Fingerprint={cloud['PGVECTOR_TLS_SHA256']}"), printed
    assert cloud["PGVECTOR_TLS_SHA256"] in (paths.component_dir / "README.md").read_text()
    # the server certificate: signed by the CA, for the domain, localhost and the host's addresses
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(copy), str(cert)], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    names = san(cert)
    for name in (f"DNS:{DOMAIN}", "DNS:localhost", "IP Address:127.0.0.1", f"IP Address:{host_ip}"):
        assert name in names, names
    ini = (pooler_dir(CLIENT) / "pgbouncer.ini").read_text()
    assert "listen_addr = *\n" in ini and "client_tls_protocols = tlsv1.2,tlsv1.3\n" in ini


def test_remote_login_through_the_pool_with_verify_full(cloud, netns):
    ns, host_ip, _ = netns
    answer = from_ns(ns, **remote(cloud, host_ip))
    assert answer.startswith(f"ok {cloud['PGUSER']}@{cloud['PGDATABASE']} True TLSv1.3"), answer
    # by name: the domain is in the SAN (the namespace has no DNS, so hostaddr carries the address)
    answer = from_ns(ns, **remote(cloud, DOMAIN, hostaddr=host_ip))
    assert answer.startswith("ok "), answer
    answer = from_ns(ns, **remote(cloud, "other.example.org", hostaddr=host_ip))  # a name the certificate lacks
    assert "does not match host name" in answer, answer
    # DATABASE_REMOTE_URL as the client README says to use it: plus sslmode and sslrootcert
    answer = from_ns(ns, dsn=cloud["DATABASE_REMOTE_URL"], hostaddr=host_ip, sslmode=cloud["PGVECTOR_REMOTE_SSLMODE"],
                     sslrootcert=cloud["PGVECTOR_TLS_CA"])
    assert answer.startswith(f"ok {cloud['PGUSER']}@{cloud['PGDATABASE']} True"), answer


def test_remote_refusals(cloud, netns, tmp_path):
    ns, host_ip, _ = netns
    assert from_ns(ns, **remote(cloud, host_ip)).startswith("ok ")  # the path works: each refusal below is the rule's
    answer = from_ns(ns, **remote(cloud, host_ip, sslmode="disable"))  # plain text: no hba line for it
    assert answer.endswith("FATAL:  login rejected"), answer
    answer = from_ns(ns, **remote(cloud, host_ip, sslrootcert=foreign_ca(tmp_path)))
    assert "certificate verify failed" in answer, answer
    answer = from_ns(ns, **remote(cloud, host_ip, password="not-" + cloud["PGPASSWORD"]))
    assert answer.endswith("FATAL:  SASL authentication failed"), answer
    for password in ("x", cloud["PGPASSWORD"]):  # the superuser is in no hba line and no auth file
        answer = from_ns(ns, **remote(cloud, host_ip, user="postgres", password=password))
        assert answer.endswith("FATAL:  login rejected"), answer
    for dbname in ("postgres", "template1", "pgbouncer"):  # the tenant's own pool only; the console is root's, local
        answer = from_ns(ns, **remote(cloud, host_ip, dbname=dbname))
        assert answer.endswith(("FATAL:  login rejected", "FATAL:  not allowed")), (dbname, answer)
    # PostgreSQL itself listens on 127.0.0.1 only: its port is closed from outside, TLS or not
    for sslmode in ("disable", "require"):
        answer = from_ns(ns, **remote(cloud, host_ip, port=int(cloud["PGPORT"]), sslmode=sslmode, sslrootcert=""))
        assert "Connection refused" in answer, answer


def test_tls_below_1_2_is_refused(cloud, netns):
    ns, host_ip, _ = netns
    port, ca = int(cloud["PGVECTOR_POOL_PORT"]), cloud["PGVECTOR_TLS_CA"]
    answer = from_ns(ns, **remote(cloud, host_ip, ssl_max_protocol_version="TLSv1.2"))
    assert answer.startswith("ok ") and answer.endswith("TLSv1.2"), answer  # 1.2 is accepted
    answer = from_ns(ns, **remote(cloud, host_ip, ssl_max_protocol_version="TLSv1.1"))
    assert not answer.startswith("ok"), answer
    # libpq's own OpenSSL may refuse 1.1 before sending it: the server's refusal is shown with a client that offers it
    code, accepted = tls_handshake(ns, host_ip, port, ca, "tls1_2")
    assert code == 0 and "Protocol  : TLSv1.2" in accepted and "Verify return code: 0 (ok)" in accepted, accepted
    code, refused = tls_handshake(ns, host_ip, port, ca, "tls1_1")
    assert code != 0 and "alert protocol version" in refused and "Cipher    : 0000" in refused, refused


def test_loopback_logins_keep_working(cloud):
    sessions.pooled(cloud["PGUSER"], cloud["PGPASSWORD"], cloud["PGDATABASE"], int(cloud["PGVECTOR_POOL_PORT"])).close()
    script = "set -a; . ./.env; set +a; psql -tAc 'select 1' \"$DATABASE_POOL_URL\" && psql -tAc 'select 2'"
    out = subprocess.run(["bash", "-c", script], cwd=client_paths(CLIENT).component_dir, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["1", "2"], out.stderr  # pooled and direct, plain on loopback


def test_rerun_is_a_no_op_with_the_same_certificate(cloud):
    cert = pooler_dir(CLIENT) / "tls" / "server.crt"
    if json.loads((cert.parent / "names").read_text()) != tls.server_names([DOMAIN]):
        # another test session added or removed an interface (a veth, a docker network) since the install: the
        # certificate follows the host's addresses, so one run reissues it; the run after that is the no-op
        assert install(CLIENT, ENABLE_CLOUD="true").returncode == 0
    before = (cert.stat().st_mtime_ns, tls.fingerprint(cert))
    result = install(CLIENT, ENABLE_CLOUD="true")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["changed"] is False, [i for i in report["items"] if i["status"] != "ok"]
    assert (cert.stat().st_mtime_ns, tls.fingerprint(cert)) == before
    assert envfile.read(client_paths(CLIENT).env_file) == cloud


def test_a_new_host_address_reissues_the_certificate_under_the_same_ca(cloud):
    cert = pooler_dir(CLIENT) / "tls" / "server.crt"
    before = tls.fingerprint(cert)
    with veth_namespace("agtl2") as (ns, host_ip, _):
        assert f"IP Address:{host_ip}" not in san(cert)
        answer = from_ns(ns, **remote(cloud, host_ip))
        assert "does not match host name" in answer, answer  # not in the SAN yet
        result = install(CLIENT, ENABLE_CLOUD="true")
        assert result.returncode == 0, result.stderr
        changed = {i["item"] for i in json.loads(result.stdout)["items"] if i["status"] != "ok"}
        assert changed == {"pooler TLS certificate", "pooler process"}, changed  # reissued and reloaded, nothing else
        assert f"IP Address:{host_ip}" in san(cert) and tls.fingerprint(cert) != before
        env = envfile.read(client_paths(CLIENT).env_file)
        assert env == cloud  # same CA, same PGVECTOR_TLS_SHA256: clients change nothing
        answer = from_ns(ns, **remote(cloud, host_ip))
        assert answer.startswith("ok "), answer


def test_rotate_keeps_remote_tls_access_and_refuses_the_old_password(cloud, netns):
    ns, host_ip, _ = netns
    result = subprocess.run([sys.executable, "-m", "agency_pgvector", "rotate"], capture_output=True, text=True,
                            env={**os.environ, "CLIENT_ID": CLIENT}, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    env = envfile.read(client_paths(CLIENT).env_file)
    assert env["PGPASSWORD"] != cloud["PGPASSWORD"]
    assert {k: env[k] for k in TLS_KEYS if k != "DATABASE_REMOTE_URL"} == {
        k: cloud[k] for k in TLS_KEYS if k != "DATABASE_REMOTE_URL"}
    answer = from_ns(ns, **remote(env, host_ip))
    assert answer.startswith("ok "), answer
    answer = from_ns(ns, **remote(cloud, host_ip))  # the old password, over TLS
    assert answer.endswith("FATAL:  SASL authentication failed"), answer
    cloud.update(env)  # later tests use the new password


def test_enable_cloud_off_closes_remote_access_and_on_again_reuses_the_ca(cloud, netns):
    ns, host_ip, _ = netns
    paths = client_paths(CLIENT)
    ca = (paths.state_dir / "tls" / "ca.crt").read_bytes()
    result = install(CLIENT, ENABLE_CLOUD="false")
    assert result.returncode == 0, result.stderr
    off = envfile.read(paths.env_file)
    assert [key for key in off if key.startswith("PGVECTOR_TLS") or key in TLS_KEYS] == []
    assert not (paths.component_dir / "pooler-ca.crt").exists() and off["PGPASSWORD"] == cloud["PGPASSWORD"]
    ini = (pooler_dir(CLIENT) / "pgbouncer.ini").read_text()
    assert "listen_addr = 127.0.0.1\n" in ini and "client_tls" not in ini
    assert "hostssl" not in (pooler_dir(CLIENT) / "pgbouncer_hba.conf").read_text()
    answer = from_ns(ns, **remote(cloud, host_ip))
    assert "Connection refused" in answer, answer  # nothing listens on the veth any more
    sessions.pooled(off["PGUSER"], off["PGPASSWORD"], off["PGDATABASE"], int(off["PGVECTOR_POOL_PORT"])).close()
    result = install(CLIENT, ENABLE_CLOUD="true")
    assert result.returncode == 0, result.stderr
    again = envfile.read(paths.env_file)
    assert (paths.state_dir / "tls" / "ca.crt").read_bytes() == ca
    assert again["PGVECTOR_TLS_SHA256"] == cloud["PGVECTOR_TLS_SHA256"] and Path(again["PGVECTOR_TLS_CA"]).read_bytes() == ca
    answer = from_ns(ns, **remote(again, host_ip))
    assert answer.startswith("ok "), answer


def test_docker_engine_gets_remote_tls_through_its_pooler(netns, stack_root):
    """ENGINE=docker: the container publishes on 127.0.0.1 only; remote tenants come through the host's pooler."""
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable engine: a failure, not a skip
        pytest.fail(f"no Docker engine answers ({str(exc)[:100]}): run .ci/setup.d/docker.sh", pytrace=False)
    from agency_pgvector.engines.docker import DockerEngine
    from agency_pgvector.pooler import Pooler
    from agency_pgvector.spec import Spec

    ns, host_ip, _ = netns
    client_id = "tls-dk"
    started = time.monotonic()
    result = install(client_id, ENGINE="docker", ENABLE_CLOUD="true", WITH_DEPS="true",
                     PGVECTOR_IMAGE="agency-test/pgvector:pg18", PORT=str(free_port()))
    elapsed = time.monotonic() - started
    engine = DockerEngine(Spec(client_id=client_id, root=stack_root))
    try:
        assert result.returncode == 0, result.stderr + result.stdout
        print(f"\n[tls] docker install with ENABLE_CLOUD=true: {elapsed:.1f} s")
        env = envfile.read(client_paths(client_id).env_file)
        binding = client.containers.get(f"postgres-{client_id}").attrs["HostConfig"]["PortBindings"]["5432/tcp"][0]
        assert binding["HostIp"] == "127.0.0.1"
        answer = from_ns(ns, **remote(env, host_ip))
        assert answer.startswith(f"ok {env['PGUSER']}@{env['PGDATABASE']} True TLSv1.3"), answer
        answer = from_ns(ns, **remote(env, host_ip, sslmode="disable"))
        assert not answer.startswith("ok"), answer
        answer = from_ns(ns, **remote(env, host_ip, user="postgres"))
        assert not answer.startswith("ok"), answer
        answer = from_ns(ns, **remote(env, host_ip, port=int(env["PGPORT"]), sslmode="disable", sslrootcert=""))
        assert "Connection refused" in answer, answer  # the container's published port: loopback only
    finally:
        Pooler(client_id, client_paths(client_id).state_dir).remove()
        engine.remove_server()


def test_without_openssl_one_sentence_and_nothing_created(stack_root, tmp_path):
    """A PATH with every command of this host but openssl, and a fresh root: refused before anything is made."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        for tool in Path(folder).iterdir() if Path(folder).is_dir() else []:
            if tool.name != "openssl" and not (bin_dir / tool.name).exists():
                (bin_dir / tool.name).symlink_to(tool)
    root = stack_root.parent / "nossl"  # short: the server's socket path has a length limit
    env = {**os.environ, "AGENCY_STACK_ROOT": str(root), "AGENCY_STACK_LOG": str(root / "log"), "PATH": str(bin_dir)}
    try:
        result = subprocess.run([sys.executable, "-m", "agency_pgvector", "install"], capture_output=True, text=True,
                                timeout=300, stdin=subprocess.DEVNULL,
                                env={**env, "CLIENT_ID": "tls-nossl", "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL,
                                     "ENGINE": "embedded", "ENABLE_CLOUD": "true", "WITH_DEPS": "true"})
        assert result.returncode == 3 and "openssl" in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
        made = sorted(str(p.relative_to(root)) for p in root.glob("*/*")) if root.exists() else []
        made = [path for path in made if path != "pgvector/locks"]  # the client's lock, taken before anything is read
        assert made == [], f"{result.stderr.strip()} -- yet made: {made}"
    finally:
        if root.exists():
            from agency_pgvector.engines.embedded import EmbeddedEngine
            from agency_pgvector.spec import Spec

            EmbeddedEngine(Spec(client_id="tls-nossl", root=root)).remove_server()
