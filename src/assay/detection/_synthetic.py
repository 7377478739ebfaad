"""Synthetic events for the differential test and the throughput benchmark (``event.source: synthetic``).

Two kinds:

- *probes* aimed at one compiled rule: for each leaf test a value that satisfies it (an ``endswith`` value
  gets a random prefix, a ``?`` a random character...) or just misses it (a character changed, the case
  flipped, a prefix where a whole-string match was asked); alternatives picked at random, NOTs satisfied
  or not at random. They exercise the boundaries where two implementations of Sigma can disagree.
- a *benign stream*: the ordinary activity of a Linux host (shells, coreutils, package managers, services,
  file writes and connections) with realistic field sets, for throughput figures.
"""

from __future__ import annotations

import random
import re
import string
from typing import Any

from assay.detection._ir import (
    ACTION,
    FULLTEXT,
    And,
    BoolTest,
    CidrTest,
    CompareTest,
    Const,
    ExistsTest,
    FieldEqTest,
    FieldRef,
    Match,
    Node,
    Not,
    NullTest,
    NumEqTest,
    Or,
    RegexTest,
    StrTest,
)
from assay.events import Event

_ALNUM = string.ascii_letters + string.digits
_BASE = 1_764_000_000.0


def _noise(rng: random.Random, n: int = 4) -> str:
    return "".join(rng.choice(_ALNUM + "/-._ ") for _ in range(n))


def _is_ip(value: str) -> bool:
    """An address field holds one address: composing text into it only provokes the SQLite backend's
    documented |cidr-as-LIKE-prefix difference (see the differential test)."""
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _flip_case(rng: random.Random, s: str) -> str:
    return "".join(c.swapcase() if rng.random() < 0.5 else c for c in s)


def _near_miss(rng: random.Random, s: str) -> str:
    if not s:
        return rng.choice(_ALNUM)
    i = rng.randrange(len(s))
    choice = rng.random()
    if choice < 0.4:
        return s[:i] + rng.choice(_ALNUM) + s[i + 1 :]
    if choice < 0.7:
        return s[:i] + s[i + 1 :]
    return s + rng.choice(_ALNUM)


def _from_glob(rng: random.Random, regex: str) -> str:
    """A string matching a glob regex made of re.escape'd literals, ``.*`` and ``.``."""
    out: list[str] = []
    i = 0
    while i < len(regex):
        if regex.startswith(".*", i):
            out.append(_noise(rng, rng.randrange(0, 4)))
            i += 2
        elif regex[i] == ".":
            out.append(rng.choice(_ALNUM))
            i += 1
        elif regex[i] == "\\" and i + 1 < len(regex):
            out.append(regex[i + 1])
            i += 2
        else:
            out.append(regex[i])
            i += 1
    return "".join(out)


def _string_for(rng: random.Random, test: StrTest, hit: bool) -> str:
    if test.kind == "any":
        return _noise(rng)
    value = rng.choice(test.values) if test.values else ""
    if test.kind == "glob":
        value = _from_glob(rng, value)
    elif test.kind in ("suffix", "contains"):
        value = _noise(rng, rng.randrange(0, 5)) + value
    if test.kind in ("prefix", "contains"):
        value = value + _noise(rng, rng.randrange(0, 5))
    if not test.cased:
        value = _flip_case(rng, value)
    return value if hit else _near_miss(rng, value)


def _regex_sample(rng: random.Random, pattern: str) -> str:
    # No general regex inverter: take the literal runs of the pattern, which often hit simple ones.
    literal = re.sub(r"\\(.)", r"\1", re.sub(r"\[[^\]]*\]|[\^$().*+?{}|]|\{\d+(,\d*)?\}", " ", pattern))
    return literal.strip() or _noise(rng)


