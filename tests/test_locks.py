"""locks.py: one lock per client on this host, held against other processes and threads, re-entrant in one thread."""

from __future__ import annotations

import stat
import subprocess
import sys
import threading
import time

import pytest

from agency_pgvector.errors import Busy
from agency_pgvector.locks import client_lock

HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


def test_the_lock_is_a_private_file_in_a_private_directory(tmp_path):
    path = tmp_path / "state" / "locks" / "a.lock"
    with client_lock(path, wait_seconds=0.3):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_another_process_holding_the_lock_makes_a_run_busy_then_lets_it_go(tmp_path):
    path = tmp_path / "locks" / "a.lock"
    with client_lock(path, wait_seconds=0.3):
        pass  # the file exists now
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        started = time.monotonic()
        with pytest.raises(Busy, match=f"still holds {path}") as err, client_lock(path, wait_seconds=0.3):
            pytest.fail("took a lock another process holds")
        assert 0.3 <= time.monotonic() - started < 5 and err.value.exit_code == 75
        with client_lock(tmp_path / "locks" / "b.lock", wait_seconds=0.3):  # another client's lock is free
            pass
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    with client_lock(path, wait_seconds=0.3):  # released with its holder
        pass


def test_a_waiting_run_gets_the_lock_as_soon_as_it_is_released(tmp_path):
    path = tmp_path / "locks" / "a.lock"
    order: list = []
    inside = threading.Event()

    def first():
        with client_lock(path, wait_seconds=5):
            inside.set()
            time.sleep(0.3)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(5)
    with client_lock(path, wait_seconds=5):  # another thread: not re-entrant across threads, waits its turn
        order.append("second in")
    thread.join()
    assert order == ["first done", "second in"]


def test_re_entrant_in_one_thread_and_released_by_the_outermost_only(tmp_path):
    path = tmp_path / "locks" / "a.lock"
    busy: list = []

    def try_lock():
        try:
            with client_lock(path, wait_seconds=0.2):
                busy.append(False)
        except Busy:
            busy.append(True)

    def probe():
        thread = threading.Thread(target=try_lock)
        thread.start()
        thread.join()
        return busy.pop()

    with client_lock(path, wait_seconds=0.2):
        with client_lock(path, wait_seconds=0.2):
            assert probe()
        assert probe()  # the inner exit left the outer one's lock in place
    assert not probe()
