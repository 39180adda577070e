"""A network namespace joined to the host by a veth pair: a "remote" client that exists only on this machine."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid

import pytest


@contextlib.contextmanager
def veth_namespace(host_ip: str, ns_ip: str, prefix: str):
    """Namespace + veth with host_ip/30 on the host side and ns_ip/30 inside; removed afterwards.
    Where namespaces cannot be built the test is skipped, except in CI, where that is a failure."""
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
                why = f"cannot build a network namespace here ({' '.join(step)}: {done.stderr.strip()})"
                pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
