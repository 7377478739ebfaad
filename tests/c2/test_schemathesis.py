"""Schemathesis over the server's own OpenAPI spec, against a real uvicorn server: no request it generates
(valid or not) may get a 5xx. Bounded to a few examples per operation to stay within the suite's budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from c2_helpers import API_KEY, serving
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

EXAMPLES_PER_OPERATION = 10  # x ~75 operations, x 2 modes where both apply: ~1,000 requests


def _fuzz(operation: Any, mode: GenerationMode, failures: list[str]) -> int:
    calls = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: every 5xx is recorded as it comes
    )
    def run(case: Any) -> None:
        nonlocal calls
        calls += 1
        response = case.call(headers={"KEY": API_KEY}, timeout=30)
        if response.status_code >= 500:
            failures.append(
                f"{case.method} {case.formatted_path} ({mode.value}): {response.status_code} "
                f"{response.text[:200]!r} body={str(case.body)[:200]!r}"
            )

    try:
        run()
    except Unsatisfiable:
        # Negative mode on an operation with nothing to get wrong (no parameters, no body): nothing to send.
        assert mode is GenerationMode.NEGATIVE and calls == 0, operation.label
    return calls


def _negatable(operation: Any) -> bool:
    """Whether negative mode can make anything invalid: a body, or a query or header with a schema to break.
    A bare string path parameter accepts every string; hypothesis would search in vain for seconds."""
    raw = operation.definition.raw
    auth = {"key", "authorization"}  # every API route takes them; the test sends a valid KEY anyway
    parameters = [
        p
        for p in raw.get("parameters", [])
        if p.get("in") == "query" or (p.get("in") == "header" and p.get("name", "").lower() not in auth)
    ]
    return "requestBody" in raw or bool(parameters)


def test_no_generated_request_gets_a_server_error(tmp_path: Path) -> None:
    failures: list[str] = []
    calls = 0
    with serving(tmp_path, "--caldera-compat") as server:
        schema = schemathesis.openapi.from_url(server.url + "/api/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) > 30
        for operation in operations:
            for mode in GenerationMode:
                if mode is GenerationMode.NEGATIVE and not _negatable(operation):
                    continue
                calls += _fuzz(operation, mode, failures)
        assert server.process.poll() is None, "the server died"
    print(
        f"\nschemathesis: {calls} requests over {len(operations)} operations, {len(failures)} server errors"
    )
    assert failures == []


def test_the_spec_covers_the_contacts_and_the_api(tmp_path: Path) -> None:
    with serving(tmp_path, "--caldera-compat", content=False) as server:
        status, spec = server.call("GET", "/api/openapi.json")
        assert status == 200
        paths = set(spec["paths"])
        assert {
            "/beacon",
            "/file/download",
            "/agent/beacon",
            "/api/v2/agents/{paw}",
            "/api/v2/audit",
        } <= paths
        assert {
            "/api/v2/rounds",
            "/api/v2/alerts",
            "/api/v2/events",
            "/api/v2/rules",
            "/api/v2/sensor",
        } <= paths
        assert server.call("GET", "/api/docs", key=None)[0] == 200
