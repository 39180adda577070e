"""Host-level helpers: system users, running commands as them, ports, directories: created with explicit modes,
reachable by the server user, trusted (root-owned, not writable by others) before root uses them."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import re
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, overload

from .errors import UserError


def server_user_name(key: str, prefix: str = "apg") -> str:
    """The system user of one server (`apg`) or of its pooler (`apgb`): `<prefix>-<client id>` (a dedicated server),
    `<prefix>_shared` (the shared one). Linux names stop at 32 characters: a longer client id becomes
    <prefix>_<its start>_<10 hex of its hash>. Client ids have no '_', so the three forms never meet."""
    if key == "_shared":
        return f"{prefix}_shared"
    if len(prefix) + 1 + len(key) <= 32:
        return f"{prefix}-{key}"
    return f"{prefix}_{key[:32 - len(prefix) - 12]}_{hashlib.sha256(key.encode()).hexdigest()[:10]}"


@overload
def server_user(create: Literal[True], name: str) -> pwd.struct_passwd: ...
@overload
def server_user(create: bool, name: str) -> pwd.struct_passwd | None: ...
def server_user(create: bool, name: str) -> pwd.struct_passwd | None:
    return system_user(name, "agency-pgvector PostgreSQL server", create)


@overload
def system_user(name: str, comment: str, create: Literal[True]) -> pwd.struct_passwd: ...
@overload
def system_user(name: str, comment: str, create: bool) -> pwd.struct_passwd | None: ...
def system_user(name: str, comment: str, create: bool) -> pwd.struct_passwd | None:
    """A system user without a home or a login shell (created when missing and `create`)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        if not create:
            return None
    if os.geteuid() != 0:
        raise UserError(f"Creating the system user {name} needs root: re-run with sudo.")
    run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", "--comment", comment, name])
    return pwd.getpwnam(name)


def remove_user(name: str) -> None:
    if server_user(False, name) is not None:
        run(["userdel", name], check=False)


def own_dir(path: Path, mode: int, uid: int, gid: int) -> None:
    """Make `path` a directory with this mode and owner, never following a link someone put in its place
    (the fd is opened with O_NOFOLLOW; fchmod/fchown act on what was opened)."""
    try:
        path.mkdir(mode=mode)
    except FileExistsError:
        pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        raise UserError(f"{path} is not a plain directory (a symlink or a file is in its place): remove it and re-run.") from None
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def chown_tree(path: Path, uid: int, gid: int) -> None:
    """Hand a server's directory tree to its user; links are changed themselves, never followed. The top directory
    goes last: its owner is what tells a later run the hand-over is done, so a run killed halfway is redone."""
    for folder, dirs, files in os.walk(path, topdown=False):  # os.walk does not descend into linked directories
        for name in dirs + files:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)
    os.chown(path, uid, gid, follow_symlinks=False)


