"""ENGINE=patroni against real etcd, Patroni and PostgreSQL: a three-member cluster on loopback ports (the session's
`patroni_cluster`), a client on it, failovers with a writer running through the client's unchanged .env (every
acknowledged write counted), switchover, rolling restart, what an outsider on the host can reach, removal."""

from __future__ import annotations

import base64
import json
import os
import pwd
import signal
import ssl
import stat
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg2
import pytest

from agency_pgvector import envfile
from agency_pgvector.engines.patroni import cluster, etcd, supervise
from agency_pgvector.engines.patroni.layout import ClusterLayout, member_names
from agency_pgvector.errors import UserError
from test_cli import SCHEMA, mismatches

from conftest import DOMAIN, EMAIL, client_paths

CLIENT = "ha-a"


def layout(name: str) -> ClusterLayout:
    return ClusterLayout(name, Path(os.environ["AGENCY_STACK_ROOT"]) / "pgvector")


def status(cli, name: str) -> dict:
    result = cli("cluster-status", "--json", CLUSTER=name)
    assert "Traceback" not in result.stderr
    found = json.loads(result.stdout)
    assert mismatches(found, SCHEMA["cluster-status"]) == []  # docs/json.md's shape
    return found


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def healthy(cli, name: str) -> dict:
    """Waits until every member runs and streams from a leader; returns the status."""
    seen: list = []

    def check():
        seen[:] = [status(cli, name)]
        return seen[0]["healthy"] and seen[0]

    try:
        return wait_for(check, 180, f"cluster {name} healthy")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {json.dumps(seen[0]['members'])}") from None


def postmaster_pid(lay: ClusterLayout, member: str) -> int:
    return int((lay.data_dir(member) / "postmaster.pid").read_text().splitlines()[0])


def connect(url: str):
    conn = psycopg2.connect(url, connect_timeout=3)
    conn.autocommit = True
    return conn


class Writer(threading.Thread):
    """Inserts 1, 2, 3, ... through DATABASE_URL, one commit each, reconnecting on any error. `acked` holds the
    ids whose commit returned; `times` when each returned (the gap around a failover)."""

    def __init__(self, url: str, table: str):
        super().__init__(daemon=True)
        self.url, self.table = url, table
        self.acked: list[int] = []
        self.times: list[float] = []
        self.errors = 0
        self.halt = threading.Event()

    def run(self) -> None:
        conn, n = None, 0
        while not self.halt.is_set():
            try:
                if conn is None:
                    conn = connect(self.url)
                n += 1
                with conn.cursor() as cur:
                    cur.execute(f"INSERT INTO {self.table} (id) VALUES (%s)", (n,))
                self.acked.append(n)
                self.times.append(time.monotonic())
                time.sleep(0.01)
            except psycopg2.Error:
                self.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.2)
        if conn is not None:
            conn.close()

    def wrote_after(self, moment: float, count: int = 20) -> bool:
        return sum(1 for t in self.times if t > moment) >= count

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


def standby_count(env: dict, table: str) -> int:
    """Rows of `table` as a standby sees them through DATABASE_READ_URL; -1 while it cannot tell (not replayed yet)."""
    try:
        conn = connect(env["DATABASE_READ_URL"])
    except psycopg2.Error:
        return -1
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery()")
            assert cur.fetchone() == (True,)
            cur.execute(f"SELECT count(*) FROM {table}")
            return cur.fetchone()[0]
    except psycopg2.Error:
        return -1
    finally:
        conn.close()


def all_acked_present(env: dict, writer: Writer) -> None:
    conn = connect(env["DATABASE_URL"])
    with conn.cursor() as cur:
        cur.execute(f"SELECT id FROM {writer.table}")
        present = {row[0] for row in cur.fetchall()}
    conn.close()
    lost = sorted(set(writer.acked) - present)
    assert writer.acked and not lost, f"{len(lost)} acknowledged writes lost (first: {lost[:5]})"


