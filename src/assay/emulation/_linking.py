"""Link generation: ``#{variables}``, values escaped for the target shell, the cartesian product of facts,
requirements, and Atomic Red Team prerequisites. Pure: values in, candidate links out.

Variables are Caldera's: ``#{trait}`` and ``#{trait[filters(max=N,technique=Txxxx)]}`` (``max``: the N
highest-scored facts; ``technique``: facts learned by links of that technique). Globals (``#{paw}``,
``#{server}``, ``#{group}``, ``#{location}``, ``#{exe_name}``, ``#{upstream_dest}``, ``#{origin_link_id}``)
come from the agent and the link. Atomic Red Team input arguments are filled as ART fills them: raw, from the
default or from a fact the operation was *given* for that name (never from one it learned, which could carry
text from a command's output into a command).

Escaping depends on where the variable sits in the command, so a value is one word for the shell whatever
it contains: unquoted → a single-quoted word; inside ``"..."`` → ``\\ $ ` "`` escaped; inside ``'...'`` →
``'\\''``; in an unquoted here-document → ``\\ $ `` ` escaped; in a quoted one the text is data for another
program and is inserted as is. Python commands get Python string escapes or ``repr``. (Caldera prefixes a
backslash to special characters whatever the quoting, which corrupts values inside quotes.)
"""

from __future__ import annotations

import hashlib
import itertools
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from assay.content import Ability, Executor, Privilege, Safety
from assay.emulation._facts import FactBase, allowed
from assay.emulation._model import Agent, Fact, Link, OriginType, SkipReason
from assay.emulation._requirements import unmet

if TYPE_CHECKING:
    from assay.emulation._operation import Operation

_VARIABLE = re.compile(r"#\{(.*?)\}", re.DOTALL)
_FILTERED = re.compile(r"^(?P<trait>[^\[\]]+)\[filters\((?P<args>[^)]*)\)\]$")
GLOBALS = frozenset({"paw", "server", "group", "location", "exe_name", "upstream_dest", "origin_link_id"})
PREREQ_EXIT = 87
PREREQ_MARKER = "[assay] prerequisite not met"
_DEP_SHELLS = {"sh": "sh", "bash": "bash", "powershell": "pwsh"}


@dataclass(frozen=True, slots=True)
class Variable:
    text: str  # everything between the braces
    trait: str
    max: int | None = None
    technique: str | None = None


def parse_variable(text: str) -> Variable:
    m = _FILTERED.match(text.strip())
    if not m:
        return Variable(text, text.strip())
    limit: int | None = None
    technique: str | None = None
    for part in m.group("args").split(","):
        key, _, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if key == "max" and value.isdigit():
            limit = int(value)
        elif key == "technique" and value:
            technique = value.upper()
    return Variable(text, m.group("trait").strip(), limit, technique)


def variables(template: str) -> list[Variable]:
    return [parse_variable(t) for t in dict.fromkeys(_VARIABLE.findall(template))]


# -- escaping ------------------------------------------------------------------------------------------------
_NEXT = {
    "single": re.compile(r"'|#\{"),
    "double": re.compile(r'["\\]|#\{'),
    "bare": re.compile(r"['\"\\#<\n]"),
}


