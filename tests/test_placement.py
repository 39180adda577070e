"""The inventory (make pgvector-servers) and placement (make pgvector SERVER=auto / SERVER=<name>) on real servers:
a full server is skipped, the least loaded one with room is chosen and named, all full refuses with the numbers
and nothing created. Capacities live in one file of the session's root: each test removes it again."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from test_cli import SCHEMA, mismatches

from conftest import DOMAIN, EMAIL, client_paths


def capacity_file() -> Path:
    return Path(os.environ["AGENCY_STACK_ROOT"]) / "pgvector" / "inventory" / "capacity.json"


@pytest.fixture
def servers(cli):
    """Read the inventory; set a capacity; the capacity file is gone after the test."""

    def read() -> dict[str, dict]:
        result = cli("servers", "--json")
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        assert mismatches(out, SCHEMA["servers"]) == [], out  # the shape docs/json.md gives
        return {s["name"]: s for s in out["servers"]}

    def fill(*names: str) -> None:
        """Make `names` full: a server that is running has at least the inventory's own session, so a cap of one
        connection fills it (the shared server and clusters); dedicated: its client count (at least 1)."""
        for name, row in read().items():
            if name in names:
                cap = {"MAX_CLIENTS": str(max(row["clients"], 1))} if row["kind"] == "dedicated" else {"MAX_CONNECTIONS": "1"}
                result = cli("servers", SERVER=name, **cap)
                assert result.returncode == 0, result.stderr
        assert all(read()[name]["full"] for name in names if read()[name]["kind"] != "dedicated")

    yield read, fill
    capacity_file().unlink(missing_ok=True)


def new_client(cli, client_id: str, **env: str):
    return cli("install", CLIENT_ID=client_id, DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL, WITH_DEPS="true", **env)


def test_inventory_lists_the_shared_server_dedicated_and_the_clusters_with_their_load(cli, install, servers):
    read, _ = servers
    install("pl-shared", SERVER="shared")
    found = read()
    assert {"shared", "dedicated"} <= set(found)
    shared = found["shared"]
    assert shared["kind"] == "shared" and shared["clients"] >= 1 and shared["max_clients"] == 50
    assert shared["connections"] is not None and shared["max_connections"] > 0 and shared["full"] is None
    assert 0 <= shared["load"] < 1 and found["dedicated"]["max_clients"] == 100
    assert capacity_file().exists() is False
    assert cli("servers", SERVER="shared", MAX_CLIENTS="7").returncode == 0
    assert read()["shared"]["max_clients"] == 7
    assert oct(capacity_file().stat().st_mode & 0o777) == "0o600"
    assert oct(capacity_file().parent.parent.stat().st_mode & 0o777) == "0o711"  # the state directory stays traversable
    text = cli("servers").stdout
    assert "shared" in text and "dedicated" in text


def test_auto_skips_a_full_server_and_says_which_it_chose_and_why(cli, install, servers):
    read, fill = servers
    install("pl-fill", SERVER="shared")
    fill("shared", *[name for name, row in read().items() if row["kind"] == "cluster"])
    result = new_client(cli, "pl-auto", SERVER="auto", JSON="true")
    assert result.returncode == 0, result.stderr
    rows = {row["item"]: row for row in json.loads(result.stdout)["items"]}
    why = rows["placement"]["detail"]
    assert why.startswith("dedicated: least loaded with room") and "skipped shared (connections" in why, why
    env = client_paths("pl-auto").env_file.read_text()
    assert "PGVECTOR_SERVER=dedicated" in env
    again = new_client(cli, "pl-auto", SERVER="auto")  # a re-run stays where the client is
    assert again.returncode == 0, again.stderr
    gone = cli("uninstall", CLIENT_ID="pl-auto", YES="true", NO_BACKUP="true", REMOVE_SERVER="true")
    assert gone.returncode == 0, gone.stderr


def test_all_full_refuses_with_the_numbers_and_creates_nothing(cli, install, servers):
    read, fill = servers
    install("pl-full", SERVER="shared")
    fill("shared", *[name for name, row in read().items() if row["kind"] == "cluster"])
    if read()["dedicated"]["clients"] == 0:
        install("pl-full-d")  # a dedicated client, so a capacity of 1 is full
    fill("dedicated")
    for env in ({"SERVER": "auto"}, {"SERVER": "shared"}, {"SERVER": "dedicated"}):
        result = new_client(cli, "pl-none", **env)
        assert result.returncode == 3, result.stderr
        assert "No room for client pl-none" in result.stderr and "nothing was created" in result.stderr
        assert "clients " in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not client_paths("pl-none").client_dir.exists()
        assert not client_paths("pl-none").server_dir.exists()
    listed = json.loads(cli("list", "--json").stdout)["clients"]
    assert "pl-none" not in {row["client_id"] for row in listed}


def test_a_named_cluster_is_placement_too(cli, servers, patroni_cluster):
    read, fill = servers
    result = new_client(cli, "pl-cluster", SERVER=patroni_cluster, JSON="true")
    assert result.returncode == 0, result.stderr
    rows = {row["item"]: row for row in json.loads(result.stdout)["items"]}
    assert rows["placement"]["detail"].startswith(f"{patroni_cluster}: as named, has room")
    env = client_paths("pl-cluster").env_file.read_text()
    assert "PGVECTOR_ENGINE=patroni" in env and f"PGVECTOR_SERVER={patroni_cluster}" in env
    assert new_client(cli, "pl-cluster", SERVER=patroni_cluster).returncode == 0  # the re-run names its cluster
    fill(patroni_cluster)
    refused = new_client(cli, "pl-cluster2", SERVER=patroni_cluster)
    assert refused.returncode == 3 and f"on {patroni_cluster}" in refused.stderr, refused.stderr
    gone = cli("uninstall", CLIENT_ID="pl-cluster", YES="true", NO_BACKUP="true")
    assert gone.returncode == 0, gone.stderr


@pytest.mark.parametrize("env, needle, code", [
    ({"SERVER": "shared", "MAX_CLIENTS": "0"}, "MAX_CLIENTS '0' is not valid", 2),
    ({"SERVER": "shared", "MAX_CONNECTIONS": "12a"}, "MAX_CONNECTIONS '12a' is not valid", 2),
    ({"SERVER": "shared", "MAX_DISK_GB": "9" * 50}, "MAX_DISK_GB", 2),
    ({"MAX_CLIENTS": "3"}, "add SERVER=<name>", 2),
    ({"SERVER": "nowhere", "MAX_CLIENTS": "3"}, "not in the inventory", 2),
])
def test_bad_capacity_input_is_one_sentence_and_changes_nothing(cli, servers, env, needle, code):
    result = cli("servers", **env)
    assert result.returncode == code and needle in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not capacity_file().exists()


def test_unknown_server_for_a_new_client_is_refused_before_anything(cli):
    result = new_client(cli, "pl-unknown", SERVER="nowhere")
    assert result.returncode == 2 and "not in the inventory" in result.stderr, result.stderr
    assert not client_paths("pl-unknown").client_dir.exists()


@pytest.fixture(scope="module")
def existing_pg18(stack_root):
    """An existing PostgreSQL 18 + pgvector the installer did not create, to name in the inventory."""
    from servers import start_server, wheel_bin_dir

    server = start_server(wheel_bin_dir(stack_root), stack_root.parent / "named18", password="named-secret-pw")
    yield server
    server.stop()


def test_a_named_external_server_takes_clients_by_its_name(cli, install, servers, existing_pg18):
    read, _ = servers
    url = existing_pg18.admin_url
    taken = cli("servers", SERVER="shared", ADMIN_URL=url)
    assert taken.returncode == 2 and "taken" in taken.stderr and "named-secret-pw" not in taken.stderr
    added = cli("servers", SERVER="ext18", ADMIN_URL=url)
    assert added.returncode == 0, added.stderr
    row = read()["ext18"]
    assert (row["kind"], row["up"], row["clients"], row["full"]) == ("named", True, 0, None)
    placed = new_client(cli, "pl-ext", SERVER="ext18", JSON="true")
    assert placed.returncode == 0, placed.stderr
    assert json.loads(placed.stdout)["items"][0]["detail"].startswith("ext18: as named, has room")
    env = client_paths("pl-ext").env_file.read_text()
    assert "PGVECTOR_ENGINE=external" in env and "PGVECTOR_SERVER=ext18" in env
    assert cli("install", CLIENT_ID="pl-ext", DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL).returncode == 0  # a plain re-run
    assert "PGVECTOR_SERVER=ext18" in client_paths("pl-ext").env_file.read_text()
    assert read()["ext18"]["clients"] == 1
    status = json.loads(cli("status", "--json", CLIENT_ID="pl-ext").stdout)["clients"][0]
    assert status["healthy"], status["problems"]
    install("pl-ext-mover")  # a client on its own server moves onto the named one, and back
    moved = cli("move", "--json", CLIENT_ID="pl-ext-mover", TO="ext18")
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["target"] == "external/ext18"
    assert "PGVECTOR_SERVER=ext18" in client_paths("pl-ext-mover").env_file.read_text()
    assert cli("move-finish", CLIENT_ID="pl-ext-mover", YES="true").returncode == 0
    back = cli("move", CLIENT_ID="pl-ext-mover", TO="dedicated")  # this server runs wal_level=replica: no way out
    assert back.returncode == 3 and "wal_level=replica" in back.stderr and "nothing was moved" in back.stderr
    assert not (client_paths("pl-ext-mover").component_dir / "move.json").exists()
    assert cli("uninstall", CLIENT_ID="pl-ext-mover", YES="true", NO_BACKUP="true").returncode == 0
    clash = cli("cluster", CLUSTER="ext18")  # one name, one server: SERVER= and TO= must know which
    assert clash.returncode == 2 and "is taken" in clash.stderr, clash.stderr
    assert not (Path(os.environ["AGENCY_STACK_ROOT"]) / "pgvector" / "clusters" / "ext18").exists()
    busy = cli("servers", SERVER="ext18", REMOVE="true")
    assert busy.returncode == 3 and "1 client(s) use ext18" in busy.stderr, busy.stderr
    assert cli("uninstall", CLIENT_ID="pl-ext", YES="true", NO_BACKUP="true").returncode == 0
    gone = cli("servers", SERVER="ext18", REMOVE="true")
    assert gone.returncode == 0, gone.stderr
    assert "ext18" not in read()
    log = Path(os.environ["AGENCY_STACK_LOG"]).read_text()
    assert "named-secret-pw" not in log and "named-secret-pw" not in added.stdout + added.stderr
    stored = Path(os.environ["AGENCY_STACK_ROOT"]) / "pgvector" / "inventory" / "external"
    assert stored.is_dir() and oct(stored.stat().st_mode & 0o777) == "0o700"


def test_a_move_to_a_postgresql_16_server_is_refused_with_nothing_created(cli, install, servers, stack_root):
    """Moves go to PostgreSQL 18 servers: the schema goes in with 18's pg_restore, and 16's apply worker evaluated
    index expressions as the subscription's superuser owner."""
    from agency_pgvector.engines.embedded import runtime

    from servers import start_server

    rt = runtime.newest("16")
    runtime.install(rt, stack_root / "pgvector", stack_root)
    old = start_server(rt.bin_dir(stack_root / "pgvector"), stack_root.parent / "named16", password="named16-pw")
    try:
        assert cli("servers", SERVER="old16", ADMIN_URL=old.admin_url).returncode == 0
        install("pl-to16")
        result = cli("move", CLIENT_ID="pl-to16", TO="old16")
        assert result.returncode == 3 and "moves go to PostgreSQL 18 servers" in result.stderr, result.stderr
        assert not (client_paths("pl-to16").component_dir / "move.json").exists()
        assert "PGVECTOR_SERVER=dedicated" in client_paths("pl-to16").env_file.read_text()
        assert cli("servers", SERVER="old16", REMOVE="true").returncode == 0
        assert cli("uninstall", CLIENT_ID="pl-to16", YES="true", NO_BACKUP="true", REMOVE_SERVER="true").returncode == 0
    finally:
        old.stop()
