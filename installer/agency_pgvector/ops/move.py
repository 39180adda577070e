"""make pgvector-move CLIENT_ID=... TO=<server>: a client to another server while its apps keep writing.

    prepare  the target server (a new dedicated one is made), the tenant there with the same password, and the
             schema without indexes (pg_dump --schema-only, restored by the tenant's own login)
    copy     source: a publication FOR ALL TABLES in the tenant database and a login for this move only
             (REPLICATION, BYPASSRLS, member of the tenant role); target: a subscription that copies every table
             and then streams the changes; then the indexes, constraints and triggers, by the tenant's login
    freeze   source: the tenant NOLOGIN and its sessions ended; wait until the target confirmed the source's last
             WAL position; sequences copied; tables, columns and row counts compared
    switch   subscription, slot, publication and the move's login dropped; the .env rewritten for the target
             (one rename), its pool with it; the source's pool entry removed
    kept     the old database stays on the source (its role NOLOGIN) until make pgvector-move-finish

The journal (<component dir>/move.json, root's, 0600) says how far a move got: a run killed before the freeze is
rolled back and started again; one killed during the freeze or the switch is carried forward (the source has
taken no write since the freeze began, so nothing is lost either way). ABORT=true rolls back a move not switched.
"""

from __future__ import annotations

import calendar
import json
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg2
from psycopg2 import sql

from .. import engines, envfile, log, pooler, scram, sessions, spec as specs
from ..engines.base import Engine
from ..errors import InputError, UserError
from ..provision import EXTENSION_SCHEMA, Tenant, lock, terminate
from ..report import CHANGE, OK, Report
from ..runner import operation
from .backup import _tail, _tool, reader, row_counts, tenant_entries
from .common import Client, first_line

JOURNAL = "move.json"
NAME = "agency_move"  # the publication (in the tenant database); subscription and slot: agency_move_<client>
COPY_TIMEOUT = 3600.0  # the first copy of every table
CATCH_UP_TIMEOUT = 60.0  # at the freeze: the target confirms the source's last WAL position
KEEP_DAYS = 7  # how long the old copy stays before make pgvector-move-finish ALL=true removes it
RESTORE = (("statement_timeout", "0"), *[(k, v) for k, v in sessions.TENANT if k != "statement_timeout"])  # big indexes

FINGERPRINT = """SELECT pg_catalog.md5(pg_catalog.string_agg(pg_catalog.format('%s.%s.%s:%s', n.nspname, c.relname,
                        a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)), ',' ORDER BY n.nspname, c.relname,
                        a.attnum)), pg_catalog.count(DISTINCT c.oid)
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                 JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid
                 WHERE c.relkind IN ('r', 'p') AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
                   AND n.nspname OPERATOR(pg_catalog.<>) ALL (ARRAY['pg_catalog', 'information_schema'])
                   AND n.nspname OPERATOR(pg_catalog.!~) '^pg_(temp|toast)'"""
USER_TABLES = """SELECT c.oid, n.nspname, c.relname, c.relkind, c.relpersistence, c.relreplident,
                        EXISTS (SELECT FROM pg_catalog.pg_index i WHERE i.indrelid OPERATOR(pg_catalog.=) c.oid
                                AND i.indisprimary)
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                 WHERE c.relkind IN ('r', 'p', 'S')
                   AND n.nspname OPERATOR(pg_catalog.<>) ALL (ARRAY['pg_catalog', 'information_schema'])
                   AND n.nspname OPERATOR(pg_catalog.!~) '^pg_(temp|toast)' ORDER BY 2, 3"""


@dataclass
class Moved:
    """to_json() is the documented shape (docs/json.md)."""

    client_id: str
    source: str  # engine/server, e.g. embedded/dedicated, patroni/main
    target: str
    phase: str  # switched | kept | rolled back | finished
    freeze_seconds: float = 0.0  # the tenant could not write: from NOLOGIN on the source to the new .env
    seconds: float = 0.0
    rows: int = 0
    report: Report = field(default_factory=Report)

    def to_json(self) -> dict:
        return dict(client_id=self.client_id, source=self.source, target=self.target, phase=self.phase,
                    freeze_seconds=round(self.freeze_seconds, 3), seconds=round(self.seconds, 3), rows=self.rows,
                    items=[dict(item=r.item, status=self.report.status(r), detail=r.detail) for r in self.report.rows])


