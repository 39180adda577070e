"""An embedded server's configuration: postgresql.conf, pg_hba.conf and pg_ident.conf, rendered from templates/
into the root-owned config directory (the server reads them and cannot change them; root never writes into a
directory the server user owns)."""

from __future__ import annotations

import re

from ...render import render
from ...system import own_dir, write_group_file
from ...tuning import settings as tuning_settings
from .layout import Layout


def current(layout: Layout) -> dict[str, str | None]:
    return {name: (layout.config_dir / name).read_text() if (layout.config_dir / name).exists() else None
            for name in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf")}


def recorded_port(text: str | None) -> int | None:
    match = re.search(r"^port = (\d+)$", text or "", re.M)
    return int(match.group(1)) if match else None


def wanted(layout: Layout, port: int, shared: bool) -> dict[str, str]:
    """PostgreSQL listens on loopback and its socket only: remote clients come through the pooler (pooler.py)."""
    context = dict(client_id=layout.key)
    return {
        "postgresql.conf": render("postgresql.agency.conf.j2", port=port, socket_dir=str(layout.socket_dir),
                                  data_dir=str(layout.data_dir), config_dir=str(layout.config_dir),
                                  max_connections=200 if shared else 100, tuning=tuning_settings(shared=shared),
                                  **context),
        "pg_hba.conf": render("pg_hba.conf.j2", **context),
        "pg_ident.conf": render("pg_ident.conf.j2", **context),
    }


def write(layout: Layout, files: dict[str, str], gid: int) -> None:
    own_dir(layout.config_dir.parent, 0o711, 0, 0)
    own_dir(layout.config_dir, 0o750, 0, gid)
    for name, text in files.items():
        write_group_file(layout.config_dir / name, text, gid)
