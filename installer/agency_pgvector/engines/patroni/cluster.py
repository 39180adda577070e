"""A Patroni cluster on this host: etcd and three PostgreSQL members on loopback ports (the single-host trial and
the test set-up), each process as its cluster's own system user. `plan()` is the converge (observe, then the
steps that are missing, so a re-run or a run after a kill finishes the job); the rest is day-2 through Patroni's
REST API.

Failover timing: Patroni's leader key lives `ttl` seconds (a lease the leader renews every `loop_wait`); a standby
takes over once it expires. Patroni 4 raises any ttl below 20 to 20 (its minimum), so the installer asks for 20
outright: a new leader about 18-20 s after the old one's death (docs/benchmarks.md section 8). loop_wait 2 and
retry_timeout 3 keep Patroni's rule ttl >= loop_wait + 2 x retry_timeout."""

from __future__ import annotations

import base64
import contextlib
import importlib.metadata
import ipaddress
import json
import os
import secrets
import shutil
import signal
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ... import ports, systemd, tls
from ...errors import UserError
from ...report import CHANGE, CREATE, OK
from ...runner import Step
from ...system import (
    ensure_dir,
    own_dir,
    processes,
    remove_user,
    replace_file,
    run,
    server_user,
    system_user,
    world_readable,
    write_group_file,
)
from ..embedded import runtime
from . import etcd, supervise
from .layout import MEMBERS, ClusterLayout, member_names

PATRONI = "4.1.5"  # from PyPI: 4.x knows PostgreSQL 18 (Debian's 3.0.2 predates it)
TIMING = {"ttl": 20, "loop_wait": 2, "retry_timeout": 3}  # 20: Patroni 4's minimum ttl
API_USER = "agency"  # Patroni's REST API login (unsafe methods: switchover, restart)
LOOPBACK = "127.0.0.1"
SHIPPED = ("etcd_patroni", "replication", "rewind", "api")  # the secrets a join bundle carries (not etcd's root)


@dataclass(frozen=True)
class Ports:
    etcd: int
    etcd_peer: int
    members: dict[str, tuple[int, int]]  # member -> (PostgreSQL, REST API)


@dataclass(frozen=True)
class Where:
    """Where this host's members listen and whom they let in. The single-host cluster: loopback, no network. A
    cluster other hosts join: the host's address, and the network (CIDR) whose hosts may replicate and connect
    (SCRAM logins; etcd and the REST API over TLS with the cluster's own CA)."""
    address: str = LOOPBACK
    network: str | None = None
    etcd: tuple[str, ...] = ()  # host:port of the etcd the members log in to
    ca: Path | None = None


def patroni_dir(state_dir: Path) -> Path:
    return state_dir / "patroni" / PATRONI


def read_record(lay: ClusterLayout) -> dict | None:
    try:
        return json.loads(lay.record.read_text())
    except (OSError, ValueError):
        return None


def ports_of(record: dict) -> Ports:
    return Ports(record.get("etcd", 0), record.get("etcd_peer", 0), {m: tuple(p) for m, p in record["members"].items()})


def address(record: dict) -> str:
    """Where this host's members listen and what they advertise (127.0.0.1: the single-host cluster)."""
    return record.get("address", LOOPBACK)


def ca_of(record: dict) -> Path | None:
    """The cluster's CA certificate (etcd, the REST APIs and PostgreSQL speak TLS); None: made before TLS."""
    return Path(record["ca"]) if record.get("ca") else None


def etcd_at(record: dict) -> etcd.At:
    return etcd.At(record["etcd"], ca_of(record))


def local_names(record: dict | None) -> list[str]:
    """The members that run on this host."""
    return sorted(record["members"]) if record else member_names()


def reach(record: dict) -> dict[str, tuple[str, int, int]]:
    """Every member this host knows: name -> (address, PostgreSQL port, REST API port). This host's own first,
    then those that joined from other hosts (learned from Patroni by make pgvector-cluster on this host)."""
    here = address(record)
    found = {m: (here, pg, rest) for m, (pg, rest) in sorted(ports_of(record).members.items())}
    for name, seen in sorted(record.get("remote", {}).items()):
        if seen.get("port"):
            found[name] = (seen["host"], seen["port"], seen["api_port"])
    return found


def refuse_joined(lay: ClusterLayout, record: dict | None) -> None:
    """Clients go onto a cluster from its first host (their .env live there; the leader provisions them)."""
    if record is not None and record.get("joined"):
        raise UserError(f"This host joined cluster {lay.name}, made on another host: clients go onto it from that host "
                        "(its first), which holds their .env and provisions them through the leader.")


def read_secrets(lay: ClusterLayout) -> dict:
    return json.loads(lay.secrets_file.read_text())


# -- the REST API ---------------------------------------------------------------------------------------------
def api(port: int, path: str, method: str = "GET", body: dict | None = None, password: str | None = None,
        timeout: float = 5.0, owner: str | None = None, host: str = LOOPBACK, ca: Path | None = None) -> tuple[int, object]:
    """Patroni's REST API on a member's port (HTTPS verified against the cluster's CA when `ca`). The password goes
    to a member on this host only when `owner` (the members' user) holds the port, to one on another host only
    over verified TLS."""
    headers = {"Content-Type": "application/json"}
    if password is not None:
        if owner is not None:
            supervise.require_listener(port, owner, "Patroni's REST API", host=host)
        elif ca is None:
            raise UserError(f"Patroni's REST API on {host} is not reached over TLS: its password was not sent.")
        headers["Authorization"] = "Basic " + base64.b64encode(f"{API_USER}:{password}".encode()).decode()
    request = urllib.request.Request(f"{'https' if ca else 'http'}://{host}:{port}{path}", method=method,
                                     headers=headers, data=json.dumps(body).encode() if body is not None else None)
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def members(record: dict) -> list[dict]:
    """Patroni's view of the cluster (GET /cluster) from the first member on this host that answers: name, role,
    state, host, port, timeline, lag. [] when none answers."""
    for _, (_, api_port) in sorted(ports_of(record).members.items()):
        status, body = api(api_port, "/cluster", host=address(record), ca=ca_of(record))
        if status == 200 and isinstance(body, dict):
            return list(body.get("members", []))
    return []


def call_member(lay: ClusterLayout, record: dict, name: str, path: str, method: str = "GET", body: dict | None = None,
                timeout: float = 5.0) -> tuple[int, object]:
    """An unsafe REST API call (with the password) to a member, on this host or another."""
    host, _, rest = reach(record)[name]
    owner = lay.member_user if name in record["members"] else None
    return api(rest, path, method, body, read_secrets(lay)["api"], timeout, owner, host, ca_of(record))


