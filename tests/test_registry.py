"""AgencyStack's component registry (registry.py): merged on install and uninstall, nothing else touched,
refused when it is not JSON or when the path could be steered, atomic under concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import subprocess
from pathlib import Path

import pytest

from agency_pgvector import registry, tls
from agency_pgvector.errors import UserError
from agency_pgvector.report import Report

from conftest import stop_all

OTHERS = {
    "schema_version": "1.0.0",
    "last_updated": "2025-04-05T03:11:30-05:00",
    "components": {
        "infrastructure": {"traefik": {"name": "Traefik", "integration_status": {"installed": True, "hardened": True}}},
        "database": {"redis": {"name": "Redis", "integration_status": {"installed": False}, "ports": {"redis": 6379}}},
    },
    "custom_top_level": ["kept", "as", "is"],
}


@pytest.fixture(scope="module", autouse=True)
def own_root(stack_root):
    """A root of this module's own: ALL=true here means this module's clients, whatever else the session installed."""
    root = stack_root.parent / "rg-reg" / "root"
    root.parent.mkdir(mode=0o755)
    before = os.environ["AGENCY_STACK_ROOT"]
    os.environ["AGENCY_STACK_ROOT"] = str(root)
    yield root
    os.environ["AGENCY_STACK_ROOT"] = before
    stop_all(root)


@pytest.fixture(autouse=True)
def _fresh_registry(own_root):
    """Each test starts without a registry file and leaves none behind."""
    registry.path(own_root).unlink(missing_ok=True)
    yield
    registry.path(own_root).unlink(missing_ok=True)


def _root() -> Path:
    return Path(os.environ["AGENCY_STACK_ROOT"])


def _seed(data) -> Path:
    target = registry.path(_root())
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(data if isinstance(data, str) else json.dumps(data, indent=4))
    return target


def _entry() -> dict:
    return json.loads(registry.path(_root()).read_text())["components"]["database"]["pgvector"]


def _others(data: dict) -> dict:
    """The document without our entry and last_updated: what must never change."""
    data = json.loads(json.dumps(data))
    data["components"]["database"].pop("pgvector", None)
    data.pop("last_updated", None)
    return data


def test_install_and_uninstall_merge_only_the_pgvector_entry(install, cli):
    target = _seed(OTHERS)
    os.chown(target, 0, 65534)  # AgencyStack's owner and mode for its file: kept by every write
    os.chmod(target, 0o640)
    install("rg-a", ADMIN_EMAIL="a-ops@example.com", DOMAIN="a.example.com")
    install("rg-b", SERVER="shared", ADMIN_EMAIL="b-ops@example.com")
    data = json.loads(target.read_text())
    assert _others(data) == _others(OTHERS)
    entry = _entry()
    assert entry["integration_status"]["installed"] is True and entry["integration_status"]["multi_tenant"] is True
    assert entry["clients"]["rg-a"] == {"admin_email": "a-ops@example.com", "domain": "a.example.com",
                                        "engine": "embedded", "server": "dedicated"}
    assert entry["clients"]["rg-b"]["admin_email"] == "b-ops@example.com"
    assert entry["clients"]["rg-b"]["server"] == "shared"
    info = target.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, 0, 65534)

    # A re-run changes nothing: not even last_updated.
    before = target.read_bytes()
    rerun = cli("install", "--json", CLIENT_ID="rg-a", DOMAIN="a.example.com", ADMIN_EMAIL="a-ops@example.com")
    assert rerun.returncode == 0, rerun.stderr
    assert {"item": "registry", "status": "ok"}.items() <= next(
        i for i in json.loads(rerun.stdout)["items"] if i["item"] == "registry").items()
    assert target.read_bytes() == before

    # ALL=true records every client again (here: one an operator deleted by hand).
    data = json.loads(target.read_text())
    del data["components"]["database"]["pgvector"]["clients"]["rg-a"]
    target.write_text(json.dumps(data))
    assert cli("install", ALL="true").returncode == 0
    assert "rg-a" in _entry()["clients"]

    for client_id in ("rg-a", "rg-b"):
        gone = cli("uninstall", CLIENT_ID=client_id, YES="true", NO_BACKUP="true")
        assert gone.returncode == 0, gone.stderr + gone.stdout
        assert client_id not in _entry()["clients"]
    mine = {k: v for k, v in _entry()["clients"].items() if not k.startswith("rg-")}  # other tests' clients, if any
    assert _entry()["integration_status"]["installed"] is bool(mine)
    assert _others(json.loads(target.read_text())) == _others(OTHERS)
    info = target.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, 0, 65534)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"components": []}', '{"components": {"database": 3}}'])
def test_a_registry_that_is_not_a_json_object_is_refused_and_left_alone(stack_root, text):
    target = _seed(text)
    with pytest.raises(UserError) as refused:
        registry.client_installed(_root(), _env("rg-bad"), Report())
    assert str(refused.value).startswith(f"Refusing to update {target}") and "\n" not in str(refused.value)
    assert target.read_text() == text
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temp file left behind


def test_install_with_a_broken_registry_says_so_in_one_sentence(install, cli):
    install("rg-c", SERVER="shared")
    target = _seed("{broken")
    result = cli("install", CLIENT_ID="rg-c", DOMAIN="example.com", ADMIN_EMAIL="ops@example.com")
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert f"Refusing to update {target}: it is not valid JSON" in result.stderr
    assert target.read_text() == "{broken"
    target.unlink()
    assert cli("install", CLIENT_ID="rg-c", DOMAIN="example.com", ADMIN_EMAIL="ops@example.com").returncode == 0
    assert "rg-c" in _entry()["clients"]


def test_a_link_at_the_registry_path_is_refused_and_its_target_untouched(stack_root, tmp_path):
    target = registry.path(_root())
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    victim = tmp_path / "shadow"
    victim.write_text('{"components": {}}')
    target.symlink_to(victim)
    try:
        with pytest.raises(UserError, match="symbolic link"):
            registry.client_installed(_root(), _env("rg-link"), Report())
        assert victim.read_text() == '{"components": {}}'
    finally:
        target.unlink()


def test_a_directory_another_user_controls_is_refused(stack_root):
    folder = registry.path(_root()).parent
    folder.mkdir(parents=True, exist_ok=True)
    for owner, mode in ((65534, 0o755), (0, 0o777)):  # a local user's directory, or one anybody can write to
        os.chown(folder, owner, 0)
        os.chmod(folder, mode)
        try:
            with pytest.raises(UserError, match="Refusing to use"):
                registry.client_installed(_root(), _env("rg-dir"), Report())
            assert not registry.path(_root()).exists() or "rg-dir" not in _entry().get("clients", {})
        finally:
            os.chown(folder, 0, 0)
            os.chmod(folder, 0o755)
    registry.path(_root()).unlink(missing_ok=True)


def test_the_installation_ca_names_the_admin_email_as_its_contact(install, cli):
    install("rg-tls", SERVER="shared", ENABLE_CLOUD="true", ADMIN_EMAIL="pg+ca@example.com")
    ca = tls.ca_cert(_root() / "pgvector")
    shown = subprocess.run(["openssl", "x509", "-in", str(ca), "-noout", "-email", "-subject"], capture_output=True,
                           text=True, check=True).stdout
    assert shown.splitlines()[0] == "pg+ca@example.com" and "CN = agency-pgvector CA" in shown
    assert _entry()["clients"]["rg-tls"]["admin_email"] == "pg+ca@example.com"
    assert cli("uninstall", CLIENT_ID="rg-tls", YES="true", NO_BACKUP="true").returncode == 0


def _add(client_id: str) -> None:
    registry.client_installed(_root(), _env(client_id), Report())


def test_concurrent_writers_lose_nothing(stack_root):
    target = _seed(OTHERS)
    (target.parent / f".{target.name}.killed.tmp").write_text("{")  # what a run killed mid-write leaves
    names = [f"rg-p{i}" for i in range(12)]
    with multiprocessing.get_context("fork").Pool(6) as pool:
        pool.map(_add, names)
    assert set(names) <= set(_entry()["clients"])
    assert _others(json.loads(registry.path(_root()).read_text())) == _others(OTHERS)
    assert [p.name for p in target.parent.iterdir()] == [target.name]
    for name in names:
        registry.client_removed(_root(), name, Report())
    registry.path(_root()).unlink()


def _env(client_id: str) -> dict:
    return {"CLIENT_ID": client_id, "ADMIN_EMAIL": "ops@example.com", "DOMAIN": "example.com",
            "PGVECTOR_ENGINE": "embedded", "PGVECTOR_SERVER": "dedicated"}
