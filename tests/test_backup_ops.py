"""Backups as an operator runs them: every client at once, retention, the cron schedule, log rotation, and the
restore command's messages. Real embedded servers."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import psycopg2
import pytest

from agency_pgvector.engines.embedded import EmbeddedEngine
from agency_pgvector.spec import Spec

from conftest import client_paths, tenant_connect


def _dumps(client_id: str) -> list[Path]:
    return sorted(client_paths(client_id).backups_dir.glob(f"{client_id}-*.dump"))


def _engine(client_id: str) -> EmbeddedEngine:
    return EmbeddedEngine(Spec(client_id=client_id, root=Path(os.environ["AGENCY_STACK_ROOT"])))


def test_restore_names_file_and_target_client_and_says_when_counts_were_not_compared(install, cli):
    env = install("bk-m")
    conn = tenant_connect(env)
    conn.autocommit = True
    conn.cursor().execute("CREATE TABLE notes AS SELECT i FROM generate_series(1, 42) i")
    conn.close()

    missing = cli("restore", CLIENT_ID="bk-m", YES="true")
    assert missing.returncode == 2 and "FILE is required" in missing.stderr, missing.stderr
    assert "Missing option" not in missing.stderr and "Traceback" not in missing.stderr

    wrong = cli("restore", FILE="/nonexistent.dump", CLIENT_ID="bk-m", TARGET_CLIENT="bk-nobody", YES="true")
    assert wrong.returncode == 2 and "TARGET_CLIENT=bk-nobody" in wrong.stderr and "CLIENT_ID" not in wrong.stderr

    assert cli("backup", CLIENT_ID="bk-m").returncode == 0
    (dump,) = _dumps("bk-m")
    bare = dump.with_name("bk-m-copy.dump")
    shutil.copy(dump, bare)  # no manifest beside this one
    done = cli("restore", FILE=str(bare), CLIENT_ID="bk-m", YES="true")
    assert done.returncode == 0, done.stderr
    assert "NOT compared" in done.stdout and "verified" not in done.stdout, done.stdout
    listed = cli("restore", FILE=str(dump), CLIENT_ID="bk-m", YES="true", JSON="true")
    assert json.loads(listed.stdout)["verified"] is True
    assert json.loads(cli("restore", FILE=str(bare), CLIENT_ID="bk-m", YES="true", JSON="true").stdout)["verified"] is False


def test_backup_keeps_the_newest_and_never_touches_other_files(install, cli):
    install("bk-r")
    folder = client_paths("bk-r").backups_dir
    for _ in range(3):
        assert cli("backup", CLIENT_ID="bk-r", BACKUP_KEEP="2").returncode == 0
        time.sleep(1.1)  # the name holds the second
    foreign = folder / "hand-made.dump"
    foreign.write_bytes(b"x")
    kept = _dumps("bk-r")
    assert len(kept) == 2 and all(p.with_suffix(".json").exists() for p in kept)
    result = cli("backup", CLIENT_ID="bk-r", BACKUP_KEEP="2", JSON="true")
    pruned = json.loads(result.stdout)["pruned"]
    assert pruned == [str(kept[0])] and not kept[0].with_suffix(".json").exists()
    assert _dumps("bk-r")[0] == kept[1] and foreign.exists()
    bad = cli("backup", CLIENT_ID="bk-r", BACKUP_KEEP="many")
    assert bad.returncode == 2 and "BACKUP_KEEP" in bad.stderr and len(_dumps("bk-r")) == 2


def test_backup_all_goes_on_past_a_down_server_and_names_it_even_when_quiet(install, cli):
    install("bk-up")
    install("bk-down")
    before = len(_dumps("bk-up"))
    _engine("bk-down").stop()
    try:
        result = cli("backup", ALL="true", QUIET="true")
        assert result.returncode == 3 and result.stdout == "", result.stderr
        assert "bk-down:" in result.stderr and "bk-up:" not in result.stderr
        assert len(_dumps("bk-up")) == before + 1
    finally:
        assert cli("restart", CLIENT_ID="bk-down").returncode == 0


def test_the_scheduled_backup_line_runs_as_written_and_bad_schedules_are_refused(install, cli):
    install("bk-s")
    cron = Path(os.environ["AGENCY_CRON_DIR"]) / "agency-pgvector-backup"
    bad = cli("backup-schedule", SCHEDULE="* * * * * root rm -rf /")
    assert bad.returncode == 2 and "SCHEDULE must be one of" in bad.stderr and not cron.exists()
    done = cli("backup-schedule", SCHEDULE="daily", BACKUP_KEEP="3")
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(cron.stat().st_mode) == 0o644 and cron.stat().st_uid == 0
    (line,) = [line for line in cron.read_text().splitlines() if line and line[0].isdigit()]
    fields = line.split()
    assert fields[:6] == ["17", "3", "*", "*", "*", "root"] and fields[-3:] == ["backup", "--all", "--quiet"]
    before = len(_dumps("bk-s"))
    job = subprocess.run(["env", "-i", *fields[6:]], capture_output=True, text=True, timeout=300)  # as cron would
    assert job.returncode in (0, 3) and job.stdout == "", job.stderr  # 3: another test's client may be down
    assert len(_dumps("bk-s")) == before + 1
    assert cli("backup-schedule", SCHEDULE="off").returncode == 0 and not cron.exists()


def test_logrotate_rotates_the_server_log_and_the_server_keeps_logging(install, cli, tmp_path):
    env = install("bk-l")
    snippet = Path(os.environ["AGENCY_LOGROTATE_DIR"]) / "agency-pgvector"
    layout = _engine("bk-l").layout
    text = snippet.read_text()
    assert f"{layout.log_file} {{" in text and f"su {layout.os_user} " in text and stat.S_IMODE(snippet.stat().st_mode) == 0o644
    assert shutil.which("logrotate"), "logrotate is missing: make test-setup installs it"
    rotated = subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(snippet)], capture_output=True, text=True)
    assert rotated.returncode == 0, rotated.stderr
    assert layout.log_file.with_name("postgresql.log.1").exists()
    with pytest.raises(psycopg2.OperationalError):
        tenant_connect(env, password="wrong-on-purpose")
    deadline = time.time() + 10
    while "wrong-on-purpose" not in layout.log_file.read_text() and "authentication failed" not in layout.log_file.read_text():
        assert time.time() < deadline, "the server stopped logging into postgresql.log after the rotation"
        time.sleep(0.2)


def test_object_names_that_look_like_the_installers_entries_are_restored_like_any_other(install, cli):
    """The archive's listing is matched by catalog and fields: a tenant's schema named like a CREATE EXTENSION line,
    or a collation whose name holds ' EXTENSION - vector', neither steers where pgvector goes nor is left out."""
    env = install("bk-names")
    conn = tenant_connect(env)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute('CREATE SCHEMA "CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public;"')
        cur.execute('CREATE COLLATION "CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public;"."x EXTENSION - vector" '
                    "(provider = libc, locale = 'C')")
        cur.execute("CREATE TABLE docs (id int PRIMARY KEY, emb vector(3))")
        cur.execute("INSERT INTO docs VALUES (1, '[1,2,3]')")
    conn.close()
    taken = cli("backup", "--json", CLIENT_ID="bk-names")
    assert taken.returncode == 0, taken.stderr
    restored = cli("restore", CLIENT_ID="bk-names", FILE=json.loads(taken.stdout)["file"], YES="true")
    assert restored.returncode == 0, restored.stderr + restored.stdout
    conn = tenant_connect(env)
    with conn.cursor() as cur:
        cur.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                    "WHERE e.extname = 'vector'")
        assert cur.fetchone() == ("extensions",)
        cur.execute("SELECT count(*) FROM pg_collation WHERE collname = 'x EXTENSION - vector'")
        assert cur.fetchone() == (1,)
        cur.execute("SELECT emb::text FROM docs")
        assert cur.fetchone() == ("[1,2,3]",)
    conn.close()
    assert cli("uninstall", CLIENT_ID="bk-names", YES="true", NO_BACKUP="true", REMOVE_SERVER="true").returncode == 0
