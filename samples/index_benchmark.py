"""Index benchmark: exact scan vs HNSW vs IVFFlat on clustered vectors, recall against latency.

For each index: build time and size, then a sweep of its query knob, with p50/p95 latency and recall@10
(the share of the true 10 nearest neighbours, computed exactly with numpy, that the query returns):

    exact     sequential scan (no index): recall 1 by definition, the latency baseline
    hnsw      m=16, ef_construction=64; sweep hnsw.ef_search (default 40; it also caps the rows returned)
    ivfflat   lists = rows / 1000 (at least 10); sweep ivfflat.probes (default 1)

Then filtered search (WHERE category = c, 1 row in 20): an HNSW scan stops after ef_search candidates,
so most of them fail the filter and fewer than 10 rows come back. pgvector 0.8's iterative scans
(hnsw.iterative_scan = relaxed_order | strict_order) keep scanning until enough rows pass.

Index plans are forced with enable_seqscan = off, so that the planner's choice on a small table does not
hide the index. Prints a table, writes a PNG plot of recall vs latency (and optionally JSON).

Run:  python index_benchmark.py [--rows 20000] [--dims 384] [--queries 100] [--plot index_benchmark.png]
      (or BENCH_ROWS / BENCH_DIMS / BENCH_QUERIES in the environment; small values make a quick check)
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from pgvector.psycopg2 import register_vector
from psycopg2 import sql

import _env
from bulk_load import copy_binary_psycopg2

TABLE = "index_bench_items"
K = 10
CATEGORIES = 20  # category = id % 20: the filtered search keeps 5% of the rows
EF_SEARCH = (10, 20, 40, 80, 160, 320)


def clustered(rows: int, dims: int, rng: np.random.Generator, latent: int = 32, clusters: int = 100) -> np.ndarray:
    """Unit vectors like real embeddings: clusters in a low-dimensional space (`latent` dims), mapped
    into `dims` dimensions, plus a little noise. Uniform random vectors would be far harder for any index
    than real data, whose neighbours live on a much smaller surface."""
    projection = np.random.default_rng(1234).standard_normal((latent, dims))  # the same for data and queries
    centres = np.random.default_rng(4321).standard_normal((clusters, latent))
    points = centres[rng.integers(0, clusters, rows)] + 1.0 * rng.standard_normal((rows, latent))
    points = points @ projection + 0.5 * rng.standard_normal((rows, dims))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def true_neighbours(data: np.ndarray, queries: np.ndarray, mask: np.ndarray | None = None) -> list[set]:
    """Ids (1-based, the load order) of the exact K nearest by cosine distance (= largest dot product)."""
    scores = queries @ data.T
    if mask is not None:
        scores[:, ~mask] = -np.inf
    return [set((np.argsort(-row)[:K] + 1).tolist()) for row in scores]


def set_knobs(cur, **knobs) -> None:
    """Session settings; a double underscore stands for the dot: hnsw__ef_search=40 sets hnsw.ef_search."""
    for name, value in knobs.items():
        cur.execute("SELECT set_config(%s, %s, false)", (name.replace("__", "."), str(value)))


def measure(cur, queries: np.ndarray, truth: list[set], category: int | None = None) -> dict:
    where = sql.SQL("WHERE category = %(c)s") if category is not None else sql.SQL("")
    statement = sql.SQL("SELECT id FROM {} {} ORDER BY embedding <=> %(q)s LIMIT %(k)s").format(sql.Identifier(TABLE), where)
    for query in queries[:5]:  # warm-up: load the index pages into cache
        cur.execute(statement, {"q": query, "k": K, "c": category})
    latencies, recalls, returned = [], [], []
    for query, expected in zip(queries, truth, strict=True):
        start = time.perf_counter()
        cur.execute(statement, {"q": query, "k": K, "c": category})
        ids = [row[0] for row in cur.fetchall()]
        latencies.append((time.perf_counter() - start) * 1000)
        recalls.append(len(expected & set(ids)) / K)
        returned.append(len(ids))
    return {"p50_ms": float(np.percentile(latencies, 50)), "p95_ms": float(np.percentile(latencies, 95)),
            "recall": float(np.mean(recalls)), "rows": float(np.mean(returned))}


def build(cur, statement: str) -> tuple[float, str]:
    start = time.perf_counter()
    cur.execute(statement.format(table=TABLE))
    seconds = time.perf_counter() - start
    cur.execute("SELECT pg_size_pretty(pg_relation_size(indexrelid)) FROM pg_index WHERE indrelid = to_regclass(%s) "
                "AND NOT indisprimary", (TABLE,))
    return seconds, cur.fetchone()[0]


def run_benchmark(rows: int, dims: int, n_queries: int, dsn: str | None = None, seed: int = 0) -> list[dict]:
    """Load, index, sweep; returns one dict per measured setting. The table is dropped afterwards."""
    dsn = dsn or _env.database_url()
    rng = np.random.default_rng(seed)
    data, queries = clustered(rows, dims, rng), clustered(n_queries, dims, rng)
    truth = true_neighbours(data, queries)
    category = 3
    in_category = (np.arange(1, rows + 1) % CATEGORIES) == category
    filtered_truth = true_neighbours(data, queries, in_category)
    results = []
    conn = _env.connect(dsn)
    conn.autocommit = True
    register_vector(conn)
    cur = conn.cursor()
    ident = sql.Identifier(TABLE)
    try:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
        cur.execute(sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, category int GENERATED ALWAYS AS (id % {}) STORED, "
                            "embedding vector({}) NOT NULL)").format(ident, sql.Literal(CATEGORIES), sql.Literal(dims)))
        start = time.perf_counter()
        copy_binary_psycopg2(dsn, TABLE, data)  # from bulk_load.py
        print(f"loaded {rows} vectors of {dims} dims with binary COPY in "
              f"{time.perf_counter() - start:.1f} s; {n_queries} queries, k={K}")
        cur.execute(sql.SQL("ANALYZE {}").format(ident))
        cur.execute("SHOW maintenance_work_mem")
        print(f"maintenance_work_mem = {cur.fetchone()[0]} (HNSW builds are fast while the graph fits in it)\n")

        set_knobs(cur, enable_indexscan="off")
        results.append({"method": "exact", "setting": "seq scan", "build_s": None, "size": "-", **measure(cur, queries, truth)})
        set_knobs(cur, enable_indexscan="on", enable_seqscan="off")

        seconds, size = build(cur, "CREATE INDEX ON {table} USING hnsw (embedding vector_cosine_ops)"
                                   " WITH (m = 16, ef_construction = 64)")
        for ef in EF_SEARCH:
            set_knobs(cur, hnsw__ef_search=ef)
            results.append({"method": "hnsw", "setting": f"ef_search={ef}", "value": ef, "build_s": seconds, "size": size,
                            **measure(cur, queries, truth)})
        set_knobs(cur, hnsw__ef_search=40)
        for mode in ("off", "relaxed_order", "strict_order"):
            set_knobs(cur, hnsw__iterative_scan=mode)
            results.append({"method": "hnsw filtered", "setting": f"iterative_scan={mode}", "build_s": None, "size": "-",
                            **measure(cur, queries, filtered_truth, category)})
        set_knobs(cur, hnsw__iterative_scan="off")
        cur.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(f"{TABLE}_embedding_idx")))

        lists = max(10, rows // 1000)
        seconds, size = build(cur, "CREATE INDEX ON {table} USING ivfflat (embedding vector_cosine_ops)"
                                   f" WITH (lists = {lists})")
        probes = sorted({p for p in (1, 2, 4, 8, 16, 32, 64) if p < lists} | {lists})
        for p in probes:
            set_knobs(cur, ivfflat__probes=p)
            results.append({"method": "ivfflat", "setting": f"probes={p}/{lists}", "value": p, "build_s": seconds, "size": size,
                            **measure(cur, queries, truth)})
    finally:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
        conn.close()
    return results


def print_table(results: list[dict]) -> None:
    print(f"{'method':14s} {'setting':28s} {'build s':>8s} {'size':>8s} "
          f"{'p50 ms':>8s} {'p95 ms':>8s} {'recall@10':>10s} {'rows':>5s}")
    for r in results:
        build_s = f"{r['build_s']:.2f}" if r["build_s"] is not None else "-"
        print(f"{r['method']:14s} {r['setting']:28s} {build_s:>8s} {r['size']:>8s} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} "
              f"{r['recall']:10.3f} {r['rows']:5.1f}")


def plot(results: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(8, 5))
    for method, marker, knob in (("hnsw", "o-", "ef_search"), ("ivfflat", "s-", "probes")):
        points = [r for r in results if r["method"] == method]
        ax.plot([r["p50_ms"] for r in points], [r["recall"] for r in points], marker, label=f"{method} (labels: {knob})")
        for r in points:
            ax.annotate(str(r["value"]), (r["p50_ms"], r["recall"]), textcoords="offset points", xytext=(4, -10), fontsize=8)
    exact = next(r for r in results if r["method"] == "exact")
    ax.plot([exact["p50_ms"]], [exact["recall"]], "k*", markersize=12, label="exact (seq scan)")
    ax.set_xscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")  # 2, 5, 10 rather than 2x10^0
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel("p50 latency per query (ms, log scale)")
    ax.set_ylabel(f"recall@{K}")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def check(results: list[dict]) -> list[str]:
    """What must hold whatever the machine: exact is exact, the widest settings find nearly everything,
    and iterative scans return the k rows that a plain filtered HNSW scan misses."""
    by = {(r["method"], r["setting"]): r for r in results}
    problems = []
    if by[("exact", "seq scan")]["recall"] < 0.999:
        problems.append("exact scan recall below 1")
    if max(r["recall"] for r in results if r["method"] == "hnsw") < 0.9:
        problems.append("HNSW never reached recall 0.9")
    if [r for r in results if r["method"] == "ivfflat"][-1]["recall"] < 0.99:
        problems.append("IVFFlat probing every list is not (nearly) exact")
    if by[("hnsw filtered", "iterative_scan=relaxed_order")]["rows"] < K:
        problems.append("relaxed_order iterative scan returned fewer than k rows")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=int(os.environ.get("BENCH_ROWS", 20_000)))
    parser.add_argument("--dims", type=int, default=int(os.environ.get("BENCH_DIMS", 384)))
    parser.add_argument("--queries", type=int, default=int(os.environ.get("BENCH_QUERIES", 100)))
    parser.add_argument("--plot", default=os.environ.get("BENCH_PLOT", "index_benchmark.png"), help="PNG to write")
    parser.add_argument("--json", default=os.environ.get("BENCH_JSON"), help="also write the results as JSON here")
    args = parser.parse_args()
    print(f"connecting as {_env.describe()}")
    results = run_benchmark(args.rows, args.dims, args.queries)
    print_table(results)
    plot(results, args.plot, f"pgvector 0.8: {args.rows} vectors x {args.dims} dims, {args.queries} queries")
    print(f"\nplot: {os.path.abspath(args.plot)}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"rows": args.rows, "dims": args.dims, "queries": args.queries, "results": results}, out, indent=1)
    problems = check(results)
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    print(f"dropped table {TABLE}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
