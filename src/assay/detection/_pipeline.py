"""The pySigma processing pipeline that maps Sigma's logsources and field names onto Assay events.

Sigma rules name Sysmon-for-Linux fields (``Image``, ``CommandLine``, ``TargetFilename``...) or auditd record
fields (``type``, ``a0``, ``exe``, ``name``...). Assay's events (DESIGN §3) are one flat ECS-style dict per
kernel observation, whichever source saw it. The pipeline rewrites each rule so that it reads those events:

- the logsource becomes a condition on ``event.action`` (``process_creation`` → ``exec``), ANDed to the rule;
- each field is renamed to its event field; a field with no counterpart makes the rule unsupported, with the
  field and logsource named, because a rule silently blind to one of its fields is worse than no rule;
- auditd records are translated by meaning: an ``EXECVE`` record is an ``exec`` event and its ``aN`` are
  ``process.args[N]``; a ``SYSCALL`` record is the event of that syscall; a ``PATH`` record is a file event
  and its ``name`` the ``file.path``. So auditd rules fire on eBPF telemetry too.

Field names that already are Assay event fields (``process.args``, ``file.mode``...) pass through unchanged,
which is what the built-in rules use where Sysmon has no name for an event field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sigma.conditions import ConditionAND, ConditionOR
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaTransformationError
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import PreprocessingTransformation
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaLogSource, SigmaRule
from sigma.types import SigmaBool, SigmaNumber, SigmaString, SigmaType

from assay.events import FIELDS, Action


class Unmappable(SigmaTransformationError):
    """A rule reads something Assay's events cannot provide; the message is the precise reason."""


# Actions that are one system call each: what an auditd SYSCALL record can stand for. fork and exit are
# left out on purpose: no audit rule set records them (too noisy), and counting them would make every
# process look like telemetry the rules consume (validation's missed_no_telemetry would never happen).
SYSCALL_ACTIONS: tuple[str, ...] = (
    "exec",
    "connect",
    "accept",
    "bind",
    "listen",
    "file_write",
    "file_delete",
    "file_rename",
    "file_chmod",
    "file_chown",
    "file_read_sensitive",
    "setuid",
    "setgid",
    "ptrace",
    "kill",
    "prctl",
    "module_load",
    "memfd_create",
    "mount",
    "umount",
    "bpf_load",
    "personality",
    "syslog",
    "sysinfo",
    "mknod",
)
FILE_ACTIONS: tuple[str, ...] = (
    "file_write",
    "file_delete",
    "file_rename",
    "file_chmod",
    "file_chown",
    "file_read_sensitive",
)

# Fields every process-scoped logsource shares (Sysmon for Linux names them the same in each event type).
_PROCESS_COMMON = {
    "Image": "process.executable",
    "CommandLine": "process.command_line",
    "ParentImage": "process.parent.executable",
    "ParentCommandLine": "process.parent.command_line",
    "User": "user.name",
    "CurrentDirectory": "process.working_directory",
    "ProcessId": "process.pid",
    "ParentProcessId": "process.parent.pid",
    # Sysmon for Linux reports the login uid (/proc/PID/loginuid, audit's auid) as LogonId
    "LogonId": "user.audit.id",
}

_WHY_NOT = {
    "DestinationHostname": "Assay sees connections by address; it resolves no host names",
    "SourceHostname": "Assay sees connections by address; it resolves no host names",
    "OriginalFileName": "PE metadata does not exist for Linux executables",
    "Hashes": "Assay events carry no file hashes",
    "IntegrityLevel": "a Windows concept with no Linux counterpart",
}


@dataclass(frozen=True)
class Logsource:
    """What a Sigma logsource means on Assay events: the actions it covers and its field names."""

    name: str
    actions: tuple[str, ...]
    fields: dict[str, str]


def _category(name: str, actions: tuple[str, ...], extra: dict[str, str] | None = None) -> Logsource:
    return Logsource(name, actions, {**_PROCESS_COMMON, **(extra or {})})


