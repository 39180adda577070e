"""Passwords: generate them, hash them the way PostgreSQL stores them, check one against a stored hash.

Hashing client-side means the plain password never reaches the server's statement log, and checking
against pg_authid lets a re-run tell "same password" from "drift" without opening a login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

ITERATIONS = 4096


def generate() -> str:
    return secrets.token_urlsafe(32)  # 43 characters of [A-Za-z0-9_-]: safe in URLs, shells and .env


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).digest(), server_key


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    stored, server = _keys(password, salt, ITERATIONS)
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${ITERATIONS}:{b64(salt)}${b64(stored)}:{b64(server)}"


def verify(password: str, stored_hash: str | None) -> bool:
    """True when `password` matches a pg_authid.rolpassword SCRAM verifier."""
    try:
        method, rest = (stored_hash or "").split("$", 1)
        params, keys = rest.split("$")
        iterations, salt = params.split(":")
        stored_key, server_key = keys.split(":")
        if method != "SCRAM-SHA-256":
            return False
        stored, server = _keys(password, base64.b64decode(salt), int(iterations))
        want_stored, want_server = base64.b64decode(stored_key), base64.b64decode(server_key)
    except ValueError:  # binascii.Error is one: a verifier that is not one matches nothing
        return False
    return hmac.compare_digest(stored, want_stored) and hmac.compare_digest(server, want_server)
