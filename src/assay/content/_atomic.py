"""Atomic Red Team YAML (``atomics/Txxxx/Txxxx.yaml``) → abilities.

One ability per test, keyed by the test's ``auto_generated_guid``. ART has no tactic, so the technique's first
tactic in the ATT&CK catalogue is used. What maps:

- ``input_arguments`` → :class:`Argument` (``#{name}`` filled with the default, or with a fact of the same
  trait that the operation was given: that is how a run overrides an argument);
- ``dependencies`` → :class:`Dependency`, with ``needs_network`` decided here from the get-prerequisite
  command (downloads, package managers): those are never run, the link ends ``not_executed``;
- ``elevation_required`` → ``privilege: Elevated``; ``cleanup_command`` → the executor's cleanup;
- ``PathToAtomicsFolder`` → the absolute path of the ``atomics`` folder the file was read from.

Tests Assay cannot run (``powershell``, ``command_prompt`` and ``manual`` executors, or no platform it
knows) are skipped, each with a recorded reason (a warning), never an error.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from assay import attack
from assay.content._model import DEFAULT_TIMEOUT, Ability, Argument, Dependency, Executor, Privilege
from assay.content._yaml import YList, YMap
from assay.errors import AttackError, ContentError, ErrorCollector, Source

_PLATFORMS = {"linux": "linux", "macos": "darwin", "windows": "windows"}
_RUNNABLE = {"sh": "sh", "bash": "bash"}
_VARIABLE = re.compile(r"#\{([\w\-]+)\}")
# Getting a prerequisite that reaches the network (a download, a package manager, a clone) is never done by
# Assay: a validation round must not fetch code from the internet onto the host.
_NETWORK = re.compile(
    r"\b(curl|wget|git\s+clone|apt(-get)?\s+(-\S+\s+)*install|yum\s+install|dnf\s+install|apk\s+add|"
    r"pip3?\s+install|python3?\s+-m\s+pip|gem\s+install|npm\s+install|go\s+(get|install)|snap\s+install|"
    r"brew\s+install|Invoke-WebRequest|iwr|Start-BitsTransfer)\b|(https?|ftp)://",
    re.IGNORECASE,
)


def needs_network(command: str) -> bool:
    return bool(_NETWORK.search(command or ""))


def is_atomic(doc: Any) -> bool:
    return isinstance(doc, YMap) and "attack_technique" in doc and "atomic_tests" in doc


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


class _File:
    def __init__(self, path: str, errors: ErrorCollector) -> None:
        self.path = path
        self.errors = errors
        # atomics/<T>/<T>.yaml: the folder of technique folders is what ART calls PathToAtomicsFolder.
        self.atomics = str(Path(path).resolve().parent.parent)

    def at(self, node: YMap | YList, key: str | int | None = None, field: str | None = None) -> Source:
        line = node.line
        if (isinstance(node, YMap) and isinstance(key, str)) or (
            isinstance(node, YList) and isinstance(key, int)
        ):
            line = node.line_of(key)  # type: ignore[arg-type]
        return Source(file=self.path, line=line, field=field)

    def expand(self, text: str) -> str:
        return text.replace("$PathToAtomicsFolder", self.atomics).replace("PathToAtomicsFolder", self.atomics)


def _arguments(f: _File, test: YMap, field: str) -> dict[str, Argument]:
    raw = test.get("input_arguments")
    if raw is None:
        return {}
    if not isinstance(raw, YMap):
        raise ContentError("'input_arguments' must be a mapping", f.at(test, "input_arguments", field))
    out: dict[str, Argument] = {}
    for name, spec in raw.items():
        sub = f"{field}.{name}"
        if not isinstance(spec, YMap):
            raise ContentError(
                "an input argument must be a mapping {description, type, default}", f.at(raw, name, sub)
            )
        out[name] = Argument(
            name=name,
            default=f.expand(_text(spec.get("default"))),
            type=_text(spec.get("type")).lower() or "string",
            description=_text(spec.get("description")).strip(),
        )
    return out


def _dependencies(f: _File, test: YMap, field: str) -> tuple[Dependency, ...]:
    raw = test.get("dependencies")
    if raw is None:
        return ()
    if not isinstance(raw, YList):
        raise ContentError("'dependencies' must be a list", f.at(test, "dependencies", field))
    out: list[Dependency] = []
    for i, dep in enumerate(raw):
        sub = f"{field}[{i}]"
        if not isinstance(dep, YMap):
            raise ContentError("a dependency must be a mapping", f.at(raw, i, sub))
        check = f.expand(_text(dep.get("prereq_command")).strip())
        if not check:
            raise ContentError(
                "a dependency needs 'prereq_command'", f.at(dep, None, f"{sub}.prereq_command")
            )
        get = f.expand(_text(dep.get("get_prereq_command")).strip())
        out.append(
            Dependency(
                description=_text(dep.get("description")).strip() or f"prerequisite {i + 1}",
                check=check,
                get=get,
                needs_network=needs_network(get),
            )
        )
    return tuple(out)


def _technique(f: _File, doc: YMap) -> tuple[str, str, str]:
    raw = _text(doc.get("attack_technique"))
    try:
        tid = attack.normalize(raw)
    except AttackError as exc:
        raise ContentError(exc.message, f.at(doc, "attack_technique", "attack_technique")) from exc
    known = attack.catalogue().get(tid) or attack.catalogue().get(tid.split(".")[0])
    if known is None or not known.tactics:
        f.errors.warn(
            ContentError(
                f"technique {tid} has no tactic in the ATT&CK catalogue; tactic 'unknown'",
                f.at(doc, "attack_technique", "attack_technique"),
            )
        )
        tactic = "unknown"
    else:
        tactic = known.tactics[0]
    return tid, _text(doc.get("display_name")) or (known.name if known else tid), tactic


def _skip(f: _File, test: YMap, field: str, reason: str) -> None:
    name = _text(test.get("name")) or "unnamed test"
    f.errors.warn(ContentError(f"skipped test {name!r}: {reason}", f.at(test, None, field)))


def _test(f: _File, test: YMap, index: int, technique: tuple[str, str, str]) -> Ability | None:
    tid, tname, tactic = technique
    field = f"atomic_tests[{index}]"
    guid = _text(test.get("auto_generated_guid"))
    if not guid:
        raise ContentError(
            "missing required field 'auto_generated_guid'", f.at(test, None, f"{field}.auto_generated_guid")
        )
    executor = test.get("executor")
    if not isinstance(executor, YMap):
        raise ContentError("missing required field 'executor'", f.at(test, "executor", f"{field}.executor"))
    exec_name = _text(executor.get("name")).lower()
    if exec_name not in _RUNNABLE:
        _skip(
            f,
            test,
            f"{field}.executor.name",
            f"executor {exec_name or 'none'!r} is not run by Assay (sh and bash are)",
        )
        return None
    raw_platforms = test.get("supported_platforms")
    if not isinstance(raw_platforms, YList):
        raise ContentError(
            "'supported_platforms' must be a list",
            f.at(test, "supported_platforms", f"{field}.supported_platforms"),
        )
    platforms = [_PLATFORMS[p] for p in (_text(x).lower() for x in raw_platforms) if p in _PLATFORMS]
    if not platforms:
        _skip(f, test, f"{field}.supported_platforms", f"no platform Assay runs among {list(raw_platforms)}")
        return None
    command = f.expand(_text(executor.get("command")).strip())
    if not command:
        raise ContentError(
            "missing required field 'command'", f.at(executor, None, f"{field}.executor.command")
        )
    cleanup = f.expand(_text(executor.get("cleanup_command")).strip())
    elevated = executor.get("elevation_required", False)
    if not isinstance(elevated, bool):
        raise ContentError(
            f"'elevation_required' must be true or false, got {elevated!r}",
            f.at(executor, "elevation_required", f"{field}.executor.elevation_required"),
        )
    arguments = _arguments(f, test, f"{field}.input_arguments")
    dependencies = _dependencies(f, test, f"{field}.dependencies")
    dep_exec = _text(test.get("dependency_executor_name")).lower() or None
    used = set(_VARIABLE.findall(command + "\n" + cleanup))
    for dep in dependencies:
        used |= set(_VARIABLE.findall(dep.check + "\n" + dep.get))
    for name in sorted(used - set(arguments)):
        f.errors.warn(
            ContentError(
                f"'#{{{name}}}' is used but not declared in input_arguments; it is filled from facts",
                f.at(
                    test, "input_arguments" if "input_arguments" in test else None, f"{field}.input_arguments"
                ),
            )
        )
    executors = tuple(
        Executor(
            name=_RUNNABLE[exec_name],
            platform=platform,
            command=command,
            cleanup=(cleanup,) if cleanup else (),
            timeout=DEFAULT_TIMEOUT,
        )
        for platform in dict.fromkeys(platforms)
    )
    return Ability(
        id=guid,
        name=_text(test.get("name")) or guid,
        description=_text(test.get("description")).strip(),
        tactic=tactic,
        technique_id=tid,
        technique_name=tname,
        executors=executors,
        privilege=Privilege.ELEVATED if elevated else None,
        buckets=(tactic,),
        plugin="atomic-red-team",
        additional_info={"atomic_test": f"{tid}-{index + 1}"},
        arguments=arguments,
        dependencies=dependencies,
        dependency_executor=dep_exec,
        origin=f.at(test),
    )


def parse_atomic(doc: YMap, file: str, errors: ErrorCollector) -> list[Ability]:
    """Every runnable test of one ART file; bad tests are recorded in ``errors`` and skipped."""
    f = _File(file, errors)
    technique = _technique(f, doc)
    tests = doc.get("atomic_tests")
    if not isinstance(tests, YList):
        raise ContentError("'atomic_tests' must be a list", f.at(doc, "atomic_tests", "atomic_tests"))
    out: list[Ability] = []
    for i, test in enumerate(tests):
        with errors.capture():
            if not isinstance(test, YMap):
                raise ContentError("an atomic test must be a mapping", f.at(tests, i, f"atomic_tests[{i}]"))
            ability = _test(f, test, i, technique)
            if ability is not None:
                out.append(ability)
    return out
