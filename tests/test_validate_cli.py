"""`assay validate` end to end on this host, with stand-in atomics written here (never third-party content
outside the sandbox): the real server, agent, eBPF sensor and rules, one round, every not_executed link with
its reason code; the round stored with its alerts' links."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from assay.storage import Store, normalize_url

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.slow]


def _test(name: str, guid: str, command: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "auto_generated_guid": guid,
        "description": "an Assay stand-in",
        "supported_platforms": ["linux"],
        "executor": {"name": "sh", "elevation_required": False, "command": command},
        **extra,
    }


STANDINS: dict[str, list[dict[str, Any]]] = {
    "T1082": [
        _test("kernel and host", "a0000000-0000-4000-8000-000000000001", "uname -a\nhostname"),
        _test(
            "prerequisite that cannot be met",
            "a0000000-0000-4000-8000-000000000002",
            "uname -r",
            dependencies=[
                {
                    "description": "a file that is not there",
                    "prereq_command": "test -e /nonexistent/assay-prerequisite",
                    "get_prereq_command": "false",
                }
            ],
        ),
    ],
    "T1033": [_test("fails", "a0000000-0000-4000-8000-000000000003", "id >/dev/null\nexit 3")],
    "T1529": [_test("impact by technique", "a0000000-0000-4000-8000-000000000004", "true")],
    "T1053.003": [_test("persistence by technique", "a0000000-0000-4000-8000-000000000005", "true")],
}


def write_standins(root: Path) -> Path:
    atomics = root / "atomics"
    for technique, tests in STANDINS.items():
        folder = atomics / technique
        folder.mkdir(parents=True)
        doc = {"attack_technique": technique, "display_name": technique, "atomic_tests": tests}
        (folder / f"{technique}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return atomics


def assay(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "from assay.cli import main; main()", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def test_a_validate_round_runs_the_standins_and_says_why_each_did_not_run(tmp_path: Path) -> None:
    atomics = write_standins(tmp_path)
    db = tmp_path / "rounds.db"
    done = assay(
        "validate", "--atomics", str(atomics), "--db", str(db), "--data-dir", str(tmp_path / "run"),
        "--report", str(tmp_path / "report.json"), "--techniques", "T1082,T1033,T1529,T1053",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "5 procedures: 3 safe, 1 disruptive, 1 destructive; this round runs safe only" in done.stdout
    assert "Validation summary" in done.stdout and "Misses and why" in done.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    links = {lk["ability_id"]: lk for lk in report["links"]}
    ran = links["a0000000-0000-4000-8000-000000000001"]
    assert ran["outcome"] == "detected" and ran["reason_code"] is None and ran["alerts"]
    codes = {aid[-1]: (lk["outcome"], lk["reason_code"]) for aid, lk in links.items()}
    assert codes["2"] == ("not_executed", "prerequisite")
    assert codes["3"] == ("not_executed", "failed_command")
    assert codes["4"] == ("not_executed", "safety")
    assert codes["5"] == ("not_executed", "safety")
    assert "only in the sandbox" in links["a0000000-0000-4000-8000-000000000004"]["reason"]
    assert "--allow disruptive" in links["a0000000-0000-4000-8000-000000000005"]["reason"]
    assert "exit code 3" in links["a0000000-0000-4000-8000-000000000003"]["reason"]
    by_tid = {t["technique_id"]: t for t in report["techniques"]}
    assert by_tid["T1082"]["outcome"] == "detected" and by_tid["T1082"]["exact"] is True

    store = Store.open(normalize_url(str(db)), migrate=False)
    try:
        (stored,) = store.rounds()
        assert stored.kind == "validate" and stored.id == report["meta"]["round_id"]
        assert stored.summary == report["summary"] and len(stored.rules_hash) == 64
        attributed = store.alert_links(report["meta"]["operation_id"])
        assert {a["id"] for a in ran["alerts"]} <= set(attributed)
        assert all(ran["link_id"] in attributed[a["id"]] for a in ran["alerts"])
    finally:
        store.close()
