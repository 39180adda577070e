"""The pooler's pure logic (pooler.py, ops/logs.py PoolFilter, spec.PoolSettings): settings, rendered files, log filter.

No server here: test_pool.py runs the real PgBouncer. The CLI cases at the end only check that a bad POOL_* value is
refused before anything is created."""

from __future__ import annotations

from pathlib import Path

import pytest

from agency_pgvector import pooler
from agency_pgvector.errors import InputError
from agency_pgvector.ops.logs import PoolFilter
from agency_pgvector.pooler import Entry, Pooler
from agency_pgvector.spec import PoolSettings

from conftest import client_paths

VERIFIER_A = "SCRAM-SHA-256$4096:c2FsdGFzYWx0YQ==$c3RvcmVka2V5YQ==:c2VydmVya2V5YQ=="
VERIFIER_B = "SCRAM-SHA-256$4096:c2FsdGJzYWx0Yg==$c3RvcmVka2V5Yg==:c2VydmVya2V5Yg=="


def entry(client: str, verifier: str = VERIFIER_A, cloud: bool = False, **changes) -> Entry:
    name = client.replace("-", "_")
    values = dict(client_id=client, database=f"vectordb_{name}", role=f"vectoruser_{name}", verifier=verifier,
                  host="127.0.0.1", port=5433, mode="session", size=10, max_connections=20, cloud=cloud,
                  domain=f"{client}.example.com")
    return Entry(**{**values, **changes})


def rendered(entries: list[Entry], port: int = 6500, with_tls: bool = False) -> dict[str, str]:
    return Pooler("_shared", Path("/srv/root/pgvector")).render({e.client_id: e for e in entries}, port, with_tls)


def lines(text: str) -> list[list[str]]:
    """The non-comment lines, split into fields."""
    return [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith(("#", ";"))]


# -- resolve: given, else recorded, else the defaults; limits checked -------------------------------------------

def test_resolve_defaults():
    assert pooler.resolve(PoolSettings(), {}, 50) == {"mode": "session", "size": 10, "max_connections": 20}


def test_resolve_keeps_what_the_env_recorded_and_given_values_win():
    recorded = {"PGVECTOR_POOL_MODE": "transaction", "PGVECTOR_POOL_SIZE": "4", "PGVECTOR_POOL_MAX_CONNECTIONS": "8"}
    assert pooler.resolve(PoolSettings(), recorded, 50) == {"mode": "transaction", "size": 4, "max_connections": 8}
    assert pooler.resolve(PoolSettings("session", 6), recorded, 50) == {"mode": "session", "size": 6, "max_connections": 8}


@pytest.mark.parametrize("recorded", [
    {"PGVECTOR_POOL_MODE": "statement", "PGVECTOR_POOL_SIZE": "0", "PGVECTOR_POOL_MAX_CONNECTIONS": "-3"},
    {"PGVECTOR_POOL_MODE": "", "PGVECTOR_POOL_SIZE": "ten", "PGVECTOR_POOL_MAX_CONNECTIONS": "1001"},
    {"PGVECTOR_POOL_SIZE": "9" * 5000},
])
def test_resolve_ignores_a_recorded_value_that_is_not_valid(recorded):
    assert pooler.resolve(PoolSettings(), recorded, 50) == pooler.DEFAULTS


def test_resolve_refuses_more_server_connections_than_the_role_may_open():
    with pytest.raises(InputError, match="POOL_MAX_CONNECTIONS 51 is above the 50 connections"):
        pooler.resolve(PoolSettings(max_connections=51), {}, 50)
    assert pooler.resolve(PoolSettings(max_connections=50), {}, 50)["max_connections"] == 50


def test_resolve_refuses_a_pool_larger_than_its_cap():
    with pytest.raises(InputError, match="POOL_SIZE 21 is larger than POOL_MAX_CONNECTIONS 20"):
        pooler.resolve(PoolSettings(size=21), {}, 50)
    with pytest.raises(InputError, match="POOL_SIZE 10 is larger than POOL_MAX_CONNECTIONS 5"):
        pooler.resolve(PoolSettings(), {"PGVECTOR_POOL_MAX_CONNECTIONS": "5", "PGVECTOR_POOL_SIZE": "10"}, 50)
    # a cap alone, below the default size: the pool is as large as the cap
    assert pooler.resolve(PoolSettings(max_connections=5), {}, 50)["size"] == 5


