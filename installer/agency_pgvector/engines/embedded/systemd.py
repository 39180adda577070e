"""The embedded server's systemd unit (the generic unit handling is agency_pgvector.systemd)."""

from __future__ import annotations

from pathlib import Path

from ... import systemd
from ...render import render


def unit_path(key: str) -> Path:
    return systemd.unit_path(f"agency-pgvector-{key.strip('_')}")


def unit_text(key: str, user: str, bin_dir: Path, data_dir: Path, log_file: Path, config_file: Path) -> str:
    return render("agency-pgvector.service.j2", key=key, user=user, bin_dir=str(bin_dir), data_dir=str(data_dir),
                  log_file=str(log_file), config_file=str(config_file))