# -- where a client can go --------------------------------------------------------------------------------------
def target_spec(client: Client, to: str):
    """The spec of the client on server `to`: shared, dedicated, or a Patroni cluster's name."""
    from ..engines.patroni.cluster import read_record
    from ..engines.patroni.layout import ClusterLayout
    from ..install import installed_spec
    from ..inventory import external_servers
    from ..spec import cluster as cluster_name

    # the contact and remote access as installed (the .env), not as this command's environment has them
    base = replace(installed_spec(client.id), with_deps=True, server="", cluster="", engine="auto")
    if to in ("shared", "dedicated"):
        return replace(base, engine="embedded", server=to)
    name = cluster_name(to) if specs._CLIENT_ID.fullmatch(to or "") else ""
    if name and read_record(ClusterLayout(name, client.spec.paths.state_dir)) is not None:
        return replace(base, engine="patroni", cluster=name)
    named = external_servers(client.spec.paths.state_dir).get(name) if name else None
    if named:
        return replace(base, engine="external", server=name, admin_url=named)
    raise InputError(f"TO={to[:40]!r} is no server of this host: use TO=shared, TO=dedicated, a cluster's or a named "
                     "server's name (make pgvector-servers lists them).")


def where(engine_name: str, server: str) -> str:
    return f"{engine_name}/{server}"


# -- the journal ------------------------------------------------------------------------------------------------
def journal_path(client_spec) -> Path:
    return client_spec.paths.component_dir / JOURNAL


def read_journal(client_spec) -> dict:
    return envfile.read_json(journal_path(client_spec), "the move cannot be resumed from it. Check both servers with "
                                                         "make pgvector-status, then remove the file.")


def _write_journal(client_spec, journal: dict) -> None:
    envfile.write_atomic(journal_path(client_spec), json.dumps(journal, indent=2, sort_keys=True) + "\n")


def unfinished(client_spec) -> str | None:
    """One sentence when a move of this client is under way (make pgvector refuses to act on it then)."""
    journal = read_journal(client_spec)
    if journal and journal.get("phase") != "kept":
        cid = client_spec.client_id
        way_back = "" if journal.get("switching") else ", or add ABORT=true to undo it"
        return (f"A move of client {cid} to {journal.get('to')} is unfinished ({journal.get('phase')}): run make "
                f"pgvector-move CLIENT_ID={cid} TO={journal.get('to')} to finish it{way_back}.")
    return None


def moving_roles(root: Path) -> set[str]:
    """Logins a move under way keeps on its servers (the move's login on the source, the tenant on the target):
    status expects them there while the move runs."""
    from .common import installed_clients

    names: set[str] = set()
    for cid in installed_clients(root):
        try:
            journal = read_journal(specs.Spec(client_id=cid, root=root))
        except UserError:  # that client's tree or journal is unsound: its own status says so
            continue
        if journal and journal.get("phase") != "kept":
            shared = {"embedded/shared", f"patroni/{journal.get('target_server')}"}
            names.add(f"{Tenant.for_client(cid, journal['source_server'] != 'dedicated').role}.mover")
            names.add(Tenant.for_client(cid, where(journal["target_engine"], journal["target_server"]) in shared).role)
    return names


def source_engine(client: Client, journal: dict) -> Engine:
    """The server the client came from, as the journal recorded it."""
    base = replace(client.spec, engine="auto", server="", cluster="", with_deps=False)
    return engines.get(base, journal["source_engine"], journal["source_server"])


# -- the move ---------------------------------------------------------------------------------------------------
def move(client: Client, to: str, abort: bool = False) -> Moved:
    with operation(client.spec, "move"):
        started = time.monotonic()
        journal = read_journal(client.spec)
        if abort:
            return _abort(client, journal)
        if journal.get("phase") == "kept":
            raise UserError(f"Client {client.id} moved to {journal['to']} and its old copy is still kept on "
                            f"{journal['source_server']}: make pgvector-move-finish CLIENT_ID={client.id} YES=true "
                            "removes it; then move again.")
        if journal and journal.get("to") != to:
            raise UserError(unfinished(client.spec) or "")
        tspec = target_spec(client, to)
        target = engines.get(tspec)
        source = client.engine if not journal else source_engine(client, journal)
        if not journal and (target.name, target.recorded_server()) == (client.engine.name, client.engine.recorded_server()):
            raise InputError(f"Client {client.id} is on {to} already: nothing to move.")
        run = _Run(client, source, target, tspec, journal)
        moved = run.go()
        moved.seconds = time.monotonic() - started
        log.event(f"moved {where(source.name, source.recorded_server())} -> {where(target.name, target.recorded_server())}"
                  f" ({moved.rows} rows, writes frozen {moved.freeze_seconds:.2f} s)")
        return moved


