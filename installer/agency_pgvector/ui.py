"""Rich rendering, imported only by commands that print tables.

Cells are plain data, never markup: a str becomes a rich Text as it is (cleaned by text.clean, newlines kept),
so a tenant's table named `[red]x` or a value like `[hnsw]` prints literally. Colour is given explicitly with
styled(); titles are Text too.

80 columns: short columns (names, states, addresses) never wrap, the one free-text column wraps between words, and
a long path or address in a cell (LONG characters or more) is replaced by a mark like (1), the path itself printed
whole on its own line under the table, where nothing breaks it. Only a long word that is neither is folded.
"""

from __future__ import annotations

import re
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


LONG = 30
_WORD = r"[^\s,;()]"
_LONG_WORD = re.compile(rf"(?<!\S)(?:/{_WORD}{{{LONG - 1},}}|(?={_WORD}*(?:@|://)){_WORD}{{{LONG},}})")  # a path, an address


class _Notes:
    """The long paths and addresses taken out of a table's cells, printed under it."""

    def __init__(self) -> None:
        self.values: list[str] = []

    def __call__(self, value: str) -> str:
        def mark(match: re.Match) -> str:
            self.values.append(match.group(0))
            return f"({len(self.values)})"

        return _LONG_WORD.sub(mark, value)

    def print(self) -> None:
        for number, value in enumerate(self.values, 1):
            print(f"({number}) {clean(value)}")


def _cell(value: Text | str, notes: _Notes | None = None) -> Text:
    if isinstance(value, Text):  # a long path in it: the cell keeps its own style, not its parts' (rare: problems)
        long = notes is not None and _LONG_WORD.search(value.plain)
        return Text(notes(value.plain), style=value.style or _first_style(value)) if long and notes else value
    return styled(notes(value) if notes else value)


def _first_style(text: Text) -> str:
    return next((str(span.style) for span in text.spans if span.style), "")


def report_table(report: Report, title: str, verbose: bool = False) -> None:
    table = Table(title=styled(title), show_lines=False)
    table.add_column("item", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", ratio=1, overflow="fold")
    notes = _Notes()
    for row in report.rows:
        status = report.status(row)
        detail = styled(notes(row.detail))
        if verbose and row.statements:
            detail = joined([detail, *(styled(line, "dim") for line in row.statements)])
        table.add_row(styled(row.item), styled(status, _STYLE.get(status, "")), detail)
    Console().print(table)
    notes.print()


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
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("", ratio=1, overflow="fold")
    notes = _Notes()
    for key, value in rows:
        table.add_row(_cell(key), _cell(value, notes))
    Console().print(table)
    notes.print()


def long_values(rows: list[tuple[str, str]]) -> None:
    """`key: value` lines under a table, for paths too long for a cell: printed whole, never wrapped by us."""
    for key, value in rows:
        print(f"{clean(key)}: {clean(value)}")


def rows_table(title: str, columns: list[str], rows: list[list[Text | str]], wrap: int = -1) -> None:
    """Column `wrap` (default the last) takes the room left and wraps between words; the others never wrap."""
    table = Table(title=styled(title))
    free = wrap % len(columns)
    for index, column in enumerate(columns):
        if index == free:
            table.add_column(column, ratio=1, overflow="fold")
        else:
            table.add_column(column, no_wrap=True)
    notes = _Notes()
    for row in rows:
        table.add_row(*(_cell(value, notes) for value in row))
    Console().print(table)
    notes.print()
