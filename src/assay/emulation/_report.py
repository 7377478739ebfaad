"""Caldera-shaped operation ``report`` and ``event-logs``, as pure functions of an operation.

Differences from Caldera, on purpose: output keeps its newlines (Caldera runs lines together); every ability
of the adversary that never ran on an agent is listed in ``skipped_abilities`` with Caldera's ``reason_id``
and Assay's own explanation in ``detail``; commands appear decoded (``command`` is what the agent ran,
obfuscated or not, ``plaintext_command`` what the ability says); steps and events carry Assay's exact times
beside Caldera's second-resolution strings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from assay.emulation._model import Agent, Fact, Link, LinkStatus, OperationState, SkipReason
from assay.emulation._operation import Operation

_REASONS = {
    SkipReason.PLATFORM: "Wrong platform",
    SkipReason.EXECUTOR: "Executor not available",
    SkipReason.PRIVILEGE: "Ability privilege not fulfilled",
    SkipReason.FACT_DEPENDENCY: "Fact dependency not fulfilled",
    SkipReason.LINK_IGNORED: "Link ignored - highly visible or discarded link",
    SkipReason.UNTRUSTED: "Agent untrusted",
    SkipReason.OPERATION_RUNNING: "Operation not completed",
    SkipReason.OTHER: "Other",
}
_IGNORED = (LinkStatus.DISCARD, LinkStatus.HIGH_VIZ)


def caldera_time(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def agent_display(agent: Agent) -> dict[str, Any]:
    return {
        "paw": agent.paw,
        "group": agent.group,
        "host": agent.host,
        "username": agent.username,
        "architecture": agent.architecture,
        "platform": agent.platform,
        "location": agent.location,
        "pid": agent.pid,
        "ppid": agent.ppid,
        "privilege": str(agent.privilege),
        "exe_name": agent.exe_name,
        "executors": list(agent.executors),
        "contact": agent.contact,
        "trusted": agent.trusted,
        "created": caldera_time(agent.created_at),
        "last_seen": caldera_time(agent.last_seen),
        "display_name": f"{agent.host}${agent.username}",
    }


def fact_display(fact: Fact, relationships: list[str] | None = None) -> dict[str, Any]:
    return {
        "unique": fact.unique,
        "trait": fact.trait,
        "name": fact.trait,
        "value": fact.value,
        "score": fact.score,
        "source": fact.source,
        "origin_type": fact.origin_type.name,
        "links": list(fact.links),
        "relationships": relationships or [],
        "collected_by": list(fact.collected_by),
        "technique_id": fact.technique_id,
        "created": caldera_time(fact.created_at),
        "limit_count": -1,
    }


def _output(link: Link) -> dict[str, Any]:
    return {
        "stdout": link.stdout,
        "stderr": link.stderr,
        "exit_code": "" if link.exit_code is None else str(link.exit_code),
    }


def _adversary(op: Operation) -> dict[str, Any]:
    adv = op.adversary
    return {
        "adversary_id": adv.id,
        "name": adv.name,
        "description": adv.description,
        "atomic_ordering": list(adv.atomic_ordering),
        "objective": adv.objective,
        "tags": list(adv.tags),
    }


def _step(op: Operation, link: Link, agent_output: bool) -> dict[str, Any]:
    ability = op.abilities.get(link.ability_id)
    agent = op.agents.get(link.paw)
    step: dict[str, Any] = {
        "link_id": link.id,
        "ability_id": link.ability_id,
        "command": link.command,
        "plaintext_command": link.plaintext_command or link.command,
        "delegated": caldera_time(link.planned_at),
        "run": caldera_time(link.finished_at),
        "status": int(link.status),
        "platform": agent.platform if agent else "",
        "executor": link.executor,
        "pid": link.pid,
        "description": ability.description if ability else "",
        "name": link.ability_name,
        "attack": {
            "tactic": link.tactic,
            "technique_name": link.technique_name,
            "technique_id": link.technique_id,
        },
        "cleanup": link.cleanup,
        "planned_at": link.planned_at,
        "delegated_at": link.delegated_at,
        "finished_at": link.finished_at,
    }
    if agent_output and (link.stdout or link.stderr):
        step["output"] = _output(link)
    if link.started_at is not None:
        step["agent_reported_time"] = caldera_time(link.started_at)
    return step


def skipped_abilities(op: Operation) -> list[dict[str, list[dict[str, Any]]]]:
    """Per agent, every ability of the adversary that did not run, with Caldera's reason id and why."""
    out: list[dict[str, list[dict[str, Any]]]] = []
    for paw in op.agents:
        entries: dict[str, dict[str, Any]] = {}
        mine = [lk for lk in op.links if lk.paw == paw and not lk.cleanup]
        ran = {lk.ability_id for lk in mine if lk.status.ran or lk.in_flight}
        for lk in mine:
            if lk.ability_id in ran or lk.skip_reason_id is None or lk.ability_id in entries:
                continue
            entries[lk.ability_id] = {
                "reason": _REASONS[lk.skip_reason_id],
                "reason_id": int(lk.skip_reason_id),
                "detail": lk.skip_reason or "",
                "ability_id": lk.ability_id,
                "ability_name": lk.ability_name,
            }
        if not op.done:
            tried = {lk.ability_id for lk in mine}
            for ability_id in dict.fromkeys(op.adversary.atomic_ordering):
                if ability_id not in tried and ability_id not in entries:
                    ability = op.abilities.get(ability_id)
                    entries[ability_id] = {
                        "reason": _REASONS[SkipReason.OPERATION_RUNNING],
                        "reason_id": int(SkipReason.OPERATION_RUNNING),
                        "detail": "not run yet: the operation is still going",
                        "ability_id": ability_id,
                        "ability_name": ability.name if ability else "",
                    }
        out.append({paw: list(entries.values())})
    return out