_FILE = {"TargetFilename": "file.path"}
_NET = {
    "DestinationIp": "destination.ip",
    "DestinationPort": "destination.port",
    "SourceIp": "source.ip",
    "SourcePort": "source.port",
    "Protocol": "network.transport",
}
_AUTH = {"USER": "user.name", "User": "user.name", "SourceIp": "source.ip", "Message": "message"}

CATEGORIES: dict[str, Logsource] = {
    "process_creation": _category("process_creation", ("exec",)),
    "file_event": _category("file_event", ("file_write",), _FILE),
    "file_delete": _category("file_delete", ("file_delete",), _FILE),
    "file_rename": _category(
        "file_rename", ("file_rename",), {"SourceFilename": "file.path", "TargetFilename": "file.target_path"}
    ),
    "network_connection": _category("network_connection", ("connect", "accept"), _NET),
}
# Every other taxonomy action is a category of its own (``category: ptrace``): Sigma has no standard name
# for them on Linux, and the built-in rules need them.
# loss and sensor are not behaviour (a source's drops and heartbeats): no rule may select them.
_NOT_OWN = {"loss", "sensor", "exec", "file_write", "file_delete", "file_rename", "connect", "accept"}
for _action in Action:
    if _action.value not in _NOT_OWN:
        CATEGORIES.setdefault(_action.value, _category(_action.value, (_action.value,), {**_FILE, **_NET}))

SERVICES: dict[str, Logsource] = {
    "sshd": Logsource("sshd", ("login_success", "login_failure"), _AUTH),
    "sudo": Logsource("sudo", ("sudo",), _AUTH),
    "auth": Logsource("auth", ("login_success", "login_failure", "sudo"), _AUTH),
}
# auth-log services are told apart by the service that logged the line.
SERVICE_FILTER = {"sshd": "sshd", "sudo": "sudo"}

NOT_FED = {
    "syslog": "syslog messages",
    "cron": "cron's log",
    "clamav": "ClamAV's log",
    "vsftpd": "vsftpd's log",
    "guacamole": "Guacamole's log",
}

# auditd → events.
_AUDIT_SYSCALLS: dict[str, str] = {
    "execve": "exec",
    "execveat": "exec",
    "connect": "connect",
    "accept": "accept",
    "accept4": "accept",
    "bind": "bind",
    "listen": "listen",
    "unlink": "file_delete",
    "unlinkat": "file_delete",
    "rmdir": "file_delete",
    "rename": "file_rename",
    "renameat": "file_rename",
    "renameat2": "file_rename",
    "chmod": "file_chmod",
    "fchmod": "file_chmod",
    "fchmodat": "file_chmod",
    "chown": "file_chown",
    "fchown": "file_chown",
    "lchown": "file_chown",
    "fchownat": "file_chown",
    "setuid": "setuid",
    "setreuid": "setuid",
    "setresuid": "setuid",
    "setgid": "setgid",
    "setregid": "setgid",
    "setresgid": "setgid",
    "ptrace": "ptrace",
    "kill": "kill",
    "tkill": "kill",
    "tgkill": "kill",
    "prctl": "prctl",
    "init_module": "module_load",
    "finit_module": "module_load",
    "memfd_create": "memfd_create",
    "mount": "mount",
    "umount2": "umount",
    "personality": "personality",
    "syslog": "syslog",
    "sysinfo": "sysinfo",
    "mknod": "mknod",
    "mknodat": "mknod",
}
# Arguments of a SYSCALL record (aN, which auditd prints in hex) that events carry as named fields.
_SYSCALL_ARGS: dict[str, dict[int, str]] = {
    "personality": {0: "personality.persona"},
    "syslog": {0: "syslog.action"},
}
_AUDIT_COMMON = {
    "exe": "process.executable",
    "comm": "process.name",
    "pid": "process.pid",
    "ppid": "process.parent.pid",
    "uid": "user.id",
    "euid": "user.effective.id",
    "gid": "group.id",
    "cwd": "process.working_directory",
    "proctitle": "process.command_line",
    "auid": "user.audit.id",
}
_AUDIT_WHY_NOT = {
    "key": "audit rule keys name the local audit configuration, not behaviour; Assay events have none",
    "nametype": "Assay file events do not say whether the file was created, deleted or only opened",
    "ses": "Assay events carry no audit session id",
    "unit": "Assay events carry no systemd service state changes",
    "success": "Assay events do not carry the auditd success flag",
    "exit": "Assay events do not carry the raw syscall return value",
}
_AUDIT_TYPES = {"execve": "EXECVE", "syscall": "SYSCALL", "path": "PATH"}


