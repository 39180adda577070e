"""PgBouncer in front of every server (issue 12), against real servers and Debian's real PgBouncer.

Every login here goes through the pooler's TCP port the way an app would, with the .env's DATABASE_POOL_URL (or its
parts): the pool works for every engine; a wrong password, another tenant's database, the superuser and the console
are refused; the pool's limits queue the surplus instead of failing it; a rotation, a killed pooler and an uninstall
leave the pool as they should; a hostile tenant working through the pool gains nothing; the pooler's files hold no
password; logs POOLER=true shows a tenant its own connections only.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import signal
import stat
import threading
import time
from pathlib import Path

import psycopg2
import pytest

from agency_pgvector import envfile, ports
from agency_pgvector.engines.embedded import EmbeddedEngine
from agency_pgvector.ops.common import load
from agency_pgvector.pooler import Pooler, for_engine
from agency_pgvector.spec import Spec

import hostile
from conftest import DOMAIN, EMAIL, client_paths
from servers import docker_with_image, free_port, start_server, wheel_bin_dir

IMAGE = "agency-test/pgvector:pg18"
DOCKER_ID = "pool-dk"
INSTALLED: dict[str, str] = {}  # client id -> how it was installed ("dedicated", "shared", "docker", "external")


# -- servers and clients ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def external_server(stack_root):
    """A stand-alone PostgreSQL 18 + pgvector the installer did not create (ENGINE=external)."""
    server = start_server(wheel_bin_dir(stack_root), stack_root.parent / "pool-external18", password="pool-admin-pw-1")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def docker_engine(stack_root):
    """The real Docker engine with the test image; no engine is a failure (.ci/setup.d/docker.sh), not a skip."""
    client = docker_with_image(IMAGE)
    with open("/tmp/agency-pgvector-pool-docker.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two sessions running this file would share the container's name
        _purge(client)
        yield client
        _purge(client)


def _purge(client) -> None:
    for found in client.containers.list(all=True, filters={"name": f"postgres-{DOCKER_ID}"}):
        if found.name == f"postgres-{DOCKER_ID}":
            found.remove(force=True, v=True)
    for volume in client.volumes.list(filters={"name": f"postgres-{DOCKER_ID}-data"}):
        volume.remove(force=True)
    for network in client.networks.list(names=[f"agency-{DOCKER_ID}"]):
        network.remove()


def setup(cli, client: str, kind: str, request=None, **extra: str) -> dict:
    """Install `client` on a dedicated or the shared embedded server, a docker container or the external server."""
    env = {"CLIENT_ID": client, "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "WITH_DEPS": "true", **extra}
    if kind == "dedicated":
        env["ENGINE"] = "embedded"
    elif kind == "shared":
        env.update(ENGINE="embedded", SERVER="shared")
    elif kind == "docker":
        request.getfixturevalue("docker_engine")
        env.update(ENGINE="docker", PGVECTOR_IMAGE=IMAGE, PORT=str(free_port()))
    else:
        env.update(ENGINE="external", ADMIN_URL=request.getfixturevalue("external_server").admin_url)
    INSTALLED[client] = kind
    result = cli("install", **env)
    assert result.returncode == 0, result.stderr + result.stdout
    return read_env(client)


@pytest.fixture(autouse=True)
def uninstall_after(cli, stack_root):
    """Each test's clients go afterwards (their pools, and the pooler with its last client); dedicated servers stop."""
    yield
    for client, kind in reversed(list(INSTALLED.items())):
        for _ in range(2):  # a run that failed half-way is finished by the next (test_uninstall_... checks the first)
            if client_paths(client).env_file.exists():
                cli("uninstall", CLIENT_ID=client, YES="true", NO_BACKUP="true")
        if kind == "dedicated":
            EmbeddedEngine(Spec(client_id=client, root=stack_root)).stop()
        del INSTALLED[client]


def read_env(client: str) -> dict:
    return envfile.read(client_paths(client).env_file)


def superuser(client: str):
    """The installer's own admin session on the client's server (any engine)."""
    return load(client).engine.admin_connect()


def pool_of(client: str) -> Pooler:
    return for_engine(load(client).engine)


