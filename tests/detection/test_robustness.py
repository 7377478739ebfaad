"""Odd events never make the engine raise: every generated test is total (false on what it cannot read)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.detection import Engine
from assay.events import Event

_ENGINE = Engine.load(include_builtin=True)
FIELDS = [
    "process.executable",
    "process.command_line",
    "process.args",
    "process.parent.executable",
    "process.parent.command_line",
    "file.path",
    "destination.ip",
    "destination.port",
    "user.name",
    "user.effective.id",
    "message",
    "file.mode",
    "ptrace.request",
    "process.working_directory",
    "auth.service",
    "source.ip",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.binary(max_size=8),
)
values: st.SearchStrategy[Any] = st.one_of(
    scalars, st.lists(scalars, max_size=5), st.dictionaries(st.text(max_size=3), scalars, max_size=2)
)
actions = (
    st.sampled_from(["exec", "file_write", "connect", "EXEC", "ptrace", "login_failure", "loss", "weird"])
    | st.integers()
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    action=actions, fields=st.dictionaries(st.sampled_from(FIELDS), values, max_size=8), ts=st.floats(0, 2e9)
)
def test_engine_never_raises_on_odd_field_values(action: Any, fields: dict[str, Any], ts: float) -> None:
    event = Event({**fields, "@timestamp": ts, "event.action": action, "host.name": "h"})
    alerts = _ENGINE.process(event)
    assert all(a.events and a.events[-1] is event for a in alerts)
    _ENGINE.flush(ts)