@lru_cache(maxsize=2048)
def _sh_contexts(template: str) -> tuple[str, ...]:
    """The quoting context of each ``#{...}`` in a sh/bash command, in order of appearance. Cached: the same
    templates are rendered again and again (each fact combination, each cleanup)."""
    out: list[str] = []
    state = "bare"
    heredocs: list[tuple[str, bool, bool]] = []  # pending: (delimiter, quoted, strip tabs)
    current: tuple[str, bool, bool] | None = None
    i, n = 0, len(template)
    while i < n:
        if state in _NEXT and not (heredocs and state == "bare"):
            jump = _NEXT[state].search(template, i)  # skip plain text in one step
            if jump is None:
                break
            i = jump.start()
        if template.startswith("#{", i):
            end = template.find("}", i)
            out.append(state)
            i = n if end < 0 else end + 1
            continue
        ch = template[i]
        if state in ("heredoc_literal", "heredoc_expand"):
            line_end = template.find("\n", i)
            line_end = n if line_end < 0 else line_end
            line = template[i:line_end]
            assert current is not None
            if (line.lstrip("\t") if current[2] else line) == current[0]:
                state, current = "bare", None
                if heredocs:
                    current = heredocs.pop(0)
                    state = "heredoc_literal" if current[1] else "heredoc_expand"
                i = line_end + 1
                continue
            nxt = template.find("#{", i, line_end)
            if nxt >= 0:
                i = nxt
                continue
            i = line_end + 1
            continue
        if state == "single":
            if ch == "'":
                state = "bare"
            i += 1
            continue
        if ch == "\\":
            i += 2
            continue
        if state == "double":
            if ch == '"':
                state = "bare"
            i += 1
            continue
        # bare
        if ch == "'":
            state = "single"
        elif ch == '"':
            state = "double"
        elif ch == "#" and (i == 0 or template[i - 1] in " \t\n;&|("):
            line_end = template.find("\n", i)
            i = n if line_end < 0 else line_end
            continue
        elif template.startswith("<<", i) and not template.startswith("<<<", i):
            m = re.match(r"<<(-?)\s*(['\"]?)([\w.\-]+)\2", template[i:])
            if m:
                heredocs.append((m.group(3), bool(m.group(2)), bool(m.group(1))))
                i += m.end()
                continue
        elif ch == "\n" and heredocs:
            current = heredocs.pop(0)
            state = "heredoc_literal" if current[1] else "heredoc_expand"
        i += 1
    return tuple(out)


@lru_cache(maxsize=2048)
def _python_contexts(template: str) -> tuple[str, ...]:
    out: list[str] = []
    quote: str | None = None
    i, n = 0, len(template)
    while i < n:
        if template.startswith("#{", i):
            end = template.find("}", i)
            out.append("bare" if quote is None else "string")
            i = n if end < 0 else end + 1
            continue
        ch = template[i]
        if quote is None:
            if ch == "#":
                line_end = template.find("\n", i)
                i = n if line_end < 0 else line_end
                continue
            for q in ('"""', "'''", '"', "'"):
                if template.startswith(q, i):
                    quote = q
                    i += len(q)
                    break
            else:
                i += 1
            continue
        if ch == "\\":
            i += 2
            continue
        if template.startswith(quote, i):
            i += len(quote)
            quote = None
            continue
        i += 1
    return tuple(out)


_CALDERA_SPECIAL = set(" \\$#^&*|`><\"'[]{}?~%")


