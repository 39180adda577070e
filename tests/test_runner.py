"""runner.py: apply (runs what is pending, a dry run records the same rows and runs nothing) and operation (the log
bound to the client, the client's lock held and re-entrant, outcome and tracebacks logged). No server, no root paths:
a throw-away AGENCY_STACK_ROOT and AGENCY_STACK_LOG under pytest's tmp_path (root's own, so a trusted chain)."""

from __future__ import annotations

import fcntl
import functools
import os
import stat

import pytest

from agency_pgvector import locks, log, runner, spec
from agency_pgvector.errors import BUSY, Busy, UserError
from agency_pgvector.report import CHANGE, CREATE, OK, Report
from agency_pgvector.runner import Step, apply, operation


def _steps(ran: list) -> list[Step]:
    return [Step("a", OK, "as it should be", run=lambda: ran.append("a")),
            Step("b", CREATE, "made", run=lambda: ran.append("b")),
            Step("c", CHANGE, "nothing to run"),
            Step("d", CHANGE, "changed", run=lambda: ran.append("d"))]


def _rows(report: Report) -> list[tuple[str, str, str]]:
    return [(row.item, row.action, row.detail) for row in report.rows]


def test_apply_runs_each_pending_step_in_order_and_records_every_step():
    ran: list = []
    report = Report()
    apply(_steps(ran), report, dry_run=False)
    assert ran == ["b", "d"]
    assert _rows(report) == [("a", OK, "as it should be"), ("b", CREATE, "made"), ("c", CHANGE, "nothing to run"),
                             ("d", CHANGE, "changed")]
    assert report.changed


def test_a_dry_run_runs_nothing_and_records_the_same_rows():
    ran: list = []
    real, dry = Report(), Report(dry_run=True)
    apply(_steps(ran), real, dry_run=False)
    ran.clear()
    apply(_steps(ran), dry, dry_run=True)
    assert ran == []
    assert _rows(dry) == _rows(real)
    assert [dry.status(row) for row in dry.rows] == ["ok", "would create", "would change", "would change"]


def test_a_step_that_fails_is_not_recorded_and_nothing_after_it_runs():
    ran: list = []

    def boom():
        raise OSError("disk full")

    steps = _steps(ran)
    steps.insert(2, Step("broken", CHANGE, "fails", run=boom))
    report = Report()
    with pytest.raises(OSError, match="disk full"):
        apply(steps, report, dry_run=False)
    assert ran == ["b"]
    assert [row.item for row in report.rows] == ["a", "b"]


# -- operation ----------------------------------------------------------------------------------------------------

