"""The servers this host provisions onto, how full each is, and where a new client goes (placement).

    shared      the shared embedded server (made by its first client)
    dedicated   a new embedded server for the client: its load is how many dedicated servers the host runs
    <cluster>   each Patroni cluster (make pgvector-cluster CLUSTER=<name>)
    <name>      an existing server the operator named (make pgvector-servers SERVER=<name> ADMIN_URL=...), used
                as ENGINE=external; its superuser URL is kept under <root>/pgvector/inventory/external/ (0600)

Each has a capacity in clients, connections and disk; make pgvector-servers lists them, and with SERVER=<name>
and MAX_CLIENTS / MAX_CONNECTIONS / MAX_DISK_GB sets one (<root>/pgvector/inventory/capacity.json, root's, 0600).
Defaults: 50 clients on the shared server or a cluster, tuning.DENSITY dedicated servers, 80% of the server's
max_connections in use, no disk cap of its own. Whatever the caps, a server whose file system is 90% full has no
room. `make pgvector SERVER=auto` puts a new client on the least loaded server with room (the highest of its
fractions decides) and says why; SERVER=<name> checks that one; nothing is created when none has room.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from . import envfile
from .errors import InputError, UserError
from .spec import Spec
from .tuning import DENSITY

FILE = "inventory/capacity.json"  # in a 0700 directory of its own: the state directory itself stays 0711
RESERVED = ("shared", "dedicated", "auto")
DEFAULT_CLIENTS = 50
CONNECTIONS_SHARE = 0.8  # of max_connections: what is left is headroom for bursts and the installer's own sessions
FS_FULL = 0.9
LIMITS = {"clients": 100000, "connections": 100000, "disk_gb": 1000000}


@dataclass
class Server:
    """One row; to_json() is the documented shape (docs/json.md)."""

    name: str
    kind: str  # shared | dedicated | cluster | named (an existing server the operator named)
    exists: bool
    up: bool  # a superuser session works (a server not made yet counts as up: its first client makes it)
    clients: int
    max_clients: int
    connections: int | None = None  # sessions now
    max_connections: int | None = None
    disk_gb: float | None = None  # the client databases' size
    max_disk_gb: float | None = None  # None: no cap of its own
    fs_used: float | None = None  # share of the file system holding its data that is in use

    def full(self) -> str | None:
        """Why no new client fits, with the numbers; None when one does."""
        if not self.up:
            return "not running"
        if self.clients >= self.max_clients:
            return f"clients {self.clients}/{self.max_clients}"
        if self.connections is not None and self.max_connections and self.connections >= self.max_connections:
            return f"connections {self.connections}/{self.max_connections}"
        if self.disk_gb is not None and self.max_disk_gb and self.disk_gb >= self.max_disk_gb:
            return f"disk {self.disk_gb:.1f}/{self.max_disk_gb:.0f} GB"
        if self.fs_used is not None and self.fs_used >= FS_FULL:
            return f"file system {self.fs_used:.0%} used"
        return None

    def load(self) -> float:
        parts = [self.clients / self.max_clients]
        if self.connections is not None and self.max_connections:
            parts.append(self.connections / self.max_connections)
        if self.disk_gb is not None and self.max_disk_gb:
            parts.append(self.disk_gb / self.max_disk_gb)
        if self.fs_used is not None:
            parts.append(self.fs_used / FS_FULL)
        return max(parts)

    def numbers(self) -> str:
        out = [f"clients {self.clients}/{self.max_clients}"]
        if self.connections is not None:
            out.append(f"connections {self.connections}/{self.max_connections}")
        if self.disk_gb is not None:
            out.append(f"disk {self.disk_gb:.1f}" + (f"/{self.max_disk_gb:.0f} GB" if self.max_disk_gb else " GB"))
        if self.fs_used is not None:
            out.append(f"file system {self.fs_used:.0%} used")
        return ", ".join(out)

    def to_json(self) -> dict:
        return {**asdict(self), "full": self.full(), "load": round(self.load(), 3)}


# -- capacities -------------------------------------------------------------------------------------------------
def _file(state_dir: Path) -> Path:
    return state_dir / FILE


def capacities(state_dir: Path) -> dict[str, dict]:
    return envfile.read_json(_file(state_dir), "fix or remove it (make pgvector-servers SERVER=... MAX_CLIENTS=... "
                                               "writes it again).")


def limit(name: str, value: str | None) -> int | None:
    """MAX_CLIENTS, MAX_CONNECTIONS, MAX_DISK_GB: a whole number, or nothing."""
    if value in (None, ""):
        return None
    key = {"MAX_CLIENTS": "clients", "MAX_CONNECTIONS": "connections", "MAX_DISK_GB": "disk_gb"}[name]
    text = str(value)
    if len(text) > 7 or not text.isascii() or not text.isdigit() or not 1 <= int(text) <= LIMITS[key]:
        raise InputError(f"{name} {text[:20]!r} is not valid: use a whole number from 1 to {LIMITS[key]}.")
    return int(text)


def set_capacity(spec: Spec, name: str, changes: dict[str, int]) -> None:
    known = {s.name for s in inventory(spec, read_load=False)}
    if name not in known:
        raise InputError(f"SERVER={name[:40]!r} is not in the inventory ({', '.join(sorted(known))}): nothing was "
                         "changed.")
    state_dir = spec.paths.state_dir
    found = capacities(state_dir)
    found[name] = {**found.get(name, {}), **changes}
    from .runner import _state_dirs

    _state_dirs(spec)
    envfile.write_atomic(_file(state_dir), json.dumps(found, indent=2, sort_keys=True) + "\n")


# -- what is there ----------------------------------------------------------------------------------------------
def inventory(spec: Spec, read_load: bool = True) -> list[Server]:
    """Every server a new client could go to, with its load (read over the superuser session when `read_load`)."""
    from .engines.embedded import SharedEmbeddedEngine
    from .engines.external import ExternalEngine
    from .engines.patroni import PatroniEngine
    from .engines.patroni.cluster import read_record
    from .engines.patroni.layout import ClusterLayout
    from .ops.listing import listing

    state_dir = spec.paths.state_dir
    caps = capacities(state_dir)
    rows = [r for r in listing(spec.root) if r.state in ("installed", "suspended")]

    def count(engine: str, server: str) -> int:
        return sum(1 for r in rows if (r.engine, r.server) == (engine, server))

    def cap(name: str, key: str, default):
        value = caps.get(name, {}).get(key)
        return value if isinstance(value, int) and value > 0 else default

    shared = SharedEmbeddedEngine(replace(spec, client_id="x"))
    out = [_measure(Server("shared", "shared", shared.exists(), True, count("embedded", "shared"),
                           cap("shared", "clients", DEFAULT_CLIENTS)), shared if shared.exists() else None,
                    shared.data_dir, cap("shared", "connections", None), cap("shared", "disk_gb", None), read_load)]
    clusters = state_dir / "clusters"
    for folder in sorted(clusters.iterdir()) if clusters.is_dir() else []:
        lay = ClusterLayout(folder.name, state_dir)
        record = read_record(lay)
        if record is None or record.get("joined"):  # a host that joined a cluster: its clients live on the first host
            continue
        engine = PatroniEngine(replace(spec, client_id="x"), folder.name)
        out.append(_measure(Server(folder.name, "cluster", True, True, count("patroni", folder.name),
                                   cap(folder.name, "clients", DEFAULT_CLIENTS)), engine, lay.data_dir("m1"),
                            cap(folder.name, "connections", None), cap(folder.name, "disk_gb", None), read_load))
    for name, url in external_servers(state_dir).items():
        named = ExternalEngine(replace(spec, client_id="x", admin_url=url), name)
        out.append(_measure(Server(name, "named", True, True, count(named.name, name),
                                   cap(name, "clients", DEFAULT_CLIENTS)), named, None,
                            cap(name, "connections", None), cap(name, "disk_gb", None), read_load))
    dedicated = Server("dedicated", "dedicated", True, True, count("embedded", "dedicated"),
                       cap("dedicated", "clients", DENSITY))
    if read_load:
        dedicated.fs_used = _fs_used(state_dir)
    out.append(dedicated)
    return out


def _measure(server: Server, engine, data_dir: Path | None, max_connections: int | None, max_disk: int | None,
             read_load: bool) -> Server:
    server.max_disk_gb = float(max_disk) if max_disk else None
    if not read_load:
        return server
    server.fs_used = _fs_used(data_dir) if data_dir else None  # an external server's disk is not on this host
    if engine is None:  # made by its first client: empty
        server.connections, server.max_connections, server.disk_gb = 0, max_connections or 160, 0.0
        return server
    try:
        conn = engine.admin_connect()
    except Exception:  # noqa: BLE001 - a server that does not answer takes no new client; the row says so
        server.up = False
        return server
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity "
                        "        WHERE backend_type = 'client backend'), "
                        "pg_catalog.current_setting('max_connections')::int, "
                        "(SELECT COALESCE(pg_catalog.sum(pg_catalog.pg_database_size(oid)), 0) "
                        " FROM pg_catalog.pg_database WHERE NOT datistemplate AND datname <> 'postgres')")
            used, most, size = cur.fetchone()
    finally:
        conn.close()
    server.connections = int(used)
    server.max_connections = max_connections or int(most * CONNECTIONS_SHARE)
    server.disk_gb = round(int(size) / 2**30, 3)
    return server


def _fs_used(path: Path) -> float | None:
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        found = os.statvfs(path)
    except OSError:
        return None
    return 1 - found.f_bavail / found.f_blocks if found.f_blocks else None


# -- named external servers ---------------------------------------------------------------------------------------
def external_servers(state_dir: Path) -> dict[str, str]:
    """name -> superuser URL of each existing server the operator named."""
    from .engines.external import named_servers

    return named_servers(state_dir)


def add_external(spec: Spec, name: str, url: str) -> str:
    """Name an existing server (its superuser URL checked: reachable, superuser, pgvector available); returns where."""
    from .engines.external import ExternalEngine, keep_named
    from .engines.patroni.cluster import read_record
    from .engines.patroni.layout import ClusterLayout
    from .spec import admin_url, cluster as valid_name

    valid_name(name)
    if name in RESERVED or read_record(ClusterLayout(name, spec.paths.state_dir)) is not None:
        raise InputError(f"SERVER={name} is taken (shared, dedicated, auto and the clusters' names are): choose another.")
    engine = ExternalEngine(replace(spec, client_id="x", admin_url=admin_url(url)), name)
    engine.plan_server(engine.observe(), create=False)  # refuses a server without pgvector, one sentence
    from .runner import _state_dirs

    _state_dirs(spec)
    keep_named(spec.paths.state_dir, name, url)
    return engine.where()


def remove_external(spec: Spec, name: str) -> None:
    found = {s.name: s for s in inventory(spec, read_load=False) if s.kind == "named"}
    if name not in found:
        raise InputError(f"SERVER={name[:40]!r} is no named external server: nothing was removed.")
    if found[name].clients:
        raise UserError(f"{found[name].clients} client(s) use {name}: uninstall or move them first (make pgvector-list).")
    from .engines.external import forget_named

    forget_named(spec.paths.state_dir, name)


# -- placement --------------------------------------------------------------------------------------------------
def wants_placement(spec: Spec) -> bool:
    """SERVER=auto, SERVER=<inventory name>, or CLUSTER=<name> (a new client on the engines placement covers; an
    ADMIN_URL given with the install names its server itself)."""
    return bool(spec.server or spec.cluster) and spec.engine in ("auto", "embedded", "patroni", "external") \
        and not spec.admin_url


def place(spec: Spec) -> tuple[Spec, str]:
    """The spec that puts a new client on the server named by SERVER/CLUSTER, or with SERVER=auto on the least
    loaded one with room; and one line saying which and why. Refuses, with every server's numbers, when the
    named server or every server is full."""
    kinds = {"embedded": ("shared", "dedicated"), "patroni": ("cluster",), "external": ("named",)}.get(
        spec.engine, ("shared", "dedicated", "cluster", "named"))
    servers = [s for s in inventory(spec) if s.kind in kinds]
    named = spec.cluster or spec.server
    if named == "auto":
        candidates = servers
    else:
        candidates = [s for s in servers if s.name == named]
        if not candidates and spec.cluster:
            from .engines.patroni.cluster import read_record, refuse_joined
            from .engines.patroni.layout import ClusterLayout

            there = ClusterLayout(named, spec.paths.state_dir)
            refuse_joined(there, read_record(there))
            raise InputError(f"Cluster {named[:40]} does not exist on this host: nothing was created. make "
                             f"pgvector-cluster CLUSTER={named[:40]} WITH_DEPS=true creates it.")
        if not candidates:
            names = ", ".join(s.name for s in servers)
            raise InputError(f"SERVER={named[:40]!r} is not in the inventory "
                             f"{'for ENGINE=' + spec.engine + ' ' if spec.engine != 'auto' else ''}({names}, or auto): "
                             "nothing was created. make pgvector-cluster CLUSTER=<name> makes a cluster.")
    room = [s for s in candidates if s.full() is None]
    if not room:
        numbers = "; ".join(f"{s.name}: {s.full()} ({s.numbers()})" for s in candidates)
        raise UserError(f"No room for client {spec.client_id} on {'any server' if named == 'auto' else named} "
                        f"({numbers}): nothing was created. Raise a capacity (make pgvector-servers SERVER=<name> "
                        "MAX_CLIENTS=...), add a cluster, or move a client away (make pgvector-move).")
    best = min(room, key=lambda s: s.load())  # the first of equals: shared, the clusters, then dedicated
    skipped = [f"{s.name} ({s.full()})" for s in candidates if s.full() is not None]
    why = (f"{best.name}: {'least loaded with room' if named == 'auto' else 'as named, has room'} ({best.numbers()})"
           + (f"; skipped {', '.join(skipped)}" if skipped else ""))
    if best.kind == "cluster":
        return replace(spec, engine="patroni", server="", cluster=best.name), why
    if best.kind == "named":
        url = external_servers(spec.paths.state_dir)[best.name]
        return replace(spec, engine="external", server=best.name, cluster="", admin_url=url), why
    return replace(spec, engine="embedded", server=best.name, cluster=""), why