def escape(value: str, executor: str, context: str) -> str:
    if executor in ("sh", "bash", "zsh", "proc"):
        if context == "bare":
            return shlex.quote(value)
        if context == "double":
            return re.sub(r'([\\$`"])', r"\\\1", value)
        if context == "single":
            return value.replace("'", "'\\''")
        if context == "heredoc_expand":
            return re.sub(r"([\\$`])", r"\\\1", value)
        return value  # quoted here-document: data for another program
    if executor in ("python", "python3"):
        if context == "bare":
            return repr(value)
        return (
            value.replace("\\", "\\\\")
            .replace("'", "\\'")
            .replace('"', '\\"')
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    if executor in ("psh", "pwsh"):
        return "".join("`" + c if c in _CALDERA_SPECIAL else c for c in value)
    if executor == "cmd":
        return "".join("^" + c if c in "&|<>^" else c for c in value)
    return value


def render(template: str, values: Mapping[str, tuple[str, bool]], executor: str) -> str:
    """Fill ``#{text}`` from ``values`` (text → (value, raw)); unknown variables stay as they are."""
    contexts: tuple[str, ...] = ()
    if executor in ("sh", "bash", "zsh", "proc"):
        contexts = _sh_contexts(template)
    elif executor in ("python", "python3"):
        contexts = _python_contexts(template)
    position = itertools.count()

    def sub(match: re.Match[str]) -> str:
        index = next(position)
        found = values.get(match.group(1))
        if found is None:
            return match.group(0)
        value, raw = found
        if raw:
            return value
        context = contexts[index] if index < len(contexts) else "bare"
        return escape(value, executor, context)

    return _VARIABLE.sub(sub, template)


def fill(command: str, values: Mapping[str, str], executor: str = "sh") -> tuple[str, list[str]]:
    """Substitute ``#{name}`` from plain ``values`` (escaped); return the command and the names left."""
    found = {v.text: (values[v.trait].strip(), False) for v in variables(command) if v.trait in values}
    missing = [v.trait for v in variables(command) if v.trait not in values]
    return render(command, found, executor), missing


def agent_globals(agent: Agent) -> dict[str, str]:
    """Caldera's global variables that come from the agent (``#{paw}``, ``#{server}``, ...)."""
    return {
        "paw": agent.paw,
        "server": agent.server,
        "group": agent.group,
        "location": agent.location,
        "exe_name": agent.exe_name,
        "upstream_dest": agent.server,
    }


# -- Atomic Red Team prerequisites ---------------------------------------------------------------------------
def _heredoc(shell: str, body: str) -> str:
    tag = "ASSAY_DEP_" + hashlib.sha256(body.encode()).hexdigest()[:10].upper()
    return f"{shell} <<'{tag}'\n{body}\n{tag}\n"


def with_prerequisites(ability: Ability, executor: Executor) -> str:
    """The command, preceded by a check of each ART dependency (run by its dependency executor, fed on
    stdin so no command text lands in argv). An unmet prerequisite whose getting needs the network, or that
    is still unmet after getting it, ends the script with exit 87 and a ``[assay] prerequisite not met``
    line, which the operation turns into a skipped link with reason ``prerequisite``."""
    if not ability.dependencies or executor.name not in ("sh", "bash"):
        return executor.command
    shell = _DEP_SHELLS.get(ability.dependency_executor or executor.name, executor.name)
    parts = ["# Atomic Red Team prerequisites (Assay)"]
    for dep in ability.dependencies:
        desc = dep.description.replace("'", "").replace("\n", " ")
        check = "{ " + _heredoc(shell, dep.check) + "} >/dev/null 2>&1"
        if dep.needs_network or not dep.get:
            why = "getting it needs the network" if dep.needs_network else "no way to get it"
            parts.append(
                f"if ! {check}; then\n  echo '{PREREQ_MARKER} ({why}): {desc}' >&2; exit {PREREQ_EXIT}\nfi"
            )
        else:
            parts.append(
                f"if ! {check}; then\n{_heredoc(shell, dep.get)}"
                f"  if ! {check}; then\n"
                f"    echo '{PREREQ_MARKER} (still unmet after getting it): {desc}' >&2; exit {PREREQ_EXIT}\n"
                f"  fi\nfi"
            )
    parts.append(executor.command)
    return "\n".join(parts)


def prerequisite_failure(exit_code: int | None, stderr: str) -> str | None:
    if exit_code != PREREQ_EXIT:
        return None
    for line in stderr.splitlines():
        if line.startswith(PREREQ_MARKER):
            return "prerequisite: " + line[len(PREREQ_MARKER) :].lstrip(" :")
    return None


# -- candidates ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Run:
    """Run ``ability`` on agent ``paw`` with ``executor``; ``command`` has its variables filled in (all but
    ``#{origin_link_id}``, which names the link and is filled when the link exists)."""

    paw: str
    ability: Ability
    executor: Executor
    command: str
    facts: Mapping[str, str]  # used facts, trait → value
    score: int = 0
    visibility: int = 50
    arguments: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Skip:
    """``ability_id`` cannot run on agent ``paw``, and why (recorded as a DISCARD link)."""

    paw: str
    ability_id: str
    ability: Ability | None
    reason: SkipReason
    detail: str

    @property
    def permanent(self) -> bool:
        """A missing fact or an unmet requirement may change as the operation learns; nothing else will."""
        return self.reason is not SkipReason.FACT_DEPENDENCY


Decision = Run | Skip


def choose_executor(ability: Ability, agent: Agent) -> Executor | Skip:
    candidates = ability.executors_for(agent.platform)
    if not candidates and (unrunnable := ability.unsupported_for(agent.platform)):
        return Skip(agent.paw, ability.id, ability, SkipReason.EXECUTOR, unrunnable[0].unsupported)
    if not candidates:
        return Skip(
            agent.paw,
            ability.id,
            ability,
            SkipReason.PLATFORM,
            f"no executor for platform {agent.platform!r} (ability has {', '.join(ability.platforms)})",
        )
    by_name = {e.name: e for e in candidates}
    for name in agent.executors:  # the agent's own preference order
        if name in by_name:
            return by_name[name]
    return Skip(
        agent.paw,
        ability.id,
        ability,
        SkipReason.EXECUTOR,
        f"agent executors {list(agent.executors)} do not include {sorted(by_name)}",
    )


def fact_choices(var: Variable, base: FactBase, rules: Sequence[object]) -> list[Fact]:
    """Facts that may fill ``var``: its trait, score > 0, allowed by the rules, its filters, best first."""
    from assay.content import FactRule

    typed = [r for r in rules if isinstance(r, FactRule)]
    found = [
        f
        for f in base.of_trait(var.trait)
        if f.score > 0 and allowed(f, typed) and (var.technique is None or f.technique_id == var.technique)
    ]
    found.sort(key=lambda f: -f.score)  # stable: equal scores keep the order they were learned in
    return found[: var.max] if var.max is not None else found


def _argument_values(ability: Ability, base: FactBase) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, arg in ability.arguments.items():
        given = [f for f in base.of_trait(name) if f.origin_type is not OriginType.LEARNED and f.score > 0]
        out[name] = given[-1].value if given else arg.default  # the latest given value wins
    return out


def safety_refusal(ability: Ability, max_safety: Safety, sandbox: bool, agent: Agent) -> str | None:
    """Why ``ability`` may not run on ``agent`` (a ``sandbox: ...`` or ``safety: ...`` reason), or None.

    ``safe`` runs anywhere; ``disruptive`` in the sandbox, or on the host when the operation opts in
    (``max_safety`` disruptive or above: ``--allow disruptive``); ``destructive`` only in the sandbox,
    whatever ``max_safety`` says. Content without a class counts as destructive. A sandboxed operation
    runs only on sandboxed agents: its abilities were allowed because the sandbox contains them.
    """
    if sandbox and not agent.sandbox:
        return (
            f"sandbox: the operation runs in the sandbox and agent {agent.paw} is not sandboxed "
            "(its profile names no sandbox)"
        )
    cls = ability.safety or Safety.DESTRUCTIVE
    label = ability.safety.value if ability.safety else "unclassified (treated as destructive)"
    why = f" ({ability.safety_reason})" if ability.safety_reason else ""
    if sandbox or cls is Safety.SAFE:
        return None
    if cls is Safety.DESTRUCTIVE:
        return f"safety: ability is {label}{why}; destructive abilities run only in the sandbox (--sandbox)"
    if not max_safety.allows(cls):
        return (
            f"safety: ability is {label}{why}; the operation runs only {max_safety.value} and safer on the "
            "host (opt in with --allow disruptive / max_safety, or run it in the sandbox)"
        )
    return None


def generate(op: Operation, agent: Agent, ability_id: str) -> list[Run] | Skip:
    """Every new link ``ability_id`` can make on ``agent`` now, best score first, or why it cannot run.

    An empty list means the ability has nothing new to run (every fact combination was already tried).
    """
    ability = op.abilities.get(ability_id)
    if ability is None:
        return Skip(agent.paw, ability_id, None, SkipReason.OTHER, f"ability {ability_id} is not loaded")
    if not agent.trusted:
        return Skip(agent.paw, ability_id, ability, SkipReason.UNTRUSTED, "agent is untrusted")
    refused = safety_refusal(ability, op.max_safety, op.sandbox, agent)
    if refused is not None:
        return Skip(agent.paw, ability_id, ability, SkipReason.OTHER, refused)
    if ability.privilege is Privilege.ELEVATED and agent.privilege is not Privilege.ELEVATED:
        return Skip(agent.paw, ability_id, ability, SkipReason.PRIVILEGE, "needs Elevated, agent is User")
    chosen = choose_executor(ability, agent)
    if isinstance(chosen, Skip):
        return chosen
    template = with_prerequisites(ability, chosen)
    values: dict[str, tuple[str, bool]] = {}
    globals_ = agent_globals(agent)
    arguments = _argument_values(ability, op.knowledge)
    fact_vars: list[Variable] = []
    for var in variables(template):
        if var.trait in ability.arguments:
            values[var.text] = (arguments[var.trait], True)
        elif var.trait in globals_:
            values[var.text] = (globals_[var.trait], False)
        elif var.trait != "origin_link_id":
            fact_vars.append(var)
    traits = list(dict.fromkeys(v.trait for v in fact_vars))
    choices: dict[str, list[Fact]] = {}
    for trait in traits:
        first = next(v for v in fact_vars if v.trait == trait)
        choices[trait] = fact_choices(first, op.knowledge, op.rules)
    missing = [t for t in traits if not choices[t]]
    if missing:
        return Skip(
            agent.paw, ability_id, ability, SkipReason.FACT_DEPENDENCY, f"no facts for {', '.join(missing)}"
        )
    allowed_runs = op.adversary.atomic_ordering.count(ability_id) if ability.repeatable else 1
    runs: list[Run] = []
    last_reason: str | None = None
    for combo in itertools.product(*(choices[t] for t in traits)):
        used = list(combo)
        reason = unmet(ability.requirements, agent.paw, used, op.knowledge)
        if reason:
            last_reason = reason
            continue
        used_map = {f.trait: f.value for f in used}
        if op.planned_count(agent.paw, ability_id, frozenset(used_map.items())) >= max(1, allowed_runs):
            continue
        if ability.singleton and op.singleton_taken(ability_id):
            continue
        filled = dict(values)
        for var in fact_vars:
            filled[var.text] = (used_map[var.trait].strip(), False)
        visibility = 50 + sum(
            adj.offset
            for adj in op.adjustments
            if adj.ability_id == ability_id and used_map.get(adj.trait) == adj.value
        )
        runs.append(
            Run(
                agent.paw,
                ability,
                chosen,
                render(template, filled, chosen.name),
                used_map,
                score=sum(f.score for f in used),
                visibility=max(1, min(100, visibility)),
                arguments={k: v for k, v in arguments.items()},
            )
        )
    if not runs and last_reason is not None and not op.has_planned(agent.paw, ability_id):
        return Skip(agent.paw, ability_id, ability, SkipReason.FACT_DEPENDENCY, last_reason)
    runs.sort(key=lambda r: -r.score)
    return runs


def cleanup_command(template: str, parent: Link, ability: Ability, agent: Agent, base: FactBase) -> str:
    """A cleanup command with the parent link's facts, the arguments it ran with, and the agent's globals."""
    executor = parent.executor
    values: dict[str, tuple[str, bool]] = {}
    globals_ = agent_globals(agent)
    arguments = _argument_values(ability, base)
    for var in variables(template):
        if var.trait in ability.arguments:
            values[var.text] = (arguments[var.trait], True)
        elif var.trait in parent.facts:
            values[var.text] = (parent.facts[var.trait].strip(), False)
        elif var.trait in globals_:
            values[var.text] = (globals_[var.trait], False)
        elif var.trait == "origin_link_id":
            values[var.text] = (parent.id, False)
    return render(template, values, executor)