@pytest.fixture(scope="module")
def client(patroni_cluster, stack_root):
    import subprocess
    import sys

    env = {**os.environ, "CLIENT_ID": CLIENT, "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "ENGINE": "patroni",
           "CLUSTER": patroni_cluster}
    result = subprocess.run([sys.executable, "-m", "agency_pgvector", "install"], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr + result.stdout
    yield envfile.read(client_paths(CLIENT).env_file)
    # Gone before the other files run: their ALL=true commands would meet a client on a cluster.
    gone = subprocess.run([sys.executable, "-m", "agency_pgvector", "uninstall"], capture_output=True, text=True,
                          env={**env, "YES": "true", "NO_BACKUP": "true"}, timeout=600)
    assert gone.returncode == 0, gone.stderr + gone.stdout


@pytest.fixture
def writer(client):
    table = f"w{int(time.time() * 1000)}"
    conn = connect(client["DATABASE_URL"])
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
    conn.close()
    w = Writer(client["DATABASE_URL"], table)
    w.start()
    wait_for(lambda: len(w.acked) >= 20, 30, "the writer's first writes")
    yield w
    w.stop()


# -- the cluster ----------------------------------------------------------------------------------------------

def test_cluster_has_a_leader_a_synchronous_standby_and_secured_etcd(cli, patroni_cluster):
    found = healthy(cli, patroni_cluster)
    roles = sorted(m["role"] for m in found["members"])
    assert roles == ["leader", "replica", "sync_standby"], found
    assert found["synchronous"] is True and found["etcd"] == {**found["etcd"], "running": True, "authentication": True}
    again = cli("cluster", "--json", CLUSTER=patroni_cluster)  # a converged cluster: nothing to do
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["changed"] is False, again.stdout
    assert mismatches(json.loads(again.stdout), SCHEMA["cluster"]) == []
    text = cli("cluster-status", CLUSTER=patroni_cluster, COLUMNS="80")
    assert text.returncode == 0 and "leader" in text.stdout and "sync_standby" in text.stdout


def test_cluster_files_and_processes_keep_their_secrets(cli, patroni_cluster):
    lay = layout(patroni_cluster)
    words = cluster.read_secrets(lay)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(lay.secrets_file) == 0o600 and lay.secrets_file.stat().st_uid == 0
    assert mode(lay.conf_dir) == 0o750 and lay.conf_dir.stat().st_uid == 0
    assert mode(lay.etcd_dir) == 0o700
    for member in member_names():
        assert mode(lay.member_dir(member)) == 0o700 and mode(lay.data_dir(member)) == 0o700
    seen = []  # no password on any process's command line or in the environment of the cluster's processes
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                seen.append((entry / "cmdline").read_bytes() + (entry / "environ").read_bytes())
            except OSError:
                pass
    for word in words.values():
        assert not any(word.encode() in blob for blob in seen)
    log = Path(os.environ["AGENCY_STACK_LOG"]).read_text()
    assert not any(word in log for word in words.values())


def _http(url: str, method: str = "GET", body: dict | None = None, auth: tuple | None = None, ca=None) -> int:
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request = urllib.request.Request(url, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_an_outsider_on_the_host_cannot_steer_the_cluster(cli, patroni_cluster, client):
    """etcd without a login, Patroni's REST API without its password, the superuser over TCP with its real password,
    replication with a tenant's login: all refused."""
    lay = layout(patroni_cluster)
    record = cluster.read_record(lay)
    words = cluster.read_secrets(lay)
    ca = cluster.ca_of(record)
    assert ca is not None and ca == lay.client_ca
    etcd = f"https://127.0.0.1:{record['etcd']}/v3/kv"
    key = base64.b64encode(f"/service/{patroni_cluster}/config".encode()).decode()
    assert _http(f"{etcd}/range", "POST", {"key": key}, ca=ca) in (400, 401)
    assert _http(f"{etcd}/put", "POST", {"key": key, "value": base64.b64encode(b"{}").decode()}, ca=ca) in (400, 401)
    head = status(cli, patroni_cluster)["leader"]
    pg_port, api_port = cluster.ports_of(record).members[head]
    for auth in (None, ("agency", "wrong"), (client["PGUSER"], client["PGPASSWORD"])):
        assert _http(f"https://127.0.0.1:{api_port}/switchover", "POST", {"leader": head}, auth, ca) == 401
        assert _http(f"https://127.0.0.1:{api_port}/config", "PATCH", {"postgresql": {"parameters": {}}}, auth, ca) == 401
        assert _http(f"https://127.0.0.1:{api_port}/restart", "POST", {}, auth, ca) == 401
    with pytest.raises(psycopg2.OperationalError, match="pg_hba.conf rejects"):
        psycopg2.connect(host="127.0.0.1", port=pg_port, user="postgres", password=words["superuser"],
                         dbname="postgres", connect_timeout=5)
    with pytest.raises(psycopg2.OperationalError, match="pg_hba.conf rejects replication"):  # physical
        psycopg2.connect(host="127.0.0.1", port=pg_port, user=client["PGUSER"], password=client["PGPASSWORD"],
                         dbname="postgres", connect_timeout=5, replication="true")
    with pytest.raises(psycopg2.OperationalError, match="permission denied to start WAL sender"):  # logical
        psycopg2.connect(host="127.0.0.1", port=pg_port, user=client["PGUSER"], password=client["PGPASSWORD"],
                         dbname=client["PGDATABASE"], connect_timeout=5, replication="database")
    with pytest.raises(psycopg2.OperationalError):  # another database than its own
        psycopg2.connect(host="127.0.0.1", port=pg_port, user=client["PGUSER"], password=client["PGPASSWORD"],
                         dbname="postgres", connect_timeout=5)
    assert status(cli, patroni_cluster)["leader"] == head


def test_etcd_peer_is_a_private_socket_and_the_audit_sees_what_others_add(cli, patroni_cluster):
    """Raft messages are not authenticated: the peer listener is a Unix socket in etcd's 0700 directory, no TCP port.
    The audit run after `auth enable` (a new cluster's etcd is wiped when it fails) catches a user or a key the
    installer did not make."""
    lay = layout(patroni_cluster)
    record = cluster.read_record(lay)
    assert supervise.listener_uid(record["etcd_peer"]) is None
    assert (lay.etcd_dir / f"localhost:{record['etcd_peer']}").is_socket()
    assert stat.S_IMODE(lay.etcd_dir.stat().st_mode) == 0o700
    assert supervise.listener_uid(record["etcd"]) == pwd.getpwnam(lay.etcd_user).pw_uid
    root = cluster.read_secrets(lay)["etcd_root"]
    port = cluster.etcd_at(record)
    assert etcd.audit(port, patroni_cluster, root, fresh=False) == []
    auth = etcd.token(port, "root", root)
    etcd.call(port, "/v3/auth/user/add", {"name": "intruder", "password": "x" * 12}, auth)
    etcd.call(port, "/v3/auth/user/grant", {"user": "intruder", "role": "root"}, auth)
    try:
        assert any("intruder" in p for p in etcd.audit(port, patroni_cluster, root, fresh=False))
    finally:
        etcd.call(port, "/v3/auth/user/delete", {"name": "intruder"}, auth)
    assert etcd.audit(port, patroni_cluster, root, fresh=False) == []
    assert any("keys before" in p for p in etcd.audit(port, patroni_cluster, root, fresh=True))  # Patroni's own


def test_secrets_go_only_to_a_port_the_clusters_user_holds(patroni_cluster):
    """A squatter on a free loopback port (a member restarting, etcd down after a reboot) gets nothing: the
    installer checks who holds the port before it sends the REST API or etcd password."""
    import socket

    lay = layout(patroni_cluster)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        assert supervise.listener_uid(port) == 0
        with pytest.raises(UserError, match=f"Port {port} .* is held by user root, not {lay.member_user}"):
            cluster.api(port, "/switchover", "POST", {}, "the-password", 1, lay.member_user)
        squatter.settimeout(0.5)
        with pytest.raises(socket.timeout):
            squatter.accept()  # nothing connected
    with pytest.raises(UserError, match=f"Nothing listens on port {port}"):
        supervise.require_listener(port, lay.etcd_user, "etcd", wait=0.5)


# -- a client on the cluster ----------------------------------------------------------------------------------

def test_client_env_lists_every_member_and_reads_go_to_a_standby(cli, patroni_cluster, client):
    record = cluster.read_record(layout(patroni_cluster))
    ports = sorted(str(pg) for pg, _ in cluster.ports_of(record).members.values())
    assert client["PGVECTOR_ENGINE"] == "patroni" and client["PGVECTOR_SERVER"] == patroni_cluster
    assert sorted(client["PGPORT"].split(",")) == ports and client["PGTARGETSESSIONATTRS"] == "read-write"
    assert client["DATABASE_URL"].endswith("?target_session_attrs=read-write")
    assert client["PGREQUIREAUTH"] == "scram-sha-256"
    assert "DATABASE_POOL_URL" not in client
    conn = connect(client["DATABASE_URL"])
    with conn.cursor() as cur:
        cur.execute("SELECT pg_is_in_recovery(), current_setting('port')")
        assert cur.fetchone() == (False, str(cluster.ports_of(record).members[status(cli, patroni_cluster)["leader"]][0]))
        cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        assert cur.fetchone() is not None
        cur.execute("CREATE TABLE docs (id int PRIMARY KEY, embedding vector(3))")
        cur.execute("INSERT INTO docs SELECT i, ARRAY[i, i % 7, 1]::vector FROM generate_series(1, 500) i")
        cur.execute("CREATE INDEX ON docs USING hnsw (embedding vector_l2_ops)")
    conn.close()
    reader = connect(client["DATABASE_READ_URL"])
    with reader.cursor() as cur:
        cur.execute("SELECT pg_is_in_recovery()")
        assert cur.fetchone() == (True,)

        def replicated():
            cur.execute("SELECT to_regclass('docs') IS NOT NULL")
            return cur.fetchone()[0]

        wait_for(replicated, 30, "the table on the standby")
        cur.execute("SET enable_seqscan = off")
        cur.execute("EXPLAIN SELECT id FROM docs ORDER BY embedding <-> '[3,3,1]' LIMIT 3")
        assert "docs_embedding_idx" in " ".join(row[0] for row in cur.fetchall())
        cur.execute("SELECT id FROM docs ORDER BY embedding <-> '[3,3,1]' LIMIT 1")
        assert cur.fetchone() == (3,)
        with pytest.raises(psycopg2.Error, match="read-only"):
            cur.execute("INSERT INTO docs VALUES (1000, '[1,1,1]')")
    reader.close()
    for command in ("status", "test"):
        result = cli(command, CLIENT_ID=CLIENT)
        assert result.returncode == 0, result.stderr + result.stdout


# -- failures -------------------------------------------------------------------------------------------------

def test_leader_postmaster_killed_writer_resumes_nothing_acknowledged_is_lost(cli, patroni_cluster, client, writer):
    lay = layout(patroni_cluster)
    head = healthy(cli, patroni_cluster)["leader"]
    victim = postmaster_pid(lay, head)
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: writer.wrote_after(killed), 120, "writes after the leader's postmaster died")
    writer.stop()
    all_acked_present(client, writer)
    after = healthy(cli, patroni_cluster)
    assert all(postmaster_pid(lay, m) != victim for m in member_names())
    assert {m["name"] for m in after["members"] if m["role"] != "leader"} | {after["leader"]} == set(member_names())


def test_leader_patroni_killed_is_started_again_and_keeps_or_hands_over_the_lead(cli, patroni_cluster, client, writer):
    lay = layout(patroni_cluster)
    head = healthy(cli, patroni_cluster)["leader"]
    victim = cluster.patroni_pid(lay, head)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: cluster.patroni_pid(lay, head) not in (None, victim), 30, "the keeper starting Patroni again")
    wait_for(lambda: writer.wrote_after(killed + 15), 120, "writes after the leader's Patroni died")
    writer.stop()
    all_acked_present(client, writer)
    found = healthy(cli, patroni_cluster)
    assert all(m["patroni_running"] for m in found["members"])


