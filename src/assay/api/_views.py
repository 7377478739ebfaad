"""JSON shapes of the REST API: Caldera's field names where Caldera has the concept, Assay's beside them.

Times appear twice: Caldera's ``%Y-%m-%dT%H:%M:%SZ`` strings (``decide``, ``collect``, ``finish``, ``start``)
for Caldera clients, and epoch seconds as floats (``*_at``) with full resolution for validation.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from assay.content import Ability, Adversary, Objective
from assay.emulation import Agent, Link, Operation


def caldera_time(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def link_view(link: Link) -> dict[str, Any]:
    return {
        "id": link.id,
        "operation_id": link.operation_id,
        "seq": link.seq,
        "paw": link.paw,
        "host": link.host,
        "status": int(link.status),
        "status_name": link.status.name.lower(),
        "cleanup": int(link.cleanup),
        "cleanup_of": link.cleanup_of,
        "ability": {
            "ability_id": link.ability_id,
            "name": link.ability_name,
            "tactic": link.tactic,
            "technique_id": link.technique_id,
            "technique_name": link.technique_name,
        },
        "ability_id": link.ability_id,
        "technique_id": link.technique_id,
        "tactic": link.tactic,
        "executor": link.executor,
        "command": base64.b64encode(link.command.encode()).decode(),
        "plaintext_command": link.plaintext_command or link.command,
        "timeout": link.timeout,
        "score": link.score,
        "visibility": link.visibility,
        "jitter": link.jitter,
        "used": [{"trait": t, "value": v, "name": t} for t, v in link.facts.items()],
        "decide": caldera_time(link.planned_at),
        "collect": caldera_time(link.delegated_at),
        "finish": caldera_time(link.finished_at),
        "agent_reported_time": caldera_time(link.started_at),
        "planned_at": link.planned_at,
        "available_at": link.available_at,
        "delegated_at": link.delegated_at,
        "started_at": link.started_at,
        "finished_at": link.finished_at,
        "exit_code": link.exit_code,
        "stdout": link.stdout,
        "stderr": link.stderr,
        "output": bool(link.stdout or link.stderr),
        "pid": link.pid,
        "start_ticks": link.start_ticks,
        "entity_id": link.entity_id,
        "skip_reason": link.skip_reason,
        "skip_reason_id": None if link.skip_reason_id is None else int(link.skip_reason_id),
        "deadman": False,
        "pin": 0,
    }


def agent_view(agent: Agent) -> dict[str, Any]:
    return {
        "paw": agent.paw,
        "host": agent.host,
        "group": agent.group,
        "platform": agent.platform,
        "executors": list(agent.executors),
        "privilege": str(agent.privilege),
        "username": agent.username,
        "architecture": agent.architecture,
        "pid": agent.pid,
        "ppid": agent.ppid,
        "location": agent.location,
        "exe_name": agent.exe_name,
        "contact": agent.contact,
        "trusted": agent.trusted,
        "sandbox": agent.sandbox,
        "display_name": f"{agent.host}${agent.username}",
        "created": caldera_time(agent.created_at),
        "last_seen": caldera_time(agent.last_seen),
        "created_at": agent.created_at,
        "last_seen_at": agent.last_seen,
    }


def ability_view(ability: Ability) -> dict[str, Any]:
    return {
        "ability_id": ability.id,
        "name": ability.name,
        "description": ability.description,
        "tactic": ability.tactic,
        "technique_id": ability.technique_id,
        "technique_name": ability.technique_name,
        "executors": [
            {
                "name": e.name,
                "platform": e.platform,
                "command": e.command,
                "cleanup": list(e.cleanup),
                "timeout": e.timeout,
                "payloads": list(e.payloads),
                "uploads": list(e.uploads),
                "parsers": [
                    {
                        "module": p.module,
                        "parserconfigs": [
                            {
                                "source": p.source,
                                "edge": p.edge,
                                "target": p.target,
                                "custom_parser_vals": dict(p.custom),
                            }
                        ],
                    }
                    for p in e.parsers
                ],
                "additional_info": dict(e.additional_info),
            }
            for e in ability.executors
        ],
        "privilege": None if ability.privilege is None else str(ability.privilege),
        "repeatable": ability.repeatable,
        "singleton": ability.singleton,
        "delete_payload": ability.delete_payload,
        "buckets": list(ability.buckets),
        "requirements": [
            {"module": r.module, "relationship_match": list(r.relationships)} for r in ability.requirements
        ],
        "safety": None if ability.safety is None else str(ability.safety),
        "safety_reason": ability.safety_reason,
        "plugin": ability.plugin or "assay",
        "access": dict(ability.access),
        "additional_info": dict(ability.additional_info),
        "input_arguments": {
            name: {"description": a.description, "type": a.type, "default": a.default}
            for name, a in ability.arguments.items()
        },
        "dependencies": [
            {
                "description": d.description,
                "prereq_command": d.check,
                "get_prereq_command": d.get,
                "needs_network": d.needs_network,
            }
            for d in ability.dependencies
        ],
        "origin": str(ability.origin) if ability.origin else None,
    }


def adversary_view(adversary: Adversary) -> dict[str, Any]:
    return {
        "adversary_id": adversary.id,
        "name": adversary.name,
        "description": adversary.description,
        "atomic_ordering": list(adversary.atomic_ordering),
        "objective": adversary.objective,
        "tags": list(adversary.tags),
        "plugin": adversary.plugin or "assay",
        "has_repeatable_abilities": False,
        "additional_info": dict(adversary.additional_info),
    }


def objective_view(objective: Objective, facts: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Caldera's objective display; with an operation's facts, each goal says whether it is met."""
    view: dict[str, Any] = {
        "id": objective.id,
        "name": objective.name,
        "description": objective.description,
        "goals": [
            {
                "target": g.target,
                "value": g.value,
                "count": g.count,
                "operator": g.operator,
                **({"achieved": g.satisfied(facts)} if facts is not None else {}),
            }
            for g in objective.goals
        ],
    }
    if facts is not None:
        view["percentage"] = objective.percentage(facts)
        view["achieved"] = objective.met(facts)
    return view


