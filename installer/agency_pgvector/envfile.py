"""The client's .env: read it, and write it atomically with mode 0600 in a 0700 directory."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

_SAFE_VALUE = re.compile(r"[A-Za-z0-9_./:@%+=,^-]*")  # no '~': `set -a; . .env` would expand it to a home directory


def read(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def render(values: dict[str, str], header: str = "") -> str:
    """One KEY=value line each. Values are checked, not escaped: nothing may turn into shell or a new line."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for key, value in values.items():
        value = str(value)
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", key) or not _SAFE_VALUE.fullmatch(value):
            raise ValueError(f"refusing to write unsafe .env entry {key!r}")
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def write_atomic(path: Path, text: str, mode: int = 0o600) -> bool:
    """Replace `path` with `text` (fsync, then rename). Returns False when it already held exactly that."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a run killed mid-write (callers hold the client lock)
        stale.unlink(missing_ok=True)
    if path.exists() and path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
        return False
    ensure_private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True