def _value(rng: random.Random, match: Match, hit: bool) -> Any:
    t = match.test
    if isinstance(t, StrTest):
        return _string_for(rng, t, hit)
    if isinstance(t, NumEqTest):
        n = int(t.number) if float(t.number).is_integer() else t.number
        return n if hit else n + rng.choice((1, -1, 10))
    if isinstance(t, RegexTest):
        return _regex_sample(rng, t.pattern)
    if isinstance(t, CidrTest):
        import ipaddress

        net = ipaddress.ip_network(t.networks[0], strict=False)
        host = net.network_address + rng.randrange(min(net.num_addresses, 1 << 16))
        return str(host) if hit else str(net.broadcast_address + 1)
    if isinstance(t, CompareTest):
        delta = rng.choice((-1, 0, 1))
        return t.number + delta
    if isinstance(t, BoolTest):
        return t.value if hit else not t.value
    if isinstance(t, NullTest | ExistsTest | FieldEqTest):
        return _noise(rng)
    return _noise(rng)


def _assign(rng: random.Random, node: Node, fields: dict[FieldRef, Any], satisfy: bool) -> None:
    if isinstance(node, Match):
        if isinstance(node.test, NullTest):
            if not satisfy:
                fields[node.field] = _noise(rng)
            return
        if isinstance(node.test, ExistsTest):
            if node.test.exists == satisfy:
                fields[node.field] = _noise(rng)
            return
        value = _value(rng, node, satisfy if rng.random() < 0.85 else not satisfy)
        old = fields.get(node.field)
        if (
            isinstance(old, str)
            and isinstance(value, str)
            and not isinstance(node.test, CidrTest)
            and not _is_ip(old)
            and rng.random() < 0.9
        ):
            # Several leaves on one field (CommandLine contains A and contains B): compose the text so that
            # all can hold at once; an equality or (rarely) a plain overwrite makes them conflict instead.
            kind = node.test.kind if isinstance(node.test, StrTest) else "contains"
            if kind == "prefix":
                value = value + " " + old
            elif kind != "eq":
                value = old + " " + value
        fields[node.field] = value
    elif isinstance(node, And):
        kids = list(node.children)
        if satisfy:
            for c in kids:
                _assign(rng, c, fields, True)
        else:
            _assign(rng, rng.choice(kids), fields, False)
            for c in kids:
                if rng.random() < 0.6:
                    _assign(rng, c, fields, True)
    elif isinstance(node, Or):
        kids = list(node.children)
        if satisfy:
            _assign(rng, rng.choice(kids), fields, True)
            if rng.random() < 0.3:
                _assign(rng, rng.choice(kids), fields, True)
        else:
            for c in kids:
                _assign(rng, c, fields, False)
    elif isinstance(node, Not):
        _assign(rng, node.child, fields, not satisfy if rng.random() < 0.8 else satisfy)
    elif isinstance(node, Const):
        return


def probes(rng: random.Random, node: Node, count: int) -> list[Event]:
    """``count`` events aimed at ``node``: mostly attempts to satisfy it, some deliberate near misses."""
    out: list[Event] = []
    for i in range(count):
        assigned: dict[FieldRef, Any] = {}
        _assign(rng, node, assigned, satisfy=rng.random() < 0.75)
        flat: dict[str, Any] = {}
        lists: dict[str, dict[int, Any]] = {}
        for ref, value in assigned.items():
            if ref.name == FULLTEXT:
                flat["process.command_line"] = value if isinstance(value, str) else str(value)
            elif ref.index is not None:
                lists.setdefault(ref.name, {})[ref.index] = value
            else:
                flat[ref.name] = value
        for name, items in lists.items():
            argv = [str(items.get(j, _noise(rng, 3))) for j in range(max(items) + 1)]
            flat[name] = argv
        action = flat.pop(ACTION.name, None)
        if not isinstance(action, str) or not action:
            action = "exec"
        out.append(Event.of(action, "synthetic", _BASE + i, host="probe", values=flat))
    return out


# -- benign stream ---------------------------------------------------------------------------------------

