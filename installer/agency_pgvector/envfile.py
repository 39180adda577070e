"""The client's .env: read it, and write it atomically with mode 0600 in a 0700 directory. Both only in a
trusted directory (system.require_trusted) and never through a symbolic link."""

from __future__ import annotations

import errno
import io
import os
import re
import stat
from pathlib import Path
from typing import Literal

from .errors import UserError
from .system import clear_stale_temps, ensure_dir, replace_file, require_trusted

# No '~': `set -a; . .env` would expand it to a home directory. '?' is there for one URL parameter
# (?target_session_attrs=...): an assignment is never pathname-expanded; '&' stays out (it ends a shell command).
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_./:@%+=,^?-]*")


def read(path: Path) -> dict[str, str]:
    data = read_bytes(path)
    if data is None:
        return {}
    from dotenv import dotenv_values

    # Values are read as written: no ${VAR} expansion from the installer's own environment (the values we write
    # cannot hold a `$`; expanding copies os.environ for every key, the larger part of reading a .env).
    values = dotenv_values(stream=io.StringIO(data.decode()), interpolate=False)
    return {k: v for k, v in values.items() if v is not None}


def read_bytes(path: Path) -> bytes | None:
    """The content of the regular file `path` in a trusted directory, None when it is missing. A symbolic link or
    anything but a regular file is refused: root never reads through a path another user could have pointed."""
    require_trusted(path.parent)
    data = read_nofollow(path)
    if data is False:
        raise UserError(f"Refusing to read {path}: it is a symbolic link or not a regular file: remove it, then re-run.")
    return data


def read_json(path: Path, fix: str) -> dict:
    """A JSON object root keeps (read as read_bytes does): {} when the file is missing or holds no object; one
    sentence, ending with `fix`, when it is not JSON."""
    import json

    data = read_bytes(path)
    if data is None:
        return {}
    try:
        found = json.loads(data)
    except ValueError:
        raise UserError(f"{path} is not valid JSON: {fix}") from None
    return found if isinstance(found, dict) else {}


def read_nofollow(path: Path) -> bytes | None | Literal[False]:
    """The file's bytes; None when missing; False when it is a link or not a regular file (never followed, and a
    FIFO does not block: O_NONBLOCK)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return False
        raise
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return False
        return handle.read()


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
    """`path` as a 0700 directory in a trusted chain (created when missing, tightened when looser)."""
    ensure_dir(path, 0o700)
    os.chmod(path, 0o700)  # a real directory only root can reach (checked above): no link to follow


def holds(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """`path` is a regular file (not a link) holding exactly `data` with `mode`: write_atomic would change nothing."""
    return read_nofollow(path) == data and stat.S_IMODE(os.lstat(path).st_mode) == mode


def write_atomic(path: Path, text: str | bytes, mode: int = 0o600) -> bool:
    """Replace `path` with `text` (temp file in the same directory, fsync, rename). The rename replaces a link at
    `path` instead of following it. Returns False when it already held exactly that, with that mode."""
    data = text.encode() if isinstance(text, str) else text
    ensure_private_dir(path.parent)
    clear_stale_temps(path)  # a killed write's, even when nothing is to be written now
    if holds(path, data, mode):
        return False
    replace_file(path, data, mode)  # temp file, fsync, rename, directory fsync
    return True
