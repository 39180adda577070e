"""Certificates for remote access (ENABLE_CLOUD): one CA per installation, and a server certificate per pooler that
the CA signs. Clients trust the CA (PGSSLROOTCERT, sslmode=verify-full), so a reissued server certificate (a new
domain on a shared pooler, a renewal) changes nothing on their side.

    <root>/pgvector/tls/           0700 root: ca.key (0600), ca.crt (0644), made once
    <pooler>/tls/                  0750 root:<pooler group>: server.key (0640), server.crt, names (the SAN it holds)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
from pathlib import Path

from .errors import UserError
from .system import ensure_dir, run

CERT_DAYS = 3650
RENEW_SECONDS = 30 * 86400  # a certificate this close to its end is replaced
_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-sha256"]


def need_openssl() -> None:
    if shutil.which("openssl") is None:
        raise UserError("ENABLE_CLOUD=true and clusters make certificates with the openssl command, "
                        "which is missing: apt-get install openssl, then re-run.")


def ca_dir(state_dir: Path) -> Path:
    return state_dir / "tls"


def ca_cert(state_dir: Path) -> Path:
    return ca_dir(state_dir) / "ca.crt"


def ca_ready(state_dir: Path) -> bool:
    folder = ca_dir(state_dir)
    return (folder / "ca.key").exists() and (folder / "ca.crt").exists() and _valid(folder / "ca.crt")


def make_ca(state_dir: Path, contact: str = "") -> None:
    """The installation's CA, made in a staging directory renamed into place (a concurrent run's CA wins and is kept:
    os.rename onto a non-empty directory fails). `contact` (the ADMIN_EMAIL of the install that makes it, checked by
    spec.email) is the subject's emailAddress: whom a client who sees this issuer should ask about it."""
    if ca_ready(state_dir):
        return
    need_openssl()
    target = ca_dir(state_dir)
    ensure_dir(state_dir, 0o711)
    staging = target.with_name(f"tls.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    ensure_dir(staging, 0o700)
    run(["openssl", "req", "-x509", "-new", *_KEY, "-days", str(CERT_DAYS), "-subj",
         f"/CN=agency-pgvector CA {_safe(socket.gethostname())}{_contact(contact)}",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-keyout", str(staging / "ca.key"),
         "-out", str(staging / "ca.crt")])
    os.chmod(staging / "ca.key", 0o600)
    os.chmod(staging / "ca.crt", 0o644)
    if target.exists() and not ca_ready(state_dir):  # an expired or half-made one
        shutil.rmtree(target)
    try:
        os.rename(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)


def current_names(tls_dir: Path, state_dir: Path) -> list[str] | None:
    """The names a pooler's certificate holds, when it is there, not close to its end and signed by today's CA."""
    cert, key, listed = tls_dir / "server.crt", tls_dir / "server.key", tls_dir / "names"
    if not (cert.exists() and key.exists() and listed.exists() and ca_ready(state_dir) and _valid(cert)):
        return None
    if run(["openssl", "verify", "-CAfile", str(ca_cert(state_dir)), str(cert)], check=False).returncode != 0:
        return None
    return json.loads(listed.read_text())


def issue(tls_dir: Path, state_dir: Path, names: list[str], gid: int, client_auth: bool = False) -> None:
    """A server certificate for `names` (DNS names and IP addresses), signed by the CA, readable by the pooler's group
    (`client_auth`: also a client certificate, as etcd's peers present to each other)."""
    make_ca(state_dir)
    for stale in tls_dir.parent.glob(f"{tls_dir.name}.tmp*"):  # from killed runs
        shutil.rmtree(stale, ignore_errors=True)
    staging = tls_dir.with_name(f"{tls_dir.name}.tmp{os.getpid()}")
    ensure_dir(staging, 0o700)
    alt = ", ".join(f"IP:{name}" if _is_ip(name) else f"DNS:{name}" for name in names)
    usage = "serverAuth, clientAuth" if client_auth else "serverAuth"
    (staging / "ext.cnf").write_text("[ext]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n"
                                     f"extendedKeyUsage = {usage}\nsubjectAltName = {alt}\n")
    run(["openssl", "req", "-new", *_KEY, "-subj", f"/CN={names[0]}", "-keyout", str(staging / "server.key"),
         "-out", str(staging / "server.csr")])
    ca = ca_dir(state_dir)
    run(["openssl", "x509", "-req", "-in", str(staging / "server.csr"), "-CA", str(ca / "ca.crt"), "-CAkey",
         str(ca / "ca.key"), "-set_serial", f"0x{secrets.token_hex(16)}", "-days", str(CERT_DAYS), "-sha256",
         "-extfile", str(staging / "ext.cnf"), "-extensions", "ext", "-out", str(staging / "server.crt")])
    for leftover in ("ext.cnf", "server.csr"):
        (staging / leftover).unlink()
    (staging / "names").write_text(json.dumps(names) + "\n")
    for path, mode in ((staging / "server.key", 0o640), (staging / "server.crt", 0o644), (staging / "names", 0o644),
                       (staging, 0o750)):
        os.chown(path, 0, gid)  # root's, readable by the pooler's group: it cannot change its own key
        os.chmod(path, mode)
    shutil.rmtree(tls_dir, ignore_errors=True)
    os.replace(staging, tls_dir)


def _contact(email: str) -> str:
    """The subject's emailAddress part. A validated address (spec.email: letters, digits, . _ % + - and @) has no '/'
    or '=' that could start another field; '+' (a multi-valued name in -subj) is escaped."""
    return "/emailAddress=" + email.replace("+", "\\+") if email else ""


def fingerprint(cert: Path) -> str:
    body = "".join(line for line in cert.read_text().splitlines() if line and not line.startswith("-----"))
    digest = hashlib.sha256(base64.b64decode(body)).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def server_names(domains: list[str]) -> list[str]:
    """What a pooler's certificate names: the clients' domains, this host's name, localhost and its addresses."""
    names = [name for name in dict.fromkeys([*sorted(domains), socket.getfqdn(), "localhost"]) if _dns_name(name)]
    return names + host_addresses()


def _valid(cert: Path) -> bool:
    return run(["openssl", "x509", "-noout", "-checkend", str(RENEW_SECONDS), "-in", str(cert)], check=False).returncode == 0


def _dns_name(name: str) -> bool:
    """A host name fit for the SAN (and for openssl's config syntax): dotted RFC 1123 labels, or localhost."""
    return name == "localhost" or ("." in name and re.fullmatch(r"[A-Za-z0-9.-]{1,253}", name) is not None)


def _is_ip(name: str) -> bool:
    return ":" in name or re.fullmatch(r"[0-9.]+", name) is not None


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", text)[:40]


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
