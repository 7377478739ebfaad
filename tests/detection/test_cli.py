"""`assay rules check` and `assay detect` through the real CLI app (plugin-registered commands)."""

from __future__ import annotations

import json
from pathlib import Path

from detection_helpers import exec_event
from typer.testing import CliRunner

from assay.cli import build_app
from assay.events import dumps, read_alerts_jsonl

runner = CliRunner()

RULE = """\
title: Whoami
id: 12121212-1212-4121-8121-121212121212
logsource: {product: linux, category: process_creation}
detection: {sel: {Image|endswith: /whoami}, condition: sel}
tags: [attack.t1033]
level: low
"""
UNSUPPORTED = """\
title: By host name
id: 13131313-1313-4131-8131-131313131313
logsource: {product: linux, category: network_connection}
detection: {sel: {DestinationHostname: x.example}, condition: sel}
"""


def test_rules_check_json_reports_support_and_reasons(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(RULE)
    (tmp_path / "b.yml").write_text(UNSUPPORTED)
    result = runner.invoke(build_app(), ["rules", "check", "--json", str(tmp_path)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    by_title = {r["title"]: r for r in doc["rules"]}
    assert by_title["Whoami"]["supported"] is True and by_title["Whoami"]["techniques"] == ["T1033"]
    bad = by_title["By host name"]
    assert bad["supported"] is False and "DestinationHostname" in bad["reason"]
    assert set(bad) >= {"id", "title", "file", "logsource", "supported", "reason", "techniques"}
    assert doc["summary"] == {"rules": 2, "supported": 1, "fed_logsource": 2, "fed_supported": 1, "errors": 0}


def test_rules_check_fails_on_load_errors_with_location(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text("title: x\n  bad: [indent\n")
    result = runner.invoke(build_app(), ["rules", "check", str(tmp_path)])
    assert result.exit_code == 1
    assert "bad.yml:2" in result.output.replace("\n", "")


def test_detect_writes_alerts(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text(RULE)
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(dumps(e) for e in [exec_event("whoami"), exec_event("ls")]) + "\n")
    out = tmp_path / "alerts.jsonl"
    args = ["detect", "--rules", str(tmp_path / "r.yml"), "--events", str(events), "--output", str(out)]
    result = runner.invoke(build_app(), [*args, "--no-builtin"])
    assert result.exit_code == 0, result.output
    (alert,) = list(read_alerts_jsonl(out))
    assert alert.title == "Whoami" and alert.techniques == ("T1033",) and alert.lineage
    assert "2 events, 1 alerts, 0 suppressed" in result.output


def test_detect_names_the_bad_line(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(dumps(exec_event("ls")) + "\n{broken\n")
    result = runner.invoke(build_app(), ["detect", "--events", str(events), "--output", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert f"{events}:2" in result.output and "invalid JSON" in result.output


def test_rules_techniques_lists_the_derived_coverage() -> None:
    result = runner.invoke(build_app(), ["rules", "techniques", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert len(doc) >= 80 and "T1049" not in doc
    assert "System Owner or User Discovery" in doc["T1033"]