class _Run:
    def __init__(self, client: Client, source: Engine, target: Engine, tspec, journal: dict):
        self.client, self.source, self.target, self.tspec = client, source, target, tspec
        self.tenant = Tenant.for_client(client.id, source.capabilities.shared)
        self.ttenant = Tenant.for_client(client.id, target.capabilities.shared)
        self.journal = journal
        self.report = Report()
        self.password = client.env.get("PGVECTOR_DB_PASS") or ""
        self.schema_file = client.spec.paths.component_dir / "move-schema.dump"
        self.sub = _slot(client.id)  # the subscription's name on the target, and the slot's on the source

    def _save(self, **changes) -> None:
        self.journal.update(changes)
        _write_journal(self.client.spec, self.journal)

    def go(self) -> Moved:
        moved = Moved(self.client.id, where(self.source.name, self.source.recorded_server()),
                      where(self.target.name, self.target.recorded_server()), "kept", report=self.report)
        phase = self.journal.get("phase")
        if phase == "copy":  # killed before the freeze: nothing the source took is only on the target; start again
            _rollback(self.client, self.journal, self.report)
            self.journal = {}
            phase = None
        try:
            if phase is None:
                self._preflight()
                self._prepare()
                self._copy()
            moved.freeze_seconds, moved.rows = self._freeze_and_switch()
        except (UserError, psycopg2.Error) as exc:
            if not self.journal or self.journal.get("phase") == "kept" or self.journal.get("switching"):
                raise
            _rollback(self.client, self.journal, Report())  # the source takes writes again, as before the move
            why = str(exc) if isinstance(exc, UserError) else f"A statement of the move failed ({first_line(exc)})."
            raise UserError(f"{why} The move was undone: client {self.client.id} stays on "
                            f"{where(self.source.name, self.source.recorded_server())}.") from None
        self.schema_file.unlink(missing_ok=True)
        return moved

    # -- before anything is made
    def _preflight(self) -> None:
        if self.client.spec.enable_cloud or "PGVECTOR_TLS_SHA256" in self.client.env:
            engines.require(self.target, "pool")
        conn = self.source.admin_connect(self.tenant.database)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_catalog.current_setting('wal_level'), "
                            "pg_catalog.current_setting('server_version_num')::int, "
                            "(SELECT pg_catalog.count(*) FROM pg_catalog.pg_largeobject_metadata), "
                            "(SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n "
                            "ON n.oid OPERATOR(pg_catalog.=) e.extnamespace WHERE e.extname = 'vector')")
                wal, version, blobs, ext_schema = cur.fetchone()
                cur.execute(USER_TABLES)
                tables = cur.fetchall()
        finally:
            conn.close()
        cid = self.client.id
        if wal != "logical":
            raise UserError(f"The source server of client {cid} runs wal_level={wal}; a move needs logical (logical "
                            f"replication): nothing was moved. {self.source.logical_fix.format(client=cid)}")
        unlogged = [f"{n}.{r}" for _, n, r, kind, persistence, _, _ in tables if persistence == "u" and kind != "S"]
        if unlogged:
            raise UserError(f"Client {cid} has unlogged tables ({', '.join(unlogged[:3])}), which logical replication "
                            "does not carry: nothing was moved. ALTER TABLE ... SET LOGGED, then move again.")
        if blobs:
            raise UserError(f"Client {cid} has {blobs} large object(s), which logical replication does not carry: "
                            "nothing was moved. Move them into bytea columns, or back up and restore instead.")
        if ext_schema != EXTENSION_SCHEMA:
            raise UserError(f"pgvector sits in schema {ext_schema} in client {cid}'s database: run make pgvector "
                            f"CLIENT_ID={cid} (it moves it to {EXTENSION_SCHEMA}), then move again.")
        if not self.target.capabilities.owns_server and self.target.endpoint().host not in ("127.0.0.1", "::1", "localhost"):
            raise UserError(f"{self.target.where()} is on another host: its subscription would have to reach the "
                            "source's loopback address. Moves onto another host are not built; back up and restore.")
        target_version = _server_version_num(self.target) if _reachable(self.target) else 180000
        if target_version // 10000 < max(version // 10000, 18):
            # The schema goes in with PostgreSQL 18's pg_restore, and before 18 a superuser's subscription evaluated
            # index expressions as the superuser when it applied a change (found by an attacker's review on 16).
            raise UserError(f"The target runs PostgreSQL {target_version // 10000}: moves go to PostgreSQL 18 servers "
                            f"(and never to an older major than the source's). Nothing was moved.")

    # -- prepare and copy
    def _prepare(self) -> None:
        from ..install import _converge, converge_server

        self._save(to=self.tspec.server or self.tspec.cluster, phase="copy", since=_now(),
                   source_engine=self.source.name, source_server=self.source.recorded_server(),
                   target_engine=self.target.name, target_server=self.target.recorded_server(),
                   target_server_new=not _reachable(self.target) and self.target.capabilities.remove,
                   target_created=False, replica_identity={})
        converge_server(self.target, self.tspec, self.report)
        admin = self.target.admin_connect()
        try:
            lock(admin)
            with admin.cursor() as cur:
                cur.execute("SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_database WHERE datname = %s) "
                            "OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_roles WHERE rolname = %s)",
                            (self.ttenant.database, self.ttenant.role))
                if cur.fetchone()[0]:
                    raise UserError(f"{self.ttenant.database} or {self.ttenant.role} exists on {self.target.label} already "
                                    "(not made by this move): nothing was moved. Check who uses it (make pgvector-list).")
            self._save(target_created=True)
            _converge(self.tspec, self.target, self.ttenant, admin, {"PGVECTOR_DB_PASS": self.password}, self.report)
        finally:
            admin.close()
        log.event("move: target tenant made")
        self._dump_schema()
        self._restore("pre-data")
        log.event("move: schema restored")

    def _dump_schema(self) -> None:
        envfile.write_atomic(self.schema_file, b"")
        with reader(self.client) as login:
            result = _tool("pg_dump", ["--format=custom", "--schema-only", "--no-owner", "--no-privileges",
                                       f"--file={self.schema_file}"],
                           sessions.tool_env(sessions.tenant_params(login, self.tenant.database)))
        if result.returncode != 0:
            raise UserError(f"pg_dump --schema-only of {self.tenant.database} failed: {_tail(result)}.")

    def _restore(self, section: str) -> None:
        listing = _tool("pg_restore", ["--list", str(self.schema_file)]).stdout
        entries = tenant_entries(listing)
        with tempfile.NamedTemporaryFile("w", suffix=".list") as handle:
            handle.write("\n".join(entries) + "\n")
            handle.flush()
            login = self._target_login()
            result = _tool("pg_restore", ["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
                                          f"--section={section}", f"--use-list={handle.name}",
                                          f"--dbname={self.ttenant.database}", str(self.schema_file)],
                           sessions.tool_env(sessions.tenant_params(login), RESTORE))
        if result.returncode != 0:
            raise UserError(f"Restoring {self.tenant.database}'s schema ({section}) on the target failed: "
                            f"{_tail(result)}.")

    def _copy(self) -> None:
        """Publication and the move's login on the source, the subscription on the target, every table copied."""
        src = self.source.admin_connect(self.tenant.database)
        mover = sql.Identifier(f"{self.tenant.role}.mover")  # a '.': no client's role can be named so
        password = scram.generate()
        try:
            with src.cursor() as cur:
                cur.execute("SET lock_timeout = '10s'")
                cur.execute(USER_TABLES)
                changed = {}
                for oid, _, _, kind, _, ident, has_pk in cur.fetchall():
                    # UPDATE and DELETE on a published table need a replica identity, or they fail for the tenant
                    if kind == "r" and (ident == "n" or (ident == "d" and not has_pk)):
                        changed[str(oid)] = ident
                self._save(replica_identity=changed)
                for oid in changed:
                    cur.execute("SELECT pg_catalog.format('%%s', %s::pg_catalog.regclass)", (int(oid),))
                    cur.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(sql.SQL(cur.fetchone()[0])))
                cur.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(NAME)))
                cur.execute(sql.SQL("CREATE PUBLICATION {} FOR ALL TABLES").format(sql.Identifier(NAME)))
                terminate(cur, f"{self.tenant.role}.mover")
                cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(mover))
                # REPLICATION is what a logical walsender needs, and it would also allow a base backup of the whole
                # source server: the password lives in the target's catalog only, and the login for a day at most
                until = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(time.time() + 86400))
                cur.execute(sql.SQL("CREATE ROLE {} LOGIN REPLICATION BYPASSRLS NOSUPERUSER NOCREATEDB NOCREATEROLE "
                                    "CONNECTION LIMIT 4 VALID UNTIL {} IN ROLE {} PASSWORD %s").format(
                                        mover, sql.Literal(until), sql.Identifier(self.tenant.role)),
                            (scram.hash_password(password),))
        finally:
            src.close()
        point = self.source.endpoint()
        conninfo = " ".join(f"{k}='{_conn_quote(str(v))}'" for k, v in (
            ("host", point.host), ("port", point.port), ("dbname", self.tenant.database),
            ("user", f"{self.tenant.role}.mover"), ("password", password), ("application_name", NAME)))
        dst = self.target.admin_connect(self.ttenant.database)
        try:
            with dst.cursor() as cur:
                # the statement holds the move login's password: kept out of the target's log, even on an error
                cur.execute("SET log_statement = 'none'; SET log_min_error_statement = 'panic'; "
                            "SET log_min_duration_statement = -1")
                cur.execute(sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (slot_name = {}, "
                                    "copy_data = true)").format(sql.Identifier(_slot(self.client.id)), sql.Literal(conninfo),
                                                                sql.Identifier(NAME), sql.Literal(_slot(self.client.id))))
                cur.execute("RESET log_statement; RESET log_min_error_statement; RESET log_min_duration_statement")
            self.report.add("subscription", CHANGE, f"copying {self.tenant.database} from {self.source.label}")
            log.event("move: subscribed")
            self._wait_copied(dst)
        finally:
            dst.close()
        self._restore("post-data")
        self.report.add("indexes", CHANGE, "indexes, constraints and triggers built on the target")
        # The index build held the tables' locks, so changes queued up meanwhile: drained before the freeze, the
        # freeze only waits for what arrives in its own second.
        src = self.source.admin_connect(self.tenant.database)
        try:
            self._catch_up(src, COPY_TIMEOUT)
        finally:
            src.close()

    def _wait_copied(self, dst) -> None:
        deadline = time.monotonic() + COPY_TIMEOUT
        with dst.cursor() as cur:
            while True:
                cur.execute("SELECT pg_catalog.count(*) FILTER (WHERE r.srsubstate <> 'r'), pg_catalog.count(r.*), "
                            "(SELECT sync_error_count OPERATOR(pg_catalog.+) apply_error_count "
                            " FROM pg_catalog.pg_stat_subscription_stats WHERE subname = %s) "
                            "FROM pg_catalog.pg_subscription s LEFT JOIN pg_catalog.pg_subscription_rel r "
                            "ON r.srsubid OPERATOR(pg_catalog.=) s.oid WHERE s.subname = %s", (self.sub, self.sub))
                waiting, tables, errors = cur.fetchone()
                if errors:
                    raise UserError(f"Copying client {self.client.id}'s tables to {self.target.label} failed ({errors} "
                                    "error(s); the target server's log says why).")
                if not waiting:
                    self.report.add("copy", OK, f"{tables} table(s) copied, changes streaming")
                    return
                if time.monotonic() > deadline:
                    raise UserError(f"The first copy of client {self.client.id}'s tables did not finish within "
                                    f"{COPY_TIMEOUT:.0f} s.")
                time.sleep(0.2)

    # -- freeze and switch
    def _freeze_and_switch(self) -> tuple[float, int]:
        from ..install import _install

        self._save(phase="frozen")
        frozen = time.monotonic()
        src = self.source.admin_connect(self.tenant.database)
        rows = 0
        try:
            with src.cursor() as cur:
                cur.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(self.tenant.role)))
                _end_sessions(cur, self.tenant.role)
            log.event("move: writes frozen")
            dst = self.target.admin_connect(self.ttenant.database)
            try:
                if _subscribed(dst, self.sub):
                    self._catch_up(src)
                    rows = self._verify()
                    log.event("move: caught up")
                    with dst.cursor() as cur:
                        cur.execute(sql.SQL("DROP SUBSCRIPTION {}").format(sql.Identifier(self.sub)))
            finally:
                dst.close()
            self._save(switching=True)  # from here on the move only goes forward
            _drop_source_machinery(src, self.tenant.role, self.client.id)
            log.event("move: replication dropped")
        finally:
            src.close()
        existing = {**self.client.env, "PGVECTOR_ENGINE": self.target.name,
                    "PGVECTOR_SERVER": self.target.recorded_server()}
        result = _install(self.tspec, existing=existing, moving=True)  # the .env: the switch
        freeze = time.monotonic() - frozen
        self.report.rows.extend(result.report.rows)
        log.event("move: switched")
        if self.source.capabilities.pool:
            pooler.converge(self.source, self.client.id, None, self.report)  # the source's pool entry goes
        self._save(phase="kept", switched=_now(), freeze_seconds=round(freeze, 3))
        from .schedule import move_retention

        cron, changed = move_retention()
        self.report.add("retention", CHANGE if changed else OK, f"{cron}: old copies go after {KEEP_DAYS} days")
        self.report.add("old copy", OK, f"{self.tenant.database} kept on {self.source.label} (NOLOGIN) until make "
                                        f"pgvector-move-finish CLIENT_ID={self.client.id}")
        return freeze, rows

    def _catch_up(self, src, timeout: float = CATCH_UP_TIMEOUT) -> None:
        """Wait until the target confirmed every change the source had written when this began."""
        deadline = time.monotonic() + timeout
        with src.cursor() as cur:
            cur.execute("SELECT pg_catalog.pg_current_wal_lsn()")
            (end,) = cur.fetchone()
            while True:
                cur.execute("SELECT confirmed_flush_lsn OPERATOR(pg_catalog.>=) %s::pg_catalog.pg_lsn "
                            "FROM pg_catalog.pg_replication_slots WHERE slot_name = %s", (end, _slot(self.client.id)))
                found = cur.fetchone()
                if found is None:
                    raise UserError(f"The move's replication slot is gone from client {self.client.id}'s source server "
                                    "(a failover there?).")
                if found[0]:
                    return
                if time.monotonic() > deadline:
                    raise UserError(f"The target did not catch up with the source within {timeout:.0f} s "
                                    "(see the target server's log).")
                time.sleep(0.02)

    def _verify(self) -> int:
        """Sequences copied, then tables, columns and row counts compared. Read with the tenant's rights only (a
        reader login on each side, BYPASSRLS): planning even a count(*) evaluates the table's index expressions,
        and those are the tenant's code."""
        target = Client(self.tspec, self.target, self._target_login(), self.ttenant)
        with reader(self.client) as src_login, reader(target) as dst_login:
            src = sessions.tenant(src_login, self.tenant.database)
            dst = sessions.tenant(dst_login, self.ttenant.database)
            try:
                _copy_sequences(src, dst)
                seen = []
                for conn in (src, dst):
                    with conn.cursor() as cur:
                        cur.execute(FINGERPRINT)
                        seen.append((cur.fetchone(), row_counts(conn)))
            finally:
                src.close()
                dst.close()
        (src_print, src_rows), (dst_print, dst_rows) = seen
        if src_print != dst_print:
            raise UserError(f"Client {self.client.id}'s tables or columns changed during the move (DDL is not "
                            "replicated): move again once its schema changes are done.")
        if src_rows != dst_rows:
            wrong = sorted(set(src_rows.items()) ^ set(dst_rows.items()))[:3]
            raise UserError(f"Row counts differ between source and target ({wrong}).")
        self.report.add("compared", OK, f"{len(src_rows)} table(s), {sum(src_rows.values())} rows, same columns")
        return sum(src_rows.values())

    def _target_login(self) -> dict:
        every = self.target.endpoints()
        login = dict(PGHOST=",".join(p.host for p in every), PGPORT=",".join(str(p.port) for p in every),
                     PGUSER=self.ttenant.role, PGPASSWORD=self.password, PGDATABASE=self.ttenant.database)
        if len(every) > 1:
            login.update(PGTARGETSESSIONATTRS="read-write", PGREQUIREAUTH="scram-sha-256")
        return login