def _item(field: str, values: list[str]) -> SigmaDetectionItem:
    return SigmaDetectionItem(field, [], [SigmaString(v) for v in values])


def _plain_values(item: SigmaDetectionItem, what: str) -> list[str]:
    out: list[str] = []
    for v in item.value:
        if isinstance(v, SigmaString) and not v.contains_special():
            out.append(str(v))
        elif isinstance(v, SigmaNumber):
            out.append(str(v.number))
        else:
            raise Unmappable(f"auditd '{what}' must be a plain value to be mapped, got {v!r}")
    if item.modifiers:
        raise Unmappable(f"auditd '{what}' with modifiers cannot be mapped onto event actions")
    return out


def _syscall_arg(syscalls: list[str], n: int) -> str | None:
    """The event field that holds argument ``n`` of every one of ``syscalls`` (the same one), else None."""
    fields = {_SYSCALL_ARGS.get(sc, {}).get(n) for sc in syscalls}
    if len(fields) != 1:
        return None
    return fields.pop()


def _syscall_arg_item(item: SigmaDetectionItem, field: str) -> SigmaDetectionItem:
    """``aN: 40000`` of a SYSCALL record → ``field`` equal to 0x40000: auditd prints arguments in hex, so
    the digits are read as hex whether YAML saw a number or a string."""
    if item.modifiers:
        raise Unmappable(f"auditd field '{item.field}' with modifiers: only plain hex values are mapped")
    numbers: list[SigmaType] = []
    for text in _plain_values(item, item.field or "aN"):
        try:
            numbers.append(SigmaNumber(int(text, 16)))
        except ValueError as exc:
            raise Unmappable(f"auditd field '{item.field}' must be hex digits, as auditd prints it") from exc
    return SigmaDetectionItem(field, [], numbers)


def _dotted_ok(name: str) -> bool:
    base = name.split("[", 1)[0]
    return base in FIELDS or base == "message"


