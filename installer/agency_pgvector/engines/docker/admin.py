"""SQL inside a container, as its postgres OS user over the local socket (psql, statements on stdin: never argv),
and the installer's own superuser login made through it."""

from __future__ import annotations

import re
import socket
import time

from ... import envfile, scram
from ...errors import UserError
from ...text import first_line
from .client import errors

ADMIN_LABEL = "agency-pgvector.admin"  # the superuser the installer logs in as
ADOPTED_ADMIN = "agency_admin"  # the installer's own login in a container it did not create
NOT_READY = ("No such file or directory", "Connection refused", "starting up", "shutting down", "not yet accepting",
             "closed the connection unexpectedly", "is not running")


def run_in(container, argv: list[str], stdin: bytes) -> tuple[int, str, str]:
    """Run argv in the container as the postgres OS user, `stdin` fed through the API socket (never argv)."""
    from docker.utils.socket import frames_iter

    api = container.client.api
    exec_id = api.exec_create(container.id, argv, stdin=True, user="postgres")["Id"]
    sock = api.exec_start(exec_id, socket=True)
    raw = getattr(sock, "_sock", sock)
    raw.sendall(stdin)
    raw.shutdown(socket.SHUT_WR)
    out = {1: b"", 2: b""}
    for stream, data in frames_iter(sock, tty=False):
        out[stream] = out.get(stream, b"") + data
    sock.close()
    raw.close()
    return api.exec_inspect(exec_id)["ExitCode"], out[1].decode(errors="replace"), out[2].decode(errors="replace")


def psql(engine, container, script: str, timeout: float = 60.0) -> str:
    """psql inside the container over its local socket, as the image's superuser; waits while it starts."""
    errs, _ = errors()
    env = dict(item.partition("=")[::2] for item in container.attrs["Config"].get("Env") or [])
    argv = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", env.get("POSTGRES_USER") or "postgres",
            "-d", "postgres"]
    deadline = time.monotonic() + timeout
    engine.container = container
    while True:
        engine.check_alive()
        try:
            code, out, err = run_in(container, argv, script.encode())
        except errs.APIError as exc:  # e.g. not running (yet)
            code, out, err = -1, "", str(exc.explanation or exc)
        if code == 0:
            return out
        if not any(mark in err for mark in NOT_READY) or time.monotonic() > deadline:
            raise UserError(f"Running SQL inside {container.name} (psql as the postgres OS user) failed: "
                            f"{first_line(err)[:200]}: check that the container runs a PostgreSQL image with psql "
                            "and a postgres user.")
        time.sleep(0.2)


def server_info(engine, container) -> tuple[str, str]:
    """Server version and the pgvector version it offers ('' when none), asked inside the container."""
    out = psql(engine, container, "SELECT current_setting('server_version') || '|' || coalesce("
                                  "(SELECT default_version FROM pg_available_extensions WHERE name = 'vector'), '');\n")
    version, _, vector = out.strip().splitlines()[-1].partition("|")
    return version.split()[0], vector


def role(container) -> str:
    return container.labels.get(ADMIN_LABEL, ADOPTED_ADMIN)


def login_works(engine) -> bool:
    if not engine.password_file.exists():
        return False
    try:
        engine.admin_connect().close()
        return True
    except Exception:  # noqa: BLE001 - wrong or missing password, role missing: set it up again
        return False


def ensure(engine, container) -> None:
    """(Re)set the installer's superuser login through the container's socket; the verifier travels on stdin."""
    name = role(container)
    if not engine.password_file.exists():
        envfile.write_atomic(engine.password_file, scram.generate())
    verifier = scram.hash_password(engine.password_file.read_text().strip())
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name) or not re.fullmatch(r"[A-Za-z0-9$:+/=-]+", verifier):
        raise UserError(f"Container {container.name} has an unusable {ADMIN_LABEL} label {name[:40]!r}: "
                        "recreate the container.")
    # psql quotes :"role" as an identifier and :'verifier' as a literal
    psql(engine, container, f"\\set role '{name}'\n\\set verifier '{verifier}'\n"
                            "SELECT format('CREATE ROLE %I', :'role')"
                            " WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \\gexec\n"
                            "ALTER ROLE :\"role\" WITH SUPERUSER LOGIN PASSWORD :'verifier';\n")
    if not login_works(engine):
        point = engine.endpoint()
        raise UserError(f"The installer's login {name} cannot connect to {container.name} at {point.host}:{point.port}: "
                        f"allow it in the container's pg_hba.conf (host all {name} all scram-sha-256) and re-run.")