# -- undo, finish -----------------------------------------------------------------------------------------------
def _abort(client: Client, journal: dict) -> Moved:
    if not journal:
        raise UserError(f"No move of client {client.id} is under way: nothing to undo.")
    if journal.get("phase") == "kept" or journal.get("switching"):
        raise UserError(f"Client {client.id}'s move to {journal['to']} was switched already: its apps use the target. "
                        f"Move it back with make pgvector-move CLIENT_ID={client.id} TO={journal['source_server']} "
                        "after make pgvector-move-finish.")
    report = Report()
    _rollback(client, journal, report)
    return Moved(client.id, where(journal["source_engine"], journal["source_server"]),
                 where(journal.get("target_engine", "?"), journal.get("target_server", "?")), "rolled back", report=report)


def _rollback(client: Client, journal: dict, report: Report) -> None:
    """Undo a move that was not switched: the target's subscription, tenant and (a new dedicated) server go, the
    source takes writes again as before. Every step tolerates what a killed run did not get to."""
    source = source_engine(client, journal)
    target = engines.get(target_spec(client, journal["to"]))
    tenant = Tenant.for_client(client.id, source.capabilities.shared)
    ttenant = Tenant.for_client(client.id, target.capabilities.shared)
    if _reachable(target):
        dst = target.admin_connect()
        try:
            with dst.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_catalog.pg_subscription WHERE subname = %s", (_slot(client.id),))
                if cur.fetchone() is not None and journal.get("target_created"):
                    sub = target.admin_connect(ttenant.database)
                    try:  # the slot on the source is dropped below, so the subscription forgets it
                        for statement in ("ALTER SUBSCRIPTION {} DISABLE", "ALTER SUBSCRIPTION {} SET (slot_name = NONE)",
                                          "DROP SUBSCRIPTION {}"):
                            sub.cursor().execute(sql.SQL(statement).format(sql.Identifier(_slot(client.id))))
                    finally:
                        sub.close()
                if journal.get("target_created"):
                    terminate(cur, ttenant.role)
                    cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(ttenant.database)))
                    cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(f"{ttenant.role}.reader")))
                    cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ttenant.role)))
                    report.add(f"target {ttenant.database}", CHANGE, f"dropped from {target.label}")
        finally:
            dst.close()
    if journal.get("target_server_new") and target.capabilities.remove and not target.capabilities.shared:
        target.remove_server()
        report.add("target server", CHANGE, "the dedicated server made for the move removed")
    src = source.admin_connect(tenant.database)
    try:
        with src.cursor() as cur:
            cur.execute("SET lock_timeout = '10s'")
            for oid, ident in journal.get("replica_identity", {}).items():
                cur.execute("SELECT pg_catalog.format('%%s', c.oid::pg_catalog.regclass) FROM pg_catalog.pg_class c "
                            "WHERE c.oid OPERATOR(pg_catalog.=) %s", (int(oid),))
                found = cur.fetchone()
                if found:
                    cur.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY {}").format(
                        sql.SQL(found[0]), sql.SQL("NOTHING" if ident == "n" else "DEFAULT")))
        _drop_source_machinery(src, tenant.role, client.id)
        with src.cursor() as cur:
            cur.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(tenant.role)))
    finally:
        src.close()
    report.add("source", CHANGE, f"{tenant.database} on {source.label} takes writes again")
    journal_path(client.spec).unlink(missing_ok=True)
    (client.spec.paths.component_dir / "move-schema.dump").unlink(missing_ok=True)
    log.event(f"move to {journal.get('to')} rolled back")


