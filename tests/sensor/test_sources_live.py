"""The same behaviour, watched by every live source at once, must give the same actions and fields.

eBPF, audit and the proc connector run side by side while one small program (in a temporary directory)
writes, renames, chmods and deletes a file, reads a fake key, connects to a loopback listener of its own and
exits with code 3. Then each source's events for that program's process tree are compared.
"""

from __future__ import annotations

import os
import socket
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from assay.errors import SensorError
from assay.events import Event
from assay.sensor import AuditSource, EbpfSource, ProcConnectorSource

from .conftest import Watch

pytestmark = [pytest.mark.root, pytest.mark.kernel]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    h = tmp_path_factory.mktemp("home")
    (h / ".ssh").mkdir()
    (h / ".ssh" / "id_fake").write_text("-----BEGIN FAKE KEY-----\n")
    return h


@pytest.fixture(scope="module")
def audit_watch(home: Path) -> Iterator[Watch]:
    # Only one audit daemon per host: wait a while for another run of these tests to finish with it.
    src = AuditSource(os.uname().nodename, sensitive_paths=(str(home / ".ssh") + "/",), wait_for_owner=60)
    try:
        src.start()
    except SensorError as exc:
        pytest.skip(f"audit source unavailable: {exc}")
    yield Watch(src)
    src.stop()


@pytest.fixture(scope="module")
def proc_watch() -> Iterator[Watch]:
    src = ProcConnectorSource(os.uname().nodename)
    try:
        src.start()
    except SensorError as exc:
        pytest.skip(f"proc connector unavailable: {exc}")
    yield Watch(src)
    src.stop()


def _scenario(home: Path, port: int) -> str:
    return textwrap.dedent(
        f"""
        cd {home}
        echo x > f1
        mv f1 f2
        chmod 600 f2
        rm f2
        cat .ssh/id_fake > /dev/null
        python3 -c 'import socket; socket.create_connection(("127.0.0.1", {port})).close()'
        /bin/true marker a b
        exit 3
        """
    )


def test_every_source_sees_the_same_behaviour_the_same_way(
    ebpf_source: EbpfSource, audit_watch: Watch, proc_watch: Watch, home: Path
) -> None:
    ebpf = Watch(ebpf_source)
    watches = {"ebpf": ebpf, "audit": audit_watch, "proc_connector": proc_watch}
    for w in watches.values():
        w.pump(0)
        w.events.clear()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        p = subprocess.Popen(["/bin/sh", "-c", _scenario(home, port)], stdin=subprocess.DEVNULL)
        while p.poll() is None:  # read every source while it runs, as a real deployment would
            for w in watches.values():
                w.pump(0.01)
            try:
                listener.accept()[0].close()
            except BlockingIOError:
                pass
        assert p.returncode == 3
    finally:
        listener.close()
    seen = {name: w.of(p.pid, timeout=15) for name, w in watches.items()}

    def find(events: list[Event], action: str, **fields: object) -> Event | None:
        return next(
            (e for e in events if e.action == action and all(e.get(k) == v for k, v in fields.items())), None
        )

    h = str(home)
    full = [
        ("file_write", (("file.path", f"{h}/f1"),)),
        ("file_rename", (("file.path", f"{h}/f1"), ("file.target_path", f"{h}/f2"))),
        ("file_chmod", (("file.path", f"{h}/f2"), ("file.mode", 0o600))),
        ("file_delete", (("file.path", f"{h}/f2"),)),
        ("file_read_sensitive", (("file.path", f"{h}/.ssh/id_fake"),)),
        ("connect", (("destination.ip", "127.0.0.1"), ("destination.port", port))),
        ("exec", (("process.args", ["/bin/true", "marker", "a", "b"]),)),
        ("exit", (("process.pid", p.pid), ("process.exit_code", 3))),
    ]
    lineage_only = [
        ("exec", (("process.args_from_proc", True),)),  # argv from /proc after the fact, and flagged so
        ("exit", (("process.pid", p.pid), ("process.exit_code", 3))),
        ("fork", ()),
    ]
    for name, expected in (("ebpf", full), ("audit", full), ("proc_connector", lineage_only)):
        for action, fields in expected:
            ev = find(seen[name], action, **dict(fields))
            assert ev is not None, f"{name} did not report {action} {dict(fields)}"
            assert ev["event.source"] == name
            assert ev.pid == p.pid or any(x.startswith(f"{p.pid}:") for x in ev.lineage), f"{name}: lineage"
    # one root process, one identity: each source names it with the same entity id
    roots = {name: find(seen[name], "exit", **{"process.pid": p.pid}) for name in watches}
    ids = {name: ev.entity_id for name, ev in roots.items() if ev is not None}
    assert len(set(ids.values())) == 1, ids
