"""Host-level helpers: the server's system user, running commands as it, ports, directory reachability."""

from __future__ import annotations

import os
import pwd
import socket
import stat
import subprocess
from pathlib import Path

from .errors import UserError
from .spec import SERVER_USER


def server_user(create: bool) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        if not create:
            return None
    if os.geteuid() != 0:
        raise UserError(f"Creating the system user {SERVER_USER} needs root: re-run with sudo.")
    run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", "--comment", "agency-pgvector PostgreSQL servers", SERVER_USER])
    return pwd.getpwnam(SERVER_USER)


def run(argv: list[str], user: pwd.struct_passwd | None = None, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a command (as `user` when given); never put a secret in argv."""
    if user is not None and os.geteuid() == user.pw_uid:
        user = None
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        user=user.pw_uid if user else None,
        group=user.pw_gid if user else None,
        extra_groups=[] if user else None,
        cwd="/",
        **kwargs,
    )
    if check and result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise UserError(f"`{Path(argv[0]).name}` failed ({result.returncode}): {' / '.join(tail) or 'no output'}.")
    return result


def chown_tree(path: Path, user: pwd.struct_passwd) -> None:
    os.chown(path, user.pw_uid, user.pw_gid)


def unreachable_ancestor(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first directory above `path` that `user` cannot traverse, if any."""
    for parent in reversed(path.parents):
        info = parent.stat()
        mode = info.st_mode
        if info.st_uid == user.pw_uid:
            ok = mode & stat.S_IXUSR
        elif info.st_gid == user.pw_gid:
            ok = mode & stat.S_IXGRP
        else:
            ok = mode & stat.S_IXOTH
        if not ok:
            return parent
    return None


def port_is_free(port: int) -> bool:
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET, "127.0.0.1")):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True


def ensure_dir(path: Path, mode: int) -> None:
    """Create `path` with `mode` if it is missing. An existing directory is left as it is, including one a
    concurrent run made a moment ago (no check-then-create race)."""
    try:
        path.mkdir(parents=True, mode=mode)
    except FileExistsError:
        return
    os.chmod(path, mode)


def make_dir(path: Path, mode: int, owner: pwd.struct_passwd | None = None) -> bool:
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return created


def systemd_running() -> bool:
    """True when systemd is PID 1 (the documented check: /run/systemd/system exists)."""
    return os.path.isdir("/run/systemd/system")


def world_readable(tree: Path) -> None:
    """Server binaries must be reachable by the server's system user: directories and executables 0755,
    other files 0644 (symlinks left alone)."""
    for folder, _dirs, files in os.walk(tree):
        os.chmod(folder, 0o755)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.access(path, os.X_OK) else 0o644)