def operation_view(op: Operation, *, chain: bool = True) -> dict[str, Any]:
    """Caldera's operation display (``chain`` holds the links), with Assay's own fields beside it."""
    links = op.links
    low, high = op.jitter
    view: dict[str, Any] = {
        "id": op.id,
        "name": op.name,
        "state": str(op.state),
        "adversary": adversary_view(op.adversary),
        "planner": {"id": op.planner.id, "name": op.planner.name, "description": op.planner.description},
        "source": {"id": op.source_id},
        "group": op.group,
        "auto_close": op.auto_close,
        "autonomous": int(op.autonomous),
        "obfuscator": op.obfuscator,
        "jitter": f"{low}/{high}",
        "visibility": op.visibility,
        "use_learning_parsers": op.use_learning_parsers,
        "objective": objective_view(op.objective, [(f.trait, f.value) for f in op.knowledge.facts.values()]),
        "planner_params": dict(op.planner.params),
        "end_reason": op.end_reason or None,
        "max_safety": op.max_safety.value,
        "sandbox": op.sandbox,
        "start": caldera_time(op.created_at),
        "finish": caldera_time(op.finished_at),
        "created_at": op.created_at,
        "finished_at": op.finished_at,
        "host_group": [agent_view(a) for a in op.agents.values()],
        "links_total": len(links),
        "links_finished": sum(1 for lk in links if lk.finished),
        "cleanup_links": sum(1 for lk in links if lk.cleanup),
        "facts_total": len(op.knowledge.facts),
    }
    if chain:
        view["chain"] = [link_view(lk) for lk in links]
    return view
