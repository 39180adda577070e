"""system.py, the pure parts: the server's system user name."""

from __future__ import annotations

import pytest

from agency_pgvector.system import server_user_name


@pytest.mark.parametrize("key, name", [("acme", "apg-acme"), ("_shared", "apg_shared"), ("a" * 28, "apg-" + "a" * 28)])
def test_server_user_names(key, name):
    assert server_user_name(key) == name


def test_long_client_ids_get_distinct_short_user_names():
    long_a, long_b = "x" * 17 + "-one-very-long-id", "x" * 17 + "-two-very-long-id"
    names = {server_user_name(long_a), server_user_name(long_b)}
    assert len(names) == 2 and all(len(n) <= 32 and n.startswith("apg_") for n in names)
