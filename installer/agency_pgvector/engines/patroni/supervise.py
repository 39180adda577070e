"""Starting and stopping the cluster's long-running processes (etcd, one Patroni per member): a systemd unit each
where systemd runs the host (Restart=always), else a detached keeper shell that starts the process again 2 s after
it dies; root keeps the keeper's pid in the cluster's root-owned pids/ (make pgvector-cluster and make
pgvector-restart start what is not running).

Why a keeper: a Patroni that dies leaves its PostgreSQL running. Were nothing to start Patroni again, a leader's
orphaned postmaster would stay read-write beside the new leader (its commits wait for a synchronous standby that
no longer follows it, so nothing is acknowledged, but writers that reach it hang). Started again, Patroni adopts
the running server: still holding the leader key it carries on, else it demotes the server and makes it follow.

The process runs as its own user and opens its log itself (the shell, as that user, appends to it): root never
opens a file in a directory another user owns."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
from pathlib import Path

from ... import systemd
from ...errors import UserError
from ...system import replace_file, user_name

_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
# $0 is the log, "$@" the command. TERM (stop) is passed on to the process, which is waited for. The process dies
# with its keeper (a killed keeper's orphan would otherwise run beside the next keeper's, two Patronis for one member).
KEEPER = ('trap \'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 0\' TERM INT; '
          'while :; do setpriv --pdeathsig KILL -- "$@" >>"$0" 2>&1 & child=$!; wait "$child"; sleep 2; done')


def unit_path(name: str) -> Path:
    return systemd.unit_path(f"agency-{name}")


def unit_text(name: str, user: str, argv: list[str], log: Path, cwd: Path | None = None) -> str:
    command = " ".join(argv)  # argv holds paths and flags the installer made: no spaces, no quotes
    return (f"# Managed by agency-pgvector: {name}\n[Unit]\nDescription=agency-pgvector {name}\n"
            "After=network.target\n\n[Service]\nType=simple\n"
            f"User={user}\nGroup={user}\nWorkingDirectory={cwd or '/'}\nExecStart=/bin/sh -c 'exec {command} >>{log} 2>&1'\n"
            "KillMode=mixed\nTimeoutStopSec=60\nRestart=always\nRestartSec=2\n\n"
            "[Install]\nWantedBy=multi-user.target\n")


def _pid_file(pid_dir: Path, name: str) -> Path:
    return pid_dir / f"{name}.pid"


def pid(pid_dir: Path, name: str, user: str, marker: str) -> int | None:
    """The running process recorded for `name`: alive, owned by `user`, its command line naming `marker`."""
    try:
        number = int(_pid_file(pid_dir, name).read_text())
        info = os.stat(f"/proc/{number}")
        cmdline = Path(f"/proc/{number}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return None
    if info.st_uid != pwd.getpwnam(user).pw_uid or marker not in cmdline:
        return None
    return number


def start(pid_dir: Path, name: str, user: str, argv: list[str], log: Path, marker: str, cwd: Path | None = None) -> None:
    if systemd.managed(unit_path(name)):
        systemd.start(unit_path(name), check=True)
        return
    if pid(pid_dir, name, user, marker) is not None:
        return
    account = pwd.getpwnam(user)
    child = subprocess.Popen(["/bin/sh", "-c", KEEPER, str(log), *argv], cwd=str(cwd or "/"),
                             env={"PATH": _PATH, "LANG": "C.UTF-8", "HOME": "/nonexistent"},
                             user=account.pw_uid, group=account.pw_gid, extra_groups=[], start_new_session=True,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    replace_file(_pid_file(pid_dir, name), f"{child.pid}\n".encode(), 0o644)


def stop(pid_dir: Path, name: str, user: str, marker: str, timeout: float = 60.0) -> None:
    if systemd.managed(unit_path(name)):
        systemd.run_action("stop", unit_path(name))
        return
    number = pid(pid_dir, name, user, marker)
    if number is None:
        return
    with contextlib.suppress(ProcessLookupError):  # it may end on its own meanwhile
        os.kill(number, signal.SIGTERM)  # to the keeper, which passes it on: Patroni stops PostgreSQL first; etcd flushes
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid(pid_dir, name, user, marker) == number:
        time.sleep(0.1)
    if pid(pid_dir, name, user, marker) == number:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(number, signal.SIGKILL)  # the keeper's session: the keeper and the process (pdeathsig)
    _pid_file(pid_dir, name).unlink(missing_ok=True)


def running(pid_dir: Path, name: str, user: str, marker: str) -> bool:
    if systemd.managed(unit_path(name)):
        return systemd.run_action("is-active", unit_path(name)).returncode == 0
    return pid(pid_dir, name, user, marker) is not None


def listener_uid(port: int, host: str = "127.0.0.1") -> int | None:
    """The uid that holds the TCP listening socket on `host`:`port` (or on every address), None when nobody
    listens. Anyone on the host may bind a free port: before a secret is sent to a port, its listener must be the
    cluster's own user (a squatter would collect the etcd root or the REST API password)."""
    wanted = {f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}", f"00000000:{port:04X}"}
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 7 and fields[1] in wanted and fields[3] == "0A":  # 0A: LISTEN
            return int(fields[7])
    return None


def require_listener(port: int, user: str, what: str, wait: float = 15.0, host: str = "127.0.0.1") -> None:
    """`user` listens on `port`, else one sentence and nothing sent. A port nobody holds yet is waited for (the
    process may be starting: a keeper starts a dead Patroni again after 2 s)."""
    deadline = time.monotonic() + wait
    owner = listener_uid(port, host)
    while owner is None and time.monotonic() < deadline:
        time.sleep(0.2)
        owner = listener_uid(port, host)
    if owner is None:
        raise UserError(f"Nothing listens on port {port} ({what}): it is stopped or not started yet. See make "
                        "pgvector-cluster-status; make pgvector-cluster starts what is not running.")
    if owner != pwd.getpwnam(user).pw_uid:
        raise UserError(f"Port {port} ({what}) is held by user {user_name(owner)}, not {user}: another program took it. "
                        f"Find it with ss -ltnp 'sport = :{port}', stop it, then re-run. Nothing was sent to it.")

