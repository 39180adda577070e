"""make pgvector-test SAMPLES=true: run the client's samples, never as root.

They run as the system user agency-samples, from a private copy (0700, owned by that user) of the client's
samples/ and .env in a temporary directory that is removed afterwards: whatever the samples do, they do with
that user's rights and the tenant's credentials only, and nothing they leave reaches the client's tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .. import envfile
from ..errors import UserError
from ..system import require_trusted, run as run_as, system_user, unreachable_ancestor
from .common import Client

SAMPLES_USER = "agency-samples"
PASSED_ON = ("PATH", "LANG", "LC_ALL", "TZ", "TERM")  # plus the samples' own knobs below; nothing else of root's
KNOBS = ("SAMPLES_", "BULK_", "BENCH_", "HF_", "TRANSFORMERS_")


def run(client: Client, quiet: bool) -> bool:
    """run_all.py from the private copy; True when every sample passed."""
    source = client.spec.paths.samples_dir
    require_trusted(source)
    if not (source / "run_all.py").is_file():
        raise UserError(f"No samples in {source}: re-run make pgvector CLIENT_ID={client.id} to drop them in.")
    user = system_user(SAMPLES_USER, "agency-pgvector sample runs", create=True)
    python = _interpreter(user)
    base = Path(tempfile.mkdtemp(prefix=f"agency-samples-{client.id}-"))  # root's: the user cannot rename what is in it
    try:
        os.chmod(base, 0o711)
        blocker = unreachable_ancestor(base, user)
        if blocker:
            raise UserError(f"{SAMPLES_USER} cannot reach the temporary directory {base} ({blocker} is closed to other users): "
                            "set TMPDIR to a directory every user can traverse, such as /tmp, then re-run.")
        work = base / "run"
        os.mkdir(work, 0o700)
        _copy(source, work / "samples")
        _write(work / ".env", envfile.read_bytes(client.spec.paths.env_file) or b"")  # the samples look for ../.env
        for folder, _dirs, files in os.walk(work):  # all written just now by root: no link anywhere
            for name in (folder, *(os.path.join(folder, n) for n in files)):
                os.chown(name, user.pw_uid, user.pw_gid)
        env = {k: v for k, v in os.environ.items() if k in PASSED_ON or k.startswith(KNOBS)}
        env["HOME"] = str(work)
        result = subprocess.run([python, "run_all.py"], cwd=work / "samples", env=env, user=user.pw_uid, group=user.pw_gid,
                                extra_groups=[], capture_output=quiet, text=True)
        return result.returncode == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _interpreter(user) -> str:
    """This installer's Python (the samples' packages are in its virtualenv), if `user` can run it."""
    python = sys.executable
    try:
        works = run_as([python, "-c", ""], user, check=False).returncode == 0
    except OSError:
        works = False
    if not works:
        blocker = unreachable_ancestor(Path(os.path.realpath(python)), user) or unreachable_ancestor(Path(python), user)
        why = f" ({blocker} is closed to other users)" if blocker else ""
        raise UserError(f"The samples run as the unprivileged user {SAMPLES_USER}, which cannot run this installer's Python "
                        f"{python}{why}: install the installer with a Python and virtualenv other users can read (for example "
                        "the system python3 and a checkout under /opt), then re-run.")
    return python


def _copy(source: Path, target: Path) -> None:
    """The directories and regular files of `source` (a trusted, root-only tree), never through a link."""
    for folder, dirs, files in os.walk(source):
        here = Path(folder)
        dirs[:] = [d for d in dirs if d != "__pycache__" and not (here / d).is_symlink()]
        out = target / here.relative_to(source)
        os.mkdir(out, 0o700)
        for name in files:
            data = envfile.read_nofollow(here / name)
            if isinstance(data, bytes):  # links and special files are left out
                _write(out / name, data)


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
