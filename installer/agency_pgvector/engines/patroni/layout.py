"""Where a Patroni cluster's things are on this host (each cluster's members run as one system user, apc-<name>,
its etcd as another, ape-<name>; root never writes below a directory either of them owns):

    <state>/clusters/<name>/            0711 root
        cluster.json                    0644 root: ports, members, synchronous mode, address (what the installer made)
        ca.crt                          0644 root: the cluster's CA certificate (members, the installer, apps verify)
        tls/                            0700 root: the CA (ca.key): only the host that made the cluster has it
        member-tls/, etcd-tls/          0750 root:<member user>, root:<etcd user>: server.key (0640), server.crt
        join/                           0700 root: the join bundles made for other hosts (secrets: 0600)
        conf/                           0750 root:<member user>: m<i>.yml (Patroni's configuration, with the
                                        replication, rewind, REST API and etcd passwords), secrets.json (0600 root)
        etcd/                           0700 <etcd user>: data/, etcd.log
        m<i>/                           0700 <member user>: data/, run/ (socket), log/ (patroni.log, PostgreSQL's)
        pids/                           0755 root: the supervisor's pid files where systemd does not run
    <state>/patroni/<version>/          0755 root: Patroni's own virtualenv (the member user runs it)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...system import server_user_name

MEMBERS = 3  # the single-host trial: three members on loopback ports


@dataclass(frozen=True)
class ClusterLayout:
    name: str
    state_dir: Path

    home = property(lambda self: self.state_dir / "clusters" / self.name)
    record = property(lambda self: self.home / "cluster.json")
    conf_dir = property(lambda self: self.home / "conf")
    secrets_file = property(lambda self: self.conf_dir / "secrets.json")
    etcd_dir = property(lambda self: self.home / "etcd")
    pid_dir = property(lambda self: self.home / "pids")
    client_ca = property(lambda self: self.home / "ca.crt")
    member_tls = property(lambda self: self.home / "member-tls")
    etcd_tls = property(lambda self: self.home / "etcd-tls")
    join_dir = property(lambda self: self.home / "join")
    member_user = property(lambda self: server_user_name(self.name, "apc"))
    etcd_user = property(lambda self: server_user_name(self.name, "ape"))

    def member_dir(self, member: str) -> Path:
        return self.home / member

    def member_config(self, member: str) -> Path:
        return self.conf_dir / f"{member}.yml"

    def data_dir(self, member: str) -> Path:
        return self.member_dir(member) / "data"

    def socket_dir(self, member: str) -> Path:
        return self.member_dir(member) / "run"

    def log_dir(self, member: str) -> Path:
        return self.member_dir(member) / "log"

    def port_owner(self, what: str) -> str:
        """Owner of a port in the host's registry (ports.py): never a client id (those have no ':')."""
        return f"cluster:{self.name}/{what}"


def member_names(count: int = MEMBERS) -> list[str]:
    return [f"m{i}" for i in range(1, count + 1)]
