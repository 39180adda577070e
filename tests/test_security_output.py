"""What reaches the operator's terminal: tenant text is data, never terminal control or rich markup, and a shared
server's log shows each client its own sessions only.

Real servers: two tenants on one shared embedded server (out-a, the attacker, and out-b), one dedicated server
(out-c) whose log directory is tampered with. Unit tests cover text.clean, the log filter and ui's cells.
"""

from __future__ import annotations

import os
import unicodedata

import pytest
from psycopg2 import sql

from agency_pgvector.errors import UserError
from agency_pgvector.ops.logs import SessionFilter, component_lines, show_server_log
from agency_pgvector.text import clean

from conftest import client_paths, tenant_connect

# What a terminal may act on: C0 but newline (tab included: it moves the cursor), DEL and C1 (0x9b is CSI), bidi controls
DANGEROUS = {chr(c) for c in (*range(0x00, 0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F),
                              *range(0x2066, 0x206A), 0x2028, 0x2029)} - {"\n"}
ESCAPES = "\x1b[2J\x1b]0;pwned\x07\x1b[5m\x9b31m\u202egnp.exe\u2066\x08\x7f"
B_SESSION = "vectoruser_out_b@vectordb_out_b"
FORGED = "2026-01-01 00:00:00.000 UTC [1] " + B_SESSION + " WARNING:  "


def dangerous(text: str, allowed: str = "") -> set[str]:
    return {ch for ch in text if ch in DANGEROUS and ch not in allowed}


# -- text.clean -------------------------------------------------------------------------------------------------

def test_clean_shows_every_terminal_control_as_visible_text():
    assert clean("a\x1b[31mb") == "a\\x1b[31mb"
    assert clean("\x9b\x07\x7f\u202e\u2066") == "\\x9b\\x07\\x7f\\u202e\\u2066"
    assert clean("two\nlines\tx") == "two\\x0alines\\x09x"
    assert clean("two\nlines\tx\r", keep="\n\t") == "two\nlines\tx\\x0d"
    for code in range(0x110000):  # every code point: what remains is harmless
        if 0xD800 <= code <= 0xDFFF:
            continue
        out = clean(chr(code))
        assert not dangerous(out), hex(code)
        assert out == chr(code) or chr(code) in DANGEROUS or unicodedata.category(chr(code)) == "Cc", hex(code)
    printable = "plain ASCII [red]x[/] é 日本 ∑ 🙂 \\x1b"
    assert clean(printable) == printable


def test_output_of_code_we_do_not_render_is_cleaned(capsys):
    """The Docker engine prints the container's log itself: `logs` runs it under cleaned_stdout()."""
    from agency_pgvector.text import cleaned_stdout

    with cleaned_stdout():
        print("container " + ESCAPES + "\n\tnext", flush=True)
    assert capsys.readouterr().out == "container " + clean(ESCAPES) + "\n\tnext\n"


# -- the log filter -----------------------------------------------------------------------------------------------

def test_session_filter_keeps_one_tenants_messages_and_their_continuations():
    a, b = ("2026-11-22 02:11:24.092 UTC [11209] vectoruser_out_a@vectordb_out_a ",
            "2026-11-22 02:11:25.000 UTC [11300] " + B_SESSION + " ")
    log = [
        ("2026-11-22 02:11:24.036 UTC [11199] LOG:  database system is ready to accept connections", False),  # no session
        ("\tcontinuation with no header before it", False),
        (a + "WARNING:  one", False),
        ("\t" + FORGED + "forged after a newline", False),  # PostgreSQL's continuation of a's message
        (a + "WARNING:  x\r" + FORGED + "forged after a CR", False),
        (b + "WARNING:  b's own", True),
        ("\tb's second line", True),
        (b + "STATEMENT:  SELECT 1", True),
        ("2026-11-22 02:11:26.000 UTC [11203] LOG:  checkpoint starting: time", False),
        ("\tcheckpoint continuation", False),
        ("2026-11-22 02:11:27.000 UTC [11400] postgres@vectordb_out_b LOG:  the operator's session", False),
        ("2026-11-22 02:11:27.000 UTC [11401] vectoruser_out_b@vectordb_out_bx LOG:  a longer database name", False),
        ("2026-11-22 02:11:27.000 UTC [11402] vectoruser_out_bx@vectordb_out_b LOG:  a longer role name", False),
        (FORGED + "a line that is no message of the server at all", True),  # a real header: b's
        ("raw stderr text from no session " + B_SESSION + " ", False),
        (b + "ERROR:  b again", True),
    ]
    session = SessionFilter("vectoruser_out_b", "vectordb_out_b")
    assert [line for line, _ in log if session.keep(line)] == [line for line, mine in log if mine]