# -- logins through the pool --------------------------------------------------------------------------------

def pooled(env: dict, **changes):
    """A login through the pool with the .env's pool host and port (autocommit)."""
    params = dict(host=env["PGVECTOR_POOL_HOST"], port=env["PGVECTOR_POOL_PORT"], user=env["PGUSER"],
                  password=env["PGPASSWORD"], dbname=env["PGDATABASE"])
    conn = psycopg2.connect(connect_timeout=5, **{**params, **changes})
    conn.autocommit = True
    return conn


def refused(env: dict, **changes) -> str:
    """The pooler's refusal of this login (fails the test when the login works)."""
    try:
        conn = pooled(env, **changes)
    except psycopg2.OperationalError as exc:
        return " ".join(str(exc).split())
    conn.close()
    pytest.fail(f"the pool on port {env['PGVECTOR_POOL_PORT']} admitted {changes}")


def through_pool(env: dict) -> dict:
    """The .env as hostile.py reads it, but every login on the pool's port."""
    return {**env, "PGHOST": env["PGVECTOR_POOL_HOST"], "PGPORT": env["PGVECTOR_POOL_PORT"]}


def assert_vector_works_through_the_pool(client: str, env: dict) -> None:
    """DATABASE_POOL_URL as an app uses it: a vector table, an HNSW index, a nearest-neighbour query; the pooler's
    console lists the session while it is open (it really went through PgBouncer)."""
    assert env["DATABASE_POOL_URL"] == (f"postgresql://{env['PGUSER']}:{env['PGPASSWORD']}@127.0.0.1:"
                                        f"{env['PGVECTOR_POOL_PORT']}/{env['PGDATABASE']}")
    assert env["PGVECTOR_POOL_PORT"] != env["PGPORT"]
    conn = psycopg2.connect(env["DATABASE_POOL_URL"], connect_timeout=5)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE pooled_items (id int PRIMARY KEY, embedding vector(3))")
        cur.execute("INSERT INTO pooled_items SELECT i, ARRAY[i, 1, 1]::vector FROM generate_series(1, 50) i")
        cur.execute("CREATE INDEX ON pooled_items USING hnsw (embedding vector_l2_ops)")
        cur.execute("SELECT id FROM pooled_items ORDER BY embedding <-> '[7.2, 1, 1]' LIMIT 1")
        assert cur.fetchone() == (7,)
        cur.execute("SELECT current_user, current_database()")
        assert cur.fetchone() == (env["PGUSER"], env["PGDATABASE"])
    clients = pool_of(client).show("CLIENTS")
    conn.close()
    assert any(c["database"] == env["PGDATABASE"] and c["user"] == env["PGUSER"] for c in clients), clients


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a daemon's parent in a container may never reap it)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def status_json(cli, client: str) -> tuple[int, dict]:
    result = cli("status", CLIENT_ID=client, JSON="true")
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)["clients"][0]


# -- 1. the pool works for every engine ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["dedicated", "docker", "external"])
def test_pooled_login_with_the_env_works(cli, request, kind):
    client = {"dedicated": "pool-one", "docker": DOCKER_ID, "external": "pool-ext"}[kind]
    env = setup(cli, client, kind, request)
    assert_vector_works_through_the_pool(client, env)
    admin = load(client).engine.admin_params()  # the superuser with its real password (docker, external) is refused
    for dbname in ("postgres", env["PGDATABASE"]):
        assert refused(env, user=admin["user"], password=admin.get("password") or "", dbname=dbname)
    code, status = status_json(cli, client)
    assert code == 0, status["problems"]
    assert status["pool"]["running"] is True and status["pool"]["login"] is True
    assert (status["pool"]["port"], status["pool"]["mode"]) == (int(env["PGVECTOR_POOL_PORT"]), "session")


