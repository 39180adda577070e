"""make pgvector-cluster, -cluster-status, -cluster-switchover, -cluster-remove: a Patroni cluster's own life,
apart from any client (clients go onto it with make pgvector ENGINE=patroni CLUSTER=<name>)."""

from __future__ import annotations

import contextlib

from .. import log
from ..engines.patroni import PatroniEngine, cluster
from ..engines.patroni.layout import ClusterLayout
from ..errors import InputError, UserError
from ..locks import client_lock
from ..report import Report
from ..runner import apply
from ..spec import cluster as cluster_name, log_from_env, root_from_env
from ..system import ensure_dir


def layout(name: str) -> ClusterLayout:
    return ClusterLayout(cluster_name(name), root_from_env() / "pgvector")


@contextlib.contextmanager
def _operation(lay: ClusterLayout, command: str, dry_run: bool = False):
    """The cluster's lock (the same one installs onto the cluster hold) and the component log's start and outcome."""
    with log.bound(log_from_env(), f"cluster:{lay.name}"):
        if dry_run:
            yield
            return
        for folder, mode in ((lay.state_dir.parent, 0o755), (lay.state_dir, 0o711), (lay.state_dir / "locks", 0o700)):
            ensure_dir(folder, mode)  # as every operation makes them (runner.operation)
        with client_lock(lay.state_dir / "locks" / f"cluster-{lay.name}.lock", wait_seconds=300):
            log.event(f"{command} start")
            try:
                yield
            except BaseException as exc:
                log.event(f"{command} stopped: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                raise
            log.event(f"{command} done")


def converge(name: str, with_deps: bool, synchronous: bool, dry_run: bool) -> Report:
    lay = layout(name)
    report = Report(dry_run=dry_run)
    with _operation(lay, "cluster", dry_run):
        record = cluster.read_record(lay)
        from ..inventory import RESERVED, external_servers

        if record is None and (lay.name in RESERVED or lay.name in external_servers(lay.state_dir)):
            raise InputError(f"CLUSTER={lay.name} is taken (shared, dedicated, auto and the named servers' names are: "
                             "SERVER= and TO= would not know which is meant): choose another. Nothing was created.")
        if record is not None and record["synchronous"] != synchronous:
            raise UserError(f"Cluster {lay.name} was made with SYNC={str(record['synchronous']).lower()}: changing it "
                            "in place is not offered yet. Nothing was changed.")
        apply(cluster.plan(lay, cluster.observe(lay), with_deps, synchronous), report, dry_run)
    return report


def status(name: str) -> dict:
    return cluster.status(layout(name))


def switchover(name: str, candidate: str | None) -> str:
    lay = layout(name)
    with _operation(lay, "switchover"):
        return cluster.switchover(lay, candidate or None)


def remove(name: str) -> None:
    """Only once no client (installed or suspended) records the cluster."""
    from .listing import listing

    lay = layout(name)
    with _operation(lay, "cluster-remove"):
        if cluster.read_record(lay) is None and not lay.home.exists():
            raise UserError(f"Cluster {lay.name} does not exist on this host: nothing to remove.")
        tenants = [row.client_id for row in listing(lay.state_dir.parent)
                   if row.engine == PatroniEngine.name and row.server == lay.name]
        if tenants:
            raise UserError(f"Cluster {lay.name} still holds {', '.join(tenants)}: uninstall them first "
                            "(make pgvector-uninstall CLIENT_ID=...). Nothing was removed.")
        cluster.remove(lay)
