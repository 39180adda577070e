"""What a CLI call spends its time on: imports (python -X importtime) and the installer's own functions (cProfile)."""

from __future__ import annotations

import os
import pstats
import re
import subprocess
import sys
from pathlib import Path

from .common import CLI, DOMAIN, EMAIL

_IMPORT = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def top_imports(argv: list[str], env: dict, count: int = 8) -> list[tuple[str, float]]:
    """The top-level imports of one run by cumulative milliseconds."""
    result = subprocess.run([sys.executable, "-X", "importtime", str(CLI), *argv], capture_output=True, text=True, env=env)
    found = [(m.group(4), int(m.group(2)) / 1000)
             for m in map(_IMPORT.match, result.stderr.splitlines()) if m and m.group(3) == " "]
    return sorted(found, key=lambda item: -item[1])[:count]


def top_functions(argv: list[str], env: dict, out: Path, count: int = 12) -> list[tuple[str, float]]:
    """The installer's own functions by cumulative milliseconds (cProfile), the entry points left out."""
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), str(CLI), *argv], capture_output=True, env=env, check=True)
    stats = pstats.Stats(str(out)).stats
    rows = []
    for (filename, _line, name), (_, _, _, cumulative, _) in stats.items():
        if "agency_pgvector" in filename and name not in {"main", "<module>", "install_cmd"}:
            rows.append((f"{Path(filename).name}:{name}", cumulative * 1000))
    return sorted(rows, key=lambda item: -item[1])[:count]


def run(prov_root: Path, base: Path) -> list[str]:
    """Markdown lines: what dominates --help and a no-op re-run of an installed client."""
    env = {**os.environ, "AGENCY_STACK_ROOT": str(prov_root), "AGENCY_STACK_LOG": str(base / "log" / "profile.log"),
           "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "CLIENT_ID": "p-new0", "WITH_DEPS": "true", "ENGINE": "embedded"}
    lines = ["### What `--help` imports (top-level, cumulative ms)", ""]
    lines += [f"- `{name}` {ms:.0f}" for name, ms in top_imports(["--help"], env)]
    lines += ["", "### What a no-op re-run imports (top-level, cumulative ms)", ""]
    lines += [f"- `{name}` {ms:.0f}" for name, ms in top_imports(["install", "--quiet"], env)]
    lines += ["", "### Where a no-op re-run spends its time (cProfile, the installer's functions, cumulative ms)", ""]
    lines += [f"- `{name}` {ms:.0f}" for name, ms in top_functions(["install", "--quiet"], env, base / "rerun.prof")]
    return lines


def run_all(root: Path, base: Path) -> list[str]:
    """Markdown lines: what dominates `install --all` (ALL=true) over the clients installed under `root`."""
    env = {**os.environ, "AGENCY_STACK_ROOT": str(root), "AGENCY_STACK_LOG": str(base / "log" / "profile.log"),
           "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "ALL": "true", "WITH_DEPS": "true", "SERVER": "shared"}
    count = len(list((root / "clients").iterdir()))
    title = (f"### Where `install --all` spends its time over {count} clients on one shared server "
             "(cProfile, the installer's functions, cumulative ms)")
    lines = ["", title, ""]
    lines += [f"- `{name}` {ms:.0f}" for name, ms in top_functions(["install", "--quiet"], env, base / "all.prof", count=16)]
    return lines