class AssayMapping(PreprocessingTransformation):
    """The ``assay`` pipeline's one transformation: logsource → action condition, fields → event fields."""

    def apply(self, rule: SigmaRule | SigmaCorrelationRule) -> None:
        super().apply(rule)
        if not isinstance(rule, SigmaRule):
            return  # correlation rules reference rules; their group-by fields are mapped by the engine
        ls = rule.logsource
        if (ls.product or "").lower() not in {"linux", ""}:
            raise Unmappable(f"logsource product '{ls.product}' is not Linux")
        if ls.service and ls.service.lower() == "auditd":
            actions = self._auditd(rule)
        else:
            source = self._logsource(ls)
            actions = source.actions
            for detection in rule.detection.detections.values():
                self._map_fields(detection, source)
            if ls.service and ls.service.lower() in SERVICE_FILTER:
                self._and_condition(rule, "auth.service", [SERVICE_FILTER[ls.service.lower()]])
        self._and_condition(rule, "event.action", list(actions))

    @staticmethod
    def _logsource(ls: SigmaLogSource) -> Logsource:
        if ls.category:
            found = CATEGORIES.get(ls.category.lower())
            if found is None:
                raise Unmappable(f"logsource category '{ls.category}' has no Assay event action")
            return found
        if ls.service:
            svc = ls.service.lower()
            if svc in SERVICES:
                return SERVICES[svc]
            if svc in NOT_FED:
                raise Unmappable(f"logsource service '{ls.service}': no Assay source collects {NOT_FED[svc]}")
            raise Unmappable(f"logsource service '{ls.service}' is not fed by any Assay source")
        raise Unmappable(
            "logsource 'product: linux' alone means free-text system logs (syslog); "
            "no Assay source collects them"
        )

    def _map_fields(self, detection: SigmaDetection, source: Logsource) -> None:
        for item in detection.detection_items:
            if isinstance(item, SigmaDetection):
                self._map_fields(item, source)
                continue
            if item.field is None:
                continue  # keyword: searched in the event's full text (see _codegen.fulltext)
            item.field = self._field(item.field, source)
            for v in item.value:
                ref = getattr(v, "field", None)
                if isinstance(ref, str) and type(v).__name__ == "SigmaFieldReference":
                    v.field = self._field(ref, source)  # type: ignore[attr-defined]
            if item.field == "@initiated":
                self._initiated(item)

    @staticmethod
    def _field(name: str, source: Logsource) -> str:
        if name in source.fields:
            return source.fields[name]
        if name == "Initiated" and "connect" in source.actions:
            return "@initiated"
        if _dotted_ok(name):
            return name
        why = _WHY_NOT.get(name, "no Assay event field corresponds to it")
        raise Unmappable(f"field '{name}' of logsource '{source.name}': {why}")

    @staticmethod
    def _initiated(item: SigmaDetectionItem) -> None:
        """Sysmon's ``Initiated: 'true'`` is an outbound connection: Assay's ``connect`` (else ``accept``)."""
        actions: list[str] = []
        for v in item.value:
            if isinstance(v, SigmaBool):
                flag = bool(v.boolean)
            elif isinstance(v, SigmaString) and str(v).lower() in {"true", "false"}:
                flag = str(v).lower() == "true"
            else:
                raise Unmappable(f"field 'Initiated' must be true or false, got {v!r}")
            actions.append("connect" if flag else "accept")
        if item.modifiers:
            raise Unmappable("field 'Initiated' with modifiers cannot be mapped")
        item.field = "event.action"
        item.value = [SigmaString(a) for a in actions]

    # auditd ------------------------------------------------------------------------------------------
    def _auditd(self, rule: SigmaRule) -> tuple[str, ...]:
        self._keys = audit_keys(rule.logsource.definition or "")
        for detection in rule.detection.detections.values():
            self._audit_detection(detection, record=None)
        return SYSCALL_ACTIONS

    def _audit_detection(self, detection: SigmaDetection, record: str | None) -> None:
        items = detection.detection_items
        and_linked = detection.item_linking is ConditionAND
        syscalls: list[str] = []  # the syscalls this (AND-linked) selection is about
        if and_linked:
            for item in items:
                if not isinstance(item, SigmaDetectionItem):
                    continue
                low = (item.field or "").lower()
                if low == "type":
                    types = {_AUDIT_TYPES.get(t.lower(), t.upper()) for t in _plain_values(item, "type")}
                    record = types.pop() if len(types) == 1 else "mixed"
                elif low == "syscall":
                    syscalls = [n.lower() for n in _plain_values(item, item.field or "syscall")]
            if syscalls and record is None:
                record = "SYSCALL"  # only SYSCALL records name a syscall
        needs_exec = False
        for i, item in enumerate(items):
            if isinstance(item, SigmaDetection):
                self._audit_detection(item, record if and_linked else None)
                continue
            if item.field is None:
                continue
            name = item.field
            low = name.lower()
            if low == "type":
                items[i] = _item("event.action", self._audit_types(_plain_values(item, "type")))
            elif low == "syscall":
                items[i] = _item("event.action", self._audit_syscalls(_plain_values(item, name)))
            elif len(low) >= 2 and low[0] == "a" and low[1:].isdigit():
                arg_field = _syscall_arg(syscalls, int(low[1:])) if record == "SYSCALL" else None
                if arg_field is not None:
                    items[i] = _syscall_arg_item(item, arg_field)
                    continue
                if record not in (None, "EXECVE"):
                    raise Unmappable(
                        f"auditd field '{name}' of a {record} record is a raw syscall argument; "
                        "Assay events carry only the arguments named in the taxonomy "
                        f"({', '.join(f'{k} a{n}' for k, v in _SYSCALL_ARGS.items() for n in v)})"
                    )
                item.field = f"process.args[{int(low[1:])}]"
                needs_exec = record is None
            elif low == "name":
                item.field = "file.path"
            elif low in _AUDIT_COMMON:
                item.field = _AUDIT_COMMON[low]
            elif low == "key" and self._keys:
                items[i] = self._key_detection(item)
            elif low in _AUDIT_WHY_NOT:
                raise Unmappable(f"auditd field '{name}': {_AUDIT_WHY_NOT[low]}")
            elif _dotted_ok(name):
                continue
            else:
                raise Unmappable(f"auditd field '{name}' has no Assay event field")
        if needs_exec and and_linked:
            # aN without a record type can only be an EXECVE record's argv (a SYSCALL's aN is refused above).
            items.append(_item("event.action", ["exec"]))

    def _key_detection(self, item: SigmaDetectionItem) -> SigmaDetection:
        """``key: K`` means "recorded by the audit rules tagged K": the rule's own ``definition`` says which
        those are, so the key becomes the behaviour they watch."""
        alternatives: list[SigmaDetectionItem | SigmaDetection] = []
        for key in _plain_values(item, "key"):
            watched = self._keys.get(key)
            if not watched:
                raise Unmappable(
                    f"auditd field 'key': the rule's definition does not define key '{key}' in a form "
                    "Assay can map (-w PATH -p x|w|a, or -a ... -S SYSCALL with only arch filters)"
                )
            alternatives.extend(SigmaDetection([_item(f, [v]) for f, v in pairs]) for pairs in watched)
        return SigmaDetection(alternatives, item_linking=ConditionOR)

    @staticmethod
    def _audit_types(types: list[str]) -> list[str]:
        actions: list[str] = []
        for t in types:
            kind = t.upper()
            if kind == "EXECVE":
                actions.append("exec")
            elif kind == "SYSCALL":
                actions.extend(SYSCALL_ACTIONS)
            elif kind == "PATH":
                actions.extend(FILE_ACTIONS)
            else:
                raise Unmappable(f"auditd record type '{t}' has no counterpart in Assay events")
        return list(dict.fromkeys(actions))

    @staticmethod
    def _audit_syscalls(names: list[str]) -> list[str]:
        actions: list[str] = []
        for n in names:
            action = _AUDIT_SYSCALLS.get(n.lower())
            if action is None:
                raise Unmappable(f"auditd syscall '{n}' has no Assay event action")
            actions.append(action)
        return list(dict.fromkeys(actions))

    @staticmethod
    def _and_condition(rule: SigmaRule, field: str, values: list[str]) -> None:
        """AND ``field in values`` to every condition (what pySigma's AddConditionTransformation does)."""
        name = f"_assay_{field.replace('.', '_')}"
        rule.detection.detections[name] = SigmaDetection([_item(field, values)])
        rule.detection.condition = [f"{name} and ({c})" for c in rule.detection.condition]
        from sigma.conditions import SigmaCondition

        rule.detection.parsed_condition = [
            SigmaCondition(c, rule.detection, rule.detection.source) for c in rule.detection.condition
        ]


