"""The client tree against other local users (issue 10, finding 8). Real installs on the embedded engine.

  * Under umask 000 the CLI still leaves no directory or file in a client's tree that another user could write,
    for a shared-server client and for a dedicated one: .env 0600, pgvector/ and below 0700 (files 0600).
  * A local user `fs-attacker` works on a weakened tree (as an old install or a careless chmod left it): it swaps
    samples/ or the whole pgvector/ for its own, with links to a root-only file and directory and a run_all.py of
    its own. install, backup and test --samples refuse in one sentence naming the directory and the fix; the
    root-only file and directory are untouched and the planted code never ran.
  * test --samples runs the samples as the unprivileged user agency-samples from a private copy (a probe in place
    of run_all.py reports who it runs as, where, and that the client's tree is closed to it), and refuses in one
    sentence when that user cannot run the installer's Python.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from agency_pgvector.system import world_readable

from conftest import DOMAIN, EMAIL, client_paths

ATTACKER = "fs-attacker"
SAMPLES_USER = "agency-samples"


def _cli(*args: str, python: str = sys.executable, umask: int = -1, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "WITH_DEPS": "true", "ENGINE": "embedded", "YES": "true", **env}
    return subprocess.run([python, "-m", "agency_pgvector", *args], env=full, capture_output=True, text=True, timeout=600,
                          umask=umask)


def _installed(client: str, **env: str) -> None:
    result = _cli("install", CLIENT_ID=client, **env)
    assert result.returncode == 0, result.stderr + result.stdout


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- (a) modes under umask 000 --------------------------------------------------------------------------------

@pytest.mark.parametrize("client, server", [("fs-umask-shared", "shared"), ("fs-umask-dedicated", "dedicated")])
def test_client_tree_modes_are_explicit_under_umask_000(stack_root, client, server):
    result = _cli("install", umask=0, CLIENT_ID=client, SERVER=server)
    assert result.returncode == 0, result.stderr + result.stdout
    paths = client_paths(client)
    assert (_mode(paths.client_dir.parent), _mode(paths.client_dir)) == (0o711, 0o711)
    assert (_mode(paths.state_dir), _mode(paths.state_dir / "locks")) == (0o711, 0o700)
    assert _mode(paths.component_dir) == 0o700 and _mode(paths.env_file) == 0o600
    log_dir = Path(os.environ["AGENCY_STACK_LOG"]).parent
    assert _mode(log_dir) & 0o022 == 0, oct(_mode(log_dir))
    checked = 0
    for folder, dirs, files in os.walk(paths.client_dir):
        for path in [Path(folder), *(Path(folder) / name for name in dirs + files)]:
            info = os.lstat(path)
            if stat.S_ISSOCK(info.st_mode) or stat.S_ISLNK(info.st_mode):
                continue  # the server's socket (in its 0700 run/): connect permission, not a file
            assert info.st_mode & 0o022 == 0, f"{path} is mode {_mode(path):04o}"
            if paths.component_dir in path.parents:
                assert _mode(path) == (0o700 if stat.S_ISDIR(info.st_mode) else 0o600), f"{path} is mode {_mode(path):04o}"
                assert info.st_uid == 0, path
            checked += 1
    assert checked > 20 and (paths.samples_dir / "migrations" / "versions").is_dir()


# -- (b) another local user against a weakened tree -----------------------------------------------------------

@pytest.fixture(scope="module")
def attacker():
    created = False
    try:
        user = pwd.getpwnam(ATTACKER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                        ATTACKER], check=True, capture_output=True)
        user, created = pwd.getpwnam(ATTACKER), True
    yield user
    if created:
        subprocess.run(["userdel", ATTACKER], check=False, capture_output=True)


def _as(user, script: str, *args: str) -> None:
    """`script` (sh) run as `user`, with `args` as $1, $2, ..."""
    result = subprocess.run(["sh", "-ec", script, "sh", *args], user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                            cwd="/", capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


PLANT = """
cd "$1"
mkdir samples
ln -s "$2" samples/quickstart.py
printf 'import os\\nopen("%s", "w").write(str(os.getuid()))\\n' "$4" > samples/run_all.py
ln -s "$3" backups
"""


@pytest.fixture
def targets(stack_root):
    """A root-only file and a root-owned directory outside the tree, and where root-run planted code would write."""
    base = stack_root.parent / "fs-targets"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o755)
    os.chmod(base, 0o755)
    private = base / "private"
    private.mkdir(mode=0o700)
    secret = private / "root-only"
    secret.write_text("root's own\n")
    os.chmod(secret, 0o600)
    outside = base / "outside"
    outside.mkdir(mode=0o755)
    os.chmod(outside, 0o755)
    return secret, outside, base / "ran-as-root"


@pytest.mark.parametrize("weakening", ["pgvector-0777", "client-dir-0777"])
def test_another_user_cannot_turn_root_against_a_weakened_tree(stack_root, attacker, targets, weakening):
    client = f"fs-weak-{weakening[:6]}"
    _installed(client, SERVER="shared")
    paths = client_paths(client)
    secret, outside, marker = targets
    if weakening == "pgvector-0777":  # an old install left pgvector/ open: the attacker swaps samples/ inside it
        offending = paths.component_dir
        os.chmod(offending, 0o777)
        _as(attacker, 'cd "$1" && mv samples samples.root', str(paths.component_dir))
        _as(attacker, PLANT, str(paths.component_dir), str(secret), str(outside), str(marker))
    else:  # clients/<id>/ left open: the attacker swaps the whole pgvector/ for a directory of its own
        offending = paths.client_dir
        os.chmod(offending, 0o777)
        _as(attacker,
            'cd "$1" && mv pgvector pgvector.root && mkdir pgvector && printf '
            '"PGVECTOR_ENGINE=embedded\\nPGVECTOR_SERVER=shared\\n" > pgvector/.env',
            str(paths.client_dir))
        _as(attacker, PLANT, str(paths.component_dir), str(secret), str(outside), str(marker))
    try:
        runs = {"test --samples": _cli("test", "--samples", CLIENT_ID=client),  # first: install would rewrite run_all.py
                "backup": _cli("backup", CLIENT_ID=client),
                "install": _cli("install", CLIENT_ID=client, SERVER="shared", FORCE="true")}
        assert secret.read_text() == "root's own\n" and _mode(secret) == 0o600, "root wrote through the planted link"
        assert list(outside.iterdir()) == [] and _mode(outside) == 0o755, "root followed the planted backups link"
        assert not marker.exists(), f"the planted run_all.py ran as uid {marker.read_text()}"
        for command, result in runs.items():
            error = result.stderr.strip()
            assert result.returncode != 0, (command, result.stdout)
            assert error.startswith(f"error: Refusing to use {offending}:") and "\n" not in error, (command, error)
            assert f"chown root:root {offending} && chmod go-w {offending}" in error, (command, error)
    finally:
        if weakening == "pgvector-0777":
            shutil.rmtree(paths.samples_dir)
            os.unlink(paths.component_dir / "backups")
            os.rename(paths.component_dir / "samples.root", paths.samples_dir)
            os.chmod(paths.component_dir, 0o700)
        else:
            shutil.rmtree(paths.component_dir)
            os.rename(paths.client_dir / "pgvector.root", paths.component_dir)
            os.chmod(paths.client_dir, 0o711)
    _installed(client, SERVER="shared")  # repaired by root: the commands work again


# -- (c) samples never run as root ----------------------------------------------------------------------------

PROBE = """
import os, pwd, subprocess, sys
from pathlib import Path

