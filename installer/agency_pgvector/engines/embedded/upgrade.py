"""Moving an embedded server to other binaries (make pgvector-upgrade): a newer minor of its major, or a newer major.

Minor: the new runtime is copied and probed (a throwaway server of it starts and loads vector.so) while the server
still runs; then stop, record the new runtime, start on it, check it reports the new version. A server that does not
come up on it is started on the old one again (rolled back) and the run fails with the new log's last line.

Major: pg_upgrade --link. The caller took a backup of every database on the server first. The new cluster is
initdb'd beside the old one (data.upgrade, same locale and checksum setting), the server stopped, `pg_upgrade --check`
then `pg_upgrade --link` run as the server's user with a trust hba over a 0700 socket directory only that user can
reach; the directories are swapped (data -> data.pg<old>, data.upgrade -> data), the new runtime recorded and the
server started on it. --link makes the upgrade take seconds whatever the data's size and needs no second copy of
the data; the price is that once the new server has started, the old cluster can no longer be started (its files
are the new one's). Until then everything can be undone: rollback() removes the new cluster, gives the old one its
pg_control back and starts it on the old runtime. After that point the way back is the backup.

Every step is written to <config dir>/upgrade.json before it runs. A run killed anywhere leaves that journal, and
the next `make pgvector-upgrade` finishes the upgrade (after pg_upgrade completed) or rolls it back and starts
again (before); `make pgvector` refuses to touch a server with a journal.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ... import log, sessions
from ...errors import UserError
from ...system import own_dir, processes, run, write_group_file
from ...text import first_line
from . import runtime
from .runtime import Runtime


@dataclass(frozen=True)
class Move:
    kind: str  # "minor" or "major"
    old: Runtime
    new: Runtime


def target(engine, major: str | None) -> Move | None:
    """What `make pgvector-upgrade [PG_MAJOR=..]` would do to this server; None when it runs the newest already."""
    current = engine.server_runtime()
    wanted = major or current.major
    if int(wanted) < int(current.major):
        raise UserError(f"The server of {engine.layout.key} runs PostgreSQL {current.major}: PG_MAJOR={wanted} would "
                        "be a downgrade, which pg_upgrade cannot do; restore a backup into a new server instead.")
    new = runtime.newest(wanted)
    if wanted != current.major:
        return Move("major", current, new)
    return Move("minor", current, new) if runtime.is_newer(new, current) else None


def journal(engine) -> dict | None:
    path = engine.layout.upgrade_journal
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_journal(engine, move: Move, step: str, **extra: str) -> None:
    path = engine.layout.upgrade_journal
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"kind": move.kind, "from": move.old.key, "to": move.new.key, "step": step, **extra}) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    log.event(f"server upgrade ({move.kind}) {move.old.key} -> {move.new.key}: {step}")


def _move_from_journal(data: dict) -> Move | None:
    old, new = runtime.by_key(str(data.get("from"))), runtime.by_key(str(data.get("to")))
    if old is None or new is None or data.get("kind") not in ("minor", "major"):
        return None
    return Move(data["kind"], old, new)


# -- the new binaries are checked before the server is touched ------------------------------------------------------
# Objects pg_upgrade recreates as the superuser whose definition calls a function or operator a non-superuser owns:
# creating them folds an IMMUTABLE call with constant arguments (a partition key, a CHECK, a default), so the
# tenant's code would run as the superuser. Indexes are not among them: CREATE INDEX evaluates its expressions as
# the table's owner (tests/test_upgrade.py has a tenant's witness say so). Catalogs only: nothing here plans a
# tenant's query.
TENANT_CODE_IN_DDL = """
SELECT pg_catalog.format('%s (%s)', pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid),
                         pg_catalog.pg_describe_object(d.refclassid, d.refobjid, 0))
FROM pg_catalog.pg_depend d
LEFT JOIN pg_catalog.pg_proc p ON d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
     AND p.oid OPERATOR(pg_catalog.=) d.refobjid
LEFT JOIN pg_catalog.pg_operator o ON d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_operator'::pg_catalog.regclass
     AND o.oid OPERATOR(pg_catalog.=) d.refobjid
JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) COALESCE(p.proowner, o.oprowner)
LEFT JOIN pg_catalog.pg_class c ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
     AND c.oid OPERATOR(pg_catalog.=) d.objid
WHERE NOT r.rolsuper AND d.deptype OPERATOR(pg_catalog.=) 'n'
  AND (c.relkind IS NULL OR c.relkind OPERATOR(pg_catalog.<>) ALL (ARRAY['i', 'I']::"char"[]))
  AND d.classid OPERATOR(pg_catalog.=) ANY (ARRAY['pg_catalog.pg_constraint', 'pg_catalog.pg_attrdef',
      'pg_catalog.pg_class', 'pg_catalog.pg_type', 'pg_catalog.pg_statistic_ext']::pg_catalog.regclass[])
LIMIT 3"""


def tenant_code_in_ddl(engine) -> None:
    """Refuse a major upgrade whose pg_upgrade would run a tenant's code as the superuser (TENANT_CODE_IN_DDL)."""
    admin = engine.admin_connect()
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT datname FROM pg_catalog.pg_database WHERE datallowconn ORDER BY 1")
            names = [name for (name,) in cur.fetchall()]
    finally:
        admin.close()
    for name in names:
        conn = engine.admin_connect(name)
        try:
            with conn.cursor() as cur:
                cur.execute(TENANT_CODE_IN_DDL)
                found = [row[0] for row in cur.fetchall()]
        finally:
            conn.close()
        if found:
            raise UserError(f"Database {name} has objects whose definition calls its owner's own code ({'; '.join(found)}): "
                            "pg_upgrade recreates them as the superuser and would run that code with a superuser's "
                            "rights, so the major upgrade is refused and nothing was changed. Move the client to a "
                            "server of the new major instead (make pgvector-move TO=...), or drop those objects first.")