def test_leader_host_lost_new_leader_old_one_rejoins_as_replica(cli, patroni_cluster, client, writer):
    """The leader member's keeper, Patroni and PostgreSQL all killed at once (what a machine's loss looks like
    from the others): a standby takes over after the leader key expires; make pgvector-cluster starts the lost
    member again and it follows the new leader."""
    lay = layout(patroni_cluster)
    head = healthy(cli, patroni_cluster)["leader"]
    keeper = int((lay.pid_dir / f"patroni-{patroni_cluster}-{head}.pid").read_text())
    doomed = [keeper, cluster.patroni_pid(lay, head), postmaster_pid(lay, head)]
    assert None not in doomed
    for pid in doomed:
        os.kill(pid or 0, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: writer.wrote_after(killed), 120, "writes after the leader's host was lost")
    new = status(cli, patroni_cluster)
    assert new["leader"] not in (None, head)
    assert [m["patroni_running"] for m in new["members"] if m["name"] == head] == [False]
    assert cli("cluster-status", CLUSTER=patroni_cluster).returncode == 3  # a member down: unhealthy
    back = cli("cluster", CLUSTER=patroni_cluster)
    assert back.returncode == 0, back.stderr + back.stdout
    found = healthy(cli, patroni_cluster)
    assert found["leader"] != head
    assert [m["role"] for m in found["members"] if m["name"] == head] in (["replica"], ["sync_standby"])
    writer.stop()
    all_acked_present(client, writer)
    wait_for(lambda: standby_count(client, writer.table) >= len(writer.acked), 30, "the writes on a standby")