def test_shared_server_clients_each_reach_their_own_pool_only(cli):
    a, b = setup(cli, "pool-sh-a", "shared"), setup(cli, "pool-sh-b", "shared")
    assert a["PGVECTOR_POOL_PORT"] == b["PGVECTOR_POOL_PORT"]  # one pooler per server
    assert pool_of("pool-sh-a").layout.key == "_shared"
    for client, env in (("pool-sh-a", a), ("pool-sh-b", b)):
        assert_vector_works_through_the_pool(client, env)
    assert refused(a, dbname=b["PGDATABASE"])
    assert refused(b, dbname=a["PGDATABASE"])
    assert refused(a, user=b["PGUSER"], password=b["PGPASSWORD"])  # B's login on A's pool


# -- 2. refused through the pool ----------------------------------------------------------------------------

def test_the_pool_refuses_wrong_passwords_other_tenants_the_superuser_and_the_console(cli):
    a, b = setup(cli, "pool-de-a", "dedicated"), setup(cli, "pool-de-b", "dedicated")
    shared = setup(cli, "pool-sh-c", "shared")
    assert a["PGVECTOR_POOL_PORT"] != b["PGVECTOR_POOL_PORT"]
    # same role and database names on two dedicated servers: A's password on B's pooler is a wrong password
    assert (a["PGUSER"], a["PGDATABASE"]) == (b["PGUSER"], b["PGDATABASE"])
    assert refused(a, port=b["PGVECTOR_POOL_PORT"])
    assert refused(b, port=a["PGVECTOR_POOL_PORT"])
    assert refused(shared, user=a["PGUSER"], password=a["PGPASSWORD"], dbname=a["PGDATABASE"])
    for env in (a, shared):
        assert refused(env, password="wrong-password")
        assert refused(env, password="")
        assert refused(env, password=env["PGPASSWORD"] + "x")
        for password in ("", "postgres", env["PGPASSWORD"]):
            for dbname in ("postgres", "template1", env["PGDATABASE"], "pgbouncer"):
                assert refused(env, user="postgres", password=password, dbname=dbname)
        for dbname in ("pgbouncer", env["PGDATABASE"], "postgres"):
            assert refused(env, user="root", password="", dbname=dbname)  # the console is root over the socket only
        assert refused(env, dbname="pgbouncer")  # the tenant on the console
        assert refused(env, dbname="postgres")
        assert refused(env, dbname="template1")
    pooled(a).close()  # and the tenant itself still gets in
    pooled(shared).close()


# -- 3. pool limits --------------------------------------------------------------------------------------------

def test_a_full_pool_queues_the_surplus_and_the_server_sees_no_more_than_its_cap(cli):
    client = "pool-lim"
    env = setup(cli, client, "dedicated", POOL_SIZE="2", POOL_MAX_CONNECTIONS="2")
    assert (env["PGVECTOR_POOL_SIZE"], env["PGVECTOR_POOL_MAX_CONNECTIONS"]) == ("2", "2")
    pool = pool_of(client)
    watcher = superuser(client)
    watcher.autocommit = True
    seen = {"backends": 0, "waiting": 0}
    done = threading.Event()

    def watch():
        with watcher.cursor() as cur:
            while not done.is_set():
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND backend_type = 'client backend'",
                            (env["PGUSER"],))
                seen["backends"] = max(seen["backends"], cur.fetchone()[0])
                seen["waiting"] = max(seen["waiting"], (pool.pools(env["PGDATABASE"]) or {}).get("cl_waiting") or 0)
                time.sleep(0.02)

    results: list = []

    def work():
        started = time.monotonic()
        try:
            conn = pooled(env)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_sleep(1)")
            conn.close()
            results.append(("ok", time.monotonic() - started))
        except Exception as exc:  # noqa: BLE001 - the failure is the finding
            results.append((f"failed: {exc}", time.monotonic() - started))

    monitor = threading.Thread(target=watch)
    monitor.start()
    workers = [threading.Thread(target=work) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    done.set()
    monitor.join()
    watcher.close()
    assert [outcome for outcome, _ in results] == ["ok"] * 3, results
    assert max(seconds for _, seconds in results) >= 1.9, results  # the third waited for a server connection
    assert seen["backends"] == 2, seen
    assert seen["waiting"] >= 1, seen
    again = cli("install", CLIENT_ID=client, DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL)  # a re-run keeps the recorded pool
    assert again.returncode == 0, again.stderr
    assert (read_env(client)["PGVECTOR_POOL_SIZE"], read_env(client)["PGVECTOR_POOL_MAX_CONNECTIONS"]) == ("2", "2")
    code, status = status_json(cli, client)
    assert code == 0 and (status["pool"]["size"], status["pool"]["max_connections"]) == (2, 2), status


# -- 4. rotate ------------------------------------------------------------------------------------------------

def test_rotate_keeps_the_pool_with_the_new_password_and_ends_the_old_sessions(cli):
    old, neighbour = setup(cli, "pool-rot-a", "shared"), setup(cli, "pool-rot-b", "shared")
    held, kept = pooled(old), pooled(neighbour)
    result = cli("rotate", CLIENT_ID="pool-rot-a", YES="true")
    assert result.returncode == 0, result.stderr + result.stdout
    new = read_env("pool-rot-a")
    assert new["PGPASSWORD"] != old["PGPASSWORD"]
    assert new["DATABASE_POOL_URL"] == old["DATABASE_POOL_URL"].replace(old["PGPASSWORD"], new["PGPASSWORD"])
    with pooled(new).cursor() as cur:
        cur.execute("SELECT '[1,2]'::vector <-> '[1,3]'")
        assert cur.fetchone() == (1.0,)
    assert "SASL authentication failed" in refused(old)
    with pytest.raises(psycopg2.Error):
        held.cursor().execute("SELECT 1")
    with kept.cursor() as cur:  # the neighbour's pooled session on the same pooler is untouched
        cur.execute("SELECT 1")
    kept.close()
    conn = superuser("pool-rot-a")
    with conn.cursor() as cur:
        cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (new["PGUSER"],))
        verifier = cur.fetchone()[0]
    conn.close()
    assert f'"{new["PGUSER"]}" "{verifier}"\n' in pool_of("pool-rot-a").layout.files()["userlist.txt"].read_text()


