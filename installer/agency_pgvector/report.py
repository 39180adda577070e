"""What a run did (or would do), one row per item: created / changed / ok."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import log

CREATE, CHANGE, OK = "create", "change", "ok"
_PAST = {CREATE: "created", CHANGE: "changed", OK: "ok"}
_FUTURE = {CREATE: "would create", CHANGE: "would change", OK: "ok"}


@dataclass
class Row:
    item: str
    action: str
    detail: str = ""
    statements: list[str] = field(default_factory=list)


@dataclass
class Report:
    dry_run: bool = False
    rows: list[Row] = field(default_factory=list)

    def add(self, item: str, action: str, detail: str = "", statements: list[str] | None = None) -> None:
        self.rows.append(Row(item, action, detail, statements or []))
        if not self.dry_run and action != OK:
            log.event(f"{_PAST[action]} {item}" + (f": {detail}" if detail else ""))

    def status(self, row: Row) -> str:
        return (_FUTURE if self.dry_run else _PAST)[row.action]

    @property
    def changed(self) -> bool:
        return any(row.action != OK for row in self.rows)
