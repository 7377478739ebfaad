"""Web sessions: an API key typed into a form becomes a signed cookie; every form carries a CSRF token.

The cookie holds ``{principal, csrf token, expiry}`` as base64 JSON and an HMAC-SHA256 of it under a secret
kept in the database (so every worker of a multi-worker server accepts the same cookies, and a restart keeps
sessions). It is ``HttpOnly`` (no script reads it) and ``SameSite=Strict`` (no other site's page sends it);
``Secure`` when the request came over HTTPS. A visitor who has not logged in still gets a session, with a
CSRF token and no principal, so the login form itself is protected like every other form.

A session names the key it was opened with, never the key itself: deleting the key (``DELETE
/api/v2/keys/{name}``) ends every session opened with it at the next request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from assay.c2 import Principal

if TYPE_CHECKING:
    from assay.storage import Store

COOKIE = "assay_session"
SECRET_NAME = "web_session_secret"  # stored beside the (hashed) credentials; never an API credential
LIFETIME = 12 * 3600.0  # seconds a session lasts after login


@dataclass(frozen=True)
class Session:
    csrf: str
    principal: Principal | None = None
    expires: float = 0.0

    @property
    def logged_in(self) -> bool:
        return self.principal is not None


def anonymous() -> Session:
    return Session(csrf=secrets.token_urlsafe(24))


def logged_in(principal: Principal, now: float) -> Session:
    """A fresh session (and a fresh CSRF token: a token seen before login is not trusted after it)."""
    return Session(csrf=secrets.token_urlsafe(24), principal=principal, expires=now + LIFETIME)


def session_secret(store: Store) -> bytes:
    """The signing secret: made on first use and stored, then read back (so concurrent first starts agree on
    whichever one was written last)."""
    found = store.credential(SECRET_NAME)
    if not found:
        store.set_credential(SECRET_NAME, secrets.token_urlsafe(48))
        found = store.credential(SECRET_NAME)
    assert found is not None
    return found.encode()


class Signer:
    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"assay web session\0" + secret).digest()

    def _mac(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._key, payload, hashlib.sha256).digest()).decode()

    def dump(self, session: Session) -> str:
        data = {"c": session.csrf, "e": session.expires}
        if session.principal is not None:
            data["k"] = session.principal.kind
            data["p"] = session.principal.name
        payload = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode())
        return payload.decode() + "." + self._mac(payload)

    def load(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session in a cookie, or ``None`` when it is missing, forged, malformed or expired."""
        if not cookie or len(cookie) > 4096 or "." not in cookie:
            return None
        payload, _, mac = cookie.partition(".")
        if not hmac.compare_digest(self._mac(payload.encode()), mac):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload.encode()))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return None
        principal = None
        if isinstance(data.get("p"), str) and isinstance(data.get("k"), str):
            expires = float(data.get("e") or 0.0)
            if expires < (time.time() if now is None else now):
                return None
            principal = Principal(data["k"], data["p"])
        return Session(csrf=data["c"], principal=principal, expires=float(data.get("e") or 0.0))


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), (sent or "").encode())
