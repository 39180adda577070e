"""Existing hosts get the fix: clients installed by the previous release (commit BASELINE, taken from this
repository's history) are converged by one `make pgvector ALL=true` to the hardened layout; then the server
users' own attempts on root's paths (symlinks where root reads or writes) touch nothing outside.

Real servers, the previous release's real code (git archive of BASELINE, run with its own templates).
"""

from __future__ import annotations

import io
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from agency_pgvector import envfile
from agency_pgvector.engines.embedded import EmbeddedEngine, SharedEmbeddedEngine
from agency_pgvector.spec import Spec
from agency_pgvector.system import server_user_name

from conftest import DOMAIN, EMAIL, client_paths, stop_all, tenant_connect

BASELINE = "04bb881"  # the release before per-server users, pinned sessions and schema `extensions`
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def old_release(tmp_path_factory) -> Path:
    """The previous release's installer, templates and samples, unpacked from git history."""
    target = tmp_path_factory.mktemp("baseline")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", BASELINE, "installer", "templates", "samples"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


@pytest.fixture
def own_root(stack_root, monkeypatch):
    """A root of its own: the previous release must find no server that this session's other tests made."""
    base = Path(tempfile.mkdtemp(prefix="agency-mig-", dir="/tmp"))
    os.chmod(base, 0o755)
    monkeypatch.setenv("AGENCY_STACK_ROOT", str(base / "root"))
    yield base / "root"
    stop_all(base / "root")
    shutil.rmtree(base, ignore_errors=True)


def _old(old_release: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(old_release / "installer"), **env}
    # the umask the previous release was run with on real hosts (this process may hold the CLI's 077 by now)
    return subprocess.run([sys.executable, "-m", "agency_pgvector", *args], capture_output=True, text=True, env=full, timeout=600,
                          umask=0o022)


def _postmaster_user(data_dir: Path) -> str:
    pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    return pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name


def _engine(client_id: str, shared: bool = False):
    spec = Spec(client_id=client_id, root=Path(os.environ["AGENCY_STACK_ROOT"]))
    return SharedEmbeddedEngine(spec) if shared else EmbeddedEngine(spec)


