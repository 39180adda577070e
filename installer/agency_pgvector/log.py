"""The component log: one timestamped line per action, never a secret.

Lines name the client of the run that wrote them: `bound()` sets it for the code inside it (runner.operation
does this for every command), so with ALL=true each client's lines carry that client, not the last one loaded.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from pathlib import Path

from .system import mkdirs

_target: contextvars.ContextVar[tuple[Path, str] | None] = contextvars.ContextVar("agency_pgvector_log", default=None)


@contextlib.contextmanager
def bound(path: Path, client_id: str):
    token = _target.set((path, client_id))
    try:
        yield
    finally:
        _target.reset(token)


def event(message: str) -> None:
    target = _target.get()
    if target is None:
        return
    path, client = target
    try:
        mkdirs(path.parent, 0o750)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = f"{stamp} pgvector[{os.getpid()}] client={client} {message}".replace("\n", " ") + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)  # never a link
        with os.fdopen(fd, "a") as handle:
            handle.write(line)
    except OSError:
        pass  # logging must never break an install; the CLI still reports on stdout


def traceback_lines(exc: BaseException) -> None:
    """An unexpected error's full traceback, one log line per frame line (the CLI prints one sentence)."""
    import traceback

    for line in "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip().splitlines():
        event("  " + line)
