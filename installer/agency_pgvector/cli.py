"""The command line: parse, call, render. One command per make target; the work lives in install.py and ops/,
which return typed results: --json prints their to_json() (docs/json.md). Exit codes: errors.py (docs/operator.md)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from typer import TyperException  # typer carries its own copy of click: every command-line error derives from this

from .errors import INTERNAL, INTERRUPTED, UNHEALTHY, USAGE, InputError, UserError

if TYPE_CHECKING:
    from .ops.status import ClientStatus

app = typer.Typer(
    name="agency-pgvector",
    help="Provision and operate PostgreSQL + pgvector tenants for AgencyStack clients.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: importing rich's markdown renderer alone costs more than the whole --help budget
)



def _client_given(ctx: typer.Context, param: typer.CallbackParam, value: str) -> str:
    """Say so on stderr when the client is `default` only because CLIENT_ID was not given (forgotten, or a typo such
    as CLIENTID=acme): the command would otherwise act on client default without a word."""
    from typer._click.core import ParameterSource

    if ctx.resilient_parsing or ctx.get_parameter_source(param.name or "") is not ParameterSource.DEFAULT:
        return value
    if not any(_flag(ctx, name) for name in ("everyone", "quiet", "target_client")):  # ALL, QUIET, TARGET_CLIENT
        print(f"warning: no CLIENT_ID given: acting on client {value}", file=sys.stderr)
    return value


def _flag(ctx: typer.Context, name: str) -> bool:
    """Whether the command's parameter `name` is set (on the command line or in its variable), before it is parsed."""
    param = next((p for p in ctx.command.params if p.name == name), None)
    if param is None:
        return False
    raw = ctx.params[name] if name in ctx.params else param.consume_value(ctx, {})[0]
    try:
        return bool(param.type_cast_value(ctx, raw))
    except TyperException:  # a bad value: the command's own parsing says so
        return False


PROG = "agency-pgvector"
COMPLETE_VAR = "_AGENCY_PGVECTOR_COMPLETE"  # typer's protocol: the completion script runs the CLI with it set


ClientOpt = typer.Option("default", "--client-id", envvar="CLIENT_ID", callback=_client_given,
                         help="Client (tenant) id: 1-32 of a-z 0-9 -.")
AllOpt = typer.Option(False, "--all", envvar="ALL", help="Every client installed under AGENCY_STACK_ROOT.")
JsonOpt = typer.Option(False, "--json", envvar="JSON", help="Print stable JSON instead of a table (docs/json.md).")
QuietOpt = typer.Option(False, "--quiet", "-q", envvar="QUIET", help="Print nothing but errors (for cron).")
YesOpt = typer.Option(False, "--yes", envvar="YES", help="Do not ask for confirmation.")


def _print_json(document: dict) -> None:
    print(json.dumps(document, indent=2, sort_keys=True))


@app.callback()
def _group() -> None:
    """Provision and operate PostgreSQL + pgvector tenants for AgencyStack clients (one command per make target)."""
    _refuse_unknown_make_variables()


def _refuse_unknown_make_variables() -> None:
    """make names what its command line gave that no target reads (AGENCY_MAKE_UNKNOWN; AGENCY_MAKE_VARS is its
    VARS): a typo there would silently act on something else, e.g. CLIENTID=acme on client default."""
    import difflib

    unknown = os.environ.get("AGENCY_MAKE_UNKNOWN", "").split()
    if not unknown:
        return
    known = os.environ.get("AGENCY_MAKE_VARS", "").split()

    def hint(name: str) -> str:
        close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
        return f"{name} (did you mean {close[0]}?)" if close else name

    raise InputError(f"make was given {', '.join(hint(n) for n in unknown)}, which no target reads: nothing was done. "
                     "Fix the name (make help lists the variables), or pass a value meant for something else in the "
                     "environment.")


