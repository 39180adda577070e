"""The command line's contract: every --json document has exactly the keys and types docs/json.md documents, and
every outcome has its own exit code (0 ok, 1 unhealthy / failed check, 2 usage, 3 operator must act, 70 a bug,
75 busy, 130 interrupted).

SCHEMA below is the one description of the JSON shapes in the tests, written from docs/json.md; the docs' own
examples are checked against it too, so the code, the tests and the docs cannot drift apart silently.

Real servers (embedded engine) under a root of this module's own, so ALL=true means this module's clients only.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agency_pgvector import envfile
from agency_pgvector.spec import Spec

from conftest import DOMAIN, EMAIL, stop_all, tenant_connect

DOCS = Path(__file__).resolve().parent.parent / "docs" / "json.md"


# -- the schema (docs/json.md) -------------------------------------------------------------------------------

class Maybe:
    """A key that is present only sometimes (install's `statements`: only with VERBOSE=true)."""

    def __init__(self, schema):
        self.schema = schema


class MapOf:
    """An object whose keys are data (setting names, table names, step names), each value of one schema."""

    def __init__(self, schema):
        self.schema = schema


NULL, NUMBER = type(None), (int, float)  # a type or a tuple of types, matched exactly (a bool is no integer)

ITEM = {"item": str, "status": str, "detail": str}
CLIENT_STATUS = {
    "client_id": str, "engine": (str, NULL), "healthy": bool,
    "server": {"where": str, "reachable": bool, "postgres_version": (str, NULL), "host": (str, NULL), "port": (int, NULL),
               "shared": bool, "newer_runtime": (str, NULL)},
    "pgvector": {"installed": (str, NULL), "available": (str, NULL), "update_available": bool, "schema": (str, NULL)},
    "database": {"name": (str, NULL), "size_bytes": (int, NULL)},
    "role": {"name": (str, NULL), "connections": (int, NULL), "connection_limit": (int, NULL)},
    "env_file": {"path": str, "present": bool, "mode": (str, NULL), "password_valid": (bool, NULL)},
    "pool": {"port": (int, NULL), "mode": (str, NULL), "size": (int, NULL), "max_connections": (int, NULL),
             "running": bool, "login": (bool, NULL), "clients_active": (int, NULL), "clients_waiting": (int, NULL),
             "servers_active": (int, NULL), "servers_idle": (int, NULL), "max_wait_seconds": (int, NULL)},
    "vector_columns": ([{"table": str, "column": str, "type": str, "indexes": [{"name": str, "method": str}]}], NULL),
    "settings": (MapOf(str), NULL), "drift": ([str], NULL), "unexpected_roles": ([str], NULL), "problems": [str],
}
SCHEMA = {
    "install": {"client_id": str, "engine": str, "dry_run": bool, "changed": bool, "env_file": str,
                "items": [{**ITEM, "statements": Maybe([str])}]},
    "install ALL=true": {"ok": bool, "dry_run": bool, "clients": [{"client_id": str, "result": str, "engine": (str, NULL),
                                                                   "error": (str, NULL), "changed": [str]}],
                         "suspended": [str]},
    "status": {"healthy": bool, "clients": [CLIENT_STATUS]},
    "test": {"ok": bool, "clients": [{"client_id": str, "ok": bool, "recall_at_10": NUMBER, "steps": MapOf(str),
                                      "samples_ok": (bool, NULL)}]},
    "restart": {"client_id": str, "engine": str, "seconds": NUMBER, "pooler": str},
    "backup": {"client_id": str, "database": str, "file": str, "manifest": str, "size_bytes": int, "row_counts": MapOf(int),
               "pruned": [str]},
    "restore": {"client_id": str, "database": str, "file": str, "row_counts": MapOf(int), "verified": bool},
    "rotate": {"client_id": str, "rotated": bool, "env_file": str},
    "upgrade": {"ok": bool, "databases": [{"client_id": str, "database": str, "old": (str, NULL), "new": (str, NULL),
                                           "error": (str, NULL)}],
                "servers": [{"clients": [str], "kind": str, "old": str, "new": str, "resumed": bool,
                             "seconds": (int, float), "backups": [str]}]},
    "uninstall": {"client_id": str, "interrupted": bool, "keep_data": bool, "server_removed": bool, "server_kept": bool,
                  "items": [ITEM]},
    "list": {"clients": [{"client_id": str, "state": str, "engine": (str, NULL), "server": (str, NULL),
                          "endpoint": (str, NULL), "detail": str}],
             "shared_server": {"exists": bool, "port": (int, NULL), "tenants": [str]}},
    "cluster": {"cluster": str, "dry_run": bool, "changed": bool, "items": [{"item": str, "status": str, "detail": str}]},
    "cluster-status": {"cluster": str, "leader": (str, NULL), "synchronous": bool, "healthy": bool, "address": str,
                       "tls": bool, "etcd": {"port": (int, NULL), "running": (bool, NULL), "authentication": (bool, NULL),
                                "voters": (int, NULL)},
                       "members": [{"name": str, "host": (str, NULL), "role": (str, NULL), "state": (str, NULL),
                                    "port": (int, NULL), "api_port": (int, NULL), "timeline": (int, NULL),
                                    "lag": (int, NULL), "patroni_running": (bool, NULL)}]},
    "cluster-join": {"cluster": str, "dry_run": bool, "changed": bool, "items": [{"item": str, "status": str, "detail": str}]},
    "servers": {"servers": [{"name": str, "kind": str, "exists": bool, "up": bool, "clients": int, "max_clients": int,
                             "connections": (int, NULL), "max_connections": (int, NULL), "disk_gb": (NUMBER, NULL),
                             "max_disk_gb": (NUMBER, NULL), "fs_used": (NUMBER, NULL), "full": (str, NULL),
                             "load": NUMBER}]},
    "move": {"client_id": str, "source": str, "target": str, "phase": str, "freeze_seconds": NUMBER, "seconds": NUMBER,
             "rows": int, "items": [ITEM]},
}


def mismatches(value, schema, where: str = "$") -> list[str]:
    """Where `value` differs from `schema`: a missing or undocumented key, a wrong type. [] when it conforms.
    A tuple is one of its types; `([str], NULL)` is an array of strings or null."""
    if isinstance(schema, tuple) and not all(isinstance(kind, type) for kind in schema):
        if value is None and NULL in schema:
            return []
        return mismatches(value, next(kind for kind in schema if kind is not NULL), where)
    if isinstance(schema, dict):
        if type(value) is not dict:
            return [f"{where}: {type(value).__name__}, not an object"]
        required = {key for key, sub in schema.items() if not isinstance(sub, Maybe)}
        found = [f"{where}: missing key {key!r}" for key in sorted(required - value.keys())]
        found += [f"{where}: undocumented key {key!r}" for key in sorted(value.keys() - schema.keys())]
        for key in sorted(value.keys() & schema.keys()):
            sub = schema[key]
            found += mismatches(value[key], sub.schema if isinstance(sub, Maybe) else sub, f"{where}.{key}")
        return found
    if isinstance(schema, list):
        if type(value) is not list:
            return [f"{where}: {type(value).__name__}, not an array"]
        return [problem for index, item in enumerate(value) for problem in mismatches(item, schema[0], f"{where}[{index}]")]
    if isinstance(schema, MapOf):
        if type(value) is not dict:
            return [f"{where}: {type(value).__name__}, not an object"]
        return [problem for key, item in value.items() for problem in mismatches(item, schema.schema, f"{where}.{key}")]
    kinds = schema if isinstance(schema, tuple) else (schema,)
    if type(value) in kinds:
        return []
    return [f"{where}: {type(value).__name__} {value!r}, not {'/'.join(kind.__name__ for kind in kinds)}"]


def test_the_schema_check_finds_a_missing_an_extra_and_a_mistyped_key():
    schema = {"a": str, "b": [{"c": (int, NULL)}], "d": MapOf(int), "e": Maybe(bool)}
    assert mismatches({"a": "x", "b": [{"c": None}, {"c": 3}], "d": {"t": 1}}, schema) == []
    assert mismatches({"a": "x", "b": [{"c": True}], "d": {}, "z": 1}, schema) == ["$: undocumented key 'z'",
                                                                                   "$.b[0].c: bool True, not int/NoneType"]
    assert mismatches(None, ([str], NULL)) == [] and mismatches(["x"], ([str], NULL)) == []
    assert mismatches([1], ([str], NULL)) == ["$[0]: int 1, not str"]
    assert mismatches({"b": [], "d": {"t": "1"}, "e": 1}, schema) == ["$: missing key 'a'", "$.d.t: str '1', not int",
                                                                      "$.e: int 1, not bool"]


def documented_examples() -> dict[str, object]:
    """docs/json.md: each `## <command>` section's ```json example."""
    sections = re.findall(r"^## (.+?)\n(?:(?!^## ).)*?```json\n(.*?)```", DOCS.read_text(), re.M | re.S)
    return {title: json.loads(body) for title, body in sections}


def test_docs_give_an_example_of_every_shape_and_each_conforms():
    examples = documented_examples()
    assert sorted(examples) == sorted(SCHEMA)
    for command, example in examples.items():
        assert mismatches(example, SCHEMA[command]) == [], command


# -- a root of this module's own ------------------------------------------------------------------------------

class Host:
    def __init__(self, base: Path):
        self.root, self.log = base / "root", base / "log" / "pgvector.log"

    def env(self, **extra) -> dict:
        return {**os.environ, "AGENCY_STACK_ROOT": str(self.root), "AGENCY_STACK_LOG": str(self.log),
                **{key: str(value) for key, value in extra.items()}}

    def run(self, *args: str, **extra) -> subprocess.CompletedProcess:
        """The CLI as make runs it, with no terminal to ask on."""
        return subprocess.run([sys.executable, "-m", "agency_pgvector", *args], env=self.env(**extra), capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=600)

    def start(self, *args: str, **extra) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "agency_pgvector", *args], env=self.env(**extra), text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def install(self, client: str, *args: str, **extra) -> subprocess.CompletedProcess:
        result = self.run("install", *args, CLIENT_ID=client, DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL, ENGINE="embedded",
                          WITH_DEPS="true", **extra)
        assert result.returncode == 0, result.stderr + result.stdout
        return result

    def paths(self, client: str):
        return Spec(client_id=client, root=self.root).paths


