"""make bench: run the benchmarks, print one table, write docs/benchmarks.md.

    python -m bench                 full sizes (about 15 minutes on 2 cores), writes docs/benchmarks.md
    python -m bench --quick         smaller sizes, prints only (add --write to write the document; so does --only)
    python -m bench --only provisioning,vectors   some sections (provisioning runs whenever density or vectors do:
                                                  they use its floors)
    python -m bench --quick --only converge       ALL=true against separate runs, on 20 clients (100 in full mode)
    python -m bench --only pool                   PgBouncer against direct: short connections, HNSW queries
    python -m bench --only upgrade                minor and major server upgrades: downtime, duration, sizes
    python -m bench --only move                   a client moved to the shared server while it writes: freeze,
                                                  duration against backup + restore, commits lost
    python -m bench --explore       also build HNSW under a grid of maintenance_work_mem / worker counts

Everything runs under a throw-away AGENCY_STACK_ROOT in /tmp; every server it starts is stopped at the end,
also on failure or Ctrl-C, and the directory removed.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from agency_pgvector import tuning
from agency_pgvector.system import systemd_running

from . import cliprofile, converge, density, failover, move, pool, provisioning, upgrade, vectors
from .common import PROJECT, Row, machine, stop_all

SECTIONS = ("provisioning", "density", "vectors", "profile", "converge", "pool", "upgrade", "failover", "move")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="agency-pgvector benchmarks")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (20 clients, 50k vectors); prints only")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--explore", action="store_true", help="also build HNSW under a grid of settings")
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md even with --quick")
    parser.add_argument("--output", default=str(PROJECT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    if os.geteuid() != 0:
        sys.exit("error: the benchmarks start real servers under a dedicated system user: run them as root (make bench).")
    if systemd_running():
        sys.exit("error: systemd runs this host, so every benchmark client would get a boot unit: run make bench in a "
                 "container or VM without systemd as PID 1.")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below still stops the servers
    compile_package()

    base = Path(tempfile.mkdtemp(prefix="agency-bench-", dir="/tmp"))
    os.chmod(base, 0o755)  # the server user must traverse it
    os.environ["AGENCY_SYSTEMD_DIR"] = str(base / "systemd")  # units are rendered (as on a real host), never enabled
    for name in [k for k in os.environ if k.startswith("PG_")]:
        print(f"note: {name} is set and overrides the installer's tuning for this run")
    servers: list = []
    rows: list[Row] = []
    notes: list[str] = []
    profile: list[str] = []
    host = machine()
    started = time.monotonic()
    try:
        if only & {"provisioning", "profile", "density", "vectors"}:
            prov_rows, floors = provisioning.run(base, args.quick, servers)
            rows += prov_rows
            if "profile" in only:
                profile = cliprofile.run(base / "prov", base)
            stop_all(base / "prov")  # its servers would only add noise to what follows
        later = []
        if "converge" in only:  # on a quiet host, before the long sections; its rows come last, as its number says
            later = converge.run(base, args.quick, servers)
            if "profile" in only:
                profile += cliprofile.run_all(base / "converge", base)
            stop_all(base / "converge")
        if "pool" in only:  # also before the long sections: the pool's ratios need the host as quiet as it gets
            later += pool.run(base, args.quick, servers)
            stop_all(base / "pool")
        if "density" in only:
            rows += density.run(base, args.quick, floors, servers)
        if "vectors" in only:
            rows += vectors.run(base, args.quick, floors, servers, notes, explore=args.explore)
        rows += later
        if "upgrade" in only:
            rows += upgrade.run(base, args.quick)
            stop_all(base / "upgrade")
        if "failover" in only:
            rows += failover.run(base, args.quick)
        if "move" in only:
            rows += move.run(base, args.quick)
    finally:
        for server in servers:
            server.stop()
        for root in sorted(base.glob("*")):
            if (root / "pgvector").is_dir():
                stop_all(root)
        shutil.rmtree(base, ignore_errors=True)
    host["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    host["minutes"] = f"{(time.monotonic() - started) / 60:.1f}"
    table = render(rows)
    print(table)
    if profile:
        print("\n".join(profile))
    if args.write or (not args.quick and only == set(SECTIONS)):  # a partial run never replaces the whole document
        write(Path(args.output), host, table, notes, profile, args)
        print(f"\nwrote {args.output}")
    return 0


CONVERGE_HOW = [
    "Converge (section 5) installs N clients (100; 20 with --quick) on one shared embedded server (SERVER=shared),",
    "each new client right after one tenant's bare SQL sent with psql to a bare server. Then, in turns: `make pgvector",
    "ALL=true` (`install --all`: every client in one process); the floor, reading each client's state with",
    "provision.read_state over one operator session opened beforehand, in the benchmark's own process; and, once, N",
    "separate `make pgvector` re-runs of the same clients. Every ALL=true run and every re-run must report no change.",
    "The installer's bytecode is compiled before anything is timed, as an installed package has it.",
]


POOL_HOW = [
    "Pool (section 6) installs one client with its own embedded server and the PgBouncer the installer puts in front",
    "of it (POOL_MODE=session, POOL_SIZE 10; then the same client re-run with POOL_MODE=transaction), and measures,",
    "in turns, direct to PostgreSQL (DATABASE_URL's port) and through the pool (DATABASE_POOL_URL's), both TCP on",
    "127.0.0.1 with the tenant's own SCRAM login: `pgbench -n -C -S -c 8 -j 2` (the runtime's pgbench; a new connection",
    "per transaction, scale 1), one open connection's round trip (`pgbench -n -S -c 1`), and 4 persistent psycopg 3",
    "sessions running `ORDER BY embedding <=> $1 LIMIT 10` on 50k x 384 clustered unit vectors with an HNSW index",
    "(cosine, default m and ef_construction, ef_search 40). CPU per transaction is read from /proc for the server's and",
    "the pooler's system users, and from getrusage for the client.",
]


UPGRADE_HOW = [
    "Upgrade (section 7) installs a client with its own server, loads 100k x 384 clustered unit vectors (20k with",
    "--quick) and builds an HNSW index (cosine), puts the server on the 18.4 runtime (what earlier releases ran) and runs",
    "`make pgvector-upgrade` (minor: to the newest 18); then a client made with PG_MAJOR=16, the same data, and",
    "`make pgvector-upgrade PG_MAJOR=18` (backup, pg_upgrade --link, analyze). A thread logs in with the tenant's .env",
    "every 20 ms throughout: the tenant's downtime is the longest gap between two logins that worked, against the gap a",
    "plain `make pgvector-restart` of the same server leaves. 20 fixed queries return the same top-10 before and after.",
]


FAILOVER_HOW = [
    "Failover (section 8) makes a three-member Patroni cluster (synchronous mode; ttl 20 s, loop_wait 2 s,",
    "retry_timeout 3 s) with a client on it; a thread commits one row at a time through the client's DATABASE_URL",
    "(every member listed, target_session_attrs=read-write). Each gap is the longest time without a commit returning,",
    "from the failure until the writer runs steadily again: the leader member's keeper, Patroni and postmaster killed",
    "at once (a host's death), the leader's postmaster alone, its Patroni alone; baseline a planned switchover. Every",
    "acknowledged commit is checked afterwards.",
]


MOVE_HOW = [
    "Move (section 9) installs a client with its own embedded server, loads 100k x 384 clustered unit vectors (20k",
    "with --quick) and builds an HNSW index (cosine); baseline, in the same run: `make pgvector-backup` of it and",
    "`make pgvector-restore` of that dump into a second, freshly installed empty client on the shared server (wall",
    "clock of both). Then `make pgvector-move TO=shared` while a thread commits one row at a time through the client's",
    ".env, reading its DATABASE_URL again after every failed commit: the freeze is the move's own (source NOLOGIN to",
    "the new .env), the pause the longest time between two acknowledged commits from the move's start until the writer",
    "runs steadily on the new server, against its usual gap; the steps' times come from the component log. Every",
    "acknowledged commit is looked up on the server the .env names afterwards; then `make pgvector-move-finish`.",
]


def compile_package() -> None:
    """The installer's bytecode, as an installed package has it (pip compiles a wheel; an editable install writes
    __pycache__ on its first run): with PYTHONDONTWRITEBYTECODE set, as on these machines, every CLI run would
    otherwise compile the package from source again, about 0.13 s a run."""
    import compileall
    import re

    import agency_pgvector

    compileall.compile_dir(Path(agency_pgvector.__file__).parent, quiet=1, rx=re.compile(r"/(samples|templates)/"))


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "vectors/s":
        return f"{value:,.0f}/s"
    if unit == "":
        return f"{value:.3f}"
    return f"{value:.3f} {unit}" if value < 10 else f"{value:.1f} {unit}"


def render(rows: list[Row]) -> str:
    lines = ["| section | measure | value | baseline (same run) | ratio | target | met | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        base = f"{row.baseline} {fmt(row.base_value, row.unit)}" if row.baseline else ""
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        lines.append(f"| {row.section} | {row.measure} | {fmt(row.value, row.unit)} "
                     f"| {base} | {ratio} | {row.target} | {met} | {row.note} |")
    return "\n".join(lines)


def write(path: Path, host: dict, table: str, notes: list[str], profile: list[str], args) -> None:
    mode = "quick" if args.quick else "full"
    text = [
        "# Benchmarks",
        "",
        "Written by `make bench` (bench/); re-run it to refresh. Every figure sits next to its floor or baseline,",
        "measured in the same run on the same machine, so the ratios matter more than the absolute times.",
        "",
        f"Machine: {host['cpu']}, {host['cores']} cores, {host['memory']} memory; {host['os']}; Python {host['python']}.",
        (f"Run: {host['date']}, {mode} mode, {host['minutes']} minutes; "
         f"load average {host['load']} before, {host['load_after']} after"),
        "(other work on the host shares the cores: read the ratios, not the seconds).",
        "",
        table,
        "",
        *[f"- {note}" for note in notes],
        "",
        "How it is measured: provisioning runs the CLI (`agency-pgvector install`) as `make` does, each time right after",
        "the floor it is compared with (initdb, pg_ctl start, and one tenant's bare SQL sent with psql, on a bare server",
        "made with initdb + pg_ctl only); medians over the repetitions. Memory is the sum of PSS (and RSS) of a server's",
        "postmaster and its children, divided by the clients it serves. The stock server for the HNSW comparison is",
        "initdb's postgresql.conf untouched; both servers run the same PostgreSQL 18 + pgvector binaries at the same time.",
        "Ports for new servers are given explicitly (PORT=, from 20001 up): other stacks on a busy host start servers",
        "from 5433 up and can take a port between the installer's check and its server's start.",
        "",
        *CONVERGE_HOW,
        "",
        *POOL_HOW,
        "",
        *UPGRADE_HOW,
        "",
        *FAILOVER_HOW,
        "",
        *MOVE_HOW,
        "",
        "## Tuning choices (installer/agency_pgvector/tuning.py)",
        "",
        "    " + (tuning.__doc__ or "").strip().replace("\n", "\n    "),
        "",
        "The settings one server gets on this machine: " + ", ".join(f"{k}={v}" for k, v in tuning.settings().items()) + ";",
        "with SERVER=shared: " + ", ".join(f"{k}={v}" for k, v in tuning.settings(shared=True).items()
                                         if v != tuning.settings()[k]) + ".",
        "",
        *profile,
        "",
    ]
    path.write_text("\n".join(text))


if __name__ == "__main__":
    sys.exit(main())
