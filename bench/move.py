"""Moving a client: `make pgvector-move TO=shared` for a client with N x 384 clustered unit vectors (100k;
20k with --quick) and an HNSW index (cosine, default m and ef_construction) on its own embedded server, while a
thread commits one row at a time through the client's .env (DATABASE_URL read again after every failed commit, as
an app restarted by its supervisor would, so it follows the .env to the new server).

- write freeze: the move's own freeze_seconds (the tenant NOLOGIN on the source until the new .env is in place;
  target <= 2 s), and what the writer saw: the longest time between two acknowledged commits from the move's start
  until it writes steadily again, against its usual gap (the median over the seconds before the move);
- duration: the whole `agency-pgvector move` against a dump/restore of the same client in the same run, on the same
  two servers (`backup` of the client, then `restore` of that dump into a second, freshly installed empty client on
  the shared server), both wall clock with the CLI's start-up; the steps of the move from its component log;
- acknowledged commits lost: every commit the writer saw return is looked up on the server the .env names after the
  move (target 0). The HNSW index must answer 20 fixed queries on the target (EXPLAIN shows it; recall@10 against
  exact search reported before and after).

Then `move-finish` (the old dedicated server goes), both clients uninstalled and the shared server removed.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np

from agency_pgvector import envfile
from agency_pgvector.provision import Tenant
from agency_pgvector.spec import Spec

from . import hnsw
from .common import CLI, DOMAIN, EMAIL, Background, Row, engine_for, install, median, sh, stop_all, timed

SECTION = "9 move"
CLIENT, RESTORED = "bench-mover", "bench-restored"
RETRY = 0.05  # the writer's pause after a failed commit, before it reads the .env again and reconnects
# the move's steps, as its component log names them (report rows are logged as "changed <item>")
STEPS = ("move start", "move: target tenant made", "move: schema restored", "move: subscribed", "changed indexes",
         "move: writes frozen", "move: caught up", "move: replication dropped", "move: switched", "move done")


class Writer(Background):
    """Insert 1, 2, 3, ... through the .env's DATABASE_URL, one commit each; on any error the .env is read again."""

    def __init__(self, env_file: Path):
        super().__init__()
        self.env_file, self.acked, self.times, self.errors = env_file, [], [], []

    def _run(self) -> None:
        import psycopg2

        conn, n = None, 0
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = psycopg2.connect(envfile.read(self.env_file)["DATABASE_URL"], connect_timeout=2)
                    conn.autocommit = True
                n += 1
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO writes (id) VALUES (%s)", (n,))
                self.acked.append(n)
                self.times.append(time.monotonic())
            except (psycopg2.Error, OSError, KeyError) as exc:
                self.errors.append((time.monotonic(), str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)))
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(RETRY)
            time.sleep(0.01)
        if conn is not None:
            conn.close()

    def steady_after(self, moment: float, count: int = 100, timeout: float = 120.0) -> None:
        """Wait for `count` commits after `moment`."""
        deadline = time.monotonic() + timeout
        while sum(1 for t in list(self.times) if t > moment) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the writer did not write steadily within {timeout:.0f} s of the move")
            time.sleep(0.1)


class Steps(Background):
    """When each step of the move appears in the component log (polled every 10 ms), and when the target's
    subscription has copied every table (polled on the shared server, between `subscribed` and `indexes`)."""

    def __init__(self, log_file: Path, root: Path):
        super().__init__()
        self.log_file, self.root = log_file, root
        self.offset = log_file.stat().st_size if log_file.exists() else 0
        self.seen: dict[str, float] = {}
        self.lines: list[str] = []

    def _run(self) -> None:
        target = None
        try:
            while not self._stop.is_set():
                self._read()
                if "move: subscribed" in self.seen and "copied" not in self.seen and "changed indexes" not in self.seen:
                    target = self._poll(target)
                time.sleep(0.01)
            self._read()
        finally:
            if target is not None:
                target.close()

    def _poll(self, target):
        """One look at the subscription's tables; the session kept for the next look (None after an error)."""
        try:
            if target is None:
                target = engine_for(self.root, CLIENT, shared=True).admin_connect(Tenant.for_client(CLIENT, True).database)
            with target.cursor() as cur:
                cur.execute("SELECT count(*) FILTER (WHERE srsubstate <> 'r'), count(*) FROM pg_subscription_rel")
                waiting, tables = cur.fetchone()
            if tables and not waiting:
                self.seen["copied"] = time.monotonic()
            return target
        except Exception:  # noqa: BLE001 - the database is not there yet, or the move dropped it: look again
            if target is not None:
                target.close()
            return None

    def _read(self) -> None:
        if not self.log_file.exists():
            return
        with self.log_file.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        now = time.monotonic()
        for line in data[:end].decode(errors="replace").splitlines():
            if f"client={CLIENT} " not in line:
                continue
            message = line.split(f"client={CLIENT} ", 1)[1]
            self.lines.append(message)
            for step in STEPS:
                if message.startswith(step) and step not in self.seen:
                    self.seen[step] = now


