"""Correlation rules: the four types, group-by, aliases, chains, windows, and bounded memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from detection_helpers import exec_event, proc_event

from assay.detection import Engine
from assay.events import Alert, Event


def auth(action: str, ip: str, user: str, ts: float) -> Event:
    return Event.of(
        action,
        "authlog",
        ts,
        host="h1",
        values={
            "auth.service": "sshd",
            "source.ip": ip,
            "user.name": user,
            "process.executable": "/usr/sbin/sshd",
        },
    )


@pytest.fixture(scope="module")
def engine() -> Engine:
    eng = Engine.load(include_builtin=True)
    assert eng.errors == []
    return eng


def run(engine: Engine, events: list[Event]) -> list[Alert]:
    out: list[Alert] = []
    for e in events:
        out.extend(engine.process(e))
    return out


def titles(alerts: list[Alert]) -> list[str]:
    return [a.title for a in alerts if a.correlation]


def test_builtin_set_has_at_least_ten_correlations(engine: Engine) -> None:
    corr = [r for r in engine.rules if r.kind == "correlation"]
    assert len(corr) >= 10 and all(r.supported for r in corr)


def test_event_count_fires_once_per_threshold_and_chain_follows(engine: Engine) -> None:
    fails = [auth("login_failure", "10.9.9.9", f"u{i % 2}", 100.0 + i) for i in range(10)]
    alerts = run(engine, fails)
    assert titles(alerts) == ["SSH Brute Force - Many Failed Logins from One Address"]
    assert alerts[-1].events[-1] is fails[-1] and alerts[-1].techniques == ("T1110.001",)
    # the building block itself alerts on nothing (no `generate`)
    assert all(a.correlation for a in alerts)
    later = run(engine, [auth("login_success", "10.9.9.9", "u1", 400.0)])
    assert titles(later) == ["SSH Brute Force Followed by a Successful Login"]
    assert run(engine, [auth("login_success", "10.9.9.9", "u1", 3000.0)]) == []  # chain consumed


def test_event_count_respects_timespan_and_groups() -> None:
    engine = Engine.load(include_builtin=True)
    spread = [auth("login_failure", "10.1.1.1", "root", 100.0 + 40 * i) for i in range(10)]  # 9 per 5 min
    other = [auth("login_failure", f"10.2.2.{i}", "root", 100.0 + i) for i in range(12)]  # 12 addresses
    assert titles(run(engine, spread + other)) == []


def test_value_count_counts_distinct_values() -> None:
    engine = Engine.load(include_builtin=True)
    same_user = [auth("login_failure", "10.3.3.3", "root", 100.0 + i) for i in range(4)]
    assert titles(run(engine, same_user)) == []
    spray = [auth("login_failure", "10.3.3.3", f"USER{i}", 110.0 + i) for i in range(4)]
    assert "SSH Password Spraying - One Address Tries Many Accounts" in titles(run(engine, spray))


def test_temporal_ordered_joins_download_and_execution_on_the_file(engine: Engine) -> None:
    write = proc_event("file_write", "/usr/bin/curl", **{"file.path": "/tmp/x/implant"})
    write.fields["@timestamp"] = 10.0
    other = exec_event("/tmp/x/other")
    other.fields["@timestamp"] = 11.0
    run_it = exec_event("/tmp/x/implant")
    run_it.fields["@timestamp"] = 12.0
    assert titles(run(engine, [write, other])) == []
    alerts = run(engine, [run_it])
    assert "Downloaded File Executed" in titles(alerts)
    (corr,) = [a for a in alerts if a.title == "Downloaded File Executed"]
    assert corr.events == (write, run_it) and corr.entity_id == run_it.entity_id


def test_temporal_ordered_needs_the_order() -> None:
    engine = Engine.load(include_builtin=True)
    run_it = exec_event("/tmp/y/implant")
    run_it.fields["@timestamp"] = 10.0
    write = proc_event("file_write", "/usr/bin/wget", **{"file.path": "/tmp/y/implant"})
    write.fields["@timestamp"] = 12.0
    assert "Downloaded File Executed" not in titles(run(engine, [run_it, write]))


def test_temporal_reverse_shell_on_one_process(engine: Engine) -> None:
    shell = exec_event("bash", "-i", exe="/usr/bin/bash")
    connect = Event.of(
        "connect",
        "ebpf",
        shell.timestamp + 1,
        host="h1",
        values={
            **{k: v for k, v in shell.fields.items() if k.startswith("process.")},
            "destination.ip": "127.0.0.1",
            "destination.port": 4444,
        },
    )
    alerts = run(engine, [shell, connect])
    assert "Reverse Shell - Interactive Shell Whose Own Process Connects Out" in titles(alerts)


def test_upper_bounded_condition_is_decided_when_the_window_closes(tmp_path: Path) -> None:
    (tmp_path / "quiet.yml").write_text(
        """\
