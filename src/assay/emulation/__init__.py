"""Emulation: links, planners, the operation state machine, and the service that keeps operations live.

>>> from assay.emulation import Operation, planner
>>> # op = Operation(id, name, adversary, planner("atomic"), group="red")
>>> # new_links = op.advance(abilities, now, new_id)
"""

from assay.emulation._model import Agent, Link, LinkStatus, OperationState, Result, SkipReason
from assay.emulation._operation import IdFactory, Operation
from assay.emulation._planning import (
    PLANNERS,
    AtomicPlanner,
    Decision,
    Planner,
    Run,
    Skip,
    agent_globals,
    choose_executor,
    cleanup_sequence,
    decide,
    fill,
    planner,
)
from assay.emulation._service import OperationLedger, OperationService

__all__ = [
    "PLANNERS",
    "Agent",
    "AtomicPlanner",
    "Decision",
    "IdFactory",
    "Link",
    "LinkStatus",
    "Operation",
    "OperationLedger",
    "OperationService",
    "OperationState",
    "Planner",
    "Result",
    "Run",
    "Skip",
    "SkipReason",
    "agent_globals",
    "choose_executor",
    "cleanup_sequence",
    "decide",
    "fill",
    "planner",
]
