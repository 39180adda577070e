"""Rich rendering, imported only by commands that print tables."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
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
        detail = row.detail
        if verbose and row.statements:
            detail += "".join(f"\n[dim]{escape(line)}[/]" for line in row.statements)
        table.add_row(row.item, f"[{_STYLE.get(status, '')}]{status}[/]", detail)
    Console().print(table)


def progress(quiet: bool):
    """A callable that shows a spinner line for a long step (nothing for --quiet or when not on a terminal)."""
    import contextlib
    import sys

    if quiet or not sys.stdout.isatty():
        return contextlib.nullcontext
    console = Console()
    return lambda message: console.status(message)


def key_values(title: str, rows: list[tuple[str, str]]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("", overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)


def rows_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)
