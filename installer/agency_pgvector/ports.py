"""Host ports for client servers: allocated once, recorded, stable across runs.

The registry is a directory with one file per port (`<root>/pgvector/ports/<port>`, content: client id),
created with O_EXCL so two concurrent installs can never take the same port.
"""

from __future__ import annotations

import os
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
        try:
            fd = os.open(folder / str(port), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(client_id + "\n")
        if current:
            release(state_dir, current)
        return port
    raise _none_free(wanted)


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
    (folder / str(port)).write_text(client_id + "\n")
    if current is not None:
        release(state_dir, current)


def release(state_dir: Path, port: int) -> None:
    try:
        (registry(state_dir) / str(port)).unlink()
    except FileNotFoundError:
        pass
