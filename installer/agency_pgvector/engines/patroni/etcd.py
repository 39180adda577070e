"""The cluster's etcd through its v3 JSON gateway (no client library, no password on a command line).

Authentication is switched on before any member starts: anyone on the host can reach a loopback port, and a
writer to Patroni's keys could change PostgreSQL's parameters (archive_command runs a shell) or pick the leader.
Two users: `root` (the installer's, kept in secrets.json 0600 root) and `patroni` (read-write on the cluster's own
key prefix only, in the members' configuration)."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ...errors import UserError

TIMEOUT = 5


def prefix(scope: str) -> str:
    return f"/service/{scope}/"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _range_end(key: str) -> str:
    """The end of the key range that is `key` as a prefix (etcd's convention: the last byte plus one)."""
    return key[:-1] + chr(ord(key[-1]) + 1)


@dataclass(frozen=True)
class At:
    """The cluster's etcd as the installer reaches it: loopback, over TLS verified against the cluster's CA (a
    squatter on the port has no certificate the CA signed); `ca` None is a cluster made before TLS (plain HTTP)."""
    port: int
    ca: Path | None = None
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"{'https' if self.ca else 'http'}://{self.host}:{self.port}"

    def context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.ca)) if self.ca else None


def call(at: At, path: str, body: dict, token: str | None = None) -> dict:
    request = urllib.request.Request(f"{at.url}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **({"Authorization": token} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=at.context()) as answer:
            return json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:200]
        raise EtcdError(f"etcd refused {path}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise EtcdError(f"etcd on port {at.port} did not answer {path} ({exc})") from None


class EtcdError(UserError):
    pass


def healthy(at: At) -> bool:
    try:
        with urllib.request.urlopen(f"{at.url}/health", timeout=TIMEOUT, context=at.context()) as answer:
            return json.loads(answer.read()).get("health") == "true"
    except (urllib.error.URLError, OSError, ValueError):
        return False


def token(at: At, user: str, password: str) -> str:
    return call(at, "/v3/auth/authenticate", {"name": user, "password": password})["token"]


def auth_enabled(at: At) -> bool:
    """An anonymous read of a key is refused once authentication is on."""
    try:
        call(at, "/v3/kv/range", {"key": _b64("/agency-pgvector-probe")})
        return False
    except EtcdError as exc:
        if "did not answer" in str(exc):
            raise
        return True


def secure(at: At, scope: str, root_password: str, patroni_password: str) -> None:
    """Users, the cluster's role and `auth enable` (run once, on a new etcd)."""
    key = prefix(scope)
    steps: list[tuple[str, dict]] = [
        ("/v3/auth/role/add", {"name": "root"}),
        ("/v3/auth/user/add", {"name": "root", "password": root_password}),
        ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
        ("/v3/auth/role/add", {"name": "patroni"}),
        ("/v3/auth/role/grant", {"name": "patroni", "perm": {"permType": "READWRITE", "key": _b64(key),
                                                             "range_end": _b64(_range_end(key))}}),
        ("/v3/auth/user/add", {"name": "patroni", "password": patroni_password}),
        ("/v3/auth/user/grant", {"user": "patroni", "role": "patroni"}),
        ("/v3/auth/enable", {}),
    ]
    for path, body in steps:
        call(at, path, body)


def audit(at: At, scope: str, root_password: str, fresh: bool) -> list[str]:
    """What is wrong with a secured etcd, read as root: users, roles and the patroni role's permission exactly as
    secure() made them, and (fresh: no member has started yet) no key at all. Anyone on the host could reach etcd
    before `auth enable`: whatever they added in that window shows here."""
    auth = token(at, "root", root_password)
    problems = []
    users = set(call(at, "/v3/auth/user/list", {}, auth).get("users", []))
    roles = set(call(at, "/v3/auth/role/list", {}, auth).get("roles", []))
    if users != {"root", "patroni"} or roles != {"root", "patroni"}:
        problems.append(f"users {sorted(users)} and roles {sorted(roles)}, not root and patroni alone")
    for user in ("root", "patroni"):
        if user in users and call(at, "/v3/auth/user/get", {"name": user}, auth).get("roles", []) != [user]:
            problems.append(f"user {user} holds other roles than {user}")
    key = prefix(scope)
    wanted = [{"permType": "READWRITE", "key": _b64(key), "range_end": _b64(_range_end(key))}]
    if "patroni" in roles and call(at, "/v3/auth/role/get", {"role": "patroni"}, auth).get("perm", []) != wanted:
        problems.append("role patroni may reach other keys than its cluster's")
    if fresh:
        count = int(call(at, "/v3/kv/range", {"key": _b64("\0"), "range_end": _b64("\0"), "count_only": True},
                         auth).get("count", 0))
        if count:
            problems.append(f"{count} keys before any member started")
        listed = member_list(at, auth)  # etcd's first member alone: nobody added one before `auth enable`
        if len(listed) != 1:
            problems.append(f"{len(listed)} etcd members before any member started")
    return problems



# -- membership (the installer's root login; a cluster with hosts joined runs an etcd member on each) ---------
def member_list(at: At, auth: str) -> list[dict]:
    """id, name, peerURLs, clientURLs, isLearner of every member (names empty until a member first starts)."""
    return list(call(at, "/v3/cluster/member/list", {}, auth).get("members", []))


def add_learner(at: At, auth: str, peer_url: str) -> None:
    """A new member as a learner: it receives the log but does not vote, so the quorum is the same until it is
    promoted (etcd 3.4 takes one learner at a time)."""
    call(at, "/v3/cluster/member/add", {"peerURLs": [peer_url], "isLearner": True}, auth)


def promote(at: At, auth: str, member_id: str) -> bool:
    """A learner made a voter; False while it has not caught up with the leader's log yet."""
    try:
        call(at, "/v3/cluster/member/promote", {"ID": member_id}, auth)
        return True
    except EtcdError as exc:
        if "not in sync" in str(exc) or "not started" in str(exc) or "can only promote" in str(exc):
            return False
        raise


def remove_member(at: At, auth: str, member_id: str) -> None:
    call(at, "/v3/cluster/member/remove", {"ID": member_id}, auth)