@pytest.fixture(scope="module")
def host(stack_root):
    base = stack_root.parent / "hc"  # short: server sockets live under it
    base.mkdir(mode=0o755)
    yield Host(base)
    stop_all(base / "root")


def document(result: subprocess.CompletedProcess, command: str, code: int = 0):
    """The JSON a command printed, checked against its documented shape and exit code."""
    assert result.returncode == code, (command, result.returncode, result.stderr, result.stdout[-2000:])
    assert "Traceback" not in result.stderr
    out = json.loads(result.stdout)
    assert mismatches(out, SCHEMA[command]) == [], (command, out)
    return out


# -- every --json document ------------------------------------------------------------------------------------

def test_every_json_document_has_exactly_the_documented_keys_and_types(host):
    first = document(host.install("hc-json", "--json"), "install")
    assert first["changed"] and first["items"] and "statements" not in first["items"][0]
    again = document(host.run("install", "--json", "--dry-run", "--verbose", CLIENT_ID="hc-json", DOMAIN=DOMAIN,
                              ADMIN_EMAIL=EMAIL), "install")
    assert again["dry_run"] and not again["changed"] and all("statements" in item for item in again["items"])
    everyone = document(host.run("install", ALL="true", JSON="true"), "install ALL=true")
    assert everyone["ok"] and {c["client_id"]: c["result"] for c in everyone["clients"]}["hc-json"] == "ok"

    with tenant_connect(envfile.read(host.paths("hc-json").env_file)) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE docs (id int PRIMARY KEY, embedding vector(3)); "
                    "CREATE INDEX ON docs USING hnsw (embedding vector_l2_ops); INSERT INTO docs VALUES (1, '[1,2,3]')")
    status = document(host.run("status", "--json", CLIENT_ID="hc-json"), "status")
    assert status["healthy"] and status["clients"][0]["vector_columns"][0]["indexes"] and status["clients"][0]["settings"]
    assert document(host.run("status", ALL="true", JSON="true"), "status")["healthy"]

    check = document(host.run("test", "--json", CLIENT_ID="hc-json"), "test")
    assert check["ok"] and check["clients"][0]["samples_ok"] is None and "recall@10" in check["clients"][0]["steps"]
    assert document(host.run("restart", "--json", CLIENT_ID="hc-json"), "restart")["seconds"] > 0

    backup = document(host.run("backup", "--json", CLIENT_ID="hc-json"), "backup")
    assert backup["row_counts"] == {"public.docs": 1} and Path(backup["file"]).stat().st_size == backup["size_bytes"]
    assert Path(backup["manifest"]).is_file()
    restored = document(host.run("restore", "--json", CLIENT_ID="hc-json", FILE=backup["file"], YES="true"), "restore")
    assert restored["row_counts"] == {"public.docs": 1} and restored["database"] == "vectordb"

    upgraded = document(host.run("upgrade", "--json", CLIENT_ID="hc-json"), "upgrade")
    assert upgraded["ok"] and upgraded["databases"][0]["new"] == upgraded["databases"][0]["old"]
    assert document(host.run("upgrade", ALL="true", JSON="true"), "upgrade")["ok"]
    before = host.paths("hc-json").env_file.read_text()
    assert document(host.run("rotate", "--json", CLIENT_ID="hc-json"), "rotate")["rotated"] is True
    assert host.paths("hc-json").env_file.read_text() != before

    listed = document(host.run("list", JSON="true"), "list")
    assert {"client_id": "hc-json", "state": "installed"}.items() <= listed["clients"][-1].items()
    gone = document(host.run("uninstall", "--json", CLIENT_ID="hc-json", YES="true", REMOVE_SERVER="true"), "uninstall")
    assert gone["server_removed"] and not gone["server_kept"] and not gone["interrupted"]
    assert {item["item"] for item in gone["items"]} >= {"backup", "database vectordb", "server", "files"}
    assert not host.paths("hc-json").env_file.exists()


