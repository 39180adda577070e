"""make pgvector-metrics: Prometheus text from status's figures, checked with a strict parser against real servers
(a client up with an index and a backup, a client whose server is stopped), label escaping, METRICS_FILE."""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

import pytest

from agency_pgvector.engines.embedded import EmbeddedEngine
from agency_pgvector.engines.embedded.runtime import newest
from agency_pgvector.ops import metrics as m
from agency_pgvector.ops.status import ClientStatus, Database, EnvFile, Pgvector, Role, Server
from agency_pgvector.spec import Spec

from conftest import stop_all, tenant_connect

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(rf"({_NAME})\{{({_LABEL}(?:,{_LABEL})*)\}} (-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)")


@pytest.fixture(scope="module", autouse=True)
def own_root(stack_root):
    """A root of this module's own: ALL=true here means this module's clients, whatever else the session installed."""
    root = stack_root.parent / "rg-met" / "root"
    root.parent.mkdir(mode=0o755)
    before = os.environ["AGENCY_STACK_ROOT"]
    os.environ["AGENCY_STACK_ROOT"] = str(root)
    yield root
    os.environ["AGENCY_STACK_ROOT"] = before
    stop_all(root)


def parse(text: str) -> dict[str, dict[tuple, float]]:
    """Text exposition 0.0.4, strictly: HELP then TYPE gauge once per family, its samples right after (a family never
    reappears), every sample labelled, label values escaped. Returns family -> {sorted label pairs: value}."""
    assert text.endswith("\n")
    families: dict[str, dict[tuple, float]] = {}
    current = None
    lines = text[:-1].split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert re.fullmatch(_NAME, name) and name not in families, line
            assert lines[i + 1] == f"# TYPE {name} gauge", lines[i + 1]
            families[name], current = {}, name
            i += 2
            continue
        match = _SAMPLE.fullmatch(line)
        assert match and match.group(1) == current, f"not a sample of {current}: {line!r}"
        pairs = re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', match.group(2))
        labels = tuple(sorted((key, _unescape(value)) for key, value in pairs))
        assert labels not in families[current], f"duplicate sample: {line!r}"
        families[current][labels] = float(match.group(3))
        i += 1
    return families


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda g: {"n": "\n", "\\": "\\", '"': '"'}[g.group(1)], value)


def value(families, name: str, client_id: str) -> float | None:
    found = [v for labels, v in families[name].items() if ("client_id", client_id) in labels]
    assert len(found) <= 1
    return found[0] if found else None


def test_metrics_for_every_client_with_one_server_stopped(install, cli, tmp_path):
    up_env = install("rg-m1")
    install("rg-m2")
    with tenant_connect(up_env) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE docs (id int PRIMARY KEY, emb vector(3))")
        cur.execute("CREATE INDEX docs_emb ON docs USING hnsw (emb vector_l2_ops)")
    conn.close()
    backup = cli("backup", CLIENT_ID="rg-m1")
    assert backup.returncode == 0, backup.stderr
    down = EmbeddedEngine(Spec(client_id="rg-m2", root=Path(os.environ["AGENCY_STACK_ROOT"])))
    down.stop()
    try:
        result = cli("metrics", ALL="true")
    finally:
        down.restart()
    assert result.returncode == 0, result.stderr  # documented: clients that are down are data (up 0), not an error
    families = parse(result.stdout)
    assert set(families) == set(m.FAMILIES)
    assert value(families, "pgvector_up", "rg-m1") == 1 and value(families, "pgvector_up", "rg-m2") == 0
    assert value(families, "pgvector_pooler_up", "rg-m1") == 1
    assert value(families, "pgvector_healthy", "rg-m1") == 1 and value(families, "pgvector_healthy", "rg-m2") == 0
    assert value(families, "pgvector_database_size_bytes", "rg-m1") > 1_000_000
    assert value(families, "pgvector_connection_limit", "rg-m1") == 50
    assert value(families, "pgvector_connections", "rg-m1") >= 0
    assert value(families, "pgvector_vector_indexes", "rg-m1") == 1  # docs_emb (the primary key is no vector index)
    assert value(families, "pgvector_drift_items", "rg-m1") == 0
    assert 0 <= value(families, "pgvector_last_backup_age_seconds", "rg-m1") < 300
    info = dict(next(labels for labels in families["pgvector_client_info"] if ("client_id", "rg-m1") in labels))
    assert info["domain"] == "example.com" and info["server"] == "dedicated" and info["engine"] == "embedded"
    assert info["postgres_version"].startswith("18.") and info["pgvector_version"] == newest().pgvector
    # Unknown while the server is down: no sample rather than a made-up one. No backup yet: no age.
    for name in ("pgvector_database_size_bytes", "pgvector_connections", "pgvector_vector_indexes",
                 "pgvector_drift_items", "pgvector_last_backup_age_seconds"):
        assert value(families, name, "rg-m2") is None, name

    # One client; and into a file for node_exporter, replacing (not following) a link planted at its path.
    single = cli("metrics", CLIENT_ID="rg-m1")
    assert single.returncode == 0 and {v for labels, v in parse(single.stdout)["pgvector_up"].items()} == {1}
    folder = tmp_path / "textfile"
    folder.mkdir(mode=0o755)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (folder / "pgvector.prom").symlink_to(victim)
    written = cli("metrics", CLIENT_ID="rg-m1", METRICS_FILE=str(folder / "pgvector.prom"))
    assert written.returncode == 0 and written.stdout == "", written.stderr
    target = folder / "pgvector.prom"
    assert not target.is_symlink() and victim.read_text() == "keep"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert value(parse(target.read_text()), "pgvector_up", "rg-m1") == 1
    assert sorted(p.name for p in folder.iterdir()) == ["pgvector.prom"]