def test_another_clients_reload_leaves_open_server_connections_and_logins_in_progress_alone(cli):
    """Each install reloads the shared pooler. PgBouncer 1.18 with server TLS configured recycled every tenant's server
    connections on a RELOAD and cut logins in progress, whose pool then waited server_login_retry (15 s): a neighbour's
    install timed a tenant's login out (seen on CI). Reloads now leave both alone."""
    env = setup(cli, "pool-rl-a", "shared")
    setup(cli, "pool-rl-b", "shared")
    pool = pool_of("pool-rl-a")
    pooled(env).close()  # session mode: its server connection stays open, idle

    def servers() -> set:
        return {row["local_port"] for row in pool.show("SERVERS") if row["database"] == env["PGDATABASE"]}

    before = servers()
    assert before
    failures: list[str] = []
    stop = threading.Event()

    def logins():
        while not stop.is_set():
            try:
                pooled(env).close()
            except psycopg2.OperationalError as exc:
                failures.append(str(exc).strip())

    worker = threading.Thread(target=logins)
    worker.start()
    try:
        for _ in range(40):
            pool.reload()
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join()
    assert failures == []
    time.sleep(1.5)  # PgBouncer's janitor closes what a reload marked, once a second
    assert before <= servers()


def test_starting_a_pooler_that_runs_already_makes_it_read_its_files(cli):
    """A console that did not answer in time (a loaded host) looks like a pooler that is down: the start that follows
    finds it running and has it re-read the files the run just wrote, instead of leaving them unread."""
    setup(cli, "pool-start", "dedicated")
    pool = pool_of("pool-start")
    pid = int((pool.layout.run_dir / "pgbouncer.pid").read_text().split()[0])
    reloads = pool.layout.log_file.read_text().count("RELOAD command issued")
    pool.layout.pending.touch()
    pool.start()
    assert int((pool.layout.run_dir / "pgbouncer.pid").read_text().split()[0]) == pid and alive(pid)
    assert pool.layout.log_file.read_text().count("RELOAD command issued") == reloads + 1
    assert not pool.layout.pending.exists()


# -- 5. a killed pooler ------------------------------------------------------------------------------------------