# -- exit codes -----------------------------------------------------------------------------------------------

def one_line(result: subprocess.CompletedProcess, code: int, needle: str) -> None:
    assert result.returncode == code, (code, result.returncode, result.stderr, result.stdout[-1000:])
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr + result.stdout, result.stderr


def test_usage_errors_exit_2_and_what_the_operator_must_fix_exits_3(host):
    one_line(host.run("status", "--bogus"), 2, "No such option: --bogus")
    one_line(host.run("install", FORCE="perhaps", CLIENT_ID="hc-x", DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL), 2, "--force")
    one_line(host.run("status", CLIENT_ID="HC-X"), 2, "CLIENT_ID 'HC-X' is not valid")
    one_line(host.run("install", CLIENT_ID="hc-x", DOMAIN="-bad-", ADMIN_EMAIL=EMAIL), 2, "DOMAIN '-bad-'")
    one_line(host.run("status", CLIENT_ID="hc-nobody"), 3, "Client hc-nobody is not installed here")
    one_line(host.run("backup", "--json", CLIENT_ID="hc-nobody"), 3, "Client hc-nobody is not installed here")
    one_line(host.run("install", ALL="true", FORCE="true"), 3, "rotate them one by one")
    assert not host.paths("hc-x").client_dir.exists() and not host.paths("hc-nobody").client_dir.exists()
    host.install("hc-a")
    one_line(host.run("uninstall", CLIENT_ID="hc-a"), 3, "confirm with YES=true")
    one_line(host.run("restore", CLIENT_ID="hc-a", FILE="/nonexistent.dump", YES="true"), 3, "No backup file at")
    assert host.paths("hc-a").env_file.exists()


