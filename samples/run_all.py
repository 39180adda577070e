"""Run every sample against the database in ../.env, one process each, and print a summary.

Exits non-zero if any sample fails (make pgvector-test SAMPLES=true runs this). By default the bulk load
and the index benchmark run at a quick size; --full uses their own defaults (20k vectors), and
BULK_ROWS / BENCH_ROWS / BENCH_QUERIES in the environment win over both.

Run:  python run_all.py [--full] [--only quickstart vector_store ...]
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLES = [
    "quickstart.py",
    "bulk_load.py",
    "semantic_search.py",
    "hybrid_search.py",
    "agent_memory.py",
    "video_transcripts.py",
    "sqlalchemy_orm.py",
    "alembic_migration.py",
    "vector_store.py",
    "index_benchmark.py",
    "pooled_workers.py",
]
QUICK = {"BULK_ROWS": "5000", "BENCH_ROWS": "5000", "BENCH_QUERIES": "50"}
TIMEOUT = 900  # seconds per sample (the tenant's statement_timeout is 5 minutes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="bulk load and benchmark at their full default sizes")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these samples (with or without .py)")
    args = parser.parse_args()
    chosen = SAMPLES
    if args.only:
        wanted = {name if name.endswith(".py") else f"{name}.py" for name in args.only}
        unknown = wanted - set(SAMPLES)
        if unknown:
            sys.exit(f"unknown sample(s): {', '.join(sorted(unknown))}; choose from {', '.join(SAMPLES)}")
        chosen = [name for name in SAMPLES if name in wanted]
    env = dict(os.environ)
    if not args.full:
        for key, value in QUICK.items():
            env.setdefault(key, value)

    summary = []
    for name in chosen:
        print(f"\n===== {name}", flush=True)
        start = time.perf_counter()
        try:
            code = subprocess.run([sys.executable, str(HERE / name)], cwd=HERE, env=env, timeout=TIMEOUT).returncode
        except subprocess.TimeoutExpired:
            print(f"{name}: still running after {TIMEOUT} s, stopped", file=sys.stderr)
            code = "timeout"
        summary.append((name, code, time.perf_counter() - start))

    print("\n===== summary")
    for name, code, seconds in summary:
        print(f"  {'ok  ' if code == 0 else 'FAIL'} {name:24s} {seconds:6.1f} s" + ("" if code == 0 else f"  (exit {code})"))
    failed = [name for name, code, _ in summary if code != 0]
    print(f"{len(summary) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
