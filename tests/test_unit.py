"""Small pure pieces: SCRAM hashing, .env rendering and atomic writes."""

from __future__ import annotations

import os
import stat

import pytest

from agency_pgvector import envfile, scram


def test_scram_hash_verifies_only_the_right_password():
    verifier = scram.hash_password("s3cret")
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    assert scram.verify("s3cret", verifier)
    assert not scram.verify("s3cret ", verifier)
    assert not scram.verify("s3cret", None)
    assert not scram.verify("s3cret", "md5abcdef")


def test_generated_passwords_are_long_and_shell_safe():
    passwords = {scram.generate() for _ in range(50)}
    assert len(passwords) == 50
    assert all(len(p) >= 40 and p.replace("-", "").replace("_", "").isalnum() for p in passwords)


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
