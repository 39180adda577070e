"""make pgvector-metrics: Prometheus text exposition (format 0.0.4) for one client or every one (ALL=true).

The figures are status's (ops/status.py reads them; nothing is queried twice here), plus the age of the newest
backup in the client's backups/ (ops/backup.py names them <id>-YYYYmmddTHHMMSSZ.dump). A value status could not
read (its server is down) has no sample; pgvector_up, pgvector_pooler_up and pgvector_healthy always have one.
METRICS_FILE=/path/name.prom writes the text atomically for node_exporter's textfile collector (docs/runbook.md).
"""

from __future__ import annotations

import calendar
import re
import time
from pathlib import Path

from ..errors import InputError
from ..system import replace_file, require_trusted
from .status import ClientStatus, status

# name, help: every family is a gauge, written once with all its samples (labels: client_id, plus the info's).
FAMILIES = {
    "pgvector_up": "1 when the client's server answers and the tenant logs in with its .env, else 0.",
    "pgvector_pooler_up": "1 when the client's PgBouncer runs and the tenant logs in through it, else 0.",
    "pgvector_healthy": "1 when make pgvector-status finds no problem for the client, else 0.",
    "pgvector_client_info": "The client's domain, server (dedicated/shared), engine and versions as labels; value 1.",
    "pgvector_database_size_bytes": "Size of the tenant's database in bytes.",
    "pgvector_connections": "Sessions the tenant's role has open on the server.",
    "pgvector_connection_limit": "The tenant role's connection limit (-1: none).",
    "pgvector_vector_indexes": "Indexes on vector, halfvec or sparsevec columns in the tenant's database.",
    "pgvector_drift_items": "Differences between the server and what was provisioned (0: none).",
    "pgvector_last_backup_age_seconds": "Seconds since the newest backup in the client's backups/ directory.",
}


def metrics(client_id: str, everyone: bool, now: float | None = None) -> tuple[str, list[ClientStatus]]:
    """The exposition text and the statuses it was made from."""
    from .. import envfile, spec as specs

    clients = status(client_id, everyone).clients
    root = specs.root_from_env()
    paths = {c.client_id: specs.Paths(root, c.client_id) for c in clients}
    backups = {cid: newest_backup(p.backups_dir, cid) for cid, p in paths.items()}
    labels = {cid: _env_labels(envfile, p.env_file) for cid, p in paths.items()}
    return render(clients, backups, labels, time.time() if now is None else now), clients


def _env_labels(envfile, env_file: Path) -> dict[str, str]:
    """The info labels only the .env knows (status reads the rest)."""
    try:
        env = envfile.read(env_file)
    except Exception:  # noqa: BLE001 - a client status could not load has its finding in pgvector_healthy
        env = {}
    return {"domain": env.get("DOMAIN", ""), "server": env.get("PGVECTOR_SERVER", "")}


def newest_backup(folder: Path, client_id: str) -> float | None:
    """The time (epoch seconds) in the name of the newest <id>-YYYYmmddTHHMMSSZ.dump in `folder`, if any."""
    pattern = re.compile(re.escape(client_id) + r"-(\d{8}T\d{6}Z)\.dump")
    stamps = [m.group(1) for p in (folder.iterdir() if folder.is_dir() else []) if (m := pattern.fullmatch(p.name))]
    return calendar.timegm(time.strptime(max(stamps), "%Y%m%dT%H%M%SZ")) if stamps else None


Sample = tuple[dict, float | None]


def samples(c: ClientStatus, backup: float | None, env_labels: dict[str, str], now: float) -> dict[str, Sample]:
    """Each family's sample for one client: (extra labels, value); None: unknown, not written."""
    up = c.server.reachable and c.database.size_bytes is not None  # status read the size with the tenant's login
    indexes = {(col.table, index.name) for col in c.vector_columns for index in col.indexes}
    info = {**env_labels, "engine": c.engine or "",
            "postgres_version": c.server.postgres_version or "", "pgvector_version": c.pgvector.installed or ""}
    return {
        "pgvector_up": ({}, int(up)),
        "pgvector_pooler_up": ({}, int(c.pool.running and c.pool.login is True)),
        "pgvector_healthy": ({}, int(c.healthy)),
        "pgvector_client_info": (info, 1),
        "pgvector_database_size_bytes": ({}, c.database.size_bytes),
        "pgvector_connections": ({}, c.role.connections),
        "pgvector_connection_limit": ({}, c.role.connection_limit),
        "pgvector_vector_indexes": ({}, len(indexes) if up else None),
        "pgvector_drift_items": ({}, len(c.drift) if c.server.reachable else None),
        "pgvector_last_backup_age_seconds": ({}, max(0.0, now - backup) if backup is not None else None),
    }


def render(clients: list[ClientStatus], backups: dict[str, float | None], labels: dict[str, dict[str, str]],
           now: float) -> str:
    per_client = {c.client_id: samples(c, backups.get(c.client_id), labels.get(c.client_id, {}), now) for c in clients}
    lines = []
    for name, help_text in FAMILIES.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for client_id, families in per_client.items():
            labels, value = families[name]
            if value is not None:
                pairs = ",".join(f'{key}="{escape(str(text))}"' for key, text in {"client_id": client_id, **labels}.items())
                lines.append(f"{name}{{{pairs}}} {_number(value)}")
    return "\n".join(lines) + "\n"


def escape(text: str) -> str:
    """A label value as the exposition format wants it: backslash, double quote and line feed escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def write(path: str, text: str) -> None:
    """METRICS_FILE: temp file + fsync + rename (node_exporter never reads half a file; a link at the path is
    replaced, not followed), 0644, in a directory nobody but root controls (system.require_trusted)."""
    target = Path(path)
    if not target.is_absolute() or target.suffix != ".prom" or ".." in target.parts:
        raise InputError(f"METRICS_FILE {path[:60]!r} must be an absolute path ending in .prom (node_exporter's textfile "
                         "collector reads only those), e.g. METRICS_FILE=/var/lib/prometheus/node-exporter/pgvector.prom.")
    if not target.parent.is_dir():
        raise InputError(f"METRICS_FILE's directory {target.parent} does not exist: create it (node_exporter's "
                         "--collector.textfile.directory), then re-run.")
    require_trusted(target.parent)
    replace_file(target, text.encode(), 0o644)
