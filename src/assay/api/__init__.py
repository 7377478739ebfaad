"""The server: FastAPI app with the REST API v2 and the agent contacts, run under uvicorn (`assay serve`)."""

from assay.api._app import create_app
from assay.api._server import bind, serve
from assay.api._state import API_KEY, ENROL_TOKEN, ServerConfig, ServerState, open_state
from assay.api._telemetry import BadRecord, decode_batch

__all__ = [
    "API_KEY",
    "ENROL_TOKEN",
    "BadRecord",
    "ServerConfig",
    "ServerState",
    "bind",
    "create_app",
    "decode_batch",
    "open_state",
    "serve",
]