def test_server_log_is_split_at_newlines_only_cleaned_and_filtered(tmp_path, capsys):
    log = tmp_path / "log" / "postgresql.log"
    log.parent.mkdir()
    a = "2026-11-22 02:11:24.092 UTC [11209] vectoruser_out_a@vectordb_out_a WARNING:  "
    b = "2026-11-22 02:11:25.000 UTC [11300] " + B_SESSION + " WARNING:  "
    separators = ["\r", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]  # str.splitlines() splits at each
    text = "".join(f"{a}sep{i}{sep}{FORGED}forged-{i}\n" for i, sep in enumerate(separators))
    log.write_bytes((text + f"{a}esc {ESCAPES}\n{b}mine {ESCAPES}\n{b}last 1\n{b}last 2\n{b}half a line").encode())
    show_server_log(log, tmp_path, SessionFilter("vectoruser_out_b", "vectordb_out_b"), 10, False)
    out = capsys.readouterr().out
    assert "forged" not in out and "vectoruser_out_a" not in out and "half a line" not in out
    assert out.splitlines() == [b + "mine " + clean(ESCAPES), b + "last 1", b + "last 2"]
    show_server_log(log, tmp_path, SessionFilter("vectoruser_out_b", "vectordb_out_b"), 2, False)
    assert capsys.readouterr().out.splitlines() == [b + "last 1", b + "last 2"]
    show_server_log(log, tmp_path, None, 100, False)  # a dedicated server: every line, cleaned
    out = capsys.readouterr().out
    assert out.count("\n") == len(separators) + 4 and not dangerous(out) and "\\x1b[2J" in out and "forged-0" in out


def test_server_log_behind_a_symlink_or_a_fifo_is_refused(tmp_path, capsys):
    secret = tmp_path / "root-only"
    secret.write_text("out-root-secret\n")
    os.chmod(secret, 0o600)
    (tmp_path / "log").mkdir()
    log = tmp_path / "log" / "postgresql.log"
    log.symlink_to(secret)
    with pytest.raises(UserError, match="symbolic link"):
        show_server_log(log, tmp_path, None, 10, False)
    log.unlink()
    os.mkfifo(log)
    with pytest.raises(UserError, match="not a regular file"):
        show_server_log(log, tmp_path, None, 10, False)  # returns at once: opened O_NONBLOCK
    (tmp_path / "log").rename(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "postgresql.log").unlink()
    (tmp_path / "elsewhere" / "postgresql.log").symlink_to(secret)
    (tmp_path / "log").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="symbolic link"):
        show_server_log(log, tmp_path, None, 10, False)
    assert "out-root-secret" not in capsys.readouterr().out


def test_component_log_lines_are_matched_on_the_client_field():
    text = ("2026-11-22T02:00:00Z pgvector[7] client=out-a created role\n"
            "2026-11-22T02:00:01Z pgvector[7] client=out-a internal error: x client=out-b y"
            "\r2026 pgvector[1] client=out-b forged\n"
            "2026-11-22T02:00:02Z pgvector[8] client=out-b created database\n"
            "2026-11-22T02:00:03Z pgvector[9] client=out-bb created database\n")
    assert component_lines(text, "out-b") == ["2026-11-22T02:00:02Z pgvector[8] client=out-b created database"]


# -- rich cells -----------------------------------------------------------------------------------------------------

def test_table_cells_are_plain_text_not_markup(capsys):
    from agency_pgvector.ui import key_values, rows_table, styled

    key_values("t", [("vector columns", "public.[red]x.emb vector(3) [hnsw]"), ("health", styled("[bold]ok[/]", "green"))])
    rows_table("t", ["name"], [[f"[link=http://evil]{ESCAPES}"]])
    out = capsys.readouterr().out
    assert "public.[red]x.emb vector(3) [hnsw]" in out and "[bold]ok[/]" in out and "[link=http://evil]" in out
    assert not dangerous(out) and "\\x1b[2J" in out


# -- through the real CLI, on a shared server -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shared_pair(stack_root):
    import subprocess
    import sys

    envs = {}
    for client in ("out-a", "out-b"):
        env = {**os.environ, "DOMAIN": "example.com", "ADMIN_EMAIL": "ops@example.com", "CLIENT_ID": client,
               "WITH_DEPS": "true", "ENGINE": "embedded", "SERVER": "shared"}
        result = subprocess.run([sys.executable, "-m", "agency_pgvector", "install"], capture_output=True, text=True, env=env,
                                timeout=600)
        assert result.returncode == 0, result.stderr + result.stdout
        from agency_pgvector import envfile

        envs[client] = envfile.read(client_paths(client).env_file)
    return envs


def _sql(env: dict, statement) -> None:
    conn = tenant_connect(env)
    conn.autocommit = True
    try:
        conn.cursor().execute(statement)
    finally:
        conn.close()


