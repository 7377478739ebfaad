"""Attribution across the sandbox's pid namespace: the agent inside reports the pid it sees (its namespace
pid) and the start ticks; validation finds the host process through the sensor's ``process.ns_pid``, and
``process.entity_id`` keeps meaning host pid:start ticks."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from assay.events import Alert, Event
from assay.sandbox import Sandbox
from assay.validation import LinkRecord, attribute, resolve_roots


def ev(
    action: str, pid: int, ticks: int, ancestry: list[str], ns_pid: int | None = None, **extra: object
) -> Event:
    values: dict[str, object] = {
        "process.pid": pid,
        "process.entity_id": f"{pid}:{ticks}",
        "process.ancestry": ancestry,
        **extra,
    }
    if ns_pid is not None:
        values["process.ns_pid"] = ns_pid
        values["process.pid_ns"] = 4026532900
    return Event.of(action, "ebpf", 100.0, "h1", values)


def link(link_id: str, pid: int, ticks: int) -> LinkRecord:
    return LinkRecord(
        link_id=link_id,
        ability_id="a",
        technique_id="T1082",
        command="uname -a",
        status=0,
        host="h1",
        pid=pid,
        start_ticks=ticks,
        started=99.0,
        finished=101.0,
    )


def test_a_namespace_pid_resolves_to_the_host_process_with_the_same_start_ticks() -> None:
    agent = "51000:400"
    events = [
        ev("exec", 51007, 500, [agent], ns_pid=7),  # the link's root: pid 7 inside, 51007 on the host
        ev("exec", 51008, 501, ["51007:500", agent], ns_pid=8, **{"process.executable": "/usr/bin/uname"}),
        ev("exec", 51107, 900, ["51100:880"], ns_pid=7),  # pid 7 of another sandbox, later: pid reuse
        ev("exec", 7, 3, []),  # host pid 7 (started at boot): never taken for the link
    ]
    alert = Alert.for_events(
        rule_id="r1", title="uname", level="low", techniques=("T1082",), events=[events[1]]
    )
    inside, reused = link("l1", 7, 500), link("l2", 7, 900)
    roots = resolve_roots([inside, reused], events)
    assert roots == {"l1": "51007:500", "l2": "51107:900"}
    lineages, unexplained = attribute([inside, reused], events, [alert])
    assert [e.pid for e in lineages["l1"].events] == [51007, 51008]
    assert [a.rule_id for a in lineages["l1"].alerts] == ["r1"] and not unexplained
    assert [e.pid for e in lineages["l2"].events] == [51107]


def test_a_host_link_keeps_its_exact_entity() -> None:
    events = [ev("exec", 7, 500, []), ev("exec", 51007, 500, [], ns_pid=7)]
    assert resolve_roots([link("l1", 7, 500)], events) == {"l1": "7:500"}


@pytest.mark.root
@pytest.mark.kernel
def test_real_sensor_sees_inside_the_sandbox_with_host_pids_and_namespace_ids() -> None:
    from assay.sensor import EbpfSource, SelfNoise

    source = EbpfSource(os.uname().nodename, SelfNoise(), sensitive_paths=())
    source.start()
    events: list[Event] = []
    try:
        # The script prints what the agent would report for its link: its own pid and start ticks as seen
        # inside, then does something the sensor must attribute to it (a child exec, a write to /etc).
        script = (
            "read -r _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ ticks _ < /proc/self/stat; "
            'echo "nspid=$$ ticks=$ticks pidns=$(readlink /proc/self/ns/pid)"; '
            "id -u > /dev/null; echo sandboxed > /etc/assay-sbx-attribution"
        )
        sandbox = Sandbox(["sh", "-c", script], stdout=subprocess.PIPE)
        with sandbox:
            assert sandbox.proc is not None and sandbox.proc.stdout is not None
            out = sandbox.proc.stdout.read().decode()
            assert sandbox.wait(30) == 0, out
        fields = dict(item.split("=", 1) for item in out.split())
        ns_pid, ticks = int(fields["nspid"]), int(fields["ticks"])
        pid_ns = int(fields["pidns"].split("[")[1].rstrip("]"))
        deadline = time.monotonic() + 10

        def written() -> bool:
            return any(e.get("file.path") == "/etc/assay-sbx-attribution" for e in events)

        while not written() and time.monotonic() < deadline:
            events.extend(source.poll(0.1))
    finally:
        source.stop()
    assert not os.path.exists("/etc/assay-sbx-attribution"), "the write reached the host"
    record = link("l1", ns_pid, ticks)
    root = resolve_roots([record], events)["l1"]
    assert root is not None and root != f"{ns_pid}:{ticks}", "the root must be the host process"
    host_pid = int(root.split(":")[0])
    assert host_pid != ns_pid and root.endswith(f":{ticks}")
    lineage = attribute([record], events, [])[0]["l1"]
    ids = [
        e for e in lineage.events if e.action == "exec" and e.get("process.executable", "").endswith("/id")
    ]
    writes = [e for e in lineage.events if e.get("file.path") == "/etc/assay-sbx-attribution"]
    assert ids and writes, [(e.action, e.pid, e.get("process.executable")) for e in lineage.events]
    for e in [*ids, *writes]:
        assert e["process.pid_ns"] == pid_ns  # the sandbox's pid namespace, as seen inside
        assert e["namespace.mnt"] != os.stat("/proc/self/ns/mnt").st_ino
        assert e["namespace.net"] != os.stat("/proc/self/ns/net").st_ino
        assert e.pid != e["process.ns_pid"]  # host pid beside namespace pid
    assert writes[0].pid == host_pid and writes[0]["process.ns_pid"] == ns_pid