def _env(root: Path, **env: str) -> dict:
    return {**os.environ, "AGENCY_STACK_ROOT": str(root), "AGENCY_STACK_LOG": str(_log(root)),
            "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "YES": "true", **env}


def _log(root: Path) -> Path:
    return root.parent / "log" / f"{root.name}.log"


def _cli_json(root: Path, *args: str, **env: str) -> tuple[float, dict]:
    seconds, result = timed(sh, [str(CLI), *args, "--json"], env=_env(root, **env))
    return seconds, json.loads(result.stdout)


def _cli(root: Path, *args: str, **env: str) -> None:
    sh([str(CLI), *args], env=_env(root, **env))


def _recall(url: str, queries: np.ndarray, truth: np.ndarray) -> float:
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        _, found = hnsw.search(conn, queries, 10)  # raises unless EXPLAIN shows the HNSW index
    finally:
        conn.close()
    return hnsw.recall(found, truth)


def _present(url: str) -> set[int]:
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM writes")
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


def _gaps(times: list[float]) -> list[tuple[float, float, float]]:
    """(gap, from, to) between consecutive commits."""
    return [(b - a, a, b) for a, b in zip(times, times[1:], strict=False)]


def run(base: Path, quick: bool) -> list[Row]:
    root = base / "move"
    try:
        return _run(root, quick)
    finally:
        stop_all(root)  # on failure: every server the section made (a clean run has removed them already)


def _run(root: Path, quick: bool) -> list[Row]:
    import psycopg2

    rows_n, dim = (20_000 if quick else 100_000), 384
    size = f"{rows_n // 1000}k x {dim}, HNSW"
    env_file = Spec(client_id=CLIENT, root=root).paths.env_file

    # -- the client on its own server, its data; an empty client on the shared server (restore's target) ------------
    install(root, CLIENT, new_server=True)
    install(root, RESTORED, new_server=True, SERVER="shared")  # the move's target server exists before both
    url = envfile.read(env_file)["DATABASE_URL"]
    data, queries = hnsw.dataset(rows_n, dim, 20)
    truth = hnsw.exact_neighbours(data, queries, 10)
    hnsw.load_indexed(url, data)
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE writes (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
    conn.close()
    recall_before = _recall(url, queries, truth)

    # -- baseline: dump/restore of the same client to the shared server ---------------------------------------------
    t_backup, backup = _cli_json(root, "backup", CLIENT_ID=CLIENT)
    t_restore, restored = _cli_json(root, "restore", FILE=backup["file"], TARGET_CLIENT=RESTORED)
    if sum(restored["row_counts"].values()) != rows_n:
        raise RuntimeError(f"the restore into {RESTORED} has {restored['row_counts']}, not {rows_n} vectors")
    dump_mb = backup["size_bytes"] / 2**20

    # -- the move, with the writer committing through the .env -----------------------------------------------------
    with Writer(env_file) as writer:
        time.sleep(3)  # the writer's usual pace, before the move
        before = list(writer.times)
        with Steps(_log(root), root) as steps:
            started = time.monotonic()
            t_move, moved = _cli_json(root, "move", CLIENT_ID=CLIENT, TO="shared")
            ended = time.monotonic()
        writer.steady_after(ended)
    env = envfile.read(env_file)
    if (env.get("PGVECTOR_SERVER"), moved["phase"]) != ("shared", "kept"):
        raise RuntimeError(f"after the move the .env names {env.get('PGVECTOR_SERVER')!r} (phase {moved['phase']})")
    lost = len(set(writer.acked) - _present(env["DATABASE_URL"]))
    recall_after = _recall(env["DATABASE_URL"], queries, truth)

    # what the writer saw
    usual = median([g for g, _, _ in _gaps(before)])
    quiet_max = max(g for g, _, _ in _gaps(before))
    last_before = max((t for t in writer.times if t < started), default=started)  # from the last commit before it
    pauses = _gaps([last_before] + [t for t in writer.times if t > last_before])
    longest, gap_from, gap_to = max(pauses)
    seen = steps.seen
    freeze_at = (seen.get("move: writes frozen", ended) - 0.5, seen.get("move: switched", ended) + 0.5)
    outside = [g for g, a, b in pauses if b < freeze_at[0] or a > freeze_at[1]]
    failed = [e for t, e in writer.errors if started <= t <= ended + 5]
    during = sum(1 for t in writer.times if started <= t <= ended)
    kinds = sorted({re.sub(r"\d+", "N", e)[:120] for e in failed})

    def rel(t: float | None) -> str:
        return "-" if t is None else f"+{t - started:.2f}"

    phases = _phases(seen, started, ended)
    catch_up = _between(seen, "move: writes frozen", "move: caught up")
    print("move steps (s after the command started): "
          + ", ".join(f"{step} {rel(seen.get(step))}" for step in (*STEPS[:4], "copied", *STEPS[4:])))
    print(f"writer: {len(writer.acked)} acknowledged, {len(writer.errors)} failed attempts ({'; '.join(kinds)}); longest "
          f"gap {longest:.3f} s from {rel(gap_from)} to {rel(gap_to)}")

    out = [
        Row(SECTION, "write freeze (the move's freeze_seconds: source NOLOGIN to the new .env)", moved["freeze_seconds"],
            "s", target="<= 2 s", met=moved["freeze_seconds"] <= 2.0,
            note=f"{size}; tenant NOLOGIN and its sessions ended, catch-up ({catch_up} in the log), sequences, row "
                 f"counts of {moved['rows']} rows compared, replication dropped, .env rewritten"),
        Row(SECTION, "writer's longest pause between acknowledged commits (client-visible)", longest, "s",
            "usual gap (median before the move)", usual, "report",
            note=f"one commit each ~10 ms, {RETRY * 1000:.0f} ms between failed attempts (.env read again); longest gap "
                 f"{rel(gap_from)} to {rel(gap_to)} s into the move (freeze logged {rel(seen.get('move: writes frozen'))}"
                 f" to {rel(seen.get('move: switched'))}); longest outside the freeze {max(outside, default=0):.3f} s, "
                 f"in the 3 s before {quiet_max:.3f} s; {during} commits during the move, {len(failed)} failed attempts"),
        Row(SECTION, "whole move, while writing (agency-pgvector move TO=shared)", t_move, "s",
            "backup + restore", t_backup + t_restore, "report",
            note=f"move's own seconds {moved['seconds']:.1f}; {phases}; backup {t_backup:.1f} s ({dump_mb:.0f} MB) + "
                 f"restore {t_restore:.1f} s into a new empty client on the shared server, no writer"),
        Row(SECTION, "acknowledged commits lost", float(lost), "", target="= 0", met=lost == 0,
            note=f"{len(writer.acked)} acknowledged, checked on the server the .env names after the move; HNSW recall@10 "
                 f"{recall_before:.3f} before, {recall_after:.3f} on the target (20 queries, EXPLAIN shows the index)"),
    ]

    # -- the old copy, both clients, the shared server ---------------------------------------------------------------
    _cli(root, "move-finish", CLIENT_ID=CLIENT)
    for client in (CLIENT, RESTORED):
        _cli(root, "uninstall", "--quiet", CLIENT_ID=client, NO_BACKUP="true")
    _cli(root, "remove-shared-server", "--quiet")
    return out


def _between(seen: dict[str, float], first: str, then: str) -> str:
    return f"{seen[then] - seen[first]:.2f} s" if first in seen and then in seen else "-"


def _phases(seen: dict[str, float], started: float, ended: float) -> str:
    """The move's steps as durations: each from the step before it in the component log."""
    marks = [("start", started), ("schema", seen.get("move: schema restored")), ("subscribe", seen.get("move: subscribed")),
             ("copy", seen.get("copied")), ("indexes", seen.get("changed indexes")),
             ("freeze", seen.get("move: switched")), ("rest", ended)]
    parts, last = [], started
    for name, moment in marks[1:]:
        if moment is None:
            continue
        parts.append(f"{name} {moment - last:.1f} s")
        last = moment
    return "steps: " + ", ".join(parts)

