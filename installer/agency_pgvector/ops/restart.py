"""make pgvector-restart: graceful restart, then wait until the tenant itself can log in."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .. import envfile, log, pooler
from ..engines import require
from ..errors import UserError
from ..runner import operation
from .common import Client, first_line, installed_clients, tenant_connect


@dataclass
class Restarted:
    """to_json() is the documented shape (docs/json.md)."""

    client_id: str
    engine: str
    role: str
    seconds: float  # from the restart until the tenant could log in again
    pooler: str = "none"  # started (it was down), running (left as it was: it serves other clients too), none

    def to_json(self) -> dict:
        return {"client_id": self.client_id, "engine": self.engine, "seconds": round(self.seconds, 3), "pooler": self.pooler}


def restart(client: Client, timeout: float = 60.0) -> Restarted:
    """Restart the client's server (under the client's lock), start its pooler if it is down (a running one is left
    alone: on the shared server it holds the other clients' sessions), and wait until the tenant can log in again."""
    require(client.engine, "restart")
    with operation(client.spec, "restart"):
        started = time.monotonic()
        client.engine.restart()
        wait_for_tenant(client, timeout)
        pool = pooler.for_engine(client.engine)
        state = "none"
        if pool.port() is not None:
            with pool.lock():
                state = "running" if pool.running() else "started"
                if state == "started":
                    pool.start()
        seconds = time.monotonic() - started
        log.event(f"restarted server; tenant login after {seconds:.2f} s; pooler {state}")
    return Restarted(client.id, client.engine.name, client.tenant.role, seconds, state)


def sharing(client: Client) -> list[str]:
    """The other installed clients on the client's server when it is a shared one: a restart ends their sessions too."""
    from .. import spec as specs

    if not client.engine.capabilities.shared:
        return []
    server = (client.env.get("PGVECTOR_ENGINE"), client.env.get("PGVECTOR_SERVER"))
    out = []
    for name in installed_clients(client.spec.root):
        try:
            env = envfile.read(specs.Paths(client.spec.root, name).env_file)
        except UserError:  # that client's own status says what is wrong with its tree
            continue
        if name != client.id and (env.get("PGVECTOR_ENGINE"), env.get("PGVECTOR_SERVER")) == server:
            out.append(name)
    return out


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