# -- planned changes ------------------------------------------------------------------------------------------

def test_switchover_to_a_chosen_member(cli, patroni_cluster, client, writer):
    """Patroni switches over to the synchronous standby only: for another candidate the installer makes every
    standby synchronous for the switch, then sets synchronous_node_count back."""
    found = healthy(cli, patroni_cluster)
    candidate = next(m["name"] for m in found["members"] if m["role"] == "replica")
    result = cli("cluster-switchover", CLUSTER=patroni_cluster, CANDIDATE=candidate)
    assert result.returncode == 0, result.stderr
    assert f"{candidate} leads now" in result.stdout
    moved = time.monotonic()
    wait_for(lambda: writer.wrote_after(moved), 60, "writes after the switchover")
    writer.stop()
    all_acked_present(client, writer)
    assert healthy(cli, patroni_cluster)["leader"] == candidate
    record = cluster.read_record(layout(patroni_cluster))
    _, config = cluster.api(cluster.ports_of(record).members[candidate][1], "/config", ca=cluster.ca_of(record))
    assert config.get("synchronous_node_count", 1) == 1
    bad = cli("cluster-switchover", CLUSTER=patroni_cluster, CANDIDATE="m9")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


def test_restart_is_rolling_every_member_once(cli, patroni_cluster, client, writer):
    lay = layout(patroni_cluster)
    before = {m: postmaster_pid(lay, m) for m in member_names()}
    result = cli("restart", CLIENT_ID=CLIENT, YES="true")
    assert result.returncode == 0, result.stderr + result.stdout
    after = {m: postmaster_pid(lay, m) for m in member_names()}
    assert all(after[m] != before[m] for m in member_names())
    started = time.monotonic()
    wait_for(lambda: writer.wrote_after(started), 60, "writes after the rolling restart")
    writer.stop()
    all_acked_present(client, writer)
    healthy(cli, patroni_cluster)


