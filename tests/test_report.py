"""report.py: one row per item (created / changed / ok), said in the future tense on a dry run, and logged only when
something really changed."""

from __future__ import annotations

from agency_pgvector import log
from agency_pgvector.report import CHANGE, CREATE, OK, Report, Row


def _fill(report: Report) -> Report:
    report.add("role", CREATE, "login", ["CREATE ROLE ..."])
    report.add("settings", CHANGE)
    report.add("extension", OK, "0.8.5")
    return report


def test_rows_keep_what_was_added_in_order():
    assert _fill(Report()).rows == [Row("role", CREATE, "login", ["CREATE ROLE ..."]), Row("settings", CHANGE, "", []),
                                    Row("extension", OK, "0.8.5", [])]


def test_status_is_past_for_a_run_and_future_for_a_dry_run():
    real, dry = _fill(Report()), _fill(Report(dry_run=True))
    assert [real.status(row) for row in real.rows] == ["created", "changed", "ok"]
    assert [dry.status(row) for row in dry.rows] == ["would create", "would change", "ok"]


def test_changed_is_true_when_any_row_is_not_ok():
    report = Report()
    report.add("a", OK)
    assert not report.changed and not Report().changed
    report.add("b", CHANGE)
    assert report.changed


def test_only_real_changes_reach_the_log(tmp_path):
    path = tmp_path / "log" / "pgvector.log"
    with log.bound(path, "rep-a"):
        _fill(Report(dry_run=True))
        assert not path.exists()
        _fill(Report())
    messages = [line.split(" ", 3)[3] for line in path.read_text().splitlines()]
    assert messages == ["created role: login", "changed settings"]
    assert all(" client=rep-a " in line for line in path.read_text().splitlines())


def test_once_the_client_is_unbound_nothing_more_is_logged(tmp_path):
    path = tmp_path / "pgvector.log"
    with log.bound(path, "rep-a"):
        Report().add("inside", CREATE)
    Report().add("outside", CREATE)
    assert [line.split(" ", 3)[3] for line in path.read_text().splitlines()] == ["created inside"]
