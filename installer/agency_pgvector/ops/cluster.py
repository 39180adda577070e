"""make pgvector-cluster, -cluster-status, -cluster-switchover, -cluster-remove: a Patroni cluster's own life,
apart from any client (clients go onto it with make pgvector ENGINE=patroni CLUSTER=<name>)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
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


def where(given: str, network: str = "") -> cluster.Where:
    """ADDRESS: "" or 127.0.0.1 is the single-host cluster on loopback; another address must be one of this host's.
    NETWORK (default: that address's interface prefix) is where the other hosts are: a private network (RFC 1918),
    because PostgreSQL's own traffic between the hosts is not encrypted (the runtime has no TLS)."""
    if given in ("", cluster.LOOPBACK):
        if network:
            raise InputError("NETWORK applies to a cluster other hosts join: add ADDRESS=<this host's address> too.")
        return cluster.Where()
    try:
        wanted = ipaddress.IPv4Address(given)
    except ValueError:
        raise InputError(f"ADDRESS={given} is not an IPv4 address: give this host's address on the network the "
                         "members share (ip -4 addr shows them). Nothing was created.") from None
    link = next((link for link in _addresses() if link.ip == wanted and not wanted.is_loopback), None)
    if link is None:
        raise InputError(f"ADDRESS={given} is not an address of this host (ip -4 addr shows them): the members listen "
                         "on it. Nothing was created.")
    try:
        net = ipaddress.IPv4Network(network, strict=True) if network else link.network
    except ValueError:
        raise InputError(f"NETWORK={network} is not a network in CIDR form (e.g. 10.0.0.0/24, its host bits zero). "
                         "Nothing was created.") from None
    if wanted not in net or not net.is_private or net.prefixlen < 8:
        raise InputError(f"NETWORK={net} must be a private network (10/8, 172.16/12, 192.168/16) holding ADDRESS={given}: "
                         "PostgreSQL's traffic between the hosts is not encrypted (the runtime is built without TLS), "
                         "so it must not cross a public one. Nothing was created.")
    return cluster.Where(str(wanted), str(net))


def _addresses() -> list[ipaddress.IPv4Interface]:
    result = run(["ip", "-j", "-4", "addr", "show"], check=False) if shutil.which("ip") else None
    try:
        return [ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}") for link in json.loads(result.stdout)
                for a in link.get("addr_info", []) if a.get("local")] if result and result.returncode == 0 else []
    except (ValueError, TypeError, KeyError):
        return []


def converge(name: str, with_deps: bool, synchronous: bool, dry_run: bool, address: str = "", network: str = "") -> Report:
    lay = layout(name)
    report = Report(dry_run=dry_run)
    with _operation(lay, "cluster", dry_run):
        record = cluster.read_record(lay)
        if record is not None and record.get("joined"):  # this host's member and etcd: started if they are not
            address, synchronous = address or cluster.address(record), record["synchronous"]
            network = network or record["network"]
        elif record is not None and record.get("network") and not network:
            network = record["network"]
        place = where(address, network)
        from ..inventory import RESERVED, external_servers

        if record is None and (lay.name in RESERVED or lay.name in external_servers(lay.state_dir)):
            raise InputError(f"CLUSTER={lay.name} is taken (shared, dedicated, auto and the named servers' names are: "
                             "SERVER= and TO= would not know which is meant): choose another. Nothing was created.")
        if record is not None and record["synchronous"] != synchronous:
            raise UserError(f"Cluster {lay.name} was made with SYNC={str(record['synchronous']).lower()}: changing it "
                            "in place is not offered yet. Nothing was changed.")
        if record is not None and ((address and cluster.address(record) != place.address) or
                                   (network and record.get("network") != place.network)):
            scope = record.get("network") or "this host alone"
            raise UserError(f"Cluster {lay.name} listens on {cluster.address(record)} for {scope}: changing ADDRESS or "
                            "NETWORK in place is not offered. Nothing was changed.")
        apply(cluster.plan(lay, cluster.observe(lay), with_deps, synchronous, place), report, dry_run)
        if not dry_run:
            for host in cluster.promote_learners(lay):
                report.add(f"etcd on {host}", CHANGE, "a voting member of the cluster's etcd now")
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


