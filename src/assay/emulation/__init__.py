"""Emulation: facts, parsers, requirements, link generation, planners, the operation state machine, the
service that keeps operations live, and Caldera-shaped reports.

>>> from assay.emulation import Operation, planner
>>> # op = Operation(id, name, adversary, planner("atomic"), abilities=library.abilities, group="red")
>>> # touched = op.advance(now, new_id)
"""

from assay.emulation._facts import FactBase, allowed, seed
from assay.emulation._learning import LEARNERS, Learner, learn
from assay.emulation._linking import (
    GLOBALS,
    PREREQ_EXIT,
    Decision,
    Run,
    Skip,
    Variable,
    agent_globals,
    choose_executor,
    escape,
    fill,
    generate,
    parse_variable,
    prerequisite_failure,
    render,
    safety_refusal,
    variables,
    with_prerequisites,
)
from assay.emulation._model import (
    Agent,
    Fact,
    Link,
    LinkStatus,
    OperationState,
    OriginType,
    Relationship,
    Result,
    SkipReason,
)
from assay.emulation._obfuscators import OBFUSCATORS, Obfuscator, obfuscator
from assay.emulation._operation import Change, IdFactory, Operation
from assay.emulation._parsers import PARSERS, parse, parser_name
from assay.emulation._planning import (
    PLANNER_ALIASES,
    PLANNERS,
    AtomicPlanner,
    BatchPlanner,
    BucketsPlanner,
    GuidedPlanner,
    LookAheadPlanner,
    Planner,
    bucket_order,
    planner,
    planner_class,
)
from assay.emulation._report import event_logs, operation_report
from assay.emulation._requirements import unmet
from assay.emulation._service import OperationLedger, OperationService, OperationSettings, parse_jitter

__all__ = [
    "GLOBALS",
    "LEARNERS",
    "OBFUSCATORS",
    "PARSERS",
    "PLANNERS",
    "PLANNER_ALIASES",
    "PREREQ_EXIT",
    "Agent",
    "AtomicPlanner",
    "BatchPlanner",
    "BucketsPlanner",
    "Change",
    "Decision",
    "Fact",
    "FactBase",
    "GuidedPlanner",
    "IdFactory",
    "Learner",
    "Link",
    "LinkStatus",
    "LookAheadPlanner",
    "Obfuscator",
    "Operation",
    "OperationLedger",
    "OperationService",
    "OperationSettings",
    "OperationState",
    "OriginType",
    "Planner",
    "Relationship",
    "Result",
    "Run",
    "Skip",
    "SkipReason",
    "Variable",
    "agent_globals",
    "allowed",
    "bucket_order",
    "choose_executor",
    "escape",
    "event_logs",
    "fill",
    "generate",
    "learn",
    "obfuscator",
    "operation_report",
    "parse",
    "parse_jitter",
    "parse_variable",
    "parser_name",
    "planner",
    "planner_class",
    "prerequisite_failure",
    "render",
    "safety_refusal",
    "seed",
    "unmet",
    "variables",
    "with_prerequisites",
]
