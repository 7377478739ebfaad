"""Sigma semantics of the compiler: strings, wildcards, modifiers, null, keywords, conditions, auditd."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from assay.detection import Engine
from assay.events import Event


def rule_engine(tmp_path: Path, detection: dict[str, Any], logsource: dict[str, str] | None = None) -> Engine:
    doc = {
        "title": "t",
        "id": "55555555-5555-4555-8555-555555555555",
        "logsource": logsource or {"product": "linux", "category": "process_creation"},
        "detection": detection,
    }
    path = tmp_path / "r.yml"
    path.write_text(yaml.safe_dump(doc))
    engine = Engine.load(rule_paths=[path], include_builtin=False)
    assert engine.errors == []
    assert engine.rules[0].supported, engine.rules[0].reason
    return engine


def ev(action: str = "exec", **fields: Any) -> Event:
    return Event.of(action, "synthetic", 1.0, values={k.replace("__", "."): v for k, v in fields.items()})


def hits(engine: Engine, event: Event) -> bool:
    return bool(engine.process(event))


@pytest.mark.parametrize(
    ("value", "image", "expected"),
    [
        ("/usr/bin/Whoami", "/usr/bin/whoami", True),  # case-insensitive
        ("/usr/bin/who", "/usr/bin/whoami", False),  # plain value: whole-string equality
        ("*/who*", "/usr/bin/whoami", True),
        ("/usr/*/whoami", "/usr/local/bin/whoami", True),
        ("/usr/bin/who?mi", "/usr/bin/whoami", True),
        ("/usr/bin/who?mi", "/usr/bin/whoamii", False),
        (r"/tmp/a\*b", "/tmp/a*b", True),  # escaped wildcard is literal
        (r"/tmp/a\*b", "/tmp/axxb", False),
        ("*", "/anything", True),
    ],
)
def test_strings_and_wildcards(tmp_path: Path, value: str, image: str, expected: bool) -> None:
    engine = rule_engine(tmp_path, {"sel": {"Image": value}, "condition": "sel"})
    assert hits(engine, ev(process__executable=image)) is expected


def test_missing_field_never_matches_but_not_of_it_does(tmp_path: Path) -> None:
    engine = rule_engine(
        tmp_path, {"sel": {"Image": "*"}, "f": {"User": "root"}, "condition": "sel and not f"}
    )
    assert hits(engine, ev(process__executable="/x"))  # User absent: filter false, so the rule matches
    assert not hits(engine, ev(process__executable="/x", user__name="ROOT"))
    assert not hits(engine, ev(process__command_line="x"))  # Image absent: '*' needs a value


def test_modifiers(tmp_path: Path) -> None:
    det = {
        "a": {"CommandLine|contains|all": ["-enc", "http"]},
        "b": {"CommandLine|startswith": "curl "},
        "c": {"CommandLine|re": "^wget .*-O-$"},
        "d": {"CommandLine|re|i": "^WGET x$"},
        "e": {"CommandLine|cased": "Exact"},
        "condition": "1 of them",
    }
    engine = rule_engine(tmp_path, det)
    assert hits(engine, ev(process__command_line="x -ENC y HTTP"))
    assert not hits(engine, ev(process__command_line="x -enc y"))  # |all: every value
    assert hits(engine, ev(process__command_line="CURL http"))
    assert hits(engine, ev(process__command_line="wget a -O-"))
    assert not hits(engine, ev(process__command_line="WGET a -O-"))  # re is case-sensitive
    assert hits(engine, ev(process__command_line="wget x"))  # |i
    assert not hits(engine, ev(process__command_line="exact"))  # |cased
    assert hits(engine, ev(process__command_line="Exact"))


def test_network_modifiers_and_numbers(tmp_path: Path) -> None:
    det = {
        "sel": {"DestinationIp|cidr": "10.0.0.0/8", "DestinationPort|gte": 1024, "Initiated": "true"},
        "condition": "sel",
    }
    engine = rule_engine(tmp_path, det, {"product": "linux", "category": "network_connection"})
    assert hits(engine, ev("connect", destination__ip="10.1.2.3", destination__port=4444))
    assert not hits(engine, ev("accept", destination__ip="10.1.2.3", destination__port=4444))  # Initiated
    assert not hits(engine, ev("connect", destination__ip="11.1.2.3", destination__port=4444))
    assert not hits(engine, ev("connect", destination__ip="10.1.2.3", destination__port=80))


def test_null_exists_fieldref_and_number_equality(tmp_path: Path) -> None:
    det = {
        "n": {"ParentImage": None},
        "x": {"User|exists": True},
        "r": {"Image|fieldref": "ParentImage"},
        "p": {"ProcessId": 42},
        "condition": "(n and x) or r or p",
    }
    engine = rule_engine(tmp_path, det)
    assert hits(engine, ev(user__name="u"))
    assert not hits(engine, ev(user__name="u", process__parent__executable="/p"))
    assert hits(engine, ev(process__executable="/A", process__parent__executable="/a"))
    assert hits(engine, ev(process__pid=42)) and hits(engine, ev(process__pid="42"))
    assert not hits(engine, ev(process__pid=43))


def test_keywords_search_the_command_line_or_message(tmp_path: Path) -> None:
    engine = rule_engine(tmp_path, {"kw": ["history -c", "shred*history"], "condition": "kw"})
    assert hits(engine, ev(process__command_line="bash -c history -c"))
    assert hits(engine, ev(process__command_line="shred -u ~/.bash_history"))
    assert not hits(engine, ev(process__command_line="history"))


def test_base64offset_and_windash_expand_to_alternatives(tmp_path: Path) -> None:
    det = {"sel": {"CommandLine|base64offset|contains": "curl"}, "condition": "sel"}
    engine = rule_engine(tmp_path, det)
    import base64

    for prefix in ("", "x", "xy"):
        encoded = base64.b64encode((prefix + "curl http://x").encode()).decode()
        assert hits(engine, ev(process__command_line=f"echo {encoded} | base64 -d | sh"))
    assert not hits(engine, ev(process__command_line="echo aGVsbG8= | base64 -d"))


def test_conditions_quantifiers_and_precedence(tmp_path: Path) -> None:
    det = {
        "sel_a": {"Image|endswith": "/a"},
        "sel_b": {"CommandLine|contains": "b"},
        "filter": {"User": "root"},
        "condition": "all of sel_* and not filter or filter and sel_a",
    }
    engine = rule_engine(tmp_path, det)
    assert hits(engine, ev(process__executable="/a", process__command_line="b"))
    assert not hits(engine, ev(process__executable="/a", process__command_line="c"))
    assert hits(engine, ev(process__executable="/a", process__command_line="c", user__name="root"))
    assert not hits(engine, ev(process__executable="/z", process__command_line="b", user__name="root"))


def test_logsource_restricts_actions(tmp_path: Path) -> None:
    engine = rule_engine(tmp_path, {"sel": {"Image|endswith": "/x"}, "condition": "sel"})
    assert hits(engine, ev("exec", process__executable="/x"))
    assert not hits(engine, ev("file_write", process__executable="/x"))
    assert engine.consumed_actions == frozenset({"exec"})


def test_auditd_records_map_onto_events(tmp_path: Path) -> None:
    det = {
        "execve": {"type": "EXECVE", "a0": "chmod", "a1": 777},
        "path": {"type": "PATH", "name|startswith": "/etc/cron"},
        "sys": {"type": "SYSCALL", "SYSCALL": "ptrace", "exe|endswith": "/gdb"},
        "condition": "1 of them",
    }
    engine = rule_engine(tmp_path, det, {"product": "linux", "service": "auditd"})
    assert hits(engine, ev(process__args=["chmod", "777", "/x"]))
    assert not hits(engine, ev("connect", process__args=["chmod", "777", "/x"]))  # EXECVE is exec
    assert hits(engine, ev("file_write", file__path="/etc/cron.d/x"))
    assert hits(engine, ev("ptrace", process__executable="/usr/bin/gdb"))
    assert not hits(engine, ev("kill", process__executable="/usr/bin/gdb"))
    assert engine.consumed_actions >= {"exec", "file_write", "ptrace"}
    assert "fork" not in engine.consumed_actions


def test_windash_wide_base64_and_negation(tmp_path: Path) -> None:
    import base64

    det = {
        "w": {"CommandLine|windash|contains": "-enc"},
        "b": {"CommandLine|wide|base64offset|contains": "iex"},
        "n": {"User|neq": "root", "CurrentDirectory|exists": False},
        "condition": "1 of them",
    }
    engine = rule_engine(tmp_path, det)
    assert hits(engine, ev(process__command_line="x /enc y", user__name="root"))  # windash: '/' for '-'
    assert hits(engine, ev(process__command_line="x \u2013enc y", user__name="root"))  # en dash
    wide = base64.b64encode("xiex".encode("utf-16-le")).decode()
    assert hits(engine, ev(process__command_line=f"p {wide}", user__name="root"))
    assert hits(engine, ev(process__command_line="plain", user__name="alice"))  # neq + field absent
    assert not hits(engine, ev(process__command_line="plain", user__name="ROOT"))
    assert not hits(
        engine, ev(process__command_line="plain", user__name="bob", process__working_directory="/")
    )


def test_timestamp_parts_and_fieldref_contains(tmp_path: Path) -> None:
    det = {"sel": {"@timestamp|hour": 3, "CommandLine|fieldref|contains": "ParentImage"}, "condition": "sel"}
    engine = rule_engine(tmp_path, det)
    at_3 = 1_764_000_000 - (1_764_000_000 % 86400) + 3 * 3600 + 5  # 03:00:05 UTC
    e = Event.of(
        "exec",
        "synthetic",
        at_3,
        values={"process.command_line": "run /usr/bin/x now", "process.parent.executable": "/USR/BIN/X"},
    )
    assert hits(engine, e)
    e.fields["@timestamp"] = at_3 + 3600
    assert not hits(engine, e)


def test_unresolved_placeholder_is_unsupported_with_reason(tmp_path: Path) -> None:
    doc = {
        "title": "t",
        "id": "56565656-5656-4565-8565-565656565656",
        "logsource": {"product": "linux", "category": "process_creation"},
        "detection": {"sel": {"Image|expand": "%admin_tools%"}, "condition": "sel"},
    }
    (tmp_path / "r.yml").write_text(yaml.safe_dump(doc))
    engine = Engine.load(rule_paths=[tmp_path], include_builtin=False)
    (info,) = engine.rules
    assert not info.supported and info.reason is not None and "%admin_tools%" in info.reason


def test_audit_keys_are_read_from_the_rules_own_definition() -> None:
    from assay.detection._pipeline import audit_keys

    keys = audit_keys(
        "-w /usr/bin/wget -p x -k dl\n"
        "-w /etc/cron.d -p wa -k cron\n"
        "-a always,exit -F arch=b64 -S connect -k net\n"
        "-a always,exit -F arch=b64 -S connect -F a2=16 -k net4\n"
        "-w /etc/shadow -p r -k shadow\n"
    )
    assert keys["dl"] == [[("event.action", "exec"), ("process.executable", "/usr/bin/wget")]]
    assert keys["cron"] == [[("event.action", "file_write"), ("file.path", "/etc/cron.d")]]
    assert keys["net"] == [[("event.action", "connect")]]
    assert "net4" not in keys  # an argument filter Assay cannot express: left unmapped, not approximated
    assert "shadow" not in keys  # read watches are not Assay's file_read_sensitive


def test_auditd_key_rule_fires_on_the_watched_behaviour(tmp_path: Path) -> None:
    doc = {
        "title": "t",
        "id": "57575757-5757-4575-8575-575757575757",
        "logsource": {"product": "linux", "service": "auditd", "definition": "-w /usr/bin/ncat -p x -k susp"},
        "detection": {"sel": {"key": "susp"}, "condition": "sel"},
    }
    (tmp_path / "r.yml").write_text(yaml.safe_dump(doc))
    engine = Engine.load(rule_paths=[tmp_path], include_builtin=False)
    assert engine.rules[0].supported, engine.rules[0].reason
    assert hits(engine, ev(process__executable="/usr/bin/ncat"))
    assert not hits(engine, ev("connect", process__executable="/usr/bin/ncat"))
