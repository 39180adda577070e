"""The component log: one timestamped line per action, never a secret."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .system import mkdirs

_path: Path | None = None
_client = "-"


def configure(path: Path, client_id: str) -> None:
    global _path, _client
    _path, _client = path, client_id


def event(message: str) -> None:
    if _path is None:
        return
    try:
        mkdirs(_path.parent, 0o750)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = f"{stamp} pgvector[{os.getpid()}] client={_client} {message}".replace("\n", " ") + "\n"
        fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)  # never through a link
        with os.fdopen(fd, "a") as handle:
            handle.write(line)
    except OSError:
        pass  # logging must never break an install; the CLI still reports on stdout
