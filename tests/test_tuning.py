"""tuning.py: server settings sized to the host (dedicated servers sized for DENSITY of them), overridable one by one."""

from __future__ import annotations

import pytest

from agency_pgvector import tuning
from agency_pgvector.errors import InputError, UserError

GB = 1024 * tuning.MB


@pytest.mark.parametrize("memory, cores, shared, expected", [
    pytest.param(24 * GB, 2, False, dict(  # these machines: one of a hundred dedicated servers
        shared_buffers="128MB", effective_cache_size="6144MB", maintenance_work_mem="1536MB", work_mem="24MB",
        max_parallel_maintenance_workers="1", max_parallel_workers_per_gather="1", max_worker_processes="8",
        max_parallel_workers="2"), id="24G-dedicated"),
    pytest.param(24 * GB, 2, True, dict(
        shared_buffers="6144MB", effective_cache_size="18432MB", maintenance_work_mem="1536MB", work_mem="24MB",
        max_parallel_maintenance_workers="1", max_parallel_workers_per_gather="1", max_worker_processes="8",
        max_parallel_workers="2"), id="24G-shared"),
    pytest.param(1 * GB, 1, False, dict(  # never below PostgreSQL's own floors
        shared_buffers="128MB", effective_cache_size="512MB", maintenance_work_mem="256MB", work_mem="8MB",
        max_parallel_maintenance_workers="0", max_parallel_workers_per_gather="1", max_worker_processes="8",
        max_parallel_workers="2"), id="1G-1core"),
    pytest.param(1024 * GB, 64, True, dict(  # and capped on a large host
        shared_buffers="8192MB", effective_cache_size="32768MB", maintenance_work_mem="2048MB", work_mem="64MB",
        max_parallel_maintenance_workers="63", max_parallel_workers_per_gather="32", max_worker_processes="64",
        max_parallel_workers="64"), id="1T-64cores-shared"),
    pytest.param(1024 * GB, 64, False, dict(
        shared_buffers="2621MB", effective_cache_size="32768MB", maintenance_work_mem="2048MB", work_mem="64MB",
        max_parallel_maintenance_workers="63", max_parallel_workers_per_gather="32", max_worker_processes="64",
        max_parallel_workers="64"), id="1T-64cores-dedicated"),
])
def test_settings_are_sized_to_the_host(memory, cores, shared, expected):
    assert tuning.settings(memory, cores, {}, shared=shared) == expected


def test_dedicated_servers_keep_a_quarter_of_the_host_between_them():
    memory = 512 * GB
    per_server = tuning.size_bytes(tuning.settings(memory, 8, {})["shared_buffers"])
    assert per_server * tuning.DENSITY <= memory // 4


def test_one_setting_can_be_overridden():
    values = tuning.settings(24 * GB, 2, {"PG_MAINTENANCE_WORK_MEM": "1GB", "PG_MAX_PARALLEL_WORKERS": "4", "PG_OTHER": "x"})
    assert values["maintenance_work_mem"] == "1GB" and values["max_parallel_workers"] == "4"
    assert values["shared_buffers"] == "128MB" and "other" not in values


@pytest.mark.parametrize("value", ["1 GB", "1TB", "-1", "512mb", "1GB; x", "1GB\nport=1", "0x10", "1234567890"])
def test_a_bad_override_is_refused_in_one_sentence(value):
    with pytest.raises(UserError, match="PG_SHARED_BUFFERS=.* is not a number or size: use e.g.") as err:
        tuning.settings(24 * GB, 2, {"PG_SHARED_BUFFERS": value})
    assert "\n" not in str(err.value)


def test_a_bad_override_is_a_usage_error():
    """PG_<SETTING> is a value given through make, like PGVECTOR_PORT_RANGE: exit 2 (errors.InputError), not 3."""
    with pytest.raises(UserError) as err:
        tuning.settings(24 * GB, 2, {"PG_WORK_MEM": "lots"})
    assert isinstance(err.value, InputError) and err.value.exit_code == 2


@pytest.mark.parametrize("value, size", [("16", 16 * 8192), ("64kB", 64 * 1024), ("128MB", 128 * tuning.MB), ("2GB", 2 * GB)])
def test_size_bytes_reads_postgresql_units(value, size):
    assert tuning.size_bytes(value) == size


@pytest.mark.parametrize("value", ["", "1TB", "1 MB", "MB", "-1MB"])
def test_size_bytes_refuses_what_is_not_a_size(value):
    with pytest.raises(ValueError):
        tuning.size_bytes(value)
