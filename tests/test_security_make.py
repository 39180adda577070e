"""make passes values through as text: whatever an operator (or a script filling in a client's form) gives
make, on its command line or in the environment, reaches the CLI as that text, is never expanded by make
($(shell ...), $(eval ...), $$) and never becomes part of a shell command line. The CLI then refuses it
with its one sentence. Runs the real make on the project's Makefile, with the venv running these tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import DOMAIN, EMAIL

PROJECT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)  # the venv running these tests: the CLI make calls
STAMPS = (".installed", ".installed-samples", ".installed-model", ".installed-test")

# Each payload runs `touch {marker}` if make expands it or a shell parses it.
PAYLOADS = [
    "$(shell touch {marker})",
    "$$(touch {marker})",
    "`touch {marker}`",
    "$(eval $$(shell touch {marker}))",
    "x; touch {marker}",
    '"; touch {marker}; "',
]
FULL = {"CLIENT_ID": "mk-none", "DOMAIN": DOMAIN, "ADMIN_EMAIL": EMAIL, "DRY_RUN": "true"}
# target, hostile variable, the other variables, whether the CLI's sentence quotes the value back
CASES = [
    ("pgvector-status", "CLIENT_ID", {}, True),
    ("pgvector-status", "AGENCY_STACK_ROOT", {}, True),
    ("pgvector", "DOMAIN", FULL, True),
    ("pgvector", "ADMIN_EMAIL", FULL, True),
    ("pgvector", "PORT", FULL, True),
    ("pgvector", "WITH_DEPS", FULL, True),
    ("pgvector", "ADMIN_URL", {**FULL, "ENGINE": "external"}, False),  # never echoed: it holds a password
    ("pgvector-logs", "LINES", {"CLIENT_ID": "mk-none"}, True),
    ("pgvector-test", "SAMPLES", {"CLIENT_ID": "mk-none"}, True),
    ("pgvector-restore", "FILE", {"CLIENT_ID": "mk-none"}, False),
    ("pgvector-restore", "TARGET_CLIENT", {"CLIENT_ID": "mk-none", "FILE": "/nonexistent/mk.dump"}, True),
]


@pytest.fixture
def sandbox():
    """A short path (the CLI shortens long values it quotes back, and the marker is part of the value)."""
    if not (VENV / "bin" / "agency-pgvector").exists():
        pytest.fail(f"{VENV} has no agency-pgvector: run the tests with the project's venv (make test)")
    path = Path(tempfile.mkdtemp(prefix="mk-", dir="/tmp"))
    yield path
    shutil.rmtree(path)


def clean_environ(*drop: str) -> dict:
    """This process's environment without an outer make's flags (make test) and without `drop`."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MAKE") and k != "MFLAGS" and k not in drop}


def make(sandbox: Path, target: str, args: dict, env: dict, *, venv: Path = VENV) -> subprocess.CompletedProcess:
    """make -C <project> target VAR=value ..., with a throw-away AGENCY_STACK_ROOT. The venv's stamps are
    assumed up to date (-o), so make never reinstalls the venv running this test."""
    environ = {**clean_environ(), "AGENCY_STACK_ROOT": str(sandbox / "root"),
               "AGENCY_STACK_LOG": str(sandbox / "log" / "pgvector.log"), **env}
    old = [f"--assume-old={VENV / stamp}" for stamp in STAMPS]
    command = ["make", "-s", "-C", str(PROJECT), *old, target, f"VENV={venv}", *(f"{k}={v}" for k, v in args.items())]
    return subprocess.run(command, capture_output=True, text=True, env=environ, timeout=120)


def split(variable: str, value: str, others: dict, where: str) -> tuple[dict, dict]:
    """The hostile variable on make's command line or in its environment; the others on the command line."""
    args = {k: v for k, v in others.items() if k != variable}
    return ({**args, variable: value}, {}) if where == "command line" else (args, {variable: value})


def assert_refused(result: subprocess.CompletedProcess, sandbox: Path, marker: Path) -> None:
    assert not marker.exists(), "make expanded the value or a shell ran it"
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert not (sandbox / "root").exists() and not (sandbox / "log").exists()