def finish(client: Client, yes: bool) -> Moved:
    """Remove the old copy a switched move kept: now with YES=true, else once KEEP_DAYS have passed."""
    with operation(client.spec, "move-finish"):
        journal = read_journal(client.spec)
        if journal.get("phase") != "kept":
            raise UserError(unfinished(client.spec) or f"Client {client.id} has no old copy from a move: nothing to remove.")
        age = time.time() - calendar.timegm(time.strptime(journal["switched"], "%Y-%m-%dT%H:%M:%SZ"))
        if not yes and age < KEEP_DAYS * 86400:
            raise UserError(f"Client {client.id}'s old copy is kept until {KEEP_DAYS} days after the switch "
                            f"({journal['switched']}): add YES=true to remove it now.")
        source = source_engine(client, journal)
        tenant = Tenant.for_client(client.id, source.capabilities.shared)
        report = Report()
        if source.capabilities.remove and not source.capabilities.shared:
            source.remove_server()  # a dedicated server held this client only
            report.add("old server", CHANGE, f"{source.where()} removed with the old copy")
        else:
            admin = source.admin_connect()
            try:
                lock(admin)
                with admin.cursor() as cur:
                    terminate(cur, tenant.role)
                    cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(tenant.database)))
                    cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(f"{tenant.role}.reader")))
                    cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(tenant.role)))
            finally:
                admin.close()
            report.add("old copy", CHANGE, f"{tenant.database} dropped from {source.label}")
        journal_path(client.spec).unlink()
        log.event(f"old copy on {journal['source_server']} removed")
        return Moved(client.id, where(journal["source_engine"], journal["source_server"]),
                     where(journal["target_engine"], journal["target_server"]), "finished", report=report)