title: beat
name: beat
id: 77777777-7777-4777-8777-777777777777
logsource: {product: linux, category: process_creation}
detection: {sel: {Image|endswith: /heartbeat}, condition: sel}
---
title: Heartbeat too rare
id: 88888888-8888-4888-8888-888888888888
correlation: {type: event_count, rules: [beat], group-by: [host.name], timespan: 1m, condition: {lt: 3}}
"""
    )
    engine = Engine.load(rule_paths=[tmp_path], include_builtin=False)
    assert engine.errors == [] and all(r.supported for r in engine.rules)
    beats = [exec_event("/usr/bin/heartbeat") for _ in range(2)]
    assert run(engine, beats) == []  # undecided while the window is open
    assert engine.flush(beats[0].timestamp + 30) == []
    (alert,) = engine.flush(beats[0].timestamp + 61)
    assert alert.correlation and alert.title == "Heartbeat too rare" and len(alert.events) == 2
    assert engine.flush(beats[0].timestamp + 200) == []


def test_memory_stays_bounded_under_a_flood() -> None:
    engine = Engine.load(include_builtin=True)

    def held() -> int:
        return sum(v for k, v in engine.correlation_state().items() if not k.endswith(":evicted"))

    sizes = []
    for i in range(30_000):  # 30k distinct source addresses: more groups than the cap (10k per rule)
        e = auth("login_failure", f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}", "root", 100.0 + i * 0.001)
        engine.process(e)
        if i in (14_999, 29_999):
            sizes.append(held())
    assert sizes[0] == sizes[1] > 0  # the state plateaus at the cap instead of growing with the stream
    assert any(k.endswith(":evicted") for k in engine.correlation_state())  # evictions are counted
    engine.flush(10_000.0)
    assert held() == 0  # expired windows are dropped


def test_bad_references_are_reported(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text(
        "title: c\nid: 99999999-9999-4999-8999-999999999999\n"
        "correlation: {type: event_count, rules: [nope], group-by: [host.name], timespan: 1m,"
        " condition: {gte: 2}}\n"
    )
    engine = Engine.load(rule_paths=[tmp_path], include_builtin=False)
    (info,) = engine.rules
    assert not info.supported and info.reason == "references unknown rule 'nope'"
    assert "unknown rule 'nope'" in str(engine.errors[0]) and str(engine.errors[0]).startswith(str(tmp_path))


def test_base_rules_alert_alone_only_with_generate(tmp_path: Path) -> None:
    text = """\
