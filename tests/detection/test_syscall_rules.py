"""The SigmaHQ rules the personality/syslog/sysinfo/mknod actions and user.audit.id made supportable.

Each fires on events shaped as the sensor emits them and stays quiet on near misses; pySigma's SQLite
backend, run on the same events through the same pipeline, agrees rule by rule.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from detection_helpers import exec_event, proc_event

from assay.detection import Engine
from assay.detection._loader import read_documents, rule_files
from assay.detection._oracle import SqliteMethod
from assay.events import Event

# SigmaHQ rule ids (read from ../shared/corpora/sigma, never copied)
ASLR_DISABLED = "e497a24e-9345-4a62-9803-b06d7d7cb132"
KERNEL_LOG_CLEARED = "eca5e022-d368-4043-98e5-9736fb01f72f"
SYSINFO_DISCOVERY = "b207d563-a1d9-4275-b349-77d1eb55aa6d"
MKNOD_SPECIAL_FILE = "710bdbce-495d-491d-9a8f-7d0d88d2b41e"
OMIGOD_SCRIPT = "6eea1bf6-f8d2-488a-a742-e6ef6c1b67db"
OMIGOD_SHELL = "21541900-27a9-4454-9c4c-3f0a4240344a"
RULES = (
    ASLR_DISABLED,
    KERNEL_LOG_CLEARED,
    SYSINFO_DISCOVERY,
    MKNOD_SPECIAL_FILE,
    OMIGOD_SCRIPT,
    OMIGOD_SHELL,
)


def syscall(action: str, exe: str = "/usr/bin/tool", **fields: object) -> Event:
    return proc_event(action, exe, **{"syscall.name": action, "event.outcome": "success", **fields})


def omigod(args: list[str], audit_id: int | None = 0, cwd: str = "/var/opt/microsoft/scx/tmp") -> Event:
    extra: dict[str, object] = {"process.working_directory": cwd, "user.name": "root", "user.id": 0}
    if audit_id is not None:
        extra["user.audit.id"] = audit_id
    return exec_event(*args, **extra)


SCX = "/etc/opt/microsoft/scx/conf/tmpdir/scx"
# (event, the rules among RULES it must fire, and no other)
CASES: list[tuple[Event, set[str]]] = [
    (syscall("personality", **{"personality.persona": 0x0040000}), {ASLR_DISABLED}),  # ADDR_NO_RANDOMIZE
    (syscall("personality", **{"personality.persona": 0xFFFFFFFF}), set()),  # a query
    (syscall("personality", **{"personality.persona": 0x40000 + 1}), set()),
    (exec_event("sysctl", "-w", "kernel.randomize_va_space=0"), {ASLR_DISABLED}),
    (syscall("syslog", **{"syslog.action": 5}), {KERNEL_LOG_CLEARED}),  # SYSLOG_ACTION_CLEAR
    (syscall("syslog", **{"syslog.action": 4}), {KERNEL_LOG_CLEARED}),
    (syscall("syslog", **{"syslog.action": 10}), set()),  # the buffer's size: a read
    (syscall("sysinfo"), {SYSINFO_DISCOVERY}),
    (syscall("sysinfo", exe="/opt/splunk/bin/splunkd"), set()),
    (
        syscall("mknod", **{"file.path": "/tmp/p", "file.type": "fifo", "file.mode": 0o600}),
        {MKNOD_SPECIAL_FILE},
    ),
    (omigod(["/bin/sh", "-c", f"{SCX}/run.sh"]), {OMIGOD_SCRIPT, OMIGOD_SHELL}),
    (omigod(["/usr/bin/python3", f"{SCX}/x.py"]), {OMIGOD_SCRIPT}),
    (omigod(["/bin/sh", "-c", "id"]), {OMIGOD_SHELL}),
    (omigod(["/bin/sh", "-c", "id"], audit_id=1000), set()),  # another login session
    (omigod(["/bin/sh", "-c", "id"], audit_id=None), set()),  # no login uid: not session 0
    (omigod(["/bin/sh", "-c", "id"], cwd="/tmp"), set()),
]


@pytest.fixture(scope="module")
def engine(sigma_corpus: Path) -> Engine:
    eng = Engine.load(rule_paths=[sigma_corpus], include_builtin=False)
    info = {r.id: r for r in eng.rules}
    assert all(info[rid].supported for rid in RULES), [info[rid].reason for rid in RULES]
    return eng


@pytest.mark.parametrize(("event", "expected"), CASES, ids=lambda v: getattr(v, "action", None))
def test_rule_fires_on_sensor_shaped_events(engine: Engine, event: Event, expected: set[str]) -> None:
    assert {r.info.id for r in engine.match(event)} & set(RULES) == expected


def test_sqlite_method_agrees_on_these_rules(sigma_corpus: Path, engine: Engine) -> None:
    docs = [
        (str(d.data["id"]), d.data)
        for p in rule_files([sigma_corpus])
        for d in read_documents(p)
        if isinstance(d.data, dict) and str(d.data.get("id")) in RULES
    ]
    oracle = SqliteMethod.convert(docs)
    assert oracle.errors == {} and set(oracle.queries) == set(RULES)
    events = [e for e, _ in CASES]
    theirs = oracle.run(events)
    for rid in RULES:
        ours = {i for i, e in enumerate(events) if rid in {r.info.id for r in engine.match(e)}}
        assert ours == theirs[rid], rid
        assert ours  # every rule is exercised


def _rule(tmp_path: Path, detection: str) -> str | None:
    (tmp_path / "r.yml").write_text(
        "title: t\nid: 77777777-7777-4777-8777-777777777777\n"
        "logsource: {product: linux, service: auditd}\n" + detection
    )
    (info,) = Engine.load(rule_paths=[tmp_path], include_builtin=False).rules
    return info.reason


def test_only_named_syscall_arguments_map(tmp_path: Path) -> None:
    assert (
        _rule(tmp_path, "detection: {s: {type: SYSCALL, SYSCALL: personality, a0: 8}, condition: s}\n")
        is None
    )
    reason = _rule(tmp_path, "detection: {s: {type: SYSCALL, SYSCALL: personality, a1: 8}, condition: s}\n")
    assert reason is not None and "raw syscall argument" in reason and "personality a0" in reason
    reason = _rule(tmp_path, "detection: {s: {type: SYSCALL, SYSCALL: personality, a0: xyz}, condition: s}\n")
    assert reason is not None and "hex digits" in reason
    reason = _rule(
        tmp_path, "detection: {s: {type: SYSCALL, SYSCALL: personality, a0|contains: '4'}, condition: s}\n"
    )
    assert reason is not None and "modifiers" in reason
    # two syscalls whose first argument means different things: nothing to map it to
    reason = _rule(
        tmp_path, "detection: {s: {type: SYSCALL, SYSCALL: [personality, syslog], a0: 4}, condition: s}\n"
    )
    assert reason is not None and "raw syscall argument" in reason