def leader(record: dict) -> str | None:
    for member in members(record):
        if member.get("role") == "leader" and member.get("state") == "running":
            return member["name"]
    return None


# -- observe and plan -----------------------------------------------------------------------------------------
@dataclass
class Seen:
    record: dict | None
    etcd_binary: bool
    patroni: bool  # Patroni's virtualenv is complete
    member_user: object
    etcd_user: object
    etcd_running: bool
    secured: bool  # etcd's authentication is on
    running: dict[str, bool]  # member -> its Patroni runs
    members: list[dict]


def etcd_binary() -> str | None:
    return shutil.which("etcd", path="/usr/bin:/usr/local/bin")


def observe(lay: ClusterLayout) -> Seen:
    record = read_record(lay)
    user = server_user(False, lay.member_user)
    etcd_user = system_user(lay.etcd_user, "agency-pgvector etcd", False)
    etcd_up = bool(record and record.get("etcd") and etcd_user and supervise.running(
        lay.pid_dir, f"etcd-{lay.name}", lay.etcd_user, str(lay.etcd_dir)))
    running = {m: bool(record and user and _patroni_running(lay, m)) for m in local_names(record)}
    return Seen(record, etcd_binary() is not None, (patroni_dir(lay.state_dir) / ".complete").exists(), user,
                etcd_user, etcd_up, bool(record and etcd_up and not record.get("joined") and
                                          etcd.auth_enabled(etcd_at(record))), running,
                members(record) if record and any(running.values()) else [])


def plan(lay: ClusterLayout, seen: Seen, with_deps: bool, synchronous: bool, where: Where = Where()) -> list[Step]:
    """The steps from what is there to a running cluster with a leader and every member streaming (on a host that
    joined a cluster: its own member started; etcd is the first host's)."""
    steps: list[Step] = []
    joined = bool(seen.record and seen.record.get("joined"))
    if not seen.etcd_binary and not joined:
        if not with_deps:
            raise UserError("etcd is not installed: add WITH_DEPS=true to install it (apt-get install etcd-server), "
                            "or install it yourself, then re-run.")
        steps.append(Step("etcd package", CREATE, "apt-get install etcd-server", run=_install_etcd))
    steps += _patroni_step(lay, seen, with_deps)
    if seen.record is None:
        steps.append(Step(f"cluster {lay.name}", CREATE, f"{len(first_members(where))} member(s) and etcd on {where.address}, "
                          f"run by {lay.member_user} and {lay.etcd_user}" +
                          (f"; hosts of {where.network} may join" if where.network else ""),
                          run=lambda: _make(lay, synchronous, where)))
    else:
        steps.append(Step(f"cluster {lay.name}", OK, f"{lay.home}"))
    if joined:  # this host's etcd member (its users and rights are the first host's business)
        if seen.record is not None and seen.record.get("etcd") and not seen.etcd_running:
            steps.append(Step("etcd", CHANGE, "started (this host's member of the cluster's etcd)",
                              run=lambda: _start_etcd(lay)))
    elif not seen.etcd_running:  # its authentication is checked (or, new, switched on) once it answers
        steps.append(Step("etcd", CHANGE if seen.record else CREATE, "started; authentication on and audited",
                          run=lambda: _start_etcd(lay)))
    elif not seen.secured:
        steps.append(Step("etcd authentication", CHANGE,
                          "users root and patroni; the members' user reads and writes only its cluster's keys",
                          run=lambda: _secure_etcd(lay)))
    stopped = [m for m, up in seen.running.items() if not up] if seen.record else first_members(where)
    if stopped:
        steps.append(Step("members", CREATE if seen.record is None else CHANGE, f"Patroni started for {', '.join(stopped)}",
                          run=lambda: _start_members(lay, stopped)))
    else:
        steps.append(Step("members", OK, _describe(seen.members)))
    return steps


def _patroni_step(lay: ClusterLayout, seen: Seen, with_deps: bool) -> list[Step]:
    if seen.patroni:
        return []
    if not with_deps:
        raise UserError(f"Patroni {PATRONI} is not installed for the installer: add WITH_DEPS=true (it is built "
                        f"from PyPI into {patroni_dir(lay.state_dir)}), then re-run.")
    return [Step("Patroni", CREATE, f"Patroni {PATRONI} from PyPI into {patroni_dir(lay.state_dir)}",
                 run=lambda: _install_patroni(lay.state_dir))]


def _describe(seen: list[dict]) -> str:
    return ", ".join(f"{m['name']} {m.get('role', '?')}" for m in seen) or "none answers"


# -- apply ----------------------------------------------------------------------------------------------------
def _install_etcd() -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "etcd-server"]
    result = run(install, check=False, env=env)
    if result.returncode != 0:  # package lists never fetched (a fresh machine) or stale: once more after an update
        run(["apt-get", "update", "-q"], check=False, env=env)
        result = run(install, check=False, env=env)
    if result.returncode != 0 or etcd_binary() is None:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"Installing etcd with apt-get failed ({tail[0]}): run apt-get install etcd-server by hand, "
                        "then re-run.")
    if os.path.isdir("/run/systemd/system"):  # Debian's own instance (port 2379) is not used
        run(["systemctl", "disable", "--now", "etcd.service"], check=False)


