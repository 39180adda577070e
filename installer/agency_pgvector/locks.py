"""A lock per client on this host, so two runs for one client never interleave.

Re-entrant within a process: a command that runs another (rotate runs install) holds the lock once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from pathlib import Path

from .errors import Busy
from .system import ensure_dir

_held = threading.local()


@contextlib.contextmanager
def client_lock(path: Path, wait_seconds: float = 60.0):
    held: set = _held.__dict__.setdefault("paths", set())
    if path in held:
        yield
        return
    ensure_dir(path.parent, 0o700)  # root's own, checked: nobody else can plant a link at the lock's path
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Busy(f"Another run for this client still holds {path} after "
                               f"{wait_seconds:.0f} s: wait for it to finish, then re-run.") from None
                time.sleep(0.1)
        held.add(path)
        try:
            yield
        finally:
            held.discard(path)
    finally:
        os.close(fd)
