"""Rich rendering, imported only by commands that print tables."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .report import Report

_STYLE = {"created": "green", "changed": "yellow", "ok": "dim", "would create": "green", "would change": "yellow"}


def report_table(report: Report, title: str, verbose: bool = False) -> None:
    table = Table(title=title, show_lines=False)
    table.add_column("item")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    for row in report.rows:
        status = report.status(row)
        table.add_row(row.item, f"[{_STYLE.get(status, '')}]{status}[/]", row.detail)
    Console().print(table)
