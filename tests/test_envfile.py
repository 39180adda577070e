"""envfile.py: .env rendering that nothing can inject through, atomic 0600 writes, reads that never follow a link."""

from __future__ import annotations

import os
import stat

import pytest

from agency_pgvector import envfile


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
