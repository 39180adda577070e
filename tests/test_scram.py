"""scram.py: passwords generated, hashed the way PostgreSQL stores them, checked against a stored verifier."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from agency_pgvector import scram


def test_scram_hash_verifies_only_the_right_password():
    verifier = scram.hash_password("s3cret")
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    assert scram.verify("s3cret", verifier)
    assert not scram.verify("s3cret ", verifier)
    assert not scram.verify("s3cret", None)
    assert not scram.verify("s3cret", "md5abcdef")


def test_generated_passwords_are_long_and_shell_safe():
    passwords = {scram.generate() for _ in range(50)}
    assert len(passwords) == 50
    assert all(len(p) >= 40 and p.replace("-", "").replace("_", "").isalnum() for p in passwords)


def test_the_verifier_matches_the_rfc_7677_exchange():
    """RFC 7677 section 3: user "user", password "pencil". The keys we store must produce the server signature and
    accept the client proof of that exchange, as PostgreSQL's would."""
    salt = "W22ZaJ0SNY7soEsUEjb6gQ=="
    verifier = scram.hash_password("pencil", base64.b64decode(salt))
    method, rest = verifier.split("$", 1)
    params, keys = rest.split("$")
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    assert (method, params) == ("SCRAM-SHA-256", f"4096:{salt}")
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth = f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s={salt},i=4096,c=biws,r={nonce}".encode()
    signature = hmac.new(server_key, auth, hashlib.sha256).digest()
    assert base64.b64encode(signature).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_key = bytes(p ^ s for p, s in zip(proof, hmac.new(stored_key, auth, hashlib.sha256).digest(), strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key


def test_each_hash_has_its_own_salt():
    first, second = scram.hash_password("same"), scram.hash_password("same")
    assert first != second and scram.verify("same", first) and scram.verify("same", second)


def test_a_verifier_made_with_another_iteration_count_still_verifies(monkeypatch):
    monkeypatch.setattr(scram, "ITERATIONS", 10000)  # a server with scram_iterations = 10000
    verifier = scram.hash_password("s3cret")
    monkeypatch.undo()
    assert verifier.startswith("SCRAM-SHA-256$10000:") and scram.verify("s3cret", verifier)


@pytest.mark.parametrize("stored", [
    "", "SCRAM-SHA-256", "SCRAM-SHA-256$", "SCRAM-SHA-256$4096:c2FsdA==", "SCRAM-SHA-256$x:c2FsdA==$YQ==:YQ==",
    "SCRAM-SHA-256$0:c2FsdA==$YQ==:YQ==", "SCRAM-SHA-256$4096:c2FsdA==$YQ==:YQ==:YQ==", "SCRAM-SHA-1$4096:c2FsdA==$YQ==:YQ==",
    "SCRAM-SHA-256$4096:c2FsdA==$YQ==:YQ==",  # well formed, wrong keys
])
def test_anything_but_a_matching_verifier_is_no_match(stored):
    assert scram.verify("s3cret", stored) is False


@pytest.mark.parametrize("stored", ["SCRAM-SHA-256$4096:c2FsdA==$a:b", "SCRAM-SHA-256$4096:c2FsdA==$YQ==:b"])
def test_keys_that_are_not_base64_are_no_match_not_an_error(stored):
    """verify() returns True or False for whatever pg_authid holds; it must not raise (plan() would end in an
    internal error instead of reporting password drift)."""
    assert scram.verify("s3cret", stored) is False