def run(argv: list[str], user: pwd.struct_passwd | None = None, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a command (as `user` when given); never put a secret in argv. A command run as another user gets a clean
    environment, not the CLI's: ADMIN_URL and the like would otherwise sit in /proc/PID/environ of a server or pooler
    process that user owns for as long as it runs. (Between fork and exec the child still shows the CLI's block there,
    but it is no longer dumpable once it changed user: only root can read it.)"""
    if user is not None and os.geteuid() == user.pw_uid:
        user = None
    if user is not None:
        kwargs.setdefault("env", {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"})
    result = subprocess.run(argv, capture_output=True, text=True, cwd=kwargs.pop("cwd", "/"), user=user.pw_uid if user else None,
                            group=user.pw_gid if user else None, extra_groups=[] if user else None, **kwargs)
    if check and result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise UserError(f"`{Path(argv[0]).name}` failed ({result.returncode}): {' / '.join(tail) or 'no output'}.")
    return result


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
    """Create `path` with exactly `mode` if it is missing (an existing directory keeps its mode, including one a
    concurrent run made a moment ago), then require_trusted(path): root only uses directories nobody else controls."""
    mkdirs(path, mode)
    require_trusted(path)


def mkdirs(path: Path, mode: int) -> None:
    """mkdir -p with explicit modes, whatever the umask: `mode` for `path`, 0711 (traversable, not listable) for
    missing parents. Each directory appears with its mode at once (made under a temporary name, then renamed): a
    run killed in between leaves a temporary directory the next run removes, never a directory of the wrong mode
    that ensure_dir would keep."""
    if path.is_dir():  # the usual case on a re-run: nothing above it can be missing either
        return
    for folder in (*reversed(path.parents), path):
        if not folder.is_dir():
            _mkdir_whole(folder, mode if folder == path else 0o711)


def _mkdir_whole(folder: Path, mode: int) -> None:
    import tempfile

    for stale in _leftovers(folder, ".mkdir"):
        with contextlib.suppress(OSError):
            stale.rmdir()
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.{os.getpid()}-", suffix=".mkdir"))
    os.chmod(staging, mode)  # 0700 until now; a directory of root's that nobody else can rename or remove
    try:
        os.rename(staging, folder)
    except OSError:  # made by a concurrent run meanwhile (or not a directory: require_trusted says so)
        staging.rmdir()


def require_trusted(path: Path) -> None:
    """Refuse unless every existing directory from / down to `path` is a real directory (not a symbolic link)
    owned by root, that no other user can write to unless it is root's and sticky (like /tmp). Below such a chain
    nobody but root can swap a directory or plant a link, so root's reads and writes land where they should."""
    for folder in (*reversed(path.parents), path):
        try:
            info = os.lstat(folder)
        except FileNotFoundError:
            return  # nothing below to follow yet; ensure_dir checks again once it has created the rest
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISLNK(info.st_mode):
            raise UserError(f"Refusing to use {folder}: it is a symbolic link, and root follows only real, root-owned "
                            f"directories here: replace it with a directory, or set AGENCY_STACK_ROOT to a real path.")
        if not stat.S_ISDIR(info.st_mode):
            raise UserError(f"Refusing to use {folder}: it is not a directory: move it away, then re-run.")
        owner_ok = info.st_uid in (0, os.geteuid())
        sticky_ok = info.st_uid == 0 and mode & stat.S_ISVTX
        if not owner_ok or (mode & (stat.S_IWGRP | stat.S_IWOTH) and not sticky_ok):
            raise UserError(f"Refusing to use {folder}: it is owned by {user_name(info.st_uid)} with mode {mode:04o}, so "
                            f"another user could swap what root reads or writes below it: check its contents, then run "
                            f"chown root:root {folder} && chmod go-w {folder}.")


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def processes() -> Iterator[tuple[int, list[bytes]]]:
    """Every process's pid and argv (from /proc; one that ends meanwhile is skipped)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        yield int(entry.name), argv


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


def require_free_space(path: Path, needed_mb: int, what: str) -> None:
    """Refuse before creating anything when the filesystem holding `path` (or its nearest existing parent) is short."""
    import shutil

    probe = path
    while not probe.exists():
        probe = probe.parent
    free_mb = shutil.disk_usage(probe).free // (1024 * 1024)
    if free_mb < needed_mb:
        raise UserError(f"{what} needs about {needed_mb} MB free on the filesystem of {probe}, which has "
                        f"{free_mb} MB: free some space (or use another AGENCY_STACK_ROOT) and re-run.")


def write_group_file(path: Path, text: str, gid: int) -> None:
    """root:<group> 0640, replaced atomically in a root-owned directory (a server's or a pooler's config)."""
    replace_file(path, text.encode(), 0o640, (0, gid))


def _leftovers(path: Path, suffix: str) -> Iterator[Path]:
    """Staging names beside `path` (.<name>.<pid>-<random><suffix>) whose process is gone: a run killed before its
    rename. Pid-less names (.<name>.<random>.tmp) are earlier releases'. Another file's (m1.yml.x's) never match."""
    prefix = f".{path.name}."
    for found in path.parent.glob(f"{glob.escape(prefix)}*{suffix}"):
        named = re.fullmatch(rf"(?:(\d+)-)?[a-z0-9_]+{re.escape(suffix)}", found.name[len(prefix):])
        if named and not (named.group(1) and Path(f"/proc/{named.group(1)}").exists()):
            yield found


def clear_stale_temps(path: Path) -> None:
    """Remove the temp files replace_file left for `path` in runs killed before their rename."""
    for stale in _leftovers(path, ".tmp"):
        stale.unlink(missing_ok=True)


def replace_file(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None = None) -> None:
    """Replace `path` with `data` as a file of `mode` (and `owner`): temp file in the same directory, fsync, rename
    (a link at `path` is replaced, never followed), then the directory fsynced. The caller checks the directory.
    A SIGKILL between the temp file and the rename leaves the temp file: the next write of `path` removes it."""
    import tempfile

    clear_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