def test_a_killed_pooler_is_reported_and_restart_brings_it_back(cli):
    client = "pool-kill"
    env = setup(cli, client, "dedicated")
    layout = pool_of(client).layout
    pid = int((layout.run_dir / "pgbouncer.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    # A zombie leader is not the end: PgBouncer has threads, and its listening socket closes with the last of
    # them (seen: a connection accepted and dropped after the leader showed Z). Wait for the port itself.
    deadline = time.monotonic() + 10
    said = refused(env)
    while time.monotonic() < deadline and "Connection refused" not in said:
        time.sleep(0.05)
        said = refused(env)
    assert "Connection refused" in said
    code, status = status_json(cli, client)
    assert code == 1 and status["healthy"] is False
    assert status["pool"]["running"] is False
    assert any("pooler" in problem and "not running" in problem for problem in status["problems"]), status["problems"]
    people = cli("status", CLIENT_ID=client)
    assert people.returncode == 1 and "pooler NOT RUNNING" in people.stdout
    result = cli("restart", CLIENT_ID=client, JSON="true")
    assert result.returncode == 0, result.stderr + result.stdout
    assert json.loads(result.stdout)["pooler"] == "started"
    pooled(env).close()
    assert status_json(cli, client)[0] == 0
    again = cli("restart", CLIENT_ID=client, JSON="true")  # a running pooler is left as it is
    assert again.returncode == 0 and json.loads(again.stdout)["pooler"] == "running"


# -- 6. the hostile tenant through the pool -------------------------------------------------------------------

def test_a_hostile_tenant_working_through_the_pool_gains_nothing(cli):
    """The tenant plants hostile.py's battery and sets its database's and role's defaults, all through its pool, and
    leaves session state on the pooled server connection; then the operator's commands run (install, status, logs
    POOLER=true, rotate, FORCE) on it and its neighbour on the shared server. No planted code runs as anyone else, the
    tenant gains no attribute, no role appears, and nothing prints the escape codes of a login name."""
    evil, good = "pool-hx-evil", "pool-hx-good"
    envs = {evil: setup(cli, evil, "shared"), good: setup(cli, good, "shared")}
    params = load(evil).engine.admin_params()
    witness = hostile.Witness({"shared": params}, {"shared": envs[evil]["PGUSER"]}, {"shared": envs[evil]["PGDATABASE"]})
    witness.start()
    superusers = witness.superusers("shared")
    witness.traps = hostile.plant(through_pool(envs[evil]), f"hx-pool-marker-{evil}").traps
    conn = pooled(envs[evil])
    with conn.cursor() as cur:  # database and role defaults every later session of the database gets, pooled or not
        cur.execute(f'ALTER DATABASE "{envs[evil]["PGDATABASE"]}" SET role = "{envs[evil]["PGUSER"]}"')
        cur.execute(f'ALTER ROLE CURRENT_USER IN DATABASE "{envs[evil]["PGDATABASE"]}" SET search_path = public, pg_catalog')
        cur.execute("SET search_path = public, pg_catalog")  # session state left on the pooled server connection
    conn.close()
    # a login name made of terminal escape codes: PgBouncer logs it raw
    refused(envs[evil], user="\x1b]0;owned\x07\x1b[2J", password="x")
    outcomes = []
    for step, client, args in [("install", evil, {}), ("status", evil, {}), ("status", good, {}),
                               ("logs", evil, {"POOLER": "true"}), ("logs", good, {"POOLER": "true"}),
                               ("rotate", evil, {}), ("install", evil, {"FORCE": "true"}), ("test", good, {})]:
        hostile.set_search_path(through_pool(read_env(evil)), hostile.SEARCH_PATHS[len(outcomes) % 2])
        if step == "install":
            result = cli("install", CLIENT_ID=client, DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL, **args)
        else:
            result = cli(step, CLIENT_ID=client, **args)
        outcomes.append((step, client, result.returncode, (result.stderr or result.stdout)[-300:]))
        assert "Traceback" not in result.stdout + result.stderr, outcomes[-1]
        assert "\x1b" not in result.stdout + result.stderr, f"{step} {client} printed raw escape codes"
        witness.after(f"{step} ({client})")
        pooled(read_env(evil)).close()  # the tenant keeps working through its pool
    expected = {("status", evil): (0, 1)}
    bad = [o for o in outcomes if o[2] not in expected.get((o[0], o[1]), (0,))]
    assert not bad, bad
    assert not witness.findings, witness.findings
    assert not witness.tenant_is_clean(), witness.tenant_is_clean()
    now = hostile.roles(params)
    assert set(now) == set(witness.before["shared"]), sorted(set(now) ^ set(witness.before["shared"]))
    assert witness.superusers("shared", now) == superusers
    assert status_json(cli, good)[0] == 0


# -- 7. the pooler's files -----------------------------------------------------------------------------------

def test_the_poolers_files_are_its_groups_to_read_and_hold_no_password(cli, stack_root):
    envs = {"pool-file-a": setup(cli, "pool-file-a", "dedicated"), "pool-file-b": setup(cli, "pool-file-b", "shared")}
    for client, env in envs.items():
        pooled(env).close()
        assert cli("status", CLIENT_ID=client).returncode == 0  # the status's own pooled login is logged too
        layout = pool_of(client).layout
        user = pwd.getpwnam(layout.os_user)
        for path in layout.files().values():
            info = path.stat()
            assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, 0, user.pw_gid), path
        for folder in (layout.run_dir, layout.log_file.parent):
            info = folder.stat()
            assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, user.pw_uid), folder
        info = layout.directory.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o750, 0, user.pw_gid)
        for record in layout.clients_dir.iterdir():
            assert (stat.S_IMODE(record.stat().st_mode), record.stat().st_uid) == (0o600, 0), record
        conn = superuser(client)
        with conn.cursor() as cur:
            cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (env["PGUSER"],))
            verifier = cur.fetchone()[0]
        conn.close()
        assert f'"{env["PGUSER"]}" "{verifier}"' in layout.files()["userlist.txt"].read_text()
    secrets = [env["PGPASSWORD"].encode() for env in envs.values()]
    files = [p for p in (stack_root / "pgvector" / "poolers").rglob("*") if p.is_file()]
    files.append(Path(os.environ["AGENCY_STACK_LOG"]))
    assert any(p.name == "pgbouncer.log" for p in files) and any(p.name == "userlist.txt" for p in files)
    for path in files:
        data = path.read_bytes()
        assert not any(secret in data for secret in secrets), f"a tenant's password is in {path}"