@pytest.mark.parametrize("where", ["command line", "environment"])
@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("target,variable,others,echoed", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_value_reaches_the_cli_as_text(sandbox, target, variable, others, echoed, payload, where):
    marker = sandbox / "m"
    value = payload.format(marker=marker)
    result = make(sandbox, target, *split(variable, value, others, where))
    assert_refused(result, sandbox, marker)
    if echoed:  # the CLI quotes back exactly what was given: make changed nothing
        assert repr(value) in result.stderr, result.stderr


@pytest.mark.parametrize("where", ["command line", "environment"])
@pytest.mark.parametrize("payload", [*PAYLOADS, 'x" ]; touch {marker}; [ "x'])
def test_with_deps_is_not_spliced_into_the_venv_recipe(sandbox, payload, where):
    """The venv recipe reads WITH_DEPS (and PYTHON, VENV) from its environment. PYTHON=false makes
    `python -m venv` fail, so the recipe reaches its WITH_DEPS test, then stops with its own sentence."""
    marker, venv = sandbox / "m", sandbox / "venv"
    value = payload.format(marker=marker)
    result = make(sandbox, "pgvector-status", *split("WITH_DEPS", value, {"PYTHON": "false"}, where), venv=venv)
    assert_refused(result, sandbox, marker)
    assert "error: 'false -m venv' failed" in result.stderr
    assert not venv.exists()


def test_any_command_line_variable_stays_text(sandbox):
    """make exports every command-line variable to the recipe, not only the ones the Makefile names: one the CLI
    reads beside VARS (PG_<SETTING>), and one nothing reads (which the CLI refuses, by name, value unread)."""
    marker = sandbox / "m"
    result = make(sandbox, "pgvector-status", {"CLIENT_ID": "mk-none", "PG_WORK_MEM": f"$(shell touch {marker})"}, {})
    assert_refused(result, sandbox, marker)
    assert "Client mk-none is not installed" in result.stderr
    result = make(sandbox, "pgvector-status", {"CLIENT_ID": "mk-none", "UNRELATED": f"$(shell touch {marker})"}, {})
    assert_refused(result, sandbox, marker)
    assert "make was given UNRELATED, which no target reads" in result.stderr


@pytest.mark.parametrize("where", ["command line", "environment"])
def test_help_prints_the_root_as_text(sandbox, where):
    marker = sandbox / "m"
    for payload in PAYLOADS:
        value = payload.format(marker=marker)
        result = make(sandbox, "help", *split("AGENCY_STACK_ROOT", value, {}, where))
        assert result.returncode == 0, result.stderr
        assert not marker.exists(), payload
        assert f"AGENCY_STACK_ROOT={value}\n" in result.stdout


def test_plain_values_and_defaults_still_reach_the_cli(sandbox):
    result = make(sandbox, "pgvector-status", {"CLIENT_ID": "mk-none"}, {})
    assert result.returncode != 0
    assert result.stderr.startswith("error: Client mk-none is not installed here"), result.stderr
    result = make(sandbox, "pgvector-status", {}, {"CLIENT_ID": "mk-none"})
    assert "error: Client mk-none is not installed here" in result.stderr
    result = make(sandbox, "pgvector-status", {}, {})  # no CLIENT_ID: the CLI's default, said on stderr
    assert "error: Client default is not installed here" in result.stderr
    assert str(sandbox / "root") in result.stderr  # AGENCY_STACK_ROOT from the environment
    environ = clean_environ("AGENCY_STACK_ROOT", "AGENCY_STACK_LOG")
    help_text = subprocess.run(["make", "-s", "-C", str(PROJECT), "help"], capture_output=True, text=True, env=environ,
                               timeout=60)
    assert help_text.returncode == 0
    assert "AGENCY_STACK_ROOT=/opt/agency_stack\n" in help_text.stdout
    assert "AGENCY_STACK_LOG=/var/log/agency_stack/components/pgvector.log\n" in help_text.stdout
    assert "pgvector-status" in help_text.stdout