def test_metrics_file_must_be_a_prom_file_in_a_directory_root_controls(install, cli, tmp_path):
    install("rg-m3", SERVER="shared")
    for bad in ("relative.prom", str(tmp_path / "x.txt"), str(tmp_path / "missing" / "x.prom")):
        result = cli("metrics", CLIENT_ID="rg-m3", METRICS_FILE=bad)
        assert result.returncode == 2 and "METRICS_FILE" in result.stderr and "Traceback" not in result.stderr, bad
        assert len(result.stderr.strip().splitlines()) == 1
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)  # another user could swap the file between our write and node_exporter's read
    result = cli("metrics", CLIENT_ID="rg-m3", METRICS_FILE=str(open_dir / "x.prom"))
    assert result.returncode == 3 and "Refusing to use" in result.stderr
    assert list(open_dir.iterdir()) == []


def test_label_values_are_escaped_and_unknowns_are_left_out():
    hostile = 'a"b\\c\nd} e="f'
    client = ClientStatus(client_id="rg-x", engine="external", server=Server(reachable=True, postgres_version=hostile),
                          pgvector=Pgvector(), database=Database("vectordb", None), role=Role("vectoruser", 3, 50),
                          env_file=EnvFile("/x/.env"))
    text = m.render([client], {"rg-x": None}, {"rg-x": {"domain": hostile, "server": "shared"}}, time.time())
    families = parse(text)
    info = dict(next(iter(families["pgvector_client_info"])))
    assert info["domain"] == hostile and info["postgres_version"] == hostile
    assert value(families, "pgvector_up", "rg-x") == 0  # reachable, but the tenant's login read nothing
    assert value(families, "pgvector_connections", "rg-x") == 3
    assert value(families, "pgvector_database_size_bytes", "rg-x") is None
    assert m.escape('\\"\n') == '\\\\\\"\\n'


def test_the_newest_backup_is_found_by_the_name_backup_gives_it(tmp_path):
    for name in ("rg-b-20260101T000000Z.dump", "rg-b-20260301T120000Z.dump", "rg-b-20260301T120000Z.json",
                 "rg-bb-20270101T000000Z.dump", "rg-b-junk.dump"):
        (tmp_path / name).write_text("")
    assert m.newest_backup(tmp_path, "rg-b") == 1772366400.0  # 2026-03-01T12:00:00Z
    assert m.newest_backup(tmp_path / "none", "rg-b") is None


@pytest.mark.parametrize("args", [(), ("--all",)])
def test_metrics_needs_an_installed_client(cli, tmp_path, args):
    result = cli("metrics", *args, CLIENT_ID="rg-none", AGENCY_STACK_ROOT=str(tmp_path / "empty"))
    assert result.returncode == 3 and "Traceback" not in result.stderr and result.stdout == ""
