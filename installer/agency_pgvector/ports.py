"""Host ports for client servers: allocated once, recorded, stable across runs.

The registry is a directory with one file per port (`<root>/pgvector/ports/<port>`, content: client id). A file
appears complete or not at all (written aside, then hard-linked into place, which fails when the port's file exists),
so two concurrent installs can never take the same port, and a run killed in between leaves no empty entry.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .errors import InputError, UserError
from .system import port_is_free

DEFAULT_RANGE = (5433, 6432)


def port_range() -> tuple[int, int]:
    """PGVECTOR_PORT_RANGE=FIRST-LAST (default 5433-6432): where new servers get their ports."""
    text = os.environ.get("PGVECTOR_PORT_RANGE", "")
    if not text:
        return DEFAULT_RANGE
    first, _, last = text.partition("-")
    if not (first.isdigit() and last.isdigit() and len(first) <= 5 and len(last) <= 5
            and 1024 <= int(first) <= int(last) <= 65535):
        raise InputError(f"PGVECTOR_PORT_RANGE {text[:30]!r} is not valid: use FIRST-LAST "
                        "between 1024 and 65535, e.g. PGVECTOR_PORT_RANGE=5433-6432.")
    return int(first), int(last)


def registry(state_dir: Path) -> Path:
    return state_dir / "ports"


def owned(state_dir: Path, client_id: str) -> int | None:
    folder = registry(state_dir)
    if not folder.is_dir():
        return None
    for entry in folder.iterdir():
        if entry.name.isdigit() and entry.read_text().strip() == client_id:
            return int(entry.name)
    return None


def preview(state_dir: Path, client_id: str, wanted: int | None = None) -> int:
    """The port reserve() would give, without taking it: a dry run's preflight refuses what the real run would."""
    current = owned(state_dir, client_id)
    if current and (wanted is None or wanted == current):
        return current
    for port in _candidates(wanted):
        if not (registry(state_dir) / str(port)).exists() and port_is_free(port):
            return port
    raise _none_free(wanted)


def reserve(state_dir: Path, client_id: str, wanted: int | None = None) -> int:
    """The client's port: the one it already has, else `wanted`, else the first free one in the range."""
    current = owned(state_dir, client_id)
    if current and (wanted is None or wanted == current):
        return current
    folder = registry(state_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for port in _candidates(wanted):
        if (folder / str(port)).exists() or not port_is_free(port):
            continue
        if not _publish(folder, port, client_id, exclusive=True):
            continue
        if current:
            release(state_dir, current)
        return port
    raise _none_free(wanted)


def _publish(folder: Path, port: int, client_id: str, exclusive: bool) -> bool:
    """The port's file with its owner, all at once; exclusive: False when the port's file exists already."""
    for stale in folder.glob(".*.tmp"):  # a killed run's: its process is gone
        pid = stale.name.split(".")[2] if stale.name.count(".") == 4 else ""
        if not (pid.isdigit() and Path(f"/proc/{pid}").exists()):
            stale.unlink(missing_ok=True)
    staged = folder / f".{port}.{os.getpid()}.{threading.get_native_id()}.tmp"  # one per process and thread
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(client_id + "\n")
    try:
        if not exclusive:
            os.replace(staged, folder / str(port))
            return True
        try:
            os.link(staged, folder / str(port))
        except FileExistsError:
            return False
        return True
    finally:
        staged.unlink(missing_ok=True)


def _candidates(wanted: int | None):
    if wanted:
        return [wanted]
    first, last = port_range()
    return range(first, last + 1)


def _none_free(wanted: int | None) -> UserError:
    if wanted:
        return UserError(f"Port {wanted} is already in use on this host: choose another "
                         "with PORT=<port>, or leave PORT unset to pick a free one.")
    first, last = port_range()
    return UserError(f"No free port between {first} and {last} on this host: "
                     "free one, set PORT=<port>, or widen PGVECTOR_PORT_RANGE.")


def record(state_dir: Path, client_id: str, port: int) -> None:
    """Note the port a server really uses (found in its config or container); a stale entry of the same
    owner is released, so the registry holds one port per server."""
    current = owned(state_dir, client_id)
    if current == port:
        return
    folder = registry(state_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    _publish(folder, port, client_id, exclusive=False)
    if current is not None:
        release(state_dir, current)


def release(state_dir: Path, port: int) -> None:
    try:
        (registry(state_dir) / str(port)).unlink()
    except FileNotFoundError:
        pass
