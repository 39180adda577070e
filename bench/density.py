"""Density: N clients on one host, one server per client versus SERVER=shared.

Time to provision N through the CLI (against N times the floors), memory per client (PSS and RSS of the
servers' processes, divided by N, against one bare idle server), and `status --all --json` for all N.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .common import CLI, Row, Server, cli, engine_for, install, median, sh, stop_all, tenant_sql, timed

SECTION = "2 density"


def server_processes(data_dir: Path) -> list[int]:
    """The postmaster of `data_dir` and its children."""
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return []
    master = int(pid_file.read_text().split()[0])
    pids = [master]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            if ppid == master:
                pids.append(int(entry.name))
    return pids


def memory(pids: list[int]) -> tuple[int, int]:
    """Sum of PSS and of RSS in bytes (PSS splits shared pages among the processes that map them)."""
    pss = rss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return pss, rss


def status_time(root: Path) -> tuple[float | None, str]:
    """Seconds for `status --all --json`, or None with the reason when the command is not there."""
    probe = subprocess.run([str(CLI), "status", "--help"], capture_output=True, text=True)
    if probe.returncode != 0 or "--all" not in probe.stdout:
        return None, "pending: no `status --all` in this build"
    seconds = cli(root, "status", "--all", "--json", check=False)
    return seconds, ""


def connect_all_floor(sockets: list[tuple[str, int]]) -> float:
    """A fresh Python process that connects to every server and runs SELECT 1: what status cannot beat."""
    script = ("import sys, psycopg2\n"
              "for arg in sys.argv[1:]:\n"
              "    host, port, db = arg.split(',')\n"
              "    c = psycopg2.connect(host=host, port=int(port), user='postgres', dbname=db)\n"
              "    c.cursor().execute('SELECT 1'); c.close()\n")
    return timed(sh, [sys.executable, "-c", script, *[f"{h},{p},{d}" for h, p, d in sockets]])[0]


def run(base: Path, quick: bool, floors, servers: list) -> list[Row]:
    count = 20 if quick else 100
    rows: list[Row] = []
    bare = Server(floors.bin_dir, base / "bare-idle")
    bare.initdb()
    bare.configure()
    bare.start()
    servers.append(bare)
    bare.psql(tenant_sql("bare_t0"))  # one tenant, made with the bare SQL, like an installed client
    bare_pss, bare_rss = memory(server_processes(bare.data))

    for mode in ("dedicated", "shared"):
        root = base / f"dense-{mode}"
        env = {"SERVER": "shared"} if mode == "shared" else {}
        each = [install(root, f"{mode[0]}{i:03d}", new_server=mode == "dedicated" or i == 0, **env) for i in range(count)]
        seconds, tenth = sum(each), max(1, count // 10)
        floor = count * floors.new_server if mode == "dedicated" else floors.new_server + (count - 1) * median(floors.sql)
        if mode == "dedicated":
            engines = [engine_for(root, f"d{i:03d}") for i in range(count)]
            sockets = [(str(e.layout.socket_dir), e.port(), "vectordb") for e in engines]
        else:
            engines = [engine_for(root, "x", shared=True)]
            sockets = [(str(engines[0].layout.socket_dir), engines[0].port(), f"vectordb_s{i:03d}") for i in range(count)]
        pss = rss = 0
        for engine in engines:
            p, r = memory(server_processes(engine.data_dir))
            pss, rss = pss + p, rss + r
        status, why = status_time(root)
        connect_floor = connect_all_floor(sockets)
        label = "one server per client" if mode == "dedicated" else "SERVER=shared"
        rows += [
            Row(SECTION, f"provision {count} clients, {label}", seconds, "s",
                "N x (initdb+start+SQL)" if mode == "dedicated" else "initdb+start + N x SQL", floor,
                note=f"sequential CLI runs; median of the first {tenth} {median(each[:tenth]):.2f} s, "
                     f"of the last {tenth} {median(each[-tenth:]):.2f} s"),
            Row(SECTION, f"memory per client (PSS), {label}", pss / count / 2**20, "MiB", "bare server, one tenant",
                bare_pss / 2**20,
                note=f"RSS/client {rss / count / 2**20:.1f} MiB (bare {bare_rss / 2**20:.1f}); idle after install"),
            Row(SECTION, f"status --all --json, {count} clients, {label}", status if status is not None else float("nan"), "s",
                "python+connect+SELECT 1 to each", connect_floor, "<= 2 s", met=(status <= 2.0) if status is not None else None,
                note=why or ("" if count == 100 else f"quick mode: {count} clients, the target is for 100")),
        ]
        stop_all(root)  # free the memory before the next mode
    return rows
