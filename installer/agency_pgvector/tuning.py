"""Server settings for vector work, sized to the host and overridable one by one (PG_<SETTING>=value).

One server per client is the default and a host is meant to hold about DENSITY of them, so what a server
keeps for itself is sized for that many; what a server only borrows while it works is sized for one
at a time. Measured with `make bench` (docs/benchmarks.md):

- shared_buffers stays resident once touched (shared memory, never reclaimed; these hosts have no swap),
  so DENSITY dedicated servers share a quarter of the memory, never below PostgreSQL's own 128MB. More
  costs memory even idle: on 24 GiB, 768MB (the former 1/32) took 53 MiB PSS per idle server with one
  tenant, 128MB 29 MiB, and 100 busy servers could pin 75 GiB.
  The OS page cache, shared by all servers and reclaimable, caches the rest. A shared server (one for
  every client) takes the usual quarter of the host.
- maintenance_work_mem is what makes HNSW builds fast: while the graph fits, pgvector builds it in
  memory; past it ("hnsw graph no longer fits into maintenance_work_mem") it is several times slower.
  It is only borrowed during CREATE INDEX / VACUUM, but a parallel build takes all of it at once as
  dynamic shared memory (/dev/shm), so a sixteenth of the host: sixteen builds at once still fit.
- max_parallel_maintenance_workers: cores - 1 workers plus the leader keep every core busy on a build.
- effective_cache_size is a planner hint (what the OS cache may hold), work_mem per sort/hash node and
  per iterative index scan (hnsw.scan_mem_multiplier x work_mem).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

MB = 1024 * 1024
DENSITY = 100  # dedicated servers a host is sized for (the AgencyStack default: one server per client)
_SIZE = re.compile(r"[0-9]{1,9}(kB|MB|GB)?")


def host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _mb(value: int) -> str:
    return f"{value // MB}MB"


def settings(memory: int | None = None, cores: int | None = None, env: Mapping[str, str] | None = None,
             shared: bool = False) -> dict[str, str]:
    """The settings for one server; `shared` when it holds every client of the host (SERVER=shared)."""
    memory = memory or host_memory()
    cores = cores or os.cpu_count() or 1
    env = os.environ if env is None else env
    servers = 1 if shared else DENSITY
    values = {
        "shared_buffers": _mb(_clamp(memory // 4 // servers, 128 * MB, 8192 * MB)),
        "effective_cache_size": _mb(_clamp(memory * 3 // 4 if shared else memory // 4, 512 * MB, 32768 * MB)),
        "maintenance_work_mem": _mb(_clamp(memory // 16, 256 * MB, 2048 * MB)),
        "work_mem": _mb(_clamp(memory // 1024, 8 * MB, 64 * MB)),
        "max_parallel_maintenance_workers": str(max(0, cores - 1)),
        "max_parallel_workers_per_gather": str(max(1, cores // 2)),
        "max_worker_processes": str(max(8, cores)),
        "max_parallel_workers": str(max(2, cores)),
    }
    for name in values:
        override = env.get(f"PG_{name.upper()}")
        if override:
            if not _SIZE.fullmatch(override):
                from .errors import InputError

                raise InputError(f"PG_{name.upper()}={override[:40]!r} is not a number or size: "
                                 f"use e.g. PG_{name.upper()}=512MB.")
            values[name] = override
    return values


def size_bytes(value: str) -> int:
    match = re.fullmatch(r"([0-9]+)(kB|MB|GB)?", value)
    if match is None:
        raise ValueError(f"{value!r} is not a size in 8 kB pages, kB, MB or GB")
    number, unit = match.groups()
    return int(number) * {None: 8192, "kB": 1024, "MB": MB, "GB": 1024 * MB}[unit]