@pytest.fixture
def stack(tmp_path, monkeypatch):
    """A root and a log of our own; returns a function that builds a client's Spec the way the CLI does."""
    monkeypatch.setenv("AGENCY_STACK_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("AGENCY_STACK_LOG", str(tmp_path / "log" / "pgvector.log"))
    monkeypatch.delenv("PGVECTOR_IMAGE", raising=False)
    return lambda client_id: spec.build(client_id, require_contact=False)


def _log(spec_: spec.Spec) -> list[tuple[str, str]]:
    """(client, message) for each line of the component log."""
    if not spec_.log_file.exists():
        return []
    lines = []
    for line in spec_.log_file.read_text().splitlines():
        stamp, program, client, message = line.split(" ", 3)
        assert program == f"pgvector[{os.getpid()}]" and client.startswith("client=")
        lines.append((client.removeprefix("client="), message))
    return lines


def test_each_operation_logs_under_its_own_client_nested_or_one_after_the_other(stack):
    a, b = stack("unit-a"), stack("unit-b")
    with operation(a, "install"):
        log.event("a first")
        with operation(b, "install"):
            log.event("b inside a")
        log.event("a again")
    with operation(b, "rotate"):
        log.event("b alone")
    log.event("outside any operation")  # no client bound: not written anywhere
    assert _log(a) == [("unit-a", "install start"), ("unit-a", "a first"), ("unit-b", "install start"),
                       ("unit-b", "b inside a"), ("unit-b", "install done"), ("unit-a", "a again"),
                       ("unit-a", "install done"), ("unit-b", "rotate start"), ("unit-b", "b alone"),
                       ("unit-b", "rotate done")]


def test_report_rows_that_change_something_are_logged_for_the_bound_client(stack):
    a = stack("unit-a")
    with operation(a, "install"):
        apply([Step("role", CREATE, "login"), Step("config", OK)], Report(), dry_run=False)
        apply([Step("server", CHANGE, "restart")], Report(dry_run=True), dry_run=True)
    assert _log(a) == [("unit-a", "install start"), ("unit-a", "created role: login"), ("unit-a", "install done")]


def test_the_operators_error_is_logged_as_stopped_and_raised_unchanged(stack):
    a = stack("unit-a")
    with pytest.raises(UserError, match="fix this") as err, operation(a, "install"):
        raise UserError("fix this\nand more detail")
    assert err.value.exit_code == 3
    assert _log(a) == [("unit-a", "install start"), ("unit-a", "install stopped: fix this")]


def test_an_unexpected_error_leaves_its_full_traceback_in_the_log(stack):
    a = stack("unit-a")

    def deep():
        raise KeyError("where it broke")

    with pytest.raises(KeyError), operation(a, "upgrade"):
        deep()
    lines = _log(a)
    assert lines[:2] == [("unit-a", "upgrade start"), ("unit-a", "upgrade failed: KeyError: 'where it broke'")]
    rest = [message for _, message in lines[2:]]
    assert rest[0] == "  Traceback (most recent call last):" and rest[-1] == "  KeyError: 'where it broke'"
    assert any("in deep" in message for message in rest)


def test_an_operation_makes_the_state_directories_with_their_modes(stack):
    a = stack("unit-a")
    with operation(a, "install"):
        assert a.paths.lock_file.exists()
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in (a.paths.root, a.paths.state_dir, a.paths.lock_file.parent)}
    assert modes == {a.paths.root: 0o755, a.paths.state_dir: 0o711, a.paths.lock_file.parent: 0o700}
    assert stat.S_IMODE(a.paths.lock_file.stat().st_mode) == 0o600


def test_a_dry_run_takes_no_lock_and_writes_nothing(stack):
    a = stack("unit-a")
    ran: list = []
    with operation(a, "install", dry_run=True):
        apply(_steps(ran), Report(dry_run=True), dry_run=True)
    assert ran == []
    assert not a.paths.root.exists() and not a.log_file.exists()


@pytest.fixture
def short_wait(monkeypatch):
    """operation() waits up to 60 s for a held lock: 0.3 s here, so a test that would wait fails fast."""
    monkeypatch.setattr(runner, "client_lock", functools.partial(locks.client_lock, wait_seconds=0.3))


def test_an_operation_inside_another_for_the_same_client_does_not_wait_for_itself(stack, short_wait):
    a = stack("unit-a")
    with operation(a, "rotate"), operation(a, "install"):
        log.event("inside both")
    assert [m for _, m in _log(a)] == ["rotate start", "install start", "inside both", "install done", "rotate done"]


@pytest.fixture
def held(stack):
    """Client unit-a's lock held through another open file description (as another process would hold it)."""
    a = stack("unit-a")
    with operation(a, "install"):  # makes the directories and the lock file
        pass
    fd = os.open(a.paths.lock_file, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    yield a
    os.close(fd)


def test_a_client_locked_by_another_run_is_busy(held, stack, short_wait):
    with pytest.raises(Busy, match="Another run for this client still holds") as err, operation(held, "install"):
        pytest.fail("ran while another run held the lock")
    assert err.value.exit_code == BUSY == 75
    with operation(stack("unit-b"), "install"):  # another client is not held up
        pass
    with operation(held, "status", lock=False):  # nor is a command that takes no lock
        pass
    with operation(held, "install", dry_run=True):  # nor a dry run
        pass