here = Path(__file__).resolve().parent
env = here.parent / ".env"
print("probe user", pwd.getpwuid(os.getuid()).pw_name, pwd.getpwuid(os.geteuid()).pw_name)
print("probe root group", 0 in (os.getgid(), os.getegid(), *os.getgroups()))
print("probe dir", here)
print("probe env", pwd.getpwuid(env.stat().st_uid).pw_name, oct(env.stat().st_mode & 0o777))
try:
    os.listdir("CLIENT_TREE")
    print("probe client tree readable")
except PermissionError:
    print("probe client tree closed")
sys.exit(subprocess.run([sys.executable, "quickstart.py"]).returncode)
"""


def _shared_venv(where: Path) -> Path:
    """A virtualenv of the system python3 that sees this test run's packages: what a checkout under /opt would be.
    (This run's own venv may sit behind a 0700 directory such as /root, out of agency-samples' reach.)"""
    system = Path("/usr/bin/python3")
    version = subprocess.run([str(system), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
    assert version.stdout.strip() == str(sys.version_info[:2]), "the system python3 must be this suite's Python minor version"
    subprocess.run([str(system), "-m", "venv", "--without-pip", str(where)], check=True, capture_output=True)
    site_packages = next(where.glob("lib/python3*/site-packages"))
    paths = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site_packages / "suite.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in paths))
    world_readable(where)
    return where / "bin" / "python"


def test_samples_run_as_an_unprivileged_user_from_a_private_copy(stack_root):
    client = "fs-samples"
    _installed(client, SERVER="shared")
    paths = client_paths(client)
    runner = paths.samples_dir / "run_all.py"
    runner.write_text(PROBE.replace("CLIENT_TREE", str(paths.component_dir)))
    before = sorted(p.name for p in paths.samples_dir.rglob("*"))
    base = stack_root.parent / "fs-venvs"
    base.mkdir(exist_ok=True)
    os.chmod(base, 0o755)  # whatever umask an in-process CLI call left this test process with
    python = _shared_venv(base / "open")

    result = _cli("test", "--samples", python=str(python), CLIENT_ID=client)
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    assert f"probe user {SAMPLES_USER} {SAMPLES_USER}\nprobe root group False" in out, out
    assert "probe client tree closed" in out and f"probe env {SAMPLES_USER} 0o600" in out, out
    copy = Path(out.split("probe dir ", 1)[1].split("\n", 1)[0])
    assert paths.component_dir not in copy.parents and not copy.exists(), "the private copy is inside the tree or was left behind"
    assert "connecting as" in out and "PASS" in out, out  # quickstart ran, as that user, against the tenant
    assert sorted(p.name for p in paths.samples_dir.rglob("*")) == before  # nothing written into the client's tree
    user = pwd.getpwnam(SAMPLES_USER)
    assert user.pw_uid != 0 and user.pw_shell.endswith("nologin")

    closed = base / "closed"  # the same venv behind a 0700 directory: that user cannot run it
    closed.mkdir(mode=0o700, exist_ok=True)
    os.chmod(closed, 0o700)
    hidden = _shared_venv(closed / "venv")
    refused = _cli("test", "--samples", python=str(hidden), CLIENT_ID=client)
    error = refused.stderr.strip()
    assert refused.returncode != 0 and "probe user" not in refused.stdout, refused.stdout
    assert error.startswith(f"error: The samples run as the unprivileged user {SAMPLES_USER}, "
                            f"which cannot run this installer's Python {hidden}"), error
    assert f"({closed} is closed to other users)" in error and "\n" not in error, error
