"""A cluster member on another host, against real etcd, Patroni and PostgreSQL. The other host is a network
namespace of this machine: its own interfaces, loopback and sockets, reached over a veth pair, so replication, etcd
and the REST API cross a real network hop between two addresses, and the joining host's installer runs with a state
root of its own. Host A makes the cluster on its address (ADDRESS=), writes a join bundle for host B (HOST=); B
joins with it (BUNDLE=); A learns the member and lists it in a client's .env; the lead moves to B and back while a
writer commits through that .env; etcd and the REST API answer other hosts over TLS with the cluster's own CA only,
PostgreSQL with SCRAM logins of the cluster's network only."""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2
import pytest

from agency_pgvector import envfile
from agency_pgvector.engines.patroni import cluster, etcd, supervise
from agency_pgvector.engines.patroni.layout import ClusterLayout
from agency_pgvector.errors import UserError
from test_cli import SCHEMA, mismatches
from test_patroni import Writer, all_acked_present, connect, wait_for

from conftest import DOMAIN, EMAIL, client_paths

NAME = "hosts"
CLIENT = "mh1"
SUBNET = 200 + os.getpid() % 50  # 10.201.<n>.0/24, one per session


@pytest.fixture(scope="module")
def net(stack_root):
    """Host B: a network namespace with a veth pair to this one, 10.201.<n>.1 here and .2 there."""
    ns, here, there = f"apgt{os.getpid()}", f"apa{os.getpid()}", f"apb{os.getpid()}"
    a, b = f"10.201.{SUBNET}.1", f"10.201.{SUBNET}.2"
    for command in (["ip", "netns", "add", ns], ["ip", "link", "add", here, "type", "veth", "peer", "name", there],
                    ["ip", "link", "set", there, "netns", ns], ["ip", "addr", "add", f"{a}/24", "dev", here],
                    ["ip", "link", "set", here, "up"],
                    ["ip", "netns", "exec", ns, "ip", "addr", "add", f"{b}/24", "dev", there],
                    ["ip", "netns", "exec", ns, "ip", "link", "set", there, "up"],
                    ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"]):
        subprocess.run(command, check=True, capture_output=True)
    root_b = stack_root.parent / "host-b" / "root"
    yield {"ns": ns, "a": a, "b": b, "root_b": root_b}
    subprocess.run(["ip", "netns", "pids", ns], capture_output=True)
    for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split():
        subprocess.run(["kill", "-9", pid], capture_output=True)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "link", "del", here], capture_output=True)


