"""system.py, the parts without a server: the server's system user name, a killed file write's leftovers."""

from __future__ import annotations

import os
import subprocess

import pytest

from agency_pgvector.system import mkdirs, replace_file, server_user_name


@pytest.mark.parametrize("key, name", [("acme", "apg-acme"), ("_shared", "apg_shared"), ("a" * 28, "apg-" + "a" * 28)])
def test_server_user_names(key, name):
    assert server_user_name(key) == name


def test_long_client_ids_get_distinct_short_user_names():
    long_a, long_b = "x" * 17 + "-one-very-long-id", "x" * 17 + "-two-very-long-id"
    names = {server_user_name(long_a), server_user_name(long_b)}
    assert len(names) == 2 and all(len(n) <= 32 and n.startswith("apg_") for n in names)


def test_a_killed_writes_temp_file_goes_at_the_next_write_and_a_running_ones_stays(tmp_path):
    """replace_file's temp file survives a SIGKILL between it and the rename (crash test: a server's runtime record);
    the next write of that file removes it unless its writer still runs, and never touches another file's."""
    target = tmp_path / "m1.yml"
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid whose process has exited
    leftovers = {f".m1.yml.{gone.pid}-k1ll3d_x.tmp": "dead writer", ".m1.yml.f1bg_01p.tmp": "earlier release"}
    kept = {f".m1.yml.{os.getpid()}-runn1ng_.tmp": "a writer still running",
            f".m1.yml.bak.{gone.pid}-0th3rf1l.tmp": "another file's", ".m1.yml.notes": "not a temp file"}
    for name in (*leftovers, *kept):
        (tmp_path / name).write_text("half-written\n")
    replace_file(target, b"ttl: 20\n", 0o640)
    assert target.read_bytes() == b"ttl: 20\n" and (target.stat().st_mode & 0o777) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m1.yml", *kept])


def test_directories_appear_with_their_mode_at_once_and_a_killed_runs_staging_goes(tmp_path):
    """mkdirs makes each directory under a temporary name and renames it: a kill between mkdir and chmod once left
    clients/<id> at 0700, and the re-run refused (the server user could not reach its data)."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / f".clients.{gone.pid}-k1ll3d_x.mkdir").mkdir()  # left by a run killed before its rename
    (tmp_path / f".clients.{os.getpid()}-runn1ng_.mkdir").mkdir()  # a run still making it
    old = os.umask(0o077)
    try:
        mkdirs(tmp_path / "clients" / "acme", 0o700)
    finally:
        os.umask(old)
    assert (tmp_path / "clients").stat().st_mode & 0o777 == 0o711
    assert (tmp_path / "clients" / "acme").stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".clients.{os.getpid()}-runn1ng_.mkdir", "clients"]