# -- render: the three files ------------------------------------------------------------------------------------

def test_hba_admits_each_tenant_to_its_own_database_from_loopback_only():
    files = rendered([entry("acme"), entry("beta", VERIFIER_B)])
    hba = lines(files["pgbouncer_hba.conf"])
    assert hba[0] == ["local", "pgbouncer", "root", "peer"]
    tenants = hba[1:]
    assert sorted(map(tuple, tenants)) == sorted([
        ("host", "vectordb_acme", "vectoruser_acme", "127.0.0.1/32", "scram-sha-256"),
        ("host", "vectordb_acme", "vectoruser_acme", "::1/128", "scram-sha-256"),
        ("host", "vectordb_beta", "vectoruser_beta", "127.0.0.1/32", "scram-sha-256"),
        ("host", "vectordb_beta", "vectoruser_beta", "::1/128", "scram-sha-256"),
    ])
    assert not any(word in ("all", "sameuser", "trust", "password", "md5") for line in hba for word in line)


def test_hba_has_remote_tls_lines_only_for_cloud_clients():
    files = rendered([entry("acme", cloud=True), entry("beta", VERIFIER_B)], with_tls=True)
    hba = lines(files["pgbouncer_hba.conf"])
    remote = [line for line in hba if line[0] == "hostssl"]
    assert sorted(map(tuple, remote)) == [
        ("hostssl", "vectordb_acme", "vectoruser_acme", "0.0.0.0/0", "scram-sha-256"),
        ("hostssl", "vectordb_acme", "vectoruser_acme", "::/0", "scram-sha-256"),
    ]
    assert all(line[3] in ("127.0.0.1/32", "::1/128") for line in hba if line[0] == "host")
    ini = files["pgbouncer.ini"]
    assert "listen_addr = *" in ini and "client_tls_sslmode = allow" in ini
    assert "client_tls_protocols = tlsv1.2,tlsv1.3" in ini


def test_without_cloud_clients_the_pooler_listens_on_loopback_without_tls():
    ini = rendered([entry("acme")])["pgbouncer.ini"]
    assert "listen_addr = 127.0.0.1\n" in ini and "client_tls" not in ini


def test_no_superuser_and_no_password_in_any_file():
    files = rendered([entry("acme", cloud=True), entry("beta", VERIFIER_B)], with_tls=True)
    for name, text in files.items():
        words = [word.strip('"') for line in lines(text) for word in line]
        assert "postgres" not in words, name
        for forbidden in ("password=", "user=", "auth_user", "auth_query"):
            assert not any(word.startswith(forbidden) for word in words), (name, forbidden)
    ini = lines(files["pgbouncer.ini"])
    assert ["admin_users", "=", "root"] in ini and not any(line[0] == "stats_users" for line in ini)


def test_userlist_holds_root_for_the_console_and_each_role_with_its_verifier_only():
    files = rendered([entry("beta", VERIFIER_B), entry("acme")])
    assert files["userlist.txt"] == ('"root" ""\n'
                                     f'"vectoruser_acme" "{VERIFIER_A}"\n'
                                     f'"vectoruser_beta" "{VERIFIER_B}"\n')


def test_databases_section_points_each_pool_at_its_server_with_its_limits():
    files = rendered([entry("acme", mode="transaction", size=3, max_connections=7, host="10.0.0.5", port=5499)])
    (line,) = [text for text in files["pgbouncer.ini"].splitlines() if text.startswith("vectordb_acme =")]
    assert line == ("vectordb_acme = host=10.0.0.5 port=5499 dbname=vectordb_acme pool_mode=transaction pool_size=3 "
                    "max_db_connections=7")


