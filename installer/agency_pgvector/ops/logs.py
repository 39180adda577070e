"""make pgvector-logs: the lines of the server log and of the component log that belong to one client.

The server writes log_line_prefix '%m [%p] %q%u@%d ' (templates/postgresql.agency.conf.j2): a session's message
starts `<timestamp> [<pid>] <user>@<database> <LEVEL>:  `, and PostgreSQL starts every further line of the
message (a newline inside a RAISE, a multi-line statement) with a TAB, so a tenant's text never starts a line
of its own. Lines of no session (postmaster, checkpointer, autovacuum: %q drops user@database) belong to
nobody. Every line printed goes through text.clean().
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..errors import InputError, UserError
from ..text import clean

if TYPE_CHECKING:
    from .common import Client

_SERVER_PREFIX = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ \[\d+\] ")  # %m [%p]
_COMPONENT_PREFIX = re.compile(r"\S+ pgvector\[\d+\] client=(\S+) ")  # log.event()


class SessionFilter:
    """Keeps the server log lines of one tenant's sessions: fed the lines in order, it remembers whose message
    the TAB-led continuation lines belong to."""

    def __init__(self, role: str, database: str):
        self.session = f"{role}@{database} "
        self.mine = False

    def keep(self, line: str) -> bool:
        if not line.startswith("\t"):
            prefix = _SERVER_PREFIX.match(line)
            self.mine = prefix is not None and line.startswith(self.session, prefix.end())
        return self.mine


class PoolFilter:
    """Keeps the pooler log lines of one tenant on a shared pooler. PgBouncer starts a connection's line with its
    C-0x.../S-0x... id and `database/user@address`, both as the client sent them: a line is the tenant's only when
    exactly its own `database/role@` follows the id. Lines of no connection (start, stats, reloads) are everyone's;
    a line that does not start with PgBouncer's timestamp (a newline inside a login name) goes with the one before."""

    _LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ \[\d+\] [A-Z]+ ")
    _CONNECTION = re.compile(r"[CS]-0x[0-9a-f]+: ")

    def __init__(self, role: str, database: str):
        self.mine = f"{database}/{role}@"
        self.kept = True

    def keep(self, line: str) -> bool:
        start = self._LINE.match(line)
        if start is None:
            return self.kept
        connection = self._CONNECTION.match(line, start.end())
        self.kept = connection is None or line.startswith(self.mine, connection.end())
        return self.kept


def component_lines(text: str, client_id: str) -> list[str]:
    """The component log's lines written for `client_id` (the client= field itself, not a mention in a message)."""
    return [line for line in text.split("\n") if (found := _COMPONENT_PREFIX.match(line)) and found.group(1) == client_id]


def show(client: Client, lines: int, follow: bool, pooler_log: bool = False, member: str = "") -> None:
    """The client's component log lines, then its server's log (a shared server: its own sessions only), or with
    `pooler_log` its pooler's (a shared pooler: its own connections only); `member`: that cluster member's."""
    from ..engines import require
    from ..text import cleaned_stdout

    if member and member not in client.engine.log_members():  # checked before anything is printed
        known = client.engine.log_members()
        raise InputError(f"MEMBER={member[:20]!r} is not a member of client {client.id}'s server: "
                         + (f"use one of {', '.join(known)}." if known else "MEMBER applies to a cluster's clients."))
    show_component_log(client.spec.log_file, client.id, lines)
    if pooler_log:
        from ..pooler import for_engine

        layout = for_engine(client.engine).layout
        if not layout.log_file.exists():
            raise UserError(f"No pooler log at {layout.log_file}: re-run make pgvector CLIENT_ID={client.id} to set up "
                            "its pool.")
        only = PoolFilter(client.tenant.role, client.tenant.database) if client.engine.capabilities.shared else None
        print(f"== pooler log {layout.log_file} ==", flush=True)
        show_server_log(layout.log_file, layout.log_file.parent, only, lines, follow)
        return
    require(client.engine, "logs")
    print(f"== server log ({client.engine.name}) ==", flush=True)
    with cleaned_stdout():  # the embedded engine cleans (and on a shared server filters) its lines itself; docker's are raw
        if member:
            client.engine.member_logs(member, lines, follow)
        else:
            client.engine.logs(lines, follow)


def show_component_log(path: Path, client_id: str, lines: int) -> None:
    if not path.exists():
        return
    mine = component_lines(path.read_bytes().decode(errors="replace"), client_id)
    print(f"== component log {path} (client {client_id}, last {lines}) ==")
    for line in mine[-lines:] if lines else []:
        print(clean(line))


def show_server_log(path: Path, trusted: Path, session: SessionFilter | PoolFilter | None, lines: int,
                    follow: bool) -> None:
    """The last `lines` lines of the server log (only `session`'s on a shared server), then new ones if `follow`."""
    keep = session.keep if session else (lambda line: True)
    pending = bytearray()
    with open_nofollow(path, trusted) as handle:
        for line in deque((line for line in _lines(handle, pending) if keep(line)), maxlen=max(lines, 0)):
            print(clean(line, keep="\t"))
        sys.stdout.flush()
        while follow:
            for line in _lines(handle, pending):
                if keep(line):
                    print(clean(line, keep="\t"), flush=True)
            time.sleep(0.25)


def _lines(handle: BinaryIO, pending: bytearray) -> Iterator[str]:
    """The complete lines from here to the end of the file, split at "\\n" only (a CR or U+2028 a tenant wrote
    does not start a line); a last line still being written waits in `pending`."""
    while raw := handle.readline():
        pending += raw
        if raw.endswith(b"\n"):
            yield pending[:-1].decode(errors="replace")
            pending.clear()


def open_nofollow(path: Path, trusted: Path) -> BinaryIO:
    """Open `path` for reading, following no symbolic link below `trusted` (the server's own directory, whose entry
    only root can replace; the server's OS user owns everything below it and could plant a link to a root-only file)."""
    parts = path.relative_to(trusted).parts
    try:
        fd = os.open(trusted, os.O_RDONLY | os.O_DIRECTORY)
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | (os.O_NONBLOCK if last else os.O_DIRECTORY)  # O_NONBLOCK: a FIFO cannot hang us
            try:
                child = os.open(part, flags, dir_fd=fd)
            finally:
                os.close(fd)
            fd = child
    except FileNotFoundError:
        raise UserError(f"No server log at {path}: has the server been installed?") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UserError(f"Refusing to read the server log {path}: a symbolic link or a non-directory is on its path "
                            f"below {trusted}, which the server's system user owns: check that directory.") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.stat(trusted).st_uid:  # a hard link to another's file
        os.close(fd)
        raise UserError(f"Refusing to read the server log {path}: it is not a regular file of the server's own user.")
    return os.fdopen(fd, "rb")


def tail(path: Path, trusted: Path, count: int) -> list[str]:
    """The last `count` non-empty lines, read as show_server_log reads (no link followed), cleaned; [] when unreadable."""
    try:
        with open_nofollow(path, trusted) as handle:
            return [clean(line, keep="\t")
                    for line in deque((text for text in _lines(handle, bytearray()) if text.strip()), maxlen=count)]
    except (UserError, OSError):
        return []