# -- 8. uninstall ---------------------------------------------------------------------------------------------

def test_uninstall_removes_the_pool_and_with_the_last_client_the_pooler(cli, stack_root):
    a, b = setup(cli, "pool-un-a", "shared"), setup(cli, "pool-un-b", "shared")
    c = setup(cli, "pool-un-c", "dedicated")
    shared, dedicated = pool_of("pool-un-a"), pool_of("pool-un-c")
    result = cli("uninstall", CLIENT_ID="pool-un-a", YES="true", KEEP_DATA="true", NO_BACKUP="true")
    assert result.returncode == 0, result.stderr + result.stdout
    assert refused(a)  # KEEP_DATA: the pool goes with the access
    assert not (shared.layout.clients_dir / "pool-un-a.json").exists()
    for path in shared.layout.files().values():
        assert a["PGDATABASE"] not in path.read_text() and a["PGUSER"] not in path.read_text(), path
    pooled(b).close()  # the neighbour's pool stays
    others = set(shared.observe().entries) - {"pool-un-b"}  # other test files' shared clients, in a full run
    result = cli("uninstall", CLIENT_ID="pool-un-b", YES="true", NO_BACKUP="true")
    assert result.returncode == 0, result.stderr + result.stdout
    if others:  # the pooler stays for them; b's pool is gone from it
        assert "Connection refused" not in refused(b) and not (shared.layout.clients_dir / "pool-un-b.json").exists()
    else:  # the last client: nothing listens on the port any more
        assert "Connection refused" in refused(b)
        assert not shared.layout.directory.exists()
        assert ports.owned(stack_root / "pgvector", shared.layout.port_owner) is None
    pid_file = dedicated.layout.run_dir / "pgbouncer.pid"
    pid = int(pid_file.read_text().split()[0])
    result = cli("uninstall", CLIENT_ID="pool-un-c", YES="true", NO_BACKUP="true")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Connection refused" in refused(c)
    assert not alive(pid)
    assert not dedicated.layout.directory.exists()
    with pytest.raises(KeyError):
        pwd.getpwnam(dedicated.layout.os_user)
    assert ports.owned(stack_root / "pgvector", dedicated.layout.port_owner) is None


