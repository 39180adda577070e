"""How every command that changes state runs: observe -> plan -> apply, inside one operation.

    with operation(spec, "install"):          # log bound to the client, the client's lock held, outcome logged
        steps = engine.plan_server(engine.observe())   # pure: what is, what must change
        apply(steps, report, spec.dry_run)     # runs each step that is not ok; a dry run only records them

A plan is a list of Steps. A step that changes something carries `run` (server work: files, processes,
containers) or `statements` (tenant SQL, applied by provision.apply); a dry run shows the same list the
real run executes, so its exit status means what the real run's would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from . import log
from .errors import UserError
from .locks import client_lock
from .report import OK, Report
from .spec import Spec
from .text import first_line


@dataclass
class Step:
    item: str
    action: str  # report.CREATE / CHANGE / OK
    detail: str = ""
    statements: list = field(default_factory=list)  # tenant SQL: (sql.Composable, params or None)
    database: str = "postgres"  # where the statements run
    run: Callable[[], object] | None = None  # server work; None when the step has nothing to run

    @property
    def pending(self) -> bool:
        return self.action != OK


def apply(steps: list[Step], report: Report, dry_run: bool) -> None:
    """Run the server steps in order and record each (after it ran, so a failed step is never reported done)."""
    for step in steps:
        if step.pending and step.run is not None and not dry_run:
            step.run()
        report.add(step.item, step.action, step.detail)


@contextlib.contextmanager
def operation(spec: Spec, command: str, *, dry_run: bool = False, lock: bool = True) -> Iterator[None]:
    """The frame of a state-changing command: the component log names this client, the client's lock is held
    (re-entrant: rotate runs install inside its own operation), start and outcome are logged, and an
    unexpected error leaves its full traceback in the log. A dry run takes no lock and writes no log."""
    with log.bound(spec.log_file, spec.client_id):
        if dry_run:
            yield
            return
        _state_dirs(spec)
        with client_lock(spec.paths.lock_file) if lock else contextlib.nullcontext():
            log.event(f"{command} start")
            try:
                yield
            except UserError as exc:
                log.event(f"{command} stopped: {first_line(exc)}")
                raise
            except BaseException as exc:
                log.event(f"{command} failed: {type(exc).__name__}: {first_line(exc)}")
                log.traceback_lines(exc)
                _traced.append(exc)
                raise
            log.event(f"{command} done")


_traced: list[BaseException] = []  # errors whose traceback an operation wrote to the component log


def traced(exc: BaseException) -> bool:
    """Did an operation already write this error's traceback to the component log? (the CLI then does not)"""
    return any(exc is seen for seen in _traced)


def _state_dirs(spec: Spec) -> None:
    """The root and the installer's own state directory (locks, port registry, secrets, server configs)."""
    from .system import ensure_dir

    paths = spec.paths
    for folder, mode in ((paths.root, 0o755), (paths.state_dir, 0o711)):
        ensure_dir(folder, mode)
