"""Input validation: every bad value is one clear sentence with the fix, and nothing is created."""

from __future__ import annotations

import pytest

from agency_pgvector import spec
from agency_pgvector.errors import UserError

from conftest import client_paths


@pytest.mark.parametrize("value", ["acme", "a", "client-1", "x" * 32, "default", "0day"])
def test_good_client_ids(value):
    assert spec.client_id(value) == value


@pytest.mark.parametrize("value",
                         ["", "Acme", "-acme", "acme-", "x" * 33, "a_b", "a;b", "../etc", "a b", "acme\n", "аcme", "a\x00b"])
def test_bad_client_ids(value):
    with pytest.raises(UserError, match="CLIENT_ID .* not valid: use"):
        spec.client_id(value)


@pytest.mark.parametrize("value", ["example.com", "a.b.c", "localhost", "xn--bcher-kva.example", "A-1.example.org"])
def test_good_domains(value):
    assert spec.domain(value) == value.lower()


@pytest.mark.parametrize("value", ["", "-a.com", "a-.com", "a..com", "exa mple.com", "a" * 64 + ".com", "bücher.de", "a.com\nX=1",
                                   "'; drop"])
def test_bad_domains(value):
    with pytest.raises(UserError, match="DOMAIN"):
        spec.domain(value)


@pytest.mark.parametrize("value", ["ops@example.com", "first.last+tag@sub.example.org"])
def test_good_emails(value):
    assert spec.email(value) == value


@pytest.mark.parametrize("value", ["", "ops", "@example.com", "ops@", "o'ps@example.com", "ops@exa mple.com", "a$(id)@x.com",
                                   "ops@example.com\nPGPASSWORD=x"])
def test_bad_emails(value):
    with pytest.raises(UserError, match="ADMIN_EMAIL"):
        spec.email(value)


@pytest.mark.parametrize("value", ["0", "80", "65536", "5433a", "-1", "٥٤٣٣"])
def test_bad_ports(value):
    with pytest.raises(UserError, match="PORT"):
        spec.port(value)


def test_admin_url_errors_never_echo_the_url():
    with pytest.raises(UserError) as err:
        spec.admin_url("mysql://root:hunter2@db/x")
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"CLIENT_ID": "Bad;Id"}, "CLIENT_ID"),
        ({"DOMAIN": ""}, "DOMAIN is required"),
        ({"ADMIN_EMAIL": "nobody"}, "ADMIN_EMAIL"),
        ({"ENGINE": "podman"}, "ENGINE"),
        ({"ENGINE": "external"}, "ADMIN_URL"),
        ({"PORT": "99999"}, "PORT"),
        ({"FORCE": "perhaps"}, "--force"),
    ],
)
def test_cli_rejects_bad_input_cleanly_and_creates_nothing(cli, stack_root, env, needle):
    before = _installer_files(stack_root)
    full = {"CLIENT_ID": "mike", "DOMAIN": "example.com", "ADMIN_EMAIL": "ops@example.com", "WITH_DEPS": "true", **env}
    result = cli("install", **full)
    assert result.returncode == 2
    assert needle in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    after = _installer_files(stack_root)
    assert after == before
    assert not client_paths("mike").client_dir.exists()


def _installer_files(root):
    """Everything the installer writes, minus the data directories of servers other tests left running
    (PostgreSQL itself changes files there at any time)."""
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*")
                  if "postgres" not in p.relative_to(root).parts[2:3] and "shared" not in p.relative_to(root).parts[1:2])
