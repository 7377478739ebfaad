"""Allowlists: suppressed matches are flagged with entry and reason, never dropped; bad entries are errors."""

from __future__ import annotations

from pathlib import Path

from detection_helpers import exec_event, proc_event

from assay.detection import Engine
from assay.events import Suppression

ALLOW = """\
allowlist:
  - id: inventory-agent
    reason: the inventory agent runs uname hourly
    rules: [T1082]
    parent_executable: [/opt/inventory/bin/*]
  - id: build-user
    reason: the CI user makes build outputs executable
    user: [ci, "1001"]
    args: ["chmod +x /srv/build/*"]
"""


def test_suppressed_matches_are_alerts_flagged_with_the_entry(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(ALLOW)
    engine = Engine.load(allowlist_paths=[tmp_path / "a.yml"], include_default_allowlists=False)
    assert engine.errors == []
    inv = {"process.parent.executable": "/opt/inventory/bin/agent", "process.parent.command_line": "agent"}
    (alert,) = engine.process(exec_event("uname", "-a", parent=inv))
    assert alert.suppressed_by == Suppression("inventory-agent", "the inventory agent runs uname hourly")
    (alert,) = engine.process(exec_event("whoami", parent=inv))  # entry limited to T1082
    assert alert.suppressed_by is None
    (alert,) = engine.process(
        exec_event("chmod", "+x", "/srv/build/app", **{"user.name": "x", "user.id": 1001})
    )
    assert alert.suppressed_by is not None and alert.suppressed_by.entry_id == "build-user"
    (alert,) = engine.process(exec_event("chmod", "+x", "/tmp/app", **{"user.id": 1001}))
    assert alert.suppressed_by is None  # args criterion must hold too
    assert engine.suppressed == {"inventory-agent": 1, "build-user": 1}


def test_default_allowlists_ship_with_reasons() -> None:
    engine = Engine.load()
    assert engine.errors == [] and len(engine.allowlist) >= 5
    assert all(e.reason for e in engine.allowlist.entries)
    ids = {e.id for e in engine.allowlist.entries}
    assert {"package-managers", "package-maintainer-scripts", "cron-daemon", "systemd-internals"} <= ids
    # a package manager writing a shell profile: the rule matches, the default allowlist flags it
    alerts = engine.process(proc_event("file_write", "/usr/bin/dpkg-divert", **{"file.path": "/etc/profile"}))
    assert [a.suppressed_by.entry_id for a in alerts if a.suppressed_by] == ["package-managers"]


def test_bad_entries_are_reported_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text(
        "allowlist:\n"
        "  - id: ok\n    reason: fine\n    executable: /bin/x\n"
        "  - id: no-reason\n    executable: /bin/y\n"
        "  - id: typo\n    reason: r\n    exectuable: /bin/z\n"
        "  - id: empty\n    reason: r\n"
    )
    engine = Engine.load(allowlist_paths=[tmp_path / "bad.yml"], include_builtin=False)
    assert [e.id for e in engine.allowlist.entries] == ["ok"]
    msgs = [str(e) for e in engine.errors]
    assert len(msgs) == 3
    assert msgs[0].startswith(f"{tmp_path / 'bad.yml'}:5, rule no-reason") and "reason" in msgs[0]
    assert "exectuable" in msgs[1] and ":7" in msgs[1]
    assert "silence everything" in msgs[2]