BUNDLE_KEYS = {"cluster": str, "member": str, "address": str, "network": str, "etcd": list, "etcd_ports": list,
               "etcd_initial": str, "synchronous": bool, "patroni": str, "runtime": str, "ca": str, "member_cert": str,
               "member_key": str, "etcd_cert": str, "etcd_key": str, "secrets": dict}
PEM = re.compile(r"-----BEGIN [A-Z ]+-----\n[A-Za-z0-9+/=\n]+-----END [A-Z ]+-----\n?")
ENDPOINT = re.compile(r"([0-9]{1,3}(?:\.[0-9]{1,3}){3}):([0-9]{1,5})")


def read_bundle(name: str, path: str, endpoints: str) -> dict:
    """The join bundle made on the cluster's first host, checked before anything is made here. It is root's and
    private, read without following a link (whoever could swap it would choose the etcd, CA and network this host
    trusts); every field has its form (what goes into Patroni's configuration, pg_hba and etcd's command line);
    its address is this host's and its network the one that address sits in; this installer runs its Patroni and
    PostgreSQL."""
    from ..engines.embedded import runtime
    from ..envfile import read_nofollow
    from ..system import require_trusted

    if not path:
        raise InputError("BUNDLE is required: make pgvector-cluster-bundle CLUSTER=... HOST=<this host> on the "
                         "cluster's first host writes it; copy it here (scp, 0600), then BUNDLE=<its path>.")
    bundle_path = Path(path).absolute()
    require_trusted(bundle_path.parent)
    raw = read_nofollow(bundle_path)
    try:
        info = os.stat(bundle_path, follow_symlinks=False)
        doc = json.loads(raw) if raw else None
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict):
        raise InputError(f"BUNDLE={path} cannot be read as a join bundle: copy it again from the cluster's first host. "
                         "Nothing was created.")
    if info.st_uid != 0 or info.st_mode & 0o077:
        raise InputError(f"BUNDLE={path} must be root's and private (chown root, chmod 600): it holds the cluster's "
                         "secrets, and whoever could change it would choose what this host trusts. Nothing was created.")
    wrong = [k for k, kind in BUNDLE_KEYS.items() if not isinstance(doc.get(k), kind)]
    wrong += [k for k in ("ca", "member_cert", "member_key", "etcd_cert", "etcd_key")
              if k not in wrong and not PEM.fullmatch(doc[k])]
    wrong += [k for k in ("ca", "member_cert", "etcd_cert")
              if k not in wrong and not doc[k].startswith("-----BEGIN CERTIFICATE-----")]
    wrong += [] if "secrets" in wrong or all(isinstance(doc["secrets"].get(k), str) and doc["secrets"][k].isascii() and
                                              doc["secrets"][k].isprintable() for k in cluster.SHIPPED) else ["secrets"]
    ports: list = doc["etcd_ports"] if isinstance(doc.get("etcd_ports"), list) else []
    if len(ports) != 2 or not all(type(n) is int and 0 < n < 65536 for n in ports):
        wrong.append("etcd_ports")
    if wrong:
        raise InputError(f"BUNDLE={path} is not a join bundle ({wrong[0]} missing or malformed): copy it again from the "
                         "cluster's first host. Nothing was created.")
    if doc["cluster"] != cluster_name(name):
        raise InputError(f"BUNDLE={path} is for cluster {doc['cluster']}, not CLUSTER={name}. Nothing was created.")
    if not re.fullmatch(r"m[0-9]{1,3}", doc["member"]):
        raise InputError(f"BUNDLE={path} names member {doc['member']!r}, not one the first host makes. Nothing was created.")
    try:
        here = where(doc["address"], doc["network"])
    except InputError:
        here = cluster.Where()
    if here.network is None or here.network != doc["network"]:
        raise InputError(f"BUNDLE={path} is for {doc['address']} on {doc['network']}, not an address of this host on "
                         "that network: it was made for another host (HOST= on the first host). Nothing was created.")
    if doc["patroni"] != cluster.PATRONI or runtime.by_key(doc["runtime"]) is None:
        raise UserError(f"Cluster {doc['cluster']} runs Patroni {doc['patroni']} with PostgreSQL {doc['runtime']}; this "
                        f"installer brings Patroni {cluster.PATRONI}: install the same release of the installer as on "
                        "the first host. Nothing was created.")
    if endpoints:
        doc["etcd"] = [e.strip() for e in endpoints.split(",") if e.strip()]
    for endpoint in doc["etcd"] or [""]:
        found = ENDPOINT.fullmatch(endpoint) if isinstance(endpoint, str) else None
        if found is None or not _is_ipv4(found[1]) or not 0 < int(found[2]) < 65536:
            raise InputError(f"ETCD={endpoint} is not <address>:<port> (e.g. 10.0.0.11:2379). Nothing was created.")
    own = f"etcd-{doc['member']}=https://{doc['address']}:{doc['etcd_ports'][1]}"
    for entry in doc["etcd_initial"].split(","):
        member, _, url = entry.partition("=")
        found = ENDPOINT.fullmatch(url.removeprefix("https://"))
        if (not re.fullmatch(r"etcd(0|-m[0-9]{1,3})", member) or not url.startswith("https://") or found is None
                or not _is_ipv4(found[1]) or not 0 < int(found[2]) < 65536):
            raise InputError(f"BUNDLE={path} is not a join bundle (etcd_initial malformed): copy it again from the "
                             "cluster's first host. Nothing was created.")
    if own not in doc["etcd_initial"].split(","):
        raise InputError(f"BUNDLE={path} does not list this host's etcd ({own}) among etcd's members: make it again "
                         "on the cluster's first host. Nothing was created.")
    return doc


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False


