"""``/file/download`` and ``/file/upload``: payloads to agents, files from agents.

Caldera serves both without credentials. Assay asks for the agent's key (``Authorization: Bearer``) and
accepts Caldera's unauthenticated form only with ``--caldera-compat``, and then only for agents that
registered through ``/beacon`` (a native agent's paw cannot be borrowed). The reply to a download carries
Caldera's ``FILENAME`` header and ``X-Payload-SHA256``, which the native agent checks before running anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from assay.c2._core import BeaconCore
from assay.c2._payloads import MAX_UPLOAD_BYTES, PayloadStore, safe_name
from assay.emulation import Agent
from assay.errors import C2Error


class FileContact:
    def __init__(
        self, core: Callable[[], BeaconCore], payloads: Callable[[], PayloadStore], caldera_compat: bool
    ) -> None:
        self._core = core
        self._payloads = payloads
        self.caldera_compat = caldera_compat

    def _agent(self, authorization: str | None, paw: str | None) -> Agent | None:
        """The agent making the request, or ``None`` for an unauthenticated Caldera agent (compat mode)."""
        core = self._core()
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and key.strip():
            try:
                return core.agent_for_key(key.strip())
            except C2Error as exc:
                raise HTTPException(401, detail=exc.message) from exc
        if not self.caldera_compat:
            raise HTTPException(
                401,
                detail="agent key required: Authorization: Bearer <key> "
                "(unauthenticated Caldera file transfer needs assay serve --caldera-compat)",
            )
        if paw and core.is_native(paw):
            raise HTTPException(403, detail=f"agent {paw} is an enrolled native agent; use its key")
        return None

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/file", tags=["agent contact (files)"])

        def download(
            file: Annotated[str | None, Header()] = None,
            paw: Annotated[str | None, Header()] = None,
            platform: Annotated[str | None, Header()] = None,
            authorization: Annotated[str | None, Header()] = None,
        ) -> FileResponse | JSONResponse:
            self._agent(authorization, paw)
            name = safe_name(file)
            found = self._payloads().find(name)
            if found is None:
                return JSONResponse(
                    {"error": f"no payload named {name!r}", "details": {"field": "file"}}, status_code=404
                )
            return FileResponse(
                found.path,
                media_type="application/octet-stream",
                headers={
                    "FILENAME": name,
                    "Content-Disposition": f'attachment; filename="{name}"',
                    "X-Payload-SHA256": found.sha256,
                },
            )

        for method in ("GET", "POST"):  # Sandcat POSTs; a browser or curl GETs
            router.add_api_route(
                "/download",
                download,
                methods=[method],
                response_model=None,
                operation_id=f"file_download_{method.lower()}",
            )

        @router.post("/upload")
        async def upload(
            request: Request,
            x_paw: Annotated[str | None, Header()] = None,
            directory: Annotated[str | None, Header()] = None,
            authorization: Annotated[str | None, Header()] = None,
        ) -> dict[str, str]:
            if directory is not None:
                raise HTTPException(
                    400, detail="the 'Directory' header is refused: uploads never go into the payload store"
                )
            agent = self._agent(authorization, x_paw)
            paw = agent.paw if agent is not None else (x_paw or "")
            known = self._core().agents.get(paw) if agent is None else agent
            if known is None:
                raise HTTPException(403, detail="X-Paw must name an agent that registered through /beacon")
            if not known.trusted:
                raise HTTPException(403, detail=f"agent {paw} is not trusted (not enrolled): no upload")
            form = await request.form(max_files=1, max_fields=8, max_part_size=MAX_UPLOAD_BYTES)
            try:
                item = form.get("file")
                if not isinstance(item, UploadFile):
                    raise HTTPException(400, detail="multipart field 'file' (a file) is required")
                name = safe_name(item.filename, "filename")
                data = await item.read(MAX_UPLOAD_BYTES + 1)
                if len(data) > MAX_UPLOAD_BYTES:
                    raise HTTPException(413, detail=f"upload is larger than {MAX_UPLOAD_BYTES} bytes")
                saved = await run_in_threadpool(self._payloads().save_upload, paw, name, data)
            finally:
                await form.close()
            return {"paw": paw, "file": name, "stored": saved.name}

        return router
