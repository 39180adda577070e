"""scram.py: passwords generated, hashed the way PostgreSQL stores them, checked against a stored verifier."""

from __future__ import annotations

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
