"""envfile.py: .env rendering that nothing can inject through, atomic 0600 writes, reads that never follow a link."""

from __future__ import annotations

import os
import stat

import pytest

from agency_pgvector import envfile
from agency_pgvector.errors import UserError


@pytest.mark.parametrize("value", ["a\nB=1", "x'y", "$(id)", "a b", "back`tick`", "nul\x00"])
def test_env_values_that_could_inject_are_refused(value):
    with pytest.raises(ValueError):
        envfile.render({"KEY": value})


def test_env_write_is_0600_in_a_0700_dir_even_under_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        target = tmp_path / "client" / ".env"
        assert envfile.write_atomic(target, "A=1\n")
        assert not envfile.write_atomic(target, "A=1\n")  # same content: untouched
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert [p.name for p in target.parent.iterdir()] == [".env"]  # no temp file left behind
    assert envfile.read(target) == {"A": "1"}


def test_render_writes_a_commented_header_then_one_line_per_key():
    values = {"PGHOST": "127.0.0.1", "DATABASE_URL": "postgresql://u:p@h:5432/db", "EMPTY": ""}
    text = envfile.render(values, "Client a\n\nline 3")
    assert text == "# Client a\n#\n# line 3\nPGHOST=127.0.0.1\nDATABASE_URL=postgresql://u:p@h:5432/db\nEMPTY=\n"


@pytest.mark.parametrize("key", ["lower", "1ABC", "A-B", "A B", "", "A\nB"])
def test_keys_that_are_not_shell_names_are_refused(key):
    with pytest.raises(ValueError):
        envfile.render({key: "1"})


def test_a_home_directory_tilde_is_refused():
    with pytest.raises(ValueError):
        envfile.render({"PGPASSFILE": "~/.pgpass"})


def test_written_values_read_back_unchanged(tmp_path):
    values = {"A": "1", "URL": "postgresql://u:p%40x@h:5432/db", "B": "x=y,z^w+v"}
    envfile.write_atomic(tmp_path / "c" / ".env", envfile.render(values, "header"))
    assert envfile.read(tmp_path / "c" / ".env") == values


def test_a_missing_env_reads_as_empty(tmp_path):
    assert envfile.read(tmp_path / ".env") == {}


def test_a_link_or_a_fifo_is_never_read(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("PGPASSWORD=root-only\n")
    (tmp_path / "link").symlink_to(secret)
    os.mkfifo(tmp_path / "fifo")  # would block a plain open()
    for name in ("link", "fifo"):
        with pytest.raises(UserError, match="symbolic link or not a regular file"):
            envfile.read(tmp_path / name)


def test_an_env_in_a_directory_others_can_write_is_refused(tmp_path):
    folder = tmp_path / "open"
    folder.mkdir()
    os.chmod(folder, 0o777)
    (folder / ".env").write_text("A=1\n")
    with pytest.raises(UserError, match="another user could swap"):
        envfile.read(folder / ".env")
    with pytest.raises(UserError, match="another user could swap"):
        envfile.write_atomic(folder / "sub" / ".env", "A=1\n")


def test_the_write_replaces_a_link_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    folder = tmp_path / "client"
    folder.mkdir(mode=0o700)
    (folder / ".env").symlink_to(victim)
    assert envfile.write_atomic(folder / ".env", "A=1\n")
    assert victim.read_text() == "keep\n"
    assert not (folder / ".env").is_symlink() and (folder / ".env").read_text() == "A=1\n"


def test_a_looser_mode_or_directory_is_tightened_and_stale_temp_files_go(tmp_path):
    folder = tmp_path / "client"
    folder.mkdir()
    os.chmod(folder, 0o755)
    target = folder / ".env"
    target.write_text("A=1\n")
    os.chmod(target, 0o644)
    (folder / "..env.abc123.tmp").write_text("PGPASSWORD=half-written\n")  # mkstemp's name, left by a run killed mid-write
    assert envfile.write_atomic(target, "A=1\n")  # same content, wrong mode: written again
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert [p.name for p in folder.iterdir()] == [".env"]