def join(name: str, doc: dict, with_deps: bool, dry_run: bool) -> Report:
    lay = layout(name)
    report = Report(dry_run=dry_run)
    with _operation(lay, "cluster-join", dry_run):
        record = cluster.read_record(lay)
        if record is None and not cluster.etcd_answers(doc["etcd"], doc["ca"]):
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


def remove(name: str, member: str = "", force: bool = False) -> None:
    """Only once no client (installed or suspended) records the cluster, and no member on another host follows it;
    MEMBER=: forget a member on another host that was removed there. On a host that joined: its member only."""
    from .listing import listing

    lay = layout(name)
    with _operation(lay, "cluster-remove"):
        record = cluster.read_record(lay)
        if member:
            cluster.forget(lay, member)
            return
        if record is not None and record.get("joined") and not force and cluster.etcd_listed(lay, record) is not False:
            member = next(iter(record["members"]))
            raise UserError(f"This host's etcd is still a member of cluster {lay.name}'s etcd (or no etcd answers to "
                            f"say it is not): take it out on the first host first (make pgvector-cluster-remove "
                            f"CLUSTER={lay.name} MEMBER={member} there), then re-run; FORCE=true when the first host is "
                            "gone for good. Nothing was removed.")
        if record is not None and record.get("remote"):
            others = sorted(record["remote"])
            raise UserError(f"Cluster {lay.name} has members on other hosts ({', '.join(others)}): take each out first "
                            f"(make pgvector-cluster-remove CLUSTER={lay.name} MEMBER={others[0]} here, then make "
                            f"pgvector-cluster-remove CLUSTER={lay.name} YES=true on its host). Nothing was removed.")
        if cluster.read_record(lay) is None and not lay.home.exists():
            raise UserError(f"Cluster {lay.name} does not exist on this host: nothing to remove.")
        tenants = [row.client_id for row in listing(lay.state_dir.parent)
                   if row.engine == PatroniEngine.name and row.server == lay.name]
        if tenants:
            raise UserError(f"Cluster {lay.name} still holds {', '.join(tenants)}: uninstall them first "
                            "(make pgvector-uninstall CLIENT_ID=...). Nothing was removed.")
        cluster.remove(lay)