def test_all_true_with_a_failing_client_exits_3_and_names_it_on_stderr_even_quiet(host):
    host.install("hc-a")
    host.install("hc-b")
    weak = host.paths("hc-b").component_dir
    os.chmod(weak, 0o777)  # a tree another user could swap files in: that client is refused, the others converge
    try:
        quiet = host.run("install", ALL="true", QUIET="true")
        as_json = host.run("install", ALL="true", JSON="true")
    finally:
        os.chmod(weak, 0o700)
    for result in (quiet, as_json):
        assert result.returncode == 3, (result.returncode, result.stderr)
        assert "1 of " in result.stderr and "  hc-b: " in result.stderr and str(weak) in result.stderr, result.stderr
        assert "hc-a:" not in result.stderr and "Traceback" not in result.stderr
    assert quiet.stdout == ""
    out = document(as_json, "install ALL=true", 3)
    assert not out["ok"] and {c["client_id"]: c["result"] for c in out["clients"]}["hc-b"] == "failed"


def test_an_unhealthy_client_exits_1_with_and_without_json(host):
    """A wrong password in .env: status finds it, and the end-to-end check fails at the login."""
    host.install("hc-u")
    env_file = host.paths("hc-u").env_file
    good, password = env_file.read_bytes(), envfile.read(env_file)["PGVECTOR_DB_PASS"]
    env_file.write_bytes(good.replace(password.encode(), b"hc-wrong-password"))  # .env, PGPASSWORD, DATABASE_URL
    try:
        people = host.run("status", CLIENT_ID="hc-u")
        as_json = host.run("status", "--json", CLIENT_ID="hc-u")
        check = host.run("test", CLIENT_ID="hc-u")
        check_json = host.run("test", CLIENT_ID="hc-u", JSON="true")
    finally:
        env_file.write_bytes(good)
    assert people.returncode == 1 and "INVALID" in people.stdout and "Traceback" not in people.stderr, people.stderr
    client = document(as_json, "status", 1)["clients"][0]
    assert client["env_file"]["password_valid"] is False and any("make pgvector-rotate" in p for p in client["problems"])
    one_line(check, 1, "The end-to-end check failed for hc-u")
    assert "hc-u: FAIL" in check.stdout and "login" in check.stdout
    out = document(check_json, "test", 1)
    assert not out["ok"] and "login" in out["clients"][0]["steps"] and "error: " in check_json.stderr
    assert "hc-wrong-password" not in people.stdout + as_json.stdout + check.stdout + check.stderr + check_json.stdout
    assert host.run("status", CLIENT_ID="hc-u").returncode == 0


