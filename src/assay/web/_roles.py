"""What a key may see: one call, :func:`allowed`, decides it for every page, section and form.

Roles are ``red`` (content, operations), ``blue`` (rounds, alerts, rules) and ``admin`` (everything, keys).
The web UI shows a page, a link to it, or a form on it only when ``allowed(principal, role)``.
"""

from __future__ import annotations

from assay.c2 import Principal

ROLES = ("red", "blue", "admin")


def role_of(principal: Principal | None) -> str | None:
    """The key's role (``red``, ``blue`` or ``admin``): the UI shows what the REST API lets that key do."""
    if principal is None or principal.kind != "api":
        return None
    return principal.role.value


def allowed(principal: Principal | None, need: str) -> bool:
    """May ``principal`` see what needs ``need`` (``red``, ``blue``, ``admin``, or ``any`` logged-in key)?"""
    role = role_of(principal)
    if role is None:
        return False
    return role == "admin" or need in ("any", role)
