"""AgencyStack's component registry: <root>/config/registry/component_registry.json (docs/operator.md).

The file is AgencyStack's, shared by every component: {"schema_version", "last_updated", "components": {category:
{component_id: entry}}}. We change only components.database.pgvector (and last_updated), under a lock, by
read -> change -> temp file + fsync + rename, keeping the file's mode and owner. A file that is not a JSON object is
refused, never overwritten. The entry's "clients" map holds one record per installed client (contact, domain,
engine, server); integration_status.installed is true while it holds any.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from pathlib import Path

from . import __version__
from .errors import UserError
from .locks import client_lock
from .report import CHANGE, CREATE, OK, Report
from .system import clear_stale_temps, ensure_dir, replace_file, require_trusted

CATEGORY = "database"
COMPONENT = "pgvector"
# The flags AgencyStack's registry uses, as this component meets them (docs/operator.md says why each).
FLAGS = {"hardened": True, "makefile": True, "sso": False, "dashboard": False, "logs": True, "docs": True,
         "auditable": True, "traefik_tls": False, "multi_tenant": True, "monitoring": True, "backup_ready": True}


def path(root: Path) -> Path:
    return root / "config" / "registry" / "component_registry.json"


def client_installed(root: Path, env: dict, report: Report) -> None:
    """After an install (ALL=true too): the client's record from its .env values, with its contact (ADMIN_EMAIL)."""
    record = {"admin_email": env["ADMIN_EMAIL"], "domain": env["DOMAIN"], "engine": env["PGVECTOR_ENGINE"],
              "server": env["PGVECTOR_SERVER"]}

    def change(clients: dict) -> None:
        clients[env["CLIENT_ID"]] = record
    report.add("registry", _update(root, change), f"{path(root)} (components.{CATEGORY}.{COMPONENT})")


def client_removed(root: Path, client_id: str, report: Report) -> None:
    """After an uninstall: the client's record goes; integration_status.installed turns false with the last one."""
    def change(clients: dict) -> None:
        clients.pop(client_id, None)
    report.add("registry", _update(root, change), f"{path(root)} ({client_id} removed)")


def _update(root: Path, change) -> str:
    """The report action: OK (nothing to change), CHANGE or CREATE (the file was new)."""
    target = path(root)
    with client_lock(root / "pgvector" / "locks" / "registry.lock"):
        ensure_dir(target.parent, 0o755)  # AgencyStack's directory: root's, nobody else can swap it (system.py)
        clear_stale_temps(target)  # a killed write's, even when nothing is to be written now
        data, info = _read(target)
        entry = data.setdefault("components", {}).setdefault(CATEGORY, {}).get(COMPONENT)
        entry = entry if isinstance(entry, dict) else {}
        clients = entry.get("clients")
        clients = clients if isinstance(clients, dict) else {}
        before = json.dumps(entry, sort_keys=True)
        change(clients)
        entry.update({"name": "pgvector", "component_id": COMPONENT, "category": "Database", "version": __version__,
                      "description": "PostgreSQL + pgvector: a database and role per client (agency-pgvector)",
                      "integration_status": {"installed": bool(clients), **FLAGS}, "clients": dict(sorted(clients.items()))})
        if (json.dumps(entry, sort_keys=True) == before and info is not None) or (info is None and not clients):
            return OK  # nothing to change (or to record): the file is left exactly as it was
        data["components"][CATEGORY][COMPONENT] = entry
        data["last_updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _write(target, json.dumps(data, indent=2) + "\n", info)
        return CREATE if info is None else CHANGE


def _read(target: Path) -> tuple[dict, os.stat_result | None]:
    """The registry as a dict and the file's stat (None: no file yet). Refuses a link, a non-file or bad JSON."""
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return {"schema_version": "1.0.0", "components": {}}, None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(f"Refusing to update {target}: it is a symbolic link: replace it with the file itself.") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"Refusing to update {target}: it is not a regular file.")
        raw = handle.read()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"Refusing to update {target}: it is not valid JSON ({exc.msg} at line {exc.lineno}): "
                        "fix or move it, then re-run.") from None
    except ValueError:  # not UTF-8
        raise UserError(f"Refusing to update {target}: it is not valid JSON (not UTF-8 text): "
                        "fix or move it, then re-run.") from None
    if not isinstance(data, dict) or not isinstance(data.get("components", {}), dict) or not isinstance(
            data.get("components", {}).get(CATEGORY, {}), dict):
        raise UserError(f"Refusing to update {target}: it is not a JSON object with a components object: "
                        "fix or move it, then re-run.")
    return data, info


def _write(target: Path, text: str, info: os.stat_result | None) -> None:
    require_trusted(target.parent)
    if info is None:
        replace_file(target, text.encode(), 0o644)
    else:
        replace_file(target, text.encode(), stat.S_IMODE(info.st_mode), (info.st_uid, info.st_gid))
