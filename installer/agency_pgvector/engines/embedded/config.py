"""An embedded server's configuration: postgresql.conf, pg_hba.conf and pg_ident.conf, rendered from templates/
into the root-owned config directory (the server reads them and cannot change them; root never writes into a
directory the server user owns)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from ...render import render
from ...system import own_dir
from ...tuning import settings as tuning_settings
from .layout import Layout


def current(layout: Layout) -> dict[str, str | None]:
    return {name: (layout.config_dir / name).read_text() if (layout.config_dir / name).exists() else None
            for name in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf")}


def recorded_port(text: str | None) -> int | None:
    match = re.search(r"^port = (\d+)$", text or "", re.M)
    return int(match.group(1)) if match else None


def ssl_on(text: str | None) -> bool:
    return re.search(r"^ssl = on$", text or "", re.M) is not None


def wanted(layout: Layout, port: int, shared: bool, cloud: bool, tls: bool) -> dict[str, str]:
    context = dict(client_id=layout.key, cloud=cloud)
    cert, key = layout.tls_dir / "server.crt", layout.tls_dir / "server.key"
    return {
        "postgresql.conf": render("postgresql.agency.conf.j2", port=port, listen="*" if cloud else "127.0.0.1",
                                  socket_dir=str(layout.socket_dir), data_dir=str(layout.data_dir),
                                  config_dir=str(layout.config_dir), max_connections=200 if shared else 100, ssl=tls,
                                  ssl_cert=tls and str(cert), ssl_key=tls and str(key),
                                  tuning=tuning_settings(shared=shared), **context),
        "pg_hba.conf": render("pg_hba.conf.j2", **context),
        "pg_ident.conf": render("pg_ident.conf.j2", **context),
    }


def write(layout: Layout, files: dict[str, str], gid: int) -> None:
    own_dir(layout.config_dir.parent, 0o711, 0, 0)
    own_dir(layout.config_dir, 0o750, 0, gid)
    for name, text in files.items():
        _write_file(layout.config_dir / name, text, gid)


def _write_file(path: Path, text: str, gid: int) -> None:
    """root:<server group> 0640, replaced atomically in the root-owned config directory."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchown(fd, 0, gid)
        os.fchmod(fd, 0o640)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