def on_b(net, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The installer as host B's operator runs it: inside B's namespace, B's own state root, log and port range."""
    root = net["root_b"]
    full = {**os.environ, "AGENCY_STACK_ROOT": str(root), "AGENCY_STACK_LOG": str(root.parent / "log" / "pgvector.log"),
            "PGVECTOR_PORT_RANGE": "31000-31099", "CLUSTER": NAME, **env}
    return subprocess.run(["ip", "netns", "exec", net["ns"], sys.executable, "-m", "agency_pgvector", *args],
                          capture_output=True, text=True, env=full, timeout=600)


def lay_a(stack_root) -> ClusterLayout:
    return ClusterLayout(NAME, stack_root / "pgvector")


def status(cli) -> dict:
    result = cli("cluster-status", "--json", CLUSTER=NAME)
    found = json.loads(result.stdout)
    assert mismatches(found, SCHEMA["cluster-status"]) == []
    return found


@pytest.fixture(scope="module")
def joined(net, stack_root):
    """The cluster on host A's address, and host B's member joined from its bundle."""
    run = lambda *a, **e: subprocess.run([sys.executable, "-m", "agency_pgvector", *a], capture_output=True,  # noqa: E731
                                         text=True, env={**os.environ, "CLUSTER": NAME, **e}, timeout=900)
    made = run("cluster", "--quiet", ADDRESS=net["a"], WITH_DEPS="true")
    assert made.returncode == 0, made.stderr + made.stdout
    made = run("cluster-bundle", HOST=net["b"])
    assert made.returncode == 0, made.stderr + made.stdout
    path = lay_a(stack_root).join_dir / "m4.json"
    assert str(path) in made.stdout
    copy = net["root_b"].parent / "bundle.json"  # as an operator's scp would put it
    copy.parent.mkdir(parents=True)
    copy.write_bytes(path.read_bytes())
    copy.chmod(0o600)
    # Host B has Patroni already (its own pip install needs PyPI, which B's namespace cannot reach): the same
    # virtualenv, at the path it was built for.
    (net["root_b"] / "pgvector").mkdir(parents=True)
    (net["root_b"] / "pgvector" / "patroni").symlink_to(stack_root / "pgvector" / "patroni")
    done = on_b(net, "cluster-join", "--json", BUNDLE=str(copy), WITH_DEPS="true")
    assert done.returncode == 0, done.stderr + done.stdout
    out = json.loads(done.stdout)
    assert mismatches(out, SCHEMA["cluster-join"]) == [] and out["changed"]
    learned = run("cluster", "--json", ADDRESS=net["a"])
    assert learned.returncode == 0, learned.stderr + learned.stdout
    assert any(i["item"] == "member m4" for i in json.loads(learned.stdout)["items"])
    yield {**net, "bundle": copy}


@pytest.fixture(scope="module")
def client(joined, stack_root):
    env = {**os.environ, "CLIENT_ID": CLIENT, "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "ENGINE": "patroni", "CLUSTER": NAME}
    result = subprocess.run([sys.executable, "-m", "agency_pgvector", "install"], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr + result.stdout
    yield envfile.read(client_paths(CLIENT).env_file)
    subprocess.run([sys.executable, "-m", "agency_pgvector", "uninstall"], capture_output=True, text=True,
                   env={**env, "YES": "true", "NO_BACKUP": "true"}, timeout=600)


def test_bad_addresses_and_bundles_are_one_sentence_and_create_nothing(cli, joined, stack_root, patroni_cluster):
    for env, code, words in (({"ADDRESS": "10.9.9.9"}, 2, "not an address of this host"),
                             ({"ADDRESS": "host-a"}, 2, "not an IPv4 address")):
        result = cli("cluster", CLUSTER="other", **env)
        assert result.returncode == code and words in result.stderr and "Traceback" not in result.stderr
        assert not (stack_root / "pgvector" / "clusters" / "other").exists()
    for host, code, words in (("10.9.9.9", 3, "not another host of the cluster's network"),
                              (joined["a"], 3, "not another host"), ("b", 2, "not an IPv4 address")):
        result = cli("cluster-bundle", CLUSTER=NAME, HOST=host)
        assert result.returncode == code and words in result.stderr, result.stderr
    loopback = cli("cluster-bundle", CLUSTER=patroni_cluster, HOST=joined["b"])
    assert loopback.returncode == 3 and "listens on loopback only" in loopback.stderr
    # The bundle on the wrong host (this one is A: the bundle names B's address), a missing one, another cluster's.
    for bundle, cluster_name, words in ((joined["bundle"], NAME, "not an address of this host"),
                                        ("/nonexistent", NAME, "cannot be read"),
                                        (joined["bundle"], "other", "is for cluster hosts")):
        result = cli("cluster-join", CLUSTER=cluster_name, BUNDLE=str(bundle))
        assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (stack_root / "pgvector" / "clusters" / "other").exists()


def test_the_member_on_host_b_streams_and_both_hosts_see_it(cli, joined, stack_root):
    found = status(cli)
    assert found["address"] == joined["a"] and found["tls"] and found["healthy"]
    rows = {r["name"]: r for r in found["members"]}
    assert rows["m4"]["host"] == joined["b"] and rows["m4"]["state"] == "streaming"
    assert rows["m4"]["patroni_running"] is None and rows["m1"]["patroni_running"] is True
    there = on_b(joined, "cluster-status", "--json")
    assert there.returncode == 0, there.stderr
    seen = json.loads(there.stdout)
    assert mismatches(seen, SCHEMA["cluster-status"]) == []
    assert seen["etcd"]["running"] is None and {r["name"] for r in seen["members"]} == {"m1", "m2", "m3", "m4"}
    assert next(r for r in seen["members"] if r["name"] == "m4")["patroni_running"] is True
    # A converged member changes nothing on a re-run there.
    again = on_b(joined, "cluster", "--json")
    assert again.returncode == 0 and not json.loads(again.stdout)["changed"], again.stderr + again.stdout
    # What B holds: the CA's certificate, not its key; no etcd root password, no superuser password of the cluster.
    lay_b = ClusterLayout(NAME, joined["root_b"] / "pgvector")
    assert not (lay_b.home / "tls").exists() and lay_b.client_ca.exists()
    words_a, words_b = cluster.read_secrets(lay_a(stack_root)), cluster.read_secrets(lay_b)
    assert "etcd_root" not in words_b and words_b["superuser"] != words_a["superuser"]
    assert stat.S_IMODE((lay_a(stack_root).join_dir / "m4.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((lay_b.member_tls / "server.key").stat().st_mode) == 0o640


def test_client_env_names_host_b_and_its_rows_replicate_there(client, joined):
    assert joined["b"] in client["PGHOST"].split(",") and client["PGREQUIREAUTH"] == "scram-sha-256"
    assert "target_session_attrs=read-write" in client["DATABASE_URL"]
    conn = connect(client["DATABASE_URL"])
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE docs (id int PRIMARY KEY, embedding extensions.vector(3))")
        cur.execute("INSERT INTO docs SELECT i, ARRAY[i, 1, 0]::extensions.vector FROM generate_series(1, 500) i")
        cur.execute("CREATE INDEX ON docs USING hnsw (embedding extensions.vector_l2_ops)")
    conn.close()
    port = client["PGPORT"].split(",")[client["PGHOST"].split(",").index(joined["b"])]

    def on_b_member():
        try:
            c = psycopg2.connect(host=joined["b"], port=port, user=client["PGUSER"], password=client["PGPASSWORD"],
                                 dbname=client["PGDATABASE"], require_auth="scram-sha-256", connect_timeout=5)
        except psycopg2.Error:
            return None
        with c.cursor() as cur:
            cur.execute("SET enable_seqscan = off")
            cur.execute("SELECT pg_is_in_recovery(), count(*) FROM docs")
            found = cur.fetchone()
            cur.execute("EXPLAIN SELECT id FROM docs ORDER BY embedding OPERATOR(extensions.<->) '[3,1,0]' LIMIT 5")
            plan = " ".join(row[0] for row in cur.fetchall())
        c.close()
        return found == (True, 500) and "docs_embedding_idx" in plan

    wait_for(on_b_member, 60, "the rows and the HNSW index on host B's member")


def test_what_crosses_the_network(client, joined, stack_root):
    """From the network: etcd and the REST API speak TLS only, verified against the cluster's CA (a listener with
    another certificate gets nothing from the installer: the same check Patroni's etcd client makes); a member
    refuses the superuser (even with its password) and a tenant's replication login; a tenant logs in with SCRAM."""
    record = cluster.read_record(lay_a(stack_root))
    port = client["PGPORT"].split(",")[client["PGHOST"].split(",").index(joined["b"])]
    login = dict(host=joined["b"], port=port, user=client["PGUSER"], password=client["PGPASSWORD"],
                 dbname=client["PGDATABASE"], connect_timeout=5)
    with pytest.raises(psycopg2.OperationalError, match="pg_hba.conf rejects replication"):
        psycopg2.connect(replication="true", **{**login, "dbname": "postgres"})
    with pytest.raises(psycopg2.OperationalError, match="pg_hba.conf rejects"):
        psycopg2.connect(**{**login, "user": "postgres", "password": cluster.read_secrets(lay_a(stack_root))["superuser"]})
    psycopg2.connect(require_auth="scram-sha-256", **login).close()
    import urllib.request

    for url in (f"http://{joined['a']}:{record['etcd']}/health",
                f"http://{joined['b']}:{status_row(record, 'm4')['api_port']}/cluster"):
        with pytest.raises(OSError):  # plain HTTP: the TLS listener drops it
            urllib.request.urlopen(url, timeout=5).read()
    assert cluster.etcd_answers([f"{joined['a']}:{record['etcd']}"], cluster.ca_of(record).read_text())
    rest = cluster.api(status_row(record, "m4")["api_port"], "/cluster", host=joined["b"], ca=cluster.ca_of(record))
    assert rest[0] == 200

    # A squatter with a certificate of its own (self-signed for 127.0.0.1): not the cluster's CA, nothing sent.
    key, cert = stack_root.parent / "squat.key", stack_root.parent / "squat.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1", "-keyout",
                    str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    heard: list[bytes] = []
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        squat_port = squatter.getsockname()[1]

        def serve():
            squatter.settimeout(10)
            try:
                conn, _ = squatter.accept()
                with context.wrap_socket(conn, server_side=True) as tls_conn:
                    heard.append(tls_conn.recv(4096))
            except (OSError, ssl.SSLError):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        assert not etcd.healthy(etcd.At(squat_port, cluster.ca_of(record)))
        with pytest.raises(UserError, match="not reached over TLS"):  # another host's API: never without TLS
            cluster.api(squat_port, "/switchover", "POST", {}, "the-password", 2, None, "127.0.0.1", None)
        assert cluster.api(squat_port, "/switchover", "POST", {}, "the-password", 2, None, "127.0.0.1",
                           cluster.ca_of(record))[0] == 0
        thread.join(15)
    assert heard == []


def status_row(record: dict, member: str) -> dict:
    host, port, rest = cluster.reach(record)[member]
    return {"host": host, "port": port, "api_port": rest}


def test_lead_moves_to_host_b_and_back_with_a_writer_on_the_same_env(cli, client, joined, stack_root):
    """Host A's standbys down for maintenance: host B's member becomes the synchronous standby, the lead goes to it
    (a switchover goes to the synchronous standby only), the writer carries on through the same .env; installs
    are refused while the leader is on the other host; then A's members come back and the lead returns to A."""
    lay = lay_a(stack_root)
    writer_table = "w_hosts"
    conn = connect(client["DATABASE_URL"])
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {writer_table} (id int PRIMARY KEY)")
    conn.close()
    writer = Writer(client["DATABASE_URL"], writer_table)
    writer.start()
    try:
        wait_for(lambda: len(writer.acked) >= 20, 30, "the writer's first writes")
        for member in ("m2", "m3"):
            supervise.stop(lay.pid_dir, f"patroni-{NAME}-{member}", lay.member_user, str(lay.member_config(member)))
        wait_for(lambda: any(r["name"] == "m4" and r["role"] == "sync_standby" for r in status(cli)["members"]), 90,
                 "host B's member named the synchronous standby")
        moved = cli("cluster-switchover", CLUSTER=NAME, CANDIDATE="m4")
        assert moved.returncode == 0 and "m4 leads now" in moved.stdout, moved.stderr + moved.stdout
        after = time.monotonic()
        wait_for(lambda: writer.wrote_after(after), 60, "writes through .env with host B leading")
        # Tenants are provisioned through a leader on this host: refused with the way out, nothing changed.
        again = cli("install", CLIENT_ID=CLIENT, DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL, ENGINE="patroni", CLUSTER=NAME)
        assert again.returncode == 3 and "on another host" in again.stderr and "cluster-switchover" in again.stderr
        up = cli("cluster", CLUSTER=NAME)  # A's members back, following B's leader
        assert up.returncode == 0, up.stderr + up.stdout
        back = cli("cluster-switchover", CLUSTER=NAME)
        assert back.returncode == 0, back.stderr + back.stdout
        wait_for(lambda: status(cli)["leader"] in ("m1", "m2", "m3"), 60, "the lead back on host A")
        after = time.monotonic()
        wait_for(lambda: writer.wrote_after(after), 60, "writes through .env with host A leading again")
    finally:
        writer.stop()
    all_acked_present(client, writer)
    wait_for(lambda: status(cli)["healthy"], 120, "the cluster healthy again")


def test_removal_host_b_first_then_forgotten_then_the_cluster(cli, client, joined, stack_root):
    refused = cli("cluster-remove", CLUSTER=NAME, YES="true")
    assert refused.returncode == 3 and "run on other hosts" in refused.stderr
    early = cli("cluster-remove", CLUSTER=NAME, MEMBER="m4")
    assert early.returncode == 3 and "still runs" in early.stderr
    gone = on_b(joined, "cluster-remove", YES="true")
    assert gone.returncode == 0, gone.stderr + gone.stdout
    assert not (joined["root_b"] / "pgvector" / "clusters" / NAME).exists()
    wait_for(lambda: "m4" not in {r["name"] for r in status(cli)["members"] if r["state"]}, 60, "m4 leaving Patroni")
    forgot = cli("cluster-remove", CLUSTER=NAME, MEMBER="m4")
    assert forgot.returncode == 0, forgot.stderr
    assert "m4" not in cluster.read_record(lay_a(stack_root))["remote"]
    assert not (lay_a(stack_root).join_dir / "m4.json").exists()
    uninstall = cli("uninstall", CLIENT_ID=CLIENT, YES="true", NO_BACKUP="true")
    assert uninstall.returncode == 0, uninstall.stderr
    removed = cli("cluster-remove", CLUSTER=NAME, YES="true")
    assert removed.returncode == 0, removed.stderr
    assert not Path(lay_a(stack_root).home).exists()
