"""What the CLI prints for people: values are never rich markup, unknown is never shown as a false fact, cron gets
the failing clients on stderr with QUIET=true, a shared server's restart names and asks, and every table fits
80 columns without breaking a path, an address or a header mid-word.

Real servers (embedded engine, SERVER=shared) under a root of this module's own, run through the real CLI at
COLUMNS=80 (rich takes its width from it when there is no terminal).
"""

from __future__ import annotations

import re

import pytest

from agency_pgvector import envfile
from agency_pgvector.engines.embedded import SharedEmbeddedEngine
from agency_pgvector.spec import Spec
from test_cli import Host, document

from conftest import DOMAIN, EMAIL, stop_all, tenant_connect

WIDTH = 80
BORDER = "│┃┏┓┗┛┡┩└┘┌┐├┤┬┴┼━─╇╈"


class Narrow(Host):
    def run(self, *args: str, **extra):
        return super().run(*args, COLUMNS=str(WIDTH), LINES="40", **extra)

    def install(self, client: str, *args: str, **extra):
        result = self.run("install", *args, CLIENT_ID=client, DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL, ENGINE="embedded",
                          SERVER="shared", WITH_DEPS="true", **extra)
        assert result.returncode == 0, result.stderr + result.stdout
        return result


@pytest.fixture(scope="module")
def host(stack_root):
    base = stack_root.parent / "st"  # short: server sockets live under it
    base.mkdir(mode=0o755)
    yield Narrow(base)
    stop_all(base / "root")


def fits(text: str, *whole: str) -> None:
    """No line wider than 80 (but a table's note or a sentence ending in a path or address longer than the rest
    of the line: printed whole, outside any table), and each of `whole` on one line, unbroken."""
    for line in text.splitlines():
        last = line.split()[-1] if line.split() else ""
        whole_word = not any(mark in line for mark in BORDER) and len(last) >= 30 and ("/" in last or "@" in last)
        assert len(line) <= WIDTH or whole_word, (len(line), line, text)
    for value in whole:
        assert value in text, (value, text)


def cells(text: str) -> list[str]:
    """Every table cell's text (stripped), so a header split over two lines shows as two cells."""
    return [cell.strip() for line in text.splitlines() for cell in re.split(f"[{BORDER}]", line) if cell.strip()]


def test_status_prints_values_as_they_are_never_as_markup_and_fits_80_columns(host):
    installed = host.install("st-a")
    fits(installed.stdout, str(host.paths("st-a").env_file), str(host.paths("st-a").component_dir / "README.md"))
    env = envfile.read(host.paths("st-a").env_file)
    with tenant_connect(env) as conn, conn.cursor() as cur:
        cur.execute('CREATE TABLE docs (id int PRIMARY KEY, emb vector(3)); CREATE INDEX ON docs USING hnsw (emb vector_l2_ops); '
                    'CREATE TABLE "[red]x" ("[bold]" vector(3))')
    one = host.run("status", CLIENT_ID="st-a")
    assert one.returncode == 0, one.stderr + one.stdout
    assert "public.docs.emb vector(3) [hnsw]" in one.stdout, one.stdout
    assert "public.[red]x.[bold] vector(3) [no index]" in one.stdout, one.stdout
    fits(one.stdout, f"{env['PGHOST']}:{env['PGPORT']}", str(host.paths("st-a").env_file), "(shared)")
    everyone = host.run("status", ALL="true")
    assert everyone.returncode == 0, everyone.stderr + everyone.stdout
    fits(everyone.stdout, f"{env['PGHOST']}:{env['PGPORT']}")
    assert {"client", "health", "engine", "endpoint", "pg/vec", "size", "st-a", "shared"} <= set(cells(everyone.stdout))
    for command in (("test",), ("upgrade",), ("upgrade", "--all")):
        result = host.run(*command, CLIENT_ID="st-a")
        assert result.returncode == 0, result.stderr + result.stdout
        fits(result.stdout)


def test_a_shared_servers_restart_names_the_other_clients_and_asks(host):
    host.install("st-a")
    host.install("st-b")
    refused = host.run("restart", CLIENT_ID="st-b")
    assert refused.returncode == 3 and "st-a" in refused.stderr and "YES=true" in refused.stderr, refused.stderr
    assert refused.stderr.count("\n") == 1 and refused.stdout == ""
    done = host.run("restart", CLIENT_ID="st-b", YES="true")
    assert done.returncode == 0 and "Restarted st-b" in done.stdout, done.stderr + done.stdout
    fits(done.stdout)
    converged = host.run("install", ALL="true")
    assert converged.returncode == 0, converged.stderr + converged.stdout
    fits(converged.stdout)
    assert {"client", "engine", "result", "detail", "st-a", "st-b"} <= set(cells(converged.stdout))
    host.install("st-u")
    gone = host.run("uninstall", CLIENT_ID="st-u", YES="true")
    assert gone.returncode == 0, gone.stderr + gone.stdout
    fits(gone.stdout)
    assert {"item", "status", "detail"} <= set(cells(gone.stdout))


def test_with_the_shared_server_down_status_shows_unknown_and_names_the_clients_once_even_quiet(host):
    host.install("st-a")
    host.install("st-b")
    SharedEmbeddedEngine(Spec(client_id="st-a", root=host.root)).stop()
    try:
        one = host.run("status", CLIENT_ID="st-a")
        as_json = host.run("status", "--json", CLIENT_ID="st-a")
        everyone = host.run("status", ALL="true")
        quiet = host.run("status", ALL="true", QUIET="true")
        check = host.run("test", ALL="true", QUIET="true")
        people = host.run("test", CLIENT_ID="st-a")
    finally:
        assert host.run("restart", CLIENT_ID="st-a", YES="true").returncode == 0
    assert one.returncode == 1
    for false_fact in ("missing", "None", "drift          │ none", "none yet"):
        assert false_fact not in one.stdout, (false_fact, one.stdout)
    assert "pgvector       │ unknown" in one.stdout and "connections    │ unknown" in one.stdout, one.stdout
    client = document(as_json, "status", 1)["clients"][0]
    assert client["drift"] is None and client["settings"] is None and client["vector_columns"] is None
    assert client["server"]["shared"] is True and client["pgvector"]["installed"] is None
    assert everyone.returncode == 1 and everyone.stdout.count("shared server down (st-a, st-b)") == 1, everyone.stdout
    assert "server not reachable" not in everyone.stdout
    assert quiet.returncode == 1 and quiet.stdout == "" and "Traceback" not in quiet.stderr
    assert quiet.stderr.count("shared server down (st-a, st-b)") == 1, quiet.stderr
    fits(one.stdout)
    fits(everyone.stdout)
    assert people.returncode == 1 and "st-a: FAIL" in people.stdout
    fits(people.stdout, "CLIENT_ID=st-a")
    assert check.returncode == 1 and check.stdout == ""
    assert "  st-a: login failed with the .env" in check.stderr and "  st-b: login" in check.stderr, check.stderr
