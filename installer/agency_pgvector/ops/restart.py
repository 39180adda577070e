"""make pgvector-restart: graceful restart, then wait until the tenant itself can log in."""

from __future__ import annotations

import time

from ..errors import UserError
from .common import Client, first_line, tenant_connect


def restart(client: Client, timeout: float = 60.0) -> float:
    """Restart the client's server; returns the seconds until the tenant could log in again."""
    started = time.monotonic()
    client.engine.restart()
    wait_for_tenant(client, timeout)
    return time.monotonic() - started


def wait_for_tenant(client: Client, timeout: float = 60.0) -> None:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            tenant_connect(client).close()
            return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
            time.sleep(0.1)
    raise UserError(f"The server is up but {client.tenant.role} cannot log in "
                    f"({first_line(last)}): run make pgvector-status CLIENT_ID={client.id}.")