# -- helpers ----------------------------------------------------------------------------------------------------
def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _slot(client_id: str) -> str:
    return f"{NAME}_{client_id.replace('-', '_')}"


def _conn_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _reachable(engine: Engine) -> bool:
    try:
        engine.admin_connect().close()
        return True
    except Exception:  # noqa: BLE001 - not there, not running: the caller decides what that means
        return False


def _server_version_num(engine: Engine) -> int:
    conn = engine.admin_connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_catalog.current_setting('server_version_num')::int")
            return cur.fetchone()[0]
    finally:
        conn.close()


def _subscribed(dst, name: str) -> bool:
    with dst.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_catalog.pg_subscription WHERE subname = %s", (name,))
        return cur.fetchone() is not None


def _end_sessions(cur, role: str) -> None:
    """Every session of `role` ended, and waited for: a commit a dying session made is in the WAL read next."""
    deadline = time.monotonic() + 10
    while True:
        cur.execute("SELECT pg_catalog.count(pg_catalog.pg_terminate_backend(pid, 5000)) "
                    "FROM pg_catalog.pg_stat_activity WHERE usename = %s", (role,))
        cur.execute("SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity WHERE usename = %s", (role,))
        if not cur.fetchone()[0]:
            return
        if time.monotonic() > deadline:
            raise UserError(f"Sessions of {role} did not end within 10 s: re-run make pgvector-move to go on.")
        time.sleep(0.05)