_CMDS = [
    ["ls", "-la", "/home/user"],
    ["cat", "/etc/hostname.bak"],
    ["grep", "-rn", "error", "/var/log/app"],
    ["git", "status"],
    ["git", "log", "--oneline", "-5"],
    ["make", "-j2"],
    ["gcc", "-O2", "-c", "main.c", "-o", "main.o"],
    ["python3", "manage.py", "runserver"],
    ["sleep", "5"],
    ["date", "+%s"],
    ["cp", "notes.txt", "notes.txt.bak"],
    ["mv", "report.tmp", "report.txt"],
    ["sed", "-i", "s/a/b/", "config.ini"],
    ["awk", "{print $1}", "access.log"],
    ["sort", "-u", "list.txt"],
    ["head", "-n", "20", "data.csv"],
    ["tail", "-f", "/var/log/app/app.log"],
    ["vim", "README.md"],
    ["less", "/usr/share/doc/bash/README"],
    ["du", "-sh", "/var/cache"],
    ["find", "/srv/www", "-name", "*.html", "-mtime", "-1"],
    ["xargs", "-0", "rm", "-f"],
    ["apt-get", "update"],
    ["dpkg", "--configure", "-a"],
    ["systemctl", "status", "nginx"],
    ["journalctl", "-u", "nginx", "--since", "today"],
    ["node", "server.js"],
    ["npm", "run", "build"],
    ["docker", "ps"],
    ["ssh", "deploy@build01", "uptime"],
]
_EXES = {"python3": "/usr/bin/python3.11", "node": "/usr/bin/node", "vim": "/usr/bin/vim.basic"}
_SCRATCH = [
    "/tmp/tmp.a1b2c3/part-0001",
    "/home/user/project/build/main.o",
    "/home/user/.cache/pip/http/def",
    "/var/cache/apt/archives/partial/libbar.deb",
]
_FILES = [
    "/home/user/project/src/main.py",
    "/var/log/app/app.log",
    "/tmp/tmp.x1y2z3/output.json",
    "/var/cache/apt/archives/partial/libfoo.deb",
    "/home/user/.cache/pip/http/abc",
    "/srv/www/index.html",
    "/var/lib/postgresql/15/main/base/1/1234",
]


def benign_stream(rng: random.Random, count: int, start: float = _BASE) -> list[Event]:
    """Ordinary host activity: ~40% exec, ~35% file writes, ~10% deletes/renames, ~15% network."""
    out: list[Event] = []
    for i in range(count):
        ts = start + i * 0.001
        pid = 2000 + (i % 30_000)
        argv = rng.choice(_CMDS)
        exe = _EXES.get(argv[0], f"/usr/bin/{argv[0]}")
        base: dict[str, Any] = {
            "process.pid": pid,
            "process.entity_id": f"{pid}:{1000 + i // 30_000}",
            "process.executable": exe,
            "process.name": exe.rsplit("/", 1)[-1],
            "process.args": list(argv),
            "process.command_line": " ".join(argv),
            "process.working_directory": "/home/user/project",
            "process.parent.pid": 1500,
            "process.parent.entity_id": f"1500:{i // 50}",
            "process.parent.executable": "/usr/bin/bash",
            "process.parent.command_line": "-bash",
            "user.id": 1000,
            "user.name": "user",
        }
        r = rng.random()
        if r < 0.40:
            action = "exec"
        elif r < 0.75:
            action = "file_write"
            base["file.path"] = rng.choice(_FILES)
        elif r < 0.80:
            action = "file_delete"
            base["file.path"] = rng.choice(_SCRATCH)
        elif r < 0.85:
            action = "file_rename"
            base["file.path"] = rng.choice(_FILES) + ".tmp"
            base["file.target_path"] = rng.choice(_FILES)
        else:
            action = "connect"
            base.update(
                {
                    "destination.ip": f"10.0.{rng.randrange(4)}.{rng.randrange(1, 250)}",
                    "destination.port": rng.choice((443, 80, 5432, 53, 8080)),
                    "network.transport": "tcp",
                    "network.family": "ipv4",
                }
            )
        out.append(Event.of(action, "synthetic", ts, host="bench", values=base))
    return out