title: base
name: base
id: 31313131-3131-4131-8131-313131313131
tags: [attack.t1033]
logsource: {product: linux, category: process_creation}
detection: {sel: {Image|endswith: /whoami}, condition: sel}
---
title: twice
id: 32323232-3232-4232-8232-323232323232
tags: [attack.t1087.001]
correlation: {type: event_count, rules: [base], group-by: [host.name], timespan: 1m, condition: {gte: 2}GEN}
"""
    (tmp_path / "c.yml").write_text(text.replace("GEN", ""))
    quiet = Engine.load(rule_paths=[tmp_path], include_builtin=False)
    assert quiet.mapped_techniques == {"T1087.001"}  # the base rule alerts only through the correlation
    first = exec_event("whoami")
    assert run(quiet, [first]) == []
    assert titles(run(quiet, [exec_event("whoami")])) == ["twice"]
    (tmp_path / "c.yml").write_text(text.replace("GEN", ", generate: true"))
    loud = Engine.load(rule_paths=[tmp_path], include_builtin=False)
    assert loud.mapped_techniques == {"T1033", "T1087.001"}
    assert [a.title for a in run(loud, [exec_event("whoami")])] == ["base"]


@pytest.mark.parametrize(
    ("reader", "fires"),
    [
        (("ssh", "-i", "/root/.ssh/id_ed25519", "-p", "2222", "root@127.0.0.1", "uptime"), False),
        (("scp", "-i", "/root/.ssh/id_ed25519", "/srv/notes.txt", "root@h2:/srv/"), False),
        (
            ("scp", "-i", "/root/.ssh/id_ed25519", "/root/.ssh/id_rsa", "u@h2:/tmp/"),
            True,
        ),  # the key is the cargo
        (
            ("ip", "netns", "exec", "ns1", "scp", "-q", "-i", "/k/id_ed25519", "/srv/n.txt", "root@h:/x"),
            False,
        ),
        (("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/srv/k/id_ed25519"), False),
        (("ssh-keygen", "-y", "-f", "/root/.ssh/id_rsa"), True),
        (("cat", "/root/.ssh/id_rsa"), True),
        (("cp", "/etc/shadow", "/tmp/s"), True),
    ],
)
def test_collect_archive_send_leaves_an_ssh_client_using_its_own_identity(
    reader: tuple[str, ...], fires: bool
) -> None:
    engine = Engine.load(include_builtin=True)
    read = exec_event(*reader)
    read.fields["@timestamp"] = 10.0
    archive = exec_event("tar", "czf", "/tmp/a.tgz", "/srv")
    archive.fields["@timestamp"] = 11.0
    send = proc_event("connect", "/usr/bin/curl", **{"destination.ip": "127.0.0.1", "destination.port": 8080})
    send.fields["@timestamp"] = 12.0
    for ev in (read, archive, send):
        ev.fields["host.name"] = "h1"
    found = "Credentials Collected, Archived, then Sent Out" in titles(run(engine, [read, archive, send]))
    assert found is fires, reader


def test_mass_deletion_is_of_data_that_was_there_not_of_what_was_just_made() -> None:
    title = "Mass File Deletion by One Process"

    def delete(path: str, ts: float, proc: str) -> Event:
        ev = proc_event("file_delete", "/usr/bin/rm", ["rm", "-rf", "/srv"], **{"file.path": path})
        ev.fields["process.entity_id"] = proc
        ev.fields["@timestamp"] = ts
        return ev

    engine = Engine.load(include_builtin=True)
    # A build step writes 300 files, then clears them away: cleanup.
    for i in range(300):
        write = proc_event("file_write", "/usr/bin/cc", **{"file.path": f"/srv/build/obj/{i}.o"})
        write.fields["@timestamp"] = 100.0 + i * 0.01
        engine.process(write)
    cleanup = [
        a.title for i in range(300) for a in engine.process(delete(f"/srv/build/obj/{i}.o", 200.0, "9:1"))
    ]
    assert title not in cleanup
    assert title not in [
        a.title for a in engine.process(delete("/srv/build/obj", 200.5, "9:1"))
    ]  # its directory
    # The same process then deletes 300 files nobody wrote lately: destruction.
    wiped = [a.title for i in range(300) for a in engine.process(delete(f"/srv/data/{i}.db", 201.0, "9:1"))]
    assert wiped.count(title) == 1