def test_section_changes_only_with_the_pgbouncer_settings():
    one, two = rendered([entry("acme")]), rendered([entry("acme"), entry("beta", VERIFIER_B, cloud=False)])
    assert one["pgbouncer.ini"] != two["pgbouncer.ini"]
    assert pooler._section(one["pgbouncer.ini"]) == pooler._section(two["pgbouncer.ini"])  # a new pool: a reload
    moved = rendered([entry("acme")], port=6501)
    assert pooler._section(one["pgbouncer.ini"]) != pooler._section(moved["pgbouncer.ini"])  # a new port: a restart
    remote = rendered([entry("acme", cloud=True)], with_tls=True)
    assert pooler._section(one["pgbouncer.ini"]) != pooler._section(remote["pgbouncer.ini"])
    assert pooler._section(None) == "" and pooler._section("[databases]\nx = y\n") == ""


def test_server_tls_is_off_for_loopback_servers_and_prefer_for_a_remote_one():
    """PgBouncer 1.18 recycles every server connection on each RELOAD while server TLS is configured (a login cut
    short then blocks its pool for server_login_retry): off where the server is on loopback without ssl."""
    local = lines(rendered([entry("acme"), entry("beta", VERIFIER_B, host="::1")])["pgbouncer.ini"])
    assert ["server_tls_sslmode", "=", "disable"] in local
    remote = lines(rendered([entry("acme", host="db.example.net")])["pgbouncer.ini"])
    assert ["server_tls_sslmode", "=", "prefer"] in remote
    for ini in (local, remote):
        assert ["server_login_retry", "=", "1"] in ini


def test_recorded_port():
    assert pooler.recorded_port(rendered([entry("acme")], port=6543)["pgbouncer.ini"]) == 6543
    assert pooler.recorded_port(None) is None
    assert pooler.recorded_port(";listen_port = 6432\n") is None
    assert pooler.recorded_port("listen_port = 6432 ; comment\n") is None
    assert pooler.recorded_port("x\nlisten_port = 7001\ny\n") == 7001


def test_an_entry_survives_its_json_and_a_damaged_record_is_none():
    original = entry("acme", cloud=True)
    assert Entry.load(original.dump()) == original
    for text in ("", "{", "[]", '{"client_id": "acme"}', "null"):
        assert Entry.load(text) is None


# -- PoolFilter: a shared pooler's log, one tenant's connections ----------------------------------------------

STAMP = "2026-11-22 07:00:55.286 UTC [16115]"


def connection(kind: str, pair: str, text: str) -> str:
    """A PgBouncer line of one client (C-) or server (S-) connection: `<db>/<user>@<address>` after its id."""
    return f"{STAMP} LOG {kind}-0x562cc0981c30: {pair}@127.0.0.1:34902 {text}"


LOG = [
    f"{STAMP} LOG process up: PgBouncer 1.18.0, libevent 2.1.12-stable (epoll)",
    connection("C", "vectordb_acme/vectoruser_acme", "login attempt: db=vectordb_acme user=vectoruser_acme tls=no"),
    connection("S", "vectordb_acme/vectoruser_acme", "new connection to server (from 127.0.0.1:33998)"),
    connection("C", "vectordb_beta/vectoruser_beta", "login attempt: db=vectordb_beta user=vectoruser_beta tls=no"),
    connection("S", "vectordb_beta/vectoruser_beta", "new connection to server (from 127.0.0.1:33999)"),
    connection("C", "vectordb_beta/vectoruser_acme", "pooler error: no such user"),
    f"{STAMP} LOG stats: 0 xacts/s, 0 queries/s, in 0 B/s, out 0 B/s, xact 0 us",
]


def test_pool_filter_keeps_the_tenants_own_connections_and_the_pooler_wide_lines():
    keep = PoolFilter("vectoruser_acme", "vectordb_acme").keep
    kept = [line for line in LOG if keep(line)]
    assert kept == [LOG[0], LOG[1], LOG[2], LOG[6]]
    assert not any("vectordb_beta" in line or "vectoruser_beta" in line for line in kept)


def test_pool_filter_needs_both_the_database_and_the_role():
    assert not PoolFilter("vectoruser_acme", "vectordb_acme").keep(LOG[5])  # acme's role against beta's database
    assert not PoolFilter("vectoruser_beta", "vectordb_beta").keep(LOG[5])


# -- POOL_* through the CLI: exit 2, one sentence, nothing created ---------------------------------------------

