"""Where an embedded server's things are (each server runs as its own system user, apg-<id> or apg_shared, which
can traverse to its own directory and nothing else of the client's; root never writes below that directory once
the server exists):

    <root>/pgvector/servers/<key>/   0750 root:<server user>: postgresql.conf (given as --config-file), pg_hba.conf,
                                     pg_ident.conf, tls/
    <root>/clients/<id>/postgres/    0700 <server user>: data/, run/ (socket), log/   (dedicated)
    <root>/pgvector/shared/          the same for the shared server
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...spec import Paths
from ...system import server_user_name
from . import systemd

SHARED_KEY = "_shared"  # not a valid client id, so it can never collide with one


@dataclass(frozen=True)
class Layout:
    key: str  # the client id, or SHARED_KEY: owner of the port in the registry, the unit's and the user's name
    server_dir: Path
    parents: tuple[Path, ...]  # between the root and server_dir, created 0711 so the server user can traverse
    config_dir: Path

    @classmethod
    def for_client(cls, paths: Paths, shared: bool) -> Layout:
        if shared:
            return cls(SHARED_KEY, paths.state_dir / "shared", (paths.state_dir,), paths.state_dir / "servers" / SHARED_KEY)
        return cls(paths.client_id, paths.server_dir, (paths.client_dir.parent, paths.client_dir),
                   paths.state_dir / "servers" / paths.client_id)

    os_user = property(lambda self: server_user_name(self.key))
    data_dir = property(lambda self: self.server_dir / "data")
    socket_dir = property(lambda self: self.server_dir / "run")
    log_file = property(lambda self: self.server_dir / "log" / "postgresql.log")
    config_file = property(lambda self: self.config_dir / "postgresql.conf")
    tls_dir = property(lambda self: self.config_dir / "tls")
    runtime_record = property(lambda self: self.config_dir / "runtime")  # the runtime's key (runtime.py)
    upgrade_journal = property(lambda self: self.config_dir / "upgrade.json")  # an upgrade under way (server_upgrade.py)
    unit_path = property(lambda self: systemd.unit_path(self.key))
    socket_file = property(lambda self: self.socket_dir / ".s.PGSQL.65535")  # the longest the socket's name gets