def probe(engine, rt: Runtime) -> None:
    """A throwaway server of `rt` starts, as the server's user, and CREATE EXTENSION vector works in it."""
    import psycopg2

    state_dir = engine.paths.state_dir
    runtime.install(rt, state_dir, engine.paths.root)
    prefix = rt.bin_dir(state_dir).parent
    wanted = {"postgres": ["bin/postgres"], "pg_ctl": ["bin/pg_ctl"], "initdb": ["bin/initdb"],
              "pg_upgrade": ["bin/pg_upgrade"], "vector.so": ["lib/postgresql/vector.so", "lib/vector.so"],
              "vector.control": ["share/postgresql/extension/vector.control", "share/extension/vector.control"]}
    missing = [name for name, places in wanted.items() if not any((prefix / place).exists() for place in places)]
    if missing:
        raise UserError(f"The runtime {rt.label} in {rt.directory(state_dir)} is incomplete ({', '.join(missing)} "
                        "missing): nothing was changed; reinstall the installer's environment (make pgvector), then re-run.")
    user = engine._user()
    scratch = _work_dir(engine, "probe")
    try:
        data = scratch / "data"
        bins = rt.bin_dir(state_dir)
        result = run([str(bins / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8",
                      "--auth=trust", "--no-instructions"], user, check=False)
        started = result.returncode == 0 and run(
            [str(bins / "pg_ctl"), "-D", str(data), "-w", "-t", "30", "-s", "-l", str(scratch / "log"), "-o",
             f"-c listen_addresses='' -c unix_socket_directories={scratch} -c port=5432", "start"],
            user, check=False).returncode == 0
        try:
            if not started:
                raise UserError(f"The runtime {rt.label} does not start a server here ({_said(scratch, result)}): "
                                "nothing was changed.")
            try:
                distance, version = sessions.probe(scratch)
            except psycopg2.Error as exc:
                raise UserError(f"pgvector does not load in the runtime {rt.label} ({first_line(exc)}): nothing was "
                                "changed.") from None
            if distance != "1":
                raise UserError(f"pgvector in the runtime {rt.label} computes a wrong distance ({distance[:20]}): "
                                "nothing was changed.")
            if version != rt.pgvector:
                raise UserError(f"The runtime {rt.label} has pgvector {version}: nothing was changed.")
        finally:
            if started:
                run([str(bins / "pg_ctl"), "-D", str(data), "-m", "immediate", "-s", "stop"], user, check=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _said(scratch: Path, result) -> str:
    """The throwaway server's last log line (read without following links: its user writes that file), else initdb's."""
    from ...ops.logs import tail

    lines = tail(scratch / "log", scratch, 1) or (result.stderr or result.stdout or "").strip().splitlines()[-1:]
    return first_line(lines[0]) if lines else "no output"


def _work_dir(engine, name: str) -> Path:
    """A fresh 0700 directory of the server's user for sockets and scratch files, in a root-owned parent: root never
    creates or writes anything inside a directory that user owns (layout.py), so nothing the user plants there can
    turn a write of root's into one somewhere else."""
    user = engine._user()
    parent = engine.paths.state_dir / "upgrade"
    own_dir(parent, 0o711, 0, 0)
    work = parent / f"{engine.layout.key}-{name}"
    shutil.rmtree(work, ignore_errors=True)
    own_dir(work, 0o700, user.pw_uid, user.pw_gid)
    return work


def _as_server_user(engine, *argv: str) -> None:
    """mv/rm inside the server's own directory run as its user, never as root (layout.py)."""
    run(list(argv), engine._user())


# -- minor ---------------------------------------------------------------------------------------------------------
def switch(engine, move: Move) -> None:
    """Stop, record the new runtime, start on it; started on the old one again if the new one does not come up."""
    _write_journal(engine, move, "switching")
    _stop(engine)
    try:
        _start_on(engine, move.new)
    except UserError as exc:
        _stop(engine)
        _start_on(engine, move.old)
        engine.layout.upgrade_journal.unlink(missing_ok=True)
        raise UserError(f"The server of {engine.layout.key} did not start on {move.new.label}, so it runs on "
                        f"{move.old.label} again: {exc}") from None
    engine.layout.upgrade_journal.unlink(missing_ok=True)


def _start_on(engine, rt: Runtime) -> None:
    engine.record_runtime(rt)
    engine.refresh_unit()
    engine._start()
    version = engine.server_version()
    if version != rt.postgres:
        raise UserError(f"it reports PostgreSQL {version}, not {rt.postgres}")


def _stop(engine) -> None:
    """Stop whatever runs on the data directory (pg_ctl of any version reads the pid file alike)."""
    user = engine._user()
    for rt in runtime.CATALOG:
        bins = rt.bin_dir(engine.paths.state_dir)
        if (bins / "pg_ctl").exists() and (engine.data_dir / "postmaster.pid").exists():
            run([str(bins / "pg_ctl"), "-D", str(engine.data_dir), "-m", "fast", "-w", "-t", "60", "-s", "stop"], user,
                check=False)
            return


# -- major ---------------------------------------------------------------------------------------------------------
def staging(engine) -> Path:
    return engine.data_dir.with_name("data.upgrade")


def old_copy(engine, move: Move) -> Path:
    return engine.data_dir.with_name(f"data.pg{move.old.major}")


def major(engine, move: Move, resume_at: str = "prepare", checkpoint: str = "") -> None:
    """pg_upgrade --link from move.old to move.new, resumable at each journal step. `checkpoint`: the new cluster's
    last checkpoint right after pg_upgrade: while it is unchanged the new server never ran, and the old cluster can
    still be put back."""
    steps = ("prepare", "upgraded", "swapped", "started")
    at = steps.index(resume_at)
    if at == 0:
        _write_journal(engine, move, "prepare")
        _prepare(engine, move)
        _stop(engine)
        try:
            _pg_upgrade(engine, move, check=True)
            _pg_upgrade(engine, move, check=False)
        except UserError:
            rollback(engine, move)
            raise
        checkpoint = _checkpoint(engine, move.new, staging(engine))
        _write_journal(engine, move, "upgraded", checkpoint=checkpoint)
    if at <= 1:
        _swap(engine, move)
        _write_journal(engine, move, "swapped", checkpoint=checkpoint)
    if at <= 2:
        _start_new(engine, move, checkpoint)
        _write_journal(engine, move, "started")  # the point of no return: the old cluster's files are the new one's
    if not _runs(engine, move.new):
        _start_on(engine, move.new)
    _analyze(engine, move.new)
    _as_server_user(engine, "rm", "-rf", "--", str(old_copy(engine, move)))
    engine.layout.upgrade_journal.unlink(missing_ok=True)


def _start_new(engine, move: Move, checkpoint: str) -> None:
    """Start the upgraded server; if it does not come up and never ran (its checkpoint is the one pg_upgrade left),
    roll back. One that ran, even briefly, has written to files the old cluster shares: no rollback then."""
    if _runs(engine, move.new):  # a killed run had started it already
        return
    try:
        _start_on(engine, move.new)
    except UserError as exc:
        _stop(engine)
        if checkpoint and _checkpoint(engine, move.new, engine.data_dir) == checkpoint:
            rollback(engine, move)
            raise UserError(f"The upgraded server of {engine.layout.key} did not start on {move.new.label}, so the "
                            f"upgrade was rolled back and it runs {move.old.label} again: {exc}") from None
        raise UserError(f"The upgraded server of {engine.layout.key} did not start on {move.new.label} ({exc}) after it "
                        "had run, so the old cluster cannot be put back (pg_upgrade --link shares its files): fix the "
                        "cause in the server's log and re-run make pgvector-upgrade, or restore the backup taken "
                        "before the upgrade into a new client.") from None


def _runs(engine, rt: Runtime) -> bool:
    """The server answers and reports `rt`'s version."""
    try:
        return engine.server_version() == rt.postgres
    except Exception:  # noqa: BLE001 - not running, not answering: the same here
        return False


def _checkpoint(engine, rt: Runtime, data_dir: Path) -> str:
    control = run([str(rt.bin_dir(engine.paths.state_dir) / "pg_controldata"), "-D", str(data_dir)], engine._user(),
                  check=False).stdout
    found = re.search(r"^Latest checkpoint location:\s+(\S+)$", control, re.M)
    return found.group(1) if found else ""


def _prepare(engine, move: Move) -> None:
    """The new cluster, initdb'd beside the old one with the settings pg_upgrade requires to match."""
    user = engine._user()
    new_dir = staging(engine)
    _as_server_user(engine, "rm", "-rf", "--", str(new_dir))
    control = run([str(move.old.bin_dir(engine.paths.state_dir) / "pg_controldata"), "-D", str(engine.data_dir)], user)
    checksums = re.search(r"^Data page checksum version:\s+0$", control.stdout, re.M) is None
    run([str(move.new.bin_dir(engine.paths.state_dir) / "initdb"), "-D", str(new_dir), "-U", "postgres", "-E", "UTF8",
         "--locale=C.UTF-8", "--auth-local=peer", "--auth-host=scram-sha-256", "--no-instructions",
         "--data-checksums" if checksums else "--no-data-checksums"], user)


def _pg_upgrade(engine, move: Move, check: bool) -> None:
    user = engine._user()
    state_dir = engine.paths.state_dir
    work = _work_dir(engine, "pg_upgrade")
    # pg_upgrade logs in as postgres over a socket in `work`, which only the server's user can reach: trust there is
    # trust for that user alone. The file is root's, in the root-owned config directory, for the server's group.
    hba = engine.layout.config_dir / "pg_hba.upgrade.conf"
    write_group_file(hba, "local all postgres trust\n", user.pw_gid)
    options = f"-c hba_file={hba}"
    argv = [str(move.new.bin_dir(state_dir) / "pg_upgrade"), "-b", str(move.old.bin_dir(state_dir)),
            "-B", str(move.new.bin_dir(state_dir)), "-d", str(engine.data_dir), "-D", str(staging(engine)),
            "-U", "postgres", "--socketdir", str(work), "-p", "50432", "-P", "50433", "-o", options, "-O", options,
            "-j", str(max(1, os.cpu_count() or 1)), "--link"]
    from ...sessions import OPERATOR, options as pinned

    # Its sessions (and those of the pg_dump and pg_restore it runs) get the operator's pinned options, which outrank
    # a tenant's ALTER DATABASE ... SET: a 1 ms statement_timeout or a read-only default cannot stop the upgrade.
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PGOPTIONS": pinned(OPERATOR)}
    result = run(argv + (["--check"] if check else []), user, check=False, cwd=str(work), env=env)
    if result.returncode != 0:
        said = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()][-3:]
        raise UserError(f"pg_upgrade {'--check ' if check else ''}refused the upgrade of {engine.layout.key} from "
                        f"{move.old.label} to {move.new.label} ({' / '.join(first_line(x) for x in said) or 'no output'}): "
                        "the server runs on its old runtime as before.")
    shutil.rmtree(work, ignore_errors=True)
    hba.unlink(missing_ok=True)


def _swap(engine, move: Move) -> None:
    """data -> data.pg<old>, data.upgrade -> data; a run killed between the renames is finished by the next."""
    old, new = old_copy(engine, move), staging(engine)
    if new.exists() and engine.data_dir.exists() and not old.exists():
        _as_server_user(engine, "mv", "-T", "--", str(engine.data_dir), str(old))
    if new.exists() and not engine.data_dir.exists():
        _as_server_user(engine, "mv", "-T", "--", str(new), str(engine.data_dir))


def rollback(engine, move: Move) -> None:
    """Before the new server ever started: the new cluster goes, the old one gets its pg_control back and runs on
    its old runtime again."""
    old, new = old_copy(engine, move), staging(engine)
    if old.exists():  # swapped already: the new cluster is in data/
        _as_server_user(engine, "rm", "-rf", "--", str(engine.data_dir))
        _as_server_user(engine, "mv", "-T", "--", str(old), str(engine.data_dir))
    _as_server_user(engine, "rm", "-rf", "--", str(new))
    control = engine.data_dir / "global" / "pg_control"
    if control.with_name("pg_control.old").exists() and not control.exists():
        _as_server_user(engine, "mv", "-T", "--", str(control.with_name("pg_control.old")), str(control))
    (engine.layout.config_dir / "pg_hba.upgrade.conf").unlink(missing_ok=True)
    _start_on(engine, move.old)
    engine.layout.upgrade_journal.unlink(missing_ok=True)


def _analyze(engine, rt: Runtime) -> None:
    """pg_upgrade carries the planner statistics over from 18 on; what it cannot (extended statistics, and all of
    them from older majors) is rebuilt in stages, so plans are usable within seconds."""
    from ...sessions import OPERATOR, tool_env

    bins = rt.bin_dir(engine.paths.state_dir)
    argv = [str(bins / "vacuumdb"), "--all", "--analyze-in-stages"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           **tool_env(engine.admin_params(), OPERATOR)}  # a tenant's ALTER DATABASE ... SET cannot steer it
    if int(rt.major) >= 18:
        argv.append("--missing-stats-only")
    run(argv, None, env=env)


# -- a run killed half-way ----------------------------------------------------------------------------------------
def _pg_upgrade_running(engine) -> int | None:
    """A pg_upgrade of this server that outlived the run that started it (only that run was killed)."""
    needle = str(engine.data_dir).encode()
    return next((pid for pid, argv in processes() if argv[0].endswith(b"/pg_upgrade") and needle in argv), None)


def resume(engine) -> Move | None:
    """Finish or roll back what a killed run left (its journal); returns the move it was, None without a journal."""
    data = journal(engine)
    if data is None:
        return None
    move = _move_from_journal(data)
    if move is None:
        raise UserError(f"{engine.layout.upgrade_journal} is not an upgrade journal this release reads: check the "
                        "server's data directories by hand before removing it.")
    step = data.get("step")
    if move.kind == "minor":
        _stop(engine)
        try:
            _start_on(engine, move.new)
        except UserError:
            _stop(engine)
            _start_on(engine, move.old)
        engine.layout.upgrade_journal.unlink(missing_ok=True)
    elif step == "prepare":
        running = _pg_upgrade_running(engine)
        if running:
            raise UserError(f"pg_upgrade still runs for the server of {engine.layout.key} (pid {running}): wait for it "
                            "to end (or stop it), then re-run make pgvector-upgrade.")
        _stop(engine)
        rollback(engine, move)
    elif step in ("upgraded", "swapped", "started"):
        major(engine, move, resume_at=step, checkpoint=str(data.get("checkpoint") or ""))
    else:
        raise UserError(f"{engine.layout.upgrade_journal} names an unknown step {str(step)[:20]!r}: check the server's "
                        "data directories by hand before removing it.")
    return move
