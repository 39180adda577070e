"""ports.py: the port range, and the registry that gives each client one stable port (no server: real sockets only)."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from agency_pgvector import ports
from agency_pgvector.errors import InputError, UserError
from agency_pgvector.system import port_is_free


@pytest.mark.parametrize("text, expected",
                         [("", ports.DEFAULT_RANGE), ("5433-5433", (5433, 5433)), ("1024-65535", (1024, 65535))])
def test_port_range(monkeypatch, text, expected):
    monkeypatch.setenv("PGVECTOR_PORT_RANGE", text)
    assert ports.port_range() == expected


@pytest.mark.parametrize("text", ["5433", "6432-5433", "80-90", "5433-65536", "a-b", "5433-", "-5433", "5433 - 6432",
                                  "005433-0006432", "5433-6432\n"])
def test_a_bad_port_range_is_a_usage_error(monkeypatch, text):
    monkeypatch.setenv("PGVECTOR_PORT_RANGE", text)
    with pytest.raises(InputError, match="PGVECTOR_PORT_RANGE .* is not valid: use FIRST-LAST") as err:
        ports.port_range()
    assert err.value.exit_code == 2


@pytest.fixture
def first(monkeypatch):
    """Three ports of our own (below the ephemeral range, away from the suite's servers at 10000-29999)."""
    first = 30000 + (os.getpid() % 100) * 20
    assert all(port_is_free(p) for p in range(first, first + 3)), "ports for this test are taken on this host"
    monkeypatch.setenv("PGVECTOR_PORT_RANGE", f"{first}-{first + 2}")
    return first


def _registry(state_dir) -> dict[int, str]:
    folder = ports.registry(state_dir)
    return {int(p.name): p.read_text().strip() for p in folder.iterdir() if p.name.isdigit()} if folder.exists() else {}


def _listening(port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_a_client_keeps_its_port_and_the_next_client_gets_another(tmp_path, first):
    assert ports.owned(tmp_path, "a") is None
    assert ports.reserve(tmp_path, "a") == first
    assert ports.reserve(tmp_path, "a") == first
    assert ports.reserve(tmp_path, "b") == first + 1
    assert ports.owned(tmp_path, "b") == first + 1
    assert _registry(tmp_path) == {first: "a", first + 1: "b"}


def test_a_port_something_else_listens_on_is_skipped(tmp_path, first):
    with _listening(first):
        assert ports.reserve(tmp_path, "a") == first + 1
    assert _registry(tmp_path) == {first + 1: "a"}


def test_a_wanted_port_moves_the_client_and_frees_its_old_one(tmp_path, first):
    ports.reserve(tmp_path, "a")
    assert ports.reserve(tmp_path, "a", wanted=first + 2) == first + 2
    assert _registry(tmp_path) == {first + 2: "a"}


def test_a_wanted_port_that_is_taken_is_refused_and_nothing_changes(tmp_path, first):
    ports.reserve(tmp_path, "a")
    for taken in (first, first + 1):  # another client's, then one a process listens on
        with _listening(first + 1), pytest.raises(UserError, match=f"Port {taken} is already in use") as err:
            ports.reserve(tmp_path, "b", wanted=taken)
        assert err.value.exit_code == 3
    assert _registry(tmp_path) == {first: "a"}


def test_a_full_range_is_the_operators_to_widen(tmp_path, first):
    for client in ("a", "b", "c"):
        ports.reserve(tmp_path, client)
    with pytest.raises(UserError, match=f"No free port between {first} and {first + 2}"):
        ports.reserve(tmp_path, "d")


def test_clients_reserving_at_the_same_time_never_share_a_port(tmp_path, first):
    got: dict = {}
    threads = [threading.Thread(target=lambda c=c: got.update({c: ports.reserve(tmp_path, c)})) for c in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got.values()) == [first, first + 1, first + 2]


def test_a_killed_runs_half_written_entry_is_swept_and_a_live_ones_is_not(tmp_path, first):
    folder = ports.registry(tmp_path)
    folder.mkdir(parents=True)
    dead, live = folder / f".{first}.{2**22 + 7}.1.tmp", folder / f".{first}.{os.getpid()}.1.tmp"
    dead.write_text(""), live.write_text("")
    assert ports.reserve(tmp_path, "a") == first
    assert not dead.exists() and live.exists()
    assert _registry(tmp_path) == {first: "a"}


def test_record_notes_the_port_a_server_really_uses(tmp_path, first):
    ports.reserve(tmp_path, "a")
    ports.record(tmp_path, "a", first)  # already noted: nothing changes
    assert _registry(tmp_path) == {first: "a"}
    ports.record(tmp_path, "a", 5999)
    assert _registry(tmp_path) == {5999: "a"}
    ports.record(tmp_path, "b", 6000)
    assert _registry(tmp_path) == {5999: "a", 6000: "b"}


def test_release_forgets_a_port_and_tolerates_one_already_gone(tmp_path, first):
    ports.reserve(tmp_path, "a")
    ports.release(tmp_path, first)
    ports.release(tmp_path, first)
    assert _registry(tmp_path) == {} and ports.owned(tmp_path, "a") is None
