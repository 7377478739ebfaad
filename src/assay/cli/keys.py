"""`assay keys`: create, list and revoke API keys of a role, through a running server's API (admin key).

Through the API, not the database, so a running server (every worker of it) knows a new key and forgets a
revoked one at once; the server stores only scrypt hashes, so a secret is shown once, when it is created.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from assay.plugins import hookimpl

keys_app = typer.Typer(help="API keys: create (red, blue, admin), list, revoke.", no_args_is_help=True)

Server = Annotated[str, typer.Option(envvar="ASSAY_SERVER", help="The server URL.", show_default=True)]
AdminKey = Annotated[str, typer.Option(envvar="ASSAY_API_KEY", help="An admin API key.")]
CaCert = Annotated[
    str | None,
    typer.Option(help="CA or self-signed certificate file to trust for an https:// server."),
]


@hookimpl
def register_commands(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


def _call(method: str, server: str, api_key: str, path: str, cacert: str | None, body: Any = None) -> Any:
    import httpx

    try:
        with httpx.Client(
            base_url=server.rstrip("/"), headers={"KEY": api_key}, timeout=30.0, verify=cacert or True
        ) as client:
            response = client.request(method, path, json=body)
    except httpx.HTTPError as exc:
        typer.echo(f"assay keys: cannot reach {server}: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    try:
        data = response.json()
    except ValueError:
        data = {"error": response.text[:500]}
    if response.status_code >= 400:
        message = data.get("error") if isinstance(data, dict) else data
        typer.echo(f"assay keys: {method} {path}: {response.status_code}: {message}", err=True)
        raise typer.Exit(code=1)
    return data


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name for the key (shown in the audit trail).")],
    role: Annotated[str, typer.Option(help="red, blue or admin.")],
    server: Server = "http://127.0.0.1:8888",
    api_key: AdminKey = "",
    cacert: CaCert = None,
) -> None:
    """Create a key of a role; prints the secret (shown once: only its hash is stored)."""
    created = _call("POST", server, api_key, "/api/v2/keys", cacert, {"name": name, "role": role})
    typer.echo(f"{created['name']} ({created['role']}): {created['key']}")


@keys_app.command("list")
def list_keys(
    server: Server = "http://127.0.0.1:8888", api_key: AdminKey = "", cacert: CaCert = None
) -> None:
    """Every key's name and role (secrets are never shown again)."""
    for key in _call("GET", server, api_key, "/api/v2/keys", cacert):
        typer.echo(f"{key['name']}\t{key['role']}")


@keys_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The key's name.")],
    server: Server = "http://127.0.0.1:8888",
    api_key: AdminKey = "",
    cacert: CaCert = None,
) -> None:
    """Revoke a key: refused from then on."""
    _call("DELETE", server, api_key, f"/api/v2/keys/{name}", cacert)
    typer.echo(f"revoked {name}")
