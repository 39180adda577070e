"""What every benchmark shares: a timer, the CLI as a subprocess, bare PostgreSQL servers, result rows."""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from agency_pgvector.engines.embedded import EmbeddedEngine, SharedEmbeddedEngine
from agency_pgvector.pooler import Pooler
from agency_pgvector.spec import Spec
from agency_pgvector.system import run, server_user

PROJECT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("agency-pgvector")  # the console script make calls
DOMAIN, EMAIL = "example.com", "ops@example.com"
BARE_USER = "agencypg"  # the system user of the bare servers (the name an earlier release ran every server as)


@dataclass
class Row:
    """One figure and its ratio to a baseline measured in the same run."""

    section: str
    measure: str
    value: float
    unit: str
    baseline: str = ""
    base_value: float | None = None
    target: str = ""  # e.g. "<= 2x", "<= 0.35 s", ">= 10x"
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.base_value if self.base_value else None


class Background:
    """A loop (`_run`, checking `_stop`) on a thread of its own for the length of a `with` block: the probes that
    watch a server from outside while a command runs (upgrade's logins, failover's writes)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        raise NotImplementedError


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def median(values) -> float:
    return statistics.median(values)


def sh(argv: list[str], env: dict | None = None, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, env=env, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} {argv[1] if len(argv) > 1 else ''} failed ({result.returncode}): "
                           f"{(result.stderr or result.stdout).strip()[-400:]}")
    return result


def cli(root: Path, *args: str, check: bool = True, **env: str) -> float:
    """Run `agency-pgvector <args>` the way make does (variables in the environment); seconds taken."""
    full = {**os.environ, "AGENCY_STACK_ROOT": str(root), "AGENCY_STACK_LOG": str(root.parent / "log" / f"{root.name}.log"),
            "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, **env}
    seconds, _ = timed(sh, [str(CLI), *args], env=full, check=check)
    return seconds


def install(root: Path, client_id: str, new_server: bool = False, **env: str) -> float:
    """A first install. A new server gets its PORT from the bench's own range (see next_port)."""
    if new_server:
        env["PORT"] = str(next_port())
    return cli(root, "install", "--quiet", CLIENT_ID=client_id, WITH_DEPS="true", ENGINE=env.pop("ENGINE", "embedded"), **env)


_last_port = 20000


def next_port() -> int:
    """A free port from 20001 up. Other stacks on a busy host also start servers (and docker-proxy) from
    5433 up; they check the port in their own registry only, so they can take one between our check and
    our server's start. Far from that range, the race does not happen."""
    global _last_port
    while True:
        _last_port += 1
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", _last_port))
                return _last_port
            except OSError:
                continue


def rerun(root: Path, client_id: str, **env: str) -> float:
    """The same install again; fails unless it reports that nothing changed."""
    full = {**os.environ, "AGENCY_STACK_ROOT": str(root), "AGENCY_STACK_LOG": str(root.parent / "log" / f"{root.name}.log"),
            "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "CLIENT_ID": client_id, "WITH_DEPS": "true",
            "ENGINE": env.pop("ENGINE", "embedded"), **env}
    seconds, result = timed(sh, [str(CLI), "install", "--json"], env=full)
    if json.loads(result.stdout)["changed"]:
        raise RuntimeError(f"a re-run for {client_id} changed something: {result.stdout[-400:]}")
    return seconds


def engine_for(root: Path, client_id: str, shared: bool = False) -> EmbeddedEngine:
    spec = Spec(client_id=client_id, root=root)
    return SharedEmbeddedEngine(spec) if shared else EmbeddedEngine(spec)


def stop_all(root: Path) -> None:
    """Stop every embedded server the installer made under `root` (dedicated ones and the shared one), and the
    PgBouncer in front of each."""
    poolers = root / "pgvector" / "poolers"
    for key in sorted(folder.name for folder in poolers.iterdir()) if poolers.is_dir() else []:
        try:
            Pooler(key, root / "pgvector").stop()
        except Exception as exc:  # noqa: BLE001 - keep stopping the others
            print(f"warning: could not stop the pooler {poolers / key}: {exc}", file=sys.stderr)
    clients = root / "clients"
    names = [client.name for client in clients.iterdir()] if clients.exists() else []
    for engine in [engine_for(root, name) for name in names] + [engine_for(root, "x", shared=True)]:
        try:
            if engine.exists():
                engine.stop()
        except Exception as exc:  # noqa: BLE001 - keep stopping the others
            print(f"warning: could not stop {engine.data_dir}: {exc}", file=sys.stderr)


class Server:
    """A bare PostgreSQL server made with initdb + pg_ctl only: the floor the installer is compared with.

    Local (Unix socket) logins are trusted, so no password exists; TCP logins need scram-sha-256.
    """

    def __init__(self, bin_dir: Path, base: Path):
        self.bin_dir, self.base = bin_dir, base
        self.data, self.socket, self.port = base / "data", base / "run", next_port()
        self.user = server_user(create=True, name=BARE_USER)

    def initdb(self) -> float:
        for folder in (self.base, self.socket):
            folder.mkdir(parents=True, exist_ok=True)
            os.chown(folder, self.user.pw_uid, self.user.pw_gid)
            os.chmod(folder, 0o700)
        seconds, _ = timed(run, [str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                                 "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-instructions"],
                           self.user)
        return seconds

    def configure(self, settings: dict | None = None) -> None:
        lines = [f"port = {self.port}", "listen_addresses = '127.0.0.1'", f"unix_socket_directories = '{self.socket}'"]
        lines += [f"{name} = {value}" for name, value in (settings or {}).items()]
        (self.data / "bench.conf").write_text("\n".join(lines) + "\n")
        os.chown(self.data / "bench.conf", self.user.pw_uid, self.user.pw_gid)
        conf = self.data / "postgresql.conf"
        if "include 'bench.conf'" not in conf.read_text():
            with conf.open("a") as handle:
                handle.write("\ninclude 'bench.conf'\n")

    def start(self) -> float:
        seconds, _ = timed(run, [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "server.log"),
                                 "-w", "-t", "60", "-s", "start"], self.user)
        return seconds

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "-s", "stop"], self.user,
                check=False)

    def psql(self, script: str, dbname: str = "postgres") -> float:
        """Send `script` with psql (one process, one session, autocommit): the bare-SQL floor."""
        argv = [str(self.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket), "-p", str(self.port),
                "-U", "postgres", "-d", dbname]
        seconds, _ = timed(sh, argv, input=script)
        return seconds

    def connect(self, dbname: str = "postgres"):
        import psycopg2

        conn = psycopg2.connect(host=str(self.socket), port=self.port, user="postgres", dbname=dbname)
        conn.autocommit = True
        return conn

    @property
    def admin_url(self) -> str:
        """Superuser URL over the Unix socket (trust: no password to leak)."""
        return f"postgresql://postgres@/postgres?host={self.socket}&port={self.port}"


def tenant_sql(name: str) -> str:
    """The bare SQL for one tenant, as the issue defines the floor."""
    return (f"CREATE ROLE {name} LOGIN;\n"
            f"CREATE DATABASE {name} OWNER {name} TEMPLATE template0;\n"
            f"REVOKE ALL ON DATABASE {name} FROM PUBLIC;\n"
            f"\\c {name}\n"
            "CREATE EXTENSION vector;\n")


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) * 1024
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": f"{mem / 2**30:.1f} GiB",
        "os": " ".join(platform.uname()[i] for i in (0, 2)),
        "python": platform.python_version(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
