"""make pgvector-cluster, -cluster-status, -cluster-switchover, -cluster-remove: a Patroni cluster's own life,
apart from any client (clients go onto it with make pgvector ENGINE=patroni CLUSTER=<name>)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
from pathlib import Path

from .. import log
from ..engines.patroni import PatroniEngine, cluster
from ..engines.patroni.layout import ClusterLayout
from ..errors import InputError, UserError
from ..locks import client_lock
from ..report import CHANGE, Report
from ..runner import apply
from ..spec import cluster as cluster_name, log_from_env, root_from_env
from ..system import ensure_dir, run


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


def where(given: str) -> cluster.Where:
    """ADDRESS: "" or 127.0.0.1 is the single-host cluster on loopback; another address must be one of this host's,
    and the network it sits in (its interface's prefix) is the one other members may join from."""
    if given in ("", cluster.LOOPBACK):
        return cluster.Where()
    try:
        wanted = ipaddress.IPv4Address(given)
    except ValueError:
        raise InputError(f"ADDRESS={given} is not an IPv4 address: give this host's address on the network the "
                         "members share (ip -4 addr shows them). Nothing was created.") from None
    for link in _addresses():
        if link.ip == wanted and not wanted.is_loopback:
            return cluster.Where(str(wanted), str(link.network))
    raise InputError(f"ADDRESS={given} is not an address of this host (ip -4 addr shows them): the members listen on "
                     "it. Nothing was created.")


def _addresses() -> list[ipaddress.IPv4Interface]:
    result = run(["ip", "-j", "-4", "addr", "show"], check=False) if shutil.which("ip") else None
    try:
        return [ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}") for link in json.loads(result.stdout)
                for a in link.get("addr_info", []) if a.get("local")] if result and result.returncode == 0 else []
    except (ValueError, TypeError, KeyError):
        return []


def converge(name: str, with_deps: bool, synchronous: bool, dry_run: bool, address: str = "") -> Report:
    lay = layout(name)
    report = Report(dry_run=dry_run)
    with _operation(lay, "cluster", dry_run):
        record = cluster.read_record(lay)
        if record is not None and record.get("joined"):
            address = address or cluster.address(record)  # this host's member: started if it is not running
        place = where(address)
        from ..inventory import RESERVED, external_servers

        if record is None and (lay.name in RESERVED or lay.name in external_servers(lay.state_dir)):
            raise InputError(f"CLUSTER={lay.name} is taken (shared, dedicated, auto and the named servers' names are: "
                             "SERVER= and TO= would not know which is meant): choose another. Nothing was created.")
        if record is not None and record["synchronous"] != synchronous:
            raise UserError(f"Cluster {lay.name} was made with SYNC={str(record['synchronous']).lower()}: changing it "
                            "in place is not offered yet. Nothing was changed.")
        if record is not None and address and cluster.address(record) != place.address:
            raise UserError(f"Cluster {lay.name} listens on {cluster.address(record)}: moving it to ADDRESS={address} "
                            "is not offered. Nothing was changed.")
        apply(cluster.plan(lay, cluster.observe(lay), with_deps, synchronous, place), report, dry_run)
        if not dry_run:
            for member in cluster.learn_remote(lay):
                found = cluster.reach(cluster.read_record(lay) or {})[member]
                report.add(f"member {member}", CHANGE, f"on {found[0]}:{found[1]}, another host: re-run make pgvector "
                           "for each client on the cluster to list it in their .env")
    return report


def bundle(name: str, host: str) -> tuple[str, Path]:
    lay = layout(name)
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise InputError(f"HOST={host or '(empty)'} is not an IPv4 address: give the joining host's address on the "
                         "cluster's network, e.g. HOST=10.0.0.12. Nothing was written.") from None
    with _operation(lay, "cluster-bundle"):
        return cluster.bundle(lay, host)


BUNDLE_KEYS = {"cluster": str, "member": str, "address": str, "network": str, "etcd": list, "synchronous": bool,
               "patroni": str, "runtime": str, "ca": str, "cert": str, "key": str, "secrets": dict}


