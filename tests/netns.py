"""A network namespace joined to the host by a veth pair: a "remote" client that exists only on this machine.

veth_namespace() picks a /30 no interface of this host uses yet (test sessions run side by side here), puts the
host's end of the pair on the host and the other end in the namespace, and removes both afterwards.
from_ns() logs in from inside it with psycopg2, the password on stdin (never in argv).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import sys
import uuid

import pytest

POOL = ipaddress.ip_network("10.231.64.0/18")  # /30s are taken from here: addresses of this machine only


def host_networks() -> list:
    out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, check=True).stdout
    return [ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network
            for link in json.loads(out) for a in link.get("addr_info", []) if a.get("family") == "inet"]


def free_subnet() -> tuple[str, str]:
    """(host address, namespace address) of a /30 inside POOL that overlaps nothing on this host."""
    used = host_networks()
    subnets = list(POOL.subnets(new_prefix=30))
    start = os.getpid() % len(subnets)  # concurrent sessions start their search at different places
    for net in subnets[start:] + subnets[:start]:
        if not any(net.overlaps(other) for other in used):
            first, second = list(net.hosts())
            return str(first), str(second)
    pytest.fail(f"no free /30 left in {POOL} on this host")


@contextlib.contextmanager
def veth_namespace(prefix: str):
    """Yields (namespace name, host address, namespace address). Fails (never skips) where namespaces cannot be built:
    the remote-access guarantees are tested here or nowhere."""
    host_ip, ns_ip = free_subnet()
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    host_if, ns_if = f"h{name[-6:]}{prefix[:3]}", f"n{name[-6:]}{prefix[:3]}"
    steps = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if],
        ["ip", "link", "set", ns_if, "netns", name],
        ["ip", "addr", "add", f"{host_ip}/30", "dev", host_if],
        ["ip", "link", "set", host_if, "up"],
        ["ip", "-n", name, "addr", "add", f"{ns_ip}/30", "dev", ns_if],
        ["ip", "-n", name, "link", "set", ns_if, "up"],
        ["ip", "-n", name, "link", "set", "lo", "up"],
    ]
    try:
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.fail(f"cannot build a network namespace here ({' '.join(step)}: {done.stderr.strip()})")
        yield name, host_ip, ns_ip
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


PROBE = """import json, sys
import psycopg2
p = json.loads(sys.stdin.read())
try:
    c = psycopg2.connect(connect_timeout=5, **p)
    cur = c.cursor()
    cur.execute("SELECT current_user || '@' || current_database()")
    print("ok", cur.fetchone()[0], c.info.ssl_in_use, c.info.ssl_attribute("protocol"))
    c.close()
except Exception as e:
    print(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
"""


def from_ns(ns: str, **params) -> str:
    """A login from inside the namespace: 'ok <user>@<db> <tls in use> <protocol>' or the first line of the error."""
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", PROBE], input=json.dumps(params),
                         capture_output=True, text=True, timeout=60)  # the password goes on stdin, not argv
    return out.stdout.strip() or out.stderr.strip()


def tls_handshake(ns: str, host: str, port: int, ca: str, version: str) -> tuple[int, str]:
    """openssl s_client from the namespace: PostgreSQL's SSLRequest, then a handshake with exactly `version`
    (tls1_1, tls1_2, tls1_3; security level 0 so the client itself would offer TLS 1.1): (exit code, output)."""
    out = subprocess.run(["ip", "netns", "exec", ns, "openssl", "s_client", "-starttls", "postgres", "-connect",
                          f"{host}:{port}", f"-{version}", "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", ca,
                          "-verify_return_error"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    return out.returncode, out.stdout + out.stderr