def audit_keys(definition: str) -> dict[str, list[list[tuple[str, str]]]]:
    """Audit rules in a Sigma logsource ``definition``, by key: for each key, the alternatives it stands
    for, each a list of (event field, value) that must all hold.

    ``-w PATH -p x -k K`` → exec of PATH; ``-p w``/``-p a`` → file_write of PATH. ``-a ... -S SYSCALL
    [-F arch=...] -k K`` → that syscall's action. Anything else (read watches, other ``-F`` filters) is
    left out, which makes a rule using that key unsupported rather than approximated."""
    import shlex

    keys: dict[str, list[list[tuple[str, str]]]] = {}
    bad: set[str] = set()
    for line in definition.splitlines():
        try:
            tokens = shlex.split(line.strip())
        except ValueError:
            continue
        if not tokens or tokens[0] not in ("-w", "-a"):
            continue
        key = None
        perms = ""
        syscalls: list[str] = []
        filters_ok = True
        it = iter(range(len(tokens)))
        for i in it:
            tok = tokens[i]
            arg = tokens[i + 1] if i + 1 < len(tokens) else ""
            if tok == "-k":
                key = arg
            elif tok == "-p":
                perms = arg
            elif tok == "-S":
                syscalls.extend(arg.split(","))
            elif tok == "-F":
                name, _, value = arg.partition("=")
                if name == "key":
                    key = value
                elif name != "arch":
                    filters_ok = False
            else:
                continue
            next(it, None)
        if key is None:
            continue
        alts: list[list[tuple[str, str]]] = []
        if tokens[0] == "-w":
            path = tokens[1] if len(tokens) > 1 else ""
            if "r" in perms or not perms or not path:
                bad.add(key)
                continue
            if "x" in perms:
                alts.append([("event.action", "exec"), ("process.executable", path)])
            if "w" in perms or "a" in perms:
                alts.append([("event.action", "file_write"), ("file.path", path)])
        else:
            actions = [_AUDIT_SYSCALLS.get(sc.lower()) for sc in syscalls]
            if not filters_ok or not actions or None in actions:
                bad.add(key)
                continue
            alts.extend([("event.action", a)] for a in dict.fromkeys(a for a in actions if a))
        keys.setdefault(key, []).extend(alts)
    for key in bad:  # a key whose rules Assay cannot all express stays unmapped as a whole
        keys.pop(key, None)
    return keys