def test_every_command_that_changes_state_waits_for_the_clients_lock_then_exits_75(host):
    """The lock is held by this test (as another run would hold it): nothing changes, read-only commands go on."""
    host.install("hc-a")
    paths = host.paths("hc-a")
    backup = document(host.run("backup", "--json", CLIENT_ID="hc-a"), "backup")["file"]
    env_before = paths.env_file.read_bytes()
    dumps_before = sorted(paths.backups_dir.iterdir())
    fd = os.open(paths.lock_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        waiting = {command: host.start(*args, CLIENT_ID="hc-a", YES="true", DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL)
                   for command, args in {"install": ["install"], "backup": ["backup"], "restore": ["restore", "--file", backup],
                                         "uninstall": ["uninstall"], "restart": ["restart"], "upgrade": ["upgrade"],
                                         "rotate": ["rotate"]}.items()}
        assert host.run("status", CLIENT_ID="hc-a").returncode == 0  # reading needs no lock
        outcomes = {command: (proc.wait(timeout=180), proc.stderr.read()) for command, proc in waiting.items()}
    finally:
        os.close(fd)
    for command, (code, err) in outcomes.items():
        assert code == 75 and err.startswith("error: Another run for this client still holds"), (command, code, err)
        assert err.count("\n") == 1, (command, err)
    assert paths.env_file.read_bytes() == env_before and sorted(paths.backups_dir.iterdir()) == dumps_before
    assert host.run("status", CLIENT_ID="hc-a").returncode == 0


INJECT = """
from agency_pgvector import cli
from agency_pgvector.ops import {module} as target


def fault(*args, **kwargs):
    raise RuntimeError({marker!r})


target.{name} = fault
cli.main()
"""


def test_a_bug_exits_70_with_one_sentence_and_its_traceback_logged_once(host):
    """An error nobody expected (injected: a function that raises) is a bug: exit 70, one line, the full traceback in the
    component log, written once whether or not it happened inside an operation (which logs tracebacks itself)."""
    host.install("hc-a")

    def injected(module: str, name: str, marker: str, *args: str) -> subprocess.CompletedProcess:
        code = INJECT.format(module=module, name=name, marker=marker)
        return subprocess.run([sys.executable, "-c", code, *args], env=host.env(CLIENT_ID="hc-a"), capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=300)

    outside = injected("status", "check", "hc-boom-outside", "status")  # status runs in no operation
    one_line(outside, 70, "unexpected RuntimeError: hc-boom-outside. This is a bug")
    assert str(host.log) in outside.stderr
    inside = injected("backup", "_backup", "hc-boom-inside", "backup")  # backup runs inside runner.operation
    one_line(inside, 70, "unexpected RuntimeError: hc-boom-inside. This is a bug")
    log = host.log.read_text().splitlines()
    for marker, client in (("hc-boom-outside", "-"), ("hc-boom-inside", "hc-a")):
        last = [n for n, line in enumerate(log) if line.endswith(f"   RuntimeError: {marker}")]  # a traceback's last line
        assert len(last) == 1 and f" client={client}   RuntimeError" in log[last[0]], [log[n] for n in last]
        first = max(n for n, line in enumerate(log[:last[0]]) if line.endswith("   Traceback (most recent call last):"))
        assert all(f" client={client}   " in line for line in log[first:last[0] + 1])
    assert any(line.endswith("client=hc-a backup failed: RuntimeError: hc-boom-inside") for line in log)


def test_ctrl_c_exits_130_with_one_sentence(host):
    host.install("hc-a")
    proc = host.start("logs", CLIENT_ID="hc-a", FOLLOW="true")
    deadline = time.monotonic() + 60
    seen = ""
    while "== server log" not in seen and time.monotonic() < deadline:
        seen += proc.stdout.readline()
    assert "== server log" in seen
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    err = proc.stderr.read()
    assert err.strip().endswith("error: interrupted; re-run the same command to finish (runs converge).")
    assert "Traceback" not in err
