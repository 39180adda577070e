"""The command line: parse, call, render. One command per make target; the work lives in plain modules."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from .errors import UserError

app = typer.Typer(
    name="agency-pgvector",
    help="Provision and operate PostgreSQL + pgvector tenants for AgencyStack clients.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ClientOpt = typer.Option("default", "--client-id", envvar="CLIENT_ID", help="Client (tenant) id: 1-32 of a-z 0-9 -.")
JsonOpt = typer.Option(False, "--json", envvar="JSON", help="Print stable JSON instead of a table.")
QuietOpt = typer.Option(False, "--quiet", "-q", envvar="QUIET", help="Print nothing but errors (for cron).")


@app.callback()
def _group() -> None:
    """Provision and operate PostgreSQL + pgvector tenants for AgencyStack clients (one command per make target)."""


@app.command("install")
def install_cmd(
    domain: str = typer.Option("", "--domain", envvar="DOMAIN", help="The client's domain (RFC 1123 host name). Required."),
    admin_email: str = typer.Option("", "--admin-email", envvar="ADMIN_EMAIL", help="Operator e-mail for the client. Required."),
    client_id: str = ClientOpt,
    engine: str = typer.Option("auto", "--engine", envvar="ENGINE", help="auto | embedded | external | docker."),
    admin_url: Optional[str] = typer.Option(None, "--admin-url", envvar="ADMIN_URL", show_default=False,
                                            help="Superuser URL of an existing server (ENGINE=external). Prefer the env var: argv is visible to every user."),
    server: str = typer.Option("", "--server", envvar="SERVER", help="Embedded engine: dedicated (one server per client, default) or shared (one server, many clients)."),
    port: Optional[str] = typer.Option(None, "--port", envvar="PORT", help="Host port for a new server (default: first free from 5433)."),
    with_deps: bool = typer.Option(False, "--with-deps", envvar="WITH_DEPS", help="Create the server (and its system user) when absent."),
    force: bool = typer.Option(False, "--force", envvar="FORCE", help="Set a new password (old sessions end) and repair drift."),
    enable_cloud: bool = typer.Option(False, "--enable-cloud", envvar="ENABLE_CLOUD", help="Listen on all interfaces; remote logins over TLS only."),
    dry_run: bool = typer.Option(False, "--dry-run", envvar="DRY_RUN", help="Show the plan; change nothing."),
    verbose: bool = typer.Option(False, "--verbose", "-v", envvar="VERBOSE", help="Show details for every item."),
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Install or converge a client's pgvector tenant (make pgvector)."""
    from . import spec as specs
    from .install import install

    spec = specs.build(client_id, domain, admin_email, engine_=engine, server_=server, admin_url_=admin_url, port_=port,
                       with_deps=with_deps, force=force, enable_cloud=enable_cloud, dry_run=dry_run)
    result = install(spec)
    report = result.report
    if as_json:
        rows = [dict(item=r.item, status=report.status(r), detail=r.detail) for r in report.rows]
        print(json.dumps(dict(client_id=spec.client_id, engine=result.engine, dry_run=dry_run, changed=report.changed,
                              env_file=str(spec.paths.env_file), items=rows), indent=2))
        return
    if quiet:
        return
    from .ui import report_table

    report_table(report, f"pgvector for client {spec.client_id} ({result.engine})", verbose)
    if dry_run:
        print("Dry run: nothing was changed.")
    elif report.changed:
        print(f"Done. Connection details: {spec.paths.env_file}")
    else:
        print(f"No changes: client {spec.client_id} is already as provisioned.")


def main() -> None:
    try:
        app(standalone_mode=False)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted; re-run the same command to finish (runs converge).", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a sentence, not a traceback
        from . import log

        import traceback

        log.event("internal error: " + "".join(traceback.format_exception_only(type(exc), exc)).strip())
        name = type(exc).__name__
        if name in {"UsageError", "BadParameter", "NoSuchOption", "MissingParameter", "BadOptionUsage", "BadArgumentUsage"}:
            print(f"error: {getattr(exc, 'format_message', lambda: str(exc))()} (see --help)", file=sys.stderr)
            sys.exit(2)
        if name == "Abort":
            sys.exit(1)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else name
        print(f"error: unexpected {name}: {first}. Re-run with VERBOSE=true; the component log has the details.", file=sys.stderr)
        sys.exit(1)