def test_previous_release_is_converged_by_install_all(cli, old_release, own_root):
    base = {"DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "WITH_DEPS": "true", "ENGINE": "embedded"}
    for client, extra in (("mig-a", {}), ("mig-b", {"SERVER": "shared"}), ("mig-c", {"SERVER": "shared"})):
        result = _old(old_release, "install", CLIENT_ID=client, **base, **extra)
        assert result.returncode == 0, result.stderr + result.stdout
    env_b = envfile.read(client_paths("mig-b").env_file)
    with tenant_connect(env_b) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE docs (id int PRIMARY KEY, emb vector(3))")
        cur.execute("INSERT INTO docs SELECT i, ARRAY[i, i + 1, i + 2]::real[]::vector FROM generate_series(1, 50) i")
        cur.execute("CREATE INDEX ON docs USING hnsw (emb vector_l2_ops)")
    old_backup = _old(old_release, "backup", CLIENT_ID="mig-b")
    assert old_backup.returncode == 0, old_backup.stderr
    assert _postmaster_user(_engine("mig-a").data_dir) == "agencypg"  # the shared OS user of the old release

    result = cli("install", ALL="true")
    assert result.returncode == 0, result.stderr + result.stdout

    for key, engine in (("mig-a", _engine("mig-a")), ("_shared", _engine("x", shared=True))):
        user = server_user_name(key)
        assert _postmaster_user(engine.data_dir) == user, f"{key} still runs as {_postmaster_user(engine.data_dir)}"
        conn = engine.admin_connect()
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('config_file'), current_setting('hba_file'), current_setting('ident_file'), "
                        "current_setting('data_directory')")
            files = cur.fetchone()[:3]
        conn.close()
        for path in map(Path, files):
            info = path.stat()
            assert engine.data_dir not in path.parents, f"{path} is inside the data directory"
            assert info.st_uid == 0 and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH), f"{path} is writable by others"
        # pg_ident maps only root: the server's own OS user is not the superuser over the socket any more
        psql = engine.bin_dir() / "psql"
        as_server = subprocess.run([str(psql), "-X", "-h", str(engine.layout.socket_dir), "-p", str(engine.port()),
                                    "-U", "postgres", "-d", "postgres", "-c", "SELECT 1"], capture_output=True, text=True,
                                   user=pwd.getpwnam(user).pw_uid, group=pwd.getpwnam(user).pw_gid, extra_groups=[], cwd="/")
        assert as_server.returncode != 0 and "authentication failed" in as_server.stderr, as_server.stderr
        users = {server_user_name("mig-a"), server_user_name("_shared")}
        assert len(users) == 2

    with tenant_connect(env_b) as conn, conn.cursor() as cur:  # data and unqualified pgvector use survive the move
        cur.execute("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'")
        assert cur.fetchone()[0] == "extensions"
        cur.execute("SELECT id FROM docs ORDER BY emb <-> '[1,2,3]' LIMIT 1")
        assert cur.fetchone()[0] == 1

    # a backup made by the previous release (vector in public) restores into the new layout
    dump = sorted(client_paths("mig-b").backups_dir.glob("*.dump"))[-1]
    restored = cli("restore", CLIENT_ID="mig-b", FILE=str(dump), YES="true")
    assert restored.returncode == 0, restored.stderr
    with tenant_connect(env_b) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), (SELECT extnamespace::regnamespace::text "
                    "FROM pg_extension WHERE extname = 'vector') FROM docs")
        assert cur.fetchone() == (50, "extensions")

    again = cli("install", ALL="true", JSON="true")
    assert again.returncode == 0, again.stderr
    assert '"result": "changed"' not in again.stdout, again.stdout  # converged: a second run changes nothing
    for client in ("mig-a", "mig-b", "mig-c"):
        status = cli("status", CLIENT_ID=client)
        assert status.returncode == 0, status.stdout + status.stderr


def test_server_user_cannot_make_root_write_or_read_through_links(cli, install, tmp_path):
    """As the server's OS user, put symlinks where root reads or writes; root's routine commands touch nothing outside."""
    install("esc-a")
    engine = _engine("esc-a")
    user = pwd.getpwnam(server_user_name("esc-a"))
    secret = tmp_path / "root-only.txt"
    secret.write_text("ROOT-ONLY-CONTENT\n")
    os.chmod(secret, 0o600)
    before = secret.read_bytes()

    def as_server_user(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                              cwd="/")

    # root's config directory is out of the server user's reach
    for name in ("pg_ident.conf", "pg_hba.conf", "postgresql.conf", "planted"):
        attempt = as_server_user("ln", "-sf", str(secret), str(engine.layout.config_dir / name))
        assert attempt.returncode != 0, f"the server user could write {engine.layout.config_dir / name}"
    # what the server user does own: its log (root reads it for pgvector-logs)
    log = engine.layout.log_file
    assert as_server_user("sh", "-c", f"mv {log} {log}.real && ln -s {secret} {log}").returncode == 0
    for args, extra in ((("install",), {"DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL}), (("rotate",), {}), (("logs",), {"LINES": "5"}),
                        (("restart",), {}), (("status",), {})):
        result = cli(*args, CLIENT_ID="esc-a", **extra)
        assert "ROOT-ONLY-CONTENT" not in result.stdout + result.stderr, f"{args[0]} printed the root-only file"
    assert secret.read_bytes() == before and stat.S_IMODE(secret.stat().st_mode) == 0o600 and secret.stat().st_uid == 0
    # the server user's own mischief only hurt its own server: undone, the client converges again
    assert as_server_user("sh", "-c", f"rm {log} && mv {log}.real {log}").returncode == 0
    assert cli("restart", CLIENT_ID="esc-a").returncode == 0
    assert tenant_connect(envfile.read(client_paths("esc-a").env_file)).closed == 0