@pytest.mark.parametrize("env, needle", [
    ({"POOL_MODE": "statement"}, "POOL_MODE 'statement' is not valid"),
    ({"POOL_MODE": "Session"}, "POOL_MODE"),
    ({"POOL_SIZE": "0"}, "POOL_SIZE '0' is not valid"),
    ({"POOL_SIZE": "1001"}, "POOL_SIZE '1001' is not valid"),
    ({"POOL_SIZE": "ten"}, "POOL_SIZE 'ten' is not valid"),
    ({"POOL_SIZE": "-1"}, "POOL_SIZE"),
    ({"POOL_SIZE": " 5"}, "POOL_SIZE"),
    ({"POOL_SIZE": "\u0665"}, "POOL_SIZE"),  # ARABIC-INDIC DIGIT FIVE: PORT refuses non-ASCII digits too
    ({"POOL_SIZE": "1" * 5000}, "POOL_SIZE"),  # int() refuses 4300+ digits: still one sentence, not a traceback
    ({"POOL_MAX_CONNECTIONS": "0"}, "POOL_MAX_CONNECTIONS '0' is not valid"),
    ({"POOL_MAX_CONNECTIONS": "5x"}, "POOL_MAX_CONNECTIONS"),
    ({"POOL_MAX_CONNECTIONS": "51"}, "POOL_MAX_CONNECTIONS 51 is above the 50 connections"),
    ({"POOL_SIZE": "30", "POOL_MAX_CONNECTIONS": "20"}, "POOL_SIZE 30 is larger than POOL_MAX_CONNECTIONS 20"),
    ({"POOL_SIZE": "21"}, "POOL_SIZE 21 is larger than POOL_MAX_CONNECTIONS 20"),
])
def test_bad_pool_settings_exit_2_with_one_sentence_and_create_nothing(cli, stack_root, request, env, needle):
    client = f"pool-bad-{request.node.callspec.indices['env']}"
    before = _poolers(stack_root)
    result = cli("install", CLIENT_ID=client, DOMAIN="example.com", ADMIN_EMAIL="ops@example.com", WITH_DEPS="true", **env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert needle in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr and not result.stdout
    assert not client_paths(client).client_dir.exists()
    assert _poolers(stack_root) == before


def _poolers(root: Path) -> list:
    folder = root / "pgvector" / "poolers"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_pool_filter_drops_a_connection_line_whose_login_name_it_cannot_read():
    """Anyone reaching the port picks the login name PgBouncer writes after the connection id: a space in it must not
    make the line everyone's."""
    keep = PoolFilter("vectoruser_acme", "vectordb_acme").keep
    assert not keep(connection("C", "(nodb)/vectoruser_beta x", "login attempt: db=vectordb_beta user=vectoruser_beta x"))


def test_pool_filter_gives_a_continuation_line_to_the_connection_it_continues():
    """A newline in a login name starts a TAB-led line in PgBouncer's log: it belongs to the line before, as in
    SessionFilter."""
    keep = PoolFilter("vectoruser_acme", "vectordb_acme").keep
    assert not keep(connection("C", "(nodb)/vectoruser_beta", "login attempt"))
    assert not keep("\tvectordb_beta@127.0.0.1:60456 login attempt: db=vectordb_beta user=vectoruser_beta")
    assert keep(LOG[1])
    assert keep("\ta continuation of acme's own line")


def test_the_unit_runs_pgbouncer_as_the_poolers_own_user_and_reloads_with_a_signal(tmp_path):
    text = Pooler("acme", tmp_path).unit_text("/usr/sbin/pgbouncer")
    assert "User=apgb-acme" in text and "Group=apgb-acme" in text
    assert f"ExecStart=/usr/sbin/pgbouncer {tmp_path}/poolers/acme/pgbouncer.ini" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text and "Restart=on-failure" in text and "Type=notify" in text


def test_pgbouncer_missing_without_with_deps_is_refused_before_anything(monkeypatch):
    monkeypatch.setattr(pooler, "binary", lambda: None)
    with pytest.raises(pooler.UserError, match="^PgBouncer is not installed: add WITH_DEPS=true"):
        pooler.preflight(with_deps=False)
    pooler.preflight(with_deps=True)  # WITH_DEPS installs it (install_package)
