"""Event builders for detection tests: realistic field sets as the eBPF sensor fills them."""

from __future__ import annotations

import itertools
from typing import Any

from assay.events import Event

_pids = itertools.count(1000)
_T0 = 1_764_000_000.0

PARENT_SHELL = {
    "process.parent.executable": "/usr/bin/dash",
    "process.parent.command_line": "sh /dev/fd/3",
    "process.parent.name": "dash",
}


def exec_event(
    *args: str, exe: str | None = None, parent: dict[str, Any] | None = None, **extra: Any
) -> Event:
    """An exec of ``args`` (argv[0] resolved to /usr/bin/<name> unless ``exe`` says otherwise)."""
    pid = next(_pids)
    name = args[0].rsplit("/", 1)[-1]
    values: dict[str, Any] = {
        "process.pid": pid,
        "process.entity_id": f"{pid}:{pid * 10}",
        "process.executable": exe or (args[0] if args[0].startswith("/") else f"/usr/bin/{name}"),
        "process.name": name,
        "process.args": list(args),
        "process.args_count": len(args),
        "process.command_line": " ".join(args),
        "process.working_directory": "/tmp/assay-work",
        "process.parent.pid": 999,
        "process.parent.entity_id": "999:9990",
        "process.ancestry": ["999:9990", "1:1"],
        "user.id": 1000,
        "user.name": "tester",
        # an explicit parent is another process than the default shell: give it its own identity
        **(PARENT_SHELL if parent is None else {"process.parent.entity_id": f"{pid + 50_000}:1", **parent}),
        **extra,
    }
    return Event.of("exec", "ebpf", _T0 + pid, host="h1", values=values)


def proc_event(action: str, exe: str, args: list[str] | None = None, **extra: Any) -> Event:
    """A non-exec event (file_write, connect...) done by a process running ``exe``."""
    pid = next(_pids)
    argv = args or [exe.rsplit("/", 1)[-1]]
    values: dict[str, Any] = {
        "process.pid": pid,
        "process.entity_id": f"{pid}:{pid * 10}",
        "process.executable": exe,
        "process.name": exe.rsplit("/", 1)[-1],
        "process.args": argv,
        "process.command_line": " ".join(argv),
        "process.parent.entity_id": "999:9990",
        "process.ancestry": ["999:9990", "1:1"],
        "user.id": 1000,
        **extra,
    }
    return Event.of(action, "ebpf", _T0 + pid, host="h1", values=values)