def read_bundle(name: str, path: str, endpoints: str) -> dict:
    """The join bundle made on the cluster's first host, checked before anything is made here: its shape, that it is
    this cluster's, that its address is this host's, that this installer runs its Patroni and PostgreSQL."""
    from ..engines.embedded import runtime

    if not path:
        raise InputError("BUNDLE is required: make pgvector-cluster-bundle CLUSTER=... HOST=<this host> on the "
                         "cluster's first host writes it; copy it here (scp, 0600), then BUNDLE=<its path>.")
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"BUNDLE={path} cannot be read as a join bundle ({type(exc).__name__}): copy it again from "
                         "the cluster's first host. Nothing was created.") from None
    wrong = [k for k, kind in BUNDLE_KEYS.items() if not isinstance(doc.get(k) if isinstance(doc, dict) else None, kind)]
    if wrong:
        raise InputError(f"BUNDLE={path} is not a join bundle ({wrong[0]} missing): copy it again from the cluster's "
                         "first host. Nothing was created.")
    if doc["cluster"] != cluster_name(name):
        raise InputError(f"BUNDLE={path} is for cluster {doc['cluster']}, not CLUSTER={name}. Nothing was created.")
    if cluster_name(doc["member"]) != doc["member"] or where(doc["address"]).address != doc["address"]:
        raise InputError(f"BUNDLE={path} names {doc['address']}, not an address of this host: it was made for another "
                         "host (HOST= on the first host). Nothing was created.")
    if doc["patroni"] != cluster.PATRONI or runtime.by_key(doc["runtime"]) is None:
        raise UserError(f"Cluster {doc['cluster']} runs Patroni {doc['patroni']} with PostgreSQL {doc['runtime']}; this "
                        f"installer brings Patroni {cluster.PATRONI}: install the same release of the installer as on "
                        "the first host. Nothing was created.")
    if endpoints:
        doc["etcd"] = [e.strip() for e in endpoints.split(",") if e.strip()]
    for endpoint in doc["etcd"]:
        host, _, port = endpoint.rpartition(":")
        try:
            ipaddress.IPv4Address(host)
            int(port)
        except ValueError:
            raise InputError(f"ETCD={endpoint} is not <address>:<port> (e.g. 10.0.0.11:2379). Nothing was created.") from None
    return doc


def join(name: str, doc: dict, with_deps: bool, dry_run: bool) -> Report:
    lay = layout(name)
    report = Report(dry_run=dry_run)
    with _operation(lay, "cluster-join", dry_run):
        record = cluster.read_record(lay)
        if record is None and not any(cluster.etcd_answers(doc["etcd"], doc["ca"])):
            raise UserError(f"etcd of cluster {lay.name} does not answer at {', '.join(doc['etcd'])} over TLS with the "
                            "cluster's certificate: check the address, that the first host's firewall lets this host "
                            "reach that port, then re-run. Nothing was created.")
        apply(cluster.join_plan(lay, cluster.observe(lay), doc, with_deps), report, dry_run)
    return report


def status(name: str) -> dict:
    return cluster.status(layout(name))


def switchover(name: str, candidate: str | None) -> str:
    lay = layout(name)
    with _operation(lay, "switchover"):
        return cluster.switchover(lay, candidate or None)


def remove(name: str, member: str = "") -> None:
    """Only once no client (installed or suspended) records the cluster, and no member on another host follows it;
    MEMBER=: forget a member on another host that was removed there. On a host that joined: its member only."""
    from .listing import listing

    lay = layout(name)
    with _operation(lay, "cluster-remove"):
        record = cluster.read_record(lay)
        if member:
            cluster.forget(lay, member)
            return
        if record is not None and not record.get("joined"):
            others = [m["name"] for m in cluster.members(record) if m["name"] in record.get("remote", {})]
            if others:
                raise UserError(f"Members {', '.join(others)} of cluster {lay.name} run on other hosts: remove them there "
                                f"first (make pgvector-cluster-remove CLUSTER={lay.name} YES=true on each). Nothing was "
                                "removed.")
        if cluster.read_record(lay) is None and not lay.home.exists():
            raise UserError(f"Cluster {lay.name} does not exist on this host: nothing to remove.")
        tenants = [row.client_id for row in listing(lay.state_dir.parent)
                   if row.engine == PatroniEngine.name and row.server == lay.name]
        if tenants:
            raise UserError(f"Cluster {lay.name} still holds {', '.join(tenants)}: uninstall them first "
                            "(make pgvector-uninstall CLIENT_ID=...). Nothing was removed.")
        cluster.remove(lay)
