"""The agent (stdlib only): ``python3 -m assay.agent --server URL --enrol-token TOKEN``. See ``_agent``."""

from assay.agent._agent import (
    EXECUTORS,
    Agent,
    AgentError,
    FakeTransport,
    HttpTransport,
    Outcome,
    Runner,
    Stopped,
    Transport,
    Unauthorized,
    main,
    start_ticks,
)

__all__ = [
    "EXECUTORS",
    "Agent",
    "AgentError",
    "FakeTransport",
    "HttpTransport",
    "Outcome",
    "Runner",
    "Stopped",
    "Transport",
    "Unauthorized",
    "main",
    "start_ticks",
]