def is_fed(logsource: dict[str, str]) -> bool:
    """Whether some Assay source produces events for this logsource (the denominator of support rates)."""
    category, service = logsource.get("category"), logsource.get("service")
    if (logsource.get("product") or "linux").lower() != "linux":
        return False
    if category:
        return category.lower() in CATEGORIES
    if service:
        return service.lower() == "auditd" or service.lower() in SERVICES
    return False


def event_field(rule: SigmaRule, name: str) -> str:
    """The event field a Sigma field name of ``rule``'s logsource reads (correlation group-by, fields)."""
    ls = rule.logsource
    if ls.service and ls.service.lower() == "auditd":
        low = name.lower()
        if low in _AUDIT_COMMON:
            return _AUDIT_COMMON[low]
        if low == "name":
            return "file.path"
        if low == "syscall" or low == "type":
            return "event.action"
        if _dotted_ok(name):
            return name
        raise Unmappable(f"auditd field '{name}' has no Assay event field")
    return AssayMapping._field(name, AssayMapping._logsource(ls))


def assay_pipeline() -> ProcessingPipeline:
    """A fresh pipeline (pySigma pipelines keep per-run state, so one per conversion run)."""
    return ProcessingPipeline(
        name="assay: Sysmon-for-Linux and auditd fields onto Assay events",
        priority=20,
        items=[ProcessingItem(AssayMapping(), identifier="assay_mapping")],
    )


def describe() -> dict[str, Any]:
    """The mapping as data, for documentation and ``assay rules check``."""
    return {
        "categories": {k: {"actions": list(v.actions), "fields": v.fields} for k, v in CATEGORIES.items()},
        "services": {k: {"actions": list(v.actions), "fields": v.fields} for k, v in SERVICES.items()},
        "auditd": {"syscalls": _AUDIT_SYSCALLS, "fields": _AUDIT_COMMON},
    }
