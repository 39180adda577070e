"""An embedded server's process: pg_ctl as the server's user (or systemd), and what its log says when it fails."""

from __future__ import annotations

from pathlib import Path

from ... import systemd
from ...errors import UserError
from ...system import run
from ...text import clean
from .layout import Layout


def running(layout: Layout, bin_dir: Path, user) -> bool:
    return run([str(bin_dir / "pg_ctl"), "-D", str(layout.data_dir), "status"], user, check=False).returncode == 0


def ctl(layout: Layout, bin_dir: Path, action: str, user, check: bool = False):
    """start / stop / restart. Starts go through systemd when it runs the host; stops always use pg_ctl, which works
    whoever started the server. Never `pg_ctl restart`: it reuses the old binary's path from postmaster.opts."""
    if action == "restart":
        ctl(layout, bin_dir, "stop", user, check=check)
        action = "start"
    if action == "start" and systemd.managed(layout.unit_path):
        return systemd.start(layout.unit_path, check)
    extra = {"start": ["-l", str(layout.log_file), "-o", f"--config-file={layout.config_file}"], "stop": ["-m", "fast"]}
    return run([str(bin_dir / "pg_ctl"), "-D", str(layout.data_dir), *extra[action], "-w", "-t", "60", "-s", action],
               user, check=check)


def start(layout: Layout, bin_dir: Path, user, port: int | None, action: str = "start") -> None:
    """Start (or restart) and say in one sentence why not, from the server's own log."""
    result = ctl(layout, bin_dir, action, user)
    if result.returncode == 0:
        return
    tail = log_tail(layout, 6)
    if any("Address already in use" in line for line in tail):
        raise UserError(f"The PostgreSQL server for {layout.key} cannot start: another process holds its port {port} "
                        f"(see: ss -ltnp 'sport = :{port}'): stop that process, then run make pgvector-restart.")
    said = " / ".join((result.stderr or "").strip().splitlines()[-2:])
    raise UserError(f"The PostgreSQL server for {layout.key} did not start: {tail[-1] if tail else 'no log'}"
                    f"{f' (pg_ctl: {clean(said)})' if said else ''} "
                    f"(full log: {layout.log_file}; a stale postmaster.pid or a full disk are the usual causes).")


def log_tail(layout: Layout, count: int) -> list[str]:
    """The server user writes this file: read without following links, owned by that user only (ops/logs.py)."""
    from ...ops.logs import tail

    return tail(layout.log_file, layout.server_dir, count)
