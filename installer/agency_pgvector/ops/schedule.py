"""Files root keeps outside the root for day-2 jobs: the backup schedule (/etc/cron.d) and the log rotation
(/etc/logrotate.d). Both are built only from validated values (paths spec.py accepts, a fixed schedule table)
and written atomically 0644 root, as cron and logrotate require."""

from __future__ import annotations

import grp
import os
import pwd
import re
import sys
from pathlib import Path

from .. import spec as specs
from ..envfile import holds
from ..errors import InputError
from ..system import ensure_dir, replace_file

CRON_NAME = "agency-pgvector-backup"  # cron ignores names with a dot in /etc/cron.d
LOGROTATE_NAME = "agency-pgvector"
SCHEDULES = {"hourly": "17 * * * *", "daily": "17 3 * * *", "weekly": "17 3 * * 0"}
_PATH = re.compile(r"/[A-Za-z0-9_./@+,-]*")  # nothing cron (a %) or logrotate (a space, a brace) would read as syntax


def cron_dir() -> Path:
    return Path(os.environ.get("AGENCY_CRON_DIR") or "/etc/cron.d")


def logrotate_dir() -> Path:
    return Path(os.environ.get("AGENCY_LOGROTATE_DIR") or "/etc/logrotate.d")


def cli_path() -> Path:
    """The CLI beside the running interpreter (the Makefile's venv): what cron calls, so exit codes survive."""
    path = Path(sys.executable).parent / "agency-pgvector"
    if not _PATH.fullmatch(str(path)):
        raise InputError(f"The installer's venv path {str(path)!r} holds characters a cron line cannot carry: "
                         "put the checkout under a plain path (letters, digits, / . _ -).")
    return path


def backup_schedule(when: str, keep: int) -> Path | None:
    """Write (or with `off` remove) the cron file backing up every client. Returns the file written."""
    target = cron_dir() / CRON_NAME
    if when == "off":
        target.unlink(missing_ok=True)
        return None
    if when not in SCHEDULES:
        raise InputError(f"SCHEDULE must be one of {', '.join(SCHEDULES)} or off, not {when!r}: e.g. SCHEDULE=daily.")
    root, log = specs.root_from_env(), specs.log_from_env()
    text = (f"# Written by agency-pgvector (make pgvector-backup-schedule SCHEDULE={when}); SCHEDULE=off removes it.\n"
            "# Every client's backup, the newest BACKUP_KEEP kept; failures go to the component log and cron's mail.\n"
            "SHELL=/bin/sh\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
            f"{SCHEDULES[when]} root AGENCY_STACK_ROOT={root} AGENCY_STACK_LOG={log} BACKUP_KEEP={keep} "
            f"{cli_path()} backup --all --quiet\n")
    _write(target, text)
    return target


MOVE_CRON_NAME = "agency-pgvector-move-finish"


def move_retention() -> tuple[Path, bool]:
    """The daily job that removes old copies moves kept past their 7 days (make pgvector-move-finish ALL=true),
    written by the first move that keeps one."""
    root, log = specs.root_from_env(), specs.log_from_env()
    text = ("# Written by agency-pgvector (make pgvector-move): removes the old copy a move kept once it is 7 days old.\n"
            "SHELL=/bin/sh\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
            f"47 4 * * * root AGENCY_STACK_ROOT={root} AGENCY_STACK_LOG={log} {cli_path()} move-finish --all\n")
    target = cron_dir() / MOVE_CRON_NAME
    return target, _write(target, text)


def log_files(root: Path) -> list[tuple[Path, str, str]]:
    """The logs of the servers and poolers under `root`: (file, the owner and group of its directory)."""
    patterns = ("clients/*/postgres/log/postgresql.log", "pgvector/shared/log/postgresql.log",
                "pgvector/poolers/*/log/pgbouncer.log")
    found = []
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            st = path.parent.stat()
            try:
                user, group = pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name
            except KeyError:  # a directory whose owner is gone: nothing of ours runs there any more
                continue
            if _PATH.fullmatch(str(path)):
                found.append((path, user, group))
    return found


_OPTIONS = "    weekly\n    maxsize 100M\n    rotate 8\n    missingok\n    notifempty\n    compress\n    delaycompress\n"


def write_logrotate() -> tuple[Path, bool]:
    """One block per log: the component log as root; each server's and pooler's as the user that owns its
    directory (logrotate's `su`), so root never rotates inside a directory another user can change.
    copytruncate: PostgreSQL (pg_ctl -l) and PgBouncer append to the same open file and keep writing."""
    root, log = specs.root_from_env(), specs.log_from_env()
    blocks = [f"{log} {{\n{_OPTIONS}    copytruncate\n}}\n"]
    for path, user, group in log_files(root):
        blocks.append(f"{path} {{\n{_OPTIONS}    copytruncate\n    su {user} {group}\n}}\n")
    text = ("# Written by agency-pgvector (make pgvector and make pgvector-logrotate rewrite it): its logs rotate weekly or\n"
            "# at 100 MB, 8 kept, compressed. Docker containers' logs are Docker's (its log driver's max-size).\n\n"
            + "\n".join(blocks))
    target = logrotate_dir() / LOGROTATE_NAME
    return target, _write(target, text)


def _write(target: Path, text: str) -> bool:
    """0644 root in a trusted directory (created 0755 when missing, left as it is otherwise), replaced atomically.
    False when it already held exactly that."""
    ensure_dir(target.parent, 0o755)
    if holds(target, text.encode(), 0o644):
        return False
    replace_file(target, text.encode(), 0o644)
    return True
