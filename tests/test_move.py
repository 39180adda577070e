"""make pgvector-move: a client from server to server while a writer keeps committing through its .env
(real embedded servers, the shared server and the session's Patroni cluster; logical replication for real).

The writer re-reads the .env after every failed commit, as an app restarted by its supervisor would. Every
commit it saw acknowledged must be on the server the .env names at the end; rows, vectors, the HNSW index,
sequences and the password must arrive intact; a move killed at any step must be finished or undone by the
next run with nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2
import pytest

from agency_pgvector import envfile
from test_cli import SCHEMA, mismatches

from conftest import DOMAIN, EMAIL, client_paths

ROWS, DIM = 2000, 16


def connect(url: str):
    conn = psycopg2.connect(url, connect_timeout=3)
    conn.autocommit = True
    return conn


def env_of(client_id: str) -> dict:
    return envfile.read(client_paths(client_id).env_file)


class Writer(threading.Thread):
    """One transaction per step: insert id n into `log`, add one to the no-primary-key counter (UPDATE on a table
    without a replica identity fails while it is published, unless the move gave it one). On any error it reads
    the .env again and reconnects."""

    def __init__(self, client_id: str):
        super().__init__(daemon=True)
        self.client_id = client_id
        self.acked: list[int] = []
        self.times: list[float] = []
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        conn, n = None, 0
        while not self.halt.is_set():
            try:
                if conn is None:
                    conn = psycopg2.connect(env_of(self.client_id)["DATABASE_URL"], connect_timeout=3)
                n += 1
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO log (id) VALUES (%s)", (n,))
                    cur.execute("UPDATE counter SET n = n + 1")
                conn.commit()
                self.acked.append(n)
                self.times.append(time.monotonic())
                time.sleep(0.005)
            except psycopg2.Error as exc:
                self.errors.append(str(exc).strip().splitlines()[0])
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    def writes_after(self, moment: float) -> int:
        return sum(1 for t in self.times if t > moment)

    def stop(self) -> None:
        self.halt.set()
        self.join(30)

    def resumes(self, since: float, count: int = 10) -> None:
        """`count` commits acknowledged after `since` within 30 s (the writer found its server through the .env)."""
        deadline = time.monotonic() + 30
        while self.writes_after(since) < count:
            assert time.monotonic() < deadline, self.errors[-3:]
            time.sleep(0.05)


def seed(env: dict) -> str:
    """Vectors with an HNSW index, a table without a primary key, a sequence; returns a digest of the vectors."""
    conn = connect(env["DATABASE_URL"])
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE docs (id bigserial PRIMARY KEY, body text, emb vector({DIM}))")
        cur.execute(f"INSERT INTO docs (body, emb) SELECT 'doc ' || g, (SELECT array_agg(sin(g * d)) FROM "
                    f"generate_series(1, {DIM}) d)::vector FROM generate_series(1, {ROWS}) g")
        cur.execute("CREATE INDEX docs_hnsw ON docs USING hnsw (emb vector_cosine_ops)")
        cur.execute("CREATE TABLE log (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
        cur.execute("CREATE TABLE counter (n bigint)")
        cur.execute("INSERT INTO counter VALUES (0)")
    conn.close()
    return digest(env)


def digest(env: dict) -> str:
    conn = connect(env["DATABASE_URL"])
    with conn.cursor() as cur:
        cur.execute("SELECT md5(string_agg(id || ':' || body || ':' || emb::text, ',' ORDER BY id)), count(*) FROM docs")
        found = cur.fetchone()
    conn.close()
    return f"{found[0]}/{found[1]}"


def check_arrived(env: dict, writer: Writer, vectors: str) -> None:
    """On the server the .env names: every acknowledged commit, the counter in step with the log, the vectors, the
    HNSW index used, the sequence ahead of every id."""
    conn = connect(env["DATABASE_URL"])
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM log")
        present = {row[0] for row in cur.fetchall()}
        cur.execute("SELECT n FROM counter")
        (counter,) = cur.fetchone()
        cur.execute("SET enable_seqscan = off")
        cur.execute("EXPLAIN SELECT id FROM docs ORDER BY emb <=> (SELECT emb FROM docs WHERE id = 7) LIMIT 5")
        plan = " ".join(row[0] for row in cur.fetchall())
        cur.execute("SELECT id, emb <=> (SELECT emb FROM docs WHERE id = 7) FROM docs "
                    "ORDER BY emb <=> (SELECT emb FROM docs WHERE id = 7) LIMIT 1")
        nearest, distance = cur.fetchone()
        cur.execute("INSERT INTO docs (body) VALUES ('after the move') RETURNING id")
        new_id = cur.fetchone()[0]
    conn.close()
    lost = sorted(set(writer.acked) - present)
    assert writer.acked and not lost, f"{len(lost)} acknowledged commits lost (first {lost[:5]})"
    assert counter == len(present), (counter, len(present))
    assert "docs_hnsw" in plan and nearest is not None and distance is not None, plan  # the index answers (approximate)
    assert new_id > ROWS, new_id


def move(cli, client_id: str, to: str, **env: str) -> subprocess.CompletedProcess:
    return cli("move", "--json", CLIENT_ID=client_id, TO=to, **env)


def finish(cli, client_id: str) -> None:
    done = cli("move-finish", CLIENT_ID=client_id, YES="true")
    assert done.returncode == 0, done.stderr + done.stdout


def moved_ok(cli, client_id: str, to: str) -> dict:
    result = move(cli, client_id, to)
    assert result.returncode == 0, result.stderr + result.stdout
    out = json.loads(result.stdout)
    assert mismatches(out, SCHEMA["move"]) == [], out  # the shape docs/json.md gives
    return out


@pytest.fixture
def traveller(install):
    """A client on its own dedicated server, seeded, with a writer running."""
    made: list[Writer] = []

    def make(client_id: str) -> tuple[Writer, str]:
        vectors = seed(install(client_id))
        writer = Writer(client_id)
        writer.start()
        deadline = time.monotonic() + 30
        while len(writer.acked) < 20:
            assert time.monotonic() < deadline, writer.errors[-3:]
            time.sleep(0.05)
        made.append(writer)
        return writer, vectors

    yield make
    for writer in made:
        writer.stop()


def test_dedicated_to_shared_to_cluster_to_dedicated_with_a_writer_throughout(cli, traveller, patroni_cluster):
    cid = "mv-tour"
    writer, vectors = traveller(cid)
    password = env_of(cid)["PGVECTOR_DB_PASS"]
    legs = []
    for to, engine in (("shared", "embedded"), (patroni_cluster, "patroni"), ("dedicated", "embedded")):
        before = env_of(cid)
        result = moved_ok(cli, cid, to)
        after = env_of(cid)
        assert (after["PGVECTOR_ENGINE"], after["PGVECTOR_SERVER"]) == (engine, to)
        assert after["PGVECTOR_DB_PASS"] == password  # the same secret: apps reconnect with the new .env only
        assert result["phase"] == "kept" and result["freeze_seconds"] < 30
        assert digest(after) == vectors, "vectors changed on the way"
        writer.resumes(time.monotonic(), 20)  # the writer found the new server through the rewritten .env
        # the old copy is kept, closed to its tenant, until move-finish
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(before["DATABASE_URL"].split("?")[0], connect_timeout=3).close()
        status = json.loads(cli("status", "--json", CLIENT_ID=cid).stdout)["clients"][0]
        assert status["healthy"], status["problems"]
        finish(cli, cid)
        legs.append(result)
    writer.stop()
    check_arrived(env_of(cid), writer, vectors)
    assert not (client_paths(cid).component_dir / "move.json").exists()
    gone = cli("uninstall", CLIENT_ID=cid, YES="true", NO_BACKUP="true", REMOVE_SERVER="true")
    assert gone.returncode == 0, gone.stderr


def test_a_move_keeps_the_old_copy_until_finished_and_refuses_a_second_move_meanwhile(cli, traveller):
    cid = "mv-keep"
    writer, vectors = traveller(cid)
    moved_ok(cli, cid, "shared")
    again = move(cli, cid, "dedicated")
    assert again.returncode == 3 and "move-finish" in again.stderr and "Traceback" not in again.stderr
    early = cli("move-finish", CLIENT_ID=cid)
    assert early.returncode == 3 and "YES=true" in early.stderr
    from conftest import admin

    conn = admin(cid)  # the old dedicated server still runs and holds the old database
    with conn.cursor() as cur:
        cur.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'vectoruser'")
        assert cur.fetchone() == (False,)
        cur.execute("SELECT count(*) FROM pg_database WHERE datname = 'vectordb'")
        assert cur.fetchone() == (1,)
        cur.execute("SELECT count(*) FROM pg_replication_slots")
        assert cur.fetchone() == (0,), "the move's slot stayed behind"
    conn.close()
    cron = Path(os.environ["AGENCY_CRON_DIR"]) / "agency-pgvector-move-finish"
    assert "move-finish --all" in cron.read_text()  # retention runs without anyone remembering it
    kept = cli("move-finish", ALL="true")  # cron's run: younger than 7 days, kept
    assert kept.returncode == 0 and "kept until 7 days" in kept.stderr, kept.stderr
    journal_file = client_paths(cid).component_dir / "move.json"
    journal = json.loads(journal_file.read_text())
    journal["switched"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 8 * 86400))
    journal_file.write_text(json.dumps(journal))
    expired = cli("move-finish", ALL="true")
    assert expired.returncode == 0 and f"Client {cid}: the old copy" in expired.stdout, expired.stderr
    assert not journal_file.exists()
    from agency_pgvector.engines.embedded import EmbeddedEngine
    from agency_pgvector.spec import Spec

    assert not EmbeddedEngine(Spec(client_id=cid, root=Path(os.environ["AGENCY_STACK_ROOT"]))).exists()
    writer.stop()
    check_arrived(env_of(cid), writer, vectors)
    gone = cli("uninstall", CLIENT_ID=cid, YES="true", NO_BACKUP="true")
    assert gone.returncode == 0, gone.stderr


def _killed_move(client_id: str, to: str, needle: str) -> bool:
    """Run the move and SIGKILL its process group once `needle` is in the component log; False if it ended first."""
    log = Path(os.environ["AGENCY_STACK_LOG"])
    start = log.stat().st_size if log.exists() else 0
    proc = subprocess.Popen([sys.executable, "-m", "agency_pgvector", "move", "--quiet"],
                            env={**os.environ, "CLIENT_ID": client_id, "TO": to}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    while proc.poll() is None:
        if needle in (log.read_text()[start:] if log.exists() else ""):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    return False


KILL_POINTS = ["move: target tenant made", "move: schema restored", "move: subscribed", "changed indexes",
               "move: writes frozen", "move: caught up", "move: replication dropped", "move: switched"]


@pytest.mark.parametrize("point", range(len(KILL_POINTS)))
def test_a_move_killed_at_each_step_converges_with_nothing_lost(cli, traveller, point):
    cid = f"mv-kill{point}"
    writer, vectors = traveller(cid)
    assert _killed_move(cid, "shared", KILL_POINTS[point]), "the move ended before the kill point"
    blocked = cli("install", CLIENT_ID=cid, DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL)
    if (client_paths(cid).component_dir / "move.json").exists() and \
            json.loads((client_paths(cid).component_dir / "move.json").read_text())["phase"] != "kept":
        assert blocked.returncode == 3 and "unfinished" in blocked.stderr, blocked.stderr
    result = moved_ok(cli, cid, "shared")  # the next run finishes it (or starts again after undoing it)
    assert result["phase"] == "kept"
    assert env_of(cid)["PGVECTOR_SERVER"] == "shared"
    writer.resumes(time.monotonic())
    writer.stop()
    assert digest(env_of(cid)) == vectors
    check_arrived(env_of(cid), writer, vectors)
    finish(cli, cid)
    gone = cli("uninstall", CLIENT_ID=cid, YES="true", NO_BACKUP="true")
    assert gone.returncode == 0, gone.stderr


def test_abort_undoes_a_move_and_the_source_takes_writes_again(cli, traveller):
    cid = "mv-abort"
    writer, vectors = traveller(cid)
    assert _killed_move(cid, "shared", "move: writes frozen")
    frozen_at = time.monotonic()
    undone = cli("move", CLIENT_ID=cid, ABORT="true")
    assert undone.returncode == 0, undone.stderr
    assert env_of(cid)["PGVECTOR_SERVER"] == "dedicated"
    assert not (client_paths(cid).component_dir / "move.json").exists()
    writer.resumes(frozen_at)
    from agency_pgvector.engines.embedded import SharedEmbeddedEngine
    from agency_pgvector.spec import Spec

    shared = SharedEmbeddedEngine(Spec(client_id=cid, root=Path(os.environ["AGENCY_STACK_ROOT"])))
    conn = shared.admin_connect()
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_database WHERE datname = 'vectordb_mv_abort'")
        assert cur.fetchone() == (0,), "the target copy stayed"
    conn.close()
    from conftest import admin

    conn = admin(cid, "vectordb")
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_replication_slots")
        slots = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM pg_publication")
        publications = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE '%.mover'")
        movers = cur.fetchone()[0]
        cur.execute("SELECT relreplident FROM pg_class WHERE relname = 'counter'")
        ident = cur.fetchone()[0]
    conn.close()
    assert (slots, publications, movers, ident) == (0, 0, 0, "d")
    writer.stop()
    check_arrived(env_of(cid), writer, vectors)
    nothing = cli("move", CLIENT_ID=cid, ABORT="true")
    assert nothing.returncode == 3 and "nothing to undo" in nothing.stderr
    gone = cli("uninstall", CLIENT_ID=cid, YES="true", NO_BACKUP="true", REMOVE_SERVER="true")
    assert gone.returncode == 0, gone.stderr


def test_bad_move_input_is_one_sentence_and_changes_nothing(cli, install):
    cid = "mv-bad"
    install(cid)
    for env, needle in (({"TO": "nowhere"}, "no server of this host"), ({"TO": "dedicated"}, "already"),
                        ({"TO": ""}, "TO is required"), ({"TO": "x;rm -rf /"}, "no server of this host")):
        result = cli("move", CLIENT_ID=cid, **env)
        assert result.returncode == 2, result.stderr
        assert needle in result.stderr and "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (client_paths(cid).component_dir / "move.json").exists()
    member = cli("logs", CLIENT_ID=cid, MEMBER="m1")  # MEMBER is a cluster's: refused before anything prints
    assert member.returncode == 2 and "applies to a cluster's clients" in member.stderr and not member.stdout
    gone = cli("uninstall", CLIENT_ID=cid, YES="true", NO_BACKUP="true", REMOVE_SERVER="true")
    assert gone.returncode == 0, gone.stderr


def test_a_server_without_logical_decoding_is_refused_with_nothing_created(cli, install):
    cid = "mv-replica"
    install(cid)
    from conftest import admin

    conn = admin(cid)
    conn.cursor().execute("ALTER SYSTEM SET wal_level = replica")
    conn.close()
    assert cli("restart", CLIENT_ID=cid, YES="true").returncode == 0
    try:
        result = cli("move", CLIENT_ID=cid, TO="shared")
        assert result.returncode == 3 and "wal_level=replica" in result.stderr and "Traceback" not in result.stderr
        assert "nothing was moved" in result.stderr
        assert not (client_paths(cid).component_dir / "move.json").exists()
        assert env_of(cid)["PGVECTOR_SERVER"] == "dedicated"
    finally:
        conn = admin(cid)
        conn.cursor().execute("ALTER SYSTEM RESET wal_level")
        conn.close()
    gone = cli("uninstall", CLIENT_ID=cid, YES="true", NO_BACKUP="true", REMOVE_SERVER="true")
    assert gone.returncode == 0, gone.stderr


def _shared_admin(dbname: str):
    from agency_pgvector.engines.embedded import SharedEmbeddedEngine
    from agency_pgvector.spec import Spec

    return SharedEmbeddedEngine(Spec(client_id="x", root=Path(os.environ["AGENCY_STACK_ROOT"]))).admin_connect(dbname)


def test_a_hostile_tenant_cannot_narrow_or_hide_what_moves(cli, install):
    """The tenant plants a publication under the move's name that covers one table, and a table whose forced row
    security hides every row even from its owner: every row of every table still arrives."""
    cid = "mv-hostile"
    env = install(cid)
    conn = connect(env["DATABASE_URL"])
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE shown (id int PRIMARY KEY)")
        cur.execute("INSERT INTO shown SELECT generate_series(1, 30)")
        cur.execute("CREATE SCHEMA side")
        cur.execute("CREATE TABLE side.hidden (id int PRIMARY KEY, secret text)")
        cur.execute("INSERT INTO side.hidden SELECT g, 'row ' || g FROM generate_series(1, 50) g")
        cur.execute("ALTER TABLE side.hidden ENABLE ROW LEVEL SECURITY")
        cur.execute("ALTER TABLE side.hidden FORCE ROW LEVEL SECURITY")
        cur.execute("CREATE POLICY nobody ON side.hidden USING (false)")
        cur.execute("CREATE PUBLICATION agency_move FOR TABLE shown")
        # code that runs wherever the table's index expression is planned: as a superuser it makes a superuser
        cur.execute("CREATE FUNCTION public.pwn() RETURNS int LANGUAGE plpgsql VOLATILE AS $f$ BEGIN "
                    "IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN "
                    "EXECUTE 'CREATE ROLE mv_evil LOGIN SUPERUSER'; END IF; RETURN 1; END $f$")
        cur.execute("CREATE FUNCTION public.trap(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$ BEGIN "
                    "PERFORM public.pwn(); RETURN $1; END $f$")
        cur.execute("CREATE INDEX shown_trap ON shown ((id + public.trap(1)))")
        cur.execute("CREATE INDEX hidden_trap ON side.hidden (id) WHERE public.trap(1) = 1")
        # a type of the tenant's own named like pgvector's, first on its search_path
        cur.execute("CREATE DOMAIN public.vector AS text CHECK (false)")
    conn.close()
    before = env_of(cid)
    moved_ok(cli, cid, "shared")
    after = env_of(cid)
    assert (after["DOMAIN"], after["ADMIN_EMAIL"]) == (before["DOMAIN"], before["ADMIN_EMAIL"])  # as installed
    from conftest import admin

    for conn in (admin(cid), _shared_admin("postgres")):  # neither server ran the trap as a superuser
        with conn.cursor() as cur:
            cur.execute("SELECT rolname FROM pg_roles WHERE rolsuper AND rolname <> 'postgres'")
            assert cur.fetchall() == []
        conn.close()
    admin_conn = _shared_admin("vectordb_mv_hostile")
    with admin_conn.cursor() as cur:
        cur.execute("DROP INDEX public.shown_trap, side.hidden_trap")  # before this superuser session plans a query
        cur.execute("SELECT (SELECT count(*) FROM public.shown), (SELECT count(*) FROM side.hidden)")
        assert cur.fetchone() == (30, 50)
        cur.execute("SELECT relforcerowsecurity FROM pg_class WHERE relname = 'hidden'")
        assert cur.fetchone() == (True,)  # the tenant's own rules came along
    admin_conn.close()
    finish(cli, cid)
    gone = cli("uninstall", CLIENT_ID=cid, YES="true", NO_BACKUP="true")
    assert gone.returncode == 0, gone.stderr


def test_a_schema_change_during_the_move_undoes_it_and_writes_go_on_at_the_source(cli, traveller):
    cid = "mv-ddl"
    writer, vectors = traveller(cid)
    log = Path(os.environ["AGENCY_STACK_LOG"])
    start = log.stat().st_size
    proc = subprocess.Popen([sys.executable, "-m", "agency_pgvector", "move"], env={**os.environ, "CLIENT_ID": cid,
                            "TO": "shared"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while "move: subscribed" not in log.read_text()[start:]:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.002)
    conn = connect(env_of(cid)["DATABASE_URL"])
    conn.cursor().execute("CREATE TABLE added_meanwhile (id int)")
    conn.close()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 3 and "changed during the move" in err and "undone" in err, err
    assert env_of(cid)["PGVECTOR_SERVER"] == "dedicated"
    assert not (client_paths(cid).component_dir / "move.json").exists()
    writer.resumes(time.monotonic())
    writer.stop()
    check_arrived(env_of(cid), writer, vectors)
    again = moved_ok(cli, cid, "shared")  # once the schema holds still, the move goes through
    assert again["phase"] == "kept"
    finish(cli, cid)
    gone = cli("uninstall", CLIENT_ID=cid, YES="true", NO_BACKUP="true")
    assert gone.returncode == 0, gone.stderr


def test_after_the_switch_a_move_only_goes_forward(cli, traveller):
    """Killed once the .env may already name the target: ABORT would drop the live copy, so it is refused; the
    next run finishes the move."""
    cid = "mv-forward"
    writer, vectors = traveller(cid)
    assert _killed_move(cid, "shared", "move: replication dropped")
    journal = json.loads((client_paths(cid).component_dir / "move.json").read_text())
    assert journal.get("switching") is True
    refused = cli("move", CLIENT_ID=cid, ABORT="true")
    assert refused.returncode == 3 and "switched already" in refused.stderr, refused.stderr
    blocked = cli("install", CLIENT_ID=cid, DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL)
    assert blocked.returncode == 3 and "ABORT" not in blocked.stderr, blocked.stderr
    assert moved_ok(cli, cid, "shared")["phase"] == "kept"
    writer.resumes(time.monotonic())
    writer.stop()
    check_arrived(env_of(cid), writer, vectors)
    finish(cli, cid)
    assert cli("uninstall", CLIENT_ID=cid, YES="true", NO_BACKUP="true").returncode == 0


def test_two_clients_move_to_the_same_server_at_once(cli, traveller):
    first, first_vectors = traveller("mv-twin-a")
    second, second_vectors = traveller("mv-twin-b")
    runs = [subprocess.Popen([sys.executable, "-m", "agency_pgvector", "move", "--json"], text=True,
                             env={**os.environ, "CLIENT_ID": cid, "TO": "shared"}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE) for cid in ("mv-twin-a", "mv-twin-b")]
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
        assert json.loads(out)["phase"] == "kept"
    for cid, writer, vectors in (("mv-twin-a", first, first_vectors), ("mv-twin-b", second, second_vectors)):
        writer.resumes(time.monotonic())
        writer.stop()
        check_arrived(env_of(cid), writer, vectors)
        finish(cli, cid)
        assert cli("uninstall", CLIENT_ID=cid, YES="true", NO_BACKUP="true").returncode == 0


def test_a_move_keeps_remote_access_the_client_was_installed_with(cli, install):
    """ENABLE_CLOUD, DOMAIN and ADMIN_EMAIL come from the installed .env, not from the move command's environment
    (an attacker's review saw a move drop remote access without a word)."""
    cid = "mv-cloud"
    before = install(cid, ENABLE_CLOUD="true")
    assert before["PGVECTOR_TLS_SHA256"] and before["DATABASE_REMOTE_URL"]
    result = moved_ok(cli, cid, "shared")  # the cli fixture's environment has no ENABLE_CLOUD
    assert result["phase"] == "kept"
    after = env_of(cid)
    assert after["PGVECTOR_SERVER"] == "shared"
    assert after["PGVECTOR_TLS_SHA256"] == before["PGVECTOR_TLS_SHA256"]  # the same installation CA
    assert after["PGVECTOR_REMOTE_HOST"] == before["PGVECTOR_REMOTE_HOST"] == before["DOMAIN"]
    assert after["DATABASE_REMOTE_URL"].endswith(f":{after['PGVECTOR_POOL_PORT']}/vectordb_mv_cloud")
    assert Path(after["PGVECTOR_TLS_CA"]).exists()
    finish(cli, cid)
    assert cli("uninstall", CLIENT_ID=cid, YES="true", NO_BACKUP="true").returncode == 0
