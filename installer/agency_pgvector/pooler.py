"""PgBouncer (Debian's package, linked against the system's OpenSSL) in front of every server the installer provisions.

One pooler per server, not one per host: tenants of different dedicated servers share role names (vectoruser), and
PgBouncer 1.18 has one auth_file per process. Each runs as its own system user (apgb-<id>, apgb_shared), from files
it can read and not change:

    <root>/pgvector/poolers/<key>/        0750 root:<pooler>: pgbouncer.ini, pgbouncer_hba.conf, userlist.txt, tls/
        clients/<client id>.json          0600 root: what the client's pool is (the files are rendered from these)
        run/                              0700 <pooler>: socket (the console: root only, peer), pid file
        log/pgbouncer.log                 0700 <pooler>

userlist.txt holds each tenant's SCRAM verifier exactly as the server stores it: PgBouncer checks the tenant's SCRAM
proof against it and logs in to the server with the client key that proof yields. No password, plain or hashed, and
no superuser credential is in any file the pooler reads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from . import envfile, ports, systemd, tls
from .errors import InputError, UserError
from .locks import client_lock
from .render import render
from .report import CHANGE, CREATE, OK
from .runner import Step
from .spec import POOL_MODES, PoolSettings
from .system import ensure_dir, own_dir, remove_user, run, server_user_name, system_user, write_group_file

DEFAULTS: dict[str, Any] = {"mode": "session", "size": 10, "max_connections": 20}
MAX_CLIENT_CONN = 1000  # per pooler, all its clients together
CONSOLE = "pgbouncer"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


# -- what a client's pool is ----------------------------------------------------------------------------------
def resolve(given: PoolSettings, recorded: dict, limit: int) -> dict:
    """The pool settings to apply: given ones (POOL_*), else the client's recorded ones (.env), else the defaults.
    `limit`: the role's CONNECTION LIMIT, which the server enforces on the pool's connections too."""
    kept = PoolSettings(recorded.get("PGVECTOR_POOL_MODE") if recorded.get("PGVECTOR_POOL_MODE") in POOL_MODES else None,
                        *(_recorded(recorded.get(f"PGVECTOR_POOL_{name}")) for name in ("SIZE", "MAX_CONNECTIONS")))
    out: dict[str, Any] = {name: next((v for v in (getattr(given, name), getattr(kept, name)) if v is not None), None)
                           for name in DEFAULTS}
    out["mode"] = out["mode"] or DEFAULTS["mode"]
    out["max_connections"] = out["max_connections"] or DEFAULTS["max_connections"]
    out["size"] = out["size"] or min(DEFAULTS["size"], out["max_connections"])  # POOL_MAX_CONNECTIONS=5 alone: a pool of 5
    if out["max_connections"] > limit:
        raise InputError(f"POOL_MAX_CONNECTIONS {out['max_connections']} is above the {limit} connections the "
                        f"tenant's role may open: use at most {limit}.")
    if out["size"] > out["max_connections"]:
        raise InputError(f"POOL_SIZE {out['size']} is larger than POOL_MAX_CONNECTIONS {out['max_connections']}: "
                        "lower POOL_SIZE or raise POOL_MAX_CONNECTIONS.")
    return out


def _recorded(text: str | None) -> int | None:
    return int(text) if text and len(text) <= 4 and text.isascii() and text.isdigit() and 1 <= int(text) <= 1000 else None


@dataclass(frozen=True)
class Entry:
    client_id: str
    database: str
    role: str
    verifier: str  # the role's SCRAM verifier, as pg_authid has it
    host: str  # the server, as PgBouncer reaches it
    port: int
    mode: str
    size: int
    max_connections: int
    cloud: bool
    domain: str

    @classmethod
    def load(cls, text: str) -> Entry | None:
        try:
            data = json.loads(text)
            return cls(**{f.name: data[f.name] for f in fields(cls)})
        except (ValueError, KeyError, TypeError):
            return None

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True) + "\n"


# -- where it is ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    key: str  # the server's key (client id, or _shared)
    state_dir: Path

    directory = property(lambda self: self.state_dir / "poolers" / self.key)
    clients_dir = property(lambda self: self.directory / "clients")
    run_dir = property(lambda self: self.directory / "run")
    log_file = property(lambda self: self.directory / "log" / "pgbouncer.log")
    tls_dir = property(lambda self: self.directory / "tls")
    ini = property(lambda self: self.directory / "pgbouncer.ini")
    os_user = property(lambda self: server_user_name(self.key, "apgb"))
    unit_path = property(lambda self: systemd.unit_path(f"agency-pgbouncer-{self.key.strip('_')}"))
    port_owner = property(lambda self: f"{self.key}/pool")
    lock = property(lambda self: self.state_dir / "locks" / f"pool-{self.key}.lock")
    pending = property(lambda self: self.directory / ".reload-pending")  # written before the files, gone once read

    def files(self) -> dict[str, Path]:
        return {name: self.directory / name for name in ("pgbouncer.ini", "pgbouncer_hba.conf", "userlist.txt")}


def binary() -> str | None:
    return shutil.which("pgbouncer", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin")


def preflight(with_deps: bool) -> None:
    """Refused before anything is created: every client gets a pool, so PgBouncer must be there or be installed."""
    if not with_deps and binary() is None:
        raise UserError("PgBouncer is not installed: add WITH_DEPS=true to install it "
                        "(apt-get install pgbouncer), or install it yourself, then re-run.")


@dataclass
class Seen:
    binary: str | None
    user: Any
    entries: dict[str, Entry]
    files: dict[str, str | None]
    port: int | None
    unit: str | None
    running: bool
    cert_names: list | None  # the names of a current certificate (valid, signed by today's CA), None without one
    pending: bool = False  # files were written and the running pooler has not read them yet (a run killed between)


class Pooler:
    def __init__(self, key: str, state_dir: Path, with_deps: bool = False):
        self.layout = Layout(key, state_dir)
        self.state_dir = state_dir
        self.with_deps = with_deps

    def lock(self):
        """Runs for different clients of one pooler (the shared server's) change its files one at a time."""
        return client_lock(self.layout.lock, wait_seconds=300)

    # -- observe ------------------------------------------------------------------------------------------
    def observe(self) -> Seen:
        lay = self.layout
        entries = {}
        if lay.clients_dir.is_dir():
            for path in sorted(lay.clients_dir.glob("*.json")):
                entry = Entry.load(path.read_text())
                if entry is not None:
                    entries[entry.client_id] = entry
        files = {name: path.read_text() if path.exists() else None for name, path in lay.files().items()}
        port = recorded_port(files["pgbouncer.ini"])
        user = system_user(lay.os_user, "", create=False)
        unit = lay.unit_path.read_text() if lay.unit_path.exists() else None
        return Seen(binary(), user, entries, files, port, unit, port is not None and self.running(port),
                    tls.current_names(lay.tls_dir, self.state_dir), lay.pending.exists())

    def _names(self, entries) -> list[str]:
        domains = [entry.domain for entry in entries if entry.cloud]
        return tls.server_names(domains) if domains else []

    # -- plan -----------------------------------------------------------------------------------------------
    def plan(self, seen: Seen, client_id: str, entry: Entry | None) -> list[Step]:
        """Steps from `seen` to this client's pool being `entry` (None: the client's pool removed)."""
        lay = self.layout
        entries = dict(seen.entries)
        if entry is None:
            entries.pop(client_id, None)
        else:
            entries[client_id] = entry
        if not entries:
            return self._plan_removal(seen)
        steps: list[Step] = []
        if seen.binary is None:
            preflight(self.with_deps)
            steps.append(Step("pgbouncer package", CREATE, "Debian's pgbouncer (system OpenSSL)", run=install_package))
        if seen.user is None:
            steps.append(Step("pooler user", CREATE, lay.os_user, run=self._make_user))
        old = seen.entries.get(client_id)
        if entry is not None:
            detail = (f"{entry.mode} pool of {entry.size} for {entry.database} (at most {entry.max_connections} server "
                      f"connections){', remote over TLS' if entry.cloud else ''}")
            steps.append(Step(f"pool {entry.database}", OK if old == entry else CHANGE if old else CREATE, detail,
                              run=lambda: self._record(entry)))
        else:
            steps.append(Step(f"pool {old.database if old else client_id}", CHANGE, "removed from the pooler",
                              run=lambda: (lay.clients_dir / f"{client_id}.json").unlink(missing_ok=True)))
        names = self._names(entries.values())
        cert_changed = bool(names) and seen.cert_names != names
        if cert_changed:
            tls.need_openssl()
            steps.append(Step("pooler TLS certificate", CHANGE if lay.tls_dir.exists() else CREATE,
                              f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}, signed by "
                              f"{tls.ca_cert(self.state_dir)}",
                              run=lambda: tls.issue(lay.tls_dir, self.state_dir, names, self._user().pw_gid)))
        port = seen.port or ports.preview(self.state_dir, lay.port_owner)
        files = self.render(entries, port, bool(names))
        changed = [name for name, text in files.items() if seen.files[name] != text]
        steps.append(Step("pooler config", (CHANGE if seen.files["pgbouncer.ini"] else CREATE) if changed else OK,
                          ", ".join(changed) or f"port {port}, in {lay.directory}",
                          run=lambda: self._write(entries, seen.port, bool(names))))
        if systemd.wanted():
            text = self.unit_text(seen.binary or "/usr/sbin/pgbouncer")
            steps.append(Step("pooler boot start", OK if seen.unit == text else CHANGE, f"{lay.unit_path} enabled",
                              run=lambda: systemd.install(lay.unit_path, text)))
        restart = _section(seen.files["pgbouncer.ini"]) != _section(files["pgbouncer.ini"])
        rotated = entry is not None and old is not None and old.verifier != entry.verifier
        listen = "all interfaces (TLS)" if names else "127.0.0.1"
        if not seen.running:
            steps.append(Step("pooler process", CHANGE, f"started on {listen}, port {port}", run=self.start))
        elif restart:
            steps.append(Step("pooler process", CHANGE, "restarted to apply the new [pgbouncer] settings",
                              run=self.restart))
        elif changed or cert_changed or entry is None or seen.pending:
            gone = old.database if entry is None and old else entry.database if rotated and entry else None
            steps.append(Step("pooler process", CHANGE, "reloaded" + (f"; {gone}'s open sessions ended" if gone else ""),
                              run=lambda: self.reload(end=gone)))
        else:
            steps.append(Step("pooler process", OK, f"running on {listen}, port {port}"))
        return steps

    def _plan_removal(self, seen: Seen) -> list[Step]:
        if seen.files["pgbouncer.ini"] is None and seen.user is None:
            return []
        return [Step("pooler", CHANGE, f"stopped and removed ({self.layout.directory}): no client left on it",
                     run=self.remove)]

    # -- files ------------------------------------------------------------------------------------------------
    def render(self, entries: dict[str, Entry], port: int, with_tls: bool) -> dict[str, str]:
        lay = self.layout
        ordered = [entries[key] for key in sorted(entries)]
        context = dict(key=lay.key, entries=ordered)
        users = "".join(f'"{item.role}" "{item.verifier}"\n' for item in ordered)
        # PgBouncer 1.18 recycles every server connection of every pool on each RELOAD while server-side TLS is
        # configured, and a login it cuts short blocks that pool for server_login_retry: one client's install would
        # stall the other tenants' logins. The servers the installer runs listen on loopback without ssl, so their
        # poolers leave server TLS off; a pooler in front of a remote (external) server keeps `prefer`.
        server_tls = any(item.host not in LOOPBACK for item in ordered)
        return {
            "pgbouncer.ini": render("pgbouncer.ini.j2", **context, listen="*" if with_tls else "127.0.0.1", port=port,
                                    run_dir=str(lay.run_dir), log_file=str(lay.log_file), config_dir=str(lay.directory),
                                    tls=with_tls, tls_dir=str(lay.tls_dir), max_client_conn=MAX_CLIENT_CONN,
                                    server_tls=server_tls),
            "pgbouncer_hba.conf": render("pgbouncer_hba.conf.j2", **context),
            # root's console login (peer, over the socket only): PgBouncer wants every user in its auth file.
            "userlist.txt": '"root" ""\n' + users,
        }

    def unit_text(self, binary_path: str) -> str:
        lay = self.layout
        return render("agency-pgbouncer.service.j2", key=lay.key, user=lay.os_user, binary=binary_path, ini=str(lay.ini))

    def _record(self, entry: Entry) -> None:
        ensure_dir(self.layout.clients_dir, 0o700)
        envfile.write_atomic(self.layout.clients_dir / f"{entry.client_id}.json", entry.dump())

    def _write(self, entries: dict[str, Entry], port: int | None, with_tls: bool) -> None:
        """The port is taken when the files are first written (a concurrent first install may have taken the planned one)."""
        lay, user = self.layout, self._user()
        port = port or ports.reserve(self.state_dir, lay.port_owner)
        own_dir(lay.directory.parent, 0o711, 0, 0)
        own_dir(lay.directory, 0o750, 0, user.pw_gid)
        for folder in (lay.run_dir, lay.log_file.parent):
            own_dir(folder, 0o700, user.pw_uid, user.pw_gid)
        lay.pending.touch()
        for name, text in self.render(entries, port, with_tls).items():
            write_group_file(lay.directory / name, text, user.pw_gid)

    def _user(self):
        return system_user(self.layout.os_user, "agency-pgvector PgBouncer", create=True)

    def _make_user(self) -> None:
        self._user()

    # -- process -------------------------------------------------------------------------------------------
    def port(self) -> int | None:
        ini = self.layout.ini
        return recorded_port(ini.read_text()) if ini.exists() else None

    def console(self, port: int | None = None):
        """root's session on PgBouncer's console (peer, over the 0700 socket directory)."""
        from .sessions import pooler_console

        return pooler_console(self.layout.run_dir, port or self.port())

    def running(self, port: int | None = None) -> bool:
        try:
            self.console(port).close()
            return True
        except Exception:  # noqa: BLE001 - not running, not answering: the same to the caller
            return False

    def start(self) -> None:
        """Start the pooler; one already running (its console did not answer in time on a loaded host) re-reads its
        files instead, so what the caller wrote is in force either way."""
        lay = self.layout
        already = self._pid() is not None
        if not already and systemd.managed(lay.unit_path):
            systemd.start(lay.unit_path, check=False)
        elif not already:  # a pooler killed outright leaves its pid file behind, and PgBouncer then refuses to start
            (lay.run_dir / "pgbouncer.pid").unlink(missing_ok=True)
            run([binary() or "pgbouncer", "-d", "-q", str(lay.ini)], self._user(), check=False)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.running():
                if already:
                    self.reload()
                lay.pending.unlink(missing_ok=True)
                return
            time.sleep(0.05)
        raise UserError(f"PgBouncer for server {lay.key} did not start: {' / '.join(self.log_tail(2)) or 'no log'} "
                        f"(full log: {lay.log_file}).")

    def stop(self) -> None:
        """The pid file is the pooler user's: only a pgbouncer process of that user is signalled."""
        lay = self.layout
        if systemd.managed(lay.unit_path):
            run(["systemctl", "stop", lay.unit_path.name], check=False)
        pid = self._pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self._pid() == pid:
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self, end: str | None = None) -> None:
        """RELOAD re-reads the files; `end`: a database whose open sessions must go (a new password, a removed client)."""
        import psycopg2

        conn = self.console()
        try:
            with conn.cursor() as cur:
                cur.execute("RELOAD")
                if end and re.fullmatch(r"[a-z0-9_]+", end):
                    try:  # a removed client's pool is gone with the reload: nothing left to end
                        cur.execute(f"KILL {end}")
                        cur.execute(f"RESUME {end}")
                    except psycopg2.Error as exc:
                        if "no such database" not in str(exc):
                            raise
            self.layout.pending.unlink(missing_ok=True)
        finally:
            conn.close()

    def _pid(self) -> int | None:
        user = system_user(self.layout.os_user, "", create=False)
        try:
            pid = int((self.layout.run_dir / "pgbouncer.pid").read_text().split()[0])
            status = Path(f"/proc/{pid}/status").read_text()
        except (OSError, ValueError, IndexError):
            return None
        uid = re.search(r"^Uid:\s+(\d+)", status, re.M)
        name = re.search(r"^Name:\s+(\S+)", status, re.M)
        zombie = re.search(r"^State:\s+Z", status, re.M)
        if user is None or not uid or int(uid.group(1)) != user.pw_uid or not name or name.group(1) != "pgbouncer" or zombie:
            return None
        return pid

    def remove(self) -> None:
        lay = self.layout
        self.stop()
        systemd.remove(lay.unit_path)
        port = self.port()
        shutil.rmtree(lay.directory, ignore_errors=True)
        if not lay.key.startswith("_"):  # apgb_shared is one name for every root on the host, like apg_shared: kept
            remove_user(lay.os_user)
        if port:
            ports.release(self.state_dir, port)

    # -- day 2 ----------------------------------------------------------------------------------------------
    def show(self, what: str) -> list[dict]:
        """A SHOW command of the console (POOLS, DATABASES, CLIENTS, ...) as one dict per row."""
        assert re.fullmatch(r"[A-Z_]+", what), what
        conn = self.console()
        try:
            with conn.cursor() as cur:
                cur.execute(f"SHOW {what}")
                names = [column.name for column in cur.description]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            conn.close()

    def pools(self, database: str) -> dict | None:
        """The client's line of SHOW POOLS (clients active/waiting, server connections), None when not answering."""
        try:
            rows = self.show("POOLS")
        except Exception:  # noqa: BLE001 - a pooler that does not answer: the caller says so
            return None
        mine = [row for row in rows if row["database"] == database]
        keys = ("cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "maxwait")
        return {key: sum(int(row.get(key) or 0) for row in mine) for key in keys}

    def log_tail(self, count: int) -> list[str]:
        from .ops.logs import tail

        return tail(self.layout.log_file, self.layout.directory / "log", count)


def for_engine(engine) -> Pooler:
    return Pooler(engine.pool_key(), engine.paths.state_dir, engine.spec.with_deps)


def converge(engine, client_id: str, entry: Entry | None, report, dry_run: bool = False) -> Pooler:
    """observe -> plan -> apply for one client's pool, under the pooler's lock (entry None: remove it)."""
    from .runner import apply

    pool = for_engine(engine)
    with pool.lock():
        apply(pool.plan(pool.observe(), client_id, entry), report, dry_run)
    return pool


def recorded_port(text: str | None) -> int | None:
    match = re.search(r"^listen_port = (\d+)$", text or "", re.M)
    return int(match.group(1)) if match else None


def _section(text: str | None) -> str:
    """The [pgbouncer] part of an ini (changing it needs a restart; [databases] and the auth files only a reload)."""
    return (text or "").partition("[pgbouncer]")[2]


def install_package() -> None:
    """apt-get install pgbouncer; Debian's own instance (pgbouncer.service, port 6432, as postgres) is switched off:
    the installer runs its own, one per server."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "pgbouncer"], check=False, env=env)
    if result.returncode != 0 or binary() is None:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"Installing PgBouncer with apt-get failed ({tail[0]}): run apt-get install pgbouncer by hand, "
                        "then re-run.")
    if systemd.wanted() and os.path.isdir("/run/systemd/system"):
        run(["systemctl", "disable", "--now", "pgbouncer.service"], check=False)
