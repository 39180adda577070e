"""Converging many installed clients at once (`make pgvector ALL=true`) and one client at a time, on one shared
embedded server, against floors measured in the same run:

- ALL=true over N installed clients against N separate `make pgvector` runs of the same clients;
- its cost per client against reading one client's state over an already open superuser session
  (provision.read_state on a sessions.operator connection, in this process: no interpreter start, no login);
- one new client on the running shared server against the bare tenant SQL sent with psql to a bare server;
- a re-run that changes nothing, in seconds.

Every run is checked to have changed nothing (re-runs) or to have succeeded (new clients).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from agency_pgvector import sessions
from agency_pgvector.provision import Tenant, read_state

from .common import CLI, DOMAIN, EMAIL, Row, Server, engine_for, install, median, rerun, sh, tenant_sql, timed

SECTION = "5 converge"


def install_all(root: Path) -> float:
    """`make pgvector ALL=true` (the variables in the environment, as make passes them); fails unless every client
    was converged and nothing changed."""
    env = {**os.environ, "AGENCY_STACK_ROOT": str(root), "AGENCY_STACK_LOG": str(root.parent / "log" / f"{root.name}.log"),
           "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "ALL": "true", "WITH_DEPS": "true", "SERVER": "shared", "JSON": "true"}
    seconds, result = timed(sh, [str(CLI), "install"], env=env)
    outcome = json.loads(result.stdout)
    changed = [c["client_id"] for c in outcome["clients"] if c["result"] != "ok"]
    if not outcome["ok"] or changed:
        raise RuntimeError(f"install --all was not a no-op for {', '.join(changed) or 'some client'}: {result.stdout[-400:]}")
    return seconds


def read_states(root: Path, clients: list[str]) -> list[float]:
    """The floor of the per-client cost: provision.read_state for each client, one after the other, over one
    operator session opened beforehand (read_state itself opens a session in the tenant's database, to read
    the extension and schemas there)."""
    engine = engine_for(root, "floor", shared=True)
    conn = sessions.operator(engine)
    try:
        return [timed(read_state, conn, Tenant.for_client(client, True), engine.admin_connect)[0] for client in clients]
    finally:
        conn.close()


def run(base: Path, quick: bool, servers: list) -> list[Row]:
    """The rows; the shared server under base/converge is left running (for the profile), the caller stops it."""
    count, reps = (20, 2) if quick else (100, 3)
    root = base / "converge"
    clients = [f"c{i:03d}" for i in range(count)]
    install(root, clients[0], new_server=True, SERVER="shared")  # the shared server, made once (not measured)
    bare = Server(engine_for(root, clients[0], shared=True).bin_dir(False), base / "converge-bare")
    servers.append(bare)
    bare.initdb()
    bare.configure()
    bare.start()

    # Each further client is new on the running shared server, right after the bare SQL for one tenant.
    new, sql = [], []
    for i, client in enumerate(clients[1:]):
        sql.append(bare.psql(tenant_sql(f"floor_c{i}")))
        bare.psql(f"DROP DATABASE floor_c{i};\nDROP ROLE floor_c{i};\n")  # the bare server stays as small as it began
        new.append(install(root, client, SERVER="shared"))

    # ALL=true, the floor read of every client's state, and (once) N separate runs, in turns: each figure and its
    # baseline see the same load.
    alls, floors, separate, probes = [], [], [], []
    probe = (f"import psycopg2; c = psycopg2.connect(host={str(bare.socket)!r}, port={bare.port}, "
             "user='postgres', dbname='postgres'); c.cursor().execute('SELECT 1')")
    for rep in range(reps):
        alls.append(install_all(root))
        floors.append(sum(read_states(root, clients)) / count)
        if rep == 0:
            for i, client in enumerate(clients):
                separate.append(rerun(root, client, SERVER="shared"))
                if i % max(1, count // 10) == 0:
                    probes.append(timed(sh, [sys.executable, "-c", probe])[0])
    bare.stop()

    t_all, floor, sep = median(alls), median(floors), sum(separate)
    quick = "" if count == 100 else f"quick mode: {count} clients, the target is for 100"
    rows = [
        Row(SECTION, "floor: read_state of one client, open operator session", floor, "s",
            note=f"in-process, mean over {count} clients, median of {reps} rounds"),
        Row(SECTION, f"{count} separate re-runs, against one ALL=true run", sep, "s", "ALL=true (one process)", t_all,
            ">= 10x", met=sep >= 10 * t_all,
            note=f"ALL=true is {sep / t_all:.1f}x faster; median of {reps} ALL runs ({', '.join(f'{t:.2f}' for t in alls)} s)"
                 + (f"; {quick}" if quick else "")),
        Row(SECTION, "ALL=true, per client", t_all / count, "s", "read_state, open session", floor, "<= 2x",
            met=t_all / count <= 2 * floor),
        Row(SECTION, "new client on the running shared server", median(new), "s", "tenant SQL with psql", median(sql),
            "<= 3x", met=median(new) <= 3 * median(sql),
            note=f"{len(new)} runs; median of the first {max(1, len(new) // 10)} "
                 f"{median(new[:max(1, len(new) // 10)]):.3f} s, of the last {median(new[-max(1, len(new) // 10):]):.3f} s"),
        Row(SECTION, "re-run, nothing to do (one client, shared)", median(separate), "s", "python+connect+SELECT 1",
            median(probes), "<= 0.25 s", met=median(separate) <= 0.25,
            note=f"{len(separate)} runs, p90 {sorted(separate)[int(len(separate) * 0.9) - 1]:.3f} s"),
    ]
    return rows
