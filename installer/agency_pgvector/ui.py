"""Rich rendering, imported only by commands that print tables.

Cells are plain data, never markup: a str becomes a rich Text as it is (cleaned by text.clean, newlines kept),
so a tenant's table named `[red]x` or a value like `[hnsw]` prints literally. Colour is given explicitly with
styled(); titles are Text too.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .report import Report
from .text import clean

_STYLE = {"created": "green", "changed": "yellow", "ok": "dim", "would create": "green", "would change": "yellow"}


def styled(value: object, style: str = "") -> Text:
    """One cell or part of one: `value` as plain text (no markup), control characters made visible, in `style`."""
    return Text(clean(value, keep="\n"), style=style)


def joined(parts: Sequence[Text | str], separator: str = "\n") -> Text:
    """Parts side by side (each already a Text keeps its style; a str is cleaned with its newlines made visible)."""
    return Text(separator).join(part if isinstance(part, Text) else Text(clean(part)) for part in parts)


def _cell(value: Text | str) -> Text:
    return value if isinstance(value, Text) else styled(value)


def report_table(report: Report, title: str, verbose: bool = False) -> None:
    table = Table(title=styled(title), show_lines=False)
    table.add_column("item")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    for row in report.rows:
        status = report.status(row)
        detail = styled(row.detail)
        if verbose and row.statements:
            detail = joined([detail, *(styled(line, "dim") for line in row.statements)])
        table.add_row(styled(row.item), styled(status, _STYLE.get(status, "")), detail)
    Console().print(table)


def progress(quiet: bool):
    """A callable that shows a spinner line for a long step (nothing for --quiet or when not on a terminal)."""
    import contextlib
    import sys

    if quiet or not sys.stdout.isatty():
        return contextlib.nullcontext
    console = Console()
    return lambda message: console.status(Text(clean(message)))


def key_values(title: str, rows: list[tuple[str, Text | str]]) -> None:
    table = Table(title=styled(title), show_header=False)
    table.add_column("", style="bold")
    table.add_column("", overflow="fold")
    for key, value in rows:
        table.add_row(_cell(key), _cell(value))
    Console().print(table)


def rows_table(title: str, columns: list[str], rows: list[list[Text | str]]) -> None:
    table = Table(title=styled(title))
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(value) for value in row))
    Console().print(table)
