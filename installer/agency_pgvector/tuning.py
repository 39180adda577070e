"""Server settings for vector work, sized to the host and overridable one by one (PG_<SETTING>=value)."""

from __future__ import annotations

import os
import re

MB = 1024 * 1024
_SIZE = re.compile(r"[0-9]{1,9}(kB|MB|GB)?")


def host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _mb(value: int) -> str:
    return f"{value // MB}MB"


def settings(memory: int | None = None, cores: int | None = None, env: dict | None = None) -> dict[str, str]:
    """One server per client is the default, so each server takes a modest slice of the host."""
    memory = memory or host_memory()
    cores = cores or os.cpu_count() or 1
    env = os.environ if env is None else env
    values = {
        "shared_buffers": _mb(_clamp(memory // 32, 128 * MB, 2048 * MB)),
        "effective_cache_size": _mb(_clamp(memory // 4, 512 * MB, 16384 * MB)),
        "maintenance_work_mem": _mb(_clamp(memory // 16, 256 * MB, 2048 * MB)),
        "work_mem": _mb(_clamp(memory // 1024, 8 * MB, 64 * MB)),
        "max_parallel_maintenance_workers": str(max(1, cores - 1)),
        "max_parallel_workers_per_gather": str(max(1, cores // 2)),
        "max_worker_processes": str(max(8, cores)),
        "max_parallel_workers": str(max(2, cores)),
    }
    for name in values:
        override = env.get(f"PG_{name.upper()}")
        if override:
            if not _SIZE.fullmatch(override):
                from .errors import UserError

                raise UserError(f"PG_{name.upper()}={override[:40]!r} is not a number or size: use e.g. PG_{name.upper()}=512MB.")
            values[name] = override
    return values


def size_bytes(value: str) -> int:
    number, unit = re.fullmatch(r"([0-9]+)(kB|MB|GB)?", value).groups()
    return int(number) * {None: 8192, "kB": 1024, "MB": MB, "GB": 1024 * MB}[unit]
