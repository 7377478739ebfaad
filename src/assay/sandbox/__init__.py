"""``--sandbox``: run a command (the agent, so every ability it runs) in fresh mount, pid, net, uts and ipc
namespaces, on a throw-away overlay of the host's file tree, with one network path to the server.

- :class:`Sandbox`: host-side handle (start, wait, stop, host pids of the init and of the command).
- :data:`DROPPED_CAPABILITIES`: what no process inside can hold.
- :func:`find_pids`: host pids under an ``assay sandbox run`` launcher (for the watcher's noise filter).
- :func:`namespace_inode`: ``/proc/<pid>/ns/<kind>`` as the sensor reports it.
- :func:`sandbox_id`: the id of the sandbox this process runs in (``ASSAY_SANDBOX``), or None.

What the sandbox does and does not contain is in README.md, "Sandbox"; the why of each step in
``_rootfs`` and ``_init``.
"""

from __future__ import annotations

import os

from assay.sandbox._errors import SandboxError
from assay.sandbox._init import DROPPED_CAPABILITIES
from assay.sandbox._launcher import DEFAULT_STATE_ROOT, Sandbox, SandboxPids, find_pids, namespace_inode
from assay.sandbox._rootfs import SERVER_SOCKET, overlaid_submounts, parse_mountinfo

ENV_VAR = "ASSAY_SANDBOX"


def sandbox_id() -> str | None:
    return os.environ.get(ENV_VAR) or None


__all__ = [
    "DEFAULT_STATE_ROOT",
    "DROPPED_CAPABILITIES",
    "ENV_VAR",
    "SERVER_SOCKET",
    "Sandbox",
    "SandboxError",
    "SandboxPids",
    "find_pids",
    "namespace_inode",
    "overlaid_submounts",
    "parse_mountinfo",
    "sandbox_id",
]
