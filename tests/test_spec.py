"""Input validation: every bad value is one clear sentence with the fix, and nothing is created."""

from __future__ import annotations

import pytest

from agency_pgvector import spec
from agency_pgvector.errors import InputError, UserError

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


# -- spec.build: every bad input is an InputError (exit 2, one sentence) before anything is touched -----------------

@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("AGENCY_STACK_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("AGENCY_STACK_LOG", str(tmp_path / "log" / "pgvector.log"))
    monkeypatch.delenv("PGVECTOR_IMAGE", raising=False)
    return monkeypatch


GOOD = dict(client="acme", domain_="example.com", admin_email="ops@example.com")


@pytest.mark.parametrize("changes, needle", [
    (dict(client="Bad;Id"), "CLIENT_ID 'Bad;Id' is not valid"),
    (dict(client="Bad;Id", domain_="", admin_email="x"), "CLIENT_ID"),  # the first field the operator reads comes first
    (dict(domain_=""), "DOMAIN is required"),
    (dict(admin_email=""), "ADMIN_EMAIL is required"),
    (dict(domain_="exa mple.com"), "DOMAIN 'exa mple.com' is not a valid host name"),
    (dict(admin_email="nobody"), "ADMIN_EMAIL 'nobody' is not a valid e-mail address"),
    (dict(engine_="podman"), "ENGINE 'podman' is not known"),
    (dict(server_="Both!"), "SERVER 'Both!' is not known"),
    (dict(engine_="external"), "ENGINE=external needs the superuser URL"),
    (dict(admin_url_="mysql://root:hunter2@db/x"), "ADMIN_URL is not a PostgreSQL URL"),
    (dict(admin_url_="postgresql://u:p@ss@db/postgres"), "ADMIN_URL could not be parsed"),
    (dict(port_="80"), "PORT '80' is not valid"),
    (dict(port_="5433\n"), "PORT"),
])
def test_build_refuses_bad_values_with_one_sentence_and_exit_2(env, changes, needle):
    with pytest.raises(InputError) as err:
        spec.build(**{**GOOD, **changes})
    message = str(err.value)
    assert needle in message and err.value.exit_code == 2
    assert "\n" not in message and "hunter2" not in message and "p@ss" not in message


@pytest.mark.parametrize("name, value", [
    ("AGENCY_STACK_ROOT", "relative/root"), ("AGENCY_STACK_ROOT", "/opt/../etc"), ("AGENCY_STACK_ROOT", "/opt/a b"),
    ("AGENCY_STACK_LOG", "/var/log/$(id)"), ("AGENCY_STACK_LOG", "/var/log/x\n"),
    ("PGVECTOR_IMAGE", "pgvector/pgvector:pg17; rm -rf /"), ("PGVECTOR_IMAGE", "UPPER/case"),
])
def test_build_refuses_bad_paths_and_images_from_the_environment(env, name, value):
    env.setenv(name, value)
    with pytest.raises(InputError, match=name) as err:
        spec.build(**GOOD)
    assert err.value.exit_code == 2


def test_build_returns_the_checked_values_and_the_paths_they_imply(env, tmp_path):
    env.setenv("PGVECTOR_IMAGE", "localhost:5000/pgvector/pgvector:pg17")
    built = spec.build("acme", "Example.COM", "ops@example.com", engine_="docker", server_="shared", port_="5433",
                       force=True, dry_run=True)
    assert (built.client_id, built.domain, built.engine, built.server, built.port, built.image) == (
        "acme", "example.com", "docker", "shared", 5433, "localhost:5000/pgvector/pgvector:pg17")
    assert built.force and built.dry_run and not built.with_deps
    assert built.paths.env_file == tmp_path / "root" / "clients" / "acme" / "pgvector" / ".env"
    assert built.paths.lock_file == tmp_path / "root" / "pgvector" / "locks" / "acme.lock"
    assert built.log_file == tmp_path / "log" / "pgvector.log"


def test_build_without_contact_for_commands_on_an_installed_client(env):
    built = spec.build("acme", require_contact=False)
    assert (built.domain, built.admin_email, built.engine, built.server) == ("", "", "auto", "")


def test_the_admin_url_is_kept_out_of_the_specs_repr(env):
    built = spec.build(**GOOD, engine_="external", admin_url_="postgresql://admin:hunter2@db.example.com:5432/postgres")
    assert built.admin_url and "hunter2" not in repr(built)
