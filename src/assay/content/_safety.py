"""Safety classes for imported content (Atomic Red Team tests, Caldera abilities that do not say).

Conservative by construction: a class is the *highest* of what the technique and every command pattern say,
and patterns can only raise it. What the classifier reads is everything that would run: each executor's
command and cleanup, and each prerequisite's check and get commands, with Atomic input arguments filled with
their defaults (a ``rm -rf #{path}`` is only as safe as its default path).

- ``safe``: the technique observes (discovery, collection into temporary files, reading credentials files)
  and no pattern says more;
- ``disruptive``: the technique changes persistent host state a cleanup can undo (persistence, permissions,
  services started), or a command writes to system or home paths, runs as root, or runs files or text the
  classifier cannot read;
- ``destructive``: the technique's purpose is damage or blinding the host (impact, disabling tools, firewall,
  log and history wipes, kernel modules, PAM, the dynamic linker), it reaches the network, or a command
  matches a destructive pattern (reboot, ``rm`` of system paths, writes to block devices, ``mkfs``, fork
  bombs, module loads, swap, firewall flushes, ``kill -1``, account deletion or locking, system log wipes,
  host-wide ``sysctl``, audit rule changes, package managers, code piped from a decoder or download into a
  shell). A technique the classifier does not know is destructive: unclassified content counts as such.

The reason of every class is kept (``Ability.safety_reason``): the first thing that set the class.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from assay.content._model import Ability, Privilege, Safety


# -- techniques ----------------------------------------------------------------------------------------------
def _ids(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Observing: read the host, stage into temporary files. Safe unless a command pattern says otherwise.
_OBSERVE = frozenset(
    _ids(
        "T1003.007 T1003.008 T1005 T1007 T1016 T1027 T1027.001 T1027.002 T1027.004 T1033 T1036 "
        "T1036.003 T1036.004 T1036.005 T1036.006 T1036.007 T1049 T1057 T1059 T1059.004 T1059.006 "
        "T1069 T1069.001 T1069.002 T1074 T1074.001 T1082 T1083 T1087 T1087.001 T1087.002 T1113 "
        "T1115 T1119 T1120 T1124 T1140 T1201 T1217 T1497 T1497.001 T1497.003 T1518 T1518.001 "
        "T1552.001 T1552.003 T1552.004 T1560 T1560.001 T1560.002 T1564 T1564.001 T1613 T1614 "
        "T1614.001 T1652 T1654"
    )
)
# Changing host state a cleanup can undo.
_CHANGE = frozenset(
    _ids(
        "T1001.002 T1037 T1037.004 T1053 T1053.002 T1053.003 T1053.006 T1055 T1055.008 T1055.009 "
        "T1056 T1056.001 T1070.004 T1070.006 T1078 T1078.003 T1098 T1098.004 T1136 T1136.001 "
        "T1136.002 T1222 T1222.002 T1543 T1543.002 T1546 T1546.004 T1546.005 T1546.018 T1547 "
        "T1547.013 T1548 T1548.001 T1548.003 T1553 T1553.004 T1569 T1569.003 T1690"
    )
)
# Damage, blinding the host, or the network (which only the sandbox's own loopback contains).
_DESTROY: dict[str, str] = {
    **dict.fromkeys(
        _ids(
            "T1485 T1486 T1489 T1490 T1491 T1495 T1496 T1496.001 T1498 T1499 T1529 T1531 T1561 "
            "T1561.001 T1561.002 T1565 T1565.001"
        ),
        "an impact technique: its purpose is damage to the host",
    ),
    **dict.fromkeys(
        _ids(
            "T1070 T1070.002 T1070.003 T1070.008 T1562 T1562.001 T1562.004 T1562.006 T1562.012 T1685 "
            "T1685.002 T1685.004 T1685.006 T1686"
        ),
        "blinds the host: disables tools, the firewall or audit, or wipes logs or history",
    ),
    **dict.fromkeys(
        _ids("T1014 T1195 T1195.002 T1547.006 T1556 T1556.003 T1574 T1574.006 T1578 T1578.002"),
        "changes what every process or login on the host trusts (kernel, linker, PAM, packages)",
    ),
    **dict.fromkeys(
        _ids(
            "T1018 T1021 T1021.004 T1040 T1046 T1048 T1048.002 T1048.003 T1071 T1071.001 T1090 "
            "T1090.001 T1090.003 T1102 T1102.002 T1105 T1110 T1110.001 T1110.004 T1135 T1552.005 "
            "T1552.007 T1567 T1567.004 T1568 T1568.002 T1571 T1572"
        ),
        "reaches the network (scan, transfer, C2, brute force): only the sandbox contains it",
    ),
}


# -- command patterns ----------------------------------------------------------------------------------------
# Paths that are the host's, not a run's scratch space (temporary directories and /dev/null are not listed).
_SYSTEM = (
    r"(?:/(?:etc|usr|bin|sbin|lib|lib32|lib64|libx32|boot|root|home|opt|srv|var(?!/tmp)|sys|proc(?!/self)"
    r"|dev(?!/(?:null|zero|u?random|stdout|stderr|stdin|fd|shm|tty\b)))(?:/|\b)|~|\$\{?HOME\b)"
)
# A command word starts a line or follows a separator (quotes too: a command written into a script, or
# handed to `sh -c`, still runs).
_WORD = r"(?:^|[\s;&|`('\"]|\$\()"
_END = r"[^;&|\n]*"  # the rest of one simple command
# Commands that delete, empty or replace a file.
_WIPE = r"(?:rm|shred|truncate|unlink|mv|cp|ln|dd|sed\s+-i|tee|cat\s+/dev/null|echo)\b"


@dataclass(frozen=True, slots=True)
class _Pattern:
    regex: re.Pattern[str]
    safety: Safety
    reason: str


def _p(pattern: str, safety: Safety, reason: str) -> _Pattern:
    return _Pattern(re.compile(pattern, re.MULTILINE), safety, reason)


D, R = Safety.DESTRUCTIVE, Safety.DISRUPTIVE
_PATTERNS: tuple[_Pattern, ...] = (
    _p(_WORD + r"(?:sudo\s+)?(?:reboot|shutdown|halt|poweroff|telinit|kexec)\b", D, "reboots or halts"),
    _p(_WORD + r"init\s+[06]\b", D, "reboots or halts (init 0/6)"),
    _p(
        r"systemctl\s+(?:\S+\s+)*(?:reboot|poweroff|halt|kexec|suspend|hibernate|emergency|rescue|isolate)"
        r"\b",
        D,
        "reboots, halts or changes the system state (systemctl)",
    ),
    _p(r"sysrq", D, "uses the magic SysRq trigger"),
    _p(
        _WORD + r"rm\s" + _END + r"(?:--no-preserve-root|\s/\*?(?:\s|$)|\s" + _SYSTEM + r")",
        D,
        "deletes system or home paths (rm)",
    ),
    _p(
        _WORD + r"(?:shred|wipefs|blkdiscard|fdisk|sfdisk|parted|mkswap|swapoff|swapon)\b",
        D,
        "wipes, partitions or swaps disks",
    ),
    _p(_WORD + r"(?:mkfs|mke2fs)(?:\.\w+)?\b", D, "creates a file system (mkfs)"),
    _p(
        _WORD + r"dd\s" + _END + r"\bof=/dev/(?!null\b|zero\b|stdout\b|stderr\b|fd/|shm/)",
        D,
        "writes to a device (dd)",
    ),
    _p(r">\s*/dev/(?:sd|hd|vd|xvd|nvme|mmcblk|md|dm-|loop|mem|kmem|port|disk)", D, "writes to a raw device"),
    _p(r"(\w+|:)\s*\(\)\s*\{[^}]*\1\s*\|\s*\1\s*&", D, "a fork bomb"),
    _p(
        _WORD + r"(?:insmod|rmmod|modprobe|kmod|depmod)\b|\.ko\b|/lib/modules\b|(?:f)?init_module",
        D,
        "loads or removes kernel modules",
    ),
    _p(
        _WORD + r"(?:iptables|ip6tables|iptables-restore|nft|ufw|firewall-cmd|ebtables)\b",
        D,
        "changes the host firewall",
    ),
    _p(_WORD + r"kill\s+(?:-\S+\s+)*-1\b", D, "kills every process (kill -1)"),
    _p(_WORD + r"(?:pkill|killall|killall5)\b", D, "kills processes by name (could be the host's)"),
    _p(_WORD + r"(?:userdel|deluser|groupdel|delgroup)\b", D, "deletes users or groups"),
    _p(
        _WORD + r"(?:passwd\s+(?:-\S+\s+)*-[ld]\b|usermod\s+(?:-\S+\s+)*-[Le]\b|chage\b|chpasswd\b)",
        D,
        "locks or changes accounts' passwords",
    ),
    _p(
        r"history\s+-[cwd]|" + _WORD + _WIPE + _END + r"history|>\s*\S*history\b",
        D,
        "clears or rewrites command history",
    ),
    _p(
        _WORD + _WIPE + _END + r"(?:/var/log|\b(?:wtmp|btmp|utmp|lastlog)\b)|>\s*['\"]?/var/log|"
        r"journalctl\s" + _END + r"--(?:vacuum|rotate|flush)",
        D,
        "wipes or rewrites system logs or login records",
    ),
    _p(
        _WORD + r"sysctl\s" + _END + r"(?:-w\b|\w=)|>\s*/proc/sys/|/proc/sys/" + _END + r"\btee\b",
        D,
        "changes host-wide kernel settings (sysctl)",
    ),
    _p(_WORD + r"(?:auditctl|augenrules)\b|/etc/audit\b", D, "changes audit rules"),
    _p(
        _WORD + r"(?:setenforce|aa-disable|aa-complain|apparmor_parser)\b|/etc/selinux\b",
        D,
        "turns off mandatory access control",
    ),
    _p(
        _WORD + r"(?:systemctl\s+(?:\S+\s+)*(?:stop|disable|mask|kill)|service\s+\S+\s+stop|"
        r"/etc/init\.d/\S+\s+stop)\b",
        D,
        "stops or disables host services",
    ),
    _p(
        _WORD + r"(?:apt|apt-get|aptitude|dpkg|yum|dnf|rpm|zypper|apk|snap|pip3?|gem|npm|cpan)\s+"
        r"(?:\S+\s+)*(?:install|remove|purge|-i|-r|-e|-U|add|del)\b",
        D,
        "installs or removes packages",
    ),
    _p(
        r"\|\s*(?:sudo\s+)?(?:/\S*/)?(?:sh|bash|zsh|dash|ksh|python[\d.]*|perl|ruby|php|eval|source)\b",
        D,
        "pipes generated text into an interpreter (the classifier cannot read what runs)",
    ),
    _p(
        r"\b(?:subprocess|os\.system|os\.popen|os\.exec\w*|pty\.spawn|exec\s*\(|eval\s*\(|system\s*\()",
        D,
        "runs commands built at run time (the classifier cannot read what runs)",
    ),
    _p(
        r"(?:curl|wget|fetch)\b[^\n]*\|\s*(?:sudo\s+)?(?:sh|bash|zsh|python3?|perl)\b",
        D,
        "runs code straight from a download",
    ),
    _p(
        _WORD + r"(?:curl|wget|nc|ncat|netcat|socat|ssh|scp|sftp|ftp|tftp|telnet|nmap|masscan|ping|"
        r"ping6|arping|hping3|dig|nslookup|host|rsync|smbclient|tcpdump|tshark|hydra|aws|gcloud|az|"
        r"ldapsearch|kubectl|docker|mysql|psql|redis-cli|openssl\s+s_client)\b",
        D,
        "reaches the network",
    ),
    _p(r"/dev/(?:tcp|udp)/|\b[a-z][a-z0-9+.-]*://", D, "reaches the network"),
    _p(
        r"/etc/(?:passwd|shadow|gshadow|group|sudoers|pam\.d|ld\.so\.preload|fstab|security|login\.defs)\b"
        + _END
        + r"(?:>|\btee\b|\bsed\s+-i)|(?:>>?|\btee\s+(?:-a\s+)?)\s*/etc/(?:passwd|shadow|gshadow|"
        r"group|sudoers|pam\.d|ld\.so\.preload|fstab|security)",
        D,
        "writes to accounts, sudo, PAM, the dynamic linker or the file system table",
    ),
    _p(
        _WORD + r"(?:chattr|mount|umount|swapoff|pivot_root|chroot)\b",
        D,
        "changes mounts or file attributes of the host",
    ),
    _p(
        r"chmod\s" + _END + r"(?:[ugoa]*\+[rwx]*s|\b[2467][0-7]{3}\b)" + _END + _SYSTEM,
        D,
        "makes a system file setuid/setgid",
    ),
    _p(_WORD + r"crontab\s+(?:-\S+\s+)*-r\b", D, "removes the crontab"),
    _p(
        r"\b(?:while|until)\s+(?:true|:|\[\s*1\s*\])\b|\bstress(?:-ng)?\b|\bxmrig\b|\bminerd\b",
        D,
        "loops or loads the machine without end",
    ),
    # Disruptive: writes to host or home paths, services started, accounts and schedules added.
    _p(
        _WORD + r"(?:rm|mv|cp|ln|install|touch|truncate|mkdir|rmdir|unlink|chmod|chown|chgrp|tee|"
        r"sed\s+-i|setfacl|setcap)\b" + _END + _SYSTEM,
        R,
        "writes to system or home paths",
    ),
    _p(r">>?\s*['\"]?" + _SYSTEM, R, "redirects output into system or home paths"),
    _p(
        _WORD + r"(?:useradd|adduser|groupadd|addgroup|usermod|gpasswd|passwd|visudo)\b",
        R,
        "adds or changes accounts",
    ),
    _p(_WORD + r"(?:crontab|at|batch|systemd-run)\b", R, "schedules jobs on the host"),
    _p(_WORD + r"(?:systemctl|service|update-rc\.d|chkconfig|launchctl)\b", R, "manages host services"),
    _p(_WORD + r"(?:sudo|su|doas|pkexec)\b", R, "runs commands as another user"),
    _p(_WORD + r"kill\b", R, "sends signals to processes"),
    _p(
        _WORD + r"(?:gcc|cc|clang|make|go\s+build|rustc)\b",
        R,
        "compiles and runs code the classifier does not read",
    ),
    _p(_WORD + r"(?:eval|source|\.)\s", R, "evaluates text the classifier does not read"),
)
del D, R

_ARG = re.compile(r"#\{([\w\-]+)\}")


def _texts(ability: Ability) -> Iterable[str]:
    defaults = {name: arg.default for name, arg in ability.arguments.items()}

    def filled(text: str) -> str:
        return _ARG.sub(lambda m: defaults.get(m.group(1), m.group(0)), text)

    for executor in ability.executors:
        yield filled(executor.command)
        for cleanup in executor.cleanup:
            yield filled(cleanup)
    for dep in ability.dependencies:
        yield filled(dep.check)
        yield filled(dep.get)


def _technique_class(technique_id: str) -> tuple[Safety, str]:
    family = technique_id.split(".")[0]
    for tid in (technique_id, family):
        if tid in _DESTROY:
            return Safety.DESTRUCTIVE, f"technique {technique_id}: {_DESTROY[tid]}"
    if technique_id in _CHANGE or (family in _CHANGE and technique_id not in _OBSERVE):
        return Safety.DISRUPTIVE, f"technique {technique_id} changes host state (persistence, permissions)"
    if technique_id in _OBSERVE:
        return Safety.SAFE, f"technique {technique_id} observes the host; no command pattern says more"
    return (
        Safety.DESTRUCTIVE,
        f"technique {technique_id} has no safety class: unclassified imported content counts as destructive",
    )


def classify(ability: Ability, *, opaque_paths: Iterable[str] = ()) -> tuple[Safety, str]:
    """The ability's safety class and why: the highest of what its technique and its commands say.

    ``opaque_paths``: directories whose files the commands may run without the classifier reading them
    (the Atomic folder's shipped scripts and binaries); a command that names one is at least disruptive.
    """
    best, reason = _technique_class(ability.technique_id)
    texts = [t for t in _texts(ability) if t.strip()]
    for pattern in _PATTERNS:
        if pattern.safety.rank <= best.rank:
            continue
        match = next((m for m in (pattern.regex.search(t) for t in texts) if m), None)
        if match is not None:
            best, reason = pattern.safety, f"{pattern.reason}: {match.group(0).strip()[:60]!r}"
    if best is Safety.SAFE:
        opaque = [p for p in opaque_paths if p]
        if opaque and any(p in text for p in opaque for text in texts):
            best, reason = Safety.DISRUPTIVE, "runs or reads files shipped with the content, unread"
        elif ability.privilege is Privilege.ELEVATED:
            best, reason = Safety.DISRUPTIVE, "needs root: its effects are not confined to one user"
    return best, reason