def _copy_sequences(src, dst) -> None:
    with src.cursor() as cur:
        cur.execute("SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                    "ON n.oid OPERATOR(pg_catalog.=) c.relnamespace WHERE c.relkind = 'S' "
                    "AND n.nspname OPERATOR(pg_catalog.<>) ALL (ARRAY['pg_catalog', 'information_schema'])")
        values = []
        for schema, name in cur.fetchall():
            cur.execute(sql.SQL("SELECT last_value, is_called FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
            values.append((schema, name, *cur.fetchone()))
    with dst.cursor() as cur:
        for schema, name, last, called in values:
            cur.execute("SELECT pg_catalog.setval(%s::pg_catalog.regclass, %s, %s)",
                        (sql.Identifier(schema, name).as_string(dst), last, called))


def _drop_source_machinery(src, role: str, client_id: str) -> None:
    """The publication, the slot (when the subscription could not drop it) and the move's login, on the source."""
    with src.cursor() as cur:
        cur.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(NAME)))
        deadline = time.monotonic() + 10
        while True:  # a walsender of a disabled subscription can hold the slot a moment longer
            cur.execute("SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = %s", (_slot(client_id),))
            found = cur.fetchone()
            if found is None:
                break
            if found[0] is None:
                cur.execute("SELECT pg_catalog.pg_drop_replication_slot(%s)", (_slot(client_id),))
                break
            if time.monotonic() > deadline:
                raise UserError(f"The move's replication slot {_slot(client_id)} stays in use on the source: re-run "
                                "to finish undoing the move.")
            cur.execute("SELECT pg_catalog.pg_terminate_backend(%s)", (found[0],))
            time.sleep(0.1)
        terminate(cur, f"{role}.mover")
        cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(f"{role}.mover")))