# -- 9. logs POOLER=true -----------------------------------------------------------------------------------------

def test_pooler_logs_show_the_clients_own_connections_only(cli):
    a, b = setup(cli, "pool-log-a", "shared"), setup(cli, "pool-log-b", "shared")
    d = setup(cli, "pool-log-d", "dedicated")
    for env in (a, b, d):
        pooled(env).close()
        refused(env, password="wrong")
    result = cli("logs", CLIENT_ID="pool-log-a", POOLER="true", LINES="1000")
    assert result.returncode == 0, result.stderr + result.stdout
    assert f"{a['PGDATABASE']}/{a['PGUSER']}@" in result.stdout
    assert "== pooler log" in result.stdout
    assert b["PGDATABASE"] not in result.stdout and b["PGUSER"] not in result.stdout
    assert a["PGPASSWORD"] not in result.stdout and b["PGPASSWORD"] not in result.stdout
    other = cli("logs", CLIENT_ID="pool-log-b", POOLER="true", LINES="1000")
    assert f"{b['PGDATABASE']}/{b['PGUSER']}@" in other.stdout
    assert a["PGDATABASE"] not in other.stdout and a["PGUSER"] not in other.stdout
    refused(d, user="\x1b]0;owned\x07\x1b[2J", password="x")  # PgBouncer logs a login name as it came
    own = cli("logs", CLIENT_ID="pool-log-d", POOLER="true", LINES="1000")
    assert own.returncode == 0 and f"{d['PGDATABASE']}/{d['PGUSER']}@" in own.stdout
    assert "login attempt" in own.stdout
    assert "]0;owned" in own.stdout and "\x1b" not in own.stdout and "\x07" not in own.stdout


def test_shared_pooler_logs_hide_other_connections_whatever_their_login_name(cli):
    """A login name is the connecting party's text: with a space or a newline in it PgBouncer's line no longer reads
    `db/user@`, and a newline starts a line of its own. Neither may reach the other tenant's logs POOLER=true."""
    a, b = setup(cli, "pool-name-a", "shared"), setup(cli, "pool-name-b", "shared")
    pooled(a).close()
    for name in (f"{b['PGUSER']} x", f"{b['PGUSER']}\n{b['PGDATABASE']}"):
        refused(b, user=name)
    result = cli("logs", CLIENT_ID="pool-name-a", POOLER="true", LINES="1000")
    assert result.returncode == 0, result.stderr + result.stdout
    assert f"{a['PGDATABASE']}/{a['PGUSER']}@" in result.stdout
    assert b["PGUSER"] not in result.stdout and b["PGDATABASE"] not in result.stdout, result.stdout


def test_a_run_killed_between_writing_the_files_and_the_reload_is_finished_by_the_next(cli, stack_root):
    """The files are written, then the pooler reloads: killed in between, the files are right and the running pooler
    still has the old ones. The marker written before the files makes the next run reload anyway."""
    env = setup(cli, "pool-pending", "dedicated")
    pool = pool_of("pool-pending")
    pool.layout.pending.touch()  # what a kill after _write leaves
    result = cli("install", "--json", CLIENT_ID="pool-pending", DOMAIN="example.com", ADMIN_EMAIL="ops@example.com",
                 ENGINE="embedded")
    assert result.returncode == 0, result.stderr
    rows = {item["item"]: item for item in json.loads(result.stdout)["items"]}
    assert rows["pooler process"]["status"] == "changed" and rows["pooler process"]["detail"].startswith("reloaded")
    assert not pool.layout.pending.exists()
    pooled(env).close()
    again = cli("install", "--json", CLIENT_ID="pool-pending", DOMAIN="example.com", ADMIN_EMAIL="ops@example.com",
                ENGINE="embedded")
    assert not json.loads(again.stdout)["changed"]
