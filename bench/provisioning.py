"""Provisioning speed through the CLI, side by side with the floors: initdb, pg_ctl start, bare SQL with psql.

Each repetition measures a floor and then the CLI doing the same job, so both see the same machine load;
figures are medians over the repetitions.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .common import CLI, Row, Server, engine_for, install, median, rerun, sh, tenant_sql, timed

SECTION = "1 provisioning"


@dataclass
class Floors:
    """The floors, kept for the density section: initdb, start, SQL, and the bin dir they used."""

    bin_dir: Path
    initdb: list = field(default_factory=list)
    start: list = field(default_factory=list)
    sql: list = field(default_factory=list)
    server: list = field(default_factory=list)  # initdb + start + SQL, per repetition

    @property
    def new_server(self) -> float:
        return median(self.server)


def bare_server(floors: Floors, base: Path, name: str) -> tuple[Server, float, float, float]:
    """initdb, start and one tenant's bare SQL on a fresh server: the three floors, timed one by one."""
    server = Server(floors.bin_dir, base / name)
    t_init = server.initdb()
    server.configure()
    t_start = server.start()
    t_sql = server.psql(tenant_sql("floor_t0"))
    floors.initdb.append(t_init)
    floors.start.append(t_start)
    floors.sql.append(t_sql)
    floors.server.append(t_init + t_start + t_sql)
    return server, t_init, t_start, t_sql


def run(base: Path, quick: bool, servers: list) -> tuple[list[Row], Floors]:
    reps, more = (2, 3) if quick else (3, 5)
    root = base / "prov"
    rows: list[Row] = []

    # The very first install on a host also copies the server binaries (once per host).
    t_cold = install(root, "p-cold", new_server=True)
    floors = Floors(engine_for(root, "p-cold").bin_dir())

    # A first client with its own new server, against initdb + start + SQL, side by side.
    dedicated = []
    for i in range(reps):
        server, *_ = bare_server(floors, base, f"floor{i}")
        servers.append(server)
        if i:  # keep the first bare server running: it is the "existing server" for ENGINE=external
            server.stop()
            shutil.rmtree(server.base, ignore_errors=True)
        dedicated.append(install(root, f"p-new{i}", new_server=True))
    external_server = servers[-reps]

    # A new client on a running server: shared embedded, and external (the bare server above).
    install(root, "s-first", new_server=True, SERVER="shared")
    shared, external, sql = [], [], []
    for i in range(more):
        sql.append(external_server.psql(tenant_sql(f"floor_s{i}")))
        shared.append(install(root, f"s-new{i}", SERVER="shared"))
        sql.append(external_server.psql(tenant_sql(f"floor_e{i}")))
        external.append(install(root, f"e-new{i}", ENGINE="external", ADMIN_URL=external_server.admin_url))

    # Re-runs that change nothing, against a process that starts Python, connects and runs SELECT 1.
    probe = (f"import psycopg2; c = psycopg2.connect(host={str(external_server.socket)!r}, port={external_server.port}, "
             "user='postgres', dbname='postgres'); c.cursor().execute('SELECT 1')")
    floor_connect, reruns = [], {"dedicated": [], "shared": [], "external": []}
    for _ in range(more):
        floor_connect.append(timed(sh, [sys.executable, "-c", probe])[0])
        reruns["dedicated"].append(rerun(root, "p-new0"))
        reruns["shared"].append(rerun(root, "s-new0", SERVER="shared"))
        reruns["external"].append(rerun(root, "e-new0", ENGINE="external", ADMIN_URL=external_server.admin_url))

    # --help, against the interpreter starting and doing nothing.
    bare, helps = [], []
    for _ in range(more):
        bare.append(timed(sh, [sys.executable, "-c", "pass"])[0])
        helps.append(timed(sh, [str(CLI), "--help"])[0])

    floors.sql += sql
    f_sql, f_new = median(floors.sql), floors.new_server
    rows += [
        Row(SECTION, "floor: initdb", median(floors.initdb), "s", note=f"{len(floors.initdb)} runs"),
        Row(SECTION, "floor: pg_ctl start", median(floors.start), "s"),
        Row(SECTION, "floor: tenant SQL with psql", f_sql, "s", note="CREATE ROLE, CREATE DATABASE, REVOKE, CREATE EXTENSION"),
        Row(SECTION, "first client, new embedded server", median(dedicated), "s", "initdb+start+SQL", f_new, "<= 1.5x"),
        Row(SECTION, "new client, SERVER=shared", median(shared), "s", "tenant SQL", f_sql, "<= 2x"),
        Row(SECTION, "new client, ENGINE=external", median(external), "s", "tenant SQL", f_sql, "<= 2x"),
        Row(SECTION, "first client on a fresh host (copies binaries)", t_cold, "s", "initdb+start+SQL", f_new,
            note="once per host"),
    ]
    f_connect = median(floor_connect)
    for kind, times in reruns.items():
        rows.append(Row(SECTION, f"re-run, nothing to do ({kind})", median(times), "s",
                        "python+connect+SELECT 1", f_connect, "<= 0.35 s"))
    rows.append(Row(SECTION, "agency-pgvector --help", median(helps), "s", "python -c pass", median(bare), "<= 0.25 s"))
    for row in rows:
        if row.target.endswith("x"):
            row.met = row.ratio <= float(row.target.split()[1][:-1])
        elif row.target.endswith(" s"):
            row.met = row.value <= float(row.target.split()[1])
    return rows, floors