@app.command("install")
def install_cmd(
    domain: str = typer.Option("", "--domain", envvar="DOMAIN", help="The client's domain (RFC 1123 host name). Required."),
    admin_email: str = typer.Option("", "--admin-email", envvar="ADMIN_EMAIL", help="Operator e-mail for the client. Required."),
    client_id: str = ClientOpt,
    engine: str = typer.Option("auto", "--engine", envvar="ENGINE", help="auto | embedded | external | docker | patroni."),
    cluster: str = typer.Option("", "--cluster", envvar="CLUSTER",
                                help="ENGINE=patroni: the cluster (make pgvector-cluster CLUSTER=... creates it)."),
    admin_url: str | None = typer.Option(None, "--admin-url", envvar="ADMIN_URL", show_default=False,
                                         help="Superuser URL of an existing server (ENGINE=external). "
                                              "Prefer the env var: argv is visible to every user."),
    server: str = typer.Option("", "--server", envvar="SERVER",
                               help="dedicated (one server per client), shared (one server, many clients), a cluster's "
                                    "name, or auto (the least loaded with room: make pgvector-servers)."),
    port: str | None = typer.Option(None, "--port", envvar="PORT",
                                    help="Host port for a new server (default: first free from 5433)."),
    with_deps: bool = typer.Option(False, "--with-deps", envvar="WITH_DEPS",
                                   help="Create the server (and its system user) when absent."),
    force: bool = typer.Option(False, "--force", envvar="FORCE", help="Set a new password (old sessions end) and repair drift."),
    enable_cloud: bool = typer.Option(False, "--enable-cloud", envvar="ENABLE_CLOUD",
                                      help="Listen on all interfaces; remote logins over TLS only."),
    dry_run: bool = typer.Option(False, "--dry-run", envvar="DRY_RUN", help="Show the plan; change nothing."),
    verbose: bool = typer.Option(False, "--verbose", "-v", envvar="VERBOSE", help="Show details for every item."),
    everyone: bool = typer.Option(False, "--all", envvar="ALL",
                                  help="Converge every installed client as recorded in "
                                       "its .env (after an upgrade of the installer)."),
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Install or converge a client's pgvector tenant (make pgvector)."""
    from . import spec as specs
    from .install import install

    if everyone:
        return _install_all(force, dry_run, with_deps, as_json, quiet)
    from .ops.common import read_suspended

    record = read_suspended(specs.Paths(specs.root_from_env(), specs.client_id(client_id)))
    if record:  # resuming a suspended client: as recorded, unless given now
        domain, admin_email = domain or record.get("DOMAIN", ""), admin_email or record.get("ADMIN_EMAIL", "")
        enable_cloud = enable_cloud or "PGVECTOR_TLS_SHA256" in record
    spec = specs.build(client_id, domain, admin_email, engine_=engine, server_=server, cluster_=cluster,
                       admin_url_=admin_url, port_=port, with_deps=with_deps, force=force, enable_cloud=enable_cloud,
                       dry_run=dry_run)
    result = install(spec)
    report = result.report
    if as_json:
        rows = [dict(item=r.item, status=report.status(r), detail=r.detail, **({"statements": r.statements} if verbose else {}))
                for r in report.rows]
        print(json.dumps(dict(client_id=spec.client_id, engine=result.engine, dry_run=dry_run, changed=report.changed,
                              env_file=str(spec.paths.env_file), items=rows), indent=2))
        return
    if quiet:
        return
    from .ui import report_table

    report_table(report, f"pgvector for client {spec.client_id} ({result.engine})", verbose or dry_run)
    if dry_run:
        print("Dry run: nothing was changed.")
    elif report.changed:
        print(f"Done. Connection details: {spec.paths.env_file}")
    else:
        print(f"No changes: client {spec.client_id} is already as provisioned.")


def _install_all(force: bool, dry_run: bool, with_deps: bool, as_json: bool, quiet: bool) -> None:
    """Failed clients are an operator's to fix (exit 3), named on stderr whatever JSON and QUIET say."""
    from .install import install_all

    if force:
        raise UserError("FORCE=true with ALL=true would set a new password for every client: "
                        "rotate them one by one (make pgvector-rotate CLIENT_ID=...).")
    from .spec import PoolSettings

    if PoolSettings.from_env() != PoolSettings():
        raise InputError("POOL_MODE, POOL_SIZE and POOL_MAX_CONNECTIONS set one client's pool: drop them with ALL=true "
                        "(each client keeps its recorded settings), or run make pgvector CLIENT_ID=... with them.")
    outcomes = install_all(dry_run=dry_run, with_deps=with_deps)
    from .ops.common import suspended_clients

    suspended = suspended_clients()  # kept as they are: nobody can log in until make pgvector CLIENT_ID=... resumes one
    if not outcomes and not suspended:
        raise UserError("No client is installed under AGENCY_STACK_ROOT: run make pgvector CLIENT_ID=... first.")
    failed = [(client, error) for client, result, error in outcomes if result is None]
    state = lambda r: "failed" if r is None else (  # noqa: E731
        "would change" if dry_run and r.report.changed else "changed" if r.report.changed else "ok")
    if as_json:
        print(json.dumps({"ok": not failed, "dry_run": dry_run, "clients": [
            {"client_id": c, "result": state(r), "engine": r.engine if r else None, "error": e or None,
             "changed": [row.item for row in r.report.rows if row.action != "ok"] if r else []} for c, r, e in outcomes],
                          "suspended": suspended}, indent=2))
    elif not quiet:
        from .ui import rows_table

        rows_table("pgvector: every client", ["client", "engine", "result", "detail"],
                   [[c, r.engine if r else "-", state(r),
                     e or ", ".join(row.item for row in (r.report.rows if r else []) if row.action != "ok") or "-"]
                    for c, r, e in outcomes])
        if suspended:
            print(f"Suspended, left as they are (make pgvector CLIENT_ID=<id> resumes one): {', '.join(suspended)}")
    if failed:
        raise UserError(f"{len(failed)} of {len(outcomes)} clients could not be converged:\n"
                        + "\n".join(f"  {client}: {' '.join(error.split())}" for client, error in failed))


@app.command("status")
def status_cmd(client_id: str = ClientOpt, everyone: bool = AllOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt) -> None:
    """Is the client healthy? Exit 0 healthy, 1 not (make pgvector-status)."""
    from .ops.status import status

    result = status(client_id, everyone)
    if as_json:
        _print_json(result.to_json())
    elif not quiet:
        _print_status(result.clients, everyone)
    if not result.healthy:
        _unhealthy_to_stderr(result.clients)
    raise typer.Exit(0 if result.healthy else UNHEALTHY)


def _say(text: str, indent: str = "") -> None:
    """A line of the CLI's own on stdout, wrapped between words to the terminal's width (COLUMNS): a path or an
    address is never broken, a word longer than the width stays whole on its line."""
    import shutil
    import textwrap

    from .text import clean

    width = shutil.get_terminal_size().columns
    print(textwrap.fill(clean(text), width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False))


def _size(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024:
            return f"{value:.0f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def _print_status(results: list[ClientStatus], everyone: bool) -> None:
    """Every value shown is plain text (ui.styled): names and texts from the server are never markup. What could not
    be read (the server down, the tenant's login refused) shows as "unknown", never as a false fact."""
    from .text import clean as c
    from .ui import joined, key_values, long_values, rows_table, styled

    def health(r: ClientStatus):
        return styled("healthy", "green") if r.healthy else styled("UNHEALTHY", "red")

    def known(value, text: str | None = None) -> str:
        return "unknown" if value is None else c(text if text is not None else value)

    if everyone:  # 80 columns: two-line cells for engine and versions, the problems under the table
        down = _shared_down(results)
        rows = [[c(r.client_id), health(r),
                 f"{known(r.engine)}\n{known(r.shared, 'shared' if r.shared else 'dedicated')}",
                 f"{known(r.server.host)}:{known(r.server.port)}",
                 f"{known(r.server.postgres_version)}\n"
                 + known(r.pgvector.installed if r.server.reachable else None, r.pgvector.installed or "missing"),
                 _size(r.database.size_bytes)] for r in results]
        rows_table("pgvector clients", ["client", "health", "engine", "endpoint", "pg/vec", "size"], rows, wrap=0)
        if down:
            _say(f"shared server down ({', '.join(down)}): make pgvector-logs CLIENT_ID={down[0]}, "
                 f"then make pgvector-restart CLIENT_ID={down[0]}", "  ")
        for r in results:
            for problem in _problems(r, down):
                _say(f"{r.client_id}: {' '.join(problem.split())}", "  ")
        return
    r = results[0]
    vec, up = r.pgvector, r.server.reachable
    columns = [f"{c(col.table)}.{c(col.column)} {c(col.type)} "
               f"[{', '.join(c(i.method) for i in col.indexes) or 'no index'}]"
               for col in r.vector_columns]
    password = {True: styled("valid"), False: styled("INVALID", "red"), None: styled("unchecked")}[r.env_file.password_valid]
    pgvector = "unknown" if not up else c(vec.installed or "missing") + (
        f" ({c(vec.available)} available: make pgvector-upgrade)" if vec.update_available else "")
    connections = ("unknown" if r.role.connections is None else
                   f"{c(r.role.connections)} of {known(r.role.connection_limit)}") + f" ({known(r.role.name)})"
    fields = [
        ("health", health(r)),
        ("engine", f"{known(r.engine)}: {c(r.server.where) or 'unknown'}"
                   + ("" if r.engine is None else " (shared)" if r.server.shared else " (dedicated)")),
        ("server", joined([f"{known(r.server.host)}:{known(r.server.port)}",
                           styled("reachable") if up else styled("not reachable", "red")], " ")),
        ("postgres", known(r.server.postgres_version) + (
            f" (newer runtime: {c(r.server.newer_runtime)}: make pgvector-upgrade)" if r.server.newer_runtime else "")),
        ("pgvector", pgvector),
        ("database", f"{known(r.database.name)}, {_size(r.database.size_bytes)}"),
        ("connections", connections),
        ("pool", _pool_line(r)),
        (".env", joined([f"mode {known(r.env_file.mode)}, password", password], " ")),
        ("vector columns", joined(columns) if columns else "none yet" if r.database.size_bytes is not None else "unknown"),
        ("settings", ", ".join(f"{c(k)}={c(v)}" for k, v in r.settings.items()) or ("-" if up else "unknown")),
        ("drift", joined(r.drift) if r.drift else "none" if up else "unknown"),
        ("problems", joined([styled(c(p), "red") for p in r.problems]) if r.problems else "none"),
    ]
    key_values(f"pgvector status: client {c(r.client_id)}", fields)
    long_values([(".env", r.env_file.path)])


def _shared_down(results: list[ClientStatus]) -> list[str]:
    """The clients of a shared server that could not be reached (reported once, not once per client)."""
    down = [r.client_id for r in results if r.shared and not r.server.reachable and r.server.where]
    return down if len(down) > 1 else []


def _problems(r: ClientStatus, down: list[str]) -> list[str]:
    """A client's problems, less the server's being down when that is reported once for its shared server."""
    if r.client_id in down:
        return [p for p in r.problems if not p.startswith("server not reachable")]
    return r.problems


def _unhealthy_to_stderr(results: list[ClientStatus]) -> None:
    """For cron (QUIET=true, JSON=true): which clients are unhealthy and why, on stderr."""
    bad = [r for r in results if not r.healthy]
    down = _shared_down(results)
    lines = [f"  shared server down ({', '.join(down)})"] if down else []
    lines += [f"  {r.client_id}: {'; '.join(' '.join(p.split()) for p in _problems(r, down))}"
              for r in bad if _problems(r, down)]
    _error(f"{len(bad)} of {len(results)} clients unhealthy:\n" + "\n".join(lines))


def _pool_line(r: ClientStatus) -> str:
    from .text import clean as c

    p = r.pool
    if not p.port:
        return "none"
    head = f"127.0.0.1:{p.port} {c(p.mode)}, size {p.size}, at most {p.max_connections} server connections"
    if not p.running:
        return f"{head}; pooler NOT RUNNING"
    return (f"{head}; clients {p.clients_active} active, {p.clients_waiting} waiting; servers {p.servers_active} "
            f"active, {p.servers_idle} idle; longest wait {p.max_wait_seconds} s")


@app.command("logs")
def logs_cmd(
    client_id: str = ClientOpt,
    lines: int = typer.Option(100, "--lines", "-n", envvar="LINES", help="How many lines from the end."),
    follow: bool = typer.Option(False, "--follow", "-f", envvar="FOLLOW", help="Keep printing new server log lines."),
    pooler_log: bool = typer.Option(False, "--pooler", envvar="POOLER", help="Show the pooler's (PgBouncer's) log instead."),
    member: str = typer.Option("", "--member", envvar="MEMBER", help="A cluster's client: this member's log (m1, m2, ...)."),
) -> None:
    """The installer's component log lines for the client, then the server's log (a shared server: its own sessions only)
    (make pgvector-logs; POOLER=true: the pooler's log; MEMBER=m2: that cluster member's)."""
    from .ops.common import load
    from .ops.logs import show

    show(load(client_id), lines, follow, pooler_log, member)


@app.command("restart")
def restart_cmd(client_id: str = ClientOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt, yes: bool = YesOpt) -> None:
    """Graceful restart; waits until the tenant can log in and says how long it took (make pgvector-restart).
    A shared server: names the other clients whose sessions it ends and asks (YES=true for scripts)."""
    from .ops.common import load
    from .ops.restart import restart, sharing
    from .ui import progress

    client = load(client_id)
    others = sharing(client)
    if others:
        _confirm(yes, f"Restarting the shared server ends every session of {', '.join(others)} too: restart it?")
    with progress(quiet or as_json)(f"restarting the server for {client.id}"):
        done = restart(client)
    if as_json:
        _print_json(done.to_json())
    elif not quiet:
        pool = {"started": " The pooler was down and is running again.", "running": " The pooler was running."}
        _say(f"Restarted {done.client_id} ({done.engine}): {done.role} can log in again after {done.seconds:.2f} s."
             f"{pool.get(done.pooler, '')}")


@app.command("test")
def test_cmd(
    client_id: str = ClientOpt,
    everyone: bool = AllOpt,
    samples: bool = typer.Option(False, "--samples", envvar="SAMPLES", help="Also run every sample in the client's samples/."),
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """End-to-end check with the tenant's own credentials; leaves nothing behind. Exit 0 passed, 1 failed
    (make pgvector-test)."""
    from .ops import selftest
    from .ops.common import load_many
    from .ui import progress

    silent = quiet or as_json
    results = []
    for client in load_many(client_id, everyone):
        with progress(silent)(f"checking {client.id}"):
            result = selftest.run(client)
        if samples and result.ok:
            selftest.run_samples(result, client, silent)
        results.append(result)
        if not silent:
            for what, outcome in result.steps:
                _say(f"  {client.id}: {what:15s} {' '.join(outcome.split())}", " " * (len(client.id) + 20))
            print(f"{client.id}: {'PASS' if result.ok else 'FAIL'}")
    run = selftest.Run(results)
    if as_json:
        _print_json(run.to_json())
    if not run.ok and silent:  # cron: the steps were not printed, so the failing one goes to stderr
        _error(f"The end-to-end check failed for {', '.join(run.failed)}:\n" + "\n".join(
            f"  {r.client_id}: " + "; ".join(f"{what} {' '.join(outcome.split())}" for what, outcome in r.steps)
            for r in run.clients if not r.ok))
        raise typer.Exit(UNHEALTHY)
    if not run.ok:
        _error(f"The end-to-end check failed for {', '.join(run.failed)}: its steps say why; then make pgvector-status.")
        raise typer.Exit(UNHEALTHY)


@app.command("backup")
def backup_cmd(client_id: str = ClientOpt, everyone: bool = AllOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt) -> None:
    """pg_dump -Fc of the tenant's database into the client's backups/, keeping the newest BACKUP_KEEP (7; 0: all)
    (make pgvector-backup; ALL=true: every client, the others still backed up when one fails)."""
    from .ops.backup import backup, keep_from_env
    from .ops.common import load_many
    from .text import clean
    from .ui import progress

    keep = keep_from_env()
    done, failed = [], []
    for client in load_many(client_id, everyone):
        try:
            with progress(quiet or as_json)(f"dumping {client.tenant.database}"):
                result = backup(client, keep)
        except UserError as exc:
            if not everyone:
                raise
            failed.append((client.id, str(exc)))
            continue
        done.append(result)
        if not (quiet or as_json):
            gone = f"; {len(result.pruned)} older removed (BACKUP_KEEP={keep})" if result.pruned else ""
            print(clean(f"Backup of {result.client_id}: {result.file} ({result.size_bytes} bytes; "
                        f"row counts in {result.manifest.name}{gone})"))
    if as_json:
        _print_json(done[0].to_json() if not everyone else {
            "ok": not failed, "backups": [d.to_json() for d in done],
            "failed": [{"client_id": c, "error": e} for c, e in failed]})
    if failed:
        raise UserError(f"{len(failed)} of {len(failed) + len(done)} backups failed:\n"
                        + "\n".join(f"  {c}: {' '.join(e.split())}" for c, e in failed))


@app.command("backup-schedule")
def backup_schedule_cmd(
    when: str = typer.Option("daily", "--schedule", envvar="SCHEDULE", help="hourly | daily | weekly | off (removes it)."),
) -> None:
    """A cron job backing up every client, keeping the newest BACKUP_KEEP each (make pgvector-backup-schedule)."""
    from .ops.backup import keep_from_env
    from .ops.schedule import backup_schedule

    written = backup_schedule(when.strip().lower(), keep_from_env())
    if written is None:
        print("The backup schedule is removed (there was nothing to do if there was none).")
        return
    print(f"Every client is backed up {when} by {written}; it calls the CLI directly, so failures keep their exit code "
          "and land in the component log." + ("" if Path("/usr/sbin/cron").exists() else
                                              " No cron daemon is installed here: apt-get install cron."))


@app.command("logrotate")
def logrotate_cmd() -> None:
    """(Re)write /etc/logrotate.d/agency-pgvector for the component log and every server's and pooler's log
    (make pgvector-logrotate; make pgvector rewrites it too)."""
    from .ops.schedule import write_logrotate

    path, _ = write_logrotate()
    print(f"Log rotation for the component log and every server's and pooler's log: {path}.")


@app.command("metrics")
def metrics_cmd(
    client_id: str = ClientOpt,
    everyone: bool = AllOpt,
    metrics_file: str = typer.Option("", "--metrics-file", envvar="METRICS_FILE",
                                     help="Write to this .prom file (atomically, for node_exporter) instead of stdout."),
) -> None:
    """Prometheus text for the client, or every client with ALL=true (make pgvector-metrics). Exit 0 once written,
    clients that are down included (pgvector_up 0)."""
    from .ops.metrics import metrics, write

    text, _clients = metrics(client_id, everyone)
    if metrics_file:
        write(metrics_file, text)
    else:
        print(text, end="")


@app.command("restore")
def restore_cmd(
    file: str = typer.Option("", "--file", envvar="FILE", show_default=False, help="A .dump written by backup (required)."),
    client_id: str = ClientOpt,
    target_client: str = typer.Option("", "--target-client", envvar="TARGET_CLIENT",
                                      help="Restore into this (installed) client instead."),
    yes: bool = YesOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Replace the client's database with a backup, verified by row counts first (make pgvector-restore FILE=...)."""
    from pathlib import Path

    from . import spec as specs
    from .ops.backup import restore
    from .ops.common import installed_clients, load
    from .text import clean
    from .ui import progress

    if target_client and specs.client_id(target_client, "TARGET_CLIENT") not in installed_clients():
        raise InputError(f"TARGET_CLIENT={target_client} is not a client installed here: pick one of "
                         f"{', '.join(installed_clients()) or 'none (install one first: make pgvector CLIENT_ID=...)'}.")
    client = load(target_client or client_id)
    if not file:
        raise InputError(f"FILE is required: the .dump to restore, e.g. make pgvector-restore CLIENT_ID={client.id} "
                         f"FILE={client.spec.paths.backups_dir}/<name>.dump (ls that folder to list them).")
    _confirm(yes, f"Replace database {client.tenant.database} of client {client.id} with {file}?")
    with progress(quiet or as_json)(f"restoring into {client.tenant.database}"):
        done = restore(client, Path(file))
    if as_json:
        _print_json(done.to_json())
    elif not quiet:
        checked = ("row counts verified against its manifest" if done.verified else
                   f"row counts NOT compared: no manifest {done.file.with_suffix('.json').name} beside the file")
        print(clean(f"Restored {done.file.name} into {done.client_id}/{done.database}: "
                    f"{len(done.row_counts)} tables, {sum(done.row_counts.values())} rows; {checked}."))


@app.command("uninstall")
def uninstall_cmd(
    client_id: str = ClientOpt,
    yes: bool = YesOpt,
    keep_data: bool = typer.Option(False, "--keep-data", envvar="KEEP_DATA", help="Keep database and data; only remove access."),
    no_backup: bool = typer.Option(False, "--no-backup", envvar="NO_BACKUP", help="Skip the pg_dump taken first."),
    remove_server: bool | None = typer.Option(None, "--remove-server/--keep-server", envvar="REMOVE_SERVER", show_default=False,
                                              help="Also remove the server the installer created for this client "
                                                   "(asked when unset)."),
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Remove the client's tenant, after a backup (make pgvector-uninstall)."""
    from .ops.common import load
    from .ops.uninstall import finish_interrupted, uninstall

    done = finish_interrupted(client_id)
    if done is not None:
        if as_json:
            _print_json(done.to_json())
        elif not quiet:
            print(f"Finished an interrupted uninstall of {done.client_id}: its last files are gone.")
        return
    from .ops.listing import state_of

    if state_of(client_id) == "half-installed":  # a failed install: no .env, but a server, files or ports
        from .ops.uninstall import remove_half_installed

        _confirm(yes, f"Remove what a failed install of client {client_id} left (embedded server and its data, "
                      "registered ports, files)?")
        done = remove_half_installed(client_id)
        if done is not None:
            if as_json:
                _print_json(done.to_json())
            elif not quiet:
                from .ui import report_table

                report_table(done.report, f"removed the leftovers of client {client_id}")
            return
    client = load(client_id)
    what = "remove access to" if keep_data else "DROP"
    _confirm(yes, f"{what} database {client.tenant.database} and role {client.tenant.role} of client {client.id}?")
    if remove_server is None:
        remove_server = bool(client.engine.capabilities.remove and not keep_data and sys.stdin.isatty() and not yes
                             and typer.confirm("Also remove the server the installer created for "
                                               f"{client.id} ({client.engine.where()})?", default=False))
    done = uninstall(client, keep_data=keep_data, no_backup=no_backup, remove_server=remove_server)
    if as_json:
        _print_json(done.to_json())
    elif not quiet:
        from .ui import report_table

        report_table(done.report, f"uninstalled client {done.client_id}")
        if done.server_kept and not keep_data:
            print(f"The server ({client.engine.where()}) was kept: REMOVE_SERVER=true removes it.")
        if keep_data:
            print(f"Client {done.client_id} is suspended: make pgvector CLIENT_ID={done.client_id} resumes it.")


@app.command("list")
def list_cmd(as_json: bool = JsonOpt) -> None:
    """Every client under AGENCY_STACK_ROOT and its state, from files only (make pgvector-list)."""
    from .ops.listing import listing, to_json

    rows = listing()
    if as_json:
        _print_json(to_json(rows))
        return
    if not rows:
        print("No client under AGENCY_STACK_ROOT.")
        return
    from .text import clean as c
    from .ui import rows_table

    rows_table("pgvector: every client under the root", ["client", "state", "engine", "server", "endpoint"],
               [[c(r.client_id), r.state, c(r.engine or "-"), c(r.server or "-"), c(r.endpoint or "-")] for r in rows])
    for r in rows:
        if r.state != "installed":
            print(f"{c(r.client_id)}: {c(r.detail)}")


@app.command("remove-shared-server")
def remove_shared_server_cmd(yes: bool = YesOpt, quiet: bool = QuietOpt) -> None:
    """Remove the shared embedded server with its data, once no client is on it (make pgvector-remove-shared-server)."""
    from .ops.uninstall import remove_shared_server

    _confirm(yes, "Remove the shared embedded server and its data?")
    report = remove_shared_server()
    if not quiet:
        print(report.rows[-1].detail)


def _confirm(yes: bool, question: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UserError(f"{question} Nothing was done: confirm with YES=true (no terminal to ask on).")
    if not typer.confirm(question, default=False):
        raise UserError("Cancelled: nothing was changed.")


ClusterOpt = typer.Option("", "--cluster", envvar="CLUSTER", show_default=False, help="The cluster's name (required).")


def _cluster_given(name: str) -> str:
    if not name:
        raise InputError("CLUSTER is required: add CLUSTER=<name>, e.g. CLUSTER=main.")
    return name


@app.command("cluster")
def cluster_cmd(
    name: str = ClusterOpt,
    with_deps: bool = typer.Option(False, "--with-deps", envvar="WITH_DEPS", help="Install etcd and Patroni when absent."),
    sync: bool = typer.Option(True, "--sync/--no-sync", envvar="SYNC",
                              help="Synchronous replication: a commit returns once a standby has it (no acknowledged "
                                   "write lost in a failover)."),
    dry_run: bool = typer.Option(False, "--dry-run", envvar="DRY_RUN", help="Show the plan; change nothing."),
    address: str = typer.Option("", "--address", envvar="ADDRESS",
                                help="This host's address the members listen on (other hosts of its network may join); "
                                     "default 127.0.0.1, one host only."),
    network: str = typer.Option("", "--network", envvar="NETWORK",
                                help="With ADDRESS: the private network (CIDR) of the hosts that may join (default: "
                                     "ADDRESS's interface network)."),
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Create or converge a Patroni cluster: etcd and three members on this host (make pgvector-cluster)."""
    from .ops import cluster as clusters

    report = clusters.converge(_cluster_given(name), with_deps, sync, dry_run, address, network)
    _cluster_report(report, name, f"Patroni cluster {name}", as_json, quiet,
                    f"Cluster {name} is up: add clients with make pgvector ENGINE=patroni CLUSTER={name} ...")


def _cluster_report(report, name: str, title: str, as_json: bool, quiet: bool, done: str) -> None:
    """make pgvector-cluster's and -cluster-join's output: the JSON document, nothing (QUIET), or the table."""
    if as_json:
        _print_json(dict(cluster=name, dry_run=report.dry_run, changed=report.changed,
                         items=[dict(item=r.item, status=report.status(r), detail=r.detail) for r in report.rows]))
        return
    if quiet:
        return
    from .ui import report_table

    report_table(report, title, True)
    print("Dry run: nothing was changed." if report.dry_run else done)


@app.command("cluster-bundle")
def cluster_bundle_cmd(name: str = ClusterOpt, host: str = typer.Option(
        "", "--host", envvar="HOST", help="The address of the host that will join, on the cluster's network.")) -> None:
    """A join bundle for a member on another host (make pgvector-cluster-bundle, on the cluster's first host)."""
    from .ops import cluster as clusters

    member, path = clusters.bundle(_cluster_given(name), host)
    print(f"Wrote {path} (0600: it holds the cluster's replication, REST API and etcd passwords, and {host}'s TLS key) "
          f"for member {member} on {host}.\nCopy it there over ssh (scp), then on {host}: make pgvector-cluster-join "
          f"CLUSTER={name} BUNDLE=<its path> WITH_DEPS=true, and delete the copy. Afterwards, here: make "
          f"pgvector-cluster CLUSTER={name} (the clients' .env then list the member at their next make pgvector).")


@app.command("cluster-join")
def cluster_join_cmd(
    name: str = ClusterOpt,
    bundle: str = typer.Option("", "--bundle", envvar="BUNDLE", help="The join bundle (make pgvector-cluster-bundle)."),
    endpoints: str = typer.Option("", "--etcd", envvar="ETCD", help="etcd's endpoints, address:port,... (default: "
                                  "the bundle's)."),
    with_deps: bool = typer.Option(False, "--with-deps", envvar="WITH_DEPS", help="Install etcd and Patroni when absent."),
    dry_run: bool = typer.Option(False, "--dry-run", envvar="DRY_RUN", help="Show the plan; change nothing."),
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """This host's member of a cluster made on another host (make pgvector-cluster-join)."""
    from .ops import cluster as clusters

    doc = clusters.read_bundle(_cluster_given(name), bundle, endpoints)
    report = clusters.join(name, doc, with_deps, dry_run)
    _cluster_report(report, name, f"Patroni cluster {name}, member {doc['member']}", as_json, quiet,
                    f"Member {doc['member']} follows cluster {name}: make pgvector-cluster-status CLUSTER={name} shows "
                    f"it; make pgvector-cluster CLUSTER={name} on the first host makes its etcd vote. Delete the bundle "
                    f"({bundle}).")


@app.command("cluster-status")
def cluster_status_cmd(name: str = ClusterOpt, as_json: bool = JsonOpt) -> None:
    """Members, roles, lag and timeline of a cluster, its etcd (make pgvector-cluster-status); exit 3 when unhealthy."""
    from .ops import cluster as clusters

    found = clusters.status(_cluster_given(name))
    if as_json:
        _print_json(found)
    else:
        from .text import clean as c
        from .ui import rows_table

        etcd_state = {True: "up", False: "DOWN", None: "on the first host"}[found["etcd"]["running"]]
        rows_table(f"Patroni cluster {c(name)}: leader {found['leader'] or 'none'}, synchronous "
                   f"{'on' if found['synchronous'] else 'off'}, etcd {etcd_state}, TLS {'on' if found['tls'] else 'off'}",
                   ["member", "host", "role", "state", "port", "timeline", "lag", "patroni"],
                   [[r["name"], str(r["host"] or "-"), str(r["role"] or "-"), str(r["state"] or "-"), str(r["port"]),
                     str(r["timeline"] or "-"), str(r["lag"] if r["lag"] is not None else "-"),
                     {True: "running", False: "stopped", None: "another host"}[r["patroni_running"]]]
                    for r in found["members"]])
    if not found["healthy"]:
        raise typer.Exit(3)


@app.command("cluster-switchover")
def cluster_switchover_cmd(name: str = ClusterOpt, candidate: str = typer.Option(
        "", "--candidate", envvar="CANDIDATE", help="The member to lead (default: Patroni picks a healthy one).")) -> None:
    """A planned change of a cluster's leader (make pgvector-cluster-switchover)."""
    from .ops import cluster as clusters

    print(f"Cluster {name}: {clusters.switchover(_cluster_given(name), candidate)} leads now.")


@app.command("cluster-remove")
def cluster_remove_cmd(name: str = ClusterOpt, yes: bool = YesOpt, member: str = typer.Option(
        "", "--member", envvar="MEMBER", help="On the first host: take this member's host out (its etcd first)."),
        force: bool = typer.Option(False, "--force", envvar="FORCE",
                                   help="On a joined host: remove even when no etcd answers (the first host is gone).")) -> None:
    """Remove a cluster with its data once no client is on it, or this host's member of a cluster made elsewhere
    (make pgvector-cluster-remove)."""
    from .ops import cluster as clusters

    if member:
        clusters.remove(_cluster_given(name), member)
        print(f"Cluster {name}: member {member} forgotten.")
        return
    _confirm(yes, f"Remove cluster {_cluster_given(name)} and its data (on this host)?")
    clusters.remove(name, force=force)
    print(f"Cluster {name} removed from this host.")


@app.command("servers")
def servers_cmd(
    server: str = typer.Option("", "--server", envvar="SERVER", help="With MAX_*: the server whose capacity to set."),
    max_clients: str = typer.Option("", "--max-clients", envvar="MAX_CLIENTS", help="Clients the server takes at most."),
    max_connections: str = typer.Option("", "--max-connections", envvar="MAX_CONNECTIONS",
                                        help="Sessions in use at which the server takes no new client."),
    max_disk_gb: str = typer.Option("", "--max-disk-gb", envvar="MAX_DISK_GB",
                                    help="Size of the client databases at which the server takes no new client."),
    admin_url: str | None = typer.Option(None, "--admin-url", envvar="ADMIN_URL", show_default=False,
                                         help="With SERVER: name this existing server (its superuser URL; never "
                                              "printed). Prefer the env var: argv is visible to every user."),
    remove: bool = typer.Option(False, "--remove", envvar="REMOVE", help="With SERVER: forget a named external server."),
    as_json: bool = JsonOpt,
) -> None:
    """The servers new clients go to, their load and capacity (make pgvector-servers); with SERVER and MAX_* sets a
    capacity first, with SERVER and ADMIN_URL names an existing server. make pgvector SERVER=auto puts a new client
    on the least loaded one with room."""
    from . import inventory, spec as specs

    changes = {key: value for key, value in (
        ("clients", inventory.limit("MAX_CLIENTS", max_clients)),
        ("connections", inventory.limit("MAX_CONNECTIONS", max_connections)),
        ("disk_gb", inventory.limit("MAX_DISK_GB", max_disk_gb))) if value is not None}
    spec = specs.Spec(client_id="x", root=specs.root_from_env(), log_file=specs.log_from_env())
    if (admin_url or remove) and not server:
        raise InputError("ADMIN_URL and REMOVE name or forget one server: add SERVER=<name>.")
    if remove:
        inventory.remove_external(spec, server)
        print(f"Server {server} is no longer in the inventory.", file=sys.stderr)
    elif admin_url:
        print(f"Server {server}: {inventory.add_external(spec, server, admin_url)}, in the inventory.", file=sys.stderr)
    if changes:
        if not server:
            raise InputError("MAX_CLIENTS, MAX_CONNECTIONS and MAX_DISK_GB set one server's capacity: add SERVER=<name>.")
        inventory.set_capacity(spec, server, changes)
    found = inventory.inventory(spec)
    if as_json:
        _print_json({"servers": [s.to_json() for s in found]})
        return
    from .ui import rows_table

    rows_table("Servers for new clients (make pgvector SERVER=auto picks the least loaded with room)",
               ["server", "kind", "clients", "connections", "disk GB", "fs used", "room"],
               [[s.name, s.kind, f"{s.clients}/{s.max_clients}",
                 "-" if s.connections is None else f"{s.connections}/{s.max_connections}",
                 "-" if s.disk_gb is None else f"{s.disk_gb:.1f}" + (f"/{s.max_disk_gb:.0f}" if s.max_disk_gb else ""),
                 "-" if s.fs_used is None else f"{s.fs_used:.0%}", s.full() or "yes"] for s in found])


@app.command("move")
def move_cmd(client_id: str = ClientOpt,
             to: str = typer.Option("", "--to", envvar="TO", help="shared, dedicated, or a cluster's name."),
             abort: bool = typer.Option(False, "--abort", envvar="ABORT", help="Undo a move that was not switched."),
             as_json: bool = JsonOpt, quiet: bool = QuietOpt) -> None:
    """Move a client to another server while it writes: logical replication, a short write freeze, the .env
    switched in one rename; the old copy is kept until make pgvector-move-finish (make pgvector-move)."""
    from .ops.common import load
    from .ops.move import move
    from .ui import progress

    if not to and not abort:
        raise InputError("TO is required: add TO=shared, TO=dedicated or TO=<cluster> (or ABORT=true to undo a move).")
    client = load(client_id)
    with progress(quiet or as_json)("moving"):
        moved = move(client, to, abort)
    if as_json:
        _print_json(moved.to_json())
    elif not quiet:
        if moved.phase == "rolled back":
            print(f"Move of client {client.id} undone: it stays on {moved.source}, which takes writes again.")
        else:
            print(f"Client {client.id} moved from {moved.source} to {moved.target}: {moved.rows} rows, writes paused "
                  f"{moved.freeze_seconds:.2f} s, {moved.seconds:.1f} s in all. Its .env names the new server; the "
                  f"old copy is kept (make pgvector-move-finish CLIENT_ID={client.id} YES=true removes it).")


@app.command("move-finish")
def move_finish_cmd(client_id: str = ClientOpt, everyone: bool = AllOpt, yes: bool = YesOpt) -> None:
    """Remove the old copy a move kept: now with YES=true; ALL=true: every client's once kept 7 days (cron)."""
    from .ops.common import installed_clients, load
    from .ops.move import finish, read_journal

    if everyone:
        names = [n for n in installed_clients() if read_journal(load(n).spec).get("phase") == "kept"]
    else:
        names = [client_id]
    for name in names:
        try:
            done = finish(load(name), yes and not everyone)
        except UserError as exc:
            if not everyone:
                raise
            print(f"{name}: {exc}", file=sys.stderr)
            continue
        print(f"Client {name}: the old copy on {done.source} is removed.")


@app.command("rotate")
def rotate_cmd(client_id: str = ClientOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt) -> None:
    """New password: role and .env together, old sessions ended, new login checked (make pgvector-rotate)."""
    from .ops.common import load
    from .ops.rotate import rotate

    done = rotate(load(client_id))
    if as_json:
        _print_json(done.to_json())
    elif not quiet:
        print(f"New password for {done.role} is in {done.env_file}; old sessions were ended and the new login works.")


@app.command("upgrade")
def upgrade_cmd(client_id: str = ClientOpt, everyone: bool = AllOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt,
                yes: bool = YesOpt) -> None:
    """Move the client's server to the newest PostgreSQL minor of its major (PG_MAJOR=18: to that major, with
    pg_upgrade, after a backup), then ALTER EXTENSION vector UPDATE in each client database (make pgvector-upgrade).
    A shared server: names the other clients whose sessions it ends and asks (YES=true for scripts)."""
    from .ops.common import load_many
    from .ops.restart import sharing
    from .ops.upgrade import upgrade_all
    from .ui import progress

    clients = load_many(client_id, everyone)
    major = clients[0].spec.pg_major
    for client in clients:
        others = sharing(client) if client.engine.capabilities.upgrade else []
        if others and not everyone and (major or client.engine.newer_runtime()):
            _confirm(yes, f"Upgrading the shared server ends every session of {', '.join(others)} too: upgrade it?")
    with progress(quiet or as_json)("upgrading"):
        run = upgrade_all(clients, major)
    if as_json:
        _print_json(run.to_json())
    elif not quiet:
        from .ui import rows_table

        for moved in run.servers:
            _say(f"Server of {', '.join(moved.clients)}: {moved.kind} upgrade from {moved.old} to {moved.new}"
                 f"{' (an interrupted upgrade was finished first)' if moved.resumed else ''}; every tenant logs in "
                 f"again ({moved.seconds:.1f} s in all).{' Backups first: ' + ', '.join(moved.backups) if moved.backups else ''}")
        rows_table("pgvector upgrade", ["client", "database", "old", "new", "error"],
                   [[r.client_id, r.database, r.old or "-", r.new or "-", r.error or "-"] for r in run.databases])
    if run.errors:
        first = run.errors[0]
        raise UserError(f"ALTER EXTENSION vector UPDATE failed in {len(run.errors)} "
                        f"database(s): {first.database}: {first.error}.")


@app.command("completion")
def completion_cmd(shell: str = typer.Argument("bash", help="bash, zsh or fish.")) -> None:
    """Print the shell completion script (make pgvector-completion installs bash's in /etc/bash_completion.d/).

    Or load it in the current shell: . <(agency-pgvector completion bash). It completes commands and options
    when the CLI is typed by name (the venv's bin/ on PATH) or by path."""
    from typer.completion import get_completion_script

    if shell not in ("bash", "zsh", "fish"):
        raise InputError(f"No completion for shell {shell[:20]!r}: use bash, zsh or fish.")
    print(get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell))


def _error(message: str) -> None:
    """One line (or a few) on stderr; server and tenant text in `message` is cleaned."""
    from .text import clean

    print(f"error: {clean(message, keep=chr(10))}", file=sys.stderr)


def _internal(exc: Exception) -> str:
    """An unexpected error (a bug): its traceback goes to the component log, unless the operation it happened in
    wrote it there already; the operator gets one sentence."""
    from . import log
    from .spec import log_from_env
    from .text import first_line

    where = "the component log"
    try:
        path = log_from_env()
    except UserError:  # AGENCY_STACK_LOG itself is wrong: nowhere to write
        path = None
    if path is not None:
        where = str(path)
        if not _logged_by_an_operation(exc):
            with log.bound(path, "-"):
                log.traceback_lines(exc)
    return f"unexpected {type(exc).__name__}: {first_line(exc)}. This is a bug: the traceback is in {where}."


def _logged_by_an_operation(exc: Exception) -> bool:
    try:
        from .runner import traced
    except Exception:  # noqa: BLE001 - the error may be that very import: then no operation ran
        return False
    return traced(exc)


def main() -> None:
    """Run one command and turn its outcome into an exit code (errors.py): 0 ok, 1 unhealthy or a failed check,
    2 usage, 3 the operator must act, 70 a bug, 75 busy, 130 interrupted."""
    os.umask(0o077)  # first: whatever this process creates is private unless given a mode on purpose
    if os.environ.get(COMPLETE_VAR):  # a shell asking for completions: typer's own formats (only then: --help stays fast)
        from typer.completion import completion_init

        completion_init()
    try:
        code = app(standalone_mode=False, prog_name=PROG)  # a typer.Exit raised by a command comes back as its code
    except TyperException as exc:  # the command line's own errors: an unknown option, a bad value for one
        _error(f"{exc.format_message()} (see --help)")
        code = USAGE
    except typer.Exit as exc:
        code = exc.exit_code
    except UserError as exc:  # InputError (2), UserError (3), Busy (75): the message says what to do
        _error(str(exc))
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):  # Ctrl-C, or no answer at a prompt
        code = INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a sentence, not a traceback
        _error(_internal(exc))
        code = INTERNAL
    if code == INTERRUPTED:  # typer turns Ctrl-C inside a command into exit code 130
        _error("interrupted; re-run the same command to finish (runs converge).")
    sys.exit(code if isinstance(code, int) else 0)