def test_a_stopped_cluster_comes_back_with_make_pgvector_cluster(cli, patroni_cluster, client):
    """Everything stopped, as after a reboot of a host without systemd: the next run starts etcd (its authentication
    audited, not made again), the members, and the client logs in with its .env."""
    lay = layout(patroni_cluster)
    cluster.stop(lay)
    assert status(cli, patroni_cluster)["leader"] is None
    assert cli("cluster-status", CLUSTER=patroni_cluster).returncode == 3
    back = cli("cluster", "--json", CLUSTER=patroni_cluster)
    assert back.returncode == 0, back.stderr + back.stdout
    assert {item["item"] for item in json.loads(back.stdout)["items"] if item["status"] != "ok"} == {"etcd", "members"}
    healthy(cli, patroni_cluster)
    conn = connect(client["DATABASE_URL"])
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM docs")
        assert cur.fetchone() == (500,)
    conn.close()


def test_logs_and_backup_of_a_cluster_client(cli, patroni_cluster, client, writer):
    """The backup reads a standby, in one snapshot with its row counts: taken while the writer commits, its
    manifest still matches what the restore finds."""
    logs = cli("logs", CLIENT_ID=CLIENT, LINES="50")
    assert logs.returncode == 0, logs.stderr
    standby = next(m["name"] for m in status(cli, patroni_cluster)["members"] if m["role"] != "leader")
    member = cli("logs", CLIENT_ID=CLIENT, LINES="20", MEMBER=standby)  # one member's log, on a standby
    assert member.returncode == 0 and "== server log" in member.stdout, member.stderr
    unknown = cli("logs", CLIENT_ID=CLIENT, MEMBER="m9")
    assert unknown.returncode == 2 and "use one of m1, m2, m3" in unknown.stderr, unknown.stderr
    conn = connect(client["DATABASE_URL"])
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE kept AS SELECT i AS id FROM generate_series(1, 77) i")
    conn.close()
    log = Path(os.environ["AGENCY_STACK_LOG"])
    start = log.stat().st_size
    backup = cli("backup", "--json", CLIENT_ID=CLIENT)
    assert backup.returncode == 0, backup.stderr + backup.stdout
    assert "backup read from a standby" in log.read_text()[start:]
    done = json.loads(backup.stdout)
    assert done["row_counts"]["public.kept"] == 77 and done["row_counts"][f"public.{writer.table}"] > 0
    conn = connect(client["DATABASE_URL"])
    with conn.cursor() as cur:
        cur.execute("DELETE FROM kept WHERE id > 7")
    conn.close()
    restored = cli("restore", "--json", CLIENT_ID=CLIENT, FILE=done["file"], YES="true")
    assert restored.returncode == 0, restored.stderr + restored.stdout
    wait_for(lambda: standby_count(client, "kept") == 77, 30, "the restored rows on a standby")


