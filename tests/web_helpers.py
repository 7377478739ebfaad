"""A web UI session over real HTTP, as a browser keeps one: httpx with its own cookie jar."""

from __future__ import annotations

import re

import httpx

from serving import Server

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def browser(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, follow_redirects=False, trust_env=False, timeout=20)


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, f"no CSRF field on {page.url}"
    return found.group(1)


def log_in(client: httpx.Client, key: str) -> httpx.Response:
    form = client.get("/ui/login")
    done = client.post("/ui/login", data={"csrf": csrf_of(form), "key": key, "next": "/ui/"})
    assert done.status_code == 303, done.text[:300]
    return done
