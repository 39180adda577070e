"""Hostile input: every value an operator (or a script feeding make) can pass is either refused with one
clear sentence, or accepted only when it is safe everywhere it lands (.env, SQL identifiers, config files,
paths). Property-based (hypothesis): the bulk runs the validators in-process (>= 1000 examples per field);
a smaller set goes through the real CLI in a subprocess and checks that nothing was left behind.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from agency_pgvector import envfile, spec
from agency_pgvector.errors import UserError
from agency_pgvector.provision import Tenant

from conftest import DOMAIN, EMAIL, client_paths

BULK = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
CLI_RUNS = settings(max_examples=16, deadline=None, suppress_health_check=list(HealthCheck))

HOSTILE = [
    "", " ", "\t", "'", '"', "\\", "`id`", "$(id)", "${PATH}", "%s", "{}", "$$", "--", "/*", ";",
    "'; DROP ROLE postgres; --", '"; DROP DATABASE postgres; --', "acme'; SELECT pg_sleep(10); --",
    "../etc", "../../root/.ssh", "..", ".", "/etc/passwd", "acme/../../x", "..\\..\\x",
    "a\x00b", "acme\x00", "acme\n", "acme\r\nPGPASSWORD=evil", "x\nDATABASE_URL=postgresql://evil@evil/db", "\u2028",
    "\u0430cme",  # Cyrillic a
    "\uff41\uff43\uff4d\uff45",  # fullwidth acme
    "acme\u200b", "ac\u0301me", "\ufb01le", "\u212aelvin", "\u0130stanbul", "\u202eemca", "\ufeffacme",
    "\u0665\u0664\u0663\u0663", "\uff15\uff14\uff13\uff13", "\u00b2", "5433\u0000", "5433 ", "+5433", "05433", "0x1539",
    "a" * 33, "a" * 254, "x" * 100_000, "A" * 1_000_000,
]
hostile_text = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(),  # any unicode, NUL and control characters included
    st.text(alphabet=st.characters(codec="ascii"), max_size=80),
    st.builds(lambda a, b, c: a + b + c, st.from_regex(r"[a-z0-9-]{0,12}", fullmatch=True), st.sampled_from(HOSTILE[:40]),
              st.from_regex(r"[a-z0-9.@-]{0,12}", fullmatch=True)),
    # long (HOSTILE has 100 kB and 1 MB ones)
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=3), st.integers(100, 5_000)),
)
CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def _one_clear_sentence(message: str, field: str) -> None:
    assert message.startswith(field) or f" {field} " in message or message.startswith(f"{field}="), message
    assert not CONTROL.search(message), repr(message)  # one line, nothing that could move a terminal or a log
    assert len(message) < 400
    assert "use" in message or "e.g." in message  # ... and how to fix it


def _safe_in_env(key: str, value: str) -> None:
    """An accepted value must land in .env unquoted and read back as itself, alone."""
    text = envfile.render({key: value})
    assert text == f"{key}={value}\n"


def _check(validator, field: str, value, safe: re.Pattern | None = None):
    try:
        result = validator(value)
    except UserError as exc:
        _one_clear_sentence(str(exc), field)
        return None
    if result is not None and safe is not None:
        assert safe.fullmatch(str(result)), (field, value)
    return result


# -- the validators, in-process --------------------------------------------------------------------
@BULK
@given(hostile_text)
@example("acme")
def test_client_id(value):
    result = _check(spec.client_id, "CLIENT_ID", value, re.compile(r"[a-z0-9-]{1,32}"))
    if result is not None:
        tenant = Tenant.for_client(result, shared=True)
        assert re.fullmatch(r"[a-z0-9_]{1,43}", tenant.role) and len(tenant.database) <= 63  # a plain identifier
        paths = spec.Spec(client_id=result, root=Path("/opt/agency_stack")).paths
        assert paths.client_dir.parent == Path("/opt/agency_stack/clients")  # no escape from clients/
        assert paths.lock_file.parent == Path("/opt/agency_stack/pgvector/locks")
        _safe_in_env("CLIENT_ID", result)


@BULK
@given(hostile_text)
@example("xn--bcher-kva.example")
def test_domain(value):
    result = _check(spec.domain, "DOMAIN", value, re.compile(r"[a-z0-9.-]{1,253}"))
    if result is not None:
        _safe_in_env("DOMAIN", result)


@BULK
@given(st.one_of(hostile_text, st.builds(lambda local, host: f"{local}@{host}", hostile_text, hostile_text)))
@example("first.last+tag@sub.example.org")
def test_admin_email(value):
    result = _check(spec.email, "ADMIN_EMAIL", value, re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}"))
    if result is not None:
        _safe_in_env("ADMIN_EMAIL", result)


@BULK
@given(st.one_of(hostile_text, st.integers(-10**30, 10**30).map(str), st.integers(0, 70000)))
@example("5433")
def test_port(value):
    result = _check(spec.port, "PORT", value)
    assert result is None or (isinstance(result, int) and 1024 <= result <= 65535)


@BULK
@given(hostile_text)
def test_engine_and_server(value):
    assert _check(spec.engine, "ENGINE", value) in (None, *spec.ENGINES)
    server = _check(spec.server, "SERVER", value)  # dedicated, shared, auto or a cluster's name (a client id's shape)
    assert server is None or server in (*spec.SERVERS, "auto") or spec._CLIENT_ID.fullmatch(server)


@BULK
@given(hostile_text)
@example("pgvector/pgvector:pg17")
def test_image(value):
    result = _check(spec.image, "PGVECTOR_IMAGE", value, re.compile(r"[A-Za-z0-9._/:@-]{1,255}"))
    assert result is None or not result.startswith(("-", "/", ".")) and ".." not in result


@BULK
@given(hostile_text)
@example("/opt/agency_stack")
def test_stack_root_and_log_paths(value):
    for name, read in (("AGENCY_STACK_ROOT", spec.root_from_env), ("AGENCY_STACK_LOG", spec.log_from_env)):
        if "\x00" in value:
            return  # the kernel refuses NUL in an environment: it can never arrive here
        old = os.environ.get(name)
        os.environ[name] = value
        try:
            result = _check(lambda _: read(), name, value)  # noqa: B023 - called at once, in this iteration
        finally:
            os.environ.pop(name) if old is None else os.environ.__setitem__(name, old)
        if result is not None and value:
            assert result.is_absolute() and ".." not in result.parts and re.fullmatch(r"[A-Za-z0-9_./@+,-]+", str(result))


def _message(value):
    try:
        spec.admin_url(value)
    except UserError as exc:
        return str(exc)


ADMIN_URL_MESSAGES = {_message(v) for v in ("mysql://x", "postgresql://%zz", "postgresql://a:b@c@d/e")}
password = st.one_of(st.text(min_size=1, max_size=40),
                     st.sampled_from(["p@ss", "a/b", "x:y", "a@b@c", "1234/5678", "se/cret", "q?x=1", "%zz"]))


@BULK
@given(st.one_of(hostile_text.map(lambda v: "postgresql://" + v),
                 st.builds(lambda user, pw, host, port, db: f"postgresql://{user}:{pw}@{host}:{port}/{db}",
                           st.sampled_from(["postgres", "admin", "u@x"]), password,
                           st.sampled_from(["127.0.0.1", "db.example", "[::1]", "h1,h2", ""]),
                           st.one_of(st.integers(0, 70000).map(str), st.sampled_from(["", "x", "5432,5433"])),
                           st.sampled_from(["postgres", "", "a@b", "p?sslmode=require"]))))
@example("postgresql://postgres:abc@def@127.0.0.1:1/postgres")
@example("postgresql://postgres:1234/5678@host:5432/postgres")
def test_admin_url_is_checked_without_ever_echoing_it(value):
    from psycopg2.extensions import parse_dsn

    try:
        result = spec.admin_url(value)
    except UserError as exc:
        _one_clear_sentence(str(exc), "ADMIN_URL")
        assert str(exc) in ADMIN_URL_MESSAGES  # constant texts: nothing of the URL is ever echoed
        return
    parsed = parse_dsn(result)  # accepted: every field the installer may print is a real host, port or name
    assert not any("@" in (parsed.get(k) or "") for k in ("host", "port", "dbname", "user"))
    assert all(p.isdigit() for p in (parsed.get("port") or "5432").split(","))


# -- .env: a value can never add a variable ------------------------------------------------------------
env_text = st.one_of(st.sampled_from(HOSTILE[:-3]), st.text(max_size=40), st.from_regex(r"[ -~]{0,40}", fullmatch=True))
env_keys = st.sampled_from(["A", "KEY", "PGPASSWORD", "DATABASE_URL", "X_1"])
env_values = st.dictionaries(env_keys, env_text, min_size=1, max_size=3)


@BULK
@given(env_values)
def test_env_render_refuses_or_round_trips_exactly(values):
    try:
        text = envfile.render(values)
    except ValueError:
        return
    assert text.count("\n") == len(values)
    from io import StringIO

    from dotenv import dotenv_values

    assert dict(dotenv_values(stream=StringIO(text))) == values


safe_looking = st.dictionaries(env_keys,
                               st.one_of(st.from_regex(r"[A-Za-z0-9_./:@%+=,~^${}()*?!&|;<>'\"`\\ -]{0,30}", fullmatch=True),
                                         env_text),
                               min_size=1, max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(values=safe_looking)
def test_env_sourced_by_a_shell_defines_only_its_own_keys(values, tmp_path_factory):
    try:
        text = envfile.render(values)
    except ValueError:
        return
    path = tmp_path_factory.mktemp("env") / ".env"
    path.write_text(text)
    out = subprocess.run(["env", "-i", "bash", "-c", f"set -a; . {path}; env -0"], capture_output=True, text=True)
    assert out.returncode == 0
    defined = dict(line.split("=", 1) for line in out.stdout.split("\0") if line)
    defined = {k: v for k, v in defined.items() if k not in ("PWD", "SHLVL", "_", "OLDPWD")}
    assert defined == values


# -- boolean flags: parsed strictly, never "probably true" ---------------------------------------------
FLAGS = {"FORCE": "--force", "WITH_DEPS": "--with-deps", "ENABLE_CLOUD": "--enable-cloud", "DRY_RUN": "--dry-run",
         "VERBOSE": "--verbose", "JSON": "--json", "QUIET": "--quiet"}
TRUTHY = {"1", "true", "t", "yes", "y", "on"}
FALSY = {"0", "false", "f", "no", "n", "off"}


@pytest.fixture(scope="module")
def parsed_once():
    """The CLI's real click command, built once (Typer rebuilds it on every call, which costs ~20 ms)."""
    import typer.main

    from agency_pgvector import cli

    saved, cli.app = cli.app, typer.main.get_command(cli.app)
    yield
    cli.app = saved