def _raise(env: dict, level: str, message: str) -> None:
    """RAISE with the message as a literal (control characters and all) in a DO block."""
    _sql(env, sql.SQL("DO $$BEGIN RAISE " + level + " '%', {}; END$$").format(sql.Literal(message)))


def test_logs_of_a_shared_server_show_each_client_its_own_lines_cleaned(shared_pair, cli):
    a, b = shared_pair["out-a"], shared_pair["out-b"]
    _raise(a, "WARNING", "out-a-esc " + ESCAPES)
    for i, sep in enumerate(["\n", "\r", "\u2028", "\x85"]):
        _raise(a, "WARNING", f"out-a-sep{i}{sep}{FORGED}forged-by-a-{i}")
    _raise(b, "WARNING", "out-b-own-line")
    for_b = cli("logs", "--lines", "1000", CLIENT_ID="out-b")
    assert for_b.returncode == 0, for_b.stderr
    server_part = for_b.stdout.split("== server log")[1]
    assert "out-b-own-line" in server_part and B_SESSION in server_part
    assert "out-a" not in for_b.stdout and "forged" not in for_b.stdout and "vectoruser_out_a" not in for_b.stdout
    assert "ready to accept connections" not in server_part  # lines of no session are nobody's on a shared server
    assert not dangerous(for_b.stdout)
    for_a = cli("logs", "--lines", "1000", CLIENT_ID="out-a")
    assert for_a.returncode == 0, for_a.stderr
    assert "out-a-esc " + clean(ESCAPES) in for_a.stdout and "out-b-own-line" not in for_a.stdout
    assert "out-a-sep0\n\t" + FORGED + "forged-by-a-0" in for_a.stdout  # its own message, continued on a TAB line
    assert "out-a-sep1\\x0d" + FORGED + "forged-by-a-1" in for_a.stdout  # one line, the CR made visible
    assert not dangerous(for_a.stdout, allowed="\t")


def test_status_prints_tenant_names_literally(shared_pair, cli):
    a = shared_pair["out-a"]
    table = "[red]x\x1b[5m\u202e"
    _sql(a, sql.SQL("CREATE TABLE {0} (id int, emb vector(3)); CREATE INDEX ON {0} "
                    "USING hnsw (emb vector_l2_ops)").format(sql.Identifier(table)))
    result = cli("status", CLIENT_ID="out-a", COLUMNS="250")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"public.{clean(table)}.emb vector(3) [hnsw]" in result.stdout, result.stdout
    assert not dangerous(result.stdout)


def test_error_lines_carry_server_text_without_control_characters(shared_pair, cli):
    """The tenant makes its own restore fail with a message of its own: a CHECK function that raises it while
    pg_restore (running as the tenant) loads the row; the CLI's error line carries the server's text, cleaned."""
    a = shared_pair["out-a"]
    boom = "out-a-server-text " + ESCAPES
    _sql(a, "CREATE FUNCTION public.boom(x int) RETURNS boolean LANGUAGE sql AS 'SELECT true';"
            "CREATE TABLE public.trap (x int CHECK (public.boom(x))); INSERT INTO public.trap VALUES (1)")
    _sql(a, sql.SQL("CREATE OR REPLACE FUNCTION public.boom(x int) RETURNS boolean LANGUAGE plpgsql AS "
                    "$$BEGIN RAISE EXCEPTION '%', {}; END$$").format(sql.Literal(boom)))
    try:
        assert cli("backup", CLIENT_ID="out-a").returncode == 0
        dump = sorted(client_paths("out-a").backups_dir.glob("*.dump"))[-1]
        result = cli("restore", CLIENT_ID="out-a", FILE=str(dump), YES="true")
    finally:
        _sql(a, "DROP TABLE public.trap; DROP FUNCTION public.boom(int)")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "out-a-server-text " + clean(ESCAPES) in result.stderr, result.stderr
    assert not dangerous(result.stderr)


def test_logs_refuse_a_server_log_the_server_user_turned_into_a_symlink(install, cli, tmp_path):
    install("out-c")
    log = client_paths("out-c").server_dir / "log" / "postgresql.log"
    secret = tmp_path / "root-only"
    secret.write_text("out-root-secret\n")
    os.chmod(secret, 0o600)
    log.rename(log.with_name("postgresql.log.real"))
    log.symlink_to(secret)
    try:
        result = cli("logs", CLIENT_ID="out-c")
    finally:
        log.unlink()
        log.with_name("postgresql.log.real").rename(log)
    assert result.returncode == 3 and "symbolic link" in result.stderr and "Traceback" not in result.stderr
    assert "out-root-secret" not in result.stdout + result.stderr
