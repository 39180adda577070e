"""Start at boot: a systemd unit per embedded server and per pooler, written when systemd runs the host."""

from __future__ import annotations

import os
from pathlib import Path

from .system import run, systemd_running


def units_dir() -> Path:
    return Path(os.environ.get("AGENCY_SYSTEMD_DIR") or "/etc/systemd/system")


def wanted() -> bool:
    """A unit is kept where systemd runs (AGENCY_SYSTEMD_DIR: tests write units without systemd)."""
    return systemd_running() or bool(os.environ.get("AGENCY_SYSTEMD_DIR"))


def unit_path(name: str) -> Path:
    return units_dir() / f"{name}.service"


def install(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if systemd_running():
        run(["systemctl", "daemon-reload"])
        run(["systemctl", "enable", path.name])


def start(path: Path, check: bool):
    return run(["systemctl", "start", path.name], check=check)


def managed(path: Path) -> bool:
    """Starts go through systemd when it runs the host and the unit exists (so it tracks the server)."""
    return systemd_running() and path.exists()


def remove(path: Path) -> None:
    if path.exists():
        if systemd_running():
            run(["systemctl", "disable", path.name], check=False)
        path.unlink()


def run_action(action: str, path: Path):
    """systemctl <action> <unit> (stop, is-active, restart), its result returned, never raised."""
    return run(["systemctl", action, path.name], check=False)