@BULK
@given(value=st.one_of(hostile_text, st.sampled_from(sorted(TRUTHY | FALSY)).map(str.upper)))
def test_boolean_flags(parsed_once, value, capsys):
    """Each flag's value is one of click's booleans or a clean error naming the flag; nothing else runs.
    DOMAIN is invalid on purpose, so an accepted flag ends at the DOMAIN check (proof it was parsed).
    Every example is tried on all seven flags."""
    if "\x00" in value:
        return  # cannot be in an environment
    from agency_pgvector import cli

    for name, option in FLAGS.items():
        saved = {k: os.environ.get(k) for k in (name, "DOMAIN", "ADMIN_EMAIL", "CLIENT_ID")}
        os.environ.update({name: value, "DOMAIN": "not a domain", "ADMIN_EMAIL": EMAIL, "CLIENT_ID": "flags"})
        argv = sys.argv
        sys.argv = ["agency-pgvector", "install"]
        try:
            with pytest.raises(SystemExit) as exit_:
                cli.main()
        finally:
            sys.argv = argv
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        if value.strip().lower() in TRUTHY | FALSY or value.strip() == "":  # blank = unset = the default (false)
            assert "DOMAIN" in err
        else:
            assert option in err and "DOMAIN" not in err


# -- through the real CLI: refused, and no trace anywhere ---------------------------------------------
@pytest.fixture(scope="module")
def witness(stack_root):
    """A shared embedded server that already holds one client: hostile runs must add no role or database."""
    env = {**os.environ, "CLIENT_ID": "input-witness", "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "WITH_DEPS": "true",
           "ENGINE": "embedded", "SERVER": "shared"}
    result = subprocess.run([sys.executable, "-m", "agency_pgvector", "install", "--quiet"], env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    from agency_pgvector.engines.embedded import SharedEmbeddedEngine
    from agency_pgvector.spec import Spec

    engine = SharedEmbeddedEngine(Spec(client_id="input-witness", root=stack_root))

    def objects():
        conn = engine.admin_connect()
        with conn.cursor() as cur:
            cur.execute("SELECT array_agg(rolname ORDER BY rolname) FROM pg_roles")
            roles = cur.fetchone()[0]
            cur.execute("SELECT array_agg(datname ORDER BY datname) FROM pg_database")
            dbs = cur.fetchone()[0]
        conn.close()
        return roles, dbs

    return objects


def _tree(root: Path) -> list:
    """Every path under the root, servers' own data and log directories aside (they change by themselves)."""
    return sorted(str(p) for p in root.rglob("*") if not re.search(r"/(postgres|shared)/(data|log)/", str(p)))


CLI_FIELDS = {  # field -> what the error message names
    "CLIENT_ID": "CLIENT_ID", "DOMAIN": "DOMAIN", "ADMIN_EMAIL": "ADMIN_EMAIL", "PORT": "PORT", "ENGINE": "ENGINE",
    "SERVER": "SERVER", "PGVECTOR_IMAGE": "PGVECTOR_IMAGE", "ADMIN_URL": "ADMIN_URL",
}
cli_hostile = st.sampled_from([v for v in HOSTILE if v and "\x00" not in v and len(v) < 5000])


VALIDATORS = {"CLIENT_ID": spec.client_id, "DOMAIN": spec.domain, "ADMIN_EMAIL": spec.email, "PORT": spec.port,
              "ENGINE": spec.engine, "SERVER": spec.server, "PGVECTOR_IMAGE": spec.image}


def _accepted(name, value) -> bool:
    try:
        VALIDATORS[name](value)
    except UserError:
        return False
    return True


@CLI_RUNS
@given(name=st.sampled_from(sorted(CLI_FIELDS)), value=cli_hostile)
def test_real_cli_refuses_and_leaves_no_trace(witness, stack_root, name, value):
    if name == "ADMIN_URL":  # an unencoded '@' in the password: parts of it must not reach any message
        value = f"postgresql://postgres:cli-secret-{len(value)}@ev@il{value}:5432/postgres"
    elif _accepted(name, value):
        return  # a valid value: not this test's business
    log = Path(os.environ["AGENCY_STACK_LOG"])
    before_tree, before_objects = _tree(stack_root), witness()
    log_before = log.read_text() if log.exists() else ""
    env = {**os.environ, "CLIENT_ID": "input-victim", "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "WITH_DEPS": "true",
           "ENGINE": "embedded", "SERVER": "shared", name: value}
    if name == "ADMIN_URL":
        env["ENGINE"], env["SERVER"] = "external", ""
    result = subprocess.run([sys.executable, "-m", "agency_pgvector", "install"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, (name, value[:80], result.stdout[-300:], result.stderr[-300:])
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert CLI_FIELDS[name] in result.stderr
    if name == "ADMIN_URL":
        assert "cli-secret" not in result.stderr + result.stdout
    assert _tree(stack_root) == before_tree
    assert not client_paths("input-victim").client_dir.exists()
    assert witness() == before_objects
    log_after = log.read_text() if log.exists() else ""
    assert "cli-secret" not in log_after and log_after[len(log_before):].count("input-victim") == 0


def test_hostile_values_that_pass_validation_still_cannot_break_sql(witness, stack_root):
    """The nastiest client id the validator accepts becomes a working, quoted identifier everywhere."""
    client = "0-" + "9" * 29 + "z"  # 32 chars, digits first, hyphens: role/database names need quoting
    env = {**os.environ, "CLIENT_ID": client, "DOMAIN": "xn--bcher-kva.example", "ADMIN_EMAIL": "a.b+c%d@x-y.example",
           "WITH_DEPS": "true", "ENGINE": "embedded", "SERVER": "shared"}
    result = subprocess.run([sys.executable, "-m", "agency_pgvector", "install", "--quiet"], env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    values = envfile.read(client_paths(client).env_file)
    assert values["PGUSER"] == "vectoruser_0_" + "9" * 29 + "z"
    conn = psycopg2.connect(host=values["PGHOST"], port=values["PGPORT"], user=values["PGUSER"], password=values["PGPASSWORD"],
                            dbname=values["PGDATABASE"], connect_timeout=5)
    conn.close()
