"""Secrets: generated with enough entropy that a fast hash is safe to store and check.

Keys are 256-bit random tokens, so SHA-256 (not a slow password hash) is the right digest: checking one costs
microseconds and never blocks the event loop (Caldera's argon2 per request costs 0.2 s; issue 4).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def matches(secret: str, expected_digest: str | None) -> bool:
    return expected_digest is not None and hmac.compare_digest(digest(secret), expected_digest)
