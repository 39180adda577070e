"""make pgvector-list: every client under the root, from files alone (no server session, so it is fast and works
with every server down): installed (.env), suspended (KEEP_DATA=true record), half-installed (a run that failed
before writing .env left a client directory, a server directory or a port registration)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .. import envfile, ports, spec as specs
from ..errors import UserError
from .common import SUSPENDED, read_suspended

SHARED_KEY = "_shared"  # the shared embedded server's key in the ports registry (engines/embedded/layout.py)


@dataclass
class Listed:
    """One row; to_json() is the documented shape (docs/json.md)."""

    client_id: str
    state: str  # installed | suspended | half-installed
    engine: str | None
    server: str | None  # dedicated | shared | None (unknown: no record says)
    endpoint: str | None  # host:port
    detail: str  # what is there, and the command that deals with it


def registered_ports(state_dir: Path) -> dict[str, int]:
    """Owner -> port, from the ports registry (<root>/pgvector/ports/<port>, content: the owner)."""
    folder = ports.registry(state_dir)
    out: dict[str, int] = {}
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        if entry.name.isdigit():
            out[entry.read_text().strip()] = int(entry.name)
    return out


def listing(root: Path | None = None) -> list[Listed]:
    root = root or specs.root_from_env()
    state_dir = root / "pgvector"
    owners = registered_ports(state_dir)
    clients = root / "clients"
    names = {d.name for d in clients.iterdir() if d.is_dir()} if clients.is_dir() else set()
    names |= {owner.split("/")[0] for owner in owners if not owner.startswith(SHARED_KEY)}
    return [_one(root, name, owners) for name in sorted(names)]


def state_of(client_id: str, root: Path | None = None) -> str | None:
    """installed | suspended | half-installed, None when nothing of that client is here."""
    root = root or specs.root_from_env()
    clients = root / "clients" / client_id
    owners = registered_ports(root / "pgvector")
    if not clients.exists() and client_id not in owners and f"{client_id}/pool" not in owners:
        return None
    return _one(root, client_id, owners).state


def _one(root: Path, name: str, owners: dict[str, int]) -> Listed:
    paths = specs.Paths(root, name)
    try:
        env = envfile.read(paths.env_file)
    except UserError as exc:  # a loose or linked .env: status names the fix
        return Listed(name, "installed", None, None, None, str(exc))
    if env.get("PGVECTOR_ENGINE"):
        return Listed(name, "installed", env["PGVECTOR_ENGINE"], env.get("PGVECTOR_SERVER"), _endpoint(env),
                      f"make pgvector-status CLIENT_ID={name}")
    record = read_suspended(paths) if (paths.component_dir / SUSPENDED).exists() else {}
    if record:
        return Listed(name, "suspended", record.get("PGVECTOR_ENGINE"), record.get("PGVECTOR_SERVER"), _endpoint(record),
                      f"database kept, no login: make pgvector CLIENT_ID={name} resumes it")
    found = [str(p) for p in (paths.component_dir, paths.server_dir) if p.exists()]
    port = owners.get(name)
    if port:
        found.append(f"port {port} registered")
    return Listed(name, "half-installed", "embedded" if paths.server_dir.exists() else None,
                  "dedicated" if paths.server_dir.exists() else None, f"127.0.0.1:{port}" if port else None,
                  f"{', '.join(found) or 'a pool port'} without .env: make pgvector CLIENT_ID={name} finishes it, "
                  f"make pgvector-uninstall CLIENT_ID={name} YES=true removes it")


def _endpoint(env: dict) -> str | None:
    host, port = env.get("PGVECTOR_HOST"), env.get("PGVECTOR_PORT")
    return f"{host}:{port}" if host and port else None


def to_json(rows: list[Listed], root: Path | None = None) -> dict:
    root = root or specs.root_from_env()
    shared = root / "pgvector" / "shared"
    port = registered_ports(root / "pgvector").get(SHARED_KEY)
    tenants = [r.client_id for r in rows if r.server == "shared" and r.state in ("installed", "suspended")]
    return {"clients": [asdict(r) for r in rows],
            "shared_server": {"exists": shared.exists(), "port": port, "tenants": tenants}}