def _install_patroni(state_dir: Path) -> None:
    """A virtualenv of the system's python3 (world-readable: the members' user runs it; the installer's own
    environment may sit under root's home) with Patroni and the same psycopg2 the installer uses. Built where it
    stays (a virtualenv's scripts name their own path); .complete, written last, says it is whole."""
    target = patroni_dir(state_dir)
    ensure_dir(target.parent, 0o755)
    shutil.rmtree(target, ignore_errors=True)  # a killed run's half
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    if python is None:
        raise UserError("Patroni needs the system's python3: apt-get install python3 python3-venv, then re-run.")
    if run([python, "-m", "venv", str(target)], check=False).returncode != 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "python3-venv"], env=env)
        shutil.rmtree(target, ignore_errors=True)
        run([python, "-m", "venv", str(target)])
    psycopg = importlib.metadata.version("psycopg2-binary")
    result = run([str(target / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                  f"patroni[etcd3]=={PATRONI}", f"psycopg2-binary=={psycopg}"], check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"Installing Patroni {PATRONI} from PyPI failed ({tail[0]}): check that this host reaches "
                        "PyPI, then re-run.")
    world_readable(target)
    (target / ".complete").write_text(PATRONI + "\n")


def _reserve_ports(lay: ClusterLayout, names: list[str]) -> Ports:
    state = lay.state_dir
    first = {what: ports.reserve(state, lay.port_owner(what)) for what in ("etcd", "etcd-peer")}
    found = {m: (ports.reserve(state, lay.port_owner(m)), ports.reserve(state, lay.port_owner(f"{m}-api")))
             for m in names}
    return Ports(first["etcd"], first["etcd-peer"], found)


def first_members(where: Where) -> list[str]:
    """Three members on loopback (the single-host trial); one when other hosts join, one member and one etcd per
    host, so that the loss of a host takes one of each."""
    return member_names(1 if where.network else MEMBERS)


def _make(lay: ClusterLayout, synchronous: bool, where: Where) -> None:
    """Users, directories, secrets, the CA and certificates, the members' configuration, then cluster.json last (it
    says the cluster exists)."""
    rt = runtime.newest()
    runtime.install(rt, lay.state_dir, lay.state_dir.parent)
    user = server_user(True, lay.member_user)
    etcd_user = system_user(lay.etcd_user, "agency-pgvector etcd", True)
    ensure_dir(lay.state_dir / "clusters", 0o711)
    own_dir(lay.home, 0o711, 0, 0)
    own_dir(lay.pid_dir, 0o755, 0, 0)
    own_dir(lay.conf_dir, 0o750, 0, user.pw_gid)
    own_dir(lay.etcd_dir, 0o700, etcd_user.pw_uid, etcd_user.pw_gid)
    for member in first_members(where):
        own_dir(lay.member_dir(member), 0o700, user.pw_uid, user.pw_gid)
        for sub in (lay.socket_dir(member), lay.log_dir(member)):
            run(["mkdir", "-p", "-m", "0700", str(sub)], user=user)
    if not lay.secrets_file.exists():
        words = {k: secrets.token_urlsafe(24) for k in ("etcd_root", "etcd_patroni", "superuser", "replication",
                                                         "rewind", "api")}
        replace_file(lay.secrets_file, json.dumps(words).encode(), 0o600, (0, 0))
    found = _reserve_ports(lay, first_members(where))
    words = read_secrets(lay)
    _certificates(lay, where.address, user.pw_gid, etcd_user.pw_gid, bool(where.network))
    where = Where(where.address, where.network, (f"{where.address}:{found.etcd}",), lay.client_ca)
    for member in first_members(where):
        write_group_file(lay.member_config(member), json.dumps(_config(lay, member, found, words, rt, synchronous,
                                                                       where), indent=1), user.pw_gid)
    record = {"name": lay.name, "etcd": found.etcd, "etcd_peer": found.etcd_peer,
              "members": {m: list(p) for m, p in found.members.items()}, "synchronous": synchronous,
              "runtime": rt.key, "patroni": PATRONI, "address": where.address, "network": where.network,
              "ca": str(lay.client_ca), "remote": {}, "etcd_name": "etcd0"}
    if systemd.wanted():
        _units(lay, record)
    replace_file(lay.record, json.dumps(record, indent=1).encode(), 0o644, (0, 0))


def _certificates(lay: ClusterLayout, where: str, member_gid: int, etcd_gid: int, peers: bool) -> None:
    """The cluster's own CA (made once; its key stays in tls/, 0700 root, on this host) and the server certificates
    etcd and the members present, for this host's address and loopback (`peers`: etcd's is also the client
    certificate it shows the other hosts' etcd)."""
    names = list(dict.fromkeys([where, LOOPBACK]))
    tls.make_ca(lay.home)
    replace_file(lay.client_ca, tls.ca_cert(lay.home).read_bytes(), 0o644, (0, 0))
    # The members' key is readable by their user: on a network cluster its certificate does not name loopback,
    # where etcd (whose port the installer sends root's password to) listens too.
    for folder, gid, client, named in ((lay.member_tls, member_gid, False, [where] if peers else names),
                                       (lay.etcd_tls, etcd_gid, peers, names)):
        if tls.current_names(folder, lay.home) != named:
            tls.issue(folder, lay.home, named, gid, client)


def _etcd_argv(lay: ClusterLayout, record: dict) -> list[str]:
    # Clients (Patroni, the installer) over TCP with etcd's authentication, TLS with the cluster's certificate
    # (loopback, and the cluster's address when other hosts may join); the peer listener is a Unix socket named
    # localhost:<port> in etcd's 0700 working directory: raft messages are not authenticated, so nobody but etcd's
    # user may reach it.
    # With other hosts, the peers talk TLS on the cluster's address and each must show a certificate the
    # cluster's CA signed (--peer-client-cert-auth): raft from anyone else is refused.
    scheme, port, name = ("https" if ca_of(record) else "http"), record["etcd"], record.get("etcd_name", "etcd0")
    client = ",".join(f"{scheme}://{host}:{port}" for host in dict.fromkeys([LOOPBACK, address(record)]))
    peer = (f"https://{address(record)}:{record['etcd_peer']}" if record.get("network")
            else f"unix://localhost:{record['etcd_peer']}")
    crt, key = str(lay.etcd_tls / "server.crt"), str(lay.etcd_tls / "server.key")
    argv = [etcd_binary() or "/usr/bin/etcd", "--name", name, "--data-dir", str(lay.etcd_dir / "data"),
            "--listen-client-urls", client, "--advertise-client-urls", f"{scheme}://{address(record)}:{port}",
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", record.get("etcd_initial", f"{name}={peer}"),
            "--initial-cluster-token", f"agency-{lay.name}",
            "--initial-cluster-state", "existing" if record.get("joined") else "new"]
    if ca_of(record):
        argv += ["--cert-file", crt, "--key-file", key]
    if record.get("network"):
        argv += ["--peer-cert-file", crt, "--peer-key-file", key, "--peer-trusted-ca-file", str(ca_of(record)),
                 "--peer-client-cert-auth"]
    return argv


def _patroni_argv(lay: ClusterLayout, member: str) -> list[str]:
    return [str(patroni_dir(lay.state_dir) / "bin" / "patroni"), str(lay.member_config(member))]


def _units(lay: ClusterLayout, record: dict) -> None:
    if record.get("etcd"):
        systemd.install(supervise.unit_path(f"etcd-{lay.name}"),
                        supervise.unit_text(f"etcd-{lay.name}", lay.etcd_user, _etcd_argv(lay, record),
                                            lay.etcd_dir / "etcd.log", lay.etcd_dir))
    for member in local_names(record):
        name = f"patroni-{lay.name}-{member}"
        systemd.install(supervise.unit_path(name), supervise.unit_text(name, lay.member_user, _patroni_argv(lay, member),
                                                                         lay.log_dir(member) / "patroni.out"))


def _start_etcd(lay: ClusterLayout) -> None:
    record = read_record(lay)
    assert record is not None
    supervise.start(lay.pid_dir, f"etcd-{lay.name}", lay.etcd_user, _etcd_argv(lay, record),
                    lay.etcd_dir / "etcd.log", str(lay.etcd_dir), cwd=lay.etcd_dir)
    if record.get("joined"):  # a learner answers no health check: started once the cluster's etcd lists it by name
        _wait(lambda: etcd_listed(lay, record) is True, 60, f"etcd of cluster {lay.name} did not join the cluster's etcd",
              lay.etcd_dir / "etcd.log")
        supervise.require_listener(record["etcd"], lay.etcd_user, f"etcd of cluster {lay.name}")
        return
    _wait(lambda: supervise.listener_uid(record["etcd"]) is not None and etcd.healthy(etcd_at(record)), 30,
          f"etcd of cluster {lay.name} did not become healthy", lay.etcd_dir / "etcd.log")
    supervise.require_listener(record["etcd"], lay.etcd_user, f"etcd of cluster {lay.name}")
    _secure_etcd(lay)


def _secure_etcd(lay: ClusterLayout) -> None:
    """Users, role, `auth enable`, then an audit as root of what etcd holds. Until `auth enable` anyone on the host
    could write to it (a cluster /config with an archive_command, a user of their own with role root): if the
    audit finds anything the installer did not make, and no member has started yet, etcd's data is wiped."""
    record = read_record(lay)
    assert record is not None
    words, at = read_secrets(lay), etcd_at(record)
    supervise.require_listener(at.port, lay.etcd_user, f"etcd of cluster {lay.name}")
    try:
        if not etcd.auth_enabled(at):
            etcd.secure(at, lay.name, words["etcd_root"], words["etcd_patroni"])
        problems = etcd.audit(at, lay.name, words["etcd_root"], fresh=not _bootstrapped(lay))
    except etcd.EtcdError as exc:
        problems = [str(exc)]
    if not problems:
        return
    if _bootstrapped(lay):
        raise UserError(f"etcd of cluster {lay.name} is not as the installer made it ({problems[0]}), and members "
                        "already hold data: check its users and keys by hand (etcdctl as root), then re-run.")
    supervise.stop(lay.pid_dir, f"etcd-{lay.name}", lay.etcd_user, str(lay.etcd_dir))
    run(["rm", "-rf", "--", str(lay.etcd_dir / "data")], user=server_user(False, lay.etcd_user))
    raise UserError(f"etcd of cluster {lay.name} was not as the installer makes it before its authentication was on "
                    f"({problems[0]}: an earlier run killed half-way, or someone on this host wrote to it). Its data "
                    f"was wiped; re-run make pgvector-cluster CLUSTER={lay.name}.")


def _bootstrapped(lay: ClusterLayout) -> bool:
    """A member has a data directory: the cluster's state in etcd matters from then on."""
    return any((lay.data_dir(m) / "PG_VERSION").exists() for m in local_names(read_record(lay)))


def _start_members(lay: ClusterLayout, which: list[str]) -> None:
    """Patroni for `which`, then a wait until they run (a leader, the others streaming)."""
    record = read_record(lay)
    assert record is not None
    if not record.get("joined"):  # members log in there (a joined host's reach the first host's over verified TLS)
        supervise.require_listener(record["etcd"], lay.etcd_user, f"etcd of cluster {lay.name}")
    # A new cluster: the first member alone (it bootstraps, the others then copy it). Members that hold data start
    # together: with synchronous mode only the last leader or its synchronous standby may lead, whichever it was.
    first = which[:1] if leader(record) is None and not _bootstrapped(lay) else []
    for group in (first, [m for m in which if m not in first]):
        for member in group:
            supervise.start(lay.pid_dir, f"patroni-{lay.name}-{member}", lay.member_user, _patroni_argv(lay, member),
                            lay.log_dir(member) / "patroni.out", str(lay.member_config(member)))
        if group:
            _wait(lambda g=group: _ready(record, g) or _died(lay, g), 180,
                  f"cluster {lay.name}: {', '.join(group)} did not come up", lay.log_dir(group[0]) / "patroni.log")
            dead = [m for m in group if not _patroni_running(lay, m)]
            if dead:
                raise UserError(f"Patroni of cluster {lay.name} member {dead[0]} stopped right after its start: see "
                                f"{lay.log_dir(dead[0]) / 'patroni.out'} and patroni.log beside it.")
    if record["synchronous"] and len(members(record)) > 1:  # named a loop or two after the standbys stream
        _wait(lambda: _synchronous(members(record)), 60, f"cluster {lay.name}: no synchronous standby",
              lay.log_dir(which[0]) / "patroni.log")


def _synchronous(seen: list[dict]) -> bool:
    return any(m.get("role") == "sync_standby" and m.get("state") == "streaming" for m in seen)


def _patroni_running(lay: ClusterLayout, member: str) -> bool:
    return supervise.running(lay.pid_dir, f"patroni-{lay.name}-{member}", lay.member_user, str(lay.member_config(member)))


def patroni_pid(lay: ClusterLayout, member: str) -> int | None:
    """The member's Patroni process itself (under systemd, or the keeper shell's child), by its command line."""
    config = str(lay.member_config(member)).encode()
    return next((pid for pid, argv in processes()
                 if len(argv) >= 3 and argv[1].endswith(b"/bin/patroni") and argv[2] == config), None)


def _died(lay: ClusterLayout, which: list[str]) -> bool:
    return not systemd.managed(supervise.unit_path(f"patroni-{lay.name}-{which[0]}")) and not all(
        _patroni_running(lay, m) for m in which)


def _ready(record: dict, which: list[str]) -> bool:
    seen = {m["name"]: m for m in members(record)}
    head = next((name for name, m in seen.items() if m.get("role") == "leader" and m.get("state") == "running"), None)
    return head is not None and all(m == head or seen.get(m, {}).get("state") == "streaming" for m in which)


def _wait(check, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise UserError(f"{what} within {timeout:.0f} s: see {log}.")


def _config(lay: ClusterLayout, member: str, found: Ports, words: dict, rt, synchronous: bool, where: Where) -> dict:
    """Patroni's configuration (JSON, which YAML reads). PostgreSQL listens on the cluster's address and its 0700
    socket; the superuser only over the socket (peer: root and the members' user); replication and pg_rewind with
    their own logins; tenants with scram-sha-256, from loopback and (members on several hosts) the cluster's
    network. With the cluster's CA, etcd and the REST API speak TLS. PostgreSQL cannot: the runtime is built
    without OpenSSL (docs/scale-out.md: a private network between the hosts)."""
    pg_port, api_port = found.members[member]
    at = where.address
    net = where.network
    restapi: dict = {"listen": f"{at}:{api_port}", "connect_address": f"{at}:{api_port}",
                     "authentication": {"username": API_USER, "password": words["api"]}}
    store: dict = {"hosts": list(where.etcd), "username": "patroni", "password": words["etcd_patroni"]}
    if where.ca:
        restapi.update(certfile=str(lay.member_tls / "server.crt"), keyfile=str(lay.member_tls / "server.key"))
        store.update(protocol="https", cacert=str(where.ca))
    return {
        "scope": lay.name,
        "namespace": "/service/",
        "name": member,
        "log": {"dir": str(lay.log_dir(member)), "level": "INFO", "file_num": 4, "file_size": 26214400},
        "restapi": restapi,
        **({"ctl": {"cacert": str(where.ca)}} if where.ca else {}),
        "etcd3": store,
        "bootstrap": {
            "dcs": {**TIMING, "maximum_lag_on_failover": 1048576, "synchronous_mode": synchronous,
                    "postgresql": {"use_pg_rewind": True, "use_slots": True, "parameters": {
                        "wal_level": "logical", "hot_standby": "on", "max_wal_senders": 10,
                        "max_replication_slots": 10, "wal_log_hints": "on", "max_connections": 200,
                        "password_encryption": "scram-sha-256"}}},
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums", {"auth-local": "peer"},
                       {"auth-host": "scram-sha-256"}],
        },
        "postgresql": {
            "listen": f"{at}:{pg_port}",
            "connect_address": f"{at}:{pg_port}",
            "data_dir": str(lay.data_dir(member)),
            "bin_dir": str(rt.bin_dir(lay.state_dir)),
            "pgpass": str(lay.member_dir(member) / "pgpass"),
            "use_unix_socket": True,
            "authentication": {
                "superuser": {"username": "postgres", "password": words["superuser"]},
                "replication": {"username": "replicator", "password": words["replication"]},
                "rewind": {"username": "rewinder", "password": words["rewind"]},
            },
            "parameters": {
                "unix_socket_directories": str(lay.socket_dir(member)),
                "unix_socket_permissions": "0700",
                "logging_collector": "on",
                "log_directory": str(lay.log_dir(member)),
                "log_filename": "postgresql.log",
                "log_file_mode": "0600",
                "log_line_prefix": "%m [%p] %q%u@%d ",
                "superuser_reserved_connections": 5,
            },
            "pg_hba": [
                "local all postgres peer map=agency",
                "local all all reject",
                "host all postgres all reject",
                "host replication replicator 127.0.0.1/32 scram-sha-256",
                *([f"host replication replicator {net} scram-sha-256"] if net else []),
                "host replication all all reject",
                "host postgres rewinder 127.0.0.1/32 scram-sha-256",
                *([f"host postgres rewinder {net} scram-sha-256"] if net else []),
                "host all rewinder all reject",
                "host all all 127.0.0.1/32 scram-sha-256",
                *([f"host all all {net} scram-sha-256"] if net else []),
                "host all all all reject",
            ],
            "pg_ident": ["agency root postgres", f"agency {lay.member_user} postgres"],
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
    }


# -- day 2 ----------------------------------------------------------------------------------------------------
def stop(lay: ClusterLayout) -> None:
    """Members first (each Patroni stops its PostgreSQL), replicas before the leader, then etcd."""
    record = read_record(lay)
    if record is None:
        return
    head = leader(record)
    for member in sorted(local_names(record), key=lambda m: m == head):
        supervise.stop(lay.pid_dir, f"patroni-{lay.name}-{member}", lay.member_user, str(lay.member_config(member)))
        _stop_orphan(lay, member)
    if record.get("etcd"):
        supervise.stop(lay.pid_dir, f"etcd-{lay.name}", lay.etcd_user, str(lay.etcd_dir))


def _stop_orphan(lay: ClusterLayout, member: str) -> None:
    """Patroni starts PostgreSQL in a session of its own: a Patroni killed hard (or before its keeper) leaves the
    server running. Found by its pid file, owned by the members' user and running on this data directory: a fast
    shutdown (SIGINT), then SIGKILL after 30 s."""
    try:
        number = int((lay.data_dir(member) / "postmaster.pid").read_text().split()[0])
        info = os.stat(f"/proc/{number}")
        cmdline = Path(f"/proc/{number}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError, IndexError):
        return
    user = server_user(False, lay.member_user)
    if user is None or info.st_uid != user.pw_uid or str(lay.data_dir(member)) not in cmdline:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(number, signal.SIGINT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and os.path.exists(f"/proc/{number}"):
        time.sleep(0.1)
    if os.path.exists(f"/proc/{number}"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(number, signal.SIGKILL)


def switchover(lay: ClusterLayout, candidate: str | None = None) -> str:
    """A planned change of leader (Patroni's /switchover): returns the new leader."""
    record = read_record(lay)
    if record is None:
        raise UserError(f"Cluster {lay.name} does not exist on this host: nothing to switch over.")
    head = leader(record)
    if head is None:
        raise UserError(f"Cluster {lay.name} has no leader now: see make pgvector-cluster-status CLUSTER={lay.name}.")
    body = {"leader": head, **({"candidate": candidate} if candidate else {})}
    if head not in reach(record):
        raise UserError(f"The leader of cluster {lay.name}, {head}, is on a host this one has not learned yet: run make "
                        f"pgvector-cluster CLUSTER={lay.name} here first, then re-run.")
    with _synchronous_candidate(lay, record, head, candidate):
        return _switch(lay, record, head, body)


@contextlib.contextmanager
def _synchronous_candidate(lay: ClusterLayout, record: dict, head: str, candidate: str | None):
    """Patroni switches over to the synchronous standby only. For another candidate, every standby is made
    synchronous (synchronous_node_count) until the switchover is done: the candidate then has every commit too."""
    seen = {m["name"]: m for m in members(record)}
    if not (record["synchronous"] and candidate and candidate in seen and seen[candidate].get("role") != "sync_standby"):
        yield
        return
    _, config = api(reach(record)[head][2], "/config", host=reach(record)[head][0], ca=ca_of(record))
    before = config.get("synchronous_node_count", 1) if isinstance(config, dict) else 1
    try:
        status, answer = call_member(lay, record, head, "/config", "PATCH", {"synchronous_node_count": len(seen) - 1},
                                     30)
        if status != 200:
            raise UserError(f"Patroni refused to make {candidate} synchronous ({str(answer).strip()[:200]}): see make "
                            "pgvector-cluster-status.")
        _wait(lambda: any(m["name"] == candidate and m.get("role") == "sync_standby" for m in members(record)), 60,
              f"cluster {lay.name}: {candidate} did not become a synchronous standby", lay.home / "cluster.json")
        yield
    finally:
        _set_config(lay, record, {"synchronous_node_count": before})


def _set_config(lay: ClusterLayout, record: dict, change: dict) -> None:
    """A PATCH of the cluster's dynamic configuration through the first member that takes it (it is the cluster's,
    not a member's); one sentence when none does."""
    for name in reach(record):
        try:
            if call_member(lay, record, name, "/config", "PATCH", change, 30)[0] == 200:
                return
        except UserError:
            continue
    raise UserError(f"No member of cluster {lay.name} took the configuration change {change}: set it with Patroni's "
                    "REST API (PATCH /config) once the members answer.")


def _switch(lay: ClusterLayout, record: dict, head: str, body: dict) -> str:
    status, answer = call_member(lay, record, head, "/switchover", "POST", body, 60)
    if status != 200:
        raise UserError(f"Patroni refused the switchover of cluster {lay.name} ({str(answer).strip()[:200]}): "
                        "see make pgvector-cluster-status.")
    _wait(lambda: leader(record) not in (None, head), 60, f"cluster {lay.name}: no new leader after the switchover",
          lay.log_dir(head) / "patroni.log")
    new = leader(record)
    assert new is not None
    return new


def remove(lay: ClusterLayout) -> None:
    record = read_record(lay)
    names = local_names(record)
    stop(lay)
    for name in [f"etcd-{lay.name}", *(f"patroni-{lay.name}-{m}" for m in names)]:
        systemd.remove(supervise.unit_path(name))
    for what in ("etcd", "etcd-peer", *names, *(f"{m}-api" for m in names)):
        owned = ports.owned(lay.state_dir, lay.port_owner(what))
        if owned:
            ports.release(lay.state_dir, owned)
    shutil.rmtree(lay.home, ignore_errors=True)
    remove_user(lay.member_user)
    remove_user(lay.etcd_user)


def rolling_restart(lay: ClusterLayout) -> None:
    """Replicas one by one, then a switchover, then the old leader: writers see one switchover, never a cluster
    without a leader. Members whose Patroni is not running are started (make pgvector-restart after a crash)."""
    record = read_record(lay)
    if record is None:
        raise UserError(f"Cluster {lay.name} does not exist on this host: nothing to restart.")
    runner_steps = plan(lay, observe(lay), with_deps=False, synchronous=record["synchronous"])
    for step in runner_steps:
        if step.pending and step.run is not None:
            step.run()
    head, here = leader(record), local_names(record)
    for member in [m for m in here if m != head] + ([head] if head in here else []):  # other hosts restart their own
        if member == leader(record):
            switchover(lay)  # then the old leader is demoted and follows: restart it once it streams
            _wait(lambda m=member: _ready(record, [m]), 120, f"cluster {lay.name}: {member} did not follow the new "
                  "leader", lay.log_dir(member) / "patroni.log")
        status, answer = call_member(lay, record, member, "/restart", "POST", {}, 120)
        if status != 200:
            raise UserError(f"Patroni did not restart {member} of cluster {lay.name} ({str(answer).strip()[:200]}).")
        _wait(lambda m=member: _ready(record, [m]), 120, f"cluster {lay.name}: {member} did not come back",
              lay.log_dir(member) / "patroni.log")
    if head in here and leader(record) not in here:  # one member per host: the lead comes back to this host
        switchover(lay, head)


def status(lay: ClusterLayout) -> dict:
    """For make pgvector-cluster-status: the members as Patroni sees them, etcd, and whether each process runs."""
    record = read_record(lay)
    if record is None:
        raise UserError(f"Cluster {lay.name} does not exist on this host: make pgvector-cluster CLUSTER={lay.name} "
                        "WITH_DEPS=true creates it.")
    seen = observe(lay)
    known = reach(record)
    listed = {m["name"]: m for m in seen.members}
    rows = []
    for member in [*known, *sorted(set(listed) - set(known))]:  # this host's, joined hosts', any other Patroni lists
        info = listed.get(member, {})
        host, port, rest = known.get(member) or (info.get("host"), info.get("port"), _api_port(info))
        rows.append({"name": member, "host": host, "role": info.get("role"), "state": info.get("state"),
                     "port": port, "api_port": rest, "timeline": info.get("timeline"),
                     "lag": info["lag"] if isinstance(info.get("lag"), int) else None,  # Patroni may say "unknown"
                     "patroni_running": seen.running.get(member)})  # None: another host's
    head = next((r["name"] for r in rows if r["role"] == "leader" and r["state"] == "running"), None)
    joined = bool(record.get("joined"))
    return {"cluster": lay.name, "leader": head, "synchronous": record["synchronous"], "address": address(record),
            "tls": ca_of(record) is not None,
            "etcd": {"port": record.get("etcd") or None, "running": seen.etcd_running,
                     "authentication": None if joined else seen.secured, "voters": etcd_voters(lay, record)},
            "members": rows, "healthy": head is not None and all(r["state"] == "streaming" for r in rows if r["name"] != head)
            and (not record["synchronous"] or _synchronous(seen.members))}


def _api_port(info: dict) -> int | None:
    try:
        return int(str(info.get("api_url", "")).split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


# -- members on other hosts -----------------------------------------------------------------------------------
# One member and one etcd per host. The first host holds the CA's key and etcd's root login: it writes each joining
# host's bundle and adds that host's etcd as a learner (it does not vote yet, so the quorum is unchanged whether or
# not the host ever joins); make pgvector-cluster there, after the join, promotes it and learns the member.
def learn_remote(lay: ClusterLayout) -> list[str]:
    """Members that joined from other hosts, as Patroni lists them (address and ports), kept in cluster.json: the
    clients' .env name them. Only a host a bundle was made for is taken, at that address. Returns the names learned."""
    record = read_record(lay)
    if record is None or record.get("joined") or not record.get("network"):
        return []
    remote, learned = dict(record.get("remote", {})), []
    for info in members(record):
        name, host = str(info.get("name")), str(info.get("host", ""))
        port, rest = info.get("port"), _api_port(info)
        if name not in remote or remote[name].get("host") != host or host == address(record) or not all(
                type(n) is int and 0 < n < 65536 for n in (port, rest)):
            continue  # a member key nobody made a bundle for (anyone with the members' etcd login can write one)
        entry = {"host": host, "port": port, "api_port": rest}
        if {k: remote[name].get(k) for k in entry} != entry:
            remote[name] = {**remote[name], **entry}
            learned.append(name)
    if learned:
        replace_file(lay.record, json.dumps({**record, "remote": remote}, indent=1).encode(), 0o644, (0, 0))
    return learned


def _root(lay: ClusterLayout, record: dict) -> tuple[etcd.At, str]:
    """etcd's root login, asked for only from a listener that etcd's own user holds."""
    at = etcd_at(record)
    supervise.require_listener(at.port, lay.etcd_user, f"etcd of cluster {lay.name}")
    return at, etcd.token(at, "root", read_secrets(lay)["etcd_root"])


def etcd_listed(lay: ClusterLayout, record: dict) -> bool | None:
    """This joined host's etcd as the cluster's etcd lists it: True started (it has its name), False not there
    (taken out on the first host), None when no etcd answers (the members' own login, on every endpoint known)."""
    words, ca, peer = read_secrets(lay), ca_of(record), f"https://{address(record)}:{record['etcd_peer']}"
    for endpoint in [*record.get("etcd_hosts", []), f"{address(record)}:{record['etcd']}"]:
        host, _, port = endpoint.rpartition(":")
        at = etcd.At(int(port), ca, host)
        try:
            listed = etcd.member_list(at, etcd.token(at, "patroni", words["etcd_patroni"]))
        except etcd.EtcdError:
            continue
        return any(peer in m.get("peerURLs", []) and m.get("name") == record["etcd_name"] for m in listed) or (
            False if not any(peer in m.get("peerURLs", []) for m in listed) else None)
    return None


def promote_learners(lay: ClusterLayout) -> list[str]:
    """The joined hosts' etcd members that have caught up, made voters. Returns their hosts."""
    record = read_record(lay)
    if record is None or record.get("joined") or not record.get("network"):
        return []
    at, auth = _root(lay, record)
    return [_peer_host(m) for m in etcd.member_list(at, auth)
            if m.get("isLearner") and m.get("name") and etcd.promote(at, auth, m["ID"])]


def etcd_voters(lay: ClusterLayout, record: dict) -> int | None:
    """How many etcd members vote (the first host of a cluster other hosts join; None elsewhere or unreadable)."""
    if record.get("joined") or not record.get("network"):
        return None
    try:
        at, auth = _root(lay, record)
        return sum(1 for m in etcd.member_list(at, auth) if not m.get("isLearner"))
    except (UserError, OSError, KeyError):
        return None


def _peer_host(member: dict) -> str:
    url = (member.get("peerURLs") or ["//?"])[0]
    return url.split("//", 1)[1].rsplit(":", 1)[0]


def _inside(host: str, network) -> bool:
    try:
        return ipaddress.ip_address(host) in network
    except ValueError:
        return False


def etcd_answers(endpoints: list[str], ca_pem: str) -> list[str]:
    """The endpoints whose etcd answers its health check over TLS verified against the cluster's CA."""
    try:
        context = ssl.create_default_context(cadata=ca_pem)
    except (ssl.SSLError, ValueError):
        return []
    found = []
    for endpoint in endpoints:
        try:
            with urllib.request.urlopen(f"https://{endpoint}/health", timeout=etcd.TIMEOUT, context=context) as answer:
                if json.loads(answer.read()).get("health") == "true":
                    found.append(endpoint)
        except (urllib.error.URLError, OSError, ValueError):
            pass
    return found


def bundle(lay: ClusterLayout, host: str) -> tuple[str, Path]:
    """A join bundle for a member on `host`: the member's and its etcd's names, etcd's endpoints and members, the
    cluster's CA certificate, certificates for `host` signed by the cluster's CA (the CA's key never leaves this
    host), and the secrets a member needs (not etcd's root password, not the superuser's). 0600 root under join/.
    Adds `host`'s etcd to etcd's members as a learner."""
    record = read_record(lay)
    if record is None:
        raise UserError(f"Cluster {lay.name} does not exist on this host: nothing to join.")
    if record.get("joined"):
        raise UserError(f"This host joined cluster {lay.name}: make join bundles on the host that made it.")
    if not record.get("network") or ca_of(record) is None:
        raise UserError(f"Cluster {lay.name} listens on loopback only: no other host can reach it. A cluster made with "
                        "ADDRESS=<this host's address> takes members from other hosts (re-addressing this one is not "
                        "offered). Nothing was written.")
    if not _inside(host, ipaddress.ip_network(record["network"])) or host == address(record):
        raise UserError(f"HOST={host} is not another host of the cluster's network {record['network']} (its members "
                        "let hosts in from there only): choose that host's address in it. Nothing was written.")
    remote = dict(record.get("remote", {}))
    name = next((n for n, entry in remote.items() if entry.get("host") == host), None)
    if name is None:
        taken = set(record["members"]) | set(remote) | {m.get("name") for m in members(record)}
        name = next(f"m{i}" for i in range(1, 1000) if f"m{i}" not in taken)
    at, auth = _root(lay, record)
    peer_url = f"https://{host}:{record['etcd_peer']}"
    listed = etcd.member_list(at, auth)
    remote[name] = {**remote.get(name, {}), "host": host}  # recorded before etcd hears of it: forget finds it
    replace_file(lay.record, json.dumps({**record, "remote": remote}, indent=1).encode(), 0o644, (0, 0))
    if not any(peer_url in m.get("peerURLs", []) for m in listed):
        learning = [_peer_host(m) for m in listed if m.get("isLearner")]
        if learning:
            raise UserError(f"etcd takes one new member at a time, and {learning[0]}'s has not been promoted yet: join "
                            f"that host first (or forget it: make pgvector-cluster-remove CLUSTER={lay.name} MEMBER=...),"
                            f" then make pgvector-cluster CLUSTER={lay.name} here, then re-run. Nothing was written.")
        etcd.add_learner(at, auth, peer_url)
        listed = etcd.member_list(at, auth)
    names = {entry["host"]: f"etcd-{n}" for n, entry in remote.items()} | {host: f"etcd-{name}"}
    initial = ",".join(f"{m.get('name') or names.get(_peer_host(m), '')}={m['peerURLs'][0]}" for m in listed)
    own_dir(lay.join_dir, 0o700, 0, 0)
    made: dict[str, str] = {}
    for what, client in (("member", False), ("etcd", True)):
        staging = lay.join_dir / f"{name}.{what}.tls"
        tls.issue(staging, lay.home, [host, LOOPBACK], 0, client)
        made |= {f"{what}_cert": (staging / "server.crt").read_text(), f"{what}_key": (staging / "server.key").read_text()}
        shutil.rmtree(staging)
    words = read_secrets(lay)
    doc = {"cluster": lay.name, "member": name, "address": host, "network": record["network"],
           "etcd": [url.split("//", 1)[1] for m in listed if not m.get("isLearner") for url in m.get("clientURLs", [])],
           "etcd_ports": [record["etcd"], record["etcd_peer"]], "etcd_initial": initial,
           "synchronous": record["synchronous"], "patroni": record["patroni"], "runtime": record["runtime"],
           "ca": lay.client_ca.read_text(), **made, "secrets": {k: words[k] for k in SHIPPED}}
    target = lay.join_dir / f"{name}.json"
    replace_file(target, json.dumps(doc, indent=1).encode(), 0o600, (0, 0))
    return name, target


def forget(lay: ClusterLayout, member: str) -> None:
    """A host taken out of the cluster, first here: its etcd leaves etcd's members (the quorum shrinks while the
    others still run: removing the host's etcd first and stopping it after never loses the majority), the member
    leaves cluster.json and the next .env. Then make pgvector-cluster-remove on that host stops and deletes it."""
    record = read_record(lay)
    if record is None or member not in record.get("remote", {}):
        raise UserError(f"Cluster {lay.name} has no member {member} on another host: see make pgvector-cluster-status.")
    if leader(record) == member:
        raise UserError(f"Member {member} of cluster {lay.name} leads now: move the lead first (make "
                        f"pgvector-cluster-switchover CLUSTER={lay.name} CANDIDATE=...), then re-run.")
    at, auth = _root(lay, record)
    host = record["remote"][member]["host"]
    for entry in etcd.member_list(at, auth):
        if _peer_host(entry) == host:
            etcd.remove_member(at, auth, entry["ID"])
    remote = {k: v for k, v in record["remote"].items() if k != member}
    replace_file(lay.record, json.dumps({**record, "remote": remote}, indent=1).encode(), 0o644, (0, 0))
    (lay.join_dir / f"{member}.json").unlink(missing_ok=True)


def join_plan(lay: ClusterLayout, seen: Seen, doc: dict, with_deps: bool) -> list[Step]:
    """This host's member of a cluster made elsewhere, from its join bundle (ops/cluster.py checked it)."""
    if seen.record is not None:
        if not seen.record.get("joined") or doc["member"] not in seen.record["members"]:
            raise UserError(f"Cluster {lay.name} already has members on this host ({', '.join(local_names(seen.record))}):"
                            " a host holds one cluster's members once. Nothing was changed.")
        return plan(lay, seen, with_deps, seen.record["synchronous"])
    member = doc["member"]
    if not seen.etcd_binary and not with_deps:
        raise UserError("etcd is not installed: add WITH_DEPS=true to install it (apt-get install etcd-server), "
                        "or install it yourself, then re-run.")
    return [*([] if seen.etcd_binary else [Step("etcd package", CREATE, "apt-get install etcd-server", run=_install_etcd)]),
            *_patroni_step(lay, seen, with_deps),
            Step(f"member {member}", CREATE, f"of cluster {lay.name} on {doc['address']}, run by {lay.member_user}, "
                 f"and this host's etcd (run by {lay.etcd_user}), joining {', '.join(doc['etcd'])} over TLS",
                 run=lambda: _make_joined(lay, doc)),
            Step("etcd", CREATE, "started: a learner until the first host promotes it (make pgvector-cluster there)",
                 run=lambda: _start_etcd(lay)),
            Step("members", CREATE, f"Patroni started for {member}: it copies the leader and streams from it",
                 run=lambda: _start_members(lay, [member]))]


def _make_joined(lay: ClusterLayout, doc: dict) -> None:
    rt = runtime.by_key(doc["runtime"])
    assert rt is not None  # ops/cluster.py refused an unknown runtime
    runtime.install(rt, lay.state_dir, lay.state_dir.parent)
    user = server_user(True, lay.member_user)
    etcd_user = system_user(lay.etcd_user, "agency-pgvector etcd", True)
    member = doc["member"]
    ensure_dir(lay.state_dir / "clusters", 0o711)
    own_dir(lay.home, 0o711, 0, 0)
    own_dir(lay.pid_dir, 0o755, 0, 0)
    own_dir(lay.conf_dir, 0o750, 0, user.pw_gid)
    own_dir(lay.etcd_dir, 0o700, etcd_user.pw_uid, etcd_user.pw_gid)
    own_dir(lay.member_dir(member), 0o700, user.pw_uid, user.pw_gid)
    for sub in (lay.socket_dir(member), lay.log_dir(member)):
        run(["mkdir", "-p", "-m", "0700", str(sub)], user=user)
    # The superuser logs in over the socket (peer) only; its password stays on the first host (a placeholder here).
    words = {**{k: doc["secrets"][k] for k in SHIPPED}, "superuser": secrets.token_urlsafe(24)}
    replace_file(lay.secrets_file, json.dumps(words).encode(), 0o600, (0, 0))
    replace_file(lay.client_ca, doc["ca"].encode(), 0o644, (0, 0))
    for folder, gid, what in ((lay.member_tls, user.pw_gid, "member"), (lay.etcd_tls, etcd_user.pw_gid, "etcd")):
        own_dir(folder, 0o750, 0, gid)
        replace_file(folder / "server.crt", doc[f"{what}_cert"].encode(), 0o644, (0, gid))
        replace_file(folder / "server.key", doc[f"{what}_key"].encode(), 0o640, (0, gid))
    state = lay.state_dir
    client_port, peer_port = doc["etcd_ports"]  # the first host's numbers: etcd's ports are the same on every host
    for what, port in (("etcd", client_port), ("etcd-peer", peer_port)):
        if ports.reserve(state, lay.port_owner(what), port) != port:
            raise UserError(f"Port {port} is taken on this host: etcd of cluster {lay.name} uses it on every host. Free "
                            "it, then re-run.")
    found = Ports(client_port, peer_port, {member: (ports.reserve(state, lay.port_owner(member)),
                                                    ports.reserve(state, lay.port_owner(f"{member}-api")))})
    where = Where(doc["address"], doc["network"], (*doc["etcd"], f"{doc['address']}:{client_port}"), lay.client_ca)
    write_group_file(lay.member_config(member), json.dumps(_config(lay, member, found, words, rt, doc["synchronous"],
                                                                   where), indent=1), user.pw_gid)
    record = {"name": lay.name, "joined": True, "etcd": client_port, "etcd_peer": peer_port,
              "etcd_name": f"etcd-{member}", "etcd_initial": doc["etcd_initial"],
              "members": {member: list(found.members[member])}, "synchronous": doc["synchronous"], "runtime": rt.key,
              "patroni": PATRONI, "address": doc["address"], "network": doc["network"], "ca": str(lay.client_ca),
              "etcd_hosts": list(doc["etcd"])}
    if systemd.wanted():
        _units(lay, record)
    replace_file(lay.record, json.dumps(record, indent=1).encode(), 0o644, (0, 0))