# -- bad input, removal ---------------------------------------------------------------------------------------

def test_bad_cluster_input_is_one_sentence_and_creates_nothing(cli, stack_root):
    for env, words in (({}, "CLUSTER is required"), ({"CLUSTER": "../x"}, "is not valid")):
        result = cli("cluster", **env)
        assert result.returncode != 0 and words in result.stderr and "Traceback" not in result.stderr
    result = cli("install", CLIENT_ID="ha-none", DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL, ENGINE="patroni", CLUSTER="nope")
    assert result.returncode != 0 and "does not exist" in result.stderr, result.stderr
    assert not client_paths("ha-none").client_dir.exists()
    assert not (stack_root / "pgvector" / "clusters" / "nope").exists()


def test_enable_cloud_on_a_cluster_is_refused_with_nothing_created(cli, patroni_cluster):
    result = cli("install", CLIENT_ID="ha-cloud", DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL, ENGINE="patroni",
                 CLUSTER=patroni_cluster, ENABLE_CLOUD="true")
    assert result.returncode != 0 and result.stderr.count("\n") == 1, result.stderr
    assert "ENABLE_CLOUD" in result.stderr and "Traceback" not in result.stderr
    assert not client_paths("ha-cloud").client_dir.exists()


def test_a_cluster_with_a_client_is_not_removed_then_is(cli, stack_root):
    """An asynchronous cluster of its own (SYNC=false): made, a client on it, removal refused, client uninstalled,
    removed with its users, units and ports."""
    name = "ha-rm"
    made = cli("cluster", CLUSTER=name, SYNC="false", WITH_DEPS="true")
    assert made.returncode == 0, made.stderr + made.stdout
    found = healthy(cli, name)
    assert found["synchronous"] is False and "sync_standby" not in [m["role"] for m in found["members"]]
    put = cli("install", CLIENT_ID="ha-rm-a", DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL, ENGINE="patroni", CLUSTER=name)
    assert put.returncode == 0, put.stderr
    refused = cli("cluster-remove", CLUSTER=name, YES="true")
    assert refused.returncode != 0 and "ha-rm-a" in refused.stderr
    assert cli("uninstall", CLIENT_ID="ha-rm-a", YES="true", NO_BACKUP="true").returncode == 0
    lay = layout(name)
    removed = cli("cluster-remove", CLUSTER=name, YES="true")
    assert removed.returncode == 0, removed.stderr
    assert not lay.home.exists()
    for user in (lay.member_user, lay.etcd_user):
        with pytest.raises(KeyError):
            pwd.getpwnam(user)
    registry = stack_root / "pgvector" / "ports"
    assert not any(f"cluster:{name}/" in p.read_text() for p in registry.iterdir() if p.is_file()) \
        if registry.is_dir() else True