def operation_report(op: Operation, *, agent_output: bool = False) -> dict[str, Any]:
    """Caldera's ``POST /api/v2/operations/{id}/report`` document."""
    relationships: dict[tuple[str, str], list[str]] = {}
    for rel in op.relationships:
        shorthand = f"{rel.source[0]}({rel.source[1]}) : {rel.edge} : " + (
            f"{rel.target[0]}({rel.target[1]})" if rel.target else "None"
        )
        relationships.setdefault(rel.source, []).append(shorthand)
    steps: dict[str, dict[str, list[dict[str, Any]]]] = {paw: {"steps": []} for paw in op.agents}
    for link in op.links:
        if link.status in _IGNORED:
            continue
        steps.setdefault(link.paw, {"steps": []})["steps"].append(_step(op, link, agent_output))
    low, high = op.jitter
    return {
        "name": op.name,
        "id": op.id,
        "state": op.state.value,
        "host_group": [agent_display(a) for a in op.agents.values()],
        "start": caldera_time(op.created_at),
        "finish": caldera_time(op.finished_at),
        "planner": op.planner.name,
        "adversary": _adversary(op),
        "jitter": f"{low}/{high}",
        "objectives": {
            "id": op.adversary.objective or "495a9828-cab1-44dd-a0ca-66e58177d8cc",
            "name": "default",
            "goals": [],
            "percentage": 100 if op.state is OperationState.FINISHED else 0,
        },
        "facts": [fact_display(f, relationships.get(f.key)) for f in op.facts],
        "steps": steps,
        "skipped_abilities": skipped_abilities(op),
    }


def event_logs(op: Operation, *, agent_output: bool = False) -> list[dict[str, Any]]:
    """Caldera's ``POST /api/v2/operations/{id}/event-logs``: one event per link that was not ignored."""
    out: list[dict[str, Any]] = []
    for link in op.links:
        if link.status in _IGNORED:
            continue
        agent = op.agents.get(link.paw)
        ability = op.abilities.get(link.ability_id)
        event: dict[str, Any] = {
            "command": link.command,
            "plaintext_command": link.plaintext_command or link.command,
            "delegated_timestamp": caldera_time(link.planned_at),
            "collected_timestamp": caldera_time(link.delegated_at),
            "finished_timestamp": caldera_time(link.finished_at),
            "status": int(link.status),
            "platform": agent.platform if agent else "",
            "executor": link.executor,
            "pid": link.pid,
            "cleanup": link.cleanup,
            "agent_metadata": {
                "paw": link.paw,
                "group": agent.group if agent else "",
                "architecture": agent.architecture if agent else "",
                "username": agent.username if agent else "",
                "location": agent.location if agent else "",
                "pid": agent.pid if agent else None,
                "ppid": agent.ppid if agent else None,
                "privilege": str(agent.privilege) if agent else "",
                "host": agent.host if agent else link.host,
                "contact": agent.contact if agent else "",
                "created": caldera_time(agent.created_at) if agent else None,
            },
            "ability_metadata": {
                "ability_id": link.ability_id,
                "ability_name": link.ability_name,
                "ability_description": ability.description if ability else "",
            },
            "operation_metadata": {
                "operation_name": op.name,
                "operation_start": caldera_time(op.created_at),
                "operation_adversary": op.adversary.name,
            },
            "attack_metadata": {
                "tactic": link.tactic,
                "technique_name": link.technique_name,
                "technique_id": link.technique_id,
            },
        }
        if agent_output and (link.stdout or link.stderr):
            event["output"] = _output(link)
        if link.started_at is not None:
            event["agent_reported_time"] = caldera_time(link.started_at)
        out.append(event)
    return out
